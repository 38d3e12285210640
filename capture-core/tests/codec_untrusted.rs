//! The decoder takes untrusted bytes: corrupted, truncated, padded or invented packets give an
//! error, never a panic, and a failed packet does not disturb the frame a later delta needs.

use proptest::prelude::*;
use rearview_capture::codec::{CodecError, Decoder, Encoder, EncoderConfig, Predictor};
use rearview_capture::{Frame, Timestamp};

fn frame(w: u32, h: u32, seed: u32) -> Frame {
    let mut f = Frame::black(w, h, Timestamp::now());
    for y in 0..h {
        for x in 0..w {
            let c = (x / 5).wrapping_mul(2654435761) ^ ((y + seed) / 9).wrapping_mul(40503);
            let px = if (c >> 27) & 1 == 1 { [20, 40, 60] } else { [230, 230, 230] };
            f.row_mut(y)[x as usize * 4..x as usize * 4 + 3].copy_from_slice(&px);
        }
    }
    f
}

/// A valid stream: keyframe, scroll, identical frame, local change.
fn stream(
    w: u32,
    h: u32,
    tile: u8,
    predictor: Predictor,
    key_palette: bool,
) -> (Vec<Frame>, Vec<Vec<u8>>) {
    let cfg = EncoderConfig {
        tile_w: tile,
        tile_h: tile,
        key_predictor: predictor,
        delta_predictor: predictor,
        key_palette,
        ..Default::default()
    };
    let mut enc = Encoder::with_config(w, h, cfg).unwrap();
    let mut local = frame(w, h, 9);
    let n = (w as usize * 4).min(12);
    local.row_mut(h / 2)[..n].copy_from_slice(&[1, 2, 3, 0, 4, 5, 6, 0, 7, 8, 9, 0][..n]);
    let frames = vec![frame(w, h, 0), frame(w, h, 9), frame(w, h, 9), local];
    let packets = frames
        .iter()
        .map(|f| {
            let mut p = Vec::new();
            enc.encode(f, &mut p).unwrap();
            p
        })
        .collect();
    (frames, packets)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip { packet: usize, at: usize, bit: u8 },
    Truncate { packet: usize, at: usize },
    Insert { packet: usize, at: usize, bytes: Vec<u8> },
    Overwrite { packet: usize, at: usize, bytes: Vec<u8> },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (0usize..4, any::<usize>(), 0u8..8).prop_map(|(packet, at, bit)| Mutation::Flip {
            packet,
            at,
            bit
        }),
        (0usize..4, any::<usize>()).prop_map(|(packet, at)| Mutation::Truncate { packet, at }),
        (0usize..4, any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(packet, at, bytes)| Mutation::Insert { packet, at, bytes }),
        (0usize..4, any::<usize>(), prop::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(packet, at, bytes)| Mutation::Overwrite { packet, at, bytes }),
    ]
}

fn apply(packets: &mut [Vec<u8>], m: &Mutation) {
    let (Mutation::Flip { packet, .. }
    | Mutation::Truncate { packet, .. }
    | Mutation::Insert { packet, .. }
    | Mutation::Overwrite { packet, .. }) = m;
    if packets[*packet].is_empty() {
        packets[*packet].push(0);
    }
    match m {
        Mutation::Flip { packet, at, bit } => {
            let p = &mut packets[*packet];
            let i = at % p.len();
            p[i] ^= 1 << bit;
        }
        Mutation::Truncate { packet, at } => {
            let p = &mut packets[*packet];
            let n = at % p.len();
            p.truncate(n);
        }
        Mutation::Insert { packet, at, bytes } => {
            let p = &mut packets[*packet];
            let i = at % (p.len() + 1);
            p.splice(i..i, bytes.iter().copied());
        }
        Mutation::Overwrite { packet, at, bytes } => {
            let p = &mut packets[*packet];
            let i = at % p.len();
            for (k, b) in bytes.iter().enumerate() {
                if let Some(slot) = p.get_mut(i + k) {
                    *slot = *b;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]
    #[test]
    fn mutated_streams_never_panic(
        w in 1u32..70, h in 1u32..50, tile in prop::sample::select(vec![8u8, 16, 32]),
        predictor in prop::sample::select(vec![Predictor::None, Predictor::Left, Predictor::Up]),
        key_palette: bool,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let (frames, mut packets) = stream(w, h, tile, predictor, key_palette);
        for m in &mutations {
            apply(&mut packets, m);
        }
        let mut dec = Decoder::new();
        for (p, f) in packets.iter().zip(&frames) {
            if let Ok(back) = dec.decode(p) {
                // Whatever decodes has the size its stream declared.
                prop_assert_eq!(back.data.len(), back.width as usize * back.height as usize * 4);
                let _ = back.same_pixels(f);
            }
        }
    }

    #[test]
    fn random_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut dec = Decoder::new();
        let _ = dec.decode(&bytes);
    }
}

#[test]
fn a_failed_packet_leaves_the_reference_intact() {
    let (frames, packets) = stream(50, 40, 16, Predictor::Up, false);
    let mut dec = Decoder::new();
    assert!(dec.decode(&packets[0]).unwrap().same_pixels(&frames[0]));
    let mut bad = packets[1].clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    bad.truncate(bad.len() - 3);
    assert!(dec.decode(&bad).is_err());
    for (p, f) in packets.iter().zip(&frames).skip(1) {
        assert!(dec.decode(p).unwrap().same_pixels(f));
    }
}

#[test]
fn headers_are_checked_before_anything_is_allocated() {
    let (_, packets) = stream(50, 40, 16, Predictor::Up, false);
    let key = &packets[0];
    let mut dec = Decoder::new();

    let mut huge = key.clone();
    huge[2..6].copy_from_slice(&16385u32.to_le_bytes());
    assert!(matches!(dec.decode(&huge), Err(CodecError::InvalidDimensions { .. })));

    let mut zero = key.clone();
    zero[6..10].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(dec.decode(&zero), Err(CodecError::InvalidDimensions { .. })));

    let mut long_body = key.clone();
    long_body[13..17].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(dec.decode(&long_body), Err(CodecError::Corrupt(_))));

    let mut version = key.clone();
    version[0] = 2;
    assert!(matches!(dec.decode(&version), Err(CodecError::UnsupportedVersion(2))));

    let mut predictor = key.clone();
    predictor[12] = 3;
    assert!(matches!(dec.decode(&predictor), Err(CodecError::Corrupt(_))));

    // Palette is for keyframes only, even when a reference is there for the delta.
    assert!(dec.decode(key).is_ok());
    let mut palette_delta = packets[3].clone();
    palette_delta[12] = 3;
    assert!(matches!(dec.decode(&palette_delta), Err(CodecError::Corrupt(_))));

    let mut tile = key.clone();
    tile[10] = 7;
    assert!(dec.decode(&tile).is_err());

    let mut small = Decoder::with_max_dimensions(32);
    assert!(matches!(small.decode(key), Err(CodecError::InvalidDimensions { .. })));

    // A delta of another size than its keyframe is refused.
    let (_, other) = stream(51, 40, 16, Predictor::Up, false);
    assert!(dec.decode(key).is_ok());
    assert!(matches!(dec.decode(&other[1]), Err(CodecError::SizeMismatch { .. })));
    assert!(dec.decode(&packets[1]).is_ok());
}

