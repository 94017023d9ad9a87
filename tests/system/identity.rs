//! One certificate, one host: cloned machines (one UUID, two certificates) and a second
//! enrollment under a name already enrolled are flagged and never merged, actions reach exactly
//! the certificate they target, `agent reset-uuid` gives a clone its own identity, and
//! revocations hold for certificates that never reported and after central loses its data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use outpost_protocol::central::{CentralResponse, Section, Software};
use outpost_protocol::pki;
use serde_json::Value;

use crate::agent::{Bg, Host, hook};
use crate::central::{Console, RawHost, facts};
use crate::cluster::{Cluster, wait_for};

const LIMIT: Duration = Duration::from_secs(60);

fn fingerprint(cert: &Path) -> String {
    let chain = pki::parse_pem_certificates(&std::fs::read_to_string(cert).unwrap()).unwrap();
    pki::cert_info(&chain[0]).unwrap().fingerprint
}

/// A machine named `name` claiming `uuid`, with its own folder for its certificate and key.
fn machine(c: &Cluster, central: &str, repo: &str, name: &str, uuid: &str) -> (Host, PathBuf) {
    let cert = c.dir().join(format!("{name}-{uuid}/host.crt"));
    let key = cert.with_extension("key");
    let host = Host::with_identity(
        c,
        &format!("{name}-{uuid}"),
        &format!("repos = [{repo:?}]\nserver = {central:?}\nfqdn = {name:?}\nuuid = {uuid:?}\nupdate_every = \"2s\""),
        &cert,
        &key,
    );
    (host, cert)
}

/// `agent enroll` waiting for approval in the background; returns it once central lists it.
fn waiting(host: &Host, admin: &Console<'_>, name: &str) -> (Bg, Value) {
    let enroll = Bg(host.spawn(&["enroll", "--wait", "60s"]));
    let pending = wait_for(LIMIT, "the enrollment to wait for approval", || {
        admin.json(&["pending"]).as_array().and_then(|a| a.iter().find(|p| p["fqdn"] == name).cloned())
    });
    (enroll, pending)
}

/// Publishes a package `tool` whose hook writes to the cluster's `hooks.log`, and returns an
/// enrollment token good for five machines.
fn publish_tool(c: &Cluster, repo: &str, admin: &Console<'_>) -> String {
    let log = c.dir().join("hooks.log");
    c.publish(&c.package_with("tool", "1", "", &[("setup.sh", &hook(&log, ""))]), repo);
    admin.json(&["token", "create", "--uses", "5"])["token"].as_str().unwrap().to_string()
}

fn hosts_named(admin: &Console<'_>, name: &str) -> Vec<Value> {
    admin.hosts(&[]).into_iter().filter(|h| h["fqdn"] == name || h["uuid"] == name).collect()
}

