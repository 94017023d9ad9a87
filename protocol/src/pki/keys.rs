//! Private keys: Ed25519 in PKCS#8, written as PEM, encrypted with a password by default
//! (PKCS#8 `ENCRYPTED PRIVATE KEY`, PBES2 with scrypt and AES-256-CBC, which OpenSSL reads).

use crate::hex::hex;
use std::fmt;

use ed25519_dalek::Signer as _;
use pkcs8::pkcs5::pbes2;
use ring::rand::{SecureRandom, SystemRandom};
use zeroize::Zeroizing;

use crate::pem;

const LABEL_PLAIN: &str = "PRIVATE KEY";
const LABEL_ENCRYPTED: &str = "ENCRYPTED PRIVATE KEY";

/// DER of a PKCS#8 v1 Ed25519 key up to its 32-byte seed (RFC 8410, section 7).
const PKCS8_V1_ED25519_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// scrypt cost for new keys: N = 2^14, r = 8, p = 1 (16 MiB): the parameters of
/// `openssl pkcs8 -scrypt`, and within OpenSSL's default memory limit for reading them.
const SCRYPT_LOG_N: u8 = 14;

/// An Ed25519 private key.
pub struct PrivateKey {
    pkcs8: Zeroizing<Vec<u8>>,
    signing: ed25519_dalek::SigningKey,
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrivateKey").field("public", &hex(&self.public_key())).finish_non_exhaustive()
    }
}

/// Why a key could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The key is encrypted and no password was given.
    #[error("the key is encrypted: give its password (--password-file FILE or OUTPOST_KEY_PASSWORD)")]
    NeedPassword,
    /// Decryption failed.
    #[error("wrong password for the key (or the key file is damaged)")]
    WrongPassword,
    /// Not a PEM private key.
    #[error("not a private key: expected a PEM 'PRIVATE KEY' or 'ENCRYPTED PRIVATE KEY' section")]
    NotAKey,
    /// A PKCS#8 key that is not Ed25519.
    #[error("unsupported key: Outpost keys are Ed25519 ({0})")]
    Unsupported(String),
    /// An empty password.
    #[error("the password is empty; use --no-password to write an unencrypted key")]
    EmptyPassword,
    /// Encryption failed.
    #[error("could not encrypt the key: {0}")]
    Encrypt(String),
    /// No randomness.
    #[error("no randomness available")]
    Random,
}

impl PrivateKey {
    /// A new random key.
    pub fn generate() -> Result<Self, rcgen::Error> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
        Self::from_pkcs8_der(&pair.serialize_der()).map_err(|_| rcgen::Error::CouldNotParseKeyPair)
    }

    /// Reads a PKCS#8 DER key (version 1, or version 2 with the public key).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let info = pkcs8::PrivateKeyInfoRef::try_from(der).map_err(|e| KeyError::Unsupported(e.to_string()))?;
        let signing = ed25519_dalek::SigningKey::try_from(info).map_err(|e| KeyError::Unsupported(e.to_string()))?;
        // Kept as version 1 (RFC 8410): OpenSSL 3.0 cannot read version 2 Ed25519 keys.
        let mut v1 = Zeroizing::new(PKCS8_V1_ED25519_PREFIX.to_vec());
        v1.extend_from_slice(signing.as_bytes());
        Ok(Self { pkcs8: v1, signing })
    }

    /// The PKCS#8 DER encoding (version 1).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The 32-byte Ed25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `message` (Ed25519).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The key as rcgen needs it for making certificates.
    pub(crate) fn rcgen(&self) -> Result<rcgen::KeyPair, rcgen::Error> {
        let der = rustls_pki_types::PrivatePkcs8KeyDer::from(self.pkcs8.as_slice());
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ED25519)
    }
}

/// Writes a key as PEM: encrypted with `password`, or in clear when `password` is `None`.
pub fn encode_private_key(key: &PrivateKey, password: Option<&[u8]>) -> Result<Zeroizing<String>, KeyError> {
    let Some(password) = password else {
        return Ok(Zeroizing::new(pem::encode(LABEL_PLAIN, key.pkcs8_der())));
    };
    if password.is_empty() {
        return Err(KeyError::EmptyPassword);
    }
    let rng = SystemRandom::new();
    let mut salt = [0u8; 16];
    let mut iv = [0u8; 16];
    rng.fill(&mut salt).map_err(|_| KeyError::Random)?;
    rng.fill(&mut iv).map_err(|_| KeyError::Random)?;
    let scrypt = pkcs8::pkcs5::scrypt::Params::new(SCRYPT_LOG_N, 8, 1).map_err(|e| KeyError::Encrypt(e.to_string()))?;
    let params = pbes2::Parameters::generate_scrypt_aes256cbc(scrypt, &salt, iv)
        .map_err(|e| KeyError::Encrypt(e.to_string()))?;
    let info = pkcs8::PrivateKeyInfoRef::try_from(key.pkcs8_der()).map_err(|e| KeyError::Encrypt(e.to_string()))?;
    let doc = info.encrypt_with_params(params, password).map_err(|e| KeyError::Encrypt(e.to_string()))?;
    Ok(Zeroizing::new(pem::encode(LABEL_ENCRYPTED, doc.as_bytes())))
}

/// True when a PEM key text is encrypted.
pub fn is_encrypted(text: &str) -> bool {
    text.contains(&format!("-----BEGIN {LABEL_ENCRYPTED}-----"))
}

/// Reads a PEM key, decrypting it with `password` when it is encrypted.
pub fn decode_private_key(text: &str, password: Option<&[u8]>) -> Result<PrivateKey, KeyError> {
    let sections = pem::parse(text).map_err(|_| KeyError::NotAKey)?;
    let section =
        sections.into_iter().find(|s| s.label == LABEL_PLAIN || s.label == LABEL_ENCRYPTED).ok_or(KeyError::NotAKey)?;
    let der = Zeroizing::new(section.der);
    if section.label == LABEL_PLAIN {
        return PrivateKey::from_pkcs8_der(&der);
    }
    let password = password.ok_or(KeyError::NeedPassword)?;
    let encrypted = pkcs8::EncryptedPrivateKeyInfoRef::try_from(der.as_slice()).map_err(|_| KeyError::NotAKey)?;
    let plain = encrypted.decrypt(password).map_err(|_| KeyError::WrongPassword)?;
    PrivateKey::from_pkcs8_der(plain.as_bytes()).map_err(|_| KeyError::WrongPassword)
}

/// SHA-256 of bytes (certificate fingerprints), lower-case hex.
pub fn fingerprint_sha256(der: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref())
}
