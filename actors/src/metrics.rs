//! Repository metrics (Prometheus names, units and `_total` for counters). A node registers
//! them in its registry and serves them on `/metrics`.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels: a list of name/value pairs.
pub type Labels = Vec<(String, String)>;

/// Metrics of a main or edge repository.
#[derive(Debug)]
pub struct RepoMetrics {
    /// Sequence number of the snapshot served.
    pub snapshot_sequence: Gauge,
    /// When the snapshot served expires (Unix seconds).
    pub snapshot_expiry: Gauge,
    /// Snapshots behind the upstream (edges).
    pub lag_snapshots: Gauge,
    /// Seconds between the upstream's snapshot and the one served (edges).
    pub lag_seconds: Gauge<f64, AtomicU64>,
    /// Bytes sent to each peer.
    pub sent_bytes: Family<Labels, Counter>,
    /// Bytes received from each peer (upstreams, publishers).
    pub received_bytes: Family<Labels, Counter>,
    /// Chunks fetched from upstream.
    pub chunks_fetched: Counter,
    /// Chunks a sync needed that were already stored.
    pub chunks_deduplicated: Counter,
    /// Bytes new files borrow from the files held instead of holding a copy.
    pub borrowed_bytes: Counter,
    /// Byte ranges served to clients.
    pub ranges_served: Counter,
    /// Byte ranges served from memory: read for another client asking for the same bytes.
    pub ranges_shared: Counter,
    /// Byte ranges relayed from a file still being fetched from upstream.
    pub ranges_relayed: Counter,
    /// Files found damaged on disk (removed, fetched again).
    pub damaged_blobs: Counter,
    /// Duration of successful syncs.
    pub sync_duration: Histogram,
    /// Syncs by result (`ok`, `failed`).
    pub syncs: Family<Labels, Counter>,
    /// Refused snapshots, packages and connections, by reason.
    pub refusals: Family<Labels, Counter>,
    /// Publishes and unpublishes by result.
    pub publishes: Family<Labels, Counter>,
    /// Files stored.
    pub blobs: Gauge,
    /// Bytes of files stored.
    pub blob_bytes: Gauge,
    /// Connected subscribers (edges and agents waiting for heads).
    pub subscribers: Gauge,
    /// Connection attempts not served at once, by result (`retried`: asked to prove their
    /// address; `refused`: over the limits).
    pub handshakes: Family<Labels, Counter>,
    /// Bytes sent to every peer together (the status answer's figure; not exported: it is
    /// the sum of `sent_bytes`).
    pub served_bytes: Counter,
    /// Requests answered, by kind (`head`, `snapshot`, `package`, `range`, …).
    pub requests: Family<Labels, Counter>,
    /// UDP datagrams sent to each peer, counted when a client's connection ends.
    pub datagrams: Family<Labels, Counter>,
    /// Bytes of those datagrams (QUIC's headers, acknowledgements and probes included).
    pub datagram_bytes: Family<Labels, Counter>,
    /// Head checks over UDP, by result ([`crate::repo::check::RESULTS`]).
    pub head_checks: Family<Labels, Counter>,
}

impl Default for RepoMetrics {
    fn default() -> Self {
        Self {
            snapshot_sequence: Gauge::default(),
            snapshot_expiry: Gauge::default(),
            lag_snapshots: Gauge::default(),
            lag_seconds: Gauge::default(),
            sent_bytes: Family::default(),
            received_bytes: Family::default(),
            chunks_fetched: Counter::default(),
            chunks_deduplicated: Counter::default(),
            borrowed_bytes: Counter::default(),
            ranges_served: Counter::default(),
            ranges_shared: Counter::default(),
            ranges_relayed: Counter::default(),
            damaged_blobs: Counter::default(),
            sync_duration: Histogram::new(exponential_buckets(0.01, 2.0, 16)),
            syncs: Family::default(),
            refusals: Family::default(),
            publishes: Family::default(),
            blobs: Gauge::default(),
            blob_bytes: Gauge::default(),
            served_bytes: Counter::default(),
            subscribers: Gauge::default(),
            handshakes: Family::default(),
            requests: Family::default(),
            datagrams: Family::default(),
            datagram_bytes: Family::default(),
            head_checks: Family::default(),
        }
    }
}

