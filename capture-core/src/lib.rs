//! The Rearview recorder core: everything between the display and a sealed segment on disk.
//!
//! Nothing here talks to the network or knows about policy; the agent decides *whether* to
//! record, this crate records. It depends on no other Rearview crate.
//!
//! # Layout
//!
//! * [`frame`], [`event`]: the data that flows — BGRX frames with UTC and monotonic timestamps,
//!   monitors, input and active-window events.
//! * [`source`]: the `FrameSource` trait and its backends — X11 with MIT-SHM (the fast path,
//!   feature `x11`), xcap (the portable path, feature `xcap`), synthetic (scripted content for
//!   logic tests and benches).
//! * [`input`]: the `InputSource` trait — X11 RECORD and active-window tracking (feature `x11`),
//!   rdev on its own thread (feature `rdev`), a synthetic source.
//! * [`codec`]: the lossless screen codec (keyframe + tile deltas + zstd) and its decoder for
//!   untrusted bytes.
//! * [`segment`]: a few seconds of one monitor — header, encoded frames, events — decodable alone.
//! * [`seal`]: HPKE (RFC 9180) sealing of segments to the tenant's public key.
//! * [`ring`]: the on-disk ring of sealed segments, bounded by time and bytes, with pins.
//!
//! The backends are features (all on by default), so a crate that only reads segments links none
//! of them: the console takes `default-features = false, features = ["open"]`, the agent `x11`.

pub mod codec;
pub mod event;
pub mod frame;
pub mod input;
pub mod ring;
pub mod seal;
pub mod segment;
pub mod source;

pub use event::{InputEvent, InputKind};
pub use frame::{Frame, MonitorInfo, Timestamp};
