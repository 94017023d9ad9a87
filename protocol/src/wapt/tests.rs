//! Tests against the vendor-signed fixtures in `tests/fixtures/wapt/` and against WAPT
//! archives made here with a test-only RSA signer (`tests/fixtures/wapt-test-signer/`).

use std::io::{Cursor, Write};

use base64::Engine as _;
use rustls_pki_types::CertificateDer;

use super::*;
use crate::control::Control;
use crate::pki::{self, IssueRequest, Role, TrustStore, parse_pem_certificates};

/// 2027-01-15: after every fixture certificate's start, before tranquilit.crt's end (2030).
const NOW: i64 = 1_800_000_000;

macro_rules! fixture {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/wapt/", $name))
    };
}
macro_rules! test_signer {
    ($name:literal) => {
        include_str!(concat!("../../../tests/fixtures/wapt-test-signer/", $name))
    };
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    parse_pem_certificates(pem).unwrap()
}

fn vendor() -> Vec<CertificateDer<'static>> {
    certs(fixture!("tranquilit.crt"))
}

const SIGNED: [(&str, &str); 3] = [
    ("tis-7zip", fixture!("tis-7zip.control")),
    ("tis-keepass", fixture!("tis-keepass.control")),
    ("tis-vlc", fixture!("tis-vlc-linux.control")),
];

#[test]
fn vendor_fixtures_verify() {
    for (name, text) in SIGNED {
        let control = Control::parse(text).unwrap();
        assert_eq!(control.get("package"), Some(name));
        let signer = verify_control(&control, &vendor(), NOW).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(signer.certificate.subject, "Tranquil IT");
        assert!(signer.certificate.fingerprint.starts_with("8c5127a7"));
        assert!(!signer.expired_now);
    }
}

#[test]
fn changing_any_signed_byte_fails() {
    for (name, text) in SIGNED {
        let control = Control::parse(text).unwrap();
        let attributes: Vec<String> =
            control.get("signed_attributes").unwrap().split(',').map(str::to_string).collect();
        for attr in &attributes {
            if attr == "signed_attributes" {
                continue;
            }
            let mut changed = control.clone();
            let value = changed.get_or_empty(attr).to_string();
            let new = match value.chars().next() {
                Some(c) if c.is_ascii_digit() => format!("{}{}", (c as u8 - b'0' + 1) % 10, &value[1..]),
                Some(_) => format!("{value}x"),
                None => "x".to_string(),
            };
            changed.set(attr, &new);
            let result = verify_control(&changed, &vendor(), NOW);
            assert!(result.is_err(), "{name}: changing {attr} must break the signature");
        }
        // Dropping an attribute from the signed list, or changing the signature, fails too.
        let mut fewer = control.clone();
        fewer.set("signed_attributes", &attributes[1..].join(","));
        assert!(matches!(verify_control(&fewer, &vendor(), NOW), Err(WaptError::BadSignature { .. })));
        let mut sig = control.clone();
        let s = sig.get_or_empty("signature").replacen('A', "B", 1);
        sig.set("signature", &s);
        assert!(matches!(verify_control(&sig, &vendor(), NOW), Err(WaptError::BadSignature { .. })));
        // An unsigned attribute may change freely.
        let mut free = control.clone();
        free.set("filename", "whatever.wapt");
        assert!(verify_control(&free, &vendor(), NOW).is_ok(), "{name}");
    }
}

#[test]
fn legacy_scheme_is_refused_by_name() {
    let control = Control::parse(fixture!("tis-firefox-legacy.control")).unwrap();
    assert_eq!(control.get("package"), Some("tis-firefox"));
    for trust in [vendor(), certs(fixture!("tranquilit-2017.crt"))] {
        let err = verify_control(&control, &trust, NOW).unwrap_err();
        assert!(matches!(err, WaptError::LegacySignature { .. }), "{err}");
        assert!(err.to_string().contains("legacy signature scheme"), "{err}");
    }
}

