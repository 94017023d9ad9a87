//! WAPT control signatures: RSA PKCS#1 v1.5 / SHA-256 over the JSON of the signed attributes.
//!
//! 1. `signed_attributes` lists what is signed;
//! 2. a map {attribute: value} is built (absent attributes are `""`; `size` and
//!    `installed_size` are integers when numeric);
//! 3. it is serialised as Python's sorted, compact, ASCII-only JSON ([`super::json`]);
//! 4. the `signature` field is the base64 RSA signature of those bytes.
//!
//! Controls signed before WAPT 1.7 used Python 2's default JSON in CPython 2 dict order, which
//! cannot be reproduced faithfully: they are refused with [`WaptError::LegacySignature`],
//! never accepted.

use std::collections::BTreeMap;

use base64::Engine as _;
use rustls_pki_types::CertificateDer;

use super::WaptError;
use super::json::{self, Value};
use crate::control::{Control, INTEGER_FIELDS};
use crate::pki::{CertInfo, cert_info};
use crate::time_fmt::{is_compact_wapt_date, parse_date};

/// The bytes WAPT signs for a control: the JSON of its signed attributes.
pub fn signed_bytes(control: &Control) -> Result<Vec<u8>, WaptError> {
    let attributes = control
        .get("signed_attributes")
        .filter(|v| !v.trim().is_empty())
        .ok_or_else(|| WaptError::LegacySignature { date: control.get_or_empty("signature_date").to_string() })?;
    let mut map = BTreeMap::new();
    for attr in attributes.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        let value = control.get_or_empty(attr);
        let value = match json::int_digits(value) {
            Some(digits) if INTEGER_FIELDS.contains(&attr) => Value::Int(digits),
            _ => Value::Str(value.to_string()),
        };
        map.insert(attr.to_string(), value);
    }
    Ok(json::dumps_sorted(&map).into_bytes())
}

/// What a verified WAPT signature tells.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaptSigner {
    /// The signer's certificate.
    pub certificate: CertInfo,
    /// When it was signed (Unix seconds), if the date parses.
    pub signed_at: Option<i64>,
    /// True when the certificate has expired since (the signature was made while it was valid).
    pub expired_now: bool,
}

/// Verifies a control's signature with the trusted certificate whose SHA-256 fingerprint is
/// the control's `signer_fingerprint`.
pub fn verify_control(control: &Control, trusted: &[CertificateDer<'_>], now: i64) -> Result<WaptSigner, WaptError> {
    let date = control.get_or_empty("signature_date").trim().to_string();
    if is_compact_wapt_date(&date) || control.get("signed_attributes").is_none_or(|v| v.trim().is_empty()) {
        return Err(WaptError::LegacySignature { date });
    }
    let signature = control.get("signature").filter(|s| !s.trim().is_empty()).ok_or(WaptError::Unsigned)?;
    let fingerprint = control.get_or_empty("signer_fingerprint").trim().to_lowercase();
    let signer = control.get_or_empty("signer").to_string();
    let cert = find_by_fingerprint(trusted, &fingerprint).ok_or_else(|| WaptError::UntrustedSigner {
        signer: signer.clone(),
        fingerprint: fingerprint.clone(),
        trusted: describe(trusted),
    })?;
    let info = cert_info(cert).map_err(|e| WaptError::Certificate(e.to_string()))?;
    verify_rsa(&info, &signed_bytes(control)?, signature)
        .map_err(|_| WaptError::BadSignature { what: format!("control of {}", control.get_or_empty("package")) })?;
    check_dates(info, parse_date(&date), now)
}

/// Finds the certificate with this SHA-256 fingerprint (lower-case hex).
pub fn find_by_fingerprint<'a, 'b>(
    certs: &'a [CertificateDer<'b>],
    fingerprint: &str,
) -> Option<&'a CertificateDer<'b>> {
    certs.iter().find(|c| crate::pki::fingerprint_sha256(c.as_ref()) == fingerprint)
}

/// Verifies an RSA PKCS#1 v1.5 SHA-256 signature (base64) with a certificate's key.
pub(crate) fn verify_rsa(cert: &CertInfo, message: &[u8], signature_b64: &str) -> Result<(), ()> {
    let cleaned: String = signature_b64.chars().filter(|c| !c.is_whitespace()).collect();
    let signature = base64::engine::general_purpose::STANDARD.decode(cleaned).map_err(|_| ())?;
    if cert.key_algorithm != "RSA" {
        return Err(());
    }
    let key = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, &cert.public_key);
    key.verify(message, &signature).map_err(|_| ())
}

/// A signature counts when the certificate was valid at the signature date; if it has expired
/// since, the result says so.
pub(crate) fn check_dates(certificate: CertInfo, signed_at: Option<i64>, now: i64) -> Result<WaptSigner, WaptError> {
    if let Some(at) = signed_at
        && !certificate.is_valid_at(at)
    {
        return Err(WaptError::SignedOutsideValidity {
            subject: certificate.subject,
            signed: crate::time_fmt::format_unix(at),
        });
    }
    if certificate.not_before > now {
        return Err(WaptError::Certificate(format!(
            "{:?} is not valid yet (check this machine's clock)",
            certificate.subject
        )));
    }
    let expired_now = certificate.not_after <= now;
    Ok(WaptSigner { certificate, signed_at, expired_now })
}

pub(crate) fn describe(certs: &[CertificateDer<'_>]) -> String {
    if certs.is_empty() {
        return "no certificate given".into();
    }
    certs
        .iter()
        .filter_map(|c| cert_info(c).ok())
        .map(|i| format!("{:?} {}", i.subject, &i.fingerprint[..16]))
        .collect::<Vec<_>>()
        .join(", ")
}
