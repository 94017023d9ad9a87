//! The central server: enrollment, the fleet's signed inventory reports, administrators'
//! signed actions relayed to agents, and the console's queries.
//!
//! [`Central`] is the actor that owns the state: the fleet index ([`fleet::Fleet`]), tokens,
//! waiting hosts, the certificates it issued, revoked certificates, actions and agent
//! settings; the database ([`store::CentralStore`]) makes every change durable before it is
//! answered. Connections ([`server`]) verify report signatures before handing them to the
//! actor, so the actor does no cryptography but certificate issuance and action checks.
//!
//! A host is a certificate: two certificates that claim one UUID or one name (a cloned disk
//! image, a second enrollment) are two hosts, flagged as a clash and never merged; actions go
//! to exactly the certificates their targets designate ([`relay`]); enrolling under a name
//! already enrolled waits for an administrator ([`enrollment`]).

pub mod client;
pub mod enrollment;
pub mod fleet;
pub mod fleet_db;
mod handlers;
pub mod metrics;
pub mod relay;
pub mod reports;
pub mod server;
pub mod store;
pub mod verifier;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use outpost_protocol::central::{
    Action, AgentSettingsDoc, CentralResponse, HostActionResult, HostDetail, HostDetailV2, HostNames, HostSummary,
    Inventory, PendingHost, Report, ReportDecision, ReportSeen, Section, SectionKind, Signed, decide, status_text,
};
use outpost_protocol::hex::hex;
use outpost_protocol::pki::{CertInfo, PrivateKey, TrustStore};
use outpost_protocol::resolver::HostStatus;
use outpost_protocol::verified::Verified;
use outpost_protocol::wire::ErrorCode;
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use self::fleet::{Fleet, kinds};
pub use self::handlers::{CertificateRevoked, Changed, Gone, Handle, HandleReport, LearnRevoked, Listen};
pub use self::metrics::CentralMetrics;
use self::store::{
    ActionRecord, CentralDbError, CentralStore, EnrolledRecord, HostRecord, Op, PendingRecord, TokenRecord,
};
use crate::clock::unix_now;
use crate::metrics::label;
use outpost_protocol::text::causes;

/// Revoked certificate fingerprints, shared with the repository served by the same process.
pub type Revoked = Arc<RwLock<HashSet<String>>>;

/// The enrollment CA: its certificate and key, and the chain sent with issued certificates.
#[derive(Debug)]
pub struct EnrollmentCa {
    /// The enrollment CA's certificate.
    pub cert: CertificateDer<'static>,
    /// Its key.
    pub key: PrivateKey,
}

/// What central starts with.
#[derive(Debug)]
pub struct CentralConfig {
    /// The organisation CA.
    pub trust: TrustStore,
    /// The enrollment CA, when enrollment is on.
    pub enrollment: Option<EnrollmentCa>,
    /// Lifetime of host certificates issued at enrollment, in days.
    pub host_days: u32,
}

/// A report accepted, to show in the fleet index once it is durable.
#[derive(Debug)]
struct Applied {
    uuid: String,
    /// The certificate's name.
    subject: String,
    fingerprint: String,
    changed: Vec<outpost_protocol::central::SectionKind>,
    partial: Inventory,
    seen: i64,
    sequence: u64,
}

impl Applied {
    /// What `report` from `peer` becomes once applied at `now` (its sections are cloned).
    fn of(peer: &Peer, report: &Report, now: i64) -> Self {
        Self::taking(peer, report, report.sections.clone(), now)
    }

    /// The same, taking `sections` (the report's).
    fn taking(peer: &Peer, report: &Report, sections: Vec<Section>, now: i64) -> Self {
        Self {
            uuid: report.host.clone(),
            subject: peer.info.subject.clone(),
            fingerprint: peer.info.fingerprint.clone(),
            changed: kinds(&sections),
            partial: Inventory::from_sections(sections),
            seen: now,
            sequence: report.sequence,
        }
    }
}

/// Who is asking (from the TLS connection).
#[derive(Clone, Debug)]
pub struct Peer {
    /// The certificate (shared by every request of its connection).
    pub info: Arc<CertInfo>,
}

