//! Input and window events: what an [`InputSource`](crate::input::InputSource) hands out and what
//! a segment stores next to its frames.
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
        }
    }
}
