//! The codec is lossless and cheap on unchanged screens: decode(encode(frames)) gives back B, G,
//! R of every pixel, for random sequences of frames of odd sizes and padded strides.

use proptest::prelude::*;
use rearview_capture::codec::{Decoder, Encoder, EncoderConfig, PacketKind, Predictor};
use rearview_capture::{Frame, Timestamp};

fn ts(n: i64) -> Timestamp {
    Timestamp { utc_micros: n, mono_micros: n as u64 }
}

/// A frame with `pad` bytes of garbage after each row and random X bytes, to prove both are
/// ignored.
fn frame_with_stride(
    width: u32,
    height: u32,
    pad: usize,
    fill: impl Fn(u32, u32) -> [u8; 3],
) -> Frame {
    let stride = width as usize * 4 + pad;
    let mut data = vec![0xA5; stride * height as usize];
    for y in 0..height {
        for x in 0..width {
            let [b, g, r] = fill(x, y);
            let o = y as usize * stride + x as usize * 4;
            data[o..o + 4].copy_from_slice(&[b, g, r, (x * 7 + y * 3) as u8]);
        }
    }
    Frame { width, height, stride, data, captured_at: ts(1) }
}

fn round_trip(frames: &[Frame], key_every: usize) -> Vec<(PacketKind, usize)> {
    round_trip_with(frames, key_every, EncoderConfig::default())
}

fn round_trip_with(
    frames: &[Frame],
    key_every: usize,
    config: EncoderConfig,
) -> Vec<(PacketKind, usize)> {
    let mut enc = Encoder::with_config(frames[0].width, frames[0].height, config).unwrap();
    let mut dec = Decoder::new();
    let mut kinds = Vec::new();
    for (i, f) in frames.iter().enumerate() {
        if key_every > 0 && i % key_every == 0 {
            enc.force_keyframe();
        }
        let mut packet = Vec::new();
        let kind = enc.encode(f, &mut packet).unwrap();
        let back = dec.decode(&packet).unwrap();
        assert!(back.same_pixels(f), "frame {i} ({kind:?}) differs after decoding");
        assert_eq!(back.captured_at, ts(0));
        assert!(back.data.chunks_exact(4).all(|p| p[3] == 0));
        kinds.push((kind, packet.len()));
    }
    kinds
}

#[test]
fn identical_frame_costs_at_most_64_bytes() {
    let f = frame_with_stride(1920, 1080, 0, |x, y| [(x ^ y) as u8, (x / 3) as u8, (y * 5) as u8]);
    let mut same = f.clone();
    // Only the meaningless X byte differs: still the same picture.
    for px in same.data.chunks_exact_mut(4) {
        px[3] = px[3].wrapping_add(1);
    }
    let kinds = round_trip(&[f.clone(), same, f], 0);
    assert_eq!(kinds[0].0, PacketKind::Key);
    for &(kind, len) in &kinds[1..] {
        assert_eq!(kind, PacketKind::Same);
        assert!(len <= 64, "identical frame cost {len} bytes");
    }
}

#[test]
fn first_packet_and_forced_ones_are_keyframes() {
    let a = frame_with_stride(33, 17, 4, |x, y| [x as u8, y as u8, 1]);
    let b = frame_with_stride(33, 17, 4, |x, y| [x as u8, y as u8, 2]);
    let kinds: Vec<_> =
        round_trip(&[a.clone(), b.clone(), a, b], 2).into_iter().map(|k| k.0).collect();
    assert_eq!(kinds, [PacketKind::Key, PacketKind::Delta, PacketKind::Key, PacketKind::Delta]);
}

#[test]
fn a_small_change_costs_little() {
    let a = frame_with_stride(1920, 1080, 0, |x, y| {
        if (x / 8 + y / 16) % 7 == 0 {
            [20, 20, 20]
        } else {
            [240, 240, 240]
        }
    });
    let mut b = a.clone();
    for y in 500..516 {
        for x in 900..910 {
            b.row_mut(y)[x * 4..x * 4 + 3].copy_from_slice(&[0, 0, 255]);
        }
    }
    let kinds = round_trip(&[a, b], 0);
    assert_eq!(kinds[1].0, PacketKind::Delta);
    assert!(kinds[1].1 < 1000, "a 10x16 change cost {} bytes", kinds[1].1);
}

