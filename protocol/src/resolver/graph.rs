//! The dependency graph: candidates, roots, choices settled to a fixed point, and the checks
//! on the result (unsatisfied names, cycles, depth, and which names that makes non-viable).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::{HostIdentity, InstalledPackage, Origin, ResolveError, ResolveInput, StatusReason, dn, unit_names};
use crate::entry::{HostCapabilities, MAX_DEPENDENCY_DEPTH, PackageEntry};
use crate::request::PackageRequest;

/// How many entries a [`ResolveError::Missing`] detail lists.
const MAX_DETAIL_ENTRIES: usize = 5;

/// Where a root comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum RootKind {
    Host,
    Unit,
    Profile,
    /// A new local request.
    Explicit,
    /// A package installed locally earlier (origin Explicit), kept until removed.
    Kept,
}

/// A root request.
#[derive(Clone, Debug)]
pub(super) struct Root {
    pub kind: RootKind,
    pub request: PackageRequest,
}

/// Who made a request.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Requester {
    Root(RootKind),
    Package(String),
}

impl Requester {
    fn label(&self) -> &str {
        match self {
            Self::Root(RootKind::Host) => "the host",
            Self::Root(RootKind::Unit) => "the host's unit",
            Self::Root(RootKind::Profile) => "a host profile",
            Self::Root(RootKind::Explicit) => "a local request",
            Self::Root(RootKind::Kept) => "a package installed locally",
            Self::Package(name) => name,
        }
    }
}

/// What a name resolves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Choice {
    /// The installed package, as it is.
    Installed,
    /// This entry (index into the input entries), to install or upgrade to.
    Entry(usize),
    /// Nothing satisfies the requests.
    Nothing,
}

/// Requests per name, keyed by their text, with who made them.
pub(super) type Requests = BTreeMap<String, BTreeMap<String, (PackageRequest, BTreeSet<Requester>)>>;

/// The input, indexed.
#[derive(Debug)]
pub(super) struct Context<'a> {
    pub entries: &'a [PackageEntry],
    caps: &'a HostCapabilities,
    /// Fitting entries per name, best first.
    candidates: BTreeMap<&'a str, Vec<usize>>,
    /// Installed packages per name (first one wins).
    pub installed: BTreeMap<&'a str, &'a InstalledPackage>,
    /// Nothing is removed as no longer expected ([`ResolveInput::incomplete`]).
    pub incomplete: bool,
}

impl<'a> Context<'a> {
    pub(super) fn new(input: &ResolveInput<'a>) -> Self {
        let caps = input.capabilities;
        let mut candidates: BTreeMap<&'a str, Vec<usize>> = BTreeMap::new();
        for (i, e) in input.entries.iter().enumerate() {
            if e.mismatch(caps).is_none() {
                candidates.entry(e.name.as_str()).or_default().push(i);
            }
        }
        for list in candidates.values_mut() {
            list.sort_by(|&a, &b| input.entries[b].preference(&input.entries[a], caps));
        }
        let mut installed = BTreeMap::new();
        for p in input.installed {
            installed.entry(p.entry.name.as_str()).or_insert(p);
        }
        Self { entries: input.entries, caps, candidates, installed, incomplete: input.incomplete }
    }

    /// Managed roots (by name among fitting entries), then explicit ones.
    pub(super) fn roots(&self, host: &HostIdentity, requested: &[PackageRequest]) -> Vec<Root> {
        let lower = |s: &str| s.trim().to_lowercase();
        let host_names: Vec<String> =
            [&host.uuid, &host.fqdn].into_iter().flatten().map(|s| lower(s)).filter(|s| !s.is_empty()).collect();
        let units: Vec<String> =
            host.ou.as_deref().map(unit_names).unwrap_or_default().iter().map(|u| lower(u)).collect();
        let profiles: Vec<String> = host.profiles.iter().map(|p| lower(p)).filter(|p| !p.is_empty()).collect();
        let mut roots = Vec::new();
        for &name in self.candidates.keys() {
            let low = lower(name);
            let kind = if host_names.contains(&low) {
                Some(RootKind::Host)
            } else if !units.is_empty() && dn::canonical(name).is_some_and(|c| units.contains(&lower(&c))) {
                Some(RootKind::Unit)
            } else if profiles.contains(&low) {
                Some(RootKind::Profile)
            } else {
                None
            };
            if let Some(kind) = kind {
                roots.push(Root { kind, request: PackageRequest::any(name) });
            }
        }
        for request in requested {
            roots.push(Root { kind: RootKind::Explicit, request: request.clone() });
        }
        for (&name, p) in &self.installed {
            if p.origin == Origin::Explicit && !p.entry.section.is_implicit() {
                roots.push(Root { kind: RootKind::Kept, request: PackageRequest::any(name) });
            }
        }
        roots
    }