struct Agent {
    conn: u64,
    remote: String,
    tx: mpsc::UnboundedSender<Signed>,
}

struct ActionState {
    action: Verified<Action>,
    record: ActionRecord,
}

/// The central actor.
pub struct Central {
    store: CentralStore,
    fleet: Fleet,
    config: CentralConfig,
    metrics: Arc<CentralMetrics>,
    revoked: Revoked,
    revoked_hosts: HashMap<String, String>,
    tokens: HashMap<[u8; 32], TokenRecord>,
    pending: BTreeMap<String, PendingRecord>,
    /// Certificates issued at enrollment, by fingerprint.
    enrolled: HashMap<String, EnrolledRecord>,
    /// Connected agents by certificate fingerprint.
    agents: HashMap<String, Agent>,
    /// Reports accepted but not yet durable: certificate → sequence. The fleet index shows a
    /// report only once it is on disk; these keep replays out meanwhile.
    inflight: HashMap<String, u64>,
    /// Actions already sent to a connection: (nonce, fingerprint).
    delivered: HashSet<([u8; 16], String)>,
    actions: BTreeMap<[u8; 16], ActionState>,
    settings: BTreeMap<u64, (Verified<AgentSettingsDoc>, Signed)>,
    /// Told every revoked fingerprint (the main repository's publisher, in `outpost server`).
    on_revoke: Option<Box<dyn Fn(Vec<String>) + Send>>,
    /// Moves each time a change is durable and visible (consoles watch it to refresh).
    generation: Arc<std::sync::atomic::AtomicU64>,
    /// Where reports read (a replica), when not the database central writes.
    read_pool: Option<deadpool_postgres::Pool>,
    /// Hosts counted by the database for the metrics (central on PostgreSQL).
    counts: Option<(fleet_db::Counts, std::time::Instant)>,
    /// The actions each connected host answered (central on PostgreSQL, where results stay in
    /// the database; on redb they are in each action's record).
    answered: HashMap<String, HashSet<[u8; 16]>>,
}

impl std::fmt::Debug for Central {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Central").field("hosts", &self.fleet.len()).finish()
    }
}

/// The sections the fleet index is built from.
const INDEXED: [outpost_protocol::central::SectionKind; 5] = [
    outpost_protocol::central::SectionKind::Host,
    outpost_protocol::central::SectionKind::Software,
    outpost_protocol::central::SectionKind::Packages,
    outpost_protocol::central::SectionKind::Snapshot,
    outpost_protocol::central::SectionKind::Audits,
];

/// What a host row is known by, for target matching.
fn names_of(row: &fleet::HostRow) -> HostNames<'_> {
    HostNames { fingerprint: row.fingerprint(), uuid: &row.summary.uuid, fqdn: &row.summary.fqdn, ou: &row.summary.ou }
}

impl Central {
    /// Loads the database into memory. `known_revoked` are revocations learned elsewhere (the
    /// main repository's snapshot carries them): they survive the loss of central's data.
    pub fn open(
        store: CentralStore,
        config: CentralConfig,
        metrics: Arc<CentralMetrics>,
        revoked: Revoked,
        known_revoked: &[String],
    ) -> Result<Self, CentralDbError> {
        let loaded = store.load()?;
        let mut central = Self {
            store,
            fleet: Fleet::default(),
            config,
            metrics,
            revoked,
            revoked_hosts: HashMap::new(),
            tokens: HashMap::new(),
            pending: BTreeMap::new(),
            enrolled: HashMap::new(),
            agents: HashMap::new(),
            inflight: HashMap::new(),
            delivered: HashSet::new(),
            actions: BTreeMap::new(),
            settings: BTreeMap::new(),
            on_revoke: None,
            generation: Arc::default(),
            read_pool: None,
            counts: None,
            answered: HashMap::new(),
        };
        central.install(loaded);
        let learned = central.learn_revoked(known_revoked);
        if learned > 0 {
            tracing::warn!(learned, "revocations recovered from the main repository's snapshot");
        }
        Ok(central)
    }

