//! `rearview-bench`: benchmarks that print one JSON object each, and the workload generator
//! they share. Figures live here, never in tests.

use clap::{Parser, Subcommand};

mod codec;

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
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {
        Bench::Codec(args) => codec::run(args),
    }
}
