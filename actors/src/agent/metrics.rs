//! The agent's metrics (`outpost_agent_…`), served by the daemon on its `/metrics` address:
//! the snapshot it holds and when it expires, the host's status, its packages by status, and
//! the last update.

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use outpost_protocol::resolver::{HostStatus, PackageStatus};

use super::core::StatusReport;
use crate::metrics::{Labels, label};

/// The agent's metrics.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// Sequence of the snapshot held.
    pub snapshot_sequence: Gauge,
    /// When the snapshot held expires (Unix seconds).
    pub snapshot_expiry: Gauge,
    /// 1 while the snapshot held has expired (nothing new is installed from it).
    pub snapshot_expired: Gauge,
    /// 1 for the host's current status.
    pub host_status: Family<Labels, Gauge>,
    /// Packages by status.
    pub packages: Family<Labels, Gauge>,
    /// When the last update ran (Unix seconds).
    pub last_update: Gauge,
    /// 1 when the last update worked.
    pub last_update_ok: Gauge,
    /// Bytes of packages fetched from each repository since the state was made.
    pub fetched_bytes: Family<Labels, Gauge<u64, AtomicU64>>,
}

impl AgentMetrics {
    /// Registers every metric under `outpost_agent_…`.
    pub fn register(&self, registry: &mut Registry) {
        // A series for every status (0 when not the current one).
        for s in HostStatus::ALL {
            let _ = self.host_status.get_or_create(&label("status", s.as_str()));
        }
        for s in PackageStatus::ALL {
            let _ = self.packages.get_or_create(&label("status", s.as_str()));
        }
        let r = registry.sub_registry_with_prefix("outpost_agent");
        r.register("snapshot_sequence", "Sequence of the snapshot held", self.snapshot_sequence.clone());
        r.register(
            "snapshot_expiry_timestamp_seconds",
            "When the snapshot held expires (Unix time)",
            self.snapshot_expiry.clone(),
        );
        r.register(
            "snapshot_expired",
            "1 while the snapshot held has expired: nothing new is installed until a repository serves a fresh one",
            self.snapshot_expired.clone(),
        );
        r.register("host_status", "1 for the host's current status", self.host_status.clone());
        r.register("packages", "Packages by status", self.packages.clone());
        r.register("last_update_timestamp_seconds", "When the last update ran (Unix time)", self.last_update.clone());
        r.register("last_update_success", "1 when the last update worked", self.last_update_ok.clone());
        r.register(
            "fetched_bytes",
            "Bytes of packages fetched from each repository since the state was made",
            self.fetched_bytes.clone(),
        );
    }

    /// Sets every metric from a status report.
    pub fn observe(&self, status: &StatusReport) {
        let snapshot = status.snapshot.as_ref();
        self.snapshot_sequence.set(snapshot.map_or(0, |s| i64::try_from(s.sequence).unwrap_or(i64::MAX)));
        self.snapshot_expiry.set(snapshot.map_or(0, |s| s.expires));
        self.snapshot_expired.set(i64::from(snapshot.is_some_and(|s| s.expired)));
        for s in HostStatus::ALL {
            self.host_status.get_or_create(&label("status", s.as_str())).set(i64::from(status.host_status == s));
        }
        for s in PackageStatus::ALL {
            let n = status.packages.iter().filter(|p| p.status == s).count();
            self.packages.get_or_create(&label("status", s.as_str())).set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(u) = &status.last_update {
            self.last_update.set(u.at);
            self.last_update_ok.set(i64::from(u.ok));
        }
        for (repo, n) in &status.bytes_by_repo {
            self.fetched_bytes.get_or_create(&label("repo", repo)).set(*n);
        }
    }
}
