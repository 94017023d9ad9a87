//! The encodings sent and stored by earlier versions, frozen: each must still decode to what it
//! said.

use super::action::{ActionWire, SettingsWire};
use super::report::ReportWire;
use super::*;
use crate::hex::{assert_golden, decode};
use crate::resolver::{HostStatus, InstallState, PackageStatus, RemoveReason, StatusReason};

fn report() -> Report {
    let facts = HostFacts {
        uuid: "u".into(),
        fqdn: "h.ex".into(),
        ou: "OU=x".into(),
        site: "s".into(),
        profiles: vec!["p".into()],
        agent_version: "0.1.0".into(),
    };
    let package = PackageState {
        name: "a".into(),
        status: "ERROR".into(),
        installed: Some("1".into()),
        target: None,
        reason: Some("why".into()),
        output: None,
    };
    Report {
        host: "u".into(),
        sequence: 2,
        full: true,
        created: 100,
        sections: vec![
            Section::Host(facts),
            Section::Memory(1024),
            Section::Packages { host_status: "ERROR".into(), packages: vec![package] },
            Section::Snapshot(None),
        ],
    }
}

#[test]
fn reports_actions_and_settings_still_decode() {
    let golden = "0001750201c8010400017504682e6578044f553d78017301017005302e312e3004800808054552524f52010161054552524f52010131000103776879000a00";
    assert_golden("a report", &postcard::to_stdvec(&ReportWire::V1(report())).unwrap(), golden);
    let ReportWire::V1(back) = postcard::from_bytes(&decode(golden).unwrap()).unwrap();
    assert_eq!(back, report());
    // A version-1 packages section is typed on arrival, its words kept.
    let inventory = Inventory::from_sections(back.sections);
    assert_eq!(inventory.host_status(), Some(HostStatus::Error));
    let p = &inventory.packages()[0];
    assert_eq!((p.status, p.reason.as_deref(), p.cause.as_ref()), (PackageStatus::Error, Some("why"), None));

    let typed = Section::PackagesV2 {
        host_status: HostStatus::NeedUpgrade,
        packages: vec![PackageReport {
            name: "a".into(),
            status: PackageStatus::NeedRemove,
            installed: Some("1".into()),
            target: None,
            state: Some(InstallState::Ok),
            cause: Some(StatusReason::Removal(RemoveReason::ConflictsWith("b".into()))),
            reason: Some("conflicts with b".into()),
            output: None,
        }],
    };
    let audits = Section::Audits(vec![AuditResult {
        name: "a".into(),
        result: InstallState::Error,
        message: "setup.sh audit failed with exit code 2".into(),
        at: 9,
    }]);
    assert_golden(
        "an audits section",
        &postcard::to_stdvec(&audits).unwrap(),
        "0d010161042673657475702e7368206175646974206661696c65642077697468206578697420636f6465203212",
    );
    assert_eq!(Inventory::from_sections([audits]).worst_audit(), Some(InstallState::Error));
    let transfers = Section::Transfers([("edge:7443".to_string(), 5u64), ("main:7443".to_string(), 0)].into());
    assert_golden(
        "a transfers section",
        &postcard::to_stdvec(&transfers).unwrap(),
        "0c0209656467653a3734343305096d61696e3a3734343300",
    );
    assert_eq!(Inventory::from_sections([transfers]).transfers().map(|t| t["edge:7443"]), Some(5));
    let golden = "0b01010161030101310001020110636f6e666c6963747320776974682062010301016200";
    assert_golden("a typed packages section", &postcard::to_stdvec(&typed).unwrap(), golden);
    assert_eq!(postcard::from_bytes::<Section>(&decode(golden).unwrap()).unwrap(), typed);

    let action = Action {
        nonce: [4; 16],
        targets: Targets::Hosts(vec!["h.ex".into()]),
        kind: ActionKind::Install(vec!["a".into()]),
        created: 1,
        expires: 2,
    };
    let golden = "0004040404040404040404040404040404000104682e6578020101610204";
    assert_golden("an action", &postcard::to_stdvec(&ActionWire::V1(action.clone())).unwrap(), golden);
    let ActionWire::V1(back) = postcard::from_bytes(&decode(golden).unwrap()).unwrap();
    assert_eq!(back, action);

    let settings =
        AgentSettingsDoc { sequence: 3, targets: Targets::Ou("OU=x".into()), toml: "a = 1".into(), created: 5 };
    let golden = "000301044f553d780561203d20310a";
    assert_golden("agent settings", &postcard::to_stdvec(&SettingsWire::V1(settings.clone())).unwrap(), golden);
    let SettingsWire::V1(back) = postcard::from_bytes(&decode(golden).unwrap()).unwrap();
    assert_eq!(back, settings);
}

