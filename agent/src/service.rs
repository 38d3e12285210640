//! Running as a service: `sd_notify` and logging.
//!
//! `sd_notify` is one datagram to the socket in `NOTIFY_SOCKET` (a path, or an abstract name
//! when it starts with `@`); without the variable it does nothing, so the daemon runs the same
//! by hand. Logs go to journald when the journal is our stderr (`JOURNAL_STREAM` set by
//! systemd), else to stderr as text or JSON. Nothing logged ever carries frame data,
//! keystrokes or keys: those types print redacted.

use std::io;

use rearview_config::{LogFormat, LogLevel};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

/// Sends `state` (e.g. `"READY=1"`, `"STOPPING=1"`, `"RELOADING=1"`) to the service manager.
/// Returns whether a manager was there to tell.
pub fn sd_notify(state: &str) -> io::Result<bool> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return Ok(false) };
    let socket = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), &path)?;
    }
    Ok(true)
}

/// Installs the global subscriber. `RUST_LOG` overrides `level`.
pub fn init_logging(format: LogFormat, level: LogLevel) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.as_str()));
    let registry = tracing_subscriber::registry().with(filter);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            let _ = registry.with(journald.with_syslog_identifier("rearviewd".into())).try_init();
            return;
        }
    }
    let fmt = tracing_subscriber::fmt::layer().with_writer(io::stderr);
    let _ = match format {
        LogFormat::Json => registry.with(fmt.json()).try_init(),
        _ => registry.with(fmt).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        assert!(sd_notify("READY=1").unwrap());
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::env::remove_var("NOTIFY_SOCKET");
        assert!(!sd_notify("READY=1").unwrap());
    }
}
