//! Repository snapshots: the signed index of what a repository holds.
//!
//! A snapshot has a sequence number that only grows, a creation time, an expiry, the entries
//! (each package's control fields, manifest hash and size) and the host packages (by the
//! BLAKE3 of their lower-cased name, so that host names are not listed). It is signed by the
//! main repository's snapshot key: a certificate with the snapshot-signing usage. That key can
//! only say "this is the current set"; every package is still verified against its own
//! signer.
//!
//! Consumers refuse a snapshot whose signature does not chain to a trusted CA, one older than
//! the one they hold (rollback), one with the same sequence but other content, and an expired
//! one (freeze).

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::control::Control;
use crate::entry::{EntryError, PackageEntry};
use crate::lineage::SignedLineage;
use crate::pki::{CertInfo, ChainError, PrivateKey, Purpose, TrustStore};
use crate::signing::{self, Domain, SignatureError};
use crate::time_fmt::format_unix;
use crate::verified::Verified;

/// Largest signed snapshot accepted, in bytes.
pub const MAX_SNAPSHOT_BYTES: usize = 64 * 1024 * 1024;

/// A package in a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotEntry {
    /// The package's control fields (as in its manifest).
    pub control: Vec<(String, String)>,
    /// BLAKE3 of the package's manifest bytes.
    pub manifest: [u8; 32],
    /// Total size of the package's files.
    pub size: u64,
}

/// A host package, found by the BLAKE3 of its lower-cased name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// BLAKE3 of the lower-cased package name (a host's UUID or FQDN).
    pub name_hash: [u8; 32],
    /// BLAKE3 of the package's manifest bytes.
    pub manifest: [u8; 32],
    /// Total size of the package's files.
    pub size: u64,
}

/// What a repository holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Name of the repository that made it.
    pub repository: String,
    /// Grows by one with every snapshot.
    pub sequence: u64,
    /// When it was made (Unix seconds).
    pub created: i64,
    /// When it stops being valid (Unix seconds).
    pub expires: i64,
    /// Packages, sorted by name then version.
    pub entries: Vec<SnapshotEntry>,
    /// Host packages, sorted by name hash.
    pub hosts: Vec<HostEntry>,
    /// SHA-256 fingerprints of revoked host certificates, sorted: every repository refuses
    /// them (revocation reaches every edge with the snapshot).
    pub revoked: Vec<String>,
    /// The lineage this snapshot belongs to (0: the first). A higher epoch supersedes every
    /// snapshot of lower ones, whatever their sequences ([`crate::lineage`]).
    pub epoch: u64,
    /// The CA-signed document opening `epoch` (none for epoch 0).
    pub lineage: Option<SignedLineage>,
}

/// The second version, without lineages.
#[derive(Serialize, Deserialize)]
struct SnapshotV2 {
    repository: String,
    sequence: u64,
    created: i64,
    expires: i64,
    entries: Vec<SnapshotEntry>,
    hosts: Vec<HostEntry>,
    revoked: Vec<String>,
}

/// The first version, without revocations.
#[derive(Serialize, Deserialize)]
struct SnapshotV1 {
    repository: String,
    sequence: u64,
    created: i64,
    expires: i64,
    entries: Vec<SnapshotEntry>,
    hosts: Vec<HostEntry>,
}

#[derive(Serialize, Deserialize)]
enum SnapshotWire {
    V1(SnapshotV1),
    V2(SnapshotV2),
    V3(Snapshot),
}

/// What a consumer holds, for the rollback checks: the snapshot's lineage, sequence and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// Its epoch.
    pub epoch: u64,
    /// Its sequence.
    pub sequence: u64,
    /// BLAKE3 of its encoding.
    pub hash: [u8; 32],
}

#[derive(Serialize, Deserialize)]
enum SignedWire {
    V1 {
        #[serde(with = "crate::raw")]
        snapshot: Vec<u8>,
        #[serde(with = "crate::raw")]
        signature: Vec<u8>,
        #[serde(with = "crate::raw::list")]
        chain: Vec<Vec<u8>>,
    },
}

/// A snapshot with its signature, as sent and stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedSnapshot {
    snapshot: Vec<u8>,
    signature: Vec<u8>,
    chain: Vec<Vec<u8>>,
    encoded: Vec<u8>,
}

/// The small message a repository answers first: what its current snapshot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Sequence of the current snapshot.
    pub sequence: u64,
    /// BLAKE3 of the signed snapshot's encoding.
    pub hash: [u8; 32],
    /// When it was made.
    pub created: i64,
    /// When it expires.
    pub expires: i64,
}

