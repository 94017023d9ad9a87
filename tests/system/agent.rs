//! The agent end to end: real `outpost agent` commands and daemons against real `outpost repo`
//! processes on 127.0.0.x, real hooks writing real files, faults injected by killing
//! repositories, serving refused snapshots and packages, and damaging the cache.

use outpost_actors::clock::unix_now as now;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use outpost_protocol::package::PackageArchive;
use outpost_protocol::pki;
use outpost_protocol::snapshot::Snapshot;
use serde_json::Value;

use crate::cluster::{Cluster, Daemon, Tmpfs, entry, is_root, next_ip, noise, rogue, signed_by, tampered, wait_for};
use crate::common::{Run, listing, outpost, run_in};
use crate::relay::{Pacing, Relay};

const LIMIT: Duration = Duration::from_secs(60);

/// A managed machine: a host certificate, a configuration file and a state folder.
pub struct Host {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
}

impl Host {
    /// A host named `name` (its FQDN, and its certificate's name) with more configuration
    /// lines `extra` (TOML, top level first; `[[rules]]` last).
    pub fn new(c: &Cluster, name: &str, extra: &str) -> Self {
        let (cert, key) = c.pki.issue("host", name, &[]);
        Self::with_identity(c, name, extra, &cert, &key)
    }

    /// A host whose certificate and key are (to be) at `cert` and `key` (enrollment).
    pub fn with_identity(c: &Cluster, name: &str, extra: &str, cert: &Path, key: &Path) -> Self {
        let state = c.dir().join(format!("agent-{name}"));
        let config = c.dir().join(format!("agent-{name}.toml"));
        let ip = next_ip();
        let mut text = format!(
            "state = {state:?}\nca = {ca:?}\ncert = {cert:?}\nkey = {key:?}\nbind = {ip:?}\nhook_timeout = \"3s\"\n",
            ca = c.pki.ca(),
        );
        // The host's names, unless the test gives its own.
        let given = |field: &str| extra.lines().any(|l| l.trim_start().starts_with(&format!("{field} =")));
        if !given("fqdn") {
            text.push_str(&format!("fqdn = {name:?}\n"));
        }
        if !given("uuid") {
            text.push_str(&format!("uuid = \"uuid-{name}\"\n"));
        }
        if !extra.contains("srv_discovery") {
            text.push_str("srv_discovery = false\n");
        }
        if !extra.contains("metrics") {
            // Many agents share this machine: no /metrics unless a test asks.
            text.push_str("metrics = \"\"\n");
        }
        text.push_str(extra);
        text.push('\n');
        std::fs::write(&config, text).unwrap();
        Self { dir: c.dir().to_path_buf(), config, state }
    }

    /// `outpost agent ARGS --config …`.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["agent"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", self.config.to_str().unwrap()]);
        run_in(&self.dir, &all)
    }

    /// The same, started in the background.
    /// Its output goes to `log()` (a daemon writes more than a pipe holds).
    pub fn spawn(&self, args: &[&str]) -> Child {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.log()).unwrap();
        outpost()
            .current_dir(&self.dir)
            .arg("agent")
            .args(args)
            .args(["--config", self.config.to_str().unwrap()])
            .env("OUTPOST_LOG", "info,outpost_actors=debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Where background runs write their log.
    pub fn log(&self) -> PathBuf {
        self.state.with_extension("log")
    }

    /// `outpost agent ARGS --json`, which must succeed.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let r = self.run(&all).ok();
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
    }

    pub fn status(&self) -> Value {
        self.json(&["status"])
    }

    /// The line of `status` for package `name`, if any.
    pub fn package(&self, name: &str) -> Option<Value> {
        self.status()["packages"].as_array().unwrap().iter().find(|p| p["name"] == name).cloned()
    }

    /// Complete packages in the cache.
    pub fn cached(&self) -> Vec<String> {
        listing(&self.state.join("cache")).into_iter().filter(|n| !n.ends_with(".partial")).collect()
    }
}

/// A background process killed when dropped (a failed test leaves nothing running).
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A hook that appends "<action> <package> <version>" to `log` and says something.
pub fn hook(log: &Path, body: &str) -> Vec<u8> {
    format!(
        "#!/bin/sh\necho \"$1 $OUTPOST_PACKAGE $OUTPOST_VERSION\" >> '{}'\necho \"hook output for \
         $OUTPOST_PACKAGE $1\"\n{body}\n",
        log.display()
    )
    .into_bytes()
}

pub fn log_lines(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap_or_default().lines().map(str::to_string).collect()
}

fn position(lines: &[String], line: &str) -> usize {
    lines.iter().position(|l| l == line).unwrap_or_else(|| panic!("{line:?} not in the hook log {lines:#?}"))
}

