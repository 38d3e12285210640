//! `rearview-verify DIR [--tenant-key FILE] [--console-key FINGERPRINT] [--json]`
//!
//! Exit status: 0 everything holds; 1 a check failed (the report names the file and the
//! check); 2 bad usage.

use std::path::PathBuf;
use std::process::ExitCode;

use rearview_verify::{verify, Options};

const USAGE: &str =
    "usage: rearview-verify DIR [--tenant-key FILE] [--console-key FINGERPRINT] [--json]";

fn main() -> ExitCode {
    let mut options = Options::default();
    let mut json = false;
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--json" => json = true,
            "--tenant-key" => match args.next() {
                Some(f) => options.tenant_key = Some(PathBuf::from(f)),
                None => return usage("--tenant-key needs a file"),
            },
            "--console-key" => match args.next() {
                Some(f) => options.console_key = Some(f),
                None => return usage("--console-key needs a fingerprint"),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            a if a.starts_with('-') => return usage(&format!("unknown option {a}")),
            a if dir.is_none() => dir = Some(PathBuf::from(a)),
            a => return usage(&format!("one package at a time ({a:?} is extra)")),
        }
    }
    let Some(dir) = dir else { return usage("which package?") };
    options.dir = dir;
    let report = verify(&options);
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => eprintln!("rearview-verify: {e}"),
        }
    } else {
        print!("{}", report.text());
    }
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn usage(why: &str) -> ExitCode {
    eprintln!("rearview-verify: {why}\n{USAGE}");
    ExitCode::from(2)
}
