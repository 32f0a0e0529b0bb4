//! `xis`: run a XenoServer Information Service node.

use anyhow::Result;
use clap::Parser;
use std::path::PathBuf;
use xeno_xis::config::Config;

#[derive(Parser)]
#[command(
    name = "xis",
    version,
    about = "A XenoServer Information Service node: signed advertisements, aging, token and range lookups"
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
    let xis = xeno_xis::daemon::start(config).await?;
    println!("xis grpc={}", xis.addr);
    xis.wait(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
