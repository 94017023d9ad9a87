//! A repository's content store: chunk blobs as files named by their BLAKE3, and the small
//! things (package records, recipes, signed snapshots, the current pointer) in redb.
//!
//! Layout of a data folder:
//! ```text
//! blobs/ab/ab12…ef   chunk blobs, named by BLAKE3 (first byte as folder)
//! tmp/               blobs being written
//! state.redb         records, recipes, snapshots, current snapshot
//! ```
//! A blob is written to `tmp/`, renamed into place, and made durable in one batch
//! ([`Store::sync`]) before the snapshot that needs it becomes current: a crash at any instant
//! leaves the old current snapshot or the new one, never a mix. Blobs are verified against
//! their name whenever they are read; a damaged blob is removed (and fetched again by an
//! edge). The store is shared (`Arc`) between the actors and the tasks that serve clients:
//! redb takes concurrent readers and one writer; blobs are immutable once in place.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use outpost_protocol::chunking::MAX_CHUNK;
use outpost_protocol::package::manifest::hex;
use outpost_protocol::snapshot::SignedSnapshot;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const RECORDS: TableDefinition<'static, &[u8; 32], &[u8]> = TableDefinition::new("records");
const RECIPES: TableDefinition<'static, &[u8; 32], &[u8]> = TableDefinition::new("recipes");
const SNAPSHOTS: TableDefinition<'static, u64, &[u8]> = TableDefinition::new("snapshots");
const META: TableDefinition<'static, &str, &[u8]> = TableDefinition::new("meta");
const CURRENT: &str = "current";

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Disk I/O.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The database.
    #[error("state database: {0}")]
    Db(String),
    /// A blob whose content does not match its name (it has been removed).
    #[error("blob {0} was damaged on disk and has been removed; it will be fetched again")]
    Damaged(String),
    /// Bytes given for a blob that do not hash to its name.
    #[error("blob {0} does not match its hash")]
    Mismatch(String),
    /// A blob larger than a chunk may be.
    #[error("blob of {0} bytes is over the chunk limit")]
    TooLarge(usize),
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Db(e.to_string())
}

/// What [`Store::fsck`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FsckReport {
    /// Blobs read and hashed.
    pub checked: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Blobs whose content does not match their name.
    pub damaged: Vec<String>,
    /// Damaged blobs removed (`--repair`).
    pub removed: u64,
    /// Stray files in the blob folders (not named like a blob).
    pub stray: Vec<PathBuf>,
}

/// What [`Store::gc`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Snapshots dropped beyond the retention.
    pub snapshots_dropped: u64,
    /// Records and recipes dropped.
    pub metadata_dropped: u64,
    /// Blobs removed.
    pub blobs_removed: u64,
    /// Bytes freed.
    pub bytes_freed: u64,
    /// Unreferenced blobs kept because they are younger than the grace period.
    pub blobs_in_grace: u64,
}

/// A content store in a data folder.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    db: Database,
    blobs: AtomicU64,
    bytes: AtomicU64,
}

impl Store {
    /// Opens (or creates) the store in `root`.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        fs::create_dir_all(root.join("blobs")).map_err(io(&root.join("blobs")))?;
        let tmp = root.join("tmp");
        // Leftovers of an interrupted write are never part of the store.
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        let db = Database::create(root.join("state.redb")).map_err(db_err)?;
        let txn = db.begin_write().map_err(db_err)?;
        {
            txn.open_table(RECORDS).map_err(db_err)?;
            txn.open_table(RECIPES).map_err(db_err)?;
            txn.open_table(SNAPSHOTS).map_err(db_err)?;
            txn.open_table(META).map_err(db_err)?;
        }
        txn.commit().map_err(db_err)?;
        let store = Self { root: root.to_path_buf(), db, blobs: AtomicU64::new(0), bytes: AtomicU64::new(0) };
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

    /// Number of blobs and their total size.
    pub fn usage(&self) -> (u64, u64) {
        (self.blobs.load(Ordering::Relaxed), self.bytes.load(Ordering::Relaxed))
    }

    fn blob_path(&self, hash: &[u8; 32]) -> PathBuf {
        let name = hex(hash);
        self.root.join("blobs").join(&name[..2]).join(name)
    }

    /// True when the blob is present (not verified).
    pub fn has_blob(&self, hash: &[u8; 32]) -> bool {
        self.blob_path(hash).is_file()
    }

