//! Inputs shared by Outpost's benchmarks (see `benches/` and `README.md`).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use outpost_protocol::control::Control;
use outpost_protocol::entry::PackageEntry;

/// A package universe for resolver benchmarks: `count` packages, each depending on up to three
/// earlier ones, plus a host package that depends on every tenth package.
pub fn universe(count: usize, host: &str) -> Vec<PackageEntry> {
    let mut entries = Vec::with_capacity(count + 1);
    for i in 0..count {
        let depends: Vec<String> = [i / 2, i / 3, i / 5]
            .into_iter()
            .filter(|&d| d < i)
            .map(|d| format!("pkg-{d:05}(>=1.0)"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for version in ["1.0-1", "1.1-1", "2.0-3"] {
            entries.push(entry(&format!(
                "package: pkg-{i:05}\nversion: {version}\narchitecture: all\nsection: base\npriority: optional\ndepends: {}\n",
                depends.join(",")
            )));
        }
    }
    let wanted: Vec<String> = (0..count).step_by(10).map(|i| format!("pkg-{i:05}")).collect();
    entries.push(entry(&format!(
        "package: {host}\nversion: 1\narchitecture: all\nsection: host\npriority: optional\ndepends: {}\n",
        wanted.join(",")
    )));
    entries
}

fn entry(text: &str) -> PackageEntry {
    PackageEntry::from_control(&Control::parse(text).expect("valid control")).expect("valid entry")
}

/// The workspace root.
pub fn workspace_root() -> Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("bench/ is in the workspace")?.to_path_buf())
}

/// The release `outpost` binary the whole-system benchmarks run: `given`, or
/// `target/release/outpost` (`CARGO_TARGET_DIR` respected), built first with cargo when `build`.
pub fn outpost_binary(given: Option<&Path>, build: bool) -> Result<PathBuf> {
    if let Some(p) = given {
        // The benchmarks run it from their work folder.
        return p.canonicalize().with_context(|| format!("--outpost {}", p.display()));
    }
    let root = workspace_root()?;
    if build {
        eprintln!("building the release outpost binary (cargo build --release -p outpost)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "outpost"])
            .current_dir(&root)
            .status()
            .context("running cargo")?;
        if !status.success() {
            bail!("cargo build --release -p outpost failed");
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    let path = target.join("release/outpost");
    if !path.is_file() {
        bail!("{} not found: run `cargo build --release -p outpost` (or give --outpost PATH)", path.display());
    }
    Ok(path)
}

/// An empty work folder: `given`, or `outpost-NAME-PID` in the temporary folder; absolute.
pub fn work_folder(given: Option<&Path>, name: &str) -> Result<PathBuf> {
    let work = given
        .map_or_else(|| std::env::temp_dir().join(format!("outpost-{name}-{}", std::process::id())), Path::to_path_buf);
    if work.exists() {
        std::fs::remove_dir_all(&work)?;
    }
    std::fs::create_dir_all(&work)?;
    let work = work.canonicalize()?;
    eprintln!("work folder {}", work.display());
    Ok(work)
}
