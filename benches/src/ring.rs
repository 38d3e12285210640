//! `ring`: what sealing and storing a segment cost next to encoding it.
//!
//! A segment is 10 frames of 1920x1080 (10 s at the default 1 fps): a synthetic desktop —
//! text on a light background, scrolling a few lines and gaining typed characters every frame
//! — or raw BGRX frames from a file (`--input`, as `ffmpeg -f x11grab … -f rawvideo -pix_fmt
//! bgr0` writes). Each segment is encoded once (the codec's cost, through `SegmentWriter`),
//! sealed many times (`seal`), and stored in a ring on the real filesystem under the temp dir
//! with every fsync (`ring_write`). CPU time of sealing plus writing is then given as a share
//! of the CPU time of encoding. `sign` is the device's chain entry for a sealed segment
//! (SHA-256 of the sealed file and an Ed25519 signature, see `rearview_evidence::chain`).

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rearview_capture::ring::{Ring, RingConfig};
use rearview_capture::seal::{seal, SealBinding, TenantPublicKey};
use rearview_capture::segment::{FinishedSegment, SegmentContext, SegmentId, SegmentWriter};
use rearview_capture::{Frame, MonitorInfo, Timestamp};
use serde_json::json;

#[derive(clap::Args)]
pub struct RingArgs {
    /// Raw BGRX frames (4 bytes per pixel, no padding) instead of the synthetic desktop.
    #[arg(long, requires_all = ["width", "height"])]
    input: Option<PathBuf>,
    #[arg(long)]
    width: Option<u32>,
    #[arg(long)]
    height: Option<u32>,
    /// Frames per segment (10 s at 1 fps).
    #[arg(long, default_value_t = 10)]
    frames_per_segment: usize,
    /// Segments to encode.
    #[arg(long, default_value_t = 3)]
    segments: usize,
    /// Seals per segment for the seal timing.
    #[arg(long, default_value_t = 20)]
    seals: usize,
    /// Segments written to the ring for the write timing.
    #[arg(long, default_value_t = 60)]
    writes: usize,
    /// Print one JSON object (the default prints the same, pretty).
    #[arg(long)]
    json: bool,
}

/// Any valid X25519 point will do for sealing; this is RFC 9180 A.1's recipient key.
const BENCH_KEY: &str = "3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d";