#[test]
fn wrong_or_missing_trust_is_refused() {
    let control = Control::parse(fixture!("tis-7zip.control")).unwrap();
    let err = verify_control(&control, &certs(fixture!("tranquilit-2017.crt")), NOW).unwrap_err();
    assert!(matches!(err, WaptError::UntrustedSigner { .. }), "{err}");
    assert!(err.to_string().contains("8c5127a75392be9c"), "{err}");
    let mut unsigned = control.clone();
    unsigned.remove("signature");
    assert!(matches!(verify_control(&unsigned, &vendor(), NOW), Err(WaptError::Unsigned)));
    // Signed in 2024, certificate valid 2020-2030: still valid after 2030, flagged expired.
    let later = verify_control(&control, &vendor(), 1_950_000_000).unwrap();
    assert!(later.expired_now);
}

#[test]
fn signed_json_has_integers_and_escapes() {
    let seven =
        String::from_utf8(signed_bytes(&Control::parse(fixture!("tis-7zip.control")).unwrap()).unwrap()).unwrap();
    assert!(seven.contains(r#""installed_size":5774712,"#), "{seven}");
    assert!(seven.contains(r#""maintainer":"WAPT Team,Tranquil IT,Jimmy PEL\u00c9""#), "{seven}");
    let keepass =
        String::from_utf8(signed_bytes(&Control::parse(fixture!("tis-keepass.control")).unwrap()).unwrap()).unwrap();
    assert!(keepass.contains(r#""installed_size":"","#), "{keepass}");
}

#[test]
fn index_2016_keeps_every_record() {
    let bytes = include_bytes!("../../../tests/fixtures/wapt/Packages-2016.zip");
    let index = read_index(Cursor::new(bytes)).unwrap();
    let text_records = {
        let mut zip = zip::ZipArchive::new(Cursor::new(&bytes[..])).unwrap();
        let mut s = String::new();
        std::io::Read::read_to_string(&mut zip.by_name("Packages").unwrap(), &mut s).unwrap();
        s.lines().filter(|l| l.starts_with("package ")).count()
    };
    assert_eq!(index.records.len(), text_records);
    assert_eq!(index.records.len(), 61);
    for record in &index.records {
        let c = &record.control;
        for field in ["package", "version", "filename", "size", "md5sum", "localpath", "repo_url", "repo"] {
            assert!(c.get(field).is_some(), "record at line {} lacks {field}", record.line);
        }
        assert!(c.get_u64("size").is_some());
        crate::entry::PackageEntry::from_control(c).unwrap_or_else(|e| panic!("line {}: {e}", record.line));
    }
    // Continuation lines survive.
    assert!(index.records.iter().any(|r| r.control.get_or_empty("description").contains('\n')));
    // Writing and reading again gives the same records.
    let again = crate::control::parse_records(&crate::control::write_records(index.records.iter().map(|r| &r.control)))
        .unwrap();
    assert_eq!(
        again.iter().map(|r| &r.control).collect::<Vec<_>>(),
        index.records.iter().map(|r| &r.control).collect::<Vec<_>>()
    );
}

#[test]
fn index_errors_name_the_line() {
    let err = read_index(Cursor::new(b"package: a\nversion: 1\n\npackage b\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Packages: line 4: no ':' in \"package b\"; each line must be `key: value` (there is no comment syntax)"
    );
}

// ---- WAPT archives made with the test signer ----

struct TestSigner {
    key: ring::signature::RsaKeyPair,
    cert_pem: &'static str,
}

impl TestSigner {
    fn codesign() -> Self {
        Self::load(test_signer!("codesign.key"), test_signer!("codesign.crt"))
    }
    fn plain() -> Self {
        Self::load(test_signer!("plain.key"), test_signer!("plain.crt"))
    }
    fn load(key: &str, cert_pem: &'static str) -> Self {
        let der = crate::pem::parse(key).unwrap().remove(0).der;
        Self { key: ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap(), cert_pem }
    }
    fn cert(&self) -> Vec<CertificateDer<'static>> {
        certs(self.cert_pem)
    }
    fn sign(&self, msg: &[u8]) -> String {
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        let rng = ring::rand::SystemRandom::new();
        self.key.sign(&ring::signature::RSA_PKCS1_SHA256, &rng, msg, &mut sig).unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig)
    }
    fn control(&self, package: &str) -> String {
        let fp = pki::fingerprint_sha256(self.cert()[0].as_ref());
        let mut c = Control::parse(&format!(
            "package: {package}\nversion: 3.1-2\narchitecture: all\nsection: base\npriority: optional\n\
             description: Démo\ndepends: \ninstalled_size: 1234\nsigner: Example Vendor\n\
             signer_fingerprint: {fp}\nsignature_date: 2026-12-01T10:00:00.000000\n"
        ))
        .unwrap();
        let attrs = "package,version,architecture,section,priority,description,depends,installed_size,signer,signer_fingerprint,signature_date,signed_attributes";
        c.set("signed_attributes", attrs);
        let sig = self.sign(&signed_bytes(&c).unwrap());
        c.set("signature", &sig);
        c.to_text()
    }
}

/// Writes a `.wapt` zip: `files` plus control, manifest, signature and certificate; `tweak`
/// may rewrite members after signing (name, data) or add new ones.
fn wapt_zip(signer: &TestSigner, files: &[(&str, &[u8])], tweak: impl Fn(&mut Vec<(String, Vec<u8>)>)) -> Vec<u8> {
    let mut members: Vec<(String, Vec<u8>)> = files.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect();
    members.push(("WAPT/control".into(), signer.control("ex-tool").into_bytes()));
    members.push(("WAPT/certificate.crt".into(), signer.cert_pem.as_bytes().to_vec()));
    let manifest: Vec<(String, String)> =
        members.iter().map(|(n, d)| (n.clone(), pki::fingerprint_sha256(d))).collect();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    members.push(("WAPT/signature.sha256".into(), signer.sign(&manifest).into_bytes()));
    members.push(("WAPT/manifest.sha256".into(), manifest));
    tweak(&mut members);
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    for (name, data) in members {
        zip.start_file(name, zip::write::SimpleFileOptions::default()).unwrap();
        zip.write_all(&data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn check(bytes: Vec<u8>, trust: &[CertificateDer<'_>]) -> Result<WaptSigner, WaptError> {
    let mut archive = WaptArchive::open(Cursor::new(bytes))?;
    archive.check_manifest(&mut |_| {})?;
    archive.verify_signature(trust, NOW)
}

const FILES: [(&str, &[u8]); 3] = [
    ("setup.py", b"def install():\n    pass\n"),
    ("tool-setup.exe", &[0x4d, 0x5a, 0, 1, 2]),
    ("WAPT/icon.png", b"png"),
];

#[test]
fn wapt_archive_verifies_and_converts() {
    let vendor = TestSigner::codesign();
    let bytes = wapt_zip(&vendor, &FILES, |_| {});
    let mut archive = WaptArchive::open(Cursor::new(bytes)).unwrap();
    archive.check_manifest(&mut |_| {}).unwrap();
    let wapt_signer = archive.verify_signature(&vendor.cert(), NOW).unwrap();
    assert_eq!(wapt_signer.certificate.subject, "Example Vendor Code Signing");

    let ca = pki::create_ca("Org", NOW, 3650).unwrap();
    let req = IssueRequest { role: Role::Signer, name: "Packager".into(), rights: vec![], alt_names: vec![], days: 30 };
    let ours = pki::issue(&ca.cert, &ca.key, &req, NOW).unwrap();
    let signer = crate::package::Signer::new(ours.key, vec![ours.cert], NOW).unwrap();
    let mut out = Cursor::new(Vec::new());
    let built = convert(&mut archive, Some(&wapt_signer), &[], &mut out, &signer, NOW, &mut |_| {}).unwrap();
    let paths: Vec<&str> = built.manifest.files.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, ["WAPT/icon.png", "setup.py", "tool-setup.exe"]);
    let c = &built.manifest.control;
    assert_eq!(c.get("package"), Some("ex-tool"));
    assert_eq!(c.get("description"), Some("Démo"));
    assert_eq!(c.get("signer"), Some("Packager"));
    assert_eq!(c.get("wapt_signer"), Some("Example Vendor Code Signing"));
    assert!(c.get("signature").is_none() && c.get("signed_attributes").is_none());
    let trust = TrustStore::new(vec![ca.cert]).unwrap();
    crate::package::PackageArchive::open(Cursor::new(out.into_inner()))
        .unwrap()
        .verify(&trust, NOW, &mut |_| {})
        .unwrap();
}

#[test]
fn wapt_archive_refusals() {
    let vendor = TestSigner::codesign();
    let trust = vendor.cert();

    let changed = wapt_zip(&vendor, &FILES, |m| m[1].1[0] ^= 1);
    assert!(matches!(check(changed, &trust), Err(WaptError::HashMismatch { path }) if path == "tool-setup.exe"));

    let added = wapt_zip(&vendor, &FILES, |m| m.push(("extra.bat".into(), b"x".to_vec())));
    assert!(matches!(check(added, &trust), Err(WaptError::NotInManifest(p)) if p == "extra.bat"));

    let removed = wapt_zip(&vendor, &FILES, |m| {
        m.remove(2);
    });
    assert!(matches!(check(removed, &trust), Err(WaptError::MissingFile(p)) if p == "WAPT/icon.png"));

    let manifest_changed = wapt_zip(&vendor, &FILES, |m| {
        let last = m.len() - 1;
        m[last].1 = String::from_utf8(m[last].1.clone()).unwrap().replace(',', ", ").into_bytes();
    });
    assert!(matches!(check(manifest_changed, &trust), Err(WaptError::BadSignature { .. })));

    for evil in ["../../etc/cron.d/x", "/etc/passwd", "C:/Windows/x.dll", "a/../../b"] {
        let bad = wapt_zip(&vendor, &FILES, |m| m.push((evil.into(), b"x".to_vec())));
        let err = WaptArchive::open(Cursor::new(bad)).unwrap_err();
        assert!(matches!(&err, WaptError::UnsafePath(p) if p == evil), "{evil}: {err}");
    }

    let other = TestSigner::plain();
    let err = check(wapt_zip(&vendor, &FILES, |_| {}), &other.cert()).unwrap_err();
    assert!(matches!(err, WaptError::UntrustedSigner { .. }), "{err}");

    let err = check(wapt_zip(&other, &FILES, |_| {}), &other.cert()).unwrap_err();
    assert!(matches!(err, WaptError::NeedsCodeSigning { .. }), "{err}");
    // Without setup.py, no code signing is needed.
    check(wapt_zip(&other, &FILES[1..], |_| {}), &other.cert()).unwrap();

    let bytes = wapt_zip(&vendor, &FILES, |_| {});
    for cut in [bytes.len() / 3, bytes.len() - 5] {
        assert!(matches!(WaptArchive::open(Cursor::new(bytes[..cut].to_vec())), Err(WaptError::Archive(_))));
    }
}

#[test]
fn sizes_that_are_not_whole_numbers_are_signed_as_text_and_verify() {
    // WAPT keeps such values as text and signs them that way ("12 MB" is a JSON string).
    let signer = TestSigner::codesign();
    let fp = pki::fingerprint_sha256(signer.cert()[0].as_ref());
    for (installed, size) in [("12 MB", "4096"), ("1.5", "3,2 Mo"), ("", "about 7 KiB")] {
        let mut c = Control::parse(&format!(
            "package: ex-size\nversion: 1.0-1\narchitecture: all\nsection: base\npriority: optional\n\
             installed_size: {installed}\nsize: {size}\nsigner: Example Vendor\nsigner_fingerprint: {fp}\n\
             signature_date: 2026-12-01T10:00:00.000000\n"
        ))
        .unwrap();
        c.set(
            "signed_attributes",
            "package,version,architecture,section,priority,installed_size,size,signer,signer_fingerprint,signature_date,signed_attributes",
        );
        let json = String::from_utf8(signed_bytes(&c).unwrap()).unwrap();
        assert!(
            json.contains(&format!("\"size\":{}", if size == "4096" { "4096".into() } else { format!("{size:?}") })),
            "{json}"
        );
        c.set("signature", &signer.sign(json.as_bytes()));
        // Written out and read back, as it comes from a file.
        let again = Control::parse(&c.to_text()).unwrap();
        verify_control(&again, &signer.cert(), NOW).unwrap_or_else(|e| panic!("{installed:?}/{size:?}: {e}"));
        assert_eq!(again.get_u64("installed_size"), None);
    }
}
