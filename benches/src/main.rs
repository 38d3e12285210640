//! `rearview-bench`: benchmarks that print one JSON object each, and the workload generator
//! they share. Figures live here, never in tests.

use clap::{Parser, Subcommand};

mod agent;
mod capture;
mod codec;
mod evidence;

mod protocol;
mod ring;

mod workload;

#[derive(Parser)]
#[command(name = "rearview-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {
    /// The real rearviewd recording the workload: CPU (workers included), peak RSS, ring bytes per hour.
    Agent(agent::AgentArgs),
    /// Milliseconds per frame of every frame source at 1080p and 4K, on Xvfb running the workload.
    Capture {
        /// Print one JSON object (the only output on stdout).
        #[arg(long)]
        json: bool,
    },
    /// Our lossless codec against PNG, zstd and x264 on a recorded desktop.
    Codec(codec::CodecArgs),
    /// Checking an evidence package: without the tenant key (signatures, chain, custody) and with it (every frame).
    Evidence(evidence::EvidenceArgs),
    /// Console under a fleet: trigger push latency, ingest throughput, console peak RSS.
    Protocol(protocol::ProtocolArgs),
    /// Sealing and ring writes per segment, and their CPU cost as a share of encoding.
    Ring(ring::RingArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Agent(args) => agent::run(args),
        Bench::Capture { json } => capture::run(json),
        Bench::Codec(args) => codec::run(args),
        Bench::Evidence(args) => evidence::run(args),
        Bench::Protocol(args) => protocol::run(args),
        Bench::Ring(args) => ring::run(args),
    }
}
