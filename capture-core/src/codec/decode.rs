//! The decoder. Every byte it reads is untrusted: each length, mode and vector is checked
//! against the grid before use, so a bad packet is an error and never a panic.

use super::palette;
use super::pixels::{forward, inverse, Grid, Rect};
use super::{
    check_dimensions, CodecError, HEADER_LEN, KIND_DELTA, KIND_KEY, KIND_SAME, MAX_DIMENSION,
    MODE_COPY, MODE_INTRA, MODE_RESIDUAL, MODE_SAME, PREDICTOR_LEFT, PREDICTOR_NONE,
    PREDICTOR_PALETTE, PREDICTOR_UP, SAME_PACKET_LEN, VERSION,
};
use crate::frame::{Frame, Timestamp, BYTES_PER_PIXEL};

/// Turns packets back into frames. Keeps the last decoded frame as the reference of the next
/// delta.
pub struct Decoder {
    max_dimension: u32,
    /// Last decoded frame, tightly packed BGR0; `None` until a keyframe arrives.
    reference: Option<Reference>,
    /// Where the next frame is assembled, so a failing packet leaves `reference` untouched.
    scratch: Vec<u8>,
    body: Vec<u8>,
    zstd: Option<zstd::bulk::Decompressor<'static>>,
}

struct Reference {
    width: u32,
    height: u32,
    pixels: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder accepting frames up to 16384x16384.
    pub fn new() -> Decoder {
        Self::with_max_dimensions(MAX_DIMENSION)
    }

    /// A decoder refusing frames wider or taller than `max` (at most 16384): lets a caller (or a
    /// fuzzer) bound the memory one packet can make it allocate, `max² × 4` bytes per frame.
    pub fn with_max_dimensions(max: u32) -> Decoder {
        Decoder {
            max_dimension: max.min(MAX_DIMENSION),
            reference: None,
            scratch: Vec::new(),
            body: Vec::new(),
            zstd: None,
        }
    }

    /// Forgets the reference frame: the next packet must be a keyframe.
    pub fn reset(&mut self) {
        self.reference = None;
    }

    /// Decodes one packet. A delta or same packet before any keyframe is an error. The returned
    /// frame is tightly packed, its X bytes are 0 and `captured_at` is zeroed.
    pub fn decode(&mut self, packet: &[u8]) -> Result<Frame, CodecError> {
        if packet.len() < SAME_PACKET_LEN {
            return Err(CodecError::Truncated { needed: SAME_PACKET_LEN, got: packet.len() });
        }
        if packet[0] != VERSION {
            return Err(CodecError::UnsupportedVersion(packet[0]));
        }
        let kind = packet[1];
        let width = read_u32(&packet[2..6]);
        let height = read_u32(&packet[6..10]);
        check_dimensions(width, height, self.max_dimension)?;
        match kind {
            KIND_KEY => {}
            KIND_DELTA | KIND_SAME => match &self.reference {
                None => return Err(CodecError::DeltaWithoutKeyframe),
                Some(r) if (r.width, r.height) != (width, height) => {
                    return Err(CodecError::SizeMismatch {
                        width: r.width,
                        height: r.height,
                        got_width: width,
                        got_height: height,
                    })
                }
                Some(_) => {}
            },
            other => return Err(CodecError::UnknownKind(other)),
        }
        if kind == KIND_SAME {
            if packet.len() != SAME_PACKET_LEN {
                return Err(CodecError::Corrupt("trailing bytes after a same packet"));
            }
            return Ok(self.output());
        }
        if packet.len() < HEADER_LEN {
            return Err(CodecError::Truncated { needed: HEADER_LEN, got: packet.len() });
        }
        let grid = Grid::new(width, height, packet[10], packet[11])?;
        let predictor = packet[12];
        if ![PREDICTOR_LEFT, PREDICTOR_NONE, PREDICTOR_UP, PREDICTOR_PALETTE].contains(&predictor) {
            return Err(CodecError::Corrupt("unknown predictor"));
        }
        if predictor == PREDICTOR_PALETTE && kind != KIND_KEY {
            return Err(CodecError::Corrupt("palette in a delta packet"));
        }
        let body_len = read_u32(&packet[13..17]) as usize;
        if body_len > grid.max_body_len() + palette::MAX_TABLE_BYTES {
            return Err(CodecError::Corrupt("body longer than the frame size allows"));
        }
        self.decompress(&packet[HEADER_LEN..], body_len)?;

        let frame_len = grid.width * grid.height * BYTES_PER_PIXEL;
        let empty = Vec::new();
        let prev: &[u8] = match (&self.reference, kind) {
            (Some(r), KIND_DELTA) => &r.pixels,
            _ => &empty,
        };
        self.scratch.clear();
        if prev.is_empty() {
            self.scratch.resize(frame_len, 0);
        } else {
            self.scratch.extend_from_slice(prev);
        }
        apply_body(&grid, predictor, &self.body, prev, &mut self.scratch)?;

        let reference =
            self.reference.get_or_insert_with(|| Reference { width, height, pixels: Vec::new() });
        reference.width = width;
        reference.height = height;
        std::mem::swap(&mut reference.pixels, &mut self.scratch);
        Ok(self.output())
    }

