//! The `main` of a daemon binary: arguments, logging, the configuration (or `--show-config`),
//! start, a line saying where it serves, then serving until Ctrl-C or until one of its servers
//! fails.

use crate::Servers;
use crate::config::{DaemonArgs, DaemonConfig};
use clap::{Args, FromArgMatches};
use std::future::Future;

/// A daemon as its binary runs it.
pub trait Daemon: Sized {
    /// Its configuration file's type.
    type Config: DaemonConfig + serde::Serialize;

    /// Starts it: listening and serving once this returns.
    fn start(config: Self::Config) -> impl Future<Output = anyhow::Result<Self>>;

    /// The line printed once it serves (tools wait for it and read the addresses).
    fn serving(&self) -> String;

    /// Its servers and loops.
    fn servers(&mut self) -> &mut Servers;

    /// Stops them, and whatever it holds beyond them.
    fn shutdown(self) -> impl Future<Output = ()>;

    /// Serves until one of its servers fails or `signal` completes, then shuts down.
    fn wait(
        mut self,
        signal: impl Future<Output = ()>,
    ) -> impl Future<Output = anyhow::Result<()>> {
        async move {
            self.servers().until(signal).await?;
            self.shutdown().await;
            Ok(())
        }
    }
}

/// Runs daemon `D` as the binary `name` (described by `about` in `--help`) with the process's
/// arguments.
pub async fn run<D: Daemon>(name: &'static str, about: &'static str) -> anyhow::Result<()> {
    let command = DaemonArgs::augment_args(clap::Command::new(name))
        .about(about)
        .version(env!("CARGO_PKG_VERSION"));
    let args = DaemonArgs::from_arg_matches(&command.get_matches())?;
    crate::init_tracing();
    let Some(config) = args.configuration::<D::Config>()? else {
        return Ok(());
    };
    let daemon = D::start(config).await?;
    println!("{}", daemon.serving());
    daemon
        .wait(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
