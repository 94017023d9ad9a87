//! The protocol crate stays pure: no async runtime, no network stack, no file or network I/O.
//! Checked on the resolved dependency graph (`cargo metadata`) and on the source text.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;

use crate::common::root;

/// Crates that mean a runtime or network stack.
const FORBIDDEN_CRATES: [&str; 12] = [
    "tokio",
    "tokio-util",
    "quinn",
    "quinn-proto",
    "quinn-udp",
    "actix",
    "actix-rt",
    "mio",
    "socket2",
    "hyper",
    "axum",
    "hickory-resolver",
];

/// Source text that means I/O, processes, clocks or async.
const FORBIDDEN_TEXT: [&str; 16] = [
    "std::fs",
    "File::open",
    "File::create",
    "TcpStream",
    "TcpListener",
    "UdpSocket",
    "std::process",
    "std::env::var",
    "SystemTime::now",
    "Instant::now",
    "OffsetDateTime::now",
    "tokio",
    "async fn",
    ".await",
    "thread::sleep",
    "std::io::stdin",
];

#[test]
fn protocol_depends_on_no_runtime_or_network_crate() {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["metadata", "--format-version", "1", "--locked"])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: HashMap<&str, &str> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["id"].as_str().unwrap(), p["name"].as_str().unwrap()))
        .collect();
    let nodes: HashMap<&str, &serde_json::Value> =
        meta["resolve"]["nodes"].as_array().unwrap().iter().map(|n| (n["id"].as_str().unwrap(), n)).collect();
    let start = names.iter().find(|(_, n)| **n == "outpost-protocol").map(|(id, _)| *id).unwrap();
    let mut seen = BTreeSet::new();
    let mut stack = vec![start];
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        for dep in nodes[id]["deps"].as_array().unwrap() {
            // Normal (and build) dependencies only: dev-dependencies do not ship.
            let normal =
                dep["dep_kinds"].as_array().unwrap().iter().any(|k| k["kind"].is_null() || k["kind"] == "build");
            if normal {
                stack.push(dep["pkg"].as_str().unwrap());
            }
        }
    }
    let closure: BTreeSet<&str> = seen.iter().map(|id| names[id]).collect();
    assert!(closure.contains("blake3"), "the walk found the real dependencies: {closure:?}");
    let bad: Vec<&&str> = FORBIDDEN_CRATES.iter().filter(|c| closure.contains(**c)).collect();
    assert!(bad.is_empty(), "outpost-protocol must stay pure but depends on {bad:?}");
}

#[test]
fn protocol_source_does_no_io() {
    let mut offences = Vec::new();
    let mut stack = vec![root().join("protocol/src")];
    let mut files = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files += 1;
                let text = std::fs::read_to_string(&path).unwrap();
                for (n, line) in text.lines().enumerate() {
                    let code = line.split("//").next().unwrap_or("");
                    for needle in FORBIDDEN_TEXT {
                        if code.contains(needle) {
                            offences.push(format!("{}:{}: {needle}", path.display(), n + 1));
                        }
                    }
                }
            }
        }
    }
    assert!(files > 10, "the scan read the protocol sources");
    assert!(offences.is_empty(), "I/O in outpost-protocol:\n{}", offences.join("\n"));
}
