//! WAPT package archives (`.wapt`): checking their manifest and signature, and reading their
//! files for conversion to an Outpost package.
//!
//! `WAPT/manifest.sha256` is a JSON list of `[zip path, sha256 hex]` for every member except
//! `WAPT/signature*` and `WAPT/manifest*`; `WAPT/signature.sha256` is the base64 RSA PKCS#1
//! v1.5 / SHA-256 signature of the raw manifest bytes by the first certificate of
//! `WAPT/certificate.crt`. Every member must be listed and match; unsafe names (absolute,
//! `..`) are refused before anything is read.

use std::collections::BTreeMap;
use std::io::{self, Read, Seek};

use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};
use zip::ZipArchive;

use super::WaptError;
use super::signature::{WaptSigner, check_dates, describe, verify_control, verify_rsa};
use crate::control::Control;
use crate::package::{FileSource, SourceEntry};
use crate::pki::{Purpose, cert_info, fingerprint_sha256, parse_pem_certificates};
use crate::time_fmt::parse_date;

/// The control member.
pub const CONTROL: &str = "WAPT/control";
/// The manifest member.
pub const MANIFEST: &str = "WAPT/manifest.sha256";
/// The signature member.
pub const SIGNATURE: &str = "WAPT/signature.sha256";
/// The certificate-chain member.
pub const CERTIFICATE: &str = "WAPT/certificate.crt";
/// Members that belong to WAPT's signature scheme and are not carried into an Outpost package.
pub const SCHEME_MEMBERS: [&str; 4] = [CONTROL, MANIFEST, SIGNATURE, CERTIFICATE];
/// Size limit for the small members (control, manifest, signature, certificates).
pub const MAX_META_BYTES: u64 = 8 * 1024 * 1024;
const BUFFER: usize = 1024 * 1024;

/// An opened WAPT package.
#[derive(Debug)]
pub struct WaptArchive<R> {
    zip: ZipArchive<R>,
    control: Control,
    manifest_raw: Option<Vec<u8>>,
    signature: Option<String>,
    chain: Vec<CertificateDer<'static>>,
    /// Regular-file members: name → size.
    members: BTreeMap<String, u64>,
}

impl<R: Read + Seek> WaptArchive<R> {
    /// Opens a `.wapt` archive: checks every member name and reads the control.
    pub fn open(reader: R) -> Result<Self, WaptError> {
        let mut zip = ZipArchive::new(reader).map_err(|e| WaptError::Archive(e.to_string()))?;
        let mut members = BTreeMap::new();
        for index in 0..zip.len() {
            let member = zip.by_index_raw(index).map_err(|e| WaptError::Archive(e.to_string()))?;
            let name = member.name().map_err(|e| WaptError::Archive(e.to_string()))?.to_string();
            if !is_safe(&name) || member.enclosed_name().is_none() {
                return Err(WaptError::UnsafePath(name));
            }
            if member.is_dir() {
                continue;
            }
            if member.is_symlink() {
                return Err(WaptError::UnsafePath(name));
            }
            if members.insert(name.clone(), member.size()).is_some() {
                return Err(WaptError::Archive(format!("member {name:?} appears twice")));
            }
        }
        if members.contains_key("WAPT/manifest.sha1") && !members.contains_key(MANIFEST) {
            return Err(WaptError::LegacySignature { date: "SHA-1 manifest".into() });
        }
        let control_bytes = read_small(&mut zip, CONTROL)?.ok_or(WaptError::MissingMember(CONTROL))?;
        let control = Control::parse_bytes(&control_bytes).map_err(WaptError::Control)?;
        let manifest_raw = read_small(&mut zip, MANIFEST)?;
        let signature = read_small(&mut zip, SIGNATURE)?.map(|b| String::from_utf8_lossy(&b).into_owned());
        let chain = match read_small(&mut zip, CERTIFICATE)? {
            Some(pem) => parse_pem_certificates(&String::from_utf8_lossy(&pem))
                .map_err(|e| WaptError::Certificate(format!("{CERTIFICATE}: {e}")))?,
            None => Vec::new(),
        };
        Ok(Self { zip, control, manifest_raw, signature, chain, members })
    }

    /// The package's control.
    pub fn control(&self) -> &Control {
        &self.control
    }

    /// The certificates the archive carries, signer first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// True when the package carries an executable setup (`setup.py`).
    pub fn has_setup(&self) -> bool {
        self.members.keys().any(|k| k.eq_ignore_ascii_case("setup.py"))
    }