/// One label.
pub fn label(name: &str, value: &str) -> Labels {
    vec![(name.to_string(), value.to_string())]
}

impl RepoMetrics {
    /// Registers every metric under `outpost_repo_…`, with the usual series at zero.
    pub fn register(&self, registry: &mut Registry) {
        for reason in ["forged", "rollback", "expired", "package", "slow", "client_certificate", "revoked_certificate"]
        {
            let _ = self.refusals.get_or_create(&label("reason", reason));
        }
        for result in ["ok", "failed"] {
            let _ = self.syncs.get_or_create(&label("result", result));
        }
        for result in ["retried", "refused"] {
            let _ = self.handshakes.get_or_create(&label("result", result));
        }
        for result in crate::repo::check::RESULTS {
            let _ = self.head_checks.get_or_create(&label("result", result));
        }
        let r = registry.sub_registry_with_prefix("outpost_repo");
        r.register("snapshot_sequence", "Sequence number of the snapshot served", self.snapshot_sequence.clone());
        r.register(
            "snapshot_expiry_timestamp_seconds",
            "When the snapshot served expires (Unix time)",
            self.snapshot_expiry.clone(),
        );
        r.register("lag_snapshots", "Snapshots the edge is behind its upstream", self.lag_snapshots.clone());
        r.register(
            "lag_seconds",
            "Age difference between the upstream's snapshot and the one served",
            self.lag_seconds.clone(),
        );
        r.register("sent_bytes", "Bytes sent, by peer", self.sent_bytes.clone());
        r.register("received_bytes", "Bytes received, by peer", self.received_bytes.clone());
        r.register("chunks_fetched", "Chunks fetched from upstream", self.chunks_fetched.clone());
        r.register(
            "chunks_deduplicated",
            "Chunks a sync needed and found locally (in other files, or left by an interrupted sync)",
            self.chunks_deduplicated.clone(),
        );
        r.register(
            "borrowed_bytes",
            "Bytes of new files a sync left in the files held (linked, not copied or written again)",
            self.borrowed_bytes.clone(),
        );
        r.register("ranges_served", "Byte ranges of files served to clients", self.ranges_served.clone());
        r.register(
            "ranges_shared",
            "Byte ranges served from memory, read once for the clients asking for the same bytes",
            self.ranges_shared.clone(),
        );
        r.register(
            "ranges_relayed",
            "Byte ranges served from a file still being fetched from upstream, as soon as they landed",
            self.ranges_relayed.clone(),
        );
        r.register("damaged_blobs", "Files found damaged on disk", self.damaged_blobs.clone());
        r.register("sync_duration_seconds", "Duration of successful syncs", self.sync_duration.clone());
        r.register("syncs", "Syncs, by result", self.syncs.clone());
        r.register("refusals", "Refused snapshots, packages, publishes and clients, by reason", self.refusals.clone());
        r.register("publishes", "Publishes and unpublishes, by operation and result", self.publishes.clone());
        r.register("blobs", "Files stored", self.blobs.clone());
        r.register("blob_bytes", "Bytes of files stored", self.blob_bytes.clone());
        r.register("subscribers", "Clients subscribed to head changes", self.subscribers.clone());
        r.register("requests", "Requests from clients, by kind", self.requests.clone());
        r.register(
            "sent_datagrams",
            "UDP datagrams sent to clients, by peer, counted when a connection ends (bytes / datagrams: the packet size QUIC reached toward them)",
            self.datagrams.clone(),
        );
        r.register(
            "sent_datagram_bytes",
            "Bytes of the UDP datagrams sent to clients, by peer, counted when a connection ends",
            self.datagram_bytes.clone(),
        );
        r.register(
            "head_checks",
            "Head checks over UDP (one datagram each way, for agents holding a ticket), by result",
            self.head_checks.clone(),
        );
        r.register(
            "handshakes",
            "Connection attempts not served at once, by result (retried: asked to prove their address; refused: over the limits)",
            self.handshakes.clone(),
        );
    }

    /// Counts a refusal.
    pub fn refused(&self, reason: &str) {
        self.refusals.get_or_create(&label("reason", reason)).inc();
    }
}
