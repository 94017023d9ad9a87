//! Building a signed package from a control and a set of files.
//!
//! The archive is a zip: the payload files at their paths (deflated, Unix mode kept, a fixed
//! timestamp), then `OUTPOST/manifest` (the signed bytes), `OUTPOST/signature` (Ed25519, 64
//! bytes) and `OUTPOST/certificates.pem` (the signer's certificate first). The archive comment
//! carries a second signature, over every byte of the archive before it, so that no byte of
//! the file can change unnoticed (the manifest signature alone leaves zip metadata free).
//! Files are written
//! in path order and every timestamp is fixed, so the same input and signature date give the
//! same bytes. Each file is read once: hashed while it is compressed.

use std::io::{self, Read, Seek, SeekFrom, Write};

use rustls_pki_types::CertificateDer;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use super::manifest::{FileEntry, Manifest, PathError, RESERVED_DIR, check_path};
use crate::chunking;
use crate::control::Control;
use crate::entry::{EntryError, PackageEntry};
use crate::pki::{CertInfo, ChainError, PrivateKey, Purpose, cert_info};
use crate::signing::{self, Domain};
use crate::time_fmt::format_unix;

/// Control fields the builder sets itself or drops: WAPT's signature fields and index-only
/// fields do not belong in an Outpost package's control.
pub const DROPPED_FIELDS: [&str; 8] =
    ["signature", "signed_attributes", "signer", "signer_fingerprint", "signature_date", "filename", "size", "md5sum"];

/// Name of the manifest member.
pub const MANIFEST_MEMBER: &str = "OUTPOST/manifest";
/// Name of the signature member.
pub const SIGNATURE_MEMBER: &str = "OUTPOST/signature";
/// Name of the certificate-chain member.
pub const CERTIFICATES_MEMBER: &str = "OUTPOST/certificates.pem";
/// File extension of Outpost packages.
pub const EXTENSION: &str = "outpost";

/// Start of the archive comment: the archive signature follows, base64.
pub const ARCHIVE_SIGNATURE_PREFIX: &[u8] = b"outpost-archive-signature-v1:";
/// Length of the archive comment: the prefix and 88 base64 characters of an Ed25519 signature.
pub const ARCHIVE_SIGNATURE_LEN: usize = ARCHIVE_SIGNATURE_PREFIX.len() + 88;

const BUFFER: usize = 1024 * 1024;

/// Where the builder reads files from (a directory, another archive).
pub trait FileSource {
    /// Opens the file at `path` (as listed in the entries). Files are opened one at a time:
    /// each reader is dropped before the next file is opened.
    fn open(&mut self, path: &str) -> io::Result<Box<dyn Read + '_>>;
}

/// A file to put in the package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceEntry {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Expected size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
}

/// The key and certificates a package is signed with.
#[derive(Debug)]
pub struct Signer {
    pub(crate) key: PrivateKey,
    pub(crate) chain: Vec<CertificateDer<'static>>,
    info: CertInfo,
}

impl Signer {
    /// Checks that `key` belongs to the first certificate of `chain` and that the certificate
    /// may sign packages and is valid at `now`.
    pub fn new(key: PrivateKey, chain: Vec<CertificateDer<'static>>, now: i64) -> Result<Self, BuildError> {
        let leaf = chain.first().ok_or(BuildError::Certificate(ChainError::Empty))?;
        let info = cert_info(leaf).map_err(BuildError::Certificate)?;
        if info.public_key != key.public_key() {
            return Err(BuildError::KeyMismatch { subject: info.subject });
        }
        if info.not_after <= now {
            return Err(BuildError::Certificate(ChainError::Expired {
                subject: info.subject,
                not_after: info.not_after,
            }));
        }
        if info.not_before > now {
            return Err(BuildError::Certificate(ChainError::NotYetValid {
                subject: info.subject,
                not_before: info.not_before,
            }));
        }
        if !info.has(Purpose::PackageSigning) {
            return Err(BuildError::Certificate(ChainError::MissingUsage {
                subject: info.subject,
                usage: Purpose::PackageSigning.name(),
                hint: " (sign with a signer, deployer or admin-with-modify certificate)".into(),
            }));
        }
        Ok(Self { key, chain, info })
    }

