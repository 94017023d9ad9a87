//! What an operator gets wrong, and what a disk does wrong: occupied ports, values too large or
//! meaningless, damaged databases, configuration files found and read as documented, flags a
//! running daemon cannot honour. Every case ends in a clear error (exit 1, the field or file
//! named), never a panic (exit 101).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::agent::{Bg, Host};
use crate::cluster::{Cluster, next_ip, tcp_port, udp_port, wait_for};
use crate::common::{Run, outpost, run_env, run_in};

const LIMIT: Duration = Duration::from_secs(60);

/// Exit 1 with `needle` in the error, and no panic.
#[track_caller]
fn refused(run: Run, needle: &str) -> Run {
    assert!(!run.stderr.contains("panicked"), "a panic:\n{}", run.stderr);
    assert_eq!(run.code, Some(1), "expected exit 1\nstdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains(needle), "expected {needle:?} in:\n{}", run.stderr);
    run
}

/// `outpost ARGS` with the node flags of a certificate `cert`.
fn node_args<'a>(c: &'a Cluster, role_args: &[&'a str], cert: &'a (PathBuf, PathBuf)) -> Vec<String> {
    let mut v: Vec<String> = role_args.iter().map(|s| s.to_string()).collect();
    for (flag, path) in [("--ca", c.pki.ca()), ("--cert", cert.0.clone()), ("--key", cert.1.clone())] {
        v.push(flag.into());
        v.push(path.to_string_lossy().into_owned());
    }
    v
}

/// Runs `outpost ARGS` in `dir`. A daemon that should have refused its settings but started
/// runs on: the wait for it to end fails after [`LIMIT`] (and the daemon is stopped), instead
/// of waiting for ever.
fn run_strings(dir: &Path, args: &[String]) -> Run {
    let child = outpost()
        .current_dir(dir)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the outpost binary runs");
    let mut running = Bg(child);
    let status =
        wait_for(LIMIT, &format!("`outpost {}` to end (it should refuse its settings)", args.join(" ")), || {
            running.0.try_wait().expect("the child can be waited for")
        });
    let read = |pipe: Option<&mut dyn Read>| {
        let mut bytes = Vec::new();
        pipe.map(|p| p.read_to_end(&mut bytes).expect("its output can be read"));
        bytes
    };
    let stdout = read(running.0.stdout.as_mut().map(|p| p as &mut dyn Read));
    let stderr = read(running.0.stderr.as_mut().map(|p| p as &mut dyn Read));
    Run::from(&std::process::Output { status, stdout, stderr })
}

#[test]
fn occupied_addresses_are_clear_errors_and_roles_have_their_own_metrics_ports() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let ip = next_ip();
    let server_cert = c.pki.issue("server", "server-b", &["--san", &ip]);
    let edge_cert = c.pki.issue("edge", "edge-b", &["--san", &ip]);
    let data = c.dir().join("data-b");
    let free_metrics = format!("{ip}:{}", tcp_port(&ip));
    let data_arg = data.to_string_lossy().into_owned();

    // The main's QUIC address, then its metrics address.
    for (listen, metrics, what) in [
        (main.addr.clone(), free_metrics.clone(), "already in use"),
        (format!("{ip}:{}", udp_port(&ip)), main.metrics.clone(), "metrics address"),
    ] {
        let base = ["repo", "main", "--listen", &listen, "--metrics", &metrics, "--data", &data_arg];
        refused(run_strings(c.dir(), &node_args(&c, &base, &server_cert)), what);
        let edge =
            ["repo", "edge", "--upstream", &main.addr, "--listen", &listen, "--metrics", &metrics, "--data", &data_arg];
        refused(run_strings(c.dir(), &node_args(&c, &edge, &edge_cert)), what);
    }
    // The server: its central address in use, then its metrics address.
    let quic = format!("{ip}:{}", udp_port(&ip));
    let server =
        ["server", "--listen", &quic, "--central-listen", &main.addr, "--metrics", &free_metrics, "--data", &data_arg];
    refused(run_strings(c.dir(), &node_args(&c, &server, &server_cert)), "already in use");
    let server = [
        "server",
        "--listen",
        &quic,
        "--central-listen",
        &format!("{ip}:{}", udp_port(&ip)),
        "--metrics",
        &main.metrics,
        "--data",
        &data_arg,
    ];
    let r = run_strings(c.dir(), &node_args(&c, &server, &server_cert));
    refused(r, "each role has its own default");

    // A bad address is named.
    let base = ["repo", "main", "--listen", "not-an-address", "--data", &data_arg];
    refused(run_strings(c.dir(), &node_args(&c, &base, &server_cert)), "listen: \"not-an-address\"");

    // Daemons log without colours when their output is not a terminal (journald, files).
    assert!(!main.log_text().contains('\u{1b}'), "ANSI escapes in a log file:\n{}", main.log_text());
}

