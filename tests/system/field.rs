//! The agent and repositories where real sites put them: no repository reachable, snapshots
//! that expire while no one re-signs them, links that pass one datagram every half second,
//! WAPT packages whose only hook is Python, and statuses that must tell the truth.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::agent::{Bg, Host, hook, log_lines};
use crate::cluster::{Cluster, noise, tcp_port, wait_for};
use crate::common::run_in;
use crate::relay::{Pacing, Relay};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn offline_upgrades_never_remove_what_they_cannot_see() {
    let c = Cluster::new();
    let mut main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    let publish = |name: &str, version: &str, extra: &str| {
        c.publish(&c.package_with(name, version, extra, &[("setup.sh", &hook(&log, ""))]), &main.addr)
    };
    publish("tool", "1", "");
    publish("helper", "1", "");
    publish("pc-off.test", "1", "section: host\ndepends: tool,helper\n");
    let host = Host::new(&c, "pc-off.test", &format!("repos = [{:?}]", main.addr));
    host.json(&["upgrade"]);
    assert_eq!(host.status()["host_status"], "OK");

    // A new version, downloaded while the office link is up…
    publish("tool", "2", "");
    let d = host.json(&["download-upgrade"]);
    assert_eq!(d["downloaded"], serde_json::json!(["tool"]), "{d}");
    // … then the link goes down (a laptop away from the office), and the shutdown upgrade runs
    // again and again.
    main.kill();
    let before = log_lines(&log);
    let up = host.json(&["upgrade"]);
    assert_eq!(up["offline"], true);
    assert_eq!(up["installed"], serde_json::json!(["tool 2"]), "{up}");
    for _ in 0..3 {
        let up = host.json(&["upgrade"]);
        assert!(up["removed"].as_array().unwrap().is_empty(), "nothing removed offline: {up}");
        assert!(up["installed"].as_array().unwrap().is_empty(), "{up}");
    }
    let lines = log_lines(&log);
    assert_eq!(lines[before.len()..], ["install tool 2".to_string()], "only the download was installed");
    for name in ["pc-off.test", "tool", "helper"] {
        let p = host.package(name).unwrap_or_else(|| panic!("{name} is gone: {}", host.status()));
        assert_eq!(p["status"], "OK", "{p}");
    }
    assert_eq!(host.status()["host_status"], "OK");
}

