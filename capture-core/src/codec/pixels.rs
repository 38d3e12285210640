//! Pieces the encoder and decoder must agree on bit for bit: the tile grid, the colour
//! transform and the byte size bounds.

use super::CodecError;

/// The tile grid of one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grid {
    pub width: usize,
    pub height: usize,
    pub tile_w: usize,
    pub tile_h: usize,
    pub tiles_x: usize,
    pub tiles_y: usize,
}

/// One tile's rectangle in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rect {
    pub x: usize,
    pub y: usize,
    pub w: usize,
    pub h: usize,
}

impl Grid {
    pub fn new(width: u32, height: u32, tile_w: u8, tile_h: u8) -> Result<Grid, CodecError> {
        if !(super::MIN_TILE..=super::MAX_TILE).contains(&tile_w)
            || !(super::MIN_TILE..=super::MAX_TILE).contains(&tile_h)
        {
            return Err(CodecError::Corrupt("tile size out of range"));
        }
        let (width, height) = (width as usize, height as usize);
        let (tile_w, tile_h) = (tile_w as usize, tile_h as usize);
        Ok(Grid {
            width,
            height,
            tile_w,
            tile_h,
            tiles_x: width.div_ceil(tile_w),
            tiles_y: height.div_ceil(tile_h),
        })
    }

    pub fn tiles(&self) -> usize {
        self.tiles_x * self.tiles_y
    }

    pub fn rect(&self, tile: usize) -> Rect {
        let (tx, ty) = (tile % self.tiles_x, tile / self.tiles_x);
        let (x, y) = (tx * self.tile_w, ty * self.tile_h);
        Rect { x, y, w: self.tile_w.min(self.width - x), h: self.tile_h.min(self.height - y) }
    }

    /// The largest body a packet of this grid can have: every tile moved and coded.
    pub fn max_body_len(&self) -> usize {
        self.tiles() * 5 + 3 * self.width * self.height
    }
}

/// G, B−G, R−G of a BGRX pixel: grey pixels (text, most of a UI) leave planes 1 and 2 at zero.
#[inline(always)]
pub(crate) fn forward(px: &[u8]) -> [u8; 3] {
    let (b, g, r) = (px[0], px[1], px[2]);
    [g, b.wrapping_sub(g), r.wrapping_sub(g)]
}

/// Inverse of [`forward`], written as B, G, R, 0.
#[inline(always)]
pub(crate) fn inverse(t: [u8; 3], out: &mut [u8]) {
    let g = t[0];
    out[0] = t[1].wrapping_add(g);
    out[1] = g;
    out[2] = t[2].wrapping_add(g);
    out[3] = 0;
}

/// Fast non-cryptographic hash of a run of BGRX pixels, ignoring the X byte. Equal hashes only
/// *suggest* equal pixels; every match is verified before it is used.
pub(crate) fn hash_pixels(px: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    // Four independent lanes, so the multiplies of a row overlap instead of waiting on each
    // other; folded together at the end.
    let mut lanes = [px.len() as u64, 1, 2, 3];
    let mut chunks = px.chunks_exact(32);
    for c in &mut chunks {
        for (lane, w) in lanes.iter_mut().zip(c.chunks_exact(8)) {
            *lane = (lane.rotate_left(23) ^ (word(w) & BGR)).wrapping_mul(K);
        }
    }
    let mut h = lanes[0];
    for lane in &lanes[1..] {
        h = (h.rotate_left(23) ^ lane).wrapping_mul(K);
    }
    let mut rest = chunks.remainder().chunks_exact(8);
    for c in &mut rest {
        h = (h.rotate_left(23) ^ (word(c) & BGR)).wrapping_mul(K);
    }
    let rest = rest.remainder();
    if rest.len() >= 4 {
        let w = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) & 0x00ff_ffff;
        h = (h.rotate_left(23) ^ w as u64).wrapping_mul(K);
    }
    h ^ (h >> 29)
}

/// Eight bytes as one little-endian word (one load, where indexing byte by byte is eight).
#[inline(always)]
fn word(c: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&c[..8]);
    u64::from_le_bytes(w)
}

/// B, G, R bytes of every pixel of a little-endian word of two BGRX pixels.
const BGR: u64 = 0x00ff_ffff_00ff_ffff;

/// Whether two runs of BGRX pixels of equal length agree on B, G and R.
pub(crate) fn same_pixels(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    // Captures repeat their X bytes from frame to frame, so a plain memcmp (SIMD in libc)
    // settles nearly every equal run; only runs that differ somewhere get the masked look.
    if a == b {
        return true;
    }
    let mut diff = 0u64;
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        diff |= (word(x) ^ word(y)) & BGR;
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    if ra.len() >= 4 {
        diff |= ((ra[0] ^ rb[0]) | (ra[1] ^ rb[1]) | (ra[2] ^ rb[2])) as u64;
    }
    diff == 0
}

