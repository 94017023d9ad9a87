//! Repositories end to end: real `outpost repo main` and `outpost repo edge` processes on
//! 127.0.0.x, real QUIC, real files; faults injected by killing processes, damaging files and
//! serving refused snapshots.

use outpost_actors::clock::unix_now as now;
use std::time::Duration;

use outpost_protocol::package::PackageArchive;
use outpost_protocol::pki;
use outpost_protocol::snapshot::Snapshot;

use crate::cluster::{Cluster, Daemon, blob_files, entry, noise, rogue, signed_by, tampered, wait_for};
use crate::common::{listing, run_in};

const SYNC: Duration = Duration::from_secs(60);

#[test]
fn publish_replicates_down_a_three_level_tree_and_pulls_verify() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let region = c.edge(&[&main.addr], &[]);
    let site = c.edge(&[&region.addr], &[]);
    let big = noise(3_000_000, 1);
    let pkg = c.package("tool", "1.0-1", &[("bin/tool", b"#!/bin/sh\n"), ("data/big.bin", &big)]);
    let seq = c.publish(&pkg, &main.addr);
    assert!(seq >= 2);
    c.wait_sequence(&site.addr, seq, SYNC);

    let status = c.status(&site.addr).unwrap();
    assert_eq!(status["role"], "edge");
    assert_eq!(status["packages"], 1);
    assert_eq!(status["upstream"], region.addr.as_str());
    assert_eq!(status["lag_snapshots"], 0);
    assert_eq!(status["head"]["hash"], c.status(&main.addr).unwrap()["head"]["hash"]);
    let text = c.client(&["repo", "status"], &site.addr).ok().stdout;
    assert!(text.contains("lag:         0 snapshot(s)"), "{text}");

    let pulled = c.client(&["repo", "pull", "tool", "--out", "pulled"], &site.addr).ok();
    let dir = c.dir().join(pulled.stdout.trim());
    assert_eq!(std::fs::read(dir.join("data/big.bin")).unwrap(), big);
    assert!(std::fs::read_to_string(dir.join("WAPT/control")).unwrap().contains("package           : tool"));
    // The site never talked to the main: the region sent it everything.
    assert!(site.metric("outpost_repo_received_bytes_total", &format!("{{peer=\"{}\"}}", region.addr)) > 3_000_000.0);
    assert_eq!(main.metric("outpost_repo_sent_bytes_total", &format!("{{peer=\"{}\"}}", cn(&site))), 0.0);
    let to_region = main.metric("outpost_repo_sent_bytes_total", &format!("{{peer=\"{}\"}}", cn(&region)));
    assert!((3_000_000.0..3_100_000.0).contains(&to_region), "the region got each byte once: {to_region}");

    // Unpublish: the package is gone from every level.
    let out = c.client(&["pkg", "unpublish", "tool=1.0-1"], &main.addr).ok();
    assert!(out.stdout.contains("Removed tool 1.0-1"), "{}", out.stdout);
    c.wait_sequence(&site.addr, seq + 1, SYNC);
    c.client(&["repo", "pull", "tool", "--out", "again"], &site.addr).fails_with("has no package tool");
    c.client(&["pkg", "unpublish", "tool"], &main.addr).fails_with("no package tool in the repository");
}

