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

/// A signer's public key read once (its curve point decompressed) for the many signatures it
/// will make: a host's key for every report on its connection.
#[derive(Clone, Debug)]
pub struct PublicKey {
    key: Result<ed25519_dalek::VerifyingKey, SignatureError>,
    weak: bool,
    bytes: Vec<u8>,
}

impl PublicKey {
    /// Reads a 32-byte Ed25519 public key; one that is not is kept, and refuses every signature
    /// as [`verify`] does.
    pub fn new(public_key: &[u8]) -> Self {
        let key = <[u8; 32]>::try_from(public_key)
            .ok()
            .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
            .ok_or(SignatureError::BadKey);
        let weak = key.as_ref().is_ok_and(ed25519_dalek::VerifyingKey::is_weak);
        Self { key, weak, bytes: public_key.to_vec() }
    }

    /// The key's bytes, as given.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// One signature to check in a batch: the signer's public key, the signed bytes, the
/// signature.
#[derive(Debug)]
pub struct ToVerify<'a> {
    /// The signer's public key.
    pub public_key: &'a PublicKey,
    /// The signed bytes (without the domain's context).
    pub message: &'a [u8],
    /// The signature.
    pub signature: &'a [u8],
}

/// Checks several signatures of one `domain` at once: what [`verify`] answers for each, in
/// about half its time when they are many (one multi-scalar multiplication for the batch, with
/// random weights drawn from the batch itself). When the batch does not verify, each is
/// checked alone to find which failed. A key of small order is checked alone, as [`verify`]
/// does; the batch equation is the same as [`verify`]'s for each signature (without the cofactor),
/// so what it accepts besides is a signature a key's own holder crafted with a neutral nonce
/// point, which proves as much as any other signature by that key.
pub fn verify_batch(domain: Domain, items: &[ToVerify<'_>]) -> Vec<Result<(), SignatureError>> {
    let mut results: Vec<Option<Result<(), SignatureError>>> = vec![None; items.len()];
    let (mut keys, mut sigs, mut messages, mut index) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, item) in items.iter().enumerate() {
        let parsed = item.public_key.key.clone().and_then(|k| {
            let sig =
                <[u8; 64]>::try_from(item.signature).map_err(|_| SignatureError::BadLength(item.signature.len()))?;
            Ok((k, ed25519_dalek::Signature::from_bytes(&sig)))
        });
        match parsed {
            Ok(_) if item.public_key.weak => {
                results[i] = Some(verify(item.public_key.as_bytes(), domain, item.message, item.signature));
            }
            Ok((key, sig)) => {
                keys.push(key);
                sigs.push(sig);
                messages.push(with_context(domain, item.message));
                index.push(i);
            }
            Err(e) => results[i] = Some(Err(e)),
        }
    }
    let batch_ok = match index.len() {
        0 => true,
        1 => false,
        _ => {
            let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            ed25519_dalek::verify_batch(&refs, &sigs, &keys).is_ok()
        }
    };
    for (k, &i) in index.iter().enumerate() {
        results[i] = Some(match batch_ok {
            true => Ok(()),
            false => keys[k].verify_strict(&messages[k], &sigs[k]).map_err(|_| SignatureError::Mismatch),
        });
    }
    results.into_iter().map(|r| r.expect("every item answered")).collect()
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
    fn a_batch_answers_as_each_alone_would() {
        let keys: Vec<PrivateKey> = (0..6).map(|_| PrivateKey::generate().unwrap()).collect();
        let messages: Vec<Vec<u8>> = (0..6).map(|i| format!("report {i}").into_bytes()).collect();
        let mut sigs: Vec<Vec<u8>> =
            keys.iter().zip(&messages).map(|(k, m)| sign(k, Domain::InventoryReport, m).to_vec()).collect();
        let publics: Vec<Vec<u8>> = keys.iter().map(|k| k.public_key().to_vec()).collect();
        let batch = |sigs: &[Vec<u8>], publics: &[Vec<u8>], domain| {
            let keys_read: Vec<PublicKey> = publics.iter().map(|p| PublicKey::new(p)).collect();
            let items: Vec<ToVerify<'_>> = (0..6)
                .map(|i| ToVerify { public_key: &keys_read[i], message: &messages[i], signature: &sigs[i] })
                .collect();
            verify_batch(domain, &items)
        };
        assert!(batch(&sigs, &publics, Domain::InventoryReport).iter().all(Result::is_ok));
        // Another domain: none verifies.
        assert!(batch(&sigs, &publics, Domain::Action).iter().all(|r| r == &Err(SignatureError::Mismatch)));
        // One changed, one cut short, one signed by another key, one key of the wrong size:
        // those fail as alone, the others pass.
        sigs[1][5] ^= 1;
        sigs[2].truncate(63);
        sigs[3] = sign(&keys[0], Domain::InventoryReport, &messages[3]).to_vec();
        let mut publics = publics;
        publics[4] = vec![7; 31];
        let got = batch(&sigs, &publics, Domain::InventoryReport);
        let alone: Vec<_> =
            (0..6).map(|i| verify(&publics[i], Domain::InventoryReport, &messages[i], &sigs[i])).collect();
        assert_eq!(got, alone);
        assert_eq!(
            got,
            vec![
                Ok(()),
                Err(SignatureError::Mismatch),
                Err(SignatureError::BadLength(63)),
                Err(SignatureError::Mismatch),
                Err(SignatureError::BadKey),
                Ok(())
            ]
        );
        // A key of small order (the neutral point) is refused as alone.
        let mut neutral = [0u8; 32];
        neutral[0] = 1;
        let neutral_read = PublicKey::new(&neutral);
        let items = [ToVerify { public_key: &neutral_read, message: b"x", signature: &[0u8; 64] }];
        assert_eq!(
            verify_batch(Domain::InventoryReport, &items),
            vec![verify(&neutral, Domain::InventoryReport, b"x", &[0u8; 64])]
        );
        assert!(verify_batch(Domain::InventoryReport, &items)[0].is_err());
    }

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
