//! One sync of an edge from its upstream: fetch the snapshot, verify it (chain, never older,
//! not expired), fetch and verify the package records it needs (their signed manifests carry
//! every file's chunk list), then (immediate fill) assemble every missing file: chunks the
//! store already has are copied locally, the others fetched as byte ranges with bounded
//! concurrency and verified chunk by chunk as they arrive; only then does the snapshot become
//! current. A sync that fails changes nothing that is served; what it assembled stays in
//! `partial/`, so the next one resumes without fetching it again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost_protocol::chunking::{self, Chunk, MAX_RANGE, Range, RangeBytes};
use outpost_protocol::hex::hex;
use outpost_protocol::package::PackageRecord;
use outpost_protocol::package::record::MAX_RECORD_BYTES;
use outpost_protocol::pki::TrustStore;
use outpost_protocol::schedule::TokenBucket;
use outpost_protocol::snapshot::{Head, Held, MAX_SNAPSHOT_BYTES, SignedSnapshot, SnapshotError};
use outpost_protocol::verified::Verified;
use outpost_protocol::wire::Request;
use quinn::Connection;
use tokio::task::JoinSet;

use super::Fill;
use crate::assembler::{self, Assembly, AssemblyError, RANGE_BYTES};
use crate::metrics::{RepoMetrics, label};
use crate::store::{FileInfo, PartialFile, Store, StoreError};
use crate::transport::{self, Pace, TransportError};

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
    /// Range requests in flight.
    pub concurrency: usize,
    /// Bandwidth cap.
    pub limiter: Option<Arc<Limiter>>,
    /// How fast the upstream must be: a slower one is a failed upstream.
    pub pace: Pace,
}

/// What a sync did.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    /// The head now served.
    pub head: Option<Head>,
    /// Chunks fetched from upstream.
    pub fetched: u64,
    /// Chunks found locally (already stored, or left by an interrupted sync).
    pub deduplicated: u64,
    /// Bytes received.
    pub bytes: u64,
    /// What the edge holds now (for the next sync's rollback checks).
    pub held: Option<Held>,
}

/// Why a sync failed.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The snapshot was refused.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// A package record was refused.
    #[error("package {manifest}: {reason}")]
    Package { manifest: String, reason: String },
    /// Content that does not match.
    #[error("{0}")]
    Content(String),
    /// The network.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The store.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AssemblyError> for SyncError {
    fn from(e: AssemblyError) -> Self {
        match e {
            AssemblyError::Io { .. } => Self::Store(e.into()),
            other => Self::Content(other.to_string()),
        }
    }
}

impl SyncError {
    /// True when the upstream was too slow (it is left aside a while, like one that failed).
    pub fn is_slow(&self) -> bool {
        matches!(self, Self::Transport(t) if t.is_slow())
    }

