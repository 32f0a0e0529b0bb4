//! Starting an XIS node: its store, the aging sweeper, and the gRPC service (with health and
//! reflection). Used by the `xis` binary and, in process, by `xeno dev` and the tests.

use crate::config::{Backend, Config};
use crate::core::{Xis, now_ms, record_for};
use crate::service::{MESSAGE_BYTES_MAX, RESPONSE_BYTES_MAX, XisService};
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use xeno_schemas::documents::{Document, ServerAdvertisement};
use xeno_schemas::proto::xis::v1::xis_server::XisServer;

/// A running XIS node.
pub struct RunningXis {
    /// Where its gRPC service listens.
    pub addr: SocketAddr,
    /// The core, for in-process callers (tests, `xeno dev`).
    pub core: Arc<Xis>,
    shutdown: watch::Sender<bool>,
    tasks: tokio::task::JoinSet<anyhow::Result<()>>,
}

impl RunningXis {
    /// Stops serving, waits for the server and sweeper to finish, and flushes the store.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        if let Err(error) = self.core.store().flush().await {
            tracing::error!(%error, "flushing the XIS store at shutdown");
        }
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
                result.context("an XIS task panicked")??;
                anyhow::bail!("an XIS task stopped unexpectedly")
            }
        }
    }
}

/// Turns a logged document back into a record. Its signature is checked again: the log is a
/// file anyone with access to the data directory could write, and a forged record would
/// otherwise be served, and hide the genuine server it names.
fn reindex(xml: &str, received_ms: u64) -> Result<crate::store::NewRecord, String> {
    let advertisement = ServerAdvertisement::parse(xml.as_bytes())
        .map_err(|errors| format!("unreadable: {errors}"))?;
    crate::core::check_signature(&advertisement).map_err(|error| error.to_string())?;
    record_for(&advertisement, xml, received_ms).map_err(|error| error.to_string())
}

/// Opens the configured store.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    let aging = config.rules().aging;
    Ok(match config.backend {
        Backend::Memory if config.persist => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating {}", config.data_dir.display()))?;
            let data_dir = config.data_dir.clone();
            let now = now_ms();
            // Replaying parses every record: keep it off the async workers.
            let store =
                tokio::task::block_in_place(|| MemoryStore::open(&data_dir, aging, now, reindex))
                    .context("opening the embedded store")?;
            Store::Memory(store)
        }
        Backend::Memory => Store::Memory(MemoryStore::in_memory(aging)),
        Backend::Redis => Store::Redis(
            RedisStore::connect(&config.redis_options(), aging)
                .await
                .context("connecting to the Redis Cluster")?,
        ),
    })
}

async fn stopped(mut receiver: watch::Receiver<bool>) {
    let _ = receiver.wait_for(|stop| *stop).await;
}

/// Starts an XIS node from its configuration.
pub async fn start(config: Config) -> anyhow::Result<RunningXis> {
    config.validate()?;
    let store = open_store(&config).await?;
    let core = Arc::new(Xis::new(store, config.rules()));
    let (shutdown, stop) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    let sweeper = Arc::clone(&core);
    let interval = std::time::Duration::from_millis(config.sweep_interval_ms);
    let mut sweep_stop = stop.clone();
    tasks.spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = sweep_stop.wait_for(|stop| *stop) => return Ok(()),
            }
            match sweeper.sweep().await {
                Ok(report) if report.staled + report.discarded > 0 => {
                    tracing::debug!(
                        staled = report.staled,
                        discarded = report.discarded,
                        "aged records"
                    );
                }
                Ok(_) => {}
                // A store outage: lookups report it; aging resumes when the store is back.
                Err(error) => tracing::warn!(%error, "aging sweep failed"),
            }
        }
    });

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    if config.tls.is_none() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "serving plain gRPC beyond loopback: advertisements are self-certifying, but lookups travel in clear");
    }
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<XisServer<XisService>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(xeno_schemas::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let service = XisServer::new(XisService::new(Arc::clone(&core)))
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
    let grpc_stop = stopped(stop.clone());
    tasks.spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming(listener), grpc_stop)
            .await
            .context("gRPC server")
    });
    tracing::info!(%addr, backend = ?config.backend, ttl_seconds = config.ttl_seconds, "xis serving");
    Ok(RunningXis {
        addr,
        core,
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
