//! A repository's content store: every file of every package as a blob named by its BLAKE3,
//! and the small things in redb (package records, each file's signed chunk list, where each
//! chunk can be found, signed snapshots, the current pointer).
//!
//! Layout of a data folder:
//! ```text
//! blobs/ab/ab12…ef    complete files, named by BLAKE3 (first byte as folder); a file that
//!                     borrows bytes from others holds their links after its last byte
//!                     ([`links`])
//! partial/ab12…ef     files being fetched (kept across restarts: a sync resumes)
//! tmp/                uploads being received
//! state.redb          records, chunk lists, chunk locations, snapshots, current snapshot
//! ```
//! A file is assembled in `partial/` from verified chunks (fetched, copied from files the
//! store already has, or linked to them: see [`links`]), renamed into `blobs/` when complete, and made durable in one batch
//! ([`Store::sync`]) before the snapshot that needs it becomes current: a crash at any instant
//! leaves the old current snapshot or the new one, never a mix. Chunks are verified when they
//! are read, unless this process wrote them from verified bytes or read and verified them
//! within [`CHECKED_FOR`] (every receiver verifies every chunk against the signed chunk list
//! too; this check finds a file damaged on the disk, and finds it again within that time); a
//! damaged file is removed (and fetched again by an edge). The store is
//! shared (`Arc`) between the actors and the tasks that serve clients: redb takes concurrent
//! readers and one writer; a blob's bytes never change once in place (garbage collection may
//! write into a file the bytes it borrowed, the same bytes, and then cut its links off).

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use outpost_protocol::chunking::{self, Chunk, MAX_RANGE};
use outpost_protocol::hex::{hex, parse_hex};
use outpost_protocol::package::{Manifest, PackageRecord};
use outpost_protocol::snapshot::SignedSnapshot;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

const RECORDS: TableDefinition<'static, &[u8; 32], &[u8]> = TableDefinition::new("records");
const FILES: TableDefinition<'static, &[u8; 32], &[u8]> = TableDefinition::new("files");
const CHUNKS: TableDefinition<'static, &[u8; 32], (&[u8; 32], u64)> = TableDefinition::new("chunks");
const SNAPSHOTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("snapshots");
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
const CURRENT: &str = "current";
const ROLE: &str = "role";
const LINEAGE: &str = "lineage";

/// A file's size and signed chunk list, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileInfo {
    /// Size in bytes.
    pub size: u64,
    /// Chunks in order.
    pub chunks: Vec<Chunk>,
}

#[derive(Serialize, Deserialize)]
enum FileInfoWire {
    V1(FileInfo),
}

impl FileInfo {
    fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&FileInfoWire::V1(self.clone())).expect("encoding to a Vec cannot fail")
    }

    fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let FileInfoWire::V1(f) = postcard::from_bytes(bytes).map_err(db_err)?;
        Ok(f)
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Disk I/O.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    /// The database.
    #[error("state database: {0}")]
    Db(String),
    /// The state database is damaged.
    #[error(
        "{0}. On an edge: `outpost repo fsck --repair` moves it away and the edge fetches its snapshot again from upstream at its next start (the files it holds are kept and reused). On the main repository: restore the data folder from a backup (deploy/README.md, \"Backups and recovery\")"
    )]
    DamagedDatabase(String),
    /// A file whose content does not match its chunk list (it has been removed).
    #[error("file {0} was damaged on disk and has been removed; it will be fetched again")]
    Damaged(String),
    /// Bytes that do not hash to what was expected.
    #[error("{0} does not match its hash")]
    Mismatch(String),
    /// A range request the file cannot satisfy.
    #[error("{0}")]
    BadRange(String),
}

impl From<crate::assembler::AssemblyError> for StoreError {
    fn from(e: crate::assembler::AssemblyError) -> Self {
        match e {
            crate::assembler::AssemblyError::Io { path, error } => Self::Io { path, error },
            other => Self::Db(other.to_string()),
        }
    }
}

impl StoreError {
    /// What went wrong, without this machine's paths: for answers to remote clients.
    pub fn public_reason(&self) -> String {
        match self {
            Self::Io { error: source, .. } => source.to_string(),
            Self::Db(_) | Self::DamagedDatabase(_) => "its state database failed".into(),
            Self::Damaged(h) => format!("file {h} was damaged on disk and has been removed"),
            Self::Mismatch(what) => format!("{what} does not match its hash"),
            Self::BadRange(m) => m.clone(),
        }
    }
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.to_path_buf(), error: source }
}

