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
    assert_eq!(c.local_accounts().domain(), None, "no domain unless the operator sets one");
    assert_eq!(c.log_format(), LogFormat::Text);
    assert_eq!(c.log_level(), LogLevel::Info);
}

/// The commented `[identity] domain` example, switched on, parses as the comment says.
#[test]
fn packaging_agent_toml_identity_example_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.contains("# domain = \"corp.example\""), "the example is gone");
    let on = text.replace("# domain = \"corp.example\"", "domain = \"corp.example\"");
    let c = AgentConfig::from_toml_str(&on).unwrap();
    assert_eq!(c.local_accounts().domain(), Some("corp.example"));
}

/// A file over the 1 MiB limit is refused whole, not read up to the limit: cut there, it could
/// parse with its last keys missing.
#[test]
fn an_oversized_config_file_is_refused_not_cut() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/agent.toml");
    let mut text = std::fs::read_to_string(shipped).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    // Exactly at the limit: still a config file.
    let pad = 1024 * 1024 - text.len() - 1;
    text.push_str(&format!("#{}", "x".repeat(pad - 1)));
    text.push('\n');
    assert_eq!(text.len(), 1024 * 1024);
    std::fs::write(&path, &text).unwrap();
    AgentConfig::load(&path).unwrap();
    // One byte more is refused, with the reason.
    text.push('\n');
    std::fs::write(&path, &text).unwrap();
    let err = AgentConfig::load(&path).unwrap_err().to_string();
    assert!(err.contains("larger than 1048576 bytes"), "{err}");
}
