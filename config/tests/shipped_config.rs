//! Every config file shipped in `packaging/` parses and validates.

use std::path::Path;

use rearview_config::{AgentConfig, LogFormat, LogLevel};

#[test]
fn packaging_agent_toml_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
    let c = AgentConfig::load(&path).unwrap();
    assert_eq!(c.server_url(), "https://console.example.com");
    assert_eq!(c.data_dir(), Path::new("/var/lib/rearview"));
    assert_eq!(c.ring_max_bytes(), 2_000_000_000);
    assert_eq!(c.spool_max_bytes(), 2_000_000_000);
    assert_eq!(c.admin_group(), Some("rearview-admin"));
    assert!(c.fixed_sessions().is_empty());
    assert_eq!(c.log_format(), LogFormat::Text);
    assert_eq!(c.log_level(), LogLevel::Info);
}
