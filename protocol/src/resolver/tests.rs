//! Table tests, one or more per rule of the module documentation.

use std::collections::BTreeSet;

use super::*;
use crate::control::Control;

pub(super) fn entry(text: &str) -> PackageEntry {
    PackageEntry::from_control(&Control::parse(text).unwrap()).unwrap()
}

/// An entry with defaults (section base, architecture all) and `extra` fields.
fn pkg(name: &str, version: &str, extra: &str) -> PackageEntry {
    entry(&format!(
        "package: {name}\nversion: {version}\narchitecture: all\nsection: base\npriority: optional\n{extra}"
    ))
}

fn section(name: &str, version: &str, section: &str, depends: &str) -> PackageEntry {
    entry(&format!(
        "package: {name}\nversion: {version}\narchitecture: all\nsection: {section}\npriority: optional\ndepends: {depends}\n"
    ))
}

fn req(text: &str) -> PackageRequest {
    PackageRequest::parse(text).unwrap()
}

fn installed(e: PackageEntry, state: InstallState, origin: Origin) -> InstalledPackage {
    InstalledPackage { entry: e, state, origin }
}

fn dep(e: PackageEntry) -> InstalledPackage {
    installed(e, InstallState::Ok, Origin::Dependency)
}

#[derive(Default)]
struct World {
    entries: Vec<PackageEntry>,
    host: HostIdentity,
    caps: HostCapabilities,
    installed: Vec<InstalledPackage>,
    requested: Vec<PackageRequest>,
    incomplete: bool,
}

impl World {
    fn new(entries: Vec<PackageEntry>) -> Self {
        let host = HostIdentity { fqdn: Some("pc1.corp.lan".into()), ..HostIdentity::default() };
        Self { entries, host, ..Self::default() }
    }

    fn installed(mut self, installed: Vec<InstalledPackage>) -> Self {
        self.installed = installed;
        self
    }

    fn requested(mut self, requests: &[&str]) -> Self {
        self.requested = requests.iter().map(|r| req(r)).collect();
        self
    }

    fn run(&self) -> Resolution {
        resolve(&ResolveInput {
            entries: &self.entries,
            host: &self.host,
            capabilities: &self.caps,
            installed: &self.installed,
            requested: &self.requested,
            incomplete: self.incomplete,
        })
    }
}

fn plan(res: &Resolution) -> Vec<String> {
    res.plan.iter().map(ToString::to_string).collect()
}

fn status(res: &Resolution, name: &str) -> PackageStatus {
    state(res, name).status
}

fn state<'r>(res: &'r Resolution, name: &str) -> &'r PackageState {
    res.packages.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no state for {name}: {res:#?}"))
}

fn errors(res: &Resolution) -> Vec<String> {
    res.errors.iter().map(ToString::to_string).collect()
}

#[test]
fn unit_names_table() {
    let cases: &[(&str, &[&str])] = &[
        (
            "CN=pc1,OU=Paris,OU=Sites,DC=corp,DC=lan",
            &["OU=Paris,OU=Sites,DC=corp,DC=lan", "OU=Sites,DC=corp,DC=lan", "DC=corp,DC=lan"],
        ),
        (
            "cn = pc1 , ou=Paris , Ou = Sites,dc=corp, dc=lan",
            &["OU=Paris,OU=Sites,DC=corp,DC=lan", "OU=Sites,DC=corp,DC=lan", "DC=corp,DC=lan"],
        ),
        ("OU=Paris,DC=corp,DC=lan", &["OU=Paris,DC=corp,DC=lan", "DC=corp,DC=lan"]),
        ("CN=pc1,CN=Computers,DC=corp,DC=lan", &["DC=corp,DC=lan"]),
        ("CN=pc1,OU=R\\, D,DC=corp", &["OU=R\\, D,DC=corp", "DC=corp"]),
        ("CN=pc1,OU=Paris", &["OU=Paris"]),
        ("DC=corp,DC=lan", &["DC=corp,DC=lan"]),
        ("", &[]),
        ("not a dn", &[]),
        ("CN=pc1,=x,DC=corp", &[]),
    ];
    for (dn, want) in cases {
        assert_eq!(unit_names(dn), *want, "{dn:?}");
    }
}

