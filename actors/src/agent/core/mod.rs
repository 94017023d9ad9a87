//! The agent's work: `update` (head, snapshot, verify, resolve, store the plan), `upgrade`
//! (download and verify what the plan needs, then remove, install and upgrade in order, running
//! hooks), local `install` and `remove`, `audit`, and the reports behind `status` and `repos`.
//! The daemon's actor and the one-shot commands both drive an [`Agent`].

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::control::Control;
use outpost_protocol::entry::{HostCapabilities, PackageEntry, Section};
use outpost_protocol::hex::hex;
use outpost_protocol::package::{Manifest, PackageRecord};
use outpost_protocol::pki::TrustStore;
use outpost_protocol::request::PackageRequest;
use outpost_protocol::resolver::{self, HostIdentity, InstallState, Origin, ResolveInput};
use outpost_protocol::selection::{AgentFacts, Probation};
use outpost_protocol::snapshot::{SignedSnapshot, Snapshot};
use outpost_protocol::text::causes;
use outpost_protocol::time_fmt::format_unix;
use outpost_protocol::verified::Verified;
use quinn::Endpoint;
use rustls::pki_types::CertificateDer;

use super::download::{self, DownloadError};
use super::hooks::{self, HookAction};
use super::identity::{self, Machine};
use super::msi;
use super::plan;
use super::processes;
pub use super::report::{
    AuditLine, Failure, PackageLine, RepoLine, ReposReport, SnapshotInfo, StatusReport, UpdateReport, UpgradeReport,
};
use super::select::{self, Probed, Sources};
use super::state::{
    AgentState, InstallFacts, InstalledRecord, LastUpdate, PlannedStep, StateError, StepAction, StoredPlan,
    UpdateOutcome,
};
use super::status;
use crate::clock::unix_now;
use crate::repo::client::{ClientError, RepoClient};
use crate::transport::{self, Identity, Pace};

mod catalogue;
mod update;
mod upgrade;

/// What the agent is configured with.
#[derive(Debug, Clone)]
pub struct AgentSettings {
    /// State folder (database, cache).
    pub state_dir: PathBuf,
    /// Where repositories come from.
    pub sources: Sources,
    /// Local address for outgoing connections.
    pub bind: Option<IpAddr>,
    /// Override of the detected UUID.
    pub uuid: Option<String>,
    /// Override of the detected FQDN.
    pub fqdn: Option<String>,
    /// Distinguished name of the host or its OU.
    pub ou: Option<String>,
    /// Directory groups.
    pub profiles: Vec<String>,
    /// Site name.
    pub site: Option<String>,
    /// The public address, when known.
    pub public_ip: Option<IpAddr>,
    /// Accepted maturities, preferred first.
    pub maturities: Vec<String>,
    /// Locales, preferred first (empty: the environment's).
    pub locales: Vec<String>,
    /// Time limit of one hook run.
    pub hook_timeout: Duration,
    /// Postpone a step while a process its package names is running (instead of closing it),
    /// until the package's `forced_install_on`.
    pub postpone_impacted: bool,
    /// How fast a repository must be: a slower one is abandoned for the next candidate.
    pub pace: Pace,
    /// How long a repository that was too slow is left aside.
    pub probation: Duration,
}

/// Why an agent operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// State database.
    #[error(transparent)]
    State(#[from] StateError),
    /// No repository answered.
    #[error("no repository answered: {0}")]
    NoRepository(String),
    /// Every repository served something refused.
    #[error("refused: {0}")]
    Refused(String),
    /// The snapshot held has expired and no repository serves a fresh one.
    #[error(
        "snapshot {sequence} expired on {} and no repository serves a newer one: nothing is installed, upgraded or removed from it (is the main repository running and re-signing its snapshot?){}",
        format_unix(*expires),
        if detail.is_empty() { String::new() } else { format!(" ({detail})") }
    )]
    Expired { sequence: u64, expires: i64, detail: String },
    /// Bad request from the user.
    #[error("{0}")]
    BadRequest(String),
    /// Transport setup.
    #[error(transparent)]
    Transport(#[from] transport::TransportError),
    /// Nothing to work from yet.
    #[error("no plan yet: run `outpost agent update` (no repository has answered so far)")]
    NoPlan,
    /// Local files.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
}

