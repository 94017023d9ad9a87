//! From the settled graph to the output: conflicts between required packages, removals,
//! the ordered plan and the statuses.

use std::collections::{BTreeMap, BTreeSet};

use super::graph::{self, Blocked, Choice, Context, Findings, Root, RootKind, Walk};
use super::{
    HostStatus, Origin, PackageState, PackageStatus, RemoveReason, Resolution, ResolveError, StatusReason, Step,
};
use crate::entry::PackageEntry;

/// Which names the plan must provide.
#[derive(Debug)]
struct Reach {
    /// Reachable from viable roots.
    required: BTreeSet<String>,
    /// Reachable from viable host/unit/profile roots.
    managed: BTreeSet<String>,
    /// Reachable from viable explicit roots (new requests and packages installed locally).
    explicit: BTreeSet<String>,
    /// Reachable from viable new local requests.
    requested: BTreeSet<String>,
}

impl Reach {
    fn new(roots: &[Root], walk: &Walk, blocked: &BTreeMap<String, Blocked>) -> Self {
        let from = |kinds: &[RootKind]| {
            let starts = roots.iter().filter(|r| kinds.contains(&r.kind)).map(|r| r.request.name.as_str());
            reachable(walk, starts, blocked)
        };
        let managed = from(&[RootKind::Host, RootKind::Unit, RootKind::Profile]);
        let explicit = from(&[RootKind::Explicit, RootKind::Kept]);
        let requested = from(&[RootKind::Explicit]);
        let required = managed.union(&explicit).cloned().collect();
        Self { required, managed, explicit, requested }
    }

    /// Who wins a conflict: host/unit/profile packages, then new local requests, then
    /// packages kept because they were installed locally.
    fn priority(&self, name: &str) -> u8 {
        if self.managed.contains(name) {
            2
        } else if self.requested.contains(name) {
            1
        } else {
            0
        }
    }
}

/// Viable names reachable from the viable ones among `starts`.
fn reachable<'w>(
    walk: &'w Walk,
    starts: impl Iterator<Item = &'w str>,
    blocked: &BTreeMap<String, Blocked>,
) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = starts.collect();
    while let Some(name) = stack.pop() {
        if blocked.contains_key(name) || !walk.choices.contains_key(name) || !seen.insert(name.to_string()) {
            continue;
        }
        stack.extend(walk.deps[name].iter().map(|d| d.name.as_str()));
    }
    seen
}

/// True when either entry's `conflicts` match the other.
fn in_conflict(a: &PackageEntry, b: &PackageEntry) -> bool {
    a.name != b.name
        && (a.conflicts.iter().any(|c| c.matches(&b.name, &b.version))
            || b.conflicts.iter().any(|c| c.matches(&a.name, &a.version)))
}

/// The first pair of required packages in conflict, as (loser, winner).
fn first_conflict(ctx: &Context<'_>, walk: &Walk, reach: &Reach) -> Option<(String, String)> {
    let target = |n: &str| ctx.entry(n, walk.choices[n]);
    let mut pairs = BTreeSet::new();
    for a in &reach.required {
        let Some(ea) = target(a) else { continue };
        let names = ea.conflicts.iter().map(|c| c.name.as_str()).filter(|n| reach.required.contains(*n));
        for b in names {
            if target(b).is_some_and(|eb| in_conflict(ea, eb)) {
                pairs.insert(if a.as_str() < b { (a.as_str(), b) } else { (b, a.as_str()) });
            }
        }
    }
    let (a, b) = pairs.into_iter().next()?;
    let (a, b) = (a.to_string(), b.to_string());
    // The lower priority loses; on a tie, the later name.
    Some(if reach.priority(&a) < reach.priority(&b) { (a, b) } else { (b, a) })
}

/// Dependency order over `nodes` (`edges` are `(before, after)`), ties by name; a cycle is
/// broken at its smallest name.
fn topological<'s>(nodes: &BTreeSet<&'s str>, edges: &[(&'s str, &'s str)]) -> Vec<&'s str> {
    let mut after: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut indegree: BTreeMap<&str, usize> = nodes.iter().map(|&n| (n, 0)).collect();
    for &(a, b) in edges {
        if a != b && nodes.contains(a) && nodes.contains(b) && after.entry(a).or_default().insert(b) {
            *indegree.entry(b).or_default() += 1;
        }
    }
    let mut ready: BTreeSet<&str> = indegree.iter().filter(|&(_, &d)| d == 0).map(|(&n, _)| n).collect();
    let mut order = Vec::with_capacity(nodes.len());
    loop {
        let next = match ready.pop_first() {
            Some(n) => n,
            None => match indegree.keys().next() {
                Some(&n) => n,
                None => break,
            },
        };
        indegree.remove(next);
        order.push(next);
        for &b in after.get(next).into_iter().flatten() {
            if let Some(d) = indegree.get_mut(b) {
                *d = d.saturating_sub(1);
                if *d == 0 {
                    ready.insert(b);
                }
            }
        }
    }
    order
}

