//! Property tests on small random universes: a handful of names with one to three versions,
//! random `depends`/`conflicts` among them (cycles and names nothing provides included),
//! some entries that do not fit the host, a random installed set with random states and
//! origins, and random local requests.

use std::collections::{BTreeMap, BTreeSet};

use proptest::collection::vec;
use proptest::prelude::*;

use super::tests::entry;
use super::*;

/// `host1` is the host package; `zz` never has an entry.
const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "host1", "zz"];
const OPS: [&str; 5] = ["", ">=", "<", "=", ">"];
const STATES: [InstallState; 5] =
    [InstallState::Ok, InstallState::Warning, InstallState::Error, InstallState::Init, InstallState::Running];

#[derive(Clone, Debug)]
struct Req {
    name: usize,
    op: usize,
    version: u8,
}

impl Req {
    fn text(&self) -> String {
        match OPS[self.op] {
            "" => NAMES[self.name].to_string(),
            op => format!("{}({op}{})", NAMES[self.name], self.version),
        }
    }
}

#[derive(Clone, Debug)]
struct Spec {
    name: usize,
    version: u8,
    /// 0: wrong architecture, 1: wrong maturity, otherwise fits.
    filter: u8,
    depends: Vec<Req>,
    conflicts: Vec<Req>,
}

impl Spec {
    fn entry(&self) -> PackageEntry {
        let list = |reqs: &[Req]| reqs.iter().map(Req::text).collect::<Vec<_>>().join(", ");
        let name = NAMES[self.name];
        let section = if name == "host1" { "host" } else { "base" };
        let arch = if self.filter == 0 { "arm64" } else { "all" };
        let maturity = if self.filter == 1 { "DEV" } else { "PROD" };
        entry(&format!(
            "package: {name}\nversion: {}\narchitecture: {arch}\nsection: {section}\npriority: optional\n\
             maturity: {maturity}\ndepends: {}\nconflicts: {}\n",
            self.version,
            list(&self.depends),
            list(&self.conflicts)
        ))
    }
}

fn req() -> impl Strategy<Value = Req> {
    // Mostly names that exist and plain requests, so that plans are not all blocked.
    let name = prop_oneof![9 => 0..NAMES.len() - 1, 1 => Just(NAMES.len() - 1)];
    let op = prop_oneof![3 => Just(0), 2 => 1..OPS.len()];
    (name, op, 1u8..=3).prop_map(|(name, op, version)| Req { name, op, version })
}

fn spec() -> impl Strategy<Value = Spec> {
    (0..NAMES.len() - 1, 1u8..=3, 0u8..10, vec(req(), 0..3), vec(req(), 0..2))
        .prop_map(|(name, version, filter, depends, conflicts)| Spec { name, version, filter, depends, conflicts })
}

#[derive(Debug)]
struct World {
    entries: Vec<PackageEntry>,
    installed: Vec<InstalledPackage>,
    requested: Vec<PackageRequest>,
    host: HostIdentity,
    caps: HostCapabilities,
}

fn in_conflict(a: &PackageEntry, b: &PackageEntry) -> bool {
    a.name != b.name
        && (a.conflicts.iter().any(|c| c.matches(&b.name, &b.version))
            || b.conflicts.iter().any(|c| c.matches(&a.name, &a.version)))
}

fn world() -> impl Strategy<Value = World> {
    (vec(spec(), 1..14), vec((spec(), 0..STATES.len(), any::<bool>()), 0..6), vec(req(), 0..3)).prop_map(
        |(entries, installed_specs, requested)| {
            // Installed sets come from earlier plans: one per name, no conflicts among them.
            let mut installed: Vec<InstalledPackage> = Vec::new();
            for (spec, state, explicit) in installed_specs {
                let e = spec.entry();
                if installed.iter().any(|p| p.entry.name == e.name || in_conflict(&p.entry, &e)) {
                    continue;
                }
                let origin = if explicit { Origin::Explicit } else { Origin::Dependency };
                installed.push(InstalledPackage { entry: e, state: STATES[state], origin });
            }
            World {
                entries: entries.iter().map(Spec::entry).collect(),
                installed,
                requested: requested.iter().map(|r| PackageRequest::parse(&r.text()).unwrap()).collect(),
                host: HostIdentity { fqdn: Some("host1".into()), ..HostIdentity::default() },
                caps: HostCapabilities { architectures: vec!["x64".into()], ..HostCapabilities::default() },
            }
        },
    )
}

impl World {
    fn input(&self) -> ResolveInput<'_> {
        ResolveInput {
            entries: &self.entries,
            host: &self.host,
            capabilities: &self.caps,
            installed: &self.installed,
            requested: &self.requested,
            incomplete: false,
        }
    }

    fn resolve(&self) -> Resolution {
        resolve(&self.input())
    }

    fn satisfiable(&self, r: &PackageRequest) -> bool {
        let fits = |e: &PackageEntry| e.name == r.name && r.matches_version(&e.version);
        self.installed.iter().any(|p| fits(&p.entry))
            || self.entries.iter().any(|e| fits(e) && e.mismatch(&self.caps).is_none())
    }
}