    /// The target for `name` under `requests` (all on that name).
    fn choose(&self, name: &str, requests: &[&PackageRequest]) -> Choice {
        let fits = |v| requests.iter().all(|r| r.matches_version(v));
        let best =
            self.candidates.get(name).and_then(|list| list.iter().copied().find(|&i| fits(&self.entries[i].version)));
        let Some(installed) = self.installed.get(name) else {
            return best.map_or(Choice::Nothing, Choice::Entry);
        };
        let keep = fits(&installed.entry.version);
        match best {
            Some(i) if installed.state.is_broken() || !keep => Choice::Entry(i),
            Some(i) if self.entries[i].version > installed.entry.version => Choice::Entry(i),
            _ if keep => Choice::Installed,
            _ => Choice::Nothing,
        }
    }

    /// The entry a choice stands for.
    pub(super) fn entry(&self, name: &str, choice: Choice) -> Option<&'a PackageEntry> {
        match choice {
            Choice::Installed => self.installed.get(name).map(|p| &p.entry),
            Choice::Entry(i) => Some(&self.entries[i]),
            Choice::Nothing => None,
        }
    }

    /// True when an installed package or a fitting entry satisfies `request` alone.
    fn satisfiable(&self, request: &PackageRequest) -> bool {
        let name = request.name.as_str();
        self.installed.get(name).is_some_and(|p| request.matches_version(&p.entry.version))
            || self
                .candidates
                .get(name)
                .is_some_and(|list| list.iter().any(|&i| request.matches_version(&self.entries[i].version)))
    }

    /// What exists for an unsatisfiable request and why it does not fit.
    fn missing_detail(&self, request: &PackageRequest) -> String {
        let mut parts = Vec::new();
        if let Some(p) = self.installed.get(request.name.as_str()) {
            parts.push(format!("installed {} {}: version does not match", p.entry.name, p.entry.version));
        }
        let mut all: Vec<&PackageEntry> = self.entries.iter().filter(|e| e.name == request.name).collect();
        all.sort_by(|a, b| b.version.cmp(&a.version));
        for e in all.iter().take(MAX_DETAIL_ENTRIES) {
            let why = e.mismatch(self.caps).map_or_else(|| "version does not match".to_string(), |m| m.to_string());
            parts.push(format!("{} {}: {why}", e.name, e.version));
        }
        if all.len() > MAX_DETAIL_ENTRIES {
            parts.push(format!("{} more entries", all.len() - MAX_DETAIL_ENTRIES));
        }
        if parts.is_empty() { format!("no package named {} exists", request.name) } else { parts.join("; ") }
    }
}

/// One walk from the roots with fixed choices.
#[derive(Debug, Default)]
pub(super) struct Walk {
    /// Every reached name and its choice.
    pub choices: BTreeMap<String, Choice>,
    /// The `depends` of each reached name's choice.
    pub deps: BTreeMap<String, Vec<PackageRequest>>,
    /// Requests made on each name during the walk.
    pub incoming: Requests,
}

fn add(requests: &mut Requests, request: &PackageRequest, from: Requester) {
    requests
        .entry(request.name.clone())
        .or_default()
        .entry(request.to_string())
        .or_insert_with(|| (request.clone(), BTreeSet::new()))
        .1
        .insert(from);
}

fn walk(ctx: &Context<'_>, roots: &[Root], constraints: &Requests) -> Walk {
    let mut w = Walk::default();
    let mut stack = Vec::new();
    for root in roots {
        add(&mut w.incoming, &root.request, Requester::Root(root.kind));
        stack.push(root.request.name.clone());
    }
    while let Some(name) = stack.pop() {
        if w.choices.contains_key(&name) {
            continue;
        }
        let requests: Vec<&PackageRequest> =
            constraints.get(&name).map(|m| m.values().map(|(r, _)| r).collect()).unwrap_or_default();
        let choice = ctx.choose(&name, &requests);
        let deps = ctx.entry(&name, choice).map(|e| e.depends.clone()).unwrap_or_default();
        for d in &deps {
            add(&mut w.incoming, d, Requester::Package(name.clone()));
            stack.push(d.name.clone());
        }
        w.choices.insert(name.clone(), choice);
        w.deps.insert(name, deps);
    }
    w
}

fn same_keys(a: &Requests, b: &Requests) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|((n, x), (m, y))| n == m && x.keys().eq(y.keys()))
}

