//! The assembler on real files: what it keeps, what it takes from elsewhere, what it fetches,
//! and that bytes which do not verify never reach the file.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use outpost_protocol::chunking::{self, Chunked, noise};
use outpost_protocol::package::FileEntry;

use super::*;

fn chunked(data: &[u8]) -> Chunked {
    chunking::chunk(data, |_, _| Ok(())).unwrap()
}

fn open(dir: &Path, name: &str, size: u64) -> PlainFile {
    PlainFile::open(&dir.join(name), size).unwrap()
}

#[derive(Debug, thiserror::Error)]
enum TestError {
    #[error(transparent)]
    Assembly(#[from] AssemblyError),
    #[error("chunk {0} does not verify")]
    Mismatch(usize),
}

type Fetched = std::future::Ready<Result<Verified<RangeBytes>, TestError>>;

/// Fetches from `source`, verified, counting the bytes asked for.
fn from(source: Arc<Vec<u8>>, asked: Arc<AtomicUsize>) -> impl Fn(&(), &Arc<Assembly<PlainFile>>, Range) -> Fetched {
    move |_, assembly, range| {
        asked.fetch_add(range.len as usize, Ordering::Relaxed);
        let start = usize::try_from(range.offset).unwrap();
        let bytes = source[start..start + range.len as usize].to_vec();
        std::future::ready(assembly.verify(range, bytes).map_err(TestError::Mismatch))
    }
}

#[tokio::test]
async fn an_interrupted_file_resumes_fetching_only_what_it_lacks() {
    let dir = tempfile::tempdir().unwrap();
    let data = Arc::new(noise(600_000, 1));
    let c = chunked(&data);
    assert!(c.chunks.len() > 20, "enough chunks to cut the file in several ranges");
    // An earlier attempt wrote the first third, then one of its chunks was damaged on disk.
    let third = usize::try_from(chunking::offsets(&c.chunks)[c.chunks.len() / 3]).unwrap();
    let mut left = data[..third].to_vec();
    left[10] ^= 0xff;
    std::fs::write(dir.path().join("f"), &left).unwrap();

    let mut assembly = Assembly::new(open(dir.path(), "f", c.size), c.chunks.clone());
    let kept = assembly.keep_verified().unwrap();
    assert_eq!(kept.bytes, third as u64 - u64::from(c.chunks[0].len), "all but the damaged first chunk kept");
    assert!(!assembly.has(0) && assembly.has(1));
    let missing = assembly.missing(64 * 1024);
    assert_eq!(missing[0].first, 0, "the damaged chunk is fetched again");

    let asked = Arc::new(AtomicUsize::new(0));
    let assembly = Arc::new(assembly);
    let jobs = missing.into_iter().map(|r| ((), assembly.clone(), r)).collect();
    let mut written = 0u64;
    fetch_all(queue_of(jobs), 3, from(data.clone(), asked.clone()), |_, r| {
        written += u64::from(r.len);
        Ok::<_, TestError>(())
    })
    .await
    .unwrap();
    assert_eq!(asked.load(Ordering::Relaxed) as u64, c.size - kept.bytes, "only what was missing was asked for");
    assert_eq!(written, c.size - kept.bytes);
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), *data, "the file is whole");
}

#[test]
fn only_what_the_file_held_before_is_read_back() {
    // Half noise, half zeros: the holes a new or extended file reads as zeros would "verify"
    // as the zero chunks if they were read back (the kernel filling them costs as much as
    // the download).
    let dir = tempfile::tempdir().unwrap();
    let mut data = noise(300_000, 3);
    data.extend(vec![0u8; 300_000]);
    let c = chunked(&data);
    let offsets = chunking::offsets(&c.chunks);
    let zeros = c.chunks.iter().zip(&offsets).filter(|(_, o)| **o >= 300_000).count();
    assert!(zeros > 2, "zero chunks at the end: {zeros}");

    let mut fresh = Assembly::new(open(dir.path(), "new", c.size), c.chunks.clone());
    assert_eq!(fresh.keep_verified().unwrap(), Found::default(), "a new file holds nothing");

    let third = usize::try_from(offsets[c.chunks.len() / 5]).unwrap();
    std::fs::write(dir.path().join("part"), &data[..third]).unwrap();
    let mut part = Assembly::new(open(dir.path(), "part", c.size), c.chunks.clone());
    let kept = part.keep_verified().unwrap();
    assert_eq!(kept.bytes, third as u64, "what was written is kept, the holes after it are not read");
    assert!(!part.has(c.chunks.len() - 1));

    // A file written whole before is read back whole, zero chunks included.
    std::fs::write(dir.path().join("whole"), &data).unwrap();
    let mut whole = Assembly::new(open(dir.path(), "whole", c.size), c.chunks.clone());
    assert_eq!(whole.keep_verified().unwrap().bytes, c.size);
}