    fn decompress(&mut self, compressed: &[u8], body_len: usize) -> Result<(), CodecError> {
        if self.zstd.is_none() {
            self.zstd = Some(zstd::bulk::Decompressor::new().map_err(CodecError::Zstd)?);
        }
        let Some(zstd) = self.zstd.as_mut() else {
            return Err(CodecError::Corrupt("zstd context unavailable"));
        };
        self.body.clear();
        // Capacity is exactly the declared length, already bounded by the frame size: zstd
        // refuses to write more than the capacity, so a lying packet cannot make us grow.
        self.body.reserve_exact(body_len);
        let n = zstd.decompress_to_buffer(compressed, &mut self.body).map_err(CodecError::Zstd)?;
        if n != body_len || self.body.len() != body_len {
            return Err(CodecError::Corrupt("body length differs from the header"));
        }
        Ok(())
    }

    fn output(&self) -> Frame {
        let (width, height, data) = match &self.reference {
            Some(r) => (r.width, r.height, r.pixels.clone()),
            None => (0, 0, Vec::new()),
        };
        Frame {
            width,
            height,
            stride: width as usize * BYTES_PER_PIXEL,
            data,
            captured_at: Timestamp { utc_micros: 0, mono_micros: 0 },
        }
    }
}

fn read_u32(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Applies a decompressed body to `out`, which holds a copy of `prev` (or zeros for a keyframe,
/// where `prev` is empty).
fn apply_body(
    grid: &Grid,
    predictor: u8,
    body: &[u8],
    prev: &[u8],
    out: &mut [u8],
) -> Result<(), CodecError> {
    let tiles = grid.tiles();
    let modes = body.get(..tiles).ok_or(CodecError::Corrupt("body shorter than the tile map"))?;
    let keyframe = prev.is_empty();
    if predictor == PREDICTOR_PALETTE {
        if !keyframe || modes.iter().any(|&m| m != MODE_INTRA) {
            return Err(CodecError::Corrupt("palette frame with a tile that is not intra"));
        }
        return palette::apply(grid, &body[tiles..], out);
    }
    let mut moved = 0usize;
    let mut coded_pixels = 0usize;
    for (tile, &mode) in modes.iter().enumerate() {
        match mode {
            MODE_INTRA => {}
            MODE_SAME | MODE_COPY | MODE_RESIDUAL if keyframe => {
                return Err(CodecError::Corrupt("keyframe tile refers to a previous frame"))
            }
            MODE_SAME => continue,
            MODE_COPY | MODE_RESIDUAL => moved += 1,
            _ => return Err(CodecError::Corrupt("unknown tile mode")),
        }
        if mode != MODE_COPY {
            let r = grid.rect(tile);
            coded_pixels += r.w * r.h;
        }
    }
    let vec_end = tiles + 4 * moved;
    let expected = vec_end + 3 * coded_pixels;
    if body.len() != expected {
        return Err(CodecError::Corrupt("body length does not match its tile map"));
    }
    let mut vectors = body[tiles..vec_end].chunks_exact(4);
    let planes = [
        &body[vec_end..vec_end + coded_pixels],
        &body[vec_end + coded_pixels..vec_end + 2 * coded_pixels],
        &body[vec_end + 2 * coded_pixels..expected],
    ];

    // Sources of moved tiles, indexed by tile, checked against the previous frame first.
    let mut sources: Vec<Option<(usize, usize)>> = vec![None; tiles];
    for (tile, &mode) in modes.iter().enumerate() {
        if mode == MODE_COPY || mode == MODE_RESIDUAL {
            let v = vectors.next().ok_or(CodecError::Corrupt("missing vector"))?;
            let dx = i16::from_le_bytes([v[0], v[1]]) as isize;
            let dy = i16::from_le_bytes([v[2], v[3]]) as isize;
            let r = grid.rect(tile);
            let sx = r.x as isize + dx;
            let sy = r.y as isize + dy;
            if sx < 0 || sy < 0 || sx as usize + r.w > grid.width || sy as usize + r.h > grid.height
            {
                return Err(CodecError::Corrupt("moved tile's source lies outside the frame"));
            }
            sources[tile] = Some((sx as usize, sy as usize));
            if mode == MODE_COPY {
                copy_rect(grid, prev, out, r, sx as usize, sy as usize);
            }
        }
    }

    let stride = grid.width * BYTES_PER_PIXEL;
    let mut at = 0usize;
    let mut band_tiles = Vec::with_capacity(grid.tiles_x);
    for ty in 0..grid.tiles_y {
        band_tiles.clear();
        for tx in 0..grid.tiles_x {
            let tile = ty * grid.tiles_x + tx;
            if modes[tile] == MODE_INTRA || modes[tile] == MODE_RESIDUAL {
                band_tiles.push(tile);
            }
        }
        if band_tiles.is_empty() {
            continue;
        }
        let band_h = grid.tile_h.min(grid.height - ty * grid.tile_h);
        for dy in 0..band_h {
            for &tile in &band_tiles {
                let r = grid.rect(tile);
                let y = r.y + dy;
                let n = r.w;
                let (p0, p1, p2) =
                    (&planes[0][at..at + n], &planes[1][at..at + n], &planes[2][at..at + n]);
                at += n;
                let row = &mut out[y * stride + r.x * 4..y * stride + (r.x + n) * 4];
                if modes[tile] == MODE_INTRA && predictor == PREDICTOR_UP && y > 0 {
                    // Rows before `y` are final: earlier rows of this tile, or tiles above.
                    let (done, rest) = out.split_at_mut(y * stride);
                    let above = &done[(y - 1) * stride + r.x * 4..(y - 1) * stride + (r.x + n) * 4];
                    add_prediction(&mut rest[r.x * 4..(r.x + n) * 4], above, [p0, p1, p2]);
                } else if modes[tile] == MODE_INTRA {
                    let mut pred = if dy > 0 && predictor == PREDICTOR_LEFT {
                        let above = (y - 1) * stride + r.x * 4;
                        forward(&out[above..above + 4])
                    } else {
                        [0; 3]
                    };
                    let row = &mut out[y * stride + r.x * 4..y * stride + (r.x + n) * 4];
                    for (i, px) in row.chunks_exact_mut(4).enumerate() {
                        let t = [
                            p0[i].wrapping_add(pred[0]),
                            p1[i].wrapping_add(pred[1]),
                            p2[i].wrapping_add(pred[2]),
                        ];
                        inverse(t, px);
                        if predictor != PREDICTOR_NONE {
                            pred = t;
                        }
                    }
                } else {
                    let Some((sx, sy)) = sources[tile] else {
                        return Err(CodecError::Corrupt("residual tile without a source"));
                    };
                    let src = (sy + dy) * stride + sx * 4;
                    add_prediction(row, &prev[src..src + n * 4], [p0, p1, p2]);
                }
            }
        }
    }
    Ok(())
}

/// Writes each pixel of `row` as its prediction (the pixel of `pred` at the same place) plus
/// the coded difference from the three planes, in the transformed domain.
fn add_prediction(row: &mut [u8], pred: &[u8], planes: [&[u8]; 3]) {
    for (i, (px, s)) in row.chunks_exact_mut(4).zip(pred.chunks_exact(4)).enumerate() {
        let p = forward(s);
        let t = [
            planes[0][i].wrapping_add(p[0]),
            planes[1][i].wrapping_add(p[1]),
            planes[2][i].wrapping_add(p[2]),
        ];
        inverse(t, px);
    }
}

fn copy_rect(grid: &Grid, prev: &[u8], out: &mut [u8], r: Rect, sx: usize, sy: usize) {
    let stride = grid.width * BYTES_PER_PIXEL;
    for dy in 0..r.h {
        let src = (sy + dy) * stride + sx * 4;
        let dst = (r.y + dy) * stride + r.x * 4;
        out[dst..dst + r.w * 4].copy_from_slice(&prev[src..src + r.w * 4]);
    }
}
