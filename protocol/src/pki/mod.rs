//! The organisation's PKI: one CA, and certificates whose extended key usages say what each key
//! may do.
//!
//! | role | usages |
//! | --- | --- |
//! | signer | code signing, package signing, TLS client |
//! | deployer | package signing (packages without scripts only), TLS client |
//! | admin | admin rights (view, act, modify), TLS client; package signing with `modify` |
//! | server | TLS server and client, snapshot signing |
//! | edge, host | TLS server and client |
//!
//! Every usage is an extended-key-usage purpose, so chain checks (rustls-webpki) enforce them
//! as they enforce `serverAuth`. Outpost's own purposes live under its `2.25.<UUID>` arc
//! ([`crate::der::OUTPOST_ARC`]); the role itself is a purpose too (`<arc>.1.<n>`), so a
//! certificate says what it is without any other extension. Keys are Ed25519.

mod keys;
mod verify;

pub use keys::{KeyError, PrivateKey, decode_private_key, encode_private_key, fingerprint_sha256, is_encrypted};
pub use verify::{CertInfo, ChainError, TrustStore, cert_info, parse_pem_certificates};

use std::fmt;

use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType, IsCa, Issuer, KeyUsagePurpose,
    SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use time::{Duration, OffsetDateTime};

use crate::der;

/// Default lifetime of the organisation CA, in days (20 years).
pub const DEFAULT_CA_DAYS: u32 = 7300;
/// Longest lifetime of any certificate, in days (100 years).
pub const MAX_DAYS: u32 = 36_500;
/// Default lifetime of an issued certificate, in days (3 years).
pub const DEFAULT_CERT_DAYS: u32 = 1095;
/// How far back `not_before` is set, to tolerate clocks that are a little behind.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// What a certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Signs packages, including packages with scripts (code signing).
    Signer,
    /// Signs packages without scripts (host, group, unit packages).
    Deployer,
    /// Signs actions and rules; carries rights.
    Admin,
    /// The main repository and central server: TLS and snapshot signing.
    Server,
    /// An edge repository: TLS only.
    Edge,
    /// A managed machine's agent: TLS only.
    Host,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 6] = [Role::Signer, Role::Deployer, Role::Admin, Role::Server, Role::Edge, Role::Host];

    /// The role's name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Signer => "signer",
            Self::Deployer => "deployer",
            Self::Admin => "admin",
            Self::Server => "server",
            Self::Edge => "edge",
            Self::Host => "host",
        }
    }

    /// Parses a role name.
    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text.trim().to_lowercase())
    }

    fn purpose(self) -> Purpose {
        Purpose::Role(self)
    }

    fn index(self) -> u8 {
        match self {
            Self::Signer => 1,
            Self::Deployer => 2,
            Self::Admin => 3,
            Self::Server => 4,
            Self::Edge => 5,
            Self::Host => 6,
        }
    }

    /// True for roles that serve TLS and need a DNS name or address.
    pub fn is_node(self) -> bool {
        matches!(self, Self::Server | Self::Edge | Self::Host)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An administrator's right.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Right {
    /// Read inventory and status.
    View,
    /// Send actions (update, upgrade, install, remove).
    Act,
    /// Change configuration: host packages, rules, settings.
    Modify,
}

impl Right {
    /// Every right.
    pub const ALL: [Right; 3] = [Right::View, Right::Act, Right::Modify];

    /// The right's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::View => "view",
            Self::Act => "act",
            Self::Modify => "modify",
        }
    }

    /// Parses a comma list of rights (`view,act`).
    pub fn parse_list(text: &str) -> Result<Vec<Right>, String> {
        let mut rights = Vec::new();
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let right = Self::ALL
                .into_iter()
                .find(|r| r.as_str() == item.to_lowercase())
                .ok_or_else(|| format!("unknown right {item:?} (expected view, act or modify)"))?;
            if !rights.contains(&right) {
                rights.push(right);
            }
        }
        rights.sort();
        Ok(rights)
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An extended-key-usage purpose Outpost knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// TLS server (id-kp-serverAuth).
    ServerAuth,
    /// TLS client (id-kp-clientAuth).
    ClientAuth,
    /// Code signing (id-kp-codeSigning): required for packages with scripts.
    CodeSigning,
    /// May sign Outpost packages.
    PackageSigning,
    /// May sign repository snapshots.
    SnapshotSigning,
    /// An administrator right.
    Right(Right),
    /// The certificate's role.
    Role(Role),
}

/// DER content of id-kp-serverAuth.
pub const OID_SERVER_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01];
/// DER content of id-kp-clientAuth.
pub const OID_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];
/// DER content of id-kp-codeSigning.
pub const OID_CODE_SIGNING: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x03];