#[test]
fn a_vertical_scroll_is_sent_as_a_copy() {
    // Text-like content in a window that scrolls by 37 rows between frames.
    let content = |x: u32, y: u32| -> [u8; 3] {
        let (line, row) = (y / 19, y % 19);
        let cell = (x / 9).wrapping_mul(2654435761) ^ line.wrapping_mul(40503);
        let bits = cell.wrapping_mul(row.wrapping_mul(0x9e37_79b9) | 1).rotate_left(x % 9);
        if row > 3 && (x % 9) < 7 && bits >> 29 == 0 {
            [30, 30, 30]
        } else {
            [250, 250, 250]
        }
    };
    let a = frame_with_stride(1920, 1080, 0, content);
    let b = frame_with_stride(1920, 1080, 0, |x, y| content(x, y + 37));
    let kinds = round_trip(&[a, b], 0);
    // The new 37 rows at the bottom are unavoidable; the rest must be copies.
    assert!(kinds[1].1 < 12_000, "a scroll cost {} bytes (keyframe {})", kinds[1].1, kinds[0].1);
}

#[test]
fn wrong_size_frames_are_refused_without_harm() {
    let a = frame_with_stride(40, 30, 0, |x, y| [x as u8, y as u8, 0]);
    let mut enc = Encoder::new(40, 30).unwrap();
    let mut out = Vec::new();
    let other = frame_with_stride(41, 30, 0, |_, _| [0, 0, 0]);
    assert!(enc.encode(&other, &mut out).is_err());
    let mut short = a.clone();
    short.data.truncate(100);
    assert!(enc.encode(&short, &mut out).is_err());
    assert!(out.is_empty());
    assert_eq!(enc.encode(&a, &mut out).unwrap(), PacketKind::Key);
    assert!(Encoder::new(0, 10).is_err());
    assert!(Encoder::new(16385, 10).is_err());
}

#[test]
fn delta_before_keyframe_is_an_error() {
    let a = frame_with_stride(40, 30, 0, |x, y| [x as u8, y as u8, 0]);
    let b = frame_with_stride(40, 30, 0, |x, y| [y as u8, x as u8, 0]);
    let mut enc = Encoder::new(40, 30).unwrap();
    let (mut k, mut d) = (Vec::new(), Vec::new());
    enc.encode(&a, &mut k).unwrap();
    enc.encode(&b, &mut d).unwrap();
    let mut dec = Decoder::new();
    assert!(dec.decode(&d).is_err());
    assert!(dec.decode(&k).unwrap().same_pixels(&a));
    assert!(dec.decode(&d).unwrap().same_pixels(&b));
}

/// Frames drawn from a small set of "screen-like" operations, so sequences exercise unchanged,
/// changed, scrolled and moved tiles rather than pure noise.
fn sequence() -> impl Strategy<Value = Vec<Frame>> {
    (
        1u32..150,
        1u32..120,
        0usize..3,
        any::<u64>(),
        prop::collection::vec((0u8..5, any::<u32>()), 1..6),
    )
        .prop_map(|(w, h, pad, seed, ops)| {
            let mut frames = Vec::new();
            let base = |x: u32, y: u32| -> [u8; 3] {
                let v =
                    (x as u64).wrapping_mul(31).wrapping_add((y as u64).wrapping_mul(17)) ^ seed;
                if v.is_multiple_of(5) {
                    [v as u8, (v >> 8) as u8, (v >> 16) as u8]
                } else {
                    [200, 200, 200]
                }
            };
            let mut cur = frame_with_stride(w, h, pad * 4, base);
            frames.push(cur.clone());
            for (op, arg) in ops {
                let mut next = cur.clone();
                match op {
                    0 => {} // identical
                    1 => {
                        // scroll up by some rows
                        let d = 1 + arg % h.max(1);
                        for y in 0..h {
                            let src = y + d;
                            let row: Vec<u8> = if src < h {
                                cur.row(src).to_vec()
                            } else {
                                vec![arg as u8; w as usize * 4]
                            };
                            next.row_mut(y).copy_from_slice(&row);
                        }
                    }
                    2 => {
                        // a rectangle of noise
                        let (x0, y0) = (arg % w, (arg >> 8) % h);
                        for y in y0..h.min(y0 + 1 + (arg >> 16) % 40) {
                            for x in x0..w.min(x0 + 1 + (arg >> 24) % 40) {
                                let v = (x * 131 + y * 7).wrapping_mul(arg | 1);
                                next.row_mut(y)[x as usize * 4..x as usize * 4 + 3]
                                    .copy_from_slice(&[v as u8, (v >> 8) as u8, (v >> 16) as u8]);
                            }
                        }
                    }
                    3 => {
                        // shift everything right by some columns
                        let d = (1 + arg % w.max(1)) as usize;
                        for y in 0..h {
                            let row = cur.row(y).to_vec();
                            let out = next.row_mut(y);
                            for x in 0..w as usize {
                                let s = if x >= d {
                                    &row[(x - d) * 4..(x - d) * 4 + 4]
                                } else {
                                    &[1, 2, 3, 4][..]
                                };
                                out[x * 4..x * 4 + 4].copy_from_slice(s);
                            }
                        }
                    }
                    _ => {
                        // only X bytes change
                        for px in next.data.chunks_exact_mut(4) {
                            px[3] ^= arg as u8;
                        }
                    }
                }
                frames.push(next.clone());
                cur = next;
            }
            frames
        })
}

