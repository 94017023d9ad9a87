use super::*;

use outpost_protocol::chunking::noise;

fn info_of(data: &[u8]) -> ([u8; 32], FileInfo) {
    let c = chunking::chunk(data, |_, _| Ok(())).unwrap();
    (c.file, FileInfo { size: c.size, chunks: c.chunks })
}

#[test]
fn files_are_stored_verified_and_read_by_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let data = noise(300_000, 1);
    let (hash, info) = info_of(&data);
    let mut bad = data.clone();
    bad[100_000] ^= 1;
    assert!(matches!(store.put_file(&hash, &info, &mut bad.as_slice()), Err(StoreError::Mismatch(_))));
    assert!(!store.has_file(&hash));
    assert!(store.put_file(&hash, &info, &mut data.as_slice()).unwrap());
    assert!(!store.put_file(&hash, &info, &mut data.as_slice()).unwrap(), "already there");
    store.add_complete(&[(hash, info.clone())]).unwrap();
    assert_eq!(store.usage(), (1, data.len() as u64));
    for (offset, len) in [(0u64, 10u32), (5000, 100_000), (299_990, 10), (0, 300_000)] {
        let got = store.read_range(&hash, &info, offset, len).unwrap().unwrap();
        assert_eq!(got, data[offset as usize..(offset + u64::from(len)) as usize]);
    }
    assert!(matches!(store.read_range(&hash, &info, 299_999, 2), Err(StoreError::BadRange(_))));
    // Chunks are found in files that share them.
    let second = info.chunks[1];
    assert_eq!(store.local_chunk(&second).unwrap().unwrap().len(), second.len as usize);
    assert!(store.local_chunk(&chunking::Chunk { hash: [9; 32], len: 5 }).unwrap().is_none());

    // Damage on disk: ranges refuse it and the file goes; fsck finds it too.
    let path = store.blob_path(&hash);
    let mut bytes = fs::read(&path).unwrap();
    bytes[200_000] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let report = store.fsck(false, &mut |_| {}).unwrap();
    assert_eq!((report.checked, report.damaged.len()), (1, 1));
    // (This process wrote the file from verified bytes: it checks it again when asked to.)
    store.recheck(&hash);
    assert!(matches!(store.read_range(&hash, &info, 190_000, 20_000), Err(StoreError::Damaged(_))));
    assert!(!store.has_file(&hash));
    assert!(store.read_range(&hash, &info, 0, 10).unwrap().is_none());
    store.put_file(&hash, &info, &mut data.as_slice()).unwrap();
    fs::write(&path, &bytes).unwrap();
    assert_eq!(store.fsck(true, &mut |_| {}).unwrap().removed, 1);
    assert!(!store.has_file(&hash));
    drop(store);
    assert_eq!(Store::open(dir.path()).unwrap().usage(), (0, 0));
    assert_eq!(parse_hex(&hex(&hash)), Some(hash));
    assert_eq!(parse_hex("zz"), None);
}

#[test]
fn chunks_verified_lately_are_served_without_hashing_them_again() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(300_000, 6);
    let (hash, info) = info_of(&data);
    let damage = |store: &Store| {
        let path = store.blob_path(&hash);
        let mut bytes = fs::read(&path).unwrap();
        bytes[200_000] ^= 1;
        fs::write(&path, &bytes).unwrap();
    };
    let store = Store::open(dir.path()).unwrap();
    store.put_file(&hash, &info, &mut data.as_slice()).unwrap();
    // Damaged after this process wrote it from verified bytes: served unchecked (receivers
    // check every chunk) until a receiver reports it.
    damage(&store);
    let served = store.read_range(&hash, &info, 190_000, 20_000).unwrap().unwrap();
    assert_ne!(served, data[190_000..210_000]);
    store.recheck(&hash);
    assert!(matches!(store.read_range(&hash, &info, 190_000, 20_000), Err(StoreError::Damaged(_))));
    assert!(!store.has_file(&hash), "removed");

    // Another process checks every chunk the first time it reads it, then no more.
    store.put_file(&hash, &info, &mut data.as_slice()).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.read_range(&hash, &info, 0, 300_000).unwrap().unwrap(), data);
    damage(&store);
    assert!(store.read_range(&hash, &info, 190_000, 20_000).unwrap().is_some(), "checked a moment ago");
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(matches!(store.read_range(&hash, &info, 190_000, 20_000), Err(StoreError::Damaged(_))));

    // A file assembled partly from copies of other files is checked at its first read.
    let (p, _) = store.partial(&hash, info.size).unwrap();
    p.write_at(0, &data).unwrap();
    store.finish(p, false).unwrap();
    damage(&store);
    assert!(matches!(store.read_range(&hash, &info, 190_000, 20_000), Err(StoreError::Damaged(_))));
}