#[test]
fn the_agent_follows_its_host_unit_and_local_requests_with_hooks_in_order() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &[]);
    let log = c.dir().join("hooks.log");
    let h = |body: &str| hook(&log, body);
    let publish = |name: &str, version: &str, extra: &str| {
        let setup = h("");
        c.publish(
            &c.package_with(name, version, extra, &[("setup.sh", &setup), ("data.txt", name.as_bytes())]),
            &main.addr,
        )
    };
    publish("lib", "1", "");
    publish("app", "1", "depends: lib\n");
    publish("old-tool", "1", "");
    publish("new-tool", "1", "conflicts: old-tool\n");
    publish("unit-tool", "1", "");
    publish("OU=Paris,DC=test", "1", "section: unit\ndepends: unit-tool\n");
    publish("pinned", "1", "");
    publish("pinned", "2", "");
    let seq = publish("pc1.test", "1", "section: host\ndepends: app\n");
    c.wait_sequence(&edge.addr, seq, LIMIT);
    let host = Host::new(&c, "pc1.test", &format!("repos = [{:?}]\nou = \"CN=pc1,OU=Paris,DC=test\"", edge.addr));

    // A local request first: old-tool, installed explicitly.
    let out = host.run(&["install", "old-tool"]).ok();
    assert!(out.stdout.contains("installed: old-tool 1"), "{}", out.stdout);
    assert_eq!(log_lines(&log), ["install old-tool 1"]);

    // update: the plan for the host package (app and lib) and the unit package (unit-tool).
    let u = host.json(&["update"]);
    assert_eq!(u["changed"], false, "install updated already: {u}");
    assert_eq!(u["repo"], edge.addr.as_str());
    let plan = host.status()["plan"].to_string();
    for name in ["lib", "app", "unit-tool"] {
        assert!(plan.contains(&format!("install {name} 1")), "{plan}");
    }
    assert_eq!(u["host_status"], "NEED-UPGRADE");
    assert_eq!(host.json(&["update"])["changed"], false, "an unchanged head fetches nothing more");
    assert_eq!(log_lines(&log).len(), 1, "update installs nothing");

    let up = host.json(&["upgrade"]);
    assert_eq!(up["failed"], serde_json::json!([]), "{up}");
    let lines = log_lines(&log);
    assert!(position(&lines, "install lib 1") < position(&lines, "install app 1"), "dependencies first: {lines:?}");
    position(&lines, "install unit-tool 1");
    let status = host.status();
    assert_eq!(status["host_status"], "OK", "{status}");
    let app = host.package("app").unwrap();
    assert_eq!((app["status"].as_str(), app["installed"].as_str()), (Some("OK"), Some("1")));
    assert!(app["output"].as_str().unwrap().contains("hook output for app install"), "{app}");
    assert!(host.cached().is_empty(), "installed packages leave the cache: {:?}", host.cached());

    // The host package now wants new-tool, which conflicts with old-tool: old-tool goes first.
    let seq = publish("pc1.test", "2", "section: host\ndepends: app,new-tool\n");
    c.wait_sequence(&edge.addr, seq, LIMIT);
    host.json(&["upgrade"]);
    let lines = log_lines(&log);
    assert!(
        position(&lines, "uninstall old-tool 1") < position(&lines, "install new-tool 1"),
        "the conflicting package is removed first: {lines:?}"
    );
    assert!(host.package("old-tool").is_none(), "{:?}", host.package("old-tool"));

    // A new version of app is installed by the next upgrade.
    let seq = publish("app", "2", "depends: lib\n");
    c.wait_sequence(&edge.addr, seq, LIMIT);
    host.json(&["upgrade"]);
    position(&log_lines(&log), "install app 2");
    assert_eq!(host.package("app").unwrap()["installed"], "2");

    // The host package drops app: it is removed, with the uninstall hook kept at install time.
    let seq = publish("pc1.test", "3", "section: host\ndepends: new-tool\n");
    c.wait_sequence(&edge.addr, seq, LIMIT);
    host.json(&["upgrade"]);
    position(&log_lines(&log), "uninstall app 2");
    assert!(host.package("app").is_none(), "{}", host.status());
    assert_eq!(host.package("new-tool").unwrap()["status"], "OK");

    // A pinned request holds its version through upgrades.
    host.run(&["install", "pinned(=1)"]).ok();
    host.json(&["upgrade"]);
    assert_eq!(host.package("pinned").unwrap()["installed"], "1");
    position(&log_lines(&log), "install pinned 1");
    assert!(!log_lines(&log).contains(&"install pinned 2".to_string()));

    // remove runs the uninstall hook and forgets the package.
    host.run(&["remove", "pinned"]).ok();
    position(&log_lines(&log), "uninstall pinned 1");
    assert!(host.package("pinned").is_none());
    assert_eq!(host.status()["host_status"], "OK");
}

