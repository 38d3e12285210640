//! Any change to a signed envelope makes the agent refuse it: the payload bytes, the signature
//! bytes, the key id, or the envelope's JSON text itself.

use proptest::prelude::*;
use rearview_config::time::macros::datetime;
use rearview_config::*;

const NOW: time::OffsetDateTime = datetime!(2026-11-22 02:30 UTC);

struct Setup {
    key: SigningKey,
    policy_env: SignedEnvelope,
    trigger_env: SignedEnvelope,
    _dir: tempfile::TempDir,
    store: TrustStore,
}

fn setup() -> Setup {
    let key = SigningKey::generate().unwrap();
    let tenant = TenantId::new("contoso").unwrap();
    let mut pol = PolicyPayload::new(
        tenant.clone(),
        7,
        datetime!(2026-11-22 00:00 UTC),
        datetime!(2026-12-22 00:00 UTC),
    );
    pol.capture.enabled = true;
    let alice = Principal::new("alice").unwrap();
    pol.users.push(UserScope {
        principal: alice.clone(),
        mode: CaptureMode::AllActivities,
        approval: Approval {
            requested_by: Principal::new("ivan").unwrap(),
            approved_by: Principal::new("rita").unwrap(),
            justification: "case 1".into(),
            approved_at: datetime!(2026-11-21 00:00 UTC),
            expires_at: datetime!(2026-12-21 00:00 UTC),
            approver_grant: None,
        },
    });
    let trig = TriggerPayload {
        id: TriggerId::new("t-1").unwrap(),
        tenant: tenant.clone(),
        user: alice,
        device: None,
        event_at: datetime!(2026-11-22 02:20 UTC),
        before_secs: 60,
        after_secs: 60,
        reason: TriggerReason { indicator: IndicatorKind::Manual, object: "x".into() },
        alert: AlertId::new("a-1").unwrap(),
        issued_at: datetime!(2026-11-22 02:21 UTC),
        expires_at: datetime!(2026-11-22 03:21 UTC),
    };
    let policy_env = sign_policy(&key, &pol).unwrap();
    let trigger_env = sign_trigger(&key, &trig).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let anchor = TrustAnchor {
        tenant,
        device: DeviceId::new("d-1").unwrap(),
        keys: vec![key.verifying_key().clone()],
    };
    let store = TrustStore::open(anchor, dir.path().join("trust.json")).unwrap();
    Setup { key, policy_env, trigger_env, _dir: dir, store }
}

/// One change to one part of an envelope.
#[derive(Debug, Clone)]
enum Mutation {
    /// XOR a byte of the payload with a non-zero mask.
    FlipPayload(prop::sample::Index, u8),
    /// XOR a byte of the signature with a non-zero mask.
    FlipSignature(prop::sample::Index, u8),
    /// XOR a byte of the key id with a non-zero mask.
    FlipKeyId(prop::sample::Index, u8),
    /// Cut the payload to a shorter prefix.
    TruncatePayload(prop::sample::Index),
    /// Append bytes to the payload.
    ExtendPayload(Vec<u8>),
    /// Replace the signature with arbitrary 64 bytes.
    ReplaceSignature([u8; 32], [u8; 32]),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let mask = 1u8..=255;
    prop_oneof![
        (any::<prop::sample::Index>(), mask.clone()).prop_map(|(i, m)| Mutation::FlipPayload(i, m)),
        (any::<prop::sample::Index>(), mask.clone())
            .prop_map(|(i, m)| Mutation::FlipSignature(i, m)),
        (any::<prop::sample::Index>(), mask).prop_map(|(i, m)| Mutation::FlipKeyId(i, m)),
        any::<prop::sample::Index>().prop_map(Mutation::TruncatePayload),
        prop::collection::vec(any::<u8>(), 1..16).prop_map(Mutation::ExtendPayload),
        any::<([u8; 32], [u8; 32])>().prop_map(|(a, b)| Mutation::ReplaceSignature(a, b)),
    ]
}

fn apply(env: &SignedEnvelope, m: &Mutation) -> SignedEnvelope {
    let mut payload = env.payload().to_vec();
    let mut sig = env.signature().to_vec();
    let mut kid = *env.key_id().as_bytes();
    match m {
        Mutation::FlipPayload(i, mask) => {
            let at = i.index(payload.len());
            payload[at] ^= mask
        }
        Mutation::FlipSignature(i, mask) => {
            let at = i.index(sig.len());
            sig[at] ^= mask
        }
        Mutation::FlipKeyId(i, mask) => kid[i.index(kid.len())] ^= mask,
        Mutation::TruncatePayload(i) => payload.truncate(i.index(payload.len())),
        Mutation::ExtendPayload(extra) => payload.extend_from_slice(extra),
        Mutation::ReplaceSignature(a, b) => sig = [a.as_slice(), b.as_slice()].concat(),
    }
    let kid = KeyId::from_hex(&hex::encode(kid)).unwrap();
    SignedEnvelope::from_parts(kid, payload, sig)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_mutated_policy_envelope_is_refused(m in mutation()) {
        let mut s = setup();
        let bad = apply(&s.policy_env, &m);
        prop_assume!(bad != s.policy_env);
        let err = s.store.accept_policy(&bad, NOW).unwrap_err();
        prop_assert!(
            matches!(err, PolicyRejected::BadSignature { .. } | PolicyRejected::UnknownKey { .. }),
            "{:?} gave {}", m, err
        );
        prop_assert!(s.store.last_policy_version().is_none());
        // The original still passes: the refusal is about the mutation, not the setup.
        prop_assert!(s.store.accept_policy(&s.policy_env, NOW).is_ok());
    }

    #[test]
    fn any_mutated_trigger_envelope_is_refused(m in mutation()) {
        let mut s = setup();
        s.store.accept_policy(&s.policy_env, NOW).unwrap();
        let bad = apply(&s.trigger_env, &m);
        prop_assume!(bad != s.trigger_env);
        let err = s.store.accept_trigger(&bad, NOW).unwrap_err();
        prop_assert!(
            matches!(err, TriggerRejected::BadSignature { .. } | TriggerRejected::UnknownKey { .. }),
            "{:?} gave {}", m, err
        );
        prop_assert!(s.store.accept_trigger(&s.trigger_env, NOW).is_ok());
    }

    /// Byte changes to the JSON text on the wire: either the envelope no longer parses, or it
    /// parses to something the store refuses. Never accepted.
    #[test]
    fn any_mutated_envelope_json_is_refused(at in any::<prop::sample::Index>(), mask in 1u8..=255) {
        let mut s = setup();
        let mut json = s.policy_env.to_json();
        let i = at.index(json.len());
        json[i] ^= mask;
        if let Ok(env) = SignedEnvelope::from_json(&json) {
            let r = s.store.accept_policy(&env, NOW);
            prop_assert!(r.is_err(), "byte {} ^ {:#x} accepted: {}", i, mask, String::from_utf8_lossy(&json));
        }
        let _ = &s.key;
    }
}