#[tokio::test]
async fn bytes_that_do_not_verify_are_never_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(200_000, 2);
    let c = chunked(&data);
    let mut forged = data.clone();
    let second = c.chunks[0].len as usize + 3;
    forged[second] ^= 1;
    let assembly = Arc::new(Assembly::new(open(dir.path(), "f", c.size), c.chunks.clone()));
    let jobs = assembly.missing(RANGE_BYTES).into_iter().map(|r| ((), assembly.clone(), r)).collect();
    let asked = Arc::new(AtomicUsize::new(0));
    let err =
        fetch_all(queue_of(jobs), 2, from(Arc::new(forged), asked), |_, _| Ok::<_, TestError>(())).await.unwrap_err();
    assert!(matches!(err, TestError::Mismatch(1)), "{err}");
    let on_disk = std::fs::read(dir.path().join("f")).unwrap();
    assert!(on_disk.iter().all(|&b| b == 0), "nothing of the forged range reached the file");
}

#[test]
fn runs_copied_from_a_stored_file_land_in_place_and_are_not_fetched() {
    let dir = tempfile::tempdir().unwrap();
    let old = noise(300_000, 3);
    // The new version: five bytes inserted near the start shift everything after them, so the
    // copies are not aligned alike in both files.
    let mut new = old.clone();
    new.splice(1_000..1_000, [1, 2, 3, 4, 5]);
    let c = chunked(&new);
    std::fs::write(dir.path().join("old"), &old).unwrap();
    let source = std::fs::File::open(dir.path().join("old")).unwrap();
    let mut assembly = Assembly::new(open(dir.path(), "f", c.size), c.chunks.clone());
    let offsets = chunking::offsets(&c.chunks);
    // Chunks 2..6 of the new file are bytes offsets[2] - 5.. of the old one.
    let (start, end) = (offsets[2], offsets[6]);
    assert!(start > 1_005, "the run starts after the insertion");
    let found = assembly.plan_copy(2, 4);
    assert_eq!(found, Found { chunks: 4, bytes: end - start });
    assert_eq!(assembly.plan_copy(2, 4), Found::default(), "planned once");
    assembly.copy_in(assembly.offset(2), &source, start - 5, end - start).unwrap();
    let on_disk = std::fs::read(dir.path().join("f")).unwrap();
    let (s, e) = (usize::try_from(start).unwrap(), usize::try_from(end).unwrap());
    assert_eq!(on_disk[s..e], new[s..e], "the run is in place");
    assert!(on_disk[..s].iter().all(|&b| b == 0), "nothing else written");
    let missing = assembly.missing(RANGE_BYTES);
    let covered: Vec<usize> = missing.iter().flat_map(|r| r.first..r.first + r.count).collect();
    assert!(covered.contains(&0) && covered.contains(&6) && !(2..6).any(|i| covered.contains(&i)));
    // A source too short for the run is an error, not a file silently holding zeros.
    let short = std::fs::File::open(dir.path().join("old")).unwrap();
    assert!(assembly.copy_in(assembly.offset(2), &short, old.len() as u64 - 10, end - start).is_err());
}

#[test]
fn ranges_are_copied_whole_at_any_alignment() {
    let dir = tempfile::tempdir().unwrap();
    let data = noise(70_000, 9);
    std::fs::write(dir.path().join("src"), &data).unwrap();
    let src = std::fs::File::open(dir.path().join("src")).unwrap();
    // Same alignment in both (blocks that can be shared), different alignments, short runs
    // within one block, and runs that start and end on block boundaries.
    for (from, to, len) in [(4096, 8192, 40_000), (4100, 8196, 30_000), (7, 12, 60_000), (10, 20, 100), (4090, 4090, 9)]
    {
        let dst = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("dst"))
            .unwrap();
        crate::disk::copy_range(&src, from, &dst, to, len).unwrap();
        let got = std::fs::read(dir.path().join("dst")).unwrap();
        let (f, t, n) = (from as usize, to as usize, len as usize);
        assert_eq!(got.len(), t + n, "{from} -> {to} ({len} bytes)");
        assert_eq!(got[t..], data[f..f + n], "{from} -> {to} ({len} bytes)");
        assert!(got[..t].iter().all(|&b| b == 0));
    }
}

