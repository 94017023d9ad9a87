//! The package cache: what an upgrade needs, downloaded and verified before anything runs.
//!
//! A package is assembled in `cache/<manifest>.partial/`: every file's byte ranges are fetched
//! from the best repository that answers, each chunk verified against the signed chunk list as
//! it arrives. A failed repository is left for the next one; what was verified stays, so a
//! download continues from another repository (or after a restart) without fetching it again.
//! The folder is renamed to `cache/<manifest>/` only when every file is whole; it is removed
//! after a successful install and kept after a failure (an upgrade can retry offline).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use outpost_protocol::chunking::{Chunk, Range};
use outpost_protocol::hex::hex;
use outpost_protocol::package::Manifest;
use outpost_protocol::verified::Verified;

use crate::assembler::{self, AssemblyError, Positional};
use crate::repo::client::{ClientError, RangeWriter, RepoClient};

/// Ranges in flight per package.
const IN_FLIGHT: usize = 8;

/// Why a download failed.
#[derive(Debug, thiserror::Error)]
pub enum DownloadError {
    /// No repository could provide a range.
    #[error("no repository could provide {file} ({errors})")]
    Unavailable { file: String, errors: String },
    /// The cached copy no longer matches its signed manifest, and no repository answered.
    #[error(
        "the cached copy of {file} does not match its signed hash (tampered or damaged), and no repository answered to fetch it again"
    )]
    Damaged { file: String },
    /// Local files.
    #[error("{path}: {error}")]
    Io { path: PathBuf, error: std::io::Error },
    /// Assembling the files failed otherwise.
    #[error(transparent)]
    Assembly(AssemblyError),
}

impl From<AssemblyError> for DownloadError {
    fn from(e: AssemblyError) -> Self {
        match e {
            AssemblyError::Io { path, error } => Self::Io { path, error },
            other => Self::Assembly(other),
        }
    }
}

/// What a download did.
#[derive(Debug, Default, Clone)]
pub struct Downloaded {
    /// Bytes fetched.
    pub fetched: u64,
    /// Bytes fetched from each repository (address).
    pub by_repo: std::collections::BTreeMap<String, u64>,
    /// Bytes found already verified in the cache.
    pub reused: u64,
}

/// The folder a complete package is cached in.
pub fn cached(cache: &Path, manifest_hash: &[u8; 32]) -> PathBuf {
    cache.join(hex(manifest_hash))
}

/// True when the package is complete in the cache.
pub fn is_cached(cache: &Path, manifest_hash: &[u8; 32]) -> bool {
    cached(cache, manifest_hash).is_dir()
}

/// Repositories found too slow during an operation: each is left for the next one at once
/// (and for the rest of the operation), and the agent puts it on probation.
pub type Slow = Arc<std::sync::Mutex<std::collections::BTreeSet<String>>>;

