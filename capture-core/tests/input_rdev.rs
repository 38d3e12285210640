//! The rdev input source against a real Xvfb driven by xdotool.
//!
//! rdev reads `DISPLAY` and its listener lives as long as the process, and Xlib ends the process
//! if that server dies under it. So this file (its own process) holds exactly one test, and its
//! server is never stopped by us: it runs with `-terminate`, so it exits by itself when its last
//! client (rdev's connections) goes away with this process.

#[path = "support/common.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{run, DEADLINE};
use rearview_capture::input::rdev::RdevInputSource;
use rearview_capture::input::{channel, InputError, InputSource};
use rearview_capture::InputKind;
use rearview_testkit::xvfb::XvfbOptions;

#[test]
fn rdev_reports_typed_keys_buttons_and_wheel() {
    // Options are applied in order: `-terminate` after the helper's `-noreset` wins.
    let x = XvfbOptions::new(800, 600).arg("-terminate").start().unwrap();
    let x: &'static _ = Box::leak(Box::new(x));
    // SAFETY (of the environment change): the only test of this process, before any thread
    // that reads the environment exists.
    std::env::set_var("DISPLAY", x.display());

    let (tx, rx) = channel();
    let mut src = RdevInputSource::start(tx).unwrap();
    // One per process at a time.
    let (tx2, _rx2) = channel();
    assert!(matches!(RdevInputSource::start(tx2), Err(InputError::Busy)));

    run(x, "xdotool", &["type", "--delay", "5", "Rdev ok"]);
    run(x, "xdotool", &["mousemove", "50", "60", "click", "1", "click", "5"]);
    let end = Instant::now() + DEADLINE;
    let mut kinds = Vec::new();
    let typed = |k: &[InputKind]| -> String {
        k.iter()
            .filter_map(|k| match k {
                InputKind::KeyPress { text: Some(t), .. } => Some(t.as_str()),
                _ => None,
            })
            .collect()
    };
    while !(typed(&kinds).contains("Rdev ok")
        && kinds.contains(&InputKind::Wheel { dx: 0, dy: -1 }))
    {
        assert!(Instant::now() < end, "timed out; typed {:?}", typed(&kinds).len());
        if let Ok(ev) = rx.recv_timeout(Duration::from_millis(200)) {
            kinds.push(ev.kind);
        }
    }
    assert!(kinds
        .iter()
        .any(|k| matches!(k, InputKind::KeyPress { key, .. } if key == "ShiftLeft")));
    assert!(kinds.iter().any(|k| matches!(k, InputKind::KeyPress { key, .. } if key == "KeyR")));
    assert!(kinds.contains(&InputKind::ButtonPress { button: 1 }));
    assert!(kinds.contains(&InputKind::ButtonRelease { button: 1 }));
    assert!(kinds.contains(&InputKind::PointerMove { x: 50.0, y: 60.0 }));

    // Stop, then a new source may connect to the same listener.
    src.stop();
    let (tx3, rx3) = channel();
    let _again = RdevInputSource::start(tx3).unwrap();
    run(x, "xdotool", &["type", "again"]);
    let end = Instant::now() + DEADLINE;
    let mut more = Vec::new();
    while !typed(&more).contains("again") {
        assert!(Instant::now() < end, "timed out after restart");
        if let Ok(ev) = rx3.recv_timeout(Duration::from_millis(200)) {
            more.push(ev.kind);
        }
    }
}