/// A keyframe packet of a 4x2 frame (one 8x8 tile) with predictor 3 and the given palette body
/// after the tile map.
fn palette_packet(palette_body: &[u8]) -> Vec<u8> {
    let mut body = vec![2u8];
    body.extend_from_slice(palette_body);
    let mut p = vec![1, b'K', 4, 0, 0, 0, 2, 0, 0, 0, 8, 8, 3];
    p.extend_from_slice(&(body.len() as u32).to_le_bytes());
    p.extend_from_slice(&zstd::bulk::compress(&body, 3).unwrap());
    p
}

#[test]
fn palette_bodies_that_lie_are_refused() {
    let mut dec = Decoder::new();
    // Two colours; the second row repeats the first ("as above") except one pixel.
    let good = [1, 10, 20, 30, 40, 50, 60, 1, 2, 1, 2, 0, 0, 0, 1];
    let frame = dec.decode(&palette_packet(&good)).unwrap();
    let px = |x: usize, y: usize| &frame.data[(y * 4 + x) * 4..(y * 4 + x) * 4 + 4];
    assert_eq!(
        (px(0, 0), px(1, 0), px(1, 1)),
        (&[10, 20, 30, 0][..], &[40, 50, 60, 0][..], &[40, 50, 60, 0][..])
    );
    assert_eq!(px(3, 1), &[10, 20, 30, 0]);

    let mut above_on_top = good;
    above_on_top[7] = 0;
    let mut out_of_range = good;
    out_of_range[9] = 3;
    let mut short = good.to_vec();
    short.pop();
    let mut long = good.to_vec();
    long.push(1);
    let mut count_256 = vec![255u8];
    count_256.extend(std::iter::repeat_n(0, 3 * 256 + 8));
    let no_table = [5u8, 1, 2];
    for bad in [&above_on_top[..], &out_of_range, &short, &long, &count_256, &no_table, &[]] {
        assert!(
            matches!(dec.decode(&palette_packet(bad)), Err(CodecError::Corrupt(_))),
            "{bad:?} was accepted"
        );
    }
    // None of those disturbed the reference: a same packet still gives the good frame.
    let same = [1, b'S', 4, 0, 0, 0, 2, 0, 0, 0];
    assert!(dec.decode(&same).unwrap().same_pixels(&frame));
}

/// Writes seeds of the `decode` fuzz target (`fuzz/seeds/decode`) for the intra codings added
/// after the first seeds: "up" keyframes and deltas, and palette keyframes, in the target's
/// framing (each packet prefixed by its length as u16 LE). Run with `--ignored` after a
/// format change.
#[test]
#[ignore = "writes fuzz seeds into the source tree"]
fn write_fuzz_seeds() {
    let dir = std::path::Path::new("fuzz/seeds/decode");
    std::fs::create_dir_all(dir).unwrap();
    for (name, predictor, palette) in
        [("up", Predictor::Up, false), ("palette", Predictor::Up, true)]
    {
        for (w, h) in [(8, 8), (40, 30), (67, 45)] {
            let (_, packets) = stream(w, h, 16, predictor, palette);
            let mut seed = Vec::new();
            for p in &packets {
                seed.extend_from_slice(&(p.len() as u16).to_le_bytes());
                seed.extend_from_slice(p);
            }
            std::fs::write(dir.join(format!("stream-{name}-{w}x{h}")), seed).unwrap();
        }
    }
}
