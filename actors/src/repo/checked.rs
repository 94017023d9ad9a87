//! The package records a repository process has verified, so that a sync checks again only
//! what it has not checked already.
//!
//! An edge's sync verifies every record its new snapshot lists as of the snapshot's date: those
//! it fetched and those it holds from earlier snapshots. The held ones were verified by the
//! sync that brought them, with the same trust store (it does not change while the process
//! runs); only the date differs, and a record's verification depends on the date only through
//! its certificates' validity. [`CheckedRecords`] keeps, by the BLAKE3 of each record's exact
//! bytes (manifest, signature and chain: any other byte is another record), the span in which
//! every certificate of its chain is valid; a record checked again at a date inside it is
//! decoded for its files without verifying its signature and chain once more. An edge holding
//! thousands of packages (a snapshot lists a host package for every host) then verifies the
//! few new ones per sync, not thousands.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use outpost_protocol::hex::hex;
use outpost_protocol::package::{Manifest, PackageRecord};
use outpost_protocol::pki::{TrustStore, cert_info};
use rustls::pki_types::CertificateDer;

use super::sync::SyncError;
use crate::store::FileInfo;

/// Records verified by this process: the BLAKE3 of a record's bytes, and the span of dates
/// (Unix seconds, `from..until`) at which its whole chain is valid.
#[derive(Debug, Default)]
pub struct CheckedRecords(Mutex<HashMap<[u8; 32], (i64, i64)>>);

/// What a check found: the record's files, and its key among the records checked.
#[derive(Debug)]
pub struct Checked {
    /// The files of the package (hash, size and chunk list).
    pub files: Vec<([u8; 32], FileInfo)>,
    /// The BLAKE3 of the record's bytes ([`CheckedRecords::keep`]).
    pub key: [u8; 32],
    /// False when it was known already and not verified again.
    pub verified: bool,
}

impl CheckedRecords {
    /// Checks the record of `manifest`: decodes it, matches its hash, and verifies its
    /// signature and chain as of `created` unless these very bytes were verified already at a
    /// date their chain is valid at too. Blocking: a record lists the chunks of every file.
    pub fn check(
        &self,
        manifest: [u8; 32],
        bytes: &[u8],
        trust: &TrustStore,
        created: i64,
    ) -> Result<Checked, SyncError> {
        let bad = |reason: String| SyncError::Package { manifest: hex(&manifest), reason };
        let key = *blake3::hash(bytes).as_bytes();
        let record = PackageRecord::decode(bytes).map_err(|e| bad(e.to_string()))?;
        if record.hash() != manifest {
            return Err(bad("the record does not match the snapshot's hash".into()));
        }
        let known = self
            .0
            .lock()
            .expect("not poisoned")
            .get(&key)
            .is_some_and(|&(from, until)| from <= created && created < until);
        let decoded = if known {
            Manifest::decode(&record.manifest).map_err(|e| bad(e.to_string()))?
        } else {
            let (verified, _) = record.verify(trust, created).map_err(|e| bad(e.to_string()))?;
            if let Some(valid) = chain_validity(&record.chain) {
                self.0.lock().expect("not poisoned").insert(key, valid);
            }
            verified.into_inner()
        };
        let files =
            decoded.files.into_iter().map(|f| (f.blake3, FileInfo { size: f.size, chunks: f.chunks })).collect();
        Ok(Checked { files, key, verified: !known })
    }

    /// Forgets every record but `keys` (those of the snapshot just checked).
    pub fn keep(&self, keys: &HashSet<[u8; 32]>) {
        self.0.lock().expect("not poisoned").retain(|k, _| keys.contains(k));
    }
}

/// When every certificate of `chain` is valid (`from..until`): the dates a verification of the
/// chain does not depend on otherwise. `None` when one cannot be read (the record is then
/// verified every time).
fn chain_validity(chain: &[Vec<u8>]) -> Option<(i64, i64)> {
    let mut span = (i64::MIN, i64::MAX);
    for der in chain {
        let info = cert_info(&CertificateDer::from(der.as_slice())).ok()?;
        span = (span.0.max(info.not_before), span.1.min(info.not_after));
    }
    (!chain.is_empty()).then_some(span)
}

#[cfg(test)]
mod tests;