#[test]
fn host_package_by_uuid_and_by_fqdn() {
    let entries = vec![
        section("PC1.corp.lan", "3", "host", "a"),
        section("4c4c4544-0042", "1", "host", "b"),
        section("other.corp.lan", "1", "host", "c"),
        pkg("a", "1.0", ""),
        pkg("b", "1.0", ""),
        pkg("c", "1.0", ""),
    ];
    let mut world = World::new(entries);
    world.host.uuid = Some("4C4C4544-0042".into());
    let res = world.run();
    assert_eq!(plan(&res), ["install a 1.0", "install PC1.corp.lan 3", "install b 1.0", "install 4c4c4544-0042 1"]);
    assert!(res.plan.iter().all(|s| matches!(s, Step::Install { origin: Origin::Dependency, .. })));
    // No host package at all is normal.
    let mut world = World::new(vec![pkg("a", "1.0", "")]);
    world.host = HostIdentity::default();
    let res = world.run();
    assert!(res.plan.is_empty() && res.errors.is_empty() && res.host_status == HostStatus::Ok);
}

#[test]
fn unit_packages_from_the_dn() {
    let entries = vec![
        section("OU=Paris, OU=Sites,DC=corp,DC=lan", "1", "unit", "paris-app"),
        section("ou=sites,dc=corp,dc=lan", "1", "unit", "sites-app"),
        section("DC=corp,DC=lan", "1", "unit", "corp-app"),
        section("OU=Lyon,OU=Sites,DC=corp,DC=lan", "1", "unit", "lyon-app"),
        pkg("paris-app", "1", ""),
        pkg("sites-app", "1", ""),
        pkg("corp-app", "1", ""),
        pkg("lyon-app", "1", ""),
    ];
    let mut world = World::new(entries);
    world.host.ou = Some("CN=pc1,OU=Paris,OU=Sites,DC=corp,DC=lan".into());
    let res = world.run();
    let names: BTreeSet<&str> = res.plan.iter().map(Step::name).collect();
    let want: BTreeSet<&str> = [
        "OU=Paris, OU=Sites,DC=corp,DC=lan",
        "ou=sites,dc=corp,dc=lan",
        "DC=corp,DC=lan",
        "paris-app",
        "sites-app",
        "corp-app",
    ]
    .into();
    assert_eq!(names, want);
}

#[test]
fn profile_packages() {
    let entries = vec![
        section("Accounting", "1", "profile", "ledger"),
        pkg("ledger", "2", ""),
        section("sales", "1", "profile", ""),
    ];
    let mut world = World::new(entries);
    world.host.profiles = vec!["accounting".into(), "absent-profile".into()];
    let res = world.run();
    assert_eq!(plan(&res), ["install ledger 2", "install Accounting 1"]);
    assert!(res.errors.is_empty());
}

#[test]
fn newest_fitting_candidate_wins() {
    let entries = vec![
        section("pc1.corp.lan", "1", "host", "a"),
        pkg("a", "1.0", ""),
        pkg("a", "2.0", ""),
        pkg("a", "3.0", "maturity: BETA\n"),
        pkg("a", "2.0", "locale: fr\nsignature_date: 2024-01-01T00:00:00\n"),
    ];
    let mut world = World::new(entries);
    world.caps.locales = vec!["fr".into(), "en".into()];
    let res = world.run();
    assert_eq!(plan(&res)[0], "install a 2.0");
    assert!(matches!(res.plan[0], Step::Install { entry: 4, .. }), "the fr entry is preferred");
}

#[test]
fn pinned_version_and_request_without_packaging() {
    let entries = vec![
        section("pc1.corp.lan", "1", "host", "a(=1.0), b(=2.1)"),
        pkg("a", "1.0-2", ""),
        pkg("a", "2.0-1", ""),
        pkg("b", "2.1-1", ""),
        pkg("b", "2.1-7", ""),
        pkg("b", "2.2-1", ""),
    ];
    let res = World::new(entries.clone()).run();
    assert_eq!(plan(&res), ["install a 1.0-2", "install b 2.1-7", "install pc1.corp.lan 1"]);
    // A pin below the installed version downgrades.
    let res = World::new(entries).installed(vec![dep(pkg("a", "2.0-1", ""))]).run();
    assert_eq!(plan(&res)[0], "downgrade a 2.0-1 -> 1.0-2");
    assert_eq!(status(&res, "a"), PackageStatus::NeedUpgrade);
}

