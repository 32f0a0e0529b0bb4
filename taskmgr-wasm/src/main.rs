//! `xeno-taskmgr-wasm`: the Wasm task manager as an external plugin, serving the
//! `xenoserve.taskmanager.v1.TaskManager` interface on a Unix socket until SIGTERM or Ctrl-C.

use clap::Parser;
use std::path::PathBuf;
use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};

/// Serves the Wasm task manager on a Unix socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The Unix socket to listen on (replaced if it exists).
    #[arg(long)]
    socket: PathBuf,
    /// Most domains held at once.
    #[arg(long, default_value_t = WasmConfig::default().domains_max)]
    domains_max: u32,
    /// Most tasks running at once across all domains (sizes the instance pool).
    #[arg(long, default_value_t = WasmConfig::default().tasks_max)]
    tasks_max: u32,
    /// Threads running tasks (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!("cannot listen for SIGTERM: {error}");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = WasmConfig {
        domains_max: args.domains_max,
        tasks_max: args.tasks_max,
        worker_threads: args.worker_threads,
        ..WasmConfig::default()
    };
    let manager = WasmTaskManager::new(config)?;
    tracing::info!(socket = %args.socket.display(), "serving the Wasm task manager");
    xeno_schemas::taskmanager::serve_unix(manager, &args.socket, shutdown_signal()).await?;
    Ok(())
}
