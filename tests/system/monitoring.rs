//! The whole demo topology (server, three edges, agents, dnsmasq for Lyon's SRV records)
//! watched by a real Prometheus with the rules of `deploy/prometheus`: the fleet counts and the
//! replication lag Prometheus computes are what the console says.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cluster::{next_ip, tcp_port, wait_for};
use crate::common::{Stop, demo, root, run_in};

const LIMIT: Duration = Duration::from_secs(240);

/// `GET path` on `addr`, the body as JSON.
fn get_json(addr: &str, path: &str) -> Option<Value> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of a PromQL query returning one sample, if it has one.
fn query(prom: &str, q: &str) -> Option<f64> {
    let v = get_json(prom, &format!("/api/v1/query?query={}", encode(q)))?;
    let r = v["data"]["result"].as_array()?;
    r.first()?["value"][1].as_str()?.parse().ok()
}

#[test]
fn prometheus_sees_what_the_console_says_on_the_demo_topology() {
    let Some(prometheus) =
        ["/usr/bin/prometheus", "/usr/local/bin/prometheus"].into_iter().find(|p| Path::new(p).exists())
    else {
        eprintln!("SKIPPED: prometheus is not installed (scripts/setup installs it)");
        return;
    };
    let work = tempfile::tempdir().unwrap();
    // (The demo is stopped with SIGTERM when dropped, even when an assertion fails.)
    let (demo, info) = demo(work.path(), 6, |_| true);
    let dir = work.path().join("demo");
    if Path::new("/usr/sbin/dnsmasq").exists() {
        assert!(info["dnsmasq"].is_string(), "Lyon's agents use DNS SRV records from dnsmasq: {info}");
    }

    // Prometheus scrapes every node, with Outpost's rules.
    let targets: Vec<String> =
        info["metrics"].as_array().unwrap().iter().map(|m| format!("\"{}\"", m.as_str().unwrap())).collect();
    let rules: PathBuf = root().join("deploy/prometheus/rules.yml");
    let config = work.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: [{rules:?}]\nscrape_configs:\n  - job_name: outpost\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let ip = next_ip();
    let prom = format!("{ip}:{}", tcp_port(&ip));
    let _prometheus = Stop(
        Command::new(prometheus)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", work.path().join("tsdb").display()))
            .arg(format!("--web.listen-address={prom}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(work.path().join("prometheus.log")).unwrap())
            .spawn()
            .unwrap(),
    );

    // What the console says.
    let admin = &info["admin"];
    let console = |args: &[&str]| -> Value {
        let mut all = vec!["console"];
        all.extend_from_slice(args);
        let (ca, cert, key) =
            (admin["ca"].as_str().unwrap(), admin["cert"].as_str().unwrap(), admin["key"].as_str().unwrap());
        all.extend_from_slice(&[
            "--json",
            "--server",
            info["central"].as_str().unwrap(),
            "--ca",
            ca,
            "--cert",
            cert,
            "--key",
            key,
        ]);
        serde_json::from_str(&run_in(work.path(), &all).ok().stdout).unwrap()
    };
    let hosts = console(&["hosts"]);
    let total = hosts["total"].as_u64().unwrap();
    let ok = hosts["hosts"].as_array().unwrap().iter().filter(|h| h["status"] == "OK").count();
    assert_eq!(total, 6);
    let repos = console(&["repos"]);
    let lags: Vec<u64> = repos.as_array().unwrap().iter().map(|r| r["lag"].as_u64().unwrap()).collect();
    assert_eq!(lags.len(), 4, "main and three edges: {repos}");

    // What Prometheus computes (the recording rules included).
    wait_for(LIMIT, "Prometheus to see the fleet", || {
        (query(&prom, "outpost:hosts:total")? == total as f64).then_some(())
    });
    assert_eq!(query(&prom, "sum(outpost_central_hosts{status=\"OK\"})"), Some(ok as f64));
    wait_for(LIMIT, "Prometheus to scrape every node", || {
        (query(&prom, "count(up == 1)")? == info["metrics"].as_array().unwrap().len() as f64).then_some(())
    });
    assert_eq!(query(&prom, "count(outpost_repo_snapshot_sequence)"), Some(4.0), "main and three edges");
    wait_for(LIMIT, "the lag Prometheus sees to be the console's", || {
        (query(&prom, "max(outpost_repo_lag_snapshots)")? == *lags.iter().max().unwrap() as f64).then_some(())
    });
    assert_eq!(query(&prom, "sum(outpost:hosts:by_status)"), Some(total as f64));
    assert!(
        query(&prom, "sum(outpost_repo_sent_bytes_total{peer=\"host\"})").unwrap() > 3_000_000.0,
        "agents got content"
    );
    // SIGTERM (when `demo` is dropped): the demo stops every process it started.
    drop(demo);
    let left = Command::new("pgrep").args(["-f", dir.to_str().unwrap()]).output().unwrap();
    assert!(left.stdout.is_empty(), "the demo left processes: {}", String::from_utf8_lossy(&left.stdout));
}