#[test]
fn filters_exclude_entries_and_missing_says_why() {
    let entries = vec![
        section("pc1.corp.lan", "1", "host", "app"),
        pkg("app", "1", "depends: lib(>=2)\n"),
        pkg("lib", "2", "maturity: DEV\n"),
        entry("package: lib\nversion: 3\narchitecture: arm64\nsection: base\npriority: optional\n"),
        pkg("lib", "1", ""),
    ];
    let mut world = World::new(entries);
    world.caps.architectures = vec!["x64".into()];
    let res = world.run();
    assert_eq!(
        errors(&res),
        ["app needs lib(>=2), which no entry provides for this host (lib 3: architecture arm64 does not fit \
          this host; lib 2: maturity DEV is not accepted here; lib 1: version does not match)"]
    );
    assert!(matches!(&res.errors[0], ResolveError::Missing { package, .. } if package == "app"));
    assert!(res.plan.is_empty(), "nothing of the host package is planned: {:?}", plan(&res));
    assert_eq!(status(&res, "app"), PackageStatus::Error);
    assert_eq!(status(&res, "pc1.corp.lan"), PackageStatus::Error);
    let reason = state(&res, "pc1.corp.lan").reason.clone().unwrap();
    assert_eq!(reason, StatusReason::Blocked { via: "app".into(), cause: Some(res.errors[0].clone()) });
    assert_eq!(reason.to_string(), format!("needs app, which cannot be installed: {}", errors(&res)[0]));
    assert_eq!(res.host_status, HostStatus::Error);
}

#[test]
fn missing_dependency_leaves_installed_packages_alone() {
    let entries = vec![
        section("pc1.corp.lan", "2", "host", "app, tool"),
        pkg("app", "2", "depends: lib(>=2), tool\n"),
        pkg("tool", "1", ""),
        pkg("other", "1", ""),
    ];
    let installed = vec![dep(section("pc1.corp.lan", "1", "host", "app")), dep(pkg("app", "1", ""))];
    let res = World::new(entries).installed(installed).requested(&["other"]).run();
    // Only the explicit request, unrelated to the failure, is planned.
    assert_eq!(plan(&res), ["install other 1"]);
    assert_eq!(status(&res, "app"), PackageStatus::Error);
    assert_eq!(state(&res, "app").target, Some(Version::parse("1").unwrap()), "stays installed");
    assert_eq!(status(&res, "pc1.corp.lan"), PackageStatus::Error);
    assert!(res.packages.iter().all(|p| p.name != "tool"), "only the failed host package needed tool");
    assert_eq!(state(&res, "lib").reason, Some(StatusReason::Unresolved(res.errors[0].clone())));
    assert_eq!(state(&res, "lib").reason.as_ref().unwrap().to_string(), errors(&res)[0]);
    // A requested name that nothing provides.
    let res = World::new(vec![]).requested(&["nothing(>=2)"]).run();
    assert_eq!(
        errors(&res),
        ["nothing(>=2) was requested, but no entry provides it for this host (no package named nothing exists)"]
    );
    assert!(matches!(&res.errors[0], ResolveError::Missing { package, .. } if package == "nothing"));
}

