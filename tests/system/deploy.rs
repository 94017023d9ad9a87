//! The files in `deploy/`: Prometheus configuration and rules (checked and unit-tested with a
//! real promtool), the Grafana dashboard, and the systemd units; and that every metric they
//! name is one the nodes really serve.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cluster::{Cluster, wait_for};
use crate::common::{outpost, root};

fn promtool() -> Option<&'static str> {
    ["/usr/bin/promtool", "/usr/local/bin/promtool"].into_iter().find(|p| Path::new(p).exists())
}

#[test]
fn prometheus_configuration_and_rules_are_valid_and_the_alerts_fire() {
    let Some(promtool) = promtool() else {
        eprintln!("SKIPPED: promtool is not installed (scripts/setup installs the prometheus package)");
        return;
    };
    let dir = root().join("deploy/prometheus");
    for args in [
        vec!["check", "config", "prometheus.yml"],
        vec!["check", "rules", "rules.yml"],
        vec!["test", "rules", "rules_test.yml"],
    ] {
        let out = Command::new(promtool).args(&args).current_dir(&dir).output().unwrap();
        assert!(
            out.status.success(),
            "promtool {}:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every `outpost_…` metric name in a text, without the suffixes Prometheus adds.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("outpost_") {
        let start = i + at;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if start == 0
            || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_' || bytes[start - 1] == b':')
        {
            let mut name = &text[start..end];
            for suffix in ["_bucket", "_sum", "_count", "_total"] {
                name = name.strip_suffix(suffix).unwrap_or(name);
            }
            out.insert(name.to_string());
        }
        i = end.max(start + 1);
    }
    out
}

#[test]
fn the_rules_and_the_dashboard_name_metrics_the_nodes_serve() {
    let rules = std::fs::read_to_string(root().join("deploy/prometheus/rules.yml")).unwrap();
    let dashboard = std::fs::read_to_string(root().join("deploy/grafana/outpost.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&dashboard).expect("the dashboard is JSON");
    let panels = d["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for title in ["Fleet status", "Replication lag", "Bytes served by source", "Refusals"] {
        assert!(panels.iter().any(|p| p["title"].as_str().unwrap().starts_with(title)), "{title} panel");
    }
    let mut wanted = metric_names(&rules);
    wanted.extend(metric_names(&dashboard));
    assert!(wanted.len() >= 10, "{wanted:?}");

    // A server (central on PostgreSQL where it is installed, and the main repository) and an
    // edge, scraped for real.
    let c = Cluster::new();
    let database = match crate::pg::server() {
        Ok(pg) => Some(pg.url(&pg.create_db())),
        Err(why) => {
            eprintln!("the database metrics are not checked: {why}");
            None
        }
    };
    let (server, _) = match &database {
        Some(url) => c.server(&["--database", url]),
        None => c.server(&[]),
    };
    let edge = c.edge(&[&server.addr], &[]);
    // On PostgreSQL the hosts are counted by the database a moment after the start (absent, not
    // zero, until then): wait for the first count.
    let central = wait_for(Duration::from_secs(30), "central's first host count", || {
        server.scrape_opt().filter(|t| t.contains("# TYPE outpost_central_hosts "))
    });
    let served: String = [central, edge.scrape_opt().unwrap()].concat();
    let declared: BTreeSet<String> = served
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.strip_suffix("_total").unwrap_or(n).to_string())
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !declared.contains(*n))
        .filter(|n| database.is_some() || !n.starts_with("outpost_central_db_"))
        .collect();
    assert!(missing.is_empty(), "named in deploy/ but not served: {missing:?}");
}

#[test]
fn systemd_units_run_real_commands() {
    let dir = root().join("deploy/systemd");
    let mut units = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for line in text.lines().filter(|l| l.starts_with("ExecStart") || l.starts_with("ExecStopPost")) {
            let command = line.split_once('=').unwrap().1.trim_start_matches('-');
            let words: Vec<&str> = command.split_whitespace().collect();
            assert_eq!(words[0], "/usr/bin/outpost", "{}: {line}", path.display());
            let sub: Vec<&str> = words[1..].iter().take_while(|w| !w.starts_with("--")).copied().collect();
            let out = outpost().args(&sub).arg("--help").output().unwrap();
            assert!(out.status.success(), "{}: `outpost {}` is not a command", path.display(), sub.join(" "));
            let help = String::from_utf8_lossy(&out.stdout);
            assert!(help.contains("--config"), "{}: `outpost {}` takes no --config", path.display(), sub.join(" "));
        }
        units += 1;
    }
    assert!(units >= 5, "server, main, edge, agent and session-setup units");
    // The XDG autostart entry runs the same command as the user unit.
    let desktop = std::fs::read_to_string(root().join("deploy/xdg/outpost-session-setup.desktop")).unwrap();
    let exec = desktop.lines().find_map(|l| l.strip_prefix("Exec=")).expect("an Exec line");
    let user_unit = std::fs::read_to_string(dir.join("outpost-session-setup.service")).unwrap();
    assert!(user_unit.contains(&format!("ExecStart={exec}")), "{exec}");
    let agent = std::fs::read_to_string(dir.join("outpost-agent.service")).unwrap();
    assert!(agent.contains("ExecStopPost=-/usr/bin/outpost agent upgrade"), "a final upgrade at stop");
}
