//! Sealing segments to the tenant's public key: HPKE (RFC 9180) base mode with the suite
//! DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM, single-shot.
//!
//! The device holds only the tenant *public* key. A segment is sealed as soon as it closes, so
//! what lies on the device's disk cannot be read back by the device, nor by whoever steals it.
//!
//! Two independent implementations meet in the sealed file format below:
//!
//! * **seal** (always built, used by the agent): written here on top of `ring` — ephemeral
//!   X25519 from `ring::agreement`, the RFC 9180 labeled KDF and key schedule on `ring::hkdf`
//!   (see `seal/schedule.rs`), AES-256-GCM from `ring::aead`.
//! * **open** (cargo feature `open`, off by default; console, reviewers' tools, tests): the
//!   `hpke` crate. The agent never links code that can open a segment.
//!
//! Tests hold the two to each other (everything sealed here opens with `hpke`) and to the RFC
//! 9180 test vectors (our key schedule reproduces A.1's key, nonce and ciphertext; `hpke`
//! opens A.1's ciphertext).
//!
//! # HPKE `info`
//!
//! `info` binds a sealed segment to where it belongs, so a segment cannot be passed off as
//! another device's or tenant's, or under another id, even by someone holding its bytes:
//!
//! ```text
//! info = "rearview/segment/v1"        19 bytes, ASCII, domain separation from any other use
//!        || u16be(len(tenant)) || tenant     UTF-8, at most 256 bytes
//!        || u16be(len(device)) || device     UTF-8, at most 256 bytes
//!        || segment_id                       16 bytes
//! ```
//!
//! The length prefixes keep `("ab", "c")` and `("a", "bc")` apart.
//!
//! The sealed file does not carry `tenant` or `device` (only `segment_id`): an opener takes
//! them from where the file came from, never from the file. On the console they are the
//! tenant and the enrolled device whose token uploaded it; in an evidence package, the clip
//! manifest's `tenant_id` and `device_id` (the ones the device's signature covers). A file
//! passed off under another device or tenant then fails to open (AEAD authentication error),
//! and after opening, the plaintext segment header (see [`crate::segment`]) repeats tenant,
//! device and segment id, which an opener checks against the same values.
//!
//! # Sealed file format, version 1
//!
//! ```text
//! offset size  field        purpose
//! -----------------------------------------------------------------------------------------
//! 0      4     magic        "RVSL": refuses to open something that is not a sealed segment
//! 4      1     version      1; readers refuse versions they do not know
//! 5      2     kem_id       0x0020 DHKEM(X25519, HKDF-SHA256), big-endian as in RFC 9180
//! 7      2     kdf_id       0x0001 HKDF-SHA256
//! 9      2     aead_id      0x0002 AES-256-GCM
//! 11     8     key_id       first 8 bytes of SHA-256 of the tenant public key's raw 32
//!                           bytes (the X25519 key itself, not its hex or base64 text): tells the opener
//!                           which tenant key generation to use, and gives a clear "sealed to
//!                           another key" error instead of a bare authentication failure
//! 19     16    segment_id   in clear so a sealed file names itself; also bound in `info`
//! 35     32    enc          the ephemeral X25519 public key (HPKE encapsulated key)
//! 67     n+16  ciphertext   AES-256-GCM of the plaintext segment, then the 16-byte tag
//! ```
//!
//! The AEAD's associated data is bytes `0..35` (everything before `enc`), so no header byte
//! can change without the open failing; `enc` itself is bound by the KEM. Overhead per
//! segment: [`OVERHEAD`] = 83 bytes. The AEAD is used exactly once per fresh ephemeral key,
//! with sequence number 0 (nonce = base_nonce).

mod schedule;

#[cfg(feature = "open")]
mod open;

use std::fmt;
use std::str::FromStr;

use ring::agreement;
use ring::rand::SystemRandom;

use crate::segment::{Reader, SegmentId, WireError};

#[cfg(feature = "open")]
pub use open::{open, OpenError, TenantSecretKey};

