//! Starting an XIS node: its store, the aging sweeper, and the gRPC service (with health and
//! reflection). Used by the `xis` binary and, in process, by `xeno dev` and the tests.

use crate::config::{Backend, Config};
use crate::core::{now_ms, record_for};
use crate::service::XisService;
use crate::store::Store;
use crate::store::memory::MemoryStore;
use crate::store::redis::RedisStore;
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use xeno_clients::xis::{MESSAGE_BYTES_MAX, RESPONSE_BYTES_MAX};
use xeno_daemon::Servers;
use xeno_schemas::documents::{Document, ServerAdvertisement};
use xeno_schemas::proto::xis::v1::xis_server::XisServer;

pub use crate::core::{LookupPage, LookupQuery, StoredAdvertisement, Xis};
pub use crate::error::XisError;

/// A running XIS node.
pub struct RunningXis {
    /// Where its gRPC service listens.
    pub addr: SocketAddr,
    /// The core, for in-process callers (tests, `xeno dev`).
    pub core: Arc<Xis>,
    servers: Servers,
}

impl RunningXis {
    /// Stops serving, waits for the server and sweeper to finish, and flushes the store.
    pub async fn shutdown(mut self) {
        self.servers.stop().await;
        if let Err(error) = self.core.store().flush().await {
            tracing::error!(%error, "flushing the XIS store at shutdown");
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

/// Starts an XIS node from its configuration.
pub async fn start(config: Config) -> anyhow::Result<RunningXis> {
    config.validate()?;
    let store = open_store(&config).await?;
    let core = Arc::new(Xis::new(store, config.rules()));
    let mut servers = Servers::new("XIS");

    let sweeper = Arc::clone(&core);
    let interval = std::time::Duration::from_millis(config.sweep_interval_ms);
    let mut sweep_stop = servers.stopping();
    servers.spawn("the aging sweep", async move {
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
    let service = XisServer::new(XisService::new(Arc::clone(&core)))
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(RESPONSE_BYTES_MAX);
    let tls = config
        .tls
        .as_ref()
        .map(|tls| tls.server_config())
        .transpose()?;
    xeno_daemon::grpc::serve(&mut servers, listener, tls, service).await?;
    tracing::info!(%addr, backend = ?config.backend, ttl_seconds = config.ttl_seconds, "xis serving");
    Ok(RunningXis {
        addr,
        core,
        servers,
    })
}

impl xeno_daemon::Daemon for RunningXis {
    type Config = Config;

    async fn start(config: Config) -> anyhow::Result<RunningXis> {
        start(config).await
    }

    fn serving(&self) -> String {
        format!("xis grpc={}", self.addr)
    }

    fn servers(&mut self) -> &mut Servers {
        &mut self.servers
    }

    async fn shutdown(self) {
        RunningXis::shutdown(self).await;
    }
}
