//! The player's transcript: a clip's input and window events turned into what a reader
//! follows — runs of typed text per window, window and application changes, clicks.
//!
//! ```text
//! kind     when it starts a new entry                       text
//! window   the focused window (or its title) changed        "<app> — <title>"
//! typed    the first key that types after anything else;    the characters typed, special keys
//!          a run ends at a window change, a click, or a     as keys: [Enter] [Tab] [Backspace]
//!          pause of RUN_PAUSE                               [Escape] [UpArrow] [Ctrl+C] …
//! click    a pointer button pressed                         "left click at 120, 340"
//! ```
//!
//! Keys are shown as pressed, not edited: `helo[Backspace]lo` is what happened, and the reader
//! sees both. Modifier keys alone (Shift, Control, Alt, Meta) add nothing; held with another
//! key that types no text of its own, or Control/Alt/Meta with any key, they make a chord
//! (`[Ctrl+C]`). Events of kinds this console does not know are left out of the transcript
//! (the export keeps them).
//!
//! Every entry carries the capture time of its first event (UTC µs), which is where clicking
//! it seeks the player, and, for typed runs, the time of its last key.

use rearview_capture::event::{InputEvent, InputKind};
use serde::Serialize;

/// A pause in typing longer than this starts a new run.
pub const RUN_PAUSE_MICROS: i64 = 5_000_000;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Entry {
    /// UTC µs of the entry's first event.
    pub t: i64,
    /// UTC µs of its last event (the same as `t` but for typed runs).
    pub end: i64,
    pub kind: &'static str,
    pub text: String,
    /// The focused window's application and title when it happened.
    pub app: String,
    pub title: String,
}

fn is_modifier(key: &str) -> bool {
    matches!(
        key,
        "ShiftLeft"
            | "ShiftRight"
            | "ControlLeft"
            | "ControlRight"
            | "Alt"
            | "AltGr"
            | "MetaLeft"
            | "MetaRight"
            | "CapsLock"
            | "NumLock"
    )
}

/// The name a key is shown by inside brackets.
fn shown(key: &str) -> String {
    match key {
        "Return" | "KpReturn" => "Enter".into(),
        k => k.strip_prefix("Key").or_else(|| k.strip_prefix("Num")).unwrap_or(k).to_owned(),
    }
}

#[derive(Default)]
struct Held {
    ctrl: bool,
    alt: bool,
    meta: bool,
}

impl Held {
    fn set(&mut self, key: &str, down: bool) {
        match key {
            "ControlLeft" | "ControlRight" => self.ctrl = down,
            "Alt" => self.alt = down,
            "MetaLeft" | "MetaRight" => self.meta = down,
            _ => {}
        }
    }

    fn chord(&self, key: &str) -> Option<String> {
        let mut parts = Vec::new();
        if self.ctrl {
            parts.push("Ctrl");
        }
        if self.alt {
            parts.push("Alt");
        }
        if self.meta {
            parts.push("Meta");
        }
        if parts.is_empty() {
            return None;
        }
        Some(format!("[{}+{}]", parts.join("+"), shown(key)))
    }
}

/// What a key press adds to a typed run.
fn typed(key: &str, text: Option<&str>, held: &Held) -> Option<String> {
    if is_modifier(key) {
        return None;
    }
    if let Some(chord) = held.chord(key) {
        return Some(chord);
    }
    match text {
        Some("\r") => Some("[Enter]".into()),
        Some("\t") => Some("[Tab]".into()),
        Some("\u{8}") => Some("[Backspace]".into()),
        Some(t) if !t.is_empty() && t.chars().all(|c| !c.is_control()) => Some(t.to_owned()),
        _ => Some(format!("[{}]", shown(key))),
    }
}

fn button(b: u8) -> String {
    match b {
        1 => "left click".into(),
        2 => "middle click".into(),
        3 => "right click".into(),
        b => format!("button {b} click"),
    }
}

