//! The encoder: finds what changed since the previous frame, what merely moved, and codes the
//! rest (format in the parent module's docs).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::palette;
use super::pixels::{
    differing_bytes, forward, forward_diff, hash_pixels, left_residual_bytes, residual_bytes,
    same_pixels, Grid, Rect,
};
use super::{
    check_dimensions, CodecError, PacketKind, KIND_DELTA, KIND_KEY, KIND_SAME, MAX_DIMENSION,
    MAX_TILE, MODE_COPY, MODE_INTRA, MODE_RESIDUAL, MODE_SAME, PREDICTOR_LEFT, PREDICTOR_NONE,
    PREDICTOR_PALETTE, PREDICTOR_UP, VERSION,
};
use crate::frame::{Frame, BYTES_PER_PIXEL};

/// Largest zstd window (log2 bytes) a stream uses: zstd's default decoder limit, which the
/// format docs promise readers.
pub const MAX_WINDOW_LOG: u32 = 27;

/// Tuning of an [`Encoder`]. Any value the checks accept yields a valid stream; the defaults
/// are what the codec benchmark measured best on a 1080p desktop within the encode budget of
/// 5 ms per frame (issue 2).
///
/// On the benchmark's 120 s desktop recording (1 fps, a keyframe every 10 frames), zstd above
/// level 4 switches to lazy matching and costs several times as much: keyframes at level 9
/// took 14.5 ms of zstd for 35 % fewer keyframe bytes than level 3 (3 ms), deltas at level 5
/// took 1.1 ms for 7 % fewer delta bytes than level 3 (0.3 ms). Level 3 for both keeps bytes
/// per hour near a third of lossless x264 (`libx264rgb -qp 0 -preset veryfast`) on the same
/// frames, under the target of half.
///
/// Keyframes then made half our bytes (issue 18). On the bench's 120-frame 1080p recording
/// (`rearview-bench codec --input FILE --width 1920 --height 1080`), keyframes coded with the
/// "up" predictor instead of "left" came out 44 % smaller (1 160 087 → 650 999 bytes for 12,
/// same zstd level), and as palettes (every keyframe of that desktop has under 256 colours)
/// 72 % smaller (325 413 bytes): 67.7 → 42.7 MB/hour, for 13.6 → 19.7 ms per keyframe. For
/// deltas "up" was 1 % worse than "left" (533 819 against 528 681 bytes over 60 frames), so
/// deltas keep "left".
///
/// zstd's long-distance matcher then found what level 3 misses on those palette keyframes
/// (a line of text repeated a screen away): 325 413 → 239 395 bytes for the 12, for about
/// 3 ms more per keyframe (best of three runs of `examples/encode_raw`: 18.0 → 21.0 ms).
/// Levels 5 and 9 with it gave 217 523 and 194 478 bytes for 23.8 and 26.6 ms: less gain per
/// millisecond than long-distance matching at level 3 itself, so level 3 stays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EncoderConfig {
    /// Tile width in pixels, 8..=128.
    pub tile_w: u8,
    /// Tile height in pixels, 8..=128. Shorter tiles follow scrolled regions' edges closer.
    pub tile_h: u8,
    /// zstd level of keyframes (once per segment, 1 in 10 frames by default).
    pub key_level: i32,
    /// zstd level of deltas.
    pub delta_level: i32,
    /// zstd window (log2 bytes) of keyframes, 0 for zstd's default for the level; a window
    /// covering a whole plane lets matches reach across it. At most [`MAX_WINDOW_LOG`].
    pub key_window_log: u32,
    /// Spatial predictor of keyframes (when not a palette).
    pub key_predictor: Predictor,
    /// Spatial predictor of intra tiles of deltas.
    pub delta_predictor: Predictor,
    /// Send a keyframe of at most 255 colours as a palette (predictor 3) instead.
    pub key_palette: bool,
    /// zstd long-distance matching on keyframes: finds repeats a whole screen apart (the same
    /// line of text in two windows) that the level's own match finder is too short-sighted for.
    pub key_long_distance: bool,
}

/// How intra pixels are predicted before the entropy stage (the packet's `predictor` byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Predictor {
    /// Stored as they are.
    None,
    /// From the pixel to the left within the tile (the tile's first column from above).
    Left,
    /// From the pixel above in the frame (the frame's top row from the left).
    Up,
}

