//! Frames and monitors: what a [`FrameSource`](crate::source::FrameSource) hands out and what the
//! [codec](crate::codec) consumes.
//!
//! Pixels are always 32-bit **BGRX** (byte 0 blue, 1 green, 2 red, 3 unused), row-major, which is
//! what an X server with a 24/32-bit TrueColor visual returns on a little-endian machine, so the
//! fast X11 path copies nothing. Backends that get another layout (xcap returns RGBA) convert once
//! at the edge. The fourth byte carries no meaning: codecs and comparisons must ignore it.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Bytes per pixel of every frame (BGRX).
pub const BYTES_PER_PIXEL: usize = 4;

/// When something was seen, on two clocks.
///
/// `utc_micros` places evidence in the world (clip windows are in UTC); `mono_micros` orders and
/// spaces events within one boot even when the wall clock jumps (NTP steps, manual changes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Microseconds since the Unix epoch, UTC.
    pub utc_micros: i64,
    /// Microseconds of `CLOCK_MONOTONIC` (since boot, not counting suspend).
    pub mono_micros: u64,
}

impl Timestamp {
    /// Both clocks, read now.
    pub fn now() -> Self {
        let utc_micros = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        Self { utc_micros, mono_micros: monotonic_micros() }
    }
}

#[cfg(unix)]
#[allow(unsafe_code)] // see the SAFETY comment inside
fn monotonic_micros() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and CLOCK_MONOTONIC always exists on Linux and
    // the BSDs; clock_gettime writes only into the struct we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(not(unix))]
fn monotonic_micros() -> u64 {
    use std::sync::OnceLock;
    use std::time::Instant;
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// One monitor as a source sees it. Geometry is in the coordinates of the whole screen (the X
/// root window), so a frame of monitor `m` is the rectangle `m.x, m.y, m.width, m.height` of it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MonitorInfo {
    /// Stable within one source: the index in enumeration order (RandR monitor order on X11).
    pub id: u32,
    /// Output or monitor name as the platform reports it (`"DP-1"`, `"left"`).
    pub name: String,
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
    pub primary: bool,
}

/// One captured image of one monitor.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Bytes from the start of one row to the start of the next; at least `width * 4`.
    pub stride: usize,
    /// BGRX pixels, `stride * height` bytes.
    pub data: Vec<u8>,
    /// When the pixels were read from the display.
    pub captured_at: Timestamp,
}

impl Frame {
    /// A frame of `width` x `height` with tightly packed rows, every pixel black.
    pub fn black(width: u32, height: u32, captured_at: Timestamp) -> Self {
        let stride = width as usize * BYTES_PER_PIXEL;
        Self { width, height, stride, data: vec![0; stride * height as usize], captured_at }
    }

    /// The pixel bytes of row `y` (exactly `width * 4` bytes, padding excluded).
    pub fn row(&self, y: u32) -> &[u8] {
        let start = y as usize * self.stride;
        &self.data[start..start + self.width as usize * BYTES_PER_PIXEL]
    }

    /// Mutable pixel bytes of row `y` (exactly `width * 4` bytes).
    pub fn row_mut(&mut self, y: u32) -> &mut [u8] {
        let start = y as usize * self.stride;
        let len = self.width as usize * BYTES_PER_PIXEL;
        &mut self.data[start..start + len]
    }

    /// `(r, g, b)` of the pixel at `(x, y)`.
    pub fn rgb(&self, x: u32, y: u32) -> (u8, u8, u8) {
        let p = &self.row(y)[x as usize * BYTES_PER_PIXEL..];
        (p[2], p[1], p[0])
    }

    /// Whether two frames show the same picture: same size and same B, G, R of every pixel
    /// (padding and the X byte ignored).
    pub fn same_pixels(&self, other: &Frame) -> bool {
        if self.width != other.width || self.height != other.height {
            return false;
        }
        (0..self.height).all(|y| {
            self.row(y)
                .chunks_exact(BYTES_PER_PIXEL)
                .zip(other.row(y).chunks_exact(BYTES_PER_PIXEL))
                .all(|(a, b)| a[..3] == b[..3])
        })
    }
}

impl std::fmt::Debug for Frame {
    // Never print pixel data: frames are evidence and may show anything.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frame")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("stride", &self.stride)
            .field("bytes", &self.data.len())
            .field("captured_at", &self.captured_at)
            .finish()
    }
}
