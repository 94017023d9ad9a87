//! The central server: enrollment, the fleet's signed inventory reports, administrators'
//! signed actions relayed to agents, and the console's queries.
//!
//! [`Central`] is the actor that owns the state: the fleet index ([`fleet::Fleet`]), tokens,
//! waiting hosts, revoked certificates, actions and agent settings; the database
//! ([`store::CentralStore`]) makes every change durable before it is answered. Connections
//! ([`server`]) verify report signatures before handing them to the actor, so the actor does no
//! cryptography but certificate issuance and action checks.

pub mod client;
pub mod fleet;
pub mod server;
pub mod store;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, RwLock};

use actix::prelude::*;
use outpost_protocol::central::{
    Action, ActionLine, AgentSettingsDoc, CentralRequest, CentralResponse, HostDetail, Inventory, Report,
    ReportDecision, Signed, decide, hex,
};
use outpost_protocol::pki::{self, CertInfo, PrivateKey, TrustStore};
use outpost_protocol::wire::ErrorCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use rustls::pki_types::CertificateDer;
use tokio::sync::mpsc;

use self::fleet::{Fleet, kinds};
use self::store::{ActionRecord, CentralStore, HostRecord, Op, PendingRecord, TokenRecord};
use crate::metrics::{Labels, label};
use crate::repo::unix_now;

/// Revoked certificate fingerprints, shared with the repository served by the same process.
pub type Revoked = Arc<RwLock<HashSet<String>>>;

/// Central's metrics (`outpost_central_…`).
#[derive(Debug)]
pub struct CentralMetrics {
    /// Hosts by status.
    pub hosts: Family<Labels, Gauge>,
    /// Reports by result: applied, rejected, full_requested.
    pub reports: Family<Labels, Counter>,
    /// Rejected reports by reason.
    pub rejections: Family<Labels, Counter>,
    /// Full reports asked for.
    pub full_requests: Counter,
    /// Actions relayed to agents (one per host reached).
    pub actions_sent: Counter,
    /// Action results by result (ok, failed).
    pub action_results: Family<Labels, Counter>,
    /// Seconds from relaying an action to its result.
    pub action_latency: Histogram,
    /// Refused actions and settings by reason.
    pub action_refusals: Family<Labels, Counter>,
    /// Agents connected now.
    pub connected: Gauge,
    /// Enrollments by result (issued, pending, refused).
    pub enrollments: Family<Labels, Counter>,
    /// Hosts whose snapshot had expired at their last report.
    pub snapshot_expired: Gauge,
    /// Connection attempts not served at once, by result (retried, refused).
    pub handshakes: Family<Labels, Counter>,
}

impl Default for CentralMetrics {
    fn default() -> Self {
        Self {
            hosts: Family::default(),
            reports: Family::default(),
            rejections: Family::default(),
            full_requests: Counter::default(),
            actions_sent: Counter::default(),
            action_results: Family::default(),
            action_latency: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            action_refusals: Family::default(),
            connected: Gauge::default(),
            enrollments: Family::default(),
            snapshot_expired: Gauge::default(),
            handshakes: Family::default(),
        }
    }
}

