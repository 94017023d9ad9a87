//! One test a rule of the agent's plan.

use outpost_protocol::resolver::{
    HostStatus, Origin, PackageState, PackageStatus, RemoveReason, ResolveError, StatusReason,
};
use outpost_protocol::version::Version;

use super::*;

fn v(text: &str) -> Version {
    Version::parse(text).unwrap()
}

fn step(action: StepAction, name: &str, manifest: u8, removal: Option<RemoveReason>) -> PlannedStep {
    PlannedStep {
        action,
        name: name.into(),
        version: "1".into(),
        manifest: [manifest; 32],
        origin: Origin::Dependency,
        size: 1,
        removal,
        text: String::new(),
    }
}

fn plan(steps: Vec<PlannedStep>) -> StoredPlan {
    StoredPlan {
        created: 0,
        sequence: 1,
        steps,
        packages: vec![],
        host_status: HostStatus::NeedUpgrade,
        errors: vec![],
    }
}

#[test]
fn the_stored_plan_keeps_each_step_with_its_package_and_every_status_typed() {
    let error = ResolveError::Conflict { package: "x".into(), with: "y".into() };
    let resolution = Resolution {
        plan: vec![
            Step::Remove { name: "old".into(), version: v("1"), reason: RemoveReason::ConflictsWith("new".into()) },
            Step::Install { name: "new".into(), version: v("2"), entry: 1, origin: Origin::Explicit },
            Step::Upgrade { name: "up".into(), from: v("1"), version: v("3"), entry: 0, origin: Origin::Dependency },
        ],
        packages: vec![PackageState {
            name: "old".into(),
            status: PackageStatus::NeedRemove,
            installed: Some(v("1")),
            target: None,
            reason: Some(StatusReason::Removal(RemoveReason::ConflictsWith("new".into()))),
        }],
        host_status: HostStatus::NeedUpgrade,
        errors: vec![error.clone()],
    };
    let ids = [([7; 32], 70), ([8; 32], 80)];
    let p = stored(resolution, &ids, 42, 1000);
    assert_eq!((p.sequence, p.created, p.host_status), (42, 1000, HostStatus::NeedUpgrade));
    let summary: Vec<(StepAction, &str, [u8; 32], u64, &str)> =
        p.steps.iter().map(|s| (s.action, s.name.as_str(), s.manifest, s.size, s.version.as_str())).collect();
    assert_eq!(
        summary,
        [
            (StepAction::Remove, "old", [0; 32], 0, "1"),
            (StepAction::Install, "new", [8; 32], 80, "2"),
            (StepAction::Upgrade, "up", [7; 32], 70, "3"),
        ]
    );
    assert_eq!(p.steps[0].removal, Some(RemoveReason::ConflictsWith("new".into())));
    assert_eq!(p.steps[0].text, "remove old 1 (conflicts with new)", "the step in words names the package");
    assert_eq!(p.steps[2].text, "upgrade up 1 -> 3");
    assert_eq!((p.steps[1].origin, p.steps[2].origin), (Origin::Explicit, Origin::Dependency));
    assert_eq!(p.packages[0].status, PackageStatus::NeedRemove);
    assert_eq!(p.packages[0].installed.as_deref(), Some("1"));
    assert_eq!(p.packages[0].reason, Some(StatusReason::Removal(RemoveReason::ConflictsWith("new".into()))));
    assert_eq!(p.errors, [error]);
}

#[test]
fn a_partial_upgrade_runs_the_named_steps_what_they_depend_on_and_the_removals_they_need() {
    let p = plan(vec![
        step(StepAction::Remove, "rival", 0, Some(RemoveReason::ConflictsWith("app".into()))),
        step(StepAction::Remove, "stale", 0, Some(RemoveReason::NoLongerExpected)),
        step(StepAction::Install, "lib", 2, None),
        step(StepAction::Install, "app", 1, None),
        step(StepAction::Upgrade, "other", 3, None),
        step(StepAction::Install, "base", 4, None),
    ]);
    // app depends on lib, lib on base (through their records).
    let depends = |m: &[u8; 32]| match m[0] {
        1 => vec!["lib".to_string()],
        2 => vec!["base".to_string()],
        _ => vec![],
    };
    let names = |s: Vec<&PlannedStep>| s.into_iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let table: [(&[&str], &[&str]); 5] = [
        (&["app"], &["rival", "lib", "app", "base"]),
        (&["lib"], &["lib", "base"]),
        (&["other"], &["other"]),
        (&["stale"], &["stale"]),
        (&["nothing-planned"], &[]),
    ];
    for (asked, want) in table {
        let asked: Vec<String> = asked.iter().map(ToString::to_string).collect();
        assert_eq!(names(select(&p, &asked, depends)), want, "{asked:?}");
    }
    // Without the records, only the named steps (and their conflict removals).
    assert_eq!(names(select(&p, &["app".to_string()], |_| vec![])), ["rival", "app"]);
}

#[test]
fn an_unmet_request_carries_the_error_about_it_and_only_that_one() {
    let missing = ResolveError::Missing {
        package: "nothing".into(),
        request: outpost_protocol::request::PackageRequest::parse("nothing(>=2)").unwrap(),
        detail: "no entry".into(),
    };
    let conflict = ResolveError::Conflict { package: "b".into(), with: "c".into() };
    let mut p = plan(vec![]);
    p.errors = vec![missing.clone(), conflict.clone()];
    let names: Vec<String> = ["ok", "nothing", "b", "quiet", "no"].iter().map(ToString::to_string).collect();
    let unmet = unmet(Some(&p), &names, |n| n == "ok");
    assert_eq!(
        unmet,
        [
            ("nothing".to_string(), Some(&missing)),
            ("b".to_string(), Some(&conflict)),
            ("quiet".to_string(), None),
            // A name that only appears inside another package's message is not concerned.
            ("no".to_string(), None),
        ]
    );
    assert_eq!(super::unmet(None, &names[..1], |_| false), [("ok".to_string(), None)]);
}