    /// Puts what the database holds in memory, in place of what was there (at start, and when
    /// the change feed from other instances had to start again).
    fn install(&mut self, loaded: store::Loaded) {
        let mut fleet = Fleet::default();
        for (record, inv) in &loaded.hosts {
            fleet.update(&record.fingerprint, &record.uuid, inv, &INDEXED, record.last_seen, record.sequence);
        }
        let now = unix_now();
        let mut actions = BTreeMap::new();
        for (nonce, record) in loaded.actions {
            if let Ok((action, _)) = Action::verify(&record.signed, &self.config.trust, now) {
                actions.insert(nonce, ActionState { action, record });
            }
        }
        let mut settings = BTreeMap::new();
        for (seq, signed) in loaded.settings {
            if let Ok((doc, _)) = AgentSettingsDoc::verify(&signed, &self.config.trust, now) {
                settings.insert(seq, (doc, signed));
            }
        }
        // On PostgreSQL hosts stay in the database: the hosts connected here are kept.
        if self.store.postgres().is_none() {
            self.fleet = fleet;
        }
        self.actions = actions;
        self.settings = settings;
        self.tokens = loaded.tokens.into_iter().collect();
        self.pending = loaded.pending.into_iter().collect();
        self.enrolled = loaded.enrolled.into_iter().collect();
        self.inflight.clear();
        for (fp, uuid) in &loaded.revoked {
            self.mark_revoked(fp, uuid);
        }
    }

    /// Tells `hook` every revoked certificate fingerprint (all of them at start, then each new
    /// one), so that the main repository's snapshot carries them to every edge.
    pub fn with_revocation_hook(mut self, hook: Box<dyn Fn(Vec<String>) + Send>) -> Self {
        let all: Vec<String> = self.revoked_hosts.keys().cloned().collect();
        if !all.is_empty() {
            hook(all);
        }
        self.on_revoke = Some(hook);
        self
    }

    /// Reports read from `pool` (a streaming replica) instead of the database central writes.
    pub fn with_read_pool(mut self, pool: deadpool_postgres::Pool) -> Self {
        self.read_pool = Some(pool);
        self
    }

    /// The pool reports read from: the replica, else the database (PostgreSQL only).
    fn report_pool(&self) -> Option<deadpool_postgres::Pool> {
        self.read_pool.clone().or_else(|| self.write_pool())
    }

    /// The database central writes (PostgreSQL only).
    fn write_pool(&self) -> Option<deadpool_postgres::Pool> {
        self.store.postgres().map(|p| p.pool().clone())
    }

    /// What only this instance knows of hosts (for the console's queries on PostgreSQL).
    fn live(&self) -> fleet_db::Live {
        fleet_db::Live {
            online: self.agents.keys().cloned().collect(),
            shared: self
                .agents
                .keys()
                .filter_map(|fp| self.fleet.by_fingerprint(fp))
                .filter_map(|r| r.shared.clone().map(|s| (r.fingerprint().to_string(), s)))
                .collect(),
        }
    }

    /// Reads hosts `fps` again from the database (central on PostgreSQL), then runs `then`.
    fn refresh(&self, ctx: &mut Context<Self>, fps: Vec<String>, then: impl FnOnce(&mut Self, &[String]) + 'static) {
        let Some(pool) = self.write_pool() else { return };
        if fps.is_empty() {
            return;
        }
        let names: Vec<String> = fps.iter().map(|f| format!("sha256:{f}")).collect();
        let connected = fps.clone();
        let read = async move {
            let hosts = fleet_db::designated(&pool, &names).await?;
            let answered = fleet_db::answered(&pool, &connected).await?;
            Ok::<_, store::postgres::PgError>((hosts, answered))
        };
        ctx.spawn(read.into_actor(self).map(move |rows, act, _| match rows {
            Ok((rows, answered)) => {
                for r in rows {
                    act.fleet.put(r);
                }
                for fp in &fps {
                    act.answered.insert(fp.clone(), HashSet::new());
                }
                for (fp, nonce) in answered {
                    act.answered.entry(fp).or_default().insert(nonce);
                }
                then(act, &fps);
            }
            Err(e) => tracing::warn!("reading connected hosts from the database: {e}"),
        }));
    }

