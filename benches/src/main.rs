//! `rearview-bench`: benchmarks that print one JSON object each, and the workload generator
//! they share. Figures live here, never in tests.

use clap::{Parser, Subcommand};

mod ring;

mod capture;
mod codec;
mod workload;

#[derive(Parser)]
#[command(name = "rearview-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// Our lossless codec against PNG, zstd and x264 on a recorded desktop.
    Codec(codec::CodecArgs),
    /// Milliseconds per frame of every frame source at 1080p and 4K, on Xvfb running the workload.
    Capture {
        /// Print one JSON object (the only output on stdout).
        #[arg(long)]
        json: bool,
    },
    /// Sealing and ring writes per segment, and their CPU cost as a share of encoding.
    Ring(ring::RingArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Capture { json } => capture::run(json),
        Bench::Codec(args) => codec::run(args),
        Bench::Ring(args) => ring::run(args),
    }
}
