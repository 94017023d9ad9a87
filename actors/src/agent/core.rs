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
use super::plan;
pub use super::report::{
    AuditLine, Failure, PackageLine, RepoLine, ReposReport, SnapshotInfo, StatusReport, UpdateReport, UpgradeReport,
};
use super::select::{self, Probed, Sources};
use super::state::{
    AgentState, InstalledRecord, LastUpdate, PlannedStep, StateError, StepAction, StoredPlan, UpdateOutcome,
};
use super::status;
use crate::clock::unix_now;
use crate::repo::client::{ClientError, RepoClient};
use crate::transport::{self, Identity, Pace};

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
    machine: Machine,
}

/// Failures of the last upgrade (packages that could not be downloaded or were refused).
const FAILURES: &str = "failures";
/// Bytes fetched from each repository since the state was made.
const BYTES_BY_REPO: &str = "bytes_by_repo";
/// Repositories left aside after they were too slow, and until when.
const PROBATION: &str = "probation";

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
        let machine = identity::detect(settings.uuid.as_deref(), settings.fqdn.as_deref());
        Ok(Self { settings, state, trust, endpoint, machine })
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
        (select::probe(&self.endpoint, candidates, self.settings.pace).await, dns_error)
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

    /// `update`: fetch the head of the best repository (nothing more when unchanged), then the
    /// snapshot if newer; verify it; resolve; store the plan and statuses. A refused snapshot
    /// changes nothing; the next repository is tried.
    pub async fn update(&self) -> Result<UpdateReport, AgentError> {
        let (probed, dns_error) = self.probe().await;
        let result = self.update_from(&probed).await;
        self.record_update(&result, dns_error.as_deref())?;
        result
    }

    /// Keeps how an update ended, for `status` and central.
    fn record_update(
        &self,
        result: &Result<UpdateReport, AgentError>,
        dns_error: Option<&str>,
    ) -> Result<(), AgentError> {
        let held = self.held()?.map(|(_, s)| s.sequence);
        let dns = dns_error.map(|d| format!(" (DNS discovery failed: {d})")).unwrap_or_default();
        let last = match result {
            Ok(r) => LastUpdate {
                at: unix_now(),
                ok: true,
                outcome: UpdateOutcome::Ok,
                repo: Some(r.repo.clone()),
                sequence: Some(r.sequence),
                message: format!(
                    "{} snapshot {} from {}{dns}",
                    if r.changed { "new" } else { "unchanged" },
                    r.sequence,
                    r.repo
                ),
            },
            Err(e) => LastUpdate {
                at: unix_now(),
                ok: false,
                outcome: e.outcome(),
                repo: None,
                sequence: held,
                message: e.to_string(),
            },
        };
        self.state.put_last_update(&last)?;
        Ok(())
    }

    async fn update_from(&self, probed: &[Probed]) -> Result<UpdateReport, AgentError> {
        // A held snapshot that no longer verifies (the state was changed behind the agent's back)
        // holds nothing back: the next good snapshot replaces it.
        let held = self.state.snapshot()?.filter(|s| match s.verify_kept(&self.trust) {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!("the snapshot held does not verify any more, it is replaced: {e}");
                false
            }
        });
        let held_id = held.as_ref().and_then(|s| s.unverified().ok().map(|v| v.held(s)));
        let now = unix_now();
        let mut refused = Vec::new();
        let mut unreachable = Vec::new();
        let mut stale = None;
        let mut slow = BTreeSet::new();
        for p in probed {
            let (Some(client), Some(head)) = (&p.client, p.head) else {
                unreachable.push(format!("{}: {}", p.candidate.addr, p.error.clone().unwrap_or_default()));
                continue;
            };
            if let Some(h) = &held
                && h.hash() == head.hash
            {
                let snapshot = h.verify_kept(&self.trust).map_err(|e| AgentError::Refused(e.to_string()))?;
                if snapshot.expires <= now {
                    // It serves the very snapshot held, expired: another may have a fresh one.
                    stale.get_or_insert((snapshot.sequence, snapshot.expires));
                    unreachable.push(format!("{}: serves the same expired snapshot", client.addr));
                    continue;
                }
                // Unchanged: one round trip, nothing more. (The plan is still made again: local
                // requests or installs may have changed.)
                let plan = self.resolve(&snapshot, std::slice::from_ref(client)).await?;
                self.put_on_probation(&slow)?;
                return Ok(UpdateReport {
                    repo: client.addr.clone(),
                    sequence: head.sequence,
                    changed: false,
                    pending: plan.steps.len(),
                    host_status: plan.host_status,
                    refused,
                });
            }
            match client.snapshot(&head, &self.trust, now, held_id).await {
                Ok((signed, snapshot)) => {
                    self.state.put_snapshot(&signed)?;
                    self.keep_records_of(&snapshot)?;
                    let plan = self.resolve(&snapshot, std::slice::from_ref(client)).await?;
                    self.put_on_probation(&slow)?;
                    return Ok(UpdateReport {
                        repo: client.addr.clone(),
                        sequence: head.sequence,
                        changed: true,
                        pending: plan.steps.len(),
                        host_status: plan.host_status,
                        refused,
                    });
                }
                Err(ClientError::Refused(e)) => {
                    tracing::warn!(repo = client.addr, "snapshot refused: {e}");
                    refused.push(format!("{}: {e}", client.addr));
                }
                Err(e) => {
                    if RepoClient::is_slow(&e) {
                        slow.insert(client.addr.clone());
                    }
                    tracing::warn!(repo = client.addr, "snapshot not fetched: {e}");
                    unreachable.push(format!("{}: {e}", client.addr));
                }
            }
        }
        self.put_on_probation(&slow)?;
        if !refused.is_empty() {
            return Err(AgentError::Refused(refused.join("; ")));
        }
        if let Some((sequence, expires)) = stale {
            return Err(AgentError::Expired { sequence, expires, detail: unreachable.join("; ") });
        }
        Err(AgentError::NoRepository(if unreachable.is_empty() {
            "no repository is configured".into()
        } else {
            unreachable.join("; ")
        }))
    }

    /// Keeps the package records the new snapshot (or an installed package) still references;
    /// the others go.
    fn keep_records_of(&self, snapshot: &Snapshot) -> Result<(), AgentError> {
        let mut keep: BTreeSet<[u8; 32]> = snapshot.manifests().copied().collect();
        keep.extend(self.state.installed()?.into_iter().map(|(_, r)| r.manifest));
        self.state.retain_records(&keep)?;
        Ok(())
    }

    /// Resolves against `snapshot` (plus this host's host package) and stores the plan. A host
    /// package whose record is out of reach (offline, not kept) is stood in for by the installed
    /// copy of the very same package; failing that the resolution is incomplete, and removes
    /// nothing it cannot see.
    async fn resolve(&self, snapshot: &Verified<Snapshot>, repos: &[RepoClient]) -> Result<StoredPlan, AgentError> {
        let mut entries: Vec<PackageEntry> = Vec::new();
        let mut ids: Vec<([u8; 32], u64)> = Vec::new();
        for raw in &snapshot.entries {
            let Ok(control) = Control::from_fields(raw.control.clone()) else { continue };
            let Ok(entry) = PackageEntry::from_control(&control) else { continue };
            entries.push(entry);
            ids.push((raw.manifest, raw.size));
        }
        let installed = self.state.installed()?;
        let mut incomplete = false;
        let mut names = vec![self.machine.uuid.clone(), self.machine.fqdn.clone()];
        names.dedup();
        // The host package is not in the public list: it is found by the host's own names.
        for name in &names {
            let Some(h) = snapshot.host_package(name) else { continue };
            if ids.iter().any(|(m, _)| *m == h.manifest) {
                continue;
            }
            let entry = match self.record(&h.manifest, repos).await {
                Ok((_, manifest)) => manifest.entry().ok(),
                Err(e) => {
                    let stand_in = installed
                        .iter()
                        .find(|(_, r)| r.manifest == h.manifest)
                        .and_then(|(_, r)| PackageEntry::from_control(&r.control()).ok());
                    if stand_in.is_none() {
                        tracing::warn!(
                            "host package {} is out of reach ({e}): nothing is removed until it can be read",
                            hex(&h.manifest)
                        );
                        incomplete = true;
                    }
                    stand_in
                }
            };
            if let Some(entry) = entry {
                entries.push(entry);
                ids.push((h.manifest, h.size));
            }
        }
        let plan = self.plan_from(snapshot.sequence, &entries, &ids, &installed, incomplete)?;
        self.state.put_plan(&plan)?;
        Ok(plan)
    }

    fn plan_from(
        &self,
        sequence: u64,
        entries: &[PackageEntry],
        ids: &[([u8; 32], u64)],
        installed_records: &[(String, InstalledRecord)],
        incomplete: bool,
    ) -> Result<StoredPlan, AgentError> {
        let installed: Vec<_> = installed_records.iter().filter_map(|(_, r)| r.as_installed()).collect();
        let requested: Vec<PackageRequest> =
            self.state.requests()?.iter().filter_map(|(_, r)| PackageRequest::parse(r).ok()).collect();
        let host = self.host_identity();
        let caps = self.capabilities();
        let resolution = resolver::resolve(&ResolveInput {
            entries,
            host: &host,
            capabilities: &caps,
            installed: &installed,
            requested: &requested,
            incomplete,
        });
        Ok(plan::stored(resolution, ids, sequence, unix_now()))
    }

    /// A package record and its verified manifest: from the local records, else from `repos`
    /// (then kept, so that the same record is there offline).
    async fn record(&self, manifest: &[u8; 32], repos: &[RepoClient]) -> Result<(PackageRecord, Manifest), StepError> {
        if let Some(bytes) = self.state.record(manifest)?
            && let Ok(record) = PackageRecord::decode(&bytes)
            && record.hash() == *manifest
        {
            let (m, _) = record.verify(&self.trust, unix_now())?;
            return Ok((record, m.into_inner()));
        }
        let mut errors = Vec::new();
        let mut slow = BTreeSet::new();
        for repo in repos {
            match repo.record(manifest, &self.trust, unix_now()).await {
                Ok((record, m, _)) => {
                    self.state.put_record(manifest, &record.encode())?;
                    self.put_on_probation(&slow)?;
                    return Ok((record, m.into_inner()));
                }
                Err(e) => {
                    if RepoClient::is_slow(&e) {
                        slow.insert(repo.addr.clone());
                    }
                    errors.push(format!("{}: {e}", repo.addr));
                }
            }
        }
        self.put_on_probation(&slow)?;
        Err(StepError::Unavailable(errors))
    }

    /// Probes, then updates from the repositories that answered (refused or expired snapshots
    /// stop here); returns their clients (empty: offline).
    async fn refresh(&self) -> Result<Vec<RepoClient>, AgentError> {
        let (probed, dns_error) = self.probe().await;
        let repos = Self::answered(&probed);
        if repos.is_empty() {
            return Ok(repos);
        }
        let result = self.update_from(&probed).await;
        self.record_update(&result, dns_error.as_deref())?;
        match result {
            Ok(_) | Err(AgentError::NoRepository(_)) => Ok(repos),
            Err(e @ (AgentError::Refused(_) | AgentError::Expired { .. })) => Err(e),
            Err(e) => {
                tracing::warn!("update before upgrade failed: {e}");
                Ok(repos)
            }
        }
    }

    /// `upgrade` (and `download-upgrade` with `download_only`): updates first when a repository
    /// answers, then runs the plan, or only the steps for `only` and what they depend on.
    /// Nothing is installed, upgraded or removed from an expired snapshot.
    pub async fn upgrade(
        &self,
        only: Option<&[String]>,
        download_only: bool,
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Result<UpgradeReport, AgentError> {
        let repos = self.refresh().await?;
        self.run_plan(only, download_only, &repos, progress).await
    }

    /// The plan of the snapshot held (made again when it was made from another one).
    async fn current_plan(
        &self,
        snapshot: &Verified<Snapshot>,
        repos: &[RepoClient],
    ) -> Result<StoredPlan, AgentError> {
        match self.state.plan()? {
            Some(p) if p.sequence == snapshot.sequence => Ok(p),
            _ => self.resolve(snapshot, repos).await,
        }
    }

    async fn run_plan(
        &self,
        only: Option<&[String]>,
        download_only: bool,
        repos: &[RepoClient],
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Result<UpgradeReport, AgentError> {
        let mut report = UpgradeReport { offline: repos.is_empty(), ..UpgradeReport::default() };
        let (_, snapshot) = self.held()?.ok_or(AgentError::NoPlan)?;
        Self::ensure_fresh(&snapshot, String::new())?;
        let plan = self.current_plan(&snapshot, repos).await?;
        if only.is_some() {
            // Choosing "what they need" reads the planned packages' signed depends.
            for step in plan.steps.iter().filter(|s| s.action != StepAction::Remove) {
                let _ = self.record(&step.manifest, repos).await;
            }
        }
        let steps: Vec<&PlannedStep> = match only {
            None => plan.steps.iter().collect(),
            Some(names) => plan::select(&plan, names, |m| {
                self.state
                    .record(m)
                    .ok()
                    .flatten()
                    .and_then(|b| PackageRecord::decode(&b).ok())
                    .and_then(|r| Manifest::decode(&r.manifest).ok())
                    .and_then(|m| m.entry().ok())
                    .map(|e| e.depends.into_iter().map(|d| d.name).collect())
                    .unwrap_or_default()
            }),
        };
        let slow: download::Slow = download::Slow::default();
        let mut failures: BTreeMap<String, StepError> = BTreeMap::new();
        let mut ready: BTreeMap<String, (PathBuf, Manifest)> = BTreeMap::new();
        for step in steps.iter().filter(|s| s.action != StepAction::Remove) {
            let result = async {
                let (_, manifest) = self.record(&step.manifest, repos).await?;
                let name_ok = manifest.control.get_or_empty("package") == step.name;
                if !name_ok {
                    return Err(StepError::Mismatch);
                }
                if manifest.control.get(outpost_protocol::wapt::WAPT_SETUP_FIELD).is_some()
                    && manifest.hook(hooks::PLATFORM_HOOK).is_none()
                {
                    return Err(StepError::PythonOnly { name: step.name.clone(), hook: hooks::PLATFORM_HOOK });
                }
                let label = format!("{} {}", step.name, step.version);
                let (dir, got) = download::ensure(&self.cache(), &step.manifest, &manifest, repos, &slow, &|done| {
                    progress(&label, done, step.size);
                })
                .await
                .map_err(|e| match e {
                    DownloadError::Unavailable { .. } if repos.is_empty() => StepError::Offline,
                    other => StepError::Download(other),
                })?;
                Ok::<_, StepError>((dir, manifest, got))
            }
            .await;
            match result {
                Ok((dir, manifest, got)) => {
                    report.fetched_bytes += got.fetched;
                    for (repo, n) in &got.by_repo {
                        *report.fetched_by_repo.entry(repo.clone()).or_default() += n;
                    }
                    ready.insert(step.name.clone(), (dir, manifest));
                }
                Err(e) => {
                    tracing::warn!(package = step.name, "cannot get the package: {e}");
                    failures.insert(step.name.clone(), e);
                }
            }
        }
        let slow = slow.lock().expect("not poisoned").clone();
        self.put_on_probation(&slow)?;
        if !report.fetched_by_repo.is_empty() {
            let mut total = self.bytes_by_repo();
            for (repo, n) in &report.fetched_by_repo {
                *total.entry(repo.clone()).or_default() += n;
            }
            self.state.keep(BYTES_BY_REPO, &total)?;
        }
        if download_only {
            report.downloaded = ready.keys().cloned().collect();
            report.failed = failures.into_iter().map(|(name, e)| Failure { name, reason: causes(&e) }).collect();
            self.save_failures(&report.failed)?;
            return Ok(report);
        }
        let mut failed_names: BTreeSet<String> = failures.keys().cloned().collect();
        for step in steps {
            if step.action == StepAction::Remove {
                match self.uninstall(&step.name).await {
                    Ok(()) => {
                        // A local request for a package the plan removes (it gave way to a
                        // managed package it conflicts with) would only bring it back.
                        self.state.remove_request(&step.name)?;
                        report.removed.push(step.name.clone());
                    }
                    Err(e) => {
                        failures.insert(step.name.clone(), e);
                        failed_names.insert(step.name.clone());
                    }
                }
                continue;
            }
            let Some((dir, manifest)) = ready.remove(&step.name) else { continue };
            if let Ok(entry) = manifest.entry()
                && let Some(dep) = entry.depends.iter().find(|d| failed_names.contains(&d.name))
            {
                failures.insert(step.name.clone(), StepError::Dependency(dep.name.clone()));
                failed_names.insert(step.name.clone());
                continue;
            }
            match self.install_one(step, &dir, &manifest).await {
                Ok(()) => report.installed.push(format!("{} {}", step.name, step.version)),
                Err(e) => {
                    failures.insert(step.name.clone(), e);
                    failed_names.insert(step.name.clone());
                }
            }
        }
        report.failed = failures.into_iter().map(|(name, e)| Failure { name, reason: causes(&e) }).collect();
        self.save_failures(&report.failed)?;
        // Statuses after the run, from the same snapshot.
        self.resolve(&snapshot, repos).await?;
        Ok(report)
    }

    fn save_failures(&self, failed: &[Failure]) -> Result<(), AgentError> {
        self.state.keep(FAILURES, &failed)?;
        Ok(())
    }

    fn bytes_by_repo(&self) -> BTreeMap<String, u64> {
        self.state.kept(BYTES_BY_REPO).ok().flatten().unwrap_or_default()
    }

    fn failures(&self) -> Vec<Failure> {
        self.state.kept(FAILURES).ok().flatten().unwrap_or_default()
    }

    /// Installs (or upgrades to) one package from its cache folder: INIT and RUNNING are
    /// recorded before the hook runs, so a crash leaves a record the next start turns into
    /// ERROR.
    async fn install_one(&self, step: &PlannedStep, dir: &Path, manifest: &Manifest) -> Result<(), StepError> {
        let now = unix_now();
        let previous = self.state.get_installed(&step.name)?;
        let script = hooks::script_for(manifest, dir);
        let hook = match &script {
            Some(s) => Some(std::fs::read(s).map_err(|source| StepError::Io { path: s.clone(), source })?),
            None => None,
        };
        let origin = match (&previous, step.origin) {
            (Some(p), _) if p.origin == Origin::Explicit => Origin::Explicit,
            (_, o) => o,
        };
        let mut record = InstalledRecord {
            control: manifest.control.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            manifest: step.manifest,
            state: InstallState::Init,
            origin,
            hook,
            output: String::new(),
            message: format!("{} started", step.text),
            installed_at: previous.as_ref().map_or(now, |p| p.installed_at),
            updated_at: now,
            audit: None,
        };
        let put = |r: &InstalledRecord| self.state.put_installed(&step.name, r);
        put(&record)?;
        record.state = InstallState::Running;
        put(&record)?;
        let outcome = match &script {
            Some(s) => {
                let run = hooks::run(
                    s,
                    HookAction::Install,
                    dir,
                    &self.settings.state_dir,
                    &manifest.control,
                    self.settings.hook_timeout,
                )
                .await;
                match run {
                    Ok(o) => Some(o),
                    Err(e) => {
                        record.state = InstallState::Error;
                        let e = StepError::HookStart { script: s.clone(), action: HookAction::Install, source: e };
                        record.message = outpost_protocol::text::causes(&e);
                        record.updated_at = unix_now();
                        put(&record)?;
                        return Err(e);
                    }
                }
            }
            None => None,
        };
        let ok = outcome.as_ref().is_none_or(hooks::HookOutcome::success);
        record.updated_at = unix_now();
        if let Some(o) = &outcome {
            record.output = o.output.clone();
            record.message = o.summary(
                &script
                    .as_ref()
                    .map(|s| s.file_name().unwrap_or_default().to_string_lossy().into_owned())
                    .unwrap_or_default(),
                HookAction::Install,
            );
        } else {
            record.message = format!("{} {} installed (no hook)", step.name, step.version);
        }
        if ok {
            record.state = InstallState::Ok;
            if manifest.entry().is_ok_and(|e| e.section == Section::Config) {
                self.apply_config(&step.name, dir)
                    .map_err(|source| StepError::Io { path: dir.to_path_buf(), source })?;
            }
            put(&record)?;
            let _ = std::fs::remove_dir_all(dir);
            tracing::info!(package = step.name, version = step.version, "installed");
            Ok(())
        } else {
            record.state = InstallState::Error;
            put(&record)?;
            tracing::warn!(package = step.name, "install failed: {}", record.message);
            Err(StepError::Hook(record.message))
        }
    }

    /// A `config` package carries `agent.toml`: kept as an overlay of the agent's settings.
    fn apply_config(&self, name: &str, dir: &Path) -> std::io::Result<()> {
        let overlay = dir.join("agent.toml");
        let target_dir = self.settings.state_dir.join("config.d");
        std::fs::create_dir_all(&target_dir)?;
        let target = target_dir.join(format!("{}.toml", sanitize(name)));
        if overlay.is_file() {
            crate::disk::write_atomic(&target, &std::fs::read(&overlay)?, 0o644)?;
        }
        Ok(())
    }

    /// Removes an installed package: runs the uninstall hook kept at install time.
    async fn uninstall(&self, name: &str) -> Result<(), StepError> {
        let Some(record) = self.state.get_installed(name)? else {
            return Err(StepError::NotInstalled(name.to_string()));
        };
        if let Some(hook) = &record.hook {
            let outcome = self.run_kept_hook(name, hook, HookAction::Uninstall, &record).await?;
            if !outcome.success() {
                let mut r = record.clone();
                r.output = outcome.output.clone();
                r.message = outcome.summary("setup.sh", HookAction::Uninstall);
                r.updated_at = unix_now();
                self.state.put_installed(name, &r)?;
                return Err(StepError::Hook(r.message));
            }
        }
        if record.control().get("section").and_then(Section::parse) == Some(Section::Config) {
            let _ =
                std::fs::remove_file(self.settings.state_dir.join("config.d").join(format!("{}.toml", sanitize(name))));
        }
        self.state.remove_installed(name)?;
        tracing::info!(package = name, "removed");
        Ok(())
    }

    async fn run_kept_hook(
        &self,
        name: &str,
        hook: &[u8],
        action: HookAction,
        record: &InstalledRecord,
    ) -> Result<hooks::HookOutcome, StepError> {
        let work = self.settings.state_dir.join("hooks").join(sanitize(name));
        std::fs::create_dir_all(&work).map_err(|source| StepError::Io { path: work.clone(), source })?;
        let script = work.join(if cfg!(windows) { "setup.ps1" } else { "setup.sh" });
        std::fs::write(&script, hook).map_err(|source| StepError::Io { path: script.clone(), source })?;
        let result =
            hooks::run(&script, action, &work, &self.settings.state_dir, &record.control(), self.settings.hook_timeout)
                .await;
        let _ = std::fs::remove_dir_all(&work);
        result.map_err(|source| StepError::HookStart { script, action, source })
    }

    /// `install NAME[(op version)]…`: updates, records the requests, and installs them (and
    /// what they need). From an expired snapshot nothing is installed (and nothing recorded).
    pub async fn install(
        &self,
        requests: &[String],
        progress: &(dyn Fn(&str, u64, u64) + Send + Sync),
    ) -> Result<UpgradeReport, AgentError> {
        let parsed = requests
            .iter()
            .map(|t| PackageRequest::parse(t).map_err(|e| AgentError::BadRequest(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let repos = self.refresh().await?;
        let (_, snapshot) = self.held()?.ok_or(AgentError::NoPlan)?;
        Self::ensure_fresh(&snapshot, String::new())?;
        let names: Vec<String> = parsed.iter().map(|r| r.name.clone()).collect();
        for r in &parsed {
            self.state.put_request(&r.name, &r.to_string())?;
        }
        self.resolve(&snapshot, &repos).await?;
        let mut report = self.run_plan(Some(&names), false, &repos, progress).await?;
        // A request nothing satisfies is an error, not a silent no-op; it is not kept, so that
        // it does not hold the host in ERROR.
        let stored = self.state.plan()?;
        let installed: BTreeSet<String> =
            self.state.installed()?.into_iter().filter(|(_, r)| !r.state.is_broken()).map(|(n, _)| n).collect();
        let mut dropped = false;
        let done = |n: &str| installed.contains(n) || report.failed.iter().any(|f| f.name == n);
        for (name, unresolved) in plan::unmet(stored.as_ref(), &names, done) {
            if unresolved.is_some() {
                self.state.remove_request(&name)?;
                dropped = true;
            }
            let reason = unresolved.map_or_else(|| format!("{name} was not installed"), ToString::to_string);
            report.failed.push(Failure { name, reason });
        }
        if dropped {
            self.resolve(&snapshot, &repos).await?;
        }
        Ok(report)
    }

    /// `remove NAME…`: runs each package's uninstall hook and forgets it (and the local
    /// request). A package that host, unit or profile packages require comes back at the next
    /// upgrade.
    pub async fn remove(&self, names: &[String]) -> Result<UpgradeReport, AgentError> {
        let mut report = UpgradeReport::default();
        for name in names {
            self.state.remove_request(name)?;
            match self.uninstall(name).await {
                Ok(()) => report.removed.push(name.clone()),
                Err(e) => report.failed.push(Failure { name: name.clone(), reason: causes(&e) }),
            }
        }
        if let Some((_, snapshot)) = self.held().ok().flatten() {
            self.resolve(&snapshot, &[]).await?;
        }
        Ok(report)
    }

    /// `audit`: runs each installed package's `audit` hook; exit 0 is OK, 1 WARNING, others ERROR.
    pub async fn audit(&self) -> Result<Vec<AuditLine>, AgentError> {
        let mut out = Vec::new();
        for (name, mut record) in self.state.installed()? {
            let Some(hook) = record.hook.clone() else {
                out.push(AuditLine { name, result: InstallState::Ok, message: "no hook: nothing to audit".into() });
                continue;
            };
            let (result, message) = match self.run_kept_hook(&name, &hook, HookAction::Audit, &record).await {
                Ok(o) => {
                    let result = match o.code {
                        Some(0) if !o.timed_out => InstallState::Ok,
                        Some(1) => InstallState::Warning,
                        _ => InstallState::Error,
                    };
                    record.output = o.output.clone();
                    (result, o.summary("setup.sh", HookAction::Audit))
                }
                Err(e) => (InstallState::Error, causes(&e)),
            };
            record.audit = Some(result.as_str().to_string());
            record.updated_at = unix_now();
            self.state.put_installed(&name, &record)?;
            out.push(AuditLine { name, result, message });
        }
        Ok(out)
    }

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
        let decided = status::decide(status::Held {
            plan: plan.as_ref(),
            snapshot: snapshot.as_ref(),
            installed: &installed,
            failures: &failures,
            last_update: last_update.as_ref(),
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
        Ok(sections)
    }

    /// The held snapshot (for tests and reports).
    pub fn snapshot(&self) -> Result<Option<SignedSnapshot>, AgentError> {
        Ok(self.state.snapshot()?)
    }
}

fn sanitize(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}
