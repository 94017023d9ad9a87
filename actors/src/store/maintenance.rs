//! Maintenance of the content store: whether the current snapshot is whole, `fsck` (every blob
//! checked against its name) and `gc` (what no kept snapshot references goes).

use super::*;

impl Store {
    /// What the current snapshot needs that the store lacks: `(missing, not_fetched)`. On an
    /// on-demand edge absent files are counted in `not_fetched` instead of `missing`.
    pub fn completeness(&self, on_demand: bool) -> Result<(Vec<String>, u64), StoreError> {
        let mut missing = Vec::new();
        let mut not_fetched = 0;
        let Some(signed) = self.current()? else { return Ok((missing, 0)) };
        let snapshot = signed.unverified().map_err(db_err)?;
        let mut seen = HashSet::new();
        // Whether a chunk list is stored, without decoding it.
        let txn = self.db.begin_read().map_err(db_err)?;
        let lists = txn.open_table(FILES).map_err(db_err)?;
        for m in snapshot.manifests() {
            let Some(bytes) = self.record(m)? else {
                missing.push(format!("package record {}", hex(m)));
                continue;
            };
            let manifest = PackageRecord::decode(&bytes)
                .map_err(db_err)
                .and_then(|r| Manifest::decode(&r.manifest).map_err(db_err));
            let Ok(manifest) = manifest else {
                missing.push(format!("package record {} (unreadable)", hex(m)));
                continue;
            };
            let label =
                format!("{} {}", manifest.control.get_or_empty("package"), manifest.control.get_or_empty("version"));
            for f in &manifest.files {
                if !seen.insert(f.blake3) {
                    continue;
                }
                if lists.get(&f.blake3).map_err(db_err)?.is_none() {
                    missing.push(format!("{label}: chunk list of {} ({})", f.path, hex(&f.blake3)));
                } else if !self.has_file(&f.blake3) {
                    if on_demand {
                        not_fetched += 1;
                    } else {
                        missing.push(format!("{label}: file {} ({})", f.path, hex(&f.blake3)));
                    }
                }
            }
        }
        Ok((missing, not_fetched))
    }