fn predictor() -> impl Strategy<Value = Predictor> {
    prop::sample::select(vec![Predictor::None, Predictor::Left, Predictor::Up])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_sequences_round_trip(frames in sequence(), key_every in 0usize..4) {
        round_trip(&frames, key_every);
    }

    /// Every tuning the encoder accepts gives a stream that decodes bit-exact: tile sizes up to
    /// the largest (whose rows the encoder's fixed buffers must hold), every predictor.
    #[test]
    fn any_encoder_config_round_trips(
        frames in sequence(),
        key_every in 0usize..4,
        tile_w in 8u8..=128,
        tile_h in 8u8..=128,
        key_predictor in predictor(),
        delta_predictor in predictor(),
        key_palette in any::<bool>(),
        key_long_distance in any::<bool>(),
        key_level in 1i32..=9,
        delta_level in 1i32..=9,
    ) {
        let config = EncoderConfig { tile_w, tile_h, key_level, delta_level, key_window_log: 0, key_predictor, delta_predictor, key_palette, key_long_distance };
        round_trip_with(&frames, key_every, config);
    }
}

#[test]
fn a_dragged_window_is_sent_as_copies() {
    // A text window on a flat desktop, moved by (45, 17) between frames.
    let window = |x: u32, y: u32, wx: u32, wy: u32| -> [u8; 3] {
        if x < wx || y < wy || x >= wx + 400 || y >= wy + 300 {
            return [165, 110, 58];
        }
        let (cx, cy) = (x - wx, y - wy);
        let mut v = ((cx / 6) as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)
            ^ ((cy / 13) as u64).wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
        v ^= v >> 31;
        let glyph_row = v.rotate_left(cy % 13 * 5) >> 59;
        if (glyph_row >> (cx % 6)) & 1 == 1 {
            [20, 20, 20]
        } else {
            [255, 255, 255]
        }
    };
    let a = frame_with_stride(1280, 720, 0, |x, y| window(x, y, 300, 200));
    let b = frame_with_stride(1280, 720, 0, |x, y| window(x, y, 345, 217));
    let kinds = round_trip(&[a, b], 0);
    assert!(
        kinds[1].1 * 4 < kinds[0].1,
        "a move cost {} bytes (keyframe {})",
        kinds[1].1,
        kinds[0].1
    );
}

/// A frame of exactly `colours` colours (up to 301 * 97), in diagonal runs.
fn striped(colours: u32) -> Frame {
    frame_with_stride(301, 97, 8, move |x, y| {
        let c = (y * 301 + x + (x / 3 + y / 5) % 4) % colours;
        // One colour per c: c / 37 tells blocks of 37 apart, c * 7 the values within one.
        [(c * 7) as u8, (c / 37) as u8, (c * 3) as u8]
    })
}

#[test]
fn a_few_colour_keyframe_is_a_palette_and_a_many_colour_one_is_not() {
    for (colours, predictor) in [(1, 3u8), (2, 3), (255, 3), (256, 2), (5000, 2)] {
        let f = striped(colours);
        let mut enc = Encoder::new(f.width, f.height).unwrap();
        let mut packet = Vec::new();
        assert_eq!(enc.encode(&f, &mut packet).unwrap(), PacketKind::Key);
        assert_eq!(packet[12], predictor, "{colours} colours");
        assert!(Decoder::new().decode(&packet).unwrap().same_pixels(&f), "{colours} colours");
        // Deltas after a palette keyframe decode against it.
        let kinds = round_trip(&[f.clone(), striped(colours + 1), f], 0);
        assert_eq!(kinds[1].0, PacketKind::Delta);
    }
}