/// Walks until the choices and the requests they lead to agree. Returns the last walk and
/// the requests its choices were made under.
pub(super) fn settle(ctx: &Context<'_>, roots: &[Root]) -> (Walk, Requests) {
    let mut constraints = Requests::new();
    for root in roots {
        add(&mut constraints, &root.request, Requester::Root(root.kind));
    }
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let mut accumulate = false;
    let mut rounds = 0;
    loop {
        let w = walk(ctx, roots, &constraints);
        for (name, m) in &w.incoming {
            seen.extend(m.keys().map(|k| (name.clone(), k.clone())));
        }
        let next = if accumulate {
            let mut merged = constraints.clone();
            for m in w.incoming.values() {
                for (request, from) in m.values() {
                    for who in from {
                        add(&mut merged, request, who.clone());
                    }
                }
            }
            merged
        } else {
            w.incoming.clone()
        };
        if same_keys(&next, &constraints) {
            return (w, next);
        }
        constraints = next;
        rounds += 1;
        // Recomputing may oscillate; accumulating only grows a finite set, so it ends.
        if rounds > seen.len() {
            if accumulate {
                return (walk(ctx, roots, &constraints), constraints);
            }
            accumulate = true;
            rounds = 0;
        }
    }
}

/// Errors found so far and the names they make unusable.
#[derive(Debug, Default)]
pub(super) struct Findings {
    pub errors: Vec<ResolveError>,
    /// Index of the first error about each name.
    pub about: BTreeMap<String, usize>,
    /// Names that cannot be installed by themselves.
    pub bad: BTreeSet<String>,
}

impl Findings {
    /// Records an error about `names`.
    pub(super) fn report(&mut self, error: ResolveError, names: &[&str]) {
        let index = self.errors.len();
        self.errors.push(error);
        for &name in names {
            self.about.entry(name.to_string()).or_insert(index);
        }
    }
}

/// Names whose target is missing or does not satisfy a request made on them.
pub(super) fn report_unsatisfied(ctx: &Context<'_>, walk: &Walk, constraints: &Requests, findings: &mut Findings) {
    for (name, &choice) in &walk.choices {
        let Some(incoming) = walk.incoming.get(name) else { continue };
        let version = ctx.entry(name, choice).map(|e| &e.version);
        if !incoming.values().any(|(r, _)| version.is_none_or(|v| !r.matches_version(v))) {
            continue;
        }
        let mut missing = false;
        for (request, from) in incoming.values() {
            if ctx.satisfiable(request) {
                continue;
            }
            missing = true;
            let detail = ctx.missing_detail(request);
            let packages: BTreeSet<&str> = from
                .iter()
                .map(|who| match who {
                    Requester::Package(p) => p.as_str(),
                    Requester::Root(_) => name.as_str(),
                })
                .collect();
            for package in packages {
                let error = ResolveError::Missing {
                    package: package.to_string(),
                    request: request.clone(),
                    detail: detail.clone(),
                };
                findings.report(error, &[package, name]);
            }
        }
        if !missing {
            let requests = constraints
                .get(name)
                .into_iter()
                .flat_map(|m| m.values())
                .map(|(r, from)| {
                    let labels: Vec<&str> = from.iter().map(Requester::label).collect();
                    format!("{r} (from {})", labels.join(", "))
                })
                .collect();
            findings.report(ResolveError::Unsatisfiable { name: name.clone(), requests }, &[name]);
        }
        findings.bad.insert(name.clone());
    }
}

/// The reached names as indices, with their successors.
fn indexed(walk: &Walk) -> (Vec<&str>, Vec<Vec<usize>>) {
    let names: Vec<&str> = walk.choices.keys().map(String::as_str).collect();
    let index: BTreeMap<&str, usize> = names.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let succ = names
        .iter()
        .map(|n| {
            let mut s: Vec<usize> = walk.deps[*n].iter().filter_map(|d| index.get(d.name.as_str()).copied()).collect();
            s.sort_unstable();
            s.dedup();
            s
        })
        .collect();
    (names, succ)
}

/// One [`ResolveError::Cycle`] per strongly connected component with a cycle; all its
/// members are bad.
pub(super) fn report_cycles(walk: &Walk, findings: &mut Findings) {
    let (names, succ) = indexed(walk);
    let mut components = strongly_connected(&succ);
    components.sort();
    for members in components {
        let start = members[0];
        if members.len() == 1 && !succ[start].contains(&start) {
            continue;
        }
        let path = cycle_through(&succ, &members, start).into_iter().map(|i| names[i].to_string()).collect();
        let member_names: Vec<&str> = members.iter().map(|&i| names[i]).collect();
        findings.report(ResolveError::Cycle { path }, &member_names);
        findings.bad.extend(member_names.iter().map(|n| n.to_string()));
    }
}

