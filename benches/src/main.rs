//! `rearview-bench`: benchmarks that print one JSON object each, and the workload generator
//! they share. Figures live here, never in tests.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "rearview-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand)]
enum Bench {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.bench {}
}