/// Each byte of the result is 1 where that byte of `d` is nonzero, else 0: adding 0x7f to a
/// byte's low seven bits carries into its bit 7 unless they are all zero, and never past the
/// byte; bit 7 then moves down to bit 0.
#[inline(always)]
fn nonzero_flags(d: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    ((((d & LOW7) + LOW7) | d) & !LOW7) >> 7
}

/// Sum of the eight byte lanes of `lanes` (each at most [`FOLD_WORDS`], so the partial sums
/// stay under 256 and the total lands in the top byte).
#[inline(always)]
fn fold_lanes(lanes: u64) -> usize {
    (lanes.wrapping_mul(0x0101_0101_0101_0101) >> 56) as usize
}

/// Words a lane counter may take before it must be folded (a lane gains at most 1 per word,
/// and eight lanes of at most 31 sum to less than 256).
const FOLD_WORDS: usize = 31;

/// Nonzero bytes of `f(word of a, word of b)` over the whole words (pixel pairs) the two runs
/// share, counted a word at a time without a branch per byte; and how many bytes that covered
/// (the caller handles a last odd pixel).
#[inline(always)]
fn nonzero_in_words(a: &[u8], b: &[u8], f: impl Fn(u64, u64) -> u64) -> (usize, usize) {
    let len = a.len().min(b.len()) / 8 * 8;
    let mut total = 0;
    for (x, y) in a[..len].chunks(8 * FOLD_WORDS).zip(b[..len].chunks(8 * FOLD_WORDS)) {
        let mut lanes = 0u64;
        for (x, y) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
            lanes += nonzero_flags(f(word(x), word(y)));
        }
        total += fold_lanes(lanes);
    }
    (total, len)
}

/// How many B, G, R bytes differ between two runs of BGRX pixels of equal length.
pub(crate) fn differing_bytes(a: &[u8], b: &[u8]) -> usize {
    let (mut total, n) = nonzero_in_words(a, b, |x, y| (x ^ y) & BGR);
    if let (Some(x), Some(y)) = (a.get(n..n + 4), b.get(n..n + 4)) {
        total += (x[0] != y[0]) as usize + (x[1] != y[1]) as usize + (x[2] != y[2]) as usize;
    }
    total
}

/// Byte-wise wrapping `a − b` of two words (no borrow crosses a byte).
#[inline(always)]
fn sub_bytes(a: u64, b: u64) -> u64 {
    const HIGH: u64 = 0x8080_8080_8080_8080;
    ((a | HIGH) - (b & !HIGH)) ^ ((a ^ !b) & HIGH)
}

/// Nonzero bytes [`forward`] gives for a run of pixels each predicted by its left neighbour
/// (the run's first pixel is not counted): the cost model of an intra tile row.
pub(crate) fn left_residual_bytes(run: &[u8]) -> usize {
    if run.len() < 8 {
        return 0;
    }
    residual_bytes(&run[4..], &run[..run.len() - 4])
}

/// Nonzero bytes of `forward(cur − pred)` over two runs of BGRX pixels of equal length: what
/// [`forward_diff`] would write that is not zero. `forward` is linear mod 256, so
/// `forward(p) − forward(q)` is `forward(p − q)`: its G is `g − g'`, and its B − G and R − G
/// are zero exactly when `b − b'` resp. `r − r'` equal `g − g'`.
pub(crate) fn residual_bytes(cur: &[u8], pred: &[u8]) -> usize {
    const G: u64 = 0x0000_ff00_0000_ff00;
    const B_AND_R: u64 = 0x00ff_00ff_00ff_00ff;
    let (mut total, n) = nonzero_in_words(cur, pred, |c, l| {
        let d = sub_bytes(c, l);
        // g − g' copied under b and r of each pixel.
        let g = ((d >> 8) & 0x0000_00ff_0000_00ff) | ((d << 8) & 0x00ff_0000_00ff_0000);
        ((d ^ g) & B_AND_R) | (d & G)
    });
    if let (Some(c), Some(l)) = (cur.get(n..n + 4), pred.get(n..n + 4)) {
        let (p, q) = (forward(c), forward(l));
        total += (p[0] != q[0]) as usize + (p[1] != q[1]) as usize + (p[2] != q[2]) as usize;
    }
    total
}