/// True when everything `start` needs in `after` is there, satisfies the requests, and has
/// no cycle.
fn closure_ok(after: &BTreeMap<&str, &PackageEntry>, start: &str) -> bool {
    let mut color: BTreeMap<&str, bool> = BTreeMap::from([(start, false)]); // false: on the path
    let mut frames = vec![(start, 0)];
    while let Some(frame) = frames.last_mut() {
        let (name, i) = *frame;
        let Some(d) = after[name].depends.get(i) else {
            color.insert(name, true);
            frames.pop();
            continue;
        };
        frame.1 += 1;
        let Some((&dep_name, dep)) = after.get_key_value(d.name.as_str()) else { return false };
        if !d.matches_version(&dep.version) || color.get(dep_name) == Some(&false) {
            return false;
        }
        if !color.contains_key(dep_name) {
            color.insert(dep_name, false);
            frames.push((dep_name, 0));
        }
    }
    true
}

fn check(w: &World, res: &Resolution) -> Result<(), TestCaseError> {
    let before: BTreeMap<&str, &InstalledPackage> = w.installed.iter().map(|p| (p.entry.name.as_str(), p)).collect();
    let names: Vec<&str> = res.plan.iter().map(Step::name).collect();
    prop_assert_eq!(names.iter().collect::<BTreeSet<_>>().len(), names.len(), "a name twice in the plan");

    // (e) removals first.
    let first = res.plan.iter().position(|s| !matches!(s, Step::Remove { .. })).unwrap_or(res.plan.len());
    prop_assert!(res.plan[first..].iter().all(|s| !matches!(s, Step::Remove { .. })), "removal after an install");

    // (b) and (c): apply the plan.
    let changed: BTreeSet<&str> = names.iter().copied().collect();
    let mut after: BTreeMap<&str, &PackageEntry> = before.iter().map(|(&n, p)| (n, &p.entry)).collect();
    let mut done: BTreeMap<&str, &PackageEntry> = BTreeMap::new();
    for step in &res.plan {
        match step {
            Step::Remove { name, version, .. } => {
                let gone = after.remove(name.as_str());
                prop_assert!(gone.is_some_and(|e| e.version == *version), "removes what is not installed: {}", step);
            }
            Step::Install { name, version, entry, .. } | Step::Upgrade { name, version, entry, .. } => {
                let e = &w.entries[*entry];
                prop_assert!(e.name == *name && e.version == *version && e.mismatch(&w.caps).is_none());
                match step {
                    Step::Upgrade { from, .. } => {
                        prop_assert!(before.get(name.as_str()).is_some_and(|p| p.entry.version == *from));
                    }
                    _ => prop_assert!(!before.contains_key(name.as_str())),
                }
                for d in &e.depends {
                    let n = d.name.as_str();
                    let kept =
                        !changed.contains(n) && before.get(n).is_some_and(|p| d.matches_version(&p.entry.version));
                    let earlier = done.get(n).is_some_and(|p| d.matches_version(&p.version));
                    prop_assert!(kept || earlier, "{} needs {} before it", step, d);
                }
                done.insert(name.as_str(), e);
                after.insert(name.as_str(), e);
            }
        }
    }
    for (a, ea) in &after {
        for (b, eb) in &after {
            prop_assert!(!in_conflict(ea, eb), "{} and {} conflict after the plan", a, b);
        }
    }
    for name in done.keys() {
        prop_assert!(closure_ok(&after, name), "{} is planned with a cycle or a hole below it", name);
    }

    // (d) every ERROR comes from an error or a failed install; failures are reported.
    let messages: Vec<String> = res.errors.iter().map(ToString::to_string).collect();
    for p in &res.packages {
        let broken = before.get(p.name.as_str()).is_some_and(|i| i.state.is_broken());
        if p.status == PackageStatus::Error {
            let reason = p.reason.as_ref().map(ToString::to_string).unwrap_or_default();
            prop_assert!(broken || messages.iter().any(|m| reason.ends_with(m.as_str())), "unexplained ERROR {:?}", p);
        } else {
            prop_assert!(!broken, "failed install not in ERROR: {:?}", p);
        }
    }
    let host1_fits = w.entries.iter().any(|e| e.name == "host1" && e.mismatch(&w.caps).is_none());
    let mut wanted: Vec<PackageRequest> = w.requested.clone();
    if host1_fits {
        wanted.push(PackageRequest::any("host1"));
    }
    for r in &wanted {
        if !w.satisfiable(r) {
            let reported =
                res.errors.iter().any(|e| matches!(e, ResolveError::Missing { request, .. } if request == r));
            prop_assert!(reported, "{} cannot be satisfied and no Missing error says so", r);
        }
        let fine =
            after.get(r.name.as_str()).is_some_and(|e| r.matches_version(&e.version)) && closure_ok(&after, &r.name);
        prop_assert!(fine || !res.errors.is_empty(), "{} is not provided and no error says why", r);
    }
    let error = res.packages.iter().any(|p| p.status == PackageStatus::Error);
    let want = if error {
        HostStatus::Error
    } else if res.plan.is_empty() {
        HostStatus::Ok
    } else {
        HostStatus::NeedUpgrade
    };
    prop_assert_eq!(res.host_status, want);
    Ok(())
}

proptest! {
    #[test]
    fn resolution_properties(w in world()) {
        // (a) returns; the same input gives the same output.
        let res = w.resolve();
        prop_assert_eq!(&res, &w.resolve());
        check(&w, &res)?;
        // (b) an incomplete resolution never removes a package as no longer expected.
        let partial = resolve(&ResolveInput { incomplete: true, ..w.input() });
        let removes_unseen =
            partial.plan.iter().any(|s| matches!(s, Step::Remove { reason: RemoveReason::NoLongerExpected, .. }));
        prop_assert!(!removes_unseen, "an incomplete resolution removed what it could not see");
    }
}
