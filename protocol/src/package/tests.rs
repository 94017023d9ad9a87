use std::collections::BTreeMap;
use std::io::{self, Cursor, Read, Write};

use super::build::write_package;
use super::*;
use crate::control::Control;
use crate::pki::{self, ChainError, IssueRequest, Issued, Right, Role, TrustStore};

const NOW: i64 = 1_790_000_000;

struct Mem(BTreeMap<String, Vec<u8>>);

impl FileSource for Mem {
    fn open(&mut self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        self.0.get(path).map(|b| Box::new(b.as_slice()) as Box<dyn Read>).ok_or_else(|| io::ErrorKind::NotFound.into())
    }
}

impl Mem {
    fn new(files: &[(&str, &[u8])]) -> Self {
        Self(files.iter().map(|(p, b)| (p.to_string(), b.to_vec())).collect())
    }
    fn entries(&self) -> Vec<SourceEntry> {
        self.0.iter().map(|(p, b)| SourceEntry { path: p.clone(), size: b.len() as u64, mode: 0o644 }).collect()
    }
}

struct Pki {
    ca: Issued,
    trust: TrustStore,
}

impl Pki {
    fn new() -> Self {
        let ca = pki::create_ca("Test Org", NOW, 3650).unwrap();
        let trust = TrustStore::new(vec![ca.cert.clone()]).unwrap();
        Self { ca, trust }
    }
    fn signer(&self, role: Role, days: u32) -> Signer {
        let rights = if role == Role::Admin { vec![Right::Modify] } else { vec![] };
        let req = IssueRequest { role, name: format!("{role} one"), rights, alt_names: vec![], days };
        let issued = pki::issue(&self.ca.cert, &self.ca.key, &req, NOW).unwrap();
        Signer::new(issued.key, vec![issued.cert], NOW).unwrap()
    }
}

fn control(extra: &str) -> Control {
    Control::parse(&format!(
        "package: tis-demo\nversion: 1.2-3\narchitecture: all\nsection: base\npriority: optional\n{extra}"
    ))
    .unwrap()
}

fn build_bytes(files: &mut Mem, signer: &Signer, at: i64) -> (Vec<u8>, BuildOutput) {
    let mut out = Cursor::new(Vec::new());
    let built = build(&mut out, &control(""), files.entries(), files, signer, at, &mut |_| {}).unwrap();
    (out.into_inner(), built)
}

fn sample() -> Mem {
    Mem::new(&[("setup.sh", b"#!/bin/sh\necho hi\n"), ("data/a.txt", b"hello"), ("data/big.bin", &[7u8; 300_000])])
}

#[test]
fn builds_verifies_and_is_reproducible() {
    let pki = Pki::new();
    let signer = pki.signer(Role::Signer, 30);
    let mut files = sample();
    let (bytes, built) = build_bytes(&mut files, &signer, NOW);
    assert_eq!(built.file_name, "tis-demo_1.2-3.outpost");
    assert_eq!(built.manifest.files.len(), 3);
    assert_eq!(built.manifest.control.get("signer"), Some("signer one"));
    assert_eq!(built.manifest.control.get("signature_date"), Some("2026-09-21T14:13:20Z"));

    let (again, _) = build_bytes(&mut files, &signer, NOW);
    assert_eq!(bytes, again, "same input and date give the same bytes");
    let (later, later_built) = build_bytes(&mut files, &signer, NOW + 60);
    assert_ne!(bytes, later);
    assert_eq!(later_built.manifest.files, built.manifest.files, "only the signature date differs");

    let bytes_len = bytes.len() as u64;
    let archive = PackageArchive::open(Cursor::new(bytes)).unwrap();
    assert_eq!(archive.hash(), built.manifest_hash);
    let mut seen = 0;
    let (verified, who) = archive.verify(&pki.trust, NOW, &mut |n| seen = n).unwrap();
    assert_eq!(verified.len(), bytes_len);
    assert_eq!(who.role, Some(Role::Signer));
    assert_eq!(seen, verified.len() + 300_000 + 5 + 18, "the archive's bytes, then the files'");
    assert_eq!(verified.manifest().hooks(), vec!["setup.sh"]);
}