pub fn run(args: RingArgs) -> anyhow::Result<()> {
    let (width, height) = (args.width.unwrap_or(1920), args.height.unwrap_or(1080));
    let total = args.frames_per_segment * args.segments;
    let frames = match &args.input {
        Some(path) => read_raw(path, width, height, total)?,
        None => (0..total).map(|i| desktop(width, height, i as u32)).collect(),
    };
    if frames.len() < args.frames_per_segment || args.frames_per_segment == 0 {
        bail!("need at least {} frames, have {}", args.frames_per_segment, frames.len());
    }
    let key: TenantPublicKey = BENCH_KEY.parse()?;
    let context = bench_context(width, height);

    // Encoding: what the segment costs before sealing.
    let mut segments: Vec<FinishedSegment> = Vec::new();
    let encode_start = Cpu::now();
    for chunk in frames.chunks_exact(args.frames_per_segment) {
        let mut writer = SegmentWriter::new(context.clone())?;
        for f in chunk {
            writer.push_frame(f)?;
        }
        segments.push(writer.finish()?);
    }
    let encode = encode_start.elapsed();
    let encode_ms = encode.cpu_ms / segments.len() as f64;
    let plaintext_bytes =
        segments.iter().map(|s| s.plaintext.len()).sum::<usize>() / segments.len();

    // Sealing.
    let mut overhead = 0usize;
    let seal_start = Cpu::now();
    for s in &segments {
        let binding =
            SealBinding { tenant: "contoso", device: "bench-device", segment_id: s.header.id };
        for _ in 0..args.seals {
            let sealed = seal(&key, &binding, &s.plaintext)?;
            overhead = sealed.len() - s.plaintext.len();
            std::hint::black_box(&sealed);
        }
    }
    let seal_time = seal_start.elapsed();
    let seal_ms = seal_time.cpu_ms / (segments.len() * args.seals) as f64;
    let seal_wall_ms = seal_time.wall.as_secs_f64() * 1e3 / (segments.len() * args.seals) as f64;

    // Signing: what the device adds to each sealed segment for its chain (issue 13): SHA-256 of
    // the sealed file, then an Ed25519 signature over the entry that names it.
    let (device_key, _) = rearview_evidence::Signer::generate()?;
    let sealed: Vec<Vec<u8>> = segments
        .iter()
        .map(|s| {
            let binding =
                SealBinding { tenant: "contoso", device: "bench-device", segment_id: s.header.id };
            seal(&key, &binding, &s.plaintext)
        })
        .collect::<Result<_, _>>()?;
    let sign = sign_per_segment(&device_key, &segments, &sealed, args.seals)?;

    // Writing to a ring on disk: fresh ids, so every insert is a real new file with all fsyncs.
    let dir = std::env::temp_dir().join(format!("rearview-bench-ring-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = write_ring(&dir, &segments, &key, args.writes);
    let _ = std::fs::remove_dir_all(&dir);
    let (write, evicted) = result?;
    let write_ms = write.cpu_ms / args.writes as f64;
    let segments_per_s = args.writes as f64 / write.wall.as_secs_f64();

    let share = 100.0 * (seal_ms + write_ms) / encode_ms;
    let report = json!({
        "bench": "ring",
        "source": match &args.input { Some(p) => p.display().to_string(), None => "synthetic-desktop".into() },
        "width": width,
        "height": height,
        "frames_per_segment": args.frames_per_segment,
        "plaintext_bytes_per_segment": plaintext_bytes,
        "results": [
            { "name": "seal", "ms_per_segment": round3(seal_ms), "wall_ms_per_segment": round3(seal_wall_ms),
              "overhead_bytes_per_segment": overhead },
            { "name": "ring_write", "segments_per_s": round3(segments_per_s),
              "cpu_ms_per_segment": round3(write_ms),
              "wall_ms_per_segment": round3(write.wall.as_secs_f64() * 1e3 / args.writes as f64),
              "evicted": evicted },
            { "name": "sign", "ms_per_segment": round3(sign.sign_ms), "target_ms_per_segment": 0.1,
              "sha256_ms_per_segment": round3(sign.hash_ms),
              "note": "sign = the chain entry and its Ed25519 signature given the sealed file's SHA-256, which the upload computes anyway (content address)" },
            { "name": "encode", "ms_per_segment": round3(encode_ms) },
            { "name": "seal_and_write_vs_encode", "percent_of_encode_cpu": round3(share), "target_percent": 5.0 },
        ],
    });
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// Whose screen the bench's segments are: tenant `contoso`, device `bench-device`, user
/// `alice@contoso.example`, session `c2`, one primary monitor of `width` x `height`.
pub(crate) fn bench_context(width: u32, height: u32) -> SegmentContext {
    SegmentContext {
        tenant: "contoso".into(),
        device: "bench-device".into(),
        user: "alice@contoso.example".into(),
        session: "c2".into(),
        monitor: MonitorInfo {
            id: 0,
            name: "bench".into(),
            x: 0,
            y: 0,
            width,
            height,
            primary: true,
        },
    }
}

/// What the device's chain costs per segment, in CPU ms: the SHA-256 of the sealed file (which
/// the upload needs anyway: segments are content-addressed by it), and the signed entry
/// appended given that hash.
pub(crate) struct SignCost {
    pub(crate) hash_ms: f64,
    pub(crate) sign_ms: f64,
}

pub(crate) fn sign_per_segment(
    key: &rearview_evidence::Signer,
    segments: &[FinishedSegment],
    sealed: &[Vec<u8>],
    rounds: usize,
) -> anyhow::Result<SignCost> {
    use rearview_evidence::chain::{Appended, ChainHead, SegmentRef, Stream};
    let stream = Stream {
        tenant: "contoso".into(),
        device: "bench-device".into(),
        user: "alice@contoso.example".into(),
        session: "c2".into(),
        monitor: 0,
    };
    let start = Cpu::now();
    let mut hashes = Vec::with_capacity(sealed.len());
    for _ in 0..rounds {
        hashes = sealed.iter().map(|b| rearview_evidence::sha256_hex(b)).collect();
    }
    let hash = start.elapsed();
    let mut head = ChainHead::new()?;
    let start = Cpu::now();
    for _ in 0..rounds {
        for (s, sha256) in segments.iter().zip(&hashes) {
            let seg = SegmentRef { id: s.header.id.to_string(), sha256: sha256.clone() };
            let span = (s.header.start.utc_micros, s.header.end.utc_micros);
            std::hint::black_box(head.append(key, &stream, span, Appended::Segment(seg))?);
        }
    }
    let sign = start.elapsed();
    let per = (segments.len() * rounds) as f64;
    Ok(SignCost { hash_ms: hash.cpu_ms / per, sign_ms: sign.cpu_ms / per })
}

fn write_ring(
    dir: &std::path::Path,
    segments: &[FinishedSegment],
    key: &TenantPublicKey,
    writes: usize,
) -> anyhow::Result<(Elapsed, usize)> {
    let config = RingConfig::new(dir);
    let (mut ring, _) = Ring::open(config).context("opening the bench ring")?;
    // Seal first (timed above), so this measures the ring alone.
    let mut prepared = Vec::with_capacity(writes);
    for i in 0..writes {
        let s = &segments[i % segments.len()];
        let mut header = s.header.clone();
        header.id = SegmentId::random()?;
        let offset = i as i64 * 10_000_000;
        header.start.utc_micros += offset;
        header.end.utc_micros += offset;
        let binding =
            SealBinding { tenant: "contoso", device: "bench-device", segment_id: header.id };
        prepared.push((header, seal(key, &binding, &s.plaintext)?));
    }
    let mut evicted = 0;
    let start = Cpu::now();
    for (header, sealed) in &prepared {
        evicted += ring.insert(header, sealed)?.evicted.len();
    }
    Ok((start.elapsed(), evicted))
}

pub(crate) fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) struct Cpu {
    wall: Instant,
    cpu_ms: f64,
}

pub(crate) struct Elapsed {
    pub(crate) wall: Duration,
    pub(crate) cpu_ms: f64,
}

impl Cpu {
    pub(crate) fn now() -> Self {
        Self { wall: Instant::now(), cpu_ms: thread_cpu_ms() }
    }
    pub(crate) fn elapsed(&self) -> Elapsed {
        Elapsed { wall: self.wall.elapsed(), cpu_ms: thread_cpu_ms() - self.cpu_ms }
    }
}

/// CPU time of this thread (user + system), so other load on the machine does not count.
#[allow(unsafe_code)] // see the SAFETY comment inside
fn thread_cpu_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID exists on Linux and
    // clock_gettime writes only into the struct we pass.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// A light desktop with dark "text": lines of glyph-sized blocks whose pattern depends on the
/// line's content, scrolled by `3 * i` pixel rows, with the last line growing as if typed.
pub(crate) fn desktop(width: u32, height: u32, i: u32) -> Frame {
    let mut f = Frame::black(
        width,
        height,
        Timestamp { utc_micros: i as i64 * 1_000_000, mono_micros: i as u64 * 1_000_000 },
    );
    let scroll = 3 * i;
    for y in 0..height {
        let doc_y = y + scroll;
        let line = doc_y / 18;
        let in_glyph_row = doc_y % 18 < 12;
        let row = f.row_mut(y);
        for x in 0..width {
            let p = &mut row[x as usize * 4..x as usize * 4 + 4];
            let (b, g, r) = if x < 64 {
                (60, 50, 40) // dock
            } else if y < 28 {
                (230, 220, 215) // title bar
            } else {
                let col = (x - 64) / 9;
                let typed = if y > height - 40 { col < 20 + i * 3 } else { true };
                let glyph = !hash(line, col).is_multiple_of(7) && col < 40 + hash(line, 0) % 150;
                let ink = in_glyph_row
                    && glyph
                    && typed
                    && !hash(line * 31 + doc_y % 18, col + x % 9).is_multiple_of(3);
                if ink {
                    (30, 30, 30)
                } else {
                    (250, 250, 248)
                }
            };
            p[0] = b;
            p[1] = g;
            p[2] = r;
        }
    }
    f
}

fn hash(a: u32, b: u32) -> u32 {
    let mut h = a.wrapping_mul(0x9e37_79b9) ^ b.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 15;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 13)
}

fn read_raw(path: &PathBuf, width: u32, height: u32, max: usize) -> anyhow::Result<Vec<Frame>> {
    let frame_len = width as usize * height as usize * 4;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut frames = Vec::new();
    while frames.len() < max {
        let mut f = Frame::black(
            width,
            height,
            Timestamp {
                utc_micros: frames.len() as i64 * 1_000_000,
                mono_micros: frames.len() as u64 * 1_000_000,
            },
        );
        match file.read_exact(&mut f.data[..frame_len]) {
            Ok(()) => frames.push(f),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e).context("reading raw frames"),
        }
    }
    Ok(frames)
}
