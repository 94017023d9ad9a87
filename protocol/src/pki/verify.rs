//! Reading certificates and checking chains: what a certificate says ([`cert_info`]) and whether
//! it chains to a trusted CA with the usages an operation needs ([`TrustStore::verify`]).

use std::time::Duration;

use rustls_pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::keys::fingerprint_sha256;
use super::{Purpose, Right, Role};
use crate::hex::hex;
use crate::time_fmt::format_unix;

/// Signature algorithms accepted in chains: Ed25519 (Outpost) and RSA (imported vendors).
static ALGORITHMS: &[&dyn rustls_pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ED25519,
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
    webpki::ring::RSA_PKCS1_2048_8192_SHA384,
    webpki::ring::RSA_PKCS1_2048_8192_SHA512,
];

/// What a certificate says.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CertInfo {
    /// Subject common name.
    pub subject: String,
    /// Subject organisation.
    pub organisation: Option<String>,
    /// Issuer common name.
    pub issuer: String,
    /// Serial number, hex.
    pub serial: String,
    /// Start of validity (Unix seconds).
    pub not_before: i64,
    /// End of validity (Unix seconds).
    pub not_after: i64,
    /// True for a CA certificate.
    pub is_ca: bool,
    /// Outpost role, when the certificate has one.
    pub role: Option<Role>,
    /// Admin rights.
    pub rights: Vec<Right>,
    /// Extended key usages, by name (`code-signing`, `package-signing`, …; others as OIDs).
    pub usages: Vec<String>,
    /// DNS names and IP addresses.
    pub alt_names: Vec<String>,
    /// SHA-256 of the DER certificate, lower-case hex.
    pub fingerprint: String,
    /// Key algorithm (`Ed25519`, `RSA`, …).
    pub key_algorithm: String,
    /// The raw subject public key (32 bytes for Ed25519).
    #[serde(skip)]
    pub public_key: Vec<u8>,
    #[serde(skip)]
    purposes: Vec<Purpose>,
}

impl CertInfo {
    /// True when the certificate carries `purpose` in its extended key usages.
    pub fn has(&self, purpose: Purpose) -> bool {
        self.purposes.contains(&purpose)
    }

    /// True when valid at `now`.
    pub fn is_valid_at(&self, now: i64) -> bool {
        self.not_before <= now && now < self.not_after
    }

    /// A one-line description: `"name" (role signer, sha256 8c5127a7…)`.
    pub fn describe(&self) -> String {
        let role = self.role.map(|r| format!("role {r}, ")).unwrap_or_default();
        format!("{:?} ({role}sha256 {}…)", self.subject, &self.fingerprint[..16])
    }
}

/// Why a certificate or chain is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// Not a certificate.
    #[error("not a valid X.509 certificate: {0}")]
    Parse(String),
    /// No certificate where one was expected.
    #[error("no certificate found (expected a PEM 'CERTIFICATE' section)")]
    Empty,
    /// Past `notAfter`.
    #[error("certificate {subject:?} expired on {} (issue a new one with `outpost pki issue`)", format_unix(*not_after))]
    Expired { subject: String, not_after: i64 },
    /// Before `notBefore`.
    #[error("certificate {subject:?} is not valid before {} (check this machine's clock)", format_unix(*not_before))]
    NotYetValid { subject: String, not_before: i64 },
    /// Not issued by a trusted CA.
    #[error("certificate {subject:?} (issuer {issuer:?}) does not chain to a trusted CA ({trusted})")]
    UnknownIssuer { subject: String, issuer: String, trusted: String },
    /// Lacks a usage.
    #[error("certificate {subject:?} lacks the {usage} usage{hint}")]
    MissingUsage { subject: String, usage: String, hint: String },
    /// Any other chain problem.
    #[error("certificate {subject:?} refused: {reason}")]
    Invalid { subject: String, reason: String },
}

/// Reads every certificate of a PEM text.
pub fn parse_pem_certificates(text: &str) -> Result<Vec<CertificateDer<'static>>, ChainError> {
    let sections = crate::pem::parse(text).map_err(|e| ChainError::Parse(e.to_string()))?;
    let certs: Vec<_> = sections
        .into_iter()
        .filter(|s| s.label == "CERTIFICATE" || s.label == "TRUSTED CERTIFICATE")
        .map(|s| CertificateDer::from(s.der))
        .collect();
    if certs.is_empty() {
        return Err(ChainError::Empty);
    }
    Ok(certs)
}

/// Reads what a certificate says.
pub fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, ChainError> {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| ChainError::Parse(e.to_string()))?;
    let first = |it: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>| {
        it.next().and_then(|a| a.as_str().ok()).map(str::to_string)
    };
    let subject = first(&mut cert.subject().iter_common_name()).unwrap_or_else(|| cert.subject().to_string());
    let issuer = first(&mut cert.issuer().iter_common_name()).unwrap_or_else(|| cert.issuer().to_string());
    let organisation = first(&mut cert.subject().iter_organization());

    let mut purposes = Vec::new();
    let mut usages = Vec::new();
    if let Ok(Some(eku)) = cert.extended_key_usage() {
        let eku = eku.value;
        let standard = [
            (eku.server_auth, Purpose::ServerAuth),
            (eku.client_auth, Purpose::ClientAuth),
            (eku.code_signing, Purpose::CodeSigning),
        ];
        purposes.extend(standard.iter().filter(|(on, _)| *on).map(|(_, p)| *p));
        for oid in &eku.other {
            match Purpose::all().into_iter().find(|p| p.oid() == oid.as_bytes()) {
                Some(p) => purposes.push(p),
                None => usages.push(oid.to_id_string()),
            }
        }
        if eku.any {
            usages.push("any".into());
        }
    }
    let role = purposes.iter().find_map(|p| if let Purpose::Role(r) = p { Some(*r) } else { None });
    let rights = purposes.iter().filter_map(|p| if let Purpose::Right(r) = p { Some(*r) } else { None }).collect();
    let mut names: Vec<String> = purposes.iter().filter(|p| !matches!(p, Purpose::Role(_))).map(|p| p.name()).collect();
    names.append(&mut usages);

    let mut alt_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => alt_names.push((*d).to_string()),
                GeneralName::IPAddress(ip) => alt_names.push(ip_text(ip)),
                _ => {}
            }
        }
    }
    let spki = cert.public_key();
    let key_algorithm = match spki.algorithm.algorithm.to_id_string().as_str() {
        "1.3.101.112" => "Ed25519",
        "1.2.840.113549.1.1.1" => "RSA",
        "1.2.840.10045.2.1" => "ECDSA",
        _ => "other",
    }
    .to_string();
    Ok(CertInfo {
        subject,
        organisation,
        issuer,
        serial: hex(cert.raw_serial()),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        is_ca: cert.is_ca(),
        role,
        rights,
        usages: names,
        alt_names,
        fingerprint: fingerprint_sha256(der.as_ref()),
        key_algorithm,
        public_key: spki.subject_public_key.data.to_vec(),
        purposes,
    })
}

