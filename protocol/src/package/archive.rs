//! Reading and verifying a package archive.
//!
//! [`PackageArchive::open`] reads the structure: every member name is checked (no absolute
//! path, no `..`, only known `OUTPOST/` members), the manifest is decoded, and the members must
//! be exactly the manifest's files. Nothing is trusted yet. [`PackageArchive::verify`] then
//! checks the certificate chain and usages, the signature over the manifest bytes, and every
//! byte of every file, and only then returns a [`Verified`] archive.

use std::collections::BTreeSet;
use std::io::{self, Read, Seek, SeekFrom};

use rustls_pki_types::CertificateDer;
use zip::ZipArchive;

use super::build::{
    ARCHIVE_SIGNATURE_LEN, ARCHIVE_SIGNATURE_PREFIX, CERTIFICATES_MEMBER, MANIFEST_MEMBER, SIGNATURE_MEMBER,
    hash_prefix,
};
use super::manifest::{Manifest, ManifestError, PathError, RESERVED_DIR, check_path};
use crate::hex::hex;
use crate::pki::{CertInfo, ChainError, Purpose, TrustStore, cert_info, parse_pem_certificates};
use crate::signing::{self, Domain, SignatureError};
use crate::verified::Verified;

/// Largest certificate chain member accepted.
pub const MAX_CERTIFICATES_BYTES: u64 = 64 * 1024;
const BUFFER: usize = 1024 * 1024;

/// Why a package is refused.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// Not a readable zip (truncated, damaged, not a package).
    #[error("not a valid package archive (truncated or damaged?): {0}")]
    Archive(String),
    /// A member the format needs is absent.
    #[error(
        "the archive has no {0} member: it is not an Outpost package (WAPT packages are converted with `outpost wapt import`)"
    )]
    MissingMember(&'static str),
    /// A member name that is unsafe or not allowed.
    #[error("archive member: {0}")]
    Path(PathError),
    /// A member not listed in the manifest.
    #[error("archive member {0:?} is not listed in the signed manifest")]
    Unlisted(String),
    /// A listed file absent from the archive.
    #[error("file {0:?} is listed in the manifest but missing from the archive")]
    Missing(String),
    /// The same name twice.
    #[error("archive member {0:?} appears twice")]
    Duplicate(String),
    /// A member larger than its limit.
    #[error("archive member {name} is {size} bytes; the limit is {limit}")]
    TooLarge { name: &'static str, size: u64, limit: u64 },
    /// The manifest does not decode.
    #[error("manifest: {0}")]
    Manifest(ManifestError),
    /// The certificates do not parse.
    #[error("{CERTIFICATES_MEMBER}: {0}")]
    Certificates(ChainError),
    /// The chain or usages are refused.
    #[error("signer: {0}")]
    Chain(ChainError),
    /// The manifest names another certificate.
    #[error("the manifest names signer certificate {named}, but the archive carries {carried}")]
    SignerMismatch { named: String, carried: String },
    /// The signature does not verify.
    #[error("signature: {0} (the package was changed after signing, or is damaged)")]
    Signature(SignatureError),
    /// No archive signature in the zip comment.
    #[error(
        "the archive carries no archive signature in its comment: it was rewritten by another zip tool, or is not an Outpost package"
    )]
    NoArchiveSignature,
    /// The archive bytes do not match the archive signature.
    #[error("the archive bytes do not match their signature: the file was changed after signing")]
    ArchiveChanged,
    /// A file's content differs from the manifest.
    #[error("file {path:?} does not match the signed manifest: {what}")]
    Content { path: String, what: String },
    /// Reading failed.
    #[error("reading {path:?}: {error}")]
    Read { path: String, error: io::Error },
}

impl From<SignatureError> for PackageError {
    fn from(e: SignatureError) -> Self {
        Self::Signature(e)
    }
}

impl From<ManifestError> for PackageError {
    fn from(e: ManifestError) -> Self {
        Self::Manifest(e)
    }
}

impl From<PathError> for PackageError {
    fn from(e: PathError) -> Self {
        Self::Path(e)
    }
}

/// An opened, not yet verified package archive.
#[derive(Debug)]
pub struct PackageArchive<R> {
    /// Always present; taken out only while the raw bytes are hashed.
    zip: Option<ZipArchive<R>>,
    len: u64,
    archive_signature: Vec<u8>,
    pub(super) manifest_bytes: Vec<u8>,
    pub(super) signature: Vec<u8>,
    pub(super) chain: Vec<CertificateDer<'static>>,
    manifest: Manifest,
}

