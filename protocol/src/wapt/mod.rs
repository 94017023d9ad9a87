//! Reading what WAPT wrote, so that organisations leaving it keep their packages: signed
//! controls ([`signature`]), package archives ([`archive`]), repository indexes ([`index`]),
//! and the conversion of a WAPT package to an Outpost package ([`convert`]).

pub mod archive;
pub mod index;
pub mod json;
pub mod signature;

pub use archive::WaptArchive;
pub use index::{Index, read_index};
pub use signature::{WaptSigner, signed_bytes, verify_control};

use std::io::{Read, Seek, Write};

use crate::control::ControlError;
use crate::package::{self, BuildError, BuildOutput, Signer};

/// Why something WAPT wrote is refused.
#[derive(Debug, thiserror::Error)]
pub enum WaptError {
    /// Signed before WAPT 1.7.
    #[error(
        "legacy signature scheme: signed by WAPT before 1.7 ({date}) with Python 2's JSON encoding, which Outpost refuses rather than emulate; re-sign the package with WAPT 1.7 or later, or import it without --trust"
    )]
    LegacySignature { date: String },
    /// No signature at all.
    #[error("the control is not signed (no 'signature' field)")]
    Unsigned,
    /// The signer's certificate is not among the trusted ones.
    #[error(
        "signed by {signer:?} (certificate sha256 {fingerprint}), which is not a trusted certificate (trusted: {trusted})"
    )]
    UntrustedSigner { signer: String, fingerprint: String, trusted: String },
    /// The signature does not match.
    #[error("the signature of {what} does not match: it was changed after signing, or signed by another key")]
    BadSignature { what: String },
    /// Signed while the certificate was not valid.
    #[error("signed on {signed}, outside the validity of certificate {subject:?}")]
    SignedOutsideValidity { subject: String, signed: String },
    /// A certificate problem.
    #[error("certificate: {0}")]
    Certificate(String),
    /// Not a readable zip.
    #[error("not a valid zip archive (truncated or damaged?): {0}")]
    Archive(String),
    /// An unsafe member name.
    #[error("unsafe path in the archive: {0:?} (absolute paths and '..' are refused)")]
    UnsafePath(String),
    /// A member the format needs.
    #[error("the archive has no {0} member")]
    MissingMember(&'static str),
    /// A malformed manifest.
    #[error("WAPT/manifest.sha256: {0}")]
    Manifest(String),
    /// A member not listed in the manifest.
    #[error("member {0:?} is not listed in WAPT/manifest.sha256 (added after signing?)")]
    NotInManifest(String),
    /// A listed file absent.
    #[error("file {0:?} is listed in WAPT/manifest.sha256 but missing from the archive")]
    MissingFile(String),
    /// A file whose hash differs.
    #[error("file {path:?} does not match its SHA-256 in WAPT/manifest.sha256 (changed after signing, or damaged)")]
    HashMismatch { path: String },
    /// `setup.py` signed without code signing.
    #[error("the package has an executable setup.py but its signer {subject:?} lacks the code-signing usage")]
    NeedsCodeSigning { subject: String },
    /// The control does not parse.
    #[error("WAPT/control: {0}")]
    Control(ControlError),
    /// The index does not parse.
    #[error("{0}")]
    Index(String),
    /// Reading a member failed.
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    /// Building the Outpost package failed.
    #[error("{0}")]
    Build(#[from] BuildError),
}

/// Converts an opened WAPT package to an Outpost package signed by `signer`. When `wapt_signer`
/// is given (the WAPT signature was verified), the control records it as `wapt_signer` and
/// `wapt_signer_fingerprint`.
pub fn convert<R: Read + Seek, W: Read + Write + Seek>(
    archive: &mut WaptArchive<R>,
    wapt_signer: Option<&WaptSigner>,
    out: W,
    signer: &Signer,
    signed_at: i64,
    progress: &mut dyn FnMut(u64),
) -> Result<BuildOutput, WaptError> {
    let mut control = archive.control().clone();
    if let Some(s) = wapt_signer {
        control.set("wapt_signer", &s.certificate.subject);
        control.set("wapt_signer_fingerprint", &s.certificate.fingerprint);
    }
    let entries = archive.payload();
    Ok(package::build(out, &control, entries, archive, signer, signed_at, progress)?)
}

#[cfg(test)]
mod tests;
