//! The ring-based sender against RFC 9180 Appendix A.1.1 (DHKEM(X25519, HKDF-SHA256),
//! HKDF-SHA256, AES-128-GCM, base mode). The RFC has no X25519/AES-256-GCM vector, so the
//! AES-128 vector checks the labeled KDF and key schedule, which are the same code for both
//! AES sizes; the AES-256 path is checked by opening with the `hpke` crate (tests/seal_*.rs).

use super::schedule::{self, AES_128_GCM, AES_256_GCM};

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn h32(s: &str) -> [u8; 32] {
    h(s).try_into().unwrap()
}

const INFO: &str = "4f6465206f6e2061204772656369616e2055726e";
const SK_EM: &str = "52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736";
const PK_EM: &str = "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431";
const PK_RM: &str = "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d";
const SHARED_SECRET: &str = "fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc";
const KEY: &str = "4531685d41d65f03dc48f6b8302c05b0";
const BASE_NONCE: &str = "56d890e5accaaf011cff4b7d";
const PT: &str = "4265617574792069732074727574682c20747275746820626561757479";
const AAD0: &str = "436f756e742d30";
const CT0: &str =
    "f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a";

/// The X25519 output of the vector, computed by an independent implementation because ring
/// cannot import a fixed ephemeral secret.
fn vector_dh() -> [u8; 32] {
    let sk = x25519_dalek::StaticSecret::from(h32(SK_EM));
    assert_eq!(x25519_dalek::PublicKey::from(&sk).as_bytes(), &h32(PK_EM));
    *sk.diffie_hellman(&x25519_dalek::PublicKey::from(h32(PK_RM))).as_bytes()
}

#[test]
fn extract_and_expand_matches_rfc9180_a1() {
    let shared = schedule::extract_and_expand(&vector_dh(), &h32(PK_EM), &h32(PK_RM)).unwrap();
    assert_eq!(hex::encode(&shared[..]), SHARED_SECRET);
}

#[test]
fn key_schedule_matches_rfc9180_a1() {
    let (key, nonce) = schedule::key_schedule(&h32(SHARED_SECRET), &h(INFO), AES_128_GCM).unwrap();
    assert_eq!(hex::encode(&key[..]), KEY);
    assert_eq!(hex::encode(nonce), BASE_NONCE);
}

#[test]
fn sender_reproduces_rfc9180_a1_ciphertext() {
    let ctx =
        schedule::setup_base_sender(&vector_dh(), &h32(PK_EM), &h32(PK_RM), &h(INFO), AES_128_GCM)
            .unwrap();
    let mut body = h(PT);
    let tag = ctx.seal_in_place(&h(AAD0), &mut body).unwrap();
    body.extend_from_slice(tag.as_ref());
    assert_eq!(hex::encode(body), CT0);
}

#[test]
fn aes_256_key_differs_from_aes_128_key() {
    // The suite id enters the schedule: same shared secret, different AEAD, unrelated key.
    let (k128, _) = schedule::key_schedule(&h32(SHARED_SECRET), &h(INFO), AES_128_GCM).unwrap();
    let (k256, _) = schedule::key_schedule(&h32(SHARED_SECRET), &h(INFO), AES_256_GCM).unwrap();
    assert_eq!(k256.len(), 32);
    assert_ne!(&k256[..16], &k128[..]);
}

#[test]
fn all_zero_dh_is_refused() {
    assert!(schedule::setup_base_sender(&[0; 32], &[1; 32], &[2; 32], b"", AES_256_GCM).is_none());
}
