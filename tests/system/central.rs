//! Central end to end: a real `outpost server` (main repository and central), real agents that
//! enroll, report and run actions, real consoles; faults injected with crafted reports, wrong
//! rights, expired and replayed actions, revocation, and central losing its data.

use std::path::PathBuf;
use std::time::Duration;

use outpost_actors::central::client::{CentralClient, CentralClientError};
use outpost_actors::transport;
use outpost_protocol::central::{ALPN_CENTRAL, CentralRequest, CentralResponse, HostFacts, Report, Section, Software};
use outpost_protocol::pki::{self, PrivateKey};
use serde_json::Value;

use crate::agent::{Bg, Host, hook, log_lines};
use crate::cluster::Cluster;
use crate::common::{Run, run_in};

const LIMIT: Duration = Duration::from_secs(60);

/// A console user: an admin certificate with some rights.
pub struct Console<'a> {
    c: &'a Cluster,
    central: String,
    cert: PathBuf,
    key: PathBuf,
}

impl<'a> Console<'a> {
    pub fn new(c: &'a Cluster, central: &str, name: &str, rights: &str) -> Self {
        let (cert, key) = c.pki.issue("admin", name, &["--rights", rights]);
        Self { c, central: central.to_string(), cert, key }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let ca = self.c.pki.ca();
        let mut all = vec!["console"];
        all.extend_from_slice(args);
        all.extend_from_slice(&[
            "--server",
            &self.central,
            "--ca",
            ca.to_str().unwrap(),
            "--cert",
            self.cert.to_str().unwrap(),
            "--key",
            self.key.to_str().unwrap(),
        ]);
        run_in(self.c.dir(), &all)
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.push("--json");
        let r = self.run(&all).ok();
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stdout))
    }

    pub fn hosts(&self, filter: &[&str]) -> Vec<Value> {
        let mut args = vec!["hosts"];
        args.extend_from_slice(filter);
        self.json(&args)["hosts"].as_array().unwrap().clone()
    }
}

/// Waits like `wait_for`, and shows the agent's and the server's logs when it times out.
#[track_caller]
fn wait_logged<T>(host: &Host, server: &crate::cluster::Daemon, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}\nagent log:\n{}\nserver log:\n{}",
            std::fs::read_to_string(host.log()).unwrap_or_default(),
            server.log_text()
        );
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

fn metric(d: &crate::cluster::Daemon, name: &str, labels: &str) -> f64 {
    d.metric(name, labels)
}