macro_rules! outpost_oid {
    ($($tail:expr),+) => {
        &[
            0x69, 0x82, 0xa0, 0xa3, 0x9b, 0xee, 0xac, 0x81, 0x92, 0xa5, 0xa9, 0x95, 0xac, 0xdf,
            0x81, 0xf9, 0xdc, 0xad, 0x90, 0x7e, $($tail),+
        ]
    };
}

/// DER content of Outpost's package-signing purpose (`<arc>.2.1`).
pub const OID_PACKAGE_SIGNING: &[u8] = outpost_oid!(0x02, 0x01);
/// DER content of Outpost's snapshot-signing purpose (`<arc>.2.2`).
pub const OID_SNAPSHOT_SIGNING: &[u8] = outpost_oid!(0x02, 0x02);
const OID_RIGHT_VIEW: &[u8] = outpost_oid!(0x03, 0x01);
const OID_RIGHT_ACT: &[u8] = outpost_oid!(0x03, 0x02);
const OID_RIGHT_MODIFY: &[u8] = outpost_oid!(0x03, 0x03);
const OID_ROLES: [&[u8]; 6] = [
    outpost_oid!(0x01, 0x01),
    outpost_oid!(0x01, 0x02),
    outpost_oid!(0x01, 0x03),
    outpost_oid!(0x01, 0x04),
    outpost_oid!(0x01, 0x05),
    outpost_oid!(0x01, 0x06),
];

impl Purpose {
    /// The purpose's object identifier (DER content bytes).
    pub fn oid(self) -> &'static [u8] {
        match self {
            Self::ServerAuth => OID_SERVER_AUTH,
            Self::ClientAuth => OID_CLIENT_AUTH,
            Self::CodeSigning => OID_CODE_SIGNING,
            Self::PackageSigning => OID_PACKAGE_SIGNING,
            Self::SnapshotSigning => OID_SNAPSHOT_SIGNING,
            Self::Right(Right::View) => OID_RIGHT_VIEW,
            Self::Right(Right::Act) => OID_RIGHT_ACT,
            Self::Right(Right::Modify) => OID_RIGHT_MODIFY,
            Self::Role(role) => OID_ROLES[usize::from(role.index() - 1)],
        }
    }

    /// Every purpose, for decoding.
    pub fn all() -> Vec<Purpose> {
        let mut all =
            vec![Self::ServerAuth, Self::ClientAuth, Self::CodeSigning, Self::PackageSigning, Self::SnapshotSigning];
        all.extend(Right::ALL.map(Self::Right));
        all.extend(Role::ALL.map(Self::Role));
        all
    }

    /// A short name for display.
    pub fn name(self) -> String {
        match self {
            Self::ServerAuth => "tls-server".into(),
            Self::ClientAuth => "tls-client".into(),
            Self::CodeSigning => "code-signing".into(),
            Self::PackageSigning => "package-signing".into(),
            Self::SnapshotSigning => "snapshot-signing".into(),
            Self::Right(r) => format!("right:{r}"),
            Self::Role(r) => format!("role:{r}"),
        }
    }
}

/// The purposes a certificate of `role` carries.
pub fn purposes_for(role: Role, rights: &[Right]) -> Vec<Purpose> {
    let mut p = vec![role.purpose()];
    match role {
        Role::Signer => p.extend([Purpose::CodeSigning, Purpose::PackageSigning, Purpose::ClientAuth]),
        Role::Deployer => p.extend([Purpose::PackageSigning, Purpose::ClientAuth]),
        Role::Admin => {
            p.push(Purpose::ClientAuth);
            p.extend(rights.iter().map(|r| Purpose::Right(*r)));
            if rights.contains(&Right::Modify) {
                p.push(Purpose::PackageSigning);
            }
        }
        Role::Server => p.extend([Purpose::ServerAuth, Purpose::ClientAuth, Purpose::SnapshotSigning]),
        Role::Edge | Role::Host => p.extend([Purpose::ServerAuth, Purpose::ClientAuth]),
    }
    p
}

/// A certificate and its private key, as made by [`create_ca`] or [`issue`].
#[derive(Debug)]
pub struct Issued {
    /// The certificate, DER.
    pub cert: CertificateDer<'static>,
    /// The private key (PKCS#8 DER).
    pub key: PrivateKey,
}

impl Issued {
    /// The certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_certificate(&self.cert)
    }
}

