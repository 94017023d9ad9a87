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

use outpost_protocol::chunking::{self, MAX_RANGE, Range};
use outpost_protocol::hex::hex;
use outpost_protocol::package::PackageRecord;
use outpost_protocol::package::record::MAX_RECORD_BYTES;
use outpost_protocol::pki::TrustStore;
use outpost_protocol::schedule::TokenBucket;
use outpost_protocol::snapshot::{Head, Held, MAX_SNAPSHOT_BYTES, SignedSnapshot, SnapshotError};
use outpost_protocol::wire::Request;
use quinn::Connection;
use tokio::task::JoinSet;

use super::Fill;
use crate::metrics::{RepoMetrics, label};
use crate::store::{FileInfo, PartialFile, Store, StoreError};
use crate::transport::{self, Pace, TransportError};

/// Bytes asked for in one range request.
pub const RANGE_BYTES: u32 = 1024 * 1024;

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

/// A file being assembled and the chunks it still lacks.
struct Assembly {
    hash: [u8; 32],
    info: Arc<FileInfo>,
    partial: Arc<PartialFile>,
    ranges: Vec<Range>,
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
    let mut assemblies = Vec::new();
    for (hash, info) in files {
        if ctx.store.has_file(hash) {
            continue;
        }
        let (store, h, i) = (ctx.store.clone(), *hash, info.clone());
        let (assembly, reused) = blocking(move || prepare(&store, h, i)).await?;
        outcome.deduplicated += reused;
        assemblies.push(assembly);
    }
    ctx.metrics.chunks_deduplicated.inc_by(outcome.deduplicated);

    // Each file is flushed and moved into place as soon as its last range is written, while
    // the others are still arriving: the final flush then has little left to do.
    let mut remaining: HashMap<[u8; 32], (usize, Arc<PartialFile>)> =
        assemblies.iter().map(|a| (a.hash, (a.ranges.len(), a.partial.clone()))).collect();
    let mut finishing = JoinSet::new();
    let finish = |finishing: &mut JoinSet<Result<(), StoreError>>, partial: Arc<PartialFile>, store: Arc<Store>| {
        finishing.spawn_blocking(move || {
            let partial = Arc::try_unwrap(partial).map_err(|_| StoreError::Db("a file is still in use".into()))?;
            partial.sync_data()?;
            store.finish(partial)
        });
    };
    let jobs: Vec<_> = assemblies
        .iter()
        .flat_map(|a| a.ranges.iter().map(|r| (a.hash, a.info.clone(), a.partial.clone(), *r)).collect::<Vec<_>>())
        .collect();
    for a in assemblies.iter().filter(|a| a.ranges.is_empty()) {
        if let Some((_, partial)) = remaining.remove(&a.hash) {
            finish(&mut finishing, partial, ctx.store.clone());
        }
    }
    drop(assemblies);
    let mut queue = jobs.into_iter();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < ctx.concurrency.max(1) {
            let Some((hash, info, partial, range)) = queue.next() else { break };
            let (connection, ctx, upstream) = (connection.clone(), ctx.clone(), upstream.to_string());
            tasks.spawn(async move {
                fetch_range(&connection, &upstream, &hash, &info, &partial, range, &ctx).await.map(|()| (hash, range))
            });
        }
        let Some(done) = tasks.join_next().await else { break };
        let (hash, range) = done.map_err(|e| SyncError::Content(e.to_string()))??;
        outcome.fetched += range.count as u64;
        outcome.bytes += u64::from(range.len);
        if let Some(entry) = remaining.get_mut(&hash) {
            entry.0 -= 1;
            if entry.0 == 0
                && let Some((_, partial)) = remaining.remove(&hash)
            {
                finish(&mut finishing, partial, ctx.store.clone());
            }
        }
    }
    while let Some(done) = finishing.join_next().await {
        done.map_err(|e| SyncError::Content(e.to_string()))??;
    }
    export_usage(ctx);
    Ok(outcome)
}

