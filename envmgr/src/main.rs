//! `xenoserver`: run a XenoServer's environment manager.

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "xenoserver",
    version,
    about = "A XenoServer: sessions, tasks, metering and charging"
)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
}

#[tokio::main]
async fn main() -> Result<()> {
    xeno_daemon::init_tracing();
    let cli = Cli::parse();
    let config = xeno_envmgr::config::Config::load(&cli.config)?;
    let running = xeno_envmgr::daemon::start(config).await?;
    println!(
        "xenoserver {} grpc={}",
        running.server_id, running.grpc_addr
    );
    running
        .wait(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