/// Writes `forward(cur − pred)` of every pixel into the three planes (one byte each per
/// pixel): the coded value of a pixel predicted by `pred`, which is `forward` of their
/// byte-wise difference because `forward` is linear mod 256.
#[inline]
pub(crate) fn forward_diff(cur: &[u8], pred: &[u8], o0: &mut [u8], o1: &mut [u8], o2: &mut [u8]) {
    let n = o0.len();
    let (cur, pred, o1, o2) = (&cur[..n * 4], &pred[..n * 4], &mut o1[..n], &mut o2[..n]);
    // Whole pixels as u32 and plain zips: a shape the compiler turns into SIMD.
    let outputs = o0.iter_mut().zip(o1.iter_mut()).zip(o2.iter_mut());
    for ((c, p), ((g, bg), rg)) in cur.chunks_exact(4).zip(pred.chunks_exact(4)).zip(outputs) {
        let c = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        let p = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
        const HIGH: u32 = 0x8080_8080;
        let d = ((c | HIGH) - (p & !HIGH)) ^ ((c ^ !p) & HIGH);
        *g = (d >> 8) as u8;
        *bg = (d as u8).wrapping_sub(*g);
        *rg = ((d >> 16) as u8).wrapping_sub(*g);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transform_round_trips_every_colour_byte() {
        for b in 0..=255u8 {
            for g in (0..=255u8).step_by(7) {
                for r in (0..=255u8).step_by(13) {
                    let mut out = [9u8; 4];
                    inverse(forward(&[b, g, r, 77]), &mut out);
                    assert_eq!(out, [b, g, r, 0]);
                }
            }
        }
    }

    #[test]
    fn comparison_and_hash_ignore_the_x_byte() {
        let a = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let b = [1, 2, 3, 99, 5, 6, 7, 0, 9, 10, 11, 255];
        assert!(same_pixels(&a, &b));
        assert_eq!(hash_pixels(&a), hash_pixels(&b));
        let c = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 12];
        assert!(!same_pixels(&a, &c));
        assert_ne!(hash_pixels(&a), hash_pixels(&c));
    }

    #[test]
    fn differing_bytes_counts_b_g_r_only() {
        let a: Vec<u8> = (0..4 * 700).map(|i| (i * 7 % 251) as u8).collect();
        let mut b = a.clone();
        assert_eq!(differing_bytes(&a, &b), 0);
        // X bytes do not count; each changed B, G or R byte counts once, in the words and in a
        // trailing odd pixel, and past the 255-word fold.
        for (i, v) in b.iter_mut().enumerate() {
            match i % 4 {
                3 => *v ^= 0xff,
                0 if i % 12 == 0 => *v ^= 0x80,
                2 if i % 20 == 2 => *v = v.wrapping_add(1),
                _ => {}
            }
        }
        let want = a.iter().zip(&b).enumerate().filter(|(i, (x, y))| i % 4 != 3 && x != y).count();
        assert!(want > 200);
        assert_eq!(differing_bytes(&a, &b), want);
        assert_eq!(differing_bytes(&a[..4 * 699], &b[..4 * 699]), {
            a[..4 * 699]
                .iter()
                .zip(&b)
                .enumerate()
                .filter(|(i, (x, y))| i % 4 != 3 && x != y)
                .count()
        });
    }

    #[test]
    fn left_residual_and_forward_diff_agree_with_forward() {
        // Grey runs, colour runs, wrap-around differences, odd lengths past the fold.
        let run: Vec<u8> = (0..4 * 301u32)
            .map(|i| match (i / 4) % 7 {
                0 | 1 => 200,
                2 => (i * 37 % 256) as u8,
                3 => [0u8, 255, 1, 9][(i % 4) as usize],
                _ => (i / 4 * 3 % 256) as u8,
            })
            .collect();
        for len in [0, 1, 2, 3, 17, 32, 63, 64, 65, 301] {
            let run = &run[..4 * len];
            let mut want = 0;
            for i in 1..len {
                let (p, q) = (forward(&run[4 * i..4 * i + 4]), forward(&run[4 * i - 4..4 * i]));
                want += (0..3).filter(|&c| p[c] != q[c]).count();
            }
            assert_eq!(left_residual_bytes(run), want, "length {len}");
            if len > 1 {
                let n = len - 1;
                let (mut o0, mut o1, mut o2) = (vec![0; n], vec![0; n], vec![0; n]);
                forward_diff(&run[4..], run, &mut o0, &mut o1, &mut o2);
                for i in 0..n {
                    let (p, q) =
                        (forward(&run[4 * i + 4..4 * i + 8]), forward(&run[4 * i..4 * i + 4]));
                    let d =
                        [p[0].wrapping_sub(q[0]), p[1].wrapping_sub(q[1]), p[2].wrapping_sub(q[2])];
                    assert_eq!([o0[i], o1[i], o2[i]], d, "length {len}, pixel {i}");
                }
            }
        }
    }

    #[test]
    fn edge_tiles_are_cut_to_the_frame() {
        let g = Grid::new(70, 33, 32, 16).unwrap();
        assert_eq!((g.tiles_x, g.tiles_y), (3, 3));
        assert_eq!(g.rect(2), Rect { x: 64, y: 0, w: 6, h: 16 });
        assert_eq!(g.rect(8), Rect { x: 64, y: 32, w: 6, h: 1 });
    }
}