/// First bytes of every sealed segment.
pub const MAGIC: [u8; 4] = *b"RVSL";
/// The sealed format version this build writes and the only one it reads.
pub const VERSION: u8 = 1;
/// RFC 9180 KEM id of DHKEM(X25519, HKDF-SHA256).
pub const KEM_ID: u16 = 0x0020;
/// RFC 9180 KDF id of HKDF-SHA256.
pub const KDF_ID: u16 = 0x0001;
/// RFC 9180 AEAD id of AES-256-GCM.
pub const AEAD_ID: u16 = 0x0002;
/// Length of the sealed header, up to and including `enc`.
pub const HEADER_LEN: usize = 67;
/// Bytes a sealed segment has beyond its plaintext: header plus the AEAD tag.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Longest tenant or device name that can go into `info`.
pub const MAX_BINDING_NAME_LEN: usize = 256;

const TAG_LEN: usize = 16;
const AAD_LEN: usize = 35;
const INFO_LABEL: &[u8] = b"rearview/segment/v1";

/// What went wrong sealing. [`SealError::Crypto`] (the system RNG or ring failed) may succeed
/// on a retry; a bad binding or key never will.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{field} is {len} bytes; at most {MAX_BINDING_NAME_LEN} fit in the HPKE info")]
    BindingTooLong { field: &'static str, len: usize },
    #[error("tenant public key {0} is not a usable X25519 key (all-zero shared secret)")]
    WeakPublicKey(TenantPublicKey),
    #[error("sealing failed in the crypto library (random generator or key agreement); try again")]
    Crypto,
}

impl SealError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, SealError::Crypto)
    }
}

/// The header of a sealed segment is malformed. Never retryable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealedHeaderError {
    #[error("not a sealed segment: magic {0:02x?} is not \"RVSL\"")]
    BadMagic([u8; 4]),
    #[error("sealed segment version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error(
        "sealed segment uses HPKE suite kem {kem:#06x} kdf {kdf:#06x} aead {aead:#06x}; \
         only {KEM_ID:#06x}/{KDF_ID:#06x}/{AEAD_ID:#06x} is supported"
    )]
    UnsupportedSuite { kem: u16, kdf: u16, aead: u16 },
    #[error("sealed segment is truncated: {0}")]
    Truncated(#[from] WireError),
}

/// What a tenant's public key is called in errors and headers: SHA-256 of the key, 8 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

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

/// The tenant's X25519 public key, which every device of the tenant seals to. Not secret.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TenantPublicKey([u8; 32]);

impl TenantPublicKey {
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    /// The short name of this key written into every sealed header.
    pub fn key_id(&self) -> KeyId {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.0);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest.as_ref()[..8]);
        KeyId(id)
    }
}

impl fmt::Display for TenantPublicKey {
    /// 64 lowercase hex digits, the form config files and the console use.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for TenantPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TenantPublicKey({self})")
    }
}

/// The key is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tenant public key must be 64 hex digits (32 bytes), got {len} characters")]
pub struct ParseKeyError {
    len: usize,
}

impl FromStr for TenantPublicKey {
    type Err = ParseKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut bytes).map_err(|_| ParseKeyError { len: s.len() })?;
        Ok(Self(bytes))
    }
}

/// What a sealed segment is bound to through the HPKE `info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealBinding<'a> {
    pub tenant: &'a str,
    pub device: &'a str,
    pub segment_id: SegmentId,
}

impl SealBinding<'_> {
    /// The exact `info` bytes (see the module docs).
    pub fn info(&self) -> Result<Vec<u8>, SealError> {
        let mut info =
            Vec::with_capacity(INFO_LABEL.len() + 4 + self.tenant.len() + self.device.len() + 16);
        info.extend_from_slice(INFO_LABEL);
        for (field, value) in [("tenant", self.tenant), ("device", self.device)] {
            if value.len() > MAX_BINDING_NAME_LEN {
                return Err(SealError::BindingTooLong { field, len: value.len() });
            }
            info.extend_from_slice(&(value.len() as u16).to_be_bytes());
            info.extend_from_slice(value.as_bytes());
        }
        info.extend_from_slice(self.segment_id.as_bytes());
        Ok(info)
    }
}

