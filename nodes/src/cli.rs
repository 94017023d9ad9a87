//! The command line: every subcommand and flag, documented where it is declared.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Outpost: software deployment for organisations with many sites.
#[derive(Debug, Parser)]
#[command(name = "outpost", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// More log output (repeat for more: -v info, -vv debug). `OUTPOST_LOG` overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The organisation's certificates: CA, signers, deployers, admins, nodes.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Build, verify and inspect signed Outpost packages.
    #[command(subcommand)]
    Pkg(PkgCommand),
    /// Read what WAPT wrote: signed controls, indexes, packages to import.
    #[command(subcommand)]
    Wapt(WaptCommand),
    /// Repositories: the main repository, edges, and their clients.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// The agent of a managed machine: the daemon and its one-shot commands.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// The server: central (enrollment, inventory, actions) and the main repository.
    Server(ServerArgs),
    /// Administer the fleet through central: hosts, packages, repositories, actions.
    #[command(subcommand)]
    Console(ConsoleCommand),
    /// Show the whole chain working on this machine, on throw-away data.
    Demo(DemoArgs),
}

/// `outpost server`
#[derive(Debug, Args)]
pub struct ServerArgs {
    #[command(flatten)]
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
    pub watch: Vec<String>,
    /// Run only central (no main repository).
    #[arg(long, conflicts_with = "no_central")]
    pub no_repository: bool,
    /// Run only the main repository (no central).
    #[arg(long)]
    pub no_central: bool,
}