    /// Stores a blob after checking that `bytes` hash to `hash`. Returns false when it was
    /// already present. Not durable until [`Store::sync`].
    pub fn put_blob(&self, hash: &[u8; 32], bytes: &[u8]) -> Result<bool, StoreError> {
        if bytes.len() > MAX_CHUNK as usize {
            return Err(StoreError::TooLarge(bytes.len()));
        }
        if blake3::hash(bytes).as_bytes() != hash {
            return Err(StoreError::Mismatch(hex(hash)));
        }
        let target = self.blob_path(hash);
        if target.is_file() {
            return Ok(false);
        }
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io { path, source }
        };
        let dir = target.parent().expect("blob paths have a folder");
        fs::create_dir_all(dir).map_err(io(dir))?;
        let temp = self.root.join("tmp").join(format!("{}.{}", hex(hash), std::process::id()));
        let mut file = File::create(&temp).map_err(io(&temp))?;
        file.write_all(bytes).map_err(io(&temp))?;
        drop(file);
        fs::rename(&temp, &target).map_err(io(&target))?;
        self.blobs.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(true)
    }

    /// Reads a blob and checks it against its name. A damaged blob is removed and reported
    /// as [`StoreError::Damaged`]; an absent one is `None`.
    pub fn read_blob(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.blob_path(hash);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(f) => f.take(u64::from(MAX_CHUNK) + 1).read_to_end(&mut bytes),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StoreError::Io { path, source }),
        }
        .map_err(|source| StoreError::Io { path: path.clone(), source })?;
        if blake3::hash(&bytes).as_bytes() != hash {
            self.remove_blob(hash);
            return Err(StoreError::Damaged(hex(hash)));
        }
        Ok(Some(bytes))
    }

    fn remove_blob(&self, hash: &[u8; 32]) -> u64 {
        let path = self.blob_path(hash);
        let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if fs::remove_file(&path).is_ok() {
            self.blobs.fetch_sub(1, Ordering::Relaxed);
            self.bytes.fetch_sub(len, Ordering::Relaxed);
        }
        len
    }

    /// Makes every blob written so far durable (one file-system flush, not one per blob).
    pub fn sync(&self) -> Result<(), StoreError> {
        let dir = File::open(self.root.join("blobs"))
            .map_err(|source| StoreError::Io { path: self.root.join("blobs"), source })?;
        #[cfg(unix)]
        rustix::fs::syncfs(&dir).map_err(|e| StoreError::Io { path: self.root.clone(), source: e.into() })?;
        #[cfg(not(unix))]
        dir.sync_all().map_err(|source| StoreError::Io { path: self.root.clone(), source })?;
        Ok(())
    }

    /// A package record by manifest hash.
    pub fn record(&self, manifest: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(RECORDS, manifest)
    }

    /// A recipe by file hash.
    pub fn recipe(&self, file: &[u8; 32]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(RECIPES, file)
    }

    fn get(
        &self,
        table: TableDefinition<'static, &[u8; 32], &[u8]>,
        key: &[u8; 32],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let txn = self.db.begin_read().map_err(db_err)?;
        let t = txn.open_table(table).map_err(db_err)?;
        Ok(t.get(key).map_err(db_err)?.map(|v| v.value().to_vec()))
    }

    /// Stores records and recipes (one transaction).
    pub fn put_metadata(
        &self,
        records: &[([u8; 32], Vec<u8>)],
        recipes: &[([u8; 32], Vec<u8>)],
    ) -> Result<(), StoreError> {
        self.commit(records, recipes, None)
    }

    /// Stores records and recipes and makes `snapshot` current, in one transaction, after
    /// flushing the blobs to disk. Snapshots beyond the newest `keep` are dropped.
    pub fn commit_snapshot(
        &self,
        records: &[([u8; 32], Vec<u8>)],
        recipes: &[([u8; 32], Vec<u8>)],
        snapshot: &SignedSnapshot,
        sequence: u64,
    ) -> Result<(), StoreError> {
        self.sync()?;
        self.commit(records, recipes, Some((sequence, snapshot)))
    }

    fn commit(
        &self,
        records: &[([u8; 32], Vec<u8>)],
        recipes: &[([u8; 32], Vec<u8>)],
        snapshot: Option<(u64, &SignedSnapshot)>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(RECORDS).map_err(db_err)?;
            for (k, v) in records {
                t.insert(k, v.as_slice()).map_err(db_err)?;
            }
            let mut t = txn.open_table(RECIPES).map_err(db_err)?;
            for (k, v) in recipes {
                t.insert(k, v.as_slice()).map_err(db_err)?;
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

    fn for_each_blob(&self, mut f: impl FnMut([u8; 32], PathBuf, fs::Metadata)) -> Result<Vec<PathBuf>, StoreError> {
        let base = self.root.join("blobs");
        let mut stray = Vec::new();
        let io = |path: PathBuf| move |source| StoreError::Io { path, source };
        for dir in fs::read_dir(&base).map_err(io(base.clone()))? {
            let dir = dir.map_err(io(base.clone()))?.path();
            if !dir.is_dir() {
                stray.push(dir);
                continue;
            }
            for entry in fs::read_dir(&dir).map_err(io(dir.clone()))? {
                let entry = entry.map_err(io(dir.clone()))?;
                let path = entry.path();
                match parse_hex(&entry.file_name().to_string_lossy()) {
                    Some(hash) => {
                        let meta = entry.metadata().map_err(io(path.clone()))?;
                        f(hash, path, meta);
                    }
                    None => stray.push(path),
                }
            }
        }
        Ok(stray)
    }

    /// Re-hashes every blob. With `repair`, damaged blobs are removed (an edge fetches them
    /// again at its next sync). `progress` gets the bytes read so far.
    pub fn fsck(&self, repair: bool, progress: &mut dyn FnMut(u64)) -> Result<FsckReport, StoreError> {
        let mut blobs = Vec::new();
        let stray = self.for_each_blob(|hash, path, meta| blobs.push((hash, path, meta.len())))?;
        let mut report = FsckReport { stray, ..FsckReport::default() };
        for (hash, path, _) in blobs {
            let bytes = fs::read(&path).map_err(|source| StoreError::Io { path: path.clone(), source })?;
            report.checked += 1;
            report.bytes += bytes.len() as u64;
            progress(report.bytes);
            if blake3::hash(&bytes).as_bytes() != &hash {
                report.damaged.push(hex(&hash));
                if repair {
                    self.remove_blob(&hash);
                    report.removed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Drops snapshots beyond the newest `keep`, then the records and recipes and blobs that
    /// no kept snapshot references, sparing blobs younger than `grace` (a sync or publish in
    /// progress writes blobs before its snapshot is committed).
    pub fn gc(&self, keep: usize, grace: Duration) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let snapshots = self.snapshots()?;
        let keep = keep.max(1);
        let current = self.current()?.map(|s| s.hash());
        let (dropped, kept): (Vec<_>, Vec<_>) = {
            let cut = snapshots.len().saturating_sub(keep);
            let (a, b) = snapshots.split_at(cut);
            (a.to_vec(), b.to_vec())
        };
        // Referenced content of the kept snapshots.
        let mut manifests = std::collections::HashSet::new();
        for (_, s) in &kept {
            let snap = s.unverified().map_err(db_err)?;
            manifests.extend(snap.manifests().copied());
        }
        let mut files = std::collections::HashSet::new();
        let mut chunks = std::collections::HashSet::new();
        for m in &manifests {
            let Some(bytes) = self.record(m)? else { continue };
            let Ok(record) = outpost_protocol::package::PackageRecord::decode(&bytes) else { continue };
            let Ok(manifest) = outpost_protocol::package::Manifest::decode(&record.manifest) else { continue };
            for f in manifest.files {
                files.insert(f.blake3);
                if let Some(recipe) = self.recipe(&f.blake3)?
                    && let Ok(r) = outpost_protocol::chunking::Recipe::decode(&recipe, &f.blake3, f.size)
                {
                    chunks.extend(r.chunks.iter().map(|c| c.hash));
                }
            }
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(SNAPSHOTS).map_err(db_err)?;
            for (seq, s) in &dropped {
                if Some(s.hash()) != current {
                    t.remove(seq).map_err(db_err)?;
                    report.snapshots_dropped += 1;
                }
            }
            let mut t = txn.open_table(RECORDS).map_err(db_err)?;
            let stale: Vec<[u8; 32]> = t
                .iter()
                .map_err(db_err)?
                .filter_map(Result::ok)
                .map(|(k, _)| *k.value())
                .filter(|k| !manifests.contains(k))
                .collect();
            for k in &stale {
                t.remove(k).map_err(db_err)?;
            }
            report.metadata_dropped += stale.len() as u64;
            let mut t = txn.open_table(RECIPES).map_err(db_err)?;
            let stale: Vec<[u8; 32]> = t
                .iter()
                .map_err(db_err)?
                .filter_map(Result::ok)
                .map(|(k, _)| *k.value())
                .filter(|k| !files.contains(k))
                .collect();
            for k in &stale {
                t.remove(k).map_err(db_err)?;
            }
            report.metadata_dropped += stale.len() as u64;
        }
        txn.commit().map_err(db_err)?;
        let now = SystemTime::now();
        let mut victims = Vec::new();
        self.for_each_blob(|hash, _, meta| {
            if chunks.contains(&hash) {
                return;
            }
            let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if age >= grace {
                victims.push(hash);
            } else {
                report.blobs_in_grace += 1;
            }
        })?;
        for hash in victims {
            report.bytes_freed += self.remove_blob(&hash);
            report.blobs_removed += 1;
        }
        Ok(report)
    }
}

/// Parses 64 lower-case hex digits.
pub fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_verified_and_damage_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let data = b"some chunk".to_vec();
        let hash = *blake3::hash(&data).as_bytes();
        assert!(matches!(store.put_blob(&[0; 32], &data), Err(StoreError::Mismatch(_))));
        assert!(store.put_blob(&hash, &data).unwrap());
        assert!(!store.put_blob(&hash, &data).unwrap(), "already there");
        store.sync().unwrap();
        assert_eq!(store.read_blob(&hash).unwrap().unwrap(), data);
        assert_eq!(store.usage(), (1, data.len() as u64));
        // Damage it on disk: fsck finds it, repair removes it, reads report it.
        let path = store.blob_path(&hash);
        fs::write(&path, b"some chunK").unwrap();
        let report = store.fsck(false, &mut |_| {}).unwrap();
        assert_eq!((report.checked, report.damaged.len(), report.removed), (1, 1, 0));
        assert!(matches!(store.read_blob(&hash), Err(StoreError::Damaged(_))));
        assert!(!store.has_blob(&hash), "a damaged blob is removed when read");
        fs::write(&path, b"some chunK").unwrap();
        let report = store.fsck(true, &mut |_| {}).unwrap();
        assert_eq!(report.removed, 1);
        assert!(!store.has_blob(&hash));
        // Reopening counts what is there.
        store.put_blob(&hash, &data).unwrap();
        drop(store);
        assert_eq!(Store::open(dir.path()).unwrap().usage(), (1, data.len() as u64));
        assert_eq!(parse_hex(&hex(&hash)), Some(hash));
        assert_eq!(parse_hex("zz"), None);
    }

    fn package(store: &Store, name: &str, content: &[u8]) -> ([u8; 32], [u8; 32]) {
        use outpost_protocol::chunking;
        use outpost_protocol::control::Control;
        use outpost_protocol::package::{FileEntry, Manifest, PackageRecord};
        let recipe = chunking::chunk(content, |h, b| store.put_blob(h, b).map(drop).map_err(io::Error::other)).unwrap();
        let control = Control::parse(&format!(
            "package: {name}\nversion: 1\narchitecture: all\nsection: base\npriority: optional\n"
        ))
        .unwrap();
        let file = FileEntry { path: "f".into(), size: recipe.size, mode: 0o644, blake3: recipe.file };
        let manifest = Manifest { control, files: vec![file] }.encode();
        let record = PackageRecord { manifest, signature: vec![], chain: vec![] };
        store.put_metadata(&[(record.hash(), record.encode())], &[(recipe.file, recipe.encode())]).unwrap();
        (record.hash(), recipe.chunks[0].hash)
    }

    #[test]
    fn gc_drops_what_no_kept_snapshot_references() {
        use outpost_protocol::snapshot::{Snapshot, SnapshotEntry};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let key = outpost_protocol::pki::PrivateKey::generate().unwrap();
        let (m1, c1) = package(&store, "one", b"first package content");
        let (m2, c2) = package(&store, "two", b"second package content");
        let orphan = *blake3::hash(b"orphan").as_bytes();
        store.put_blob(&orphan, b"orphan").unwrap();
        for (seq, m) in [(1u64, m1), (2, m2)] {
            let mut snap = Snapshot::empty("main", seq, 0, 10);
            snap.entries.push(SnapshotEntry { control: vec![], manifest: m, size: 1 });
            store.commit_snapshot(&[], &[], &snap.sign(&key, &[]), seq).unwrap();
        }
        // Within the grace period nothing goes, but it is counted.
        let r = store.gc(1, Duration::from_secs(3600)).unwrap();
        assert_eq!((r.snapshots_dropped, r.blobs_removed, r.blobs_in_grace), (1, 0, 2));
        assert!(store.has_blob(&c1) && store.has_blob(&orphan));
        let r = store.gc(1, Duration::ZERO).unwrap();
        assert_eq!(r.blobs_removed, 2);
        assert!(!store.has_blob(&c1) && !store.has_blob(&orphan) && store.has_blob(&c2));
        assert!(store.record(&m1).unwrap().is_none() && store.record(&m2).unwrap().is_some());
        assert_eq!(store.snapshots().unwrap().len(), 1);
        assert_eq!(store.current().unwrap().unwrap().unverified().unwrap().sequence, 2);
    }
}