/// Why one package could not be fetched, installed or removed (the upgrade report says it for
/// that package; the others go on).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The state database.
    #[error(transparent)]
    State(#[from] StateError),
    /// The record kept here does not verify (any more).
    #[error(transparent)]
    Package(#[from] outpost_protocol::package::PackageError),
    /// No repository served the record; each one's reason.
    #[error("{}", if .0.is_empty() { "not kept here, and no repository answered".to_string() } else { .0.join("; ") })]
    Unavailable(Vec<String>),
    /// The snapshot entry and the signed package disagree.
    #[error("the snapshot entry does not match the signed package")]
    Mismatch,
    /// A process the package names is running and the policy is to wait: the step is tried
    /// again at the next upgrade.
    #[error("postponed: {} running (impacted_process){}", .running.join(", "), .until.as_ref().map(|u| format!("; it will be closed from {u} (forced_install_on)")).unwrap_or_default())]
    Postponed { running: Vec<String>, until: Option<String> },
    /// The disk lacks the space the package says it takes (`installed_size`).
    #[error(
        "not installed: it takes {} (installed_size) and {path} has {} free",
        crate::disk::human(*needs),
        crate::disk::human(*free)
    )]
    NoSpace { needs: u64, free: u64, path: PathBuf },
    /// An imported WAPT package whose only hook is `setup.py`.
    #[error(
        "refused: {name} was imported from WAPT with a setup.py, which Outpost does not run, and it has no {hook} \
         for this platform; import it again with `outpost wapt import --hooks DIR`"
    )]
    PythonOnly { name: String, hook: &'static str },
    /// The package's files could not be had.
    #[error("not in the cache, and no repository answered")]
    Offline,
    /// The package's files could not be had.
    #[error(transparent)]
    Download(#[from] DownloadError),
    /// A local file.
    #[error("{}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    /// The hook could not be started.
    #[error("cannot run {} {}", script.display(), action.as_str())]
    HookStart { script: PathBuf, action: HookAction, source: std::io::Error },
    /// The hook ran and failed: what it said, in short (its output is kept with the package).
    #[error("{0}")]
    Hook(String),
    /// It is not installed.
    #[error("{0} is not installed")]
    NotInstalled(String),
    /// One of its dependencies failed in this run.
    #[error("not installed: its dependency {0} failed")]
    Dependency(String),
    /// Something the agent as a whole failed at (probation bookkeeping).
    #[error(transparent)]
    Agent(Box<AgentError>),
}

impl From<AgentError> for StepError {
    fn from(e: AgentError) -> Self {
        Self::Agent(Box::new(e))
    }
}

impl AgentError {
    /// How an update that failed this way ended.
    pub fn outcome(&self) -> UpdateOutcome {
        match self {
            Self::Refused(_) => UpdateOutcome::Refused,
            Self::Expired { .. } => UpdateOutcome::Expired,
            Self::NoRepository(_) => UpdateOutcome::Unreachable,
            _ => UpdateOutcome::Failed,
        }
    }
}

/// The agent.
#[derive(Debug)]
pub struct Agent {
    settings: AgentSettings,
    state: AgentState,
    trust: TrustStore,
    endpoint: Endpoint,
    /// For the connection a large download opens beside the usual one
    /// ([`Agent::bulk_connection`]).
    bulk_config: quinn::ClientConfig,
    machine: Machine,
}

/// Failures of the last upgrade (packages that could not be downloaded or were refused).
const FAILURES: &str = "failures";
/// Bytes fetched from each repository since the state was made.
const BYTES_BY_REPO: &str = "bytes_by_repo";
/// Repositories left aside after they were too slow, and until when.
const PROBATION: &str = "probation";
/// Head-check tickets, by repository address ([`select::HeadTicket`]).
const HEAD_TICKETS: &str = "head_tickets";

/// How long an upgrade sent with the snapshot it needs waits for the best repository to serve
/// it before it takes another that does (an edge follows its upstream within a second when it
/// is well).
pub const SNAPSHOT_WAIT: Duration = Duration::from_secs(20);

impl Agent {
    /// Opens the agent's state and transport. Interrupted installs become ERROR (retried).
    pub fn open(
        settings: AgentSettings,
        identity: &Identity,
        ca: &[CertificateDer<'static>],
    ) -> Result<Self, AgentError> {
        let state = AgentState::open(&settings.state_dir)?;
        let recovered = state.recover_interrupted(unix_now())?;
        if !recovered.is_empty() {
            tracing::warn!(?recovered, "installs interrupted by a stop were marked ERROR and will be retried");
        }
        let trust = TrustStore::new(ca.to_vec()).map_err(|e| AgentError::BadRequest(format!("CA: {e}")))?;
        let local = settings.bind.map(|ip| std::net::SocketAddr::new(ip, 0));
        let endpoint = transport::client(local, identity, ca, outpost_protocol::wire::ALPN_REPO)?;
        let bulk_config = transport::client_config(identity, ca, outpost_protocol::wire::ALPN_REPO)?;
        let machine = identity::detect(settings.uuid.as_deref(), settings.fqdn.as_deref());
        Ok(Self { settings, state, trust, endpoint, bulk_config, machine })
    }

    /// The machine as detected (or configured).
    pub fn machine(&self) -> &Machine {
        &self.machine
    }

    /// The state folder.
    pub fn state_dir(&self) -> &Path {
        &self.settings.state_dir
    }

    fn cache(&self) -> PathBuf {
        self.settings.state_dir.join("cache")
    }

    fn facts(&self) -> AgentFacts {
        let mut addrs = self.settings.sources.configured.clone();
        addrs.extend(self.settings.sources.main.clone());
        addrs.extend(self.settings.sources.rules.iter().flat_map(|r| r.repos.clone()));
        AgentFacts {
            ips: select::agent_ips(&addrs, self.settings.bind),
            public_ip: self.settings.public_ip,
            domain: self.machine.domain.clone(),
            hostname: self.machine.fqdn.clone(),
            site: self.settings.site.clone(),
        }
    }

    fn capabilities(&self) -> HostCapabilities {
        let mut locales = self.settings.locales.clone();
        if locales.is_empty() {
            locales.extend(self.machine.locale.clone());
        }
        HostCapabilities {
            architectures: self.machine.architectures.clone(),
            os: self.machine.os.clone(),
            os_version: self.machine.os_version.clone(),
            locales,
            maturities: self.settings.maturities.clone(),
            now: unix_now(),
            agent_version: Some(env!("CARGO_PKG_VERSION").to_string()),
        }
    }

    fn host_identity(&self) -> HostIdentity {
        HostIdentity {
            uuid: Some(self.machine.uuid.clone()),
            fqdn: Some(self.machine.fqdn.clone()),
            ou: self.settings.ou.clone(),
            profiles: self.settings.profiles.clone(),
        }
    }

    /// Repositories left aside after they were too slow.
    fn probation(&self) -> Probation {
        self.state.kept(PROBATION).ok().flatten().unwrap_or_default()
    }

    /// Leaves repositories aside for the probation period (they come back after it).
    fn put_on_probation(&self, addrs: &BTreeSet<String>) -> Result<(), AgentError> {
        if addrs.is_empty() {
            return Ok(());
        }
        let mut probation = self.probation();
        let period = i64::try_from(self.settings.probation.as_secs()).unwrap_or(i64::MAX / 2);
        let until = probation.leave_aside(addrs, unix_now(), period);
        for a in addrs {
            tracing::warn!(repo = a, "too slow: left aside until {}", format_unix(until));
        }
        self.state.keep(PROBATION, &probation)?;
        Ok(())
    }

    /// Every candidate repository, checked, best first (those on probation last).
    pub async fn probe(&self) -> (Vec<Probed>, Option<String>) {
        let (mut candidates, dns_error) = select::candidates(&self.settings.sources, &self.facts()).await;
        self.probation().mark(&mut candidates, unix_now());
        (select::probe(&self.endpoint, candidates, self.settings.pace, &BTreeMap::new(), None).await, dns_error)
    }

    /// The clients of the repositories that answered, best first.
    fn answered(probed: &[Probed]) -> Vec<RepoClient> {
        probed.iter().filter_map(|p| p.client.clone()).collect()
    }

    /// `repos`: the candidates, their rule, health and round-trip time, and the choice.
    pub async fn repos(&self) -> ReposReport {
        let (probed, dns_error) = self.probe().await;
        let (probation, now) = (self.probation(), unix_now());
        let chosen = probed.iter().position(|p| p.candidate.healthy == Some(true));
        let candidates = probed
            .iter()
            .enumerate()
            .map(|(i, p)| RepoLine {
                addr: p.candidate.addr.clone(),
                origin: p.candidate.origin.to_string(),
                rank: p.candidate.rank,
                healthy: p.candidate.healthy == Some(true),
                rtt_ms: p.candidate.rtt.map(|d| d.as_secs_f64() * 1000.0),
                sequence: p.head.map(|h| h.sequence),
                error: p.error.clone(),
                chosen: Some(i) == chosen,
                probation_until: probation.until(&p.candidate.addr, now),
            })
            .collect();
        ReposReport { candidates, dns_error }
    }

    /// The snapshot held, verified again (signature, chain and entries as of when it was made:
    /// a state database changed behind the agent's back is refused, not planned from).
    fn held(&self) -> Result<Option<(SignedSnapshot, Verified<Snapshot>)>, AgentError> {
        let Some(signed) = self.state.snapshot()? else { return Ok(None) };
        let snapshot = signed.verify_kept(&self.trust).map_err(|e| AgentError::Refused(e.to_string()))?;
        Ok(Some((signed, snapshot)))
    }

    /// Nothing new comes from an expired snapshot, whichever path reads it.
    fn ensure_fresh(snapshot: &Snapshot, detail: String) -> Result<(), AgentError> {
        if snapshot.expires <= unix_now() {
            return Err(AgentError::Expired { sequence: snapshot.sequence, expires: snapshot.expires, detail });
        }
        Ok(())
    }

    // update: update.rs; upgrade, install, remove, audit: upgrade.rs

    /// `status`.
    pub fn status(&self) -> Result<StatusReport, AgentError> {
        let plan = self.state.plan()?;
        let snapshot = self.held()?.map(|(_, s)| SnapshotInfo {
            sequence: s.sequence,
            created: s.created,
            expires: s.expires,
            expired: s.expires <= unix_now(),
        });
        let installed: BTreeMap<String, InstalledRecord> = self.state.installed()?.into_iter().collect();
        let failures = self.failures();
        let last_update = self.state.last_update()?;
        let session_failures = super::session::failures(&self.settings.state_dir);
        let boot = super::hooks::boot_mark();
        let decided = status::decide(status::Held {
            plan: plan.as_ref(),
            snapshot: snapshot.as_ref(),
            installed: &installed,
            failures: &failures,
            last_update: last_update.as_ref(),
            session_failures: &session_failures,
            boot: boot.as_deref(),
        });
        Ok(StatusReport {
            host: self.machine.clone(),
            host_status: decided.host_status,
            last_update,
            sequence: snapshot.as_ref().map(|s| s.sequence),
            snapshot,
            packages: decided.packages,
            plan: decided.steps.iter().map(|s| s.text.clone()).collect(),
            steps: decided.steps,
            errors: decided.errors,
            bytes_by_repo: self.bytes_by_repo(),
        })
    }

    /// The inventory this host reports to central: the machine, then its packages and the
    /// last update.
    pub fn inventory_sections(&self) -> Result<Vec<outpost_protocol::central::Section>, AgentError> {
        let facts = outpost_protocol::central::HostFacts {
            uuid: self.machine.uuid.clone(),
            fqdn: self.machine.fqdn.clone(),
            ou: self.settings.ou.clone().unwrap_or_default(),
            site: self.settings.site.clone().unwrap_or_default(),
            profiles: self.settings.profiles.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        };
        let mut sections = super::inventory::machine_sections(facts);
        sections.extend(super::inventory::agent_sections(&self.status()?));
        sections.push(outpost_protocol::central::Section::Audits(self.audits()?.into_values().collect()));
        Ok(sections)
    }

    /// Writes what users' sessions need (`session-setup`); a failure is logged, never fatal.
    pub(super) fn export_session(&self) {
        let result = self
            .state
            .installed()
            .map_err(|e| e.to_string())
            .and_then(|i| super::session::export(&self.settings.state_dir, &i).map_err(|e| e.to_string()));
        if let Err(e) = result {
            tracing::warn!("exporting session-setup hooks failed: {e}");
        }
    }

    /// The held snapshot (for tests and reports).
    pub fn snapshot(&self) -> Result<Option<SignedSnapshot>, AgentError> {
        Ok(self.state.snapshot()?)
    }
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}