#[tokio::test]
async fn a_package_folder_is_whole_with_its_modes_and_control_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (noise(150_000, 4), noise(70_000, 5));
    let (ca, cb) = (chunked(&a), chunked(&b));
    let entry = |path: &str, c: &Chunked, mode| FileEntry {
        path: path.into(),
        size: c.size,
        mode,
        blake3: c.file,
        chunks: c.chunks.clone(),
    };
    let control = outpost_protocol::control::Control::parse("package: demo\nversion: 1.0-1\n").unwrap();
    let manifest = Manifest { control, files: vec![entry("bin/a", &ca, 0o755), entry("b.txt", &cb, 0o644)] };
    let sources = Arc::new([(ca.file, a.clone()), (cb.file, b.clone())]);
    let mut seen = Vec::new();
    let done = package_folder::<TestError, _, _>(
        dir.path(),
        &manifest,
        2,
        |hash, assembly, range| {
            let data = &sources.iter().find(|(h, _)| h == hash).unwrap().1;
            let start = usize::try_from(range.offset).unwrap();
            let bytes = data[start..start + range.len as usize].to_vec();
            std::future::ready(assembly.verify(range, bytes).map_err(TestError::Mismatch))
        },
        &mut |done, total| seen.push((done, total)),
    )
    .await
    .unwrap();
    assert_eq!((done.fetched, done.reused), (ca.size + cb.size, 0));
    assert_eq!(std::fs::read(dir.path().join("bin/a")).unwrap(), a);
    assert_eq!(std::fs::read(dir.path().join("b.txt")).unwrap(), b);
    let written = std::fs::read_to_string(dir.path().join("WAPT/control")).unwrap();
    assert_eq!(outpost_protocol::control::Control::parse(&written).unwrap(), manifest.control);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("bin/a")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o755);
    }
    assert_eq!(seen.last(), Some(&(ca.size + cb.size, ca.size + cb.size)), "progress reaches the total");
    // Again on the same folder: everything is found in place, nothing fetched.
    let again = package_folder::<TestError, Landed, _>(
        dir.path(),
        &manifest,
        2,
        |_, _, _| std::future::ready(Err(TestError::Mismatch(usize::MAX))),
        &mut |_, _| {},
    )
    .await
    .unwrap();
    assert_eq!((again.fetched, again.reused), (0, ca.size + cb.size));
}

/// How many fetches [`fetch_all`] has under way at most, for a file cut into ranges of
/// `range_bytes` with `in_flight` asked for: each fetch yields a few times before answering, so
/// that every fetch allowed to start does.
async fn most_at_once(data: &Arc<Vec<u8>>, range_bytes: u32, in_flight: usize) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let c = chunked(data);
    let assembly = Arc::new(Assembly::new(open(dir.path(), "f", c.size), c.chunks.clone()));
    let jobs = assembly.missing(range_bytes).into_iter().map(|r| ((), assembly.clone(), r)).collect();
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let fetch = |_: &(), assembly: &Arc<Assembly<PlainFile>>, range: Range| {
        let (assembly, data, now, most) = (assembly.clone(), data.clone(), now.clone(), most.clone());
        async move {
            most.fetch_max(now.fetch_add(1, Ordering::SeqCst) + 1, Ordering::SeqCst);
            for _ in 0..20 {
                tokio::task::yield_now().await;
            }
            now.fetch_sub(1, Ordering::SeqCst);
            let start = usize::try_from(range.offset).unwrap();
            assembly.verify(range, data[start..start + range.len as usize].to_vec()).map_err(TestError::Mismatch)
        }
    };
    fetch_all(queue_of(jobs), in_flight, fetch, |_, _| Ok::<_, TestError>(())).await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("f")).unwrap(), **data, "the file is whole");
    most.load(Ordering::SeqCst)
}

/// Whole ranges are fetched `in_flight` at a time; small ones (an update's) up to
/// [`SMALL_RANGES`] times as many, their bytes within the same budget.
#[tokio::test]
async fn small_ranges_are_fetched_more_at_once_within_the_same_bytes() {
    let data = Arc::new(noise(6 * RANGE_BYTES as usize, 2));
    let whole = most_at_once(&data, RANGE_BYTES, 2).await;
    assert!(whole <= 2, "{whole} whole ranges at once, 2 asked for");
    let small = most_at_once(&data, RANGE_BYTES / 16, 2).await;
    assert!(small > 2 && small <= 2 * SMALL_RANGES, "{small} small ranges at once");
    // A setting too large to count in (a configuration's `concurrency`) is no limit, not a panic.
    let unlimited = most_at_once(&data, RANGE_BYTES / 16, usize::MAX).await;
    assert!(unlimited > 2 * SMALL_RANGES, "{unlimited} small ranges at once with no limit");
}
