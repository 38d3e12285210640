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

const SUMMARY: &str = "Screen recording is active";

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

/// Posts the notice on the session bus named by `DBUS_SESSION_BUS_ADDRESS`.
pub async fn show(text: &str) -> zbus::Result<u32> {
    let conn = zbus::Connection::session().await?;
    let proxy = NotificationsProxy::new(&conn).await?;
    let mut hints = HashMap::new();
    // Critical urgency keeps the notice on screen until the user dismisses it.
    hints.insert("urgency", Value::U8(2));
    proxy.notify("Rearview", 0, "dialog-information", SUMMARY, text, &[], hints, 0).await
}

/// [`show`] from a plain thread, giving up after a few seconds; failures are logged.
pub fn show_blocking(text: &str) {
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::warn!(error = %e, "desktop notice not shown: no runtime");
            return;
        }
    };
    let result = runtime.block_on(tokio::time::timeout(Duration::from_secs(5), show(text)));
    match result {
        Ok(Ok(id)) => tracing::info!(id, "desktop notice shown"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "desktop notice not shown (no session bus or notification service)")
        }
        Err(_) => tracing::warn!("desktop notice not shown: the session bus did not answer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn without_a_session_bus_it_fails_cleanly() {
        // A bus address that cannot exist: the error must come back, not a panic or a hang.
        std::env::set_var("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/rearview-test-bus");
        let r = tokio::time::timeout(Duration::from_secs(5), show("test")).await;
        assert!(matches!(r, Ok(Err(_))), "expected a connection error");
    }
}