/// What [`Store::fsck`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsckReport {
    /// Files read and hashed.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Files whose content does not match their name.
    pub damaged: Vec<String>,
    /// Files that borrow bytes from other files ([`links`]).
    pub linked: u64,
    /// Damaged files removed (`--repair`).
    pub removed: u64,
    /// Stray files in the blob folders (not named like a blob).
    pub stray: Vec<PathBuf>,
    /// What the current snapshot needs and the store lacks: package records, chunk lists,
    /// files (`package version: what`).
    pub missing: Vec<String>,
    /// Files of the current snapshot an on-demand edge has not fetched yet (normal: it
    /// fetches each when a client first asks).
    pub not_fetched: u64,
    /// How the store is used (`main`, `edge immediate`, `edge on-demand`), when known.
    pub role: Option<String>,
}

/// What [`Store::gc`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Snapshots dropped beyond the retention.
    pub snapshots_dropped: u64,
    /// Records, chunk lists and chunk locations dropped.
    pub metadata_dropped: u64,
    /// Files removed.
    pub blobs_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Unreferenced files kept because they are younger than the grace period (or a sync
    /// is linking to them).
    pub blobs_in_grace: u64,
    /// Files given back the bytes they borrowed from files removed ([`links`]).
    pub files_made_whole: u64,
}

/// A file being assembled in `partial/`.
#[derive(Debug)]
pub struct PartialFile {
    hash: [u8; 32],
    path: PathBuf,
    file: File,
}

impl PartialFile {
    /// Writes verified bytes at `offset`.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), StoreError> {
        crate::disk::write_at(&self.file, offset, bytes).map_err(io_err(&self.path))
    }

    /// Reads bytes at `offset` (to check what an earlier, interrupted fetch left).
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let mut buf = vec![0u8; len];
        crate::disk::read_exact_at(&self.file, offset, &mut buf).map_err(io_err(&self.path))?;
        Ok(buf)
    }

    /// The file's BLAKE3.
    pub fn hash(&self) -> [u8; 32] {
        self.hash
    }

    /// Records that the file borrows the bytes of `links` from other stored files: their trailer
    /// goes after the file's last byte (see [`links`]). Once, when every other byte is written.
    pub fn append_links(&self, links: &Links) -> Result<(), StoreError> {
        crate::disk::write_at(&self.file, links.size, &links.trailer()).map_err(io_err(&self.path))
    }

    /// Writes the file's data to disk now (so that the final flush has little left to do).
    pub fn sync_data(&self) -> Result<(), StoreError> {
        self.file.sync_data().map_err(io_err(&self.path))
    }
}

impl crate::assembler::Positional for PartialFile {
    fn path(&self) -> &Path {
        &self.path
    }
    fn file(&self) -> &File {
        &self.file
    }
}

/// Where a chunk is stored: the file holding it and its offset there.
pub type ChunkLocation = ([u8; 32], u64);

/// Bytes a stored file holds itself: the file, the offset and the length ([`Store::resolve`]).
pub type ChunkLocationRun = ([u8; 32], u64, u64);

/// Where a stored file's bytes are held, and the pins that keep those files
/// ([`Store::resolve`]).
pub type Resolved = (Vec<ChunkLocationRun>, Vec<Pin>);

/// [`Store::chunk_locations`] turns to the chunk list of another file at most once per this
/// many chunks.
const SOURCE_EVERY: usize = 64;

/// How long a chunk this process verified (reading it, or writing it from verified bytes) is
/// served again without being hashed again.
pub const CHECKED_FOR: Duration = Duration::from_secs(3600);

/// The chunks of each file verified lately by this process.
#[derive(Debug, Default)]
struct Checked(Mutex<HashMap<[u8; 32], CheckedFile>>);

#[derive(Debug)]
struct CheckedFile {
    since: Instant,
    /// Every chunk (the file was written here from verified bytes).
    all: bool,
    /// Or these, one bit each.
    chunks: Vec<u64>,
}

impl Checked {
    fn files(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], CheckedFile>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Which of chunks `first..last` of `file` were verified within [`CHECKED_FOR`].
    fn known(&self, file: &[u8; 32], first: usize, last: usize) -> Vec<bool> {
        let mut files = self.files();
        let Some(f) = files.get(file) else { return vec![false; last - first] };
        if f.since.elapsed() > CHECKED_FOR {
            files.remove(file);
            return vec![false; last - first];
        }
        (first..last).map(|k| f.all || f.chunks.get(k / 64).is_some_and(|w| w & (1 << (k % 64)) != 0)).collect()
    }

