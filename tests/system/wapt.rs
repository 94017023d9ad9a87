//! `outpost wapt verify-control | index | import` against the vendor fixtures and WAPT
//! archives signed here with the test-only RSA signer.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;

use crate::common::{Pki, fixture, listing, run_env, run_in};

const SIGNED: [&str; 3] = ["tis-7zip.control", "tis-keepass.control", "tis-vlc-linux.control"];

fn verify_control(dir: &Path, file: &Path, trust: &Path) -> crate::common::Run {
    run_in(dir, &["wapt", "verify-control", file.to_str().unwrap(), "--trust", trust.to_str().unwrap()])
}

#[test]
fn vendor_controls_verify_and_any_change_breaks_them() {
    let dir = tempfile::tempdir().unwrap();
    let trust = fixture("wapt/tranquilit.crt");
    for name in SIGNED {
        let ok = verify_control(dir.path(), &fixture(&format!("wapt/{name}")), &trust).ok();
        assert!(ok.stdout.contains("signed by \"Tranquil IT\""), "{}", ok.stdout);

        // Change one byte inside a signed value (the last letter of the description).
        let text = std::fs::read_to_string(fixture(&format!("wapt/{name}"))).unwrap();
        let line = text.lines().find(|l| l.starts_with("description ")).unwrap();
        let changed_line = format!("{}{}", &line[..line.len() - 1], if line.ends_with('x') { 'y' } else { 'x' });
        let changed = dir.path().join(name);
        std::fs::write(&changed, text.replace(line, &changed_line)).unwrap();
        verify_control(dir.path(), &changed, &trust).fails_with("does not match");
    }
    // A folder of certificates works as the trust too.
    verify_control(dir.path(), &fixture("wapt/tis-7zip.control"), &fixture("wapt")).ok();
    // The older certificate is not the signer of the 2.x controls.
    verify_control(dir.path(), &fixture("wapt/tis-7zip.control"), &fixture("wapt/tranquilit-2017.crt"))
        .fails_with("not a trusted certificate");
}

#[test]
fn legacy_control_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for trust in ["wapt/tranquilit-2017.crt", "wapt/tranquilit.crt"] {
        verify_control(dir.path(), &fixture("wapt/tis-firefox-legacy.control"), &fixture(trust))
            .fails_with("legacy signature scheme");
    }
}

#[test]
fn index_lists_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let index = fixture("wapt/Packages-2016.zip");
    let text = run_in(dir.path(), &["wapt", "index", index.to_str().unwrap()]).ok();
    let mut zip = zip::ZipArchive::new(std::fs::File::open(&index).unwrap()).unwrap();
    let mut raw = String::new();
    std::io::Read::read_to_string(&mut zip.by_name("Packages").unwrap(), &mut raw).unwrap();
    let names: Vec<&str> =
        raw.lines().filter(|l| l.starts_with("package ")).map(|l| l.split_once(':').unwrap().1.trim()).collect();
    assert_eq!(names.len(), 61);
    assert_eq!(text.stdout.lines().count(), 1 + names.len(), "a header and one line per record");
    for name in &names {
        assert!(text.stdout.lines().any(|l| l.starts_with(&format!("{name} "))), "{name} listed");
    }
    assert!(text.stderr.contains("61 records"), "{}", text.stderr);

    let json = run_in(dir.path(), &["wapt", "index", index.to_str().unwrap(), "--json"]).ok();
    let records: Vec<serde_json::Map<String, serde_json::Value>> = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(records.len(), 61);
    let fields_in_text = raw.lines().filter(|l| !l.trim().is_empty() && !l.starts_with(' ')).count();
    assert_eq!(records.iter().map(serde_json::Map::len).sum::<usize>(), fields_in_text, "no field lost");
    assert_eq!(records[0]["package"], "smp-infrarecorder");
    assert_eq!(records[0]["localpath"], "/var/www/wapt/wapt");

    let bad = dir.path().join("Packages");
    std::fs::write(&bad, "package: a\nversion: 1\n\npackage b\n").unwrap();
    run_in(dir.path(), &["wapt", "index", "Packages"]).fails_with("Packages: line 4: no ':'");
}

/// A test vendor that signs WAPT archives the way WAPT does.
pub struct Vendor {
    key: ring::signature::RsaKeyPair,
    cert: PathBuf,
}