#[test]
fn a_new_version_sends_only_the_changed_chunks() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &[]);
    let v1 = noise(4_000_000, 7);
    let seq = c.publish(&c.package("big", "1", &[("big.bin", &v1)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let fetched_v1 = edge.metric("outpost_repo_chunks_fetched_total", "");
    let bytes_v1 = edge.metric("outpost_repo_received_bytes_total", &format!("{{peer=\"{}\"}}", main.addr));

    // 5% of the file changes, in four places.
    let mut v2 = v1;
    for k in 0..4 {
        let at = 500_000 + k * 900_000;
        v2[at..at + 50_000].copy_from_slice(&noise(50_000, 100 + k as u64));
    }
    let seq = c.publish(&c.package("big", "2", &[("big.bin", &v2)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let fetched_v2 = edge.metric("outpost_repo_chunks_fetched_total", "") - fetched_v1;
    let bytes_v2 = edge.metric("outpost_repo_received_bytes_total", &format!("{{peer=\"{}\"}}", main.addr)) - bytes_v1;
    assert!(edge.metric("outpost_repo_chunks_deduplicated_total", "") > 150.0);
    assert!(fetched_v2 <= 40.0, "{fetched_v2} chunks fetched for a 5% change of {fetched_v1}");
    assert!(bytes_v2 < 0.12 * bytes_v1, "{bytes_v2} bytes for the update, {bytes_v1} for the first copy");
    // The chunks around each change are not sent whole: their unchanged bytes are copied from
    // the version held (each region cuts two chunks of about 10 kB: 80 kB whole).
    assert!(bytes_v2 < 1.1 * 200_000.0, "{bytes_v2} bytes for 200,000 changed");

    // The files the next version would copy from are cut short behind the edge's back: what
    // cannot be copied is fetched, and the new version is whole.
    for dir in std::fs::read_dir(edge.data.join("blobs")).unwrap() {
        for blob in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            std::fs::OpenOptions::new().write(true).open(blob.unwrap().path()).unwrap().set_len(2_000_000).unwrap();
        }
    }
    let mut v3 = v2;
    v3[100_000..110_000].copy_from_slice(&noise(10_000, 200));
    let fetched_before = edge.metric("outpost_repo_chunks_fetched_total", "");
    let seq = c.publish(&c.package("big", "3", &[("big.bin", &v3)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let fetched_v3 = edge.metric("outpost_repo_chunks_fetched_total", "") - fetched_before;
    assert!(fetched_v3 > 0.4 * fetched_v1, "{fetched_v3} chunks fetched: the half cut off was fetched");
    let pulled = c.client(&["repo", "pull", "big=3", "--out", "p3"], &edge.addr).ok();
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("big.bin")).unwrap(), v3);
}

/// A new version's unchanged bytes are not written again on an edge: the new file borrows them
/// from the version held (its links after its last byte), is served whole from there, to
/// clients and to the edges below, and gets them back when the old version is collected.
#[test]
fn a_new_version_borrows_its_unchanged_bytes_and_gets_them_back_when_the_old_one_is_collected() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let mut edge = c.edge(&[&main.addr], &[]);
    let site = c.edge(&[&edge.addr], &[]);
    let v1 = noise(4_000_000, 41);
    let seq = c.publish(&c.package("big", "1", &[("big.bin", &v1)]), &main.addr);
    c.wait_sequence(&site.addr, seq, SYNC);
    let mut v2 = v1.clone();
    for k in 0..4 {
        let at = 400_000 + k * 900_000;
        v2[at..at + 50_000].copy_from_slice(&noise(50_000, 42 + k as u64));
    }
    let seq = c.publish(&c.package("big", "2", &[("big.bin", &v2)]), &main.addr);
    c.wait_sequence(&site.addr, seq, SYNC);
    for node in [&edge, &site] {
        let meta = std::fs::metadata(blob(&node.data, &v2)).unwrap();
        assert!(meta.len() > v2.len() as u64, "the links follow the bytes: {} bytes", meta.len());
        let written = allocated(&blob(&node.data, &v2));
        assert!(written.is_none_or(|w| w < 1_000_000), "{written:?} bytes written for a 200 kB change of 4 MB");
    }
    // Served whole, from the site (which fetched from the edge's borrowed bytes) and the edge.
    for node in [&site, &edge] {
        let pulled = c.client(&["repo", "pull", "big=2", "--out", "p2"], &node.addr).ok();
        assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("big.bin")).unwrap(), v2);
        std::fs::remove_dir_all(c.dir().join(pulled.stdout.trim())).unwrap();
    }
    // A third version, changed elsewhere: built from both versions held.
    let mut v3 = v2.clone();
    v3[2_000_000..2_020_000].copy_from_slice(&noise(20_000, 49));
    let seq = c.publish(&c.package("big", "3", &[("big.bin", &v3)]), &main.addr);
    c.wait_sequence(&site.addr, seq, SYNC);
    let pulled = c.client(&["repo", "pull", "big=3", "--out", "p3"], &site.addr).ok();
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("big.bin")).unwrap(), v3);

    // Versions 1 and 2 unpublished. Maintenance on the stopped edge: fsck checks the borrowed
    // bytes where they are; gc removes versions 1 and 2, having copied what version 3 borrows
    // from them into it.
    c.client(&["pkg", "unpublish", "big=1"], &main.addr).ok();
    c.client(&["pkg", "unpublish", "big=2"], &main.addr).ok();
    c.wait_sequence(&edge.addr, seq + 2, SYNC);
    edge.stop();
    let data = edge.data.to_string_lossy().to_string();
    let checked = run_in(c.dir(), &["repo", "fsck", "--data", &data]).ok();
    assert!(
        checked.stdout.contains("checked 3 blobs") && checked.stdout.contains("2 file(s) borrow"),
        "{}",
        checked.stdout
    );
    let collected = run_in(c.dir(), &["repo", "gc", "--data", &data, "--keep", "1", "--grace", "0s"]).ok();
    assert!(collected.stdout.contains("removed 2 blob(s)"), "{}", collected.stdout);
    assert!(collected.stdout.contains("bytes 1 file(s) borrowed"), "{}", collected.stdout);
    assert!(!blob(&edge.data, &v1).exists() && !blob(&edge.data, &v2).exists());
    assert_eq!(std::fs::metadata(blob(&edge.data, &v3)).unwrap().len(), v3.len() as u64, "whole, no links");
    let checked = run_in(c.dir(), &["repo", "fsck", "--data", &data]).ok();
    assert!(
        checked.stdout.contains("checked 1 blobs (3.8 MiB): 0 damaged") && !checked.stdout.contains("borrow"),
        "{}",
        checked.stdout
    );
    edge.restart(&[]);
    let pulled = c.client(&["repo", "pull", "big=3", "--out", "p3e"], &edge.addr).ok();
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("big.bin")).unwrap(), v3);
}

/// Where a repository keeps the file of `content`.
fn blob(data: &std::path::Path, content: &[u8]) -> std::path::PathBuf {
    let hash = outpost_protocol::hex::hex(blake3::hash(content).as_bytes());
    data.join("blobs").join(&hash[..2]).join(hash)
}

/// Bytes of the disk a file takes (where the platform says).
fn allocated(path: &std::path::Path) -> Option<u64> {
    #[cfg(unix)]
    return Some(std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(path).unwrap()) * 512);
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

