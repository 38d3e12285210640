//! The sender half of RFC 9180 base mode on `ring`: the labeled KDF (§4), DHKEM's
//! ExtractAndExpand (§4.1) and the key schedule (§5.1), for DHKEM(X25519, HKDF-SHA256) and
//! HKDF-SHA256 with either AES-GCM size (AES-128-GCM only so the RFC's A.1 vectors can be
//! checked against this very code).
//!
//! HKDF-Extract is HMAC(salt, ikm) (RFC 5869 §2.2); it is computed with `ring::hmac` because
//! the key schedule needs extracted values as bytes (`psk_id_hash`, `info_hash` go into the
//! context), which `ring::hkdf::Prk` does not expose. Expand is `ring::hkdf`.

use ring::{aead, hkdf, hmac};
use zeroize::Zeroizing;

use super::{SealError, AEAD_ID, KDF_ID, KEM_ID};

const HPKE_V1: &[u8] = b"HPKE-v1";
/// Length of an X25519 public key, a DH output and an HKDF-SHA256 PRK.
const N: usize = 32;
const NONCE_LEN: usize = 12;
const MODE_BASE: u8 = 0x00;

/// An AEAD of the suite: its RFC 9180 id and ring's implementation.
#[derive(Clone, Copy)]
pub(crate) struct AeadSuite {
    pub(crate) id: u16,
    pub(crate) alg: &'static aead::Algorithm,
}

pub(crate) const AES_256_GCM: AeadSuite = AeadSuite { id: AEAD_ID, alg: &aead::AES_256_GCM };
#[cfg(test)]
pub(crate) const AES_128_GCM: AeadSuite = AeadSuite { id: 0x0001, alg: &aead::AES_128_GCM };

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// `LabeledExtract(salt, label, ikm) = Extract(salt, "HPKE-v1" || suite_id || label || ikm)`.
pub(crate) fn labeled_extract(
    suite_id: &[u8],
    salt: &[u8],
    label: &[u8],
    ikm: &[u8],
) -> Zeroizing<[u8; N]> {
    let key = hmac::Key::new(hmac::HMAC_SHA256, salt);
    let mut ctx = hmac::Context::with_key(&key);
    for part in [HPKE_V1, suite_id, label, ikm] {
        ctx.update(part);
    }
    let mut out = Zeroizing::new([0u8; N]);
    out.copy_from_slice(ctx.sign().as_ref());
    out
}

/// `LabeledExpand(prk, label, info, L) = Expand(prk, I2OSP(L, 2) || "HPKE-v1" || suite_id ||
/// label || info, L)`, writing `L = out.len()` bytes.
pub(crate) fn labeled_expand(
    suite_id: &[u8],
    prk: &[u8; N],
    label: &[u8],
    info: &[u8],
    out: &mut [u8],
) -> Option<()> {
    let length = u16::try_from(out.len()).ok()?.to_be_bytes();
    let prk = hkdf::Prk::new_less_safe(hkdf::HKDF_SHA256, prk);
    let info_parts: [&[u8]; 5] = [&length, HPKE_V1, suite_id, label, info];
    prk.expand(&info_parts, Len(out.len())).ok()?.fill(out).ok()
}

fn kem_suite_id() -> [u8; 5] {
    let id = KEM_ID.to_be_bytes();
    [b'K', b'E', b'M', id[0], id[1]]
}

fn hpke_suite_id(aead_id: u16) -> [u8; 10] {
    let mut s = [0u8; 10];
    s[..4].copy_from_slice(b"HPKE");
    s[4..6].copy_from_slice(&KEM_ID.to_be_bytes());
    s[6..8].copy_from_slice(&KDF_ID.to_be_bytes());
    s[8..].copy_from_slice(&aead_id.to_be_bytes());
    s
}

/// DHKEM ExtractAndExpand: the KEM shared secret from the X25519 output and
/// `kem_context = enc || pkRm`.
pub(crate) fn extract_and_expand(
    dh: &[u8],
    enc: &[u8; N],
    pk_r: &[u8; N],
) -> Option<Zeroizing<[u8; N]>> {
    let suite = kem_suite_id();
    let eae_prk = labeled_extract(&suite, b"", b"eae_prk", dh);
    let mut kem_context = [0u8; 2 * N];
    kem_context[..N].copy_from_slice(enc);
    kem_context[N..].copy_from_slice(pk_r);
    let mut shared = Zeroizing::new([0u8; N]);
    labeled_expand(&suite, &eae_prk, b"shared_secret", &kem_context, &mut shared[..])?;
    Some(shared)
}

/// The base-mode key schedule: `(key, base_nonce)` for the AEAD of `suite`.
pub(crate) fn key_schedule(
    shared_secret: &[u8; N],
    info: &[u8],
    suite: AeadSuite,
) -> Option<(Zeroizing<Vec<u8>>, [u8; NONCE_LEN])> {
    let suite_id = hpke_suite_id(suite.id);
    let psk_id_hash = labeled_extract(&suite_id, b"", b"psk_id_hash", b"");
    let info_hash = labeled_extract(&suite_id, b"", b"info_hash", info);
    let mut context = [0u8; 1 + 2 * N];
    context[0] = MODE_BASE;
    context[1..1 + N].copy_from_slice(&psk_id_hash[..]);
    context[1 + N..].copy_from_slice(&info_hash[..]);
    // Base mode: psk = "" is the IKM of `secret`, and the shared secret its salt.
    let secret = labeled_extract(&suite_id, &shared_secret[..], b"secret", b"");
    let mut key = Zeroizing::new(vec![0u8; suite.alg.key_len()]);
    labeled_expand(&suite_id, &secret, b"key", &context, &mut key)?;
    let mut base_nonce = [0u8; NONCE_LEN];
    labeled_expand(&suite_id, &secret, b"base_nonce", &context, &mut base_nonce)?;
    Some((key, base_nonce))
}

/// A sender context good for exactly one message (sequence number 0).
pub(crate) struct SingleShot {
    key: aead::LessSafeKey,
    base_nonce: [u8; NONCE_LEN],
}

impl SingleShot {
    /// Encrypts `body` in place and returns the tag. Consumes the context: its nonce must
    /// never be used twice.
    pub(crate) fn seal_in_place(self, aad: &[u8], body: &mut [u8]) -> Result<aead::Tag, SealError> {
        let nonce = aead::Nonce::assume_unique_for_key(self.base_nonce);
        self.key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(aad), body)
            .map_err(|_| SealError::Crypto)
    }
}

/// `SetupBaseS` after the DH: from the X25519 output, `enc` and the recipient key to a
/// ready AEAD context.
pub(crate) fn setup_base_sender(
    dh: &[u8],
    enc: &[u8; N],
    pk_r: &[u8; N],
    info: &[u8],
    suite: AeadSuite,
) -> Option<SingleShot> {
    if dh.iter().all(|&b| b == 0) {
        return None;
    }
    let shared = extract_and_expand(dh, enc, pk_r)?;
    let (key, base_nonce) = key_schedule(&shared, info, suite)?;
    let key = aead::LessSafeKey::new(aead::UnboundKey::new(suite.alg, &key).ok()?);
    Some(SingleShot { key, base_nonce })
}