#[test]
fn cloned_machines_are_two_hosts_flagged_and_actions_reach_exactly_the_one_targeted() {
    let c = Cluster::new();
    let (server, central) = c.server(&[]);
    let admin = Console::new(&c, &central, "Alice", "view,act,modify");
    let token = publish_tool(&c, &server.addr, &admin);
    // A disk image copied to a second machine: the same detected UUID (both agents run on this
    // machine and detect its UUID), another name.
    let (a, cert_a) = machine(&c, &central, &server.addr, "pc-a.test", "");
    a.run(&["enroll", "--token", &token]).ok();
    let image = a.status()["host"]["uuid"].as_str().unwrap().to_string();
    let (b, cert_b) = machine(&c, &central, &server.addr, "pc-b.test", "");
    // A token does not silently give the same machine a second certificate.
    let r = b.run(&["enroll", "--token", &token, "--wait", "1s"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(r.stderr.contains(&image) && r.stderr.contains("already holds a certificate"), "{}", r.stderr);
    assert!(!cert_b.exists());
    let (mut enroll, pending) = waiting(&b, &admin, "pc-b.test");
    assert!(pending["reason"].as_str().unwrap().contains(&fingerprint(&cert_a)), "{pending}");
    admin.run(&["host", "approve", "pc-b.test"]).ok();
    assert!(wait_for(LIMIT, "the approval", || enroll.0.try_wait().unwrap()).success());
    let (fp_a, fp_b) = (fingerprint(&cert_a), fingerprint(&cert_b));

    // Both report: two hosts, flagged, never merged.
    let _da = Bg(a.spawn(&["run"]));
    let _db = Bg(b.spawn(&["run"]));
    let both = wait_for(LIMIT, "both clones in the console", || {
        let h = hosts_named(&admin, &image);
        (h.len() == 2).then_some(h)
    });
    for fp in [&fp_a, &fp_b] {
        let clash = row(&both, fp).unwrap()["clash"].as_str().unwrap_or_default().to_string();
        assert!(clash.contains(&format!("UUID {image} also claimed")), "{both:?}");
    }
    wait_for(LIMIT, "the clash metric", || {
        (server.metric("outpost_central_identity_clashes", "") == 2.0).then_some(())
    });
    let text = admin.run(&["hosts"]).ok().stdout;
    assert!(text.contains("CLASH"), "{text}");

    // An action naming the shared UUID is refused; by certificate it reaches that one only.
    admin.run(&["action", "install", "tool", "--hosts", &image]).fails_with("claimed by 2 certificates");
    admin.run(&["action", "install", "tool", "--hosts", &format!("sha256:{fp_a}")]).ok();
    wait_for(LIMIT, "pc-a to install the tool", || a.package("tool").filter(|p| p["status"] == "OK"));
    let actions = admin.json(&["actions"]);
    assert_eq!(actions[0]["results"].as_array().unwrap().len(), 1, "{actions}");
    assert_eq!(actions[0]["pending"], serde_json::json!([]), "nobody else is a target: {actions}");
    assert!(b.package("tool").is_none(), "the clone did not run it: {}", b.status());

    // The clone gets its own identity: the clash is gone.
    let r = b.json(&["reset-uuid"]);
    let new = r["new"].as_str().unwrap().to_string();
    assert_ne!(new, image);
    wait_for(LIMIT, "the new UUID in the console", || {
        admin.hosts(&[]).into_iter().find(|h| h["fingerprint"] == fp_b.as_str() && h["uuid"] == new.as_str())
    });
    wait_for(LIMIT, "no clash left", || (server.metric("outpost_central_identity_clashes", "") == 0.0).then_some(()));
    assert!(hosts_named(&admin, &image).len() == 1);
}

fn row<'v>(hosts: &'v [Value], fp: &str) -> Option<&'v Value> {
    hosts.iter().find(|h| h["fingerprint"] == fp)
}