impl Vendor {
    pub fn new(name: &str) -> Self {
        let pem = std::fs::read_to_string(fixture(&format!("wapt-test-signer/{name}.key"))).unwrap();
        let der = outpost_protocol::pem::parse(&pem).unwrap().remove(0).der;
        let key = ring::signature::RsaKeyPair::from_pkcs8(&der).unwrap();
        Self { key, cert: fixture(&format!("wapt-test-signer/{name}.crt")) }
    }

    fn sign(&self, msg: &[u8]) -> String {
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key.sign(&ring::signature::RSA_PKCS1_SHA256, &ring::rand::SystemRandom::new(), msg, &mut sig).unwrap();
        base64::engine::general_purpose::STANDARD.encode(sig)
    }

    /// Writes `name.wapt` in `dir` with `files`, a signed control, manifest and signature;
    /// `after` is added after signing.
    pub fn package(&self, dir: &Path, name: &str, files: &[(&str, &[u8])], after: &[(&str, &[u8])]) -> PathBuf {
        self.package_sized(dir, name, "4096", files, after)
    }

    /// The same with this `installed_size` (signed as WAPT signs it: a number or text).
    fn package_sized(
        &self,
        dir: &Path,
        name: &str,
        installed_size: &str,
        files: &[(&str, &[u8])],
        after: &[(&str, &[u8])],
    ) -> PathBuf {
        let cert_pem = std::fs::read(&self.cert).unwrap();
        let certs = outpost_protocol::pki::parse_pem_certificates(std::str::from_utf8(&cert_pem).unwrap()).unwrap();
        let fp = outpost_protocol::pki::fingerprint_sha256(certs[0].as_ref());
        let mut control = outpost_protocol::control::Control::parse(&format!(
            "package: {name}\nversion: 5.0-1\narchitecture: x64\nsection: base\npriority: optional\n\
             maturity: PROD\ndescription: Exemple signé\ninstalled_size: {installed_size}\nsigner: test vendor\n\
             signer_fingerprint: {fp}\nsignature_date: 2026-12-01T10:00:00.000000\n\
             signed_attributes: package,version,architecture,section,priority,maturity,description,installed_size,signer,signer_fingerprint,signature_date,signed_attributes\n"
        ))
        .unwrap();
        let signature = self.sign(&outpost_protocol::wapt::signed_bytes(&control).unwrap());
        control.set("signature", &signature);
        let mut members: Vec<(String, Vec<u8>)> = files.iter().map(|(n, d)| (n.to_string(), d.to_vec())).collect();
        members.push(("WAPT/control".into(), control.to_text().into_bytes()));
        members.push(("WAPT/certificate.crt".into(), cert_pem));
        let manifest: Vec<(String, String)> =
            members.iter().map(|(n, d)| (n.clone(), outpost_protocol::pki::fingerprint_sha256(d))).collect();
        let manifest = serde_json::to_vec(&manifest).unwrap();
        members.push(("WAPT/signature.sha256".into(), self.sign(&manifest).into_bytes()));
        members.push(("WAPT/manifest.sha256".into(), manifest));
        members.extend(after.iter().map(|(n, d)| (n.to_string(), d.to_vec())));
        let path = dir.join(format!("{name}_5.0-1_x64_PROD.wapt"));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        for (n, d) in members {
            let stored = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
            zip.start_file(n, stored).unwrap();
            zip.write_all(&d).unwrap();
        }
        zip.finish().unwrap();
        path
    }
}

pub const PAYLOAD: [(&str, &[u8]); 2] =
    [("setup.py", b"def install():\n    print('x')\n"), ("app-5.0.msi", b"MSI-CONTENT")];