/// Flags every console command takes.
#[derive(Debug, Args, Clone)]
pub struct ConsoleArgs {
    /// Central's address.
    #[arg(long, value_name = "ADDR", env = "OUTPOST_SERVER")]
    pub server: String,
    /// The organisation CA certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: PathBuf,
    /// Your admin certificate.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Its private key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Read the key's password from FILE (otherwise `OUTPOST_KEY_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `outpost console …`
#[derive(Debug, Subcommand)]
pub enum ConsoleCommand {
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
}

/// `outpost console hosts`
#[derive(Debug, Args)]
pub struct ConsoleHostsArgs {
    /// Only hosts with this status (OK, NEED-UPGRADE, ERROR, UNKNOWN…).
    #[arg(long)]
    pub status: Option<String>,
    /// Only hosts with this Outpost package.
    #[arg(long)]
    pub package: Option<String>,
    /// Only hosts with this software installed (dpkg/rpm name).
    #[arg(long)]
    pub software: Option<String>,
    /// Only hosts in this OU (distinguished name).
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
    /// Install packages (and what they need): NAME, or NAME(>=VERSION) and other requests.
    Install(AgentNamesArgs),
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
    /// Give this machine a new UUID (a cloned disk image, a machine reinstalled from another's
    /// image): central then tells it apart from the original.
    ResetUuid(AgentReadArgs),
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

/// Flags every agent command takes; they override the configuration file.
#[derive(Debug, Args, Clone)]
pub struct AgentArgs {
    /// Configuration file (TOML); deploy/agent.toml documents every field.
    #[arg(long, value_name = "FILE")]
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
    pub password_file: Option<PathBuf>,
    /// A repository to use (repeatable); turns rules and DNS discovery off.
    #[arg(long = "repo", value_name = "ADDR")]
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

/// `outpost agent install|remove`.
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

/// `outpost repo …`
#[derive(Debug, Subcommand)]
pub enum RepoCommand {
    /// Run the main repository: takes publishes, signs snapshots, serves edges and agents.
    Main(RepoMainArgs),
    /// Run an edge repository: replicates from its upstreams, serves its site.
    Edge(RepoEdgeArgs),
    /// Show a repository's snapshot, packages, upstream and lag.
    Status(RepoStatusArgs),
    /// Fetch, verify and unpack a package as an agent will.
    Pull(RepoPullArgs),
    /// Re-hash every blob of a data folder (stop the daemon first, or run it on a copy).
    Fsck(RepoFsckArgs),
    /// Drop old snapshots and the blobs nothing references any more.
    Gc(RepoGcArgs),
    /// Install a CA-signed lineage document (`outpost pki sign-lineage`) in a stopped main
    /// repository's data folder: at its next start it opens the new lineage.
    SetLineage(RepoSetLineageArgs),
}

/// `outpost repo set-lineage`
#[derive(Debug, Args)]
pub struct RepoSetLineageArgs {
    /// The lineage document.
    pub file: PathBuf,
    /// The main repository's data folder (for `outpost server`: its `repo/` folder).
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// The organisation CA certificate (the document must be signed by its key).
    #[arg(long, value_name = "CA.crt")]
    pub ca: PathBuf,
}

/// Flags every daemon takes; they override the configuration file.
#[derive(Debug, Args, Clone)]
pub struct DaemonArgs {
    /// Configuration file (TOML); see deploy/ for documented examples.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// QUIC address to listen on (ip:port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data folder.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// The organisation CA certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// This node's certificate.
    #[arg(long, value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// This node's private key.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Read the key's password from FILE (otherwise `OUTPOST_KEY_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// HTTP address for /metrics ("" to turn it off).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    /// The repository's name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

/// `outpost repo main`
#[derive(Debug, Args)]
pub struct RepoMainArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
}

/// `outpost repo edge`
#[derive(Debug, Args)]
pub struct RepoEdgeArgs {
    #[command(flatten)]
    pub daemon: DaemonArgs,
    /// An upstream (host:port), in order of preference; repeat for fail-over.
    #[arg(long = "upstream", value_name = "ADDR")]
    pub upstreams: Vec<String>,
    /// immediate or on-demand.
    #[arg(long, value_parser = ["immediate", "on-demand"])]
    pub fill: Option<String>,
    /// Bandwidth cap, like 10MB (per second).
    #[arg(long, value_name = "RATE")]
    pub bandwidth: Option<String>,
    /// A sync window, like "Mon-Fri 20:00-06:00" (repeatable).
    #[arg(long = "sync-window", value_name = "WINDOW")]
    pub sync_windows: Vec<String>,
    /// Poll interval, like 5m.
    #[arg(long, value_name = "DURATION")]
    pub poll: Option<String>,
    /// Time zone of the sync windows: an IANA name like Europe/Paris, UTC, or +01:00
    /// (default: this machine's).
    #[arg(long, value_name = "ZONE")]
    pub time_zone: Option<String>,
}

/// How a client reaches a repository.
#[derive(Debug, Args, Clone)]
pub struct ClientArgs {
    /// The repository (host:port).
    #[arg(long, value_name = "ADDR")]
    pub repo: String,
    /// The organisation CA certificate (trusted for TLS and signatures).
    #[arg(long, visible_alias = "trust", value_name = "CA.crt")]
    pub ca: PathBuf,
    /// Your certificate (every client presents one).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Its private key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Read the key's password from FILE (otherwise `OUTPOST_KEY_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
    /// The slowest transfer accepted (per second): a slower repository is abandoned with an
    /// error rather than waited for.
    #[arg(long, value_name = "RATE", default_value = "16KiB")]
    pub min_rate: String,
}

/// `outpost repo status`
#[derive(Debug, Args)]
pub struct RepoStatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `outpost repo pull`
#[derive(Debug, Args)]
pub struct RepoPullArgs {
    /// NAME or NAME=VERSION.
    pub package: String,
    #[command(flatten)]
    pub client: ClientArgs,
    /// Where to unpack (a folder NAME_VERSION is made in it).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

/// `outpost repo fsck`
#[derive(Debug, Args)]
pub struct RepoFsckArgs {
    /// The data folder.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Remove damaged blobs (an edge fetches them again at its next sync).
    #[arg(long)]
    pub repair: bool,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `outpost repo gc`
#[derive(Debug, Args)]
pub struct RepoGcArgs {
    /// The data folder.
    #[arg(long, value_name = "DIR")]
    pub data: PathBuf,
    /// Snapshots to keep.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub keep: usize,
    /// Keep unreferenced blobs younger than this.
    #[arg(long, value_name = "DURATION", default_value = "1h")]
    pub grace: String,
}

/// `outpost pki …`
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Make the organisation CA (`ca.crt`, `ca.key`) in DIR.
    Init(PkiInitArgs),
    /// Issue a certificate and key for a role, signed by the CA in DIR.
    Issue(PkiIssueArgs),
    /// Show what a certificate (or key) file holds.
    Show(PkiShowArgs),
    /// Make the enrollment CA central uses to issue host certificates (it can issue nothing
    /// else): `enroll-ca.crt`, `enroll-ca.key` in DIR.
    EnrollCa(PkiEnrollCaArgs),
    /// Sign, with the CA's own key, a lineage document that moves every edge and agent to a
    /// new line of snapshots (after the main repository was restored from an older backup or
    /// replaced); install it with `outpost repo set-lineage`. See deploy/README.md.
    SignLineage(PkiSignLineageArgs),
}

/// `outpost pki sign-lineage`
#[derive(Debug, Args)]
pub struct PkiSignLineageArgs {
    /// Folder holding the CA (`ca.crt`, `ca.key`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// The lineage to open: greater than the one the repositories serve (`outpost repo
    /// status` shows it; 0 before any).
    #[arg(long, value_name = "N")]
    pub epoch: u64,
    /// Why, for the record.
    #[arg(long, value_name = "TEXT")]
    pub reason: String,
    /// Where to write the document (default: lineage-N.outpost-lineage in the current folder).
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Read the CA key's password from FILE (otherwise `OUTPOST_CA_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
}

/// `outpost pki enroll-ca`
#[derive(Debug, Args)]
pub struct PkiEnrollCaArgs {
    /// Folder holding the CA (`ca.crt`, `ca.key`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Its name.
    #[arg(long, default_value = "Outpost enrollment")]
    pub name: String,
    /// Lifetime in days.
    #[arg(long, default_value_t = outpost_protocol::pki::DEFAULT_CERT_DAYS)]
    pub days: u32,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
    /// Read the CA key's password from FILE (otherwise `OUTPOST_CA_PASSWORD`).
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    #[command(flatten)]
    pub password: NewKeyPassword,
}

/// How a new private key is protected.
#[derive(Debug, Args, Clone, Default)]
pub struct NewKeyPassword {
    /// Read the new key's password from the first line of FILE (otherwise
    /// `OUTPOST_KEY_PASSWORD`, otherwise a prompt on a terminal).
    #[arg(long, value_name = "FILE", conflicts_with = "no_password")]
    pub password_file: Option<PathBuf>,
    /// Write the new private key unencrypted (for machines that start unattended).
    #[arg(long)]
    pub no_password: bool,
}

/// `outpost pki init`
#[derive(Debug, Args)]
pub struct PkiInitArgs {
    /// Folder for the CA files (created if needed).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Organisation name written in every certificate.
    #[arg(long, value_name = "NAME", default_value = "Outpost")]
    pub org: String,
    /// Lifetime of the CA in days.
    #[arg(long, value_name = "N", default_value_t = outpost_protocol::pki::DEFAULT_CA_DAYS)]
    pub days: u32,
    /// Replace an existing CA in DIR (every certificate it issued stops being trusted).
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub password: NewKeyPassword,
}

/// `outpost pki issue`
#[derive(Debug, Args)]
pub struct PkiIssueArgs {
    /// Folder holding the CA (`ca.crt`, `ca.key`).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// What the certificate is for.
    #[arg(long, value_parser = ["signer", "deployer", "admin", "server", "edge", "host"])]
    pub role: String,
    /// Common name: a person or team for signer/deployer/admin, a DNS name or IP address for
    /// server/edge/host.
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// Where to write NAME.crt and NAME.key (default: DIR).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Admin rights, comma-separated: view, act, modify (admins only; default: view).
    #[arg(long, value_name = "LIST")]
    pub rights: Option<String>,
    /// Extra DNS name or IP address for node certificates (repeatable).
    #[arg(long = "san", value_name = "NAME_OR_IP")]
    pub alt_names: Vec<String>,
    /// Lifetime in days.
    #[arg(long, value_name = "N", default_value_t = outpost_protocol::pki::DEFAULT_CERT_DAYS)]
    pub days: u32,
    /// Read the CA key's password from FILE (otherwise `OUTPOST_CA_PASSWORD`, then the new
    /// key's password source, then a prompt).
    #[arg(long, value_name = "FILE")]
    pub ca_password_file: Option<PathBuf>,
    /// Replace existing NAME.crt / NAME.key.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub password: NewKeyPassword,
}

/// `outpost pki show`
#[derive(Debug, Args)]
pub struct PkiShowArgs {
    /// A certificate (PEM, may hold a chain) or a private key.
    pub file: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `outpost pkg …`
#[derive(Debug, Subcommand)]
pub enum PkgCommand {
    /// Build a signed package from SRC_DIR (WAPT/control, payload, optional setup.sh/setup.ps1).
    Build(PkgBuildArgs),
    /// Check a package: certificate chain, key usages, signature and every byte.
    Verify(PkgVerifyArgs),
    /// Show a package's control, files and signer (without verifying it).
    Show(PkgShowArgs),
    /// Publish a package to the main repository.
    Publish(PkgPublishArgs),
    /// Remove a package (all versions, or NAME=VERSION) from the main repository.
    Unpublish(PkgUnpublishArgs),
}

/// `outpost pkg publish`
#[derive(Debug, Args)]
pub struct PkgPublishArgs {
    /// The package file.
    pub file: PathBuf,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// `outpost pkg unpublish`
#[derive(Debug, Args)]
pub struct PkgUnpublishArgs {
    /// NAME or NAME=VERSION.
    pub package: String,
    #[command(flatten)]
    pub client: ClientArgs,
}

/// The signing certificate and key.
#[derive(Debug, Args, Clone)]
pub struct SigningKey {
    /// Signer certificate (PEM; may be followed by intermediates).
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Its private key.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Read the key's password from FILE (otherwise `OUTPOST_KEY_PASSWORD`, otherwise a
    /// prompt on a terminal).
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// `outpost pkg build`
#[derive(Debug, Args)]
pub struct PkgBuildArgs {
    /// Source folder.
    pub src_dir: PathBuf,
    #[command(flatten)]
    pub signing: SigningKey,
    /// Where to write the package (default: the current folder).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
}

/// `outpost pkg verify`
#[derive(Debug, Args)]
pub struct PkgVerifyArgs {
    /// The package file.
    pub file: PathBuf,
    /// The organisation CA certificate (PEM; several CAs may be in the file).
    #[arg(long, value_name = "CA.crt")]
    pub trust: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `outpost pkg show`
#[derive(Debug, Args)]
pub struct PkgShowArgs {
    /// The package file.
    pub file: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `outpost wapt …`
#[derive(Debug, Subcommand)]
pub enum WaptCommand {
    /// Verify the signature of a WAPT control file.
    VerifyControl(WaptVerifyControlArgs),
    /// List every record of a WAPT index (`Packages` zip or text).
    Index(WaptIndexArgs),
    /// Convert a WAPT package to an Outpost package signed by your signer.
    Import(WaptImportArgs),
}

/// `outpost wapt verify-control`
#[derive(Debug, Args)]
pub struct WaptVerifyControlArgs {
    /// The control file.
    pub file: PathBuf,
    /// Trusted signer certificate(s): a PEM file or a folder of them (repeatable).
    #[arg(long, value_name = "CERT", required = true)]
    pub trust: Vec<PathBuf>,
}

/// `outpost wapt index`
#[derive(Debug, Args)]
pub struct WaptIndexArgs {
    /// The index: WAPT's `Packages` zip, or the bare text.
    pub file: PathBuf,
    /// Every field of every record, as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `outpost wapt import`
#[derive(Debug, Args)]
pub struct WaptImportArgs {
    /// The WAPT package (`.wapt`).
    pub file: PathBuf,
    #[command(flatten)]
    pub signing: SigningKey,
    /// Check the WAPT signature against these certificates first (PEM file or folder;
    /// repeatable). Without it only the manifest hashes are checked.
    #[arg(long, value_name = "CERT")]
    pub trust: Vec<PathBuf>,
    /// Where to write the Outpost package (default: the current folder).
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub out: PathBuf,
    /// Native hooks standing in for WAPT's setup.py: a folder holding setup.sh (Linux, macOS)
    /// and/or setup.ps1 / setup.cmd (Windows). Without them, a package with a setup.py is
    /// imported but agents refuse to install it.
    #[arg(long, value_name = "DIR")]
    pub hooks: Option<PathBuf>,
}

/// `outpost demo`
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Work in DIR instead of a temporary folder (kept afterwards).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Leave everything running until Ctrl-C (to try the console and watch the metrics).
    #[arg(long)]
    pub keep_running: bool,
    /// How many agents (spread over the three sites).
    #[arg(long, default_value_t = 12)]
    pub agents: usize,
}
