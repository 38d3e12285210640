//! The xcap source against a real Xvfb. xcap reads `DISPLAY` from the environment, so every test
//! here sets it under one lock (this file is its own process; nothing else here reads it).

#[path = "support/common.rs"]
mod common;

use std::sync::Mutex;

use common::{run, wait_for, xterm};
use rearview_capture::source::xcap::XcapSource;
use rearview_capture::source::FrameSource;
use rearview_testkit::xvfb::Xvfb;

static DISPLAY_LOCK: Mutex<()> = Mutex::new(());

#[test]
fn xcap_captures_what_clients_paint() {
    let _guard = DISPLAY_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let x = Xvfb::start(640, 480).unwrap();
    // SAFETY (of the environment change): this test binary's other tests take the same lock,
    // and nothing else in this process reads DISPLAY concurrently.
    std::env::set_var("DISPLAY", x.display());
    std::env::remove_var("WAYLAND_DISPLAY");
    std::env::remove_var("XDG_SESSION_TYPE");

    run(&x, "xsetroot", &["-solid", "#2468ac"]);
    let (_t, _) = xterm(&x, "xcapterm", "#e0c000", "20x5+300+200");
    let mut src = XcapSource::new();
    let monitors = src.monitors().unwrap();
    assert_eq!(monitors.len(), 1, "{monitors:?}");
    assert_eq!((monitors[0].width, monitors[0].height), (640, 480));
    let f = wait_for("xcap to see the xterm", || {
        let f = src.capture(0).unwrap();
        (f.rgb(310, 210) == (0xe0, 0xc0, 0)).then_some(f)
    });
    assert_eq!(f.rgb(5, 5), (0x24, 0x68, 0xac), "RGBA was converted to BGRX");
    assert_eq!(f.stride, 640 * 4);
}
