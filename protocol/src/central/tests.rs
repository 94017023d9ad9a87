use super::action::ActionWire;
use super::*;
use crate::pki::PrivateKey;

fn report(sequence: u64, full: bool) -> Report {
    Report {
        host: "uuid-1".into(),
        sequence,
        full,
        created: 0,
        sections: vec![
            Section::Memory(1 << 30),
            Section::Software(vec![Software { name: "vim".into(), version: "9".into() }]),
        ],
    }
}

#[test]
fn report_sequence_rules() {
    assert_eq!(decide(None, &report(5, true)), ReportDecision::Apply);
    assert_eq!(decide(None, &report(5, false)), ReportDecision::FullNeeded, "a delta needs a base");
    assert_eq!(decide(Some(4), &report(5, false)), ReportDecision::Apply);
    assert_eq!(decide(Some(4), &report(6, false)), ReportDecision::FullNeeded, "gap");
    assert_eq!(decide(Some(4), &report(4, false)), ReportDecision::Replay);
    assert_eq!(decide(Some(4), &report(3, true)), ReportDecision::Replay, "an old full report too");
    assert_eq!(decide(Some(4), &report(9, true)), ReportDecision::Apply);
}

#[test]
fn reports_verified_together_get_the_answers_each_gets_alone() {
    let keys: Vec<PrivateKey> = (0..4).map(|_| PrivateKey::generate().unwrap()).collect();
    let mut signed: Vec<SignedReport> = (0..4).map(|i| report(i + 1, true).sign(&keys[i as usize])).collect();
    let n = signed[1].report.len() - 1;
    signed[1].report[n] ^= 1;
    signed.push(SignedReport { report: vec![0; MAX_REPORT_BYTES + 1], signature: vec![0; 64] });
    let publics: Vec<Vec<u8>> =
        keys.iter().map(|k| k.public_key().to_vec()).chain([keys[0].public_key().to_vec()]).collect();
    let read: Vec<crate::signing::PublicKey> = publics.iter().map(|p| crate::signing::PublicKey::new(p)).collect();
    let items: Vec<(&crate::signing::PublicKey, &SignedReport)> = read.iter().zip(&signed).collect();
    let together = SignedReport::verify_many(&items);
    let alone: Vec<_> = items.iter().map(|(k, s)| s.verify(k.as_bytes())).collect();
    let show = |r: &Vec<Result<crate::verified::Verified<Report>, CentralError>>| {
        r.iter().map(|x| x.as_ref().map(|v| v.sequence).map_err(ToString::to_string)).collect::<Vec<_>>()
    };
    assert_eq!(show(&together), show(&alone));
    assert!(together[0].is_ok() && together[2].is_ok() && together[3].is_ok());
    assert!(matches!(together[1], Err(CentralError::Signature { .. })));
    assert!(matches!(together[4], Err(CentralError::TooLarge { .. })));
}

#[test]
fn reports_are_signed_and_size_limited() {
    let key = PrivateKey::generate().unwrap();
    let other = PrivateKey::generate().unwrap();
    let signed = report(1, true).sign(&key);
    assert_eq!(signed.verify(&key.public_key()).unwrap().into_inner(), report(1, true));
    assert!(matches!(signed.verify(&other.public_key()), Err(CentralError::Signature { .. })));
    let mut bad = signed;
    let n = bad.report.len() - 1;
    bad.report[n] ^= 1;
    assert!(matches!(bad.verify(&key.public_key()), Err(CentralError::Signature { .. })));
    let big = SignedReport { report: vec![0; MAX_REPORT_BYTES + 1], signature: vec![0; 64] };
    assert_eq!(big.verify(&key.public_key()).unwrap_err().reason(), "oversized");
}

#[test]
fn inventories_report_only_what_changed() {
    let a = Inventory::from_sections(report(1, true).sections);
    let mut b = a.clone();
    assert!(b.changed_since(&a).is_empty());
    b.apply([Section::Memory(2 << 30)]);
    assert_eq!(b.changed_since(&a), vec![Section::Memory(2 << 30)]);
    let mut c = a.clone();
    c.apply(b.changed_since(&a));
    assert_eq!(c, b);
}

#[test]
fn targets_match_hosts_and_ous() {
    let n = |uuid, fqdn, ou| HostNames { fingerprint: "", uuid, fqdn, ou };
    let t = Targets::Ou("OU=Paris,DC=example,DC=org".into());
    assert!(t.includes(&n("u", "pc1", "CN=pc1,OU=Paris,DC=example,DC=org")));
    assert!(t.includes(&n("u", "pc1", "OU=Paris, DC=example, DC=org")));
    assert!(!t.includes(&n("u", "pc1", "CN=pc1,OU=NotParis,DC=example,DC=org")));
    assert!(!t.includes(&n("u", "pc1", "CN=pc1,OU=Lyon,DC=example,DC=org")));
    let h = Targets::Hosts(vec!["PC1.example.org".into()]);
    assert!(h.includes(&n("x", "pc1.example.org", "")));
    assert!(!h.includes(&n("x", "pc2.example.org", "")));
    // By certificate: exactly the host holding it, whatever names it reports.
    let fp = "ab".repeat(32);
    let by_cert = Targets::Hosts(vec![format!("sha256:{}", fp.to_uppercase())]);
    assert!(by_cert.includes(&HostNames { fingerprint: &fp, uuid: "x", fqdn: "pc1", ou: "" }));
    assert!(!by_cert.includes(&HostNames { fingerprint: &"cd".repeat(32), uuid: "x", fqdn: "pc1", ou: "" }));
    assert!(!by_cert.includes(&n("x", "pc1", "")), "a host that does not say its certificate is not it");
    assert_eq!(fingerprint_name(&fp), Some(fp.clone()));
    assert_eq!(fingerprint_name("pc1.example.org"), None);
}

#[test]
fn actions_round_trip_through_signatures() {
    let key = PrivateKey::generate().unwrap();
    let a = Action {
        nonce: [3; 16],
        targets: Targets::Hosts(vec!["pc1".into()]),
        kind: ActionKind::Install(vec!["tool".into()]),
        created: 100,
        expires: 200,
    };
    let signed = a.sign(&key, &[]);
    let ActionWire::V1(back) = postcard::from_bytes(&signed.body).unwrap();
    assert_eq!(back, a);
    let r = CentralResponse::Action(signed);
    assert_eq!(decode_response(&encode_response(&r)[4..]).unwrap(), r);
    // An upgrade that needs a snapshot: its kind comes back with it, named as an upgrade; the
    // kinds before it keep their encoding (a new variant goes last).
    let after = Action { kind: ActionKind::UpgradeAfter(42), ..a };
    let ActionWire::V1(back) = postcard::from_bytes(&after.sign(&key, &[]).body).unwrap();
    assert_eq!(back.kind, ActionKind::UpgradeAfter(42));
    assert_eq!(back.kind.name(), "upgrade");
    assert_eq!(postcard::to_stdvec(&ActionKind::UpgradeAfter(42)).unwrap(), [4, 42]);
    assert_eq!(postcard::to_stdvec(&ActionKind::Upgrade).unwrap(), [1]);
}

#[test]
fn frames_round_trip() {
    let r = CentralRequest::Hosts(HostQuery { software: Some("vim".into()), ..HostQuery::default() });
    let f = encode_request(&r);
    assert_eq!(u32::from_le_bytes(f[..4].try_into().unwrap()) as usize, f.len() - 4);
    assert_eq!(decode_request(&f[4..]).unwrap(), r);
    assert!(decode_request(&[9, 9]).is_err());
}