#[test]
fn partial_files_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(100_000, 2);
    let (hash, info) = info_of(&data);
    {
        let store = Store::open(dir.path()).unwrap();
        let (p, existed) = store.partial(&hash, info.size).unwrap();
        assert!(!existed);
        p.write_at(0, &data[..50_000]).unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let (p, existed) = store.partial(&hash, info.size).unwrap();
    assert!(existed);
    assert_eq!(p.read_at(0, 50_000).unwrap(), data[..50_000]);
    p.write_at(50_000, &data[50_000..]).unwrap();
    store.finish(p, true).unwrap();
    assert_eq!(store.read_range(&hash, &info, 0, 100_000).unwrap().unwrap(), data);
}

fn package(store: &Store, name: &str, content: &[u8]) -> ([u8; 32], [u8; 32]) {
    let (hash, info) = info_of(content);
    store.put_file(&hash, &info, &mut &content[..]).unwrap();
    (record_of(store, name, &hash, &info), hash)
}

/// Records a package of one stored file; returns its manifest hash.
fn record_of(store: &Store, name: &str, hash: &[u8; 32], info: &FileInfo) -> [u8; 32] {
    use outpost_protocol::control::Control;
    use outpost_protocol::package::FileEntry;
    let (hash, info) = (*hash, info.clone());
    let control =
        Control::parse(&format!("package: {name}\nversion: 1\narchitecture: all\nsection: base\npriority: optional\n"))
            .unwrap();
    let file = FileEntry { path: "f".into(), size: info.size, mode: 0o644, blake3: hash, chunks: info.chunks.clone() };
    let manifest = Manifest { control, files: vec![file] }.encode();
    let record = PackageRecord { manifest, signature: vec![], chain: vec![] };
    store.commit(&[(record.hash(), record.encode())], &[(hash, info)], &[hash], None).unwrap();
    record.hash()
}

/// Commits a snapshot of each package of `manifests` in turn (sequences 1, 2, …).
fn snapshots_of(store: &Store, manifests: &[[u8; 32]]) {
    use outpost_protocol::snapshot::{Snapshot, SnapshotEntry};
    let key = outpost_protocol::pki::PrivateKey::generate().unwrap();
    for (seq, m) in (1u64..).zip(manifests) {
        let mut snap = Snapshot::empty("main", seq, 0, 10);
        snap.entries.push(SnapshotEntry { control: vec![], manifest: *m, size: 1 });
        store.commit(&[], &[], &[], Some((seq, &snap.sign(&key, &[])))).unwrap();
    }
}

