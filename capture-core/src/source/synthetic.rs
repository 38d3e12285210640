//! Scripted, deterministic screen content for logic tests and benches. Needs no display.
//!
//! Frame `n` of a monitor is a pure function of (size, monitor id, `n`): a flat desktop, a
//! "terminal" whose text-like lines scroll up one line per frame, a box sliding to the right,
//! and a counter showing `n` in seven-segment digits. That is the shape of real work — a mostly
//! static screen with local changes and scrolling — without claiming anything about capture.

use super::{FrameSource, SourceError, MAX_MONITORS};
use crate::frame::{Frame, MonitorInfo, Timestamp, BYTES_PER_PIXEL};

/// Line height of the scrolling text, in pixels.
const LINE: u32 = 16;
/// Glyph cell width of the text-like stripes.
const CELL: u32 = 8;

/// See the module docs. Each capture of a monitor advances that monitor's frame counter.
#[derive(Clone, Debug)]
pub struct SyntheticSource {
    width: u32,
    height: u32,
    ticks: Vec<u64>,
}

impl SyntheticSource {
    /// One monitor of `width` x `height`.
    pub fn new(width: u32, height: u32) -> Self {
        Self::with_monitors(width, height, 1)
    }

    /// `count` monitors (capped at [`MAX_MONITORS`]) of `width` x `height`, side by side.
    pub fn with_monitors(width: u32, height: u32, count: usize) -> Self {
        Self { width, height, ticks: vec![0; count.clamp(1, MAX_MONITORS)] }
    }

    /// Frame `tick` of `monitor`, without advancing anything.
    pub fn render(&self, monitor: u32, tick: u64) -> Frame {
        render(self.width, self.height, monitor, tick)
    }
}

impl FrameSource for SyntheticSource {
    fn name(&self) -> &'static str {
        "synthetic"
    }

    fn monitors(&mut self) -> Result<Vec<MonitorInfo>, SourceError> {
        Ok((0..self.ticks.len() as u32)
            .map(|id| MonitorInfo {
                id,
                name: format!("synthetic-{id}"),
                x: (id * self.width) as i32,
                y: 0,
                width: self.width,
                height: self.height,
                primary: id == 0,
            })
            .collect())
    }

    fn capture(&mut self, monitor_id: u32) -> Result<Frame, SourceError> {
        let count = self.ticks.len();
        let tick = self
            .ticks
            .get_mut(monitor_id as usize)
            .ok_or(SourceError::NoSuchMonitor { id: monitor_id, count })?;
        let frame = render(self.width, self.height, monitor_id, *tick);
        *tick += 1;
        Ok(frame)
    }
}

fn render(width: u32, height: u32, monitor: u32, tick: u64) -> Frame {
    let mut f = Frame::black(width, height, Timestamp::now());
    let desktop = [0x60, 0x40 + (monitor as u8 & 3) * 0x10, 0x20];
    fill(&mut f, 0, 0, width, height, desktop);

    // The terminal: lines of "words" that scroll up one line per frame.
    let (tx, ty, tw, th) = (width / 12, height / 10, width / 2, height * 6 / 10);
    fill(&mut f, tx, ty, tw, th, [0x18, 0x18, 0x18]);
    let lines = th / LINE;
    for row in 0..lines {
        let line_no = tick + u64::from(row);
        let mut x = tx + CELL;
        let mut word = 0u64;
        while x + CELL < tx + tw {
            let h = hash(line_no * 1000 + word);
            let len = 1 + (h % 9) as u32;
            let blank_line = h.is_multiple_of(17);
            let end = (x + len * CELL).min(tx + tw - CELL);
            if !blank_line {
                let ink = [0xc0 + (h >> 8) as u8 % 0x3f, 0xc0, 0xc0];
                let mut cx = x;
                while cx + CELL <= end {
                    // A glyph: a few vertical strokes that depend on the character.
                    let g = hash(h ^ u64::from(cx));
                    for stroke in 0..3 {
                        if g >> stroke & 1 == 1 {
                            fill(
                                &mut f,
                                cx + 1 + stroke * 2,
                                ty + row * LINE + 3,
                                1,
                                LINE - 6,
                                ink,
                            );
                        }
                    }
                    cx += CELL;
                }
            }
            x = end + CELL;
            word += 1;
        }
    }

    // A box sliding right, wrapping around.
    let bw = (width / 16).max(1);
    let bh = (height / 14).max(1);
    let span = u64::from(width.saturating_sub(bw).max(1));
    let bx = ((tick * 8) % span) as u32;
    fill(&mut f, bx, height.saturating_sub(bh + height / 20), bw, bh, [0x30, 0x90, 0xe0]);

    // The counter, top right.
    let digit_w = (width / 80).max(3);
    let digits = format!("{tick:06}");
    for (i, d) in digits.bytes().enumerate() {
        let x = width.saturating_sub((digits.len() as u32 - i as u32) * digit_w * 2 + digit_w);
        draw_digit(&mut f, x, height / 40, digit_w, d - b'0');
    }
    f
}

