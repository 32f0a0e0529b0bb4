//! `xis`: run a XenoServer Information Service node.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    xeno_daemon::run::<xeno_xis::daemon::RunningXis>(
        "xis",
        "A XenoServer Information Service node: signed advertisements, aging, token and range lookups",
    )
    .await
}
