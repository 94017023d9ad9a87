//! What a repository keeps of a package besides its files: the exact manifest bytes, their
//! signature and the signer's certificates. Agents and edges verify a record exactly as they
//! would the archive's manifest; the files are then checked against the manifest's hashes.

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use super::archive::{PackageArchive, PackageError, check_manifest_signature};
use super::manifest::Manifest;
use crate::pki::{CertInfo, TrustStore};
use crate::verified::Verified;

/// Largest encoded record accepted.
pub const MAX_RECORD_BYTES: usize = super::manifest::MAX_MANIFEST_BYTES + 128 * 1024;

/// A package's signed manifest, as a repository stores and serves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PackageRecord {
    /// The manifest bytes that are signed.
    pub manifest: Vec<u8>,
    /// Ed25519 signature over them.
    pub signature: Vec<u8>,
    /// The signer's certificate first, then intermediates (DER).
    pub chain: Vec<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
enum RecordWire {
    V1 {
        #[serde(with = "crate::raw")]
        manifest: Vec<u8>,
        #[serde(with = "crate::raw")]
        signature: Vec<u8>,
        #[serde(with = "crate::raw::list")]
        chain: Vec<Vec<u8>>,
    },
}

impl PackageRecord {
    /// Encodes the record.
    pub fn encode(&self) -> Vec<u8> {
        let wire = RecordWire::V1 {
            manifest: self.manifest.clone(),
            signature: self.signature.clone(),
            chain: self.chain.clone(),
        };
        postcard::to_stdvec(&wire).expect("encoding to a Vec cannot fail")
    }

    /// Decodes a record (not verified).
    pub fn decode(bytes: &[u8]) -> Result<Self, PackageError> {
        if bytes.len() > MAX_RECORD_BYTES {
            return Err(PackageError::Archive(format!("package record of {} bytes is over the limit", bytes.len())));
        }
        let wire: RecordWire =
            postcard::from_bytes(bytes).map_err(|e| PackageError::Archive(format!("package record: {e}")))?;
        let RecordWire::V1 { manifest, signature, chain } = wire;
        Ok(Self { manifest, signature, chain })
    }

    /// BLAKE3 of the manifest bytes: the package's identity.
    pub fn hash(&self) -> [u8; 32] {
        Manifest::hash(&self.manifest)
    }

    /// Decodes the manifest and checks the signature, chain and usages.
    pub fn verify(&self, trust: &TrustStore, now: i64) -> Result<(Verified<Manifest>, CertInfo), PackageError> {
        let manifest = Manifest::decode(&self.manifest)?;
        let chain: Vec<CertificateDer<'_>> = self.chain.iter().map(|c| CertificateDer::from(c.as_slice())).collect();
        let info = check_manifest_signature(&manifest, &self.manifest, &self.signature, &chain, trust, now)?;
        Ok((Verified::new(manifest), info))
    }
}

impl<R> PackageArchive<R> {
    /// The parts a repository keeps of this package: manifest bytes, signature, certificates.
    pub fn record(&self) -> PackageRecord {
        PackageRecord {
            manifest: self.manifest_bytes.clone(),
            signature: self.signature.clone(),
            chain: self.chain.iter().map(|c| c.as_ref().to_vec()).collect(),
        }
    }
}

/// The encodings written by earlier versions, frozen: each must still decode to what it said.
#[cfg(test)]
mod golden {
    use super::*;
    use crate::hex::{assert_golden, decode};

    #[test]
    fn package_records_still_decode() {
        let record = PackageRecord { manifest: vec![1, 2], signature: vec![3; 4], chain: vec![vec![5; 2], vec![6]] };
        let golden = "000201020403030303020205050106";
        assert_golden("a package record", &record.encode(), golden);
        assert_eq!(PackageRecord::decode(&decode(golden).unwrap()).unwrap(), record);
    }
}