#[test]
fn hosts_enroll_report_take_actions_and_survive_central_losing_its_data() {
    let c = Cluster::new();
    let (mut server, central) = c.server(&[]);
    let admin = Console::new(&c, &central, "Alice", "view,act,modify");
    let viewer = Console::new(&c, &central, "Victor", "view");
    let log = c.dir().join("hooks.log");
    let setup = hook(&log, "");
    c.publish(&c.package_with("tool", "1", "", &[("setup.sh", &setup)]), &server.addr);
    c.publish(&c.package_with("extra", "1", "", &[("setup.sh", &setup)]), &server.addr);

    // The host's repository is a site edge behind a region edge; the main is its fallback.
    let mut region = c.edge(&[&server.addr], &[]);
    let site = c.edge(&[&region.addr], &[]);

    // Enrollment with a token: the agent makes its key, central signs its request.
    let token = admin.json(&["token", "create"])["token"].as_str().unwrap().to_string();
    let name = "pc1.site.test";
    let (cert, key) = (c.dir().join("pc1/host.crt"), c.dir().join("pc1/host.key"));
    let host = Host::with_identity(
        &c,
        name,
        &format!(
            "repos = [{:?}]\nmain = {:?}\nserver = {central:?}\nou = \"CN=pc1,OU=Paris,DC=test\"\nsite = \"paris\"",
            site.addr, server.addr
        ),
        &cert,
        &key,
    );
    host.run(&["enroll", "--token", &token]).ok();
    let info =
        pki::cert_info(&pki::parse_pem_certificates(&std::fs::read_to_string(&cert).unwrap()).unwrap()[0]).unwrap();
    assert_eq!(info.role, Some(pki::Role::Host));
    assert_eq!(info.subject, name);
    host.run(&["enroll", "--token", &token, "--force"]).fails_with("used up");

    // The daemon reports: the host shows in the console with its inventory.
    let mut daemon = Bg(host.spawn(&["run"]));
    let found = wait_logged(&host, &server, "the host in the console", || {
        admin.hosts(&[]).into_iter().find(|h| h["fqdn"] == name && h["status"] == "OK")
    });
    assert_eq!(found["site"], "paris");
    let inventory = host.json(&["inventory"]);
    let software =
        inventory.as_array().unwrap().iter().find_map(|s| s["Software"].as_array().cloned()).unwrap_or_default();
    if let Some(first) = software.first() {
        let n = first["name"].as_str().unwrap();
        assert_eq!(admin.hosts(&["--software", n])[0]["fqdn"], name, "found by installed software {n}");
    }
    assert!(admin.hosts(&["--software", "no-such-software"]).is_empty());
    assert_eq!(admin.hosts(&["--ou", "OU=Paris,DC=test", "--site", "paris"]).len(), 1);

    // Host package set from the console (signed with the admin's key), applied at once, even
    // though the host's edge is behind (its region edge is down): the action says which snapshot
    // it needs, and after waiting for its edge the agent takes the main, which serves it.
    c.wait_sequence(&site.addr, c.sequence(&server.addr), LIMIT);
    assert_eq!(host.json(&["update"])["repo"], site.addr.as_str());
    region.stop();
    let published = admin.run(&["host", "set-packages", name, "tool", "--repo", &server.addr, "--now"]).ok().stdout;
    let line = published.lines().find(|l| l.starts_with("Published")).unwrap_or_else(|| panic!("{published}"));
    let sequence: u64 = line.rsplit("snapshot ").next().unwrap().trim().parse().unwrap();
    wait_logged(&host, &server, "tool to be installed and reported", || {
        let d = admin.json(&["host", name]);
        d["inventory"]["sections"]["packages"]["Packages"]["packages"]
            .as_array()
            .and_then(|p| p.iter().find(|p| p["name"] == "tool" && p["status"] == "OK").cloned())
    });
    assert!(log_lines(&log).contains(&"install tool 1".to_string()));
    let last = host.json(&["status"])["last_update"].clone();
    assert_eq!(
        (last["repo"].as_str(), last["sequence"].as_u64()),
        (Some(server.addr.as_str()), Some(sequence)),
        "{last}"
    );
    region.restart(&[]);
    c.wait_sequence(&site.addr, sequence, LIMIT);
    wait_logged(&host, &server, "the fleet's package counts", || {
        let p = admin.json(&["packages"]);
        p.as_array().unwrap().iter().any(|p| p["name"] == "tool" && p["by_status"]["OK"] == 1).then_some(())
    });

    // An action: install extra. A viewer may not act.
    viewer.run(&["action", "update", "--hosts", name]).fails_with("act right");
    let action_file = c.dir().join("install-extra.action");
    admin.run(&["action", "install", "extra", "--hosts", name, "--out", action_file.to_str().unwrap()]).ok();
    wait_logged(&host, &server, "the action's result", || {
        let a = admin.json(&["actions"]);
        a.as_array()
            .unwrap()
            .iter()
            .find(|a| a["kind"] == "install" && a["results"].as_array().is_some_and(|r| !r.is_empty()))
            .cloned()
    });
    assert!(log_lines(&log).contains(&"install extra 1".to_string()));
    // The same signed action again: central refuses the replay.
    admin.run(&["action", "send", "--signed", action_file.to_str().unwrap()]).fails_with("replay");
    // An expired action is refused. (2 s, not 1: expiries count whole seconds, so a 1 s action
    // made late in a second may expire while it is being made.)
    let short = c.dir().join("short.action");
    admin.run(&["action", "upgrade", "--hosts", name, "--expires", "2s", "--out", short.to_str().unwrap()]).ok();
    wait_logged(&host, &server, "the short action to expire", || {
        let r = admin.run(&["action", "send", "--signed", short.to_str().unwrap()]);
        (r.code == Some(1) && r.stderr.contains("expired")).then_some(())
    });
    assert!(metric(&server, "outpost_central_action_refusals_total", "{reason=\"expired\"}") >= 1.0);

    // Agent settings signed by an admin with `modify` reach the agent (a viewer's are refused).
    let settings = c.dir().join("settings.toml");
    std::fs::write(&settings, "maturities = [\"PROD\", \"BETA\"]\n").unwrap();
    viewer.run(&["settings", settings.to_str().unwrap(), "--hosts", name]).fails_with("modify right");
    admin.run(&["settings", settings.to_str().unwrap(), "--hosts", name]).ok();
    host.run(&["update"]).ok();
    let applied = host.state.join("config.d/00-central.toml");
    wait_logged(&host, &server, "the settings on the agent", || std::fs::read_to_string(&applied).ok());
    assert!(std::fs::read_to_string(&applied).unwrap().contains("BETA"));

    // Central loses its data: the fleet is back after one reporting round, without any manual
    // step; the agent, which remembers the action, refuses it when the blank central relays it.
    server.kill();
    server.wipe_central();
    server.restart(&[]);
    assert!(admin.hosts(&[]).is_empty(), "central starts empty");
    // Nothing changed on the host: the agent's new connection alone brings it back.
    wait_logged(&host, &server, "the host back in the console", || {
        admin.hosts(&[]).into_iter().find(|h| h["fqdn"] == name && h["status"] == "OK")
    });
    assert!(metric(&server, "outpost_central_full_report_requests_total", "") >= 1.0, "a full report was asked for");
    let d = admin.json(&["host", name]);
    assert!(d["inventory"]["sections"]["packages"].to_string().contains("\"tool\""), "{d}");
    admin.run(&["action", "send", "--signed", action_file.to_str().unwrap()]).ok();
    let refused = wait_logged(&host, &server, "the agent's answer to the replayed action", || {
        let a = admin.json(&["actions"]);
        a.as_array().unwrap().iter().find_map(|a| a["results"].as_array().and_then(|r| r.first().cloned()))
    });
    assert_eq!(refused["ok"], false, "{refused}");
    assert!(refused["message"].as_str().unwrap().contains("replay"), "{refused}");
    assert_eq!(log_lines(&log).iter().filter(|l| *l == "install extra 1").count(), 1, "not run twice");

    // Revocation: refused by central, by the main repository, and by edges (through the
    // snapshot).
    let edge = c.edge(&[&server.addr], &[]);
    viewer.run(&["host", "revoke", name]).fails_with("modify right");
    admin.run(&["host", "revoke", name]).ok();
    assert_eq!(admin.hosts(&[])[0]["revoked"], true);
    // The repository learns it from the snapshot the revocation publishes, a moment later.
    wait_logged(&host, &server, "the main repository to refuse the revoked certificate", || {
        let r = host.run(&["update"]);
        (r.code == Some(1) && r.stderr.contains("revoked")).then_some(())
    });
    assert!(metric(&server, "outpost_repo_refusals_total", "{reason=\"revoked_certificate\"}") >= 1.0);
    let _ = std::process::Command::new("kill").args(["-TERM", &daemon.0.id().to_string()]).status();
    let status = wait_logged(&host, &server, "the agent to stop", || daemon.0.try_wait().unwrap());
    assert!(status.success());
    c.wait_sequence(&edge.addr, c.sequence(&server.addr), LIMIT);
    host.run(&["update", "--repo", &edge.addr]).fails_with("revoked");
    assert!(edge.metric("outpost_repo_refusals_total", "{reason=\"revoked_certificate\"}") >= 1.0);
}

