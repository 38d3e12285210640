//! Untrusted envelope bytes from the network: parsing must never panic, a parsed envelope must
//! survive a JSON round trip unchanged, and verifying it under either domain must not panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rearview_config::{
    Domain, PolicyPayload, SignedEnvelope, SigningKey, TriggerPayload, VerifyingKey,
};

fn keys() -> &'static [VerifyingKey] {
    static KEYS: OnceLock<Vec<VerifyingKey>> = OnceLock::new();
    KEYS.get_or_init(|| vec![SigningKey::generate().unwrap().verifying_key().clone()])
}

fuzz_target!(|data: &[u8]| {
    let Ok(env) = SignedEnvelope::from_json(data) else { return };
    let again = SignedEnvelope::from_json(&env.to_json()).expect("re-encoded envelope parses");
    assert_eq!(again, env);
    for domain in [Domain::Policy, Domain::Trigger] {
        if let Ok(payload) = env.verify(domain, keys()) {
            // Unreachable without forging Ed25519, but if it ever happens the parsers still hold.
            let _ = PolicyPayload::from_json(payload);
            let _ = TriggerPayload::from_json(payload);
        }
    }
    // Also with the envelope's own key id trusted under a garbage key: must just fail.
    let bogus = VerifyingKey::from_bytes([0u8; 32]);
    let _ = env.verify(Domain::Policy, &[bogus]);
});
