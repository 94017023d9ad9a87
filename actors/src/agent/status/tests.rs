//! One test a rule of [`decide`].

use outpost_protocol::resolver::{InstallState, Origin, RemoveReason, StatusReason};

use super::*;
use crate::agent::state::{PlannedStatus, StepAction};

fn installed(version: &str, state: InstallState, message: &str, output: &str) -> InstalledRecord {
    InstalledRecord {
        control: vec![("package".into(), "x".into()), ("version".into(), version.into())],
        manifest: [1; 32],
        state,
        origin: Origin::Explicit,
        hook: None,
        output: output.into(),
        message: message.into(),
        installed_at: 1,
        updated_at: 1,
        audit: None,
        local: Default::default(),
    }
}

fn planned(name: &str, status: PackageStatus, reason: Option<StatusReason>) -> PlannedStatus {
    PlannedStatus { name: name.into(), status, installed: Some("1".into()), target: Some("2".into()), reason }
}

fn step(name: &str) -> PlannedStep {
    PlannedStep {
        action: StepAction::Upgrade,
        name: name.into(),
        version: "2".into(),
        manifest: [2; 32],
        origin: Origin::Dependency,
        size: 10,
        removal: None,
        text: format!("upgrade {name} 1 -> 2"),
    }
}

fn plan(sequence: u64, packages: Vec<PlannedStatus>, steps: Vec<PlannedStep>) -> StoredPlan {
    StoredPlan { created: 0, sequence, steps, packages, host_status: HostStatus::Ok, errors: vec![] }
}

fn snapshot(sequence: u64, expired: bool) -> SnapshotInfo {
    SnapshotInfo { sequence, created: 0, expires: 86_400, expired }
}

fn update(outcome: UpdateOutcome) -> LastUpdate {
    LastUpdate {
        at: 5,
        ok: outcome == UpdateOutcome::Ok,
        outcome,
        repo: None,
        sequence: Some(7),
        message: String::new(),
    }
}

/// Decides with these holdings.
fn run(
    plan: Option<&StoredPlan>,
    snapshot: Option<&SnapshotInfo>,
    installed: &[(&str, InstalledRecord)],
    failures: &[Failure],
    last_update: Option<&LastUpdate>,
) -> Decided {
    let installed: BTreeMap<String, InstalledRecord> =
        installed.iter().map(|(n, r)| ((*n).to_string(), r.clone())).collect();
    decide(Held {
        plan,
        snapshot,
        installed: &installed,
        failures,
        last_update,
        session_failures: &[],
        boot: Some("boot-1000"),
    })
}

fn line<'d>(d: &'d Decided, name: &str) -> &'d PackageLine {
    d.packages.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no line for {name}: {d:?}"))
}

#[test]
fn a_plan_made_from_another_snapshot_says_nothing() {
    let p = plan(6, vec![planned("a", PackageStatus::NeedUpgrade, None)], vec![step("a")]);
    let d = run(Some(&p), Some(&snapshot(7, false)), &[], &[], None);
    assert!(d.packages.is_empty() && d.steps.is_empty(), "{d:?}");
    assert_eq!(d.host_status, HostStatus::Ok);
    // Nor does a plan when no snapshot is held.
    let d = run(Some(&p), None, &[], &[], None);
    assert!(d.packages.is_empty() && d.steps.is_empty(), "{d:?}");
}

#[test]
fn planned_packages_keep_their_status_and_typed_reason() {
    let why = StatusReason::Removal(RemoveReason::ConflictsWith("b".into()));
    let p = plan(7, vec![planned("a", PackageStatus::NeedRemove, Some(why.clone()))], vec![step("a")]);
    let d = run(Some(&p), Some(&snapshot(7, false)), &[], &[], None);
    let a = line(&d, "a");
    assert_eq!(a.status, PackageStatus::NeedRemove);
    assert_eq!(a.cause, Some(why));
    assert_eq!(a.reason.as_deref(), Some("conflicts with b"));
    assert_eq!(d.steps, vec![step("a")]);
    assert_eq!(d.host_status, HostStatus::NeedUpgrade, "a step is pending");
}

#[test]
fn installed_packages_outside_the_plan_are_ok_with_their_version_and_state() {
    let d = run(None, Some(&snapshot(7, false)), &[("x", installed("3.1", InstallState::Ok, "", ""))], &[], None);
    let x = line(&d, "x");
    assert_eq!((x.status, x.installed.as_deref(), x.state), (PackageStatus::Ok, Some("3.1"), Some(InstallState::Ok)));
    assert_eq!(x.output, None, "no output, no lines");
    assert_eq!(d.host_status, HostStatus::Ok);
}