#[test]
fn a_second_enrollment_under_a_name_waits_for_an_administrator_and_never_gets_the_first_ones_actions() {
    let c = Cluster::new();
    let (server, central) = c.server(&[]);
    let admin = Console::new(&c, &central, "Alice", "view,act,modify");
    let token = publish_tool(&c, &server.addr, &admin);
    let (a, cert_a) = machine(&c, &central, &server.addr, "pc1.test", "uuid-1");
    a.run(&["enroll", "--token", &token]).ok();
    let fp_a = fingerprint(&cert_a);
    {
        let _da = Bg(a.spawn(&["run"]));
        wait_for(LIMIT, "pc1 in the console", || hosts_named(&admin, "pc1.test").first().cloned());
    }
    // An action for pc1 while it is away: it is pc1's, by certificate.
    admin.run(&["action", "install", "tool", "--hosts", "pc1.test", "--expires", "1h"]).ok();

    // Another machine enrolls under the same name with a valid token: it waits.
    let (b, cert_b) = machine(&c, &central, &server.addr, "pc1.test", "uuid-2");
    let (mut enroll, pending) = waiting(&b, &admin, "pc1.test");
    assert!(pending["reason"].as_str().unwrap().contains("pc1.test (uuid-2) already holds a certificate"), "{pending}");
    admin.run(&["host", "approve", "pc1.test"]).ok();
    assert!(wait_for(LIMIT, "the approval", || enroll.0.try_wait().unwrap()).success());
    let fp_b = fingerprint(&cert_b);
    let _db = Bg(b.spawn(&["run"]));
    let two = wait_for(LIMIT, "two hosts named pc1.test", || {
        let h = hosts_named(&admin, "pc1.test");
        (h.len() == 2 && h.iter().all(|x| x["status"] != "UNKNOWN")).then_some(h)
    });
    assert!(row(&two, &fp_b).unwrap()["clash"].as_str().unwrap().contains("name pc1.test"), "{two:?}");
    // The newcomer never gets pc1's queued action.
    assert!(b.package("tool").is_none(), "{}", b.status());
    let actions = admin.json(&["actions"]);
    assert_eq!(actions[0]["pending"].as_array().unwrap().len(), 1, "only pc1 (the first) is waited for: {actions}");
    // Which one to revoke is the administrator's to say.
    admin.run(&["host", "revoke", "pc1.test"]).fails_with("claimed by 2 certificates");
    let detail = admin.run(&["host", "pc1.test"]);
    assert!(detail.stderr.contains("claimed by 2 certificates"), "{}", detail.stderr);
    admin.run(&["host", &format!("sha256:{fp_b}")]).ok();

    // A third machine under the name, approved replacing the others: they are revoked.
    let (c3, cert_c) = machine(&c, &central, &server.addr, "pc1.test", "uuid-3");
    let (mut enroll, _) = waiting(&c3, &admin, "pc1.test");
    let done = admin.run(&["host", "approve", "pc1.test", "--replace"]).ok();
    assert!(done.stdout.contains("revoked 2 older certificate(s)"), "{}", done.stdout);
    assert!(wait_for(LIMIT, "the approval", || enroll.0.try_wait().unwrap()).success());
    b.run(&["update"]).fails_with("revoked");
    let revoked: Vec<Value> = admin.hosts(&[]).into_iter().filter(|h| h["revoked"] == true).collect();
    assert_eq!(revoked.len(), 2, "{revoked:?}");
    assert!(revoked.iter().any(|h| h["fingerprint"] == fp_a.as_str()));
    let _ = fingerprint(&cert_c);
}

#[test]
fn revocations_hold_for_certificates_never_seen_and_survive_central_losing_its_data() {
    let c = Cluster::new();
    let (mut server, central) = c.server(&[]);
    let admin = Console::new(&c, &central, "Alice", "view,act,modify");
    let token = admin.json(&["token", "create", "--uses", "5"])["token"].as_str().unwrap().to_string();
    // Enrolled, never reported.
    let (quiet, _) = machine(&c, &central, &server.addr, "quiet.test", "uuid-quiet");
    quiet.run(&["enroll", "--token", &token]).ok();
    admin.run(&["host", "quiet.test"]).fails_with("enrolled but has not reported yet");
    let r = admin.run(&["host", "revoke", "quiet.test"]).ok();
    assert!(r.stdout.contains("revoked the certificate sha256:"), "{}", r.stdout);
    quiet.run(&["update"]).fails_with("revoked");
    // Issued by hand and never seen by central: revoked by fingerprint.
    let (cert, key) = c.pki.issue("host", "byhand.test", &[]);
    let r = admin.run(&["host", "revoke", &format!("sha256:{}", fingerprint(&cert))]).ok();
    assert!(r.stdout.contains("central has never seen it"), "{}", r.stdout);

    // Central loses its data: the revocations come back from the main repository's snapshot.
    server.stop();
    server.wipe_central();
    server.restart(&[]);
    let raw = RawHost::with_cert(&c, &central, &cert, &key);
    let sw = Section::Software(vec![Software { name: "x".into(), version: "1".into() }]);
    let e = raw.report("byhand.test", 1, true, vec![facts("uuid-h", "byhand.test"), sw]);
    assert!(!matches!(e, Ok(CentralResponse::ReportApplied { .. })), "a revoked host reported: {e:?}");
    let _ = key;
    assert!(admin.hosts(&[]).is_empty(), "{:?}", admin.hosts(&[]));
    wait_for(LIMIT, "the server's metrics", || server.scrape_opt());
    assert!(server.metric("outpost_central_report_rejections_total", "{reason=\"revoked\"}") >= 1.0);
}