#[test]
fn hooks_need_code_signing() {
    let pki = Pki::new();
    let deployer = pki.signer(Role::Deployer, 30);
    let mut out = Cursor::new(Vec::new());
    let mut files = sample();
    let err = build(&mut out, &control(""), files.entries(), &mut files, &deployer, NOW, &mut |_| {}).unwrap_err();
    assert!(matches!(err, BuildError::NeedsCodeSigning { .. }), "{err}");
    assert!(err.to_string().contains("setup.sh"));

    // A package written around the check is refused when verified.
    let mut c = control("");
    c.set("signer_fingerprint", &deployer.info().fingerprint);
    let mut entries = files.entries();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Cursor::new(Vec::new());
    write_package(&mut out, c, &entries, &mut files, &deployer, &mut |_| {}).unwrap();
    let archive = PackageArchive::open(Cursor::new(out.into_inner())).unwrap();
    let err = archive.verify_signature(&pki.trust, NOW).unwrap_err();
    assert!(matches!(err, PackageError::Chain(ChainError::MissingUsage { .. })), "{err}");
    assert!(err.to_string().contains("code-signing"), "{err}");

    // Without hooks a deployer (or an admin with modify) may sign.
    let mut plain = Mem::new(&[("a.txt", b"x")]);
    for signer in [&deployer, &pki.signer(Role::Admin, 30)] {
        let (bytes, _) = build_bytes(&mut plain, signer, NOW);
        PackageArchive::open(Cursor::new(bytes)).unwrap().verify(&pki.trust, NOW, &mut |_| {}).unwrap();
    }
}

/// An MSI the agent runs is code (its custom actions run as SYSTEM): like a hook, it needs the
/// code-signing usage, at build and when verified; and it must be in the package.
#[test]
fn an_msi_the_agent_installs_needs_code_signing_and_must_be_in_the_package() {
    let pki = Pki::new();
    let deployer = pki.signer(Role::Deployer, 30);
    let mut files = Mem::new(&[("app.msi", b"not really an msi")]);
    let mut out = Cursor::new(Vec::new());
    let c = control("install_msi: app.msi\n");
    let err = build(&mut out, &c, files.entries(), &mut files, &deployer, NOW, &mut |_| {}).unwrap_err();
    assert!(matches!(err, BuildError::NeedsCodeSigning { .. }), "{err}");
    assert!(err.to_string().contains("app.msi"), "{err}");
    let missing = control("install_msi: other.msi\n");
    let signer = pki.signer(Role::Signer, 30);
    let err = build(&mut out, &missing, files.entries(), &mut files, &signer, NOW, &mut |_| {}).unwrap_err();
    assert_eq!(
        err.to_string(),
        "install_msi names other.msi, which is not in the package: put the .msi in the folder (the path is relative to it)"
    );
    // Written around the build's check, the package is refused when verified.
    let mut c = c;
    c.set("signer_fingerprint", &deployer.info().fingerprint);
    let mut out = Cursor::new(Vec::new());
    write_package(&mut out, c, &files.entries(), &mut files, &deployer, &mut |_| {}).unwrap();
    let err =
        PackageArchive::open(Cursor::new(out.into_inner())).unwrap().verify_signature(&pki.trust, NOW).unwrap_err();
    assert!(err.to_string().contains("code-signing"), "{err}");
    // A signer may.
    let mut out = Cursor::new(Vec::new());
    build(&mut out, &control("install_msi: app.msi\n"), files.entries(), &mut files, &signer, NOW, &mut |_| {})
        .unwrap();
}

