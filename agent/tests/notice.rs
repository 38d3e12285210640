//! The desktop notice over a real session bus (a private `dbus-daemon`), to a notification
//! service written in the test that records what it is asked to show.

use rearview_agent::notice::{show_blocking_at, SUMMARY};

#[path = "support/bus.rs"]
mod bus;

/// Posted from a plain thread, as the capture worker does, the notice arrives with the
/// policy's text and critical urgency (it stays until the user dismisses it).
#[test]
fn the_notice_reaches_the_notification_service_on_the_session_bus() {
    let bus = bus::Bus::start();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_service, shown) = runtime.block_on(bus::notification_service(&bus));
    let text = "Recording for investigation INV-7 (approved by rita)";
    let address = bus.address.clone();
    let worker = std::thread::spawn(move || show_blocking_at(Some(&address), text));
    assert!(worker.join().unwrap(), "the notice was not shown");
    assert_eq!(
        *shown.lock().unwrap(),
        [bus::Notice {
            app: "Rearview".into(),
            summary: SUMMARY.into(),
            body: text.into(),
            urgency: Some(2)
        }]
    );
}