#[test]
fn refused_snapshots_and_packages_install_nothing_and_the_status_says_why() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    let setup = hook(&log, "");
    let good = c.package_with("good", "1", "", &[("setup.sh", &setup)]);
    let seq = c.publish(&good, &main.addr);
    let t = now();
    let base = |sequence, created, expires| Snapshot { sequence, created, expires, ..Snapshot::empty("x", 0, t, 0) };

    // Forged (an edge certificate cannot sign snapshots), expired, and older than the one held.
    let edge_cert = c.pki.issue("edge", "not-a-signer", &["--san", "127.0.0.1"]);
    let forged = rogue(&c, &base(1000, t, t + 3600), &[], (&edge_cert.0, &edge_cert.1), "forged");
    let expired = rogue(&c, &base(1001, t - 7200, t - 3600), &[], (&main.cert, &main.key), "expired");
    let older = rogue(&c, &base(1, t, t + 3600), &[], (&main.cert, &main.key), "older");

    let host = Host::new(&c, "pc2.test", "");
    let with = |repo: &str, args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--repo", repo]);
        host.run(&all)
    };
    with(&forged.addr, &["update"]).fails_with("refused");
    let s = host.status();
    assert_eq!(s["host_status"], "ERROR");
    let why = s["last_update"]["message"].as_str().unwrap().to_string();
    assert!(why.contains("refused") && why.contains(&forged.addr), "{why}");
    with(&expired.addr, &["update"]).fails_with("expired");

    with(&main.addr, &["install", "good"]).ok();
    assert_eq!(host.status()["sequence"], seq);
    with(&older.addr, &["update"]).fails_with("older");
    assert_eq!(host.status()["sequence"], seq, "the held snapshot is kept");
    assert_eq!(host.status()["host_status"], "ERROR");
    with(&main.addr, &["update"]).ok();
    assert_eq!(host.status()["host_status"], "OK", "a good update clears the refusal");

    // Packages: one whose manifest was changed after signing, one with a hook signed by a
    // deployer (no code-signing usage). The snapshot itself is properly signed by the main.
    let pkg = |name: &str| {
        let built = c.package_with(name, "1", "", &[("setup.sh", &setup)]);
        PackageArchive::open(std::fs::File::open(built).unwrap()).unwrap().record()
    };
    let tampered = tampered(pkg("tampered"));
    let deployer = c.pki.issue("deployer", "Helpdesk", &[]);
    let unsigned_hook = signed_by(pkg("unsigned-hook"), (&deployer.0, &deployer.1));
    let mut snapshot = base(2000, t, t + 3600);
    snapshot.entries = vec![entry(&tampered), entry(&unsigned_hook)];
    let records = [(tampered.hash(), tampered.encode()), (unsigned_hook.hash(), unsigned_hook.encode())];
    let bad = rogue(&c, &snapshot, &records, (&main.cert, &main.key), "packages");

    let before = log_lines(&log);
    with(&bad.addr, &["install", "tampered", "unsigned-hook"]).fails_with("package(s) failed");
    assert_eq!(log_lines(&log), before, "no hook ran");
    let t = host.package("tampered").unwrap();
    assert_eq!(t["status"], "ERROR", "{t}");
    assert!(t["reason"].as_str().unwrap().contains("signature"), "{t}");
    let u = host.package("unsigned-hook").unwrap();
    assert_eq!(u["status"], "ERROR", "{u}");
    assert!(u["reason"].as_str().unwrap().contains("code-signing"), "{u}");
    assert!(t["installed"].is_null() && u["installed"].is_null());
    assert_eq!(host.status()["host_status"], "ERROR");
}

#[test]
fn a_snapshot_changed_behind_the_agents_back_is_refused_not_planned_from() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    c.publish(&c.package_with("good", "1", "", &[("setup.sh", &hook(&log, ""))]), &main.addr);
    let host = Host::new(&c, "pc3.test", "");
    host.run(&["update", "--repo", &main.addr]).ok();
    // Someone who can write the agent's state swaps in a snapshot signed by a certificate that
    // may not sign snapshots.
    let (cert, key) = c.pki.issue("edge", "not-a-signer", &["--san", "127.0.0.1"]);
    let chain = pki::parse_pem_certificates(&std::fs::read_to_string(cert).unwrap()).unwrap();
    let key = pki::decode_private_key(&std::fs::read_to_string(key).unwrap(), None).unwrap();
    let t = now();
    let forged = Snapshot { sequence: 99, created: t, expires: t + 3600, ..Snapshot::empty("x", 0, t, 0) };
    outpost_actors::agent::state::AgentState::open(&host.state)
        .unwrap()
        .put_snapshot(&forged.sign(&key, &chain))
        .unwrap();
    // Offline, the agent works from what it holds: it refuses it, installs nothing, and says why.
    host.run(&["install", "good", "--repo", "127.0.0.1:9"]).fails_with("snapshot signer refused");
    host.run(&["status"]).fails_with("snapshot signer refused");
    assert!(log_lines(&log).is_empty(), "no hook ran: {:?}", log_lines(&log));
    // A good update from the main repository replaces it.
    host.run(&["update", "--repo", &main.addr]).ok();
    host.run(&["install", "good", "--repo", &main.addr]).ok();
    assert_eq!(host.package("good").unwrap()["status"], "OK");
}