    /// What the signing certificate says.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }
}

/// What a build produced.
#[derive(Clone, Debug)]
pub struct BuildOutput {
    /// The manifest that was signed.
    pub manifest: Manifest,
    /// BLAKE3 of the encoded manifest.
    pub manifest_hash: [u8; 32],
    /// The conventional file name (`name_version_arch_maturity_locale.outpost`).
    pub file_name: String,
}

/// Why a package could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The control does not describe a package.
    #[error("control: {0}")]
    Control(EntryError),
    /// A file path that cannot go in a package.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Two paths that differ only in case collide on Windows and macOS.
    #[error("{a:?} and {b:?} differ only in letter case; they would overwrite each other on Windows and macOS")]
    CaseClash { a: String, b: String },
    /// Hooks without the code-signing usage.
    #[error(
        "the package carries hook script(s) or an installer it runs ({hooks}) but certificate {subject:?} lacks the code-signing usage; sign it with a signer certificate (`outpost pki issue --role signer`)"
    )]
    NeedsCodeSigning { hooks: String, subject: String },
    /// `install_msi` names a file the package does not hold.
    #[error(
        "install_msi names {0}, which is not in the package: put the .msi in the folder (the path is relative to it)"
    )]
    MissingMsi(String),
    /// The key is not the certificate's.
    #[error("the private key does not belong to certificate {subject:?}")]
    KeyMismatch { subject: String },
    /// The certificate cannot sign.
    #[error("{0}")]
    Certificate(ChainError),
    /// A file's size changed while it was read.
    #[error(
        "{path}: the file changed while the package was being built ({expected} bytes expected, {actual} read); build again"
    )]
    Changed { path: String, expected: u64, actual: u64 },
    /// Reading a file failed.
    #[error("{path}: {error}")]
    Read { path: String, error: io::Error },
    /// Writing the archive failed.
    #[error("writing the package failed: {0}")]
    Write(String),
}

impl From<EntryError> for BuildError {
    fn from(e: EntryError) -> Self {
        Self::Control(e)
    }
}