#[test]
fn values_too_large_or_meaningless_are_refused_with_the_field_named() {
    let c = Cluster::new();
    let server = c.pki.issue("server", "s", &["--san", "127.0.0.1"]);
    let edge = c.pki.issue("edge", "e", &["--san", "127.0.0.1"]);
    let huge = "99999999999999999999999d";
    let write = |name: &str, text: &str| {
        let p = c.dir().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    };
    // Every duration field of every configuration.
    for field in ["snapshot_lifetime", "resign_every", "gc_grace"] {
        let cfg = write("main.toml", &format!("{field} = {huge:?}\n"));
        refused(run_strings(c.dir(), &node_args(&c, &["repo", "main", "--config", &cfg], &server)), field);
        let cfg = write("server.toml", &format!("{field} = {huge:?}\n"));
        refused(run_strings(c.dir(), &node_args(&c, &["server", "--config", &cfg], &server)), field);
    }
    for field in ["poll", "gc_grace", "quarantine"] {
        let cfg = write("edge.toml", &format!("{field} = {huge:?}\nupstreams = [\"127.0.0.1:9\"]\n"));
        refused(run_strings(c.dir(), &node_args(&c, &["repo", "edge", "--config", &cfg], &edge)), field);
    }
    // Memory a repository keeps for the ranges it served: a size it could never hold.
    let cfg = write("edge.toml", "range_memory = \"99TiB\"\nupstreams = [\"127.0.0.1:9\"]\n");
    refused(run_strings(c.dir(), &node_args(&c, &["repo", "edge", "--config", &cfg], &edge)), "range_memory");
    let cfg = write("main.toml", "range_memory = \"lots\"\n");
    refused(run_strings(c.dir(), &node_args(&c, &["repo", "main", "--config", &cfg], &server)), "range_memory");
    for field in ["update_every", "hook_timeout"] {
        let host = Host::new(&c, &format!("pc-{field}.test"), &format!("{field} = {huge:?}"));
        refused(host.run(&["status"]), field);
    }
    // Zero where zero makes no sense: a poll that spins, a re-sign without end.
    refused(
        run_strings(c.dir(), &node_args(&c, &["repo", "edge", "--upstream", "127.0.0.1:9", "--poll", "0s"], &edge)),
        "poll: \"0s\" is too short",
    );
    for concurrency in ["0", "100000"] {
        let cfg = write("edge-c.toml", &format!("concurrency = {concurrency}\nupstreams = [\"127.0.0.1:9\"]\n"));
        refused(
            run_strings(c.dir(), &node_args(&c, &["repo", "edge", "--config", &cfg], &edge)),
            &format!("concurrency: {concurrency} is out of range; it must be 1 to 1024"),
        );
    }
    let cfg = write("main0.toml", "resign_every = \"0s\"\n");
    refused(run_strings(c.dir(), &node_args(&c, &["repo", "main", "--config", &cfg], &server)), "resign_every");
    let host = Host::new(&c, "pc-zero.test", "update_every = \"0s\"");
    refused(host.run(&["status"]), "update_every: \"0s\" is too short");
    // Command-line values.
    let admin = crate::central::Console::new(&c, "127.0.0.1:9", "root", "view,act,modify");
    let console = |args: &[&str]| admin.run(args);
    refused(console(&["token", "create", "--valid", huge]), "--valid");
    refused(console(&["token", "create", "--valid", "0s"]), "too short");
    refused(console(&["action", "update", "--all", "--expires", "90d"]), "at most 30 days");
    refused(run_in(c.dir(), &["repo", "gc", "--data", "x", "--grace", huge]), "--grace");
    refused(
        run_in(c.dir(), &["pki", "init", "--dir", "pk2", "--no-password", "--days", "4294967295"]),
        "at most 36500 days",
    );
    refused(c.pki.try_issue("admin", "x", &["--rights", "view", "--days", "4294967295"]), "days");
    let cfg = write("server0.toml", "host_days = 0\n");
    refused(run_strings(c.dir(), &node_args(&c, &["server", "--config", &cfg], &server)), "host_days");
    let cfg = write("edge-zone.toml", "time_zone = \"Mars/Olympus\"\nupstreams = [\"127.0.0.1:9\"]\n");
    refused(run_strings(c.dir(), &node_args(&c, &["repo", "edge", "--config", &cfg], &edge)), "unknown time zone");
}

