//! The one chunk assembler: a file is made whole in place from chunks, each checked against
//! the signed chunk list before it is written. The edge's sync, the agent's download and
//! `repo pull` all assemble through it.
//!
//! Assembling is resumable: what the file already holds and still verifies (left by an
//! interrupted attempt) is kept ([`Assembly::keep_verified`]); runs of chunks a store holds
//! verified in other files are copied in without passing through the process
//! ([`Assembly::plan_copy`], [`Assembly::copy_in`]); the rest is
//! fetched as ranges ([`fetch_all`]), a bounded number in flight, each written as soon as it
//! arrives. Only bytes that passed [`chunking::verify_range`] can be written: [`Assembly::write`]
//! takes a [`Verified`] range, and copies come only from files whose every chunk was verified.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use outpost_protocol::chunking::{self, Chunk, Range, RangeBytes};
use outpost_protocol::package::Manifest;
use outpost_protocol::verified::Verified;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinSet;

/// Bytes asked for in one range request.
pub const RANGE_BYTES: u32 = 1024 * 1024;

/// How many more ranges than [`fetch_all`]'s `in_flight` may be asked for at once when they
/// are small (their bytes still within `in_flight` whole ranges').
pub const SMALL_RANGES: usize = 4;

/// A file on disk that is read and written at any offset.
pub trait Positional: Send + Sync + 'static {
    /// Where it is (for messages).
    fn path(&self) -> &Path;
    /// The open file.
    fn file(&self) -> &File;
    /// Reads exactly `buf.len()` bytes at `offset`.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        crate::disk::read_exact_at(self.file(), offset, buf)
    }
    /// Writes all of `bytes` at `offset`.
    fn write_all_at(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        crate::disk::write_at(self.file(), offset, bytes)
    }
    /// How many bytes from the start may hold something written before this attempt (what
    /// [`Assembly::keep_verified`] reads); beyond it the file is known to be empty.
    fn held(&self) -> u64 {
        u64::MAX
    }
}

/// A plain file and its path.
#[derive(Debug)]
pub struct PlainFile {
    path: PathBuf,
    file: File,
    held: u64,
}

impl PlainFile {
    /// Opens (or creates) `path` for assembling a file of `size` bytes; what it holds is kept.
    pub fn open(path: &Path, size: u64) -> io::Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        // A new file holds nothing: reading it back would only make the kernel fill its holes
        // with zeros to be hashed (for a fresh download, as much work as the download).
        let held = file.metadata()?.len().min(size);
        file.set_len(size)?;
        Ok(Self { path: path.to_path_buf(), file, held })
    }
}

impl Positional for PlainFile {
    fn path(&self) -> &Path {
        &self.path
    }
    fn file(&self) -> &File {
        &self.file
    }
    fn held(&self) -> u64 {
        self.held
    }
}

/// Why assembling failed on this side (fetching fails with the caller's own errors).
#[derive(Debug, thiserror::Error)]
pub enum AssemblyError {
    /// The file on disk.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    /// A transfer task stopped abnormally.
    #[error("a transfer task failed: {0}")]
    Task(String),
    /// A fetch answered with another range than the one asked for.
    #[error("{path}: a fetch answered bytes {got} instead of {asked}")]
    WrongRange { path: PathBuf, asked: u64, got: u64 },
}

/// Chunks found already in place or elsewhere, and their bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    /// Chunks.
    pub chunks: u64,
    /// Bytes.
    pub bytes: u64,
}

impl std::ops::AddAssign for Found {
    fn add_assign(&mut self, other: Self) {
        self.chunks += other.chunks;
        self.bytes += other.bytes;
    }
}

/// A file being assembled: its chunk list and which chunks it holds, verified.
#[derive(Debug)]
pub struct Assembly<F> {
    file: F,
    chunks: Vec<Chunk>,
    offsets: Vec<u64>,
    have: Vec<bool>,
}

impl<F: Positional> Assembly<F> {
    /// Starts assembling `file` (already sized) from `chunks`; nothing is assumed present.
    pub fn new(file: F, chunks: Vec<Chunk>) -> Self {
        let offsets = chunking::offsets(&chunks);
        let have = vec![false; chunks.len()];
        Self { file, chunks, offsets, have }
    }