#[test]
fn import_converts_a_signed_wapt_package() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("signer", "packager", &[]);
    let vendor = Vendor::new("codesign");
    let wapt = vendor.package(pki.path(), "ex-app", &PAYLOAD, &[]);
    let args = |trust: &Path| {
        vec![
            "wapt".to_string(),
            "import".into(),
            wapt.to_str().unwrap().into(),
            "--cert".into(),
            cert.to_str().unwrap().into(),
            "--key".into(),
            key.to_str().unwrap().into(),
            "--trust".into(),
            trust.to_str().unwrap().into(),
            "--out".into(),
            "imported".into(),
        ]
    };
    let argv = args(&vendor.cert);
    let run = run_in(pki.path(), &argv.iter().map(String::as_str).collect::<Vec<_>>()).ok();
    assert!(run.stderr.contains("WAPT signature OK"), "{}", run.stderr);
    let out = pki.path().join(run.stdout.trim());
    assert_eq!(out, pki.path().join("imported/ex-app_5.0-1_x64_PROD.outpost"));
    let ok = run_in(pki.path(), &["pkg", "verify", out.to_str().unwrap(), "--trust", pki.ca().to_str().unwrap()]).ok();
    assert!(ok.stdout.contains("ex-app 5.0-1, 2 files"), "{}", ok.stdout);
    let shown = run_in(pki.path(), &["pkg", "show", out.to_str().unwrap(), "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(v["control"]["description"], "Exemple signé");
    assert_eq!(v["control"]["wapt_signer"], "Example Vendor Code Signing");
    assert_eq!(v["control"]["signer"], "packager");
    assert!(v["control"].get("signed_attributes").is_none());

    // Untrusted vendor: refused, nothing written.
    let argv = args(&fixture("wapt/tranquilit.crt"));
    std::fs::remove_file(&out).unwrap();
    run_in(pki.path(), &argv.iter().map(String::as_str).collect::<Vec<_>>()).fails_with("not a trusted certificate");
    assert!(listing(&pki.path().join("imported")).is_empty());

    // Without --trust: the manifest is still checked, with a warning.
    let run = run_in(
        pki.path(),
        &["wapt", "import", wapt.to_str().unwrap(), "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()],
    )
    .ok();
    assert!(run.stderr.contains("was not checked"), "{}", run.stderr);
}

#[test]
fn import_refuses_tampered_and_unsafe_packages() {
    let pki = Pki::new();
    let (cert, key) = pki.issue("signer", "packager", &[]);
    let vendor = Vendor::new("codesign");
    let import = |wapt: &Path| {
        run_in(
            pki.path(),
            &[
                "wapt",
                "import",
                wapt.to_str().unwrap(),
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "--trust",
                vendor.cert.to_str().unwrap(),
                "--out",
                "out",
            ],
        )
    };
    let added = vendor.package(pki.path(), "added", &PAYLOAD, &[("run.bat", b"evil")]);
    import(&added).fails_with("\"run.bat\" is not listed");
    let evil = vendor.package(pki.path(), "evil", &PAYLOAD, &[("../../etc/cron.d/x", b"evil")]);
    import(&evil).fails_with("unsafe path in the archive: \"../../etc/cron.d/x\"");

    let good = vendor.package(pki.path(), "good", &PAYLOAD, &[]);
    let mut bytes = std::fs::read(&good).unwrap();
    let at = bytes.windows(11).position(|w| w == b"MSI-CONTENT").unwrap();
    bytes[at] = b'N';
    let changed = pki.path().join("changed.wapt");
    std::fs::write(&changed, &bytes).unwrap();
    import(&changed).fails_with("REFUSED");
    std::fs::write(&changed, &bytes[..bytes.len() / 2]).unwrap();
    import(&changed).fails_with("truncated or damaged");

    let plain = Vendor::new("plain");
    let no_codesign = plain.package(pki.path(), "nocs", &PAYLOAD, &[]);
    run_in(
        pki.path(),
        &[
            "wapt",
            "import",
            no_codesign.to_str().unwrap(),
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--trust",
            plain.cert.to_str().unwrap(),
            "--out",
            "out",
        ],
    )
    .fails_with("lacks the code-signing usage");
    assert!(listing(&pki.path().join("out")).is_empty(), "nothing written: {:?}", listing(&pki.path().join("out")));
}

fn import_args<'a>(
    wapt: &'a Path,
    signer: &'a (PathBuf, PathBuf),
    vendor: &'a Vendor,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "wapt",
        "import",
        wapt.to_str().unwrap(),
        "--cert",
        signer.0.to_str().unwrap(),
        "--key",
        signer.1.to_str().unwrap(),
        "--trust",
        vendor.cert.to_str().unwrap(),
        "--out",
        "out",
    ];
    args.extend_from_slice(extra);
    args
}

