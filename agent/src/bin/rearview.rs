//! `rearview`: local status and diagnostics of the Rearview agent, over the daemon's socket.

use clap::Parser;
use rearview_agent::cli::{run, Cli};

fn main() {
    let cli = Cli::parse();
    match run(&cli) {
        Ok((text, ok)) => {
            println!("{}", text.trim_end());
            std::process::exit(if ok { 0 } else { 1 });
        }
        Err(e) => {
            eprintln!("rearview: {e}");
            std::process::exit(match e.kind {
                rearview_agent::admin::ErrorKind::PermissionDenied => 77,
                _ => 1,
            });
        }
    }
}
