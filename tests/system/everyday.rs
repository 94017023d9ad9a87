//! wapt-get's everyday commands on the agent, through the real binary against a real main
//! repository: `search`, `show`, `list` (with why each package is here), `install --force`,
//! `forget` and `clean`, each with `--json`.

use crate::agent::{Host, hook, log_lines};
use crate::cluster::Cluster;

#[test]
fn search_show_list_reinstall_forget_and_clean() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    let publish = |name: &str, version: &str, extra: &str| {
        let setup = hook(&log, "");
        c.publish(
            &c.package_with(name, version, extra, &[("setup.sh", &setup), ("data.bin", &[7u8; 50_000][..])]),
            &main.addr,
        )
    };
    publish("tis-editor", "1", "description: A text editor\n");
    publish("tis-editor", "2", "description: A text editor\nmaturity: BETA\n");
    publish("tis-lib", "1", "");
    publish("tis-viewer", "1", "description: Image viewer\ndepends: tis-lib\n");
    publish("pc-e.test", "1", "section: host\ndepends: tis-viewer\n");
    let host = Host::new(&c, "pc-e.test", &format!("repos = [{:?}]", main.addr));
    host.run(&["update"]).ok();

    // search: the version this host gets, and why not the others.
    let found = host.json(&["search", "EDITOR"]);
    let editor = &found.as_array().unwrap()[0];
    assert_eq!((editor["name"].as_str(), editor["chosen"].as_str()), (Some("tis-editor"), Some("1")), "{found}");
    assert_eq!(editor["versions"][0]["version"], "2");
    assert_eq!(editor["versions"][0]["why_not"], "maturity BETA is not accepted here");
    let text = host.run(&["search", "viewer"]).ok();
    assert!(text.stdout.contains("tis-viewer") && !text.stdout.contains("tis-editor"), "{}", text.stdout);
    // Everything offered, one line per name (host packages are not offered: each is its host's).
    assert_eq!(host.json(&["search"]).as_array().unwrap().len(), 3);

    // show: every version with its fields, as an object.
    let shown = host.json(&["show", "tis-editor"]);
    assert_eq!(shown["chosen"], "1");
    assert_eq!(shown["versions"][1]["control"]["description"], "A text editor");
    host.run(&["show", "no-such-package"]).fails_with("no repository offers \"no-such-package\"");

    // list: why each package is here.
    host.run(&["upgrade"]).ok();
    host.run(&["install", "tis-editor"]).ok();
    let listed = host.json(&["list"]);
    let origin = |name: &str| {
        listed.as_array().unwrap().iter().find(|p| p["name"] == name).map(|p| p["origin"].as_str().unwrap().to_string())
    };
    assert_eq!(origin("tis-editor").as_deref(), Some("explicit"), "{listed}");
    assert_eq!(origin("tis-viewer").as_deref(), Some("host"));
    assert_eq!(origin("tis-lib").as_deref(), Some("dependency"));
    assert_eq!(origin("pc-e.test").as_deref(), Some("host"));

    // install --force: the install hook runs again for the same version.
    let before = log_lines(&log).iter().filter(|l| *l == "install tis-editor 1").count();
    host.run(&["install", "tis-editor"]).ok();
    assert_eq!(log_lines(&log).iter().filter(|l| *l == "install tis-editor 1").count(), before, "nothing to do");
    host.run(&["install", "--force", "tis-editor"]).ok();
    assert_eq!(log_lines(&log).iter().filter(|l| *l == "install tis-editor 1").count(), before + 1, "installed again");
    assert_eq!(host.package("tis-editor").unwrap()["status"], "OK");

    // forget: out of the state, and no uninstall hook.
    host.run(&["forget", "tis-editor"]).ok();
    assert!(!log_lines(&log).iter().any(|l| l.starts_with("uninstall")), "{:?}", log_lines(&log));
    assert!(host.json(&["list"]).as_array().unwrap().iter().all(|p| p["name"] != "tis-editor"));
    host.run(&["forget", "tis-editor"]).fails_with("tis-editor is not installed here");

    // clean: what a download left in the cache, and what it freed.
    publish("tis-lib", "2", "");
    host.run(&["download-upgrade"]).ok();
    assert!(!host.cached().is_empty(), "the download is kept for the upgrade");
    let cleaned = host.json(&["clean"]);
    assert!(cleaned["removed"].as_u64().unwrap() >= 1 && cleaned["freed"].as_u64().unwrap() >= 50_000, "{cleaned}");
    assert!(host.cached().is_empty());
    assert!(host.run(&["clean"]).ok().stdout.contains("Removed 0 cached package(s), freed 0 bytes"));
}