#[test]
fn keep_installed_when_nothing_newer_upgrade_when_newer() {
    let entries = vec![section("pc1.corp.lan", "1", "host", "a, b"), pkg("a", "1.0", ""), pkg("b", "2.0", "")];
    let installed = vec![
        dep(section("pc1.corp.lan", "1", "host", "a, b")),
        dep(pkg("a", "1.0", "")),
        dep(pkg("b", "1.5", "")),
        installed(pkg("c", "9", ""), InstallState::Warning, Origin::Explicit),
    ];
    let res = World::new(entries).installed(installed).run();
    assert_eq!(plan(&res), ["upgrade b 1.5 -> 2.0"]);
    assert!(matches!(res.plan[0], Step::Upgrade { origin: Origin::Dependency, entry: 2, .. }));
    let statuses: Vec<(&str, PackageStatus)> = res.packages.iter().map(|p| (p.name.as_str(), p.status)).collect();
    assert_eq!(
        statuses,
        [
            ("a", PackageStatus::Ok),
            ("b", PackageStatus::NeedUpgrade),
            ("c", PackageStatus::Ok),
            ("pc1.corp.lan", PackageStatus::Ok)
        ]
    );
    assert_eq!(res.host_status, HostStatus::NeedUpgrade);
}

#[test]
fn keep_walks_the_installed_entry() {
    // The installed a 1 needs x; the repository's a 1 no longer does: nothing changes.
    let entries = vec![pkg("a", "1", ""), pkg("x", "1", "")];
    let installed =
        vec![installed(pkg("a", "1", "depends: x\n"), InstallState::Ok, Origin::Explicit), dep(pkg("x", "1", ""))];
    let res = World::new(entries).installed(installed).run();
    assert!(res.plan.is_empty(), "{:?}", plan(&res));
}

#[test]
fn broken_installs_are_retried() {
    for state_ in [InstallState::Error, InstallState::Init, InstallState::Running] {
        let entries = vec![section("pc1.corp.lan", "1", "host", "a, gone"), pkg("a", "1.0", "")];
        let installed = vec![
            dep(section("pc1.corp.lan", "1", "host", "a, gone")),
            installed(pkg("a", "1.0", ""), state_, Origin::Dependency),
            installed(pkg("gone", "1.0", ""), state_, Origin::Dependency),
        ];
        let res = World::new(entries).installed(installed).run();
        assert_eq!(plan(&res), ["reinstall a 1.0"], "{state_}");
        assert_eq!(status(&res, "a"), PackageStatus::Error);
        let reason = state(&res, "a").reason.as_ref().unwrap().to_string();
        assert!(reason.contains(state_.as_str()) && reason.contains("retried"), "{reason}");
        // No candidate: stays ERROR without a step.
        assert_eq!(status(&res, "gone"), PackageStatus::Error);
        assert!(res.errors.is_empty());
        assert_eq!(res.host_status, HostStatus::Error);
    }
}

#[test]
fn host_package_dropping_a_dependency_removes_it() {
    let entries = vec![section("pc1.corp.lan", "2", "host", "b"), pkg("a", "1", ""), pkg("b", "1", "")];
    let installed = vec![
        dep(section("pc1.corp.lan", "1", "host", "a, b")),
        dep(pkg("a", "1", "depends: lib\n")),
        dep(pkg("lib", "1", "")),
        dep(pkg("b", "1", "")),
        installed(section("OU=Old,DC=corp", "1", "unit", ""), InstallState::Ok, Origin::Explicit),
    ];
    let res = World::new(entries).installed(installed).run();
    assert_eq!(
        plan(&res),
        [
            "remove OU=Old,DC=corp 1 (no longer expected on this host)",
            "remove a 1 (no longer expected on this host)",
            "remove lib 1 (no longer expected on this host)",
            "upgrade pc1.corp.lan 1 -> 2",
        ]
    );
    assert_eq!(status(&res, "a"), PackageStatus::NeedRemove);
    assert_eq!(state(&res, "a").target, None);
}

#[test]
fn an_incomplete_resolution_removes_nothing_it_cannot_see() {
    // Offline, the host package's record is out of reach: its entry is missing. What it
    // required stays (and its status is OK), while what is known still resolves.
    let entries = vec![pkg("a", "2", ""), pkg("c", "1", "conflicts: d\n")];
    let installed = vec![
        dep(section("pc1.corp.lan", "1", "host", "a, b")),
        dep(pkg("a", "1", "")),
        dep(pkg("b", "1", "")),
        installed(pkg("d", "1", ""), InstallState::Ok, Origin::Explicit),
    ];
    let mut w = World::new(entries).installed(installed).requested(&["c"]);
    w.incomplete = true;
    let res = w.run();
    assert_eq!(plan(&res), ["remove d 1 (conflicts with c)", "install c 1"], "no 'no longer expected' removal");
    for name in ["pc1.corp.lan", "a", "b"] {
        assert_eq!(status(&res, name), PackageStatus::Ok, "{name} kept: {res:#?}");
    }
    // The same world, complete: the host package, a and b go.
    w.incomplete = false;
    let res = w.run();
    assert!(plan(&res).iter().filter(|s| s.contains("no longer expected")).count() == 3, "{:?}", plan(&res));
}