impl Predictor {
    fn byte(self) -> u8 {
        match self {
            Predictor::None => PREDICTOR_NONE,
            Predictor::Left => PREDICTOR_LEFT,
            Predictor::Up => PREDICTOR_UP,
        }
    }
}

impl Default for EncoderConfig {
    fn default() -> Self {
        EncoderConfig {
            tile_w: 32,
            tile_h: 32,
            key_level: 3,
            delta_level: 3,
            key_window_log: 0,
            key_predictor: Predictor::Up,
            delta_predictor: Predictor::Left,
            key_palette: true,
            key_long_distance: true,
        }
    }
}

/// Turns frames of one fixed size into packets.
pub struct Encoder {
    grid: Grid,
    /// The previous frame, tightly packed. Its X bytes are the source's, not the decoder's 0:
    /// they keep unchanged rows byte-identical to the next capture, so one memcmp settles them;
    /// every comparison that decides anything ignores them.
    prev: Vec<u8>,
    need_key: bool,
    modes: Vec<u8>,
    /// Per tile: source offset of a mode 1 or 3 tile.
    vectors: Vec<(i16, i16)>,
    /// Changed tiles of the current delta, in tile order.
    changed: Vec<usize>,
    /// Hash of every row of `prev` within each tile column: `[column * height + y]`, for the
    /// columns whose `hashed` is set. A column is hashed when a delta first needs it, so a
    /// keyframe (which replaces every column) costs no hashing and a column that never
    /// changes is never hashed.
    hashes: Vec<u64>,
    hashed: Vec<bool>,
    /// The same for the frame being encoded, in the changed columns only.
    cur_hashes: Vec<u64>,
    /// The body being built: written in place, every byte of it, so it is never cleared.
    body: Vec<u8>,
    /// Palette index of every pixel of a keyframe being tried as a palette frame.
    indices: Vec<u8>,
    compressed: Vec<u8>,
    /// Delta compressor; keyframes get their own context with their own level and window.
    zstd: zstd::bulk::Compressor<'static>,
    zstd_key: Option<zstd::bulk::Compressor<'static>>,
    config: EncoderConfig,
}

impl Encoder {
    /// An encoder for `width` x `height` frames (each side 1..=16384).
    pub fn new(width: u32, height: u32) -> Result<Encoder, CodecError> {
        Self::with_config(width, height, EncoderConfig::default())
    }

    /// An encoder with explicit tuning (benchmarks and experiments).
    pub fn with_config(
        width: u32,
        height: u32,
        config: EncoderConfig,
    ) -> Result<Encoder, CodecError> {
        check_dimensions(width, height, MAX_DIMENSION)?;
        let grid = Grid::new(width, height, config.tile_w, config.tile_h)?;
        let zstd = zstd::bulk::Compressor::new(config.delta_level).map_err(CodecError::Zstd)?;
        Ok(Encoder {
            grid,
            prev: vec![0; grid.width * grid.height * BYTES_PER_PIXEL],
            need_key: true,
            modes: vec![MODE_INTRA; grid.tiles()],
            vectors: vec![(0, 0); grid.tiles()],
            changed: Vec::new(),
            hashes: vec![0; grid.tiles_x * grid.height],
            hashed: vec![false; grid.tiles_x],
            cur_hashes: vec![0; grid.tiles_x * grid.height],
            body: Vec::new(),
            indices: Vec::new(),
            compressed: Vec::new(),
            zstd,
            zstd_key: None,
            config,
        })
    }

    /// Width and height this encoder takes.
    pub fn dimensions(&self) -> (u32, u32) {
        (self.grid.width as u32, self.grid.height as u32)
    }

    /// How many tiles of the last packet were same, copied, intra and residual (statistics for
    /// benchmarks; a `same` packet leaves the previous figures).
    pub fn last_tile_modes(&self) -> [usize; 4] {
        let mut n = [0; 4];
        for &m in &self.modes {
            n[m as usize & 3] += 1;
        }
        n
    }

    /// Makes the next packet a keyframe (the start of a segment).
    pub fn force_keyframe(&mut self) {
        self.need_key = true;
    }