/// What to issue.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// The role.
    pub role: Role,
    /// Common name: a person, a signer's name, or a node's DNS name.
    pub name: String,
    /// Admin rights (admins only).
    pub rights: Vec<Right>,
    /// Extra DNS names or IP addresses (nodes).
    pub alt_names: Vec<String>,
    /// Lifetime in days.
    pub days: u32,
}

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The name cannot be used.
    #[error("invalid name {name:?}: {reason}")]
    Name { name: String, reason: String },
    /// Rights given to a role that has none, or an admin without rights.
    #[error("{0}")]
    Rights(String),
    /// The CA certificate or key cannot be used.
    #[error("the CA cannot issue: {0}")]
    Ca(String),
    /// The lifetime is zero or beyond the CA's.
    #[error("invalid lifetime: {0}")]
    Lifetime(String),
    /// Certificate generation failed.
    #[error("certificate generation failed: {0}")]
    Generate(rcgen::Error),
}

impl From<rcgen::Error> for IssueError {
    fn from(e: rcgen::Error) -> Self {
        Self::Generate(e)
    }
}

/// Makes the organisation CA (self-signed, Ed25519).
pub fn create_ca(organisation: &str, now: i64, days: u32) -> Result<Issued, IssueError> {
    let organisation = organisation.trim();
    if organisation.is_empty() || organisation.chars().any(char::is_control) {
        return Err(IssueError::Name { name: organisation.into(), reason: "empty or with control characters".into() });
    }
    if days == 0 {
        return Err(IssueError::Lifetime("a CA needs at least one day".into()));
    }
    let key = PrivateKey::generate()?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::OrganizationName, organisation);
    params.distinguished_name.push(DnType::CommonName, format!("{organisation} CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    set_validity(&mut params, now, days)?;
    params.serial_number = Some(random_serial()?);
    let cert = params.self_signed(&key.rcgen()?)?;
    Ok(Issued { cert: cert.der().clone(), key })
}

/// Issues a certificate for `request`, signed by the CA.
pub fn issue(
    ca_cert: &CertificateDer<'_>,
    ca_key: &PrivateKey,
    request: &IssueRequest,
    now: i64,
) -> Result<Issued, IssueError> {
    let params = leaf_params(ca_cert, ca_key, request, now)?;
    let key = PrivateKey::generate()?;
    let issuer = Issuer::from_ca_cert_der(ca_cert, ca_key.rcgen()?)?;
    let cert = params.signed_by(&key.rcgen()?, &issuer)?;
    Ok(Issued { cert: cert.der().clone(), key })
}

/// Makes the enrollment CA: an intermediate CA that the central server holds to turn hosts'
/// certificate requests into host certificates. Its own extended key usages are a host's, and
/// chain checks (rustls-webpki) hold every certificate below it to them: a stolen enrollment
/// key can make host certificates, never a signer, admin, server or edge.
pub fn create_enrollment_ca(
    ca_cert: &CertificateDer<'_>,
    ca_key: &PrivateKey,
    name: &str,
    now: i64,
    days: u32,
) -> Result<Issued, IssueError> {
    // Made as a signer would be (no DNS name needed), then given a host's usages.
    let request = IssueRequest { role: Role::Signer, name: name.to_string(), rights: vec![], alt_names: vec![], days };
    let mut params = leaf_params(ca_cert, ca_key, &request, now)?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
    params.subject_alt_names = Vec::new();
    let oids: Vec<&[u8]> = purposes_for(Role::Host, &[]).into_iter().map(Purpose::oid).collect();
    params.custom_extensions =
        vec![CustomExtension::from_oid_content(&der::EXTENDED_KEY_USAGE_EXTENSION, der::extended_key_usage(&oids))];
    let key = PrivateKey::generate()?;
    let issuer = Issuer::from_ca_cert_der(ca_cert, ca_key.rcgen()?)?;
    let cert = params.signed_by(&key.rcgen()?, &issuer)?;
    Ok(Issued { cert: cert.der().clone(), key })
}

/// A host certificate named `name` (with `alt_names`) for the key of a PKCS#10 request (whose
/// own signature is checked), signed by `issuer` (the enrollment CA). Only the key is taken
/// from the request: names and usages are the issuer's decision.
pub fn issue_host_from_request(
    issuer_cert: &CertificateDer<'_>,
    issuer_key: &PrivateKey,
    request_der: &[u8],
    name: &str,
    alt_names: &[String],
    now: i64,
    days: u32,
) -> Result<CertificateDer<'static>, IssueError> {
    let csr = rcgen::CertificateSigningRequestParams::from_der(&request_der.to_vec().into())
        .map_err(|e| IssueError::Name { name: name.into(), reason: format!("certificate request: {e}") })?;
    let request =
        IssueRequest { role: Role::Host, name: name.to_string(), rights: vec![], alt_names: alt_names.to_vec(), days };
    let params = leaf_params(issuer_cert, issuer_key, &request, now)?;
    let issuer = Issuer::from_ca_cert_der(issuer_cert, issuer_key.rcgen()?)?;
    let cert = params.signed_by(&csr.public_key, &issuer)?;
    Ok(cert.der().clone())
}