#[test]
fn central_messages_still_decode() {
    let requests = [
        (
            CentralRequest::Enroll { request: vec![1], token: None, uuid: "u".into(), fqdn: "h".into() },
            "000001010001750168",
        ),
        (CentralRequest::Report(SignedReport { report: vec![1, 2], signature: vec![3; 4] }), "00010201020403030303"),
        (CentralRequest::Hosts(HostQuery::default()), "0005000000000000"),
        (CentralRequest::ApproveReplacing("h".into()), "00110168"),
        (
            CentralRequest::HostPage(HostPageQuery {
                filter: HostFilter::parse("status:error site:lyon name:pc-*").unwrap(),
                sort: HostSort::LastSeen,
                descending: true,
                offset: 50,
                limit: 25,
            }),
            "001201000200000001046c796f6e010470632d2a04013219",
        ),
        (CentralRequest::Overview { stale_after: 86_400 }, "001380a305"),
        (CentralRequest::ReposV2, "0015"),
        (CentralRequest::Generation, "0014"),
    ];
    for (request, golden) in requests {
        assert_golden(&format!("{request:?}"), &encode_request(&request)[4..], golden);
        assert_eq!(decode_request(&decode(golden).unwrap()).unwrap(), request);
    }
    let detail = HostDetail {
        summary: HostSummary { fqdn: "h".into(), status: "OK".into(), ..HostSummary::default() },
        inventory: Inventory::default(),
        actions: vec![HostActionResult { id: "01".into(), kind: "install".into(), ok: true, message: "m".into() }],
    };
    // The action results were a tuple before they had names: the bytes are the same.
    assert_eq!(
        postcard::to_stdvec(&detail.actions[0]).unwrap(),
        postcard::to_stdvec(&("01", "install", true, "m")).unwrap()
    );
    let responses = [
        (CentralResponse::ReportApplied { sequence: 2 }, "000202"),
        (
            CentralResponse::ReposV2(vec![RepoView {
                line: RepoLine {
                    addr: "e:1".into(),
                    name: "e".into(),
                    role: "edge".into(),
                    lag: Some(0),
                    ..RepoLine::default()
                },
                windows: vec!["Mon 00:00-01:00".into()],
                last_sync: Some(9),
                served_bytes: 10,
                ..RepoView::default()
            }]),
            "00150103653a31016504656467650001000000000000010f4d6f6e2030303a30302d30313a30300000000001120a",
        ),
        (
            CentralResponse::HostV2(Box::new(HostDetailV2 {
                detail: HostDetail::default(),
                reports: vec![ReportSeen { sequence: 3, at: 4, sections: vec![SectionKind::Packages] }],
            })),
            "001600000000000000000000000000000103080108",
        ),
        (CentralResponse::Generation(7), "001407"),
        (
            CentralResponse::HostPage(HostPage {
                total: 2,
                offset: 1,
                hosts: vec![HostSummary { fqdn: "h".into(), status: "ERROR".into(), ..HostSummary::default() }],
            }),
            "00120201010001680000054552524f5200000000000000",
        ),
        (
            CentralResponse::Overview(FleetOverview {
                generation: 3,
                hosts: 1,
                online: 1,
                by_status: [("OK".to_string(), 1)].into(),
                by_site: vec![SiteCount { site: "s".into(), hosts: 1, by_status: [("OK".to_string(), 1)].into() }],
                stale: 0,
                stale_hosts: vec![],
            }),
            "001303010101024f4b010101730101024f4b010000",
        ),
        (CentralResponse::Host(Box::new(detail)), "00070001680000024f4b00000000000000000102303107696e7374616c6c01016d"),
        (CentralResponse::FullReportNeeded { last: Some(1) }, "00030101"),
        (CentralResponse::Error { code: crate::wire::ErrorCode::Refused, message: "no".into() }, "000f01026e6f"),
        (
            CentralResponse::PendingHostsV2(vec![PendingHost {
                uuid: "u".into(),
                fqdn: "h".into(),
                since: 1,
                reason: "r".into(),
            }]),
            "00110101750168020172",
        ),
    ];
    for (response, golden) in responses {
        assert_golden(&format!("{response:?}"), &encode_response(&response)[4..], golden);
        assert_eq!(decode_response(&decode(golden).unwrap()).unwrap(), response);
    }
}
