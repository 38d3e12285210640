//! The X11 source against real Xvfb servers and real X clients: what a client paints is what
//! the capture holds, with MIT-SHM and with the GetImage fallback, on one and on two monitors.

#[path = "support/common.rs"]
mod common;

use common::{run, wait_for, xterm};
use rearview_capture::source::x11::{X11Options, X11ShmSource};
use rearview_capture::source::{FrameSource, SourceError};
use rearview_capture::Frame;
use rearview_testkit::xvfb::{Xvfb, XvfbOptions};

/// Capture `monitor` until `pred` holds for a frame (clients paint asynchronously).
fn capture_until(
    src: &mut X11ShmSource,
    monitor: u32,
    what: &str,
    pred: impl Fn(&Frame) -> bool,
) -> Frame {
    wait_for(what, || {
        let f = src.capture(monitor).unwrap();
        pred(&f).then_some(f)
    })
}

/// Whether every pixel of the rectangle has colour `rgb`.
fn area_is(f: &Frame, x: u32, y: u32, w: u32, h: u32, rgb: (u8, u8, u8)) -> bool {
    (y..y + h).all(|yy| (x..x + w).all(|xx| f.rgb(xx, yy) == rgb))
}

fn count_color(f: &Frame, rgb: (u8, u8, u8)) -> usize {
    (0..f.height).map(|y| (0..f.width).filter(|&x| f.rgb(x, y) == rgb).count()).sum()
}

#[test]
fn servers_start_in_parallel_on_distinct_displays() {
    let handles: Vec<_> =
        (0..6).map(|_| std::thread::spawn(|| Xvfb::start(320, 200).unwrap())).collect();
    let servers: Vec<Xvfb> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let mut displays: Vec<&str> = servers.iter().map(|s| s.display()).collect();
    displays.sort();
    displays.dedup();
    assert_eq!(displays.len(), 6);
    for s in &servers {
        // Each accepts connections right away and has the requested size.
        let mut src = X11ShmSource::connect(s.display()).unwrap();
        let m = src.monitors().unwrap();
        assert_eq!((m[0].width, m[0].height), (320, 200));
    }
    let pid = servers[0].pid();
    drop(servers);
    // Reaped: the pid is gone.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

#[test]
fn bad_server_arguments_give_a_clear_error() {
    let err = XvfbOptions::new(320, 200).arg("-no-such-option").start().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("exited"), "{text}");
    let err = XvfbOptions::new(0, 200).start().unwrap_err();
    assert!(!err.is_retryable(), "{err}");
}

#[test]
fn root_colour_is_captured_with_shm() {
    let x = Xvfb::start(640, 480).unwrap();
    let mut src = X11ShmSource::connect(x.display()).unwrap();
    assert!(src.uses_shm());
    assert_eq!(src.name(), "x11-shm");
    run(&x, "xsetroot", &["-solid", "#12ab34"]);
    let f = capture_until(&mut src, 0, "root colour", |f| {
        area_is(f, 0, 0, 640, 480, (0x12, 0xab, 0x34))
    });
    assert_eq!((f.width, f.height, f.stride, f.data.len()), (640, 480, 2560, 640 * 480 * 4));
    run(&x, "xsetroot", &["-solid", "#fe0107"]);
    capture_until(&mut src, 0, "new root colour", |f| {
        area_is(f, 0, 0, 640, 480, (0xfe, 0x01, 0x07))
    });
}

#[test]
fn getimage_fallback_without_the_shm_extension() {
    let x = XvfbOptions::new(400, 300).disable_extension("MIT-SHM").start().unwrap();
    let mut src = X11ShmSource::connect(x.display()).unwrap();
    assert!(!src.uses_shm());
    assert_eq!(src.name(), "x11-getimage");
    run(&x, "xsetroot", &["-solid", "#345678"]);
    capture_until(&mut src, 0, "root colour", |f| area_is(f, 0, 0, 400, 300, (0x34, 0x56, 0x78)));
}

#[test]
fn shm_and_getimage_capture_the_same_window() {
    let x = Xvfb::start(800, 600).unwrap();
    run(&x, "xsetroot", &["-solid", "#000080"]);
    let (_term, _id) = xterm(&x, "painted", "#c01020", "40x10+50+60");
    let mut shm = X11ShmSource::connect(x.display()).unwrap();
    let mut plain = X11ShmSource::connect_with(x.display(), X11Options { use_shm: false }).unwrap();
    assert!(!plain.uses_shm());
    // The xterm's background fills its window (with a 1-2 px border): a block of #c01020 near
    // its origin, the root colour outside.
    let a = capture_until(&mut shm, 0, "xterm background", |f| {
        area_is(f, 60, 70, 40, 40, (0xc0, 0x10, 0x20)) && f.rgb(20, 20) == (0, 0, 0x80)
    });
    let b = capture_until(&mut plain, 0, "same picture without SHM", |f| f.same_pixels(&a));
    assert_eq!(b.width, 800);
    assert!(count_color(&a, (0xc0, 0x10, 0x20)) > 10_000);
}

#[test]
fn two_monitors_on_one_screen_are_captured_each_on_its_own() {
    let x = Xvfb::start(1600, 600).unwrap();
    run(&x, "xrandr", &["--setmonitor", "left", "800/211x600/158+0+0", "screen"]);
    run(&x, "xrandr", &["--setmonitor", "right", "800/211x600/158+800+0", "none"]);
    run(&x, "xsetroot", &["-solid", "#101010"]);
    let (_l, _) = xterm(&x, "leftterm", "#d00000", "30x8+100+100");
    let (_r, _) = xterm(&x, "rightterm", "#0000d0", "30x8+900+200");

    let mut src = X11ShmSource::connect(x.display()).unwrap();
    let monitors = src.monitors().unwrap();
    assert_eq!(monitors.len(), 2, "{monitors:?}");
    let left = monitors.iter().find(|m| m.name == "left").unwrap();
    let right = monitors.iter().find(|m| m.name == "right").unwrap();
    assert_eq!((left.x, left.y, left.width, left.height), (0, 0, 800, 600));
    assert_eq!((right.x, right.y, right.width, right.height), (800, 0, 800, 600));

    let red = (0xd0, 0, 0);
    let blue = (0, 0, 0xd0);
    let l = capture_until(&mut src, left.id, "left xterm", |f| area_is(f, 110, 110, 30, 30, red));
    let r =
        capture_until(&mut src, right.id, "right xterm", |f| area_is(f, 110, 210, 30, 30, blue));
    assert_eq!((l.width, r.width), (800, 800));
    assert_eq!(count_color(&l, blue), 0, "the left monitor shows nothing of the right one");
    assert_eq!(count_color(&r, red), 0, "the right monitor shows nothing of the left one");
    assert_eq!(l.rgb(700, 500), (0x10, 0x10, 0x10));

    let err = src.capture(7).unwrap_err();
    assert!(matches!(err, SourceError::NoSuchMonitor { id: 7, count: 2 }), "{err}");
}

#[test]
fn connecting_to_a_missing_display_is_a_retryable_error() {
    let err = X11ShmSource::connect(":65000").err().unwrap();
    assert!(matches!(err, SourceError::Connect { .. }), "{err}");
    assert!(err.is_retryable());
}
