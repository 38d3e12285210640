//! X11 input sources against a real Xvfb driven by xdotool: what xdotool types, clicks and
//! scrolls is what the RECORD source reports; focus changes give ActiveWindow events.

#[path = "support/common.rs"]
mod common;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{run, xterm, DEADLINE};
use rearview_capture::input::window::ActiveWindowWatcher;
use rearview_capture::input::x11::X11InputSource;
use rearview_capture::input::{channel, InputSource};
use rearview_capture::{InputEvent, InputKind};
use rearview_testkit::xvfb::Xvfb;

/// Collect events until `done` holds for everything collected so far.
fn collect_until(
    rx: &Receiver<InputEvent>,
    what: &str,
    done: impl Fn(&[InputKind]) -> bool,
) -> Vec<InputKind> {
    let end = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    while !done(&got) {
        let left = end
            .checked_duration_since(Instant::now())
            .unwrap_or_else(|| panic!("timed out waiting for {what}; got {} events", got.len()));
        if let Ok(ev) = rx.recv_timeout(left.min(Duration::from_millis(200))) {
            got.push(ev.kind);
        }
    }
    got
}

fn typed(kinds: &[InputKind]) -> String {
    kinds
        .iter()
        .filter_map(|k| match k {
            InputKind::KeyPress { text: Some(t), .. } => Some(t.as_str()),
            _ => None,
        })
        .collect()
}

#[test]
fn typed_text_and_key_names_are_recorded() {
    let x = Xvfb::start(800, 600).unwrap();
    let (tx, rx) = channel();
    let mut src = X11InputSource::start(x.display(), tx).unwrap();
    // Upper case needs Shift; 'é' and '€' are not on Xvfb's keymap, so xdotool remaps a spare
    // keycode for them (the recorded ChangeKeyboardMapping tells us what it typed).
    let text = "Hello, World 42! é€";
    run(&x, "xdotool", &["type", "--delay", "5", text]);
    run(&x, "xdotool", &["key", "Return"]);
    let kinds = collect_until(&rx, "typed text", |k| typed(k).contains(&format!("{text}\r")));
    let names: Vec<&str> = kinds
        .iter()
        .filter_map(|k| match k {
            InputKind::KeyPress { key, .. } => Some(key.as_str()),
            _ => None,
        })
        .collect();
    for name in ["ShiftLeft", "KeyH", "KeyE", "Comma", "Space", "Num4", "Return"] {
        assert!(names.contains(&name), "no press of {name} in {names:?}");
    }
    assert!(kinds.iter().any(|k| matches!(k, InputKind::KeyRelease { key } if key == "KeyH")));
    src.stop();
    // Stopped: nothing more arrives and the channel closes.
    run(&x, "xdotool", &["type", "zzz"]);
    let rest: Vec<InputEvent> = rx.iter().collect();
    assert!(!typed(&rest.into_iter().map(|e| e.kind).collect::<Vec<_>>()).contains("zzz"));
}

#[test]
fn buttons_wheel_and_pointer_are_recorded() {
    let x = Xvfb::start(800, 600).unwrap();
    let (tx, rx) = channel();
    let _src = X11InputSource::start(x.display(), tx).unwrap();
    run(
        &x,
        "xdotool",
        &[
            "mousemove",
            "123",
            "234",
            "click",
            "1",
            "click",
            "3",
            "click",
            "4",
            "click",
            "5",
            "click",
            "5",
        ],
    );
    run(&x, "xdotool", &["mousemove", "321", "432"]);
    let kinds = collect_until(&rx, "pointer events", |k| {
        k.contains(&InputKind::PointerMove { x: 321.0, y: 432.0 })
    });
    let pos = |k: &InputKind| {
        kinds.iter().position(|x| x == k).unwrap_or_else(|| panic!("no {k:?} in {kinds:?}"))
    };
    assert!(
        pos(&InputKind::PointerMove { x: 123.0, y: 234.0 })
            < pos(&InputKind::ButtonPress { button: 1 })
    );
    assert!(
        pos(&InputKind::ButtonPress { button: 1 }) < pos(&InputKind::ButtonRelease { button: 1 })
    );
    assert!(
        pos(&InputKind::ButtonRelease { button: 1 }) < pos(&InputKind::ButtonPress { button: 3 })
    );
    let wheel: Vec<&InputKind> =
        kinds.iter().filter(|k| matches!(k, InputKind::Wheel { .. })).collect();
    assert_eq!(
        wheel,
        [
            &InputKind::Wheel { dx: 0, dy: 1 },
            &InputKind::Wheel { dx: 0, dy: -1 },
            &InputKind::Wheel { dx: 0, dy: -1 }
        ]
    );
    assert!(!kinds.contains(&InputKind::ButtonPress { button: 4 }));
}