    /// Appends exactly one packet for `frame` to `out`. The first packet after [`Encoder::new`]
    /// or [`Encoder::force_keyframe`] is a keyframe. On error nothing is appended and the
    /// encoder's state is unchanged.
    pub fn encode(&mut self, frame: &Frame, out: &mut Vec<u8>) -> Result<PacketKind, CodecError> {
        self.check_frame(frame)?;
        let key = self.need_key;
        if key {
            self.modes.fill(MODE_INTRA);
        } else if !self.classify(frame) {
            out.push(VERSION);
            out.push(KIND_SAME);
            self.push_dimensions(out);
            return Ok(PacketKind::Same);
        }
        let colours = match key && self.config.key_palette {
            true => palette::index_frame(frame, &mut self.indices),
            false => None,
        };
        let predictor = match &colours {
            Some(colours) => {
                self.body.clear();
                self.body.extend_from_slice(&self.modes);
                palette::write_body(&self.grid, colours, &self.indices, &mut self.body);
                PREDICTOR_PALETTE
            }
            None => {
                let p = if key { self.config.key_predictor } else { self.config.delta_predictor };
                self.build_body(frame, p);
                p.byte()
            }
        };
        let zstd = if key {
            if self.zstd_key.is_none() {
                let mut c =
                    zstd::bulk::Compressor::new(self.config.key_level).map_err(CodecError::Zstd)?;
                if self.config.key_window_log > 0 {
                    // Never above what the format docs promise a reader (2^27 bytes).
                    c.set_parameter(zstd::zstd_safe::CParameter::WindowLog(
                        self.config.key_window_log.min(MAX_WINDOW_LOG),
                    ))
                    .map_err(CodecError::Zstd)?;
                }
                if self.config.key_long_distance {
                    c.set_parameter(zstd::zstd_safe::CParameter::EnableLongDistanceMatching(true))
                        .map_err(CodecError::Zstd)?;
                }
                self.zstd_key = Some(c);
            }
            self.zstd_key.as_mut().unwrap_or(&mut self.zstd)
        } else {
            &mut self.zstd
        };
        self.compressed.clear();
        self.compressed.reserve(zstd::zstd_safe::compress_bound(self.body.len()));
        zstd.compress_to_buffer(&self.body, &mut self.compressed).map_err(CodecError::Zstd)?;

        out.push(VERSION);
        out.push(if key { KIND_KEY } else { KIND_DELTA });
        self.push_dimensions(out);
        out.push(self.grid.tile_w as u8);
        out.push(self.grid.tile_h as u8);
        out.push(predictor);
        out.extend_from_slice(&(self.body.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.compressed);

        self.update_prev(frame);
        self.commit_hashes(key);
        self.need_key = false;
        Ok(if key { PacketKind::Key } else { PacketKind::Delta })
    }

    /// Makes `hashes` describe the frame just encoded: after a keyframe no column is hashed;
    /// after a delta, the changed columns take the hashes `find_moves` computed.
    fn commit_hashes(&mut self, key: bool) {
        if key {
            self.hashed.fill(false);
            return;
        }
        let h = self.grid.height;
        let mut done = vec![false; self.grid.tiles_x];
        for &tile in &self.changed {
            let col = tile % self.grid.tiles_x;
            if !done[col] && self.hashed[col] {
                let span = col * h..(col + 1) * h;
                self.hashes[span.clone()].copy_from_slice(&self.cur_hashes[span]);
            }
            done[col] = true;
        }
    }

    /// Hashes every row of `prev` in tile column `col`.
    fn hash_column(&mut self, col: usize) {
        let grid = self.grid;
        let stride = grid.width * BYTES_PER_PIXEL;
        let x = col * grid.tile_w;
        let w = grid.tile_w.min(grid.width - x);
        for (y, hash) in
            self.hashes[col * grid.height..(col + 1) * grid.height].iter_mut().enumerate()
        {
            *hash = hash_pixels(&self.prev[y * stride + x * 4..y * stride + (x + w) * 4]);
        }
        self.hashed[col] = true;
    }

    fn push_dimensions(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.grid.width as u32).to_le_bytes());
        out.extend_from_slice(&(self.grid.height as u32).to_le_bytes());
    }

    fn check_frame(&self, frame: &Frame) -> Result<(), CodecError> {
        let (width, height) = self.dimensions();
        if (frame.width, frame.height) != (width, height) {
            return Err(CodecError::SizeMismatch {
                width,
                height,
                got_width: frame.width,
                got_height: frame.height,
            });
        }
        let row = self.grid.width * BYTES_PER_PIXEL;
        let needed =
            frame.stride.checked_mul(self.grid.height - 1).and_then(|n| n.checked_add(row));
        if frame.stride < row || needed.is_none_or(|n| frame.data.len() < n) {
            return Err(CodecError::BadFrameBuffer {
                width,
                height,
                stride: frame.stride,
                len: frame.data.len(),
            });
        }
        Ok(())
    }

    /// Sets every tile's mode for a delta; returns whether anything changed at all.
    fn classify(&mut self, frame: &Frame) -> bool {
        let grid = self.grid;
        let stride = grid.width * BYTES_PER_PIXEL;
        self.changed.clear();
        self.modes.fill(MODE_SAME);
        for ty in 0..grid.tiles_y {
            let band = ty * grid.tiles_x..(ty + 1) * grid.tiles_x;
            let y0 = ty * grid.tile_h;
            for y in y0..(y0 + grid.tile_h).min(grid.height) {
                let cur = frame.row(y as u32);
                let prev = &self.prev[y * stride..(y + 1) * stride];
                // Most rows are byte-identical (X bytes included): one memcmp settles them.
                if cur == prev {
                    continue;
                }
                for tile in band.clone() {
                    if self.modes[tile] != MODE_SAME {
                        continue;
                    }
                    let x = (tile - band.start) * grid.tile_w;
                    let end = (x + grid.tile_w).min(grid.width) * 4;
                    if !same_pixels(&cur[x * 4..end], &prev[x * 4..end]) {
                        self.modes[tile] = MODE_INTRA;
                    }
                }
            }
            self.changed.extend(band.filter(|&t| self.modes[t] != MODE_SAME));
        }
        if self.changed.is_empty() {
            return false;
        }
        self.find_moves(frame);
        true
    }

    /// For every changed tile, looks for the rectangle of the previous frame it came from: a
    /// vertical shift within its tile column (scrolled text, a dragged window's column), found
    /// by matching row hashes, then verified pixel by pixel. Tiles without an exact source get
    /// the cheapest of intra, residual against the same place, or residual against the best
    /// partial match.
    fn find_moves(&mut self, frame: &Frame) {
        let grid = self.grid;
        let h = grid.height;
        let mut col_changed = vec![false; grid.tiles_x];
        for &tile in &self.changed {
            col_changed[tile % grid.tiles_x] = true;
        }
        // Row hashes of the changed columns: the previous frame's, then those of the changed
        // tiles replaced.
        for (col, _) in col_changed.iter().enumerate().filter(|c| *c.1) {
            if !self.hashed[col] {
                self.hash_column(col);
            }
            let span = col * h..(col + 1) * h;
            self.cur_hashes[span.clone()].copy_from_slice(&self.hashes[span]);
        }
        for &tile in &self.changed {
            let r = grid.rect(tile);
            let col = tile % grid.tiles_x;
            for y in r.y..r.y + r.h {
                self.cur_hashes[col * h + y] =
                    hash_pixels(&frame.row(y as u32)[r.x * 4..(r.x + r.w) * 4]);
            }
        }
        // Vote for vertical shifts per tile column, and across the frame.
        let mut global: FastMap<isize, u32> = FastMap::default();
        let mut per_col: Vec<Vec<isize>> = vec![Vec::new(); grid.tiles_x];
        let mut rows_at: FastMap<u64, (u8, [u32; MAX_PLACES])> = FastMap::default();
        let mut votes: FastMap<isize, u32> = FastMap::default();
        for col in 0..grid.tiles_x {
            if !col_changed[col] {
                continue;
            }
            let prev = &self.hashes[col * h..(col + 1) * h];
            let cur = &self.cur_hashes[col * h..(col + 1) * h];
            // Every place a changed row occurs in the previous column votes for the shift that
            // leads there; the true shift collects a vote from each row that moved, chance ones
            // scatter. Rows found in many places (blank lines, rules) are too common to tell.
            // The table holds the changed rows only (usually far fewer than the column's), and
            // the previous column's rows are looked up in it.
            rows_at.clear();
            for y in 0..h {
                if cur[y] != prev[y] {
                    rows_at.entry(cur[y]).or_insert((0, [0; MAX_PLACES]));
                }
            }
            for (y, hash) in prev.iter().enumerate() {
                if let Some(e) = rows_at.get_mut(hash) {
                    if (e.0 as usize) < MAX_PLACES {
                        e.1[e.0 as usize] = y as u32;
                    }
                    e.0 = e.0.saturating_add(1);
                }
            }
            votes.clear();
            for y in 0..h {
                if cur[y] == prev[y] {
                    continue;
                }
                if let Some(&(n, places)) = rows_at.get(&cur[y]) {
                    if (n as usize) <= MAX_PLACES {
                        for &py in &places[..n as usize] {
                            *votes.entry(py as isize - y as isize).or_default() += 1;
                        }
                    }
                }
            }
            let mut best: Vec<(isize, u32)> = votes.iter().map(|(&d, &v)| (d, v)).collect();
            best.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            for &(d, v) in best.iter().take(3) {
                *global.entry(d).or_default() += v;
                per_col[col].push(d);
            }
        }
        let mut global: Vec<(isize, u32)> = global.into_iter().collect();
        global.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        global.truncate(3);

        let mut candidates = Vec::new();
        // Tiles no vertical shift reproduces, with their best partial match.
        let mut left: Vec<(usize, Option<(isize, usize)>)> = Vec::new();
        for i in 0..self.changed.len() {
            let tile = self.changed[i];
            let r = grid.rect(tile);
            let col = tile % grid.tiles_x;
            candidates.clear();
            candidates.extend(per_col[col].iter().copied());
            candidates.extend(global.iter().map(|g| g.0).filter(|d| !per_col[col].contains(d)));
            let prev = &self.hashes[col * h..(col + 1) * h];
            let cur = &self.cur_hashes[col * h + r.y..col * h + r.y + r.h];
            let mut partial: Option<(isize, usize)> = None;
            let mut copied = false;
            for &dy in &candidates {
                let sy = r.y as isize + dy;
                if sy < 0 || sy as usize + r.h > h {
                    continue;
                }
                let sy = sy as usize;
                let matching = cur.iter().zip(&prev[sy..sy + r.h]).filter(|(a, b)| a == b).count();
                if matching == r.h && tile_equals(&grid, frame, &self.prev, r, r.x, sy) {
                    self.modes[tile] = MODE_COPY;
                    self.vectors[tile] = (0, dy as i16);
                    copied = true;
                    break;
                }
                if partial.is_none_or(|(_, m)| matching > m) {
                    partial = Some((dy, matching));
                }
            }
            if !copied {
                left.push((tile, partial));
            }
        }
        let moves = if left.is_empty() { Vec::new() } else { self.window_moves(frame, &left) };
        for (tile, partial) in left {
            let r = grid.rect(tile);
            let mut copied = false;
            let intra = cost_intra(frame, r, self.config.delta_predictor);
            let mut best = (intra, MODE_INTRA, (0isize, 0isize));
            let here = cost_residual(frame, &self.prev, &grid, r, r.x, r.y, best.0);
            if here < best.0 {
                best = (here, MODE_RESIDUAL, (0, 0));
            }
            if let Some((dy, matching)) = partial {
                if matching * 4 >= r.h {
                    let sy = (r.y as isize + dy) as usize;
                    let c = cost_residual(frame, &self.prev, &grid, r, r.x, sy, best.0);
                    if c < best.0 {
                        best = (c, MODE_RESIDUAL, (0, dy));
                    }
                }
            }
            for &(dx, dy) in &moves {
                let (sx, sy) = (r.x as isize + dx, r.y as isize + dy);
                if sx < 0 || sy < 0 || sx as usize + r.w > grid.width || sy as usize + r.h > h {
                    continue;
                }
                let (sx, sy) = (sx as usize, sy as usize);
                if tile_equals(&grid, frame, &self.prev, r, sx, sy) {
                    self.modes[tile] = MODE_COPY;
                    self.vectors[tile] = (dx as i16, dy as i16);
                    copied = true;
                    break;
                }
                let c = cost_residual(frame, &self.prev, &grid, r, sx, sy, best.0);
                if c < best.0 {
                    best = (c, MODE_RESIDUAL, (dx, dy));
                }
            }
            if !copied {
                self.modes[tile] = best.1;
                self.vectors[tile] = (best.2 .0 as i16, best.2 .1 as i16);
            }
        }
    }

    /// Shifts in any direction (a dragged window) that explain some of `tiles`: runs of pixels
    /// at the left of each tile are looked up among all runs of the previous frame's same
    /// tiles (where a moved window must have been: it left them), sampled every 4th row.
    fn window_moves(
        &self,
        frame: &Frame,
        tiles: &[(usize, Option<(isize, usize)>)],
    ) -> Vec<(isize, isize)> {
        const ROW_STEP: usize = 4;
        let grid = self.grid;
        let stride = grid.width * BYTES_PER_PIXEL;
        if grid.width < RUN {
            return Vec::new();
        }
        let mut table: FastMap<u64, (usize, usize)> = FastMap::default();
        for &(tile, _) in tiles {
            let r = grid.rect(tile);
            let x_end = (r.x + r.w).min(grid.width - RUN + 1);
            if x_end <= r.x {
                continue;
            }
            for y in (r.y.next_multiple_of(ROW_STEP)..r.y + r.h).step_by(ROW_STEP) {
                let row = &self.prev[y * stride..(y + 1) * stride];
                let mut run = RunHash::at(row, r.x);
                for x in r.x..x_end {
                    if x > r.x {
                        run.slide(row, x - 1);
                    }
                    if !run.uniform() {
                        table.entry(run.key()).or_insert((x, y));
                    }
                }
            }
        }
        let mut votes: FastMap<(isize, isize), u32> = FastMap::default();
        for &(tile, _) in tiles {
            let r = grid.rect(tile);
            for y in r.y..(r.y + ROW_STEP).min(r.y + r.h) {
                let row = frame.row(y as u32);
                for x in [r.x, r.x + RUN] {
                    if x + RUN > grid.width {
                        continue;
                    }
                    let run = RunHash::at(row, x);
                    if run.uniform() {
                        continue;
                    }
                    if let Some(&(px, py)) = table.get(&run.key()) {
                        let v = (px as isize - x as isize, py as isize - y as isize);
                        if v != (0, 0) {
                            *votes.entry(v).or_default() += 1;
                        }
                    }
                }
            }
        }
        let mut best: Vec<((isize, isize), u32)> = votes.into_iter().filter(|v| v.1 >= 2).collect();
        best.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        best.into_iter().take(3).map(|v| v.0).collect()
    }

    fn build_body(&mut self, frame: &Frame, predictor: Predictor) {
        let grid = self.grid;
        let mut coded = 0usize;
        let mut moved = 0usize;
        for (tile, &mode) in self.modes.iter().enumerate() {
            if mode == MODE_INTRA || mode == MODE_RESIDUAL {
                let r = grid.rect(tile);
                coded += r.w * r.h;
            }
            if mode == MODE_COPY || mode == MODE_RESIDUAL {
                moved += 1;
            }
        }
        let head = grid.tiles() + 4 * moved;
        self.body.resize(head + 3 * coded, 0);
        let (modes, planes) = self.body.split_at_mut(head);
        let (modes, mut vectors) = modes.split_at_mut(grid.tiles());
        modes.copy_from_slice(&self.modes);
        for (tile, &mode) in self.modes.iter().enumerate() {
            if mode == MODE_COPY || mode == MODE_RESIDUAL {
                let (dx, dy) = self.vectors[tile];
                let (v, rest) = vectors.split_at_mut(4);
                v[..2].copy_from_slice(&dx.to_le_bytes());
                v[2..].copy_from_slice(&dy.to_le_bytes());
                vectors = rest;
            }
        }
        let (p0, planes) = planes.split_at_mut(coded);
        let (p1, p2) = planes.split_at_mut(coded);
        let stride = grid.width * BYTES_PER_PIXEL;
        let mut at = 0usize;
        let mut band = Vec::with_capacity(grid.tiles_x);
        for ty in 0..grid.tiles_y {
            band.clear();
            band.extend(
                (ty * grid.tiles_x..(ty + 1) * grid.tiles_x)
                    .filter(|&t| self.modes[t] == MODE_INTRA || self.modes[t] == MODE_RESIDUAL),
            );
            if band.is_empty() {
                continue;
            }
            let band_h = grid.tile_h.min(grid.height - ty * grid.tile_h);
            for dy in 0..band_h {
                for &tile in &band {
                    let r = grid.rect(tile);
                    let y = r.y + dy;
                    let n = r.w;
                    let row = &frame.row(y as u32)[r.x * 4..(r.x + n) * 4];
                    let (o0, o1, o2) =
                        (&mut p0[at..at + n], &mut p1[at..at + n], &mut p2[at..at + n]);
                    at += n;
                    if self.modes[tile] != MODE_INTRA {
                        let (dx, dyv) = self.vectors[tile];
                        let sx = (r.x as isize + dx as isize) as usize;
                        let sy = (y as isize + dyv as isize) as usize;
                        let src = &self.prev[sy * stride + sx * 4..sy * stride + (sx + n) * 4];
                        forward_diff(row, src, o0, o1, o2);
                    } else if predictor == Predictor::None {
                        forward_diff(row, &[0; 4 * MAX_TILE as usize][..n * 4], o0, o1, o2);
                    } else if predictor == Predictor::Up && y > 0 {
                        let above = &frame.row(y as u32 - 1)[r.x * 4..(r.x + n) * 4];
                        forward_diff(row, above, o0, o1, o2);
                    } else {
                        // First pixel from the one above (0 on the tile's top row), then each
                        // from its left neighbour.
                        let above = if dy > 0 {
                            &frame.row(y as u32 - 1)[r.x * 4..r.x * 4 + 4]
                        } else {
                            &[0; 4]
                        };
                        forward_diff(&row[..4], above, &mut o0[..1], &mut o1[..1], &mut o2[..1]);
                        forward_diff(&row[4..], row, &mut o0[1..], &mut o1[1..], &mut o2[1..]);
                    }
                }
            }
        }
    }

    /// Makes `prev` the new frame. Only tiles that are not `same` can differ (in B, G, R).
    fn update_prev(&mut self, frame: &Frame) {
        let stride = self.grid.width * BYTES_PER_PIXEL;
        if self.modes.iter().all(|&m| m != MODE_SAME) {
            for (y, row) in self.prev.chunks_exact_mut(stride).enumerate() {
                row.copy_from_slice(frame.row(y as u32));
            }
            return;
        }
        for tile in 0..self.grid.tiles() {
            if self.modes[tile] == MODE_SAME {
                continue;
            }
            let r = self.grid.rect(tile);
            for y in r.y..r.y + r.h {
                let src = &frame.row(y as u32)[r.x * 4..(r.x + r.w) * 4];
                self.prev[y * stride + r.x * 4..y * stride + (r.x + r.w) * 4].copy_from_slice(src);
            }
        }
    }
}