/// Why a snapshot is refused. The reason names are used as metric labels.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// Cannot be decoded.
    #[error("snapshot cannot be decoded: {0}")]
    Decode(String),
    /// Over the size limit.
    #[error("snapshot of {0} bytes is over the {MAX_SNAPSHOT_BYTES}-byte limit")]
    TooLarge(usize),
    /// The signer's certificate is refused.
    #[error("snapshot signer refused: {0}")]
    Chain(ChainError),
    /// The signature does not match.
    #[error("snapshot signature: {0} (forged or damaged)")]
    Signature(SignatureError),
    /// Expired.
    #[error("snapshot {sequence} expired on {} (the main repository has not re-signed it: is it running?)", format_unix(*expires))]
    Expired { sequence: u64, expires: i64 },
    /// Older than the one held.
    #[error("snapshot {sequence} is older than the snapshot {held} already held (rollback refused)")]
    Rollback { sequence: u64, held: u64 },
    /// Same sequence as the one held but different content.
    #[error("snapshot {sequence} differs from the snapshot {sequence} already held (equivocation refused)")]
    Equivocation { sequence: u64 },
    /// An entry whose control does not describe a package.
    #[error("snapshot entry {index}: {error}")]
    Entry { index: usize, error: EntryError },
    /// From an older lineage than the one held.
    #[error(
        "snapshot {sequence} belongs to lineage {epoch}, older than lineage {held} already held (rollback refused)"
    )]
    OlderLineage { sequence: u64, epoch: u64, held: u64 },
    /// A new lineage without a valid CA-signed document.
    #[error("snapshot {sequence} opens lineage {epoch} without a valid lineage document: {why}")]
    Lineage { sequence: u64, epoch: u64, why: String },
}

impl SnapshotError {
    /// A short label for metrics (`forged`, `rollback`, `expired`, …).
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Decode(_) | Self::TooLarge(_) | Self::Entry { .. } => "malformed",
            Self::Chain(_) | Self::Signature(_) => "forged",
            Self::Expired { .. } => "expired",
            Self::Rollback { .. } | Self::OlderLineage { .. } => "rollback",
            Self::Equivocation { .. } => "equivocation",
            Self::Lineage { .. } => "forged",
        }
    }
}

impl Snapshot {
    /// The head describing this snapshot once signed as `signed`.
    pub fn head(&self, signed: &SignedSnapshot) -> Head {
        Head { sequence: self.sequence, hash: signed.hash(), created: self.created, expires: self.expires }
    }

    /// Typed entries (controls are checked when the snapshot is verified).
    pub fn package_entries(&self) -> Vec<PackageEntry> {
        self.entries
            .iter()
            .filter_map(|e| {
                let control = Control::from_fields(e.control.clone()).ok()?;
                PackageEntry::from_control(&control).ok()
            })
            .collect()
    }

    /// The host package for `name` (UUID or FQDN), if any.
    pub fn host_package(&self, name: &str) -> Option<&HostEntry> {
        let hash = host_name_hash(name);
        self.hosts.iter().find(|h| h.name_hash == hash)
    }

    /// Every manifest hash this snapshot references.
    pub fn manifests(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.entries.iter().map(|e| &e.manifest).chain(self.hosts.iter().map(|h| &h.manifest))
    }

    /// What a consumer holding this snapshot (signed as `signed`) checks the next against.
    pub fn held(&self, signed: &SignedSnapshot) -> Held {
        Held { epoch: self.epoch, sequence: self.sequence, hash: signed.hash() }
    }

    /// Signs the snapshot (in the oldest encoding that holds it, so that consumers that predate
    /// lineages read the snapshots of the first one).
    pub fn sign(&self, key: &PrivateKey, chain: &[CertificateDer<'_>]) -> SignedSnapshot {
        let wire = if self.epoch == 0 && self.lineage.is_none() {
            SnapshotWire::V2(SnapshotV2 {
                repository: self.repository.clone(),
                sequence: self.sequence,
                created: self.created,
                expires: self.expires,
                entries: self.entries.clone(),
                hosts: self.hosts.clone(),
                revoked: self.revoked.clone(),
            })
        } else {
            SnapshotWire::V3(self.clone())
        };
        let snapshot = postcard::to_stdvec(&wire).expect("encoding to a Vec cannot fail");
        let signature = signing::sign(key, Domain::Snapshot, &snapshot).to_vec();
        let chain = chain.iter().map(|c| c.as_ref().to_vec()).collect();
        SignedSnapshot::assemble(snapshot, signature, chain)
    }
}

/// What a publish or unpublish changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// The package (or host package) names and versions added.
    pub added: Vec<String>,
    /// Those removed or replaced.
    pub removed: Vec<String>,
}

impl Snapshot {
    /// An empty snapshot.
    pub fn empty(repository: &str, sequence: u64, now: i64, lifetime_secs: i64) -> Self {
        Self {
            repository: repository.to_string(),
            sequence,
            created: now,
            expires: now + lifetime_secs,
            entries: Vec::new(),
            hosts: Vec::new(),
            revoked: Vec::new(),
            epoch: 0,
            lineage: None,
        }
    }

