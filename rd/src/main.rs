//! `xeno-rd`: run a resource discovery system over an XIS.

use clap::Parser;
use xeno_daemon::DaemonArgs;
use xeno_rd::config::Config;

#[derive(Parser)]
#[command(
    name = "xeno-rd",
    version,
    about = "A resource discovery system: finds XenoServers by cost, latency and path diversity"
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
    let rd = xeno_rd::daemon::start(config).await?;
    println!("xeno-rd grpc={}", rd.addr);
    rd.wait(async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