#[test]
fn gc_drops_what_no_kept_snapshot_references() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (m1, f1) = package(&store, "one", b"first package content");
    let (m2, f2) = package(&store, "two", b"second package content");
    let orphan = b"orphan".to_vec();
    let (oh, oi) = info_of(&orphan);
    store.put_file(&oh, &oi, &mut orphan.as_slice()).unwrap();
    snapshots_of(&store, &[m1, m2]);
    let r = store.gc(1, Duration::from_secs(3600)).unwrap();
    assert_eq!((r.snapshots_dropped, r.blobs_removed, r.blobs_in_grace), (1, 0, 2));
    assert!(store.has_file(&f1) && store.has_file(&oh));
    let r = store.gc(1, Duration::ZERO).unwrap();
    assert_eq!(r.blobs_removed, 2);
    assert!(!store.has_file(&f1) && !store.has_file(&oh) && store.has_file(&f2));
    assert!(store.record(&m1).unwrap().is_none() && store.record(&m2).unwrap().is_some());
    assert!(store.file_info(&f1).unwrap().is_none() && store.file_info(&f2).unwrap().is_some());
    assert_eq!(store.snapshots().unwrap().len(), 1);
    assert_eq!(store.current().unwrap().unwrap().unverified().unwrap().sequence, 2);
}

/// Chunks a dropped version shared with a kept one stay in the index, at the kept file: a new
/// version's sync finds them (and their neighbours through the kept file's chunk list).
#[test]
fn gc_keeps_the_shared_chunks_of_kept_files_indexed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = noise(300_000, 51);
    let mut new = old[..150_000].to_vec();
    new.extend_from_slice(&noise(150_000, 52));
    let (m1, f1) = package(&store, "app", &old);
    let (m2, f2) = package(&store, "app", &new);
    let new_info = store.file_info(&f2).unwrap().unwrap();
    let before = locations_of(&store, &new_info.chunks);
    assert!(before.iter().any(|l| l.is_some_and(|(file, _)| file == f1)), "shared chunks are indexed at the old file");
    snapshots_of(&store, &[m1, m2]);
    let r = store.gc(1, Duration::ZERO).unwrap();
    assert_eq!(r.blobs_removed, 1);
    assert!(!store.has_file(&f1) && store.has_file(&f2));
    let offsets = chunking::offsets(&new_info.chunks);
    for (i, (chunk, location)) in new_info.chunks.iter().zip(locations_of(&store, &new_info.chunks)).enumerate() {
        assert_eq!(location, Some((f2, offsets[i])), "chunk {i} is indexed at the kept file");
        assert!(store.local_chunk(chunk).unwrap().is_some(), "chunk {i} is read from the kept file");
    }
}

/// The chunk lists written by earlier versions, frozen: each must still decode to what it said.
#[test]
fn golden_file_infos_still_decode() {
    let info = FileInfo { size: 5, chunks: vec![Chunk { hash: [3; 32], len: 5 }] };
    let golden = "000501030303030303030303030303030303030303030303030303030303030303030305";
    outpost_protocol::hex::assert_golden("a file's chunk list", &info.encode(), golden);
    assert_eq!(FileInfo::decode(&outpost_protocol::hex::decode(golden).unwrap()).unwrap(), info);
}

#[test]
fn files_indexed_while_a_sync_runs_are_found_at_once_and_kept_by_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (old, new) = (noise(200_000, 21), noise(200_000, 22));
    let (old_hash, old_info) = info_of(&old);
    store.put_file(&old_hash, &old_info, &mut old.as_slice()).unwrap();
    store.add_complete(&[(old_hash, old_info.clone())]).unwrap();
    // A new version sharing its first chunk with the old one: that chunk is known (indexed in
    // the old file) and keeps its location; the others are indexed in the new file.
    let mut data = old[..old_info.chunks[0].len as usize].to_vec();
    data.extend_from_slice(&new);
    let mut chunks = vec![old_info.chunks[0]];
    chunks.extend(info_of(&new).1.chunks);
    let (hash, info) = (*blake3::hash(&data).as_bytes(), FileInfo { size: data.len() as u64, chunks });
    store.put_file(&hash, &info, &mut data.as_slice()).unwrap();
    assert!(!store.has_indexed_file(&hash).unwrap());
    let known = (0..info.chunks.len()).map(|i| i == 0).collect();
    store.index_finished(&[(hash, Arc::new(info.clone()), known)]).unwrap();
    assert!(store.has_indexed_file(&hash).unwrap());
    let locations = locations_of(&store, &info.chunks);
    assert_eq!(locations[0], Some((old_hash, 0)));
    let offsets = chunking::offsets(&info.chunks);
    for (i, location) in locations.iter().enumerate().skip(1) {
        assert_eq!(*location, Some((hash, offsets[i])), "chunk {i}");
    }
    // The sync's commit (nothing left to index) makes it durable with the snapshot.
    store.commit(&[], &[(hash, info.clone())], &[], None).unwrap();
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert!(store.has_indexed_file(&hash).unwrap());
    assert_eq!(locations_of(&store, &info.chunks), locations);
}

