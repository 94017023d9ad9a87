//! One sync of an edge from its upstream: fetch the snapshot, verify it (chain, never older,
//! not expired), fetch and verify the package records it needs (their signed manifests carry
//! every file's chunk list), then (immediate fill) assemble every missing file: chunks the
//! store already has are copied locally, the others fetched as byte ranges with bounded
//! concurrency and verified chunk by chunk as they arrive; only then does the snapshot become
//! current. A sync that fails changes nothing that is served; what it assembled stays in
//! `partial/` (or, for a file already whole, in the store), so the next one resumes without
//! fetching it again.
//!
//! Nothing waits that need not: a file's ranges are fetched as soon as it is planned (two files
//! are planned at a time meanwhile, at most 64 ahead of those finished), and each file is
//! flushed, moved into the store and indexed as soon as it is whole, so the snapshot's commit
//! has only the snapshot left to record. Run with `OUTPOST_LOG=outpost_actors::repo::sync=debug`
//! to see each phase's time.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use outpost_protocol::chunking::{self, Chunk, MAX_RANGE, Range};
use outpost_protocol::delta;
use outpost_protocol::hex::hex;
use outpost_protocol::package::record::MAX_RECORD_BYTES;
use outpost_protocol::pki::TrustStore;
use outpost_protocol::schedule::TokenBucket;
use outpost_protocol::snapshot::{Head, Held, MAX_SNAPSHOT_BYTES, SignedSnapshot, SnapshotError};
use outpost_protocol::wire::{Anchor, ErrorCode, Request};
use quinn::Connection;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::Fill;
use super::checked::{Checked, CheckedRecords};
use super::client::{self, RangeFailure};
use crate::assembler::{self, Assembly, AssemblyError, Landed, Positional, RANGE_BYTES};
use crate::metrics::{RepoMetrics, label};
use crate::store::{ChunkLocation, FileInfo, FinishedFile, Link, Links, PartialFile, Pin, Store, StoreError};
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
    /// The package records verified already, not verified again by the next sync.
    pub checked: Arc<CheckedRecords>,
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
    let started = Instant::now();
    let bytes =
        transport::fetch(connection, &Request::Snapshot { hash: head.hash }, MAX_SNAPSHOT_BYTES as u64, ctx.pace)
            .await?;
    received(bytes.len());
    let signed = SignedSnapshot::decode(&bytes)?;
    let (snapshot, _) = signed.verify(&ctx.trust, crate::clock::unix_now(), held)?;
    let mut outcome = SyncOutcome { bytes: bytes.len() as u64, ..SyncOutcome::default() };

    // Package records, verified as of the snapshot's date (the main accepted them then). Those
    // not held are fetched a few at a time, each as a delta against the record of the
    // package's version held now when there is one. Checking a record (decoding it, matching
    // its hash, verifying its signature) takes milliseconds for a large package: those held are
    // checked on [`RECORD_CHECKERS`] blocking tasks while the others are fetched, and each one
    // fetched as soon as it arrives.
    let store = ctx.store.clone();
    let bases = blocking(move || bases(&store)).await?;
    let keys: HashMap<[u8; 32], BaseKey> = base_keys(&snapshot).into_iter().collect();
    let mut manifests = Vec::new();
    let mut seen = HashSet::new();
    manifests.extend(snapshot.manifests().copied().filter(|m| seen.insert(*m)));
    // The records held already, read in one go (a snapshot lists thousands of host packages).
    let (store, listed) = (ctx.store.clone(), manifests.clone());
    let looked_up = blocking(move || {
        listed.into_iter().map(|m| Ok((m, store.record(&m)?))).collect::<Result<Vec<_>, StoreError>>()
    })
    .await?;
    let created = snapshot.created;
    let mut wanted = Vec::new();
    let mut held: Vec<Record> = Vec::new();
    for (m, record) in looked_up {
        match record {
            Some(bytes) => held.push((m, bytes)),
            None => wanted.push((m, keys.get(&m).and_then(|k| bases.get(k)).copied())),
        }
    }
    // The held records in shares of about the same size, largest first.
    held.sort_by_key(|(_, bytes)| std::cmp::Reverse(bytes.len()));
    let mut shares: Vec<(usize, Vec<Record>)> = (0..RECORD_CHECKERS).map(|_| (0, Vec::new())).collect();
    for record in held {
        let share = shares.iter_mut().min_by_key(|(size, _)| *size).expect("there are checkers");
        share.0 += record.1.len();
        share.1.push(record);
    }
    let mut checking = JoinSet::new();
    for (_, share) in shares.into_iter().filter(|(_, share)| !share.is_empty()) {
        let (trust, checked) = (ctx.trust.clone(), ctx.checked.clone());
        checking.spawn_blocking(move || {
            share
                .into_iter()
                .map(|(m, bytes)| Ok((m, checked.check(m, &bytes, &trust, created)?)))
                .collect::<Result<Vec<_>, SyncError>>()
        });
    }
    let mut fetching = JoinSet::new();
    let mut wanted = wanted.into_iter();
    let mut records = Vec::new();
    let mut checked = HashMap::new();
    loop {
        while fetching.len() < ctx.concurrency.max(1) {
            let Some((m, base)) = wanted.next() else { break };
            let (connection, ctx) = (connection.clone(), ctx.clone());
            fetching.spawn(async move {
                let (bytes, wire) = fetch_record(&connection, m, base, &ctx).await?;
                let (trust, checked) = (ctx.trust.clone(), ctx.checked.clone());
                tokio::task::spawn_blocking(move || {
                    let files = checked.check(m, &bytes, &trust, created)?;
                    Ok::<_, SyncError>((m, bytes, wire, files))
                })
                .await
                .map_err(|e| SyncError::Content(e.to_string()))?
            });
        }
        let Some(done) = fetching.join_next().await else { break };
        let (m, bytes, wire, files) = done.map_err(|e| SyncError::Content(e.to_string()))??;
        received(wire);
        outcome.bytes += wire as u64;
        records.push((m, bytes));
        checked.insert(m, files);
    }
    while let Some(done) = checking.join_next().await {
        let share = done.map_err(|e| SyncError::Content(e.to_string()))??;
        checked.extend(share);
    }
    // Only this snapshot's records are worth remembering as verified.
    ctx.checked.keep(&checked.values().map(|c: &Checked| c.key).collect());
    let verified = checked.values().filter(|c| c.verified).count();
    let mut files: BTreeMap<[u8; 32], FileInfo> = BTreeMap::new();
    for m in &manifests {
        for (hash, info) in checked.remove(m).expect("every record was held or fetched").files {
            files.entry(hash).or_insert(info);
        }
    }
    let files: Vec<([u8; 32], FileInfo)> = files.into_iter().collect();
    tracing::debug!(
        records = records.len(),
        verified,
        seconds = started.elapsed().as_secs_f64(),
        "sync: snapshot and records verified"
    );

    // The files this sync completes: each is indexed as soon as it is whole, while others are
    // still fetched; the commit indexes those left (a file found stored but not indexed, left
    // by a sync that stopped between the two). Files held already were indexed when they came.
    let mut complete: Vec<[u8; 32]> = Vec::new();
    if ctx.fill == Fill::Immediate {
        let (store, hashes) = (ctx.store.clone(), files.iter().map(|(h, _)| *h).collect::<Vec<_>>());
        complete = blocking(move || {
            let mut new = Vec::new();
            for h in hashes {
                if !store.has_indexed_file(&h)? {
                    new.push(h);
                }
            }
            Ok(new)
        })
        .await?;
        let (got, indexed) = fetch_files(connection, upstream, &files, true, ctx).await?;
        complete.retain(|h| !indexed.contains(h));
        outcome.fetched = got.fetched;
        outcome.deduplicated = got.deduplicated;
        outcome.bytes += got.bytes;
    }

    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "sync: files complete");
    let (store, sequence, signed2) = (ctx.store.clone(), snapshot.sequence, signed.clone());
    blocking(move || store.commit(&records, &files, &complete, Some((sequence, &signed2)))).await?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "sync: committed");
    export_usage(ctx);
    outcome.head = Some(snapshot.head(&signed));
    outcome.held = Some(snapshot.held(&signed));
    Ok(outcome)
}