impl CentralMetrics {
    /// Registers every metric under `outpost_central_…`, with the usual series at zero.
    pub fn register(&self, registry: &mut Registry) {
        for result in ["applied", "rejected", "full_requested"] {
            let _ = self.reports.get_or_create(&label("result", result));
        }
        for reason in ["signature", "replay", "unknown_host", "oversized", "malformed", "revoked"] {
            let _ = self.rejections.get_or_create(&label("reason", reason));
        }
        for result in ["ok", "failed"] {
            let _ = self.action_results.get_or_create(&label("result", result));
        }
        for result in ["retried", "refused"] {
            let _ = self.handshakes.get_or_create(&label("result", result));
        }
        let r = registry.sub_registry_with_prefix("outpost_central");
        r.register("hosts", "Hosts by status (as last reported)", self.hosts.clone());
        r.register("reports", "Inventory reports by result", self.reports.clone());
        r.register("report_rejections", "Rejected inventory reports by reason", self.rejections.clone());
        r.register("full_report_requests", "Full inventory reports asked for", self.full_requests.clone());
        r.register("actions_sent", "Actions relayed to agents (one per host)", self.actions_sent.clone());
        r.register("action_results", "Action results by result", self.action_results.clone());
        r.register(
            "action_latency_seconds",
            "Seconds from relaying an action to its result",
            self.action_latency.clone(),
        );
        r.register("action_refusals", "Refused actions and settings by reason", self.action_refusals.clone());
        r.register("connected_agents", "Agents connected now", self.connected.clone());
        r.register("enrollments", "Enrollments by result", self.enrollments.clone());
        r.register(
            "handshakes",
            "Connection attempts not served at once, by result (retried: asked to prove their address; refused: over the limits)",
            self.handshakes.clone(),
        );
        r.register(
            "hosts_snapshot_expired",
            "Hosts whose snapshot had expired at their last report (they install nothing new)",
            self.snapshot_expired.clone(),
        );
    }

    fn rejected(&self, reason: &str) {
        self.reports.get_or_create(&label("result", "rejected")).inc();
        self.rejections.get_or_create(&label("reason", reason)).inc();
    }
}

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
    fingerprint: String,
    changed: Vec<outpost_protocol::central::SectionKind>,
    partial: Inventory,
    seen: i64,
    sequence: u64,
}

/// Who is asking (from the TLS connection).
#[derive(Clone, Debug)]
pub struct Peer {
    /// The certificate.
    pub info: CertInfo,
}

struct Agent {
    conn: u64,
    subject: String,
    tx: mpsc::UnboundedSender<Signed>,
}

struct ActionState {
    action: Action,
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
    /// Connected agents by certificate fingerprint.
    agents: HashMap<String, Agent>,
    /// Reports accepted but not yet durable: host (lower-case) → sequence. The fleet index
    /// shows a report only once it is on disk; these keep replays out meanwhile.
    inflight: HashMap<String, u64>,
    /// Actions already sent to a connection: (nonce, fingerprint).
    delivered: HashSet<([u8; 16], String)>,
    actions: BTreeMap<[u8; 16], ActionState>,
    settings: BTreeMap<u64, (AgentSettingsDoc, Signed)>,
    /// Told every revoked fingerprint (the main repository's publisher, in `outpost server`).
    on_revoke: Option<Box<dyn Fn(Vec<String>) + Send>>,
}

impl std::fmt::Debug for Central {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Central").field("hosts", &self.fleet.len()).finish()
    }
}