#[test]
fn an_edge_killed_mid_download_hands_over_to_the_main_and_the_agent_fails_back() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let mut edge = c.edge(&[&main.addr], &["--fill", "on-demand", "--bandwidth", "1MB"]);
    let parts: Vec<Vec<u8>> = (0..8).map(|i| noise(700_000, 40 + i)).collect();
    let files: Vec<(String, &[u8])> =
        parts.iter().enumerate().map(|(i, p)| (format!("part{i}.bin"), p.as_slice())).collect();
    let files: Vec<(&str, &[u8])> = files.iter().map(|(n, p)| (n.as_str(), *p)).collect();
    let size: f64 = parts.iter().map(|p| p.len() as f64).sum();
    let seq = c.publish(&c.package("big", "1", &files), &main.addr);
    c.wait_sequence(&edge.addr, seq, LIMIT);
    // The edge by rule (rank 1), the main last. A killed edge may have looked slow (a request
    // waiting past its deadline) rather than gone: a short probation then.
    let host = Host::new(
        &c,
        "pc3.test",
        &format!(
            "main = {:?}\nprobation = \"3s\"\n[[rules]]\nsequence = 1\nname = \"site\"\ncondition = \"agent_ip\"\nvalue = \
             \"127.0.0.0/8\"\nrepos = [{:?}]\n",
            main.addr, edge.addr
        ),
    );
    let r = host.json(&["repos"]);
    let chosen: Vec<&Value> = r["candidates"].as_array().unwrap().iter().filter(|c| c["chosen"] == true).collect();
    assert_eq!(chosen[0]["addr"], edge.addr.as_str(), "{r}");
    assert!(chosen[0]["origin"].as_str().unwrap().contains("site"), "{r}");

    // Hosts are counted together (one label for the whole fleet, not one per machine).
    let peer = "{peer=\"host\"}";
    let install = host.spawn(&["install", "big", "--json"]);
    wait_for(LIMIT, "the edge to send half of the package", || {
        (edge.metric("outpost_repo_sent_bytes_total", peer) > size / 2.0).then_some(())
    });
    let from_edge = edge.metric("outpost_repo_sent_bytes_total", peer);
    edge.kill();
    let out = install.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", std::fs::read_to_string(host.log()).unwrap_or_default());
    let from_main = main.metric("outpost_repo_sent_bytes_total", peer);
    assert!(from_main > 0.0, "the main finished the download");
    assert!(
        from_main < size - from_edge + 2.0 * 1_048_576.0,
        "what was verified from the edge was not fetched again: {from_edge} from the edge, {from_main} from the \
         main, {size} in all"
    );
    assert_eq!(host.package("big").unwrap()["status"], "OK");

    // With the edge down the main is chosen; when it is back, the agent fails back to it.
    let r = host.json(&["repos"]);
    let line = |r: &Value, addr: &str| {
        r["candidates"].as_array().unwrap().iter().find(|c| c["addr"] == addr).cloned().unwrap()
    };
    assert_eq!(line(&r, &main.addr)["chosen"], true, "{r}");
    assert_eq!(line(&r, &edge.addr)["healthy"], false, "{r}");
    edge.restart(&[]);
    wait_for(LIMIT, "the agent to fail back to the edge", || {
        (line(&host.json(&["repos"]), &edge.addr)["chosen"] == true).then_some(())
    });
    assert_eq!(host.json(&["update"])["repo"], edge.addr.as_str());
}

#[test]
fn a_large_download_takes_large_datagrams_where_the_path_allows_and_a_small_one_does_not() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &[]);
    let small = noise(300_000, 60);
    let large = noise(12_000_000, 61);
    c.publish(&c.package("small", "1", &[("small.bin", &small)]), &main.addr);
    let seq = c.publish(&c.package("large", "1", &[("large.bin", &large)]), &main.addr);
    c.wait_sequence(&edge.addr, seq, LIMIT);
    let host = Host::new(&c, "pc9.test", &format!("repos = [{:?}]", edge.addr));
    let peer = "{peer=\"host\"}";
    // Counted when each connection ends (the command closes them as it exits).
    let sent = |done: &dyn Fn(f64) -> bool| {
        wait_for(LIMIT, "the edge to count the connections' datagrams", || {
            let bytes = edge.metric("outpost_repo_sent_datagram_bytes_total", peer);
            done(bytes).then(|| (bytes, edge.metric("outpost_repo_sent_datagrams_total", peer)))
        })
    };

    // A small package: the usual connection, the usual datagram sizes, no path-MTU probes.
    host.json(&["install", "small"]);
    let (bytes, datagrams) = sent(&|b| b > small.len() as f64);
    assert!(bytes / datagrams <= 1_472.0, "{bytes} bytes in {datagrams} datagrams");
    assert!(bytes < small.len() as f64 * 1.15, "no large probes: {bytes} bytes for {}", small.len());

    // A large one: a connection of its own, whose datagrams grow to what loopback allows.
    host.json(&["install", "large"]);
    let (all, n) = sent(&|b| b > bytes + large.len() as f64);
    let (bytes, datagrams) = (all - bytes, n - datagrams);
    // Loopback allows 64 KiB: past the 6,500 bytes of a segmentation-offload send of ten.
    assert!(bytes / datagrams > 8_000.0, "{bytes} bytes in {datagrams} datagrams");
    assert_eq!(host.package("large").unwrap()["status"], "OK");
}

