//! Trigger payload bytes (as found inside an envelope): parsing, validation and window
//! arithmetic must never panic, and whatever parses must round-trip through JSON unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rearview_config::TriggerPayload;

fuzz_target!(|data: &[u8]| {
    let Ok(trigger) = TriggerPayload::from_json(data) else { return };
    let verdict = trigger.validate();
    let _ = trigger.window();
    let _ = trigger.reason.to_string();
    let Ok(json) = trigger.to_json() else {
        assert!(verdict.is_err(), "a valid trigger must serialise");
        return;
    };
    let again = TriggerPayload::from_json(&json).expect("re-encoded trigger parses");
    assert_eq!(again, trigger);
    assert_eq!(again.validate(), verdict);
});