/// A raw client with a host certificate, for crafted reports.
pub struct RawHost {
    rt: tokio::runtime::Runtime,
    client: CentralClient,
    key: PrivateKey,
}

impl RawHost {
    pub fn new(c: &Cluster, central: &str, name: &str) -> Self {
        let (cert, key) = c.pki.issue("host", name, &[]);
        Self::with_cert(c, central, &cert, &key)
    }

    /// A raw client with an existing host certificate and key.
    pub fn with_cert(c: &Cluster, central: &str, cert: &std::path::Path, key: &std::path::Path) -> Self {
        let chain = pki::parse_pem_certificates(&std::fs::read_to_string(cert).unwrap()).unwrap();
        let key = pki::decode_private_key(&std::fs::read_to_string(key).unwrap(), None).unwrap();
        let ca = pki::parse_pem_certificates(&std::fs::read_to_string(c.pki.ca()).unwrap()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let identity = transport::Identity { chain, key: key.pkcs8_der().to_vec() };
        let client = rt.block_on(async {
            let endpoint = transport::client(None, &identity, &ca, ALPN_CENTRAL).unwrap();
            CentralClient::connect(&endpoint, central).await.unwrap()
        });
        Self { rt, client, key }
    }

    pub fn send(&self, request: &CentralRequest) -> Result<CentralResponse, CentralClientError> {
        self.rt.block_on(self.client.request(request))
    }

    pub fn report(
        &self,
        host: &str,
        sequence: u64,
        full: bool,
        sections: Vec<Section>,
    ) -> Result<CentralResponse, String> {
        let r = Report { host: host.into(), sequence, full, created: 0, sections };
        self.send(&CentralRequest::Report(r.sign(&self.key))).map_err(|e| e.to_string())
    }
}

pub fn facts(uuid: &str, fqdn: &str) -> Section {
    Section::Host(HostFacts { uuid: uuid.into(), fqdn: fqdn.into(), ..HostFacts::default() })
}

fn status_of(admin: &Console<'_>, name: &str) -> Option<u64> {
    admin.hosts(&[]).into_iter().find(|h| h["fqdn"] == name).and_then(|h| h["sequence"].as_u64())
}

#[test]
fn bad_reports_are_rejected_or_answered_with_a_full_report_request_and_store_nothing() {
    let c = Cluster::new();
    let (server, central) = c.server(&["--no-repository"]);
    let admin = Console::new(&c, &central, "Alice", "view");
    let h1 = RawHost::new(&c, &central, "h1.test");
    let sw = |n: &str| Section::Software(vec![Software { name: n.into(), version: "1".into() }]);

    assert!(matches!(
        h1.report("uuid-h1", 1, true, vec![facts("uuid-h1", "h1.test"), sw("vim")]),
        Ok(CentralResponse::ReportApplied { sequence: 1 })
    ));
    assert!(matches!(
        h1.report("uuid-h1", 2, false, vec![sw("emacs")]),
        Ok(CentralResponse::ReportApplied { sequence: 2 })
    ));
    // A gap: central asks for everything.
    assert!(matches!(
        h1.report("uuid-h1", 4, false, vec![sw("nano")]),
        Ok(CentralResponse::FullReportNeeded { last: Some(2) })
    ));
    // A replay (and an old full report) is rejected.
    let replay = h1.report("uuid-h1", 2, false, vec![sw("ed")]).unwrap_err();
    assert!(replay.contains("not newer"), "{replay}");
    h1.report("uuid-h1", 1, true, vec![facts("uuid-h1", "h1.test"), sw("ed")]).unwrap_err();
    // A bad signature.
    let other = PrivateKey::generate().unwrap();
    let forged =
        Report { host: "uuid-h1".into(), sequence: 3, full: false, created: 0, sections: vec![sw("ed")] }.sign(&other);
    let e = h1.send(&CentralRequest::Report(forged)).unwrap_err().to_string();
    assert!(e.contains("bad signature"), "{e}");
    // A report about another host than the certificate's.
    let e = h1.report("uuid-h2", 1, true, vec![facts("uuid-h2", "h2.test"), sw("ed")]).unwrap_err();
    assert!(e.contains("does not name host"), "{e}");
    // Oversized.
    let big: Vec<Software> =
        (0..40_000).map(|i| Software { name: format!("package-number-{i:06}"), version: "1.0.0-1".into() }).collect();
    let e = h1.report("uuid-h1", 3, false, vec![Section::Software(big)]).unwrap_err();
    assert!(e.contains("over the"), "{e}");
    // A host certificate may not use the console.
    let e = h1.send(&CentralRequest::Hosts(Default::default())).unwrap_err().to_string();
    assert!(e.contains("view right"), "{e}");

    // Nothing from the refused reports was stored.
    assert_eq!(status_of(&admin, "h1.test"), Some(2));
    assert!(admin.hosts(&["--software", "ed"]).is_empty());
    assert!(admin.hosts(&["--software", "nano"]).is_empty());
    assert_eq!(admin.hosts(&["--software", "emacs"]).len(), 1);
    assert!(admin.run(&["host", "h2.test"]).code == Some(1));
    for (reason, at_least) in [("replay", 2.0), ("signature", 1.0), ("unknown_host", 1.0), ("oversized", 1.0)] {
        assert!(
            metric(&server, "outpost_central_report_rejections_total", &format!("{{reason=\"{reason}\"}}")) >= at_least,
            "{reason}"
        );
    }
    assert_eq!(metric(&server, "outpost_central_full_report_requests_total", ""), 1.0);
    assert_eq!(metric(&server, "outpost_central_reports_total", "{result=\"applied\"}"), 2.0);
    // The forged report came alone: it spoiled no batch of others' reports.
    let scraped = server.scrape_opt().unwrap_or_default();
    assert!(scraped.lines().any(|l| l == "outpost_central_report_batches_redone_total 0"), "{scraped}");
    // The journal's troubles are exported (none here).
    for troubles in
        ["outpost_central_journal_fold_failures_total 0", "outpost_central_journal_damaged_segments_total 0"]
    {
        assert!(scraped.lines().any(|l| l == troubles), "{troubles}: {scraped}");
    }
}

/// Reports answered before central is killed (SIGKILL, as a crash or a power cut) are all there
/// when it starts again: a report is answered once it is durable (on redb, the last ones are
/// still in the journal when it is killed, as its metrics say, and applied at the start).
#[test]
fn reports_answered_before_central_is_killed_survive_it() {
    let c = Cluster::new();
    let (mut server, central) = c.server(&["--no-repository"]);
    let names: Vec<String> = (0..3).map(|i| format!("h{i}.crash.test")).collect();
    let certs: Vec<(PathBuf, PathBuf)> = names.iter().map(|n| c.pki.issue("host", n, &[])).collect();
    let hosts: Vec<RawHost> = certs.iter().map(|(cert, key)| RawHost::with_cert(&c, &central, cert, key)).collect();
    let sw = |v: u64| Section::Software(vec![Software { name: "vim".into(), version: v.to_string() }]);
    let mut last = vec![0u64; hosts.len()];
    for _ in 0..20 {
        for (i, h) in hosts.iter().enumerate() {
            let seq = last[i] + 1;
            let mut sections = vec![sw(seq)];
            if seq == 1 {
                sections.insert(0, facts(&format!("uuid-{i}"), &names[i]));
            }
            let answer = h.report(&format!("uuid-{i}"), seq, seq == 1, sections);
            assert!(matches!(answer, Ok(CentralResponse::ReportApplied { sequence }) if sequence == seq), "{answer:?}");
            last[i] = seq;
        }
    }
    drop(hosts);
    // On redb the last reports are in the journal, not yet in the tables, when it is killed.
    if std::env::var(crate::cluster::CENTRAL_BACKEND_ENV).is_err() {
        crate::cluster::wait_for(LIMIT, "the journal's reports in the metrics", || {
            (metric(&server, "outpost_central_journal_reports", "") >= 1.0).then_some(())
        });
    }
    server.kill();
    server.restart(&[]);
    let admin = Console::new(&c, &central, "Alice", "view");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(status_of(&admin, name), Some(last[i]), "{name}");
        let d = admin.json(&["host", name]);
        assert!(d["inventory"].to_string().contains(&format!("\"{}\"", last[i])), "{name}: {d}");
    }
    // Each host goes on from where it was: its next report applies, its last one is a replay.
    let h0 = RawHost::with_cert(&c, &central, &certs[0].0, &certs[0].1);
    let next = h0.report("uuid-0", last[0] + 1, false, vec![sw(last[0] + 1)]);
    assert!(matches!(next, Ok(CentralResponse::ReportApplied { .. })), "{next:?}");
    let again = h0.report("uuid-0", last[0] + 1, false, vec![sw(0)]).unwrap_err();
    assert!(again.contains("not newer"), "{again}");
}