/// More files than the edge plans ahead of those it has finished (64): every one arrives, the
/// first time and as a new version, and the new version's unchanged chunks are copied.
#[test]
fn a_package_of_many_files_is_synced_whole_and_updated_by_its_changes() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &[]);
    let v1: Vec<(String, Vec<u8>)> =
        (0..150u64).map(|i| (format!("files/{i:03}.bin"), noise(80_000, 1_000 + i))).collect();
    let seq = c.publish(&c.package("many", "1", &files_of(&v1)), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    assert_eq!(blob_files(&edge.data), 150);
    let fetched_v1 = edge.metric("outpost_repo_chunks_fetched_total", "");
    let mut v2 = v1;
    for (i, (_, data)) in v2.iter_mut().enumerate() {
        data[40_000..40_100].copy_from_slice(&noise(100, 5_000 + i as u64));
    }
    let seq = c.publish(&c.package("many", "2", &files_of(&v2)), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let fetched_v2 = edge.metric("outpost_repo_chunks_fetched_total", "") - fetched_v1;
    assert!(
        fetched_v2 < 0.6 * fetched_v1,
        "{fetched_v2} chunks fetched for the change, {fetched_v1} for the first copy"
    );
    assert!(edge.metric("outpost_repo_chunks_deduplicated_total", "") > 0.3 * fetched_v1);
    let pulled = c.client(&["repo", "pull", "many=2", "--out", "p2"], &edge.addr).ok();
    for (name, data) in &v2 {
        assert_eq!(&std::fs::read(c.dir().join(pulled.stdout.trim()).join(name)).unwrap(), data, "{name}");
    }
}

/// Named contents as [`Cluster::package`] takes them.
fn files_of(files: &[(String, Vec<u8>)]) -> Vec<(&str, &[u8])> {
    files.iter().map(|(name, data)| (name.as_str(), data.as_slice())).collect()
}

/// The edge's bytes received from `main` so far.
fn received_from(edge: &Daemon, main: &Daemon) -> f64 {
    edge.metric("outpost_repo_received_bytes_total", &format!("{{peer=\"{}\"}}", main.addr))
}

#[test]
fn a_new_version_of_a_large_package_costs_its_change_not_its_chunk_list() {
    let c = Cluster::new();
    let mut main = c.main(&[]);
    let mut edge = c.edge(&[&main.addr], &[]);
    // 60 MB: about 6,000 chunks, a record of more than 150 kB of chunk hashes alone.
    let v1 = noise(60_000_000, 11);
    let hashes = 32.0 * outpost_protocol::chunking::chunk(v1.as_slice(), |_, _| Ok(())).unwrap().chunks.len() as f64;
    assert!(hashes > 150_000.0, "{hashes}");
    let seq = c.publish(&c.package("large", "1", &[("large.bin", &v1)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);

    // One byte changes: at most three chunks (96 KiB) and the record's few new hashes.
    let mut v2 = v1;
    v2[30_000_000] ^= 0x55;
    let before = received_from(&edge, &main);
    let seq = c.publish(&c.package("large", "2", &[("large.bin", &v2)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let update = received_from(&edge, &main) - before;
    assert!(update < 0.75 * hashes, "{update} bytes for a one-byte change; the chunk list alone is {hashes}");
    let pulled = c.client(&["repo", "pull", "large=2", "--out", "p2"], &edge.addr).ok();
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("large.bin")).unwrap(), v2);

    // The main no longer has the record the edge would build the next one from (version 2
    // removed and collected while the edge was stopped): the edge fetches the record whole.
    edge.stop();
    c.client(&["pkg", "unpublish", "large=2"], &main.addr).ok();
    let mut v3 = v2;
    v3[1_000] ^= 0x55;
    let seq = c.publish(&c.package("large", "3", &[("large.bin", &v3)]), &main.addr);
    main.stop();
    let data = main.data.to_string_lossy().to_string();
    run_in(c.dir(), &["repo", "gc", "--data", &data, "--keep", "1", "--grace", "0s"]).ok();
    main.restart(&[]);
    let before = received_from(&edge, &main);
    edge.restart(&[]);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let whole = received_from(&edge, &main) - before;
    assert!(whole > hashes, "{whole} bytes: the record came whole");
    let pulled = c.client(&["repo", "pull", "large=3", "--out", "p3"], &edge.addr).ok();
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("large.bin")).unwrap(), v3);
}

#[test]
fn an_edge_killed_during_a_sync_resumes_without_fetching_again() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let mut edge = c.edge(&[&main.addr], &["--bandwidth", "2MB"]);
    let data = noise(8_000_000, 3);
    let total = outpost_protocol::chunking::chunk(data.as_slice(), |_, _| Ok(())).unwrap().chunks.len() as f64;
    let seq = c.publish(&c.package("slow", "1", &[("payload.bin", &data)]), &main.addr);
    let had = wait_for(SYNC, "the edge to fetch some chunks", || {
        let n = edge.metric("outpost_repo_chunks_fetched_total", "");
        (n >= 50.0).then_some(n)
    });
    edge.kill();
    assert_eq!(blob_files(&edge.data), 0, "killed before the file was complete");
    edge.restart(&[("--bandwidth", &["0"])]);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let fetched = edge.metric("outpost_repo_chunks_fetched_total", "");
    let reused = edge.metric("outpost_repo_chunks_deduplicated_total", "");
    assert!(reused >= had, "the {had} chunks fetched before the kill were kept ({reused} reused)");
    assert_eq!(fetched + reused, total, "every chunk once");
    assert!(fetched < total, "the restarted edge fetched only what it lacked");
    assert_eq!(blob_files(&edge.data), 1);
    let pulled = c.client(&["repo", "pull", "slow", "--out", "p"], &edge.addr).ok();
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("payload.bin")).unwrap(), data);
}

/// An edge killed while it fetches the changed half of a new version resumes: what it fetched
/// is kept, the unchanged half is borrowed from the version held, and nothing crosses twice.
#[test]
fn an_edge_killed_during_an_update_resumes_it_and_borrows_the_unchanged_bytes() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let mut edge = c.edge(&[&main.addr], &[]);
    let v1 = noise(8_000_000, 81);
    let seq = c.publish(&c.package("app", "1", &[("app.bin", &v1)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    edge.restart(&[("--bandwidth", &["1MB"])]);
    let mut v2 = v1;
    v2[..4_000_000].copy_from_slice(&noise(4_000_000, 82));
    let total = outpost_protocol::chunking::chunk(v2.as_slice(), |_, _| Ok(())).unwrap().chunks.len() as f64;
    let seq = c.publish(&c.package("app", "2", &[("app.bin", &v2)]), &main.addr);
    let had = wait_for(SYNC, "the edge to fetch part of the changed half", || {
        let n = edge.metric("outpost_repo_chunks_fetched_total", "");
        (n >= 100.0).then_some(n)
    });
    edge.kill();
    assert!(!blob(&edge.data, &v2).exists(), "killed before the new version was complete");
    edge.restart(&[("--bandwidth", &["0"])]);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let fetched = edge.metric("outpost_repo_chunks_fetched_total", "");
    let reused = edge.metric("outpost_repo_chunks_deduplicated_total", "");
    assert_eq!(fetched + reused, total, "every chunk once");
    assert!(reused >= had + 0.4 * total, "kept {had} fetched before the kill and the unchanged half ({reused} reused)");
    let path = blob(&edge.data, &v2);
    assert!(std::fs::metadata(&path).unwrap().len() > v2.len() as u64, "it borrows bytes");
    let borrowed = edge.metric("outpost_repo_borrowed_bytes_total", "");
    assert!((3_800_000.0..4_000_000.0).contains(&borrowed), "the unchanged half is borrowed: {borrowed} bytes");
    let written = allocated(&path);
    assert!(written.is_none_or(|w| w < 5_000_000), "{written:?} bytes written for 4 MB changed of 8 MB");
    let pulled = c.client(&["repo", "pull", "app=2", "--out", "p"], &edge.addr).ok();
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("app.bin")).unwrap(), v2);
    edge.stop();
    let data = edge.data.to_string_lossy().to_string();
    let checked = run_in(c.dir(), &["repo", "fsck", "--data", &data]).ok();
    assert!(checked.stdout.contains("0 damaged") && checked.stdout.contains("1 file(s) borrow"), "{}", checked.stdout);
}

/// The certificate name a daemon was started with (how peers are labelled in metrics).
fn cn(d: &Daemon) -> String {
    let role = if d.log.to_string_lossy().contains("/main-") { "server" } else { "edge" };
    format!("{role}-{}", d.addr.rsplit_once(':').unwrap().0)
}