#[test]
fn an_expired_snapshot_installs_nothing_new_and_says_so() {
    let c = Cluster::new();
    let cfg = c.dir().join("short.toml");
    std::fs::write(&cfg, "snapshot_lifetime = \"8s\"\nresign_every = \"2s\"\n").unwrap();
    let mut main = c.main(&["--config", cfg.to_str().unwrap()]);
    let edge = c.edge(&[&main.addr], &["--poll", "1s"]);
    let log = c.dir().join("hooks.log");
    c.publish(&c.package_with("base", "1", "", &[("setup.sh", &hook(&log, ""))]), &main.addr);
    let seq = c.publish(&c.package_with("late", "1", "", &[("setup.sh", &hook(&log, ""))]), &main.addr);
    c.wait_sequence(&edge.addr, seq, LIMIT);
    let metrics = format!("127.0.0.1:{}", tcp_port("127.0.0.1"));
    let host = Host::new(
        &c,
        "pc-exp.test",
        &format!("repos = [{:?}]\nupdate_every = \"1s\"\nupgrade = \"manual\"\nmetrics = {metrics:?}", edge.addr),
    );
    host.run(&["install", "base"]).ok();

    // The main stops re-signing; the edge keeps serving its last (now expiring) snapshot.
    main.kill();
    let _daemon = Bg(host.spawn(&["run"]));
    let scrape = |name: &str| -> Option<f64> {
        let text = crate::cluster::scrape(&metrics)?;
        text.lines().find_map(|l| l.strip_prefix(&format!("{name} "))).and_then(|v| v.trim().parse().ok())
    };
    wait_for(LIMIT, "the agent's metrics to say the snapshot expired", || {
        (scrape("outpost_agent_snapshot_expired")? == 1.0).then_some(())
    });
    assert_eq!(scrape("outpost_agent_host_status{status=\"ERROR\"}"), Some(1.0));
    // Through the daemon and without it, every path says so and installs nothing.
    let r = host.run(&["update"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("expired") && !r.stdout.contains("host OK"), "{}\n{}", r.stdout, r.stderr);
    host.run(&["install", "late"]).fails_with("expired");
    assert!(host.package("late").is_none_or(|p| p["installed"].is_null()));
    assert!(!log_lines(&log).iter().any(|l| l.contains("late")), "nothing installed from it");
    let s = host.status();
    assert_eq!(s["host_status"], "ERROR", "{s}");
    assert_eq!(s["snapshot"]["expired"], true);
    assert!(s["errors"][0].as_str().unwrap().contains("expired"), "{s}");
    assert_eq!(host.package("base").unwrap()["status"], "OK", "what is installed stays");
    let text = host.run(&["status"]).ok().stdout;
    assert!(text.contains("EXPIRED"), "{text}");

    // The main is back: a fresh snapshot, and everything works again.
    main.restart(&[]);
    wait_for(LIMIT, "a fresh snapshot", || (scrape("outpost_agent_snapshot_expired")? == 0.0).then_some(()));
    host.run(&["install", "late"]).ok();
    assert_eq!(host.package("late").unwrap()["status"], "OK");
}

#[test]
fn the_status_tells_the_truth() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    let publish = |name: &str, version: &str, extra: &str, body: &str| {
        c.publish(&c.package_with(name, version, extra, &[("setup.sh", &hook(&log, body))]), &main.addr)
    };
    publish("app", "1", "", "");
    publish("pc-st.test", "1", "section: host\ndepends: app\n", "");
    let host = Host::new(&c, "pc-st.test", &format!("repos = [{:?}]", main.addr));
    host.run(&["update"]).ok();
    assert!(host.run(&["status"]).ok().stdout.contains("planned: install app 1"));
    host.run(&["upgrade"]).ok();
    // After the upgrade nothing is said to be pending.
    let text = host.run(&["status"]).ok().stdout;
    assert!(!text.contains("pending") && !text.contains("planned:"), "{text}");
    assert_eq!(host.status()["plan"], serde_json::json!([]));

    // A removal names what it removes.
    publish("pc-st.test", "2", "section: host\n", "");
    host.run(&["update"]).ok();
    let text = host.run(&["status"]).ok().stdout;
    assert!(text.contains("planned: remove app 1 (no longer expected on this host)"), "{text}");

    // A failing hook: its output, stdout and stderr in the order written, shown in the text.
    let body = "for i in 1 2 3; do echo \"out $i\"; echo \"err $i\" >&2; done\nexit 4";
    publish("broken", "1", "", body);
    host.run(&["install", "broken"]).fails_with("package(s) failed");
    let b = host.package("broken").unwrap();
    let out = b["output"].as_str().unwrap();
    assert!(out.contains("out 1\nerr 1\nout 2\nerr 2\nout 3\nerr 3\n"), "in order: {out:?}");
    let text = host.run(&["status"]).ok().stdout;
    assert!(text.contains("exit code 4") && text.contains("| err 3"), "{text}");
}

#[test]
fn a_wapt_package_whose_only_hook_is_python_is_refused_until_native_hooks_come() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let vendor = crate::wapt::Vendor::new("codesign");
    let wapt = vendor.package(c.dir(), "ex-py", &crate::wapt::PAYLOAD, &[]);
    let import = |extra: &[&str]| {
        let mut args = vec![
            "wapt",
            "import",
            wapt.to_str().unwrap(),
            "--cert",
            c.admin.0.to_str().unwrap(),
            "--key",
            c.admin.1.to_str().unwrap(),
            "--out",
            "imported",
        ];
        args.extend_from_slice(extra);
        let r = run_in(c.dir(), &args).ok();
        c.dir().join(r.stdout.trim())
    };
    let plain = import(&[]);
    c.publish(&plain, &main.addr);
    // x64 only: the test host is x64.
    let host = Host::new(&c, "pc-py.test", &format!("repos = [{:?}]", main.addr));
    host.run(&["install", "ex-py"]).fails_with("setup.py");
    let p = host.package("ex-py").unwrap();
    assert_eq!(p["status"], "ERROR", "{p}");
    assert!(p["reason"].as_str().unwrap().contains("wapt import --hooks"), "{p}");
    assert!(p["installed"].is_null(), "nothing installed: {p}");

    // Imported again with a native hook: it installs, and the hook runs.
    let hooks = c.dir().join("native");
    std::fs::create_dir_all(&hooks).unwrap();
    let marker = c.dir().join("native-ran");
    std::fs::write(hooks.join("setup.sh"), format!("#!/bin/sh\necho \"$1\" >> '{}'\n", marker.display())).unwrap();
    std::fs::remove_file(&plain).unwrap();
    let native = import(&["--hooks", hooks.to_str().unwrap()]);
    c.publish(&native, &main.addr);
    host.run(&["upgrade"]).ok();
    assert_eq!(host.package("ex-py").unwrap()["status"], "OK");
    assert_eq!(std::fs::read_to_string(&marker).unwrap().trim(), "install");
}