/// Fields that act: a package that needs a newer agent, or more disk than there is, is refused
/// with the numbers, and nothing of it runs.
#[test]
fn too_new_or_too_big_packages_are_refused_with_the_numbers() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    let publish = |name: &str, extra: &str| {
        c.publish(&c.package_with(name, "1", extra, &[("setup.sh", &hook(&log, ""))]), &main.addr)
    };
    publish("tis-future", "min_outpost_version: 99.0\n");
    publish("tis-wapt-next", "min_wapt_version: 9.1\n");
    publish("tis-huge", "installed_size: 1000000000000000000\n");
    let host = Host::new(&c, "pc-f.test", &format!("repos = [{:?}]", main.addr));
    host.run(&["update"]).ok();

    let future = host.json(&["show", "tis-future"]);
    assert_eq!(future["chosen"], serde_json::Value::Null);
    let why = future["versions"][0]["why_not"].as_str().unwrap().to_string();
    assert!(why.starts_with("needs Outpost 99.0 or later (min_outpost_version); this agent is "), "{why}");
    for (name, says) in [("tis-future", "needs Outpost 99.0 or later"), ("tis-wapt-next", "needs WAPT 9.1 or later")] {
        let r = host.run(&["install", name]).fails_with("package(s) failed");
        assert!(r.stdout.contains(says), "{name}: {}", r.stdout);
    }

    let huge = host.run(&["install", "tis-huge"]);
    assert_ne!(huge.code, Some(0));
    assert!(huge.stdout.contains("installed_size") || huge.stderr.contains("installed_size"), "{huge:?}");
    let line = host.package("tis-huge").unwrap();
    assert_eq!(line["status"], "ERROR", "{line}");
    assert!(
        line["reason"].as_str().unwrap().contains("870.7 PiB") || line["reason"].as_str().unwrap().contains("TiB"),
        "{line}"
    );
    assert!(log_lines(&log).is_empty(), "no hook ran: {:?}", log_lines(&log));
}

/// `audit_schedule`: the daemon runs the audit hook on its schedule, the result reaches central in
/// the inventory, and `console hosts --audit ERROR` finds the host.
#[test]
fn scheduled_audits_run_by_themselves_and_reach_the_console() {
    let c = Cluster::new();
    let (server, central) = c.server(&[]);
    let admin = crate::central::Console::new(&c, &central, "Ann", "view");
    let log = c.dir().join("hooks.log");
    // The audit fails (exit 2): an ERROR; installing works.
    let setup = hook(&log, "[ \"$1\" = audit ] && exit 2\nexit 0");
    c.publish(&c.package_with("tis-watched", "1", "audit_schedule: 2s\n", &[("setup.sh", &setup)]), &server.addr);
    c.publish(&c.package_with("tis-quiet", "1", "", &[("setup.sh", &hook(&log, ""))]), &server.addr);
    let host = Host::new(&c, "pc-audit.test", &format!("repos = [{:?}]\nserver = {central:?}", server.addr));
    host.run(&["install", "tis-watched", "tis-quiet"]).ok();
    let _daemon = crate::common::Stop(host.spawn(&["run"]));
    let audits = |name: &str| log_lines(&log).iter().filter(|l| *l == &format!("audit {name} 1")).count();
    crate::cluster::wait_for(std::time::Duration::from_secs(30), "two scheduled audits", || {
        (audits("tis-watched") >= 2).then_some(())
    });
    assert_eq!(audits("tis-quiet"), 0, "a package without a schedule is audited only when asked");
    let found = crate::cluster::wait_for(std::time::Duration::from_secs(30), "the audit result at central", || {
        let hosts = admin.hosts(&["--audit", "ERROR"]);
        (!hosts.is_empty()).then_some(hosts)
    });
    assert_eq!(found[0]["fqdn"], "pc-audit.test");
    assert!(admin.hosts(&["--audit", "OK"]).is_empty());
    assert_eq!(admin.hosts(&["audit:error name:pc-audit*"]).len(), 1, "the filter line reads audit: too");
    let detail = admin.json(&["host", "pc-audit.test"]);
    let audits_section = &detail["inventory"]["sections"]["audits"]["Audits"];
    let watched = audits_section.as_array().unwrap().iter().find(|a| a["name"] == "tis-watched").unwrap();
    assert_eq!(watched["result"], "ERROR", "{watched}");
    assert!(watched["message"].as_str().unwrap().contains("exit code 2"), "{watched}");
}