/// Central's disk fills (its data on a 16 MiB tmpfs): a report that cannot be made durable is
/// answered with an error that names the journal and the full disk, and nothing answered
/// before is lost; once there is room the same report applies, and everything answered
/// survives a kill. Needs root (mounting a tmpfs): skipped otherwise, saying so; central on
/// redb (on PostgreSQL the database's disk is not central's).
#[test]
fn a_full_disk_refuses_reports_without_losing_the_answered_ones() {
    if !crate::cluster::is_root() {
        eprintln!("SKIPPED: mounting a small tmpfs for central's data needs root");
        return;
    }
    if std::env::var(crate::cluster::CENTRAL_BACKEND_ENV).is_ok() {
        eprintln!("skipped: this central keeps its reports on PostgreSQL here, not on its disk");
        return;
    }
    let c = Cluster::new();
    let (mut server, central) = c.server(&["--no-repository"]);
    let data = c.dir().join("central-on-tmpfs");
    let _disk = crate::cluster::Tmpfs::mount(&data, "16m");
    server.restart(&[("--data", &[data.to_str().unwrap()])]);
    let (cert, key) = c.pki.issue("host", "h.full.test", &[]);
    let host = RawHost::with_cert(&c, &central, &cert, &key);
    // About 100 kB per report: each needs pages the disk no longer has.
    let sw = |v: u64| {
        Section::Software(
            (0..2_000).map(|i| Software { name: format!("package-{i:05}"), version: format!("{v}.{i}") }).collect(),
        )
    };
    let first = host.report("uuid-full", 1, true, vec![facts("uuid-full", "h.full.test"), sw(1)]);
    assert!(matches!(first, Ok(CentralResponse::ReportApplied { sequence: 1 })), "{first:?}");

    // Fill the disk.
    let filler = data.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![7u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
    }
    let refused = host.report("uuid-full", 2, false, vec![sw(2)]).unwrap_err();
    assert!(refused.contains("journal") && refused.contains("No space left"), "{refused}");
    let admin = Console::new(&c, &central, "Alice", "view");
    assert_eq!(status_of(&admin, "h.full.test"), Some(1), "the report answered before is there");

    // Room again: the same report applies, and the next.
    std::fs::remove_file(&filler).unwrap();
    for seq in [2, 3] {
        let applied = host.report("uuid-full", seq, false, vec![sw(seq)]);
        assert!(matches!(applied, Ok(CentralResponse::ReportApplied { sequence }) if sequence == seq), "{applied:?}");
    }
    drop(host);
    server.kill();
    server.restart(&[]);
    assert_eq!(status_of(&admin, "h.full.test"), Some(3));
    let d = admin.json(&["host", "h.full.test"]);
    assert!(d["inventory"].to_string().contains("\"3.1999\""), "the last report's software: {d}");
}

