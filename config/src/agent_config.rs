//! The agent's local configuration file (TOML, default `/etc/rearview/agent.toml`).
//!
//! Only what a device needs before it can talk to its console lives here; everything about *what*
//! to capture comes from the signed policy. Unknown keys are refused (a typo must not silently
//! fall back to a default). Sizes are an integer of bytes or a string such as `"500 MB"` /
//! `"2 GiB"` (MB = 10^6, MiB = 2^20 bytes).
//!
//! ```text
//! server_url = "https://console.example.com"   console base URL; http only to loopback
//! data_dir   = "/var/lib/rearview"             ring, spool, trust state (absolute)
//!
//! [ring]                                       on-device recording buffer, hard ceilings
//! max_bytes          = "2 GB"                  default 2 GB, at least 16 MB
//! max_retention_secs = 3600                    default 3600; policy retention is capped to it
//!
//! [spool]                                      offline cache of clips awaiting upload
//! max_bytes = "2 GB"                           default 2 GB, at least 1 MB; policy size capped to it
//!
//! [cli]                                        local diagnostic socket
//! socket      = "/run/rearview/rearview.sock"  default shown (absolute)
//! admin_group = "rearview-admin"               optional: this group may use the socket besides root
//!
//! [capture]                                    absent: sessions are discovered through logind
//! display = ":99"                              optional fixed X display, recorded as the session
//!                                              of the user the daemon runs as (demo, tests)
//! sessions = [{ display = ":5", user = "alice" }]
//!                                              or: fixed displays, each the session of a named
//!                                              login (kiosks, labs, tests); the daemon must run
//!                                              as root to record another user's display
//!
//! [identity]                                   how local logins map to policy principals
//! domain = "corp.example"                      optional: login alice is also alice@corp.example;
//!                                              unset, only a principal spelled like the login
//!                                              names it (see rearview_config::LocalAccounts)
//!
//! [indicators]
//! watched_folders = ["/srv/projects"]          files copied into these raise watched_folder_copy
//! removable_roots = ["/media", "/run/media", "/mnt"]
//!                                              default shown: mounts under these are removable
//!                                              media; copies onto them raise removable_media_copy
//!
//! [log]
//! format = "text"                              "text" or "json"
//! level  = "info"                              "error", "warn", "info", "debug", "trace"
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ids::LocalAccounts;

/// Where the agent looks for its config when not told otherwise.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/rearview/agent.toml";

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Why the config could not be loaded. Never retryable: fix the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read agent config {}: {source}; create it (see packaging/agent.toml) or pass another path", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("agent config {origin} is not valid: {message}")]
    Parse {
        /// The file, or "(string)".
        origin: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A value is out of range.
    #[error("agent config {origin}: {field} {why}")]
    Invalid {
        /// The file, or "(string)".
        origin: String,
        /// Dotted key, e.g. `ring.max_bytes`.
        field: &'static str,
        /// What is wrong and what is allowed.
        why: String,
    },
}

/// A byte count: an integer, or a string like `"500 MB"`, `"2GiB"`, `"1024"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "ByteSizeRepr", into = "u64")]
pub struct ByteSize(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum ByteSizeRepr {
    Int(u64),
    Text(String),
}

impl TryFrom<ByteSizeRepr> for ByteSize {
    type Error = String;
    fn try_from(r: ByteSizeRepr) -> Result<Self, String> {
        match r {
            ByteSizeRepr::Int(n) => Ok(ByteSize(n)),
            ByteSizeRepr::Text(s) => s.parse(),
        }
    }
}

impl From<ByteSize> for u64 {
    fn from(b: ByteSize) -> u64 {
        b.0
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let bad = || format!("{s:?} is not a size like \"500 MB\", \"2 GiB\" or 1048576");
        let n: u64 = num.parse().map_err(|_| bad())?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1_000,
            "mb" | "m" => 1_000_000,
            "gb" | "g" => 1_000_000_000,
            "kib" => 1 << 10,
            "mib" => 1 << 20,
            "gib" => 1 << 30,
            _ => return Err(bad()),
        };
        n.checked_mul(mult).map(ByteSize).ok_or_else(|| format!("{s:?} is too large"))
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (default).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Least severe log level written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// Normal operation (default).
    #[default]
    Info,
    /// Diagnostic detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The level's name as `tracing`/`EnvFilter` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// The file as written (see the module docs). Parse into [`AgentConfig`] with `TryFrom`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfigFile {
    /// Console base URL.
    pub server_url: String,
    /// Directory for ring, spool and trust state.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Ring ceilings.
    #[serde(default)]
    pub ring: RingSection,
    /// Offline cache ceiling.
    #[serde(default)]
    pub spool: SpoolSection,
    /// Local CLI socket.
    #[serde(default)]
    pub cli: CliSection,
    /// Capture overrides.
    #[serde(default)]
    pub capture: CaptureSection,
    /// How local accounts are named in policies.
    #[serde(default)]
    pub identity: IdentitySection,
    /// Local indicator sources.
    #[serde(default)]
    pub indicators: IndicatorsSection,
    /// Logging.
    #[serde(default)]
    pub log: LogSection,
}

/// `[ring]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingSection {
    /// Most bytes of sealed segments kept on disk.
    #[serde(default = "default_ring_max_bytes")]
    pub max_bytes: ByteSize,
    /// Longest retention honoured whatever the policy asks.
    #[serde(default = "default_ring_max_retention_secs")]
    pub max_retention_secs: u32,
}

