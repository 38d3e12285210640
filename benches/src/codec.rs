//! `codec`: bytes per hour and milliseconds per frame of our lossless codec against anchors (PNG
//! per frame, zstd per raw frame, x264 through ffmpeg), on the same frames.
//!
//! Frames come from the workload generator (a real desktop on Xvfb; `--scene video` adds a
//! video playing in a window) or from a file of raw
//! BGRX frames (`--input`, as `ffmpeg -f x11grab … -f rawvideo -pix_fmt bgr0` writes). Every
//! lossless entry is checked by decoding and comparing B, G, R of every pixel.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};
use rearview_capture::codec::{Decoder, Encoder, PacketKind};
use rearview_capture::{Frame, Timestamp};
use serde::Serialize;

#[derive(clap::Args)]
pub struct CodecArgs {
    /// Raw BGRX frames (4 bytes per pixel, no padding) instead of recording the workload.
    #[arg(long, requires_all = ["width", "height"])]
    input: Option<PathBuf>,
    /// Also write the frames used, as raw BGRX, to this file (to rerun with `--input`).
    #[arg(long)]
    save: Option<PathBuf>,
    #[arg(long)]
    width: Option<u32>,
    #[arg(long)]
    height: Option<u32>,
    /// What the recorded workload shows (ignored with `--input`).
    #[arg(long, value_enum, default_value_t = crate::workload::Scene::Office)]
    scene: crate::workload::Scene,
    /// Seconds of workload to record (at `--fps`).
    #[arg(long, default_value_t = 120)]
    seconds: u32,
    /// Frames per second of the recording; bytes per hour assume this rate.
    #[arg(long, default_value_t = 1)]
    fps: u32,
    /// A keyframe every this many frames (a 10 s segment at 1 fps).
    #[arg(long, default_value_t = 10)]
    key_every: usize,
    /// Use at most this many frames of the input.
    #[arg(long)]
    max_frames: Option<usize>,
    /// Skip the ffmpeg anchors.
    #[arg(long)]
    no_ffmpeg: bool,
    /// Print one JSON object (the default prints the same, pretty).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    source: String,
    frames: usize,
    width: u32,
    height: u32,
    fps: u32,
    key_every: usize,
    results: Vec<Entry>,
}

#[derive(Serialize, Default)]
struct Entry {
    name: String,
    lossless: bool,
    bytes_per_hour: f64,
    encode_ms_per_frame: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    encode_cpu_ms_per_frame: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decode_ms_per_frame: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<serde_json::Value>,
}