#[test]
fn hooks_are_found_whatever_their_case_and_ambiguous_names_are_refused() {
    let pki = Pki::new();
    let deployer = pki.signer(Role::Deployer, 30);
    let signer = pki.signer(Role::Signer, 30);
    // A deployer cannot slip in a hook a case-insensitive file system would run.
    for name in ["SETUP.PS1", "Setup.sh", "setup.CMD", "Setup.Bat"] {
        let mut files = Mem::new(&[(name, b"echo pwned\n"), ("a.txt", b"x")]);
        let mut out = Cursor::new(Vec::new());
        let err = build(&mut out, &control(""), files.entries(), &mut files, &deployer, NOW, &mut |_| {}).unwrap_err();
        assert!(matches!(err, BuildError::NeedsCodeSigning { .. }), "{name}: {err}");
        // Written around the build check, verification refuses it.
        let mut c = control("");
        c.set("signer_fingerprint", &deployer.info().fingerprint);
        let mut out = Cursor::new(Vec::new());
        let mut entries = files.entries();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        write_package(&mut out, c, &entries, &mut files, &deployer, &mut |_| {}).unwrap();
        let archive = PackageArchive::open(Cursor::new(out.into_inner())).unwrap();
        let err = archive.verify_signature(&pki.trust, NOW).unwrap_err();
        assert!(err.to_string().contains("code-signing"), "{name}: {err}");
    }
    // Signed by a signer, the hook is found by its meaning, not its spelling.
    let mut files = Mem::new(&[("Setup.SH", b"echo hi\n"), ("sub/setup.sh", b"not a hook")]);
    let (_, built) = build_bytes(&mut files, &signer, NOW);
    assert_eq!(built.manifest.hooks(), vec!["Setup.SH"]);
    assert_eq!(built.manifest.hook("setup.sh"), Some("Setup.SH"));
    assert_eq!(built.manifest.hook("setup.ps1"), None);
    // Two names for one hook (or any two files one file system would merge) are refused.
    let mut files = Mem::new(&[("setup.sh", b"a"), ("SETUP.sh", b"b")]);
    let mut out = Cursor::new(Vec::new());
    let err = build(&mut out, &control(""), files.entries(), &mut files, &signer, NOW, &mut |_| {}).unwrap_err();
    assert!(matches!(err, BuildError::CaseClash { .. }), "{err}");
    let mut c = control("");
    c.set("signer_fingerprint", &signer.info().fingerprint);
    let mut entries = files.entries();
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Cursor::new(Vec::new());
    write_package(&mut out, c, &entries, &mut files, &signer, &mut |_| {}).unwrap();
    let err = PackageArchive::open(Cursor::new(out.into_inner())).unwrap_err();
    assert!(err.to_string().contains("same file on Windows"), "{err}");
    // Names Windows would read as another file are refused outright.
    for bad in ["setup.ps1.", "setup.ps1 ", "setup.ps1::$DATA", "dir./a", "a:b"] {
        assert!(check_path(bad).is_err(), "{bad:?}");
    }
    assert_eq!(hook_name("SeTuP.Ps1"), Some("setup.ps1"));
    assert_eq!(hook_name("tools/setup.sh"), None);
    assert_eq!(hook_name("setup.py"), None);
}

#[test]
fn roles_that_cannot_sign_are_refused() {
    let pki = Pki::new();
    for role in [Role::Server, Role::Edge, Role::Host] {
        let req = IssueRequest { role, name: "n.example".into(), rights: vec![], alt_names: vec![], days: 30 };
        let issued = pki::issue(&pki.ca.cert, &pki.ca.key, &req, NOW).unwrap();
        let err = Signer::new(issued.key, vec![issued.cert], NOW).unwrap_err();
        assert!(err.to_string().contains("package-signing"), "{role}: {err}");
    }
    let a = pki.signer(Role::Signer, 30);
    let req = IssueRequest { role: Role::Signer, name: "b".into(), rights: vec![], alt_names: vec![], days: 30 };
    let b = pki::issue(&pki.ca.cert, &pki.ca.key, &req, NOW).unwrap();
    let err = Signer::new(b.key, a.chain.clone(), NOW).unwrap_err();
    assert!(matches!(err, BuildError::KeyMismatch { .. }));
}

#[test]
fn expired_or_foreign_signers_are_refused() {
    let pki = Pki::new();
    let signer = pki.signer(Role::Signer, 30);
    let (bytes, _) = build_bytes(&mut sample(), &signer, NOW);
    let later = NOW + 40 * 86_400;
    let err =
        PackageArchive::open(Cursor::new(bytes.clone())).unwrap().verify_signature(&pki.trust, later).unwrap_err();
    assert!(matches!(err, PackageError::Chain(ChainError::Expired { .. })), "{err}");
    let other = Pki::new();
    let err = PackageArchive::open(Cursor::new(bytes)).unwrap().verify_signature(&other.trust, NOW).unwrap_err();
    assert!(matches!(err, PackageError::Chain(ChainError::UnknownIssuer { .. })), "{err}");
    let mut out = Cursor::new(Vec::new());
    let mut files = sample();
    let err = build(&mut out, &control(""), files.entries(), &mut files, &signer, later, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

/// Rewrites an archive member by member, letting `edit` change names and contents, and signs
/// the new archive bytes as `signer` (so that the checks behind the archive signature are
/// what refuses it).
fn rewrite(bytes: &[u8], signer: &Signer, edit: impl Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>)>) -> Vec<u8> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
    let mut out = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for i in 0..zip.len() {
        let mut m = zip.by_index(i).unwrap();
        let name = m.name().unwrap().to_string();
        let mode = m.unix_mode().unwrap_or(0o644);
        let mut data = Vec::new();
        m.read_to_end(&mut data).unwrap();
        if let Some((name, data)) = edit(&name, data) {
            let opts =
                zip::write::SimpleFileOptions::default().unix_permissions(mode & 0o777).system(zip::System::Unix);
            out.start_file(name, opts).unwrap();
            out.write_all(&data).unwrap();
        }
    }
    out.set_raw_comment(vec![b'0'; super::build::ARCHIVE_SIGNATURE_LEN].into_boxed_slice()).unwrap();
    let mut cursor = out.finish().unwrap();
    super::build::sign_archive(&mut cursor, signer).unwrap();
    cursor.into_inner()
}