impl<R: Read + Seek> PackageArchive<R> {
    /// Opens an archive and checks its structure (not its signature or content).
    pub fn open(mut reader: R) -> Result<Self, PackageError> {
        let read_err = |source| PackageError::Read { path: "(archive)".into(), error: source };
        let len = reader.seek(SeekFrom::End(0)).map_err(read_err)?;
        reader.seek(SeekFrom::Start(0)).map_err(read_err)?;
        let mut zip = ZipArchive::new(reader).map_err(|e| PackageError::Archive(e.to_string()))?;
        let mut payload = BTreeSet::new();
        let mut reserved = BTreeSet::new();
        for index in 0..zip.len() {
            let member = zip.by_index_raw(index).map_err(|e| PackageError::Archive(e.to_string()))?;
            let name = member.name().map_err(|e| PackageError::Archive(e.to_string()))?.to_string();
            if member.enclosed_name().is_none() {
                return Err(PathError::Unsafe(name).into());
            }
            let known = [MANIFEST_MEMBER, SIGNATURE_MEMBER, CERTIFICATES_MEMBER];
            let fresh = if let Some(k) = known.iter().find(|k| **k == name) {
                reserved.insert(*k)
            } else if name == RESERVED_DIR || name.starts_with(&format!("{RESERVED_DIR}/")) {
                return Err(PackageError::Unlisted(name));
            } else {
                check_path(&name)?;
                if member.is_dir() || member.is_symlink() {
                    return Err(PackageError::Unlisted(name));
                }
                payload.insert(name.clone())
            };
            if !fresh {
                return Err(PackageError::Duplicate(name));
            }
        }
        let manifest_bytes = read_member(&mut zip, MANIFEST_MEMBER, super::manifest::MAX_MANIFEST_BYTES as u64)?;
        let signature = read_member(&mut zip, SIGNATURE_MEMBER, 1024)?;
        let chain_pem = read_member(&mut zip, CERTIFICATES_MEMBER, MAX_CERTIFICATES_BYTES)?;
        let chain_text = String::from_utf8_lossy(&chain_pem);
        let chain = parse_pem_certificates(&chain_text).map_err(PackageError::Certificates)?;
        let manifest = Manifest::decode(&manifest_bytes)?;
        for file in &manifest.files {
            if !payload.remove(&file.path) {
                return Err(PackageError::Missing(file.path.clone()));
            }
        }
        if let Some(extra) = payload.into_iter().next() {
            return Err(PackageError::Unlisted(extra));
        }
        let comment = zip.comment();
        let archive_signature = match comment.strip_prefix(ARCHIVE_SIGNATURE_PREFIX) {
            Some(b64) if comment.len() == ARCHIVE_SIGNATURE_LEN => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(b64).map_err(|_| PackageError::NoArchiveSignature)?
            }
            _ => return Err(PackageError::NoArchiveSignature),
        };
        Ok(Self { zip: Some(zip), len, archive_signature, manifest_bytes, signature, chain, manifest })
    }

    /// The archive's size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty archive (never, for an opened one).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks the archive signature: every byte of the file but the comment that carries it.
    /// `progress` gets the bytes read so far.
    pub fn verify_archive(&mut self, signer_key: &[u8], progress: &mut dyn FnMut(u64)) -> Result<(), PackageError> {
        let read_err = |source| PackageError::Read { path: "(archive)".into(), error: source };
        let mut reader = self.zip.take().expect("present").into_inner();
        let signed_len = self.len - ARCHIVE_SIGNATURE_LEN as u64;
        reader.seek(SeekFrom::Start(0)).map_err(read_err)?;
        let digest = hash_prefix(&mut reader, signed_len, progress).map_err(read_err)?;
        let mut tail = Vec::new();
        reader.read_to_end(&mut tail).map_err(read_err)?;
        let expected_tail = [ARCHIVE_SIGNATURE_PREFIX, base64_of(&self.archive_signature).as_bytes()].concat();
        self.zip = Some(ZipArchive::new(reader).map_err(|e| PackageError::Archive(e.to_string()))?);
        if tail != expected_tail {
            return Err(PackageError::ArchiveChanged);
        }
        signing::verify(signer_key, Domain::PackageArchive, &digest, &self.archive_signature)
            .map_err(|_| PackageError::ArchiveChanged)
    }

    /// The manifest, not yet verified.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// The exact manifest bytes that are signed.
    pub fn manifest_bytes(&self) -> &[u8] {
        &self.manifest_bytes
    }

    /// BLAKE3 of the manifest bytes: the package's identity.
    pub fn hash(&self) -> [u8; 32] {
        Manifest::hash(&self.manifest_bytes)
    }

    /// The certificates carried, signer first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// What the signer's certificate says (not verified).
    pub fn signer(&self) -> Result<CertInfo, ChainError> {
        cert_info(&self.chain[0])
    }

    /// Checks the chain (to `trust`, at `now`), the usages (package signing, and code signing
    /// when the package has hooks) and the signature over the manifest bytes.
    pub fn verify_signature(&self, trust: &TrustStore, now: i64) -> Result<CertInfo, PackageError> {
        check_manifest_signature(&self.manifest, &self.manifest_bytes, &self.signature, &self.chain, trust, now)
    }

    /// Opens the member holding the file at `path` of the manifest (verify first).
    pub fn open_file(&mut self, path: &str) -> Result<impl Read + '_, PackageError> {
        let zip = self.zip.as_mut().expect("present");
        zip.by_name(path).map_err(|e| PackageError::Content { path: path.to_string(), what: e.to_string() })
    }

    /// Reads every file and checks its size, mode and BLAKE3 against the manifest.
    /// `progress` is called with the number of bytes checked so far.
    pub fn verify_contents(&mut self, progress: &mut dyn FnMut(u64)) -> Result<(), PackageError> {
        let mut buffer = vec![0u8; BUFFER];
        let mut done = 0u64;
        for file in &self.manifest.files {
            let content = |what: String| PackageError::Content { path: file.path.clone(), what };
            let mut member =
                self.zip.as_mut().expect("present").by_name(&file.path).map_err(|e| content(e.to_string()))?;
            if member.size() != file.size {
                return Err(content(format!("{} bytes in the archive, {} signed", member.size(), file.size)));
            }
            if let Some(mode) = member.unix_mode()
                && mode & 0o777 != file.mode
            {
                return Err(content(format!("mode {:o}, {:o} signed", mode & 0o777, file.mode)));
            }
            let mut hasher = blake3::Hasher::new();
            let mut size = 0u64;
            // Every signed chunk is checked too, so that what repositories and agents verify
            // chunk by chunk is exactly this file.
            let mut chunks = file.chunks.iter();
            let mut current = chunks.next().map(|c| (c, blake3::Hasher::new(), 0u32));
            loop {
                let n = match member.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(content(format!("damaged data ({e})"))),
                };
                size += n as u64;
                if size > file.size {
                    return Err(content(format!("longer than the {} signed bytes", file.size)));
                }
                hasher.update(&buffer[..n]);
                let mut rest = &buffer[..n];
                while !rest.is_empty() {
                    let Some((chunk, h, filled)) = current.as_mut() else { break };
                    let take = rest.len().min((chunk.len - *filled) as usize);
                    h.update(&rest[..take]);
                    *filled += take as u32;
                    rest = &rest[take..];
                    if *filled == chunk.len {
                        if h.finalize().as_bytes() != &chunk.hash {
                            return Err(content("a chunk does not match its signed hash".into()));
                        }
                        current = chunks.next().map(|c| (c, blake3::Hasher::new(), 0u32));
                    }
                }
                done += n as u64;
                progress(done);
            }
            let hash = hasher.finalize();
            if hash.as_bytes() != &file.blake3 {
                return Err(content(format!("BLAKE3 {}, {} signed", hex(hash.as_bytes()), hex(&file.blake3))));
            }
        }
        Ok(())
    }

    /// Verifies the signatures and every byte; returns the verified archive and the signer.
    /// `progress` counts the archive's bytes, then the files' bytes: [`Self::len`] +
    /// [`Manifest::total_size`] in all.
    pub fn verify(
        mut self,
        trust: &TrustStore,
        now: i64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(Verified<Self>, CertInfo), PackageError> {
        let signer = self.verify_signature(trust, now)?;
        self.verify_archive(&signer.public_key, progress)?;
        let base = self.len;
        self.verify_contents(&mut |n| progress(base + n))?;
        Ok((Verified::new(self), signer))
    }
}

