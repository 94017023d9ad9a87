//! Dependency resolution: snapshot entries + host identity + installed packages → a plan
//! (removals, then installs and upgrades), one status per package, a host status and the
//! errors found. Pure: time comes in [`HostCapabilities::now`], nothing is read or written.
//!
//! # Rules
//!
//! * **Candidates.** For each name, the entries that fit the host ([`PackageEntry::mismatch`]
//!   is `None`), best first by [`PackageEntry::preference`]. Entries that do not fit are
//!   ignored; they only show up in the detail of a [`ResolveError::Missing`].
//! * **Roots.** Managed roots (origin [`Origin::Dependency`]): the host package(s), an entry
//!   named like the host's UUID or FQDN; the unit packages, an entry named like one of
//!   [`unit_names`] of the host's DN (spacing and case of the DN ignored); the profile
//!   packages, an entry named like a profile. Names compare case-insensitively and an absent
//!   package is normal. Explicit roots: each local request, and each installed package of
//!   origin [`Origin::Explicit`] (as a plain name), except host/unit/profile packages, which
//!   stay only while expected.
//! * **Choice.** Walking `depends` from the roots collects every request on each name. The
//!   target of a name is the best candidate satisfying all of them, except that an installed
//!   package that satisfies them all and is not older than that candidate is kept as it is
//!   (its own `depends` are walked). An installed package whose last install did not end
//!   (ERROR, or INIT/RUNNING left by an interruption) is installed again from the best
//!   candidate, even at the same version. Choices and the requests they lead to are
//!   recomputed until they agree. Past a bound on rounds (distinct requests seen + 1),
//!   requests accumulate instead of being recomputed, which always ends; a name that no single
//!   version then satisfies is [`ResolveError::Unsatisfiable`].
//! * **Viability.** A name is viable when it has a target satisfying every request on it,
//!   is on no dependency cycle, has a dependency chain of at most [`MAX_DEPENDENCY_DEPTH`]
//!   packages (itself included), did not lose a conflict, and all its dependencies are viable.
//!   A package that is not viable is ERROR and left out of the plan, with whatever only it
//!   needed; installed packages stay as they are. Required = reachable from viable roots.
//! * **Conflicts** (`conflicts` of either side, on target versions). Priority: host/unit/profile
//!   packages, then new local requests, then packages kept because they were installed
//!   locally. A kept package that conflicts with a higher one gives way without an error: it
//!   is removed ([`RemoveReason::ConflictsWith`]). Otherwise two required packages in conflict
//!   are a [`ResolveError::Conflict`]: the lower priority loses (the later name on a tie), is
//!   not viable, and everything is recomputed. An installed package that is not required and
//!   conflicts with a required one is removed ([`RemoveReason::ConflictsWith`], which wins
//!   over "no longer expected"). Conflicts already present among kept installed packages
//!   are left as they are.
//! * **Removals.** An installed package that no walk reaches is removed
//!   ([`RemoveReason::NoLongerExpected`]) when its origin is Dependency or its section is
//!   host/unit/profile. Explicit packages stay. A failed resolution never removes anything,
//!   and neither does an [`ResolveInput::incomplete`] one (what is not known is kept).
//! * **Order.** Removals first, dependants before their dependencies; then installs and
//!   upgrades, dependencies before dependants; ties by name.
//! * **Statuses.** One per package installed, required, or reached but not viable, sorted by
//!   name: ERROR (not viable, or last install state ERROR/INIT/RUNNING), else NEED-REMOVE,
//!   NEED-INSTALL, NEED-UPGRADE, or OK (WARNING counts as OK). Host: ERROR if any package is,
//!   else NEED-UPGRADE if the plan is not empty, else OK.
//! * **Origin of steps.** Explicit when reachable from a viable explicit root, else Dependency.
//!
//! Every walk uses explicit stacks and visited sets; nothing recurses on the input.

use std::fmt;

use crate::entry::{HostCapabilities, MAX_DEPENDENCY_DEPTH, PackageEntry};
use crate::request::PackageRequest;
use crate::version::Version;

mod dn;
mod graph;
mod plan;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use dn::unit_names;

/// Who a host is, for finding its implicit (host, unit, profile) packages.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct HostIdentity {
    /// BIOS UUID; names a host package.
    pub uuid: Option<String>,
    /// Fully qualified domain name; also names a host package.
    pub fqdn: Option<String>,
    /// Distinguished name of the host or of its OU; names the unit packages ([`unit_names`]).
    pub ou: Option<String>,
    /// Directory groups; each names a profile package.
    pub profiles: Vec<String>,
}

/// Local install state of a package (WAPT's `install_status`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum InstallState {
    /// Install started, nothing run yet.
    Init,
    /// Install running.
    Running,
    /// Installed.
    Ok,
    /// Installed with warnings.
    Warning,
    /// Install failed.
    Error,
}

