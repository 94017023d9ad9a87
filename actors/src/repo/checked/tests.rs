use std::io::{self, Cursor, Read};

use outpost_protocol::control::Control;
use outpost_protocol::package::{FileSource, PackageArchive, Signer, SourceEntry, build};
use outpost_protocol::pki::{self, IssueRequest, Role};

use super::*;

const NOW: i64 = 1_790_000_000;
const DAY: i64 = 86_400;

struct Files(Vec<(String, Vec<u8>)>);

impl FileSource for Files {
    fn open(&mut self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        let (_, bytes) = self.0.iter().find(|(p, _)| p == path).ok_or(io::ErrorKind::NotFound)?;
        Ok(Box::new(bytes.as_slice()))
    }
}

/// A record of a package of two files signed by a signer certificate valid 30 days from
/// [`NOW`], and the trust store that verifies it.
fn signed_record() -> (PackageRecord, TrustStore) {
    let ca = pki::create_ca("Test Org", NOW, 3650).unwrap();
    let trust = TrustStore::new(vec![ca.cert.clone()]).unwrap();
    let request =
        IssueRequest { role: Role::Signer, name: "signer".into(), rights: vec![], alt_names: vec![], days: 30 };
    let issued = pki::issue(&ca.cert, &ca.key, &request, NOW).unwrap();
    let signer = Signer::new(issued.key, vec![issued.cert], NOW).unwrap();
    let control =
        Control::parse("package: app\nversion: 1-1\narchitecture: all\nsection: base\npriority: optional\n").unwrap();
    let mut files = Files(vec![("a.txt".into(), b"hello".to_vec()), ("b.bin".into(), vec![7u8; 200_000])]);
    let entries =
        files.0.iter().map(|(p, b)| SourceEntry { path: p.clone(), size: b.len() as u64, mode: 0o644 }).collect();
    let mut out = Cursor::new(Vec::new());
    build(&mut out, &control, entries, &mut files, &signer, NOW, &mut |_| {}).unwrap();
    out.set_position(0);
    (PackageArchive::open(out).unwrap().record(), trust)
}

#[test]
fn a_record_verified_once_is_decoded_not_verified_again_while_its_chain_is_valid() {
    let (record, trust) = signed_record();
    let (m, bytes) = (record.hash(), record.encode());
    let checked = CheckedRecords::default();
    let first = checked.check(m, &bytes, &trust, NOW + 60).unwrap();
    assert!(first.verified);
    assert_eq!(first.files.len(), 2);
    let again = checked.check(m, &bytes, &trust, NOW + 10 * DAY).unwrap();
    assert!(!again.verified, "known bytes at a date inside the chain's validity");
    assert_eq!(again.files, first.files);
    assert_eq!(again.key, first.key);
    // Forgotten when not among those kept.
    checked.keep(&HashSet::new());
    assert!(checked.check(m, &bytes, &trust, NOW + 60).unwrap().verified);
}

#[test]
fn the_same_manifest_with_another_signature_is_verified_and_refused() {
    let (record, trust) = signed_record();
    let checked = CheckedRecords::default();
    checked.check(record.hash(), &record.encode(), &trust, NOW + 60).unwrap();
    let mut forged = record.clone();
    forged.signature[0] ^= 1;
    let e = checked.check(forged.hash(), &forged.encode(), &trust, NOW + 60).expect_err("a bad signature is refused");
    assert!(e.to_string().contains(&hex(&record.hash())), "{e}");
    assert!(e.to_string().contains("signature"), "{e}");
}

#[test]
fn a_date_past_the_chain_s_validity_is_verified_again_and_refused() {
    let (record, trust) = signed_record();
    let (m, bytes) = (record.hash(), record.encode());
    let checked = CheckedRecords::default();
    checked.check(m, &bytes, &trust, NOW + 60).unwrap();
    let e = checked.check(m, &bytes, &trust, NOW + 40 * DAY).expect_err("the signer's certificate has expired");
    assert!(e.to_string().contains("expired"), "{e}");
    // And one the snapshot does not match.
    let e = checked.check([9; 32], &bytes, &trust, NOW + 60).expect_err("another package's record");
    assert!(e.to_string().contains("does not match"), "{e}");
}