fn ip_text(bytes: &[u8]) -> String {
    match bytes.len() {
        4 => std::net::Ipv4Addr::from(<[u8; 4]>::try_from(bytes).expect("length checked")).to_string(),
        16 => std::net::Ipv6Addr::from(<[u8; 16]>::try_from(bytes).expect("length checked")).to_string(),
        _ => hex(bytes),
    }
}

/// The certificates an operation trusts: the organisation CA (and any other anchors given).
#[derive(Clone, Debug)]
pub struct TrustStore {
    anchors: Vec<CertificateDer<'static>>,
}

impl TrustStore {
    /// Trusts these certificates as roots.
    pub fn new(anchors: Vec<CertificateDer<'static>>) -> Result<Self, ChainError> {
        if anchors.is_empty() {
            return Err(ChainError::Empty);
        }
        for a in &anchors {
            webpki::anchor_from_trusted_cert(a).map_err(|e| ChainError::Parse(format!("{e:?}")))?;
        }
        Ok(Self { anchors })
    }

    /// Trusts every certificate of a PEM text.
    pub fn from_pem(text: &str) -> Result<Self, ChainError> {
        Self::new(parse_pem_certificates(text)?)
    }

    /// The trusted certificates.
    pub fn anchors(&self) -> &[CertificateDer<'static>] {
        &self.anchors
    }

    /// Checks that `chain` (end-entity first, then intermediates) chains to a trusted root at
    /// `now` and carries every purpose in `required` (at least one). Returns what the end
    /// entity says.
    ///
    /// # Panics
    /// When `required` is empty: every use of a certificate names its purpose.
    pub fn verify(&self, chain: &[CertificateDer<'_>], now: i64, required: &[Purpose]) -> Result<CertInfo, ChainError> {
        assert!(!required.is_empty(), "a chain is always checked for a purpose");
        let leaf = chain.first().ok_or(ChainError::Empty)?;
        let info = cert_info(leaf)?;
        if info.not_after <= now {
            return Err(ChainError::Expired { subject: info.subject, not_after: info.not_after });
        }
        if info.not_before > now {
            return Err(ChainError::NotYetValid { subject: info.subject, not_before: info.not_before });
        }
        let anchors: Vec<_> = self
            .anchors
            .iter()
            .map(|a| webpki::anchor_from_trusted_cert(a).expect("checked in TrustStore::new"))
            .collect();
        let ee = EndEntityCert::try_from(leaf).map_err(|e| ChainError::Parse(format!("{e:?}")))?;
        let time = UnixTime::since_unix_epoch(Duration::from_secs(u64::try_from(now).unwrap_or(0)));
        let intermediates = &chain[1..];
        for purpose in required {
            ee.verify_for_usage(
                ALGORITHMS,
                &anchors,
                intermediates,
                time,
                KeyUsage::required(purpose.oid()),
                None,
                None,
            )
            .map_err(|e| self.map_error(e, &info, *purpose))?;
        }
        Ok(info)
    }

    fn map_error(&self, error: webpki::Error, info: &CertInfo, purpose: Purpose) -> ChainError {
        let subject = info.subject.clone();
        match error {
            webpki::Error::CertExpired { .. } => ChainError::Expired { subject, not_after: info.not_after },
            webpki::Error::CertNotValidYet { .. } => ChainError::NotYetValid { subject, not_before: info.not_before },
            // A CA with the same name but another key shows up as a bad signature.
            webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey => ChainError::UnknownIssuer {
                subject,
                issuer: info.issuer.clone(),
                trusted: self
                    .anchors
                    .iter()
                    .filter_map(|a| cert_info(a).ok())
                    .map(|a| format!("{:?}", a.subject))
                    .collect::<Vec<_>>()
                    .join(", "),
            },
            #[allow(deprecated)]
            webpki::Error::RequiredEkuNotFound | webpki::Error::RequiredEkuNotFoundContext(_) => {
                let hint = match purpose {
                    Purpose::CodeSigning => {
                        " (packages with scripts need a signer certificate: `outpost pki issue --role signer`)"
                    }
                    Purpose::PackageSigning => {
                        " (packages are signed by signer, deployer or admin-with-modify certificates)"
                    }
                    Purpose::SnapshotSigning => " (snapshots are signed by the main repository's server certificate)",
                    _ => "",
                };
                ChainError::MissingUsage { subject, usage: purpose.name(), hint: hint.into() }
            }
            other => ChainError::Invalid { subject, reason: format!("{other:?}") },
        }
    }
}
