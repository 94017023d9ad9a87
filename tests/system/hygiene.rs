//! Formatting and lints are part of the tests: `cargo fmt --check` and `cargo clippy -D
//! warnings` over the whole workspace, every target. Clippy builds in its own target folder so
//! that it never waits on the lock of the build running these tests.

use std::process::Command;

use crate::common::root;

fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

#[test]
fn code_is_formatted() {
    let out = cargo().args(["fmt", "--all", "--", "--check"]).output().expect("cargo fmt runs");
    assert!(
        out.status.success(),
        "run `cargo fmt --all`:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn clippy_finds_nothing() {
    let target = root().join("target/hygiene");
    let out = cargo()
        .args(["clippy", "--workspace", "--all-targets", "--locked", "--quiet", "--", "-D", "warnings"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("cargo clippy runs");
    assert!(out.status.success(), "clippy found problems:\n{}", String::from_utf8_lossy(&out.stderr));
}

/// `unsafe` is allowed in two places: the calls into the Windows API (`actors/src/windows/`)
/// and into glibc's allocator settings (`actors/src/allocator.rs`).
#[test]
fn unsafe_code_is_only_where_the_system_api_is_called() {
    let mut offenders = Vec::new();
    for dir in ["protocol/src", "actors/src", "nodes/src", "bench/src", "tests/system"] {
        for file in rust_files(&root().join(dir)) {
            if file.starts_with(root().join("actors/src/windows"))
                || file == root().join("actors/src/allocator.rs")
                || file.ends_with("tests/system/hygiene.rs")
            {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            for (i, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                if code.contains("unsafe {")
                    || code.contains("unsafe fn")
                    || code.contains("unsafe impl")
                    || code.contains("allow(unsafe_code)")
                {
                    offenders.push(format!("{}:{}: {}", file.display(), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "unsafe code outside actors/src/windows/ and actors/src/allocator.rs:\n{}",
        offenders.join("\n")
    );
    for place in ["actors/src/windows/mod.rs", "actors/src/allocator.rs"] {
        let text = std::fs::read_to_string(root().join(place)).unwrap();
        assert!(text.contains("#![allow(unsafe_code)]"), "{place} says it allows it");
    }
}

/// Every error type says only its own part: a variant that prints a field in its message does
/// not also chain that field as its `source` (`#[from]`, `#[source]`, or a field named
/// `source`), or the command line, which prints an error and its causes, would say it twice.
#[test]
fn error_types_say_each_cause_once() {
    let mut offenders = Vec::new();
    for dir in ["protocol/src", "actors/src", "nodes/src"] {
        for file in rust_files(&root().join(dir)) {
            let text = std::fs::read_to_string(&file).unwrap();
            for (line, variant) in doubled_causes(&text) {
                offenders.push(format!("{}:{line}: {variant}", file.display()));
            }
        }
    }
    assert!(offenders.is_empty(), "these variants print their source and chain it too:\n{}", offenders.join("\n"));
    // The check itself finds what it is for.
    let bad = "#[error(\"reading: {0}\")]\n    Read(#[from] std::io::Error),\n#[error(\"{path}: {source}\")]\n    Io { path: String, source: std::io::Error },\n#[error(\"reading\")]\n    Fine(#[from] std::io::Error),\n#[error(transparent)]\n    Also(#[from] std::io::Error),";
    let found: Vec<String> = doubled_causes(bad).into_iter().map(|(_, v)| v).collect();
    assert_eq!(found, ["Read", "Io"]);
}

fn rust_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The `#[error("…")]` variants of `text` whose message prints a field that is also their source.
fn doubled_causes(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut rest = text;
    let mut offset = 0;
    while let Some(at) = rest.find("#[error(") {
        let start = offset + at + "#[error(".len();
        let Some(end) = text[start..].find(")]\n").map(|e| start + e) else { break };
        let message = &text[start..end];
        let after = text[end + 2..].trim_start();
        // Skip doc comments and other attributes between the message and the variant.
        let after = after
            .lines()
            .skip_while(|l| l.trim_start().starts_with("///") || l.trim_start().starts_with("#["))
            .collect::<Vec<_>>()
            .join("\n");
        let after = after.trim_start();
        let name: String = after.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let body = after[name.len()..].trim_start();
        let sources: Vec<String> = match body.chars().next() {
            Some('(') => {
                let inner = &body[1..body.find(')').map_or(body.len(), |e| e + 1).saturating_sub(1).max(1)];
                split_fields(inner)
                    .iter()
                    .enumerate()
                    .filter(|(_, f)| f.contains("#[from]") || f.contains("#[source]"))
                    .map(|(i, _)| i.to_string())
                    .collect()
            }
            Some('{') => {
                let inner = &body[1..body.find('}').unwrap_or(body.len())];
                split_fields(inner)
                    .iter()
                    .filter_map(|f| {
                        let marked = f.contains("#[from]") || f.contains("#[source]");
                        let field = f.rsplit(']').next()?.split(':').next()?.trim().to_string();
                        (marked || field == "source").then_some(field)
                    })
                    .collect()
            }
            _ => Vec::new(),
        };
        if !message.starts_with("transparent") {
            let prints = |f: &str| {
                message.contains(&format!("{{{f}}}"))
                    || message.contains(&format!("{{{f}:"))
                    || message.contains(&format!(".{f})"))
                    || message.contains(&format!(".{f},"))
            };
            if sources.iter().any(|f| prints(f)) {
                out.push((text[..start].lines().count(), name));
            }
        }
        offset = start;
        rest = &text[start..];
    }
    out
}

/// The fields of a variant, split at top-level commas.
fn split_fields(inner: &str) -> Vec<String> {
    let (mut out, mut depth, mut current) = (Vec::new(), 0i32, String::new());
    for c in inner.chars() {
        match c {
            '<' | '(' | '[' => depth += 1,
            '>' | ')' | ']' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if !current.trim().is_empty() {
        out.push(current);
    }
    out
}