    /// Chunks `first..last` of `file` (of `count` chunks) were verified now.
    fn mark(&self, file: &[u8; 32], first: usize, last: usize, count: usize) {
        let mut files = self.files();
        let f = files.entry(*file).or_insert_with(|| CheckedFile {
            since: Instant::now(),
            all: false,
            chunks: vec![0; count.div_ceil(64)],
        });
        for k in first..last {
            if let Some(w) = f.chunks.get_mut(k / 64) {
                *w |= 1 << (k % 64);
            }
        }
    }

    fn mark_all(&self, file: &[u8; 32]) {
        self.files().insert(*file, CheckedFile { since: Instant::now(), all: true, chunks: Vec::new() });
    }

    fn forget(&self, file: &[u8; 32]) {
        self.files().remove(file);
    }
}

/// A content store in a data folder.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    db: Database,
    blobs: AtomicU64,
    bytes: AtomicU64,
    checked: Checked,
    infos: infos::Infos,
    ranges: ranges::Ranges,
    landings: landings::Landings,
    /// The links of files that have some, read once ([`links`]).
    linked: Mutex<HashMap<[u8; 32], Arc<Links>>>,
    pins: Arc<Pins>,
}

/// A stored file opened for reading, with its links when it has any.
#[derive(Debug)]
struct Blob {
    file: File,
    links: Option<Arc<Links>>,
}

