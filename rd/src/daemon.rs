//! Starting an RD system: its catalogue, the sync loop from the XIS, and the gRPC service (with
//! health and reflection). Used by the `xeno-rd` binary and, in process, by `xeno dev` and the
//! tests.

use crate::catalogue::Catalogue;
use crate::config::Config;
use crate::core::Rd;
use crate::service::RdService;
use crate::sync::{SyncReport, sync_once};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tonic::transport::Channel;
use xeno_clients::rd::{MESSAGE_BYTES_MAX, RESPONSE_BYTES_MAX};
use xeno_daemon::Servers;
use xeno_schemas::proto::rd::v1::resource_discovery_server::ResourceDiscoveryServer;

/// A running RD system.
pub struct RunningRd {
    /// Where its gRPC service listens.
    pub addr: SocketAddr,
    /// The core, for in-process callers.
    pub core: Arc<Rd>,
    xis: Channel,
    overlap_ms: u64,
    servers: Servers,
}

impl RunningRd {
    /// Syncs from the XIS now (tests, benchmarks, `xeno dev` after seeding servers).
    pub async fn sync_now(&self, full: bool) -> anyhow::Result<SyncReport> {
        Ok(sync_once(&self.xis, self.core.catalogue(), full, self.overlap_ms).await?)
    }

    /// Stops serving and syncing.
    pub async fn shutdown(mut self) {
        self.servers.stop().await;
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
    let xis = xeno_clients::xis::endpoint(&config.xis)?.connect_lazy();
    let mut servers = Servers::new("RD");
    servers.spawn(
        "the XIS sync loop",
        sync_loop(xis.clone(), catalogue, config.clone(), servers.stopping()),
    );

    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("binding {}", config.listen))?;
    let addr = listener.local_addr()?;
    let service = ResourceDiscoveryServer::new(RdService::new(Arc::clone(&core)))
        .max_decoding_message_size(MESSAGE_BYTES_MAX)
        .max_encoding_message_size(RESPONSE_BYTES_MAX);
    let tls = config
        .tls
        .as_ref()
        .map(|tls| tls.server_config())
        .transpose()?;
    xeno_daemon::grpc::serve(&mut servers, listener, tls, service).await?;
    tracing::info!(%addr, xis = %config.xis, ranking = %config.ranking.name, "xeno-rd serving");
    Ok(RunningRd {
        addr,
        core,
        xis,
        overlap_ms: config.sync_overlap_ms,
        servers,
    })
}

impl xeno_daemon::Daemon for RunningRd {
    type Config = Config;

    async fn start(config: Config) -> anyhow::Result<RunningRd> {
        start(config).await
    }

    fn serving(&self) -> String {
        format!("xeno-rd grpc={}", self.addr)
    }

    fn servers(&mut self) -> &mut Servers {
        &mut self.servers
    }

    async fn shutdown(self) {
        RunningRd::shutdown(self).await;
    }
}
