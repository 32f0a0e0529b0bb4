//! Taking part in discovery (paper, sections III and IV): the server advertises its signed
//! `ServerAdvertisement` in the XIS on start and refreshes it periodically, and it computes its
//! own Vivaldi network coordinates from round trips it measures to peers found in the XIS, so
//! that the coordinates it advertises let clients and resource discovery estimate latency to it
//! without measuring.
//!
//! A round trip is measured as the time to open a TCP connection to the peer's advertised
//! endpoint (one SYN, one SYN-ACK): no cooperation from the peer is needed beyond listening,
//! and nothing is sent on the connection.

use crate::server::Server;
use serde::Deserialize;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use xeno_clients::vivaldi::{Coordinates, VivaldiConfig, VivaldiNode};
use xeno_clients::xis::advertiser::{Advertiser, AdvertiserConfig};
use xeno_schemas::documents::NetworkCoordinates;
use xeno_schemas::signing::SigningKey;

/// Most peers read from the XIS per probing round; they are the candidates the round's probes
/// are drawn from.
const PEER_CANDIDATES_MAX: u32 = 256;

/// `[xis]`: where this server advertises, and how it measures its network coordinates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct XisSettings {
    /// The XIS node, `host:port` or `http://host:port`. Empty (the default): the server does
    /// not advertise and computes no coordinates.
    pub address: String,
    /// How often the advertisement is refreshed, ms; keep it well under the XIS's TTL (90 s by
    /// default). Default 30,000.
    pub refresh_interval_ms: u64,
    /// How often a round of round-trip probes runs, ms. Default 10,000.
    pub probe_interval_ms: u64,
    /// Peers probed per round, drawn at random from the XIS. 0 turns coordinates off.
    /// Default 8.
    pub probes_per_round: usize,
    /// Longest a probe waits for a peer to answer, ms; a peer that does not answer in time is
    /// left out of the round. Default 2,000.
    pub probe_timeout_ms: u64,
}

impl Default for XisSettings {
    fn default() -> Self {
        XisSettings {
            address: String::new(),
            refresh_interval_ms: 30_000,
            probe_interval_ms: 10_000,
            probes_per_round: 8,
            probe_timeout_ms: 2_000,
        }
    }
}

impl XisSettings {
    /// Checks the settings; called with the rest of the configuration.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.address.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            (xeno_clients::xis::advertiser::REFRESH_INTERVAL_MIN_MS
                ..=xeno_clients::xis::advertiser::REFRESH_INTERVAL_MAX_MS)
                .contains(&self.refresh_interval_ms),
            "xis.refresh_interval_ms must be between {} and {}",
            xeno_clients::xis::advertiser::REFRESH_INTERVAL_MIN_MS,
            xeno_clients::xis::advertiser::REFRESH_INTERVAL_MAX_MS
        );
        anyhow::ensure!(
            self.probe_interval_ms >= 100,
            "xis.probe_interval_ms must be at least 100"
        );
        anyhow::ensure!(
            (1..=60_000).contains(&self.probe_timeout_ms),
            "xis.probe_timeout_ms must be between 1 and 60000"
        );
        anyhow::ensure!(
            self.probes_per_round <= 64,
            "xis.probes_per_round must be at most 64"
        );
        Ok(())
    }
}

/// The server's part in discovery while it runs.
pub struct Discovery {
    advertiser: Advertiser,
    stop_probing: watch::Sender<bool>,
    prober: tokio::task::JoinHandle<()>,
}

impl Discovery {
    /// Starts advertising `server` (signed with `key`) and probing peers.
    pub fn start(
        settings: &XisSettings,
        server: Arc<Server>,
        key: SigningKey,
    ) -> anyhow::Result<Discovery> {
        let server_id = key.fingerprint();
        let node = Arc::new(Mutex::new(Estimate {
            node: VivaldiNode::new(VivaldiConfig::default(), seed_of(&server_id)),
            observations: 0,
        }));
        let advertised_node = Arc::clone(&node);
        let advertiser = Advertiser::spawn(
            AdvertiserConfig {
                xis: settings.address.clone(),
                refresh_interval_ms: settings.refresh_interval_ms,
            },
            move |version| {
                let coordinates = coordinates_of(&advertised_node);
                crate::advertisement::advertisement_with(&server, &key, version, coordinates)
            },
        )?;
        let (stop_probing, stopped) = watch::channel(false);
        let prober = tokio::spawn(probe_peers(settings.clone(), server_id, node, stopped));
        Ok(Discovery {
            advertiser,
            stop_probing,
            prober,
        })
    }

