//! Ed25519 keys that sign policies and triggers (console side) and verify them (agent side).
//!
//! ```text
//! SigningKey    PKCS#8 v2 DER document (ring's Ed25519 format), held in zeroizing memory.
//!               Lives only on the console. Never printed: Debug shows its key id.
//! VerifyingKey  the 32-byte Ed25519 public key; in JSON/TOML as standard base64 (44 chars).
//! KeyId         first 8 bytes of SHA-256(public key), shown as 16 lowercase hex digits,
//!               e.g. "3f9a0c1d22e4b5a6". Names the key in envelopes and error messages.
//! ```

use std::fmt;

use base64::Engine as _;
use ring::signature::{self, Ed25519KeyPair, KeyPair as _};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Length of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;

/// Length of a [`KeyId`] in bytes.
pub const KEY_ID_LEN: usize = 8;

/// Why a key could not be made or loaded. Never retryable: the key material itself is wrong.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The PKCS#8 document is not an Ed25519 private key ring accepts.
    #[error("signing key is not a valid Ed25519 PKCS#8 v2 document: {0}; generate a new one with SigningKey::generate")]
    BadPkcs8(String),
    /// The public key is not 32 bytes of base64.
    #[error("verifying key {0:?} is not a base64-encoded 32-byte Ed25519 public key")]
    BadPublicKey(String),
    /// A key id is not 16 lowercase hex digits.
    #[error("key id {0:?} is not 16 lowercase hex digits")]
    BadKeyId(String),
    /// The system random number generator failed.
    #[error("system random number generator failed while generating a key")]
    Rng,
}

/// Short name of a verifying key: the first 8 bytes of SHA-256 of the public key.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyId([u8; KEY_ID_LEN]);

impl KeyId {
    /// The id of `public_key`.
    pub fn of(public_key: &[u8; PUBLIC_KEY_LEN]) -> KeyId {
        let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest.as_ref()[..KEY_ID_LEN]);
        KeyId(id)
    }

    /// Parses 16 lowercase hex digits. Only the canonical spelling is accepted, so one key id has
    /// exactly one textual form in an envelope.
    pub fn from_hex(s: &str) -> Result<KeyId, KeyError> {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(KeyError::BadKeyId(s.chars().take(40).collect()));
        }
        let mut id = [0u8; KEY_ID_LEN];
        hex::decode_to_slice(s, &mut id)
            .map_err(|_| KeyError::BadKeyId(s.chars().take(40).collect()))?;
        Ok(KeyId(id))
    }

    /// The raw 8 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_ID_LEN] {
        &self.0
    }
}

impl TryFrom<String> for KeyId {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        KeyId::from_hex(&s)
    }
}

impl From<KeyId> for String {
    fn from(id: KeyId) -> String {
        hex::encode(id.0)
    }
}

impl std::str::FromStr for KeyId {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        KeyId::from_hex(s)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// An Ed25519 public key that verifies policies and triggers. Public, so freely printable.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VerifyingKey {
    bytes: [u8; PUBLIC_KEY_LEN],
    id: KeyId,
}

impl VerifyingKey {
    /// Wraps raw public key bytes.
    ///
    /// Ed25519 public keys are not checked for being on the curve here; a malformed key simply
    /// never verifies anything.
    pub fn from_bytes(bytes: [u8; PUBLIC_KEY_LEN]) -> VerifyingKey {
        VerifyingKey { bytes, id: KeyId::of(&bytes) }
    }

    /// Parses standard base64 of the 32 raw bytes (the form the console hands out at enrollment).
    pub fn from_base64(s: &str) -> Result<VerifyingKey, KeyError> {
        let bad = || KeyError::BadPublicKey(s.chars().take(64).collect());
        let raw = base64::engine::general_purpose::STANDARD.decode(s.trim()).map_err(|_| bad())?;
        let bytes: [u8; PUBLIC_KEY_LEN] = raw.try_into().map_err(|_| bad())?;
        Ok(VerifyingKey::from_bytes(bytes))
    }

    /// Standard base64 of the 32 raw bytes.
    pub fn to_base64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.bytes)
    }

    /// The raw public key.
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.bytes
    }

    /// This key's short id.
    pub fn key_id(&self) -> KeyId {
        self.id
    }

    /// Whether `signature` is this key's Ed25519 signature of `message`.
    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ED25519, &self.bytes)
            .verify(message, signature)
            .is_ok()
    }
}

