//! Snapshot lineages: the deliberate, signed way to move edges and agents to a new line of
//! snapshots when the old one cannot continue (the main repository restored from an older
//! backup, or replaced by a new one: their sequence numbers start below what every edge holds,
//! which edges and agents refuse as a rollback).
//!
//! A lineage document says "from epoch N on"; it is signed with the organisation CA's own key
//! (kept offline), so neither a compromised mirror nor the main repository's online snapshot
//! key can make one. Every snapshot of epoch N carries it; edges and agents accept a snapshot of
//! a higher epoch whatever its sequence, once its document verifies, and refuse any snapshot of
//! a lower epoch from then on. Within an epoch the usual rules hold (never older, never two
//! different snapshots with one sequence).

use rustls_pki_types::CertificateDer;
use serde::{Deserialize, Serialize};

use crate::pki::{PrivateKey, TrustStore, cert_info};
use crate::signing::{self, Domain};

/// Largest encoded lineage document.
pub const MAX_LINEAGE_BYTES: usize = 16 * 1024;

/// What a lineage document says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineageDoc {
    /// The epoch it opens (greater than any before).
    pub epoch: u64,
    /// When it was signed (Unix seconds).
    pub created: i64,
    /// Why, for the record ("main restored from the backup of 2026-11-20").
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
enum LineageWire {
    V1(LineageDoc),
}

/// A lineage document signed by the organisation CA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedLineage {
    /// The encoded document.
    pub body: Vec<u8>,
    /// Ed25519 signature by the CA key.
    pub signature: Vec<u8>,
    /// SHA-256 fingerprint of the CA certificate whose key signed it.
    pub ca: String,
}

#[derive(Serialize, Deserialize)]
enum SignedLineageWire {
    V1(SignedLineage),
}

/// Why a lineage document is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LineageError {
    /// Not decodable, or too large.
    #[error("the lineage document cannot be read: {0}")]
    Decode(String),
    /// Not signed by a trusted CA's own key.
    #[error(
        "the lineage document is not signed by the organisation CA (only the CA's own key may open a new lineage; it names CA {0})"
    )]
    NotByCa(String),
    /// The CA certificate is not valid now.
    #[error("the CA certificate that signed the lineage document is not valid now")]
    CaNotValid,
}

impl LineageDoc {
    /// Signs the document with the CA's key (the CA certificate is `ca`).
    pub fn sign(&self, ca_key: &PrivateKey, ca: &CertificateDer<'_>) -> Result<SignedLineage, LineageError> {
        let info = cert_info(ca).map_err(|e| LineageError::Decode(e.to_string()))?;
        if !info.is_ca || info.public_key != ca_key.public_key() {
            return Err(LineageError::NotByCa(info.fingerprint));
        }
        let body = postcard::to_stdvec(&LineageWire::V1(self.clone())).expect("encoding to a Vec cannot fail");
        let signature = signing::sign(ca_key, Domain::Lineage, &body).to_vec();
        Ok(SignedLineage { body, signature, ca: info.fingerprint })
    }
}

impl SignedLineage {
    /// Encodes it (the bytes of a lineage file).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(&SignedLineageWire::V1(self.clone())).expect("encoding to a Vec cannot fail")
    }

    /// Decodes the bytes of a lineage file.
    pub fn decode(bytes: &[u8]) -> Result<Self, LineageError> {
        if bytes.len() > MAX_LINEAGE_BYTES {
            return Err(LineageError::Decode(format!("{} bytes is over the limit", bytes.len())));
        }
        let SignedLineageWire::V1(s) = postcard::from_bytes(bytes).map_err(|e| LineageError::Decode(e.to_string()))?;
        Ok(s)
    }

    /// Checks that a trusted CA's own key signed it, and returns what it says.
    pub fn verify(&self, trust: &TrustStore, now: i64) -> Result<LineageDoc, LineageError> {
        let anchor = trust
            .anchors()
            .iter()
            .filter_map(|a| cert_info(a).ok())
            .find(|a| a.fingerprint == self.ca)
            .ok_or_else(|| LineageError::NotByCa(self.ca.clone()))?;
        if !anchor.is_valid_at(now) {
            return Err(LineageError::CaNotValid);
        }
        signing::verify(&anchor.public_key, Domain::Lineage, &self.body, &self.signature)
            .map_err(|_| LineageError::NotByCa(self.ca.clone()))?;
        let LineageWire::V1(doc) = postcard::from_bytes(&self.body).map_err(|e| LineageError::Decode(e.to_string()))?;
        Ok(doc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{self, IssueRequest, Right, Role};

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn only_the_ca_key_signs_a_lineage() {
        let ca = pki::create_ca("Org", NOW, 100).unwrap();
        let trust = TrustStore::new(vec![ca.cert.clone()]).unwrap();
        let doc = LineageDoc { epoch: 2, created: NOW, reason: "restored".into() };
        let signed = doc.sign(&ca.key, &ca.cert).unwrap();
        let back = SignedLineage::decode(&signed.encode()).unwrap();
        assert_eq!(back.verify(&trust, NOW).unwrap(), doc);
        // An admin's key (or any other) cannot, even claiming the CA.
        let req = IssueRequest {
            role: Role::Admin,
            name: "a".into(),
            rights: vec![Right::Modify],
            alt_names: vec![],
            days: 30,
        };
        let admin = pki::issue(&ca.cert, &ca.key, &req, NOW).unwrap();
        assert!(doc.sign(&admin.key, &ca.cert).is_err());
        let mut forged = signed.clone();
        forged.signature = signing::sign(&admin.key, Domain::Lineage, &forged.body).to_vec();
        assert!(matches!(forged.verify(&trust, NOW), Err(LineageError::NotByCa(_))));
        // Another organisation's CA is not trusted.
        let other = pki::create_ca("Evil", NOW, 100).unwrap();
        let evil = doc.sign(&other.key, &other.cert).unwrap();
        assert!(matches!(evil.verify(&trust, NOW), Err(LineageError::NotByCa(_))));
        // A changed byte breaks it.
        let mut changed = signed;
        let n = changed.body.len() - 1;
        changed.body[n] ^= 1;
        assert!(changed.verify(&trust, NOW).is_err());
    }
}

/// The encodings written by earlier versions, frozen: each must still decode to what it said.
#[cfg(test)]
mod golden {
    use super::*;
    use crate::hex::{assert_golden, decode};

    #[test]
    fn lineage_documents_still_decode() {
        let doc = LineageDoc { epoch: 3, created: 1_700_000_000, reason: "restored".into() };
        let body = postcard::to_stdvec(&LineageWire::V1(doc.clone())).unwrap();
        let golden = "000380c49fd50c08726573746f726564";
        assert_golden("a lineage document", &body, golden);
        let LineageWire::V1(back) = postcard::from_bytes(&decode(golden).unwrap()).unwrap();
        assert_eq!(back, doc);
        let signed = SignedLineage { body, signature: vec![5; 4], ca: "cafe".into() };
        let golden = "0010000380c49fd50c08726573746f72656404050505050463616665";
        assert_golden("a signed lineage document", &signed.encode(), golden);
        assert_eq!(SignedLineage::decode(&decode(golden).unwrap()).unwrap(), signed);
    }
}