pub fn run(args: CodecArgs) -> anyhow::Result<()> {
    let (frames, source) = match &args.input {
        Some(path) => {
            let (w, h) = (args.width.unwrap_or(0), args.height.unwrap_or(0));
            (read_raw(path, w, h, args.max_frames)?, path.display().to_string())
        }
        None => {
            let (w, h) = (args.width.unwrap_or(1920), args.height.unwrap_or(1080));
            let frames = crate::workload::record_desktop(
                w,
                h,
                u64::from(args.seconds),
                args.fps,
                args.scene,
            )?;
            let scene = format!("{:?}", args.scene).to_lowercase();
            (frames, format!("workload {scene} {w}x{h}, {} s at {} fps", args.seconds, args.fps))
        }
    };
    if let Some(path) = &args.save {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        );
        for f in &frames {
            for y in 0..f.height {
                file.write_all(f.row(y))?;
            }
        }
        file.flush()?;
    }
    let Some(first) = frames.first() else { bail!("no frames to encode") };
    let (width, height) = (first.width, first.height);
    let hours = frames.len() as f64 / args.fps as f64 / 3600.0;

    let mut results = vec![rearview(&frames, args.key_every, hours)?];
    results.push(png(&frames, hours)?);
    results.push(zstd_raw(&frames, hours)?);
    if !args.no_ffmpeg && ffmpeg_available() {
        let x264 = [
            (
                "x264rgb-qp0-ultrafast",
                &["-c:v", "libx264rgb", "-qp", "0", "-preset", "ultrafast"][..],
                true,
            ),
            (
                "x264rgb-qp0-veryfast",
                &["-c:v", "libx264rgb", "-qp", "0", "-preset", "veryfast"][..],
                true,
            ),
            (
                "x264rgb-qp0-veryfast-gop10",
                &["-c:v", "libx264rgb", "-qp", "0", "-preset", "veryfast", "-g", "10"][..],
                true,
            ),
            (
                "x264-crf23-veryfast",
                &["-c:v", "libx264", "-crf", "23", "-preset", "veryfast"][..],
                false,
            ),
        ];
        for (name, codec, lossless) in x264 {
            results.push(ffmpeg(name, codec, lossless, &frames, args.fps, hours)?);
        }
    }
    let report = Report {
        bench: "codec",
        source,
        frames: frames.len(),
        width,
        height,
        fps: args.fps,
        key_every: args.key_every,
        results,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn read_raw(
    path: &PathBuf,
    width: u32,
    height: u32,
    max: Option<usize>,
) -> anyhow::Result<Vec<Frame>> {
    if width == 0 || height == 0 {
        bail!("--width and --height must be positive");
    }
    let frame_len = width as usize * height as usize * 4;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut frames = Vec::new();
    loop {
        if max.is_some_and(|m| frames.len() >= m) {
            break;
        }
        let mut data = vec![0u8; frame_len];
        match file.read_exact(&mut data) {
            Ok(()) => frames.push(Frame {
                width,
                height,
                stride: width as usize * 4,
                data,
                captured_at: Timestamp::now(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
    Ok(frames)
}

fn per_hour(bytes: usize, hours: f64) -> f64 {
    (bytes as f64 / hours).round()
}

fn rearview(frames: &[Frame], key_every: usize, hours: f64) -> anyhow::Result<Entry> {
    let mut enc = Encoder::new(frames[0].width, frames[0].height)?;
    let mut packets = Vec::with_capacity(frames.len());
    let (mut key_bytes, mut key_ms, mut keys) = (0usize, 0.0f64, 0usize);
    let (mut delta_ms, mut deltas, mut same) = (0.0f64, 0usize, 0usize);
    let cpu0 = cpu_ms(libc::RUSAGE_SELF);
    let t0 = Instant::now();
    for (i, f) in frames.iter().enumerate() {
        if key_every > 0 && i % key_every == 0 {
            enc.force_keyframe();
        }
        let mut p = Vec::new();
        let t = Instant::now();
        let kind = enc.encode(f, &mut p)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        match kind {
            PacketKind::Key => {
                keys += 1;
                key_ms += ms;
                key_bytes += p.len();
            }
            PacketKind::Delta => {
                deltas += 1;
                delta_ms += ms;
            }
            PacketKind::Same => same += 1,
        }
        packets.push(p);
    }
    let encode_ms = t0.elapsed().as_secs_f64() * 1e3 / frames.len() as f64;
    let encode_cpu = (cpu_ms(libc::RUSAGE_SELF) - cpu0) / frames.len() as f64;
    let mut dec = Decoder::new();
    let mut lossless = true;
    let mut decode_ms = 0.0;
    for (p, f) in packets.iter().zip(frames) {
        let t = Instant::now();
        let back = dec.decode(p)?;
        decode_ms += t.elapsed().as_secs_f64() * 1e3;
        lossless &= back.same_pixels(f);
    }
    let total: usize = packets.iter().map(Vec::len).sum();
    Ok(Entry {
        name: "rearview".into(),
        lossless,
        bytes_per_hour: per_hour(total, hours),
        encode_ms_per_frame: encode_ms,
        encode_cpu_ms_per_frame: Some(encode_cpu),
        decode_ms_per_frame: Some(decode_ms / frames.len() as f64),
        detail: Some(serde_json::json!({
            "keyframes": keys,
            "deltas": deltas,
            "same": same,
            "keyframe_bytes_share": key_bytes as f64 / total.max(1) as f64,
            "keyframe_bytes_mean": key_bytes as f64 / keys.max(1) as f64,
            "delta_bytes_mean": (total - key_bytes) as f64 / (deltas + same).max(1) as f64,
            "keyframe_encode_ms_mean": key_ms / keys.max(1) as f64,
            "delta_encode_ms_mean": delta_ms / deltas.max(1) as f64,
        })),
    })
}

fn png(frames: &[Frame], hours: f64) -> anyhow::Result<Entry> {
    use image::ImageEncoder;
    let mut total = 0usize;
    let (mut enc_ms, mut dec_ms) = (0.0, 0.0);
    let mut lossless = true;
    for f in frames {
        let t = Instant::now();
        let rgb = to_rgb(f);
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out).write_image(
            &rgb,
            f.width,
            f.height,
            image::ExtendedColorType::Rgb8,
        )?;
        enc_ms += t.elapsed().as_secs_f64() * 1e3;
        total += out.len();
        let t = Instant::now();
        let back = image::load_from_memory_with_format(&out, image::ImageFormat::Png)?.into_rgb8();
        dec_ms += t.elapsed().as_secs_f64() * 1e3;
        lossless &= back.as_raw() == &rgb;
    }
    let n = frames.len() as f64;
    Ok(Entry {
        name: "png".into(),
        lossless,
        bytes_per_hour: per_hour(total, hours),
        encode_ms_per_frame: enc_ms / n,
        decode_ms_per_frame: Some(dec_ms / n),
        ..Entry::default()
    })
}

fn to_rgb(f: &Frame) -> Vec<u8> {
    let mut rgb = Vec::with_capacity(f.width as usize * f.height as usize * 3);
    for y in 0..f.height {
        for p in f.row(y).chunks_exact(4) {
            rgb.extend_from_slice(&[p[2], p[1], p[0]]);
        }
    }
    rgb
}

fn zstd_raw(frames: &[Frame], hours: f64) -> anyhow::Result<Entry> {
    let mut c = zstd::bulk::Compressor::new(3)?;
    let mut d = zstd::bulk::Decompressor::new()?;
    let mut total = 0usize;
    let (mut enc_ms, mut dec_ms) = (0.0, 0.0);
    let mut lossless = true;
    for f in frames {
        let t = Instant::now();
        let out = c.compress(&f.data)?;
        enc_ms += t.elapsed().as_secs_f64() * 1e3;
        total += out.len();
        let t = Instant::now();
        let back = d.decompress(&out, f.data.len())?;
        dec_ms += t.elapsed().as_secs_f64() * 1e3;
        lossless &= back == f.data;
    }
    let n = frames.len() as f64;
    Ok(Entry {
        name: "zstd3-raw".into(),
        lossless,
        bytes_per_hour: per_hour(total, hours),
        encode_ms_per_frame: enc_ms / n,
        decode_ms_per_frame: Some(dec_ms / n),
        ..Entry::default()
    })
}

fn ffmpeg_available() -> bool {
    Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// CPU time (user + system) of this process or of its waited-for children, in ms.
#[allow(unsafe_code)] // see the SAFETY comment inside
fn cpu_ms(who: libc::c_int) -> f64 {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable rusage; getrusage only writes into it, and an all-zero
    // rusage is a valid value of this plain C struct (the zeroed() above).
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return 0.0;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Pipes the frames as raw bgr0 to ffmpeg, measures the output and the time, then decodes it
/// back to check losslessness where it is claimed.
fn ffmpeg(
    name: &str,
    codec: &[&str],
    claims_lossless: bool,
    frames: &[Frame],
    fps: u32,
    hours: f64,
) -> anyhow::Result<Entry> {
    let (w, h) = (frames[0].width, frames[0].height);
    let dir = std::env::temp_dir().join(format!("rearview-codec-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out_path = dir.join(format!("{name}.mkv"));
    let size = format!("{w}x{h}");
    let rate = fps.to_string();
    let cpu0 = cpu_ms(libc::RUSAGE_CHILDREN);
    let t0 = Instant::now();
    let mut child = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr0", "-s", &size])
        .args(["-r", &rate, "-i", "-"])
        .args(codec)
        .arg(&out_path)
        .stdin(Stdio::piped())
        .spawn()
        .context("starting ffmpeg")?;
    {
        let Some(mut stdin) = child.stdin.take() else { bail!("ffmpeg has no stdin") };
        for f in frames {
            for y in 0..f.height {
                stdin.write_all(f.row(y))?;
            }
        }
    }
    let status = child.wait()?;
    let wall = t0.elapsed().as_secs_f64() * 1e3;
    let cpu = cpu_ms(libc::RUSAGE_CHILDREN) - cpu0;
    if !status.success() {
        bail!("ffmpeg {name} failed: {status}");
    }
    let bytes = std::fs::metadata(&out_path)?.len() as usize;

    // Decode back to bgr0 and compare, frame by frame.
    let t1 = Instant::now();
    let mut child = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-i"])
        .arg(&out_path)
        .args(["-f", "rawvideo", "-pix_fmt", "bgr0", "-"])
        .stdout(Stdio::piped())
        .spawn()
        .context("starting ffmpeg to decode")?;
    let Some(mut stdout) = child.stdout.take() else { bail!("ffmpeg has no stdout") };
    let mut lossless = true;
    let mut buf = vec![0u8; w as usize * h as usize * 4];
    let mut decoded = 0usize;
    while decoded < frames.len() && stdout.read_exact(&mut buf).is_ok() {
        let back = Frame {
            width: w,
            height: h,
            stride: w as usize * 4,
            data: buf.clone(),
            captured_at: Timestamp::now(),
        };
        lossless &= back.same_pixels(&frames[decoded]);
        decoded += 1;
    }
    drop(stdout);
    child.wait()?;
    let decode_ms = t1.elapsed().as_secs_f64() * 1e3;
    lossless &= decoded == frames.len();
    if claims_lossless && !lossless {
        eprintln!("note: {name} did not decode bit-exact");
    }
    std::fs::remove_file(&out_path).ok();
    std::fs::remove_dir(&dir).ok();
    let n = frames.len() as f64;
    Ok(Entry {
        name: name.into(),
        lossless,
        bytes_per_hour: per_hour(bytes, hours),
        encode_ms_per_frame: wall / n,
        encode_cpu_ms_per_frame: Some(cpu / n),
        decode_ms_per_frame: Some(decode_ms / n),
        detail: Some(serde_json::json!({ "container": "matroska", "args": codec.join(" ") })),
    })
}
