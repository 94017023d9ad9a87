//! Configuration files of the daemons: one TOML file per role, every field documented and with
//! a default that works. Command-line flags override the file. Durations are written like
//! `30s`, `5m`, `2h`, `7d`; sizes like `10MB` or `5MiB`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use outpost_protocol::schedule::{SyncWindow, parse_bytes, parse_duration};
use serde::Deserialize;

/// Default port of the repository protocol.
pub const REPO_PORT: u16 = 7443;

/// `outpost repo main` settings.
#[derive(Debug, Clone, Deserialize)]
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
        }
    }
}

/// `outpost repo edge` settings.
#[derive(Debug, Clone, Deserialize)]
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
    /// `immediate` (fetch everything before serving a snapshot) or `on-demand` (fetch each
    /// chunk the first time a client asks, then keep it).
    pub fill: String,
    /// Chunk requests in flight during a sync.
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
        }
    }
}

/// `outpost agent …` settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// State folder: local database, package cache, control socket.
    pub state: PathBuf,
    /// The organisation CA certificate.
    pub ca: PathBuf,
    /// This host's certificate (role `host`).
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
    /// Repositories to use (`host:port`), after rules and DNS discovery; `--repo` replaces
    /// them and turns rules and DNS discovery off.
    pub repos: Vec<String>,
    /// The main repository, the last resort (`host:port`).
    pub main: String,
    /// The central server (`host:port`), once it exists.
    pub server: String,
    /// Local address for outgoing connections ("" for the system's choice).
    pub bind: String,
    /// Look for `_outpost._udp.<domain>` SRV records.
    pub srv_discovery: bool,
    /// Domain for SRV discovery ("" for the host's own domain).
    pub dns_domain: String,
    /// DNS servers to ask (`ip:port`) instead of the system's.
    pub dns_servers: Vec<String>,
    /// Override the detected BIOS UUID.
    pub uuid: String,
    /// Override the detected fully qualified name.
    pub fqdn: String,
    /// Distinguished name of the host or its OU (for unit packages), like
    /// "CN=pc1,OU=Paris,DC=example,DC=org".
    pub ou: String,
    /// Directory groups (for profile packages).
    pub profiles: Vec<String>,
    /// Site (for repository rules).
    pub site: String,
    /// The public address, when known (for repository rules).
    pub public_ip: String,
    /// Accepted maturities, preferred first.
    pub maturities: Vec<String>,
    /// Locales, preferred first (empty: the environment's).
    pub locales: Vec<String>,
    /// How often the daemon updates.
    pub update_every: String,
    /// "auto": the daemon installs what each update plans; "manual": only on command.
    pub upgrade: String,
    /// Time limit of one hook run.
    pub hook_timeout: String,
    /// Repository rules, tried in sequence order.
    pub rules: Vec<RuleConfig>,
    /// The slowest transfer accepted from a repository, like `16KiB` (per second): a slower
    /// one is abandoned for the next candidate (what was verified is kept).
    pub min_rate: String,
    /// How long a repository that was too slow is left aside before it is tried first again.
    pub probation: String,
    /// HTTP address of the daemon's `/metrics`; empty to turn it off.
    pub metrics: String,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            state: PathBuf::from("/var/lib/outpost/agent"),
            ca: PathBuf::from("/etc/outpost/ca.crt"),
            cert: PathBuf::from("/etc/outpost/host.crt"),
            key: PathBuf::from("/etc/outpost/host.key"),
            repos: Vec::new(),
            main: String::new(),
            server: String::new(),
            bind: String::new(),
            srv_discovery: true,
            dns_domain: String::new(),
            dns_servers: Vec::new(),
            uuid: String::new(),
            fqdn: String::new(),
            ou: String::new(),
            profiles: Vec::new(),
            site: String::new(),
            public_ip: String::new(),
            maturities: vec!["PROD".into()],
            locales: Vec::new(),
            update_every: "2h".into(),
            upgrade: "auto".into(),
            hook_timeout: "10m".into(),
            rules: Vec::new(),
            min_rate: "16KiB".into(),
            probation: "10m".into(),
            metrics: crate::daemon::metrics_port::AGENT.into(),
        }
    }
}

/// A repository rule in a configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Rules are tried in increasing sequence.
    pub sequence: u32,
    /// A name for `outpost agent repos`.
    #[serde(default)]
    pub name: String,
    /// agent_ip, public_ip (CIDR), domain, hostname (glob) or site.
    pub condition: String,
    /// What the condition compares with.
    pub value: String,
    /// Match when the condition is false.
    #[serde(default)]
    pub negate: bool,
    /// Repositories for matching agents.
    pub repos: Vec<String>,
    /// When it matches, use only its repositories.
    #[serde(default)]
    pub no_fallback: bool,
}

