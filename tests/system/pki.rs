//! `outpost pki …` end to end.

use std::process::Command;

use crate::common::{Pki, listing, run_env, run_in};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn init_and_issue_every_role() {
    let pki = Pki::new();
    let ca = run_in(pki.path(), &["pki", "show", "pki/ca.crt", "--json"]).ok();
    let ca = json(&ca.stdout);
    assert_eq!(ca[0]["is_ca"], true);
    assert_eq!(ca[0]["subject"], "Test Org CA");
    assert_eq!(ca[0]["key_algorithm"], "Ed25519");

    let table: &[(&str, &str, &[&str], &[&str])] = &[
        ("signer", "Packaging Team", &["code-signing", "package-signing"], &["snapshot-signing"]),
        ("deployer", "Helpdesk", &["package-signing"], &["code-signing"]),
        ("admin", "Alice", &["right:view", "right:act", "right:modify", "package-signing"], &["code-signing"]),
        ("server", "main.example.org", &["tls-server", "tls-client", "snapshot-signing"], &["package-signing"]),
        ("edge", "edge1.example.org", &["tls-server", "tls-client"], &["snapshot-signing", "package-signing"]),
        ("host", "pc1.example.org", &["tls-client"], &["snapshot-signing", "package-signing", "code-signing"]),
    ];
    for (role, name, has, lacks) in table {
        let extra: &[&str] = if *role == "admin" { &["--rights", "view,act,modify"] } else { &[] };
        let (cert, key) = pki.issue(role, name, extra);
        let key_text = std::fs::read_to_string(&key).unwrap();
        assert!(key_text.starts_with("-----BEGIN PRIVATE KEY-----"), "--no-password writes a clear key");
        let shown = json(&run_in(pki.path(), &["pki", "show", cert.to_str().unwrap(), "--json"]).ok().stdout);
        assert_eq!(shown[0]["role"], *role);
        assert_eq!(shown[0]["organisation"], "Test Org");
        let usages: Vec<&str> = shown[0]["usages"].as_array().unwrap().iter().map(|u| u.as_str().unwrap()).collect();
        for u in *has {
            assert!(usages.contains(u), "{role} should have {u}: {usages:?}");
        }
        for u in *lacks {
            assert!(!usages.contains(u), "{role} should lack {u}: {usages:?}");
        }
        if *role == "admin" {
            assert_eq!(shown[0]["rights"], serde_json::json!(["view", "act", "modify"]));
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "{role} key is private");
        }
        let text = run_in(pki.path(), &["pki", "show", cert.to_str().unwrap()]).ok().stdout;
        assert!(text.contains(&format!("Role:         {role}")), "{text}");
    }
}

#[test]
fn keys_are_encrypted_by_default_and_openssl_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret horse\n").unwrap();
    run_in(dir.path(), &["pki", "init", "--dir", "ca", "--password-file", "pw"]).ok();
    let key = std::fs::read_to_string(dir.path().join("ca/ca.key")).unwrap();
    assert!(key.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let shown = run_in(dir.path(), &["pki", "show", "ca/ca.key"]).ok().stdout;
    assert!(shown.contains("encrypted with a password"), "{shown}");

    // The CA password comes from the environment, the new key's from the file.
    let issued = run_env(
        dir.path(),
        &["pki", "issue", "--dir", "ca", "--role", "signer", "--name", "pack", "--password-file", "pw"],
        &[("OUTPOST_CA_PASSWORD", "s3cret horse")],
    )
    .ok();
    assert!(issued.stdout.trim().ends_with("ca/pack.crt"), "{}", issued.stdout);

    if Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success()) {
        let ok = Command::new("openssl")
            .args(["pkey", "-in", "ca/pack.key", "-passin", "file:pw", "-noout"])
            .current_dir(dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "OpenSSL decrypts the key with the password");
        let verify = Command::new("openssl")
            .args(["verify", "-CAfile", "ca/ca.crt", "ca/pack.crt"])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(verify.status.success(), "OpenSSL verifies the chain: {}", String::from_utf8_lossy(&verify.stdout));
    } else {
        eprintln!("openssl not installed: skipping the OpenSSL cross-checks");
    }
}