/// Starts a program just copied: another test thread forking meanwhile holds the copy's write
/// descriptor until its child runs its own program ("text file busy"), so it is tried again
/// until then.
#[cfg(target_os = "linux")]
fn spawn_copied(command: &mut std::process::Command) -> std::process::Child {
    crate::cluster::wait_for(std::time::Duration::from_secs(60), "a copied program to start", || {
        match command.spawn() {
            Ok(child) => Some(child),
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => None,
            Err(e) => panic!("starting {:?}: {e}", command.get_program()),
        }
    })
}

/// `impacted_process`: the processes a package names are closed before it is installed (asked
/// first, stopped after the time limit when they do not close), and its output says so.
#[cfg(target_os = "linux")]
#[test]
fn impacted_processes_are_closed_before_the_install_and_it_says_so() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    // Two programs named as a package would name them: one closes when asked, one does not.
    let polite = c.dir().join("polite-x");
    let stubborn = c.dir().join("stubborn-x");
    std::fs::copy("/bin/sleep", &polite).unwrap();
    std::fs::copy("/bin/sh", &stubborn).unwrap();
    let mut p = spawn_copied(std::process::Command::new(&polite).arg("300"));
    let mut s =
        spawn_copied(std::process::Command::new(&stubborn).args(["-c", "trap '' TERM; while :; do sleep 1; done"]));
    c.publish(
        &c.package_with(
            "tis-app",
            "1",
            "impacted_process: polite-x,Stubborn-X.exe\n",
            &[("setup.sh", &hook(&log, ""))],
        ),
        &main.addr,
    );
    let host = Host::new(&c, "pc-p.test", &format!("repos = [{:?}]", main.addr));
    host.run(&["install", "tis-app"]).ok();
    assert!(p.try_wait().unwrap().is_some(), "polite-x was closed");
    assert!(s.try_wait().unwrap().is_some(), "stubborn-x was stopped");
    let line = host.package("tis-app").unwrap();
    let output = line["output"].as_str().unwrap();
    assert!(output.contains("closed polite-x (pid"), "{output}");
    assert!(output.contains("stopped stubborn-x (pid") && output.contains("did not close within 10 s"), "{output}");
    let _ = (p.wait(), s.wait());
}

/// `session-setup`: run as the user at logon, once per package version, from what the agent
/// exported; a failure shows in the host's status and is tried again at the next logon.
#[test]
fn session_setup_runs_once_per_version_per_user_and_failures_show() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    let home = c.dir().join("home-ann");
    let setup = hook(&log, "[ \"$1\" = session-setup ] && echo set > \"$HOME/.tis-prefs\"\nexit 0");
    let failing = hook(&log, "[ \"$1\" = session-setup ] && exit 3\nexit 0");
    c.publish(&c.package_with("tis-prefs", "1", "", &[("setup.sh", &setup)]), &main.addr);
    c.publish(&c.package_with("tis-broken", "1", "", &[("setup.sh", &failing)]), &main.addr);
    c.publish(&c.package_with("tis-plain", "1", "", &[("setup.sh", &hook(&log, "exit 0"))]), &main.addr);
    let host = Host::new(&c, "pc-s.test", &format!("repos = [{:?}]", main.addr));
    host.run(&["install", "tis-prefs", "tis-broken", "tis-plain"]).ok();
    let as_ann = |args: &[&str]| {
        let mut all = vec!["agent"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--config", host.config.to_str().unwrap()]);
        crate::common::run_env(
            c.dir(),
            &all,
            &[("HOME", home.to_str().unwrap()), ("USER", "ann"), ("XDG_STATE_HOME", "")],
        )
    };
    let first = as_ann(&["session-setup", "--json"]).fails_with("session-setup failed for tis-broken");
    let runs: serde_json::Value = serde_json::from_str(&first.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2, "the hook without session-setup is not run: {runs}");
    assert_eq!(std::fs::read_to_string(home.join(".tis-prefs")).unwrap(), "set\n");
    let count = |line: &str| log_lines(&log).iter().filter(|l| *l == line).count();
    assert_eq!(count("session-setup tis-prefs 1"), 1);
    // The next logon: what worked is not run again; what failed is tried again.
    as_ann(&["session-setup"]).fails_with("tis-broken");
    assert_eq!(count("session-setup tis-prefs 1"), 1, "once per version");
    assert_eq!(count("session-setup tis-broken 1"), 2, "tried again");
    // The host's status says it.
    let broken = host.package("tis-broken").unwrap();
    assert_eq!(broken["status"], "ERROR", "{broken}");
    assert!(broken["reason"].as_str().unwrap().contains("session-setup for user ann failed"), "{broken}");
    assert_eq!(host.package("tis-prefs").unwrap()["status"], "OK");
    assert_eq!(host.status()["host_status"], "ERROR");
    // What another user writes into the shared results folder cannot stop the agent: a file too
    // large or not results is skipped.
    let results = host.state.join("session/results");
    std::fs::write(results.join("mallory.json"), vec![b'x'; 2 * 1024 * 1024]).unwrap();
    std::fs::write(results.join("eve.json"), b"not json").unwrap();
    let broken = host.package("tis-broken").unwrap();
    assert!(broken["reason"].as_str().unwrap().contains("session-setup for user ann failed"), "{broken}");
}