    /// Forgets hosts no longer connected, once they are many (central on PostgreSQL keeps only
    /// the hosts connected to it).
    fn evict(&mut self) {
        if self.store.postgres().is_none() {
            return;
        }
        let agents = &self.agents;
        self.answered.retain(|fp, _| agents.contains_key(fp));
        if self.fleet.len() > 2 * self.agents.len() + 256 {
            let agents = &self.agents;
            self.fleet.retain(|fp| agents.contains_key(fp));
        }
        // Certificates issued at enrollment are read again when a request is about them.
        if self.enrolled.len() > 256 {
            self.enrolled.clear();
        }
    }

    fn is_revoked(&self, fingerprint: &str) -> bool {
        self.revoked.read().expect("not poisoned").contains(fingerprint)
    }

    fn refresh_gauges(&self) {
        if self.store.postgres().is_some() {
            self.metrics.connected.set(i64::try_from(self.agents.len()).unwrap_or(i64::MAX));
            if let Some((c, _)) = &self.counts {
                for status in HostStatus::ALL.map(Some).into_iter().chain([None]).map(status_text) {
                    let n = c.by_status.get(status).copied().unwrap_or(0);
                    self.metrics.hosts.get_or_create(&label("status", status)).set(n);
                }
                self.metrics.snapshot_expired.set(c.snapshot_expired);
                self.metrics.identity_clashes.set(c.clashes);
            }
            return;
        }
        let counts = self.fleet.by_status();
        // Every status has a series (0 when no host has it), so that rules and dashboards see 0.
        for status in HostStatus::ALL.map(Some).into_iter().chain([None]).map(status_text) {
            self.metrics.hosts.get_or_create(&label("status", status)).set(counts.get(status).copied().unwrap_or(0));
        }
        for (status, n) in &counts {
            self.metrics.hosts.get_or_create(&label("status", status)).set(*n);
        }
        self.metrics.connected.set(i64::try_from(self.agents.len()).unwrap_or(i64::MAX));
        self.metrics.unfolded.set(i64::try_from(self.store.unfolded()).unwrap_or(i64::MAX));
        let (failed_folds, damaged) = self.store.journal_troubles();
        self.metrics.fold_failures.inc_by(failed_folds.saturating_sub(self.metrics.fold_failures.get()));
        self.metrics.damaged_segments.inc_by(damaged.saturating_sub(self.metrics.damaged_segments.get()));
        self.metrics.snapshot_expired.set(self.fleet.snapshot_expired());
        self.metrics.identity_clashes.set(self.fleet.clashes());
    }

    /// Forgets deliveries of expired actions (the agents refuse them anyway).
    fn prune(&mut self) {
        let now = unix_now();
        let live: HashSet<[u8; 16]> =
            self.actions.iter().filter(|(_, s)| s.action.expires > now).map(|(n, _)| *n).collect();
        self.delivered.retain(|(n, _)| live.contains(n));
    }

