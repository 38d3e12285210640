//! The Rearview recorder core: everything between the display and a sealed segment on disk.
//!
//! Nothing here talks to the network or knows about policy; the agent decides *whether* to
//! record, this crate records. It depends on no other Rearview crate.
//!
//! # Layout
//!
//! * [`frame`], [`event`]: the data that flows — BGRX frames with UTC and monotonic timestamps,
//!   monitors, input and active-window events.
//! * [`source`]: the `FrameSource` trait and its backends — X11 with MIT-SHM (the fast path),
//!   xcap (the portable path), synthetic (scripted content for logic tests and benches).
//! * [`input`]: the `InputSource` trait — rdev on its own thread, active-window tracking,
//!   a synthetic source.
//! * [`codec`]: the lossless screen codec (keyframe + tile deltas + zstd) and its decoder for
//!   untrusted bytes.
//! * [`segment`]: a few seconds of one monitor — header, encoded frames, events — decodable alone.
//! * [`seal`]: HPKE (RFC 9180) sealing of segments to the tenant's public key.
//! * [`ring`]: the on-disk ring of sealed segments, bounded by time and bytes, with pins.
//! * [`xvfb`]: start a private Xvfb display (tests, benches, the demo).

pub mod codec;
pub mod event;
pub mod frame;
pub mod input;
pub mod ring;
pub mod seal;
pub mod segment;
pub mod source;
pub mod xvfb;

pub use event::{InputEvent, InputKind};
pub use frame::{Frame, MonitorInfo, Timestamp};