#[test]
fn pointer_moves_are_coalesced_to_30_per_second() {
    let x = Xvfb::start(800, 600).unwrap();
    let (tx, rx) = channel();
    let _src = X11InputSource::start(x.display(), tx).unwrap();
    // 400 moves as fast as xdotool can send them, then a click as the end marker.
    let mut args = Vec::new();
    for i in 0..400 {
        args.extend(["mousemove".to_string(), (i % 700).to_string(), "300".to_string()]);
    }
    args.extend(["mousemove".into(), "777".into(), "333".into(), "click".into(), "2".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let started = Instant::now();
    run(&x, "xdotool", &args);
    let kinds =
        collect_until(&rx, "end marker", |k| k.contains(&InputKind::ButtonRelease { button: 2 }));
    let elapsed = started.elapsed().as_secs_f64();
    let moves: Vec<&InputKind> =
        kinds.iter().filter(|k| matches!(k, InputKind::PointerMove { .. })).collect();
    // The cap is a rate: at most 30 per second of sending, plus the one flushed before the click.
    assert!((moves.len() as f64) <= 30.0 * elapsed + 2.0, "{} moves in {elapsed:.2}s", moves.len());
    // The latest position survives: it is flushed before the click.
    let click = kinds.iter().position(|k| *k == InputKind::ButtonPress { button: 2 }).unwrap();
    assert_eq!(
        kinds[..click].iter().rev().find(|k| matches!(k, InputKind::PointerMove { .. })),
        Some(&InputKind::PointerMove { x: 777.0, y: 333.0 })
    );
}

fn active_windows(kinds: &[InputKind]) -> Vec<(String, String, Option<u32>)> {
    kinds
        .iter()
        .filter_map(|k| match k {
            InputKind::ActiveWindow { title, app, pid } => Some((title.clone(), app.clone(), *pid)),
            _ => None,
        })
        .collect()
}

#[test]
fn focus_changes_give_active_window_events() {
    let x = Xvfb::start(800, 600).unwrap();
    let (alpha, alpha_id) = xterm(&x, "alpha", "#202020", "30x8+10+10");
    let (beta, beta_id) = xterm(&x, "beta", "#202020", "30x8+400+10");
    let (tx, rx) = channel();
    let mut watcher = ActiveWindowWatcher::start(x.display(), tx).unwrap();

    run(&x, "xdotool", &["windowfocus", "--sync", &alpha_id]);
    let kinds = collect_until(&rx, "alpha focused", |k| {
        active_windows(k).iter().any(|(t, _, _)| t == "alpha")
    });
    let (_, app, pid) = active_windows(&kinds).into_iter().find(|(t, _, _)| t == "alpha").unwrap();
    assert_eq!(app, "alpha");
    assert_eq!(pid, Some(alpha.0.id()));

    run(&x, "xdotool", &["windowfocus", "--sync", &beta_id]);
    let kinds = collect_until(&rx, "beta focused", |k| {
        active_windows(k).iter().any(|(t, _, _)| t == "beta")
    });
    let (_, app, pid) = active_windows(&kinds).into_iter().find(|(t, _, _)| t == "beta").unwrap();
    assert_eq!(app, "beta");
    assert_eq!(pid, Some(beta.0.id()));

    // A title change of the active window is an event too.
    run(&x, "xdotool", &["set_window", "--name", "beta renamed", &beta_id]);
    collect_until(&rx, "new title", |k| {
        active_windows(k).iter().any(|(t, _, _)| t == "beta renamed")
    });

    // With an EWMH window manager the root's _NET_ACTIVE_WINDOW names the window; emulate the
    // manager's write with xprop and expect alpha although beta has the input focus.
    let alpha_dec = u32::from_str_radix(
        alpha_id.trim_start_matches("0x"),
        if alpha_id.starts_with("0x") { 16 } else { 10 },
    )
    .unwrap();
    run(
        &x,
        "xprop",
        &[
            "-root",
            "-f",
            "_NET_ACTIVE_WINDOW",
            "32i",
            "-set",
            "_NET_ACTIVE_WINDOW",
            &alpha_dec.to_string(),
        ],
    );
    let _ = collect_until(&rx, "alpha via _NET_ACTIVE_WINDOW", |k| {
        active_windows(k).iter().any(|(t, _, _)| t == "alpha")
    });
    watcher.stop();
}