    /// Waits for the first advertisement to be stored in the XIS.
    pub async fn wait_advertised(&self) -> anyhow::Result<u64> {
        Ok(self.advertiser.wait_first().await?.version)
    }

    /// Stops advertising (the record then ages out of the XIS) and probing.
    pub async fn stop(self) {
        let _ = self.stop_probing.send(true);
        let _ = self.prober.await;
        self.advertiser.stop().await;
    }
}

/// Different servers start their random directions differently.
fn seed_of(server_id: &str) -> u64 {
    server_id
        .get(..16)
        .and_then(|hex| u64::from_str_radix(hex, 16).ok())
        .unwrap_or(1)
}

/// The server's coordinates and how many round trips they rest on.
struct Estimate {
    node: VivaldiNode,
    observations: u64,
}

/// What to advertise: nothing until the node has measured something.
fn coordinates_of(estimate: &Mutex<Estimate>) -> Option<NetworkCoordinates> {
    let estimate = estimate.lock().unwrap_or_else(PoisonError::into_inner);
    (estimate.observations > 0).then(|| {
        estimate
            .node
            .coordinates()
            .to_advertised(estimate.node.error())
    })
}

async fn probe_peers(
    settings: XisSettings,
    server_id: String,
    node: Arc<Mutex<Estimate>>,
    mut stopped: watch::Receiver<bool>,
) {
    if settings.probes_per_round == 0 {
        return;
    }
    let interval = Duration::from_millis(settings.probe_interval_ms);
    let timeout = Duration::from_millis(settings.probe_timeout_ms);
    let mut random = seed_of(&server_id) | 1;
    loop {
        match probe_round(&settings, &server_id, &node, timeout, &mut random).await {
            Ok(probed) => tracing::debug!(probed, "network coordinates updated"),
            Err(error) => tracing::warn!(%error, "probing peers for network coordinates failed"),
        }
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One round: pick peers from the XIS, measure each, and move the coordinates. Returns how
/// many peers were measured.
async fn probe_round(
    settings: &XisSettings,
    server_id: &str,
    node: &Mutex<Estimate>,
    timeout: Duration,
    random: &mut u64,
) -> anyhow::Result<usize> {
    let channel = xeno_clients::xis::connect(&settings.address).await?;
    // Every advertisement has a version, so this lists servers (fresh ones first).
    let page = xeno_clients::xis::lookup(
        channel.clone(),
        xeno_schemas::proto::xis::v1::LookupRequest {
            token: "Version".to_owned(),
            values: xeno_clients::xis::range(None, None),
            page_size: PEER_CANDIDATES_MAX,
            cursor: String::new(),
            include_stale: false,
        },
    )
    .await?;
    let mut candidates: Vec<String> = page
        .matches
        .into_iter()
        .map(|found| found.server_id)
        .filter(|id| id != server_id)
        .collect();
    let mut probed = 0;
    while probed < settings.probes_per_round && !candidates.is_empty() {
        *random ^= *random << 13;
        *random ^= *random >> 7;
        *random ^= *random << 17;
        let pick = usize::try_from(*random % candidates.len() as u64).unwrap_or(0);
        let peer_id = candidates.swap_remove(pick);
        let Ok((peer, _)) = xeno_clients::xis::get_advertisement(channel.clone(), &peer_id).await
        else {
            continue;
        };
        let Some(rtt_ms) = xeno_clients::vivaldi::connect_rtt_ms(&peer.endpoint, timeout).await
        else {
            continue;
        };
        let (coordinates, error) = match &peer.coordinates {
            Some(advertised) => (
                Coordinates::from_advertised(advertised),
                advertised
                    .error
                    .map_or(1.0, xeno_schemas::schema::Decimal::to_f64),
            ),
            // A peer without coordinates yet is still a distance to learn from, with no
            // confidence in where it is.
            None => {
                let mine = node.lock().unwrap_or_else(PoisonError::into_inner);
                (
                    Coordinates::origin(
                        mine.node.coordinates().components.len(),
                        VivaldiConfig::default().height_min_ms,
                    ),
                    1.0,
                )
            }
        };
        {
            let mut estimate = node.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(error) = estimate.node.observe(&coordinates, error, rtt_ms) {
                tracing::debug!(peer = %peer_id, %error, "round trip not used");
                continue;
            }
            estimate.observations += 1;
        }
        probed += 1;
    }
    Ok(probed)
}