/// Flips bytes of `file` (the `k`-th pattern of 24) in place.
fn damage(file: &Path, k: usize) {
    let mut bytes = std::fs::read(file).unwrap();
    let len = bytes.len();
    match k % 4 {
        0 => bytes.truncate(len * (k % 7 + 1) / 8),
        _ => {
            let at = (k * 104_729 + k * k * 4_099) % len;
            for b in bytes.iter_mut().skip(at).take(1 + k * 37 % 500) {
                *b ^= 0x5a;
            }
        }
    }
    std::fs::write(file, bytes).unwrap();
}

#[test]
fn damaged_databases_are_errors_that_say_what_to_do() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let mut edge = c.edge(&[&main.addr], &[]);
    let seq = c.publish(&c.package("tool", "1", &[("t.txt", b"tool")]), &main.addr);
    c.wait_sequence(&edge.addr, seq, LIMIT);
    let host = Host::new(&c, "pc-db.test", &format!("repos = [{:?}]", main.addr));
    host.run(&["install", "tool"]).ok();
    edge.stop();

    // The agent's state: damaged in many ways, `status` and `install` never panic.
    let state = host.state.join("state.redb");
    let good = std::fs::read(&state).unwrap();
    let mut said = 0;
    for k in 0..24 {
        std::fs::write(&state, &good).unwrap();
        damage(&state, k);
        for args in [&["status"][..], &["install", "tool"][..]] {
            let r = host.run(args);
            assert!(!r.stderr.contains("panicked") && r.code != Some(101), "pattern {k}: a panic:\n{}", r.stderr);
            if r.code == Some(1) && r.stderr.contains("is damaged") {
                assert!(r.stderr.contains("move it away") && r.stderr.contains("state.redb"), "{}", r.stderr);
                said += 1;
            }
        }
    }
    assert!(said > 0, "some damage is reported as such");
    std::fs::write(&state, b"not a database at all").unwrap();
    refused(host.run(&["status"]), "is damaged");

    // An edge's store: fsck says so; --repair moves the database aside and the edge rebuilds it
    // from upstream at its next start.
    let db = edge.data.join("state.redb");
    let good = std::fs::read(&db).unwrap();
    let data = edge.data.to_string_lossy().into_owned();
    for k in 0..24 {
        std::fs::write(&db, &good).unwrap();
        damage(&db, k);
        let r = run_in(c.dir(), &["repo", "fsck", "--data", &data]);
        assert!(!r.stderr.contains("panicked") && r.code != Some(101), "pattern {k}: a panic:\n{}", r.stderr);
    }
    std::fs::write(&db, b"garbage").unwrap();
    refused(run_in(c.dir(), &["repo", "fsck", "--data", &data]), "fsck --repair");
    let r = run_in(c.dir(), &["repo", "fsck", "--data", &data, "--repair"]);
    assert!(r.stderr.contains("moved the damaged database"), "{}", r.stderr);
    edge.restart(&[]);
    c.wait_sequence(&edge.addr, seq, LIMIT);

    // Central's database.
    let (mut server, _) = c.server(&[]);
    server.stop();
    let central = server.data.join("central/central.redb");
    std::fs::write(&central, b"garbage").unwrap();
    let r = refused(run_strings(c.dir(), server.args()), "is damaged");
    assert!(r.stderr.contains("move it away") && r.stderr.contains("rebuilds the fleet"), "{}", r.stderr);
    assert_eq!(r.stderr.matches("is damaged").count(), 1, "each cause said once: {}", r.stderr);
}