impl Store {
    /// Opens (or creates) the store in `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        for dir in ["blobs", "partial"] {
            let d = root.join(dir);
            fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let tmp = root.join("tmp");
        // Uploads that were being received when the process stopped are never part of the store.
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let path = root.join("state.redb");
        let db = crate::db::open(&path).map_err(|e| match e {
            crate::db::OpenError::Damaged { .. } => StoreError::DamagedDatabase(e.to_string()),
            other => StoreError::Db(other.to_string()),
        })?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(RECORDS).map_err(db_err)?;
            txn.open_table(FILES).map_err(db_err)?;
            txn.open_table(CHUNKS).map_err(db_err)?;
            txn.open_table(SNAPSHOTS).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let store = Self {
            root: root.to_path_buf(),
            db,
            blobs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            checked: Checked::default(),
            infos: infos::Infos::default(),
            ranges: ranges::Ranges::default(),
            landings: landings::Landings::default(),
            linked: Mutex::default(),
            pins: Arc::default(),
        };
        let (mut count, mut bytes) = (0, 0);
        store.for_each_blob(|_, _, meta| {
            count += 1;
            bytes += meta.len();
        })?;
        store.blobs.store(count, Ordering::Relaxed);
        store.bytes.store(bytes, Ordering::Relaxed);
        Ok(store)
    }

    /// The data folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Number of files stored and their total size.
    pub fn usage(&self) -> (u64, u64) {
        (self.blobs.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    fn blob_path(&self, hash: &[u8; 32]) -> PathBuf {
        let name = hex(hash);
        self.root.join("blobs").join(&name[..2]).join(name)
    }

    /// True when the complete file is present (not verified).
    pub fn has_file(&self, hash: &[u8; 32]) -> bool {
        self.blob_path(hash).is_file()
    }

    /// Starts (or resumes) assembling a file in `partial/`.
    pub fn partial(&self, hash: &[u8; 32], size: u64) -> Result<(PartialFile, bool), StoreError> {
        let path = self.root.join("partial").join(hex(hash));
        let existed = path.is_file();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        file.set_len(size).map_err(io_err(&path))?;
        Ok((PartialFile { hash: *hash, path, file }, existed))
    }

    /// Moves a complete file from `partial/` into the store. The caller has verified every
    /// chunk; `checked_here` says it did so in this process (none was copied unread from
    /// another file): the file is then served within [`CHECKED_FOR`] without hashing it again.
    /// Not durable until [`Store::sync`].
    pub fn finish(&self, partial: PartialFile, checked_here: bool) -> Result<(), StoreError> {
        let target = self.blob_path(&partial.hash);
        let dir = target.parent().expect("blob paths have a folder");
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let size = partial.file.metadata().map_err(io_err(&partial.path))?.len();
        drop(partial.file);
        fs::rename(&partial.path, &target).map_err(io_err(&target))?;
        if checked_here {
            self.checked.mark_all(&partial.hash);
        } else {
            self.checked.forget(&partial.hash);
        }
        self.blobs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size, Ordering::Relaxed);
        Ok(())
    }

    /// Stores a file read from `reader`, checking each chunk against `info` as it is read.
    /// Returns false (reading nothing) when the file is already stored.
    pub fn put_file(&self, hash: &[u8; 32], info: &FileInfo, reader: &mut dyn Read) -> Result<bool, StoreError> {
        if self.has_file(hash) {
            return Ok(false);
        }
        let (partial, _) = self.partial(hash, info.size)?;
        let mut offset = 0u64;
        let mut buf = Vec::new();
        for c in &info.chunks {
            buf.resize(c.len as usize, 0);
            reader.read_exact(&mut buf).map_err(io_err(&partial.path))?;
            if blake3::hash(&buf).as_bytes() != &c.hash {
                return Err(StoreError::Mismatch(format!("a chunk of file {}", hex(hash))));
            }
            partial.write_at(offset, &buf)?;
            offset += u64::from(c.len);
        }
        self.finish(partial, true)?;
        Ok(true)
    }

    /// Reads `len` bytes at `offset` of a stored file, verifying every chunk they touch
    /// against `info`. A damaged file is removed and reported as [`StoreError::Damaged`]; an
    /// absent one is `None`. The bytes a file borrows from others ([`links`]) are read there; a
    /// chunk that does not match then removes the files it was read from too.
    pub fn read_range(
        &self,
        hash: &[u8; 32],
        info: &FileInfo,
        offset: u64,
        len: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        check_range(info, offset, len)?;
        let Some(blob) = self.open_blob(hash, Some(info.size))? else { return Ok(None) };
        // The chunks covering the range.
        let (first, start, last, stop) = chunking::covering(&info.chunks, offset, offset + u64::from(len));
        let want = usize::try_from(stop - start).expect("at most a range and two chunks");
        let buf = match &blob.links {
            None => {
                // Read into a buffer that is not zeroed first (the file is this call's own: its
                // cursor is free to move).
                let path = self.blob_path(hash);
                let mut buf = Vec::with_capacity(want);
                let file = &blob.file;
                let read = (&*file)
                    .seek(io::SeekFrom::Start(start))
                    .and_then(|_| (&*file).take(want as u64).read_to_end(&mut buf));
                if let Err(e) = read {
                    return Err(StoreError::Io { path, error: e });
                }
                buf
            }
            Some(_) => {
                let mut buf = vec![0u8; want];
                if !self.read_blob(hash, Some(info.size), start, &mut buf)? {
                    // A source it links to is gone: as damaged as a missing byte.
                    buf.clear();
                }
                buf
            }
        };
        if buf.len() < want {
            // Shorter than its chunk list says: damaged like a changed byte.
            drop(blob);
            self.remove_blob(hash);
            return Err(StoreError::Damaged(hex(hash)));
        }
        let known = self.checked.known(hash, first, last);
        let mut at = 0usize;
        for (c, known) in info.chunks[first..last].iter().zip(known) {
            let piece = &buf[at..at + c.len as usize];
            if !known && blake3::hash(piece).as_bytes() != &c.hash {
                if let Some(links) = &blob.links {
                    // The bad bytes may be a source's: it goes too (the files linking to it are
                    // found damaged in turn, and fetched again).
                    for p in links.pieces(start + at as u64, u64::from(c.len)) {
                        if let Some(source) = p.source {
                            self.remove_blob(&source);
                        }
                    }
                }
                drop(blob);
                self.remove_blob(hash);
                return Err(StoreError::Damaged(hex(hash)));
            }
            at += c.len as usize;
        }
        self.checked.mark(hash, first, last, info.chunks.len());
        let skip = usize::try_from(offset - start).expect("within the buffer");
        if skip == 0 && buf.len() == len as usize {
            return Ok(Some(buf));
        }
        Ok(Some(buf[skip..skip + len as usize].to_vec()))
    }

    /// Opens a stored file with its links (`size`, when known, tells a file with links by its
    /// length alone). `None` when it is not stored; a file whose links do not read back is
    /// removed as damaged.
    fn open_blob(&self, hash: &[u8; 32], size: Option<u64>) -> Result<Option<Blob>, StoreError> {
        let path = self.blob_path(hash);
        let mut retried = false;
        loop {
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(StoreError::Io { path, error: e }),
            };
            let len = file.metadata().map_err(io_err(&path))?.len();
            if size.is_some_and(|s| len <= s) {
                return Ok(Some(Blob { file, links: None }));
            }
            if let Some(links) = self.linked_files().get(hash).filter(|l| size.is_none_or(|s| s == l.size)) {
                return Ok(Some(Blob { file, links: Some(links.clone()) }));
            }
            match Links::read(&file, len, size) {
                Ok(None) => return Ok(Some(Blob { file, links: None })),
                Ok(Some(links)) => {
                    let links = Arc::new(links);
                    self.linked_files().insert(*hash, links.clone());
                    return Ok(Some(Blob { file, links: Some(links) }));
                }
                Err(LinksError::Io(e)) => return Err(StoreError::Io { path, error: e }),
                // Garbage collection may have just made the file whole (its trailer cut off):
                // opened again, it reads as it is now.
                Err(LinksError::Damaged(_)) if !retried => retried = true,
                Err(e) => {
                    tracing::error!(file = hex(hash), "{}: {e}; removing it", path.display());
                    drop(file);
                    self.remove_blob(hash);
                    return Err(StoreError::Damaged(hex(hash)));
                }
            }
        }
    }

    fn linked_files(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<Links>>> {
        self.linked.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads `buf.len()` bytes at `offset` of a stored file, unchecked, the bytes it borrows
    /// read from their sources. `false` when the file, or a source it links to, is not stored.
    fn read_blob(&self, hash: &[u8; 32], size: Option<u64>, offset: u64, buf: &mut [u8]) -> Result<bool, StoreError> {
        // Twice at most: garbage collection may make the file whole and remove a source between
        // reading the links and reading the source.
        for attempt in 0..2 {
            let Some(blob) = self.open_blob(hash, size)? else { return Ok(false) };
            let Some(links) = &blob.links else {
                let path = self.blob_path(hash);
                return match crate::disk::read_exact_at(&blob.file, offset, buf) {
                    Ok(()) => Ok(true),
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
                    Err(error) => Err(StoreError::Io { path, error }),
                };
            };
            let mut at = 0usize;
            let mut gone = false;
            for p in links.pieces(offset, buf.len() as u64) {
                let n = usize::try_from(p.len).expect("within the buffer");
                let (file, path) = match p.source {
                    None => (None, self.blob_path(hash)),
                    Some(source) => (Some(source), self.blob_path(&source)),
                };
                let read = match file {
                    None => crate::disk::read_exact_at(&blob.file, p.at, &mut buf[at..at + n]),
                    Some(_) => {
                        File::open(&path).and_then(|f| crate::disk::read_exact_at(&f, p.at, &mut buf[at..at + n]))
                    }
                };
                match read {
                    Ok(()) => at += n,
                    Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::UnexpectedEof) => {
                        gone = true;
                        break;
                    }
                    Err(error) => return Err(StoreError::Io { path, error }),
                }
            }
            if !gone {
                return Ok(true);
            }
            if attempt == 0 {
                self.linked_files().remove(hash);
            }
        }
        Ok(false)
    }

    /// Where bytes `at..at + len` of stored `file` are held: pieces of the file itself and of
    /// the files it links to (`(file, offset, len)` in order), each of those files pinned
    /// against garbage collection while the pins are kept. `None` when the file is not stored,
    /// or it or a source is being removed.
    pub fn resolve(&self, file: &[u8; 32], at: u64, len: u64) -> Result<Option<Resolved>, StoreError> {
        let Some(pin) = self.pins.pin(*file) else { return Ok(None) };
        let size = self.file_info(file)?.map(|i| i.size);
        let Some(blob) = self.open_blob(file, size)? else { return Ok(None) };
        // The bytes a file holds itself end at its size (before its links), or at its end.
        let held = |f: &File| f.metadata().map(|m| m.len()).unwrap_or(0);
        let own_end = blob.links.as_ref().map_or_else(|| held(&blob.file), |l| l.size.min(held(&blob.file)));
        let Some(links) = &blob.links else {
            // A file cut short since its chunks were recorded does not hold them.
            return Ok((at + len <= own_end).then(|| (vec![(*file, at, len)], vec![pin])));
        };
        let mut pins = vec![pin];
        let mut pieces = Vec::new();
        for p in links.pieces(at, len) {
            let source = match p.source {
                None if p.at + p.len <= own_end => *file,
                None => return Ok(None),
                Some(source) => {
                    if !pins.iter().any(|pin| pin.file() == &source) {
                        let Some(pin) = self.pins.pin(source) else { return Ok(None) };
                        pins.push(pin);
                    }
                    match File::open(self.blob_path(&source)) {
                        Ok(f) if p.at + p.len <= held(&f) => source,
                        _ => return Ok(None),
                    }
                }
            };
            pieces.push((source, p.at, p.len));
        }
        Ok(Some((pieces, pins)))
    }

    /// Reads a chunk from wherever the store has it (another file sharing it), verified.
    pub fn local_chunk(&self, chunk: &Chunk) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(CHUNKS).map_err(db_err)?;
        let Some(loc) = t.get(&chunk.hash).map_err(db_err)? else { return Ok(None) };
        let (file, offset) = (*loc.value().0, loc.value().1);
        drop(t);
        let mut buf = vec![0u8; chunk.len as usize];
        let read = self.read_blob(&file, None, offset, &mut buf);
        if !matches!(read, Ok(true)) || blake3::hash(&buf).as_bytes() != &chunk.hash {
            return Ok(None);
        }
        Ok(Some(buf))
    }

    /// Where each of `chunks` is stored, if anywhere. A chunk found in a file is looked for
    /// next in that file's chunk list (a new version of a file shares most of its chunks with
    /// the old one, in order): the index is searched only for the chunks not found there,
    /// instead of for every chunk. Every chunk of an indexed file is in the index (at that
    /// file or at another holding it), so what is found either way is indexed. One read
    /// transaction for the index.
    pub fn chunk_locations(&self, chunks: &[Chunk]) -> Result<Vec<Option<ChunkLocation>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(CHUNKS).map_err(db_err)?;
        // The file the last chunk found in the index is in (none yet), and its chunks'
        // offsets; switched at most once per [`SOURCE_EVERY`] chunks (reading a chunk list
        // costs many look-ups).
        let (mut source, mut offsets): ([u8; 32], HashMap<[u8; 32], u64>) = ([0; 32], HashMap::new());
        let mut switches = chunks.len() / SOURCE_EVERY + 1;
        let mut found = Vec::with_capacity(chunks.len());
        for chunk in chunks {
            if let Some(&at) = offsets.get(&chunk.hash) {
                found.push(Some((source, at)));
                continue;
            }
            let location = t.get(&chunk.hash).map_err(db_err)?.map(|l| (*l.value().0, l.value().1));
            if let Some((file, _)) = location
                && switches > 0
                && (offsets.is_empty() || source != file)
                && let Some(info) = self.file_info(&file)?
            {
                switches -= 1;
                source = file;
                offsets = info.chunks.iter().map(|c| c.hash).zip(chunking::offsets(&info.chunks)).collect();
            }
            found.push(location);
        }
        Ok(found)
    }

    /// The ranges served most recently, held in memory for the clients asking for the same
    /// bytes (see [`Ranges`]).
    pub fn ranges(&self) -> &Ranges {
        &self.ranges
    }

    /// The files being fetched in the background for clients, and which of their chunks have
    /// landed in their partial copies (see [`Landings`]).
    pub fn landings(&self) -> &Landings {
        &self.landings
    }

    /// Reads `len` bytes at `offset` of `file`'s partial copy, whose chunks there have landed
    /// (checked against the chunk list when they were written: [`Landings::wait`]). `None`
    /// when the partial copy is gone (made whole and moved into place since).
    pub fn read_landed(
        &self,
        file: &[u8; 32],
        info: &FileInfo,
        offset: u64,
        len: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        check_range(info, offset, len)?;
        let path = self.root.join("partial").join(hex(file));
        let f = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::Io { path, error: e }),
        };
        let mut buf = vec![0u8; len as usize];
        crate::disk::read_exact_at(&f, offset, &mut buf).map_err(io_err(&path))?;
        Ok(Some(buf))
    }

    /// The chunk list of `file` when it is at hand in memory (no database read).
    pub fn cached_file_info(&self, file: &[u8; 32]) -> Option<Arc<FileInfo>> {
        self.infos.get(file)
    }

    /// Forgets that this process verified `file` (and the ranges of it held in memory): its
    /// next reads are checked again.
    pub fn recheck(&self, file: &[u8; 32]) {
        self.checked.forget(file);
        self.ranges.forget(file);
    }

    /// True when `file` is stored whole and its chunks are indexed (a sync that stopped between
    /// moving a file into place and committing leaves one stored but not indexed).
    pub fn has_indexed_file(&self, file: &[u8; 32]) -> Result<bool, StoreError> {
        if !self.has_file(file) {
            return Ok(false);
        }
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(FILES).map_err(db_err)?;
        Ok(t.get(file).map_err(db_err)?.is_some())
    }

    /// Opens a stored file for reading its own bytes (`None` when it is not stored): only the
    /// pieces [`Store::resolve`] says it holds are its bytes.
    pub fn open_stored(&self, file: &[u8; 32]) -> Option<File> {
        File::open(self.blob_path(file)).ok()
    }

    /// Reads `len` bytes of a stored file at `offset` (through its links), unchecked (the
    /// caller checks chunk hashes). `None` when the file is not stored or too short.
    pub fn read_stored(&self, file: &[u8; 32], offset: u64, len: usize) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; len];
        matches!(self.read_blob(file, None, offset, &mut buf), Ok(true)).then_some(buf)
    }

    fn remove_blob(&self, hash: &[u8; 32]) -> u64 {
        self.checked.forget(hash);
        self.ranges.forget(hash);
        self.linked_files().remove(hash);
        let path = self.blob_path(hash);
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if fs::remove_file(&path).is_ok() {
            self.blobs.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(len, Ordering::Relaxed);
        }
        len
    }

    /// Makes every file written so far durable (one file-system flush, not one per file).
    pub fn sync(&self) -> Result<(), StoreError> {
        let blobs = self.root.join("blobs");
        #[cfg(unix)]
        {
            let dir = File::open(&blobs).map_err(io_err(&blobs))?;
            rustix::fs::syncfs(&dir).map_err(|e| StoreError::Io { path: blobs.clone(), error: e.into() })?;
        }
        // Windows cannot open a folder as a file to flush it, nor flush a volume without
        // privileges. Repositories, which must be durable before they serve, run on Linux; on
        // Windows the store only holds what `repo pull` fetched, verified again when used.
        #[cfg(not(unix))]
        let _ = &blobs;
        Ok(())
    }

    /// A package record by manifest hash.
    pub fn record(&self, manifest: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(RECORDS).map_err(db_err)?;
        Ok(t.get(manifest).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// A file's size and chunk list.
    pub fn file_info(&self, file: &[u8; 32]) -> Result<Option<Arc<FileInfo>>, StoreError> {
        if let Some(info) = self.infos.get(file) {
            return Ok(Some(info));
        }
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(FILES).map_err(db_err)?;
        let Some(info) = t.get(file).map_err(db_err)?.map(|v| FileInfo::decode(v.value())).transpose()? else {
            return Ok(None);
        };
        let info = Arc::new(info);
        self.infos.put(*file, info.clone());
        Ok(Some(info))
    }

    /// Stores records and the files' chunk lists and locations (for `complete` files), and
    /// when `snapshot` is given makes it current, in one transaction after flushing the blobs.
    pub fn commit(
        &self,
        records: &[([u8; 32], Vec<u8>)],
        files: &[([u8; 32], FileInfo)],
        complete: &[[u8; 32]],
        snapshot: Option<(u64, &SignedSnapshot)>,
    ) -> Result<(), StoreError> {
        if snapshot.is_some() {
            self.sync()?;
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(RECORDS).map_err(db_err)?;
            for (k, v) in records {
                t.insert(k, v.as_slice()).map_err(db_err)?;
            }
            // Chunk lists never change (files are named by their hash): those already here stay.
            let mut t = txn.open_table(FILES).map_err(db_err)?;
            for (k, info) in files {
                if t.get(k).map_err(db_err)?.is_none() {
                    t.insert(k, info.encode().as_slice()).map_err(db_err)?;
                }
            }
            let mut t = txn.open_table(CHUNKS).map_err(db_err)?;
            let complete: HashSet<&[u8; 32]> = complete.iter().collect();
            for (k, info) in files.iter().filter(|(k, _)| complete.contains(k)) {
                for (c, offset) in info.chunks.iter().zip(chunking::offsets(&info.chunks)) {
                    if t.get(&c.hash).map_err(db_err)?.is_none() {
                        t.insert(&c.hash, (k, offset)).map_err(db_err)?;
                    }
                }
            }
            if let Some((sequence, snapshot)) = snapshot {
                txn.open_table(SNAPSHOTS).map_err(db_err)?.insert(sequence, snapshot.encoded()).map_err(db_err)?;
                txn.open_table(META)
                    .map_err(db_err)?
                    .insert(CURRENT, sequence.to_le_bytes().as_slice())
                    .map_err(db_err)?;
            }
        }
        txn.commit().map_err(db_err)
    }

    /// Records the chunk lists and chunk locations of files just moved into the store, while a
    /// sync is still fetching others: the final commit then has only the snapshot to record.
    /// `known[i]` says chunk `i` is indexed already (found in another file): it is not looked
    /// up. Not durable by itself (no flush): the sync's commit, or any later durable commit,
    /// persists it; lost in a crash before that, it is made again (the file is found stored but
    /// not indexed).
    pub fn index_finished(&self, files: &[FinishedFile]) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(db_err)?;
        txn.set_durability(redb::Durability::None).map_err(db_err)?;
        {
            let mut t = txn.open_table(FILES).map_err(db_err)?;
            for (k, info, _) in files {
                if t.get(k).map_err(db_err)?.is_none() {
                    t.insert(k, info.encode().as_slice()).map_err(db_err)?;
                }
            }
            let mut t = txn.open_table(CHUNKS).map_err(db_err)?;
            for (k, info, known) in files {
                for ((i, c), offset) in info.chunks.iter().enumerate().zip(chunking::offsets(&info.chunks)) {
                    if !known.get(i).copied().unwrap_or(false) && t.get(&c.hash).map_err(db_err)?.is_none() {
                        t.insert(&c.hash, (k, offset)).map_err(db_err)?;
                    }
                }
            }
        }
        txn.commit().map_err(db_err)
    }

    /// Records that complete files are here (chunk locations), outside a snapshot commit (an
    /// on-demand fetch, a repair).
    pub fn add_complete(&self, files: &[([u8; 32], FileInfo)]) -> Result<(), StoreError> {
        let hashes: Vec<[u8; 32]> = files.iter().map(|(h, _)| *h).collect();
        self.commit(&[], files, &hashes, None)
    }

    /// Records how the store is used (`main`, `edge immediate`, `edge on-demand`), so that
    /// maintenance on a stopped node knows what to expect of it.
    pub fn set_role(&self, role: &str) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?.insert(ROLE, role.as_bytes()).map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// Keeps a CA-signed lineage document for the main repository to open at its next start.
    pub fn set_lineage(&self, signed: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        txn.open_table(META).map_err(db_err)?.insert(LINEAGE, signed).map_err(db_err)?;
        txn.commit().map_err(db_err)
    }

    /// The lineage document kept by [`Store::set_lineage`], if any.
    pub fn lineage(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        Ok(meta.get(LINEAGE).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// How the store is used, as recorded by the node that last ran on it.
    pub fn role(&self) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        Ok(meta.get(ROLE).map_err(db_err)?.map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    /// The current snapshot, if any.
    pub fn current(&self) -> Result<Option<SignedSnapshot>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let meta = txn.open_table(META).map_err(db_err)?;
        let Some(seq) = meta.get(CURRENT).map_err(db_err)? else {
            return Ok(None);
        };
        let seq = u64::from_le_bytes(seq.value().try_into().map_err(|_| StoreError::Db("bad current pointer".into()))?);
        let snaps = txn.open_table(SNAPSHOTS).map_err(db_err)?;
        let Some(bytes) = snaps.get(seq).map_err(db_err)? else {
            return Err(StoreError::Db(format!("current snapshot {seq} is missing")));
        };
        SignedSnapshot::decode(bytes.value()).map(Some).map_err(db_err)
    }

    /// Every kept snapshot, oldest first.
    pub fn snapshots(&self) -> Result<Vec<(u64, SignedSnapshot)>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(SNAPSHOTS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            out.push((k.value(), SignedSnapshot::decode(v.value()).map_err(db_err)?));
        }
        Ok(out)
    }

    /// A kept snapshot by the hash of its encoding.
    pub fn snapshot_by_hash(&self, hash: &[u8; 32]) -> Result<Option<SignedSnapshot>, StoreError> {
        Ok(self.snapshots()?.into_iter().rev().map(|(_, s)| s).find(|s| &s.hash() == hash))
    }
}

/// A range asked of a file: at most [`MAX_RANGE`] bytes, within the file.
fn check_range(info: &FileInfo, offset: u64, len: u32) -> Result<(), StoreError> {
    if len > MAX_RANGE || offset.checked_add(u64::from(len)).is_none_or(|end| end > info.size) {
        return Err(StoreError::BadRange(format!("range {offset}+{len} is outside the file ({} bytes)", info.size)));
    }
    Ok(())
}

/// A file just made whole, to index: its hash, chunk list, and which of its chunks are
/// indexed already in other files ([`Store::index_finished`]).
pub type FinishedFile = ([u8; 32], Arc<FileInfo>, Vec<bool>);

mod infos;
mod landings;
pub mod links;
pub use links::{Link, Links, Pin};
use links::{LinksError, Pins};
pub mod ranges;
pub use landings::{Landings, Wait};
pub use ranges::Ranges;
mod maintenance;

#[cfg(test)]
mod tests;
