//! Configuration files of the daemons: one TOML file per role, every field documented and with
//! a default that works. Command-line flags override the file. Durations are written like
//! `30s`, `5m`, `2h`, `7d`; sizes like `10MB` or `5MiB`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

mod agent;
mod values;

pub use agent::*;
pub use values::*;

/// Default port of the repository protocol.
pub const REPO_PORT: u16 = 7443;

/// A repository's memory for the ranges served last, by default.
pub const DEFAULT_RANGE_MEMORY: &str = "64MiB";

/// `outpost repo main` settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MainConfig {
    /// QUIC address to listen on (`ip:port`).
    pub listen: String,
    /// Data folder (blobs and state).
    pub data: PathBuf,
    /// The organisation CA certificate: clients must present a certificate it issued.
    pub ca: PathBuf,
    /// This server's certificate (role `server`: TLS and snapshot signing).
    pub cert: PathBuf,
    /// Its private key (unencrypted, or give `OUTPOST_KEY_PASSWORD`).
    pub key: PathBuf,
    /// HTTP address serving `/metrics`; empty to turn it off.
    pub metrics: String,
    /// The repository's name, shown in status and snapshots.
    pub name: String,
    /// How long a snapshot is valid: agents and edges refuse an older one (freeze protection).
    pub snapshot_lifetime: String,
    /// How often the snapshot is re-signed when nothing changes; keep it well below the lifetime.
    pub resign_every: String,
    /// Snapshots kept, with the content they reference.
    pub keep_snapshots: usize,
    /// Unreferenced blobs younger than this are not collected.
    pub gc_grace: String,
    /// Memory for the byte ranges served last, shared by the clients asking for the same bytes
    /// at once, like `64MiB` (each range dropped 30 s after it was read); `0` keeps none (clients
    /// asking at the very same time still share one read).
    pub range_memory: String,
}

impl Default for MainConfig {
    fn default() -> Self {
        Self {
            listen: format!("0.0.0.0:{REPO_PORT}"),
            data: PathBuf::from("/var/lib/outpost/main"),
            ca: PathBuf::from("/etc/outpost/ca.crt"),
            cert: PathBuf::from("/etc/outpost/server.crt"),
            key: PathBuf::from("/etc/outpost/server.key"),
            metrics: crate::daemon::metrics_port::MAIN.into(),
            name: "main".into(),
            snapshot_lifetime: "7d".into(),
            resign_every: "1d".into(),
            keep_snapshots: 10,
            gc_grace: "1h".into(),
            range_memory: DEFAULT_RANGE_MEMORY.into(),
        }
    }
}

