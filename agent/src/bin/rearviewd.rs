//! `rearviewd`: the Rearview agent daemon. See the `rearview_agent` crate docs.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use rearview_agent::daemon::{Daemon, Options};
use rearview_config::{AgentConfig, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(name = "rearviewd", version, about = "Rearview forensic-evidence agent daemon")]
struct Args {
    /// Agent configuration file.
    #[arg(long, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Enroll with this one-time token at start (ignored when already enrolled).
    #[arg(long, env = "REARVIEW_ENROLL_TOKEN", hide_env_values = true)]
    enroll_token: Option<String>,
}

fn main() -> anyhow::Result<()> {
    // The capture worker is this same binary, started by the daemon as the session's user.
    if std::env::args().nth(1).as_deref() == Some("__worker") {
        rearview_agent::service::init_logging(
            rearview_config::LogFormat::Text,
            rearview_config::LogLevel::Info,
        );
        std::process::exit(rearview_agent::worker::run::main());
    }
    let args = Args::parse();
    let config = AgentConfig::load(&args.config)
        .with_context(|| format!("cannot load the agent config {}", args.config.display()))?;
    rearview_agent::service::init_logging(config.log_format(), config.log_level());
    let exe = std::env::current_exe().context("cannot find the rearviewd executable")?;
    let mut opts = Options::new(config, exe);
    opts.config_path = Some(args.config);
    opts.enroll_token = args.enroll_token;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let daemon = Daemon::start(opts).await?;
        daemon.run().await?;
        anyhow::Ok(())
    })
}