#[test]
fn explicit_packages_are_kept() {
    let installed = vec![
        installed(pkg("mine", "1", "depends: helper\n"), InstallState::Ok, Origin::Explicit),
        dep(pkg("helper", "1", "")),
        dep(pkg("leftover", "1", "")),
    ];
    let res = World::new(vec![]).installed(installed).run();
    assert_eq!(plan(&res), ["remove leftover 1 (no longer expected on this host)"]);
    assert_eq!(status(&res, "mine"), PackageStatus::Ok);
    assert_eq!(status(&res, "helper"), PackageStatus::Ok);
}

#[test]
fn requested_packages_are_explicit() {
    let entries = vec![
        section("pc1.corp.lan", "1", "host", "shared"),
        pkg("app", "2", "depends: shared\n"),
        pkg("shared", "1", ""),
    ];
    let res = World::new(entries).requested(&["app(>=2)"]).run();
    let origins: Vec<(&str, Origin)> = res
        .plan
        .iter()
        .map(|s| match s {
            Step::Install { name, origin, .. } => (name.as_str(), *origin),
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(
        origins,
        [("shared", Origin::Explicit), ("app", Origin::Explicit), ("pc1.corp.lan", Origin::Dependency)]
    );
}

#[test]
fn conflicting_installed_package_is_removed_first() {
    let entries = vec![section("pc1.corp.lan", "1", "host", "new"), pkg("new", "2", "conflicts: old\n")];
    let installed = vec![dep(pkg("old", "1", ""))];
    let res = World::new(entries).installed(installed).run();
    assert_eq!(plan(&res), ["remove old 1 (conflicts with new)", "install new 2", "install pc1.corp.lan 1"]);
    assert_eq!(state(&res, "old").reason, Some(StatusReason::Removal(RemoveReason::ConflictsWith("new".into()))));
    assert_eq!(state(&res, "old").reason.as_ref().unwrap().to_string(), "conflicts with new");
    assert!(res.errors.is_empty());
    // The other direction: the installed package names the new one.
    let installed = vec![dep(pkg("old", "1", "conflicts: new(>=2)\n"))];
    let entries = vec![section("pc1.corp.lan", "1", "host", "new"), pkg("new", "2", "")];
    let res = World::new(entries).installed(installed).run();
    assert_eq!(plan(&res)[0], "remove old 1 (conflicts with new)");
}

#[test]
fn conflict_between_required_packages() {
    // A package installed locally gives way to the host package, without an error.
    let entries = vec![
        section("pc1.corp.lan", "1", "host", "zeta"),
        pkg("zeta", "1", ""),
        pkg("alpha", "1", "conflicts: zeta\n"),
    ];
    let kept = || vec![installed(pkg("alpha", "1", "conflicts: zeta\n"), InstallState::Ok, Origin::Explicit)];
    let res = World::new(entries.clone()).installed(kept()).run();
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    assert_eq!(plan(&res), ["remove alpha 1 (conflicts with zeta)", "install zeta 1", "install pc1.corp.lan 1"]);
    assert_eq!(status(&res, "alpha"), PackageStatus::NeedRemove);
    assert_eq!(res.host_status, HostStatus::NeedUpgrade);
    // A new local request that conflicts with the host package is an error, and loses.
    let res = World::new(entries).requested(&["alpha"]).run();
    assert_eq!(res.errors, [ResolveError::Conflict { package: "alpha".into(), with: "zeta".into() }]);
    assert_eq!(plan(&res), ["install zeta 1", "install pc1.corp.lan 1"]);
    assert_eq!(status(&res, "alpha"), PackageStatus::Error);
    // A new local request wins over a package installed locally before.
    let entries = vec![pkg("zeta", "1", ""), pkg("alpha", "1", "conflicts: zeta\n")];
    let res = World::new(entries).installed(kept()).requested(&["zeta"]).run();
    assert!(res.errors.is_empty(), "{:?}", res.errors);
    assert_eq!(plan(&res), ["remove alpha 1 (conflicts with zeta)", "install zeta 1"]);
    // Both managed: the later name loses, and with it the host package that needs it.
    let entries =
        vec![section("pc1.corp.lan", "1", "host", "a, b"), pkg("a", "1", "conflicts: b\n"), pkg("b", "1", "")];
    let res = World::new(entries).run();
    assert_eq!(errors(&res), ["b conflicts with a, which is also required; b is left out"]);
    assert!(res.plan.is_empty());
    assert_eq!(status(&res, "b"), PackageStatus::Error);
    assert_eq!(status(&res, "pc1.corp.lan"), PackageStatus::Error);
}

#[test]
fn cycles_are_reported_once() {
    let entries = vec![
        section("pc1.corp.lan", "1", "host", "a, c"),
        pkg("a", "1", "depends: b\n"),
        pkg("b", "1", "depends: a, c\n"),
        pkg("c", "1", "depends: c\n"),
    ];
    let res = World::new(entries).run();
    assert_eq!(
        res.errors,
        [
            ResolveError::Cycle { path: vec!["a".into(), "b".into(), "a".into()] },
            ResolveError::Cycle { path: vec!["c".into(), "c".into()] },
        ]
    );
    assert_eq!(errors(&res)[0], "dependency cycle: a -> b -> a");
    assert!(res.plan.is_empty());
    for name in ["a", "b", "c", "pc1.corp.lan"] {
        assert_eq!(status(&res, name), PackageStatus::Error, "{name}");
    }
}

fn chain(len: usize) -> Vec<PackageEntry> {
    (1..=len)
        .map(|i| {
            let depends = if i < len { format!("depends: p{:02}\n", i + 1) } else { String::new() };
            pkg(&format!("p{i:02}"), "1", &depends)
        })
        .collect()
}

#[test]
fn depth_limit() {
    let res = World::new(chain(MAX_DEPENDENCY_DEPTH)).requested(&["p01"]).run();
    assert!(res.errors.is_empty());
    assert_eq!(res.plan.len(), MAX_DEPENDENCY_DEPTH);
    assert_eq!(res.plan[0].name(), "p30");
    let res = World::new(chain(MAX_DEPENDENCY_DEPTH + 1)).requested(&["p01"]).run();
    let want: Vec<String> = (1..=31).map(|i| format!("p{i:02}")).collect();
    assert_eq!(res.errors, [ResolveError::TooDeep { path: want }]);
    assert!(res.plan.is_empty());
    assert_eq!(status(&res, "p01"), PackageStatus::Error);
    // A deeper chain is reported once, at the 31st package from its bottom.
    let res = World::new(chain(40)).requested(&["p01"]).run();
    assert!(matches!(&res.errors[..], [ResolveError::TooDeep { path }] if path[0] == "p10" && path.len() == 31));
}

#[test]
fn requests_are_satisfied_together_and_rechosen() {
    // b 2 needs c >= 2, but d pins b below 2, so b 1 is chosen and its c < 2.
    let entries = vec![
        pkg("r", "1", "depends: b, d\n"),
        pkg("b", "2", "depends: c(>=2)\n"),
        pkg("b", "1", "depends: c(<2)\n"),
        pkg("c", "1", ""),
        pkg("c", "2", ""),
        pkg("d", "1", "depends: b(<2)\n"),
    ];
    let res = World::new(entries).requested(&["r"]).run();
    assert!(res.errors.is_empty(), "{:?}", errors(&res));
    assert_eq!(plan(&res), ["install c 1", "install b 1", "install d 1", "install r 1"]);
    // Choices that would oscillate when recomputed settle by accumulating the requests.
    let entries = vec![
        pkg("a", "1", "depends: b\n"),
        pkg("b", "2", "depends: x(>=2)\n"),
        pkg("b", "1", ""),
        pkg("x", "2", "depends: b(<2)\n"),
    ];
    let res = World::new(entries).requested(&["a"]).run();
    assert!(res.errors.is_empty(), "{:?}", errors(&res));
    assert_eq!(plan(&res), ["install b 1", "install a 1"]);
}

#[test]
fn unsatisfiable_requests() {
    let entries = vec![
        pkg("a", "1", "depends: lib(>=2)\n"),
        pkg("b", "1", "depends: lib(<2)\n"),
        pkg("lib", "1", ""),
        pkg("lib", "2", ""),
    ];
    let res = World::new(entries).requested(&["a", "b"]).run();
    assert_eq!(errors(&res), ["no version of lib satisfies all of: lib(<2) (from b), lib(>=2) (from a)"]);
    assert!(res.plan.is_empty());
    assert_eq!(status(&res, "a"), PackageStatus::Error);
}

#[test]
fn plan_order() {
    let entries = vec![
        section("pc1.corp.lan", "2", "host", "app"),
        pkg("app", "1", "depends: lib, zlib\n"),
        pkg("lib", "1", "depends: zlib\n"),
        pkg("zlib", "1", ""),
    ];
    let installed = vec![
        dep(section("pc1.corp.lan", "1", "host", "old-app")),
        dep(pkg("old-app", "1", "depends: old-lib\n")),
        dep(pkg("old-lib", "1", "depends: a-base\n")),
        dep(pkg("a-base", "1", "")),
    ];
    let res = World::new(entries).installed(installed).run();
    let names: Vec<&str> = res.plan.iter().map(Step::name).collect();
    assert_eq!(names, ["old-app", "old-lib", "a-base", "zlib", "lib", "app", "pc1.corp.lan"]);
}

#[test]
fn host_status_precedence() {
    let ok = World::new(vec![pkg("a", "1", "")]).installed(vec![installed(
        pkg("a", "1", ""),
        InstallState::Ok,
        Origin::Explicit,
    )]);
    assert_eq!(ok.run().host_status, HostStatus::Ok);
    let pending = World::new(vec![pkg("a", "2", "")]).installed(ok.installed);
    assert_eq!(pending.run().host_status, HostStatus::NeedUpgrade);
    let mut failed = World::new(vec![pkg("a", "2", ""), pkg("b", "1", "")]).requested(&["b"]);
    failed.installed = vec![installed(pkg("a", "1", ""), InstallState::Error, Origin::Explicit)];
    let res = failed.run();
    assert_eq!((res.host_status, res.plan.len()), (HostStatus::Error, 2));
    let missing = World::new(vec![]).requested(&["x"]);
    assert_eq!(missing.run().host_status, HostStatus::Error);
}

#[test]
fn serialized_forms() {
    assert_eq!(text(&PackageStatus::NeedInstall), "\"NEED-INSTALL\"");
    assert_eq!(text(&PackageStatus::Ok), "\"OK\"");
    assert_eq!(text(&HostStatus::NeedUpgrade), "\"NEED-UPGRADE\"");
    assert_eq!(text(&InstallState::Running), "\"RUNNING\"");
    assert_eq!(text(&Origin::Explicit), "\"explicit\"");
    let step = Step::Remove {
        name: "a".into(),
        version: Version::parse("1.0").unwrap(),
        reason: RemoveReason::ConflictsWith("b".into()),
    };
    assert_eq!(text(&step), r#"{"action":"remove","name":"a","version":"1.0","reason":{"conflicts_with":"b"}}"#);
    assert_eq!(PackageStatus::NeedRemove.to_string(), "NEED-REMOVE");
    let host: HostIdentity = serde_json::from_str(r#"{"fqdn":"pc1"}"#).unwrap();
    assert_eq!(host.fqdn.as_deref(), Some("pc1"));
    let state: InstallState = serde_json::from_str("\"WARNING\"").unwrap();
    assert_eq!(state, InstallState::Warning);
}

fn text<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap()
}