/// Where each of `chunks` is stored.
fn locations_of(store: &Store, chunks: &[Chunk]) -> Vec<Option<ChunkLocation>> {
    store.chunk_locations(chunks).unwrap()
}

/// Chunks found through the chunk list of the file the previous chunk was in are where the
/// index would have found them, or in another stored file that holds them: every location
/// given holds the chunk, and exactly the indexed chunks are found.
#[test]
fn chunks_are_located_in_the_files_that_hold_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let stored = |data: &[u8]| {
        let (hash, info) = info_of(data);
        store.put_file(&hash, &info, &mut &data[..]).unwrap();
        store.add_complete(&[(hash, info.clone())]).unwrap();
        (hash, info)
    };
    let (a, b) = (noise(400_000, 31), noise(400_000, 32));
    let (a_hash, a_info) = stored(&a);
    // A file that starts as `a` does and goes on as `b`: its chunks after the first from `b`
    // are indexed in it (they were nowhere before), the shared ones stay at `a`.
    let mut ab = a[..200_000].to_vec();
    ab.extend_from_slice(&b);
    let (ab_hash, _) = stored(&ab);
    // A new version of `ab`, `a`'s start, new bytes, then `b`; and chunks that are nowhere.
    let mut next = a[..200_000].to_vec();
    next.extend_from_slice(&noise(100_000, 33));
    next.extend_from_slice(&b);
    let (_, next_info) = info_of(&next);
    let mut chunks = next_info.chunks;
    chunks.push(Chunk { hash: [0xEE; 32], len: 10 });
    let located = locations_of(&store, &chunks);
    let mut from = HashSet::new();
    for (i, (chunk, location)) in chunks.iter().zip(&located).enumerate() {
        let indexed = store.local_chunk(chunk).unwrap().is_some();
        assert_eq!(location.is_some(), indexed, "chunk {i}: found exactly when indexed");
        if let Some((file, at)) = location {
            let bytes = store.read_stored(file, *at, chunk.len as usize).unwrap();
            assert_eq!(blake3::hash(&bytes).as_bytes(), &chunk.hash, "chunk {i} is where it was said to be");
            from.insert(*file);
        }
    }
    assert_eq!(from, HashSet::from([a_hash, ab_hash]), "found in both files");
    assert!(located.iter().filter(|l| l.is_some()).count() >= a_info.chunks.len() / 2 + 20);
    assert!(located[located.len() - 1].is_none());
}

/// Stores `new`, which differs from the stored `old` only in `changed`, as a sync does: the
/// changed bytes written, the rest linked to `old`.
fn linked_version(store: &Store, old: &[u8; 32], new: &[u8], changed: std::ops::Range<usize>) -> ([u8; 32], FileInfo) {
    let (hash, info) = info_of(new);
    let (partial, _) = store.partial(&hash, info.size).unwrap();
    partial.write_at(changed.start as u64, &new[changed.clone()]).unwrap();
    let links = Links::new(
        info.size,
        vec![
            Link { at: 0, len: changed.start as u64, source: *old, source_at: 0 },
            Link {
                at: changed.end as u64,
                len: (new.len() - changed.end) as u64,
                source: *old,
                source_at: changed.end as u64,
            },
        ],
    );
    partial.append_links(&links).unwrap();
    partial.sync_data().unwrap();
    store.finish(partial, false).unwrap();
    store.add_complete(&[(hash, info.clone())]).unwrap();
    (hash, info)
}