/// `[spool]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    /// Most bytes of clips waiting for upload, whatever the policy asks.
    #[serde(default = "default_spool_max_bytes")]
    pub max_bytes: ByteSize,
}

/// `[cli]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CliSection {
    /// Unix socket path.
    #[serde(default = "default_socket")]
    pub socket: PathBuf,
    /// Group allowed besides root.
    #[serde(default)]
    pub admin_group: Option<String>,
}

/// `[capture]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureSection {
    /// Fixed X display of the daemon's own user, instead of logind discovery.
    #[serde(default)]
    pub display: Option<String>,
    /// Fixed displays of named users, instead of logind discovery.
    #[serde(default)]
    pub sessions: Vec<FixedSession>,
}

/// One fixed display and whose session it is (`None`: the user the daemon runs as).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedSession {
    /// X display, e.g. `":5"`.
    pub display: String,
    /// Login name whose session this display is.
    #[serde(default)]
    pub user: Option<String>,
}

/// `[identity]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySection {
    /// DNS domain whose UPNs (`<login>@<domain>`) are this device's accounts.
    #[serde(default)]
    pub domain: Option<String>,
}

/// `[indicators]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndicatorsSection {
    /// Folders whose files, copied into them, raise `watched_folder_copy`.
    #[serde(default)]
    pub watched_folders: Vec<PathBuf>,
    /// Where removable media get mounted.
    #[serde(default = "default_removable_roots")]
    pub removable_roots: Vec<PathBuf>,
}

impl Default for IndicatorsSection {
    fn default() -> Self {
        Self { watched_folders: Vec::new(), removable_roots: default_removable_roots() }
    }
}

/// Where removable media get mounted on common desktops.
pub const DEFAULT_REMOVABLE_ROOTS: &[&str] = &["/media", "/run/media", "/mnt"];

fn default_removable_roots() -> Vec<PathBuf> {
    DEFAULT_REMOVABLE_ROOTS.iter().map(PathBuf::from).collect()
}

/// `[log]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogSection {
    /// Output format.
    #[serde(default)]
    pub format: LogFormat,
    /// Level.
    #[serde(default)]
    pub level: LogLevel,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/rearview")
}
fn default_ring_max_bytes() -> ByteSize {
    ByteSize(2_000_000_000)
}
fn default_ring_max_retention_secs() -> u32 {
    3600
}
fn default_spool_max_bytes() -> ByteSize {
    ByteSize(2_000_000_000)
}
fn default_socket() -> PathBuf {
    PathBuf::from("/run/rearview/rearview.sock")
}

impl Default for RingSection {
    fn default() -> Self {
        RingSection {
            max_bytes: default_ring_max_bytes(),
            max_retention_secs: default_ring_max_retention_secs(),
        }
    }
}
impl Default for SpoolSection {
    fn default() -> Self {
        SpoolSection { max_bytes: default_spool_max_bytes() }
    }
}
impl Default for CliSection {
    fn default() -> Self {
        CliSection { socket: default_socket(), admin_group: None }
    }
}

