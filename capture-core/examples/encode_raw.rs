//! Encodes raw BGRX frames from a file with the default encoder, a keyframe every 10 frames,
//! and prints packet sizes and times: a small harness to profile the encoder under callgrind or perf on
//! real frames (`rearview-bench codec --save FILE` writes them), without the bench's anchors.
//!
//! ```text
//! cargo build --release -p rearview-capture --example encode_raw
//! valgrind --tool=callgrind target/release/examples/encode_raw FILE 1920 1080 [MAX_FRAMES]
//! ```
//!
//! `KEY_LEVEL`, `DELTA_LEVEL` and `KEY_WINDOW_LOG` in the environment override the zstd levels of the default
//! [`EncoderConfig`], to weigh size against time on the same frames; `KEY_PREDICTOR` and
//! `DELTA_PREDICTOR` (`none`, `left`, `up`) and `KEY_PALETTE` (`0` or `1`) its intra coding, `KEY_LDM` (`0` or `1`) long-distance matching.

use std::io::Read;
use std::time::{Duration, Instant};

use rearview_capture::codec::{Encoder, EncoderConfig, PacketKind, Predictor};
use rearview_capture::{Frame, Timestamp};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        return Err("usage: encode_raw FILE WIDTH HEIGHT [MAX_FRAMES]".into());
    }
    let (width, height): (u32, u32) = (args[2].parse()?, args[3].parse()?);
    let max: usize = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(usize::MAX);
    let mut file = std::fs::File::open(&args[1])?;
    let mut config = EncoderConfig::default();
    if let Ok(v) = std::env::var("KEY_LEVEL") {
        config.key_level = v.parse()?;
    }
    if let Ok(v) = std::env::var("DELTA_LEVEL") {
        config.delta_level = v.parse()?;
    }
    if let Ok(v) = std::env::var("KEY_WINDOW_LOG") {
        config.key_window_log = v.parse()?;
    }
    let predictor = |v: String| match v.as_str() {
        "none" => Predictor::None,
        "left" => Predictor::Left,
        _ => Predictor::Up,
    };
    if let Ok(v) = std::env::var("KEY_PREDICTOR") {
        config.key_predictor = predictor(v);
    }
    if let Ok(v) = std::env::var("DELTA_PREDICTOR") {
        config.delta_predictor = predictor(v);
    }
    if let Ok(v) = std::env::var("KEY_LDM") {
        config.key_long_distance = v != "0";
    }
    if let Ok(v) = std::env::var("KEY_PALETTE") {
        config.key_palette = v != "0";
    }
    let mut enc = Encoder::with_config(width, height, config)?;
    let (mut key_bytes, mut delta_bytes, mut n) = (0usize, 0usize, 0usize);
    let (mut key_time, mut delta_time, mut keys) = (Duration::ZERO, Duration::ZERO, 0usize);
    let mut packet = Vec::new();
    while n < max {
        let mut f = Frame::black(width, height, Timestamp::now());
        match file.read_exact(&mut f.data) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        if n % 10 == 0 {
            enc.force_keyframe();
        }
        packet.clear();
        let t = Instant::now();
        let kind = enc.encode(&f, &mut packet)?;
        let took = t.elapsed();
        if kind == PacketKind::Key {
            key_bytes += packet.len();
            key_time += took;
            keys += 1;
        } else {
            delta_bytes += packet.len();
            delta_time += took;
        }
        n += 1;
    }
    let ms = |d: Duration, k: usize| d.as_secs_f64() * 1e3 / k.max(1) as f64;
    println!(
        "{n} frames ({config:?}): {key_bytes} keyframe bytes, {delta_bytes} delta bytes; \
         {:.2} ms per keyframe, {:.2} ms per delta, {:.2} ms per frame",
        ms(key_time, keys),
        ms(delta_time, n - keys),
        ms(key_time + delta_time, n),
    );
    Ok(())
}