/// A row found in more places than this in a column is too common to suggest a shift.
const MAX_PLACES: usize = 6;

/// Nonzero bytes an intra tile would put in the planes: a cheap stand-in for its coded size.
fn cost_intra(frame: &Frame, r: Rect, predictor: Predictor) -> usize {
    let mut n = 0;
    for y in r.y..r.y + r.h {
        let row = &frame.row(y as u32)[r.x * 4..(r.x + r.w) * 4];
        if predictor == Predictor::Up && y > 0 {
            n += residual_bytes(row, &frame.row(y as u32 - 1)[r.x * 4..(r.x + r.w) * 4]);
            continue;
        }
        let first = forward(row);
        let pred =
            if y > r.y { forward(&frame.row(y as u32 - 1)[r.x * 4..r.x * 4 + 4]) } else { [0; 3] };
        n += (0..3).filter(|&c| first[c] != pred[c]).count() + left_residual_bytes(row);
    }
    n
}

/// Nonzero bytes of a residual of tile `r` against the previous frame at `(sx, sy)`. Stops
/// counting once the count reaches `limit` (the cost to beat): the result is then only known
/// to be at least `limit`.
fn cost_residual(
    frame: &Frame,
    prev: &[u8],
    grid: &Grid,
    r: Rect,
    sx: usize,
    sy: usize,
    limit: usize,
) -> usize {
    let stride = grid.width * BYTES_PER_PIXEL;
    let mut n = 0;
    for dy in 0..r.h {
        let row = &frame.row((r.y + dy) as u32)[r.x * 4..(r.x + r.w) * 4];
        let p = (sy + dy) * stride + sx * 4;
        n += differing_bytes(row, &prev[p..p + r.w * 4]);
        if n >= limit {
            break;
        }
    }
    n
}