/// Tarjan's algorithm with an explicit stack; each component sorted.
fn strongly_connected(succ: &[Vec<usize>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = succ.len();
    let (mut index, mut low, mut on_stack) = (vec![UNSEEN; n], vec![0; n], vec![false; n]);
    let (mut stack, mut components, mut next) = (Vec::new(), Vec::new(), 0);
    for start in 0..n {
        if index[start] != UNSEEN {
            continue;
        }
        let mut calls = vec![(start, 0)];
        index[start] = next;
        low[start] = next;
        next += 1;
        stack.push(start);
        on_stack[start] = true;
        while let Some(frame) = calls.last_mut() {
            let (v, i) = *frame;
            if let Some(&w) = succ[v].get(i) {
                frame.1 += 1;
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(u, _)) = calls.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                component.sort_unstable();
                components.push(component);
            }
        }
    }
    components
}

/// A shortest cycle from `start` back to it inside `members`, `start` at both ends.
fn cycle_through(succ: &[Vec<usize>], members: &[usize], start: usize) -> Vec<usize> {
    let mut parent: BTreeMap<usize, usize> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(u) = queue.pop_front() {
        for &w in &succ[u] {
            if w == start {
                let mut path = vec![start, u];
                let mut at = u;
                while let Some(&p) = parent.get(&at) {
                    path.push(p);
                    at = p;
                }
                path.reverse();
                return path;
            }
            if members.binary_search(&w).is_ok() && !parent.contains_key(&w) {
                parent.insert(w, u);
                queue.push_back(w);
            }
        }
    }
    vec![start, start]
}

/// Marks the names whose longest chain (themselves included) is exactly one more than
/// [`MAX_DEPENDENCY_DEPTH`]: every longer chain passes through one of them.
pub(super) fn report_too_deep(walk: &Walk, findings: &mut Findings) {
    let (names, succ) = indexed(walk);
    let usable: Vec<bool> = names.iter().map(|n| !findings.bad.contains(*n)).collect();
    let mut height: Vec<usize> = vec![0; names.len()];
    for start in 0..names.len() {
        if !usable[start] || height[start] != 0 {
            continue;
        }
        // Post-order with an explicit stack; usable names form a graph without cycles.
        let mut stack = vec![(start, false)];
        while let Some((v, expanded)) = stack.pop() {
            if height[v] != 0 {
                continue;
            }
            let deps = succ[v].iter().copied().filter(|&d| usable[d]);
            if expanded {
                height[v] = 1 + deps.map(|d| height[d]).max().unwrap_or(0);
            } else {
                stack.push((v, true));
                stack.extend(deps.filter(|&d| height[d] == 0).map(|d| (d, false)));
            }
        }
    }
    for v in 0..names.len() {
        if height[v] != MAX_DEPENDENCY_DEPTH + 1 {
            continue;
        }
        let mut path = vec![names[v].to_string()];
        let mut at = v;
        while let Some(next) = succ[at].iter().copied().filter(|&d| usable[d]).find(|&d| height[d] + 1 == height[at]) {
            path.push(names[next].to_string());
            at = next;
        }
        findings.report(ResolveError::TooDeep { path }, &[names[v]]);
        findings.bad.insert(names[v].to_string());
    }
}

/// Why a name is not viable.
#[derive(Debug)]
pub(super) struct Blocked {
    /// The dependency through which it is blocked (`None` for a bad name).
    pub via: Option<String>,
    /// The nearest name on the way with an error of its own.
    pub cause: String,
}

/// Non-viable names: the bad ones and every name that depends on one, however indirectly.
pub(super) fn blocked(walk: &Walk, findings: &Findings) -> BTreeMap<String, Blocked> {
    let mut dependants: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (name, deps) in &walk.deps {
        for d in deps {
            dependants.entry(d.name.as_str()).or_default().insert(name.as_str());
        }
    }
    let mut out = BTreeMap::new();
    let mut queue = VecDeque::new();
    for name in &findings.bad {
        out.insert(name.clone(), Blocked { via: None, cause: name.clone() });
        queue.push_back(name.as_str());
    }
    while let Some(name) = queue.pop_front() {
        for &up in dependants.get(name).into_iter().flatten() {
            if out.contains_key(up) {
                continue;
            }
            let cause = if findings.about.contains_key(up) { up.to_string() } else { out[name].cause.clone() };
            out.insert(up.to_string(), Blocked { via: Some(name.to_string()), cause });
            queue.push_back(up);
        }
    }
    out
}

/// Why `name` (non-viable) cannot be installed.
pub(super) fn reason(name: &str, blocked: &Blocked, findings: &Findings) -> StatusReason {
    let error = |n: &str| findings.about.get(n).map(|&i| findings.errors[i].clone());
    match (error(name), &blocked.via) {
        (Some(own), _) => StatusReason::Unresolved(own),
        (None, Some(via)) => StatusReason::Blocked { via: via.clone(), cause: error(&blocked.cause) },
        (None, None) => StatusReason::CannotBeInstalled,
    }
}