    /// The chunk list.
    pub fn chunks(&self) -> &[Chunk] {
        &self.chunks
    }

    /// Where chunk `i` starts.
    pub fn offset(&self, i: usize) -> u64 {
        self.offsets[i]
    }

    /// True when chunk `i` is in place and verified.
    pub fn has(&self, i: usize) -> bool {
        self.have[i]
    }

    /// The file.
    pub fn file(&self) -> &F {
        &self.file
    }

    /// The file, once assembled.
    pub fn into_file(self) -> F {
        self.file
    }

    fn io(&self) -> impl FnOnce(io::Error) -> AssemblyError + '_ {
        |error| AssemblyError::Io { path: self.file.path().to_path_buf(), error }
    }

    /// Keeps what the file already holds and still verifies, read in runs of up to
    /// [`RANGE_BYTES`] (only as far as the file held anything before: [`Positional::held`]).
    /// Blocking.
    pub fn keep_verified(&mut self) -> Result<Found, AssemblyError> {
        let mut found = Found::default();
        let held = self.file.held();
        // Chunks that end within what the file held.
        let chunks = self.chunks.iter().zip(&self.offsets).take_while(|(c, o)| *o + u64::from(c.len) <= held).count();
        let mut i = 0;
        while i < chunks {
            let mut j = i + 1;
            while j < chunks && self.end(j) - self.offsets[i] <= u64::from(RANGE_BYTES) {
                j += 1;
            }
            let mut bytes = vec![0u8; usize::try_from(self.end(j - 1) - self.offsets[i]).expect("a run fits")];
            self.file.read_exact_at(self.offsets[i], &mut bytes).map_err(self.io())?;
            found += self.mark(i, &bytes);
            i = j;
        }
        Ok(found)
    }

    /// Counts chunks `first..first + count` as present, to be copied in with
    /// [`Assembly::copy_in`] from a stored file that holds them: a store records where a chunk
    /// is only once its file was whole and every chunk verified, so they are not read or
    /// checked again here (a file damaged on disk since is found when it is served, whose
    /// every read is checked).
    pub fn plan_copy(&mut self, first: usize, count: usize) -> Found {
        let mut found = Found::default();
        for k in first..first + count {
            if !self.have[k] {
                self.have[k] = true;
                found.chunks += 1;
                found.bytes += u64::from(self.chunks[k].len);
            }
        }
        found
    }

    /// Copies `len` bytes of `source` at `source_offset` to offset `to` of this file (within
    /// chunks counted with [`Assembly::plan_copy`]), without reading them into this process
    /// ([`crate::disk::copy_range`]). Blocking.
    pub fn copy_in(&self, to: u64, source: &File, source_offset: u64, len: u64) -> Result<(), AssemblyError> {
        crate::disk::copy_range(source, source_offset, self.file.file(), to, len).map_err(self.io())
    }

    /// The ranges still missing, coalesced up to `max` bytes each.
    pub fn missing(&self, max: u32) -> Vec<Range> {
        chunking::missing_ranges(&self.chunks, max, |i| !self.have[i])
    }

    /// Verifies fetched bytes of `range` against this file's chunk list.
    pub fn verify(&self, range: Range, bytes: Vec<u8>) -> Result<Verified<RangeBytes>, usize> {
        chunking::verify_range(&self.chunks, range, bytes)
    }

    /// Writes a verified range in place. Blocking.
    pub fn write(&self, verified: &RangeBytes) -> Result<(), AssemblyError> {
        self.file.write_all_at(verified.range.offset, &verified.bytes).map_err(self.io())
    }

    fn end(&self, i: usize) -> u64 {
        self.offsets[i] + u64::from(self.chunks[i].len)
    }

    /// Marks the chunks from `first` on that `bytes` (laid out from chunk `first`) verifies.
    fn mark(&mut self, first: usize, bytes: &[u8]) -> Found {
        let mut found = Found::default();
        let mut at = 0usize;
        for (i, c) in self.chunks[first..].iter().enumerate() {
            let Some(piece) = bytes.get(at..at + c.len as usize) else { break };
            if !self.have[first + i] && blake3::hash(piece).as_bytes() == &c.hash {
                self.have[first + i] = true;
                found.chunks += 1;
                found.bytes += u64::from(c.len);
            }
            at += c.len as usize;
        }
        found
    }
}

