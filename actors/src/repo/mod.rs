//! Repositories: the main repository publishes signed snapshots ([`publisher`]); edges
//! replicate them from an ordered list of upstreams ([`replicator`], [`sync`], and the pure
//! choice of upstream in [`upstreams`]); both serve
//! clients over QUIC ([`server`]) and answer head checks on the same port ([`check`]);
//! [`client`] is the client side (status, pull, publish).
//!
//! State lives in actors (the [`publisher::Publisher`] and [`replicator::Replicator`]); the
//! tasks that serve clients read the store directly (blobs are immutable, redb takes
//! concurrent readers) and learn the current head from a `watch` channel the actor updates.

pub mod check;
pub mod checked;
pub mod client;
pub mod publisher;
pub mod replicator;
pub mod server;
pub mod sync;
pub mod upstreams;

use std::sync::{Arc, Mutex};

use outpost_protocol::pki::TrustStore;
use outpost_protocol::snapshot::Head;
use quinn::Connection;
use tokio::sync::watch;

use crate::metrics::RepoMetrics;
use crate::store::Store;

/// How an edge fills its store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fill {
    /// Fetch every chunk of a new snapshot before serving it.
    Immediate,
    /// Fetch metadata at once and each chunk the first time a client asks for it.
    OnDemand,
}

impl Fill {
    /// The name used in configuration and status.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Immediate => "immediate",
            Self::OnDemand => "on-demand",
        }
    }
}

/// What an edge knows of its upstream, shared with the serving tasks.
#[derive(Debug, Default)]
pub struct UpstreamState {
    /// The upstream in use and the connection to it.
    pub connection: Option<(String, Connection)>,
    /// The upstream's head as last seen.
    pub head: Option<Head>,
    /// The last sync or connection error.
    pub last_error: Option<String>,
    /// A newer snapshot waits for the next sync window.
    pub waiting_for_window: bool,
    /// When the last sync succeeded (Unix seconds).
    pub last_sync: Option<i64>,
}

/// When an edge may sync: its windows and the time zone they are written in.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Sync windows (empty: always).
    pub windows: Vec<outpost_protocol::schedule::SyncWindow>,
    /// Their time zone.
    pub zone: crate::zone::Zone,
}

impl Schedule {
    /// Whether syncing is allowed at `unix`.
    pub fn allowed(&self, unix: i64) -> bool {
        outpost_protocol::schedule::allowed_at(&self.windows, unix, &|t| self.zone.offset_minutes(t))
    }

    /// When the windows next open or close after `unix`.
    pub fn next_change(&self, unix: i64) -> Option<i64> {
        outpost_protocol::schedule::next_change(&self.windows, unix, &|t| self.zone.offset_minutes(t))
    }
}

/// The role-specific part of a repository.
#[derive(Debug, Clone)]
pub enum Role {
    /// The main repository: publishes.
    Main {
        /// The publisher actor.
        publisher: actix::Addr<publisher::Publisher>,
    },
    /// An edge: replicates.
    Edge {
        /// How it fills its store.
        fill: Fill,
        /// Its upstream.
        upstream: Arc<Mutex<UpstreamState>>,
        /// What fetching from upstream needs.
        sync: sync::SyncContext,
        /// Files being fetched for clients.
        fetching: Arc<sync::Fetching>,
        /// When it may sync.
        schedule: Arc<Schedule>,
    },
}

/// What every serving task shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The repository's name.
    pub name: String,
    /// The content store.
    pub store: Arc<Store>,
    /// The organisation CA.
    pub trust: TrustStore,
    /// The head being served (`None` until the first snapshot).
    pub head: watch::Receiver<Option<Head>>,
    /// Metrics.
    pub metrics: Arc<RepoMetrics>,
    /// Main or edge.
    pub role: Role,
    /// Fingerprints of revoked host certificates (from central, when it runs in the same
    /// process): their connections are refused.
    pub revoked: crate::central::Revoked,
    /// The keys of the head check's tickets.
    pub tickets: Arc<check::Tickets>,
}
