//! A source whose X server dies, and comes back on the same display.
//!
//! This test has a binary of its own: it needs the display number of the server it kills to stay
//! free, and tests in one binary run in parallel (another test's `Xvfb -displayfd` would take the
//! lowest free number, which is exactly the one just freed). Cargo runs test binaries one after
//! the other, so nothing else starts a server while this one runs.

use rearview_capture::source::x11::X11ShmSource;
use rearview_capture::source::{FrameSource, SourceError};
use rearview_testkit::xvfb::Xvfb;

#[test]
fn a_dead_server_is_reported_and_the_source_reconnects_lazily() {
    let first = Xvfb::start(320, 200).unwrap();
    let display = first.display().to_string();
    let mut src = X11ShmSource::connect(&display).unwrap();
    assert_eq!(src.capture(0).unwrap().width, 320);
    drop(first);

    let err = src.capture(0).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    // No server: the reconnect fails with a connect error, not a panic.
    let err = src.capture(0).unwrap_err();
    assert!(
        matches!(err, SourceError::Connect { .. } | SourceError::ConnectionLost { .. }),
        "{err}"
    );
    assert!(err.is_retryable(), "{err}");

    // A new server on the same display (the lowest free number again): the same source picks it
    // up on its next capture, with the new geometry.
    let second = Xvfb::start(400, 300).unwrap();
    assert_eq!(second.display(), display, "the freed display number is reused");
    let frame = src.capture(0).unwrap();
    assert_eq!((frame.width, frame.height), (400, 300));
}