/// Opens a file's partial copy and finds what it still lacks. Blocking.
///
/// Chunks are checked and copied in runs of up to [`RANGE_BYTES`]: what an interrupted fetch
/// left in the partial copy, then chunks other stored files hold at consecutive offsets (the
/// unchanged parts of a new version), each run read, checked chunk by chunk and written at once.
fn prepare(store: &Store, hash: [u8; 32], info: FileInfo) -> Result<(Assembly, u64), StoreError> {
    let (partial, existed) = store.partial(&hash, info.size)?;
    let offsets = chunking::offsets(&info.chunks);
    let mut have = vec![false; info.chunks.len()];
    let mut reused = 0u64;
    let run_bytes = RANGE_BYTES.min(MAX_RANGE) as u64;
    let check = |first: usize, bytes: &[u8], have: &mut [bool], reused: &mut u64| {
        let mut at = 0usize;
        for (i, c) in info.chunks[first..].iter().enumerate() {
            let Some(piece) = bytes.get(at..at + c.len as usize) else { break };
            if !have[first + i] && blake3::hash(piece).as_bytes() == &c.hash {
                have[first + i] = true;
                *reused += 1;
            }
            at += c.len as usize;
        }
    };
    if existed {
        let mut i = 0;
        while i < info.chunks.len() {
            let mut j = i;
            while j < info.chunks.len() && offsets[j] + u64::from(info.chunks[j].len) - offsets[i] <= run_bytes {
                j += 1;
            }
            let j = j.max(i + 1);
            let len = offsets[j - 1] + u64::from(info.chunks[j - 1].len) - offsets[i];
            let bytes = partial.read_at(offsets[i], usize::try_from(len).expect("a run fits in memory"))?;
            check(i, &bytes, &mut have, &mut reused);
            i = j;
        }
    }
    let locations = store.chunk_locations(&info.chunks)?;
    let mut i = 0;
    while i < info.chunks.len() {
        let Some((source, at)) = locations[i].filter(|_| !have[i]) else {
            i += 1;
            continue;
        };
        // The longest run of chunks stored one after the other in the same file.
        let mut j = i + 1;
        let mut end = at + u64::from(info.chunks[i].len);
        while j < info.chunks.len()
            && !have[j]
            && locations[j] == Some((source, end))
            && end + u64::from(info.chunks[j].len) - at <= run_bytes
        {
            end += u64::from(info.chunks[j].len);
            j += 1;
        }
        if let Some(bytes) = store.read_stored(&source, at, usize::try_from(end - at).expect("a run fits in memory")) {
            let before = reused;
            check(i, &bytes, &mut have, &mut reused);
            if reused - before == (j - i) as u64 {
                partial.write_at(offsets[i], &bytes)?;
            } else {
                // Some stored chunk is damaged: write only the good ones.
                let mut pos = 0usize;
                for k in i..j {
                    let len = info.chunks[k].len as usize;
                    if have[k] {
                        partial.write_at(offsets[k], &bytes[pos..pos + len])?;
                    }
                    pos += len;
                }
            }
        }
        i = j;
    }
    let ranges = chunking::missing_ranges(&info.chunks, RANGE_BYTES.min(MAX_RANGE), |i| !have[i]);
    Ok((Assembly { hash, info: Arc::new(info), partial: Arc::new(partial), ranges }, reused))
}

async fn fetch_range(
    connection: &Connection,
    upstream: &str,
    hash: &[u8; 32],
    info: &FileInfo,
    partial: &Arc<PartialFile>,
    range: Range,
    ctx: &SyncContext,
) -> Result<(), SyncError> {
    if let Some(l) = &ctx.limiter {
        l.take(u64::from(range.len)).await;
    }
    let request = Request::Range { file: *hash, offset: range.offset, len: range.len };
    let bytes = transport::fetch(connection, &request, u64::from(range.len), ctx.pace).await?;
    ctx.metrics.received_bytes.get_or_create(&label("peer", upstream)).inc_by(bytes.len() as u64);
    if let Err(i) = chunking::verify_range(&info.chunks, &range, &bytes) {
        ctx.metrics.refused("chunk");
        return Err(SyncError::Content(format!(
            "chunk {i} of file {} from {upstream} does not match its signed hash",
            hex(hash)
        )));
    }
    let (partial, offset) = (partial.clone(), range.offset);
    blocking(move || partial.write_at(offset, &bytes)).await?;
    ctx.metrics.chunks_fetched.inc_by(range.count as u64);
    Ok(())
}

/// Fetches a range for a client straight from upstream (on-demand fill, or a damaged file),
/// verified against the chunk list. The range must be made of whole chunks.
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
    if let Some(l) = &ctx.limiter {
        l.take(u64::from(range.len)).await;
    }
    let request = Request::Range { file: *hash, offset: range.offset, len: range.len };
    let bytes = transport::fetch(connection, &request, u64::from(range.len), ctx.pace).await?;
    ctx.metrics.received_bytes.get_or_create(&label("peer", &upstream)).inc_by(bytes.len() as u64);
    chunking::verify_range(&info.chunks, &range, &bytes).map_err(|i| {
        SyncError::Content(format!("chunk {i} of file {} from {upstream} does not match its signed hash", hex(hash)))
    })?;
    ctx.metrics.chunks_fetched.inc_by(range.count as u64);
    let skip = usize::try_from(offset - start).expect("within the range");
    Ok(bytes[skip..skip + len as usize].to_vec())
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