fn damage_one_blob(data: &std::path::Path) -> std::path::PathBuf {
    let dir = std::fs::read_dir(data.join("blobs")).unwrap().next().unwrap().unwrap().path();
    let blob = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    let mut bytes = std::fs::read(&blob).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    blob
}

#[test]
fn a_damaged_blob_is_detected_and_fetched_again() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let mut edge = c.edge(&[&main.addr], &[]);
    let payload = noise(1_000_000, 5);
    let seq = c.publish(&c.package("app", "1", &[("app.bin", &payload)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);

    // Damaged while running: found when served, fetched again from upstream.
    let blob = damage_one_blob(&edge.data);
    let pulled = c.client(&["repo", "pull", "app", "--out", "p1"], &edge.addr).ok();
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("app.bin")).unwrap(), payload);
    assert_eq!(edge.metric("outpost_repo_damaged_blobs_total", ""), 1.0);
    let name = blob.file_name().unwrap().to_string_lossy().into_owned();
    wait_for(SYNC, "the edge to fetch the damaged file again", || {
        let bytes = std::fs::read(&blob).ok()?;
        (blake3::hash(&bytes).to_hex().as_str() == name).then_some(())
    });

    // Damaged while stopped: fsck finds it, --repair removes it, the edge fetches it again.
    edge.stop();
    damage_one_blob(&edge.data);
    let data = edge.data.to_str().unwrap().to_string();
    run_in(c.dir(), &["repo", "fsck", "--data", &data]).fails_with("damaged blob(s); run again with --repair");
    let repaired = run_in(c.dir(), &["repo", "fsck", "--data", &data, "--repair"]).ok();
    assert!(repaired.stdout.contains("1 damaged") && repaired.stdout.contains("(removed)"), "{}", repaired.stdout);
    assert!(repaired.stderr.contains("fetches them from upstream at its next start"), "{}", repaired.stderr);
    // Removed, the file is missing from the current snapshot: fsck says so (0 damaged is not whole).
    run_in(c.dir(), &["repo", "fsck", "--data", &data]).fails_with("missing; the edge fetches what is missing");
    edge.restart(&[]);
    // At its start the edge fetches what its current snapshot lacks.
    wait_for(SYNC, "the edge to fetch the removed file at its start", || std::fs::metadata(&blob).ok().map(drop));
    let pulled = c.client(&["repo", "pull", "app", "--out", "p2"], &edge.addr).ok();
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("app.bin")).unwrap(), payload);
}