/// The transcript of `events` (in any order; sorted here by capture time).
pub fn build(events: &[InputEvent]) -> Vec<Entry> {
    let mut sorted: Vec<&InputEvent> = events.iter().collect();
    sorted.sort_by_key(|e| (e.at.utc_micros, e.at.mono_micros));
    let mut out: Vec<Entry> = Vec::new();
    let (mut app, mut title) = (String::new(), String::new());
    let mut held = Held::default();
    let mut pointer = (0.0f64, 0.0f64);
    let mut run_open = false;
    for e in sorted {
        let t = e.at.utc_micros;
        match &e.kind {
            InputKind::ActiveWindow { title: new_title, app: new_app, .. } => {
                app.clone_from(new_app);
                title.clone_from(new_title);
                run_open = false;
                out.push(Entry {
                    t,
                    end: t,
                    kind: "window",
                    text: format!("{new_app} — {new_title}"),
                    app: app.clone(),
                    title: title.clone(),
                });
            }
            InputKind::KeyPress { key, text } => {
                held.set(key, true);
                let Some(piece) = typed(key, text.as_deref(), &held) else { continue };
                match out.last_mut() {
                    Some(last)
                        if run_open && last.kind == "typed" && t - last.end <= RUN_PAUSE_MICROS =>
                    {
                        last.text.push_str(&piece);
                        last.end = t;
                    }
                    _ => {
                        out.push(Entry {
                            t,
                            end: t,
                            kind: "typed",
                            text: piece,
                            app: app.clone(),
                            title: title.clone(),
                        });
                        run_open = true;
                    }
                }
            }
            InputKind::KeyRelease { key } => held.set(key, false),
            InputKind::PointerMove { x, y } => pointer = (*x, *y),
            InputKind::ButtonPress { button: b } => {
                run_open = false;
                out.push(Entry {
                    t,
                    end: t,
                    kind: "click",
                    text: format!("{} at {:.0}, {:.0}", button(*b), pointer.0, pointer.1),
                    app: app.clone(),
                    title: title.clone(),
                });
            }
            InputKind::ButtonRelease { .. } | InputKind::Wheel { .. } | InputKind::Other(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rearview_capture::frame::Timestamp;

    fn at(s: f64) -> Timestamp {
        let us = (s * 1e6) as i64;
        Timestamp { utc_micros: 1_700_000_000_000_000 + us, mono_micros: us as u64 }
    }

    fn key(s: f64, key: &str, text: Option<&str>) -> InputEvent {
        InputEvent {
            at: at(s),
            kind: InputKind::KeyPress { key: key.into(), text: text.map(str::to_owned) },
        }
    }

    fn up(s: f64, key: &str) -> InputEvent {
        InputEvent { at: at(s), kind: InputKind::KeyRelease { key: key.into() } }
    }

    fn window(s: f64, app: &str, title: &str) -> InputEvent {
        InputEvent {
            at: at(s),
            kind: InputKind::ActiveWindow { title: title.into(), app: app.into(), pid: None },
        }
    }

    #[test]
    fn keys_become_runs_per_window_with_special_keys_shown() {
        let events = vec![
            window(0.0, "XTerm", "bash"),
            key(1.0, "KeyH", Some("h")),
            key(1.1, "ShiftLeft", None),
            key(1.2, "KeyI", Some("I")),
            up(1.3, "ShiftLeft"),
            key(1.4, "Backspace", Some("\u{8}")),
            key(1.5, "Space", Some(" ")),
            key(1.6, "Return", Some("\r")),
            key(2.0, "ControlLeft", None),
            key(2.1, "KeyC", Some("\u{3}")),
            up(2.2, "ControlLeft"),
            key(2.3, "UpArrow", None),
            // A pause: a new run.
            key(9.0, "KeyX", Some("x")),
            window(10.0, "Firefox", "Mail"),
            key(10.5, "KeyY", Some("y")),
        ];
        let entries = build(&events);
        let texts: Vec<(&str, &str)> = entries.iter().map(|e| (e.kind, e.text.as_str())).collect();
        assert_eq!(
            texts,
            vec![
                ("window", "XTerm — bash"),
                ("typed", "hI[Backspace] [Enter][Ctrl+C][UpArrow]"),
                ("typed", "x"),
                ("window", "Firefox — Mail"),
                ("typed", "y"),
            ]
        );
        assert_eq!(entries[1].t, at(1.0).utc_micros, "a run seeks to its first key");
        assert_eq!(entries[1].end, at(2.3).utc_micros);
        assert_eq!(entries[4].app, "Firefox", "a run knows its window");
    }

    #[test]
    fn clicks_break_runs_and_say_where() {
        let events = vec![
            key(0.0, "KeyA", Some("a")),
            InputEvent { at: at(0.5), kind: InputKind::PointerMove { x: 120.0, y: 340.4 } },
            InputEvent { at: at(0.6), kind: InputKind::ButtonPress { button: 1 } },
            key(0.7, "KeyB", Some("b")),
        ];
        let texts: Vec<String> = build(&events).into_iter().map(|e| e.text).collect();
        assert_eq!(texts, vec!["a", "left click at 120, 340", "b"]);
    }
}