#[test]
fn tampering_is_detected() {
    let pki = Pki::new();
    let signer = pki.signer(Role::Signer, 30);
    let (bytes, _) = build_bytes(&mut sample(), &signer, NOW);
    let verify = |b: Vec<u8>| -> Result<(), PackageError> {
        PackageArchive::open(Cursor::new(b))?.verify(&pki.trust, NOW, &mut |_| {}).map(|_| ())
    };

    let changed = rewrite(&bytes, &signer, |n, mut d| {
        if n == "data/a.txt" {
            d[0] ^= 1;
        }
        Some((n.into(), d))
    });
    let err = verify(changed).unwrap_err();
    assert!(matches!(&err, PackageError::Content { path, .. } if path == "data/a.txt"), "{err}");

    // Re-zipped by another tool (no archive signature): refused before anything else.
    let mut plain = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let mut original = zip::ZipArchive::new(Cursor::new(bytes.as_slice())).unwrap();
    for i in 0..original.len() {
        plain.raw_copy_file(original.by_index_raw(i).unwrap()).unwrap();
    }
    let plain = plain.finish().unwrap().into_inner();
    assert!(matches!(verify(plain).unwrap_err(), PackageError::NoArchiveSignature));

    let manifest_changed = rewrite(&bytes, &signer, |n, mut d| {
        if n == "OUTPOST/manifest" {
            let last = d.len() - 1;
            d[last] ^= 1;
        }
        Some((n.into(), d))
    });
    let err = verify(manifest_changed).unwrap_err();
    assert!(matches!(err, PackageError::Signature(_) | PackageError::Manifest(_)), "{err}");

    let extra =
        rewrite(&bytes, &signer, |n, d| Some(if n == "data/a.txt" { ("data/b.txt".into(), d) } else { (n.into(), d) }));
    assert!(matches!(verify(extra).unwrap_err(), PackageError::Missing(_)));
    let dropped = rewrite(&bytes, &signer, |n, d| (n != "OUTPOST/signature").then(|| (n.into(), d)));
    assert!(matches!(verify(dropped).unwrap_err(), PackageError::MissingMember("OUTPOST/signature")));

    for evil in ["../evil.sh", "/etc/cron.d/evil", "data/../../evil"] {
        let bad =
            rewrite(&bytes, &signer, |n, d| Some(if n == "data/a.txt" { (evil.into(), d) } else { (n.into(), d) }));
        let err = verify(bad).unwrap_err();
        assert!(matches!(err, PackageError::Path(PathError::Unsafe(_))), "{evil}: {err}");
    }

    for cut in [bytes.len() / 2, bytes.len() - 10, 100] {
        let err = verify(bytes[..cut].to_vec()).unwrap_err();
        assert!(matches!(err, PackageError::Archive(_)), "cut at {cut}: {err}");
    }

    // Corrupting compressed payload bytes in place is caught too.
    let needle = b"OUTPOST/manifest";
    let at = bytes.windows(needle.len()).position(|w| w == needle).unwrap();
    for offset in [40usize, 200, 5000] {
        let mut corrupt = bytes.clone();
        if offset < at {
            corrupt[offset] ^= 0x55;
            assert!(verify(corrupt).is_err(), "flip at {offset}");
        }
    }
}

#[test]
fn bad_sources_are_refused() {
    let pki = Pki::new();
    let signer = pki.signer(Role::Signer, 30);
    let mut out = Cursor::new(Vec::new());
    let mut files = Mem::new(&[("A.txt", b"1"), ("a.txt", b"2")]);
    let err = build(&mut out, &control(""), files.entries(), &mut files, &signer, NOW, &mut |_| {}).unwrap_err();
    assert!(matches!(err, BuildError::CaseClash { .. }), "{err}");
    let mut files = Mem::new(&[("OUTPOST/x", b"1")]);
    let err = build(&mut out, &control(""), files.entries(), &mut files, &signer, NOW, &mut |_| {}).unwrap_err();
    assert!(matches!(err, BuildError::Path(PathError::Reserved(_))), "{err}");
    let mut files = Mem::new(&[("a.txt", b"12345")]);
    let mut entries = files.entries();
    entries[0].size = 3;
    let err = build(&mut out, &control(""), entries, &mut files, &signer, NOW, &mut |_| {}).unwrap_err();
    assert!(matches!(err, BuildError::Changed { expected: 3, .. }), "{err}");
    let mut files = Mem::new(&[("a.txt", b"1")]);
    let c = Control::parse("package: x\nversion: one\narchitecture: all\nsection: base\npriority: optional\n").unwrap();
    let err = build(&mut out, &c, files.entries(), &mut files, &signer, NOW, &mut |_| {}).unwrap_err();
    assert!(err.to_string().starts_with("control: field 'version'"), "{err}");
}