/// What finds the earlier version of a package: its name, or a host package's name hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum BaseKey {
    Package(String),
    Host([u8; 32]),
}

/// Each manifest of `snapshot` and what finds its earlier version.
fn base_keys(snapshot: &outpost_protocol::snapshot::Snapshot) -> Vec<([u8; 32], BaseKey)> {
    let packages = snapshot.entries.iter().filter_map(|e| {
        let name = e.control.iter().find(|(k, _)| k == "package")?.1.to_lowercase();
        Some((e.manifest, BaseKey::Package(name)))
    });
    packages.chain(snapshot.hosts.iter().map(|h| (h.manifest, BaseKey::Host(h.name_hash)))).collect()
}

/// The records of the snapshot served now, by package (the last version of each, as entries
/// are sorted by version): the bases the next snapshot's records are fetched as deltas
/// against. Blocking.
fn bases(store: &Store) -> Result<HashMap<BaseKey, [u8; 32]>, StoreError> {
    let Some(current) = store.current()? else { return Ok(HashMap::new()) };
    let Ok(snapshot) = current.unverified() else { return Ok(HashMap::new()) };
    Ok(base_keys(&snapshot).into_iter().map(|(m, key)| (key, m)).collect())
}

/// Fetches a package record: as a delta against `base` when there is one and upstream can
/// make it, else whole. Returns its bytes (not yet verified) and the bytes received.
async fn fetch_record(
    connection: &Connection,
    manifest: [u8; 32],
    base: Option<[u8; 32]>,
    ctx: &SyncContext,
) -> Result<(Vec<u8>, usize), SyncError> {
    let bad = |reason: String| SyncError::Package { manifest: hex(&manifest), reason };
    if let Some(base) = base {
        let store = ctx.store.clone();
        if let Some(base_bytes) = blocking(move || store.record(&base)).await? {
            let request = Request::PackageDelta { manifest, base };
            match transport::fetch(connection, &request, MAX_RECORD_BYTES as u64, ctx.pace).await {
                Ok(encoded) => {
                    let bytes = delta::apply(&base_bytes, &encoded, MAX_RECORD_BYTES)
                        .map_err(|e| bad(format!("the delta from upstream: {e}")))?;
                    return Ok((bytes, encoded.len()));
                }
                // Upstream lacks the base, or predates deltas: the whole record.
                Err(TransportError::Remote { code: ErrorCode::NotFound | ErrorCode::BadRequest, .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let bytes = transport::fetch(connection, &Request::Package { manifest }, MAX_RECORD_BYTES as u64, ctx.pace).await?;
    let len = bytes.len();
    Ok((bytes, len))
}

fn export_usage(ctx: &SyncContext) {
    let (blobs, bytes) = ctx.store.usage();
    ctx.metrics.blobs.set(i64::try_from(blobs).unwrap_or(i64::MAX));
    ctx.metrics.blob_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

/// Chunks indexed in one transaction while a sync runs: each transaction copies every page of
/// the index it touches, and chunk hashes land all over it, so transactions of a file or two
/// each would rewrite most of the index again and again.
const INDEX_BATCH: usize = 16 * 1024;

/// A package record: its manifest hash and its bytes.
type Record = ([u8; 32], Vec<u8>);

/// Blocking tasks that check the package records held already while a sync fetches the others.
const RECORD_CHECKERS: usize = 2;

/// Copies of stored files running at once (the disk is their bound, not the processor).
const COPIES_IN_FLIGHT: usize = 2;

/// Most links a file may have (about 56 bytes each, kept after its last byte, and read back
/// whole): a file changed in more places is assembled by copying instead.
const MAX_LINKS: usize = 65_536;

/// Files planned at once: a plan creates the file's partial copy and finds its chunks in the
/// store (one file system operation and many look-ups), and planning is what the first ranges
/// of a file wait for.
const PLANNERS: usize = 2;

/// Files planned and not yet finished, at most: each holds its partial file (and the stored
/// files its runs are copied from) open until it is whole, so a sync of many thousands of
/// files does not run out of file descriptors by planning far ahead of what arrives.
const PLANNED_AHEAD: usize = 64;

/// A file waiting for its ranges and copies: how many are left, the file, and its place among
/// the [`PLANNED_AHEAD`].
type Waiting = (usize, Arc<Assembly<PartialFile>>, OwnedSemaphorePermit);

/// The bytes a file borrows from other files, and the files it copies from or links to
/// (pinned until the file is in place).
type Borrowed = (Option<Links>, Vec<Pin>);

/// What a file's index needs: its chunk list, and which chunks are indexed in other files.
type ToIndex = (Arc<FileInfo>, Vec<bool>);

/// A range to fetch: its file, where the bytes around it are stored here, the file being
/// assembled, the range.
type Job = (([u8; 32], Anchors), Arc<Assembly<PartialFile>>, Range);

/// What a file still lacks: [`prepare`]'s answer.
struct Plan {
    /// The file being assembled, what it holds marked.
    assembly: Assembly<PartialFile>,
    /// Chunks found in place or planned as copies.
    reused: u64,
    /// The copies to make.
    runs: Vec<CopyRun>,
    /// Or the bytes to borrow from other files.
    links: Option<Links>,
    /// The files copied from or linked to, pinned until the file is in place.
    pins: Vec<Pin>,
    /// The chunks planned as copies or links (not in the partial copy yet).
    planned: Vec<std::ops::Range<usize>>,
    /// Where each chunk is stored in other files, if anywhere.
    locations: Vec<Option<ChunkLocation>>,
}

/// Runs of chunks other stored files hold one after the other, to be copied in.
#[derive(Debug)]
struct CopyRun {
    first: usize,
    count: usize,
    pieces: Vec<CopyPiece>,
}

/// Bytes of a stored file to copy in: from `at` of `source` to `to`.
#[derive(Debug)]
struct CopyPiece {
    source: Arc<std::fs::File>,
    at: u64,
    to: u64,
    len: u64,
}

/// Makes every file of `files` complete in the store: chunks it has (left by an interrupted
/// fetch, or in other files) are reused, the rest fetched from `connection`. Files are planned
/// one after the other and each one's ranges fetched and runs copied as soon as it is planned.
/// Each file is indexed (chunk list and locations, not durable yet) as soon as it is complete;
/// returns what was done and the files so indexed.
pub async fn fetch_files(
    connection: &Connection,
    upstream: &str,
    files: &[([u8; 32], FileInfo)],
    link: bool,
    ctx: &SyncContext,
) -> Result<(SyncOutcome, HashSet<[u8; 32]>), SyncError> {
    let mut outcome = SyncOutcome::default();
    // Each file is flushed and moved into place as soon as its last range is written and its
    // reused runs are copied, while the others are still arriving: the final flush then has
    // little left to do. `remaining` counts what each file still waits for.
    let remaining: Mutex<HashMap<[u8; 32], Waiting>> = Mutex::new(HashMap::new());
    let finishing = Mutex::new(JoinSet::new());
    // Files with runs copied from other stored files (those runs were verified when their
    // files were written, maybe by another process: the store checks them again when serving).
    let copied: Mutex<HashSet<[u8; 32]>> = Mutex::new(HashSet::new());
    // The bytes each file borrows from other files, and the files it copies from or links to,
    // pinned until it is in place.
    let borrowed: Mutex<HashMap<[u8; 32], Borrowed>> = Mutex::new(HashMap::new());
    // What each file's index needs once it is complete (its chunk list, and which chunks are
    // indexed already in other files), the complete files not yet indexed with the count of
    // their chunks to index (the finishing task that brings it to [`INDEX_BATCH`] indexes them
    // all in one transaction; those left are indexed at the end), and those indexed.
    let to_index: Mutex<HashMap<[u8; 32], ToIndex>> = Mutex::new(HashMap::new());
    let pending: Arc<Mutex<(usize, Vec<FinishedFile>)>> = Arc::default();
    let indexed: Arc<Mutex<HashSet<[u8; 32]>>> = Arc::default();
    let finish = |assembly: Arc<Assembly<PartialFile>>, planned: OwnedSemaphorePermit| {
        let store = ctx.store.clone();
        let hash = assembly.file().hash();
        let checked_here = !copied.lock().expect("not poisoned").contains(&hash);
        let index = to_index.lock().expect("not poisoned").remove(&hash);
        let (links, pins) = borrowed.lock().expect("not poisoned").remove(&hash).unwrap_or_default();
        let borrowed_bytes = ctx.metrics.borrowed_bytes.clone();
        let (pending, indexed) = (pending.clone(), indexed.clone());
        finishing.lock().expect("not poisoned").spawn_blocking(move || {
            let partial =
                Arc::try_unwrap(assembly).map_err(|_| StoreError::Db("a file is still in use".into()))?.into_file();
            if let Some(links) = &links {
                partial.append_links(links)?;
            }
            partial.sync_data()?;
            store.finish(partial, checked_here)?;
            drop((planned, pins));
            borrowed_bytes.inc_by(links.as_ref().map_or(0, Links::linked_bytes));
            let batch = {
                let mut pending = pending.lock().expect("not poisoned");
                if let Some((info, known)) = index {
                    pending.0 += known.iter().filter(|k| !**k).count();
                    pending.1.push((hash, info, known));
                }
                if pending.0 < INDEX_BATCH {
                    return Ok(());
                }
                pending.0 = 0;
                std::mem::take(&mut pending.1)
            };
            store.index_finished(&batch)?;
            indexed.lock().expect("not poisoned").extend(batch.iter().map(|(h, ..)| *h));
            Ok::<_, StoreError>(())
        });
    };
    let done_one = |hash: &[u8; 32]| {
        let mut remaining = remaining.lock().expect("not poisoned");
        if let Some(entry) = remaining.get_mut(hash) {
            entry.0 -= 1;
            if entry.0 == 0
                && let Some((_, assembly, planned)) = remaining.remove(hash)
            {
                drop(remaining);
                finish(assembly, planned);
            }
        }
    };

    // Planning, [`PLANNERS`] files at a time; each file's ranges and copies are queued as soon
    // as it is planned. Copies that fail queue their chunks as ranges (the copying holds a
    // sender too): the queue of ranges closes when both are done.
    let (jobs, queued_jobs) = tokio::sync::mpsc::unbounded_channel::<Job>();
    let (copies, queued_copies) = tokio::sync::mpsc::unbounded_channel();
    let refetch = jobs.clone();
    let (remaining_ref, to_index_ref, copied_ref, borrowed_ref, finish_ref) =
        (&remaining, &to_index, &copied, &borrowed, &finish);
    // Moves the queues' senders in: they close when planning ends, however it ends.
    let planning = async move {
        let (remaining, to_index, copied, borrowed, finish) =
            (remaining_ref, to_index_ref, copied_ref, borrowed_ref, finish_ref);
        let ahead = Arc::new(Semaphore::new(PLANNED_AHEAD));
        let mut deduplicated = 0u64;
        let todo: Vec<&([u8; 32], FileInfo)> = files.iter().filter(|(hash, _)| !ctx.store.has_file(hash)).collect();
        let mut next = 0;
        let mut preparing = JoinSet::new();
        loop {
            // Once ranges are no longer fetched (a fetch failed), no more files are planned.
            while preparing.len() < PLANNERS && next < todo.len() && !jobs.is_closed() {
                // Waits for a file to finish only when no plan is ready to be queued (a plan
                // left unqueued would never finish), and stops when ranges are no longer
                // fetched (a fetch failed: nothing planned would finish).
                let planned = match ahead.clone().try_acquire_owned() {
                    Ok(permit) => permit,
                    Err(_) if preparing.is_empty() => tokio::select! {
                        permit = ahead.clone().acquire_owned() => permit.expect("never closed"),
                        () = jobs.closed() => break,
                    },
                    Err(_) => break,
                };
                let (hash, info) = todo[next];
                next += 1;
                let (store, h, i, info) = (ctx.store.clone(), *hash, info.clone(), Arc::new(info.clone()));
                preparing.spawn_blocking(move || prepare(&store, h, i, link).map(|plan| (h, info, plan, planned)));
            }
            let Some(prepared) = preparing.join_next().await else { break };
            let (hash, info, Plan { assembly, reused, runs, links, pins, planned: borrows, locations }, planned) =
                prepared.map_err(|e| SyncError::Content(e.to_string()))??;
            deduplicated += reused;
            if !borrows.is_empty() {
                copied.lock().expect("not poisoned").insert(hash);
            }
            borrowed.lock().expect("not poisoned").insert(hash, (links, pins));
            let known = locations.iter().map(Option::is_some).collect();
            to_index.lock().expect("not poisoned").insert(hash, (info, known));
            let assembly = Arc::new(assembly);
            if ctx.store.landings().fetching(&hash) {
                // What an interrupted fetch left, checked again: clients may be served it now.
                for i in (0..assembly.chunks().len()).filter(|&i| assembly.has(i)) {
                    if !borrows.iter().any(|run| run.contains(&i)) {
                        ctx.store.landings().land(&hash, i, 1);
                    }
                }
            }
            let ranges = assembly.missing(RANGE_BYTES.min(MAX_RANGE));
            let waits = ranges.len() + usize::from(!runs.is_empty());
            if waits == 0 {
                finish(assembly, planned);
                continue;
            }
            remaining.lock().expect("not poisoned").insert(hash, (waits, assembly.clone(), planned));
            if !runs.is_empty() {
                let _ = copies.send((hash, assembly.clone(), runs));
            }
            for r in ranges {
                let _ = jobs.send(((hash, Anchors::of(r, assembly.chunks(), &locations)), assembly.clone(), r));
            }
        }
        ctx.metrics.chunks_deduplicated.inc_by(deduplicated);
        tracing::debug!(files = files.len(), "sync: every file planned");
        Ok::<_, SyncError>(deduplicated)
    };

    let started = Instant::now();
    // A run that cannot be copied (its file unreadable since) is fetched instead. Moves the
    // second sender of ranges in: it closes when copying ends.
    let (remaining_ref, done_one_ref) = (&remaining, &done_one);
    let copying = async move {
        let (remaining, done_one) = (remaining_ref, done_one_ref);
        let start = |tasks: &mut JoinSet<_>,
                     (hash, assembly, runs): ([u8; 32], Arc<Assembly<PartialFile>>, Vec<CopyRun>)| {
            let store = ctx.store.clone();
            tasks.spawn_blocking(move || {
                let mut failed = Vec::new();
                for run in runs {
                    let copy = run.pieces.iter().try_for_each(|p| assembly.copy_in(p.to, &p.source, p.at, p.len));
                    match copy {
                        Ok(()) => store.landings().land(&hash, run.first, run.count),
                        Err(e) => {
                            tracing::warn!(file = hex(&hash), "copying stored chunks failed, fetching them: {e}");
                            failed.push(run.first..run.first + run.count);
                        }
                    }
                }
                (hash, assembly, failed)
            });
        };
        let done = |(hash, assembly, failed): ([u8; 32], Arc<Assembly<PartialFile>>, Vec<std::ops::Range<usize>>)| {
            if failed.is_empty() {
                // The last reference but the file's own goes first: finishing takes the file.
                drop(assembly);
                done_one(&hash);
                return Ok(());
            }
            let ranges = chunking::missing_ranges(assembly.chunks(), RANGE_BYTES.min(MAX_RANGE), |k| {
                failed.iter().any(|run| run.contains(&k))
            });
            if let Some(entry) = remaining.lock().expect("not poisoned").get_mut(&hash) {
                entry.0 += ranges.len() - 1;
            }
            for r in ranges {
                let _ = refetch.send(((hash, Anchors::default()), assembly.clone(), r));
            }
            Ok::<_, SyncError>(())
        };
        let copied = assembler::run_queued(queued_copies, COPIES_IN_FLIGHT, start, done).await;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "sync: copies done");
        copied
    };
    let fetching = async {
        let fetched = fetch_ranges(connection, upstream, queued_jobs, ctx, &done_one).await;
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "sync: ranges fetched");
        fetched
    };
    let (planned, copied, fetched) = tokio::join!(planning, copying, fetching);
    let mut got = match (planned, copied, fetched) {
        (Ok(deduplicated), Ok(()), Ok(got)) => {
            outcome.deduplicated = deduplicated;
            Ok(got)
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e),
    };
    // Files already finishing are finished even when a fetch failed: they are whole.
    let mut finishing = std::mem::take(&mut *finishing.lock().expect("not poisoned"));
    while let Some(done) = finishing.join_next().await {
        if let Err(e) = done.map_err(|e| SyncError::Content(e.to_string())).and_then(|r| Ok(r?))
            && got.is_ok()
        {
            got = Err(e);
        }
    }
    let got = got?;
    tracing::debug!(seconds = started.elapsed().as_secs_f64(), "sync: files flushed");
    // Never expected: a file still waiting for a range or a copy is not in the store, and the
    // snapshot must not be served as if it were.
    let unfinished = remaining.lock().expect("not poisoned").len();
    if unfinished > 0 {
        return Err(SyncError::Content(format!("{unfinished} file(s) were left incomplete by the sync")));
    }
    // The files left under a batch's worth are indexed together.
    let rest = std::mem::take(&mut pending.lock().expect("not poisoned").1);
    if !rest.is_empty() {
        let store = ctx.store.clone();
        let rest = blocking(move || store.index_finished(&rest).map(|()| rest)).await?;
        indexed.lock().expect("not poisoned").extend(rest.iter().map(|(h, ..)| *h));
        tracing::debug!(files = rest.len(), seconds = started.elapsed().as_secs_f64(), "sync: last files indexed");
    }
    outcome.fetched = got.0;
    outcome.bytes = got.1;
    export_usage(ctx);
    let indexed = std::mem::take(&mut *indexed.lock().expect("not poisoned"));
    Ok((outcome, indexed))
}

/// Fetches the queued jobs from upstream (at most the sync's concurrency at once), each
/// written as it arrives and counted with `done_one(file)`. Returns the chunks and bytes
/// fetched.
async fn fetch_ranges(
    connection: &Connection,
    upstream: &str,
    jobs: tokio::sync::mpsc::UnboundedReceiver<Job>,
    ctx: &SyncContext,
    done_one: &(dyn Fn(&[u8; 32]) + Sync),
) -> Result<Fetched, SyncError> {
    let mut got = Fetched(0, 0);
    assembler::fetch_all(
        jobs,
        ctx.concurrency,
        |&(hash, anchors), assembly, range| {
            let (connection, ctx, upstream, assembly) =
                (connection.clone(), ctx.clone(), upstream.to_string(), assembly.clone());
            async move {
                // Bytes are written as they come (see `client::stream_range`), in place, and
                // count once their range is verified: into the page cache; when writeback falls behind, the kernel slows the
                // writer, which slows this sync to the disk's pace (the serving tasks go on).
                let mut write = |offset: u64, bytes: &[u8]| {
                    let file = assembly.file();
                    file.write_all_at(offset, bytes)
                        .map_err(|e| SyncError::Store(StoreError::Io { path: file.path().to_path_buf(), error: e }))
                };
                fetch_range(&connection, &upstream, (&hash, assembly.chunks()), range, anchors, &ctx, &mut write).await
            }
        },
        |(hash, _), range| {
            // Counted once written: a chunk counted is a chunk a restart finds in place.
            ctx.metrics.chunks_fetched.inc_by(range.count as u64);
            ctx.store.landings().land(hash, range.first, range.count);
            got.0 += range.count as u64;
            got.1 += u64::from(range.len);
            done_one(hash);
            Ok::<_, SyncError>(())
        },
    )
    .await?;
    Ok(got)
}

/// Chunks and bytes fetched.
#[derive(Debug, Clone, Copy)]
struct Fetched(u64, u64);

impl std::ops::Add for Fetched {
    type Output = Self;
    fn add(self, other: Self) -> Self {
        Self(self.0 + other.0, self.1 + other.1)
    }
}

/// Opens a file's partial copy and plans what it still lacks. Blocking.
///
/// What an interrupted fetch left in the partial copy is kept (read and checked again: it was
/// written by a process that may have stopped half-way), then chunks other stored files hold
/// at consecutive offsets (the unchanged parts of a new version) are planned as links to those
/// files (`link`: the new file borrows the bytes, see [`crate::store::links`]) or as runs to
/// copy. Either way the bytes are taken from where they are held ([`Store::resolve`]: a file
/// with links of its own is not linked to through them), and those files stay pinned.
fn prepare(store: &Store, hash: [u8; 32], info: FileInfo, link: bool) -> Result<Plan, StoreError> {
    prepare_at_most(store, hash, info, link, MAX_LINKS)
}

/// [`prepare`], with links only when the file needs at most `max_links`.
fn prepare_at_most(
    store: &Store,
    hash: [u8; 32],
    info: FileInfo,
    link: bool,
    max_links: usize,
) -> Result<Plan, StoreError> {
    let (partial, existed) = store.partial(&hash, info.size)?;
    let mut assembly = Assembly::new(partial, info.chunks);
    let mut reused = 0u64;
    if existed {
        reused += assembly.keep_verified()?.chunks;
    }
    let locations = store.chunk_locations(assembly.chunks())?;
    // The runs of chunks stored one after the other in the same file, where their bytes are.
    let mut found = Vec::new();
    let mut i = 0;
    while i < locations.len() {
        let Some((source, at)) = locations[i].filter(|_| !assembly.has(i)) else {
            i += 1;
            continue;
        };
        let chunks = assembly.chunks();
        let mut j = i + 1;
        let mut end = at + u64::from(chunks[i].len);
        while j < chunks.len() && !assembly.has(j) && locations[j] == Some((source, end)) {
            end += u64::from(chunks[j].len);
            j += 1;
        }
        // A file gone since its chunks were recorded (or being removed) is simply not used:
        // its chunks are fetched.
        if let Some((pieces, pinned)) = store.resolve(&source, at, end - at)? {
            found.push((i, j, pieces, pinned));
        }
        i = j;
    }
    // A file changed in so many places that its links would be too many to keep is copied.
    let link = link && found.iter().map(|(_, _, pieces, _)| pieces.len()).sum::<usize>() <= max_links;
    let mut sources: HashMap<[u8; 32], Option<Arc<std::fs::File>>> = HashMap::new();
    let (mut runs, mut links, mut pins, mut planned) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, j, pieces, pinned) in found {
        let mut dest = assembly.offset(i);
        let mut copies = Vec::new();
        for (file, from, len) in pieces {
            if link {
                links.push(Link { at: dest, len, source: file, source_at: from });
            } else {
                let Some(open) = sources.entry(file).or_insert_with(|| store.open_stored(&file).map(Arc::new)) else {
                    break;
                };
                copies.push(CopyPiece { source: open.clone(), at: from, to: dest, len });
            }
            dest += len;
        }
        if dest != assembly.offset(i) + (i..j).map(|k| u64::from(assembly.chunks()[k].len)).sum::<u64>() {
            // A source that could not be opened: those chunks are fetched.
            continue;
        }
        reused += assembly.plan_copy(i, j - i).chunks;
        pins.extend(pinned);
        planned.push(i..j);
        if !link {
            runs.push(CopyRun { first: i, count: j - i, pieces: copies });
        }
    }
    let size = assembly.chunks().iter().map(|c| u64::from(c.len)).sum();
    let links = (!links.is_empty()).then(|| Links::new(size, links));
    Ok(Plan { assembly, reused, runs, links, pins, planned, locations })
}

/// Where the bytes around a missing range are stored here: the delta a range is asked as.
#[derive(Debug, Clone, Copy, Default)]
struct Anchors {
    before: Option<Anchor>,
    after: Option<Anchor>,
}

impl Anchors {
    /// For `range` of a file whose chunks are stored at `locations`: after the chunk before it,
    /// and before the chunk after it.
    fn of(range: Range, chunks: &[Chunk], locations: &[Option<ChunkLocation>]) -> Self {
        let end = range.first + range.count;
        let before = range.first.checked_sub(1).and_then(|k| {
            let (file, at) = locations.get(k).copied().flatten()?;
            Some(Anchor { file, offset: at + u64::from(chunks[k].len) })
        });
        let after = locations.get(end).copied().flatten().map(|(file, offset)| Anchor { file, offset });
        Self { before, after }
    }

    fn any(&self) -> bool {
        self.before.is_some() || self.after.is_some()
    }
}

/// Fetches one range of a file (its hash and chunk list) from upstream, verified against its
/// chunk list: as a delta against the stored bytes around it when there are any (the bytes are
/// returned), else whole (written with `write` as they come, each piece checked first).
async fn fetch_range(
    connection: &Connection,
    upstream: &str,
    (hash, chunks): (&[u8; 32], &[Chunk]),
    range: Range,
    anchors: Anchors,
    ctx: &SyncContext,
    write: &mut client::Writer<'_, SyncError>,
) -> Result<Landed, SyncError> {
    let received = |n: usize| ctx.metrics.received_bytes.get_or_create(&label("peer", upstream)).inc_by(n as u64);
    if anchors.any() {
        let request = Request::RangeAgainst {
            file: *hash,
            offset: range.offset,
            len: range.len,
            before: anchors.before,
            after: anchors.after,
        };
        let limit = u64::from(range.len) + u64::from(range.len) / 8 + 64;
        match transport::fetch(connection, &request, limit, ctx.pace).await {
            Ok(encoded) => {
                if let Some(l) = &ctx.limiter {
                    l.take(encoded.len() as u64).await;
                }
                received(encoded.len());
                let (store, len) = (ctx.store.clone(), range.len as usize);
                let rebuilt = tokio::task::spawn_blocking(move || {
                    let read = |anchor: Option<Anchor>, ends: bool| {
                        let a = anchor?;
                        let start = if ends { a.offset.checked_sub(len as u64)? } else { a.offset };
                        store.read_stored(&a.file, start, len)
                    };
                    let (before, after) = (read(anchors.before, false), read(anchors.after, true));
                    let base = delta::aligned_base(
                        before.as_deref().unwrap_or_default(),
                        after.as_deref().unwrap_or_default(),
                        len,
                    );
                    delta::apply(&base, &encoded, len)
                })
                .await
                .map_err(|e| SyncError::Content(e.to_string()))?;
                // A delta that does not rebuild the range (this side's or upstream's copy of a
                // base differs) costs one more request: the range whole.
                match rebuilt.map(|bytes| chunking::verify_range(chunks, range, bytes)) {
                    Ok(Ok(verified)) => return Ok(Landed::Bytes(verified)),
                    Ok(Err(i)) => tracing::warn!(
                        file = hex(hash),
                        "chunk {i} rebuilt from a delta does not match; fetching the range whole"
                    ),
                    Err(e) => tracing::warn!(
                        file = hex(hash),
                        "a range's delta from {upstream}: {e}; fetching the range whole"
                    ),
                }
            }
            // An upstream that predates deltas of ranges.
            Err(TransportError::Remote { code: ErrorCode::BadRequest, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let mut reported = false;
    loop {
        if let Some(l) = &ctx.limiter {
            l.take(u64::from(range.len)).await;
        }
        let stopped = match client::stream_range(connection, ctx.pace, hash, chunks, range, write).await {
            Ok(verified) => {
                received(range.len as usize);
                return Ok(Landed::Written(verified));
            }
            Err(RangeFailure::Transport(e)) => return Err(e.into()),
            Err(RangeFailure::Write(e)) => return Err(e),
            Err(RangeFailure::Mismatch(i)) => {
                received(range.len as usize);
                i
            }
        };
        // Once: upstream checks its copy (removing a damaged one), then the range is asked
        // again.
        if !reported && client::report_damaged(connection, hash, &range, ctx.pace).await {
            reported = true;
            continue;
        }
        ctx.metrics.refused("chunk");
        return Err(SyncError::Content(format!(
            "chunk {stopped} of file {} from {upstream} does not match its signed hash",
            hex(hash)
        )));
    }
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
    let (first, start, last, stop) = chunking::covering(&info.chunks, offset, offset + u64::from(len));
    let range = Range {
        first,
        count: last - first,
        offset: start,
        len: u32::try_from(stop - start).map_err(|e| SyncError::Content(e.to_string()))?,
    };
    let upstream = transport::peer_label(connection);
    let mut bytes = vec![0u8; range.len as usize];
    let mut write = |at: u64, piece: &[u8]| {
        let at = usize::try_from(at - start).expect("within the range");
        bytes[at..at + piece.len()].copy_from_slice(piece);
        Ok(())
    };
    let landed =
        fetch_range(connection, &upstream, (hash, &info.chunks), range, Anchors::default(), ctx, &mut write).await?;
    let bytes = match landed {
        Landed::Bytes(verified) => verified.into_inner().bytes,
        Landed::Written(_) => bytes,
    };
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
        // Clients asking for its ranges meanwhile are answered as they land.
        ctx.store.landings().expect(hash, info.chunks.len());
        let me = self.clone();
        tokio::spawn(async move {
            let upstream = transport::peer_label(&connection);
            // Copies, not links: clients are answered from the partial copy as its chunks land.
            let result =
                fetch_files(&connection, &upstream, &[(hash, info.clone())], false, &ctx).await.map(|(got, _)| got);
            match result {
                Ok(_) => {
                    let store = ctx.store.clone();
                    if let Err(e) = blocking(move || store.add_complete(&[(hash, info)])).await {
                        tracing::warn!(file = hex(&hash), "recording a fetched file failed: {e}");
                    }
                }
                Err(e) => tracing::warn!(file = hex(&hash), "fetching a file for a client failed: {e}"),
            }
            ctx.store.landings().end(&hash);
            me.0.lock().expect("not poisoned").remove(&hash);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use outpost_protocol::chunking::noise;

    fn stored(store: &Store, data: &[u8]) -> ([u8; 32], FileInfo) {
        let c = chunking::chunk(data, |_, _| Ok(())).unwrap();
        let info = FileInfo { size: c.size, chunks: c.chunks };
        store.put_file(&c.file, &info, &mut &data[..]).unwrap();
        store.add_complete(&[(c.file, info.clone())]).unwrap();
        (c.file, info)
    }

    /// A new version's unchanged runs are planned as links, or as copies when linking is off
    /// or the file would need more links than allowed; the same chunks are reused either way.
    #[test]
    fn unchanged_runs_are_linked_unless_there_would_be_too_many_links() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let old = noise(600_000, 1);
        stored(&store, &old);
        let mut new = old;
        for k in 0..4 {
            new[50_000 + k * 150_000..50_000 + k * 150_000 + 100].copy_from_slice(&noise(100, 2 + k as u64));
        }
        let c = chunking::chunk(new.as_slice(), |_, _| Ok(())).unwrap();
        let info = FileInfo { size: c.size, chunks: c.chunks };
        let plan = |link, max| prepare_at_most(&store, c.file, info.clone(), link, max).unwrap();
        let linked = plan(true, MAX_LINKS);
        let links = linked.links.as_ref().expect("linked");
        assert!(links.links().len() >= 5 && linked.runs.is_empty(), "{} links", links.links().len());
        assert!(linked.reused > 0);
        drop(linked);
        for (link, max) in [(true, 4), (false, MAX_LINKS)] {
            let copied = plan(link, max);
            assert!(copied.links.is_none() && copied.runs.len() >= 5, "link {link}, at most {max}");
            let reused = copied.reused;
            drop(copied);
            assert_eq!(reused, plan(true, MAX_LINKS).reused, "the same chunks reused");
        }
    }
}
