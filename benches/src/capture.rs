//! `capture`: milliseconds per frame of every frame source, on a private Xvfb running the
//! workload, at 1920x1080 and 3840x2160.
//!
//! Each capture is timed on its own (wall clock around `FrameSource::capture`, which includes
//! copying the pixels into the frame); the median and 95th percentile are printed.

use std::time::{Duration, Instant};

use anyhow::Context;
use rearview_capture::source::x11::{X11Options, X11ShmSource};
use rearview_capture::source::xcap::XcapSource;
use rearview_capture::source::FrameSource;
use rearview_testkit::xvfb::Xvfb;
use serde::Serialize;

use crate::workload::Workload;

/// Sizes measured.
const SIZES: [(u32, u32); 2] = [(1920, 1080), (3840, 2160)];
/// Captures per backend and size; at least this many, within `BUDGET`.
const SAMPLES: usize = 60;
/// The most time one backend at one size gets (xcap at 4K is slow).
const BUDGET: Duration = Duration::from_secs(20);
/// Unmeasured captures first (connection setup, first-touch page faults).
const WARMUP: usize = 3;

#[derive(Serialize)]
struct Report {
    bench: &'static str,
    results: Vec<Row>,
}

#[derive(Serialize)]
struct Row {
    backend: &'static str,
    width: u32,
    height: u32,
    frames: usize,
    ms_per_frame_median: f64,
    ms_per_frame_p95: f64,
}

pub fn run(json: bool) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for (width, height) in SIZES {
        let x = Xvfb::start(width, height).context("start Xvfb")?;
        let _workload = Workload::start(&x)?;
        std::thread::sleep(Duration::from_secs(1));
        let shm = X11ShmSource::connect(x.display())?;
        anyhow::ensure!(shm.uses_shm(), "MIT-SHM is not usable on {}", x.display());
        let plain = X11ShmSource::connect_with(x.display(), X11Options { use_shm: false })?;
        // xcap reads DISPLAY; this binary is single-threaded here apart from the workload
        // driver, which passes DISPLAY to its children explicitly and never reads ours.
        std::env::set_var("DISPLAY", x.display());
        std::env::remove_var("WAYLAND_DISPLAY");
        let sources: Vec<Box<dyn FrameSource>> =
            vec![Box::new(shm), Box::new(plain), Box::new(XcapSource::new())];
        for mut source in sources {
            let row = measure(source.as_mut(), width, height)
                .with_context(|| format!("{} at {width}x{height}", source.name()))?;
            if !json {
                eprintln!(
                    "{:<13} {width}x{height}: median {:.2} ms, p95 {:.2} ms ({} frames)",
                    row.backend, row.ms_per_frame_median, row.ms_per_frame_p95, row.frames
                );
            }
            results.push(row);
        }
    }
    let report = Report { bench: "capture", results };
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

fn measure(source: &mut dyn FrameSource, width: u32, height: u32) -> anyhow::Result<Row> {
    let monitors = source.monitors()?;
    let monitor = monitors.first().context("no monitor")?;
    anyhow::ensure!(
        (monitor.width, monitor.height) == (width, height),
        "monitor is {}x{}, expected {width}x{height}",
        monitor.width,
        monitor.height
    );
    for _ in 0..WARMUP {
        source.capture(monitor.id)?;
    }
    let mut ms = Vec::with_capacity(SAMPLES);
    let start = Instant::now();
    while ms.len() < SAMPLES && (ms.len() < 5 || start.elapsed() < BUDGET) {
        let t = Instant::now();
        let frame = source.capture(monitor.id)?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(frame.width == width && frame.height == height, "wrong frame size");
        // Pace a little like a recorder would, so the workload gets CPU between captures.
        std::thread::sleep(Duration::from_millis(20));
    }
    ms.sort_by(f64::total_cmp);
    Ok(Row {
        backend: source.name(),
        width,
        height,
        frames: ms.len(),
        ms_per_frame_median: round(percentile(&ms, 0.5)),
        ms_per_frame_p95: round(percentile(&ms, 0.95)),
    })
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}