/// Bytes of the disk a stored file takes.
#[cfg(unix)]
fn allocated(store: &Store, hash: &[u8; 32]) -> u64 {
    std::os::unix::fs::MetadataExt::blocks(&fs::metadata(store.blob_path(hash)).unwrap()) * 512
}

#[test]
fn a_file_borrowing_bytes_from_another_reads_whole_and_is_checked_through_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = noise(600_000, 61);
    let (old_hash, old_info) = info_of(&old);
    store.put_file(&old_hash, &old_info, &mut old.as_slice()).unwrap();
    store.add_complete(&[(old_hash, old_info)]).unwrap();
    let mut new = old;
    new[200_000..220_000].copy_from_slice(&noise(20_000, 62));
    let (hash, info) = linked_version(&store, &old_hash, &new, 200_000..220_000);
    let on_disk = fs::metadata(store.blob_path(&hash)).unwrap().len();
    assert!(on_disk > info.size, "the links follow the file's bytes");
    #[cfg(unix)]
    assert!(allocated(&store, &hash) < 100_000, "only the changed bytes are written: {}", allocated(&store, &hash));

    // Every way of reading it gives the new version's bytes.
    for (offset, len) in [(0u64, 600_000u32), (190_000, 40_000), (219_999, 2), (599_000, 1000)] {
        let got = store.read_range(&hash, &info, offset, len).unwrap().unwrap();
        assert_eq!(got, new[offset as usize..(offset + u64::from(len)) as usize], "{offset}+{len}");
    }
    assert_eq!(store.read_stored(&hash, 100_000, 150_000).unwrap(), new[100_000..250_000]);
    let report = store.fsck(false, &mut |_| {}).unwrap();
    assert_eq!((report.checked, report.damaged.len(), report.linked), (2, 0, 1));
    assert_eq!(report.bytes, 1_200_000, "the file's own size, not its trailer, is hashed");

    // What a sync copying or linking from the new file is given: where the bytes really are.
    let (pieces, pins) = store.resolve(&hash, 150_000, 100_000).unwrap().unwrap();
    assert_eq!(pieces, vec![(old_hash, 150_000, 50_000), (hash, 200_000, 20_000), (old_hash, 220_000, 30_000)]);
    assert_eq!(pins.len(), 2);
    // A file cut short does not hold what its chunks said.
    assert!(store.resolve(&old_hash, 500_000, 200_000).unwrap().is_none());

    // Its links damaged on the disk: fsck says so (and leaves it without --repair); a read
    // refuses it and removes it.
    let path = store.blob_path(&hash);
    let mut bytes = fs::read(&path).unwrap();
    let k = bytes.len() - 30;
    bytes[k] ^= 1;
    fs::write(&path, &bytes).unwrap();
    store.linked_files().clear();
    let report = store.fsck(false, &mut |_| {}).unwrap();
    assert_eq!(report.damaged, vec![hex(&hash)]);
    assert!(store.has_file(&hash), "fsck without --repair removes nothing");
    assert!(matches!(store.read_range(&hash, &info, 0, 10), Err(StoreError::Damaged(_))));
    assert!(!store.has_file(&hash) && store.has_file(&old_hash));

    // The file it borrows from gone: reads of the borrowed bytes find it damaged.
    let (hash, info) = linked_version(&store, &old_hash, &new, 200_000..220_000);
    assert_eq!(store.read_range(&hash, &info, 200_000, 1000).unwrap().unwrap(), new[200_000..201_000]);
    fs::remove_file(store.blob_path(&old_hash)).unwrap();
    assert_eq!(store.fsck(false, &mut |_| {}).unwrap().damaged, vec![hex(&hash)]);
    assert!(store.read_stored(&hash, 0, 100).is_none());
    assert!(matches!(store.read_range(&hash, &info, 0, 10), Err(StoreError::Damaged(_))));
    assert!(!store.has_file(&hash));
}