/// Makes the package complete in the cache, fetching what is missing from `repos` (best
/// first; those in `slow` are skipped while another answers). Returns its folder.
pub async fn ensure(
    cache: &Path,
    manifest_hash: &[u8; 32],
    manifest: &Manifest,
    repos: &[RepoClient],
    slow: &Slow,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(PathBuf, Downloaded), DownloadError> {
    let target = cached(cache, manifest_hash);
    let partial = cache.join(format!("{}.partial", hex(manifest_hash)));
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DownloadError::Io { path, error: source }
    };
    if target.is_dir() {
        // Checked again before every use: the cache is on disk, and what is installed must
        // be what was signed. A damaged copy goes back to `.partial`, where its good chunks
        // are kept and the rest fetched again.
        let target2 = target.clone();
        let files = manifest.files.clone();
        let damaged = tokio::task::spawn_blocking(move || first_damaged(&target2, &files))
            .await
            .map_err(|e| DownloadError::Io { path: target.clone(), error: std::io::Error::other(e) })?;
        let Some(bad) = damaged else {
            let size = manifest.total_size();
            return Ok((target, Downloaded { fetched: 0, reused: size, by_repo: Default::default() }));
        };
        tracing::warn!(package = hex(manifest_hash), file = bad, "cached package is damaged; fetching it again");
        if repos.is_empty() {
            return Err(DownloadError::Damaged { file: bad });
        }
        let _ = fs::remove_dir_all(&partial);
        fs::rename(&target, &partial).map_err(io(&partial))?;
    }
    fs::create_dir_all(&partial).map_err(io(&partial))?;
    let by_repo: Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
    let preferred = Arc::new(AtomicUsize::new(0));
    let repos: Arc<Vec<RepoClient>> = Arc::new(repos.to_vec());
    let assembled = assembler::package_folder::<DownloadError, _, _>(
        &partial,
        manifest,
        IN_FLIGHT,
        |hash, assembly, range| {
            let (repos, preferred, slow, by_repo, hash, assembly) =
                (repos.clone(), preferred.clone(), slow.clone(), by_repo.clone(), *hash, assembly.clone());
            async move {
                let mut write = |offset, bytes: &[u8]| {
                    let file = assembly.file();
                    file.write_all_at(offset, bytes)
                        .map_err(|error| ClientError::Io { path: file.path().to_path_buf(), error })
                };
                let (verified, from) =
                    fetch(&repos, &preferred, &slow, &hash, assembly.chunks(), &range, &mut write).await?;
                *by_repo.lock().expect("not poisoned").entry(from).or_default() += u64::from(range.len);
                Ok(verified)
            }
        },
        &mut |done, _| progress(done),
    )
    .await?;
    fs::rename(&partial, &target).map_err(io(&target))?;
    let by_repo = by_repo.lock().expect("not poisoned").clone();
    Ok((target, Downloaded { fetched: assembled.fetched, reused: assembled.reused, by_repo }))
}

/// The first file of a cached package whose size or BLAKE3 differs from the manifest's.
fn first_damaged(dir: &Path, files: &[outpost_protocol::package::FileEntry]) -> Option<String> {
    for f in files {
        let path = dir.join(&f.path);
        let ok = fs::File::open(&path).and_then(|mut file| {
            let mut hasher = blake3::Hasher::new();
            let n = std::io::copy(&mut file, &mut hasher)?;
            Ok(n == f.size && hasher.finalize().as_bytes() == &f.blake3)
        });
        if !matches!(ok, Ok(true)) {
            return Some(f.path.clone());
        }
    }
    None
}

/// Fetches one range from the preferred repository, failing over to the next ones, and writes
/// it with `write` as it comes (it counts once every chunk is verified); returns it and the repository
/// that sent it. A repository too slow for the range's deadline is marked in `slow` and tried
/// again only when no other answers. A failed write stops the download (it is not the
/// repository's fault).
async fn fetch(
    repos: &[RepoClient],
    preferred: &AtomicUsize,
    slow: &Slow,
    file: &[u8; 32],
    chunks: &[Chunk],
    range: &Range,
    write: &mut RangeWriter<'_>,
) -> Result<(Verified<Range>, String), DownloadError> {
    let mut errors = Vec::new();
    let start = preferred.load(Ordering::Relaxed);
    let is_slow = |addr: &str| slow.lock().expect("not poisoned").contains(addr);
    // Those not found slow first, in order from the preferred one; the slow ones last.
    let mut order: Vec<usize> = (0..repos.len()).map(|k| (start + k) % repos.len()).collect();
    order.sort_by_key(|&i| is_slow(&repos[i].addr));
    for i in order {
        match repos[i].range_into(file, chunks, range, write).await {
            Err(ClientError::Io { path, error }) => return Err(DownloadError::Io { path, error }),
            Ok(bytes) => {
                if i != start {
                    preferred.store(i, Ordering::Relaxed);
                }
                return Ok((bytes, repos[i].addr.clone()));
            }
            Err(e) => {
                if RepoClient::is_slow(&e) {
                    tracing::warn!(repo = repos[i].addr, "too slow, moving to the next repository: {e}");
                    slow.lock().expect("not poisoned").insert(repos[i].addr.clone());
                }
                errors.push(format!("{}: {e}", repos[i].addr));
            }
        }
    }
    Err(DownloadError::Unavailable {
        file: hex(file),
        errors: if errors.is_empty() { "no repository".into() } else { errors.join("; ") },
    })
}
