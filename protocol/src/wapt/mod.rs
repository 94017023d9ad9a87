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
    #[error("reading {path}: {error}")]
    Read { path: String, error: std::io::Error },
    /// Native hooks given at import that cannot be used.
    #[error("--hooks: {0}")]
    Hooks(String),
    /// Building the Outpost package failed.
    #[error(transparent)]
    Build(#[from] BuildError),
}

/// The control field an imported package carries when its WAPT package had a `setup.py`:
/// agents refuse to install such a package unless it carries a native hook for their platform
/// (WAPT's Python is never run).
pub const WAPT_SETUP_FIELD: &str = "wapt_setup";
/// [`WAPT_SETUP_FIELD`]'s value when no native hook was supplied.
pub const WAPT_SETUP_NOT_CONVERTED: &str = "setup.py not converted: give native hooks with wapt import --hooks";
/// Largest native hook script given at import.
pub const MAX_HOOK_BYTES: usize = 1024 * 1024;

/// Converts an opened WAPT package to an Outpost package signed by `signer`. When `wapt_signer`
/// is given (the WAPT signature was verified), the control records it as `wapt_signer` and
/// `wapt_signer_fingerprint`. `hooks` are native hook scripts (`setup.sh`, `setup.ps1`, …) to
/// add at the package root, standing in for WAPT's `setup.py`; without them a package that has
/// a `setup.py` is marked ([`WAPT_SETUP_FIELD`]) so that agents refuse it rather than install
/// nothing and report success.
pub fn convert<R: Read + Seek, W: Read + Write + Seek>(
    archive: &mut WaptArchive<R>,
    wapt_signer: Option<&WaptSigner>,
    hooks: &[(String, Vec<u8>)],
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
    let mut entries = archive.payload();
    for (name, bytes) in hooks {
        if package::hook_name(name) != Some(name.as_str()) {
            return Err(WaptError::Hooks(format!(
                "{name:?} is not a hook name (setup.sh, setup.ps1, setup.cmd, setup.bat)"
            )));
        }
        if bytes.len() > MAX_HOOK_BYTES {
            return Err(WaptError::Hooks(format!("{name} is larger than {MAX_HOOK_BYTES} bytes")));
        }
        if let Some(clash) = entries.iter().find(|e| e.path.eq_ignore_ascii_case(name)) {
            return Err(WaptError::Hooks(format!("the WAPT package already has a file {:?}", clash.path)));
        }
        entries.push(package::SourceEntry { path: name.clone(), size: bytes.len() as u64, mode: 0o755 });
    }
    if archive.has_setup() {
        let value = if hooks.is_empty() {
            WAPT_SETUP_NOT_CONVERTED.to_string()
        } else {
            format!("replaced by {}", hooks.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "))
        };
        control.set(WAPT_SETUP_FIELD, &value);
    }
    let mut source = WithHooks { archive, hooks };
    Ok(package::build(out, &control, entries, &mut source, signer, signed_at, progress)?)
}

/// A WAPT archive's files plus native hooks given at import.
struct WithHooks<'a, R> {
    archive: &'a mut WaptArchive<R>,
    hooks: &'a [(String, Vec<u8>)],
}

impl<R: Read + Seek> package::FileSource for WithHooks<'_, R> {
    fn open(&mut self, path: &str) -> std::io::Result<Box<dyn Read + '_>> {
        match self.hooks.iter().find(|(n, _)| n == path) {
            Some((_, bytes)) => Ok(Box::new(bytes.as_slice())),
            None => package::FileSource::open(self.archive, path),
        }
    }
}

#[cfg(test)]
mod tests;
