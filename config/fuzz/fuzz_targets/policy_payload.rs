//! Policy payload bytes (as found inside an envelope): parsing and validation must never panic,
//! and whatever parses must round-trip through JSON unchanged, with the same validation verdict.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rearview_config::time::OffsetDateTime;
use rearview_config::PolicyPayload;

fuzz_target!(|data: &[u8]| {
    let Ok(policy) = PolicyPayload::from_json(data) else { return };
    let verdict = policy.validate();
    let now = OffsetDateTime::from_unix_timestamp(1_795_314_600).unwrap();
    let _ = policy.in_force_at(now);
    let _ = policy.approved_account(&rearview_config::LocalAccounts::bare(), "alice", now);
    if let Ok(corp) = rearview_config::LocalAccounts::with_domain("corp.example") {
        let _ = policy.approved_account(&corp, "alice", now);
    }
    let Ok(json) = policy.to_json() else {
        assert!(verdict.is_err(), "a valid policy must serialise");
        return;
    };
    let again = PolicyPayload::from_json(&json).expect("re-encoded policy parses");
    assert_eq!(again, policy);
    assert_eq!(again.validate(), verdict);
});
