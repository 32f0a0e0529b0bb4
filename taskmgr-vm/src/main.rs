//! `xeno-taskmgr-vm`: the Linux task manager (paravirtual domains on KVM) as an external plugin, serving the
//! `xenoserve.taskmanager.v1.TaskManager` interface on a Unix socket until SIGTERM or Ctrl-C.

use clap::Parser;
use std::path::PathBuf;
use xeno_taskmgr_vm::{VmConfig, VmTaskManager};

/// Serves the Linux task manager on a Unix socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The Unix socket to listen on (replaced if it exists).
    #[arg(long)]
    socket: PathBuf,
    /// Most domains (VMs) held at once.
    #[arg(long, default_value_t = VmConfig::default().domains_max)]
    domains_max: u32,
    /// Most tasks running at once across all domains (one vCPU thread each).
    #[arg(long, default_value_t = VmConfig::default().tasks_max)]
    tasks_max: u32,
    /// Largest guest RAM a domain may ask for, MiB.
    #[arg(long, default_value_t = VmConfig::default().memory_mb_max)]
    memory_mb_max: u64,
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
    let config = VmConfig {
        domains_max: args.domains_max,
        tasks_max: args.tasks_max,
        memory_mb_max: args.memory_mb_max,
        ..VmConfig::default()
    };
    let manager = VmTaskManager::new(config)?;
    tracing::info!(socket = %args.socket.display(), path = ?manager.syscall_path(), "serving the Linux task manager");
    xeno_schemas::taskmanager::serve_unix(manager, &args.socket, shutdown_signal()).await?;
    Ok(())
}
