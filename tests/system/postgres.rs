//! Central on PostgreSQL: a real server started by the tests (`pg.rs`), a real `outpost server
//! --database`, hosts reporting over QUIC; the state read back after a restart, the reporting
//! views read by an operator's role with psql, the console's reports, saved queries and their
//! limits, the database's metrics, and the refusals (a newer schema, a password on the command line, no database).

use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(60);

use outpost_protocol::central::{PackageReport, Program, Section};
use outpost_protocol::resolver::{HostStatus, PackageStatus};
use serde_json::{Value, json};

use crate::central::{Console, RawHost, facts};
use crate::cluster::{CENTRAL_BACKEND_ENV, Cluster, wait_for};
use crate::common::run_in;

fn program(name: &str, version: &str) -> Program {
    Program {
        name: name.into(),
        version: version.into(),
        publisher: "Vendor".into(),
        source: "machine-64".into(),
        ..Program::default()
    }
}

fn packages(host_status: HostStatus, list: &[(&str, PackageStatus)]) -> Section {
    Section::PackagesV2 {
        host_status,
        packages: list
            .iter()
            .map(|(name, status)| PackageReport {
                name: (*name).into(),
                status: *status,
                installed: Some("1".into()),
                target: Some("1".into()),
                state: None,
                reason: None,
                cause: None,
                output: None,
            })
            .collect(),
    }
}

fn placed(uuid: &str, fqdn: &str, site: &str) -> Section {
    let Section::Host(mut h) = facts(uuid, fqdn) else { unreachable!() };
    h.site = site.into();
    Section::Host(h)
}

fn lines(out: &str) -> Vec<&str> {
    out.lines().filter(|l| !l.is_empty()).collect()
}

