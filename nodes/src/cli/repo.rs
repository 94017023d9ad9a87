//! `outpost repo …`: the repository roles and their maintenance, and repository clients.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde::Serialize;

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

/// Flags every daemon takes; they override the configuration file. Each is serialized under
/// the name of the configuration field it sets ([`crate::config::with_flags`]).
#[derive(Debug, Args, Clone, Serialize)]
pub struct DaemonArgs {
    /// Configuration file (TOML); see deploy/ for documented examples.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
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
    #[serde(skip)]
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
#[derive(Debug, Args, Serialize)]
pub struct RepoEdgeArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub daemon: DaemonArgs,
    /// An upstream (host:port), in order of preference; repeat for fail-over.
    #[arg(long = "upstream", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub upstreams: Vec<String>,
    /// immediate (hold every file before serving a snapshot) or on-demand (serve the snapshot
    /// at once; fetch a file when a client first asks, relaying its ranges as they land).
    #[arg(long, value_parser = ["immediate", "on-demand"])]
    pub fill: Option<String>,
    /// Bandwidth cap, like 10MB (per second).
    #[arg(long, value_name = "RATE")]
    pub bandwidth: Option<String>,
    /// A sync window, like "Mon-Fri 20:00-06:00" (repeatable).
    #[arg(long = "sync-window", value_name = "WINDOW")]
    #[serde(skip_serializing_if = "Vec::is_empty")]
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