/// A PKCS#10 certificate request for `key`, naming `name` (what an agent sends to enroll).
pub fn certificate_request(key: &PrivateKey, name: &str) -> Result<Vec<u8>, IssueError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, name);
    Ok(params.serialize_request(&key.rcgen()?)?.der().to_vec())
}

/// The parameters of a certificate for `request` under the CA `ca_cert`, after every check.
fn leaf_params(
    ca_cert: &CertificateDer<'_>,
    ca_key: &PrivateKey,
    request: &IssueRequest,
    now: i64,
) -> Result<CertificateParams, IssueError> {
    let name = request.name.trim();
    if name.is_empty() || name.chars().any(char::is_control) || name.len() > 200 {
        return Err(IssueError::Name {
            name: name.into(),
            reason: "empty, too long or with control characters".into(),
        });
    }
    if request.role != Role::Admin && !request.rights.is_empty() {
        return Err(IssueError::Rights(format!("only admin certificates carry rights, not {}", request.role)));
    }
    if request.role == Role::Admin && request.rights.is_empty() {
        return Err(IssueError::Rights("an admin certificate needs at least one right (view, act, modify)".into()));
    }
    if request.days == 0 {
        return Err(IssueError::Lifetime("a certificate needs at least one day".into()));
    }
    let ca = cert_info(ca_cert).map_err(|e| IssueError::Ca(e.to_string()))?;
    if !ca.is_ca {
        return Err(IssueError::Ca(format!("{:?} is not a CA certificate", ca.subject)));
    }
    if ca.not_after <= now {
        return Err(IssueError::Ca(format!(
            "the CA certificate expired on {}",
            crate::time_fmt::format_unix(ca.not_after)
        )));
    }
    if ca_key.public_key() != ca.public_key.as_slice() {
        return Err(IssueError::Ca("the CA key does not belong to the CA certificate".into()));
    }
    let not_after = now + i64::from(request.days) * 86_400;
    if not_after > ca.not_after {
        return Err(IssueError::Lifetime(format!(
            "{} days would outlive the CA, which expires on {}",
            request.days,
            crate::time_fmt::format_unix(ca.not_after)
        )));
    }

    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(org) = &ca.organisation {
        params.distinguished_name.push(DnType::OrganizationName, org.as_str());
    }
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.subject_alt_names = alt_names(request.role, name, &request.alt_names)?;
    let oids: Vec<&[u8]> = purposes_for(request.role, &request.rights).into_iter().map(Purpose::oid).collect();
    params
        .custom_extensions
        .push(CustomExtension::from_oid_content(&der::EXTENDED_KEY_USAGE_EXTENSION, der::extended_key_usage(&oids)));
    set_validity(&mut params, now, request.days)?;
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// PEM text of a certificate.
pub fn pem_certificate(der: &CertificateDer<'_>) -> String {
    crate::pem::encode("CERTIFICATE", der.as_ref())
}

fn alt_names(role: Role, name: &str, extra: &[String]) -> Result<Vec<SanType>, IssueError> {
    let mut names: Vec<&str> = Vec::new();
    if role.is_node() {
        names.push(name);
    }
    names.extend(extra.iter().map(String::as_str));
    let mut out = Vec::new();
    for n in names {
        let n = n.trim();
        let san = if let Ok(ip) = n.parse::<std::net::IpAddr>() {
            SanType::IpAddress(ip)
        } else if is_dns_name(n) {
            SanType::DnsName(
                n.to_string()
                    .try_into()
                    .map_err(|e: rcgen::Error| IssueError::Name { name: n.into(), reason: e.to_string() })?,
            )
        } else {
            return Err(IssueError::Name {
                name: n.into(),
                reason: format!(
                    "a {role} certificate names its node by DNS name or IP address; give one as the name or with --san"
                ),
            });
        };
        if !out.contains(&san) {
            out.push(san);
        }
    }
    Ok(out)
}

fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

fn set_validity(params: &mut CertificateParams, now: i64, days: u32) -> Result<(), IssueError> {
    if days > MAX_DAYS {
        return Err(IssueError::Lifetime(format!("{days} days is too long: at most {MAX_DAYS} days (100 years)")));
    }
    let start =
        OffsetDateTime::from_unix_timestamp(now - CLOCK_SKEW_SECS).map_err(|e| IssueError::Lifetime(e.to_string()))?;
    params.not_before = start;
    params.not_after = start
        .checked_add(Duration::seconds(CLOCK_SKEW_SECS) + Duration::days(i64::from(days)))
        .ok_or_else(|| IssueError::Lifetime(format!("{days} days from now cannot be represented")))?;
    Ok(())
}

fn random_serial() -> Result<SerialNumber, IssueError> {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| IssueError::Ca("no randomness available for the serial number".into()))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests;