#[test]
fn central_on_postgres_keeps_the_fleet_serves_sql_reports_and_refuses_a_newer_schema() {
    let Some(pg) = crate::pg::server_or_skip("central_on_postgres") else { return };
    let db = pg.create_db();
    let url = pg.url(&db);
    let c = Cluster::new();
    let (mut server, central) = c.server(&["--no-repository", "--database", &url]);
    let admin = Console::new(&c, &central, "Alice", "view,act,modify");
    let viewer = Console::new(&c, &central, "Victor", "view");

    // Three hosts report over QUIC, signed with their certificates.
    let h1 = RawHost::new(&c, &central, "h1.test");
    let h2 = RawHost::new(&c, &central, "h2.test");
    let h3 = RawHost::new(&c, &central, "h3.test");
    let ok = |r: Result<_, String>| {
        assert!(matches!(r, Ok(outpost_protocol::central::CentralResponse::ReportApplied { .. })), "{r:?}");
    };
    ok(h1.report(
        "uuid-h1",
        1,
        true,
        vec![
            placed("uuid-h1", "h1.test", "paris"),
            Section::Programs(vec![program("7-Zip", "23.01"), program("Firefox", "120.0")]),
            packages(HostStatus::Ok, &[("tool", PackageStatus::Ok)]),
        ],
    ));
    ok(h2.report(
        "uuid-h2",
        1,
        true,
        vec![
            placed("uuid-h2", "h2.test", "paris"),
            Section::Programs(vec![program("Firefox", "120.0")]),
            packages(HostStatus::Error, &[("tool", PackageStatus::Error)]),
        ],
    ));
    ok(h3.report(
        "uuid-h3",
        1,
        true,
        vec![
            placed("uuid-h3", "h3.test", "lyon"),
            Section::Programs(vec![program("7-Zip", "22.00")]),
            packages(HostStatus::NeedUpgrade, &[("extra", PackageStatus::NeedInstall)]),
        ],
    ));
    assert_eq!(admin.hosts(&[]).len(), 3);
    assert_eq!(admin.hosts(&["--software", "7-Zip"]).len(), 2);

    // An operator reads the reporting views through the read-only role, and nothing else.
    let bi = format!("bi_{db}");
    pg.psql_ok(&db, &format!("CREATE ROLE {bi} LOGIN IN ROLE outpost_reporting"));
    let read = |sql: &str| {
        let out = pg.psql_as(&bi, &db, sql);
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(
        lines(&read("SELECT fqdn, site, status, revoked FROM reporting.hosts ORDER BY fqdn")),
        ["h1.test|paris|OK|f", "h2.test|paris|ERROR|f", "h3.test|lyon|NEED-UPGRADE|f"]
    );
    assert_eq!(
        lines(&read("SELECT name, version, count(*) FROM reporting.software GROUP BY 1, 2 ORDER BY 1, 2")),
        ["7-Zip|22.00|1", "7-Zip|23.01|1", "Firefox|120.0|2"]
    );
    assert_eq!(
        lines(&read("SELECT fqdn, package, status FROM reporting.host_packages ORDER BY fqdn")),
        ["h1.test|tool|OK", "h2.test|tool|ERROR", "h3.test|extra|NEED-INSTALL"]
    );
    read("SELECT * FROM reporting.hardware");
    read("SELECT * FROM reporting.actions");
    let denied = pg.psql_as(&bi, &db, "SELECT * FROM outpost.tokens");
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("permission denied"), "{denied:?}");
    let denied = pg.psql_as(&bi, &db, "DELETE FROM reporting.hosts");
    assert!(!denied.status.success(), "the reporting role cannot change anything");

    // The console's built-in reports.
    let list = admin.json(&["report", "list"]);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    for n in ["errors-by-site", "software-versions", "not-seen", "pending-by-site"] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    assert_eq!(admin.json(&["report", "errors-by-site"]), json!([{"site": "paris", "in_error": "1", "hosts": "2"}]));
    let csv = admin.run(&["report", "software-versions", "--param", "name=7-zip", "--csv"]).ok().stdout;
    assert_eq!(csv.trim_end(), "name,version,hosts\r\n7-Zip,22.00,1\r\n7-Zip,23.01,1");
    assert_eq!(
        admin.json(&["report", "pending-by-site"]),
        json!([{"site": "lyon", "package": "extra", "status": "NEED-INSTALL", "hosts": "1"}])
    );
    // A host moves to another site in a delta that does not list its packages again: what waits
    // there is counted at its new site.
    ok(h3.report("uuid-h3", 2, false, vec![placed("uuid-h3", "h3.test", "grenoble")]));
    assert_eq!(
        admin.json(&["report", "pending-by-site"]),
        json!([{"site": "grenoble", "package": "extra", "status": "NEED-INSTALL", "hosts": "1"}])
    );
    assert_eq!(
        lines(&read("SELECT fqdn, site, package FROM reporting.host_packages WHERE fqdn = 'h3.test'")),
        ["h3.test|grenoble|extra"]
    );
    assert_eq!(admin.json(&["report", "not-seen", "--param", "days=7"]), json!([]));
    pg.psql_ok(&db, "UPDATE outpost.hosts SET last_seen = last_seen - 10 * 86400 WHERE fqdn = 'h3.test'");
    let stale = admin.json(&["report", "not-seen", "--param", "days=7"]);
    assert_eq!(stale.as_array().unwrap().iter().map(|r| r["fqdn"].clone()).collect::<Vec<_>>(), [json!("h3.test")]);
    let table = viewer.run(&["report", "errors-by-site"]).ok().stdout;
    assert!(table.contains("SITE") && table.contains("paris"), "{table}");
    viewer.run(&["report", "not-seen", "--param", "weeks=2"]).fails_with("no parameter \"weeks\"");
    viewer.run(&["report", "no-such-report"]).fails_with("no report named");

    // Saved queries: by admins with the modify right, read-only, over the reporting views only.
    let sites = "SELECT site, count(*) AS hosts FROM reporting.hosts GROUP BY site ORDER BY site";
    viewer.run(&["report", "save", "sites", "--sql", sites]).fails_with("modify right");
    admin.run(&["report", "save", "sites", "--sql", sites, "--description", "hosts per site"]).ok();
    assert_eq!(
        admin.json(&["report", "sites"]),
        json!([{"site": "grenoble", "hosts": "1"}, {"site": "paris", "hosts": "2"}])
    );
    let list = viewer.json(&["report", "list"]);
    let saved = list.as_array().unwrap().iter().find(|r| r["name"] == "sites").cloned().unwrap_or(Value::Null);
    assert_eq!((saved["builtin"].clone(), saved["author"].clone()), (json!(false), json!("Alice")), "{list}");
    admin.run(&["report", "save", "tokens", "--sql", "SELECT * FROM outpost.tokens"]).fails_with("permission denied");
    admin.run(&["report", "save", "wipe", "--sql", "DELETE FROM reporting.hosts"]).fails_with("not saved");
    admin.run(&["report", "save", "two", "--sql", "SELECT 1; SELECT 2"]).fails_with("not saved");
    admin.run(&["report", "save", "errors-by-site", "--sql", sites]).fails_with("built-in");
    admin.run(&["report", "delete", "sites"]).ok();
    viewer.run(&["report", "sites"]).fails_with("no report named");
    assert_eq!(pg.psql_ok(&db, "SELECT count(*) FROM outpost.hosts"), "3", "nothing changed by a refused query");

    // The database's metrics: commits and reports timed, the pool's connections counted.
    assert!(server.metric("outpost_central_db_operation_seconds_count", "{kind=\"write\"}") >= 3.0);
    assert!(server.metric("outpost_central_db_operation_seconds_count", "{kind=\"report\"}") >= 5.0);
    assert!(server.metric("outpost_central_db_errors_total", "{kind=\"report\"}") >= 2.0, "the refused reports");
    assert_eq!(server.metric("outpost_central_db_pool_max_connections", ""), 16.0);
    wait_for(Duration::from_secs(30), "the pool's connections in the metrics", || {
        let open = server.metric("outpost_central_db_connections", "{state=\"idle\"}")
            + server.metric("outpost_central_db_connections", "{state=\"in_use\"}");
        (open >= 1.0).then_some(())
    });
    assert_eq!(server.metric("outpost_central_db_replica_lag_seconds", ""), 0.0);

    // A restart: the fleet comes from the database, and sequences go on from where they were.
    server.kill();
    server.restart(&[]);
    assert_eq!(admin.hosts(&[]).len(), 3, "the fleet is loaded from PostgreSQL");
    let cert = c.pki.path().join("pki/h1.test.crt");
    let h1 = RawHost::with_cert(&c, &central, &cert, &cert.with_extension("key"));
    ok(h1.report("uuid-h1", 2, false, vec![Section::Programs(vec![program("7-Zip", "24.08")])]));
    assert_eq!(lines(&read("SELECT version FROM reporting.software WHERE fqdn = 'h1.test'")), ["24.08"]);
    let replay = h1.report("uuid-h1", 2, false, vec![Section::Programs(vec![])]).unwrap_err();
    assert!(replay.contains("not newer"), "{replay}");

    // Clashes are looked for where a UUID or a name was claimed twice. A host taking another's
    // UUID in a delta (no host facts) is noted: both are flagged in the listing.
    let clash_of = |fqdn: &str| {
        let hosts = admin.hosts(&[]);
        let row = hosts.iter().find(|h| h["fqdn"] == fqdn).unwrap_or_else(|| panic!("{fqdn} in {hosts:?}"));
        row["clash"].as_str().unwrap_or_default().to_string()
    };
    assert_eq!(clash_of("h2.test"), "");
    let cert = c.pki.path().join("pki/h3.test.crt");
    let h3 = RawHost::with_cert(&c, &central, &cert, &cert.with_extension("key"));
    ok(h3.report("uuid-h2", 3, false, vec![Section::Programs(vec![program("7-Zip", "22.00")])]));
    assert!(clash_of("h2.test").contains("UUID uuid-h2 also claimed"), "{}", clash_of("h2.test"));
    assert!(clash_of("h3.test").contains("UUID uuid-h2 also claimed"), "{}", clash_of("h3.test"));
    // Its package rows (not listed again) follow it to its new UUID: the console's order by
    // package reads it from them.
    assert_eq!(pg.psql_ok(&db, "SELECT uuid FROM outpost.host_packages WHERE fqdn = 'h3.test'"), "uuid-h2");
    // A database from before the claims were kept (schema 3) with a clash in it: migration 4
    // finds it.
    server.kill();
    pg.psql_ok(
        &db,
        "UPDATE outpost.hosts SET uuid = 'uuid-h3' WHERE fqdn = 'h3.test';
         UPDATE outpost.hosts SET fqdn = 'H1.test' WHERE fqdn = 'h2.test';
         DROP TABLE outpost.claimed_twice;
         DELETE FROM outpost.schema_migrations WHERE version = 4",
    );
    server.restart(&[]);
    assert!(clash_of("H1.test").contains("name H1.test also claimed"), "{}", clash_of("H1.test"));
    assert!(clash_of("h1.test").contains("name h1.test also claimed"), "{}", clash_of("h1.test"));
    assert_eq!(clash_of("h3.test"), "", "the UUID clash ended");

    // A schema newer than this binary knows is refused, and nothing is changed.
    server.kill();
    pg.psql_ok(&db, "INSERT INTO outpost.schema_migrations (version, name) VALUES (99, 'from the future')");
    server.run_foreground().fails_with("schema is version 99, newer than this outpost understands");
    assert_eq!(pg.psql_ok(&db, "SELECT count(*) FROM outpost.hosts"), "3");
}

