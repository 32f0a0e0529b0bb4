//! `xis`: run a XenoServer Information Service node.

use clap::Parser;
use xeno_daemon::DaemonArgs;
use xeno_xis::config::Config;

#[derive(Parser)]
#[command(
    name = "xis",
    version,
    about = "A XenoServer Information Service node: signed advertisements, aging, token and range lookups"
)]
struct Cli {
    #[command(flatten)]
    daemon: DaemonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    xeno_daemon::init_tracing();
    let Some(config) = Cli::parse().daemon.configuration::<Config>()? else {
        return Ok(());
    };
    let xis = xeno_xis::daemon::start(config).await?;
    println!("xis grpc={}", xis.addr);
    xis.wait(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