impl InstallState {
    /// The state as WAPT writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Init => "INIT",
            Self::Running => "RUNNING",
            Self::Ok => "OK",
            Self::Warning => "WARNING",
            Self::Error => "ERROR",
        }
    }

    /// True when the last install did not end well: ERROR, or INIT/RUNNING found at resolve
    /// time (an interrupted install). Such a package is retried.
    pub fn is_broken(self) -> bool {
        matches!(self, Self::Init | Self::Running | Self::Error)
    }
}

impl fmt::Display for InstallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a package is (or will be) on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Asked for locally (`agent install`): stays until removed.
    Explicit,
    /// Pulled in by host/unit/profile packages or as a dependency: goes when no longer needed.
    Dependency,
}

/// A package installed on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledPackage {
    /// The entry that was installed.
    pub entry: PackageEntry,
    /// How its last install ended.
    pub state: InstallState,
    /// Why it is there.
    pub origin: Origin,
}

/// Everything resolution looks at.
#[derive(Clone, Copy, Debug)]
pub struct ResolveInput<'a> {
    /// Snapshot entries plus the host's own host package(s).
    pub entries: &'a [PackageEntry],
    /// The host's names.
    pub host: &'a HostIdentity,
    /// What the host accepts (and the current time).
    pub capabilities: &'a HostCapabilities,
    /// Installed packages (one per name; later duplicates are ignored).
    pub installed: &'a [InstalledPackage],
    /// Extra explicit local requests (e.g. `agent install foo(>=2)`).
    pub requested: &'a [PackageRequest],
    /// True when some of what the host expects could not be read (a host package whose record
    /// is out of reach offline): then nothing is removed as no longer expected, since not
    /// knowing is not a reason to act.
    pub incomplete: bool,
}

/// The outcome of [`resolve`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Resolution {
    /// Steps to run, in order.
    pub plan: Vec<Step>,
    /// One state per package installed, required, or reached but not viable; sorted by name.
    pub packages: Vec<PackageState>,
    /// The host's summary status.
    pub host_status: HostStatus,
    /// What went wrong, in a stable order.
    pub errors: Vec<ResolveError>,
}

/// One step of a plan.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum Step {
    /// Uninstall an installed package.
    Remove { name: String, version: Version, reason: RemoveReason },
    /// Install a package that is not installed; `entry` indexes [`ResolveInput::entries`].
    Install { name: String, version: Version, entry: usize, origin: Origin },
    /// Replace an installed package: a newer version, a retry of a failed install (same
    /// version), or a pinned downgrade.
    Upgrade { name: String, from: Version, version: Version, entry: usize, origin: Origin },
}

impl Step {
    /// The package the step is about.
    pub fn name(&self) -> &str {
        match self {
            Self::Remove { name, .. } | Self::Install { name, .. } | Self::Upgrade { name, .. } => name,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Remove { name, version, reason } => write!(f, "remove {name} {version} ({reason})"),
            Self::Install { name, version, .. } => write!(f, "install {name} {version}"),
            Self::Upgrade { name, from, version, .. } => match version.cmp(from) {
                std::cmp::Ordering::Equal => write!(f, "reinstall {name} {version}"),
                std::cmp::Ordering::Less => write!(f, "downgrade {name} {from} -> {version}"),
                std::cmp::Ordering::Greater => write!(f, "upgrade {name} {from} -> {version}"),
            },
        }
    }
}

/// Why an installed package is removed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RemoveReason {
    /// Nothing expects it any more (dropped dependency, host/unit/profile package gone).
    NoLongerExpected,
    /// It conflicts with this required package.
    ConflictsWith(String),
}

impl fmt::Display for RemoveReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoLongerExpected => f.write_str("no longer expected on this host"),
            Self::ConflictsWith(other) => write!(f, "conflicts with {other}"),
        }
    }
}

/// Status of one package, as reported to the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PackageStatus {
    /// Installed as expected.
    #[serde(rename = "OK")]
    Ok,
    /// To be installed.
    #[serde(rename = "NEED-INSTALL")]
    NeedInstall,
    /// To be upgraded (or reinstalled, or downgraded to a pinned version).
    #[serde(rename = "NEED-UPGRADE")]
    NeedUpgrade,
    /// To be removed.
    #[serde(rename = "NEED-REMOVE")]
    NeedRemove,
    /// Cannot be resolved, or its last install failed.
    #[serde(rename = "ERROR")]
    Error,
}

impl PackageStatus {
    /// Every status, in the order they are listed.
    pub const ALL: [Self; 5] = [Self::Ok, Self::NeedInstall, Self::NeedUpgrade, Self::NeedRemove, Self::Error];

    /// The status a text names (`OK`, `need-upgrade`…; case does not matter).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    /// The status as reported.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::NeedInstall => "NEED-INSTALL",
            Self::NeedUpgrade => "NEED-UPGRADE",
            Self::NeedRemove => "NEED-REMOVE",
            Self::Error => "ERROR",
        }
    }
}