#[test]
fn failing_slow_and_interrupted_hooks_are_errors_until_a_retry_or_a_fixed_version_succeeds() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    let host = Host::new(&c, "pc4.test", "");
    let publish = |name: &str, version: &str, body: &str| {
        let setup = hook(&log, body);
        c.publish(&c.package_with(name, version, "", &[("setup.sh", &setup)]), &main.addr)
    };
    let agent = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend_from_slice(&["--repo", &main.addr]);
        host.run(&all)
    };

    // A hook that fails: ERROR with its output; the package stays cached; the next upgrade retries.
    publish("flaky", "1", "echo cannot configure flaky >&2\nexit 3");
    agent(&["install", "flaky"]).fails_with("package(s) failed");
    let f = host.package("flaky").unwrap();
    assert_eq!(f["status"], "ERROR", "{f}");
    assert!(f["reason"].as_str().unwrap().contains("exit code 3"), "{f}");
    assert!(f["output"].as_str().unwrap().contains("cannot configure flaky"), "{f}");
    assert_eq!(host.cached().len(), 1, "a failed package stays in the cache");
    agent(&["upgrade"]).fails_with("package(s) failed");
    assert_eq!(log_lines(&log).iter().filter(|l| *l == "install flaky 1").count(), 2, "retried");

    // A hook over its time limit (3 s here) is stopped, with what it started.
    let pid_file = c.dir().join("slow.pid");
    publish("slow", "1", &format!("sleep 120 &\necho $! > '{}'\nwait", pid_file.display()));
    agent(&["install", "slow"]).fails_with("package(s) failed");
    let s = host.package("slow").unwrap();
    assert!(s["reason"].as_str().unwrap().contains("time limit"), "{s}");
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_string();
    wait_for(LIMIT, "the hook's child to be stopped", || {
        (!Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default().contains(") Z"))
        .then_some(())
    });

    // Fixed versions install.
    publish("flaky", "2", "");
    publish("slow", "2", "");
    agent(&["upgrade"]).ok();
    for name in ["flaky", "slow"] {
        let p = host.package(name).unwrap();
        assert_eq!((p["status"].as_str(), p["installed"].as_str()), (Some("OK"), Some("2")), "{p}");
    }

    // An agent killed during an install (here by the hook itself, the first time): the next
    // start records ERROR, and the next upgrade installs it.
    let mark = c.dir().join("crashed-once");
    publish("crashy", "1", &format!("if [ ! -e '{0}' ]; then touch '{0}'; kill -9 $PPID; sleep 5; fi", mark.display()));
    let r = agent(&["install", "crashy"]);
    assert_eq!(r.code, None, "the agent was killed: {r:?}");
    let p = host.package("crashy").unwrap();
    assert_eq!(p["status"], "ERROR", "{p}");
    assert!(p["reason"].as_str().unwrap().contains("interrupted"), "{p}");
    agent(&["upgrade"]).ok();
    assert_eq!(host.package("crashy").unwrap()["status"], "OK");
    assert_eq!(host.status()["host_status"], "OK");
}

#[test]
fn upgrade_works_offline_from_the_cache_and_a_damaged_cache_is_fetched_again() {
    let c = Cluster::new();
    let mut main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    let setup = hook(&log, "");
    let payload = noise(3_000_000, 9);
    c.publish(&c.package_with("alpha", "1", "", &[("setup.sh", &setup)]), &main.addr);
    c.publish(&c.package_with("beta", "1", "", &[("setup.sh", &setup), ("payload.bin", &payload)]), &main.addr);
    c.publish(&c.package_with("pc5.test", "1", "section: host\ndepends: alpha,beta\n", &[]), &main.addr);
    let host = Host::new(&c, "pc5.test", &format!("repos = [{:?}]", main.addr));

    let d = host.json(&["download-upgrade"]);
    assert_eq!(d["downloaded"], serde_json::json!(["alpha", "beta", "pc5.test"]), "{d}");
    assert!(log_lines(&log).is_empty(), "download-upgrade installs nothing");
    assert_eq!(host.cached().len(), 3);
    // One byte of beta's cached payload changes.
    let beta = host.state.join("cache").join(
        host.cached().into_iter().find(|d| host.state.join("cache").join(d).join("payload.bin").exists()).unwrap(),
    );
    let mut bytes = std::fs::read(beta.join("payload.bin")).unwrap();
    bytes[2_000_000] ^= 1;
    std::fs::write(beta.join("payload.bin"), bytes).unwrap();

    // No repository: alpha installs from the cache, beta is refused.
    main.stop();
    let r = host.run(&["upgrade"]).fails_with("package(s) failed");
    assert!(r.stdout.contains("No repository answered: working from the cache."), "{}", r.stdout);
    assert_eq!(log_lines(&log), ["install alpha 1"]);
    let b = host.package("beta").unwrap();
    assert_eq!(b["status"], "ERROR", "{b}");
    assert!(b["reason"].as_str().unwrap().contains("does not match its signed hash"), "{b}");

    // The repository back: only the damaged part of beta is fetched again.
    main.restart(&[]);
    let up = host.json(&["upgrade"]);
    let fetched = up["fetched_bytes"].as_u64().unwrap();
    assert!(fetched > 0 && fetched <= 1_048_576, "{up}");
    assert_eq!(log_lines(&log), ["install alpha 1", "install beta 1"]);
    assert_eq!(host.status()["host_status"], "OK");
}

/// A BETA-only package, and a `config` package whose settings accept BETA packages.
fn publish_beta_and_settings(c: &Cluster, repo: &str) {
    c.publish(&c.package_with("beta-tool", "1", "maturity: BETA\n", &[("a", b"a")]), repo);
    let settings: &[u8] = b"maturities = [\"PROD\", \"BETA\"]\n";
    c.publish(&c.package_with("agent-settings", "1", "section: config\n", &[("agent.toml", settings)]), repo);
}