    /// The next snapshot, opening the lineage of `doc` (signed as `lineage`).
    pub fn with_lineage(&self, lineage: SignedLineage, epoch: u64, now: i64, lifetime_secs: i64) -> Self {
        Self { epoch, lineage: Some(lineage), ..self.next(now, lifetime_secs) }
    }

    /// The next snapshot with these fingerprints revoked too; `None` when they all are already.
    pub fn with_revoked(&self, fingerprints: &[String], now: i64, lifetime_secs: i64) -> Option<Self> {
        let mut revoked = self.revoked.clone();
        for f in fingerprints {
            if !revoked.contains(f) {
                revoked.push(f.clone());
            }
        }
        if revoked.len() == self.revoked.len() {
            return None;
        }
        revoked.sort();
        Some(Self { revoked, ..self.next(now, lifetime_secs) })
    }

    /// The next snapshot: same content, sequence + 1, new dates.
    pub fn next(&self, now: i64, lifetime_secs: i64) -> Self {
        Self { sequence: self.sequence + 1, created: now, expires: now + lifetime_secs, ..self.clone() }
    }

    /// Adds a package. A host package replaces any older host package of that name; another
    /// package replaces the entry with the same name, version, architecture, locale and
    /// maturity.
    pub fn with_package(&mut self, entry: &PackageEntry, manifest: [u8; 32], size: u64) -> Change {
        let label = format!("{} {}", entry.name, entry.version);
        let mut removed = Vec::new();
        if entry.section == crate::entry::Section::Host {
            let name_hash = host_name_hash(&entry.name);
            if let Some(old) = self.hosts.iter().position(|h| h.name_hash == name_hash) {
                self.hosts.remove(old);
                removed.push(entry.name.clone());
            }
            self.hosts.push(HostEntry { name_hash, manifest, size });
            self.hosts.sort_by_key(|h| h.name_hash);
        } else {
            let same = |e: &PackageEntry| {
                e.name == entry.name
                    && e.version == entry.version
                    && e.architectures == entry.architectures
                    && e.locales == entry.locales
                    && e.effective_maturity() == entry.effective_maturity()
            };
            let typed = self.package_entries();
            if let Some(pos) = typed.iter().position(same) {
                removed.push(format!("{} {}", typed[pos].name, typed[pos].version));
                self.entries.remove(pos);
            }
            let control = entry.control.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            self.entries.push(SnapshotEntry { control, manifest, size });
            self.sort_entries();
        }
        Change { added: vec![label], removed }
    }

    /// Removes the packages called `name` (of `version` only, if given; host packages by
    /// name). Returns what was removed.
    pub fn without(&mut self, name: &str, version: Option<&crate::version::Version>) -> Vec<String> {
        let mut removed = Vec::new();
        let typed = self.package_entries();
        let mut keep = Vec::with_capacity(self.entries.len());
        for (raw, entry) in self.entries.drain(..).zip(typed) {
            if entry.name == name && version.is_none_or(|v| &entry.version == v) {
                removed.push(format!("{} {}", entry.name, entry.version));
            } else {
                keep.push(raw);
            }
        }
        self.entries = keep;
        if version.is_none() {
            let hash = host_name_hash(name);
            let before = self.hosts.len();
            self.hosts.retain(|h| h.name_hash != hash);
            if self.hosts.len() < before {
                removed.push(format!("{name} (host package)"));
            }
        }
        removed
    }

    fn sort_entries(&mut self) {
        let key = |e: &SnapshotEntry| {
            let get = |k: &str| e.control.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone()).unwrap_or_default();
            (get("package"), crate::version::Version::parse_loose(&get("version")))
        };
        self.entries.sort_by_cached_key(key);
    }
}

/// BLAKE3 of a host package name, lower-cased and trimmed.
pub fn host_name_hash(name: &str) -> [u8; 32] {
    *blake3::hash(name.trim().to_lowercase().as_bytes()).as_bytes()
}

impl SignedSnapshot {
    fn assemble(snapshot: Vec<u8>, signature: Vec<u8>, chain: Vec<Vec<u8>>) -> Self {
        let wire = SignedWire::V1 { snapshot, signature, chain };
        let encoded = postcard::to_stdvec(&wire).expect("encoding to a Vec cannot fail");
        let SignedWire::V1 { snapshot, signature, chain } = wire;
        Self { snapshot, signature, chain, encoded }
    }

    /// The bytes as sent and stored.
    pub fn encoded(&self) -> &[u8] {
        &self.encoded
    }

