//! `xeno-rd`: run a resource discovery system over an XIS.

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;
use xeno_rd::config::Config;

#[derive(Parser)]
#[command(
    name = "xeno-rd",
    version,
    about = "A resource discovery system: finds XenoServers by cost, latency and path diversity"
)]
struct Cli {
    /// Configuration file (TOML); defaults apply when absent.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print the configuration in effect (defaults filled in) and exit.
    #[arg(long)]
    show_config: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match &cli.config {
        Some(path) => Config::load(path)?,
        None => {
            let config = Config::default();
            config.validate()?;
            config
        }
    };
    if cli.show_config {
        println!("{}", toml::to_string(&config)?);
        return Ok(());
    }
    let rd = xeno_rd::daemon::start(config).await?;
    println!("xeno-rd grpc={}", rd.addr);
    rd.wait(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