#[test]
fn the_database_password_never_goes_on_the_command_line_and_a_missing_database_is_named() {
    let c = Cluster::new();
    let base = |db: &str| -> Vec<String> {
        let mut a: Vec<String> =
            ["server", "--no-repository", "--central-listen", "127.0.0.1:0", "--metrics", "", "--database", db]
                .iter()
                .map(|s| s.to_string())
                .collect();
        a.extend(["--data".into(), c.dir().join("data").to_string_lossy().into_owned()]);
        a
    };
    let args = base("postgres://outpost:secret@db.example/outpost");
    let r = run_in(c.dir(), &args.iter().map(String::as_str).collect::<Vec<_>>());
    let r = r.fails_with("process list");
    assert!(r.stderr.contains("--database-password-file"), "{}", r.stderr);
    let args = base("host=/nonexistent-socket-folder dbname=outpost user=outpost");
    let (cert, key) = c.pki.issue("server", "central.test", &[]);
    let mut args = args;
    args.extend([
        "--ca".into(),
        c.pki.ca().to_string_lossy().into_owned(),
        "--cert".into(),
        cert.to_string_lossy().into_owned(),
        "--key".into(),
        key.to_string_lossy().into_owned(),
    ]);
    run_in(c.dir(), &args.iter().map(String::as_str).collect::<Vec<_>>()).fails_with("connecting to PostgreSQL");
}

