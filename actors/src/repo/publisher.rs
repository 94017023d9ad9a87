//! The main repository's publisher: the actor that owns the current snapshot and its signing
//! key. A publish verifies the package (chain, usages, signature, every byte), stores its
//! files (checking every chunk) and record, and commits a new snapshot (sequence + 1) in one transaction;
//! a refused publish changes nothing. The snapshot is re-signed before it expires even when
//! nothing changes.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use outpost_protocol::entry::PackageEntry;
use outpost_protocol::lineage::SignedLineage;
use outpost_protocol::package::{PackageArchive, PackageError, PackageRecord};
use outpost_protocol::pki::{PrivateKey, TrustStore};
use outpost_protocol::snapshot::{Head, SignedSnapshot, Snapshot};
use outpost_protocol::version::Version;
use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

use crate::clock::unix_now;
use crate::metrics::RepoMetrics;
use crate::store::{FileInfo, Store, StoreError};

/// Settings of the publisher.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The repository's name, written in snapshots.
    pub name: String,
    /// How long a snapshot is valid.
    pub lifetime: Duration,
    /// How often the snapshot is re-signed when nothing changes (well before `lifetime`).
    pub resign_every: Duration,
    /// Snapshots kept (and the content they reference).
    pub keep: usize,
    /// Unreferenced blobs younger than this are kept.
    pub gc_grace: Duration,
}

/// Why a publish or unpublish was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The package is refused (bad signature, tampered, expired certificate…).
    #[error("package refused: {0}")]
    Refused(PackageError),
    /// Nothing matches an unpublish.
    #[error("{0}")]
    NotFound(String),
    /// A bad argument.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Anything else.
    #[error("{0}")]
    Internal(String),
    /// One archive of several was refused: nothing was published.
    #[error("archive {number} of {of} ({what}): {error}; nothing was published")]
    InBatch { number: usize, of: usize, what: String, error: Box<PublishError> },
}

impl From<PackageError> for PublishError {
    fn from(e: PackageError) -> Self {
        Self::Refused(e)
    }
}

impl PublishError {
    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Refused(_) => "refused",
            Self::NotFound(_) | Self::BadRequest(_) => "bad_request",
            Self::Store(_) | Self::Internal(_) => "internal",
            Self::InBatch { error, .. } => error.reason(),
        }
    }
}

/// What a publish did.
#[derive(Debug, Clone)]
pub struct Published {
    /// The new snapshot's sequence.
    pub sequence: u64,
    /// Package name.
    pub name: String,
    /// Package version.
    pub version: String,
    /// True when it replaced the same package.
    pub replaced: bool,
}

/// Publishes the package archives at `archives` in one snapshot, all or none (the files are
/// removed afterwards). `peer` names the publisher in logs.
#[derive(Debug, Message)]
#[rtype(result = "Result<Vec<Published>, PublishError>")]
pub struct Publish {
    /// The received archives, in order.
    pub archives: Vec<PathBuf>,
    /// Who sent them.
    pub peer: String,
}

/// Removes packages by name (and version).
#[derive(Debug, Message)]
#[rtype(result = "Result<(u64, Vec<String>), PublishError>")]
pub struct Unpublish {
    /// Package name.
    pub name: String,
    /// Version, or every version.
    pub version: Option<String>,
    /// Who asked.
    pub peer: String,
}

/// Re-signs the snapshot if it is due.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Resign;

/// Revokes host certificates (by SHA-256 fingerprint): a new snapshot lists them, so that
/// every repository refuses them.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Revoke(pub Vec<String>);

/// The publisher actor.
pub struct Publisher {
    store: Arc<Store>,
    trust: TrustStore,
    key: Arc<PrivateKey>,
    chain: Arc<Vec<CertificateDer<'static>>>,
    config: PublisherConfig,
    current: Snapshot,
    head: watch::Sender<Option<Head>>,
    metrics: Arc<RepoMetrics>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").field("name", &self.config.name).field("sequence", &self.current.sequence).finish()
    }
}