#[test]
fn config_packages_change_the_agent_settings() {
    let c = Cluster::new();
    let main = c.main(&[]);
    publish_beta_and_settings(&c, &main.addr);
    let host = Host::new(&c, "pc6.test", &format!("repos = [{:?}]", main.addr));
    host.run(&["install", "beta-tool"]).fails_with("beta-tool");
    host.run(&["install", "agent-settings"]).ok();
    host.run(&["install", "beta-tool"]).ok();
    assert_eq!(host.package("beta-tool").unwrap()["status"], "OK");
    host.run(&["remove", "agent-settings"]).ok();
    assert!(!host.state.join("config.d/agent-settings.toml").exists());
}

#[test]
fn the_daemon_upgrades_by_itself_and_answers_local_commands() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    let setup = hook(&log, "");
    let host = Host::new(&c, "pc7.test", &format!("repos = [{:?}]\nupdate_every = \"1s\"", main.addr));
    c.publish(&c.package_with("tool", "1", "", &[("setup.sh", &setup)]), &main.addr);
    c.publish(&c.package_with("extra", "1", "", &[("setup.sh", &setup)]), &main.addr);
    publish_beta_and_settings(&c, &main.addr);
    let mut daemon = Bg(host.spawn(&["run"]));
    wait_for(LIMIT, "the daemon's control socket", || host.state.join("agent.sock").exists().then_some(()));
    c.publish(&c.package_with("pc7.test", "1", "section: host\ndepends: tool\n", &[]), &main.addr);
    wait_for(LIMIT, "the daemon to install the host package's dependency", || {
        log_lines(&log).contains(&"install tool 1".to_string()).then_some(())
    });
    // One-shot commands go through the daemon (it holds the state folder).
    host.run(&["install", "extra"]).ok();
    assert!(log_lines(&log).contains(&"install extra 1".to_string()));
    // A config package changes the daemon's settings at once: BETA packages become acceptable.
    host.run(&["install", "beta-tool"]).fails_with("beta-tool");
    host.run(&["install", "agent-settings"]).ok();
    host.run(&["install", "beta-tool"]).ok();
    assert_eq!(host.package("beta-tool").unwrap()["status"], "OK");
    wait_for(LIMIT, "status OK", || (host.status()["host_status"] == "OK").then_some(()));
    let _ = std::process::Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]).status();
    let out = wait_for(LIMIT, "the daemon to stop", || daemon.0.try_wait().unwrap());
    assert!(out.success(), "stopped cleanly on SIGTERM");
    assert!(!host.state.join("agent.sock").exists(), "the socket is removed");
    // Without the daemon, the same commands run in place.
    assert_eq!(host.package("tool").unwrap()["status"], "OK");
}

#[test]
fn a_running_daemon_follows_pushed_heads_and_asks_nothing_while_unchanged() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let edge = c.edge(&[&main.addr], &[]);
    let first = c.publish(&c.package("push-a", "1", &[("a", b"a")]), &main.addr);
    c.wait_sequence(&edge.addr, first, LIMIT);
    let config = format!("repos = [{:?}]\nmain = {:?}\nupdate_every = \"1s\"", edge.addr, main.addr);
    let host = Host::new(&c, "pc-push.test", &config);
    let _daemon = Bg(host.spawn(&["run"]));
    wait_for(LIMIT, "the daemon's control socket", || host.state.join("agent.sock").exists().then_some(()));
    wait_for(LIMIT, "the daemon's first update", || (host.status()["sequence"] == first).then_some(()));
    wait_for(LIMIT, "the daemon to follow the edge's heads", || {
        (edge.metric("outpost_repo_subscribers", "") == 1.0).then_some(())
    });
    let asked = |kind: &str| edge.metric("outpost_repo_requests_total", &format!("{{request=\"{kind}\"}}"));
    let at = |host: &Host| host.status()["last_update"]["at"].as_i64().unwrap();
    let heads = asked("head");

    // Unchanged: its cycles (every second) ask the edge nothing.
    let since = at(&host);
    wait_for(LIMIT, "three more update cycles", || (at(&host) >= since + 3).then_some(()));
    assert_eq!(asked("head"), heads, "no head asked while following");

    // A publish reaches the daemon on the connection it keeps, without a head asked.
    let snapshots = asked("snapshot");
    let second = c.publish(&c.package("push-b", "1", &[("b", b"b")]), &main.addr);
    wait_for(LIMIT, "the pushed head to be taken", || (host.status()["sequence"] == second).then_some(()));
    assert!(asked("snapshot") > snapshots, "the new snapshot fetched on that connection");
    assert_eq!(asked("head"), heads);
    assert_eq!(edge.metric("outpost_repo_subscribers", ""), 1.0, "still one connection");

    // `agent update` through the daemon: one head asked on that connection.
    let out = host.run(&["update"]).ok();
    assert!(out.stdout.contains(&format!("snapshot {second}")), "{}", out.stdout);
    assert_eq!(asked("head"), heads + 1.0);

    // The edge goes: the daemon checks every repository again at once and uses the main; being
    // a fallback, it is not followed.
    let mut edge = edge;
    edge.kill();
    wait_for(LIMIT, "the daemon to fall back to the main", || {
        (host.status()["last_update"]["repo"] == main.addr.as_str()).then_some(())
    });
    assert_eq!(main.metric("outpost_repo_subscribers", ""), 0.0, "a fallback is not followed");
}