    /// Applies a verified report; answers once it is durable. The host is the certificate
    /// that signed it: a report never lands on another certificate's host.
    fn apply_report(&mut self, peer: &Peer, report: Verified<Report>) -> Result<(Applied, Vec<Op>), CentralResponse> {
        let report = report.into_inner();
        let reject_as = |m: &CentralMetrics, code: ErrorCode, reason: &str, message: String| {
            m.rejected(reason);
            Err(CentralResponse::Error { code, message })
        };
        let reject =
            |m: &CentralMetrics, reason: &str, message: String| reject_as(m, ErrorCode::Refused, reason, message);
        let fp = peer.info.fingerprint.clone();
        if self.is_revoked(&fp) {
            return reject(&self.metrics, "revoked", "this host's certificate is revoked".into());
        }
        if self.store.postgres().is_some() {
            return self.apply_shared(peer, report);
        }
        let row = self.fleet.by_fingerprint(&fp);
        let inflight = self.inflight.get(&fp).copied();
        if row.is_none() && inflight.is_none() && !report.full {
            // A host central does not know (new, or central lost its data): everything, please.
            self.metrics.full_requests.inc();
            self.metrics.reports.get_or_create(&label("result", "full_requested")).inc();
            return Err(CentralResponse::FullReportNeeded { last: None });
        }
        // The certificate must name the host the report is about (by UUID or FQDN).
        let reported_fqdn = report.sections.iter().find_map(|s| match s {
            Section::Host(h) => Some(h.fqdn.clone()),
            _ => None,
        });
        let known_fqdn = row.map(|r| r.summary.fqdn.clone());
        let cn = peer.info.subject.to_lowercase();
        // The name it reports now, else the one it reported before.
        let fqdn = reported_fqdn.or(known_fqdn);
        let names_it = cn == report.host.to_lowercase() || fqdn.as_deref().is_some_and(|f| f.to_lowercase() == cn);
        if !names_it {
            return reject(
                &self.metrics,
                "unknown_host",
                format!("the certificate {:?} does not name host {}", peer.info.subject, report.host),
            );
        }
        let last = row.map(|r| r.summary.sequence).max(inflight);
        match decide(last, &report) {
            ReportDecision::Replay => reject_as(
                &self.metrics,
                ErrorCode::Stale,
                "replay",
                format!("report {} is not newer than report {} already applied", report.sequence, last.unwrap_or(0)),
            ),
            ReportDecision::FullNeeded => {
                self.metrics.full_requests.inc();
                self.metrics.reports.get_or_create(&label("result", "full_requested")).inc();
                Err(CentralResponse::FullReportNeeded { last })
            }
            ReportDecision::Apply => {
                let now = unix_now();
                self.inflight.insert(fp.clone(), report.sequence);
                // The sections are written encoded, and kept for the index without a copy.
                let record = HostRecord {
                    fingerprint: fp,
                    sequence: report.sequence,
                    last_seen: now,
                    uuid: report.host.clone(),
                };
                let op = Op::encoded(record, &report.sections, report.full);
                let mut report = report;
                let sections = std::mem::take(&mut report.sections);
                Ok((Applied::taking(peer, &report, sections, now), vec![op]))
            }
        }
    }

    /// A report on PostgreSQL, which instances share: the database decides whether it follows
    /// the report stored (and whether a report that does not say the host's name comes from
    /// the certificate of that name), so that no instance's memory is trusted for it.
    fn apply_shared(&mut self, peer: &Peer, report: Report) -> Result<(Applied, Vec<Op>), CentralResponse> {
        let cn = peer.info.subject.to_lowercase();
        let reported = report.sections.iter().find_map(|s| match s {
            Section::Host(h) => Some(h.fqdn.to_lowercase()),
            _ => None,
        });
        let check = if cn == report.host.to_lowercase() || reported.as_deref() == Some(cn.as_str()) {
            None
        } else if reported.is_some() {
            self.metrics.rejected("unknown_host");
            return Err(error(
                ErrorCode::Refused,
                format!("the certificate {:?} does not name host {}", peer.info.subject, report.host),
            ));
        } else {
            Some(cn)
        };
        let now = unix_now();
        let fp = peer.info.fingerprint.clone();
        let applied = Applied::of(peer, &report, now);
        let record = HostRecord { fingerprint: fp, sequence: report.sequence, last_seen: now, uuid: report.host };
        let op = Op::Report { record, sections: report.sections, full: report.full, cn: check };
        Ok((applied, vec![op]))
    }

