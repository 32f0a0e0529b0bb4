//! What every task-manager plugin binary does around its backend: logs to stderr (filtered
//! by `RUST_LOG`, `info` by default), serves the interface on a Unix socket, and on SIGTERM or
//! Ctrl-C destroys every domain (so no task outlives the plugin, and readers following a domain
//! see its end) before it stops.

use crate::backend::Backend;
use crate::host::Host;
use std::path::Path;
use std::time::Duration;

/// Sets up logging for a plugin binary as every daemon's: to stderr, filtered by `RUST_LOG`.
pub use xeno_daemon::init_tracing;

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

/// How long connected clients get to finish their calls once every domain is destroyed.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `host` on the Unix socket `socket` (replaced if it exists) until SIGTERM or Ctrl-C,
/// then destroys every domain, waits at most [`SHUTDOWN_GRACE`] for clients to finish, and
/// removes the socket.
pub async fn serve<B: Backend>(host: Host<B>, socket: &Path) -> anyhow::Result<()> {
    tracing::info!(socket = %socket.display(), env_type = B::ENV_TYPE, "serving the task manager");
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let stopping = host.clone();
    // Domains are destroyed before the server stops: that ends the StreamOutput streams that
    // follow them, which a graceful shutdown would otherwise wait for.
    let shutdown = async move {
        shutdown_signal().await;
        stopping
            .destroy_all("the task manager is shutting down")
            .await;
        let _ = stopped_tx.send(());
    };
    let served = crate::serve_unix(host, socket, shutdown);
    let grace_over = async {
        if stopped_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        served = served => served?,
        () = grace_over => {
            tracing::warn!("clients still connected {SHUTDOWN_GRACE:?} after shutdown; exiting anyway");
        }
    }
    let _ = std::fs::remove_file(socket);
    Ok(())
}
