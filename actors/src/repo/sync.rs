//! One sync of an edge from its upstream: fetch the snapshot, verify it (chain, never older,
//! not expired), fetch the package records and recipes it needs, then (immediate fill) the
//! missing chunks with bounded concurrency, verifying every chunk as it arrives and every new
//! file against its signed hash, and only then make the snapshot current. A sync that fails
//! changes nothing that is served; the chunks it stored are kept, so the next one resumes.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost_protocol::chunking::{Chunk, MAX_CHUNK, Recipe};
use outpost_protocol::package::PackageRecord;
use outpost_protocol::package::manifest::hex;
use outpost_protocol::pki::TrustStore;
use outpost_protocol::schedule::TokenBucket;
use outpost_protocol::snapshot::{Head, MAX_SNAPSHOT_BYTES, SignedSnapshot, SnapshotError};
use outpost_protocol::wire::Request;
use quinn::Connection;
use tokio::task::JoinSet;

use super::{Fill, Shared};
use crate::metrics::{RepoMetrics, label};
use crate::store::{Store, StoreError};
use crate::transport::{self, TransportError};

/// A bandwidth cap shared by every transfer of an edge.
#[derive(Debug)]
pub struct Limiter {
    bucket: Mutex<TokenBucket>,
    start: Instant,
}

impl Limiter {
    /// A cap of `rate` bytes per second.
    pub fn new(rate: u64) -> Self {
        Self { bucket: Mutex::new(TokenBucket::new(rate, Duration::ZERO)), start: Instant::now() }
    }

