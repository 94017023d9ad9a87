//! Search, show and list: table tests on entries built from controls.

use outpost_protocol::control::Control;

use super::*;

fn entry(name: &str, version: &str, extra: &str) -> PackageEntry {
    let text =
        format!("package: {name}\nversion: {version}\narchitecture: all\nsection: base\npriority: optional\n{extra}");
    PackageEntry::from_control(&Control::parse(&text).unwrap()).unwrap()
}

fn host() -> HostCapabilities {
    HostCapabilities { locales: vec!["fr".into()], maturities: vec!["PROD".into()], ..HostCapabilities::default() }
}

#[test]
fn search_finds_by_name_or_description_and_says_which_version_fits() {
    let entries = [
        entry("tis-firefox", "115", "description: Web browser\n"),
        entry("tis-firefox", "120", "description: Web browser\nmaturity: BETA\n"),
        entry("tis-7zip", "24", "description: Archiver\nlocale: de\n"),
        entry("tis-notepad", "1", "description: Text editor\n"),
    ];
    let installed = BTreeMap::from([("tis-firefox".to_string(), "115".to_string())]);
    let found = search(&entries, &host(), &installed, "BROWSER");
    assert_eq!(found.len(), 1);
    let ff = &found[0];
    assert_eq!(
        (ff.name.as_str(), ff.chosen.as_deref(), ff.installed.as_deref()),
        ("tis-firefox", Some("115"), Some("115"))
    );
    assert_eq!(ff.versions[0].version, "120", "newest first");
    assert_eq!(ff.versions[0].why_not.as_deref(), Some("maturity BETA is not accepted here"));
    assert!(ff.versions[1].fits && ff.versions[1].control.is_empty());
    let zip = &search(&entries, &host(), &installed, "7zip")[0];
    assert_eq!(zip.chosen, None, "no version fits");
    assert_eq!(zip.versions[0].why_not.as_deref(), Some("locale de is not accepted here"));
    assert_eq!(search(&entries, &host(), &installed, "").len(), 3, "everything, one line per name");
    assert!(search(&entries, &host(), &installed, "nothing-like-it").is_empty());
}

#[test]
fn show_gives_every_version_with_its_fields() {
    let entries = [entry("tis-a", "1", "homepage: https://a.example\n"), entry("tis-a", "2", "")];
    let shown = show(&entries, &host(), &BTreeMap::new(), "TIS-A").unwrap();
    assert_eq!(shown.chosen.as_deref(), Some("2"));
    assert_eq!(shown.versions.len(), 2);
    assert!(shown.versions[1].control.contains(&("homepage".to_string(), "https://a.example".to_string())));
    assert!(show(&entries, &host(), &BTreeMap::new(), "tis-b").is_none());
}

#[test]
fn list_says_why_each_package_is_here() {
    let line = |e: PackageEntry, origin| InstalledLine {
        name: Box::leak(e.name.clone().into_boxed_str()),
        entry: e,
        state: InstallState::Ok,
        origin,
        installed_at: 1,
        audit: None,
    };
    let installed = [
        line(entry("pc1.example", "5", "section: host\ndepends: tis-a\n"), Origin::Dependency),
        line(entry("OU=Paris,DC=ex", "1", "section: unit\ndepends: tis-b\n"), Origin::Dependency),
        line(entry("tis-a", "1", "depends: tis-lib\n"), Origin::Dependency),
        line(entry("tis-b", "1", ""), Origin::Dependency),
        line(entry("tis-lib", "1", ""), Origin::Dependency),
        line(entry("tis-mine", "1", ""), Origin::Explicit),
    ];
    let listed: Vec<(String, String)> = list(&installed).into_iter().map(|l| (l.name, l.origin)).collect();
    let want = [
        ("pc1.example", "host"),
        ("OU=Paris,DC=ex", "unit"),
        ("tis-a", "host"),
        ("tis-b", "unit"),
        ("tis-lib", "dependency"),
        ("tis-mine", "explicit"),
    ];
    assert_eq!(listed, want.map(|(a, b)| (a.to_string(), b.to_string())));
}
