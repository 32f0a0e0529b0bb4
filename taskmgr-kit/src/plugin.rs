//! What every task-manager plugin binary does around its backend: logs (filtered
//! by `RUST_LOG`, `info` by default), serves the interface on a Unix socket, and stops on
//! SIGTERM or Ctrl-C.

use crate::backend::Backend;
use crate::host::Host;
use std::path::Path;

/// Sets up logging for a plugin binary.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
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

/// Serves `host` on the Unix socket `socket` (replaced if it exists) until SIGTERM or Ctrl-C.
pub async fn serve<B: Backend>(host: Host<B>, socket: &Path) -> anyhow::Result<()> {
    tracing::info!(socket = %socket.display(), env_type = B::ENV_TYPE, "serving the task manager");
    crate::serve_unix(host, socket, shutdown_signal()).await?;
    Ok(())
}
