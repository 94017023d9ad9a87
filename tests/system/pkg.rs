//! `outpost pkg build | verify | show` end to end, including refusals.

use std::io::Write;
use std::path::{Path, PathBuf};

use outpost_protocol::pki::{self, IssueRequest, Role};

use crate::common::{Pki, control, listing, run_env, run_in, source};

const HOOK: &[u8] = b"#!/bin/sh\necho \"installing $OUTPOST_PACKAGE\"\n";

struct Setup {
    pki: Pki,
    signer: (PathBuf, PathBuf),
}

impl Setup {
    fn new() -> Self {
        let pki = Pki::new();
        let signer = pki.issue("signer", "packager", &[]);
        Self { pki, signer }
    }

    fn dir(&self) -> &Path {
        self.pki.path()
    }

    fn build(&self, src: &Path, out: &str) -> crate::common::Run {
        self.build_with(src, out, &self.signer, &[])
    }

    fn build_with(&self, src: &Path, out: &str, who: &(PathBuf, PathBuf), env: &[(&str, &str)]) -> crate::common::Run {
        let args = [
            "pkg",
            "build",
            src.to_str().unwrap(),
            "--cert",
            who.0.to_str().unwrap(),
            "--key",
            who.1.to_str().unwrap(),
            "--out",
            out,
        ];
        run_env(self.dir(), &args, env)
    }

    fn verify(&self, file: &Path) -> crate::common::Run {
        run_in(self.dir(), &["pkg", "verify", file.to_str().unwrap(), "--trust", self.pki.ca().to_str().unwrap()])
    }