#[test]
fn sizes_written_as_text_verify_and_import() {
    let pki = Pki::new();
    let signer = pki.issue("signer", "packager", &[]);
    let vendor = Vendor::new("codesign");
    for (i, size) in ["12 MB", "1.5", "environ 3 Mo"].iter().enumerate() {
        let name = format!("sized{i}");
        let wapt = vendor.package_sized(pki.path(), &name, size, &[("a.txt", b"a")], &[]);
        let run = run_in(pki.path(), &import_args(&wapt, &signer, &vendor, &[])).ok();
        assert!(run.stderr.contains("WAPT signature OK"), "{size}: {}", run.stderr);
        let out = pki.path().join(run.stdout.trim());
        let shown = run_in(pki.path(), &["pkg", "show", out.to_str().unwrap(), "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
        assert_eq!(v["control"]["installed_size"], *size, "kept as the vendor wrote it");
    }
}

#[test]
fn a_setup_py_without_native_hooks_is_marked_and_said() {
    let pki = Pki::new();
    let signer = pki.issue("signer", "packager", &[]);
    let vendor = Vendor::new("codesign");
    let wapt = vendor.package(pki.path(), "ex-py", &PAYLOAD, &[]);
    let run = run_in(pki.path(), &import_args(&wapt, &signer, &vendor, &[])).ok();
    assert!(
        run.stderr.contains("agents will refuse to install it") && run.stderr.contains("--hooks"),
        "{}",
        run.stderr
    );
    let out = pki.path().join(run.stdout.trim());
    let show = |out: &Path| -> serde_json::Value {
        serde_json::from_str(&run_in(pki.path(), &["pkg", "show", out.to_str().unwrap(), "--json"]).ok().stdout)
            .unwrap()
    };
    assert!(show(&out)["control"]["wapt_setup"].as_str().unwrap().contains("not converted"));

    // With native hooks: they are added at the root and said so.
    let hooks = pki.path().join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    std::fs::write(hooks.join("setup.sh"), "#!/bin/sh\necho native\n").unwrap();
    std::fs::remove_file(&out).unwrap();
    let run = run_in(pki.path(), &import_args(&wapt, &signer, &vendor, &["--hooks", hooks.to_str().unwrap()])).ok();
    assert!(run.stderr.contains("replaced by the native hooks setup.sh"), "{}", run.stderr);
    let v = show(&pki.path().join(run.stdout.trim()));
    assert_eq!(v["control"]["wapt_setup"], "replaced by setup.sh");
    assert!(v["files"].as_array().unwrap().iter().any(|f| f["path"] == "setup.sh"), "{v}");

    // A folder holding anything but hooks is refused (a typo is not silently left out).
    std::fs::write(hooks.join("setup.ps"), "oops").unwrap();
    run_in(pki.path(), &import_args(&wapt, &signer, &vendor, &["--hooks", hooks.to_str().unwrap()]))
        .fails_with("\"setup.ps\" is not a hook");
    // A deployer cannot add hooks.
    std::fs::remove_file(hooks.join("setup.ps")).unwrap();
    let deployer = pki.issue("deployer", "helpdesk", &[]);
    run_in(pki.path(), &import_args(&wapt, &deployer, &vendor, &["--hooks", hooks.to_str().unwrap()]))
        .fails_with("code-signing");
}

#[test]
fn an_index_with_a_huge_line_is_refused_briefly_and_cheaply() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Packages.zip");
    {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let deflated = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
        zip.start_file("Packages", deflated).unwrap();
        zip.write_all(b"package: a\nversion: 1\n\n").unwrap();
        let block = vec![b'x'; 1 << 20];
        for _ in 0..200 {
            zip.write_all(&block).unwrap();
        }
        zip.write_all(b"\n").unwrap();
        zip.finish().unwrap();
    }
    assert!(std::fs::metadata(&path).unwrap().len() < 2_000_000, "a small zip");
    // Under a 256 MiB address-space limit: reading the whole line would not fit.
    let run = crate::common::run_limited(dir.path(), &["wapt", "index", path.to_str().unwrap()], 256 * 1024);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("line 4") && run.stderr.contains("larger than"), "{}", run.stderr);
    assert!(run.stderr.len() < 1000, "a short error, not the line: {} bytes", run.stderr.len());
    // A small line without ':' is quoted, a long one only in part.
    std::fs::write(dir.path().join("P1"), format!("package: a\n{}\n", "y".repeat(20_000))).unwrap();
    let run = run_env(dir.path(), &["wapt", "index", "P1"], &[]);
    assert!(run.stderr.contains("20000 bytes") && run.stderr.len() < 1000, "{}", run.stderr);
}