impl Publisher {
    /// Loads the current snapshot from the store (or makes an empty first one) and returns
    /// the publisher and the receiving side of its head channel.
    pub fn new(
        store: Arc<Store>,
        trust: TrustStore,
        key: PrivateKey,
        chain: Vec<CertificateDer<'static>>,
        config: PublisherConfig,
        metrics: Arc<RepoMetrics>,
    ) -> Result<(Self, watch::Receiver<Option<Head>>), PublishError> {
        let now = unix_now();
        let lifetime = secs(config.lifetime);
        let (current, signed) = match store.current()? {
            Some(signed) => {
                let snapshot = signed.unverified().map_err(|e| PublishError::Internal(e.to_string()))?;
                if snapshot.repository != config.name {
                    tracing::warn!(old = snapshot.repository, new = config.name, "the repository was renamed");
                }
                (snapshot, signed)
            }
            None => {
                let snapshot = Snapshot::empty(&config.name, 1, now, lifetime);
                let signed = snapshot.sign(&key, &chain);
                store.commit(&[], &[], &[], Some((snapshot.sequence, &signed)))?;
                tracing::info!("created the first (empty) snapshot");
                (snapshot, signed)
            }
        };
        // A lineage document installed while the main was stopped (after a restore): the next
        // snapshot opens its lineage, which edges and agents accept over the old one.
        let (current, signed) = match store.lineage()? {
            Some(bytes) => {
                let lineage = SignedLineage::decode(&bytes).map_err(|e| PublishError::Internal(e.to_string()))?;
                let doc = lineage.verify(&trust, now).map_err(|e| PublishError::Internal(e.to_string()))?;
                if doc.epoch > current.epoch {
                    let next = current.with_lineage(lineage, doc.epoch, now, lifetime);
                    let signed = next.sign(&key, &chain);
                    store.commit(&[], &[], &[], Some((next.sequence, &signed)))?;
                    tracing::warn!(
                        epoch = doc.epoch,
                        sequence = next.sequence,
                        reason = doc.reason,
                        "opened a new snapshot lineage: edges and agents move to it"
                    );
                    (next, signed)
                } else {
                    (current, signed)
                }
            }
            None => (current, signed),
        };
        let (head, rx) = watch::channel(Some(current.head(&signed)));
        let publisher =
            Self { store, trust, key: Arc::new(key), chain: Arc::new(chain), config, current, head, metrics };
        publisher.export(&signed);
        Ok((publisher, rx))
    }

    fn export(&self, signed: &SignedSnapshot) {
        let head = self.current.head(signed);
        self.metrics.snapshot_sequence.set(i64::try_from(head.sequence).unwrap_or(i64::MAX));
        self.metrics.snapshot_expiry.set(head.expires);
        let (blobs, bytes) = self.store.usage();
        self.metrics.blobs.set(i64::try_from(blobs).unwrap_or(i64::MAX));
        self.metrics.blob_bytes.set(i64::try_from(bytes).unwrap_or(i64::MAX));
        self.head.send_replace(Some(head));
    }

    fn commit(&mut self, next: Snapshot, signed: &SignedSnapshot) {
        self.current = next;
        self.export(signed);
    }

