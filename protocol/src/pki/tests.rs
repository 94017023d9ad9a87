use super::*;

const NOW: i64 = 1_790_000_000; // 2026-09

fn ca() -> Issued {
    create_ca("Example Org", NOW, DEFAULT_CA_DAYS).unwrap()
}

fn request(role: Role, name: &str) -> IssueRequest {
    let rights = if role == Role::Admin { vec![Right::View] } else { vec![] };
    IssueRequest { role, name: name.into(), rights, alt_names: vec![], days: 30 }
}

#[test]
fn ca_is_a_ca() {
    let ca = ca();
    let info = cert_info(&ca.cert).unwrap();
    assert!(info.is_ca);
    assert_eq!(info.subject, "Example Org CA");
    assert_eq!(info.organisation.as_deref(), Some("Example Org"));
    assert_eq!(info.key_algorithm, "Ed25519");
    assert_eq!(info.public_key, ca.key.public_key());
    assert!(info.is_valid_at(NOW) && !info.is_valid_at(NOW + i64::from(DEFAULT_CA_DAYS) * 86_400));
}

#[test]
fn each_role_has_its_usages() {
    let ca = ca();
    let trust = TrustStore::new(vec![ca.cert.clone()]).unwrap();
    let table: &[(Role, &[Purpose], &[Purpose])] = &[
        (
            Role::Signer,
            &[Purpose::CodeSigning, Purpose::PackageSigning, Purpose::ClientAuth],
            &[Purpose::SnapshotSigning, Purpose::ServerAuth],
        ),
        (Role::Deployer, &[Purpose::PackageSigning, Purpose::ClientAuth], &[Purpose::CodeSigning]),
        (
            Role::Admin,
            &[Purpose::Right(Right::View), Purpose::ClientAuth],
            &[Purpose::PackageSigning, Purpose::CodeSigning, Purpose::Right(Right::Act)],
        ),
        (
            Role::Server,
            &[Purpose::ServerAuth, Purpose::ClientAuth, Purpose::SnapshotSigning],
            &[Purpose::PackageSigning, Purpose::CodeSigning],
        ),
        (Role::Edge, &[Purpose::ServerAuth, Purpose::ClientAuth], &[Purpose::SnapshotSigning, Purpose::PackageSigning]),
        (Role::Host, &[Purpose::ServerAuth, Purpose::ClientAuth], &[Purpose::SnapshotSigning, Purpose::PackageSigning]),
    ];
    for (role, has, lacks) in table {
        let name = if role.is_node() { "node1.example.org" } else { "Alice" };
        let issued = issue(&ca.cert, &ca.key, &request(*role, name), NOW).unwrap();
        let info = trust.verify(std::slice::from_ref(&issued.cert), NOW, has).unwrap();
        assert_eq!(info.role, Some(*role));
        assert_eq!(info.organisation.as_deref(), Some("Example Org"));
        for p in *has {
            assert!(info.has(*p), "{role} should have {p:?}");
        }
        for p in *lacks {
            assert!(!info.has(*p), "{role} should lack {p:?}");
            let err = trust.verify(std::slice::from_ref(&issued.cert), NOW, &[*p]).unwrap_err();
            assert!(matches!(err, ChainError::MissingUsage { .. }), "{role} {p:?}: {err}");
        }
    }
}

#[test]
fn admin_rights_and_modify_signs_packages() {
    let ca = ca();
    let mut req = request(Role::Admin, "Bob");
    req.rights = vec![Right::View, Right::Act, Right::Modify];
    let info = cert_info(&issue(&ca.cert, &ca.key, &req, NOW).unwrap().cert).unwrap();
    assert_eq!(info.rights, vec![Right::View, Right::Act, Right::Modify]);
    assert!(info.has(Purpose::PackageSigning));
    req.rights.clear();
    assert!(matches!(issue(&ca.cert, &ca.key, &req, NOW), Err(IssueError::Rights(_))));
    let mut signer = request(Role::Signer, "S");
    signer.rights = vec![Right::View];
    assert!(matches!(issue(&ca.cert, &ca.key, &signer, NOW), Err(IssueError::Rights(_))));
    assert_eq!(Right::parse_list("modify, view,view").unwrap(), vec![Right::View, Right::Modify]);
    assert!(Right::parse_list("root").unwrap_err().contains("root"));
}