impl RuleConfig {
    /// The rule it describes.
    pub fn rule(&self) -> Result<outpost_protocol::selection::Rule> {
        use outpost_protocol::selection::{Cidr, Condition, Rule};
        let cidr = |v: &str| Cidr::parse(v).map_err(|e| anyhow::anyhow!("rule {}: {e}", self.sequence));
        let condition = match self.condition.as_str() {
            "agent_ip" => Condition::AgentIp(cidr(&self.value)?),
            "public_ip" => Condition::PublicIp(cidr(&self.value)?),
            "domain" => Condition::Domain(self.value.clone()),
            "hostname" => Condition::Hostname(self.value.clone()),
            "site" => Condition::Site(self.value.clone()),
            other => bail!(
                "rule {}: unknown condition {other:?} (agent_ip, public_ip, domain, hostname, site)",
                self.sequence
            ),
        };
        if self.repos.is_empty() {
            bail!("rule {}: no repos", self.sequence);
        }
        Ok(Rule {
            sequence: self.sequence,
            name: if self.name.is_empty() { format!("rule {}", self.sequence) } else { self.name.clone() },
            condition,
            negate: self.negate,
            repos: self.repos.clone(),
            no_fallback: self.no_fallback,
        })
    }
}

/// Settings a `config` package may change (its `agent.toml`, kept in the state folder).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentOverlay {
    /// Replaces `update_every`.
    pub update_every: Option<String>,
    /// Replaces `upgrade`.
    pub upgrade: Option<String>,
    /// Replaces `maturities`.
    pub maturities: Option<Vec<String>>,
    /// Replaces `locales`.
    pub locales: Option<Vec<String>>,
    /// Replaces `hook_timeout`.
    pub hook_timeout: Option<String>,
    /// Replaces `repos`.
    pub repos: Option<Vec<String>>,
    /// Replaces `rules`.
    pub rules: Option<Vec<RuleConfig>>,
}

impl AgentConfig {
    /// Applies the overlays `config` packages installed (in name order).
    pub fn with_overlays(mut self) -> Result<Self> {
        let dir = self.state.join("config.d");
        let Ok(entries) = std::fs::read_dir(&dir) else { return Ok(self) };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        for f in files {
            let text = std::fs::read_to_string(&f).with_context(|| f.display().to_string())?;
            let o: AgentOverlay = match toml::from_str(&text) {
                Ok(o) => o,
                Err(e) => {
                    tracing::warn!("{}: ignored: {e}", f.display());
                    continue;
                }
            };
            if let Some(v) = o.update_every {
                self.update_every = v;
            }
            if let Some(v) = o.upgrade {
                self.upgrade = v;
            }
            if let Some(v) = o.maturities {
                self.maturities = v;
            }
            if let Some(v) = o.locales {
                self.locales = v;
            }
            if let Some(v) = o.hook_timeout {
                self.hook_timeout = v;
            }
            if let Some(v) = o.repos {
                self.repos = v;
            }
            if let Some(v) = o.rules {
                self.rules = v;
            }
        }
        Ok(self)
    }
}

/// The fields every daemon has.
#[derive(Debug, Clone)]
pub struct NodeFields {
    /// QUIC address.
    pub listen: String,
    /// Data folder.
    pub data: PathBuf,
    /// CA certificate.
    pub ca: PathBuf,
    /// Node certificate.
    pub cert: PathBuf,
    /// Node key.
    pub key: PathBuf,
    /// Metrics address.
    pub metrics: String,
    /// Name.
    pub name: String,
}

macro_rules! node_fields {
    ($t:ty) => {
        impl $t {
            /// The fields every daemon has.
            pub fn node(&self) -> NodeFields {
                NodeFields {
                    listen: self.listen.clone(),
                    data: self.data.clone(),
                    ca: self.ca.clone(),
                    cert: self.cert.clone(),
                    key: self.key.clone(),
                    metrics: self.metrics.clone(),
                    name: self.name.clone(),
                }
            }
        }
    };
}
node_fields!(MainConfig);
node_fields!(EdgeConfig);
node_fields!(ServerConfig);

/// `outpost server` settings: the main repository's fields (its QUIC address is `listen`, its
/// data in `data/repo`), central's (`central_listen`, data in `data/central`), and which roles
/// run.
#[derive(Debug, Clone, Deserialize)]
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
        vec![&mut self.data, &mut self.ca, &mut self.cert, &mut self.key, &mut self.enroll_cert, &mut self.enroll_key]
    }
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