/// A package of `size` bytes in a first snapshot, and its next version, changed in `changed`
/// and borrowing the rest from the first, in a second: the first file's hash, the second's
/// hash and chunk list, and its bytes.
fn two_versions(
    store: &Store,
    size: usize,
    changed: std::ops::Range<usize>,
) -> ([u8; 32], ([u8; 32], FileInfo), Vec<u8>) {
    let old = noise(size, size as u64);
    let (m1, old_hash) = package(store, "app", &old);
    let mut new = old;
    new[changed.clone()].copy_from_slice(&noise(changed.len(), size as u64 + 1));
    let (hash, info) = linked_version(store, &old_hash, &new, changed);
    let m2 = record_of(store, "app", &hash, &info);
    snapshots_of(store, &[m1, m2]);
    (old_hash, (hash, info), new)
}

#[test]
fn gc_gives_a_file_the_bytes_it_borrows_before_removing_their_file_unless_a_sync_holds_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (old_hash, (hash, info), new) = two_versions(&store, 500_000, 300_000..310_000);
    // A sync linking to the old file right now: it stays, and so do the links.
    let held = store.resolve(&old_hash, 0, 1000).unwrap().unwrap();
    let r = store.gc(1, Duration::ZERO).unwrap();
    assert_eq!((r.blobs_removed, r.blobs_in_grace, r.files_made_whole), (0, 1, 0));
    assert!(store.has_file(&old_hash));
    assert!(fs::metadata(store.blob_path(&hash)).unwrap().len() > info.size);
    drop(held);

    let r = store.gc(1, Duration::ZERO).unwrap();
    assert_eq!((r.blobs_removed, r.files_made_whole), (1, 1));
    assert!(!store.has_file(&old_hash));
    assert_eq!(fs::metadata(store.blob_path(&hash)).unwrap().len(), info.size, "no links left");
    assert_eq!(store.read_range(&hash, &info, 0, 500_000).unwrap().unwrap(), new);
    store.recheck(&hash);
    assert_eq!(store.read_range(&hash, &info, 0, 500_000).unwrap().unwrap(), new, "checked from the disk");
    let report = store.fsck(false, &mut |_| {}).unwrap();
    assert_eq!((report.checked, report.damaged.len(), report.linked), (1, 0, 0));
    // Once removed, a file cannot be linked to.
    assert!(store.resolve(&old_hash, 0, 1000).unwrap().is_none());
}

/// A file whose borrowed bytes cannot be copied back (here its source was cut short on the
/// disk; a full disk fails the same way) keeps its links, and garbage collection keeps the
/// source: nothing a kept snapshot needs is removed.
#[test]
fn gc_keeps_a_source_whose_bytes_could_not_be_given_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let (old_hash, (hash, info), new) = two_versions(&store, 400_000, 100_000..110_000);
    fs::OpenOptions::new().write(true).open(store.blob_path(&old_hash)).unwrap().set_len(300_000).unwrap();
    let r = store.gc(1, Duration::ZERO).unwrap();
    assert_eq!((r.blobs_removed, r.files_made_whole), (0, 0));
    assert!(store.has_file(&old_hash), "the source stays");
    assert!(fs::metadata(store.blob_path(&hash)).unwrap().len() > info.size, "the links stay");
    // The file is still read through its links (what its source lost is found damaged there).
    assert_eq!(store.read_range(&hash, &info, 0, 200_000).unwrap().unwrap(), new[..200_000]);
}