/// `outpost repo edge` settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeConfig {
    /// QUIC address to listen on (`ip:port`).
    pub listen: String,
    /// Data folder (blobs and state).
    pub data: PathBuf,
    /// The organisation CA certificate.
    pub ca: PathBuf,
    /// This edge's certificate (role `edge`).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// HTTP address serving `/metrics`; empty to turn it off.
    pub metrics: String,
    /// The repository's name, shown in status.
    pub name: String,
    /// Upstreams in order of preference (`host:port`): the main repository or another edge.
    pub upstreams: Vec<String>,
    /// How often to poll the upstream's head (new heads are also pushed at once).
    pub poll: String,
    /// Bandwidth cap for replication, like `10MB` (per second); `0` for none.
    pub bandwidth: String,
    /// Windows when replication may run, like `"Mon-Fri 20:00-06:00"`; empty for always.
    pub sync_windows: Vec<String>,
    /// The time zone the windows are written in: an IANA name like `Europe/Paris` (daylight
    /// saving time follows), `UTC`, or an offset like `+01:00`; "" for this machine's zone.
    pub time_zone: String,
    /// Deprecated: a fixed offset like `+01:00` (use `time_zone`).
    pub utc_offset: String,
    /// `immediate` (fetch everything before serving a snapshot) or `on-demand` (serve the
    /// snapshot at once; fetch a file the first time a client asks for it, keep it, and relay
    /// its ranges to every client asking meanwhile as soon as they land).
    pub fill: String,
    /// Requests in flight during a sync, counted in ranges of 1 MiB (smaller ranges, as an
    /// update's: up to four times as many, within the same bytes); 1 to 1024.
    pub concurrency: usize,
    /// Snapshots kept, with the content they reference.
    pub keep_snapshots: usize,
    /// Unreferenced blobs younger than this are not collected.
    pub gc_grace: String,
    /// How long an upstream that served refused content, or was too slow, is avoided.
    pub quarantine: String,
    /// The slowest transfer accepted from an upstream, like `16KiB` (per second): a slower
    /// upstream is abandoned for the next one (what was verified is kept).
    pub min_rate: String,
    /// Memory for the byte ranges served last, shared by the clients asking for the same bytes
    /// at once, like `64MiB` (each range dropped 30 s after it was read); `0` keeps none (clients
    /// asking at the very same time still share one read).
    pub range_memory: String,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            listen: format!("0.0.0.0:{REPO_PORT}"),
            data: PathBuf::from("/var/lib/outpost/edge"),
            ca: PathBuf::from("/etc/outpost/ca.crt"),
            cert: PathBuf::from("/etc/outpost/edge.crt"),
            key: PathBuf::from("/etc/outpost/edge.key"),
            metrics: crate::daemon::metrics_port::EDGE.into(),
            name: "edge".into(),
            upstreams: Vec::new(),
            poll: "5m".into(),
            bandwidth: "0".into(),
            sync_windows: Vec::new(),
            time_zone: String::new(),
            utc_offset: String::new(),
            fill: "immediate".into(),
            concurrency: 16,
            keep_snapshots: 3,
            gc_grace: "1h".into(),
            quarantine: "10m".into(),
            min_rate: "16KiB".into(),
            range_memory: DEFAULT_RANGE_MEMORY.into(),
        }
    }
}

/// `outpost server` settings: the main repository's fields (its QUIC address is `listen`, its
/// data in `data/repo`), central's (`central_listen`, data in `data/central`), and which roles
/// run.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// QUIC address of the main repository (`ip:port`).
    pub listen: String,
    /// QUIC address of central (agents and consoles).
    pub central_listen: String,
    /// Data folder: `repo/` and `central/` inside.
    pub data: PathBuf,
    /// The organisation CA certificate.
    pub ca: PathBuf,
    /// This server's certificate (role `server`): TLS for both roles and snapshot signing.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// HTTP address serving `/metrics` for both roles; empty to turn it off.
    pub metrics: String,
    /// The server's name.
    pub name: String,
    /// Run the main repository.
    pub repository: bool,
    /// Run central.
    pub central: bool,
    /// The enrollment CA certificate (`outpost pki enroll-ca`); "" turns enrollment off.
    pub enroll_cert: PathBuf,
    /// Its key.
    pub enroll_key: PathBuf,
    /// Lifetime of host certificates issued at enrollment, in days.
    pub host_days: u32,
    /// Repositories (`host:port`) `outpost console repos` shows besides the main.
    pub watch: Vec<String>,
    /// How long a snapshot is valid.
    pub snapshot_lifetime: String,
    /// How often the snapshot is re-signed when nothing changes.
    pub resign_every: String,
    /// Snapshots kept.
    pub keep_snapshots: usize,
    /// Unreferenced blobs younger than this are not collected.
    pub gc_grace: String,
    /// Memory for the byte ranges served last, shared by the clients asking for the same bytes
    /// at once, like `64MiB` (each range dropped 30 s after it was read); `0` keeps none (clients
    /// asking at the very same time still share one read).
    pub range_memory: String,
    /// PostgreSQL for central's state (empty: redb in `data/central`).
    pub database: String,
    /// A streaming replica for reports (empty: the database).
    pub database_read: String,
    /// A file holding the database password (else `OUTPOST_DATABASE_PASSWORD`).
    pub database_password_file: PathBuf,
    /// Most database connections this instance opens.
    pub database_pool: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let m = MainConfig::default();
        Self {
            listen: m.listen,
            central_listen: format!("0.0.0.0:{}", REPO_PORT + 1),
            data: PathBuf::from("/var/lib/outpost/server"),
            ca: m.ca,
            cert: m.cert,
            key: m.key,
            metrics: crate::daemon::metrics_port::SERVER.into(),
            name: "server".into(),
            repository: true,
            central: true,
            enroll_cert: PathBuf::new(),
            enroll_key: PathBuf::new(),
            host_days: 1095,
            watch: Vec::new(),
            snapshot_lifetime: m.snapshot_lifetime,
            resign_every: m.resign_every,
            keep_snapshots: m.keep_snapshots,
            gc_grace: m.gc_grace,
            range_memory: m.range_memory,
            database: String::new(),
            database_read: String::new(),
            database_password_file: PathBuf::new(),
            database_pool: 16,
        }
    }
}