#[test]
fn nodes_carry_names_and_addresses() {
    let ca = ca();
    let mut req = request(Role::Edge, "edge1.site.example");
    req.alt_names = vec!["127.0.0.2".into(), "edge1".into()];
    let info = cert_info(&issue(&ca.cert, &ca.key, &req, NOW).unwrap().cert).unwrap();
    assert_eq!(info.alt_names, vec!["edge1.site.example", "127.0.0.2", "edge1"]);
    let bad = request(Role::Server, "not a dns name");
    let err = issue(&ca.cert, &ca.key, &bad, NOW).unwrap_err().to_string();
    assert!(err.contains("--san"), "{err}");
}

#[test]
fn expired_foreign_and_future_certificates_are_refused() {
    let ca = ca();
    let trust = TrustStore::new(vec![ca.cert.clone()]).unwrap();
    let cert = issue(&ca.cert, &ca.key, &request(Role::Signer, "S"), NOW).unwrap().cert;
    let later = NOW + 31 * 86_400;
    let err = trust.verify(std::slice::from_ref(&cert), later, &[Purpose::PackageSigning]).unwrap_err();
    assert!(matches!(err, ChainError::Expired { .. }));
    assert!(err.to_string().contains("expired on 2026-"), "{err}");
    let err = trust.verify(std::slice::from_ref(&cert), NOW - 86_400, &[Purpose::PackageSigning]).unwrap_err();
    assert!(matches!(err, ChainError::NotYetValid { .. }));
    let other = create_ca("Other Org", NOW, 100).unwrap();
    let other_trust = TrustStore::new(vec![other.cert]).unwrap();
    let err = other_trust.verify(&[cert], NOW, &[Purpose::PackageSigning]).unwrap_err();
    assert!(matches!(err, ChainError::UnknownIssuer { .. }), "{err}");
    assert!(err.to_string().contains("Other Org CA"), "{err}");
}

#[test]
fn issuing_checks_the_ca() {
    let ca = ca();
    let other = create_ca("Other", NOW, 100).unwrap();
    let err = issue(&ca.cert, &other.key, &request(Role::Signer, "S"), NOW).unwrap_err();
    assert!(err.to_string().contains("does not belong"), "{err}");
    let leaf = issue(&ca.cert, &ca.key, &request(Role::Signer, "S"), NOW).unwrap();
    let err = issue(&leaf.cert, &leaf.key, &request(Role::Signer, "T"), NOW).unwrap_err();
    assert!(err.to_string().contains("not a CA"), "{err}");
    let mut long = request(Role::Signer, "S");
    long.days = DEFAULT_CA_DAYS + 1;
    assert!(matches!(issue(&ca.cert, &ca.key, &long, NOW), Err(IssueError::Lifetime(_))));
    let err = issue(&ca.cert, &ca.key, &request(Role::Signer, "S"), NOW + i64::from(DEFAULT_CA_DAYS) * 86_400 + 1)
        .unwrap_err();
    assert!(err.to_string().contains("expired"), "{err}");
}

#[test]
fn keys_round_trip_encrypted_and_plain() {
    let key = PrivateKey::generate().unwrap();
    let pem = encode_private_key(&key, Some(b"correct horse")).unwrap();
    assert!(is_encrypted(&pem) && pem.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"));
    let back = decode_private_key(&pem, Some(b"correct horse")).unwrap();
    assert_eq!(back.public_key(), key.public_key());
    assert!(matches!(decode_private_key(&pem, Some(b"wrong")), Err(KeyError::WrongPassword)));
    assert!(matches!(decode_private_key(&pem, None), Err(KeyError::NeedPassword)));
    assert!(matches!(encode_private_key(&key, Some(b"")), Err(KeyError::EmptyPassword)));
    let plain = encode_private_key(&key, None).unwrap();
    assert!(!is_encrypted(&plain));
    assert_eq!(decode_private_key(&plain, None).unwrap().public_key(), key.public_key());
    assert!(matches!(decode_private_key("hello", None), Err(KeyError::NotAKey)));
    let sig = key.sign(b"msg");
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&key.public_key()).unwrap();
    assert!(vk.verify_strict(b"msg", &ed25519_dalek::Signature::from_bytes(&sig)).is_ok());
}
