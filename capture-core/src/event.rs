//! Input and window events: what an [`InputSource`](crate::input::InputSource) hands out and what
//! a segment stores next to its frames.
//!
//! # JSON form (inside a segment's event records)
//!
//! Each event is one JSON object: `{"at": {"utc_micros": i64, "mono_micros": u64}, "kind":
//! {"type": "<tag>", ...fields}}`. `utc_micros` is microseconds since the Unix epoch (UTC, the
//! wall clock at capture); `mono_micros` is `CLOCK_MONOTONIC` in microseconds (the same clock
//! as the frames', so the two can be ordered even when the wall clock jumps). The tags and
//! their fields:
//!
//! ```text
//! type             fields                      meaning
//! ---------------------------------------------------------------------------------------------
//! key_press        key: str, text: str|null    key down; key is the key's name ("KeyA",
//!                                              "Return", "ShiftLeft"); text what it typed with
//!                                              the modifiers held ("a", "A", "\r"), if anything
//! key_release      key: str                    key up
//! button_press     button: u8                  pointer button down: 1 left, 2 middle, 3 right,
//!                                              others as the platform numbers them
//! button_release   button: u8                  pointer button up
//! wheel            dx: i64, dy: i64            wheel turned, in notches; dy > 0 is away from
//!                                              the user, dx > 0 to the right
//! pointer_move     x: f64, y: f64              pointer position in screen pixels (origin top
//!                                              left of the whole screen, so a monitor's own
//!                                              position is its header's monitor.x/.y);
//!                                              coalesced to at most 30 per second
//! active_window    title: str, app: str,       focused window changed (or its title did);
//!                  pid: u32|null               app is the WM_CLASS class, pid _NET_WM_PID
//! ```
//!
//! A reader meets tags it does not know when a newer device adds a kind. They are kept, not
//! refused: [`InputKind::Other`] holds the object as it came, and writes it back unchanged, so
//! an older console keeps the frames and the other events of such a segment (and exports the
//! unknown ones verbatim). A *known* tag with missing or mistyped fields is still an error.
//!
//! These are evidence and may hold what a person typed. They live in memory until their segment
//! is sealed, and their `Debug` never prints typed text, so a stray `tracing::debug!(?event)` does
//! not leak keystrokes into logs.

use serde::{Deserialize, Serialize};

use crate::frame::Timestamp;

/// One thing the user did, or one change of the focused window.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct InputEvent {
    pub at: Timestamp,
    pub kind: InputKind,
}

#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputKind {
    /// A key went down. `key` is the key's name (`"KeyA"`, `"Return"`, `"ShiftLeft"`); `text` is
    /// what it typed given the modifiers, when it typed anything (`"a"`, `"A"`, `"\r"`).
    KeyPress {
        key: String,
        text: Option<String>,
    },
    /// A key went up.
    KeyRelease {
        key: String,
    },
    /// A pointer button went down (1 left, 2 middle, 3 right, others as the platform numbers them).
    ButtonPress {
        button: u8,
    },
    ButtonRelease {
        button: u8,
    },
    /// A wheel turned, in notches; positive `dy` is away from the user.
    Wheel {
        dx: i64,
        dy: i64,
    },
    /// The pointer is at `(x, y)` in screen coordinates. Sources coalesce moves to at most 30 a
    /// second, keeping the latest position.
    PointerMove {
        x: f64,
        y: f64,
    },
    /// The focused window changed (or its title did).
    ActiveWindow {
        /// Window title (`_NET_WM_NAME`, else `WM_NAME`).
        title: String,
        /// Application, from `WM_CLASS` (the class part, e.g. `"XTerm"`).
        app: String,
        /// Owning process, from `_NET_WM_PID`, when the client sets it.
        pid: Option<u32>,
    },
    /// A kind this build does not know (from a newer device): the whole `kind` object as it
    /// came, its `type` included. Tried only after every known tag failed to match, so
    /// [`InputKind::check`] refuses a known tag that landed here for want of a valid field.
    #[serde(untagged)]
    Other(serde_json::Map<String, serde_json::Value>),
}

/// The tags of the kinds this build knows (see the table in the module docs).
pub const KNOWN_KINDS: [&str; 7] = [
    "key_press",
    "key_release",
    "button_press",
    "button_release",
    "wheel",
    "pointer_move",
    "active_window",
];

/// Why a parsed event kind is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum KindError {
    #[error("an event of kind {0:?} has missing or mistyped fields")]
    MalformedKnown(String),
    #[error("an event kind has no string \"type\"")]
    NoType,
}

impl InputKind {
    /// The tag of this kind, as written (`"key_press"`, or an unknown kind's own tag).
    pub fn tag(&self) -> &str {
        match self {
            InputKind::KeyPress { .. } => KNOWN_KINDS[0],
            InputKind::KeyRelease { .. } => KNOWN_KINDS[1],
            InputKind::ButtonPress { .. } => KNOWN_KINDS[2],
            InputKind::ButtonRelease { .. } => KNOWN_KINDS[3],
            InputKind::Wheel { .. } => KNOWN_KINDS[4],
            InputKind::PointerMove { .. } => KNOWN_KINDS[5],
            InputKind::ActiveWindow { .. } => KNOWN_KINDS[6],
            InputKind::Other(raw) => raw.get("type").and_then(|t| t.as_str()).unwrap_or(""),
        }
    }

    /// Refuses what deserialisation alone lets through: an [`InputKind::Other`] whose tag is
    /// one this build knows (a known event with broken fields) or that has no string tag.
    pub fn check(&self) -> Result<(), KindError> {
        let InputKind::Other(raw) = self else { return Ok(()) };
        match raw.get("type").and_then(|t| t.as_str()) {
            None => Err(KindError::NoType),
            Some(t) if KNOWN_KINDS.contains(&t) => Err(KindError::MalformedKnown(t.to_string())),
            Some(_) => Ok(()),
        }
    }
}

impl std::fmt::Debug for InputEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InputEvent").field("at", &self.at).field("kind", &self.kind).finish()
    }
}

impl std::fmt::Debug for InputKind {
    // Typed text and window titles stay out of logs; only the shape of the event shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InputKind::KeyPress { .. } => f.write_str("KeyPress(..)"),
            InputKind::KeyRelease { .. } => f.write_str("KeyRelease(..)"),
            InputKind::ButtonPress { button } => write!(f, "ButtonPress({button})"),
            InputKind::ButtonRelease { button } => write!(f, "ButtonRelease({button})"),
            InputKind::Wheel { dx, dy } => write!(f, "Wheel({dx}, {dy})"),
            InputKind::PointerMove { .. } => f.write_str("PointerMove(..)"),
            InputKind::ActiveWindow { .. } => f.write_str("ActiveWindow(..)"),
            InputKind::Other(_) => write!(f, "Other({:?}, ..)", self.tag()),
        }
    }
}