#[test]
fn forged_older_and_expired_snapshots_are_refused_and_the_last_good_one_served() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let mut edge = c.edge(&[&main.addr], &["--poll", "1s"]);
    let seq = c.publish(&c.package("good", "1", &[("a", b"a")]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let good = c.status(&edge.addr).unwrap()["head"]["hash"].clone();

    let t = now();
    let base =
        |sequence, created, expires| Snapshot { sequence, created, expires, ..Snapshot::empty("rogue", 0, t, 0) };
    // Forged: signed by an edge certificate of the right CA (no snapshot-signing usage).
    let forged_signer = c.pki.issue("edge", "not-a-signer", &["--san", "127.0.0.1"]);
    let forged = rogue(&c, &base(1000, t, t + 3600), &[], (&forged_signer.0, &forged_signer.1), "forged");
    // Older: properly signed by the main's key, but behind what the edge holds.
    let older = rogue(&c, &base(1, t, t + 3600), &[], (&main.cert, &main.key), "older");
    // Expired: properly signed, newer, but past its expiry.
    let expired = rogue(&c, &base(1001, t - 7200, t - 3600), &[], (&main.cert, &main.key), "expired");

    edge.restart(&[("--upstream", &[&forged.addr, &older.addr, &expired.addr, &main.addr])]);
    wait_for(SYNC, "the edge to try every upstream and settle on the main", || {
        let s = c.status(&edge.addr)?;
        (s["upstream"] == main.addr.as_str()).then_some(())
    });
    for reason in ["forged", "rollback", "expired"] {
        assert!(
            edge.metric("outpost_repo_refusals_total", &format!("{{reason=\"{reason}\"}}")) >= 1.0,
            "{reason} refused\n{}",
            edge.log_text()
        );
    }
    assert_eq!(c.status(&edge.addr).unwrap()["head"]["hash"], good, "still the last good snapshot");
    c.client(&["repo", "pull", "good", "--out", "p"], &edge.addr).ok();
    // And replication goes on from the main.
    let seq = c.publish(&c.package("next", "1", &[("b", b"b")]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
}

#[test]
fn forged_tampered_and_misfiled_package_records_are_refused_and_the_last_good_snapshot_served() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let mut edge = c.edge(&[&main.addr], &["--poll", "1s"]);
    // A package of many chunks: its record is held by the edge and checked again by each sync.
    let held = c.package("held", "1", &[("big.bin", &noise(3_000_000, 5))]);
    let seq = c.publish(&held, &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let good = c.status(&edge.addr).unwrap()["head"]["hash"].clone();
    let record = |built: &std::path::Path| PackageArchive::open(std::fs::File::open(built).unwrap()).unwrap().record();
    let held = record(&held);

    // Tampered: the manifest changed after signing. Forged: signed by a certificate of the right
    // CA without the package-signing usage. Misfiled: the upstream answers with another
    // package's record than the one the snapshot names.
    let tampered = tampered(record(&c.package("tampered", "1", &[("t", b"t")])));
    let signer = c.pki.issue("edge", "not-a-packager", &["--san", "127.0.0.1"]);
    let forged = signed_by(record(&c.package("forged", "1", &[("f", b"f")])), (&signer.0, &signer.1));
    let named = record(&c.package("named", "1", &[("n", b"n")]));
    let other = record(&c.package("other", "1", &[("o", b"o")]));

    // Each snapshot is properly signed by the main's key and newer than the edge's.
    let t = now();
    let mut rogues = Vec::new();
    for (i, (tag, listed, served)) in
        [("tampered", &tampered, &tampered), ("forged", &forged, &forged), ("misfiled", &named, &other)]
            .into_iter()
            .enumerate()
    {
        let snapshot = Snapshot {
            sequence: 1000 + i as u64,
            entries: vec![entry(&held), entry(listed)],
            ..Snapshot::empty("rogue", 0, t, 3600)
        };
        let records = [(held.hash(), held.encode()), (listed.hash(), served.encode())];
        rogues.push((rogue(&c, &snapshot, &records, (&main.cert, &main.key), tag), listed.hash()));
    }
    let mut upstreams: Vec<&str> = rogues.iter().map(|(r, _)| r.addr.as_str()).collect();
    upstreams.push(&main.addr);
    edge.restart(&[("--upstream", &upstreams)]);
    wait_for(SYNC, "the edge to try every upstream and settle on the main", || {
        let s = c.status(&edge.addr)?;
        (s["upstream"] == main.addr.as_str()).then_some(())
    });
    assert!(
        edge.metric("outpost_repo_refusals_total", "{reason=\"package\"}") >= 3.0,
        "three refused packages\n{}",
        edge.log_text()
    );
    // Each refusal names the package and why.
    let log = edge.log_text();
    for ((_, manifest), why) in rogues.iter().zip(["signature", "package-signing usage", "does not match the snapshot"])
    {
        let line = log
            .lines()
            .find(|l| l.contains("sync failed") && l.contains(&outpost_protocol::hex::hex(manifest)))
            .unwrap_or_else(|| panic!("no refusal names {}\n{log}", outpost_protocol::hex::hex(manifest)));
        assert!(line.to_lowercase().contains(why), "{why}: {line}");
    }
    assert_eq!(c.status(&edge.addr).unwrap()["head"]["hash"], good, "still the last good snapshot");
    c.client(&["repo", "pull", "held", "--out", "p"], &edge.addr).ok();
    // And replication goes on from the main.
    let seq = c.publish(&c.package("next", "1", &[("b", b"b")]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
}

#[test]
fn a_tampered_publish_changes_nothing_and_rights_are_checked() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let pkg = c.package("ok", "1", &[("a.txt", b"hello world")]);
    let seq = c.publish(&pkg, &main.addr);
    let mut bytes = std::fs::read(&pkg).unwrap();
    let at = bytes.windows(11).position(|w| w == b"hello world").unwrap_or(bytes.len() / 3);
    bytes[at] ^= 1;
    let bad = c.dir().join("tampered.outpost");
    std::fs::write(&bad, bytes).unwrap();
    c.client(&["pkg", "publish", bad.to_str().unwrap()], &main.addr).fails_with("package refused");
    assert_eq!(c.sequence(&main.addr), seq, "nothing changed");
    assert!(main.metric("outpost_repo_refusals_total", "{reason=\"package\"}") >= 1.0);
    assert!(listing(&main.data.join("tmp")).is_empty(), "no upload left behind");

    // A host certificate may not publish; another CA's certificate may not even connect.
    let host = c.pki.issue("host", "pc1.example.org", &[]);
    c.client_as(&["pkg", "publish", pkg.to_str().unwrap()], &main.addr, &host).fails_with("may not publish");
    let other = crate::common::Pki::new();
    let stranger = other.issue("signer", "stranger", &[]);
    c.client_as(&["repo", "status"], &main.addr, &stranger).fails_with("refused this connection's certificate");
    wait_for(Duration::from_secs(10), "the refusal to be counted", || {
        (main.metric("outpost_repo_refusals_total", "{reason=\"client_certificate\"}") >= 1.0).then_some(())
    });
    assert_eq!(c.sequence(&main.addr), seq);
}

#[test]
fn a_cut_upstream_makes_the_edge_fail_over_and_back() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let mut region = c.edge(&[&main.addr], &[]);
    let site = c.edge(&[&region.addr, &main.addr], &["--poll", "1s"]);
    let seq = c.publish(&c.package("a", "1", &[("a", b"a")]), &main.addr);
    c.wait_sequence(&site.addr, seq, SYNC);
    assert_eq!(c.status(&site.addr).unwrap()["upstream"], region.addr.as_str());

    region.kill();
    let seq = c.publish(&c.package("b", "1", &[("b", b"b")]), &main.addr);
    c.wait_sequence(&site.addr, seq, SYNC);
    assert_eq!(c.status(&site.addr).unwrap()["upstream"], main.addr.as_str(), "failed over to the main");

    region.restart(&[]);
    wait_for(SYNC, "the site to fail back to the region", || {
        (c.status(&site.addr)?["upstream"] == region.addr.as_str()).then_some(())
    });
}

#[test]
fn on_demand_edges_fetch_chunks_when_asked_and_keep_them() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &["--fill", "on-demand"]);
    let payload = noise(2_000_000, 9);
    let seq = c.publish(&c.package("lazy", "1", &[("lazy.bin", &payload)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    assert_eq!(blob_files(&edge.data), 0, "nothing fetched before a client asks");
    assert_eq!(c.status(&edge.addr).unwrap()["fill"], "on-demand");
    let pulled = c.client(&["repo", "pull", "lazy", "--out", "p1"], &edge.addr).ok();
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("lazy.bin")).unwrap(), payload);
    wait_for(SYNC, "the edge to keep the file", || (blob_files(&edge.data) == 1).then_some(()));
    let sent = |d: &Daemon| main.metric("outpost_repo_sent_bytes_total", &format!("{{peer=\"{}\"}}", cn(d)));
    let served_before = sent(&edge);
    c.client(&["repo", "pull", "lazy", "--out", "p2"], &edge.addr).ok();
    assert_eq!(sent(&edge), served_before, "the second pull came from the edge alone");
}

#[test]
fn snapshots_are_re_signed_before_they_expire_and_daemons_stop_cleanly() {
    let c = Cluster::new();
    let config = c.dir().join("main.toml");
    std::fs::write(&config, "snapshot_lifetime = \"4s\"\nresign_every = \"1s\"\n").unwrap();
    let mut main = c.main(&["--config", config.to_str().unwrap()]);
    let mut edge = c.edge(&[&main.addr], &[]);
    c.wait_sequence(&edge.addr, 4, SYNC);
    let expiry = main.metric("outpost_repo_snapshot_expiry_timestamp_seconds", "");
    assert!(expiry > now() as f64, "the served snapshot has not expired");
    assert_eq!(edge.stop(), Some(0), "SIGTERM stops the edge cleanly");
    assert_eq!(main.stop(), Some(0), "SIGTERM stops the main cleanly");

    let bad = c.dir().join("bad.toml");
    std::fs::write(&bad, "snapshot_lifetime = \"1d\"\nresign_every = \"2d\"\n").unwrap();
    let r = run_in(c.dir(), &["repo", "main", "--config", bad.to_str().unwrap(), "--metrics", ""]);
    assert!(r.stderr.contains("resign_every (2d) must be shorter than snapshot_lifetime (1d)"), "{}", r.stderr);
    std::fs::write(&bad, "snapshot_lifetim = \"1d\"\n").unwrap();
    let r = run_in(c.dir(), &["repo", "main", "--config", bad.to_str().unwrap()]);
    assert!(r.stderr.contains("bad.toml") && r.stderr.contains("snapshot_lifetim"), "{}", r.stderr);
    let edge_cert = c.pki.issue("edge", "edge-x", &["--san", "127.0.0.1"]);
    let r = run_in(
        c.dir(),
        &[
            "repo",
            "main",
            "--cert",
            edge_cert.0.to_str().unwrap(),
            "--key",
            edge_cert.1.to_str().unwrap(),
            "--ca",
            c.pki.ca().to_str().unwrap(),
        ],
    );
    assert!(r.stderr.contains("cannot sign snapshots"), "{}", r.stderr);
}

#[test]
fn sync_windows_hold_replication_until_they_open_and_say_when() {
    let c = Cluster::new();
    let main = c.main(&[]);
    // A window that opens two hours from now in Tokyo's local time (UTC+9, no daylight saving
    // time), so it is closed during the test.
    let hour = (now() / 3600 + 9 + 2) % 24;
    let window = format!("{hour:02}:00-{:02}:00", (hour + 1) % 24);
    let mut edge = c.edge(&[&main.addr], &["--sync-window", &window, "--time-zone", "Asia/Tokyo", "--poll", "1s"]);
    // Never synced: the lag says so (the lag alert can fire for it).
    wait_for(SYNC, "a never-synced edge to report a lag", || {
        (edge.metric("outpost_repo_lag_snapshots", "") >= 1.0).then_some(())
    });
    let seq = c.publish(&c.package("held", "1", &[("a", b"a")]), &main.addr);
    wait_for(SYNC, "the edge to see the main's head", || {
        (c.status(&edge.addr)?["upstream_head"]["sequence"].as_u64()? >= seq).then_some(())
    });
    let status = wait_for(SYNC, "the edge to wait for its window", || {
        c.status(&edge.addr).filter(|s| s["waiting_for_window"] == true)
    });
    assert!(status["head"].is_null(), "nothing synced outside the window: {status}");
    assert_eq!(status["lag_snapshots"].as_u64(), Some(seq), "{status}");
    assert_eq!(status["window_open"], false);
    assert_eq!(status["time_zone"], "Asia/Tokyo");
    // It opens at the hour, local time, within the next three hours.
    let opens = status["window_changes"].as_i64().unwrap();
    assert!(opens > now() && opens <= now() + 3 * 3600 && opens % 3600 == 0, "{status}");
    assert!(status["window_changes_local"].as_str().unwrap().ends_with(&format!("{hour:02}:00 +09:00")), "{status}");
    let text = c.client(&["repo", "status"], &edge.addr).ok().stdout;
    assert!(text.contains("closed now, opens") && text.contains("waits for the next window"), "{text}");
    assert_eq!(edge.metric("outpost_repo_syncs_total", "{result=\"ok\"}"), 0.0);
    assert!(edge.metric("outpost_repo_lag_seconds", "") > 0.0);
    edge.restart(&[("--sync-window", &[])]);
    c.wait_sequence(&edge.addr, seq, SYNC);
}

#[test]
fn clients_downloading_the_same_file_share_the_edges_reads_of_it() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &[]);
    let payload = noise(3_000_000, 21);
    let seq = c.publish(&c.package("shared", "1", &[("s.bin", &payload)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let (served, shared) = ("outpost_repo_ranges_served_total", "outpost_repo_ranges_shared_total");
    let pull = |out: &str| {
        let pulled = c.client(&["repo", "pull", "shared", "--out", out], &edge.addr).ok();
        assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("s.bin")).unwrap(), payload);
    };
    pull("p1");
    let first = edge.metric(served, "");
    assert!(first >= 3.0, "3 MB in ranges of at most 1 MiB: {first}");
    assert_eq!(edge.metric(shared, ""), 0.0, "the first download reads every range");
    pull("p2");
    assert_eq!(edge.metric(served, ""), 2.0 * first);
    assert_eq!(edge.metric(shared, ""), first, "every range of the second download came from memory");
}

#[test]
fn an_on_demand_edge_relays_a_file_it_is_fetching_to_every_client_asking_for_it() {
    let c = Cluster::new();
    let main = c.main(&[]);
    // Slow enough upstream that the clients ask while the edge is still fetching the file.
    let edge = c.edge(&[&main.addr], &["--fill", "on-demand", "--bandwidth", "2MB"]);
    let payload = noise(4_000_000, 31);
    let seq = c.publish(&c.package("relayed", "1", &[("r.bin", &payload)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let sent = || main.metric("outpost_repo_sent_bytes_total", &format!("{{peer=\"{}\"}}", cn(&edge)));
    let before = sent();
    std::thread::scope(|s| {
        let pulls: Vec<_> = (0..4)
            .map(|i| {
                let c = &c;
                let edge = &edge.addr;
                s.spawn(move || c.client(&["repo", "pull", "relayed", "--out", &format!("p{i}")], edge).ok())
            })
            .collect();
        for pull in pulls {
            let pulled = pull.join().unwrap();
            assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("r.bin")).unwrap(), payload);
        }
    });
    let crossed = sent() - before;
    let size = payload.len() as f64;
    assert!(crossed < 1.25 * size, "four clients at once, one copy over the link: {crossed} bytes for {size}");
    assert!(edge.metric("outpost_repo_ranges_relayed_total", "") > 0.0, "ranges were relayed as they landed");
    wait_for(SYNC, "the edge to keep the file", || (blob_files(&edge.data) == 1).then_some(()));
}

#[test]
fn an_on_demand_edge_whose_upstream_dies_mid_file_refuses_with_the_reason_and_resumes_from_what_landed() {
    let c = Cluster::new();
    let mut main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &["--fill", "on-demand", "--bandwidth", "1MB"]);
    let payload = noise(4_000_000, 33);
    let seq = c.publish(&c.package("halfway", "1", &[("h.bin", &payload)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let from_main =
        |main: &Daemon| main.metric("outpost_repo_sent_bytes_total", &format!("{{peer=\"{}\"}}", cn(&edge)));
    let size = payload.len() as f64;
    let before_kill = std::thread::scope(|s| {
        let pull = s.spawn(|| c.client(&["repo", "pull", "halfway", "--out", "p1"], &edge.addr));
        wait_for(SYNC, "a third of the file to cross", || (from_main(&main) > size / 3.0).then_some(()));
        let sent = from_main(&main);
        main.kill();
        let failed = pull.join().unwrap().fails_with("upstream");
        assert!(!failed.stderr.contains(edge.data.to_str().unwrap()), "{}", failed.stderr);
        sent
    });
    assert!(!c.dir().join("p1").join("halfway_1").exists(), "nothing unpacked from an incomplete file");
    main.restart(&[]);
    // The edge reconnects; the next pull completes the file from what landed before.
    let pulled = wait_for(SYNC, "a pull to succeed once the main is back", || {
        let r = c.client(&["repo", "pull", "halfway", "--out", "p2"], &edge.addr);
        (r.code == Some(0)).then_some(r)
    });
    assert_eq!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("h.bin")).unwrap(), payload);
    let again = from_main(&main);
    assert!(
        again < size - before_kill / 2.0,
        "what landed before the main died was kept: {before_kill} bytes before, {again} after, {size} in all"
    );
    wait_for(SYNC, "the edge to keep the file", || (blob_files(&edge.data) == 1).then_some(()));
}

#[test]
fn clients_get_reasons_not_the_servers_paths() {
    let c = Cluster::new();
    let mut main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &[]);
    let payload = noise(400_000, 8);
    let seq = c.publish(&c.package("app", "1", &[("app.bin", &payload)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    // A blob cut short on disk, with no upstream to fetch it again from.
    main.stop();
    let dir = std::fs::read_dir(edge.data.join("blobs")).unwrap().next().unwrap().unwrap().path();
    let blob = std::fs::read_dir(dir).unwrap().next().unwrap().unwrap().path();
    let bytes = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, &bytes[..bytes.len() / 2]).unwrap();
    let r = c.client(&["repo", "pull", "app", "--out", "p"], &edge.addr);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    let data = edge.data.to_string_lossy().into_owned();
    assert!(!r.stderr.contains(&data) && !r.stderr.contains("failed to fill whole buffer"), "{}", r.stderr);
    assert!(r.stderr.contains("no upstream is reachable") || r.stderr.contains("damaged"), "{}", r.stderr);
    assert_eq!(edge.metric("outpost_repo_damaged_blobs_total", ""), 1.0, "a short file is damage, and was removed");
    assert!(!blob.exists());
}

#[test]
fn any_repository_serves_byte_ranges_of_chunks() {
    use outpost_actors::repo::client::RepoClient;
    use outpost_actors::transport::{self, Identity};
    use outpost_protocol::wire::{ALPN_REPO, Request};

    let c = Cluster::new();
    let main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &[]);
    let content = noise(5000, 11);
    let seq = c.publish(&c.package("ranges", "1", &[("r.bin", &content)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, SYNC);
    let chain = pki::parse_pem_certificates(&std::fs::read_to_string(&c.admin.0).unwrap()).unwrap();
    let key = pki::decode_private_key(&std::fs::read_to_string(&c.admin.1).unwrap(), None).unwrap();
    let identity = Identity { chain, key: key.pkcs8_der().to_vec() };
    let ca = pki::parse_pem_certificates(&std::fs::read_to_string(c.pki.ca()).unwrap()).unwrap();
    let chunked = outpost_protocol::chunking::chunk(content.as_slice(), |_, _| Ok(())).unwrap();
    let hash = chunked.file;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let pace = transport::Pace::default();
    runtime.block_on(async {
        let endpoint = transport::client(None, &identity, &ca, ALPN_REPO).unwrap();
        for repo in [&main.addr, &edge.addr] {
            let client = RepoClient::connect(&endpoint, repo).await.unwrap();
            let range = |offset, len| Request::Range { file: hash, offset, len };
            let part = transport::fetch(&client.connection, &range(10, 100), 1000, pace).await.unwrap();
            assert_eq!(part, content[10..110], "{repo}");
            let tail = transport::fetch(&client.connection, &range(4990, 10), 1000, pace).await.unwrap();
            assert_eq!(tail, content[4990..], "{repo}");
            let all = outpost_protocol::chunking::missing_ranges(&chunked.chunks, 1 << 20, |_| true);
            let mut got = vec![0u8; content.len()];
            let mut write = |offset: u64, bytes: &[u8]| {
                got[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
                Ok(())
            };
            let verified = client.range_into(&hash, &chunked.chunks, &all[0], &mut write).await.unwrap();
            assert_eq!((*verified, &got), (all[0], &content), "{repo}");
            let past = transport::fetch(&client.connection, &range(4990, 20), 1000, pace).await;
            assert!(past.unwrap_err().to_string().contains("outside the file"), "{repo}");
            let missing =
                transport::fetch(&client.connection, &Request::Range { file: [7; 32], offset: 0, len: 1 }, 10, pace)
                    .await;
            assert!(missing.unwrap_err().to_string().contains("no file"), "{repo}");
        }
    });
}

/// Copies a folder tree.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_main_restored_from_an_older_backup_moves_edges_and_agents_on_through_a_signed_lineage() {
    let c = Cluster::new();
    let mut main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &["--poll", "1s"]);
    c.publish(&c.package("a", "1", &[("a", b"a")]), &main.addr);
    // The nightly backup of the main's data folder (taken stopped).
    main.stop();
    let backup = c.dir().join("main-backup");
    copy_dir(&main.data, &backup);
    main.restart(&[]);
    c.publish(&c.package("b", "1", &[("b", b"b")]), &main.addr);
    let held = c.publish(&c.package("c", "1", &[("c", b"c")]), &main.addr);
    c.wait_sequence(&edge.addr, held, SYNC);
    let host = crate::agent::Host::new(&c, "pc-lin.test", &format!("repos = [{:?}]", edge.addr));
    host.run(&["update"]).ok();

    // The main's disk is lost; it is restored from the backup: its snapshots are older than
    // what every edge holds, and they are refused.
    main.stop();
    std::fs::remove_dir_all(&main.data).unwrap();
    copy_dir(&backup, &main.data);
    main.restart(&[]);
    let d = c.publish(&c.package("d", "1", &[("d", b"d")]), &main.addr);
    assert!(d < held, "the restored main is behind: {d} < {held}");
    wait_for(SYNC, "the edge to refuse the restored main's snapshot", || {
        let s = c.status(&edge.addr)?;
        s["last_error"].as_str()?.contains("rollback refused").then_some(())
    });
    assert_eq!(c.sequence(&edge.addr), held, "the edge keeps serving its last good snapshot");

    // Only the CA's own key opens a new lineage.
    let other = crate::common::Pki::new();
    let forged = run_in(
        other.path(),
        &["pki", "sign-lineage", "--dir", "pki", "--epoch", "1", "--reason", "forged", "--out", "forged.lin"],
    )
    .ok();
    let forged = other.path().join(forged.stdout.trim());
    main.stop();
    let data = main.data.to_str().unwrap().to_string();
    let ca = c.pki.ca();
    run_in(c.dir(), &["repo", "set-lineage", forged.to_str().unwrap(), "--data", &data, "--ca", ca.to_str().unwrap()])
        .fails_with("not signed by the organisation CA");
    let signed = run_in(
        c.dir(),
        &["pki", "sign-lineage", "--dir", "pki", "--epoch", "1", "--reason", "main restored from backup"],
    )
    .ok();
    let lineage = c.dir().join(signed.stdout.trim());
    run_in(c.dir(), &["repo", "set-lineage", lineage.to_str().unwrap(), "--data", &data, "--ca", ca.to_str().unwrap()])
        .ok();
    main.restart(&[]);
    // The edge moves to the new lineage, and so does the agent.
    wait_for(SYNC, "the edge to take the new lineage", || {
        (c.status(&edge.addr)?["epoch"].as_u64()? == 1).then_some(())
    });
    let e = c.publish(&c.package("e", "1", &[("e", b"e")]), &main.addr);
    c.wait_sequence(&edge.addr, e, SYNC);
    let u = host.json(&["update"]);
    assert_eq!((u["changed"].as_bool(), u["sequence"].as_u64()), (Some(true), Some(e)), "{u}");
    host.run(&["install", "e"]).ok();
    // The same document again does nothing new.
    main.stop();
    run_in(c.dir(), &["repo", "set-lineage", lineage.to_str().unwrap(), "--data", &data, "--ca", ca.to_str().unwrap()])
        .fails_with("already serves lineage 1");
}

/// `pkg publish A B C`: one snapshot for all of them, or none of them when one is refused.
#[test]
fn several_packages_are_published_in_one_snapshot_or_not_at_all() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let first = c.publish(&c.package("alpha", "1", &[("a.txt", b"a")]), &main.addr);
    let files: Vec<std::path::PathBuf> =
        ["beta", "gamma", "delta"].iter().map(|n| c.package(n, "1", &[("f.txt", n.as_bytes())])).collect();
    let mut args = vec!["pkg", "publish"];
    args.extend(files.iter().map(|f| f.to_str().unwrap()));
    let out = c.client(&args, &main.addr).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    let next = format!("snapshot {}", first + 1);
    assert!(lines.iter().all(|l| l.ends_with(&next)), "one snapshot for the three: {}", out.stdout);
    let listed = c.client(&["repo", "status", "--json"], &main.addr).ok();
    let status: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    assert_eq!(status["packages"], 4, "{status}");

    // One bad archive among good ones: refused, and the good ones are not published either.
    let good = c.package("epsilon", "1", &[("e.txt", b"e")]);
    let bad = c.dir().join("bad.outpost");
    let mut bytes = std::fs::read(c.package("zeta", "1", &[("z.txt", b"z")])).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&bad, bytes).unwrap();
    let refused = c.client(&["pkg", "publish", good.to_str().unwrap(), bad.to_str().unwrap()], &main.addr);
    assert_ne!(refused.code, Some(0));
    assert!(
        refused.stderr.contains("archive 2 of 2") && refused.stderr.contains("nothing was published"),
        "{}",
        refused.stderr
    );
    let status: serde_json::Value =
        serde_json::from_str(&c.client(&["repo", "status", "--json"], &main.addr).ok().stdout).unwrap();
    assert_eq!(status["packages"], 4, "epsilon was not published: {status}");
    assert_eq!(status["head"]["sequence"], first + 1, "no new snapshot: {status}");
}

/// An edge whose disk fills during a sync (its data on a 6 MiB tmpfs, a 9 MB package): it says
/// why in its status, keeps serving the last good snapshot whole, tries again, and completes
/// once there is room (every chunk verified). Needs root (mounting a tmpfs): skipped otherwise,
/// saying so.
#[test]
fn an_edge_whose_disk_fills_keeps_serving_the_last_snapshot_and_completes_with_room() {
    if !crate::cluster::is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs for the edge's data needs root");
        return;
    }
    let c = Cluster::new();
    let main = c.main(&[]);
    let data = c.dir().join("edge-on-tmpfs");
    let disk = crate::cluster::Tmpfs::mount(&data, "6m");
    let edge = c.edge(&[&main.addr], &["--data", data.to_str().unwrap()]);
    let small = noise(200_000, 21);
    let first = c.publish(&c.package("small-one", "1", &[("s.bin", &small)]), &main.addr);
    c.wait_sequence(&edge.addr, first, SYNC);

    let big = noise(9_000_000, 22);
    let second = c.publish(&c.package("big-one", "1", &[("b.bin", &big)]), &main.addr);
    let error = wait_for(SYNC, "the edge to say its disk is full", || {
        let e = c.status(&edge.addr)?["last_error"].as_str()?.to_string();
        e.contains("No space left on device").then_some(e)
    });
    assert!(error.contains("sync from"), "{error}");
    assert_eq!(c.sequence(&edge.addr), first, "the last good snapshot is still served");
    let pulled = c.client(&["repo", "pull", "small-one", "--out", "p1"], &edge.addr).ok();
    assert!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("s.bin")).unwrap() == small);

    disk.resize("64m");
    c.wait_sequence(&edge.addr, second, SYNC);
    let pulled = c.client(&["repo", "pull", "big-one", "--out", "p2"], &edge.addr).ok();
    assert!(std::fs::read(c.dir().join(pulled.stdout.trim()).join("b.bin")).unwrap() == big, "whole");
}