/// The validated agent configuration. Fields are private: the only way to get one is through
/// validation ([`AgentConfig::load`], [`AgentConfig::from_toml_str`], `TryFrom<AgentConfigFile>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    server_url: String,
    data_dir: PathBuf,
    ring_max_bytes: u64,
    ring_max_retention_secs: u32,
    spool_max_bytes: u64,
    socket: PathBuf,
    admin_group: Option<String>,
    fixed_sessions: Vec<FixedSession>,
    local_accounts: LocalAccounts,
    watched_folders: Vec<PathBuf>,
    removable_roots: Vec<PathBuf>,
    log_format: LogFormat,
    log_level: LogLevel,
}

/// A field and why it is invalid (the origin is added by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted key.
    pub field: &'static str,
    /// What is wrong.
    pub why: String,
}

fn invalid(field: &'static str, why: impl Into<String>) -> FieldError {
    FieldError { field, why: why.into() }
}

fn check_server_url(url: &str) -> Result<(), FieldError> {
    let bad = |why: &str| invalid("server_url", format!("{url:?} {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("must start with https://"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must be a URL like https://console.example.com"));
    }
    if authority.contains('@') {
        return Err(bad("must not carry credentials"));
    }
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    match scheme {
        "https" => Ok(()),
        "http" if matches!(host, "127.0.0.1" | "localhost" | "::1") => Ok(()),
        "http" => Err(bad("uses plain http to a non-loopback host; use https://")),
        _ => Err(bad("must start with https://")),
    }
}

fn check_absolute(field: &'static str, p: &Path) -> Result<(), FieldError> {
    if !p.is_absolute() {
        return Err(invalid(field, format!("{} must be an absolute path", p.display())));
    }
    Ok(())
}

impl TryFrom<AgentConfigFile> for AgentConfig {
    type Error = FieldError;

    fn try_from(f: AgentConfigFile) -> Result<Self, FieldError> {
        check_server_url(&f.server_url)?;
        check_absolute("data_dir", &f.data_dir)?;
        if f.ring.max_bytes.0 < 16_000_000 {
            return Err(invalid(
                "ring.max_bytes",
                format!("must be at least 16 MB, is {} bytes", f.ring.max_bytes.0),
            ));
        }
        if !(60..=86_400).contains(&f.ring.max_retention_secs) {
            return Err(invalid(
                "ring.max_retention_secs",
                format!("must be between 60 and 86400, is {}", f.ring.max_retention_secs),
            ));
        }
        if f.spool.max_bytes.0 < 1_000_000 {
            return Err(invalid(
                "spool.max_bytes",
                format!("must be at least 1 MB, is {} bytes", f.spool.max_bytes.0),
            ));
        }
        check_absolute("cli.socket", &f.cli.socket)?;
        if let Some(g) = &f.cli.admin_group {
            if !is_unix_name(g) {
                return Err(invalid("cli.admin_group", format!("{g:?} is not a valid group name")));
            }
        }
        if f.capture.display.is_some() && !f.capture.sessions.is_empty() {
            return Err(invalid(
                "capture.sessions",
                "set either capture.display (the daemon's own user) or capture.sessions, not both",
            ));
        }
        let (field, fixed_sessions) = match f.capture.display {
            Some(display) => ("capture.display", vec![FixedSession { display, user: None }]),
            None => ("capture.sessions", f.capture.sessions),
        };
        if fixed_sessions.len() > 16 {
            return Err(invalid(field, "must list at most 16 displays"));
        }
        for (i, s) in fixed_sessions.iter().enumerate() {
            if !is_x_display(&s.display) {
                return Err(invalid(
                    field,
                    format!("{:?} is not an X display like \":0\"", s.display),
                ));
            }
            if fixed_sessions[..i].iter().any(|other| other.display == s.display) {
                return Err(invalid(field, format!("display {:?} is listed twice", s.display)));
            }
            if let Some(u) = &s.user {
                if !is_unix_name(u) {
                    return Err(invalid(field, format!("{u:?} is not a valid user name")));
                }
            }
        }
        let local_accounts = match &f.identity.domain {
            None => LocalAccounts::bare(),
            Some(d) => LocalAccounts::with_domain(d).map_err(|e| {
                invalid(
                    "identity.domain",
                    format!("{d:?} {}; e.g. domain = \"corp.example\"", e.why),
                )
            })?,
        };
        if f.indicators.watched_folders.len() > 64 {
            return Err(invalid("indicators.watched_folders", "must list at most 64 folders"));
        }
        for p in &f.indicators.watched_folders {
            check_absolute("indicators.watched_folders", p)?;
        }
        if f.indicators.removable_roots.len() > 64 {
            return Err(invalid("indicators.removable_roots", "must list at most 64 folders"));
        }
        for p in &f.indicators.removable_roots {
            check_absolute("indicators.removable_roots", p)?;
        }
        Ok(AgentConfig {
            server_url: f.server_url.trim_end_matches('/').to_string(),
            data_dir: f.data_dir,
            ring_max_bytes: f.ring.max_bytes.0,
            ring_max_retention_secs: f.ring.max_retention_secs,
            spool_max_bytes: f.spool.max_bytes.0,
            socket: f.cli.socket,
            admin_group: f.cli.admin_group,
            fixed_sessions,
            local_accounts,
            watched_folders: f.indicators.watched_folders,
            removable_roots: f.indicators.removable_roots,
            log_format: f.log.format,
            log_level: f.log.level,
        })
    }
}

/// A user or group name as `useradd` accepts it (portable subset, at most 32 bytes).
fn is_unix_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !name.starts_with('-')
}

