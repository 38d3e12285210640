//! The agent config file: any bytes give a config or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rearview_config::AgentConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = AgentConfig::from_toml_str(text);
    }
});