/// A package of `n` files of 700 kB.
fn big(c: &Cluster, name: &str, n: u64) -> std::path::PathBuf {
    let parts: Vec<Vec<u8>> = (0..n).map(|i| noise(700_000, 90 + i)).collect();
    let names: Vec<String> = (0..n).map(|i| format!("part{i}.bin")).collect();
    let files: Vec<(&str, &[u8])> = names.iter().map(String::as_str).zip(parts.iter().map(Vec::as_slice)).collect();
    c.package(name, "1", &files)
}

/// A link that passes the handshake, then one datagram every half second each way.
const CRAWL: Pacing = Pacing { free: 40, interval: Duration::from_millis(500), quic_only: false };

#[test]
fn no_peer_can_make_a_client_wait_forever() {
    let c = Cluster::new();
    let (pull_ip, sync_ip) = (Relay::address(), Relay::address());
    let main = c.main_named(&[], &[&pull_ip, &sync_ip]);
    // 5.6 MB: more than the relay's free datagrams carry even at the largest size a path to a
    // repository node grows to (40 of 65,000 bytes), so that each client meets the crawl.
    let seq = c.publish(&big(&c, "big", 8), &main.addr);
    // One relay per client: each starts with the handshake let through.
    let slow_main = Relay::start(&pull_ip, &main.addr, CRAWL);

    // `repo pull` through the crawling link: a clear error within its deadline.
    let started = Instant::now();
    let r = c.client(&["repo", "pull", "big", "--out", "pulled", "--min-rate", "1MB"], &slow_main.addr);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains("too slow"), "{}", r.stderr);
    assert!(started.elapsed() < Duration::from_secs(45), "failed in {:?}", started.elapsed());
    assert!(slow_main.passed() > 0, "the pull went through the relay");

    // An edge whose preferred upstream crawls: it moves to the next and syncs.
    let cfg = c.dir().join("edge-fast.toml");
    std::fs::write(&cfg, "min_rate = \"1MB\"\nquarantine = \"10m\"\n").unwrap();
    let slow_upstream = Relay::start(&sync_ip, &main.addr, CRAWL);
    let edge = c.edge(&[&slow_upstream.addr, &main.addr], &["--config", cfg.to_str().unwrap()]);
    let started = Instant::now();
    c.wait_sequence(&edge.addr, seq, Duration::from_secs(90));
    assert!(started.elapsed() < Duration::from_secs(60), "synced in {:?}", started.elapsed());
    assert!(edge.metric("outpost_repo_refusals_total", "{reason=\"slow\"}") >= 1.0, "{}", edge.log_text());

    // An agent whose edge crawls: the install finishes from the main; the edge waits out its
    // probation.
    let edge_ip = Relay::address();
    let site = c.edge_named(&[&main.addr], &[], &[&edge_ip]);
    c.wait_sequence(&site.addr, seq, LIMIT);
    let slow_site = Relay::start(&edge_ip, &site.addr, CRAWL);
    let host = Host::new(
        &c,
        "pc-slow.test",
        &format!(
            "main = {:?}\nmin_rate = \"1MB\"\nprobation = \"10m\"\n[[rules]]\nsequence = 1\ncondition = \"agent_ip\"\nvalue = \"127.0.0.0/8\"\nrepos = [{:?}]\n",
            main.addr, slow_site.addr
        ),
    );
    let started = Instant::now();
    let out = host.json(&["install", "big"]);
    assert_eq!(out["failed"], serde_json::json!([]), "{out}");
    assert!(started.elapsed() < Duration::from_secs(60), "installed in {:?}", started.elapsed());
    assert!(out["fetched_by_repo"][&main.addr].as_u64().unwrap_or(0) > 0, "{out}");
    let repos = host.json(&["repos"]);
    let line = repos["candidates"].as_array().unwrap().iter().find(|l| l["addr"] == slow_site.addr.as_str()).unwrap();
    assert!(line["probation_until"].as_i64().is_some() && line["chosen"] == false, "{repos}");
    let chosen: Vec<&Value> = repos["candidates"].as_array().unwrap().iter().filter(|l| l["chosen"] == true).collect();
    assert_eq!(chosen[0]["addr"], main.addr.as_str(), "the main while the edge is on probation");
}