/// What a fetch hands back: a range's verified bytes, to be written, or a range it wrote
/// itself as its bytes came, every chunk verified ([`outpost_protocol::chunking::RangeCheck`]).
#[derive(Debug)]
pub enum Landed {
    /// Bytes to write.
    Bytes(Verified<RangeBytes>),
    /// Already in place.
    Written(Verified<Range>),
}

impl Landed {
    fn range(&self) -> Range {
        match self {
            Self::Bytes(v) => v.range,
            Self::Written(r) => **r,
        }
    }
}

impl From<Verified<RangeBytes>> for Landed {
    fn from(v: Verified<RangeBytes>) -> Self {
        Self::Bytes(v)
    }
}

impl From<Verified<Range>> for Landed {
    fn from(r: Verified<Range>) -> Self {
        Self::Written(r)
    }
}

/// A closed queue holding `items`.
pub fn queue_of<T>(items: Vec<T>) -> UnboundedReceiver<T> {
    let (queue, received) = tokio::sync::mpsc::unbounded_channel();
    for item in items {
        let _ = queue.send(item);
    }
    received
}

/// Fetches every range queued in `jobs`, at most `in_flight` ranges' worth at once (as many
/// bytes as `in_flight` ranges of [`RANGE_BYTES`], and up to [`SMALL_RANGES`] times as many
/// smaller ranges: an update's changed ranges are a tenth of that size, and each costs a round
/// trip), and writes each in its assembly as it arrives; jobs may be queued while others are
/// fetched (the edge plans file after file and fetches the first file's ranges meanwhile), and
/// it ends when the queue is closed and empty ([`queue_of`] makes a closed queue of a list). `fetch` returns the range's
/// bytes verified against the assembly's chunk list (with [`Assembly::verify`]);
/// `written(key, range)` is called after each range is written, in the order they complete.
/// The first error stops the rest; what was written stays.
pub async fn fetch_all<K, F, E, L, Fut>(
    jobs: UnboundedReceiver<(K, Arc<Assembly<F>>, Range)>,
    in_flight: usize,
    fetch: impl Fn(&K, &Arc<Assembly<F>>, Range) -> Fut,
    mut written: impl FnMut(&K, Range) -> Result<(), E>,
) -> Result<(), E>
where
    K: Send + 'static,
    F: Positional,
    E: From<AssemblyError> + Send + 'static,
    L: Into<Landed>,
    Fut: Future<Output = Result<L, E>> + Send + 'static,
{
    let in_flight = in_flight.max(1);
    // In KiB: each range holds its size, rounded up, until it is written. A setting too large
    // to count in is as good as no limit.
    let budget =
        in_flight.saturating_mul((RANGE_BYTES as usize).div_ceil(1024)).min(tokio::sync::Semaphore::MAX_PERMITS);
    let bytes = Arc::new(tokio::sync::Semaphore::new(budget));
    let start = |tasks: &mut JoinSet<Result<(K, Range), E>>, (key, assembly, range): (K, Arc<Assembly<F>>, Range)| {
        let fetched = fetch(&key, &assembly, range);
        let kib = u32::try_from((range.len as usize).div_ceil(1024).clamp(1, budget)).unwrap_or(u32::MAX);
        let bytes = bytes.clone();
        tasks.spawn(async move {
            let _held = bytes.acquire_many_owned(kib).await.map_err(|e| AssemblyError::Task(e.to_string()))?;
            let landed: Landed = fetched.await?.into();
            if landed.range() != range {
                return Err(AssemblyError::WrongRange {
                    path: assembly.file.path().to_path_buf(),
                    asked: range.offset,
                    got: landed.range().offset,
                }
                .into());
            }
            if let Landed::Bytes(verified) = landed {
                tokio::task::spawn_blocking(move || assembly.write(&verified))
                    .await
                    .map_err(|e| AssemblyError::Task(e.to_string()))??;
            }
            Ok::<_, E>((key, range))
        });
    };
    run_queued(jobs, in_flight.saturating_mul(SMALL_RANGES), start, |done: Result<(K, Range), E>| {
        let (key, range) = done?;
        written(&key, range)
    })
    .await
}

