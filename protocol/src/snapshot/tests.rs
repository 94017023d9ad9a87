use super::*;
use crate::pki::{self, IssueRequest, Issued, Role};

const NOW: i64 = 1_800_000_000;

fn node(ca: &Issued, role: Role) -> Issued {
    let req = IssueRequest { role, name: "main.example.org".into(), rights: vec![], alt_names: vec![], days: 30 };
    pki::issue(&ca.cert, &ca.key, &req, NOW).unwrap()
}

fn snapshot(sequence: u64) -> Snapshot {
    let control = vec![
        ("package".into(), "tis-a".into()),
        ("version".into(), "1.0-1".into()),
        ("architecture".into(), "all".into()),
        ("section".into(), "base".into()),
        ("priority".into(), "optional".into()),
    ];
    Snapshot {
        repository: "main".into(),
        sequence,
        created: NOW,
        expires: NOW + 3600,
        entries: vec![SnapshotEntry { control, manifest: [1; 32], size: 10 }],
        hosts: vec![HostEntry { name_hash: host_name_hash("PC1.example.org"), manifest: [2; 32], size: 0 }],
        revoked: vec![],
        epoch: 0,
        lineage: None,
    }
}

#[test]
fn version_1_snapshots_still_decode_and_revocations_grow_the_sequence() {
    let ca = pki::create_ca("Org", NOW, 100).unwrap();
    let signer = node(&ca, Role::Server);
    let s = snapshot(5);
    let v1 = SnapshotV1 {
        repository: s.repository.clone(),
        sequence: s.sequence,
        created: s.created,
        expires: s.expires,
        entries: s.entries.clone(),
        hosts: s.hosts.clone(),
    };
    let body = postcard::to_stdvec(&SnapshotWire::V1(v1)).unwrap();
    let signature = signing::sign(&signer.key, Domain::Snapshot, &body).to_vec();
    let old = SignedSnapshot::assemble(body, signature, vec![signer.cert.to_vec()]);
    assert_eq!(old.unverified().unwrap(), s);
    let next = s.with_revoked(&["ab".into()], NOW, 60).unwrap();
    assert_eq!((next.sequence, next.revoked.clone()), (6, vec!["ab".to_string()]));
    assert!(next.with_revoked(&["ab".into()], NOW, 60).is_none(), "nothing new");
    let signed = next.sign(&signer.key, std::slice::from_ref(&signer.cert));
    assert_eq!(signed.unverified().unwrap().revoked, ["ab"]);
}

fn entry(text: &str) -> PackageEntry {
    PackageEntry::from_control(&Control::parse(text).unwrap()).unwrap()
}

#[test]
fn publishing_replaces_the_same_package_and_unpublishing_removes() {
    let mut s = Snapshot::empty("main", 1, NOW, 3600);
    let a1 = entry("package: a\nversion: 1\narchitecture: all\nsection: base\npriority: optional\n");
    let a2 = entry("package: a\nversion: 2\narchitecture: all\nsection: base\npriority: optional\n");
    let a2x64 = entry("package: a\nversion: 2\narchitecture: x64\nsection: base\npriority: optional\n");
    let host = entry("package: PC1.corp\nversion: 3\narchitecture: all\nsection: host\npriority: optional\n");
    assert!(s.with_package(&a2, [2; 32], 1).removed.is_empty());
    s.with_package(&a1, [1; 32], 1);
    s.with_package(&a2x64, [3; 32], 1);
    assert_eq!(s.with_package(&a2, [4; 32], 1).removed, ["a 2"]);
    assert_eq!(s.entries.len(), 3);
    assert_eq!(s.package_entries()[0].version.as_str(), "1", "sorted by version");
    s.with_package(&host, [5; 32], 0);
    assert_eq!(s.with_package(&host, [6; 32], 0).removed, ["PC1.corp"]);
    assert_eq!(s.host_package("pc1.corp").unwrap().manifest, [6; 32]);
    assert!(s.package_entries().iter().all(|e| e.name == "a"), "host packages are not entries");
    assert_eq!(s.without("a", Some(&crate::version::Version::parse("2").unwrap())), ["a 2", "a 2"]);
    assert_eq!(s.without("pc1.corp", None), ["pc1.corp (host package)"]);
    assert_eq!(s.without("nothing", None), Vec::<String>::new());
    let next = s.next(NOW + 10, 3600);
    assert_eq!((next.sequence, next.created, next.entries.len()), (2, NOW + 10, 1));
}

