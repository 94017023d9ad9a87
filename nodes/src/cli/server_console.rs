//! `outpost server` and `outpost console …`.

use std::path::PathBuf;

use super::DaemonArgs;
use clap::{Args, Subcommand};
use serde::Serialize;

/// `outpost server`. Its flags override the configuration file, each serialized under the
/// name of the field it sets ([`crate::config::with_flags`]); `--watch` adds to the file's list.
#[derive(Debug, Args, Serialize)]
pub struct ServerArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub daemon: DaemonArgs,
    /// QUIC address of central (agents and consoles).
    #[arg(long, value_name = "IP:PORT")]
    pub central_listen: Option<String>,
    /// The enrollment CA certificate (`outpost pki enroll-ca`); enrollment is off without it.
    #[arg(long, value_name = "FILE")]
    pub enroll_cert: Option<PathBuf>,
    /// Its key.
    #[arg(long, value_name = "FILE")]
    pub enroll_key: Option<PathBuf>,
    /// A repository `console repos` shows (repeatable; the main repository is always shown).
    #[arg(long = "watch", value_name = "ADDR")]
    #[serde(skip)]
    pub watch: Vec<String>,
    /// Run only central (no main repository).
    #[arg(long, conflicts_with = "no_central")]
    #[serde(skip)]
    pub no_repository: bool,
    /// Run only the main repository (no central).
    #[arg(long)]
    #[serde(skip)]
    pub no_central: bool,
    /// Keep central's state in PostgreSQL (`postgres://USER@HOST/DB`, or `host=/run/postgresql
    /// dbname=outpost`), which several central instances share; redb in the data folder
    /// otherwise. Never with the password: see --database-password-file.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// A streaming replica of that database, for the console's reports.
    #[arg(long, value_name = "URL")]
    pub database_read: Option<String>,
    /// Read the database password from FILE (otherwise `OUTPOST_DATABASE_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    pub database_password_file: Option<PathBuf>,
}

/// Flags every console command takes. Each overrides its `OUTPOST_*` variable, which overrides
/// the profile `outpost console login` saved.
#[derive(Debug, Args, Clone, Default)]
pub struct ConsoleArgs {
    /// Central's address (host:port).
    #[arg(long, value_name = "ADDR", env = "OUTPOST_SERVER")]
    pub server: Option<String>,
    /// The organisation CA certificate.
    #[arg(long, value_name = "FILE", env = "OUTPOST_CA")]
    pub ca: Option<PathBuf>,
    /// Your admin certificate.
    #[arg(long, value_name = "FILE", env = "OUTPOST_CERT")]
    pub cert: Option<PathBuf>,
    /// Its private key.
    #[arg(long, value_name = "FILE", env = "OUTPOST_KEY")]
    pub key: Option<PathBuf>,
    /// Read the key's password from FILE (otherwise `OUTPOST_KEY_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The saved profile to use (`outpost console login --profile NAME`); default: the
    /// profile saved last as the default.
    #[arg(long, value_name = "NAME", env = "OUTPOST_PROFILE")]
    pub profile: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `outpost console …`
#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
    /// Save where central is and which certificate to use (paths, not keys), so that console
    /// commands need no flags; `--profile NAME` keeps several.
    Login(ConsoleArgs),
    /// Serve the web console on this machine (127.0.0.1 by default), talking to central with
    /// your certificate; prints the address to open, with its secret.
    Web(ConsoleWebArgs),
    /// Hosts, with filters.
    Hosts(ConsoleHostsArgs),
    /// One host (inventory, packages with status and output), or act on hosts.
    Host(ConsoleHostArgs),
    /// Outpost packages across the fleet.
    Packages(ConsoleArgs),
    /// Repositories and their replication lag.
    Repos(ConsoleArgs),
    /// Actions and their results.
    Actions(ConsoleArgs),
    /// Hosts waiting for approval.
    Pending(ConsoleArgs),
    /// Enrollment tokens.
    #[command(subcommand)]
    Token(ConsoleTokenCommand),
    /// Sign an action with your key and have central relay it: update, upgrade, install,
    /// remove.
    Action(ConsoleActionArgs),
    /// Sign agent settings (a `config` package's `agent.toml`: rules, settings) and have
    /// central distribute them.
    Settings(ConsoleSettingsArgs),
    /// Reports (central on PostgreSQL): `report list`, `report NAME [--param K=V] [--csv]`,
    /// `report save NAME --sql-file FILE`, `report delete NAME`.
    Report(ConsoleReportArgs),
}

