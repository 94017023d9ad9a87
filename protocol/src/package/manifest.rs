//! The package manifest: control fields plus every file's path, size, mode and BLAKE3 hash.
//!
//! On the wire and on disk it is a versioned postcard enum ([`ManifestWire`]); the signature
//! covers those exact bytes, which are kept beside the parsed value. Its BLAKE3 hash is the
//! package's identity in snapshots.

use crate::hex::hex;
use serde::{Deserialize, Serialize};

use crate::chunking::{self, Chunk};
use crate::control::Control;
use crate::entry::{EntryError, PackageEntry};

/// Largest manifest accepted, in bytes.
pub const MAX_MANIFEST_BYTES: usize = 16 * 1024 * 1024;
/// Most files in a package.
pub const MAX_FILES: usize = 200_000;
/// Longest file path inside a package, in bytes.
pub const MAX_PATH_BYTES: usize = 1024;
/// Hook scripts agents run, at the package root. A package holding one needs a certificate
/// with the code-signing usage. Names match without regard to case ([`hook_name`]): on the
/// case-insensitive file systems of Windows and macOS, `SETUP.PS1` is `setup.ps1`.
pub const HOOK_FILES: [&str; 4] = ["setup.sh", "setup.ps1", "setup.cmd", "setup.bat"];

/// The control field naming a Windows Installer file of the package that the agent installs
/// with msiexec (no hook needed).
pub const INSTALL_MSI_FIELD: &str = "install_msi";

/// The hook a package path is, if any: a file at the root whose name is one of [`HOOK_FILES`]
/// in any case (`Setup.SH` is `setup.sh`). Paths that Windows would also read as a hook (a
/// trailing dot or space, a `:` stream) are refused by [`check_path`] before this is asked.
pub fn hook_name(path: &str) -> Option<&'static str> {
    if path.contains('/') {
        return None;
    }
    HOOK_FILES.iter().copied().find(|h| h.eq_ignore_ascii_case(path))
}
/// The folder inside package archives that holds the manifest, signature and certificates.
pub const RESERVED_DIR: &str = "OUTPOST";

/// Manifest as encoded. Only ever add variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManifestWire {
    /// Version 1: files without chunk lists (development builds before the first release;
    /// refused, such packages must be built again).
    V1(ManifestV1),
    /// Version 2: every file with its signed chunk list.
    V2(ManifestV2),
}

/// Version 1 of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestV1 {
    /// Control fields in order.
    pub control: Vec<(String, String)>,
    /// Files, sorted by path: path, size, mode, BLAKE3.
    pub files: Vec<(String, u64, u32, [u8; 32])>,
}

/// Version 2 of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestV2 {
    /// Control fields in order (including `signer`, `signer_fingerprint`, `signature_date`).
    pub control: Vec<(String, String)>,
    /// Files, sorted by path.
    pub files: Vec<FileV2>,
}

/// One file of a version-2 manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileV2 {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits (`0o644`, `0o755`).
    pub mode: u32,
    /// BLAKE3 of the content.
    pub blake3: [u8; 32],
    /// The content's chunks in order ([`crate::chunking`]).
    pub chunks: Vec<Chunk>,
}

/// A file of a package.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileEntry {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Unix permission bits.
    pub mode: u32,
    /// BLAKE3 of the content.
    #[serde(serialize_with = "hex_serde")]
    pub blake3: [u8; 32],
    /// The content's chunks in order.
    #[serde(skip)]
    pub chunks: Vec<Chunk>,
}

/// The manifest as the rest of Outpost uses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    /// Control fields.
    pub control: Control,
    /// Files, sorted by path.
    pub files: Vec<FileEntry>,
}

/// Why manifest bytes are refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Over [`MAX_MANIFEST_BYTES`].
    #[error("the manifest is {0} bytes; the limit is {MAX_MANIFEST_BYTES}")]
    TooLarge(usize),
    /// Not a manifest encoding this version of Outpost knows.
    #[error("the manifest cannot be decoded ({0}); it is damaged or from a newer Outpost")]
    Decode(String),
    /// Over [`MAX_FILES`].
    #[error("the manifest lists {0} files; the limit is {MAX_FILES}")]
    TooManyFiles(usize),
    /// A path that is not safe or not canonical.
    #[error(transparent)]
    Path(#[from] PathError),
    /// Two paths that differ only by case.
    #[error(
        "the manifest lists {a:?} and {b:?}, which are the same file on Windows and macOS (names that differ only by case are refused)"
    )]
    CaseClash { a: String, b: String },
    /// Paths not sorted or repeated.
    #[error("the manifest lists {0:?} twice or out of order")]
    Order(String),
    /// Control fields that do not describe a package.
    #[error("control: {0}")]
    Control(EntryError),
    /// A chunk list that does not fit its file.
    #[error("file {path:?}: {reason}")]
    Chunks { path: String, reason: String },
}

impl From<EntryError> for ManifestError {
    fn from(e: EntryError) -> Self {
        Self::Control(e)
    }
}