    /// BLAKE3 of [`Self::encoded`].
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&self.encoded).as_bytes()
    }

    /// Decodes signed-snapshot bytes (not verified).
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        if bytes.len() > MAX_SNAPSHOT_BYTES {
            return Err(SnapshotError::TooLarge(bytes.len()));
        }
        let wire: SignedWire = postcard::from_bytes(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        let SignedWire::V1 { snapshot, signature, chain } = wire;
        Ok(Self { snapshot, signature, chain, encoded: bytes.to_vec() })
    }

    /// The snapshot without checking anything: for local display of what is already stored.
    pub fn unverified(&self) -> Result<Snapshot, SnapshotError> {
        let wire: SnapshotWire =
            postcard::from_bytes(&self.snapshot).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        Ok(match wire {
            SnapshotWire::V1(v) => Snapshot {
                repository: v.repository,
                sequence: v.sequence,
                created: v.created,
                expires: v.expires,
                entries: v.entries,
                hosts: v.hosts,
                revoked: Vec::new(),
                epoch: 0,
                lineage: None,
            },
            SnapshotWire::V2(v) => Snapshot {
                repository: v.repository,
                sequence: v.sequence,
                created: v.created,
                expires: v.expires,
                entries: v.entries,
                hosts: v.hosts,
                revoked: v.revoked,
                epoch: 0,
                lineage: None,
            },
            SnapshotWire::V3(s) => s,
        })
    }

    /// Verifies the signature (chain to `trust` with the snapshot-signing usage), the expiry
    /// at `now`, its lineage (a lineage after the first needs its CA-signed document), and that
    /// it is not older than `held`: an older lineage is refused, a newer one accepted whatever
    /// its sequence, and within one lineage the sequence never goes back nor repeats with other
    /// content.
    pub fn verify(
        &self,
        trust: &TrustStore,
        now: i64,
        held: Option<Held>,
    ) -> Result<(Verified<Snapshot>, CertInfo), SnapshotError> {
        let (snapshot, signer) = self.check(trust, now)?;
        if let Some(h) = held {
            if snapshot.epoch < h.epoch {
                return Err(SnapshotError::OlderLineage {
                    sequence: snapshot.sequence,
                    epoch: snapshot.epoch,
                    held: h.epoch,
                });
            }
            if snapshot.epoch == h.epoch {
                if snapshot.sequence < h.sequence {
                    return Err(SnapshotError::Rollback { sequence: snapshot.sequence, held: h.sequence });
                }
                if snapshot.sequence == h.sequence && self.hash() != h.hash {
                    return Err(SnapshotError::Equivocation { sequence: h.sequence });
                }
            }
        }
        if snapshot.expires <= now {
            return Err(SnapshotError::Expired { sequence: snapshot.sequence, expires: snapshot.expires });
        }
        Ok((Verified::new(snapshot), signer))
    }

    /// Verifies a snapshot this node verified before and kept: its signature, chain, lineage
    /// document and entries as of when it was made. Freshness and rollback are the caller's
    /// rules (an expired snapshot is still read, to say so and to keep what is installed).
    pub fn verify_kept(&self, trust: &TrustStore) -> Result<Verified<Snapshot>, SnapshotError> {
        let created = self.unverified()?.created;
        let (snapshot, _) = self.check(trust, created)?;
        Ok(Verified::new(snapshot))
    }

    /// The signature (chain to `trust` with the snapshot-signing usage, at `at`), the lineage
    /// document of a lineage after the first, and the entries.
    fn check(&self, trust: &TrustStore, at: i64) -> Result<(Snapshot, CertInfo), SnapshotError> {
        let chain: Vec<CertificateDer<'_>> = self.chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let signer = trust.verify(&chain, at, &[Purpose::SnapshotSigning]).map_err(SnapshotError::Chain)?;
        signing::verify(&signer.public_key, Domain::Snapshot, &self.snapshot, &self.signature)
            .map_err(SnapshotError::Signature)?;
        let snapshot = self.unverified()?;
        if snapshot.epoch > 0 {
            let lineage_err =
                |why: String| SnapshotError::Lineage { sequence: snapshot.sequence, epoch: snapshot.epoch, why };
            let doc = snapshot
                .lineage
                .as_ref()
                .ok_or_else(|| lineage_err("none is attached".into()))?
                .verify(trust, at)
                .map_err(|e| lineage_err(e.to_string()))?;
            if doc.epoch != snapshot.epoch {
                return Err(lineage_err(format!("the document opens lineage {}", doc.epoch)));
            }
        }
        for (index, e) in snapshot.entries.iter().enumerate() {
            let control = Control::from_fields(e.control.clone())
                .map_err(|err| SnapshotError::Decode(format!("entry {index}: {err}")))?;
            PackageEntry::from_control(&control).map_err(|source| SnapshotError::Entry { index, error: source })?;
        }
        Ok((snapshot, signer))
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod golden;
