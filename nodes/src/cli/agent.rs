//! `outpost agent …`.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

/// `outpost agent …`. Every command works whether or not the daemon runs: when it does, the
/// command is run by the daemon.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Run the agent daemon: update at start and every `update_every`, upgrade by policy,
    /// answer local commands.
    Run(AgentArgs),
    /// Fetch the repository's head (and snapshot if newer), verify, resolve, store the plan.
    Update(AgentReadArgs),
    /// Download and verify what the plan needs, then remove, install and upgrade in order.
    Upgrade(AgentReadArgs),
    /// Download and verify what the plan needs, without installing.
    DownloadUpgrade(AgentReadArgs),
    /// Install packages (and what they need): NAME, or NAME(>=VERSION) and other requests;
    /// `--force` installs them again (their install hook runs again).
    Install(AgentInstallArgs),
    /// Remove packages (their uninstall hooks run).
    Remove(AgentNamesArgs),
    /// Host and package statuses, the plan, the last update.
    Status(AgentReadArgs),
    /// Run every installed package's audit hook.
    Audit(AgentReadArgs),
    /// The candidate repositories: rule, health, round-trip time, and the choice.
    Repos(AgentReadArgs),
    /// What this host reports to central (JSON).
    Inventory(AgentReadArgs),
    /// Get a host certificate from central: with an enrollment token, or wait for approval.
    Enroll(AgentEnrollArgs),
    /// What the repositories offer (name or description containing TEXT), with the version
    /// this host would get and why not the others.
    Search(AgentTextArgs),
    /// Every version of a package, its fields, and the one this host would get and why.
    Show(AgentTextArgs),
    /// Installed packages and why each is here (explicit, host, unit, profile, group,
    /// dependency).
    List(AgentReadArgs),
    /// Drop packages from this host's state without running their uninstall hook (software
    /// already removed by hand).
    Forget(AgentNamesArgs),
    /// Empty the package cache; says what it freed.
    Clean(AgentReadArgs),
    /// As the logged-in user: run the session-setup of the installed packages not yet set up
    /// for this user at their version (started at logon by the systemd user unit or the XDG
    /// autostart entry in deploy/).
    SessionSetup(AgentReadArgs),
    /// The agent as a Windows service: `install` registers `OutpostAgent` (started at boot,
    /// as LocalSystem, running `agent run` with the configuration given here), `start`,
    /// `stop` and `uninstall` (which stops it first).
    #[command(subcommand)]
    Service(ServiceAction),
    /// Give this machine a new UUID (a cloned disk image, a machine reinstalled from another's
    /// image): central then tells it apart from the original.
    ResetUuid(AgentReadArgs),
}

/// `outpost agent service …`
#[derive(Debug, Subcommand)]
pub enum ServiceAction {
    /// Register the service (the configuration file and flags given here are what it runs with).
    Install(AgentArgs),
    /// Stop the service if it runs, and remove it.
    Uninstall,
    /// Start the service and wait until it runs.
    Start,
    /// Stop the service and wait until it has stopped.
    Stop,
    /// What the service manager starts (not for use by hand).
    #[command(hide = true)]
    Run(AgentArgs),
}

/// `outpost agent enroll`
#[derive(Debug, Args)]
pub struct AgentEnrollArgs {
    /// The token from `outpost console token create` (without it, wait for approval).
    #[arg(long)]
    pub token: Option<String>,
    /// How long to wait for approval.
    #[arg(long, default_value = "10m")]
    pub wait: String,
    /// Replace an existing certificate and key.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub agent: AgentArgs,
}

/// Flags every agent command takes; they override the configuration file. Each is serialized
/// under the name of the configuration field it sets ([`crate::config::with_flags`]).
#[derive(Debug, Args, Clone, Serialize)]
pub struct AgentArgs {
    /// Configuration file (TOML); deploy/agent.toml documents every field.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// State folder.
    #[arg(long, value_name = "DIR")]
    pub state: Option<PathBuf>,
    /// The organisation CA certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// This host's certificate.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Read the key's password from FILE (otherwise `OUTPOST_KEY_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub password_file: Option<PathBuf>,
    /// A repository to use (repeatable); turns rules and DNS discovery off.
    #[arg(long = "repo", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repos: Vec<String>,
    /// The central server.
    #[arg(long, value_name = "ADDR")]
    pub server: Option<String>,
}

impl AgentArgs {
    /// The flags given that change settings a running daemon has already loaded (a command it
    /// runs could not honour them).
    pub fn daemon_overrides(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (given, flag) in [
            (!self.repos.is_empty(), "--repo"),
            (self.server.is_some(), "--server"),
            (self.ca.is_some(), "--ca"),
            (self.cert.is_some(), "--cert"),
            (self.key.is_some(), "--key"),
            (self.password_file.is_some(), "--password-file"),
        ] {
            if given {
                out.push(flag);
            }
        }
        out
    }
}

/// Agent commands that can print JSON.
#[derive(Debug, Args, Clone)]
pub struct AgentReadArgs {
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `outpost agent install`.
#[derive(Debug, Args, Clone)]
pub struct AgentInstallArgs {
    #[command(flatten)]
    pub names: AgentNamesArgs,
    /// Install again even when the same version is installed (the install hook runs again).
    #[arg(long)]
    pub force: bool,
}

/// `outpost agent search|show`.
#[derive(Debug, Args, Clone)]
pub struct AgentTextArgs {
    /// Search: text in names and descriptions (empty: everything). Show: the package's name.
    #[arg(default_value = "")]
    pub text: String,
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `outpost agent remove|forget`.
#[derive(Debug, Args, Clone)]
pub struct AgentNamesArgs {
    /// Packages.
    #[arg(required = true)]
    pub packages: Vec<String>,
    #[command(flatten)]
    pub agent: AgentArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}