impl TryFrom<String> for VerifyingKey {
    type Error = KeyError;
    fn try_from(s: String) -> Result<Self, KeyError> {
        VerifyingKey::from_base64(&s)
    }
}

impl From<VerifyingKey> for String {
    fn from(k: VerifyingKey) -> String {
        k.to_base64()
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({} {})", self.id, self.to_base64())
    }
}

/// An Ed25519 private key (console side).
///
/// Holds the PKCS#8 document in memory that is zeroed on drop; `Debug` prints only the key id.
/// ring's `Ed25519KeyPair` (which does not zeroize) is rebuilt for each signature and dropped at
/// once, so the expanded secret lives no longer than one `sign` call.
pub struct SigningKey {
    pkcs8: Zeroizing<Vec<u8>>,
    public: VerifyingKey,
}

impl SigningKey {
    /// Generates a fresh key from the system RNG.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let rng = ring::rand::SystemRandom::new();
        let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| KeyError::Rng)?;
        SigningKey::from_pkcs8(doc.as_ref())
    }

    /// Loads a PKCS#8 v2 document as produced by [`SigningKey::pkcs8_der`] (or ring).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, KeyError> {
        let pair =
            Ed25519KeyPair::from_pkcs8(der).map_err(|e| KeyError::BadPkcs8(e.to_string()))?;
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        bytes.copy_from_slice(pair.public_key().as_ref());
        Ok(SigningKey {
            pkcs8: Zeroizing::new(der.to_vec()),
            public: VerifyingKey::from_bytes(bytes),
        })
    }

    /// The PKCS#8 document, for the console to store (with file mode 0600, never in logs).
    pub fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The matching public key, to hand to agents at enrollment.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// The key id of the matching public key.
    pub fn key_id(&self) -> KeyId {
        self.public.key_id()
    }

    /// Ed25519 signature of `message`.
    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        // The document was validated in `from_pkcs8` and is immutable since, so this only fails
        // if ring changed its mind about the same bytes; treat that as an empty (never-verifying)
        // signature rather than panicking.
        match Ed25519KeyPair::from_pkcs8(&self.pkcs8) {
            Ok(pair) => pair.sign(message).as_ref().to_vec(),
            Err(_) => Vec::new(),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({} <redacted>)", self.public.key_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_round_trips_through_pkcs8() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pkcs8(key.pkcs8_der()).unwrap();
        assert_eq!(key.verifying_key(), again.verifying_key());
        let sig = again.sign(b"hello");
        assert!(key.verifying_key().verify(b"hello", &sig));
        assert!(!key.verifying_key().verify(b"hellO", &sig));
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = SigningKey::generate().unwrap();
        let shown = format!("{key:?}");
        assert!(shown.contains("redacted"));
        assert!(shown.contains(&key.key_id().to_string()));
        let b64 = base64::engine::general_purpose::STANDARD.encode(key.pkcs8_der());
        assert!(!shown.contains(&b64[..16]));
        assert!(!shown.contains(&hex::encode(&key.pkcs8_der()[16..32])));
    }

    #[test]
    fn key_id_is_sha256_prefix_in_hex() {
        let vk = VerifyingKey::from_bytes([7u8; 32]);
        let digest = ring::digest::digest(&ring::digest::SHA256, &[7u8; 32]);
        assert_eq!(vk.key_id().to_string(), hex::encode(&digest.as_ref()[..8]));
        assert_eq!(KeyId::from_hex(&vk.key_id().to_string()).unwrap(), vk.key_id());
        assert!(KeyId::from_hex("xyz").is_err());
        assert!(KeyId::from_hex("00112233445566").is_err());
        assert!(KeyId::from_hex("00112233445566AA").is_err(), "uppercase is not canonical");
    }

    #[test]
    fn verifying_key_base64_round_trip_and_rejects_wrong_length() {
        let key = SigningKey::generate().unwrap();
        let vk = key.verifying_key();
        assert_eq!(&VerifyingKey::from_base64(&vk.to_base64()).unwrap(), vk);
        let json = serde_json::to_string(vk).unwrap();
        assert_eq!(&serde_json::from_str::<VerifyingKey>(&json).unwrap(), vk);
        assert!(VerifyingKey::from_base64("AAAA").is_err());
        assert!(VerifyingKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn garbage_pkcs8_is_refused() {
        assert!(matches!(SigningKey::from_pkcs8(b"nope"), Err(KeyError::BadPkcs8(_))));
    }
}