    /// What went wrong, without this machine's paths: for answers to remote clients.
    pub fn public_reason(&self) -> String {
        match self {
            Self::Store(e) => e.public_reason(),
            other => other.to_string(),
        }
    }

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
    held: Option<Held>,
    ctx: &SyncContext,
) -> Result<SyncOutcome, SyncError> {
    let received = |n: usize| ctx.metrics.received_bytes.get_or_create(&label("peer", upstream)).inc_by(n as u64);
    let bytes =
        transport::fetch(connection, &Request::Snapshot { hash: head.hash }, MAX_SNAPSHOT_BYTES as u64, ctx.pace)
            .await?;
    received(bytes.len());
    let signed = SignedSnapshot::decode(&bytes)?;
    let (snapshot, _) = signed.verify(&ctx.trust, crate::clock::unix_now(), held)?;
    let mut outcome = SyncOutcome { bytes: bytes.len() as u64, ..SyncOutcome::default() };

    // Package records, verified as of the snapshot's date (the main accepted them then).
    let mut records = Vec::new();
    let mut files: BTreeMap<[u8; 32], FileInfo> = BTreeMap::new();
    for manifest in snapshot.manifests() {
        let (store, m) = (ctx.store.clone(), *manifest);
        let bytes = match blocking(move || store.record(&m)).await? {
            Some(b) => b,
            None => {
                let b =
                    transport::fetch(connection, &Request::Package { manifest: m }, MAX_RECORD_BYTES as u64, ctx.pace)
                        .await?;
                received(b.len());
                outcome.bytes += b.len() as u64;
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
            files.insert(f.blake3, FileInfo { size: f.size, chunks: f.chunks.clone() });
        }
    }
    let files: Vec<([u8; 32], FileInfo)> = files.into_iter().collect();

    let mut complete: Vec<[u8; 32]> = Vec::new();
    if ctx.fill == Fill::Immediate {
        let got = fetch_files(connection, upstream, &files, ctx).await?;
        outcome.fetched = got.fetched;
        outcome.deduplicated = got.deduplicated;
        outcome.bytes += got.bytes;
        complete = files.iter().map(|(h, _)| *h).collect();
    }

    let (store, sequence, signed2) = (ctx.store.clone(), snapshot.sequence, signed.clone());
    blocking(move || store.commit(&records, &files, &complete, Some((sequence, &signed2)))).await?;
    export_usage(ctx);
    outcome.head = Some(snapshot.head(&signed));
    outcome.held = Some(snapshot.held(&signed));
    Ok(outcome)
}

fn export_usage(ctx: &SyncContext) {
    let (blobs, bytes) = ctx.store.usage();
    ctx.metrics.blobs.set(i64::try_from(blobs).unwrap_or(i64::MAX));
    ctx.metrics.blob_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Makes every file of `files` complete in the store: chunks it has (left by an interrupted
/// fetch, or in other files) are reused, the rest fetched from `connection`.
pub async fn fetch_files(
    connection: &Connection,
    upstream: &str,
    files: &[([u8; 32], FileInfo)],
    ctx: &SyncContext,
) -> Result<SyncOutcome, SyncError> {
    let mut outcome = SyncOutcome::default();
    // Each file is flushed and moved into place as soon as its last range is written, while
    // the others are still arriving: the final flush then has little left to do.
    let mut remaining: HashMap<[u8; 32], (usize, Arc<Assembly<PartialFile>>)> = HashMap::new();
    let mut finishing = JoinSet::new();
    let finish = |finishing: &mut JoinSet<Result<(), StoreError>>, assembly: Arc<Assembly<PartialFile>>| {
        let store = ctx.store.clone();
        finishing.spawn_blocking(move || {
            let partial =
                Arc::try_unwrap(assembly).map_err(|_| StoreError::Db("a file is still in use".into()))?.into_file();
            partial.sync_data()?;
            store.finish(partial)
        });
    };
    let mut jobs = Vec::new();
    for (hash, info) in files {
        if ctx.store.has_file(hash) {
            continue;
        }
        let (store, h, i) = (ctx.store.clone(), *hash, info.clone());
        let (assembly, reused) = blocking(move || prepare(&store, h, i)).await?;
        outcome.deduplicated += reused;
        let assembly = Arc::new(assembly);
        let ranges = assembly.missing(RANGE_BYTES.min(MAX_RANGE));
        if ranges.is_empty() {
            finish(&mut finishing, assembly);
        } else {
            remaining.insert(*hash, (ranges.len(), assembly.clone()));
            jobs.extend(ranges.into_iter().map(|r| (*hash, assembly.clone(), r)));
        }
    }
    ctx.metrics.chunks_deduplicated.inc_by(outcome.deduplicated);

    let fetched = assembler::fetch_all(
        jobs,
        ctx.concurrency,
        |hash, assembly, range| {
            let (connection, ctx, upstream, hash, assembly) =
                (connection.clone(), ctx.clone(), upstream.to_string(), *hash, assembly.clone());
            async move { fetch_range(&connection, &upstream, &hash, assembly.chunks(), range, &ctx).await }
        },
        |hash, range| {
            // Counted once written: a chunk counted is a chunk a restart finds in place.
            ctx.metrics.chunks_fetched.inc_by(range.count as u64);
            outcome.fetched += range.count as u64;
            outcome.bytes += u64::from(range.len);
            if let Some(entry) = remaining.get_mut(hash) {
                entry.0 -= 1;
                if entry.0 == 0
                    && let Some((_, assembly)) = remaining.remove(hash)
                {
                    finish(&mut finishing, assembly);
                }
            }
            Ok::<_, SyncError>(())
        },
    )
    .await;
    // Files already finishing are finished even when a fetch failed: they are whole.
    while let Some(done) = finishing.join_next().await {
        done.map_err(|e| SyncError::Content(e.to_string()))??;
    }
    fetched?;
    export_usage(ctx);
    Ok(outcome)
}

/// Opens a file's partial copy and finds what it still lacks. Blocking.
///
/// What an interrupted fetch left in the partial copy is kept, then chunks other stored files
/// hold at consecutive offsets (the unchanged parts of a new version) are copied in runs of up
/// to [`RANGE_BYTES`], each run read once and checked chunk by chunk.
fn prepare(store: &Store, hash: [u8; 32], info: FileInfo) -> Result<(Assembly<PartialFile>, u64), StoreError> {
    let (partial, existed) = store.partial(&hash, info.size)?;
    let mut assembly = Assembly::new(partial, info.chunks);
    let mut reused = 0u64;
    if existed {
        reused += assembly.keep_verified()?.chunks;
    }
    let locations = store.chunk_locations(assembly.chunks())?;
    let run_bytes = u64::from(RANGE_BYTES.min(MAX_RANGE));
    let mut i = 0;
    while i < locations.len() {
        let Some((source, at)) = locations[i].filter(|_| !assembly.has(i)) else {
            i += 1;
            continue;
        };
        // The longest run of chunks stored one after the other in the same file.
        let chunks = assembly.chunks();
        let mut j = i + 1;
        let mut end = at + u64::from(chunks[i].len);
        while j < chunks.len()
            && !assembly.has(j)
            && locations[j] == Some((source, end))
            && end + u64::from(chunks[j].len) - at <= run_bytes
        {
            end += u64::from(chunks[j].len);
            j += 1;
        }
        // A damaged stored chunk is simply not taken: it will be fetched.
        if let Some(bytes) = store.read_stored(&source, at, usize::try_from(end - at).expect("a run fits in memory")) {
            reused += assembly.offer(i, &bytes)?.chunks;
        }
        i = j;
    }
    Ok((assembly, reused))
}

/// Fetches one range of a file from upstream, verified against its chunk list.
async fn fetch_range(
    connection: &Connection,
    upstream: &str,
    hash: &[u8; 32],
    chunks: &[Chunk],
    range: Range,
    ctx: &SyncContext,
) -> Result<Verified<RangeBytes>, SyncError> {
    if let Some(l) = &ctx.limiter {
        l.take(u64::from(range.len)).await;
    }
    let request = Request::Range { file: *hash, offset: range.offset, len: range.len };
    let bytes = transport::fetch(connection, &request, u64::from(range.len), ctx.pace).await?;
    ctx.metrics.received_bytes.get_or_create(&label("peer", upstream)).inc_by(bytes.len() as u64);
    let verified = chunking::verify_range(chunks, range, bytes).map_err(|i| {
        ctx.metrics.refused("chunk");
        SyncError::Content(format!("chunk {i} of file {} from {upstream} does not match its signed hash", hex(hash)))
    })?;
    Ok(verified)
}

/// Fetches a range for a client straight from upstream (on-demand fill, or a damaged file),
/// verified against the chunk list. The range is widened to whole chunks to be verified.
pub async fn fetch_range_for_client(
    connection: &Connection,
    hash: &[u8; 32],
    info: &FileInfo,
    offset: u64,
    len: u32,
    ctx: &SyncContext,
) -> Result<Vec<u8>, SyncError> {
    let offsets = chunking::offsets(&info.chunks);
    let first = offsets.partition_point(|&o| o <= offset).saturating_sub(1);
    let end = offset + u64::from(len);
    let last = offsets.partition_point(|&o| o < end);
    let start = offsets.get(first).copied().unwrap_or(0);
    let stop = offsets.get(last).copied().unwrap_or(info.size);
    let range = Range {
        first,
        count: last - first,
        offset: start,
        len: u32::try_from(stop - start).map_err(|e| SyncError::Content(e.to_string()))?,
    };
    let upstream = transport::peer_label(connection);
    let verified = fetch_range(connection, &upstream, hash, &info.chunks, range, ctx).await?.into_inner();
    ctx.metrics.chunks_fetched.inc_by(range.count as u64);
    let skip = usize::try_from(offset - start).expect("within the range");
    Ok(verified.bytes[skip..skip + len as usize].to_vec())
}

/// Files being fetched in the background for clients, so each is fetched once.
#[derive(Debug, Default)]
pub struct Fetching(Mutex<HashSet<[u8; 32]>>);

impl Fetching {
    /// Starts fetching `hash` in the background unless it already is.
    pub fn start(self: &Arc<Self>, connection: Connection, hash: [u8; 32], info: FileInfo, ctx: SyncContext) {
        if !self.0.lock().expect("not poisoned").insert(hash) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let upstream = transport::peer_label(&connection);
            let result = fetch_files(&connection, &upstream, &[(hash, info.clone())], &ctx).await;
            match result {
                Ok(_) => {
                    let store = ctx.store.clone();
                    if let Err(e) = blocking(move || store.add_complete(&[(hash, info)])).await {
                        tracing::warn!(file = hex(&hash), "recording a fetched file failed: {e}");
                    }
                }
                Err(e) => tracing::warn!(file = hex(&hash), "fetching a file for a client failed: {e}"),
            }
            me.0.lock().expect("not poisoned").remove(&hash);
        });
    }
}
