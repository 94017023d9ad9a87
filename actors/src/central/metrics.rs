//! Central's metrics (`outpost_central_…`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::metrics::{Labels, label};

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
    /// Hosts whose certificate clashes with another's (same UUID or name), or is used by two
    /// machines at once.
    pub identity_clashes: Gauge,
    /// Folds of the journal into the tables that failed (redb; each tried again).
    pub fold_failures: Counter,
    /// Journal segments found damaged before their end at the start (redb).
    pub damaged_segments: Counter,
    /// Reports durable in the journal and not yet folded into the tables (redb).
    pub unfolded: Gauge,
    /// Batches of report signatures that did not verify and were checked again one by one.
    pub batches_redone: Counter,
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
            identity_clashes: Gauge::default(),
            unfolded: Gauge::default(),
            fold_failures: Counter::default(),
            damaged_segments: Counter::default(),
            batches_redone: Counter::default(),
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
        r.register(
            "report_batches_redone",
            "Batches of report signatures that did not verify and were checked again one by one (a forged report in them)",
            self.batches_redone.clone(),
        );
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
            "identity_clashes",
            "Hosts whose certificate clashes with another's (same UUID or name: a cloned machine, a second enrollment) or is used by two machines at once",
            self.identity_clashes.clone(),
        );
        r.register(
            "journal_reports",
            "Reports durable in central's journal and not yet folded into its tables (redb; folded every second or 16,384 reports: a figure that keeps growing means folds fail, see the log)",
            self.unfolded.clone(),
        );
        r.register(
            "journal_fold_failures",
            "Folds of central's journal into its tables that failed (redb; each tried again a second later, the reports kept in the journal meanwhile: see the log)",
            self.fold_failures.clone(),
        );
        r.register(
            "journal_damaged_segments",
            "Journal segments central found damaged before their end at its start (redb; the reports after the damage were lost and their hosts asked for full reports: check the disk)",
            self.damaged_segments.clone(),
        );
        r.register(
            "hosts_snapshot_expired",
            "Hosts whose snapshot had expired at their last report (they install nothing new)",
            self.snapshot_expired.clone(),
        );
    }

    pub(crate) fn rejected(&self, reason: &str) {
        self.reports.get_or_create(&label("result", "rejected")).inc();
        self.rejections.get_or_create(&label("reason", reason)).inc();
    }
}

/// Central's database metrics on PostgreSQL (`outpost_central_db_…`).
#[derive(Debug)]
pub struct DbMetrics {
    /// Connections of this instance's pool by state (in_use, idle).
    pub connections: Family<Labels, Gauge>,
    /// The pool's most connections.
    pub pool_max: Gauge,
    /// Requests waiting for a connection.
    pub waiting: Gauge,
    /// Seconds per database operation, by kind (write: a group commit; load; console: a console
    /// query; report).
    pub latency: Family<Labels, Histogram, fn() -> Histogram>,
    /// Failed database operations by kind.
    pub errors: Family<Labels, Counter>,
    /// Seconds the reporting replica is behind (0 without one, or when it has replayed all it received).
    pub replica_lag: Gauge<f64, std::sync::atomic::AtomicU64>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for DbMetrics {
    fn default() -> Self {
        Self {
            connections: Family::default(),
            pool_max: Gauge::default(),
            waiting: Gauge::default(),
            latency: Family::new_with_constructor(latency_histogram),
            errors: Family::default(),
            replica_lag: Gauge::default(),
        }
    }
}

impl DbMetrics {
    /// Registers every metric under `outpost_central_db_…`.
    pub fn register(&self, registry: &mut Registry) {
        for state in ["in_use", "idle"] {
            let _ = self.connections.get_or_create(&label("state", state));
        }
        for kind in ["write", "load", "report"] {
            let _ = self.latency.get_or_create(&label("kind", kind));
            let _ = self.errors.get_or_create(&label("kind", kind));
        }
        let r = registry.sub_registry_with_prefix("outpost_central_db");
        r.register("connections", "Database connections of this instance by state", self.connections.clone());
        r.register("pool_max_connections", "Most database connections this instance opens", self.pool_max.clone());
        r.register("pool_waiting", "Requests waiting for a database connection", self.waiting.clone());
        r.register("operation_seconds", "Seconds per database operation by kind", self.latency.clone());
        r.register("errors", "Failed database operations by kind", self.errors.clone());
        r.register(
            "replica_lag_seconds",
            "Seconds the reporting replica is behind the database (0 when it has replayed all it received)",
            self.replica_lag.clone(),
        );
    }

    /// Times `f` as an operation of `kind`, counting its failure.
    pub async fn time<T, E>(&self, kind: &str, f: impl std::future::Future<Output = Result<T, E>>) -> Result<T, E> {
        let start = std::time::Instant::now();
        let out = f.await;
        self.latency.get_or_create(&label("kind", kind)).observe(start.elapsed().as_secs_f64());
        if out.is_err() {
            self.errors.get_or_create(&label("kind", kind)).inc();
        }
        out
    }
}