#[test]
fn signed_snapshots_verify_and_refusals_say_why() {
    let ca = pki::create_ca("Org", NOW, 100).unwrap();
    let trust = TrustStore::new(vec![ca.cert.clone()]).unwrap();
    let server = node(&ca, Role::Server);
    let s5 = snapshot(5).sign(&server.key, std::slice::from_ref(&server.cert));
    let decoded = SignedSnapshot::decode(s5.encoded()).unwrap();
    let (v, signer) = decoded.verify(&trust, NOW, None).unwrap();
    assert_eq!(v.sequence, 5);
    assert_eq!(signer.role, Some(Role::Server));
    assert!(v.host_package("pc1.EXAMPLE.org").is_some());
    assert_eq!(v.package_entries().len(), 1);

    let s4 = snapshot(4).sign(&server.key, std::slice::from_ref(&server.cert));
    let held = Some(Held { epoch: 0, sequence: 5, hash: s5.hash() });
    assert!(matches!(s4.verify(&trust, NOW, held), Err(SnapshotError::Rollback { sequence: 4, held: 5 })));
    assert!(s5.verify(&trust, NOW, held).is_ok(), "the same snapshot again is fine");
    let mut other = snapshot(5);
    other.created += 1;
    let other = other.sign(&server.key, std::slice::from_ref(&server.cert));
    assert!(matches!(other.verify(&trust, NOW, held), Err(SnapshotError::Equivocation { .. })));
    let err = s5.verify(&trust, NOW + 3600, None).unwrap_err();
    assert_eq!(err.reason(), "expired");

    // An edge certificate cannot sign snapshots; another CA's server neither.
    let edge = node(&ca, Role::Edge);
    let forged = snapshot(6).sign(&edge.key, std::slice::from_ref(&edge.cert));
    assert_eq!(forged.verify(&trust, NOW, held).unwrap_err().reason(), "forged");
    let other_ca = pki::create_ca("Evil", NOW, 100).unwrap();
    let evil = node(&other_ca, Role::Server);
    let forged = snapshot(6).sign(&evil.key, std::slice::from_ref(&evil.cert));
    assert_eq!(forged.verify(&trust, NOW, held).unwrap_err().reason(), "forged");
    // A changed byte anywhere is refused.
    let bytes = s5.encoded().to_vec();
    for at in [3, bytes.len() / 2, bytes.len() - 3] {
        let mut b = bytes.clone();
        b[at] ^= 1;
        assert!(SignedSnapshot::decode(&b).and_then(|s| s.verify(&trust, NOW, None).map(drop)).is_err(), "{at}");
        assert!(SignedSnapshot::decode(&b).and_then(|s| s.verify_kept(&trust).map(drop)).is_err(), "kept {at}");
    }
    // What a node kept verifies again, expired or not; forged content does not.
    assert_eq!(s5.verify_kept(&trust).unwrap().sequence, 5);
    assert!(SignedSnapshot::decode(s5.encoded()).unwrap().verify_kept(&trust).is_ok());
    assert_eq!(forged.verify_kept(&trust).unwrap_err().reason(), "forged");
    let other_trust = TrustStore::new(vec![other_ca.cert.clone()]).unwrap();
    assert_eq!(s5.verify_kept(&other_trust).unwrap_err().reason(), "forged");
}

#[test]
fn a_ca_signed_lineage_moves_consumers_to_a_new_line_and_nothing_else_does() {
    use crate::lineage::LineageDoc;
    let ca = pki::create_ca("Org", NOW, 100).unwrap();
    let trust = TrustStore::new(vec![ca.cert.clone()]).unwrap();
    let server = node(&ca, Role::Server);
    let sign = |s: &Snapshot| s.sign(&server.key, std::slice::from_ref(&server.cert));
    // Consumers hold 500 of the first lineage; the main was restored at 480.
    let held500 = sign(&snapshot(500));
    let held = Some(snapshot(500).held(&held500));
    let restored = sign(&snapshot(480));
    assert_eq!(restored.verify(&trust, NOW, held).unwrap_err().reason(), "rollback");
    // A lineage document signed by the CA opens lineage 1: 481 of lineage 1 is accepted.
    let doc = LineageDoc { epoch: 1, created: NOW, reason: "restored from backup".into() };
    let lineage = doc.sign(&ca.key, &ca.cert).unwrap();
    let next = snapshot(480).with_lineage(lineage.clone(), 1, NOW, 3600);
    let signed = sign(&next);
    let (v, _) = signed.verify(&trust, NOW, held).unwrap();
    assert_eq!((v.epoch, v.sequence), (1, 481));
    // From then on the old lineage is refused, and lineage 1 follows the usual rules.
    let held1 = Some(next.held(&signed));
    assert!(matches!(held500.verify(&trust, NOW, held1), Err(SnapshotError::OlderLineage { .. })));
    let later = sign(&next.next(NOW, 3600));
    later.verify(&trust, NOW, held1).unwrap();
    let mut replayed = next.clone();
    replayed.sequence = 470;
    assert_eq!(sign(&replayed).verify(&trust, NOW, held1).unwrap_err().reason(), "rollback");
    // A higher epoch without the CA's document (the snapshot key alone, a compromised
    // mirror) is refused.
    let mut bare = next.clone();
    bare.epoch = 2;
    assert!(matches!(sign(&bare).verify(&trust, NOW, held1), Err(SnapshotError::Lineage { .. })));
    bare.lineage = None;
    assert!(matches!(sign(&bare).verify(&trust, NOW, held1), Err(SnapshotError::Lineage { .. })));
    let admin = node(&ca, Role::Signer);
    let by_signer =
        SignedLineage { signature: signing::sign(&admin.key, Domain::Lineage, &lineage.body).to_vec(), ..lineage };
    let mut forged = next;
    forged.lineage = Some(by_signer);
    assert_eq!(sign(&forged).verify(&trust, NOW, None).unwrap_err().reason(), "forged");
    // The first lineage is still written as version 2 (consumers that predate lineages).
    let SnapshotWire::V2(_) = postcard::from_bytes(&held500.snapshot).unwrap() else { panic!("not version 2") };
}