impl fmt::Display for PackageStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Summary status of a host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum HostStatus {
    /// Nothing to do.
    #[serde(rename = "OK")]
    Ok,
    /// Steps are pending.
    #[serde(rename = "NEED-UPGRADE")]
    NeedUpgrade,
    /// A package is in ERROR.
    #[serde(rename = "ERROR")]
    Error,
}

impl HostStatus {
    /// Every status, in the order they are listed.
    pub const ALL: [Self; 3] = [Self::Ok, Self::NeedUpgrade, Self::Error];

    /// The status a text names (`OK`, `error`…; case does not matter).
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str().eq_ignore_ascii_case(text))
    }

    /// The status as reported.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::NeedUpgrade => "NEED-UPGRADE",
            Self::Error => "ERROR",
        }
    }
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The state of one package.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PackageState {
    /// Package name.
    pub name: String,
    /// Status.
    pub status: PackageStatus,
    /// Version installed now.
    pub installed: Option<Version>,
    /// Version present once the plan has run (`None`: absent).
    pub target: Option<Version>,
    /// Why, when ERROR or NEED-REMOVE.
    pub reason: Option<StatusReason>,
}

/// Why a package is in ERROR or NEED-REMOVE. Its text (`Display`) names the packages.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusReason {
    /// Resolution found this error about the package itself.
    Unresolved(ResolveError),
    /// It needs `via`, which cannot be installed; `cause` is the nearest error on the way.
    Blocked { via: String, cause: Option<ResolveError> },
    /// Its last install (of `version`) ended in `state`; it is retried with `retry`, or
    /// removed for `removal`.
    LastInstall { version: Version, state: InstallState, retry: Option<Version>, removal: Option<RemoveReason> },
    /// It is to be removed.
    Removal(RemoveReason),
    /// It cannot be installed, with nothing more known.
    CannotBeInstalled,
}

impl fmt::Display for StatusReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unresolved(e) => write!(f, "{e}"),
            Self::Blocked { via, cause } => match cause {
                Some(c) => write!(f, "needs {via}, which cannot be installed: {c}"),
                None => write!(f, "needs {via}, which cannot be installed: see the errors"),
            },
            Self::LastInstall { version, state, retry, removal } => {
                write!(f, "the last install of {version} ended in state {state}")?;
                if let Some(v) = retry {
                    write!(f, "; it is retried with version {v}")?;
                }
                if let Some(r) = removal {
                    write!(f, "; it will be removed ({r})")?;
                }
                Ok(())
            }
            Self::Removal(r) => write!(f, "{r}"),
            Self::CannotBeInstalled => f.write_str("cannot be installed"),
        }
    }
}

/// What resolution found wrong. Messages name the packages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResolveError {
    /// Neither an installed package nor a fitting entry satisfies a request. `package` is the
    /// dependant, or the requested name for a root request; `detail` lists what exists and why
    /// it does not fit.
    #[error("{}", missing_message(.package, .request, .detail))]
    Missing { package: String, request: PackageRequest, detail: String },
    /// A dependency cycle, first name repeated at the end.
    #[error("dependency cycle: {}", .path.join(" -> "))]
    Cycle { path: Vec<String> },
    /// A dependency chain longer than [`MAX_DEPENDENCY_DEPTH`] packages.
    #[error("dependency chain longer than {MAX_DEPENDENCY_DEPTH} packages: {}", .path.join(" -> "))]
    TooDeep { path: Vec<String> },
    /// Two packages that must both be present conflict; `package` is left out.
    #[error("{package} conflicts with {with}, which is also required; {package} is left out")]
    Conflict { package: String, with: String },
    /// Requests on one name that no single version satisfies.
    #[error("no version of {name} satisfies all of: {}", .requests.join(", "))]
    Unsatisfiable { name: String, requests: Vec<String> },
}

impl ResolveError {
    /// True when the error is about `name`: the package that cannot be had, or the name of a
    /// request that cannot be satisfied.
    pub fn concerns(&self, name: &str) -> bool {
        match self {
            Self::Missing { package, request, .. } => package == name || request.name == name,
            Self::Cycle { path } | Self::TooDeep { path } => path.iter().any(|p| p == name),
            Self::Conflict { package, .. } => package == name,
            Self::Unsatisfiable { name: n, .. } => n == name,
        }
    }
}

fn missing_message(package: &str, request: &PackageRequest, detail: &str) -> String {
    if package == request.name {
        format!("{request} was requested, but no entry provides it for this host ({detail})")
    } else {
        format!("{package} needs {request}, which no entry provides for this host ({detail})")
    }
}

/// Resolves what the host should have; see the module documentation for the rules.
pub fn resolve(input: &ResolveInput<'_>) -> Resolution {
    let ctx = graph::Context::new(input);
    let roots = ctx.roots(input.host, input.requested);
    let (walk, requests) = graph::settle(&ctx, &roots);
    let mut findings = graph::Findings::default();
    graph::report_unsatisfied(&ctx, &walk, &requests, &mut findings);
    graph::report_cycles(&walk, &mut findings);
    graph::report_too_deep(&walk, &mut findings);
    plan::build(&ctx, &roots, &walk, findings)
}
