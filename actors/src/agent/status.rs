//! What `status` says, decided from what the agent holds: the plan, the snapshot's dates, the
//! installed records, the last upgrade's failures and the last update. Pure: no I/O, the time
//! comes in with the snapshot's `expired` flag.

use std::collections::{BTreeMap, BTreeSet};

use outpost_protocol::resolver::{HostStatus, PackageStatus};
use outpost_protocol::time_fmt::format_unix;

use super::report::{Failure, PackageLine, SnapshotInfo};
use super::state::{InstalledRecord, LastUpdate, PlannedStep, StoredPlan, UpdateOutcome};

/// Most characters of hook output shown with a package.
pub const OUTPUT_TAIL: usize = 2000;

/// What the agent holds, as `status` reads it.
#[derive(Debug, Clone, Copy)]
pub struct Held<'a> {
    /// The stored plan (ignored unless it was made from `snapshot`).
    pub plan: Option<&'a StoredPlan>,
    /// The snapshot held.
    pub snapshot: Option<&'a SnapshotInfo>,
    /// Installed packages by name.
    pub installed: &'a BTreeMap<String, InstalledRecord>,
    /// Packages that failed at the last upgrade.
    pub failures: &'a [Failure],
    /// The last update.
    pub last_update: Option<&'a LastUpdate>,
    /// Session-setups that failed for a user.
    pub session_failures: &'a [super::session::SessionRun],
    /// This boot's mark ([`super::hooks::boot_mark`]): a reboot asked in another boot is done.
    pub boot: Option<&'a str>,
}

/// The parts of the status report that are decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    /// The host's status.
    pub host_status: HostStatus,
    /// One line a package, by name.
    pub packages: Vec<PackageLine>,
    /// Pending steps.
    pub steps: Vec<PlannedStep>,
    /// Problems, in words: an expired snapshot first, then resolution errors.
    pub errors: Vec<String>,
}

/// Decides the status:
/// - a plan made from another snapshot than the one held says nothing (no lines, no steps);
/// - each planned package has its planned status; installed packages outside the plan are OK;
/// - a package whose last install did not end well (INIT, RUNNING, ERROR) is ERROR with the
///   record's message, and the end of its hook output is shown;
/// - an installed package whose install asked for a reboot in this boot says "reboot pending";
/// - a package that failed at the last upgrade and still has a step pending is ERROR with why;
/// - the host is ERROR when a package is, when the snapshot has expired or when the last update
///   was refused; else NEED-UPGRADE while steps are pending; else OK.
pub fn decide(held: Held<'_>) -> Decided {
    let plan = held.plan.filter(|p| held.snapshot.is_some_and(|s| s.sequence == p.sequence));
    let mut lines: BTreeMap<String, PackageLine> = BTreeMap::new();
    for p in plan.map(|p| p.packages.as_slice()).unwrap_or_default() {
        let line = PackageLine {
            name: p.name.clone(),
            status: p.status,
            installed: p.installed.clone(),
            target: p.target.clone(),
            state: None,
            reason: p.reason.as_ref().map(ToString::to_string),
            cause: p.reason.clone(),
            output: None,
        };
        lines.insert(p.name.clone(), line);
    }
    for (name, r) in held.installed {
        let line = lines.entry(name.clone()).or_insert_with(|| PackageLine {
            name: name.clone(),
            status: PackageStatus::Ok,
            installed: r.control().get("version").map(str::to_string),
            target: None,
            state: None,
            reason: None,
            cause: None,
            output: None,
        });
        line.state = Some(r.state);
        if r.state.is_broken() {
            line.status = PackageStatus::Error;
            line.reason = Some(r.message.clone());
        } else if let (Some(asked), Some(now)) = (r.local.reboot_pending.as_deref(), held.boot)
            && super::hooks::same_boot(asked, now)
        {
            line.reason = Some(format!("reboot pending: {}", r.message));
        }
        if !r.output.is_empty() {
            line.output = Some(tail(&r.output, OUTPUT_TAIL));
        }
    }
    let steps: Vec<PlannedStep> = plan.map(|p| p.steps.clone()).unwrap_or_default();
    let pending: BTreeSet<&str> = steps.iter().map(|s| s.name.as_str()).collect();
    for f in held.failures {
        if let Some(line) = lines.get_mut(&f.name)
            && pending.contains(f.name.as_str())
        {
            line.status = PackageStatus::Error;
            line.reason = Some(f.reason.clone());
        }
    }
    for f in held.session_failures {
        if let Some(line) = lines.get_mut(&f.package)
            && line.installed.as_deref() == Some(f.version.as_str())
            && line.status == PackageStatus::Ok
        {
            line.status = PackageStatus::Error;
            let first = f.message.lines().next().unwrap_or_default();
            line.reason = Some(format!("session-setup for user {} failed: {first}", f.user));
        }
    }
    let packages: Vec<PackageLine> = lines.into_values().collect();
    let mut errors: Vec<String> = plan.map(|p| p.errors.iter().map(ToString::to_string).collect()).unwrap_or_default();
    let expired = held.snapshot.filter(|s| s.expired);
    if let Some(s) = expired {
        errors.insert(
            0,
            format!(
                "snapshot {} expired on {}: nothing is installed, upgraded or removed until a repository serves a fresh one",
                s.sequence,
                format_unix(s.expires)
            ),
        );
    }
    let refused = held.last_update.is_some_and(|u| u.outcome == UpdateOutcome::Refused);
    let host_status = if packages.iter().any(|p| p.status == PackageStatus::Error) || expired.is_some() || refused {
        HostStatus::Error
    } else if !steps.is_empty() {
        HostStatus::NeedUpgrade
    } else {
        HostStatus::Ok
    };
    Decided { host_status, packages, steps, errors }
}

/// The last `max` characters of `text`.
fn tail(text: &str, max: usize) -> String {
    let start = text.char_indices().rev().nth(max.saturating_sub(1)).map_or(0, |(i, _)| i);
    text[start..].to_string()
}

#[cfg(test)]
mod tests;