#[test]
fn file_names_follow_wapt_convention() {
    let e = |extra: &str| crate::entry::PackageEntry::from_control(&control(extra)).unwrap();
    assert_eq!(file_name(&e("")), "tis-demo_1.2-3.outpost");
    let c = "architecture: x64\nmaturity: PROD\nlocale: fr\n";
    let mut ctl = control("");
    for (k, v) in Control::parse(c).unwrap().iter() {
        ctl.set(k, v);
    }
    let entry = crate::entry::PackageEntry::from_control(&ctl).unwrap();
    assert_eq!(file_name(&entry), "tis-demo_1.2-3_x64_PROD_fr.outpost");
    let mut unit = control("");
    unit.set("package", "OU=Paris/Lyon,DC=corp");
    let entry = crate::entry::PackageEntry::from_control(&unit).unwrap();
    assert_eq!(file_name(&entry), "OU=Paris_Lyon,DC=corp_1.2-3.outpost");
}

#[test]
fn changing_any_byte_of_the_archive_is_detected() {
    let pki = Pki::new();
    let signer = pki.signer(Role::Signer, 30);
    let mut files = Mem::new(&[("setup.sh", b"#!/bin/sh\n"), ("a.txt", b"hello")]);
    let (bytes, _) = build_bytes(&mut files, &signer, NOW);
    PackageArchive::open(Cursor::new(bytes.clone())).unwrap().verify(&pki.trust, NOW, &mut |_| {}).unwrap();
    let mut undetected = Vec::new();
    for at in 0..bytes.len() {
        let mut changed = bytes.clone();
        changed[at] ^= 0x01;
        let result = PackageArchive::open(Cursor::new(changed)).and_then(|a| a.verify(&pki.trust, NOW, &mut |_| {}));
        if result.is_ok() {
            undetected.push(at);
        }
    }
    assert!(undetected.is_empty(), "changes at offsets {undetected:?} of {} went unnoticed", bytes.len());
    let mut longer = bytes.clone();
    longer.extend_from_slice(b"junk");
    assert!(PackageArchive::open(Cursor::new(longer)).and_then(|a| a.verify(&pki.trust, NOW, &mut |_| {})).is_err());
    let mut prefixed = b"junk".to_vec();
    prefixed.extend_from_slice(&bytes);
    assert!(PackageArchive::open(Cursor::new(prefixed)).and_then(|a| a.verify(&pki.trust, NOW, &mut |_| {})).is_err());
}

#[test]
fn incompressible_files_are_stored_and_text_is_deflated() {
    let pki = Pki::new();
    let signer = pki.signer(Role::Signer, 30);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..100_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let text = "a line of text that repeats\n".repeat(4000);
    let mut files = Mem::new(&[("noise.bin", &noise), ("text.txt", text.as_bytes())]);
    let (bytes, _) = build_bytes(&mut files, &signer, NOW);
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes.as_slice())).unwrap();
    assert_eq!(zip.by_name("noise.bin").unwrap().compression(), zip::CompressionMethod::Stored);
    let t = zip.by_name("text.txt").unwrap();
    assert_eq!(t.compression(), zip::CompressionMethod::Deflated);
    assert!(t.compressed_size() * 10 < t.size());
}

#[test]
fn a_signed_chunk_list_that_does_not_match_the_content_is_refused() {
    let pki = Pki::new();
    let signer = pki.signer(Role::Signer, 30);
    let mut files = Mem::new(&[("a.bin", &[3u8; 100_000])]);
    let (bytes, built) = build_bytes(&mut files, &signer, NOW);
    // The same lengths, one wrong hash, properly signed by the signer.
    let mut manifest = built.manifest;
    manifest.files[0].chunks[0].hash[0] ^= 1;
    let encoded = manifest.encode();
    let signature = crate::signing::sign(&signer.key, crate::signing::Domain::PackageManifest, &encoded);
    let forged = rewrite(&bytes, &signer, |n, d| {
        Some(match n {
            "OUTPOST/manifest" => (n.into(), encoded.clone()),
            "OUTPOST/signature" => (n.into(), signature.to_vec()),
            _ => (n.into(), d),
        })
    });
    let err = PackageArchive::open(Cursor::new(forged)).unwrap().verify(&pki.trust, NOW, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("a chunk does not match its signed hash"), "{err}");
}