/// Why a path cannot be a file of a package.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Absolute, with a drive letter, or with `..`.
    #[error("unsafe path {0:?}: absolute paths and '..' are not allowed")]
    Unsafe(String),
    /// Empty components, backslashes, control characters, too long.
    #[error("invalid path {path:?}: {reason}")]
    Invalid { path: String, reason: &'static str },
    /// Inside the reserved folder.
    #[error("path {0:?} is inside the reserved OUTPOST/ folder")]
    Reserved(String),
}

impl Manifest {
    /// The hook scripts this package carries (their paths as in the package).
    pub fn hooks(&self) -> Vec<&str> {
        self.files.iter().map(|f| f.path.as_str()).filter(|p| hook_name(p).is_some()).collect()
    }

    /// The package path of hook `name` (`setup.sh`, `setup.ps1`, …), whatever its case.
    pub fn hook(&self, name: &str) -> Option<&str> {
        self.files.iter().map(|f| f.path.as_str()).find(|p| hook_name(p) == Some(name))
    }

    /// True when the package carries hook scripts.
    pub fn has_hooks(&self) -> bool {
        !self.hooks().is_empty()
    }

    /// True when installing it runs code: hooks, or an installer the agent runs for it
    /// ([`INSTALL_MSI_FIELD`]: an MSI's custom actions are code). Such a package needs a
    /// certificate with the code-signing usage.
    pub fn runs_code(&self) -> bool {
        self.has_hooks() || self.control.get(INSTALL_MSI_FIELD).is_some_and(|v| !v.trim().is_empty())
    }

    /// The typed entry of the control.
    pub fn entry(&self) -> Result<PackageEntry, EntryError> {
        PackageEntry::from_control(&self.control)
    }

    /// Total size of the files.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Encodes the manifest (the bytes that are signed).
    pub fn encode(&self) -> Vec<u8> {
        let wire = ManifestWire::V2(ManifestV2 {
            control: self.control.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            files: self
                .files
                .iter()
                .map(|f| FileV2 {
                    path: f.path.clone(),
                    size: f.size,
                    mode: f.mode,
                    blake3: f.blake3,
                    chunks: f.chunks.clone(),
                })
                .collect(),
        });
        postcard::to_stdvec(&wire).expect("encoding to a Vec cannot fail")
    }

    /// Decodes and checks manifest bytes: limits, safe and sorted paths, a valid control.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len()));
        }
        let (wire, rest): (ManifestWire, &[u8]) =
            postcard::take_from_bytes(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ManifestError::Decode(format!("{} trailing bytes", rest.len())));
        }
        let v2 = match wire {
            ManifestWire::V1(_) => {
                return Err(ManifestError::Decode(
                    "a version-1 manifest (a development build of Outpost, without chunk lists): build the package again".into(),
                ));
            }
            ManifestWire::V2(v2) => v2,
        };
        if v2.files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles(v2.files.len()));
        }
        let mut files = Vec::with_capacity(v2.files.len());
        let mut folded = std::collections::HashMap::with_capacity(v2.files.len());
        for f in v2.files {
            check_path(&f.path)?;
            // Two paths that a case-insensitive file system would make one (two hooks that
            // would each be run, or a file that silently replaces another) are refused.
            if let Some(other) = folded.insert(f.path.to_lowercase(), f.path.clone()) {
                return Err(ManifestError::CaseClash { a: other, b: f.path });
            }
            if files.last().is_some_and(|p: &FileEntry| p.path >= f.path) {
                return Err(ManifestError::Order(f.path));
            }
            chunking::check(&f.chunks, f.size)
                .map_err(|reason| ManifestError::Chunks { path: f.path.clone(), reason })?;
            files.push(FileEntry {
                path: f.path,
                size: f.size,
                mode: f.mode & 0o777,
                blake3: f.blake3,
                chunks: f.chunks,
            });
        }
        let control = Control::from_fields(v2.control).map_err(|e| ManifestError::Decode(e.to_string()))?;
        PackageEntry::from_control(&control)?;
        Ok(Self { control, files })
    }

    /// BLAKE3 of the encoded manifest: the package's identity.
    pub fn hash(encoded: &[u8]) -> [u8; 32] {
        *blake3::hash(encoded).as_bytes()
    }
}

