//! # xeno-daemon: the scaffolding every daemon shares
//!
//! The platform's daemons (the XenoCorp `xenocorp`, the XenoServer `xenoserver`, the XIS `xis`
//! and resource discovery `xeno-rd`) differ in what they serve, not in how they run: each
//! reads one TOML file with documented defaults ([`config`]), logs through `tracing` to stderr
//! ([`init_tracing`]), offers gRPC health and reflection beside its service ([`grpc`]), and runs
//! a few servers and loops that stop together and report the first that fails ([`Servers`]),
//! and its binary's `main` is [`run`] over its [`Daemon`].
//! That is written here once.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let mut servers = xeno_daemon::Servers::new("example");
//! let stopped = servers.stopped();
//! servers.spawn("loop", async move {
//!     stopped.await;
//!     Ok(())
//! });
//! servers.stop().await;
//! # Ok(()) }
//! ```

pub mod config;
pub mod grpc;
mod lifecycle;
mod run;

pub use config::{DaemonArgs, DaemonConfig};
pub use lifecycle::Servers;
pub use run::{Daemon, run};

/// Logs to stderr, filtered by `RUST_LOG` (`info` by default).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
}