#[test]
fn an_unchanged_update_is_one_datagram_each_way_once_the_agent_holds_a_ticket() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let mut edge = c.edge(&[&main.addr], &[]);
    let first = c.publish(&c.package("check-a", "1", &[("a", b"a")]), &main.addr);
    c.wait_sequence(&edge.addr, first, LIMIT);
    let config = format!("repos = [{:?}]\nmain = {:?}", edge.addr, main.addr);
    let host = Host::new(&c, "pc-check.test", &config);
    let asked =
        |edge: &Daemon, kind: &str| edge.metric("outpost_repo_requests_total", &format!("{{request=\"{kind}\"}}"));
    let checks = |edge: &Daemon, result: &str| {
        edge.metric("outpost_repo_head_checks_total", &format!("{{result=\"{result}\"}}"))
    };

    // The first update connects (QUIC) and takes a ticket on that connection.
    let out = host.run(&["update"]).ok();
    assert!(out.stdout.contains(&format!("New snapshot {first}")), "{}", out.stdout);
    assert_eq!((asked(&edge, "head"), asked(&edge, "check_ticket")), (1.0, 1.0));

    // Unchanged: one datagram each way, no connection (no head asked over QUIC).
    let out = host.run(&["update"]).ok();
    assert!(out.stdout.contains(&format!("Unchanged snapshot {first} from {}", edge.addr)), "{}", out.stdout);
    assert_eq!(checks(&edge, "ok"), 1.0);
    assert_eq!((asked(&edge, "head"), asked(&edge, "check_ticket")), (1.0, 1.0), "no connection made");

    // Changed: the check says so, and the new snapshot comes over QUIC.
    let second = c.publish(&c.package("check-b", "1", &[("b", b"b")]), &main.addr);
    c.wait_sequence(&edge.addr, second, LIMIT);
    let out = host.run(&["update"]).ok();
    assert!(out.stdout.contains(&format!("New snapshot {second}")), "{}", out.stdout);
    assert_eq!(checks(&edge, "ok"), 2.0);
    assert_eq!(asked(&edge, "snapshot"), 2.0);
    assert_eq!(asked(&edge, "head"), 1.0, "the head came from the check");

    // Datagrams of the check's kind that are not genuine queries: a ticket this edge never
    // gave is told so (unsealed, so the agent only learns to ask over QUIC); a query cut
    // short, and one whose tag was not made with the ticket's key, get nothing.
    let ip = edge.addr.rsplit_once(':').unwrap().0;
    let raw = std::net::UdpSocket::bind((ip, 0)).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut ticket = vec![0u8; 80];
    ticket[0] = 0x5a;
    let q = outpost_protocol::check::query(&ticket, &[3; 32], [4; 12]);
    raw.send_to(&q, &edge.addr).unwrap();
    let mut buf = [0u8; 512];
    let n = raw.recv(&mut buf).unwrap();
    assert_eq!(
        outpost_protocol::check::open_reply(&buf[..n], &[3; 32], [4; 12]),
        Ok(outpost_protocol::check::Reply::Unknown)
    );
    raw.send_to(&q[..q.len() - 3], &edge.addr).unwrap();
    wait_for(LIMIT, "the edge to count the malformed check", || (checks(&edge, "malformed") == 1.0).then_some(()));
    assert_eq!(checks(&edge, "unknown_ticket"), 1.0);

    // The edge restarts and knows no ticket: the agent is told, asks over QUIC, and takes a
    // new ticket there; the next update is a check again.
    edge.restart(&[]);
    c.wait_sequence(&edge.addr, second, LIMIT);
    let out = host.run(&["update"]).ok();
    assert!(out.stdout.contains(&format!("Unchanged snapshot {second}")), "{}", out.stdout);
    assert_eq!(checks(&edge, "unknown_ticket"), 1.0);
    assert_eq!((asked(&edge, "head"), asked(&edge, "check_ticket")), (1.0, 1.0));
    host.run(&["update"]).ok();
    assert_eq!(checks(&edge, "ok"), 1.0);
    assert_eq!(asked(&edge, "head"), 1.0, "no connection made");

    // The edge stops: its check fails and so does a connection; the main, whose ticket the
    // agent took with the edge's, answers its check.
    edge.kill();
    let heads = asked(&main, "head");
    let out = host.run(&["update"]).ok();
    assert!(out.stdout.contains(&format!("Unchanged snapshot {second} from {}", main.addr)), "{}", out.stdout);
    assert_eq!(asked(&main, "head"), heads, "the main answered a check");
}