/// Runs a task for each item of `queue` as items come, at most `limit` at once (`start` spawns
/// it), and hands each result to `done` in the order they finish. Ends when the queue is closed
/// and every task has finished; the first error stops the rest.
pub async fn run_queued<T, R, E>(
    mut queue: UnboundedReceiver<T>,
    limit: usize,
    mut start: impl FnMut(&mut JoinSet<R>, T),
    mut done: impl FnMut(R) -> Result<(), E>,
) -> Result<(), E>
where
    R: Send + 'static,
    E: From<AssemblyError>,
{
    let mut tasks = JoinSet::new();
    let mut open = true;
    loop {
        let finished = if tasks.is_empty() {
            if !open {
                return Ok(());
            }
            match queue.recv().await {
                Some(item) => start(&mut tasks, item),
                None => open = false,
            }
            continue;
        } else if open && tasks.len() < limit.max(1) {
            tokio::select! {
                item = queue.recv() => {
                    match item {
                        Some(item) => start(&mut tasks, item),
                        None => open = false,
                    }
                    continue;
                }
                Some(finished) = tasks.join_next() => finished,
            }
        } else {
            match tasks.join_next().await {
                Some(finished) => finished,
                None => continue,
            }
        };
        done(finished.map_err(|e| E::from(AssemblyError::Task(e.to_string())))?)?;
    }
}

/// What [`package_folder`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Assembled {
    /// Bytes fetched.
    pub fetched: u64,
    /// Bytes found already verified in the folder.
    pub reused: u64,
}

/// Makes `dir` hold every file of `manifest`, whole and verified, and its control file:
/// what the folder already holds and verifies is kept, the rest fetched with `fetch` (at most
/// `in_flight` ranges at once). `progress(done, total)` follows the bytes in place.
pub async fn package_folder<E, L, Fut>(
    dir: &Path,
    manifest: &Manifest,
    in_flight: usize,
    fetch: impl Fn(&[u8; 32], &Arc<Assembly<PlainFile>>, Range) -> Fut,
    progress: &mut (dyn FnMut(u64, u64) + Send),
) -> Result<Assembled, E>
where
    E: From<AssemblyError> + Send + 'static,
    L: Into<Landed>,
    Fut: Future<Output = Result<L, E>> + Send + 'static,
{
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| AssemblyError::Io { path, error }
    };
    let total = manifest.total_size();
    let mut done = Assembled::default();
    let mut jobs = Vec::new();
    for f in &manifest.files {
        let path = dir.join(&f.path);
        let (chunks, size) = (f.chunks.clone(), f.size);
        let assembly = tokio::task::spawn_blocking(move || {
            let file = PlainFile::open(&path, size).map_err(io(&path))?;
            let mut assembly = Assembly::new(file, chunks);
            let found = assembly.keep_verified()?;
            Ok::<_, AssemblyError>((assembly, found))
        })
        .await
        .map_err(|e| AssemblyError::Task(e.to_string()))?;
        let (assembly, found) = assembly?;
        done.reused += found.bytes;
        let assembly = Arc::new(assembly);
        jobs.extend(assembly.missing(RANGE_BYTES).into_iter().map(|r| (f.blake3, assembly.clone(), r)));
    }
    progress(done.reused, total);
    fetch_all(
        queue_of(jobs),
        in_flight,
        |hash, assembly, range| fetch(hash, assembly, range),
        |_, range| {
            done.fetched += u64::from(range.len);
            progress(done.reused + done.fetched, total);
            Ok::<_, E>(())
        },
    )
    .await?;
    for f in &manifest.files {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.join(&f.path);
            fs::set_permissions(&path, fs::Permissions::from_mode(f.mode)).map_err(io(&path))?;
        }
        #[cfg(not(unix))]
        let _ = f;
    }
    let control = dir.join("WAPT");
    fs::create_dir_all(&control).map_err(io(&control))?;
    fs::write(control.join("control"), manifest.control.to_text()).map_err(io(&control))?;
    Ok(done)
}

#[cfg(test)]
mod tests;
