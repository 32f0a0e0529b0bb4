//! `xeno-rd`: run a resource discovery system over an XIS.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    xeno_daemon::run::<xeno_rd::daemon::RunningRd>(
        "xeno-rd",
        "A resource discovery system: finds XenoServers by cost, latency and path diversity",
    )
    .await
}