/// The agent's configuration file when none is given on the command line.
pub fn default_agent_config() -> PathBuf {
    if cfg!(windows) {
        let base = std::env::var_os("ProgramData").map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
        base.join("Outpost").join("agent.toml")
    } else {
        PathBuf::from("/etc/outpost/agent.toml")
    }
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

/// A duration as written in configuration files (`2h`, `90s`).
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        s if s > 0 && s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// Parses a duration field (`30s`, `5m`, `2h`, `7d`), naming the field when it is wrong.
pub fn duration(field: &str, value: &str) -> Result<Duration> {
    parse_duration(value).map_err(|e| anyhow::anyhow!("{field}: {e}"))
}

/// A duration field that must be at least `min` (a zero poll interval would keep a core busy,
/// a zero re-sign period would sign snapshots without end).
pub fn duration_at_least(field: &str, value: &str, min: Duration) -> Result<Duration> {
    let d = duration(field, value)?;
    if d < min {
        bail!("{field}: {value:?} is too short; it must be at least {}", human_duration(min));
    }
    Ok(d)
}

/// A byte-size field.
pub fn bytes(field: &str, value: &str) -> Result<u64> {
    parse_bytes(value).map_err(|e| anyhow::anyhow!("{field}: {e}"))
}

/// A minimum transfer rate field (bytes per second, at least 1 KiB/s).
pub fn min_rate(field: &str, value: &str) -> Result<outpost_actors::transport::Pace> {
    let rate = bytes(field, value)?;
    if rate < 1024 {
        bail!("{field}: {value:?} is too low; it must be at least 1KiB (per second)");
    }
    Ok(outpost_actors::transport::Pace { min_rate: rate })
}

/// Sync windows.
pub fn windows(values: &[String]) -> Result<Vec<SyncWindow>> {
    values.iter().map(|w| SyncWindow::parse(w).map_err(|e| anyhow::anyhow!("sync_windows: {e}"))).collect()
}

/// The time zone of an edge's sync windows: `time_zone`, else the deprecated `utc_offset`,
/// else this machine's zone.
pub fn zone(time_zone: &str, utc_offset_value: &str) -> Result<outpost_actors::zone::Zone> {
    if !time_zone.trim().is_empty() || utc_offset_value.trim().is_empty() {
        return outpost_actors::zone::Zone::parse(time_zone).context("time_zone");
    }
    tracing::warn!("utc_offset is deprecated: write time_zone = \"Europe/Paris\" (or \"{utc_offset_value}\")");
    outpost_actors::zone::Zone::fixed_minutes(utc_offset(utc_offset_value)?).context("utc_offset")
}

/// `+HH:MM` / `-HH:MM` into minutes east of UTC.
pub fn utc_offset(value: &str) -> Result<i32> {
    let v = value.trim();
    let (sign, rest) = match v.as_bytes().first() {
        Some(b'+') => (1, &v[1..]),
        Some(b'-') => (-1, &v[1..]),
        _ => bail!("utc_offset: {value:?} should look like +01:00"),
    };
    let (h, m) = rest.split_once(':').with_context(|| format!("utc_offset: {value:?} should look like +01:00"))?;
    let (h, m): (i32, i32) = (h.parse()?, m.parse()?);
    if h > 14 || m > 59 {
        bail!("utc_offset: {value:?} is out of range");
    }
    Ok(sign * (h * 60 + m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_examples_load_and_are_valid() {
        let main: MainConfig = toml::from_str(include_str!("../../deploy/repo-main.toml")).unwrap();
        assert!(
            duration("resign_every", &main.resign_every).unwrap()
                < duration("snapshot_lifetime", &main.snapshot_lifetime).unwrap()
        );
        assert_eq!(main.listen, MainConfig::default().listen);
        let edge: EdgeConfig = toml::from_str(include_str!("../../deploy/repo-edge.toml")).unwrap();
        assert_eq!(edge.metrics, EdgeConfig::default().metrics);
        min_rate("min_rate", &edge.min_rate).unwrap();
        assert_eq!(edge.upstreams.len(), 2);
        duration("poll", &edge.poll).unwrap();
        bytes("bandwidth", &edge.bandwidth).unwrap();
        windows(&edge.sync_windows).unwrap();
        zone(&edge.time_zone, &edge.utc_offset).unwrap();
        assert!(["immediate", "on-demand"].contains(&edge.fill.as_str()));
        // The example windows in the comment parse too.
        windows(&["Mon-Fri 19:00-07:00".into(), "Sat,Sun 00:00-24:00".into()]).unwrap();
    }

    #[test]
    fn deploy_agent_example_loads_and_its_rules_are_valid() {
        let agent: AgentConfig = toml::from_str(include_str!("../../deploy/agent.toml")).unwrap();
        assert_eq!(agent.state, AgentConfig::default().state);
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
        let server: ServerConfig = toml::from_str(include_str!("../../deploy/server.toml")).unwrap();
        assert!(server.repository && server.central);
        assert_eq!(server.watch.len(), 1);
        assert_eq!(server.main().data, server.data.join("repo"));
        assert!(
            duration("resign_every", &server.resign_every).unwrap()
                < duration("snapshot_lifetime", &server.snapshot_lifetime).unwrap()
        );
        assert_ne!(server.listen, server.central_listen);
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