/// Hash maps of the move search: keys are row hashes and small shifts, and nothing here is
/// exposed to an adversary who could pick keys to collide (a collision only costs time).
type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// One multiply per word: SipHash's resistance to chosen keys is not needed here.
#[derive(Default)]
struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        // The product's high bits are its best mixed; hashbrown indexes with the low ones.
        self.0 ^ (self.0 >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b.into());
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(26) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }
}

/// Pixels in a run the window search hashes.
const RUN: usize = 16;

/// Polynomial hash of the [`RUN`] pixels (B, G, R) starting at some `x` of a row, and how many
/// of them differ from their left neighbour within the run, updated in O(1) as the run slides
/// right by one pixel. Equal runs hash equal; a match is verified before it is used.
struct RunHash {
    hash: u64,
    breaks: u32,
}

impl RunHash {
    const BASE: u64 = 0x0000_0100_0000_01b3;
    /// `BASE^(RUN-1)`: the weight of the run's first pixel.
    const TOP: u64 = {
        let mut p = 1u64;
        let mut i = 1;
        while i < RUN {
            p = p.wrapping_mul(Self::BASE);
            i += 1;
        }
        p
    };

    #[inline(always)]
    fn px(row: &[u8], x: usize) -> u64 {
        u64::from(u32::from_le_bytes([row[x * 4], row[x * 4 + 1], row[x * 4 + 2], 0]))
    }

