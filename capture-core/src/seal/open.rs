//! The opening side, on the independent `hpke` crate (feature `open`). Never linked into the
//! agent: the device must not be able to read back what it recorded.

use std::fmt;

use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, Serializable};
use zeroize::Zeroizing;

use super::{
    KeyId, SealBinding, SealError, SealedHeader, SealedHeaderError, TenantPublicKey, AAD_LEN,
    HEADER_LEN,
};
use crate::segment::SegmentId;

type Kem = X25519HkdfSha256;

/// Why a sealed segment did not open. None of these is retryable: the bytes, key or binding
/// are wrong and stay wrong.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Header(#[from] SealedHeaderError),
    #[error("sealed segment is {found}, but segment {expected} was asked for")]
    SegmentIdMismatch { expected: SegmentId, found: SegmentId },
    #[error(
        "segment {segment_id} was sealed to tenant key {sealed_to}, not to key {have}; \
         open it with the tenant key generation whose id is {sealed_to}"
    )]
    WrongKey { segment_id: SegmentId, sealed_to: KeyId, have: KeyId },
    #[error(transparent)]
    Binding(#[from] SealError),
    #[error(
        "segment {segment_id} does not authenticate: its bytes were changed, or it was sealed \
         for another tenant, device or segment id than the one given"
    )]
    Authentication { segment_id: SegmentId },
    #[error("the system random generator failed while generating a key")]
    Random,
}

impl OpenError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, OpenError::Random)
    }
}

/// A tenant's X25519 secret key: opens every segment sealed to its public key. Lives only on
/// the console (or a reviewer's machine). Not `Copy`, wiped on drop, never printed.
pub struct TenantSecretKey {
    secret: Zeroizing<[u8; 32]>,
    public: TenantPublicKey,
}

impl TenantSecretKey {
    /// A new key pair from 32 bytes of system randomness (RFC 9180 `DeriveKeyPair`, so the
    /// key is a properly clamped X25519 scalar whatever the randomness looks like).
    pub fn generate() -> Result<Self, OpenError> {
        use ring::rand::SecureRandom;
        let mut ikm = Zeroizing::new([0u8; 32]);
        ring::rand::SystemRandom::new().fill(&mut ikm[..]).map_err(|_| OpenError::Random)?;
        let (sk, _) = Kem::derive_keypair(&ikm[..]);
        let mut secret = Zeroizing::new([0u8; 32]);
        secret.copy_from_slice(&sk.to_bytes());
        Ok(Self::from_bytes(secret))
    }

    /// A key from its 32 stored bytes (the console's key store).
    pub fn from_bytes(secret: Zeroizing<[u8; 32]>) -> Self {
        let public = match <Kem as hpke::Kem>::PrivateKey::from_bytes(&secret[..]) {
            Ok(sk) => {
                let mut pk = [0u8; 32];
                pk.copy_from_slice(&Kem::sk_to_pk(&sk).to_bytes());
                pk
            }
            // X25519 accepts every 32-byte string, so this arm is unreachable in practice; an
            // all-zero public key then makes every open fail cleanly rather than panic.
            Err(_) => [0u8; 32],
        };
        Self { secret, public: TenantPublicKey::from_bytes(public) }
    }

    /// The secret bytes, for the key store only. Never log them.
    pub fn expose_secret_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    pub fn public_key(&self) -> TenantPublicKey {
        self.public
    }
}

impl fmt::Debug for TenantSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantSecretKey")
            .field("public", &self.public)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Opens a sealed segment and returns its plaintext (wiped on drop). `binding` must be what
/// the segment was sealed for; a wrong tenant, device or id fails like tampering does.
pub fn open(
    key: &TenantSecretKey,
    binding: &SealBinding<'_>,
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let header = SealedHeader::parse(sealed)?;
    if header.segment_id != binding.segment_id {
        return Err(OpenError::SegmentIdMismatch {
            expected: binding.segment_id,
            found: header.segment_id,
        });
    }
    let have = key.public.key_id();
    if header.key_id != have {
        return Err(OpenError::WrongKey {
            segment_id: header.segment_id,
            sealed_to: header.key_id,
            have,
        });
    }
    let info = binding.info()?;
    let auth = || OpenError::Authentication { segment_id: header.segment_id };
    let sk = <Kem as hpke::Kem>::PrivateKey::from_bytes(&key.secret[..]).map_err(|_| auth())?;
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&header.enc).map_err(|_| auth())?;
    let plaintext = hpke::single_shot_open::<AesGcm256, HkdfSha256, Kem>(
        &OpModeR::Base,
        &sk,
        &enc,
        &info,
        &sealed[HEADER_LEN..],
        &sealed[..AAD_LEN],
    )
    .map_err(|_| auth())?;
    Ok(Zeroizing::new(plaintext))
}