    /// A durable report reaches the fleet index (and the host's waiting actions go out). On
    /// PostgreSQL, only a host connected here is kept in memory; false when it is connected
    /// but not known here yet (it is read from the database).
    fn applied(&mut self, a: &Applied) -> bool {
        if self.store.postgres().is_some() {
            self.metrics.reports.get_or_create(&label("result", "applied")).inc();
            self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if !self.agents.contains_key(&a.fingerprint) {
                return true;
            }
            if self.fleet.by_fingerprint(&a.fingerprint).is_none() && !a.changed.contains(&SectionKind::Host) {
                return false;
            }
            self.fleet.update(&a.fingerprint, &a.uuid, &a.partial, &a.changed, a.seen, a.sequence);
            self.deliver(&a.fingerprint);
            return true;
        }
        let clashed = self.fleet.by_fingerprint(&a.fingerprint).and_then(|r| self.fleet.clash(r)).is_some();
        self.fleet.update(&a.fingerprint, &a.uuid, &a.partial, &a.changed, a.seen, a.sequence);
        self.fleet.record_report(
            &a.fingerprint,
            ReportSeen { sequence: a.sequence, at: a.seen, sections: a.changed.clone() },
        );
        if !clashed && let Some(clash) = self.fleet.by_fingerprint(&a.fingerprint).and_then(|r| self.fleet.clash(r)) {
            tracing::warn!(fingerprint = a.fingerprint, uuid = a.uuid, "identity clash: {clash}");
        }
        self.metrics.reports.get_or_create(&label("result", "applied")).inc();
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.inflight.get(&a.fingerprint) == Some(&a.sequence) {
            self.inflight.remove(&a.fingerprint);
        }
        self.deliver(&a.fingerprint);
        true
    }

    /// The one host `name` designates, or an error that lists the candidates.
    fn one_host(&self, name: &str) -> Result<&fleet::HostRow, CentralResponse> {
        let rows = self.fleet.find(name);
        let candidates: Vec<&HostSummary> = rows.iter().map(|r| &r.summary).collect();
        let enrolled =
            self.enrolled.values().any(|e| e.fqdn.eq_ignore_ascii_case(name) || e.uuid.eq_ignore_ascii_case(name));
        one_of(name, &candidates, enrolled).map(|i| rows[i])
    }

    fn host_detail_v2(&self, name: &str) -> Result<HostDetailV2, CentralResponse> {
        let detail = self.host_detail(name)?;
        let reports = self.one_host(name)?.recent();
        Ok(HostDetailV2 { detail, reports })
    }

    fn host_detail(&self, name: &str) -> Result<HostDetail, CentralResponse> {
        let row = self.one_host(name)?;
        let inventory = self.store.inventory(row.fingerprint()).map_err(|e| error(ErrorCode::Internal, causes(&e)))?;
        let summary = self.fleet.summary(row, self.agents.contains_key(row.fingerprint()));
        let actions = self.results_of(row.fingerprint());
        Ok(HostDetail { summary, inventory, actions })
    }

    /// A host's results of actions.
    fn results_of(&self, fingerprint: &str) -> Vec<HostActionResult> {
        self.actions
            .values()
            .flat_map(|s| {
                s.record.results.iter().filter(|(h, ..)| h == fingerprint).map(|(_, ok, m, _)| HostActionResult {
                    id: hex(&s.action.nonce),
                    kind: s.action.kind.name().to_string(),
                    ok: *ok,
                    message: m.clone(),
                })
            })
            .collect()
    }

    fn settings_for(&self, peer: &Peer) -> Option<Signed> {
        let fp = &peer.info.fingerprint;
        let row = self.fleet.by_fingerprint(fp);
        let (uuid, fqdn, ou) = row.map_or_else(
            || (peer.info.subject.clone(), peer.info.subject.clone(), String::new()),
            |r| (r.summary.uuid.clone(), r.summary.fqdn.clone(), r.summary.ou.clone()),
        );
        let names = HostNames { fingerprint: fp, uuid: &uuid, fqdn: &fqdn, ou: &ou };
        self.settings.values().rev().find(|(d, _)| d.targets.includes(&names)).map(|(_, s)| s.clone())
    }

    fn set_settings(&mut self, signed: Signed) -> (CentralResponse, Vec<Op>) {
        match AgentSettingsDoc::verify(&signed, &self.config.trust, unix_now()) {
            Ok((doc, info)) => {
                if self.settings.keys().next_back().is_some_and(|last| *last >= doc.sequence) {
                    return (
                        error(ErrorCode::Stale, "settings refused: their sequence is not newer than the last ones"),
                        vec![],
                    );
                }
                let seq = doc.sequence;
                tracing::info!(
                    sequence = seq,
                    targets = doc.targets.describe(),
                    signer = info.subject,
                    "agent settings stored"
                );
                self.settings.insert(seq, (doc, signed.clone()));
                (
                    CentralResponse::Done(format!(
                        "agent settings {seq} stored; agents apply them at their next contact"
                    )),
                    vec![Op::Settings { sequence: seq, signed }],
                )
            }
            Err(e) => {
                self.metrics.action_refusals.get_or_create(&label("reason", e.reason())).inc();
                (error(ErrorCode::Forbidden, format!("settings refused: {e}")), vec![])
            }
        }
    }

