//! The agent's configuration file: settings, repository rules, and the overlays `config`
//! packages and central add.

use super::Place;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `outpost agent …` settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
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
    /// The central server (`host:port`), once it exists; several central instances as a list
    /// (`["c1:7002", "c2:7002"]`, or `"c1:7002, c2:7002"`), tried in order, each name with all
    /// its addresses.
    #[serde(deserialize_with = "super::values::one_or_list")]
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
    /// What to do when a package's `impacted_process` is running: "close" it (asked, then
    /// stopped) or "postpone" the step until it is not (or until its `forced_install_on`).
    pub impacted_process: String,
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
            state: super::system_dir(Place::State).join("agent"),
            ca: super::system_dir(Place::Config).join("ca.crt"),
            cert: super::system_dir(Place::Config).join("host.crt"),
            key: super::system_dir(Place::Config).join("host.key"),
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
            impacted_process: "close".into(),
            rules: Vec::new(),
            min_rate: "16KiB".into(),
            probation: "10m".into(),
            metrics: crate::daemon::metrics_port::AGENT.into(),
        }
    }
}

/// A repository rule in a configuration file.
#[derive(Debug, Clone, Deserialize, Serialize)]
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

/// Settings a `config` package may change (its `agent.toml`, kept in the state folder). Each
/// field is named as the setting it replaces; those not given are left out.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
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
            self = super::with_flags(&self, &o).with_context(|| f.display().to_string())?;
        }
        Ok(self)
    }
}