    /// What a blocking task needs to make the next snapshot.
    fn context(&self) -> Ctx {
        Ctx {
            store: self.store.clone(),
            trust: self.trust.clone(),
            key: self.key.clone(),
            chain: self.chain.clone(),
            current: self.current.clone(),
            lifetime: secs(self.config.lifetime),
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 2)
}

struct Ctx {
    store: Arc<Store>,
    trust: TrustStore,
    key: Arc<PrivateKey>,
    chain: Arc<Vec<CertificateDer<'static>>>,
    current: Snapshot,
    lifetime: i64,
}

impl Ctx {
    fn sign_and_commit(
        &self,
        next: &Snapshot,
        records: &[([u8; 32], Vec<u8>)],
        files: &[([u8; 32], FileInfo)],
    ) -> Result<SignedSnapshot, PublishError> {
        let signed = next.sign(&self.key, &self.chain);
        let complete: Vec<[u8; 32]> = files.iter().map(|(h, _)| *h).collect();
        self.store.commit(records, files, &complete, Some((next.sequence, &signed)))?;
        Ok(signed)
    }
}

/// A verified package, its files stored (not yet referenced by any snapshot).
struct Ingested {
    record: PackageRecord,
    files: Vec<([u8; 32], FileInfo)>,
    entry: PackageEntry,
    size: u64,
}

/// Verifies the archive and stores its chunks. Blocking.
fn ingest(store: &Store, trust: &TrustStore, archive: &Path, now: i64) -> Result<Ingested, PublishError> {
    let file = File::open(archive).map_err(|e| PublishError::Internal(format!("{}: {e}", archive.display())))?;
    let opened = PackageArchive::open(BufReader::new(file))?;
    let (verified, _) = opened.verify(trust, now, &mut |_| {})?;
    let mut package = verified.into_inner();
    let manifest = package.manifest().clone();
    let entry = manifest.entry().map_err(|e| PublishError::Refused(PackageError::Manifest(e.into())))?;
    let record = package.record();
    let mut files = Vec::with_capacity(manifest.files.len());
    for f in &manifest.files {
        let info = FileInfo { size: f.size, chunks: f.chunks.clone() };
        if !store.has_file(&f.blake3) {
            let mut reader = package.open_file(&f.path)?;
            store
                .put_file(&f.blake3, &info, &mut reader)
                .map_err(|e| PublishError::Internal(format!("storing {}: {e}", f.path)))?;
        }
        files.push((f.blake3, info));
    }
    Ok(Ingested { record, files, entry, size: manifest.total_size() })
}

impl Actor for Publisher {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Check often enough to re-sign on time; the re-sign period is the real knob.
        let every = (self.config.resign_every / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
        ctx.notify(Resign);
        ctx.run_interval(every, |_, ctx| ctx.notify(Resign));
        let store = self.store.clone();
        let (keep, grace) = (self.config.keep, self.config.gc_grace);
        ctx.run_interval(Duration::from_secs(3600), move |_, _| {
            let store = store.clone();
            tokio::task::spawn_blocking(move || match store.gc(keep, grace) {
                Ok(r) => tracing::info!(removed = r.blobs_removed, freed = r.bytes_freed, "garbage collection"),
                Err(e) => tracing::warn!("garbage collection failed: {e}"),
            });
        });
    }
}

impl Handler<Publish> for Publisher {
    type Result = AtomicResponse<Self, Result<Vec<Published>, PublishError>>;

    fn handle(&mut self, msg: Publish, _: &mut Self::Context) -> Self::Result {
        let ctx = self.context();
        let work = async move {
            let archives = msg.archives.clone();
            let result = tokio::task::spawn_blocking(move || {
                let now = unix_now();
                let of = archives.len();
                let mut ingested = Vec::with_capacity(of);
                let mut failed = None;
                for (i, archive) in archives.iter().enumerate() {
                    match ingest(&ctx.store, &ctx.trust, archive, now) {
                        Ok(ing) => ingested.push(ing),
                        Err(error) if of > 1 => {
                            let what =
                                archive.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                            failed = Some(PublishError::InBatch { number: i + 1, of, what, error: Box::new(error) });
                            break;
                        }
                        Err(error) => {
                            failed = Some(error);
                            break;
                        }
                    }
                }
                for archive in &archives {
                    let _ = std::fs::remove_file(archive);
                }
                if let Some(e) = failed {
                    return Err(e);
                }
                let mut next = ctx.current.next(now, ctx.lifetime);
                let mut published = Vec::with_capacity(of);
                let mut records = Vec::with_capacity(of);
                let mut files = Vec::new();
                for ing in &ingested {
                    let change = next.with_package(&ing.entry, ing.record.hash(), ing.size);
                    records.push((ing.record.hash(), ing.record.encode()));
                    files.extend(ing.files.iter().cloned());
                    published.push(Published {
                        sequence: next.sequence,
                        name: ing.entry.name.clone(),
                        version: ing.entry.version.to_string(),
                        replaced: !change.removed.is_empty(),
                    });
                }
                let signed = ctx.sign_and_commit(&next, &records, &files)?;
                Ok::<_, PublishError>((next, signed, published))
            })
            .await
            .map_err(|e| PublishError::Internal(e.to_string()))
            .and_then(|r| r);
            (result, msg.peer)
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|(result, peer), act, _| match result {
            Ok((next, signed, published)) => {
                act.commit(next, &signed);
                act.metrics
                    .publishes
                    .get_or_create(&vec![("op".into(), "publish".into()), ("result".into(), "ok".into())])
                    .inc();
                for p in &published {
                    tracing::info!(peer, package = p.name, version = p.version, sequence = p.sequence, "published");
                }
                Ok(published)
            }
            Err(e) => {
                act.metrics
                    .publishes
                    .get_or_create(&vec![("op".into(), "publish".into()), ("result".into(), e.reason().into())])
                    .inc();
                if matches!(e, PublishError::Refused(_)) {
                    act.metrics.refused("package");
                }
                tracing::warn!(peer, "publish refused: {e}");
                Err(e)
            }
        })))
    }
}

