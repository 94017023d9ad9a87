//! Ed25519 signatures with domain separation: every signed message is prefixed with a context
//! naming what it is, so a signature made for one kind of message (a package manifest, a
//! snapshot, an action) can never be passed off as another.

use crate::pki::PrivateKey;

/// What a signature is for. Only ever add variants; contexts never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Domain {
    /// A package manifest.
    PackageManifest,
    /// The BLAKE3 of a package archive's bytes (all but the archive comment).
    PackageArchive,
    /// A repository snapshot.
    Snapshot,
    /// A host's inventory report.
    InventoryReport,
    /// An administrator's action.
    Action,
    /// Agent settings distributed by central.
    AgentSettings,
    /// A snapshot lineage document (signed by the CA itself).
    Lineage,
}

impl Domain {
    fn context(self) -> &'static [u8] {
        match self {
            Self::PackageManifest => b"outpost package manifest v1\0",
            Self::PackageArchive => b"outpost package archive v1\0",
            Self::Snapshot => b"outpost repository snapshot v1\0",
            Self::InventoryReport => b"outpost inventory report v1\0",
            Self::Action => b"outpost admin action v1\0",
            Self::AgentSettings => b"outpost agent settings v1\0",
            Self::Lineage => b"outpost snapshot lineage v1\0",
        }
    }
}

/// A signature that does not verify.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The public key is not an Ed25519 key.
    #[error("the signer's public key is not a valid Ed25519 key")]
    BadKey,
    /// The signature is not 64 bytes.
    #[error("the signature is {0} bytes, not 64")]
    BadLength(usize),
    /// The signature does not match.
    #[error("the signature does not match the signed bytes")]
    Mismatch,
}

/// Signs `message` for `domain`.
pub fn sign(key: &PrivateKey, domain: Domain, message: &[u8]) -> [u8; 64] {
    key.sign(&with_context(domain, message))
}

/// Verifies a signature made by [`sign`] with the key whose 32-byte public key is given.
pub fn verify(public_key: &[u8], domain: Domain, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
    let key: [u8; 32] = public_key.try_into().map_err(|_| SignatureError::BadKey)?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key).map_err(|_| SignatureError::BadKey)?;
    let sig: [u8; 64] = signature.try_into().map_err(|_| SignatureError::BadLength(signature.len()))?;
    key.verify_strict(&with_context(domain, message), &ed25519_dalek::Signature::from_bytes(&sig))
        .map_err(|_| SignatureError::Mismatch)
}

fn with_context(domain: Domain, message: &[u8]) -> Vec<u8> {
    let context = domain.context();
    let mut out = Vec::with_capacity(context.len() + message.len());
    out.extend_from_slice(context);
    out.extend_from_slice(message);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_refuses_changes() {
        let key = PrivateKey::generate().unwrap();
        let sig = sign(&key, Domain::PackageManifest, b"hello");
        assert!(verify(&key.public_key(), Domain::PackageManifest, b"hello", &sig).is_ok());
        assert_eq!(verify(&key.public_key(), Domain::PackageManifest, b"hellp", &sig), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(&key.public_key(), Domain::PackageManifest, b"hello", &sig[..63]),
            Err(SignatureError::BadLength(63))
        );
        // the bare message signature is not accepted: the context is part of what is signed
        let bare = key.sign(b"hello");
        assert_eq!(verify(&key.public_key(), Domain::PackageManifest, b"hello", &bare), Err(SignatureError::Mismatch));
    }
}