/// Builds a package into `out`. `progress` is called with the number of payload bytes done.
#[allow(clippy::too_many_arguments)]
pub fn build<W: Read + Write + Seek>(
    out: W,
    control: &Control,
    mut entries: Vec<SourceEntry>,
    source: &mut dyn FileSource,
    signer: &Signer,
    signed_at: i64,
    progress: &mut dyn FnMut(u64),
) -> Result<BuildOutput, BuildError> {
    let mut control = control.clone();
    for field in DROPPED_FIELDS {
        control.remove(field);
    }
    control.set("signer", &signer.info.subject);
    control.set("signer_fingerprint", &signer.info.fingerprint);
    control.set("signature_date", &format_unix(signed_at));
    let entry = PackageEntry::from_control(&control)?;

    for e in &entries {
        check_path(&e.path)?;
    }
    entries.sort_by(|a, b| a.path.to_lowercase().cmp(&b.path.to_lowercase()).then_with(|| a.path.cmp(&b.path)));
    if let Some(w) = entries.windows(2).find(|w| w[0].path.to_lowercase() == w[1].path.to_lowercase()) {
        return Err(BuildError::CaseClash { a: w[0].path.clone(), b: w[1].path.clone() });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    let mut hooks: Vec<&str> =
        entries.iter().map(|e| e.path.as_str()).filter(|p| super::manifest::hook_name(p).is_some()).collect();
    let msi = control.get(super::manifest::INSTALL_MSI_FIELD).map(str::trim).filter(|v| !v.is_empty());
    if let Some(msi) = msi {
        if !entries.iter().any(|e| e.path == msi) {
            return Err(BuildError::MissingMsi(msi.to_string()));
        }
        hooks.push(msi);
    }
    if !hooks.is_empty() && !signer.info.has(Purpose::CodeSigning) {
        return Err(BuildError::NeedsCodeSigning { hooks: hooks.join(", "), subject: signer.info.subject.clone() });
    }
    if signer.info.not_after <= signed_at {
        let (subject, not_after) = (signer.info.subject.clone(), signer.info.not_after);
        return Err(BuildError::Certificate(ChainError::Expired { subject, not_after }));
    }
    if signer.info.not_before > signed_at {
        let (subject, not_before) = (signer.info.subject.clone(), signer.info.not_before);
        return Err(BuildError::Certificate(ChainError::NotYetValid { subject, not_before }));
    }

    let manifest = write_package(out, control, &entries, source, signer, progress)?;
    let manifest_hash = Manifest::hash(&manifest.encode());
    Ok(BuildOutput { manifest_hash, file_name: file_name(&entry), manifest })
}

/// Writes the archive without the policy checks of [`build`] (entries sorted and checked).
pub(crate) fn write_package<W: Read + Write + Seek>(
    out: W,
    control: Control,
    entries: &[SourceEntry],
    source: &mut dyn FileSource,
    signer: &Signer,
    progress: &mut dyn FnMut(u64),
) -> Result<Manifest, BuildError> {
    let write_err = |e: zip::result::ZipError| BuildError::Write(e.to_string());
    let mut zip = ZipWriter::new(out);
    let mut files = Vec::with_capacity(entries.len());
    let mut done = 0u64;
    for e in entries {
        let method =
            compression_for(source, e).map_err(|source| BuildError::Read { path: e.path.clone(), error: source })?;
        let options = SimpleFileOptions::default()
            .compression_method(method)
            .last_modified_time(DateTime::default())
            .unix_permissions(e.mode & 0o777)
            // Made "by Unix" wherever it is built: the modes are kept, and an archive built on
            // Windows is the same bytes as one built on Linux.
            .system(zip::System::Unix)
            .large_file(e.size >= u64::from(u32::MAX));
        zip.start_file(e.path.as_str(), options).map_err(write_err)?;
        let read_err = |source| BuildError::Read { path: e.path.clone(), error: source };
        let reader = source.open(&e.path).map_err(read_err)?;
        // Cut while writing: one read gives the file hash, its chunk list and the archive.
        let chunked = chunking::chunk(reader.take(e.size + 1), |_, bytes| {
            zip.write_all(bytes)?;
            done += bytes.len() as u64;
            progress(done);
            Ok(())
        })
        .map_err(read_err)?;
        let size = chunked.size;
        if size != e.size {
            return Err(BuildError::Changed { path: e.path.clone(), expected: e.size, actual: size });
        }
        files.push(FileEntry {
            path: e.path.clone(),
            size,
            mode: e.mode & 0o777,
            blake3: chunked.file,
            chunks: chunked.chunks,
        });
    }

    let manifest = Manifest { control, files };
    let encoded = manifest.encode();
    let signature = signing::sign(&signer.key, Domain::PackageManifest, &encoded);
    let chain_pem: String = signer.chain.iter().map(crate::pki::pem_certificate).collect();
    let stored = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Stored)
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644)
        .system(zip::System::Unix);
    for (name, bytes) in [
        (MANIFEST_MEMBER, encoded.as_slice()),
        (SIGNATURE_MEMBER, signature.as_slice()),
        (CERTIFICATES_MEMBER, chain_pem.as_bytes()),
    ] {
        debug_assert!(name.starts_with(RESERVED_DIR));
        zip.start_file(name, stored).map_err(write_err)?;
        zip.write_all(bytes).map_err(|err| BuildError::Write(err.to_string()))?;
    }
    zip.set_raw_comment(vec![b'0'; ARCHIVE_SIGNATURE_LEN].into_boxed_slice()).map_err(write_err)?;
    let mut out = zip.finish().map_err(write_err)?;
    sign_archive(&mut out, signer).map_err(|err| BuildError::Write(err.to_string()))?;
    Ok(manifest)
}

