//! Starting an RD system: its catalogue, the sync loop from the XIS, and the gRPC service (with
//! health and reflection). Used by the `xeno-rd` binary and, in process, by `xeno dev` and the
//! tests.

use crate::catalogue::Catalogue;
use crate::config::Config;
use crate::core::Rd;
use crate::service::{MESSAGE_BYTES_MAX, RESPONSE_BYTES_MAX, RdService};
use crate::sync::{SyncReport, sync_once};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Channel, Identity, Server, ServerTlsConfig};
use xeno_schemas::proto::rd::v1::resource_discovery_server::ResourceDiscoveryServer;

/// A running RD system.
pub struct RunningRd {
    /// Where its gRPC service listens.
    pub addr: SocketAddr,
    /// The core, for in-process callers.
    pub core: Arc<Rd>,
    xis: Channel,
    overlap_ms: u64,
    shutdown: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl RunningRd {
    /// Syncs from the XIS now (tests, benchmarks, `xeno dev` after seeding servers).
    pub async fn sync_now(&self, full: bool) -> anyhow::Result<SyncReport> {
        Ok(sync_once(&self.xis, self.core.catalogue(), full, self.overlap_ms).await?)
    }

    /// Stops serving and syncing.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
    }

    /// Serves until a task fails or `signal` completes.
    pub async fn wait(
        mut self,
        signal: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        tokio::select! {
            () = signal => {
                tracing::info!("shutting down");
                self.shutdown().await;
                Ok(())
            }
            Some(result) = self.tasks.join_next() => {
                result.context("an RD task panicked")??;
                anyhow::bail!("an RD task stopped unexpectedly")
            }
        }
    }
}

async fn sync_loop(
    xis: Channel,
    catalogue: Arc<Catalogue>,
    config: Config,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut ticker = tokio::time::interval(Duration::from_millis(config.sync_interval_ms));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let full_every = Duration::from_secs(config.full_sync_interval_seconds);
    let mut last_full: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
        }
        let full = last_full.is_none_or(|at| at.elapsed() >= full_every);
        match sync_once(&xis, &catalogue, full, config.sync_overlap_ms).await {
            Ok(report) => {
                if full {
                    last_full = Some(Instant::now());
                }
                tracing::debug!(
                    full,
                    seen = report.seen,
                    fetched = report.fetched,
                    dropped = report.dropped,
                    "synced from the XIS"
                );
            }
            // The XIS is away: keep trying; answers turn UNAVAILABLE after the configured time.
            Err(error) => tracing::warn!(%error, "syncing from the XIS"),
        }
    }
}

/// Starts an RD system from its configuration.
pub async fn start(config: Config) -> anyhow::Result<RunningRd> {
    config.validate()?;
    let catalogue = Arc::new(Catalogue::default());
    let core = Arc::new(Rd::new(Arc::clone(&catalogue), &config));
    let xis = xeno_xis::client::endpoint(&config.xis)?.connect_lazy();
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(sync_loop(
        xis.clone(),
        catalogue,
        config.clone(),
        stop.clone(),
    ));

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ResourceDiscoveryServer<RdService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(xeno_schemas::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let service = ResourceDiscoveryServer::new(RdService::new(Arc::clone(&core)))
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(RESPONSE_BYTES_MAX);
    let mut builder = Server::builder();
    if let Some(tls) = &config.tls {
        let certificate = std::fs::read_to_string(&tls.certificate_file)
            .with_context(|| format!("reading {}", tls.certificate_file.display()))?;
        let key = std::fs::read_to_string(&tls.key_file)
            .with_context(|| format!("reading {}", tls.key_file.display()))?;
        builder = builder
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(certificate, key)))
            .context("configuring TLS")?;
    }
    let router = builder
        .layer(xeno_schemas::transport::InvalidRequests)
        .add_service(health_service)
        .add_service(reflection)
        .add_service(service);
    let mut grpc_stop = stop.clone();
    tasks.spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming(listener), async move {
                let _ = grpc_stop.wait_for(|stop| *stop).await;
            })
            .await
            .context("gRPC server")
    });
    tracing::info!(%addr, xis = %config.xis, ranking = %config.ranking.name, "xeno-rd serving");
    Ok(RunningRd {
        addr,
        core,
        xis,
        overlap_ms: config.sync_overlap_ms,
        shutdown,
        tasks,
    })
}

/// Accepted connections with Nagle's algorithm off: answers are small and latency matters.
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    TcpListenerStream::new(listener).map(|stream| {
        if let Ok(stream) = &stream {
            let _ = stream.set_nodelay(true);
        }
        stream
    })
}