impl ServerConfig {
    /// The main repository's part.
    pub fn main(&self) -> MainConfig {
        MainConfig {
            listen: self.listen.clone(),
            data: self.data.join("repo"),
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            metrics: self.metrics.clone(),
            name: self.name.clone(),
            snapshot_lifetime: self.snapshot_lifetime.clone(),
            resign_every: self.resign_every.clone(),
            keep_snapshots: self.keep_snapshots,
            gc_grace: self.gc_grace.clone(),
            range_memory: self.range_memory.clone(),
        }
    }
}

/// A configuration whose file paths are relative to the folder of the file they are written in.
pub trait PathFields {
    /// The path fields.
    fn path_fields(&mut self) -> Vec<&mut PathBuf>;
}

impl PathFields for MainConfig {
    fn path_fields(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.data, &mut self.ca, &mut self.cert, &mut self.key]
    }
}

impl PathFields for EdgeConfig {
    fn path_fields(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.data, &mut self.ca, &mut self.cert, &mut self.key]
    }
}

impl PathFields for AgentConfig {
    fn path_fields(&mut self) -> Vec<&mut PathBuf> {
        vec![&mut self.state, &mut self.ca, &mut self.cert, &mut self.key]
    }
}

impl PathFields for ServerConfig {
    fn path_fields(&mut self) -> Vec<&mut PathBuf> {
        vec![
            &mut self.data,
            &mut self.ca,
            &mut self.cert,
            &mut self.key,
            &mut self.enroll_cert,
            &mut self.enroll_key,
            &mut self.database_password_file,
        ]
    }
}

/// Puts the flags given on the command line over a configuration. Each flag is serialized
/// under the name of the field it sets (flags not given are left out), so a flag and its field
/// share one name, and a flag that names no field is an error (caught by the tests), never a
/// flag silently ignored.
pub fn with_flags<T: Serialize + DeserializeOwned>(cfg: &T, flags: &impl Serialize) -> Result<T> {
    let mut table = toml::Table::try_from(cfg).context("the configuration")?;
    let flags = toml::Table::try_from(flags).context("the command-line flags")?;
    table.extend(flags);
    toml::Value::Table(table)
        .try_into()
        .map_err(|e| anyhow::anyhow!("command-line flags: {}", e.to_string().trim_end()))
}

/// Reads a TOML file, naming the file and field in errors. Relative paths in it are relative
/// to the file's folder (as a reader of the file expects), not to the current folder.
pub fn load<T: for<'de> Deserialize<'de> + Default + PathFields>(path: Option<&Path>) -> Result<T> {
    let Some(path) = path else { return Ok(T::default()) };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut cfg: T =
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
    let base = std::path::absolute(path)
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    for field in cfg.path_fields() {
        if !field.as_os_str().is_empty() && field.is_relative() {
            *field = base.join(&*field);
        }
    }
    Ok(cfg)
}