/// Deflate when it pays: a sample of the start of the file is compressed, and files that do
/// not shrink by a tenth (installers, archives, media: most of a package's bytes) are stored.
/// The choice depends on the content only, so builds stay reproducible.
fn compression_for(source: &mut dyn FileSource, entry: &SourceEntry) -> io::Result<CompressionMethod> {
    const SAMPLE: u64 = 256 * 1024;
    let mut sample = Vec::new();
    source.open(&entry.path)?.take(SAMPLE).read_to_end(&mut sample)?;
    if sample.len() < 512 {
        return Ok(CompressionMethod::Deflated);
    }
    let mut encoder = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&sample)?;
    let compressed = encoder.finish()?.len();
    Ok(if compressed * 10 > sample.len() * 9 { CompressionMethod::Stored } else { CompressionMethod::Deflated })
}

/// Replaces the archive comment (the last [`ARCHIVE_SIGNATURE_LEN`] bytes) with the signature
/// of everything before it.
pub(crate) fn sign_archive<W: Read + Write + Seek>(out: &mut W, signer: &Signer) -> io::Result<()> {
    let len = out.seek(SeekFrom::End(0))?;
    let signed_len =
        len.checked_sub(ARCHIVE_SIGNATURE_LEN as u64).ok_or_else(|| io::Error::other("archive too short"))?;
    out.seek(SeekFrom::Start(0))?;
    let digest = hash_prefix(out, signed_len, &mut |_| {})?;
    let signature = signing::sign(&signer.key, Domain::PackageArchive, &digest);
    out.seek(SeekFrom::Start(signed_len))?;
    out.write_all(&archive_comment(&signature))?;
    out.flush()
}

/// The archive comment that carries the archive signature.
pub(crate) fn archive_comment(signature: &[u8; 64]) -> Vec<u8> {
    use base64::Engine as _;
    let mut comment = ARCHIVE_SIGNATURE_PREFIX.to_vec();
    comment.extend_from_slice(base64::engine::general_purpose::STANDARD.encode(signature).as_bytes());
    debug_assert_eq!(comment.len(), ARCHIVE_SIGNATURE_LEN);
    comment
}

/// BLAKE3 of the next `len` bytes of `reader`; `progress` gets the bytes read so far.
pub(crate) fn hash_prefix<R: Read>(reader: &mut R, len: u64, progress: &mut dyn FnMut(u64)) -> io::Result<[u8; 32]> {
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; BUFFER];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(BUFFER as u64)).expect("at most the buffer size");
        let n = reader.read(&mut buffer[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        hasher.update(&buffer[..n]);
        done += n as u64;
        progress(done);
    }
    Ok(*hasher.finalize().as_bytes())
}

/// The conventional file name of a package: `name_version_arch_maturity_locale.outpost`,
/// leaving out empty and `all` parts, with characters unsafe in file names replaced by `_`.
pub fn file_name(entry: &PackageEntry) -> String {
    let arch = entry.architectures.join(",");
    let locale = entry.locales.join(",");
    let parts = [entry.name.as_str(), entry.version.as_str(), &arch, &entry.maturity, &locale];
    let stem = parts
        .iter()
        .filter(|p| !p.is_empty() && !p.eq_ignore_ascii_case("all"))
        .map(|p| {
            p.chars().map(|c| if c.is_alphanumeric() || "._+-=,".contains(c) { c } else { '_' }).collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("_");
    format!("{stem}.{EXTENSION}")
}