/// A path that lets QUIC through but drops head checks (a middlebox that knows QUIC only): the
/// agent's updates still work (the check times out, it connects), and after two checks in a
/// row without an answer it stops trying them until its ticket is renewed.
#[test]
fn where_the_path_drops_head_checks_the_agent_connects_and_stops_trying_them() {
    let c = Cluster::new();
    let ip = Relay::address();
    let main = c.main_named(&[], &[&ip]);
    let first = c.publish(&c.package("via-relay", "1", &[("a", b"a")]), &main.addr);
    let relay = Relay::start(&ip, &main.addr, Pacing { free: u64::MAX, interval: Duration::ZERO, quic_only: true });
    let host = Host::new(&c, "pc-relay.test", &format!("repos = [{:?}]", relay.addr));
    let asked = |kind: &str| main.metric("outpost_repo_requests_total", &format!("{{request=\"{kind}\"}}"));

    host.run(&["update"]).ok();
    assert_eq!((asked("head"), asked("check_ticket")), (1.0, 1.0), "the first update connects and takes a ticket");
    for round in 1..=2 {
        let out = host.run(&["update"]).ok();
        assert!(out.stdout.contains(&format!("Unchanged snapshot {first}")), "{}", out.stdout);
        assert!(relay.dropped() >= round, "the check was sent and dropped");
        assert_eq!(asked("head"), 1.0 + round as f64, "then the agent connected");
    }
    assert_eq!(main.metric("outpost_repo_head_checks_total", "{result=\"ok\"}"), 0.0);
    let dropped = relay.dropped();
    host.run(&["update"]).ok();
    assert_eq!(relay.dropped(), dropped, "no check tried after two without an answer");
    assert_eq!(asked("head"), 4.0);
    assert_eq!(asked("check_ticket"), 1.0, "the ticket is kept (renewed at half its life)");
}

/// The disk fills during a download (the agent's state on a 4 MiB tmpfs, a 6 MB package): the
/// install fails naming the file and the cause, without trying other repositories for it;
/// nothing is installed; with room again, the same install completes (every chunk verified).
/// Needs root (mounting a tmpfs): skipped otherwise, saying so.
#[test]
fn a_disk_that_fills_during_a_download_fails_the_install_and_a_retry_completes() {
    if !is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs for the agent's state needs root");
        return;
    }
    let c = Cluster::new();
    let main = c.main(&[]);
    let big = noise(6_000_000, 77);
    c.publish(&c.package("big-one", "1", &[("big.bin", &big)]), &main.addr);
    let host = Host::new(&c, "pc-full.test", &format!("repos = [{:?}]", main.addr));
    let disk = Tmpfs::mount(&host.state, "4m");

    let failed = host.run(&["install", "big-one"]);
    assert_eq!(failed.code, Some(1), "{failed:?}");
    let said = format!("{}{}", failed.stdout, failed.stderr);
    assert!(said.contains("No space left on device") && said.contains("big.bin"), "{said}");
    assert!(!said.contains("no repository could provide"), "a full disk is not the repository's fault: {said}");
    assert_ne!(host.package("big-one").map(|p| p["status"].clone()), Some("OK".into()));

    disk.resize("64m");
    host.run(&["install", "big-one"]).ok();
    assert_eq!(host.package("big-one").unwrap()["status"], "OK");
}

#[test]
fn dns_srv_records_from_a_real_dnsmasq_drive_discovery() {
    let Some(dnsmasq) = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"].into_iter().find(|p| Path::new(p).exists()) else {
        eprintln!("SKIPPED: dnsmasq is not installed (scripts/setup installs dnsmasq-base)");
        return;
    };
    let c = Cluster::new();
    let main = c.main(&[]);
    let edge = c.edge_named(&[&main.addr], &[], &["edge1.site1.test"]);
    let seq = c.publish(&c.package("srv-tool", "1", &[("a", b"a")]), &main.addr);
    c.wait_sequence(&edge.addr, seq, LIMIT);
    let (edge_ip, edge_port) = edge.addr.rsplit_once(':').unwrap();
    let dns_ip = next_ip();
    let dns_port = crate::cluster::udp_port(&dns_ip);
    let mut dns = std::process::Command::new(dnsmasq)
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--user=root",
            "--pid-file=",
            &format!("--listen-address={dns_ip}"),
            &format!("--port={dns_port}"),
            &format!("--host-record=edge1.site1.test,{edge_ip}"),
            &format!("--srv-host=_outpost._udp.site1.test,edge1.site1.test,{edge_port},0,10"),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    struct Stop<'a>(&'a mut Child);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(&mut dns);
    let host = Host::new(
        &c,
        "pc8.site1.test",
        &format!(
            "srv_discovery = true\ndns_domain = \"site1.test\"\ndns_servers = [\"{dns_ip}:{dns_port}\"]\nmain = {:?}",
            main.addr
        ),
    );
    let r = wait_for(LIMIT, "dnsmasq to answer", || {
        let r = host.json(&["repos"]);
        r["dns_error"].is_null().then_some(r)
    });
    let first = &r["candidates"][0];
    assert_eq!(first["addr"], format!("edge1.site1.test:{edge_port}"), "{r}");
    assert!(first["origin"].as_str().unwrap().to_lowercase().contains("srv"), "{r}");
    assert_eq!(first["chosen"], true, "{r}");
    assert_eq!(first["healthy"], true, "{r}");
    host.run(&["install", "srv-tool"]).ok();
    assert_eq!(host.json(&["update"])["repo"], format!("edge1.site1.test:{edge_port}"));
}