    /// Checks `WAPT/manifest.sha256`: every member listed, every listed member present, every
    /// SHA-256 right. `progress` gets the bytes hashed so far.
    pub fn check_manifest(&mut self, progress: &mut dyn FnMut(u64)) -> Result<(), WaptError> {
        let raw = self.manifest_raw.as_ref().ok_or(WaptError::MissingMember(MANIFEST))?;
        let listed: Vec<(String, String)> = serde_json::from_slice(raw)
            .map_err(|e| WaptError::Manifest(format!("not a JSON list of [path, sha256]: {e}")))?;
        let mut expected = BTreeMap::new();
        for (path, hash) in listed {
            if expected.insert(path.clone(), hash.to_lowercase()).is_some() {
                return Err(WaptError::Manifest(format!("{path:?} is listed twice")));
            }
        }
        for name in self.members.keys() {
            let scheme = name.starts_with("WAPT/signature") || name.starts_with("WAPT/manifest");
            if !scheme && !expected.contains_key(name) {
                return Err(WaptError::NotInManifest(name.clone()));
            }
        }
        let mut buffer = vec![0u8; BUFFER];
        let mut done = 0u64;
        for (path, hash) in &expected {
            if path.ends_with('/') {
                continue;
            }
            if !self.members.contains_key(path) {
                return Err(WaptError::MissingFile(path.clone()));
            }
            let mut member = self.zip.by_name(path).map_err(|e| WaptError::Archive(e.to_string()))?;
            let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
            loop {
                let n = match member.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(WaptError::Read { path: path.clone(), error: e }),
                };
                ctx.update(&buffer[..n]);
                done += n as u64;
                progress(done);
            }
            if &crate::hex::hex(ctx.finish().as_ref()) != hash {
                return Err(WaptError::HashMismatch { path: path.clone() });
            }
        }
        Ok(())
    }

    /// Checks the package signature (and the control's) against `trusted`: the signer
    /// certificate is one of them or is issued by one of them (through the archive's chain).
    pub fn verify_signature(&self, trusted: &[CertificateDer<'_>], now: i64) -> Result<WaptSigner, WaptError> {
        let raw = self.manifest_raw.as_ref().ok_or(WaptError::MissingMember(MANIFEST))?;
        let signature = self.signature.as_ref().ok_or(WaptError::MissingMember(SIGNATURE))?;
        let leaf = self.chain.first().ok_or(WaptError::MissingMember(CERTIFICATE))?;
        let info = cert_info(leaf).map_err(|e| WaptError::Certificate(e.to_string()))?;
        if !chains_to(leaf, &self.chain[1..], trusted) {
            return Err(WaptError::UntrustedSigner {
                signer: info.subject,
                fingerprint: info.fingerprint,
                trusted: describe(trusted),
            });
        }
        verify_rsa(&info, raw, signature).map_err(|_| WaptError::BadSignature { what: MANIFEST.into() })?;
        if self.has_setup() && !info.has(Purpose::CodeSigning) {
            return Err(WaptError::NeedsCodeSigning { subject: info.subject });
        }
        let signed_at = parse_date(self.control.get_or_empty("signature_date"));
        let signer = check_dates(info, signed_at, now)?;
        // The control carries its own signature by the same certificate.
        if self.control.get("signature").is_some() {
            verify_control(&self.control, std::slice::from_ref(leaf), now)?;
        }
        Ok(signer)
    }

    /// The files to carry into an Outpost package: every member but the WAPT signature scheme's.
    pub fn payload(&self) -> Vec<SourceEntry> {
        self.members
            .iter()
            .filter(|(name, _)| !SCHEME_MEMBERS.contains(&name.as_str()) && !name.starts_with("WAPT/signature"))
            .map(|(name, size)| SourceEntry { path: name.clone(), size: *size, mode: 0o644 })
            .collect()
    }
}

impl<R: Read + Seek> FileSource for WaptArchive<R> {
    fn open(&mut self, path: &str) -> io::Result<Box<dyn Read + '_>> {
        let member = self.zip.by_name(path).map_err(io::Error::other)?;
        Ok(Box::new(member))
    }
}

/// True when `certificate` is trusted directly or through `intermediates` (at most 8 links).
fn chains_to(
    certificate: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    trusted: &[CertificateDer<'_>],
) -> bool {
    let mut current = certificate.clone();
    for _ in 0..8 {
        if trusted.iter().any(|t| fingerprint_sha256(t.as_ref()) == fingerprint_sha256(current.as_ref())) {
            return true;
        }
        let Ok((_, cert)) = X509Certificate::from_der(current.as_ref()) else {
            return false;
        };
        let issued_by = |candidate: &CertificateDer<'_>| {
            X509Certificate::from_der(candidate.as_ref()).is_ok_and(|(_, issuer)| {
                issuer.subject() == cert.issuer() && cert.verify_signature(Some(issuer.public_key())).is_ok()
            })
        };
        if trusted.iter().any(issued_by) {
            return true;
        }
        match intermediates.iter().find(|c| issued_by(c)) {
            Some(next) if next.as_ref() != current.as_ref() => current = next.clone().into_owned(),
            _ => return false,
        }
    }
    false
}

/// Zip member names: no absolute path, drive letter, `..`, backslash tricks or NUL.
fn is_safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.starts_with('\\')
        && name.as_bytes().get(1) != Some(&b':')
        && !name.contains('\0')
        && !name.split(['/', '\\']).any(|part| part == "..")
}

fn read_small<R: Read + Seek>(zip: &mut ZipArchive<R>, name: &str) -> Result<Option<Vec<u8>>, WaptError> {
    let member = match zip.by_name(name) {
        Ok(m) => m,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => return Err(WaptError::Archive(e.to_string())),
    };
    let mut bytes = Vec::new();
    member
        .take(MAX_META_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| WaptError::Read { path: name.to_string(), error: source })?;
    if bytes.len() as u64 > MAX_META_BYTES {
        return Err(WaptError::Archive(format!("{name} is larger than {MAX_META_BYTES} bytes")));
    }
    Ok(Some(bytes))
}