/// Seven segments: a top, b top-right, c bottom-right, d bottom, e bottom-left, f top-left, g mid.
fn draw_digit(f: &mut Frame, x: u32, y: u32, w: u32, d: u8) {
    const SEGMENTS: [u8; 10] = [0x3f, 0x06, 0x5b, 0x4f, 0x66, 0x6d, 0x7d, 0x07, 0x7f, 0x6f];
    let on = SEGMENTS[usize::from(d % 10)];
    let t = (w / 4).max(1);
    let ink = [0xff, 0xff, 0xff];
    let rects = [
        (x, y, w, t),
        (x + w - t, y, t, w),
        (x + w - t, y + w, t, w),
        (x, y + 2 * w - t, w, t),
        (x, y + w, t, w),
        (x, y, t, w),
        (x, y + w - t / 2, w, t),
    ];
    for (i, &(rx, ry, rw, rh)) in rects.iter().enumerate() {
        if on >> i & 1 == 1 {
            fill(f, rx, ry, rw, rh, ink);
        }
    }
}

/// Fill a rectangle (clipped to the frame) with `rgb`.
fn fill(f: &mut Frame, x: u32, y: u32, w: u32, h: u32, [r, g, b]: [u8; 3]) {
    let x1 = (x + w).min(f.width);
    let y1 = (y + h).min(f.height);
    if x >= x1 {
        return;
    }
    for row in y.min(y1)..y1 {
        let line = f.row_mut(row);
        for px in line[x as usize * BYTES_PER_PIXEL..x1 as usize * BYTES_PER_PIXEL]
            .chunks_exact_mut(BYTES_PER_PIXEL)
        {
            px.copy_from_slice(&[b, g, r, 0]);
        }
    }
}

/// SplitMix64: cheap, deterministic, good enough to make text look irregular.
fn hash(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_is_deterministic_and_changes_locally() {
        let mut s = SyntheticSource::new(640, 360);
        let a = s.capture(0).unwrap();
        let b = s.capture(0).unwrap();
        assert!(a.same_pixels(&s.render(0, 0)));
        assert!(b.same_pixels(&s.render(0, 1)));
        assert!(!a.same_pixels(&b));
        // Mostly static: the desktop corner does not change between frames.
        assert_eq!(a.rgb(630, 200), b.rgb(630, 200));
        assert_eq!(a.rgb(630, 200), (0x60, 0x40, 0x20));
    }

    #[test]
    fn monitors_are_capped_and_unknown_ids_refused() {
        let mut s = SyntheticSource::with_monitors(100, 100, 9);
        assert_eq!(s.monitors().unwrap().len(), MAX_MONITORS);
        let err = s.capture(4).unwrap_err();
        assert!(matches!(err, SourceError::NoSuchMonitor { id: 4, count: 4 }));
        assert!(!err.is_retryable());
    }

    #[test]
    fn tiny_sizes_do_not_panic() {
        for (w, h) in [(1, 1), (3, 2), (17, 5), (64, 64)] {
            let mut s = SyntheticSource::new(w, h);
            for _ in 0..3 {
                let f = s.capture(0).unwrap();
                assert_eq!(f.data.len(), (w * h * 4) as usize);
            }
        }
    }
}