/// A verified package is the source of its own files (to sign it again).
impl<R: Read + Seek> super::FileSource for PackageArchive<R> {
    fn open(&mut self, path: &str) -> std::io::Result<Box<dyn Read + '_>> {
        self.open_file(path).map(|r| Box::new(r) as Box<dyn Read + '_>).map_err(std::io::Error::other)
    }
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn read_member<R: Read + Seek>(
    zip: &mut ZipArchive<R>,
    name: &'static str,
    limit: u64,
) -> Result<Vec<u8>, PackageError> {
    let member = zip.by_name(name).map_err(|_| PackageError::MissingMember(name))?;
    if member.size() > limit {
        return Err(PackageError::TooLarge { name, size: member.size(), limit });
    }
    let mut bytes = Vec::new();
    member
        .take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| PackageError::Read { path: name.to_string(), error: source })?;
    if bytes.len() as u64 > limit {
        return Err(PackageError::TooLarge { name, size: bytes.len() as u64, limit });
    }
    Ok(bytes)
}

/// Checks a manifest's signature: the certificate named by the manifest, its chain to `trust`
/// at `now`, the usages (package signing, and code signing when the package has hooks), and
/// the Ed25519 signature over the exact manifest bytes.
pub(crate) fn check_manifest_signature(
    manifest: &Manifest,
    bytes: &[u8],
    signature: &[u8],
    chain: &[CertificateDer<'_>],
    trust: &TrustStore,
    now: i64,
) -> Result<CertInfo, PackageError> {
    let leaf = cert_info(chain.first().ok_or(PackageError::Certificates(ChainError::Empty))?)
        .map_err(PackageError::Certificates)?;
    let named = manifest.control.get_or_empty("signer_fingerprint");
    if named != leaf.fingerprint {
        return Err(PackageError::SignerMismatch { named: named.to_string(), carried: leaf.fingerprint });
    }
    let mut purposes = vec![Purpose::PackageSigning];
    if manifest.runs_code() {
        purposes.push(Purpose::CodeSigning);
    }
    let info = trust.verify(chain, now, &purposes).map_err(PackageError::Chain)?;
    signing::verify(&info.public_key, Domain::PackageManifest, bytes, signature)?;
    Ok(info)
}
