//! Frame sources: where frames come from.
//!
//! A [`FrameSource`] enumerates monitors and captures one monitor at a time into a BGRX
//! [`Frame`]. Backends:
//!
//! * [`x11::X11ShmSource`] — the fast path on X11: MIT-SHM `ShmGetImage` of the monitor
//!   rectangle into a shared segment, falling back to plain `GetImage` where SHM is unavailable
//!   (remote display, other IPC namespace, extension disabled). Bound to an explicit display.
//! * [`xcap::XcapSource`] — the portable path (other platforms, Wayland) through the `xcap`
//!   crate. It reads the display from the environment (`DISPLAY` / `WAYLAND_DISPLAY`).
//! * [`synthetic::SyntheticSource`] — scripted, deterministic content for logic tests and
//!   benches; needs no display and proves nothing about real capture.
//!
//! At most [`MAX_MONITORS`] monitors are reported (the product's limit); further ones are not
//! captured.

use crate::frame::{Frame, MonitorInfo};

pub mod synthetic;
#[cfg(feature = "x11")]
pub mod x11;
#[cfg(feature = "xcap")]
pub mod xcap;

/// The most monitors a source reports, in enumeration order; the rest are ignored.
pub const MAX_MONITORS: usize = 4;

/// Something that can capture the screen, one monitor at a time.
///
/// Capturing blocks (a round trip to the display server at least), so callers that must not
/// block run a source on its own thread. Sources are `Send` so they can be moved there.
pub trait FrameSource: Send {
    /// Short backend name for logs and benchmarks (`"x11-shm"`, `"x11-getimage"`, `"xcap"`).
    fn name(&self) -> &'static str;

    /// The monitors as they are now (re-enumerated on every call), at most [`MAX_MONITORS`].
    fn monitors(&mut self) -> Result<Vec<MonitorInfo>, SourceError>;

    /// One frame of monitor `monitor_id` (an id from the last [`monitors`](Self::monitors); a
    /// source enumerates by itself if that was never called).
    fn capture(&mut self, monitor_id: u32) -> Result<Frame, SourceError>;
}

/// Why a source could not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Retryable: the display may appear later (session starting) or be back after a restart.
    #[error("cannot connect to display {display:?}: {reason}")]
    Connect { display: String, reason: String },
    /// Retryable: the source reconnects on its next call.
    #[error("lost the connection to display {display:?}: {reason}")]
    ConnectionLost { display: String, reason: String },
    /// Permanent for this id: monitors changed. Re-enumerate with `monitors()`.
    #[error("no monitor {id}: the source has {count} monitor(s); call monitors() again")]
    NoSuchMonitor { id: u32, count: usize },
    /// Permanent: this display cannot be captured by this backend (pixel format, depth).
    #[error("unsupported display: {0}")]
    Unsupported(String),
    /// Retryable: the server refused one capture (typically the screen was being resized).
    #[error("capture failed: {0}")]
    Capture(String),
}

impl SourceError {
    /// Whether the same call may succeed later; permanent errors need a change (new monitor list,
    /// another backend) first.
    pub fn is_retryable(&self) -> bool {
        match self {
            SourceError::Connect { .. }
            | SourceError::ConnectionLost { .. }
            | SourceError::Capture(_) => true,
            SourceError::NoSuchMonitor { .. } | SourceError::Unsupported(_) => false,
        }
    }
}
