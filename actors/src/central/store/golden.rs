//! The records written by earlier versions, frozen: each must still decode to what it said.

use std::collections::HashMap;

use outpost_protocol::central::{HostFacts, Signed};
use outpost_protocol::hex::{assert_golden, decode};

use super::*;

fn bytes(golden: &str) -> Vec<u8> {
    decode(golden).expect("hex")
}

#[test]
fn hosts_of_both_layouts_still_decode() {
    let host = HostRecord { fingerprint: "fp".into(), sequence: 3, last_seen: 9, uuid: "u".into() };
    let golden = "0002667003120175";
    assert_golden("a host (version 2)", &postcard::to_stdvec(&HostWire::V2(host.clone())).unwrap(), golden);
    assert_eq!(host_bytes(&host), bytes(golden), "what the writer stores");
    assert_eq!(decode_host(&bytes(golden)).unwrap(), host);
    // The first layout (keyed by UUID): what `migrate_v1` reads.
    let golden = "000266700312";
    assert_golden("a host (version 1)", &enc(&("fp".to_string(), 3u64, 9i64)), golden);
    let old: HostRecordV1 = dec(&bytes(golden)).unwrap();
    assert_eq!((old.fingerprint.as_str(), old.sequence, old.last_seen), ("fp", 3, 9));
}

#[test]
fn waiting_hosts_of_both_versions_still_decode() {
    let v1 = PendingRecordV1 { fqdn: "h".into(), request: vec![1], since: 2, issued: None };
    let golden = "00016801010400";
    assert_golden("a waiting host (version 1)", &postcard::to_stdvec(&PendingWire::V1(v1)).unwrap(), golden);
    let want = PendingRecord {
        fqdn: "h".into(),
        request: vec![1],
        since: 2,
        issued: None,
        reason: "no enrollment token".into(),
    };
    assert_eq!(decode_pending(&bytes(golden)).unwrap(), want);
    let v2 = PendingRecord { reason: "name held".into(), issued: Some("pem".into()), ..want };
    let golden = "010168010104010370656d096e616d652068656c64";
    assert_golden("a waiting host (version 2)", &postcard::to_stdvec(&PendingWire::V2(v2.clone())).unwrap(), golden);
    assert_eq!(decode_pending(&bytes(golden)).unwrap(), v2);
}

#[test]
fn actions_of_both_versions_still_decode() {
    let signed = Signed { body: vec![1], signature: vec![2], chain: vec![vec![3]] };
    let v1 = ActionRecordV1 {
        signed: signed.clone(),
        issuer: "Alice".into(),
        relayed: 5,
        results: vec![("UUID-1".into(), true, "done".into(), 0.5)],
    };
    let golden = "000101010201010305416c6963650a0106555549442d310104646f6e65000000000000e03f";
    assert_golden("an action (version 1)", &postcard::to_stdvec(&ActionWire::V1(v1)).unwrap(), golden);
    let fp_of = HashMap::from([("uuid-1".to_string(), "fp1".to_string())]);
    let want = ActionRecord {
        signed,
        issuer: "Alice".into(),
        relayed: 5,
        results: vec![("fp1".into(), true, "done".into(), 0.5)],
        resolved: None,
    };
    assert_eq!(decode_action(&bytes(golden), &fp_of).unwrap(), want, "results move to certificates");
    let v2 = ActionRecord { resolved: Some(vec![("h".into(), "fp1".into())]), ..want };
    let golden = "010101010201010305416c6963650a01036670310104646f6e65000000000000e03f0101016803667031";
    assert_golden("an action (version 2)", &postcard::to_stdvec(&ActionWire::V2(v2.clone())).unwrap(), golden);
    assert_eq!(decode_action(&bytes(golden), &fp_of).unwrap(), v2);
}

#[test]
fn tokens_enrollments_revocations_and_sections_still_decode() {
    let token = TokenRecord { expires: 7, uses: 2 };
    let golden = "000e02";
    assert_golden("a token", &enc(&token), golden);
    assert_eq!(dec::<TokenRecord>(&bytes(golden)).unwrap(), token);
    let enrolled = EnrolledRecord { uuid: "u".into(), fqdn: "h".into(), issued: 1, not_after: 2 };
    let golden = "00017501680204";
    assert_golden("an enrollment", &enc(&enrolled), golden);
    assert_eq!(dec::<EnrolledRecord>(&bytes(golden)).unwrap(), enrolled);
    let golden = "00017508";
    assert_golden("a revocation", &enc(&("u".to_string(), 4i64)), golden);
    assert_eq!(dec::<(String, i64)>(&bytes(golden)).unwrap(), ("u".to_string(), 4));
    let section = Section::Host(HostFacts { uuid: "u".into(), fqdn: "h".into(), ..HostFacts::default() });
    let golden = "00000175016800000000";
    assert_golden("a section", &enc(&section), golden);
    assert_eq!(dec::<Section>(&bytes(golden)).unwrap(), section);
}
