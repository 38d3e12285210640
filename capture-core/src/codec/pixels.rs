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
    const MASK: u64 = 0x00ff_ffff_00ff_ffff;
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = px.len() as u64;
    let mut chunks = px.chunks_exact(8);
    for c in &mut chunks {
        let w = word(c) & MASK;
        h = (h.rotate_left(23) ^ w).wrapping_mul(K);
    }
    let rest = chunks.remainder();
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

/// Whether two runs of BGRX pixels of equal length agree on B, G and R.
pub(crate) fn same_pixels(a: &[u8], b: &[u8]) -> bool {
    const MASK: u64 = 0x00ff_ffff_00ff_ffff;
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u64;
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        diff |= (word(x) ^ word(y)) & MASK;
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    if ra.len() >= 4 {
        diff |= ((ra[0] ^ rb[0]) | (ra[1] ^ rb[1]) | (ra[2] ^ rb[2])) as u64;
    }
    diff == 0
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
    fn edge_tiles_are_cut_to_the_frame() {
        let g = Grid::new(70, 33, 32, 16).unwrap();
        assert_eq!((g.tiles_x, g.tiles_y), (3, 3));
        assert_eq!(g.rect(2), Rect { x: 64, y: 0, w: 6, h: 16 });
        assert_eq!(g.rect(8), Rect { x: 64, y: 32, w: 6, h: 1 });
    }
}