/// The environment variable naming the agent's configuration file.
pub const CONFIG_ENV: &str = "OUTPOST_CONFIG";

/// What a system folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    /// Configuration, certificates and keys.
    Config,
    /// State and caches.
    State,
}

/// Outpost's system folders: `/etc/outpost` and `/var/lib/outpost` on Unix; on Windows one
/// folder, `%ProgramData%\Outpost` (`C:\ProgramData\Outpost`), for both.
pub fn system_dir(place: Place) -> PathBuf {
    #[cfg(windows)]
    {
        let _ = place;
        let base = outpost_actors::windows::system::program_data()
            .or_else(|| std::env::var_os("ProgramData").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from(r"C:\ProgramData"));
        base.join("Outpost")
    }
    #[cfg(not(windows))]
    {
        PathBuf::from(match place {
            Place::Config => "/etc/outpost",
            Place::State => "/var/lib/outpost",
        })
    }
}

/// The agent's configuration file when none is given on the command line.
pub fn default_agent_config() -> PathBuf {
    system_dir(Place::Config).join("agent.toml")
}

/// Which configuration file an agent command reads: `--config`, else `OUTPOST_CONFIG`, else
/// the default file when it exists (the daemon and the one-shot commands agree). `None`: no
/// file, the built-in defaults.
pub fn agent_config_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(f) = flag {
        return Some(f.to_path_buf());
    }
    if let Some(env) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(env));
    }
    let default = default_agent_config();
    default.is_file().then_some(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_examples_load_and_are_valid() {
        let main: MainConfig = toml::from_str(include_str!("../../../deploy/repo-main.toml")).unwrap();
        assert!(
            duration("resign_every", &main.resign_every).unwrap()
                < duration("snapshot_lifetime", &main.snapshot_lifetime).unwrap()
        );
        assert_eq!(main.listen, MainConfig::default().listen);
        let edge: EdgeConfig = toml::from_str(include_str!("../../../deploy/repo-edge.toml")).unwrap();
        assert_eq!(edge.metrics, EdgeConfig::default().metrics);
        min_rate("min_rate", &edge.min_rate).unwrap();
        assert_eq!(edge.upstreams.len(), 2);
        duration("poll", &edge.poll).unwrap();
        bytes("bandwidth", &edge.bandwidth).unwrap();
        assert_eq!(bytes("range_memory", &edge.range_memory).unwrap(), 64 << 20);
        assert_eq!(bytes("range_memory", &main.range_memory).unwrap(), 64 << 20);
        windows(&edge.sync_windows).unwrap();
        zone(&edge.time_zone, &edge.utc_offset).unwrap();
        assert!(["immediate", "on-demand"].contains(&edge.fill.as_str()));
        // The example windows in the comment parse too.
        windows(&["Mon-Fri 19:00-07:00".into(), "Sat,Sun 00:00-24:00".into()]).unwrap();
    }

    #[test]
    fn the_windows_agent_example_loads_with_windows_paths() {
        let agent: AgentConfig = toml::from_str(include_str!("../../../deploy/windows/agent.toml")).unwrap();
        assert_eq!(agent.state, PathBuf::from(r"C:\ProgramData\Outpost\agent"));
        assert_eq!(agent.key, PathBuf::from(r"C:\ProgramData\Outpost\host.key"));
        assert_eq!(agent.rules.len(), 2);
        duration("hook_timeout", &agent.hook_timeout).unwrap();
    }

    #[test]
    fn deploy_agent_example_loads_and_its_rules_are_valid() {
        // Each platform's example names the defaults of that platform.
        let example = if cfg!(windows) {
            include_str!("../../../deploy/windows/agent.toml")
        } else {
            include_str!("../../../deploy/agent.toml")
        };
        let agent: AgentConfig = toml::from_str(example).unwrap();
        let defaults = AgentConfig::default();
        assert_eq!(
            (&agent.state, &agent.ca, &agent.cert, &agent.key),
            (&defaults.state, &defaults.ca, &defaults.cert, &defaults.key)
        );
        assert_eq!(agent.rules.len(), 2);
        for r in &agent.rules {
            r.rule().unwrap();
        }
        duration("update_every", &agent.update_every).unwrap();
        duration("hook_timeout", &agent.hook_timeout).unwrap();
        assert!(["auto", "manual"].contains(&agent.upgrade.as_str()));
        assert_eq!(agent.maturities, ["PROD"]);
        min_rate("min_rate", &agent.min_rate).unwrap();
        duration("probation", &agent.probation).unwrap();
        assert_eq!(agent.metrics, AgentConfig::default().metrics);
    }

    #[test]
    fn deploy_server_example_loads() {
        let server: ServerConfig = toml::from_str(include_str!("../../../deploy/server.toml")).unwrap();
        assert!(server.repository && server.central);
        assert_eq!(server.watch.len(), 1);
        assert_eq!(server.main().data, server.data.join("repo"));
        assert!(
            duration("resign_every", &server.resign_every).unwrap()
                < duration("snapshot_lifetime", &server.snapshot_lifetime).unwrap()
        );
        assert_ne!(server.listen, server.central_listen);
    }

    fn parse(args: &[&str]) -> crate::cli::Command {
        use clap::Parser;
        crate::cli::Cli::try_parse_from(std::iter::once("outpost").chain(args.iter().copied())).unwrap().command
    }

    #[test]
    fn every_daemon_flag_sets_the_field_of_its_name_and_no_other() {
        use crate::cli::{AgentCommand, Command, RepoCommand};
        let node = ["--listen", "10.0.0.1:1", "--data", "d", "--ca", "c", "--cert", "e", "--key", "k"];
        let named = ["--metrics", "10.0.0.1:2", "--name", "n", "--password-file", "p", "--config", "f"];
        let Command::Repo(RepoCommand::Edge(edge)) = parse(
            &[
                &["repo", "edge"][..],
                &node,
                &named,
                &[
                    "--upstream",
                    "a:1",
                    "--upstream",
                    "b:2",
                    "--fill",
                    "on-demand",
                    "--bandwidth",
                    "1MB",
                    "--sync-window",
                    "Mon 00:00-01:00",
                    "--poll",
                    "1m",
                    "--time-zone",
                    "UTC",
                ],
            ]
            .concat(),
        ) else {
            panic!("not repo edge")
        };
        let file = EdgeConfig { concurrency: 3, ..EdgeConfig::default() };
        let e = with_flags(&file, &edge).unwrap();
        assert_eq!(
            (e.listen.as_str(), e.data.as_path(), e.ca.as_path(), e.cert.as_path(), e.key.as_path()),
            ("10.0.0.1:1", Path::new("d"), Path::new("c"), Path::new("e"), Path::new("k"))
        );
        assert_eq!((e.metrics.as_str(), e.name.as_str()), ("10.0.0.1:2", "n"));
        assert_eq!(e.upstreams, ["a:1", "b:2"]);
        assert_eq!((e.fill.as_str(), e.bandwidth.as_str(), e.poll.as_str()), ("on-demand", "1MB", "1m"));
        assert_eq!((e.sync_windows.len(), e.time_zone.as_str()), (1, "UTC"));
        assert_eq!(e.concurrency, 3, "a field no flag names keeps the file's value");

        // No flag given: the file's values stay, lists included.
        let Command::Repo(RepoCommand::Edge(bare)) = parse(&["repo", "edge"]) else { panic!() };
        let file = EdgeConfig { upstreams: vec!["x:1".into()], name: "site".into(), ..EdgeConfig::default() };
        let e = with_flags(&file, &bare).unwrap();
        assert_eq!((e.upstreams.as_slice(), e.name.as_str()), (&["x:1".to_string()][..], "site"));

        let Command::Repo(RepoCommand::Main(main)) = parse(&[&["repo", "main"][..], &node, &named].concat()) else {
            panic!()
        };
        let m = with_flags(&MainConfig::default(), &main.daemon).unwrap();
        assert_eq!((m.listen.as_str(), m.name.as_str(), m.key.as_path()), ("10.0.0.1:1", "n", Path::new("k")));

        let Command::Server(server) = parse(
            &[
                &["server"][..],
                &node,
                &["--central-listen", "10.0.0.1:3", "--enroll-cert", "ec", "--enroll-key", "ek", "--watch", "w:1"],
            ]
            .concat(),
        ) else {
            panic!()
        };
        let file = ServerConfig { watch: vec!["v:1".into()], ..ServerConfig::default() };
        let s = with_flags(&file, &server).unwrap();
        assert_eq!((s.listen.as_str(), s.central_listen.as_str()), ("10.0.0.1:1", "10.0.0.1:3"));
        assert_eq!((s.enroll_cert.as_path(), s.enroll_key.as_path()), (Path::new("ec"), Path::new("ek")));
        assert_eq!(s.watch, ["v:1"], "--watch adds to the list (server_cmd), it does not replace it here");
        assert_eq!(s.main().data, Path::new("d").join("repo"));

        let Command::Agent(AgentCommand::Status(status)) = parse(&[
            "agent",
            "status",
            "--state",
            "s",
            "--ca",
            "c",
            "--cert",
            "e",
            "--key",
            "k",
            "--repo",
            "r:1",
            "--server",
            "central:1",
        ]) else {
            panic!()
        };
        let a = with_flags(&AgentConfig::default(), &status.agent).unwrap();
        assert_eq!(
            (a.state.as_path(), a.ca.as_path(), a.cert.as_path()),
            (Path::new("s"), Path::new("c"), Path::new("e"))
        );
        assert_eq!((a.repos.as_slice(), a.server.as_str()), (&["r:1".to_string()][..], "central:1"));
    }

    #[test]
    fn the_agents_server_is_one_address_or_a_list() {
        let one: AgentConfig = toml::from_str("server = \"c1:7002\"").unwrap();
        assert_eq!(one.server, "c1:7002");
        let list: AgentConfig = toml::from_str("server = [\"c1:7002\", \"c2:7002\"]").unwrap();
        assert_eq!(list.server, "c1:7002, c2:7002");
        let e = toml::from_str::<AgentConfig>("server = 7002").unwrap_err().to_string();
        assert!(e.contains("server"), "{e}");
    }

    #[test]
    fn a_flag_that_names_no_field_is_an_error() {
        #[derive(Serialize)]
        struct Stray {
            lisen: &'static str,
        }
        let e = with_flags(&EdgeConfig::default(), &Stray { lisen: "x" }).unwrap_err();
        assert!(format!("{e:#}").contains("lisen"), "{e:#}");
    }

    #[test]
    fn defaults_are_valid() {
        let m = MainConfig::default();
        duration("snapshot_lifetime", &m.snapshot_lifetime).unwrap();
        duration("resign_every", &m.resign_every).unwrap();
        let e = EdgeConfig::default();
        duration("poll", &e.poll).unwrap();
        assert_eq!(bytes("bandwidth", &e.bandwidth).unwrap(), 0);
        // Every role has its own /metrics port, so that all of them can share a machine.
        let ports =
            [MainConfig::default().metrics, e.metrics, ServerConfig::default().metrics, AgentConfig::default().metrics];
        let distinct: std::collections::BTreeSet<&String> = ports.iter().collect();
        assert_eq!(distinct.len(), ports.len(), "{ports:?}");
        assert_eq!(utc_offset("+01:30").unwrap(), 90);
        assert_eq!(utc_offset("-05:00").unwrap(), -300);
        assert!(utc_offset("1").is_err());
    }
}
