//! The encodings written by earlier versions, frozen: each must still decode to what it said.

use super::*;
use crate::hex::{assert_golden, decode};

fn entry() -> SnapshotEntry {
    SnapshotEntry {
        control: vec![("package".into(), "a".into()), ("version".into(), "1".into())],
        manifest: [1; 32],
        size: 3,
    }
}

fn host() -> HostEntry {
    HostEntry { name_hash: [2; 32], manifest: [3; 32], size: 4 }
}

fn want(revoked: Vec<String>, epoch: u64) -> Snapshot {
    Snapshot {
        repository: "main".into(),
        sequence: 5,
        created: 10,
        expires: 20,
        entries: vec![entry()],
        hosts: vec![host()],
        revoked,
        epoch,
        lineage: None,
    }
}

#[test]
fn every_snapshot_version_still_decodes() {
    let v1 = SnapshotWire::V1(SnapshotV1 {
        repository: "main".into(),
        sequence: 5,
        created: 10,
        expires: 20,
        entries: vec![entry()],
        hosts: vec![host()],
    });
    let v2 = SnapshotWire::V2(SnapshotV2 {
        repository: "main".into(),
        sequence: 5,
        created: 10,
        expires: 20,
        entries: vec![entry()],
        hosts: vec![host()],
        revoked: vec!["ab".into()],
    });
    let v3 = SnapshotWire::V3(want(vec!["ab".into()], 2));
    let cases = [
        (
            v1,
            "00046d61696e0514280102077061636b61676501610776657273696f6e0131010101010101010101010101010101010101010101010101010101010101010103010202020202020202020202020202020202020202020202020202020202020202030303030303030303030303030303030303030303030303030303030303030304",
            want(vec![], 0),
        ),
        (
            v2,
            "01046d61696e0514280102077061636b61676501610776657273696f6e013101010101010101010101010101010101010101010101010101010101010101010301020202020202020202020202020202020202020202020202020202020202020203030303030303030303030303030303030303030303030303030303030303030401026162",
            want(vec!["ab".into()], 0),
        ),
        (
            v3,
            "02046d61696e0514280102077061636b61676501610776657273696f6e0131010101010101010101010101010101010101010101010101010101010101010103010202020202020202020202020202020202020202020202020202020202020202030303030303030303030303030303030303030303030303030303030303030304010261620200",
            want(vec!["ab".into()], 2),
        ),
    ];
    for (i, (wire, golden, want)) in cases.into_iter().enumerate() {
        assert_golden(&format!("snapshot version {}", i + 1), &postcard::to_stdvec(&wire).unwrap(), golden);
        let signed = SignedSnapshot::assemble(decode(golden).unwrap(), vec![9; 4], vec![vec![7; 3]]);
        assert_eq!(signed.unverified().unwrap(), want, "version {}", i + 1);
    }
}

#[test]
fn the_signed_envelope_still_decodes() {
    let golden = "000301020304090909090103070707";
    let signed = SignedSnapshot::assemble(vec![1, 2, 3], vec![9; 4], vec![vec![7; 3]]);
    assert_golden("a signed snapshot", signed.encoded(), golden);
    assert_eq!(SignedSnapshot::decode(&decode(golden).unwrap()).unwrap(), signed);
}