#[test]
fn fsck_checks_that_the_current_snapshot_is_whole() {
    let c = Cluster::new();
    let mut main = c.main(&[]);
    c.publish(&c.package("whole", "1", &[("w.bin", &crate::cluster::noise(300_000, 3))]), &main.addr);
    main.stop();
    let data = main.data.to_string_lossy().into_owned();
    run_in(c.dir(), &["repo", "fsck", "--data", &data]).ok();
    // A blob deleted behind the store's back: "0 damaged" but not whole.
    let blobs = main.data.join("blobs");
    let victim = std::fs::read_dir(&blobs)
        .unwrap()
        .filter_map(Result::ok)
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap().filter_map(Result::ok))
        .next()
        .unwrap()
        .path();
    std::fs::remove_file(&victim).unwrap();
    let r = run_in(c.dir(), &["repo", "fsck", "--data", &data]);
    refused(r, "missing");
    let r = run_in(c.dir(), &["repo", "fsck", "--data", &data, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["missing"].as_array().unwrap().len(), 1, "{v}");
    assert!(v["missing"][0].as_str().unwrap().contains("whole 1: file w.bin"), "{v}");
    assert_eq!(v["role"], "main");
}

#[test]
fn configuration_files_are_found_and_read_as_documented() {
    let c = Cluster::new();
    let main = c.main(&[]);
    // A hook that writes into the state folder it is given.
    let setup = b"#!/bin/sh\necho \"$1 $OUTPOST_PACKAGE\" >> \"$OUTPOST_STATE_DIR/hook.log\"\n";
    c.publish(&c.package_with("rel", "1", "", &[("setup.sh", setup)]), &main.addr);

    // A configuration with relative paths, used from another folder.
    let site = c.dir().join("site");
    std::fs::create_dir_all(site.join("keys")).unwrap();
    let (cert, key) = c.pki.issue("host", "pc-rel.test", &[]);
    std::fs::copy(&cert, site.join("keys/host.crt")).unwrap();
    std::fs::copy(&key, site.join("keys/host.key")).unwrap();
    std::fs::copy(c.pki.ca(), site.join("keys/ca.crt")).unwrap();
    let ip = next_ip();
    std::fs::write(
        site.join("agent.toml"),
        format!(
            "state = \"state\"\nca = \"keys/ca.crt\"\ncert = \"keys/host.crt\"\nkey = \"keys/host.key\"\n\
             fqdn = \"pc-rel.test\"\nuuid = \"uuid-rel\"\nbind = {ip:?}\nsrv_discovery = false\nrepos = [{:?}]\nmetrics = \"\"\n",
            main.addr
        ),
    )
    .unwrap();
    let elsewhere = c.dir().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let config = site.join("agent.toml");
    let r = run_in(&elsewhere, &["agent", "install", "rel", "--config", config.to_str().unwrap()]).ok();
    assert!(r.stdout.contains("installed: rel 1"), "{}", r.stdout);
    assert!(site.join("state/state.redb").is_file(), "the state is beside the configuration file");
    let hooked = std::fs::read_to_string(site.join("state/hook.log")).unwrap();
    assert_eq!(hooked.trim(), "install rel", "the hook got an absolute state folder");

    // One-shot commands read OUTPOST_CONFIG when no --config is given, as the daemon does.
    let r = run_env(&elsewhere, &["agent", "status", "--json"], &[("OUTPOST_CONFIG", config.to_str().unwrap())]).ok();
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["host"]["fqdn"], "pc-rel.test");
    let r = run_env(&elsewhere, &["agent", "status"], &[("OUTPOST_CONFIG", "/nonexistent/agent.toml")]);
    refused(r, "/nonexistent/agent.toml");

    // With the daemon running: flags it cannot honour are refused, another file too.
    let _daemon = Bg(crate::common::outpost()
        .current_dir(&elsewhere)
        .args(["agent", "run", "--config", config.to_str().unwrap()])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap());
    wait_for(LIMIT, "the daemon's control socket", || site.join("state/agent.sock").exists().then_some(()));
    let r = run_in(&elsewhere, &["agent", "update", "--config", config.to_str().unwrap(), "--repo", &main.addr]);
    refused(r, "--repo cannot apply");
    let other = site.join("other.toml");
    std::fs::copy(&config, &other).unwrap();
    refused(run_in(&elsewhere, &["agent", "status", "--config", other.to_str().unwrap()]), "runs with");
    run_in(&elsewhere, &["agent", "status", "--config", config.to_str().unwrap()]).ok();
}