/// Checks that `path` is a canonical, safe relative path for a package file.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let invalid = |reason| PathError::Invalid { path: path.to_string(), reason };
    if path.is_empty() {
        return Err(invalid("it is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(invalid("it is longer than 1024 bytes"));
    }
    if path.starts_with('/') || path.as_bytes().get(1) == Some(&b':') {
        return Err(PathError::Unsafe(path.to_string()));
    }
    if path.contains('\\') {
        return Err(invalid("it contains a backslash (use '/' between folders)"));
    }
    if path.chars().any(char::is_control) {
        return Err(invalid("it contains control characters"));
    }
    if path.contains(':') {
        // On Windows `setup.ps1::$DATA` is `setup.ps1`, and `a:b` a hidden stream of `a`.
        return Err(invalid("it contains ':' (a stream name on Windows)"));
    }
    for part in path.split('/') {
        match part {
            ".." => return Err(PathError::Unsafe(path.to_string())),
            "" | "." => return Err(invalid("it has an empty or '.' folder name")),
            p if p.ends_with('.') || p.ends_with(' ') => {
                // Windows drops them: `setup.ps1.` would be `setup.ps1`.
                return Err(invalid("a name ends with '.' or a space (Windows would drop it)"));
            }
            _ => {}
        }
    }
    if path == RESERVED_DIR || path.starts_with(&format!("{RESERVED_DIR}/")) {
        return Err(PathError::Reserved(path.to_string()));
    }
    Ok(())
}

fn hex_serde<S: serde::Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let control =
            Control::parse("package: a\nversion: 1.0-1\narchitecture: all\nsection: base\npriority: optional\n")
                .unwrap();
        Manifest {
            control,
            files: vec![
                FileEntry {
                    path: "bin/a".into(),
                    size: 3,
                    mode: 0o755,
                    blake3: [1; 32],
                    chunks: vec![Chunk { hash: [1; 32], len: 3 }],
                },
                FileEntry {
                    path: "setup.sh".into(),
                    size: 10,
                    mode: 0o755,
                    blake3: [2; 32],
                    chunks: vec![Chunk { hash: [2; 32], len: 10 }],
                },
            ],
        }
    }

    #[test]
    fn encodes_and_decodes() {
        let m = manifest();
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        assert_eq!(m.hooks(), vec!["setup.sh"]);
        assert_eq!(m.total_size(), 13);
    }

    #[test]
    fn refuses_bad_manifests() {
        let bytes = manifest().encode();
        assert!(matches!(Manifest::decode(&bytes[..bytes.len() - 1]), Err(ManifestError::Decode(_))));
        let mut longer = bytes;
        longer.push(0);
        assert!(matches!(Manifest::decode(&longer), Err(ManifestError::Decode(_))));
        assert!(matches!(Manifest::decode(&[7, 0]), Err(ManifestError::Decode(_))), "unknown version");
        let mut m = manifest();
        m.files.reverse();
        assert!(matches!(Manifest::decode(&m.encode()), Err(ManifestError::Order(_))));
        let mut m = manifest();
        m.files[0].path = "../etc/passwd".into();
        assert!(matches!(Manifest::decode(&m.encode()), Err(ManifestError::Path(PathError::Unsafe(_)))));
        let mut m = manifest();
        m.control.remove("version");
        assert!(matches!(Manifest::decode(&m.encode()), Err(ManifestError::Control(_))));
        let mut m = manifest();
        m.files[0].chunks[0].len = 2;
        assert!(matches!(Manifest::decode(&m.encode()), Err(ManifestError::Chunks { .. })));
        let v1 = postcard::to_stdvec(&ManifestWire::V1(ManifestV1 { control: vec![], files: vec![] })).unwrap();
        assert!(Manifest::decode(&v1).unwrap_err().to_string().contains("build the package again"));
    }

    #[test]
    fn path_rules() {
        for ok in ["a", "a/b.txt", "WAPT/icon.png", "dir/.hidden", "é/ü"] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        for unsafe_path in ["/etc/passwd", "../x", "a/../../x", "a/..", "C:/x", "c:x"] {
            assert!(matches!(check_path(unsafe_path), Err(PathError::Unsafe(_))), "{unsafe_path}");
        }
        for bad in ["", "a//b", "a/./b", "a\\b", "a/", "x\ny"] {
            assert!(matches!(check_path(bad), Err(PathError::Invalid { .. })), "{bad}");
        }
        assert!(matches!(check_path("OUTPOST/manifest"), Err(PathError::Reserved(_))));
    }
}

/// The encodings signed by earlier versions, frozen: each must still decode to what it said.
#[cfg(test)]
mod golden {
    use super::*;
    use crate::hex::{assert_golden, decode};

    #[test]
    fn manifests_still_decode_and_version_one_is_refused_by_name() {
        let control = "package: a\nversion: 1.0-1\narchitecture: all\nsection: base\npriority: optional\n";
        let manifest = Manifest {
            control: Control::parse(control).unwrap(),
            files: vec![FileEntry {
                path: "bin/a".into(),
                size: 3,
                mode: 0o755,
                blake3: [1; 32],
                chunks: vec![Chunk { hash: [1; 32], len: 3 }],
            }],
        };
        let golden = "0105077061636b61676501610776657273696f6e05312e302d310c61726368697465637475726503616c6c0773656374696f6e0462617365087072696f72697479086f7074696f6e616c010562696e2f6103ed03010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010101010103";
        assert_golden("a version-2 manifest", &manifest.encode(), golden);
        assert_eq!(Manifest::decode(&decode(golden).unwrap()).unwrap(), manifest);
        let v1 = ManifestWire::V1(ManifestV1 { control: vec![("package".into(), "a".into())], files: vec![] });
        let golden = "0001077061636b616765016100";
        assert_golden("a version-1 manifest", &postcard::to_stdvec(&v1).unwrap(), golden);
        let e = Manifest::decode(&decode(golden).unwrap()).unwrap_err();
        assert!(e.to_string().contains("version-1 manifest"), "{e}");
    }
}
