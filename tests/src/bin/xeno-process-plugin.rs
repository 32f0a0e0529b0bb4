//! `xeno-process-plugin`: the example `Process` task manager plugin, serving the TaskManager
//! service on a Unix socket until SIGTERM or Ctrl-C, then destroying every domain so that no
//! task outlives it. See `xeno_tests::process_plugin` for what it does and does not promise.
//!
//! ```sh
//! RUST_LOG=info xeno-process-plugin --socket /run/xeno/process.sock
//! ```

use clap::Parser;
use std::path::PathBuf;
use tokio::signal::unix::{SignalKind, signal};
use xeno_tests::process_plugin::{Config, DOMAINS_MAX_DEFAULT, ProcessTaskManager};

/// How long connected clients get to finish their calls once every domain is destroyed.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The Process task manager plugin: native executables under rlimits (not an isolation boundary).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Unix socket to serve the TaskManager service on (replaced if it exists).
    #[arg(long)]
    socket: PathBuf,
    /// Most domains at once.
    #[arg(long, default_value_t = DOMAINS_MAX_DEFAULT)]
    domains_max: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let manager = ProcessTaskManager::new(Config {
        domains_max: args.domains_max,
    })?;
    let mut terminate = signal(SignalKind::terminate())?;
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let stopping = manager.clone();
    // Domains are destroyed before the server stops: that ends the StreamOutput streams that
    // follow them, which graceful shutdown would otherwise wait for.
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupted: shutting down"),
        }
        stopping.shutdown().await;
        let _ = stopped_tx.send(());
    };
    tracing::info!(socket = %args.socket.display(), "serving the Process task manager");
    let serve = xeno_taskmgr_kit::serve_unix(manager.clone(), &args.socket, shutdown);
    let grace_over = async {
        if stopped_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = serve => served?,
        () = grace_over => {
            tracing::warn!("clients still connected {SHUTDOWN_GRACE:?} after shutdown; exiting anyway");
        }
    }
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}
