//! Work that several commands share: building a package from a source folder, and talking to a
//! repository as a client (publishing a package file, or any other request).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use outpost_actors::disk::{AtomicFile, DirSource};
use outpost_actors::repo::client::RepoClient;
use outpost_actors::transport;
use outpost_protocol::control::Control;
use outpost_protocol::entry::PackageEntry;
use outpost_protocol::package::{self, Signer};
use outpost_protocol::pki::TrustStore;
use outpost_protocol::wire::{ALPN_REPO, Response};

use crate::cli::ClientArgs;
use crate::progress::Progress;
use crate::{config, daemon};

/// WAPT files that a source folder may still hold from a WAPT build; they are not packaged.
const WAPT_LEFTOVERS: [&str; 5] =
    ["WAPT/control", "WAPT/manifest.sha256", "WAPT/signature.sha256", "WAPT/certificate.crt", "WAPT/signature"];

/// A package file just built.
#[derive(Debug)]
pub struct Built {
    /// Where it was written.
    pub path: PathBuf,
    /// Its name, version and the rest of its control.
    pub entry: PackageEntry,
    /// How many files it holds.
    pub files: usize,
    /// Their total size.
    pub size: u64,
}

/// Builds the package of the source folder `src` (its `WAPT/control` and files) into `out`,
/// signed by `signer` at `when`; `progress` shows a bar.
pub fn build(src: &Path, out: &Path, signer: &Signer, when: i64, progress: bool) -> Result<Built> {
    let control_path = src.join("WAPT").join("control");
    let control_bytes = std::fs::read(&control_path)
        .with_context(|| format!("reading {} (a package source folder holds WAPT/control)", control_path.display()))?;
    let control = Control::parse_bytes(&control_bytes).with_context(|| control_path.display().to_string())?;
    let entry = PackageEntry::from_control(&control).with_context(|| control_path.display().to_string())?;
    let mut source = DirSource::new(src);
    let entries = source.entries(&WAPT_LEFTOVERS)?;
    let total: u64 = entries.iter().map(|e| e.size).sum();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let path = out.join(package::file_name(&entry));
    let mut file = AtomicFile::create(&path, 0o644).with_context(|| format!("creating {}", path.display()))?;
    let bar = progress.then(|| Progress::bytes("building", total));
    let built = package::build(&mut file, &control, entries, &mut source, signer, when, &mut |n| {
        if let Some(b) = &bar {
            b.set(n);
        }
    })
    .with_context(|| format!("building {}", src.display()))?;
    if let Some(b) = bar {
        b.finish();
    }
    file.commit().with_context(|| format!("writing {}", path.display()))?;
    Ok(Built { path, entry, files: built.manifest.files.len(), size: built.manifest.total_size() })
}

/// Runs a client operation on a fresh connection to the repository of `args`.
pub fn with_repo<T, F, Fut>(args: &ClientArgs, f: F) -> Result<T>
where
    F: FnOnce(RepoClient, TrustStore) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    on_repo(args, false, f)
}

/// [`with_repo`] for a download: the connection accepts datagrams as large as the path allows
/// ([`transport::bulk_client`]), which costs less CPU per byte on both sides.
pub fn with_repo_bulk<T, F, Fut>(args: &ClientArgs, f: F) -> Result<T>
where
    F: FnOnce(RepoClient, TrustStore) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    on_repo(args, true, f)
}

fn on_repo<T, F, Fut>(args: &ClientArgs, bulk: bool, f: F) -> Result<T>
where
    F: FnOnce(RepoClient, TrustStore) -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let identity = daemon::identity(&args.cert, &args.key, args.password_file.as_deref())?;
    let (trust, ca) = daemon::trust(&args.ca)?;
    let pace = config::min_rate("--min-rate", &args.min_rate)?;
    let addr = args.repo.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(async move {
        let endpoint = if bulk {
            transport::bulk_client(&identity, &ca, ALPN_REPO)?
        } else {
            transport::client(None, &identity, &ca, ALPN_REPO)?
        };
        let client =
            RepoClient::connect(&endpoint, &addr).await.with_context(|| format!("repository {addr}"))?.with_pace(pace);
        let result = f(client.clone(), trust).await;
        client.connection.close(0u32.into(), b"done");
        transport::finish(&endpoint).await;
        result
    })
}

/// What a publish did.
#[derive(Debug)]
pub struct Published {
    /// The new snapshot.
    pub sequence: u64,
    /// The package's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// True when it replaced the same version.
    pub replaced: bool,
}

/// Uploads the package `file` to the repository of `args`, with a progress bar.
pub fn publish(args: &ClientArgs, file: &Path) -> Result<Published> {
    Ok(publish_all(args, &[file.to_path_buf()])?.remove(0))
}

/// Uploads the package `files` to the repository of `args`, published in one snapshot, all or
/// none; with a progress bar.
pub fn publish_all(args: &ClientArgs, files: &[PathBuf]) -> Result<Vec<Published>> {
    let mut size = 0;
    for f in files {
        size += std::fs::metadata(f).with_context(|| format!("{}", f.display()))?.len();
    }
    let paths = files.to_vec();
    let response = with_repo(args, move |client, _| async move {
        let progress = Progress::bytes("uploading", size);
        let r = client.publish_all(&paths, &mut |n| progress.set(n)).await;
        progress.finish();
        Ok(r?)
    })
    .with_context(|| {
        let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        format!("publishing {}", names.join(", "))
    })?;
    match response {
        Response::Published { sequence, name, version, replaced } => {
            Ok(vec![Published { sequence, name, version, replaced }])
        }
        Response::PublishedMany { sequence, packages } => Ok(packages
            .into_iter()
            .map(|p| Published { sequence, name: p.name, version: p.version, replaced: p.replaced })
            .collect()),
        other => bail!("unexpected answer: {other:?}"),
    }
}