    fn sample(&self) -> PathBuf {
        let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let src = source(
            &self.dir().join("src"),
            &control("demo-tool", "2.1-1", "description: A tool\n with two lines\ndepends: demo-lib(>=1.0)\n"),
            &[("setup.sh", HOOK), ("bin/tool", b"\x7fELF..."), ("share/data.bin", &big)],
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(src.join("bin/tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        src
    }
}

#[test]
fn build_verify_show() {
    let s = Setup::new();
    let src = s.sample();
    let built = s.build(&src, "out").ok();
    let path = s.dir().join(built.stdout.trim());
    assert_eq!(path, s.dir().join("out/demo-tool_2.1-1.outpost"));
    assert!(path.is_file());

    let ok = s.verify(&path).ok();
    assert!(ok.stdout.starts_with("OK "), "{}", ok.stdout);
    assert!(ok.stdout.contains("demo-tool 2.1-1, 3 files"), "{}", ok.stdout);
    assert!(ok.stdout.contains("role signer"), "{}", ok.stdout);

    let shown = run_in(s.dir(), &["pkg", "show", path.to_str().unwrap(), "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(v["control"]["package"], "demo-tool");
    assert_eq!(v["control"]["description"], "A tool\nwith two lines");
    assert_eq!(v["control"]["signer"], "packager");
    assert_eq!(v["hooks"], serde_json::json!(["setup.sh"]));
    let files = v["files"].as_array().unwrap();
    let paths: Vec<&str> = files.iter().map(|f| f["path"].as_str().unwrap()).collect();
    assert_eq!(paths, ["bin/tool", "setup.sh", "share/data.bin"], "WAPT/control is in the manifest, not a file");
    let data = std::fs::read(src.join("share/data.bin")).unwrap();
    assert_eq!(files[2]["blake3"], blake3::hash(&data).to_hex().as_str());
    assert_eq!(files[2]["size"], 2_000_000);
    #[cfg(unix)]
    assert_eq!(files[0]["mode"], 0o755);

    let text = run_in(s.dir(), &["pkg", "show", path.to_str().unwrap()]).ok();
    assert!(text.stdout.contains("package           : demo-tool"), "{}", text.stdout);
    assert!(text.stderr.contains("not verified"), "{}", text.stderr);
}

#[test]
fn same_input_same_bytes_apart_from_the_date() {
    let s = Setup::new();
    let src = s.sample();
    let env = [("SOURCE_DATE_EPOCH", "1800000000")];
    let a = s.build_with(&src, "a", &s.signer, &env).ok();
    let b = s.build_with(&src, "b", &s.signer, &env).ok();
    let bytes_a = std::fs::read(s.dir().join(a.stdout.trim())).unwrap();
    let bytes_b = std::fs::read(s.dir().join(b.stdout.trim())).unwrap();
    assert_eq!(bytes_a, bytes_b, "same input and signature date: same bytes");

    let c = s.build_with(&src, "c", &s.signer, &[("SOURCE_DATE_EPOCH", "1800000100")]).ok();
    let bytes_c = std::fs::read(s.dir().join(c.stdout.trim())).unwrap();
    assert_ne!(bytes_a, bytes_c);
    let show = |p: &str| -> serde_json::Value {
        serde_json::from_str(&run_in(s.dir(), &["pkg", "show", p, "--json"]).ok().stdout).unwrap()
    };
    let (ja, jc) = (show(a.stdout.trim()), show(c.stdout.trim()));
    assert_eq!(ja["files"], jc["files"]);
    let mut ca = ja["control"].clone();
    let mut cc = jc["control"].clone();
    assert_ne!(ca["signature_date"], cc["signature_date"]);
    ca["signature_date"] = serde_json::Value::Null;
    cc["signature_date"] = serde_json::Value::Null;
    assert_eq!(ca, cc, "only the signature date differs");
}

#[test]
fn hooks_need_a_code_signing_certificate() {
    let s = Setup::new();
    let deployer = s.pki.issue("deployer", "helpdesk", &[]);
    let src = s.sample();
    s.build_with(&src, "out", &deployer, &[]).fails_with("lacks the code-signing usage");
    assert!(listing(&s.dir().join("out")).is_empty(), "nothing half-written: {:?}", listing(&s.dir().join("out")));
    // Without the hook the deployer may sign.
    std::fs::remove_file(src.join("setup.sh")).unwrap();
    let out = s.build_with(&src, "out", &deployer, &[]).ok();
    s.verify(&s.dir().join(out.stdout.trim())).ok();
    // Node certificates may not sign packages at all.
    let edge = s.pki.issue("edge", "edge1.example.org", &[]);
    s.build_with(&src, "out", &edge, &[]).fails_with("package-signing");
}

/// Copies a package with one byte changed at `percent` of its length (inside the compressed
/// payload, which is most of the archive).
fn flip(path: &Path, percent: usize) -> PathBuf {
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes.len() * percent / 100;
    bytes[at] ^= 0x20;
    let out = path.with_extension("tampered.outpost");
    std::fs::write(&out, bytes).unwrap();
    out
}

#[test]
fn tampered_truncated_and_foreign_packages_are_refused() {
    let s = Setup::new();
    let built = s.build(&s.sample(), "out").ok();
    let path = s.dir().join(built.stdout.trim());

    for percent in [30, 50, 70] {
        let bad = flip(&path, percent);
        let err = s.verify(&bad).fails_with("REFUSED");
        assert!(err.stderr.contains("tampered.outpost"), "the error names the file: {}", err.stderr);
    }
    let bytes = std::fs::read(&path).unwrap();
    let cut = s.dir().join("cut.outpost");
    std::fs::write(&cut, &bytes[..bytes.len() - 300]).unwrap();
    s.verify(&cut).fails_with("truncated or damaged");

    let other = Pki::new();
    let err = run_in(s.dir(), &["pkg", "verify", path.to_str().unwrap(), "--trust", other.ca().to_str().unwrap()])
        .fails_with("does not chain to a trusted CA");
    assert!(err.stderr.contains(path.to_str().unwrap()));

    // A WAPT package is not an Outpost package, and says so.
    let wapt = s.dir().join("x.wapt");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&wapt).unwrap());
    zip.start_file("WAPT/control", zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(control("x", "1", "").as_bytes()).unwrap();
    zip.finish().unwrap();
    s.verify(&wapt).fails_with("outpost wapt import");
}

#[test]
fn unsafe_archive_paths_are_refused() {
    let s = Setup::new();
    let built = s.build(&s.sample(), "out").ok();
    let path = s.dir().join(built.stdout.trim());
    for evil in ["../../etc/cron.d/evil", "/etc/passwd"] {
        let mut reader = zip::ZipArchive::new(std::fs::File::open(&path).unwrap()).unwrap();
        let bad = s.dir().join("evil.outpost");
        let mut out = zip::ZipWriter::new(std::fs::File::create(&bad).unwrap());
        for i in 0..reader.len() {
            out.raw_copy_file(reader.by_index_raw(i).unwrap()).unwrap();
        }
        out.start_file(evil, zip::write::SimpleFileOptions::default()).unwrap();
        out.write_all(b"pwned").unwrap();
        out.finish().unwrap();
        s.verify(&bad).fails_with(&format!("unsafe path \"{evil}\""));
        let shown = run_in(s.dir(), &["pkg", "show", bad.to_str().unwrap()]);
        assert_eq!(shown.code, Some(1), "show refuses it too");
    }
}

#[test]
fn bad_sources_are_refused_with_the_file_and_line() {
    let s = Setup::new();
    let src = source(&s.dir().join("bad"), "package: x\nversion: 1.0\nthis line has no colon\n", &[("a", b"1")]);
    s.build(&src, "out").fails_with("WAPT/control: line 3: no ':'");
    let src = source(&s.dir().join("bad2"), &control("x", "1.0.0.0.1", ""), &[("a", b"1")]);
    s.build(&src, "out").fails_with("field 'version': invalid version \"1.0.0.0.1\"");
    let src = source(&s.dir().join("bad3"), "package: x\nversion: 1\n", &[("a", b"1")]);
    s.build(&src, "out").fails_with("missing required field(s): architecture, section, priority");
    let src = source(&s.dir().join("bad4"), &control("x", "1", "depends: a(=>2)\n"), &[("a", b"1")]);
    s.build(&src, "out").fails_with("field 'depends'");
    s.build(&s.dir().join("nothing"), "out").fails_with("a package source folder holds WAPT/control");
    #[cfg(unix)]
    {
        let src = source(&s.dir().join("link"), &control("x", "1", ""), &[("a", b"1")]);
        std::os::unix::fs::symlink("/etc/hostname", src.join("b")).unwrap();
        s.build(&src, "out").fails_with("symbolic links cannot go in a package");
    }
    assert!(listing(&s.dir().join("out")).is_empty(), "no package and no temporary file left");
}

#[test]
fn expired_certificates_are_refused() {
    let s = Setup::new();
    let now = outpost_actors::clock::unix_now();
    // A signer certificate that was valid for 30 days, two months ago.
    let ca_pem = std::fs::read_to_string(s.pki.ca()).unwrap();
    let ca_cert = pki::parse_pem_certificates(&ca_pem).unwrap().remove(0);
    let ca_key = pki::decode_private_key(&std::fs::read_to_string(s.dir().join("pki/ca.key")).unwrap(), None).unwrap();
    let req = IssueRequest { role: Role::Signer, name: "old".into(), rights: vec![], alt_names: vec![], days: 30 };
    let then = now - 60 * 86_400;
    let old = pki::issue(&ca_cert, &ca_key, &req, then).unwrap();
    let cert = s.dir().join("old.crt");
    let key = s.dir().join("old.key");
    std::fs::write(&cert, old.cert_pem()).unwrap();
    std::fs::write(&key, pki::encode_private_key(&old.key, None).unwrap().as_bytes()).unwrap();
    let src = s.sample();
    s.build_with(&src, "out", &(cert, key), &[]).fails_with("expired on");

    // A package signed while that certificate was valid no longer verifies.
    let signer = outpost_protocol::package::Signer::new(old.key, vec![old.cert], then + 86_400).unwrap();
    let mut dir = outpost_actors::disk::DirSource::new(&src);
    let entries = dir.entries(&["WAPT/control"]).unwrap();
    let ctl =
        outpost_protocol::control::Control::parse(&std::fs::read_to_string(src.join("WAPT/control")).unwrap()).unwrap();
    let file = s.dir().join("old.outpost");
    let mut out = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&file).unwrap();
    outpost_protocol::package::build(&mut out, &ctl, entries, &mut dir, &signer, then + 86_400, &mut |_| {}).unwrap();
    drop(out);
    s.verify(&file).fails_with("expired on");
}

/// The first steps of the README and docs/packaging.md, as a new user takes them: a package from
/// a template, built and published in one step, installed by an agent, its hook run.
#[test]
fn a_new_user_goes_from_a_template_to_an_installed_package() {
    let c = crate::cluster::Cluster::new();
    let main = c.main(&[]);
    let (cert, key) = c.pki.issue("signer", "Packaging Team", &[]);
    let dir = c.dir();
    let made = run_in(dir, &["pkg", "new", "tis-hello", "--template", "files", "--maintainer", "Alice"]).ok();
    assert!(made.stderr.contains("pkg build tis-hello"), "it says what to do next: {}", made.stderr);
    // Templates for every kind build as they are.
    let build = |d: &str| {
        run_in(
            dir,
            &["pkg", "build", d, "--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap(), "--out", "built"],
        )
    };
    for t in ["deb", "rpm", "msi", "exe", "config", "group", "unit", "profile", "host"] {
        let name = format!("tis-{t}");
        run_in(dir, &["pkg", "new", &name, "--template", t]).ok();
        if t == "msi" {
            // An MSI package without its MSI says so; with it, it builds.
            build(&name).fails_with("install_msi names tis-msi.msi, which is not in the package");
            std::fs::write(dir.join("tis-msi/tis-msi.msi"), b"the vendor's msi").unwrap();
        }
        build(&name).ok();
    }
    run_in(dir, &["pkg", "new", "tis-hello", "--template", "files"]).fails_with("already exists");
    run_in(dir, &["pkg", "new", "x", "--template", "jar"]).refused_with("invalid value 'jar'");

    // The user puts a file in the payload and points the hook at a folder of theirs.
    std::fs::write(dir.join("tis-hello/payload/hello.txt"), "Hello from Outpost\n").unwrap();
    let target = dir.join("installed-hello");
    let hook = std::fs::read_to_string(dir.join("tis-hello/setup.sh")).unwrap();
    assert!(hook.contains("target=\"/opt/tis-hello\""), "{hook}");
    std::fs::write(dir.join("tis-hello/setup.sh"), hook.replace("/opt/tis-hello", target.to_str().unwrap())).unwrap();
    let ca = c.pki.ca();
    let built = run_in(
        dir,
        &[
            "pkg",
            "build",
            "tis-hello",
            "--cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--out",
            "dist",
            "--publish",
            &main.addr,
            "--ca",
            ca.to_str().unwrap(),
        ],
    )
    .ok();
    assert!(built.stderr.contains("Published tis-hello 1.0-1"), "{}", built.stderr);
    assert!(dir.join("dist/tis-hello_1.0-1_PROD.outpost").is_file(), "the name docs/packaging.md gives");
    run_in(dir, &["pkg", "verify", "dist/tis-hello_1.0-1_PROD.outpost", "--trust", ca.to_str().unwrap()]).ok();

    let host = crate::agent::Host::new(&c, "pc-new.test", &format!("repos = [{:?}]", main.addr));
    host.run(&["install", "tis-hello"]).ok();
    assert_eq!(host.package("tis-hello").unwrap()["status"], "OK");
    assert_eq!(std::fs::read_to_string(target.join("hello.txt")).unwrap(), "Hello from Outpost\n");
    host.run(&["audit"]).ok();
    host.run(&["remove", "tis-hello"]).ok();
    assert!(!target.exists(), "the uninstall hook removed it");
}

/// `pkg sign`: the same control and files under a new signature (a renewed signer); a package
/// that does not verify is not signed again.
#[test]
fn a_package_is_signed_again_with_a_renewed_certificate() {
    let s = Setup::new();
    let src = s.sample();
    let path = s.dir().join(s.build(&src, "out").ok().stdout.trim());
    let (cert, key) = s.pki.issue("signer", "packager 2027", &[]);
    let ca = s.pki.ca();
    let sign = |file: &Path, out: &str| {
        run_in(
            s.dir(),
            &[
                "pkg",
                "sign",
                file.to_str().unwrap(),
                "--trust",
                ca.to_str().unwrap(),
                "--cert",
                cert.to_str().unwrap(),
                "--key",
                key.to_str().unwrap(),
                "--out",
                out,
            ],
        )
    };
    let r = sign(&path, "resigned").ok();
    assert!(
        r.stderr.contains("was signed by \"packager\"") && r.stderr.contains("now signed by \"packager 2027\""),
        "{}",
        r.stderr
    );
    let again = s.dir().join(r.stdout.trim());
    assert_eq!(again, s.dir().join("resigned/demo-tool_2.1-1.outpost"));
    assert!(s.verify(&again).ok().stdout.contains("demo-tool 2.1-1, 3 files"));
    let show = |p: &Path| -> serde_json::Value {
        serde_json::from_str(&run_in(s.dir(), &["pkg", "show", p.to_str().unwrap(), "--json"]).ok().stdout).unwrap()
    };
    let (old, new) = (show(&path), show(&again));
    assert_eq!(new["control"]["signer"], "packager 2027");
    assert_eq!(old["files"], new["files"], "the same files, byte for byte");
    assert_eq!(old["control"]["description"], new["control"]["description"]);
    assert_ne!(old["manifest_blake3"], new["manifest_blake3"]);
    // A damaged package is refused, and nothing is written.
    let bad = flip(&path, 50);
    sign(&bad, "refused").fails_with("does not verify");
    assert!(!s.dir().join("refused/demo-tool_2.1-1.outpost").exists());
}
