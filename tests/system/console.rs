//! The CLI console every day: a profile saved once by `console login` (paths, not keys), so that
//! commands need no flags; flags still override; wrong values and wrong addresses are errors
//! that say what is wrong.

use crate::cluster::Cluster;
use crate::common::run_env;

#[test]
fn the_console_logs_in_once_and_says_what_is_wrong() {
    let c = Cluster::new();
    let (server, central) = c.server(&[]);
    let (cert, key) = c.pki.issue("admin", "Carol", &["--rights", "view,act"]);
    let ca = c.pki.ca();
    let profiles = c.dir().join("home/outpost/console.toml");
    let env = [("OUTPOST_CONSOLE_PROFILES", profiles.to_str().unwrap())];
    let run = |args: &[&str]| run_env(c.dir(), args, &env);
    let login = |extra: &[&str], server: &str| {
        let mut args = vec!["console", "login", "--server", server, "--ca", ca.to_str().unwrap()];
        args.extend_from_slice(&["--cert", cert.to_str().unwrap(), "--key", key.to_str().unwrap()]);
        args.extend_from_slice(extra);
        run(&args)
    };

    // Nothing saved yet: the error says how to give central.
    run(&["console", "hosts"]).fails_with("console login");

    let r = login(&[], &central).ok();
    assert!(r.stdout.contains("Profile \"default\" saved"), "{}", r.stdout);
    let saved = std::fs::read_to_string(&profiles).unwrap();
    assert!(saved.contains(cert.to_str().unwrap()) && !saved.contains("PRIVATE KEY"), "paths, never keys:\n{saved}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&profiles).unwrap().permissions().mode() & 0o777, 0o600);
    }

    // Afterwards no flags are needed.
    let hosts: serde_json::Value = serde_json::from_str(&run(&["console", "hosts", "--json"]).ok().stdout).unwrap();
    assert_eq!(hosts["total"], 0, "{hosts}");
    assert!(hosts["hosts"].is_array());
    run(&["console", "actions"]).ok();

    // A console pointed at the repository's port says so, at once.
    let started = std::time::Instant::now();
    login(&["--profile", "wrong"], &server.addr).fails_with("another service");
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?}", started.elapsed());
    // The failed login saved nothing.
    assert!(!std::fs::read_to_string(&profiles).unwrap().contains("[profiles.wrong]"));
    run(&["console", "hosts", "--profile", "wrong"]).fails_with("no console profile \"wrong\"");

    // Flags and variables override the profile.
    run(&["console", "hosts", "--server", &server.addr]).fails_with("another service");
    run_env(c.dir(), &["console", "hosts"], &[env[0], ("OUTPOST_SERVER", server.addr.as_str())])
        .fails_with("another service");

    // Wrong values are errors, not empty tables.
    run(&["console", "hosts", "--status", "BROKEN"])
        .refused_with("not a host status: OK, NEED-UPGRADE, ERROR or UNKNOWN");
    run(&["console", "hosts", "colour:red"]).fails_with("\"colour\" is not a filter");
    run(&["console", "hosts", "status:error", "--sort", "colour"]).refused_with("invalid value 'colour'");

    // A central that does not answer: said after the stated time, not waited for forever.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let started = std::time::Instant::now();
    run(&["console", "hosts", "--server", &silent_addr]).fails_with("no answer within 10 s");
    assert!(started.elapsed() < std::time::Duration::from_secs(20), "{:?}", started.elapsed());
    drop(silent);

    // A second profile, made the default only when asked.
    login(&["--profile", "other"], &central).ok();
    let saved = std::fs::read_to_string(&profiles).unwrap();
    assert!(saved.contains("default = \"default\"") && saved.contains("[profiles.other]"), "{saved}");
    run(&["console", "hosts", "--profile", "other"]).ok();
}