    fn token(&mut self, uses: u32, valid_secs: u64) -> (CentralResponse, Vec<Op>) {
        let mut bytes = [0u8; 20];
        if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
            return (error(ErrorCode::Internal, "no randomness available"), vec![]);
        }
        let token = hex(&bytes);
        let hash = *blake3::hash(token.as_bytes()).as_bytes();
        let expires = unix_now() + i64::try_from(valid_secs).unwrap_or(i64::MAX / 2);
        let record = TokenRecord { expires, uses: uses.max(1) };
        self.tokens.insert(hash, record.clone());
        (CentralResponse::Token { token, expires, uses: record.uses }, vec![Op::Token { hash, record: Some(record) }])
    }

    fn pending_hosts(&self) -> Vec<PendingHost> {
        self.pending
            .iter()
            .filter(|(_, p)| p.issued.is_none())
            .map(|(u, p)| PendingHost {
                uuid: u.clone(),
                fqdn: p.fqdn.clone(),
                since: p.since,
                reason: p.reason.clone(),
            })
            .collect()
    }
}

/// Which of the hosts a name designates is the one: an error when none (saying whether a
/// certificate was `enrolled` under that name) or several.
fn one_of(name: &str, candidates: &[&HostSummary], enrolled: bool) -> Result<usize, CentralResponse> {
    match candidates {
        [] => Err(error(
            ErrorCode::NotFound,
            if enrolled { format!("{name} was enrolled but has not reported yet") } else { format!("no host {name}") },
        )),
        [_] => Ok(0),
        many => Err(error(
            ErrorCode::BadRequest,
            format!(
                "{name} is claimed by {} certificates: {}; name one by its fingerprint (sha256:…)",
                many.len(),
                sorted_by_name(many)
                    .iter()
                    .map(|r| format!("sha256:{} ({}, {})", r.fingerprint, r.fqdn, r.uuid))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Hosts by FQDN, then UUID, then certificate (one order whichever way they were found).
fn sorted_by_name<'a>(hosts: &[&'a HostSummary]) -> Vec<&'a HostSummary> {
    let mut v = hosts.to_vec();
    v.sort_by(|a, b| (&a.fqdn, &a.uuid, &a.fingerprint).cmp(&(&b.fqdn, &b.uuid, &b.fingerprint)));
    v
}

fn error(code: ErrorCode, message: impl Into<String>) -> CentralResponse {
    CentralResponse::Error { code, message: message.into() }
}

impl Actor for Central {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if let Some(pool) = self.write_pool() {
            // Counting a million hosts takes the database about a second: a large fleet is
            // counted every 30 s, a small one every 5 s.
            let count = move |act: &mut Self, ctx: &mut Self::Context| {
                if let Some((c, at)) = &act.counts {
                    let every = if c.by_status.values().sum::<i64>() > 100_000 { 30 } else { 5 };
                    if at.elapsed() < std::time::Duration::from_secs(every) {
                        return;
                    }
                }
                let pool = pool.clone();
                ctx.spawn(async move { fleet_db::counts(&pool).await }.into_actor(act).map(
                    |counts, act, _| match counts {
                        Ok(c) => act.counts = Some((c, std::time::Instant::now())),
                        Err(e) => tracing::warn!("counting hosts for the metrics: {e}"),
                    },
                ));
            };
            count(self, ctx);
            ctx.run_interval(std::time::Duration::from_secs(5), count);
        }
        self.refresh_gauges();
        ctx.run_interval(std::time::Duration::from_secs(1), |act, _| act.refresh_gauges());
        ctx.run_interval(std::time::Duration::from_secs(60), |act, _| act.prune());
    }
}