#[test]
fn a_host_without_a_token_waits_for_approval_and_a_bad_token_is_refused() {
    let c = Cluster::new();
    let (_server, central) = c.server(&["--no-repository"]);
    let admin = Console::new(&c, &central, "Alice", "view,act,modify");
    let viewer = Console::new(&c, &central, "Victor", "view");
    let (cert, key) = (c.dir().join("pc9/host.crt"), c.dir().join("pc9/host.key"));
    let host = Host::with_identity(&c, "pc9.test", &format!("server = {central:?}"), &cert, &key);
    let mut enroll = Bg(host.spawn(&["enroll", "--wait", "60s"]));
    let pending = crate::cluster::wait_for(LIMIT, "the host to wait for approval", || {
        admin.json(&["pending"]).as_array().filter(|a| !a.is_empty()).cloned()
    });
    assert_eq!(pending[0]["fqdn"], "pc9.test");
    assert!(pending[0]["reason"].as_str().unwrap().contains("no enrollment token"), "{pending:?}");
    assert!(!cert.exists(), "nothing before approval");
    viewer.run(&["host", "approve", "pc9.test"]).fails_with("modify right");
    admin.run(&["host", "approve", "pc9.test"]).ok();
    let status = crate::cluster::wait_for(LIMIT, "the enrollment to finish", || enroll.0.try_wait().unwrap());
    assert!(status.success(), "{}", std::fs::read_to_string(host.log()).unwrap_or_default());
    let chain = pki::parse_pem_certificates(&std::fs::read_to_string(&cert).unwrap()).unwrap();
    assert_eq!(chain.len(), 2, "host certificate and the enrollment CA");
    assert_eq!(pki::cert_info(&chain[0]).unwrap().role, Some(pki::Role::Host));
    assert!(admin.json(&["pending"]).as_array().unwrap().is_empty());

    let (cert2, key2) = (c.dir().join("pc10/host.crt"), c.dir().join("pc10/host.key"));
    let other = Host::with_identity(&c, "pc10.test", &format!("server = {central:?}"), &cert2, &key2);
    other.run(&["enroll", "--token", "not-a-token"]).fails_with("unknown enrollment token");
    assert!(!cert2.exists() && !key2.exists(), "nothing written");
}