    pub(super) fn for_each_blob(
        &self,
        mut f: impl FnMut([u8; 32], PathBuf, fs::Metadata),
    ) -> Result<Vec<PathBuf>, StoreError> {
        let base = self.root.join("blobs");
        let mut stray = Vec::new();
        for dir in fs::read_dir(&base).map_err(io_err(&base))? {
            let dir = dir.map_err(io_err(&base))?.path();
            if !dir.is_dir() {
                stray.push(dir);
                continue;
            }
            for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
                let entry = entry.map_err(io_err(&dir))?;
                let path = entry.path();
                match parse_hex(&entry.file_name().to_string_lossy()) {
                    Some(hash) => {
                        let meta = entry.metadata().map_err(io_err(&path))?;
                        f(hash, path, meta);
                    }
                    None => stray.push(path),
                }
            }
        }
        Ok(stray)
    }

    /// Re-hashes every file, then checks that everything the current snapshot needs is here.
    /// With `repair`, damaged files are removed (an edge fetches them again). `progress` gets
    /// the bytes read so far.
    pub fn fsck(&self, repair: bool, progress: &mut dyn FnMut(u64)) -> Result<FsckReport, StoreError> {
        let mut blobs = Vec::new();
        let stray = self.for_each_blob(|hash, path, _| blobs.push((hash, path)))?;
        let role = self.role()?;
        let mut report = FsckReport { stray, role: role.clone(), ..FsckReport::default() };
        let mut buf = vec![0u8; 1 << 20];
        for (hash, path) in blobs {
            let size = self.file_info(&hash)?.map(|i| i.size);
            // Through its links: the bytes it borrows are hashed where they are.
            let file = match File::open(&path) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::Io { path, error: e }),
            };
            let on_disk = file.metadata().map_err(io_err(&path))?.len();
            let links = match Links::read(&file, on_disk, size) {
                Ok(links) => links,
                Err(LinksError::Io(e)) => return Err(StoreError::Io { path, error: e }),
                Err(e) => {
                    tracing::error!(file = hex(&hash), "{}: {e}", path.display());
                    report.checked += 1;
                    report.damaged.push(hex(&hash));
                    if repair {
                        self.remove_blob(&hash);
                        report.removed += 1;
                    }
                    continue;
                }
            };
            drop(file);
            let len: io::Result<u64> = Ok(links.as_ref().map_or(on_disk, |l| l.size));
            let len = len.map_err(io_err(&path))?;
            report.linked += u64::from(links.is_some());
            let mut hasher = blake3::Hasher::new();
            let mut at = 0u64;
            let mut whole = true;
            while at < len {
                let n = usize::try_from((len - at).min(buf.len() as u64)).expect("at most the buffer");
                if !self.read_blob(&hash, size.or(links.as_ref().map(|l| l.size)), at, &mut buf[..n])? {
                    // Gone meanwhile, or a source it links to is.
                    whole = false;
                    break;
                }
                hasher.update(&buf[..n]);
                at += n as u64;
                report.bytes += n as u64;
                progress(report.bytes);
            }
            report.checked += 1;
            if !whole || hasher.finalize().as_bytes() != &hash {
                report.damaged.push(hex(&hash));
                if repair {
                    self.remove_blob(&hash);
                    report.removed += 1;
                }
            }
        }
        let on_demand = role.as_deref() == Some("edge on-demand");
        (report.missing, report.not_fetched) = self.completeness(on_demand)?;
        Ok(report)
    }

    /// Drops snapshots beyond the newest `keep`, then the records, chunk lists, chunk locations
    /// and files that no kept snapshot references, sparing files younger than `grace` (a sync
    /// or publish in progress writes files before its snapshot is committed).
    pub fn gc(&self, keep: usize, grace: Duration) -> Result<GcReport, StoreError> {
        let mut report = GcReport::default();
        let snapshots = self.snapshots()?;
        let current = self.current()?.map(|s| s.hash());
        let cut = snapshots.len().saturating_sub(keep.max(1));
        let (dropped, kept) = snapshots.split_at(cut);
        let mut manifests = HashSet::new();
        for (_, s) in kept {
            manifests.extend(s.unverified().map_err(db_err)?.manifests().copied());
        }
        let mut files = HashSet::new();
        for m in &manifests {
            let Some(bytes) = self.record(m)? else { continue };
            let Ok(record) = PackageRecord::decode(&bytes) else { continue };
            let Ok(manifest) = Manifest::decode(&record.manifest) else { continue };
            files.extend(manifest.files.iter().map(|f| f.blake3));
        }
        let txn = self.db.begin_write().map_err(db_err)?;
        {
            let mut t = txn.open_table(SNAPSHOTS).map_err(db_err)?;
            for (seq, s) in dropped {
                if Some(s.hash()) != current {
                    t.remove(seq).map_err(db_err)?;
                    report.snapshots_dropped += 1;
                }
            }
            report.metadata_dropped +=
                drop_keys(&mut txn.open_table(RECORDS).map_err(db_err)?, |k| !manifests.contains(k))?;
            report.metadata_dropped += drop_keys(&mut txn.open_table(FILES).map_err(db_err)?, |k| !files.contains(k))?;
            let mut t = txn.open_table(CHUNKS).map_err(db_err)?;
            let stale: HashSet<[u8; 32]> = t
                .iter()
                .map_err(db_err)?
                .filter_map(Result::ok)
                .filter(|(_, v)| !files.contains(v.value().0))
                .map(|(k, _)| *k.value())
                .collect();
            // A chunk a kept file holds too is pointed at that file rather than dropped: every
            // chunk of an indexed file stays in the index (`chunk_locations` counts on it).
            let mut moved: HashMap<[u8; 32], ChunkLocation> = HashMap::new();
            if !stale.is_empty() {
                for entry in txn.open_table(FILES).map_err(db_err)?.iter().map_err(db_err)? {
                    let (file, info) = entry.map_err(db_err)?;
                    let Ok(info) = FileInfo::decode(info.value()) else { continue };
                    for (c, at) in info.chunks.iter().zip(chunking::offsets(&info.chunks)) {
                        if stale.contains(&c.hash) {
                            moved.entry(c.hash).or_insert((*file.value(), at));
                        }
                    }
                }
            }
            for k in &stale {
                match moved.get(k) {
                    Some((file, at)) => t.insert(k, (file, *at)).map(drop),
                    None => t.remove(k).map(drop),
                }
                .map_err(db_err)?;
            }
            report.metadata_dropped += (stale.len() - moved.len()) as u64;
        }
        txn.commit().map_err(db_err)?;
        self.infos.clear();
        let now = SystemTime::now();
        let mut victims = Vec::new();
        self.for_each_blob(|hash, _, meta| {
            if files.contains(&hash) {
                return;
            }
            let age = meta.modified().ok().and_then(|m| now.duration_since(m).ok()).unwrap_or_default();
            if age >= grace {
                victims.push(hash);
            } else {
                report.blobs_in_grace += 1;
            }
        })?;
        // Files that files kept link to are made unneeded first: the linked bytes are copied
        // into the files borrowing them. A victim a sync is linking to right now is spared.
        let unpinned = self.pins.doom(victims.clone());
        report.blobs_in_grace += (victims.len() - unpinned.len()) as u64;
        let doomed: HashSet<[u8; 32]> = unpinned.iter().copied().collect();
        let mut kept_for = HashSet::new();
        let mut borrowers = Vec::new();
        self.for_each_blob(|hash, _, _| {
            if !doomed.contains(&hash) {
                borrowers.push(hash);
            }
        })?;
        for hash in borrowers {
            let size = self.file_info(&hash)?.map(|i| i.size);
            let Ok(Some(Blob { links: Some(links), .. })) = self.open_blob(&hash, size) else { continue };
            let sources: Vec<[u8; 32]> = links.sources().into_iter().filter(|s| doomed.contains(s)).collect();
            if sources.is_empty() {
                continue;
            }
            match self.make_whole(&hash) {
                Ok(()) => report.files_made_whole += 1,
                Err(e) => {
                    tracing::warn!(
                        file = hex(&hash),
                        "copying the bytes a file borrows into it failed, keeping their files: {e}"
                    );
                    kept_for.extend(sources);
                }
            }
        }
        for hash in unpinned.iter().filter(|h| !kept_for.contains(*h)) {
            report.bytes_freed += self.remove_blob(hash);
            report.blobs_removed += 1;
        }
        self.pins.spare(&unpinned);
        // Partial files nothing needs any more.
        if let Ok(entries) = fs::read_dir(self.root.join("partial")) {
            for e in entries.filter_map(Result::ok) {
                let keep = parse_hex(&e.file_name().to_string_lossy()).is_some_and(|h| files.contains(&h));
                let old = e
                    .metadata()
                    .ok()
                    .and_then(|m| m.modified().ok())
                    .and_then(|m| now.duration_since(m).ok())
                    .unwrap_or_default()
                    >= grace;
                if !keep && old {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(report)
    }
}

impl Store {
    /// Copies the bytes a stored file borrows ([`links`]) into it, then cuts off its links: it
    /// holds every byte again. Each step leaves a file that reads the same (the links are cut
    /// only once the copies are on the disk).
    pub(super) fn make_whole(&self, hash: &[u8; 32]) -> Result<(), StoreError> {
        let path = self.blob_path(hash);
        let file = OpenOptions::new().read(true).write(true).open(&path).map_err(io_err(&path))?;
        let len = file.metadata().map_err(io_err(&path))?.len();
        let size = self.file_info(hash)?.map(|i| i.size);
        let Some(links) = Links::read(&file, len, size)
            .map_err(|e| StoreError::Io { path: path.clone(), error: io::Error::other(e.to_string()) })?
        else {
            return Ok(());
        };
        for l in links.links() {
            let source = self.blob_path(&l.source);
            let from = File::open(&source).map_err(io_err(&source))?;
            crate::disk::copy_range(&from, l.source_at, &file, l.at, l.len).map_err(io_err(&path))?;
        }
        file.sync_data().map_err(io_err(&path))?;
        file.set_len(links.size).map_err(io_err(&path))?;
        file.sync_all().map_err(io_err(&path))?;
        self.linked_files().remove(hash);
        self.bytes.fetch_sub(len - links.size, Ordering::Relaxed);
        Ok(())
    }
}

fn drop_keys(
    table: &mut redb::Table<'_, &'static [u8; 32], &'static [u8]>,
    stale: impl Fn(&[u8; 32]) -> bool,
) -> Result<u64, StoreError> {
    let keys: Vec<[u8; 32]> =
        table.iter().map_err(db_err)?.filter_map(Result::ok).map(|(k, _)| *k.value()).filter(|k| stale(k)).collect();
    for k in &keys {
        table.remove(k).map_err(db_err)?;
    }
    Ok(keys.len() as u64)
}