/// The postpone policy: a step waits while a program its package names runs, and is done at
/// the next upgrade once it has stopped; from the package's `forced_install_on` it is closed.
#[cfg(target_os = "linux")]
#[test]
fn with_the_postpone_policy_a_step_waits_for_the_program_to_stop() {
    let c = Cluster::new();
    let main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    let busy = c.dir().join("busy-y");
    std::fs::copy("/bin/sleep", &busy).unwrap();
    let mut running = spawn_copied(std::process::Command::new(&busy).arg("300"));
    c.publish(
        &c.package_with(
            "tis-wait",
            "1",
            "impacted_process: busy-y\nforced_install_on: 2099-01-01\n",
            &[("setup.sh", &hook(&log, ""))],
        ),
        &main.addr,
    );
    c.publish(
        &c.package_with(
            "tis-now",
            "1",
            "impacted_process: busy-y\nforced_install_on: 2020-01-01\n",
            &[("setup.sh", &hook(&log, ""))],
        ),
        &main.addr,
    );
    let host = Host::new(&c, "pc-w.test", &format!("repos = [{:?}]\nimpacted_process = \"postpone\"", main.addr));
    let out = host.run(&["install", "tis-wait"]).ok();
    assert!(
        out.stdout.contains(
            "postponed: tis-wait: postponed: busy-y running (impacted_process); it will be closed from 2099-01-01"
        ),
        "{}",
        out.stdout
    );
    assert!(running.try_wait().unwrap().is_none(), "still running");
    assert!(log_lines(&log).is_empty(), "no hook ran");
    assert_ne!(host.package("tis-wait").unwrap()["status"], "OK");
    // Past its forced_install_on date, the program is closed as with the default policy.
    host.run(&["install", "tis-now"]).ok();
    assert!(running.try_wait().unwrap().is_some(), "closed for tis-now");
    host.run(&["upgrade"]).ok();
    assert_eq!(host.package("tis-wait").unwrap()["status"], "OK", "done once the program stopped");
}

/// `install --force` with no repository answering leaves the package as it was (OK), not
/// marked interrupted.
#[test]
fn a_reinstall_that_cannot_run_changes_nothing() {
    let c = Cluster::new();
    let mut main = c.main(&[]);
    let log = c.dir().join("hooks.log");
    c.publish(&c.package_with("tis-kept", "1", "", &[("setup.sh", &hook(&log, ""))]), &main.addr);
    let host = Host::new(&c, "pc-k.test", &format!("repos = [{:?}]", main.addr));
    host.run(&["install", "tis-kept"]).ok();
    main.stop();
    let r = host.run(&["install", "--force", "tis-kept"]);
    assert_ne!(r.code, Some(0), "nothing to reinstall from: {r:?}");
    let line = host.package("tis-kept").unwrap();
    assert_eq!((line["status"].as_str(), line["state"].as_str()), (Some("OK"), Some("OK")), "{line}");
}