/// `[host]:display[.screen]`, e.g. `":0"`, `":99.0"`, `"localhost:10"`.
fn is_x_display(d: &str) -> bool {
    d.split_once(':').is_some_and(|(host, rest)| {
        let (num, screen) = rest.split_once('.').unwrap_or((rest, "0"));
        host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-".contains(&b))
            && !num.is_empty()
            && num.bytes().all(|b| b.is_ascii_digit())
            && !screen.is_empty()
            && screen.bytes().all(|b| b.is_ascii_digit())
    })
}

impl AgentConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: impl AsRef<Path>) -> Result<AgentConfig, ConfigError> {
        let path = path.as_ref();
        let read = |source| ConfigError::Read { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(read)?;
        let mut text = String::new();
        // One byte past the limit tells an oversized file from one exactly at it: a file cut
        // short could otherwise parse with its last keys silently missing.
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, MAX_CONFIG_BYTES + 1),
            &mut text,
        )
        .map_err(read)?;
        if text.len() as u64 > MAX_CONFIG_BYTES {
            return Err(ConfigError::Parse {
                origin: path.display().to_string(),
                message: format!("larger than {MAX_CONFIG_BYTES} bytes; not a config file"),
            });
        }
        Self::parse(&text, path.display().to_string())
    }

    /// Validates TOML text (tests, or config passed inline).
    pub fn from_toml_str(text: &str) -> Result<AgentConfig, ConfigError> {
        Self::parse(text, "(string)".to_string())
    }

    fn parse(text: &str, origin: String) -> Result<AgentConfig, ConfigError> {
        let file: AgentConfigFile = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { origin: origin.clone(), message: e.to_string() })?;
        AgentConfig::try_from(file).map_err(|e| ConfigError::Invalid {
            origin,
            field: e.field,
            why: e.why,
        })
    }

    /// Console base URL, without a trailing slash.
    pub fn server_url(&self) -> &str {
        &self.server_url
    }
    /// Directory for ring, spool and trust state.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }
    /// What lives under the data directory (see [`crate::DataDir`]).
    pub fn state(&self) -> crate::DataDir {
        crate::DataDir::new(&self.data_dir)
    }
    /// `<data_dir>/ring`: the on-disk ring of sealed segments.
    pub fn ring_dir(&self) -> PathBuf {
        self.state().ring_dir()
    }
    /// `<data_dir>/spool`: the offline cache of clips awaiting upload.
    pub fn spool_dir(&self) -> PathBuf {
        self.state().spool_dir()
    }
    /// `<data_dir>/trust.json`: the [`crate::TrustStore`] state.
    pub fn trust_state_path(&self) -> PathBuf {
        self.state().trust_state()
    }
    /// Most bytes the ring may hold.
    pub fn ring_max_bytes(&self) -> u64 {
        self.ring_max_bytes
    }
    /// Longest ring retention honoured.
    pub fn ring_max_retention(&self) -> Duration {
        Duration::from_secs(self.ring_max_retention_secs.into())
    }
    /// Most bytes the spool may hold.
    pub fn spool_max_bytes(&self) -> u64 {
        self.spool_max_bytes
    }
    /// The local CLI's Unix socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
    /// Group allowed on the socket besides root.
    pub fn admin_group(&self) -> Option<&str> {
        self.admin_group.as_deref()
    }
    /// Fixed displays to record instead of discovering sessions through logind (empty: use
    /// logind).
    pub fn fixed_sessions(&self) -> &[FixedSession] {
        &self.fixed_sessions
    }
    /// How this device's logins are named as principals (`[identity]`).
    pub fn local_accounts(&self) -> &LocalAccounts {
        &self.local_accounts
    }
    /// Folders watched for `watched_folder_copy`.
    pub fn watched_folders(&self) -> &[PathBuf] {
        &self.watched_folders
    }
    /// Folders under which mounts are removable media (`removable_media_copy`).
    pub fn removable_roots(&self) -> &[PathBuf] {
        &self.removable_roots
    }
    /// Log format.
    pub fn log_format(&self) -> LogFormat {
        self.log_format
    }
    /// Log level.
    pub fn log_level(&self) -> LogLevel {
        self.log_level
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "server_url = \"https://console.example.com/\"\n";

    #[test]
    fn minimal_config_takes_defaults() {
        let c = AgentConfig::from_toml_str(MINIMAL).unwrap();
        assert_eq!(c.server_url(), "https://console.example.com");
        assert_eq!(c.data_dir(), Path::new("/var/lib/rearview"));
        assert_eq!(c.trust_state_path(), Path::new("/var/lib/rearview/trust.json"));
        assert_eq!(c.ring_max_bytes(), 2_000_000_000);
        assert_eq!(c.ring_max_retention(), Duration::from_secs(3600));
        assert_eq!(c.spool_max_bytes(), 2_000_000_000);
        assert_eq!(c.socket_path(), Path::new("/run/rearview/rearview.sock"));
        assert_eq!(c.admin_group(), None);
        assert!(c.fixed_sessions().is_empty());
        assert_eq!(c.local_accounts(), &LocalAccounts::bare());
        assert!(c.watched_folders().is_empty());
        assert_eq!(
            c.removable_roots(),
            [Path::new("/media"), Path::new("/run/media"), Path::new("/mnt")]
        );
        assert_eq!(c.log_format(), LogFormat::Text);
        assert_eq!(c.log_level(), LogLevel::Info);
    }

    #[test]
    fn sizes_accept_integers_and_units() {
        for (s, n) in [
            ("1048576", 1 << 20),
            ("500 MB", 500_000_000),
            ("2GiB", 2 << 30),
            ("100mb", 100_000_000),
            ("7 KiB", 7 << 10),
        ] {
            assert_eq!(s.parse::<ByteSize>().unwrap(), ByteSize(n), "{s}");
        }
        for s in ["", "MB", "5 parsecs", "-1", "1.5 GB", "99999999999999 GB"] {
            assert!(s.parse::<ByteSize>().is_err(), "{s}");
        }
        let c = AgentConfig::from_toml_str(&format!("{MINIMAL}[ring]\nmax_bytes = 20000000\n"))
            .unwrap();
        assert_eq!(c.ring_max_bytes(), 20_000_000);
    }

    #[test]
    fn unknown_keys_are_refused_with_position() {
        let err =
            AgentConfig::from_toml_str(&format!("{MINIMAL}[ring]\nmax_byte = 1\n")).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("max_byte"), "{err}");
        assert!(AgentConfig::from_toml_str(&format!("{MINIMAL}colour = true\n")).is_err());
        assert!(
            AgentConfig::from_toml_str("data_dir = \"/x\"\n").is_err(),
            "server_url is required"
        );
    }

    #[test]
    fn each_rule_is_enforced() {
        let cases: &[(&str, &str)] = &[
            ("server_url", "server_url = \"ftp://x\""),
            ("server_url", "server_url = \"http://console.example.com\""),
            ("server_url", "server_url = \"https://\""),
            ("server_url", "server_url = \"https://user:pw@host\""),
            ("server_url", "server_url = \"console.example.com\""),
            ("data_dir", "server_url = \"https://x\"\ndata_dir = \"rel/dir\""),
            ("ring.max_bytes", "server_url = \"https://x\"\n[ring]\nmax_bytes = \"1 MB\""),
            (
                "ring.max_retention_secs",
                "server_url = \"https://x\"\n[ring]\nmax_retention_secs = 10",
            ),
            (
                "ring.max_retention_secs",
                "server_url = \"https://x\"\n[ring]\nmax_retention_secs = 90000",
            ),
            ("spool.max_bytes", "server_url = \"https://x\"\n[spool]\nmax_bytes = 10"),
            ("cli.socket", "server_url = \"https://x\"\n[cli]\nsocket = \"x.sock\""),
            ("cli.admin_group", "server_url = \"https://x\"\n[cli]\nadmin_group = \"a b\""),
            ("cli.admin_group", "server_url = \"https://x\"\n[cli]\nadmin_group = \"-x\""),
            ("capture.display", "server_url = \"https://x\"\n[capture]\ndisplay = \"0\""),
            ("capture.display", "server_url = \"https://x\"\n[capture]\ndisplay = \":x\""),
            (
                "indicators.watched_folders",
                "server_url = \"https://x\"\n[indicators]\nwatched_folders = [\"rel\"]",
            ),
            (
                "indicators.removable_roots",
                "server_url = \"https://x\"\n[indicators]\nremovable_roots = [\"media\"]",
            ),
            (
                "capture.sessions",
                "server_url = \"https://x\"\n[capture]\ndisplay = \":1\"\n\
                 sessions = [{display = \":2\", user = \"bob\"}]",
            ),
            (
                "capture.sessions",
                "server_url = \"https://x\"\n[capture]\n\
                 sessions = [{display = \":2\", user = \"a\"}, {display = \":2\", user = \"b\"}]",
            ),
            (
                "capture.sessions",
                "server_url = \"https://x\"\n[capture]\nsessions = [{display = \":2\", user = \"x y\"}]",
            ),
            (
                "capture.sessions",
                "server_url = \"https://x\"\n[capture]\nsessions = [{display = \"2\", user = \"bob\"}]",
            ),
            ("identity.domain", "server_url = \"https://x\"\n[identity]\ndomain = \"\""),
            ("identity.domain", "server_url = \"https://x\"\n[identity]\ndomain = \"@corp\""),
            ("identity.domain", "server_url = \"https://x\"\n[identity]\ndomain = \"a..b\""),
        ];
        for (field, text) in cases {
            match AgentConfig::from_toml_str(text) {
                Err(ConfigError::Invalid { field: f, .. }) => assert_eq!(&f, field, "{text}"),
                other => panic!("{text}: got {other:?}"),
            }
        }
    }

    #[test]
    fn loopback_http_and_displays_are_accepted() {
        for url in [
            "http://127.0.0.1:8080",
            "http://localhost:1/api",
            "http://[::1]:9000",
            "https://c.example:8443/x",
        ] {
            assert!(
                AgentConfig::from_toml_str(&format!("server_url = \"{url}\"")).is_ok(),
                "{url}"
            );
        }
        for d in [":0", ":99", ":1.0", "localhost:10.0"] {
            let text = format!("{MINIMAL}[capture]\ndisplay = \"{d}\"\n");
            let fixed = FixedSession { display: d.to_string(), user: None };
            assert_eq!(AgentConfig::from_toml_str(&text).unwrap().fixed_sessions(), [fixed]);
        }
        let text = format!(
            "{MINIMAL}[capture]\nsessions = [{{display = \":5\", user = \"alice\"}}, \
             {{display = \":6\", user = \"bob\"}}]\n[indicators]\nremovable_roots = [\"/srv/usb\"]\n"
        );
        let c = AgentConfig::from_toml_str(&text).unwrap();
        let users: Vec<_> =
            c.fixed_sessions().iter().map(|s| (s.display.as_str(), s.user.as_deref())).collect();
        assert_eq!(users, [(":5", Some("alice")), (":6", Some("bob"))]);
        assert_eq!(c.removable_roots(), [Path::new("/srv/usb")]);
    }

    #[test]
    fn an_identity_domain_maps_logins_to_its_upns() {
        let c = AgentConfig::from_toml_str(&format!(
            "{MINIMAL}[identity]\ndomain = \"Corp.Example\"\n"
        ))
        .unwrap();
        assert_eq!(c.local_accounts().domain(), Some("corp.example"));
        let p = crate::Principal::new("alice@corp.example").unwrap();
        assert!(c.local_accounts().names(&p, "alice"));
        let err = AgentConfig::from_toml_str(&format!("{MINIMAL}[identity]\ndomain = \"x y\"\n"))
            .unwrap_err();
        assert!(
            err.to_string().contains("identity.domain") && err.to_string().contains("corp.example"),
            "{err}"
        );
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = AgentConfig::load("/nonexistent/rearview/agent.toml").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/rearview/agent.toml"), "{err}");
    }
}