    /// The run starting at pixel `x` (`x + RUN` must not pass the row's end).
    fn at(row: &[u8], x: usize) -> Self {
        let mut hash = 0u64;
        let mut breaks = 0;
        for i in x..x + RUN {
            let p = Self::px(row, i);
            hash = hash.wrapping_mul(Self::BASE).wrapping_add(p);
            breaks += u32::from(i > x && p != Self::px(row, i - 1));
        }
        Self { hash, breaks }
    }

    /// From the run starting at `x` to the one starting at `x + 1`.
    #[inline(always)]
    fn slide(&mut self, row: &[u8], x: usize) {
        let (out, next, last) = (Self::px(row, x), Self::px(row, x + 1), Self::px(row, x + RUN));
        self.hash = self
            .hash
            .wrapping_sub(out.wrapping_mul(Self::TOP))
            .wrapping_mul(Self::BASE)
            .wrapping_add(last);
        self.breaks -= u32::from(next != out);
        self.breaks += u32::from(last != Self::px(row, x + RUN - 1));
    }

    /// Whether the run is one colour (says nothing about where it came from).
    fn uniform(&self) -> bool {
        self.breaks == 0
    }

    fn key(&self) -> u64 {
        self.hash
    }
}

/// Whether tile `r` of `frame` equals the rectangle of `prev` at `(sx, sy)`.
fn tile_equals(grid: &Grid, frame: &Frame, prev: &[u8], r: Rect, sx: usize, sy: usize) -> bool {
    let stride = grid.width * BYTES_PER_PIXEL;
    (0..r.h).all(|dy| {
        let cur = &frame.row((r.y + dy) as u32)[r.x * 4..(r.x + r.w) * 4];
        let p = (sy + dy) * stride + sx * 4;
        same_pixels(cur, &prev[p..p + r.w * 4])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sliding_run_hash_equals_the_hash_of_the_run_it_slid_to() {
        // Flat stretches (uniform runs), X bytes that must not count, and colour.
        let row: Vec<u8> = (0..4 * 200u32)
            .map(|i| match (i % 4, i / 4) {
                (3, _) => (i * 13) as u8,
                (_, p) if (40..90).contains(&p) => 7,
                (c, p) => (p * 31 + c * 5) as u8 ^ (p / 3) as u8,
            })
            .collect();
        let mut run = RunHash::at(&row, 0);
        for x in 1..=200 - RUN {
            run.slide(&row, x - 1);
            let direct = RunHash::at(&row, x);
            assert_eq!((run.key(), run.breaks), (direct.key(), direct.breaks), "x = {x}");
            let colours: Vec<&[u8]> =
                row[x * 4..(x + RUN) * 4].chunks(4).map(|p| &p[..3]).collect();
            assert_eq!(run.uniform(), colours.iter().all(|c| *c == colours[0]), "x = {x}");
        }
        assert!(RunHash::at(&row, 50).uniform() && !RunHash::at(&row, 30).uniform());
    }
}