    /// Waits until `bytes` may be received.
    pub async fn take(&self, bytes: u64) {
        let wait = self.bucket.lock().expect("not poisoned").take(bytes, self.start.elapsed());
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

/// What a sync needs.
#[derive(Debug, Clone)]
pub struct SyncContext {
    /// The store.
    pub store: Arc<Store>,
    /// The organisation CA.
    pub trust: TrustStore,
    /// Metrics.
    pub metrics: Arc<RepoMetrics>,
    /// Immediate or on-demand.
    pub fill: Fill,
    /// Chunk requests in flight.
    pub concurrency: usize,
    /// Bandwidth cap.
    pub limiter: Option<Arc<Limiter>>,
}

/// What a sync did.
#[derive(Debug, Clone)]
pub struct SyncOutcome {
    /// The head now served.
    pub head: Head,
    /// Chunks fetched.
    pub fetched: u64,
    /// Chunks needed and already present.
    pub deduplicated: u64,
    /// Bytes received.
    pub bytes: u64,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The snapshot was refused.
    #[error("{0}")]
    Snapshot(#[from] SnapshotError),
    /// A package record was refused.
    #[error("package {manifest}: {reason}")]
    Package { manifest: String, reason: String },
    /// Content that does not match.
    #[error("{0}")]
    Content(String),
    /// The network.
    #[error("{0}")]
    Transport(#[from] TransportError),
    /// The store.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl SyncError {
    /// The refusal reason, when the upstream served something refused.
    pub fn refusal(&self) -> Option<&'static str> {
        match self {
            Self::Snapshot(e) => Some(e.reason()),
            Self::Package { .. } => Some("package"),
            Self::Content(_) => Some("content"),
            _ => None,
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Db(e.to_string()))?
}

/// Runs one sync to `head` from `connection` (to `upstream`). `held` is the snapshot served now.
pub async fn run(
    connection: &Connection,
    upstream: &str,
    head: Head,
    held: Option<(u64, [u8; 32])>,
    ctx: &SyncContext,
) -> Result<SyncOutcome, SyncError> {
    let received = |n: usize| ctx.metrics.received_bytes.get_or_create(&label("peer", upstream)).inc_by(n as u64);
    let bytes = transport::fetch(connection, &Request::Snapshot { hash: head.hash }, MAX_SNAPSHOT_BYTES as u64).await?;
    received(bytes.len());
    let signed = SignedSnapshot::decode(&bytes)?;
    let (snapshot, _) = signed.verify(&ctx.trust, super::unix_now(), held)?;
    let mut total = bytes.len() as u64;

    // Package records, verified as of the snapshot's date (the main accepted them then).
    let mut records = Vec::new();
    let mut files: HashMap<[u8; 32], u64> = HashMap::new();
    for manifest in snapshot.manifests() {
        let store = ctx.store.clone();
        let m = *manifest;
        let bytes = match blocking(move || store.record(&m)).await? {
            Some(b) => b,
            None => {
                let b = transport::fetch(
                    connection,
                    &Request::Package { manifest: m },
                    outpost_protocol::package::record::MAX_RECORD_BYTES as u64,
                )
                .await?;
                received(b.len());
                total += b.len() as u64;
                records.push((m, b.clone()));
                b
            }
        };
        let bad = |reason: String| SyncError::Package { manifest: hex(&m), reason };
        let record = PackageRecord::decode(&bytes).map_err(|e| bad(e.to_string()))?;
        if record.hash() != m {
            return Err(bad("the record does not match the snapshot's hash".into()));
        }
        let (manifest, _) = record.verify(&ctx.trust, snapshot.created).map_err(|e| bad(e.to_string()))?;
        for f in &manifest.files {
            files.insert(f.blake3, f.size);
        }
    }

    // Recipes.
    let mut recipes = Vec::new();
    let mut new_files = Vec::new();
    let mut chunks: Vec<Chunk> = Vec::new();
    for (file, size) in &files {
        let store = ctx.store.clone();
        let f = *file;
        let recipe = match blocking(move || store.recipe(&f)).await? {
            Some(b) => Recipe::decode(&b, file, *size).map_err(|e| SyncError::Content(e.to_string()))?,
            None => {
                let b = transport::fetch(
                    connection,
                    &Request::Recipe { file: *file },
                    outpost_protocol::chunking::MAX_RECIPE_BYTES as u64,
                )
                .await?;
                received(b.len());
                total += b.len() as u64;
                let r =
                    Recipe::decode(&b, file, *size).map_err(|e| SyncError::Content(format!("from {upstream}: {e}")))?;
                recipes.push((*file, b));
                new_files.push(r.clone());
                r
            }
        };
        chunks.extend(recipe.chunks);
    }

    let (mut fetched, mut deduplicated) = (0u64, 0u64);
    if ctx.fill == Fill::Immediate {
        let mut seen = HashSet::new();
        let mut missing = Vec::new();
        for c in chunks {
            if !seen.insert(c.hash) {
                continue;
            }
            if ctx.store.has_blob(&c.hash) {
                deduplicated += 1;
            } else {
                missing.push(c);
            }
        }
        ctx.metrics.chunks_deduplicated.inc_by(deduplicated);
        let mut tasks = JoinSet::new();
        let mut queue = missing.into_iter();
        loop {
            while tasks.len() < ctx.concurrency.max(1) {
                let Some(c) = queue.next() else { break };
                let (connection, ctx2, upstream) = (connection.clone(), ctx.clone(), upstream.to_string());
                tasks.spawn(async move {
                    if let Some(l) = &ctx2.limiter {
                        l.take(u64::from(c.len)).await;
                    }
                    fetch_and_store(&connection, &c.hash, &ctx2.store, &ctx2.metrics, &upstream).await.map(|b| b.len())
                });
            }
            let Some(done) = tasks.join_next().await else { break };
            let n = done.map_err(|e| SyncError::Content(e.to_string()))??;
            fetched += 1;
            total += n as u64;
        }
        // Every new file must assemble to its signed hash.
        let store = ctx.store.clone();
        blocking(move || {
            for r in &new_files {
                let mut hasher = blake3::Hasher::new();
                for c in &r.chunks {
                    let bytes = store.read_blob(&c.hash)?.ok_or_else(|| StoreError::Damaged(hex(&c.hash)))?;
                    hasher.update(&bytes);
                }
                if hasher.finalize().as_bytes() != &r.file {
                    return Err(StoreError::Mismatch(format!("file {} (its recipe is wrong)", hex(&r.file))));
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| match e {
            StoreError::Mismatch(m) => SyncError::Content(m),
            other => SyncError::Store(other),
        })?;
    }

    let store = ctx.store.clone();
    let sequence = snapshot.sequence;
    let signed2 = signed.clone();
    blocking(move || store.commit_snapshot(&records, &recipes, &signed2, sequence)).await?;
    let (blobs, bytes) = ctx.store.usage();
    ctx.metrics.blobs.set(i64::try_from(blobs).unwrap_or(i64::MAX));
    ctx.metrics.blob_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
    Ok(SyncOutcome { head: snapshot.head(&signed), fetched, deduplicated, bytes: total })
}

async fn fetch_and_store(
    connection: &Connection,
    hash: &[u8; 32],
    store: &Arc<Store>,
    metrics: &RepoMetrics,
    upstream: &str,
) -> Result<Vec<u8>, SyncError> {
    let bytes =
        transport::fetch(connection, &Request::Chunk { hash: *hash, offset: 0, len: 0 }, u64::from(MAX_CHUNK)).await?;
    metrics.received_bytes.get_or_create(&label("peer", upstream)).inc_by(bytes.len() as u64);
    let (store, h, data) = (store.clone(), *hash, bytes.clone());
    blocking(move || store.put_blob(&h, &data)).await.map_err(|e| match e {
        StoreError::Mismatch(m) => {
            metrics.refused("chunk");
            SyncError::Content(format!("chunk {m} from {upstream} does not match its hash"))
        }
        other => SyncError::Store(other),
    })?;
    metrics.chunks_fetched.inc();
    Ok(bytes)
}

/// Fetches one chunk for a client (on-demand fill, or a damaged blob), verifies and keeps it.
pub async fn fetch_chunk(connection: &Connection, hash: &[u8; 32], shared: &Shared) -> Result<Vec<u8>, SyncError> {
    let upstream = transport::peer_label(connection);
    fetch_and_store(connection, hash, &shared.store, &shared.metrics, &upstream).await
}
