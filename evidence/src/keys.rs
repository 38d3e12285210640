//! Ed25519 keys as this crate's formats carry them (see the crate docs, "Keys").

use std::fmt;

use base64::Engine as _;
use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use zeroize::Zeroizing;

/// An Ed25519 public key (32 bytes; standard base64 in JSON).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey([u8; 32]);

/// First 8 bytes of SHA-256 of a public key, shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint([u8; 8]);

/// Why a key or a signature could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("{0:?} is not the standard base64 of a 32-byte Ed25519 public key")]
    BadPublicKey(String),
    #[error("the device key is not a valid Ed25519 PKCS#8 document")]
    BadPrivateKey,
    #[error("{0:?} is not the standard base64 of a 64-byte Ed25519 signature")]
    BadSignature(String),
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        PublicKey(bytes)
    }

    pub fn from_base64(text: &str) -> Result<PublicKey, SignerError> {
        let bad = || SignerError::BadPublicKey(text.chars().take(64).collect());
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| bad())?;
        Ok(PublicKey(bytes.try_into().map_err(|_| bad())?))
    }

    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn fingerprint(&self) -> Fingerprint {
        let mut f = [0u8; 8];
        f.copy_from_slice(&crate::sha256(&self.0)[..8]);
        Fingerprint(f)
    }

    /// Whether `signature` (64 bytes) signs `domain || message` under this key.
    pub fn verifies(&self, domain: &str, message: &[u8], signature: &[u8]) -> bool {
        let signed = [domain.as_bytes(), message].concat();
        UnparsedPublicKey::new(&ED25519, &self.0).verify(&signed, signature).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// A private Ed25519 key that signs: the device key (chain, absence notes) or the console key
/// (records, custody heads). Its bytes stay in zeroizing memory and never print: `Debug`
/// shows the fingerprint.
pub struct Signer {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl Signer {
    /// From a PKCS#8 v2 document (ring's Ed25519 format, as enrollment stores it).
    pub fn from_pkcs8(der: &[u8]) -> Result<Signer, SignerError> {
        let der = Zeroizing::new(der.to_vec());
        let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|_| SignerError::BadPrivateKey)?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        Ok(Signer { pair, public: PublicKey(public) })
    }

    /// A fresh key (tests, and enrollment).
    pub fn generate() -> Result<(Signer, Zeroizing<Vec<u8>>), SignerError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| SignerError::BadPrivateKey)?;
        let der = Zeroizing::new(doc.as_ref().to_vec());
        Ok((Signer::from_pkcs8(&der)?, der))
    }

    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The 64-byte signature of `domain || message`.
    pub fn sign(&self, domain: &str, message: &[u8]) -> [u8; 64] {
        let signed = Zeroizing::new([domain.as_bytes(), message].concat());
        let mut out = [0u8; 64];
        out.copy_from_slice(self.pair.sign(&signed).as_ref());
        out
    }
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", self.public.fingerprint())
    }
}

/// A signature from JSON (standard base64 of 64 bytes).
pub fn signature_from_base64(text: &str) -> Result<[u8; 64], SignerError> {
    let bad = || SignerError::BadSignature(text.chars().take(100).collect());
    let bytes = base64::engine::general_purpose::STANDARD.decode(text).map_err(|_| bad())?;
    bytes.try_into().map_err(|_| bad())
}

/// A signature for JSON.
pub fn signature_to_base64(signature: &[u8; 64]) -> String {
    base64::engine::general_purpose::STANDARD.encode(signature)
}
