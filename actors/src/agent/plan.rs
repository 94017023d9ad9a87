//! The agent's plan, decided without I/O: the stored plan made from a resolution, and the steps
//! an `upgrade NAME…` or `install NAME…` runs (the named packages, what they depend on, and
//! the packages removed to make room for them).

use std::collections::BTreeSet;

use outpost_protocol::resolver::{RemoveReason, Resolution, ResolveError, Step};

use super::state::{PlannedStatus, PlannedStep, StepAction, StoredPlan};

/// The plan to store from `resolution`: `ids` gives, for each entry the resolution indexes,
/// its manifest hash and size; `sequence` is the snapshot it was made from.
pub fn stored(resolution: Resolution, ids: &[([u8; 32], u64)], sequence: u64, created: i64) -> StoredPlan {
    let steps = resolution
        .plan
        .iter()
        .map(|s| match s {
            Step::Remove { name, version, reason } => PlannedStep {
                action: StepAction::Remove,
                name: name.clone(),
                version: version.to_string(),
                manifest: [0; 32],
                origin: outpost_protocol::resolver::Origin::Dependency,
                size: 0,
                removal: Some(reason.clone()),
                text: s.to_string(),
            },
            Step::Install { name, version, entry, origin } | Step::Upgrade { name, version, entry, origin, .. } => {
                PlannedStep {
                    action: if matches!(s, Step::Install { .. }) { StepAction::Install } else { StepAction::Upgrade },
                    name: name.clone(),
                    version: version.to_string(),
                    manifest: ids[*entry].0,
                    origin: *origin,
                    size: ids[*entry].1,
                    removal: None,
                    text: s.to_string(),
                }
            }
        })
        .collect();
    StoredPlan {
        created,
        sequence,
        steps,
        packages: resolution
            .packages
            .into_iter()
            .map(|p| PlannedStatus {
                name: p.name,
                status: p.status,
                installed: p.installed.as_ref().map(ToString::to_string),
                target: p.target.as_ref().map(ToString::to_string),
                reason: p.reason,
            })
            .collect(),
        host_status: resolution.host_status,
        errors: resolution.errors,
    }
}

/// The steps for `names` and, through the signed `depends` of what they install (`depends`
/// gives them by manifest hash, when the record is kept), what they need; plus the removals
/// of packages that conflict with any of them. In plan order.
pub fn select<'p>(
    plan: &'p StoredPlan,
    names: &[String],
    depends: impl Fn(&[u8; 32]) -> Vec<String>,
) -> Vec<&'p PlannedStep> {
    let mut wanted: BTreeSet<String> = names.iter().cloned().collect();
    let mut changed = true;
    while changed {
        changed = false;
        for s in &plan.steps {
            if !wanted.contains(&s.name) || s.action == StepAction::Remove {
                continue;
            }
            for d in depends(&s.manifest) {
                changed |= wanted.insert(d);
            }
        }
    }
    plan.steps
        .iter()
        .filter(|s| {
            wanted.contains(&s.name) || matches!(&s.removal, Some(RemoveReason::ConflictsWith(w)) if wanted.contains(w))
        })
        .collect()
}

/// The requests among `names` that an install did not meet (`done` says which are installed in
/// a good state or already reported as failed), each with the resolution error about it: a
/// request with such an error cannot be satisfied (it is not kept); one without was simply not
/// installed.
pub fn unmet<'p>(
    plan: Option<&'p StoredPlan>,
    names: &[String],
    done: impl Fn(&str) -> bool,
) -> Vec<(String, Option<&'p ResolveError>)> {
    names
        .iter()
        .filter(|n| !done(n))
        .map(|n| (n.clone(), plan.and_then(|p| p.errors.iter().find(|e| e.concerns(n)))))
        .collect()
}

#[cfg(test)]
mod tests;