/// `outpost console report`
#[derive(Debug, Args)]
pub struct ConsoleReportArgs {
    /// `list`, a report's name, `save NAME` or `delete NAME`.
    #[arg(value_name = "NAME", required = true, num_args = 1..=2)]
    pub words: Vec<String>,
    /// A built-in report's parameter (repeatable), e.g. `--param days=30`.
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Comma-separated values (RFC 4180) instead of a table.
    #[arg(long, conflicts_with = "json")]
    pub csv: bool,
    /// With `save`: the query (one SELECT over the `reporting` views).
    #[arg(long, value_name = "SQL", conflicts_with = "sql_file")]
    pub sql: Option<String>,
    /// With `save`: a file holding the query.
    #[arg(long, value_name = "FILE")]
    pub sql_file: Option<PathBuf>,
    /// With `save`: what the report shows.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub description: String,
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// `outpost console web`
#[derive(Debug, Args)]
pub struct ConsoleWebArgs {
    /// The address to serve on. Anything but a loopback address lets other machines reach the
    /// page (they still need the secret).
    #[arg(long, value_name = "IP:PORT", default_value = "127.0.0.1:7445")]
    pub listen: String,
    /// Do not print the address (for scripts: it is written to --url-file).
    #[arg(long, value_name = "FILE")]
    pub url_file: Option<PathBuf>,
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// `outpost console hosts`
#[derive(Debug, Args)]
pub struct ConsoleHostsArgs {
    /// A filter line, as in the web console: `status:ERROR site:lyon pkg:firefox sw:7zip
    /// ou:Paris name:pc-*` (a word without a key is part of a name). The flags below add to it.
    #[arg(value_name = "FILTER")]
    pub filter: Option<String>,
    /// Only hosts whose name matches (`*` and `?`, or a part of the name).
    #[arg(long)]
    pub name: Option<String>,
    /// Order by name, status, site, ou, seen or packages.
    #[arg(long, default_value = "name", value_parser = ["name", "status", "site", "ou", "seen", "packages"])]
    pub sort: String,
    /// Largest first.
    #[arg(long)]
    pub desc: bool,
    /// Skip this many hosts (with --limit: pages).
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    /// Only hosts with this status: OK, NEED-UPGRADE, ERROR or UNKNOWN (not reported yet).
    #[arg(long, value_parser = host_status)]
    pub status: Option<String>,
    /// Only hosts whose worst last audit is OK, WARNING or ERROR.
    #[arg(long, value_parser = ["OK", "WARNING", "ERROR", "ok", "warning", "error"])]
    pub audit: Option<String>,
    /// Only hosts with this Outpost package.
    #[arg(long)]
    pub package: Option<String>,
    /// Only hosts with this software installed (dpkg/rpm name).
    #[arg(long)]
    pub software: Option<String>,
    /// Only hosts in this OU: a distinguished name (that OU and below), or one component's
    /// value (`Paris`).
    #[arg(long)]
    pub ou: Option<String>,
    /// Only hosts at this site.
    #[arg(long)]
    pub site: Option<String>,
    /// At most this many lines (0: all).
    #[arg(long, default_value_t = 1000)]
    pub limit: u32,
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// `outpost console host`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ConsoleHostArgs {
    /// The host (UUID or FQDN).
    pub name: Option<String>,
    #[command(subcommand)]
    pub action: Option<ConsoleHostCommand>,
    #[command(flatten)]
    pub console: Option<ConsoleArgs>,
}

/// `outpost console host approve|revoke|set-packages`
#[derive(Debug, Subcommand)]
pub enum ConsoleHostCommand {
    /// Approve a host waiting for enrollment.
    Approve {
        /// UUID or FQDN.
        name: String,
        /// Revoke the certificates that held this machine or name before (a reinstalled
        /// machine); without it both stay, flagged as a clash until one is revoked.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        console: ConsoleArgs,
    },
    /// Revoke a host's certificate: it is refused by central and every repository.
    Revoke {
        /// UUID, FQDN, or the certificate's fingerprint (sha256:…; also a certificate that never
        /// reported, or one central has never seen).
        name: String,
        #[command(flatten)]
        console: ConsoleArgs,
    },
    /// Build the host's package with these dependencies, sign it with your key (never on the
    /// server) and publish it.
    SetPackages(ConsoleSetPackagesArgs),
}

/// `outpost console host set-packages`
#[derive(Debug, Args)]
pub struct ConsoleSetPackagesArgs {
    /// The host's FQDN (or UUID): the host package's name.
    pub host: String,
    /// Packages it must have (requests like NAME or NAME(>=1.2)).
    pub packages: Vec<String>,
    /// The main repository to publish to.
    #[arg(long, value_name = "ADDR")]
    pub repo: String,
    /// Also send the host an update and upgrade action now.
    #[arg(long)]
    pub now: bool,
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// `outpost console token create`
#[derive(Debug, Subcommand)]
pub enum ConsoleTokenCommand {
    /// A new enrollment token (printed once).
    Create {
        /// How many hosts may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid.
        #[arg(long, default_value = "1d")]
        valid: String,
        #[command(flatten)]
        console: ConsoleArgs,
    },
}

/// Which hosts an action or settings are for.
#[derive(Debug, Args, Clone)]
#[group(required = false, multiple = false)]
pub struct TargetArgs {
    /// Hosts by FQDN or UUID, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Every host in this OU.
    #[arg(long)]
    pub ou: Option<String>,
    /// Every host.
    #[arg(long)]
    pub all: bool,
}

/// `outpost console action`
#[derive(Debug, Args)]
pub struct ConsoleActionArgs {
    /// update, upgrade, install or remove (or `send` with --signed).
    #[arg(value_parser = ["update", "upgrade", "install", "remove", "send"])]
    pub kind: String,
    /// Packages (install, remove).
    pub packages: Vec<String>,
    #[command(flatten)]
    pub targets: TargetArgs,
    /// How long the action stays valid (queued for offline hosts).
    #[arg(long, default_value = "1h")]
    pub expires: String,
    /// Also write the signed action to FILE.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// With `send`: relay this already signed action file.
    #[arg(long, value_name = "FILE")]
    pub signed: Option<PathBuf>,
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// `outpost console settings`
#[derive(Debug, Args)]
pub struct ConsoleSettingsArgs {
    /// The settings (TOML, the fields of a `config` package's `agent.toml`).
    pub file: PathBuf,
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Sequence (default: now, in seconds): agents apply only newer settings.
    #[arg(long)]
    pub sequence: Option<u64>,
    #[command(flatten)]
    pub console: ConsoleArgs,
}

/// A host status as `--status` takes it (any case), written as console answers write it.
fn host_status(text: &str) -> Result<String, String> {
    outpost_protocol::central::parse_status(text)
        .map(|s| outpost_protocol::central::status_text(s).to_string())
        .ok_or_else(|| format!("{text:?} is not a host status: OK, NEED-UPGRADE, ERROR or UNKNOWN"))
}