#[test]
fn reports_on_a_redb_central_say_they_need_postgresql() {
    if std::env::var(CENTRAL_BACKEND_ENV).is_ok() {
        eprintln!("skipped: this central runs on PostgreSQL here ({CENTRAL_BACKEND_ENV})");
        return;
    }
    let c = Cluster::new();
    let (_server, central) = c.server(&["--no-repository"]);
    let admin = Console::new(&c, &central, "Alice", "view,modify");
    admin.run(&["report", "list"]).fails_with("need central on PostgreSQL");
}

/// One simulated host under load: reports to one instance until it dies, then to the other.
struct Loader {
    name: String,
    acked: u64,
    /// The report sent without an answer when the instance died: (sequence, its content).
    unanswered: Option<u64>,
    /// What the other instance answered to it.
    resent: Option<Result<(), String>>,
}

fn version_of(seq: u64, round: &str) -> Section {
    Section::Programs(vec![program("counter", &format!("{seq}-{round}"))])
}

#[test]
fn two_central_instances_share_the_fleet_fail_over_when_one_is_killed_and_lose_nothing() {
    let Some(pg) = crate::pg::server_or_skip("two_central_instances") else { return };
    let db = pg.create_db();
    let url = pg.url(&db);
    let c = Cluster::new();
    let (repo, _) = c.server(&["--no-central"]);
    let (mut a, central_a) = c.server(&["--no-repository", "--database", &url]);
    let (b, central_b) = c.server(&["--no-repository", "--database", &url]);
    let admin_a = Console::new(&c, &central_a, "Alice", "view,act,modify");
    let admin_b = Console::new(&c, &central_b, "Bob", "view,act,modify");
    let log = c.dir().join("hooks.log");
    let setup = crate::agent::hook(&log, "");
    c.publish(&c.package_with("extra", "1", "", &[("setup.sh", &setup)]), &repo.addr);

    // A real agent, given both instances (the first preferred), enrolls with a token made on B.
    let token = admin_b.json(&["token", "create"])["token"].as_str().unwrap().to_string();
    let name = "pc1.site.test";
    let (cert, key) = (c.dir().join("pc1/host.crt"), c.dir().join("pc1/host.key"));
    let host = crate::agent::Host::with_identity(
        &c,
        name,
        &format!("repos = [{:?}]\nserver = [{central_a:?}, {central_b:?}]\nsite = \"paris\"", repo.addr),
        &cert,
        &key,
    );
    host.run(&["enroll", "--token", &token]).ok();
    let _daemon = crate::agent::Bg(host.spawn(&["run"]));
    // It reports to A; B knows it through the database.
    wait_for(LIMIT, "the host in B's console", || {
        admin_b.hosts(&[]).into_iter().find(|h| h["fqdn"] == name && h["status"] == "OK")
    });
    wait_for(LIMIT, "the agent connected to A", || {
        (a.metric("outpost_central_connected_agents", "") == 1.0).then_some(())
    });
    // B shows it online (A holds its connection): instances tell each other their connections.
    wait_for(LIMIT, "the host online in B's console", || {
        admin_b.hosts(&[]).into_iter().find(|h| h["fqdn"] == name && h["online"] == true)
    });
    assert_eq!(b.metric("outpost_central_connected_agents", ""), 0.0, "connected to A only");
    // An action sent through B reaches the agent connected to A, once; both see its result.
    admin_b.run(&["action", "install", "extra", "--hosts", name]).ok();
    wait_for(LIMIT, "the action's result on A", || {
        let list = admin_a.json(&["actions"]);
        list.as_array().unwrap().iter().find(|a| a["results"].as_array().is_some_and(|r| !r.is_empty())).cloned()
    });
    assert_eq!(crate::agent::log_lines(&log), ["install extra 1"]);

    // Load: hosts report to A as fast as A answers; A is killed (SIGKILL) in the middle.
    let loaders: Vec<_> = (0..8)
        .map(|i| {
            let name = format!("load{i}.test");
            let raw = RawHost::new(&c, &central_a, &name);
            let uuid = format!("uuid-{name}");
            (raw, Loader { name, acked: 0, unanswered: None, resent: None }, uuid)
        })
        .collect();
    let total = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let threads: Vec<_> = loaders
        .into_iter()
        .map(|(raw, mut l, uuid)| {
            let total = total.clone();
            std::thread::spawn(move || {
                let first = raw.report(&uuid, 1, true, vec![placed(&uuid, &l.name, "load"), version_of(1, "a")]);
                assert!(first.is_ok(), "{first:?}");
                l.acked = 1;
                loop {
                    let seq = l.acked + 1;
                    match raw.report(&uuid, seq, false, vec![version_of(seq, "a")]) {
                        Ok(_) => {
                            l.acked = seq;
                            total.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(_) => {
                            l.unanswered = Some(seq);
                            return l;
                        }
                    }
                }
            })
        })
        .collect();
    wait_for(LIMIT, "reports flowing into A", || {
        (total.load(std::sync::atomic::Ordering::Relaxed) >= 300).then_some(())
    });
    a.kill();
    let mut loaders: Vec<Loader> = threads.into_iter().map(|t| t.join().unwrap()).collect();

    // Each host resends its unanswered report, changed, to B: B stores it only if A had not.
    for l in &mut loaders {
        let cert = c.pki.path().join(format!("pki/{}.crt", l.name));
        let raw = RawHost::with_cert(&c, &central_b, &cert, &cert.with_extension("key"));
        let seq = l.unanswered.expect("A died under it");
        let uuid = format!("uuid-{}", l.name);
        l.resent = Some(raw.report(&uuid, seq, false, vec![version_of(seq, "b")]).map(|_| ()));
    }
    for l in &loaders {
        let stored = pg.psql_ok(
            &db,
            &format!(
                "SELECT h.sequence || ' ' || s.version FROM outpost.hosts h JOIN outpost.host_software s USING \
                 (fingerprint) WHERE h.fqdn = '{}'",
                l.name
            ),
        );
        let seq = l.unanswered.unwrap();
        match &l.resent {
            // B stored the resent report: it is what the database holds.
            Some(Ok(())) => assert_eq!(stored, format!("{seq} {seq}-b"), "{}", l.name),
            // B refused it: A had stored that sequence before dying (so nothing is applied twice),
            // and what A stored is there; the agent goes on above it with a full report.
            Some(Err(e)) => {
                assert!(e.contains("already stored") || e.contains("not newer"), "{}: {e}", l.name);
                assert_eq!(stored, format!("{seq} {seq}-a"), "{}", l.name);
            }
            None => unreachable!(),
        }
        assert!(l.acked < seq);
    }

    // The real agent fails over to B by itself, and B delivers a new action to it once.
    wait_for(LIMIT, "the agent connected to B", || {
        (b.metric("outpost_central_connected_agents", "") == 1.0).then_some(())
    });
    admin_b.run(&["action", "remove", "extra", "--hosts", name]).ok();
    wait_for(LIMIT, "extra removed through B", || {
        crate::agent::log_lines(&log).contains(&"uninstall extra 1".to_string()).then_some(())
    });
    assert_eq!(crate::agent::log_lines(&log), ["install extra 1", "uninstall extra 1"], "each action once");
    // Both results stored (the agent sends each after the uninstall it logs).
    wait_for(LIMIT, "both results stored", || {
        (pg.psql_ok(&db, "SELECT count(*) FROM outpost.action_results") == "2").then_some(())
    });
}

/// A token's last use, spent through two instances at the same instant, gives one certificate:
/// the use is taken in the database, not in either instance's memory.
#[test]
fn a_token_is_spent_once_across_two_instances() {
    let Some(pg) = crate::pg::server_or_skip("a token spent through two instances") else { return };
    let db = pg.create_db();
    let url = pg.url(&db);
    let c = Cluster::new();
    let (_a, central_a) = c.server(&["--no-repository", "--database", &url]);
    let (_b, central_b) = c.server(&["--no-repository", "--database", &url]);
    let admin = Console::new(&c, &central_a, "Alice", "view,act,modify");
    let rounds = 4;
    for round in 0..rounds {
        let token = admin.json(&["token", "create", "--uses", "1"])["token"].as_str().unwrap().to_string();
        let hosts: Vec<(crate::agent::Host, std::path::PathBuf)> = [&central_a, &central_b]
            .iter()
            .enumerate()
            .map(|(i, central)| {
                let name = format!("race{round}-{i}.test");
                let (cert, key) = (c.dir().join(format!("{name}/host.crt")), c.dir().join(format!("{name}/host.key")));
                (crate::agent::Host::with_identity(&c, &name, &format!("server = {central:?}"), &cert, &key), cert)
            })
            .collect();
        let children: Vec<crate::agent::Bg> = hosts
            .iter()
            .map(|(h, _)| crate::agent::Bg(h.spawn(&["enroll", "--token", &token, "--wait", "1s"])))
            .collect();
        let mut ok = 0;
        for mut child in children {
            let status = wait_for(LIMIT, "an enrollment to end", || child.0.try_wait().unwrap());
            ok += usize::from(status.success());
        }
        let certs = hosts.iter().filter(|(_, cert)| cert.exists()).count();
        assert_eq!((ok, certs), (1, 1), "round {round}: one enrollment, one certificate");
    }
    assert_eq!(pg.psql_ok(&db, "SELECT count(*) FROM outpost.enrolled"), rounds.to_string());
    assert_eq!(pg.psql_ok(&db, "SELECT count(*) FROM outpost.tokens WHERE uses > 0"), "0");
}

#[test]
fn the_console_and_reports_read_a_streaming_replica_and_its_lag_shows() {
    let Some(pg) = crate::pg::server_or_skip("a replica serving the console and reports") else { return };
    let db = pg.create_db();
    let replica = pg.replica("replica").unwrap();
    let c = Cluster::new();
    let (server, central) =
        c.server(&["--no-repository", "--database", &pg.url(&db), "--database-read", &replica.url(&db)]);
    let admin = Console::new(&c, &central, "Alice", "view,modify");
    let sites = "SELECT site, count(*) AS hosts FROM reporting.hosts GROUP BY site ORDER BY site";
    admin.run(&["report", "save", "sites", "--sql", sites]).ok();
    let h1 = RawHost::new(&c, &central, "r1.test");
    h1.report("uuid-r1", 1, true, vec![placed("uuid-r1", "r1.test", "paris")]).unwrap();
    wait_for(LIMIT, "the first host in the report (from the replica)", || {
        (admin.json(&["report", "sites"]) == json!([{"site": "paris", "hosts": "1"}])).then_some(())
    });
    wait_for(LIMIT, "the first host in the console (from the replica)", || (admin.hosts(&[]).len() == 1).then_some(()));
    // The replica stops replaying: the host reported next is stored (on the primary) but neither
    // the console nor the report sees it, and the lag grows.
    replica.psql_ok(&db, "SELECT pg_wal_replay_pause()");
    let h2 = RawHost::new(&c, &central, "r2.test");
    h2.report("uuid-r2", 1, true, vec![placed("uuid-r2", "r2.test", "lyon")]).unwrap();
    assert_eq!(pg.psql_ok(&db, "SELECT count(*) FROM outpost.hosts"), "2", "on the primary");
    assert_eq!(admin.hosts(&[]).len(), 1, "the console reads the replica");
    admin.run(&["host", "r2.test"]).fails_with("no host r2.test");
    assert_eq!(admin.json(&["report", "sites"]), json!([{"site": "paris", "hosts": "1"}]), "read on the replica");
    wait_for(LIMIT, "the replica's lag in the metrics", || {
        (server.metric("outpost_central_db_replica_lag_seconds", "") > 0.0).then_some(())
    });
    replica.psql_ok(&db, "SELECT pg_wal_replay_resume()");
    wait_for(LIMIT, "the replica to catch up", || {
        (admin.json(&["report", "sites"]) == json!([{"site": "lyon", "hosts": "1"}, {"site": "paris", "hosts": "1"}]))
            .then_some(())
    });
    assert_eq!(admin.hosts(&[]).len(), 2, "the console too");
    assert_eq!(admin.json(&["host", "r2.test"])["summary"]["site"], "lyon");
    wait_for(LIMIT, "the lag back to 0", || {
        (server.metric("outpost_central_db_replica_lag_seconds", "") == 0.0).then_some(())
    });
}

#[test]
fn central_rides_out_a_database_restart() {
    let Some(_) = crate::pg::server_or_skip("a restarted database") else { return };
    // A server of its own: restarting it must not disturb the other tests.
    let pg = crate::pg::start_named("restarted").unwrap();
    let db = pg.create_db();
    let c = Cluster::new();
    let (a, central_a) = c.server(&["--no-repository", "--database", &pg.url(&db)]);
    let (_b, central_b) = c.server(&["--no-repository", "--database", &pg.url(&db)]);
    let admin = Console::new(&c, &central_a, "Alice", "view,modify");
    let admin_b = Console::new(&c, &central_b, "Bob", "view");
    let h = RawHost::new(&c, &central_a, "d1.test");
    h.report("uuid-d1", 1, true, vec![placed("uuid-d1", "d1.test", "paris")]).unwrap();
    pg.restart();
    // Writes go on once the pool has new connections (a report refused meanwhile says why).
    let mut seq = 2;
    wait_for(LIMIT, "a report stored after the restart", || match h.report("uuid-d1", seq, false, vec![]) {
        Ok(_) => Some(()),
        Err(e) => {
            assert!(e.contains("PostgreSQL") || e.contains("database") || e.contains("not newer"), "{e}");
            seq += 1;
            None
        }
    });
    assert_eq!(pg.psql_ok(&db, "SELECT sequence FROM outpost.hosts"), seq.to_string());
    admin.run(&["report", "errors-by-site"]).ok();
    // The change feed between the instances comes back too: B sees a host that reports to A.
    let h2 = RawHost::new(&c, &central_a, "d2.test");
    h2.report("uuid-d2", 1, true, vec![placed("uuid-d2", "d2.test", "lyon")]).unwrap();
    wait_for(LIMIT, "B to learn of the new host", || {
        admin_b.hosts(&[]).iter().any(|x| x["fqdn"] == "d2.test").then_some(())
    });
    assert!(a.metric("outpost_central_db_errors_total", "{kind=\"write\"}") >= 0.0);
}

/// Summaries made comparable between two centrals: when each stored a report is its own clock's.
fn comparable(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for key in ["last_seen", "at", "generation"] {
                    if m.contains_key(key) {
                        m.insert(key.into(), json!(0));
                    }
                }
                m.values_mut().for_each(walk);
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// The console answers the same from PostgreSQL (SQL) as from redb (the fleet in memory): the
/// same hosts for each filter, in the same order, cut at the same places, with the same clash
/// flags, the same dashboard, package summary and host pages.
#[test]
fn the_console_answers_the_same_on_postgresql_as_on_redb() {
    use outpost_protocol::central::{
        CentralRequest, HostFilter, HostPageQuery, HostPageQueryV2, HostQuery, HostSort, Program,
    };
    let Some(pg) = crate::pg::server_or_skip("the console on two backends") else { return };
    let db = pg.create_db();
    let c = Cluster::new();
    let (_redb, central_r) = c.server(&["--no-repository"]);
    let (_pg, central_p) = c.server(&["--no-repository", "--database", &pg.url(&db)]);
    // The same hosts (the same certificates) report to both.
    let sites = ["paris", "lyon", "Nice"];
    let statuses = [(HostStatus::Ok, PackageStatus::Ok), (HostStatus::Error, PackageStatus::Error)];
    let mut hosts: Vec<(String, String, std::path::PathBuf, std::path::PathBuf)> = (0..14)
        .map(|k| {
            let name = format!("pc-{k:02}.test");
            let (cert, key) = c.pki.issue("host", &name, &[]);
            (format!("uuid-{k:02}"), name, cert, key)
        })
        .collect();
    // A second certificate for one name (a clone): a clash.
    let twin = c.dir().join("twin");
    let (cert, key) = c.pki.issue("host", "pc-03.test", &["--out", twin.to_str().unwrap()]);
    hosts.push(("uuid-twin".into(), "pc-03.test".into(), cert, key));
    for central in [&central_r, &central_p] {
        for (k, (uuid, name, cert, key)) in hosts.iter().enumerate() {
            let mut h = match placed(uuid, name, sites[k % 3]) {
                Section::Host(h) => h,
                _ => unreachable!(),
            };
            h.ou = format!("OU=Room {},OU=Site{},DC=ex", k % 2, k % 3);
            let mut software = vec![program("vim", "9")];
            if k % 3 == 0 {
                // The same name twice (two architectures): the host is listed once.
                software.push(program("VIM", "8.2"));
            }
            if k % 2 == 0 {
                software.push(program("7-Zip", "23.01"));
            }
            if k % 4 == 1 {
                software.push(Program { name: "Firefox".into(), ..program("Firefox", "120") });
            }
            let (host_status, status) = statuses[k % 2];
            let mut list = vec![("tool", status)];
            if k % 5 == 0 {
                list.push(("extra", PackageStatus::NeedInstall));
            }
            let sections = vec![Section::Host(h), Section::Programs(software), packages(host_status, &list)];
            let raw = RawHost::with_cert(&c, central, cert, key);
            assert!(raw.report(uuid, 1, true, sections).is_ok(), "{name}");
        }
    }
    let (cert, key) = c.pki.issue("admin", "Alice", &["--rights", "view"]);
    let ask = |request: &CentralRequest| {
        let answers: Vec<Value> = [&central_r, &central_p]
            .iter()
            .map(|central| {
                let admin = RawHost::with_cert(&c, central, &cert, &key);
                let answer = match admin.send(request) {
                    Ok(r) => serde_json::to_value(r).unwrap(),
                    Err(outpost_actors::central::client::CentralClientError::Remote { code, message, .. }) => {
                        json!({ "error": format!("{code:?}"), "message": message })
                    }
                    Err(e) => panic!("{request:?}: {e}"),
                };
                comparable(answer)
            })
            .collect();
        assert_eq!(answers[0], answers[1], "{request:?}: redb, then PostgreSQL");
        answers.into_iter().next().unwrap()
    };
    let all = ask(&CentralRequest::Hosts(HostQuery::default()));
    assert_eq!(all["Hosts"]["total"], 15, "{all}");
    let clash = ask(&CentralRequest::Hosts(HostQuery { software: Some("VIM".into()), ..HostQuery::default() }));
    let pc03: Vec<&Value> =
        clash["Hosts"]["hosts"].as_array().unwrap().iter().filter(|h| h["fqdn"] == "pc-03.test").collect();
    assert_eq!(pc03.len(), 2);
    assert!(pc03.iter().all(|h| h["clash"].as_str().is_some_and(|c| c.contains("name pc-03.test"))), "{pc03:?}");
    for q in [
        HostQuery { software: Some("7-zip".into()), status: Some("error".into()), ..HostQuery::default() },
        HostQuery { site: Some("NICE".into()), ..HostQuery::default() },
        HostQuery { package: Some("EXTRA".into()), limit: 2, ..HostQuery::default() },
        HostQuery { ou: Some("site1".into()), ..HostQuery::default() },
        HostQuery { ou: Some("OU=Site2,DC=ex".into()), ..HostQuery::default() },
        HostQuery { status: Some("bogus".into()), ..HostQuery::default() },
    ] {
        ask(&CentralRequest::Hosts(q));
    }
    for (line, sort, descending, offset, limit) in [
        ("", HostSort::Name, false, 0, 5),
        ("", HostSort::Name, true, 3, 4),
        ("", HostSort::Status, true, 0, 0),
        ("", HostSort::Site, false, 4, 6),
        ("", HostSort::Ou, true, 0, 0),
        ("", HostSort::Packages, true, 2, 5),
        ("sw:7-zip", HostSort::Site, true, 1, 3),
        ("status:error site:paris", HostSort::Name, false, 0, 0),
        ("name:pc-1*", HostSort::Name, false, 0, 0),
        ("pc-0", HostSort::Name, false, 0, 0),
        ("pkg:tool", HostSort::Name, false, 20, 5),
        ("pkg:tool", HostSort::Name, false, 2, 4),
        ("sw:vim", HostSort::Name, true, 0, 0),
        ("sw:VIM", HostSort::Name, false, 1, 6),
        ("sw:7-zip", HostSort::Name, true, 1, 3),
    ] {
        let page = HostPageQuery { filter: HostFilter::parse(line).unwrap(), sort, descending, offset, limit };
        ask(&CentralRequest::HostPageV2(HostPageQueryV2 { page, audit: None }));
    }
    ask(&CentralRequest::Overview { stale_after: 86_400 });
    let packages = ask(&CentralRequest::Packages);
    assert_eq!(packages["Packages"].as_array().unwrap().len(), 2, "{packages}");
    let host = ask(&CentralRequest::HostV2("pc-05.test".into()));
    assert_eq!(host["HostV2"]["detail"]["summary"]["site"], "Nice", "{host}");
    let ambiguous = ask(&CentralRequest::HostV2("pc-03.test".into()));
    assert!(ambiguous.to_string().contains("claimed by 2 certificates"), "{ambiguous}");
    ask(&CentralRequest::HostV2("nobody.test".into()));
}
