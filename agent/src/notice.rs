//! The desktop notice: tells the captured user that recording started, through the
//! freedesktop notification service (`org.freedesktop.Notifications.Notify`) on the user's
//! session bus. It runs inside the capture worker, which already is that user, so the bus's
//! own access rules let it in. No bus or no notification daemon is logged and otherwise
//! ignored: capture does not depend on it.

use std::collections::HashMap;
use std::time::Duration;

use zbus::zvariant::Value;

/// Text shown when the policy asks for a notice but gives none.
pub const DEFAULT_TEXT: &str = "Your organisation's security policy records this session's \
screen and input into an encrypted buffer on this device. Recordings leave the device only \
for approved investigations.";

/// The notice's title.
pub const SUMMARY: &str = "Screen recording is active";

#[zbus::proxy(
    interface = "org.freedesktop.Notifications",
    default_service = "org.freedesktop.Notifications",
    default_path = "/org/freedesktop/Notifications"
)]
trait Notifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: &str,
        replaces_id: u32,
        app_icon: &str,
        summary: &str,
        body: &str,
        actions: &[&str],
        hints: HashMap<&str, Value<'_>>,
        expire_timeout: i32,
    ) -> zbus::Result<u32>;
}

/// Posts the notice on the session bus named by `DBUS_SESSION_BUS_ADDRESS`, or on the bus at
/// `address` when given.
pub async fn show(address: Option<&str>, text: &str) -> zbus::Result<u32> {
    let conn = match address {
        Some(a) => zbus::connection::Builder::address(a)?.build().await?,
        None => zbus::Connection::session().await?,
    };
    let proxy = NotificationsProxy::new(&conn).await?;
    let mut hints = HashMap::new();
    // Critical urgency keeps the notice on screen until the user dismisses it.
    hints.insert("urgency", Value::U8(2));
    proxy.notify("Rearview", 0, "dialog-information", SUMMARY, text, &[], hints, 0).await
}

/// [`show`] on the session bus from a plain thread (the capture worker's), giving up after a
/// few seconds. Returns whether the notice was shown; failures are logged.
pub fn show_blocking(text: &str) -> bool {
    show_blocking_at(None, text)
}

/// [`show_blocking`] on the bus at `address` (the session bus when `None`).
#[doc(hidden)]
pub fn show_blocking_at(address: Option<&str>, text: &str) -> bool {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "desktop notice not shown: no runtime");
            return false;
        }
    };
    // The timeout is made inside the runtime: its timer needs the runtime's time driver.
    let result = runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), show(address, text)).await
    });
    match result {
        Ok(Ok(id)) => {
            tracing::info!(id, "desktop notice shown");
            true
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "desktop notice not shown (no session bus or notification service)");
            false
        }
        Err(_) => {
            tracing::warn!("desktop notice not shown: the session bus did not answer");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_session_bus_it_fails_cleanly() {
        // A bus address that cannot exist: the error must come back, not a panic or a hang.
        assert!(!show_blocking_at(Some("unix:path=/nonexistent/rearview-test-bus"), "test"));
    }
}