#[test]
fn a_broken_install_is_an_error_with_its_message_and_the_end_of_its_output() {
    for state in [InstallState::Init, InstallState::Running, InstallState::Error] {
        let long = format!("{}the end", "é".repeat(OUTPUT_TAIL));
        let p = plan(7, vec![planned("x", PackageStatus::NeedUpgrade, None)], vec![step("x")]);
        let d = run(
            Some(&p),
            Some(&snapshot(7, false)),
            &[("x", installed("1", state, "setup.sh install: exit code 3", &long))],
            &[],
            None,
        );
        let x = line(&d, "x");
        assert_eq!(x.status, PackageStatus::Error, "{state}");
        assert_eq!(x.reason.as_deref(), Some("setup.sh install: exit code 3"));
        let out = x.output.as_deref().unwrap();
        assert!(out.ends_with("the end") && out.chars().count() == OUTPUT_TAIL, "{state}: {} chars", out.len());
        assert_eq!(d.host_status, HostStatus::Error);
    }
    // WARNING is not broken.
    let d = run(None, Some(&snapshot(7, false)), &[("x", installed("1", InstallState::Warning, "w", ""))], &[], None);
    assert_eq!(line(&d, "x").status, PackageStatus::Ok);
}

#[test]
fn a_failure_counts_only_while_its_step_is_pending() {
    let failures = [Failure { name: "a".into(), reason: "not in the cache".into() }];
    let pending = plan(7, vec![planned("a", PackageStatus::NeedInstall, None)], vec![step("a")]);
    let d = run(Some(&pending), Some(&snapshot(7, false)), &[], &failures, None);
    assert_eq!(line(&d, "a").status, PackageStatus::Error);
    assert_eq!(line(&d, "a").reason.as_deref(), Some("not in the cache"));
    assert_eq!(d.host_status, HostStatus::Error);
    // Done since (no step): the old failure is history.
    let done = plan(7, vec![planned("a", PackageStatus::Ok, None)], vec![]);
    let d = run(Some(&done), Some(&snapshot(7, false)), &[], &failures, None);
    assert_eq!(line(&d, "a").status, PackageStatus::Ok);
    assert_eq!(d.host_status, HostStatus::Ok);
}

#[test]
fn the_host_status_follows_packages_snapshot_and_last_update() {
    let ok = plan(7, vec![planned("a", PackageStatus::Ok, None)], vec![]);
    let fresh = snapshot(7, false);
    let table: [(Option<&SnapshotInfo>, Option<UpdateOutcome>, HostStatus); 6] = [
        (Some(&fresh), None, HostStatus::Ok),
        (Some(&fresh), Some(UpdateOutcome::Ok), HostStatus::Ok),
        (Some(&fresh), Some(UpdateOutcome::Unreachable), HostStatus::Ok),
        (Some(&fresh), Some(UpdateOutcome::Refused), HostStatus::Error),
        (Some(&snapshot(7, true)), Some(UpdateOutcome::Ok), HostStatus::Error),
        (None, None, HostStatus::Ok),
    ];
    for (snap, outcome, want) in table {
        let u = outcome.map(update);
        let d = run(Some(&ok), snap, &[], &[], u.as_ref());
        assert_eq!(d.host_status, want, "{snap:?} {outcome:?}");
    }
}

#[test]
fn an_expired_snapshot_is_the_first_error_and_resolution_errors_follow() {
    let mut p = plan(7, vec![], vec![]);
    p.errors = vec![outpost_protocol::resolver::ResolveError::Cycle { path: vec!["a".into(), "b".into(), "a".into()] }];
    let d = run(Some(&p), Some(&snapshot(7, true)), &[], &[], None);
    assert_eq!(d.errors.len(), 2, "{:?}", d.errors);
    assert!(d.errors[0].starts_with("snapshot 7 expired on"), "{}", d.errors[0]);
    assert_eq!(d.errors[1], "dependency cycle: a -> b -> a");
}

#[test]
fn a_reboot_asked_in_this_boot_is_pending_and_one_asked_before_it_is_done() {
    let mut r = installed("1", InstallState::Ok, "msiexec /i app.msi: exit code 3010", "");
    r.local.reboot_pending = Some("boot-1000".into());
    let d = run(None, None, &[("x", r.clone())], &[], None);
    assert_eq!(d.packages[0].status, PackageStatus::Ok);
    assert_eq!(d.packages[0].reason.as_deref(), Some("reboot pending: msiexec /i app.msi: exit code 3010"));
    assert_eq!(d.host_status, HostStatus::Ok, "a pending reboot is not an error");
    r.local.reboot_pending = Some("boot-9999".into());
    let d = run(None, None, &[("x", r)], &[], None);
    assert_eq!(d.packages[0].reason, None, "the machine started again since");
    assert!(crate::agent::hooks::same_boot("boot-1000", "boot-1060"), "one start read twice");
    assert!(!crate::agent::hooks::same_boot("boot-1000", "boot-5000"), "a later start");
}