#[test]
fn wrong_or_missing_passwords_are_clear_and_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pw"), "right\n").unwrap();
    std::fs::write(dir.path().join("bad"), "wrong\n").unwrap();
    run_in(dir.path(), &["pki", "init", "--dir", "ca", "--password-file", "pw"]).ok();
    let before = listing(&dir.path().join("ca"));

    run_in(
        dir.path(),
        &[
            "pki",
            "issue",
            "--dir",
            "ca",
            "--role",
            "signer",
            "--name",
            "x",
            "--ca-password-file",
            "bad",
            "--no-password",
        ],
    )
    .fails_with("ca.key: wrong password");
    assert_eq!(listing(&dir.path().join("ca")), before, "nothing written after a wrong password");

    // No password anywhere, no terminal: say how to give one.
    run_in(dir.path(), &["pki", "issue", "--dir", "ca", "--role", "signer", "--name", "x", "--no-password"])
        .fails_with("OUTPOST_CA_PASSWORD");
    run_in(dir.path(), &["pki", "init", "--dir", "other"]).fails_with("--no-password");
    assert!(!dir.path().join("other/ca.key").exists());
}

#[test]
fn existing_files_are_not_replaced_without_force() {
    let pki = Pki::new();
    let ca_before = std::fs::read(pki.ca()).unwrap();
    run_in(pki.path(), &["pki", "init", "--dir", "pki", "--no-password"]).fails_with("already holds a CA");
    assert_eq!(std::fs::read(pki.ca()).unwrap(), ca_before);
    let (cert, _) = pki.issue("deployer", "desk", &[]);
    let before = std::fs::read(&cert).unwrap();
    run_in(pki.path(), &["pki", "issue", "--dir", "pki", "--role", "deployer", "--name", "desk", "--no-password"])
        .fails_with("already exists");
    assert_eq!(std::fs::read(&cert).unwrap(), before);
    run_in(
        pki.path(),
        &["pki", "issue", "--dir", "pki", "--role", "deployer", "--name", "desk", "--no-password", "--force"],
    )
    .ok();
    assert_ne!(std::fs::read(&cert).unwrap(), before);
}

#[test]
fn bad_requests_say_what_is_wrong() {
    let pki = Pki::new();
    let p = pki.path();
    run_in(
        p,
        &["pki", "issue", "--dir", "pki", "--role", "signer", "--name", "s", "--rights", "view", "--no-password"],
    )
    .fails_with("only admin certificates carry rights");
    run_in(p, &["pki", "issue", "--dir", "pki", "--role", "admin", "--name", "a", "--rights", "root", "--no-password"])
        .fails_with("unknown right \"root\"");
    run_in(p, &["pki", "issue", "--dir", "pki", "--role", "edge", "--name", "my edge", "--no-password"])
        .fails_with("--san");
    run_in(p, &["pki", "issue", "--dir", "pki", "--role", "edge", "--name", "e1", "--days", "99999", "--no-password"])
        .fails_with("would outlive the CA");
    run_in(p, &["pki", "issue", "--dir", "nowhere", "--role", "edge", "--name", "e1", "--no-password"])
        .fails_with("nowhere/ca.crt");
    run_in(p, &["pki", "show", "pki"]).fails_with("pki");
    std::fs::write(p.join("junk.crt"), "hello").unwrap();
    run_in(p, &["pki", "show", "junk.crt"]).fails_with("no certificate found");
    let usage = run_in(p, &["pki", "issue", "--dir", "pki", "--role", "king", "--name", "x"]);
    assert_eq!(usage.code, Some(2), "usage errors exit with 2: {}", usage.stderr);
}
