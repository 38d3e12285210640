//! Palette keyframes (predictor 3, format in the parent module's docs): a frame of at most
//! [`MAX_COLOURS`] colours, which is what a desktop of flat panels and unsmoothed text is, sent
//! as one byte per pixel that is either "the colour of the pixel above" or a palette entry.

use super::pixels::Grid;
use super::CodecError;
use crate::frame::{Frame, BYTES_PER_PIXEL};

/// Most colours a palette keyframe may list: stored values are 1..=255 (0 means "as above").
pub(crate) const MAX_COLOURS: usize = 255;
/// Bytes a palette adds before the pixels: its count byte and three bytes per colour.
pub(crate) const MAX_TABLE_BYTES: usize = 1 + 3 * MAX_COLOURS;

/// Open-addressing table of the colours seen so far (B, G, R as a 24-bit key): small enough to
/// stay in L1, and a frame with more colours than fit is not a palette frame anyway.
const SLOTS: usize = 1024;
const EMPTY: u32 = u32::MAX;

/// The colours of a frame, in first-seen order, and how many pixels have each.
pub(crate) struct Colours {
    colours: Vec<u32>,
    counts: Vec<usize>,
}

/// Finds the colours of `frame` and each pixel's palette index (in first-seen order) into
/// `indices`; `None` as soon as there are more than [`MAX_COLOURS`].
pub(crate) fn index_frame(frame: &Frame, indices: &mut Vec<u8>) -> Option<Colours> {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let mut keys = [EMPTY; SLOTS];
    let mut slot_index = [0u8; SLOTS];
    let mut colours = Colours { colours: Vec::with_capacity(MAX_COLOURS), counts: Vec::new() };
    indices.resize(w * h, 0);
    // Runs of one colour (most of a screen) cost a compare per pixel and a count per run.
    let (mut last, mut last_index, mut run) = (EMPTY, 0u8, 0usize);
    for (y, out) in indices.chunks_exact_mut(w).enumerate() {
        let row = &frame.row(y as u32)[..w * BYTES_PER_PIXEL];
        for (px, slot) in row.chunks_exact(4).zip(out.iter_mut()) {
            let key = u32::from_le_bytes([px[0], px[1], px[2], px[3]]) & 0x00ff_ffff;
            if key != last {
                let mut s = (key.wrapping_mul(0x9e37_79b1) >> 22) as usize % SLOTS;
                while keys[s] != key && keys[s] != EMPTY {
                    s = (s + 1) % SLOTS;
                }
                if keys[s] == EMPTY {
                    if colours.colours.len() == MAX_COLOURS {
                        return None;
                    }
                    keys[s] = key;
                    slot_index[s] = colours.colours.len() as u8;
                    colours.colours.push(key);
                    colours.counts.push(0);
                }
                if run > 0 {
                    colours.counts[last_index as usize] += run;
                }
                (last, last_index, run) = (key, slot_index[s], 0);
            }
            run += 1;
            *slot = last_index;
        }
    }
    if run > 0 {
        colours.counts[last_index as usize] += run;
    }
    Some(colours)
}

/// Writes the palette body after the tile map already in `body`: colours most frequent first
/// (small values for what is common), then each pixel's stored value.
pub(crate) fn write_body(grid: &Grid, colours: &Colours, indices: &[u8], body: &mut Vec<u8>) {
    let Colours { colours, counts } = colours;
    let mut order: Vec<usize> = (0..colours.len()).collect();
    order.sort_unstable_by(|&a, &b| counts[b].cmp(&counts[a]).then(a.cmp(&b)));
    // rank[first-seen index] = stored value of that colour (1-based).
    let mut rank = [0u8; 256];
    body.push((colours.len() - 1) as u8);
    for (r, &c) in order.iter().enumerate() {
        rank[c] = r as u8 + 1;
        body.extend_from_slice(&colours[c].to_le_bytes()[..3]);
    }
    let (w, start) = (grid.width, body.len());
    body.resize(start + indices.len(), 0);
    let out = &mut body[start..];
    for (o, &i) in out[..w].iter_mut().zip(indices) {
        *o = rank[i as usize];
    }
    let below = indices[w..].iter().zip(&indices[..indices.len() - w]);
    for (o, (&i, &above)) in out[w..].iter_mut().zip(below) {
        *o = if i == above { 0 } else { rank[i as usize] };
    }
}

/// Decodes a palette body (after the tile map) into `out`, a whole frame of BGRX.
pub(crate) fn apply(grid: &Grid, body: &[u8], out: &mut [u8]) -> Result<(), CodecError> {
    let (&count, rest) = body.split_first().ok_or(CodecError::Corrupt("palette missing"))?;
    let count = count as usize + 1;
    if count > MAX_COLOURS {
        return Err(CodecError::Corrupt("palette longer than 255 colours"));
    }
    let (table, values) =
        rest.split_at_checked(3 * count).ok_or(CodecError::Corrupt("palette truncated"))?;
    if values.len() != grid.width * grid.height {
        return Err(CodecError::Corrupt("palette body length does not match the frame"));
    }
    let stride = grid.width * BYTES_PER_PIXEL;
    for (y, row) in values.chunks_exact(grid.width).enumerate() {
        for (x, &v) in row.iter().enumerate() {
            let at = y * stride + x * 4;
            if v == 0 {
                if y == 0 {
                    return Err(CodecError::Corrupt("palette 'as above' on the top row"));
                }
                out.copy_within(at - stride..at - stride + 4, at);
            } else {
                let c = (v as usize - 1) * 3;
                let colour =
                    table.get(c..c + 3).ok_or(CodecError::Corrupt("palette index out of range"))?;
                out[at..at + 3].copy_from_slice(colour);
                out[at + 3] = 0;
            }
        }
    }
    Ok(())
}