/// Builds the resolution from the settled walk and what was found wrong.
pub(super) fn build(ctx: &Context<'_>, roots: &[Root], walk: &Walk, mut findings: Findings) -> Resolution {
    // Two required packages in conflict. A package kept only because it was installed locally
    // gives way: its root is dropped and it is removed below, without an error (a host,
    // unit or profile package, or a new request, that conflicts with it is the newer wish).
    // Otherwise the loser is not viable, which may drop others. Each round drops a root or
    // makes one more name bad, so this ends.
    let mut roots = roots.to_vec();
    let (blocked, reach) = loop {
        let blocked = graph::blocked(walk, &findings);
        let reach = Reach::new(&roots, walk, &blocked);
        let Some((loser, winner)) = first_conflict(ctx, walk, &reach) else {
            break (blocked, reach);
        };
        if reach.priority(&loser) == 0 && reach.priority(&winner) > 0 {
            let before = roots.len();
            roots.retain(|r| !(r.kind == RootKind::Kept && r.request.name == loser));
            if roots.len() < before {
                continue;
            }
        }
        findings.report(ResolveError::Conflict { package: loser.clone(), with: winner }, &[&loser]);
        findings.bad.insert(loser);
    };
    let target = |n: &str| ctx.entry(n, walk.choices[n]);

    let mut removals: BTreeMap<&str, RemoveReason> = BTreeMap::new();
    for (&name, installed) in &ctx.installed {
        if reach.required.contains(name) {
            continue;
        }
        let conflict = reach.required.iter().find(|r| target(r).is_some_and(|e| in_conflict(e, &installed.entry)));
        if let Some(with) = conflict {
            removals.insert(name, RemoveReason::ConflictsWith(with.clone()));
        } else if !ctx.incomplete
            && !walk.choices.contains_key(name)
            && (installed.origin == Origin::Dependency || installed.entry.section.is_implicit())
        {
            removals.insert(name, RemoveReason::NoLongerExpected);
        }
    }

    let mut plan = Vec::new();
    let removed: BTreeSet<&str> = removals.keys().copied().collect();
    let edges: Vec<(&str, &str)> = removed
        .iter()
        .flat_map(|&n| ctx.installed[n].entry.depends.iter().map(move |d| (n, d.name.as_str())))
        .collect();
    for name in topological(&removed, &edges) {
        let version = ctx.installed[name].entry.version.clone();
        plan.push(Step::Remove { name: name.to_string(), version, reason: removals[name].clone() });
    }
    let required: BTreeSet<&str> = reach.required.iter().map(String::as_str).collect();
    let edges: Vec<(&str, &str)> =
        required.iter().flat_map(|&n| walk.deps[n].iter().map(move |d| (d.name.as_str(), n))).collect();
    let mut steps: BTreeMap<&str, usize> = BTreeMap::new();
    for name in topological(&required, &edges) {
        let Choice::Entry(entry) = walk.choices[name] else { continue };
        let version = ctx.entries[entry].version.clone();
        let origin = if reach.explicit.contains(name) { Origin::Explicit } else { Origin::Dependency };
        let name_s = name.to_string();
        steps.insert(name, plan.len());
        plan.push(match ctx.installed.get(name) {
            Some(p) => Step::Upgrade { name: name_s, from: p.entry.version.clone(), version, entry, origin },
            None => Step::Install { name: name_s, version, entry, origin },
        });
    }

    let names: BTreeSet<&str> = ctx
        .installed
        .keys()
        .copied()
        .chain(required.iter().copied())
        .chain(blocked.keys().map(String::as_str))
        .collect();
    let mut packages = Vec::with_capacity(names.len());
    for name in names {
        let installed = ctx.installed.get(name);
        let removal = removals.get(name);
        let step = steps.get(name).map(|&i| &plan[i]);
        let broken = installed.filter(|p| p.state.is_broken());
        let status = if blocked.contains_key(name) || broken.is_some() {
            PackageStatus::Error
        } else if removal.is_some() {
            PackageStatus::NeedRemove
        } else {
            match step {
                Some(Step::Install { .. }) => PackageStatus::NeedInstall,
                Some(_) => PackageStatus::NeedUpgrade,
                None => PackageStatus::Ok,
            }
        };
        let target = match (removal, step) {
            (Some(_), _) => None,
            (None, Some(Step::Install { version, .. } | Step::Upgrade { version, .. })) => Some(version.clone()),
            _ => installed.map(|p| p.entry.version.clone()),
        };
        let reason = match status {
            PackageStatus::Error => Some(match (blocked.get(name), broken) {
                (Some(b), _) => graph::reason(name, b, &findings),
                (None, Some(p)) => StatusReason::LastInstall {
                    version: p.entry.version.clone(),
                    state: p.state,
                    retry: step.and(target.clone()),
                    removal: removal.cloned(),
                },
                (None, None) => StatusReason::CannotBeInstalled,
            }),
            PackageStatus::NeedRemove => removal.cloned().map(StatusReason::Removal),
            _ => None,
        };
        packages.push(PackageState {
            name: name.to_string(),
            status,
            installed: installed.map(|p| p.entry.version.clone()),
            target,
            reason,
        });
    }

    let host_status = if packages.iter().any(|p| p.status == PackageStatus::Error) {
        HostStatus::Error
    } else if !plan.is_empty() {
        HostStatus::NeedUpgrade
    } else {
        HostStatus::Ok
    };
    Resolution { plan, packages, host_status, errors: findings.errors }
}
