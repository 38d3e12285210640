//! Sealing (ring) against opening (the independent `hpke` crate), the RFC 9180 vectors on the
//! open side, and every way opening must fail.

use hpke::aead::{AesGcm128, AesGcm256};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, Serializable};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use rearview_capture::seal::{
    open, seal, OpenError, SealBinding, SealedHeader, SealedHeaderError, TenantPublicKey,
    TenantSecretKey, HEADER_LEN, OVERHEAD,
};
use rearview_capture::segment::SegmentId;
use zeroize::Zeroizing;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn binding(id: SegmentId) -> SealBinding<'static> {
    SealBinding { tenant: "contoso", device: "laptop-17", segment_id: id }
}

fn id(n: u8) -> SegmentId {
    SegmentId::from_bytes([n; 16])
}

#[test]
fn rfc9180_a1_vector_opens_with_hpke() {
    // RFC 9180 A.1.1, sequence number 0: what a single-shot open sees.
    let sk_r = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(&h(
        "4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8",
    ))
    .unwrap();
    assert_eq!(
        hex::encode(X25519HkdfSha256::sk_to_pk(&sk_r).to_bytes()),
        "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d"
    );
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&h(
        "37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431",
    ))
    .unwrap();
    let info = h("4f6465206f6e2061204772656369616e2055726e");
    let ct = h("f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a");
    let pt = hpke::single_shot_open::<AesGcm128, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk_r,
        &enc,
        &info,
        &ct,
        &h("436f756e742d30"),
    )
    .unwrap();
    assert_eq!(pt, b"Beauty is truth, truth beauty");
    // The same ciphertext under the wrong AAD must not open.
    assert!(hpke::single_shot_open::<AesGcm128, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &sk_r,
        &enc,
        &info,
        &ct,
        b"Count-1",
    )
    .is_err());
}

#[test]
fn sealed_segments_open_with_hpke_for_many_sizes() {
    let key = TenantSecretKey::generate().unwrap();
    for (i, len) in [0usize, 1, 15, 16, 17, 1000, 65536, 1 << 20].into_iter().enumerate() {
        let plaintext: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
        let b = binding(id(i as u8));
        let sealed = seal(&key.public_key(), &b, &plaintext).unwrap();
        assert_eq!(sealed.len(), len + OVERHEAD);
        let header = SealedHeader::parse(&sealed).unwrap();
        assert_eq!(header.segment_id, b.segment_id);
        assert_eq!(header.key_id, key.public_key().key_id());
        assert_eq!(&open(&key, &b, &sealed).unwrap()[..], &plaintext[..]);

        // And with nothing of ours on the open path: the hpke crate alone, from the format doc.
        let sk = <X25519HkdfSha256 as hpke::Kem>::PrivateKey::from_bytes(key.expose_secret_bytes())
            .unwrap();
        let enc =
            <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&sealed[35..67]).unwrap();
        let pt = hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &sk,
            &enc,
            &b.info().unwrap(),
            &sealed[HEADER_LEN..],
            &sealed[..35],
        )
        .unwrap();
        assert_eq!(pt, plaintext);
    }
}

#[test]
fn every_seal_uses_a_fresh_ephemeral_key() {
    let key = TenantSecretKey::generate().unwrap();
    let a = seal(&key.public_key(), &binding(id(1)), b"same").unwrap();
    let b = seal(&key.public_key(), &binding(id(1)), b"same").unwrap();
    assert_ne!(a[35..67], b[35..67]);
    assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
}

#[test]
fn info_is_length_prefixed_and_binds_everything() {
    let a = SealBinding { tenant: "ab", device: "c", segment_id: id(1) }.info().unwrap();
    let b = SealBinding { tenant: "a", device: "bc", segment_id: id(1) }.info().unwrap();
    assert_ne!(a, b);
    let mut expected = b"rearview/segment/v1".to_vec();
    expected.extend_from_slice(&[0, 2, b'a', b'b', 0, 1, b'c']);
    expected.extend_from_slice(&[1; 16]);
    assert_eq!(a, expected);
}

#[test]
fn wrong_key_fails_with_a_clear_error() {
    let right = TenantSecretKey::generate().unwrap();
    let wrong = TenantSecretKey::generate().unwrap();
    let b = binding(id(7));
    let sealed = seal(&right.public_key(), &b, b"evidence").unwrap();
    let err = open(&wrong, &b, &sealed).unwrap_err();
    assert!(matches!(err, OpenError::WrongKey { .. }), "{err:?}");
    assert!(err.to_string().contains(&right.public_key().key_id().to_string()), "{err}");

    // Forge the key id so the header check passes: the AEAD must still refuse.
    let mut forged = sealed.clone();
    forged[11..19].copy_from_slice(&wrong.public_key().key_id().0);
    let err = open(&wrong, &b, &forged).unwrap_err();
    assert!(matches!(err, OpenError::Authentication { .. }), "{err:?}");
}