impl Handler<Unpublish> for Publisher {
    type Result = AtomicResponse<Self, Result<(u64, Vec<String>), PublishError>>;

    fn handle(&mut self, msg: Unpublish, _: &mut Self::Context) -> Self::Result {
        let ctx = self.context();
        let work = async move {
            tokio::task::spawn_blocking(move || {
                let version = match &msg.version {
                    Some(v) => Some(Version::parse(v).map_err(|e| PublishError::BadRequest(e.to_string()))?),
                    None => None,
                };
                let mut next = ctx.current.next(unix_now(), ctx.lifetime);
                let removed = next.without(&msg.name, version.as_ref());
                if removed.is_empty() {
                    let what = msg.version.as_ref().map_or(msg.name.clone(), |v| format!("{}={v}", msg.name));
                    return Err(PublishError::NotFound(format!("no package {what} in the repository")));
                }
                let signed = ctx.sign_and_commit(&next, &[], &[])?;
                Ok((next, signed, removed, msg.peer))
            })
            .await
            .map_err(|e| PublishError::Internal(e.to_string()))
            .and_then(|r| r)
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, act, _| {
            let (next, signed, removed, peer) = result?;
            let sequence = next.sequence;
            act.commit(next, &signed);
            act.metrics
                .publishes
                .get_or_create(&vec![("op".into(), "unpublish".into()), ("result".into(), "ok".into())])
                .inc();
            tracing::info!(peer, ?removed, sequence, "unpublished");
            Ok((sequence, removed))
        })))
    }
}

impl Handler<Resign> for Publisher {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, _: Resign, _: &mut Self::Context) -> Self::Result {
        let now = unix_now();
        let due = now - self.current.created >= secs(self.config.resign_every) || self.current.expires <= now;
        let ctx = self.context();
        let work = async move {
            if !due {
                return None;
            }
            tokio::task::spawn_blocking(move || {
                let next = ctx.current.next(unix_now(), ctx.lifetime);
                ctx.sign_and_commit(&next, &[], &[]).map(|signed| (next, signed))
            })
            .await
            .ok()
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, act, _| match result {
            Some(Ok((next, signed))) => {
                tracing::info!(sequence = next.sequence, "re-signed the snapshot");
                act.commit(next, &signed);
            }
            Some(Err(e)) => tracing::error!("re-signing the snapshot failed: {e}"),
            None => {}
        })))
    }
}

impl Handler<Revoke> for Publisher {
    type Result = AtomicResponse<Self, ()>;

    fn handle(&mut self, msg: Revoke, _: &mut Self::Context) -> Self::Result {
        let ctx = self.context();
        let work = async move {
            let next = ctx.current.with_revoked(&msg.0, unix_now(), ctx.lifetime)?;
            tokio::task::spawn_blocking(move || ctx.sign_and_commit(&next, &[], &[]).map(|signed| (next, signed)))
                .await
                .ok()
        };
        AtomicResponse::new(Box::pin(work.into_actor(self).map(|result, act, _| match result {
            Some(Ok((next, signed))) => {
                tracing::info!(sequence = next.sequence, revoked = next.revoked.len(), "snapshot with revocations");
                act.commit(next, &signed);
            }
            Some(Err(e)) => tracing::error!("signing the snapshot with revocations failed: {e}"),
            None => {}
        })))
    }
}