impl Central {
    /// Loads the database into memory.
    pub fn open(
        store: CentralStore,
        config: CentralConfig,
        metrics: Arc<CentralMetrics>,
        revoked: Revoked,
    ) -> Result<Self, String> {
        let loaded = store.load()?;
        let mut fleet = Fleet::default();
        let all = [
            outpost_protocol::central::SectionKind::Host,
            outpost_protocol::central::SectionKind::Software,
            outpost_protocol::central::SectionKind::Packages,
            outpost_protocol::central::SectionKind::Snapshot,
        ];
        for (uuid, record, inv) in &loaded.hosts {
            fleet.update(uuid, &record.fingerprint, inv, &all, record.last_seen, record.sequence);
        }
        let mut revoked_hosts = HashMap::new();
        {
            let mut set = revoked.write().expect("not poisoned");
            for (fp, uuid) in &loaded.revoked {
                set.insert(fp.clone());
                revoked_hosts.insert(fp.clone(), uuid.clone());
                fleet.set_revoked(uuid, true);
            }
        }
        let now = unix_now();
        let mut actions = BTreeMap::new();
        for (nonce, record) in loaded.actions {
            if let Ok((action, _)) = Action::verify(&record.signed, &config.trust, now) {
                actions.insert(nonce, ActionState { action, record });
            }
        }
        let mut settings = BTreeMap::new();
        for (seq, signed) in loaded.settings {
            if let Ok((doc, _)) = AgentSettingsDoc::verify(&signed, &config.trust, now) {
                settings.insert(seq, (doc, signed));
            }
        }
        Ok(Self {
            store,
            fleet,
            config,
            metrics,
            revoked,
            revoked_hosts,
            tokens: loaded.tokens.into_iter().collect(),
            pending: loaded.pending.into_iter().collect(),
            agents: HashMap::new(),
            inflight: HashMap::new(),
            delivered: HashSet::new(),
            actions,
            settings,
            on_revoke: None,
        })
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

    fn is_revoked(&self, fingerprint: &str) -> bool {
        self.revoked.read().expect("not poisoned").contains(fingerprint)
    }

    fn refresh_gauges(&self) {
        let counts = self.fleet.by_status();
        // Every status has a series (0 when no host has it), so that rules and dashboards see 0.
        for status in ["OK", "NEED-UPGRADE", "ERROR", "UNKNOWN"] {
            self.metrics.hosts.get_or_create(&label("status", status)).set(counts.get(status).copied().unwrap_or(0));
        }
        for (status, n) in &counts {
            self.metrics.hosts.get_or_create(&label("status", status)).set(*n);
        }
        self.metrics.connected.set(i64::try_from(self.agents.len()).unwrap_or(i64::MAX));
        self.metrics.snapshot_expired.set(self.fleet.snapshot_expired());
    }

    /// Forgets deliveries of expired actions (the agents refuse them anyway).
    fn prune(&mut self) {
        let now = unix_now();
        let live: HashSet<[u8; 16]> =
            self.actions.iter().filter(|(_, s)| s.action.expires > now).map(|(n, _)| *n).collect();
        self.delivered.retain(|(n, _)| live.contains(n));
    }

    /// Applies a verified report; answers once it is durable.
    fn apply_report(&mut self, peer: &Peer, report: Report) -> Result<(Applied, Vec<Op>), CentralResponse> {
        let reject = |m: &CentralMetrics, reason: &str, message: String| {
            m.rejected(reason);
            Err(CentralResponse::Error { code: ErrorCode::Refused, message })
        };
        if self.is_revoked(&peer.info.fingerprint) {
            return reject(&self.metrics, "revoked", "this host's certificate is revoked".into());
        }
        let row = self.fleet.get(&report.host);
        let inflight = self.inflight.get(&report.host.to_lowercase()).copied();
        if row.is_none() && inflight.is_none() && !report.full {
            // A host central does not know (new, or central lost its data): everything, please.
            self.metrics.full_requests.inc();
            self.metrics.reports.get_or_create(&label("result", "full_requested")).inc();
            return Err(CentralResponse::FullReportNeeded { last: None });
        }
        // The certificate must name the host the report is about (by UUID or FQDN).
        let reported_fqdn = report.sections.iter().find_map(|s| match s {
            outpost_protocol::central::Section::Host(h) => Some(h.fqdn.clone()),
            _ => None,
        });
        let known_fqdn = row.map(|r| r.summary.fqdn.clone());
        let cn = peer.info.subject.to_lowercase();
        let names_it = cn == report.host.to_lowercase()
            || reported_fqdn.as_deref().is_some_and(|f| f.to_lowercase() == cn)
            || known_fqdn.as_deref().is_some_and(|f| f.to_lowercase() == cn);
        if !names_it {
            return reject(
                &self.metrics,
                "unknown_host",
                format!("the certificate {:?} does not name host {}", peer.info.subject, report.host),
            );
        }
        let stored = row.filter(|r| r.fingerprint == peer.info.fingerprint || report.full).map(|r| r.summary.sequence);
        let last = stored.max(inflight);
        match decide(last, &report) {
            ReportDecision::Replay => reject(
                &self.metrics,
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
                self.inflight.insert(report.host.to_lowercase(), report.sequence);
                let applied = Applied {
                    uuid: report.host.clone(),
                    fingerprint: peer.info.fingerprint.clone(),
                    changed: kinds(&report.sections),
                    partial: Inventory::from_sections(report.sections.clone()),
                    seen: now,
                    sequence: report.sequence,
                };
                let op = Op::Report {
                    uuid: report.host,
                    record: HostRecord {
                        fingerprint: peer.info.fingerprint.clone(),
                        sequence: report.sequence,
                        last_seen: now,
                    },
                    sections: report.sections,
                    full: report.full,
                };
                Ok((applied, vec![op]))
            }
        }
    }

    /// A durable report reaches the fleet index (and the host's waiting actions go out).
    fn applied(&mut self, a: &Applied) {
        self.fleet.update(&a.uuid, &a.fingerprint, &a.partial, &a.changed, a.seen, a.sequence);
        self.metrics.reports.get_or_create(&label("result", "applied")).inc();
        let key = a.uuid.to_lowercase();
        if self.inflight.get(&key) == Some(&a.sequence) {
            self.inflight.remove(&key);
        }
        self.deliver(&a.fingerprint);
    }

    fn enroll(&mut self, request: &[u8], token: Option<&str>, uuid: &str, fqdn: &str) -> (CentralResponse, Vec<Op>) {
        let refuse = |m: &CentralMetrics, msg: String| {
            m.enrollments.get_or_create(&label("result", "refused")).inc();
            (CentralResponse::Error { code: ErrorCode::Forbidden, message: msg }, vec![])
        };
        let Some(ca) = &self.config.enrollment else {
            return refuse(
                &self.metrics,
                "enrollment is turned off on this server (no enrollment CA configured)".into(),
            );
        };
        if uuid.trim().is_empty() || fqdn.trim().is_empty() {
            return refuse(&self.metrics, "enrollment needs the host's UUID and FQDN".into());
        }
        let now = unix_now();
        let issue = |ca: &EnrollmentCa| -> Result<String, String> {
            let cert = pki::issue_host_from_request(
                &ca.cert,
                &ca.key,
                request,
                fqdn,
                &[],
                now,
                host_days(ca, self.config.host_days, now),
            )
            .map_err(|e| e.to_string())?;
            Ok(format!("{}{}", pki::pem_certificate(&cert), pki::pem_certificate(&ca.cert)))
        };
        let mut ops = Vec::new();
        if let Some(token) = token {
            let hash = *blake3::hash(token.trim().as_bytes()).as_bytes();
            let Some(t) = self.tokens.get(&hash).cloned() else {
                return refuse(&self.metrics, "unknown enrollment token".into());
            };
            if t.expires <= now || t.uses == 0 {
                return refuse(&self.metrics, "the enrollment token has expired or is used up".into());
            }
            let chain = match issue(ca) {
                Ok(c) => c,
                Err(e) => return refuse(&self.metrics, format!("cannot issue: {e}")),
            };
            let left = TokenRecord { expires: t.expires, uses: t.uses - 1 };
            self.tokens.insert(hash, left.clone());
            ops.push(Op::Token { hash, record: Some(left) });
            self.metrics.enrollments.get_or_create(&label("result", "issued")).inc();
            tracing::info!(uuid, fqdn, "host enrolled with a token");
            return (CentralResponse::Enrolled { chain_pem: chain }, ops);
        }
        // No token: wait for approval (the same request is asked again until then).
        match self.pending.get(uuid) {
            Some(p) if p.request == request => {
                if let Some(chain) = p.issued.clone() {
                    self.pending.remove(uuid);
                    ops.push(Op::Pending { uuid: uuid.to_string(), record: None });
                    self.metrics.enrollments.get_or_create(&label("result", "issued")).inc();
                    return (CentralResponse::Enrolled { chain_pem: chain }, ops);
                }
            }
            _ => {
                let record =
                    PendingRecord { fqdn: fqdn.to_string(), request: request.to_vec(), since: now, issued: None };
                self.pending.insert(uuid.to_string(), record.clone());
                ops.push(Op::Pending { uuid: uuid.to_string(), record: Some(record) });
                self.metrics.enrollments.get_or_create(&label("result", "pending")).inc();
                tracing::info!(uuid, fqdn, "host waits for approval (outpost console host approve)");
            }
        }
        (CentralResponse::EnrollPending, ops)
    }

    fn approve(&mut self, name: &str) -> (CentralResponse, Vec<Op>) {
        let found = self
            .pending
            .iter()
            .find(|(u, p)| u.eq_ignore_ascii_case(name) || p.fqdn.eq_ignore_ascii_case(name))
            .map(|(u, p)| (u.clone(), p.clone()));
        let Some((uuid, mut p)) = found else {
            return (error(ErrorCode::NotFound, format!("no host {name} is waiting for approval")), vec![]);
        };
        let Some(ca) = &self.config.enrollment else {
            return (error(ErrorCode::Unavailable, "enrollment is turned off on this server"), vec![]);
        };
        match pki::issue_host_from_request(
            &ca.cert,
            &ca.key,
            &p.request,
            &p.fqdn,
            &[],
            unix_now(),
            host_days(ca, self.config.host_days, unix_now()),
        ) {
            Ok(cert) => {
                p.issued = Some(format!("{}{}", pki::pem_certificate(&cert), pki::pem_certificate(&ca.cert)));
                self.pending.insert(uuid.clone(), p.clone());
                (
                    CentralResponse::Done(format!(
                        "approved {} ({uuid}); it gets its certificate when it asks again",
                        p.fqdn
                    )),
                    vec![Op::Pending { uuid, record: Some(p) }],
                )
            }
            Err(e) => (error(ErrorCode::Internal, format!("cannot issue: {e}")), vec![]),
        }
    }

    fn revoke(&mut self, name: &str) -> (CentralResponse, Vec<Op>) {
        let Some(row) = self.fleet.get(name) else {
            return (error(ErrorCode::NotFound, format!("no host {name} has reported to this server")), vec![]);
        };
        let (uuid, fp) = (row.summary.uuid.clone(), row.fingerprint.clone());
        self.revoked.write().expect("not poisoned").insert(fp.clone());
        self.revoked_hosts.insert(fp.clone(), uuid.clone());
        self.fleet.set_revoked(&uuid, true);
        self.agents.remove(&fp);
        if let Some(hook) = &self.on_revoke {
            hook(vec![fp.clone()]);
        }
        tracing::warn!(uuid, fingerprint = fp, "host certificate revoked");
        (
            CentralResponse::Done(format!("revoked the certificate of {name} ({fp}); it is refused from now on")),
            vec![Op::Revoked { fingerprint: fp, uuid, at: unix_now() }],
        )
    }

    fn act(&mut self, signed: &Signed) -> (CentralResponse, Vec<Op>) {
        let now = unix_now();
        let (action, info) = match Action::verify(signed, &self.config.trust, now) {
            Ok(v) => v,
            Err(e) => {
                self.metrics.action_refusals.get_or_create(&label("reason", e.reason())).inc();
                return (error(ErrorCode::Forbidden, format!("action refused: {e}")), vec![]);
            }
        };
        if self.actions.contains_key(&action.nonce) {
            self.metrics.action_refusals.get_or_create(&label("reason", "replay")).inc();
            return (error(ErrorCode::Forbidden, "action refused: this action was already relayed (replay)"), vec![]);
        }
        let targets: Vec<String> = self
            .fleet
            .rows()
            .filter(|r| action.targets.includes(&r.summary.uuid, &r.summary.fqdn, &r.summary.ou))
            .map(|r| r.fingerprint.clone())
            .collect();
        let mut online = 0u32;
        for fp in &targets {
            if let Some(a) = self.agents.get(fp)
                && a.tx.send(signed.clone()).is_ok()
            {
                online += 1;
                self.delivered.insert((action.nonce, fp.clone()));
                self.metrics.actions_sent.inc();
            }
        }
        let record =
            ActionRecord { signed: signed.clone(), issuer: info.subject.clone(), relayed: now, results: vec![] };
        let id = hex(&action.nonce);
        tracing::info!(
            id,
            kind = action.kind.name(),
            targets = targets.len(),
            online,
            issuer = info.subject,
            "action relayed"
        );
        let op = Op::Action { nonce: action.nonce, record: record.clone() };
        self.actions.insert(action.nonce, ActionState { action, record });
        (
            CentralResponse::ActionQueued { id, targets: u32::try_from(targets.len()).unwrap_or(u32::MAX), online },
            vec![op],
        )
    }

    fn action_result(&mut self, uuid: &str, nonce: [u8; 16], ok: bool, message: String) -> Vec<Op> {
        let Some(state) = self.actions.get_mut(&nonce) else { return vec![] };
        if state.record.results.iter().any(|(h, ..)| h == uuid) {
            return vec![];
        }
        let latency = (unix_now_f64() - state.record.relayed as f64).max(0.0);
        state.record.results.push((uuid.to_string(), ok, message, latency));
        self.metrics.action_results.get_or_create(&label("result", if ok { "ok" } else { "failed" })).inc();
        self.metrics.action_latency.observe(latency);
        vec![Op::Action { nonce, record: state.record.clone() }]
    }

    /// Sends a connected agent the unexpired actions for its host it has not been sent yet.
    fn deliver(&mut self, fingerprint: &str) {
        let now = unix_now();
        let Some(agent) = self.agents.get(fingerprint) else { return };
        let Some(row) = self.fleet.get(&agent.subject) else { return };
        let uuid = row.summary.uuid.clone();
        let mut sent = Vec::new();
        for s in self.actions.values() {
            if s.action.expires > now
                && s.action.targets.includes(&row.summary.uuid, &row.summary.fqdn, &row.summary.ou)
                && !s.record.results.iter().any(|(h, ..)| *h == uuid)
                && !self.delivered.contains(&(s.action.nonce, fingerprint.to_string()))
                && agent.tx.send(s.record.signed.clone()).is_ok()
            {
                sent.push(s.action.nonce);
            }
        }
        for n in sent {
            self.metrics.actions_sent.inc();
            self.delivered.insert((n, fingerprint.to_string()));
        }
    }

    fn action_lines(&self) -> Vec<ActionLine> {
        self.actions
            .values()
            .map(|s| {
                let answered: HashSet<&str> = s.record.results.iter().map(|(h, ..)| h.as_str()).collect();
                let pending = self
                    .fleet
                    .rows()
                    .filter(|r| s.action.targets.includes(&r.summary.uuid, &r.summary.fqdn, &r.summary.ou))
                    .filter(|r| !answered.contains(r.summary.uuid.as_str()))
                    .map(|r| r.summary.fqdn.clone())
                    .collect();
                let packages = match &s.action.kind {
                    outpost_protocol::central::ActionKind::Install(p)
                    | outpost_protocol::central::ActionKind::Remove(p) => p.clone(),
                    _ => vec![],
                };
                let name =
                    |uuid: &str| self.fleet.get(uuid).map_or_else(|| uuid.to_string(), |r| r.summary.fqdn.clone());
                ActionLine {
                    id: hex(&s.action.nonce),
                    kind: s.action.kind.name().into(),
                    packages,
                    issuer: s.record.issuer.clone(),
                    targets: s.action.targets.describe(),
                    expires: s.action.expires,
                    results: s.record.results.iter().map(|(h, ok, m, l)| (name(h), *ok, m.clone(), *l)).collect(),
                    pending,
                }
            })
            .collect()
    }

    fn host_detail(&self, name: &str) -> Result<HostDetail, CentralResponse> {
        let Some(row) = self.fleet.get(name) else {
            return Err(error(ErrorCode::NotFound, format!("no host {name}")));
        };
        let inventory = self.store.inventory(&row.summary.uuid).map_err(|e| error(ErrorCode::Internal, e))?;
        let mut summary = row.summary.clone();
        summary.online = self.agents.contains_key(&row.fingerprint);
        let actions = self
            .actions
            .values()
            .flat_map(|s| {
                s.record
                    .results
                    .iter()
                    .filter(|(h, ..)| *h == summary.uuid)
                    .map(|(_, ok, m, _)| (hex(&s.action.nonce), s.action.kind.name().to_string(), *ok, m.clone()))
            })
            .collect();
        Ok(HostDetail { summary, inventory, actions })
    }

    fn settings_for(&self, peer: &Peer) -> Option<Signed> {
        let row = self.fleet.get(&peer.info.subject);
        let (uuid, fqdn, ou) = row.map_or_else(
            || (peer.info.subject.clone(), peer.info.subject.clone(), String::new()),
            |r| (r.summary.uuid.clone(), r.summary.fqdn.clone(), r.summary.ou.clone()),
        );
        self.settings.values().rev().find(|(d, _)| d.targets.includes(&uuid, &fqdn, &ou)).map(|(_, s)| s.clone())
    }

    fn set_settings(&mut self, signed: Signed) -> (CentralResponse, Vec<Op>) {
        match AgentSettingsDoc::verify(&signed, &self.config.trust, unix_now()) {
            Ok((doc, info)) => {
                if self.settings.keys().next_back().is_some_and(|last| *last >= doc.sequence) {
                    return (
                        error(ErrorCode::Refused, "settings refused: their sequence is not newer than the last ones"),
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
}

/// The lifetime of a host certificate: as configured, but never beyond the enrollment CA's.
fn host_days(ca: &EnrollmentCa, wanted: u32, now: i64) -> u32 {
    let left = pki::cert_info(&ca.cert).map(|i| (i.not_after - now) / 86_400 - 1).unwrap_or(1);
    wanted.min(u32::try_from(left.max(1)).unwrap_or(1))
}

fn unix_now_f64() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

fn error(code: ErrorCode, message: impl Into<String>) -> CentralResponse {
    CentralResponse::Error { code, message: message.into() }
}

impl Actor for Central {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.refresh_gauges();
        ctx.run_interval(std::time::Duration::from_secs(1), |act, _| act.refresh_gauges());
        ctx.run_interval(std::time::Duration::from_secs(60), |act, _| act.prune());
    }
}

/// A request from a connection, already authorised by the connection (role and rights) and,
/// for reports, with the signature checked.
#[derive(Debug, Message)]
#[rtype(result = "CentralResponse")]
pub struct Handle {
    /// Who asks (`None` on the enrollment protocol).
    pub peer: Option<Peer>,
    /// The request (reports come as [`HandleReport`]).
    pub request: CentralRequest,
}

/// A verified report.
#[derive(Debug, Message)]
#[rtype(result = "CentralResponse")]
pub struct HandleReport {
    /// The reporting host.
    pub peer: Peer,
    /// The report (signature checked with the peer's key).
    pub report: Report,
}

/// An agent's action stream opened: queued actions are sent now.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct Listen {
    /// The host.
    pub peer: Peer,
    /// Its connection.
    pub conn: u64,
    /// Where actions go.
    pub tx: mpsc::UnboundedSender<Signed>,
}

/// An agent's action stream closed.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Gone {
    /// The host certificate's fingerprint.
    pub fingerprint: String,
    /// Its connection.
    pub conn: u64,
}

impl Central {
    fn durable(&self, response: CentralResponse, ops: Vec<Op>) -> ResponseFuture<CentralResponse> {
        if ops.is_empty() {
            return Box::pin(async move { response });
        }
        let done = self.store.write(ops);
        Box::pin(async move {
            match done.await {
                Ok(Ok(())) => response,
                Ok(Err(e)) => error(ErrorCode::Internal, format!("central database: {e}")),
                Err(_) => error(ErrorCode::Internal, "central database writer stopped"),
            }
        })
    }
}

impl Handler<HandleReport> for Central {
    type Result = ResponseActFuture<Self, CentralResponse>;

    fn handle(&mut self, msg: HandleReport, _: &mut Self::Context) -> Self::Result {
        match self.apply_report(&msg.peer, msg.report) {
            Ok((applied, ops)) => {
                let done = self.store.write(ops);
                Box::pin(done.into_actor(self).map(move |written, act, _| match written {
                    Ok(Ok(())) => {
                        act.applied(&applied);
                        CentralResponse::ReportApplied { sequence: applied.sequence }
                    }
                    failed => {
                        let key = applied.uuid.to_lowercase();
                        if act.inflight.get(&key) == Some(&applied.sequence) {
                            act.inflight.remove(&key);
                        }
                        let why =
                            failed.map_or_else(|_| "the writer stopped".to_string(), |r| r.err().unwrap_or_default());
                        error(ErrorCode::Internal, format!("central database: {why}"))
                    }
                }))
            }
            Err(response) => Box::pin(actix::fut::ready(response)),
        }
    }
}

impl Handler<Listen> for Central {
    type Result = Result<(), String>;

    fn handle(&mut self, msg: Listen, _: &mut Self::Context) -> Self::Result {
        let fp = msg.peer.info.fingerprint.clone();
        if self.is_revoked(&fp) {
            return Err("this host's certificate is revoked".into());
        }
        self.delivered.retain(|(_, f)| *f != fp);
        self.agents.insert(fp.clone(), Agent { conn: msg.conn, subject: msg.peer.info.subject.clone(), tx: msg.tx });
        self.deliver(&fp);
        self.metrics.connected.set(i64::try_from(self.agents.len()).unwrap_or(i64::MAX));
        Ok(())
    }
}

impl Handler<Gone> for Central {
    type Result = ();

    fn handle(&mut self, msg: Gone, _: &mut Self::Context) {
        if self.agents.get(&msg.fingerprint).is_some_and(|a| a.conn == msg.conn) {
            self.agents.remove(&msg.fingerprint);
        }
        self.metrics.connected.set(i64::try_from(self.agents.len()).unwrap_or(i64::MAX));
    }
}

impl Handler<Handle> for Central {
    type Result = ResponseFuture<CentralResponse>;

    fn handle(&mut self, msg: Handle, _: &mut Self::Context) -> Self::Result {
        let (response, ops) = match (msg.request, &msg.peer) {
            (CentralRequest::Enroll { request, token, uuid, fqdn }, _) => {
                self.enroll(&request, token.as_deref(), &uuid, &fqdn)
            }
            (CentralRequest::ActionResult { nonce, ok, message }, Some(peer)) => {
                let uuid = self
                    .fleet
                    .get(&peer.info.subject)
                    .map_or_else(|| peer.info.subject.clone(), |r| r.summary.uuid.clone());
                let ops = self.action_result(&uuid, nonce, ok, message);
                (CentralResponse::Done("recorded".into()), ops)
            }
            (CentralRequest::Settings, Some(peer)) => (CentralResponse::Settings(self.settings_for(peer)), vec![]),
            (CentralRequest::Hosts(q), _) => {
                let agents = &self.agents;
                let (total, hosts) = self.fleet.query(&q, &|fp| agents.contains_key(fp));
                (CentralResponse::Hosts { total, hosts }, vec![])
            }
            (CentralRequest::Host(name), _) => match self.host_detail(&name) {
                Ok(d) => (CentralResponse::Host(Box::new(d)), vec![]),
                Err(e) => (e, vec![]),
            },
            (CentralRequest::Packages, _) => (CentralResponse::Packages(self.fleet.packages()), vec![]),
            (CentralRequest::Actions, _) => (CentralResponse::Actions(self.action_lines()), vec![]),
            (CentralRequest::TokenCreate { uses, valid_secs }, _) => self.token(uses, valid_secs),
            (CentralRequest::Pending, _) => (
                CentralResponse::PendingHosts(
                    self.pending
                        .iter()
                        .filter(|(_, p)| p.issued.is_none())
                        .map(|(u, p)| (u.clone(), p.fqdn.clone(), p.since))
                        .collect(),
                ),
                vec![],
            ),
            (CentralRequest::Approve(name), _) => self.approve(&name),
            (CentralRequest::Revoke(name), _) => self.revoke(&name),
            (CentralRequest::Act(signed), _) => self.act(&signed),
            (CentralRequest::SetSettings(signed), _) => self.set_settings(signed),
            (other, _) => (error(ErrorCode::BadRequest, format!("unexpected request {other:?}")), vec![]),
        };
        self.durable(response, ops)
    }
}