#[test]
fn wrong_binding_fails() {
    let key = TenantSecretKey::generate().unwrap();
    let b = binding(id(3));
    let sealed = seal(&key.public_key(), &b, b"evidence").unwrap();
    for other in [
        SealBinding { tenant: "fabrikam", ..b.clone() },
        SealBinding { device: "laptop-18", ..b.clone() },
    ] {
        let err = open(&key, &other, &sealed).unwrap_err();
        assert!(matches!(err, OpenError::Authentication { .. }), "{err:?}");
        assert!(err.to_string().contains("does not authenticate"), "{err}");
    }
    let err = open(&key, &binding(id(4)), &sealed).unwrap_err();
    assert!(matches!(err, OpenError::SegmentIdMismatch { .. }), "{err:?}");
    // Claiming the other id in the clear header too does not help: info and AAD disagree.
    let mut renamed = sealed.clone();
    renamed[19..35].copy_from_slice(id(4).as_bytes());
    assert!(matches!(
        open(&key, &binding(id(4)), &renamed).unwrap_err(),
        OpenError::Authentication { .. }
    ));
}

#[test]
fn malformed_headers_are_named() {
    let key = TenantSecretKey::generate().unwrap();
    let sealed = seal(&key.public_key(), &binding(id(1)), b"x").unwrap();
    let mut bad = sealed.clone();
    bad[0] = b'X';
    assert!(matches!(SealedHeader::parse(&bad), Err(SealedHeaderError::BadMagic(_))));
    let mut bad = sealed.clone();
    bad[4] = 9;
    assert!(matches!(SealedHeader::parse(&bad), Err(SealedHeaderError::UnsupportedVersion(9))));
    let mut bad = sealed.clone();
    bad[10] = 3; // ChaCha20-Poly1305: valid HPKE, not ours
    assert!(matches!(SealedHeader::parse(&bad), Err(SealedHeaderError::UnsupportedSuite { .. })));
    for cut in 0..OVERHEAD {
        assert!(SealedHeader::parse(&sealed[..cut]).is_err(), "cut at {cut}");
        assert!(open(&key, &binding(id(1)), &sealed[..cut]).is_err());
    }
}

#[test]
fn secret_key_debug_is_redacted_and_public_key_roundtrips() {
    let key = TenantSecretKey::generate().unwrap();
    let debug = format!("{key:?}");
    assert!(debug.contains("redacted"));
    assert!(!debug.contains(&hex::encode(key.expose_secret_bytes())));
    let pk = key.public_key();
    assert_eq!(pk.to_string().parse::<TenantPublicKey>().unwrap(), pk);
    assert!("abc".parse::<TenantPublicKey>().is_err());
    let again = TenantSecretKey::from_bytes(Zeroizing::new(*key.expose_secret_bytes()));
    assert_eq!(again.public_key(), pk);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 256,
        // Integration tests have no lib.rs beside them, so name the committed file directly
        // (cargo runs tests from the package root).
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/seal_open.txt",
        ))),
        ..ProptestConfig::default()
    })]

    /// Any single changed byte, anywhere, makes opening fail.
    #[test]
    fn any_flipped_byte_fails_to_open(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2048),
        at in any::<prop::sample::Index>(),
        mask in 1u8..=255,
    ) {
        let key = TenantSecretKey::generate().unwrap();
        let b = binding(id(9));
        let mut sealed = seal(&key.public_key(), &b, &plaintext).unwrap();
        prop_assert_eq!(&open(&key, &b, &sealed).unwrap()[..], &plaintext[..]);
        let i = at.index(sealed.len());
        sealed[i] ^= mask;
        prop_assert!(open(&key, &b, &sealed).is_err());
    }

    /// Truncating or extending fails too.
    #[test]
    fn changed_length_fails_to_open(cut in 1usize..40, extra in proptest::collection::vec(any::<u8>(), 1..40)) {
        let key = TenantSecretKey::generate().unwrap();
        let b = binding(id(2));
        let sealed = seal(&key.public_key(), &b, b"a segment of evidence").unwrap();
        prop_assert!(open(&key, &b, &sealed[..sealed.len() - cut.min(sealed.len())]).is_err());
        let mut longer = sealed.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(open(&key, &b, &longer).is_err());
    }
}