/// The clear header of a sealed segment, readable without any key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealedHeader {
    pub key_id: KeyId,
    pub segment_id: SegmentId,
    pub enc: [u8; 32],
}

impl SealedHeader {
    /// Parses and checks the header of untrusted sealed bytes.
    pub fn parse(sealed: &[u8]) -> Result<Self, SealedHeaderError> {
        let mut r = Reader::new(sealed);
        let magic = r.array::<4>("magic")?;
        if magic != MAGIC {
            return Err(SealedHeaderError::BadMagic(magic));
        }
        let version = r.u8("version")?;
        if version != VERSION {
            return Err(SealedHeaderError::UnsupportedVersion(version));
        }
        let kem = u16::from_be_bytes(r.array("kem id")?);
        let kdf = u16::from_be_bytes(r.array("kdf id")?);
        let aead = u16::from_be_bytes(r.array("aead id")?);
        if (kem, kdf, aead) != (KEM_ID, KDF_ID, AEAD_ID) {
            return Err(SealedHeaderError::UnsupportedSuite { kem, kdf, aead });
        }
        let key_id = KeyId(r.array("key id")?);
        let segment_id = SegmentId::from_bytes(r.array("segment id")?);
        let enc = r.array("enc")?;
        // The tag must be there too, or this cannot be a complete sealed segment.
        r.bytes("AEAD tag", TAG_LEN)?;
        Ok(Self { key_id, segment_id, enc })
    }
}

fn write_aad(out: &mut Vec<u8>, key_id: KeyId, segment_id: SegmentId) {
    out.extend_from_slice(&MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&KEM_ID.to_be_bytes());
    out.extend_from_slice(&KDF_ID.to_be_bytes());
    out.extend_from_slice(&AEAD_ID.to_be_bytes());
    out.extend_from_slice(&key_id.0);
    out.extend_from_slice(segment_id.as_bytes());
}

/// Seals `plaintext` to the tenant key, bound to `binding`. Returns the sealed file bytes
/// (`plaintext.len() + OVERHEAD` long).
pub fn seal(
    recipient: &TenantPublicKey,
    binding: &SealBinding<'_>,
    plaintext: &[u8],
) -> Result<Vec<u8>, SealError> {
    let info = binding.info()?;
    let rng = SystemRandom::new();
    let ephemeral = agreement::EphemeralPrivateKey::generate(&agreement::X25519, &rng)
        .map_err(|_| SealError::Crypto)?;
    let enc_public = ephemeral.compute_public_key().map_err(|_| SealError::Crypto)?;
    let mut enc = [0u8; 32];
    enc.copy_from_slice(enc_public.as_ref());
    let peer = agreement::UnparsedPublicKey::new(&agreement::X25519, recipient.as_bytes());
    // ring refuses a peer key whose shared secret is all zeros (RFC 9180 §7.1.4 requires the
    // check), so an error here is a weak key, not bad luck.
    let key_material = agreement::agree_ephemeral(ephemeral, &peer, |dh| {
        schedule::setup_base_sender(dh, &enc, recipient.as_bytes(), &info, schedule::AES_256_GCM)
    })
    .map_err(|_| SealError::WeakPublicKey(*recipient))?
    .ok_or(SealError::Crypto)?;

    let mut out = Vec::with_capacity(plaintext.len() + OVERHEAD);
    write_aad(&mut out, recipient.key_id(), binding.segment_id);
    out.extend_from_slice(&enc);
    out.extend_from_slice(plaintext);
    let (head, body) = out.split_at_mut(HEADER_LEN);
    let tag = key_material.seal_in_place(&head[..AAD_LEN], body)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

#[cfg(test)]
mod tests;
