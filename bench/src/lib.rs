//! Inputs shared by Outpost's benchmarks (see `benches/` and `README.md`).

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
