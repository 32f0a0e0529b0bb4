//! The environment manager's side of advertising: publish the server's signed
//! `ServerAdvertisement` on start, then refresh it periodically (default every 30 s) so that it
//! never goes stale, each time as a total rewrite with a higher version.
//!
//! The caller owns the key and the content: [`Advertiser::spawn`] takes a closure that is given
//! the version to use and returns the signed advertisement (its current load, prices,
//! coordinates). Versions are `max(last + 1, Unix ms now)`, so a restarted environment manager
//! keeps going forward without remembering anything; if the XIS still holds a newer version
//! (a clock stepped back), the advertiser jumps past it and retries at once.
//!
//! ```no_run
//! # async fn example(key: xeno_schemas::signing::SigningKey,
//! #     mut current: impl FnMut() -> xeno_schemas::documents::ServerAdvertisement + Send + 'static)
//! # -> Result<(), xeno_clients::xis::advertiser::AdvertiserError> {
//! use xeno_schemas::documents::Document;
//! use xeno_clients::xis::advertiser::{Advertiser, AdvertiserConfig};
//! let config = AdvertiserConfig::default(); // every 30 s, to 127.0.0.1:7300
//! let advertiser = Advertiser::spawn(config, move |version| {
//!     let mut advertisement = current();
//!     advertisement.version = version;
//!     advertisement.signature = None;
//!     advertisement.signature = Some(key.sign(&advertisement.signed_bytes())?);
//!     Ok::<_, xeno_schemas::signing::SigningError>(advertisement)
//! })?;
//! let first = advertiser.wait_first().await?; // the first one is stored
//! // … on shutdown:
//! advertiser.stop().await;
//! # Ok(()) }
//! ```

use crate::xis::{self as client, Advertised, ClientError};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::{oneshot, watch};
use xeno_schemas::clock::now_unix_ms as now_ms;
use xeno_schemas::documents::ServerAdvertisement;

/// Shortest refresh interval accepted: faster refreshes only load the XIS.
pub const REFRESH_INTERVAL_MIN_MS: u64 = 1000;
/// Longest refresh interval accepted: a day; the XIS's TTL must be longer than the interval.
pub const REFRESH_INTERVAL_MAX_MS: u64 = 24 * 60 * 60 * 1000;
/// Wait before retrying a failed advertisement (unreachable or overloaded XIS).
pub const RETRY_DELAY_MS: u64 = 2000;

/// Where and how often to advertise. Plain data for an environment manager's TOML (`[xis]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdvertiserConfig {
    /// The XIS, `host:port` or `http://host:port`. Default `127.0.0.1:7300`.
    pub xis: String,
    /// Refresh interval, ms. Default 30,000 (30 s); keep it well under the XIS's TTL (90 s by
    /// default) so that one lost refresh does not make the server stale.
    pub refresh_interval_ms: u64,
}

impl Default for AdvertiserConfig {
    fn default() -> Self {
        AdvertiserConfig {
            xis: "127.0.0.1:7300".to_owned(),
            refresh_interval_ms: 30_000,
        }
    }
}

/// Why advertising could not start or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdvertiserError {
    /// The configuration is unusable.
    #[error("advertiser configuration: {0}")]
    Config(String),
    /// Building or signing the advertisement failed (the caller's closure).
    #[error("building the advertisement: {0}")]
    Build(String),
    /// The XIS refused or could not be reached.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The first attempt failed (the advertiser keeps retrying).
    #[error("advertising failed: {0}")]
    Failed(String),
    /// The advertiser stopped before the first advertisement was stored.
    #[error("the advertiser stopped before advertising")]
    Stopped,
}

/// What the advertiser last achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Nothing attempted yet.
    Starting,
    /// The latest attempt was stored.
    Advertised(Advertised),
    /// The latest attempt failed (message); the advertiser retries.
    Failed(String),
}

/// A running advertiser: a task that refreshes the advertisement until stopped.
pub struct Advertiser {
    status: watch::Receiver<Status>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// The version to use next: above the last one used and not below the clock.
pub fn next_version(last: u64) -> u64 {
    last.saturating_add(1).max(now_ms())
}

type Build = Box<
    dyn FnMut(u64) -> Result<ServerAdvertisement, Box<dyn std::error::Error + Send + Sync>> + Send,
>;

impl Advertiser {
    /// Starts advertising: the first advertisement at once, then one every
    /// `refresh_interval_ms`. `build` is given the version to use and returns the signed
    /// advertisement, with `Issued` now and `Expiry` a little beyond the next refresh (the XIS
    /// refuses lifetimes over its `lifetime_max_seconds`, default 1 h). Must be called within
    /// a Tokio runtime.
    pub fn spawn<F, E>(config: AdvertiserConfig, build: F) -> Result<Advertiser, AdvertiserError>
    where
        F: FnMut(u64) -> Result<ServerAdvertisement, E> + Send + 'static,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        if !(REFRESH_INTERVAL_MIN_MS..=REFRESH_INTERVAL_MAX_MS)
            .contains(&config.refresh_interval_ms)
        {
            return Err(AdvertiserError::Config(format!(
                "refresh_interval_ms {} is outside {REFRESH_INTERVAL_MIN_MS}..={REFRESH_INTERVAL_MAX_MS}",
                config.refresh_interval_ms
            )));
        }
        let endpoint = client::endpoint(&config.xis)?;
        let mut build = build;
        let build: Build = Box::new(move |version| build(version).map_err(Into::into));
        let (status_sender, status) = watch::channel(Status::Starting);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(run(
            endpoint.connect_lazy(),
            config,
            build,
            status_sender,
            stopped,
        ));
        Ok(Advertiser {
            status,
            stop: Some(stop),
            task,
        })
    }

    /// What the latest attempt achieved.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// Waits until an attempt has been made, and returns the first one that was stored; the
    /// error of the first attempt if it failed (the advertiser keeps retrying regardless).
    pub async fn wait_first(&self) -> Result<Advertised, AdvertiserError> {
        let mut status = self.status.clone();
        let outcome = status
            .wait_for(|status| *status != Status::Starting)
            .await
            .map_err(|_| AdvertiserError::Stopped)?
            .clone();
        match outcome {
            Status::Advertised(advertised) => Ok(advertised),
            Status::Failed(message) => Err(AdvertiserError::Failed(message)),
            Status::Starting => Err(AdvertiserError::Stopped),
        }
    }

    /// Stops refreshing (the record then ages out of the XIS: stale after one TTL, discarded
    /// after two).
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One attempt: build, sign (the caller), advertise; jumps past a newer stored version once.
async fn attempt(
    channel: &tonic::transport::Channel,
    build: &mut Build,
    last_version: &mut u64,
) -> Result<Advertised, AdvertiserError> {
    let mut version = next_version(*last_version);
    for _ in 0..2 {
        let advertisement =
            build(version).map_err(|error| AdvertiserError::Build(error.to_string()))?;
        *last_version = version;
        match client::advertise(channel.clone(), &advertisement).await {
            Err(ClientError::Status(status))
                if status.code() == tonic::Code::FailedPrecondition =>
            {
                // "version N is not newer than the stored version M": go past M.
                let stored = status
                    .message()
                    .rsplit(' ')
                    .next()
                    .and_then(|word| word.parse::<u64>().ok());
                match stored {
                    Some(stored) if stored >= version => version = stored.saturating_add(1),
                    _ => return Err(ClientError::Status(status).into()),
                }
            }
            outcome => return Ok(outcome?),
        }
    }
    Err(AdvertiserError::Build(format!(
        "version {version} was still not newer than the stored one"
    )))
}

async fn run(
    channel: tonic::transport::Channel,
    config: AdvertiserConfig,
    mut build: Build,
    status: watch::Sender<Status>,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut last_version = 0;
    loop {
        let outcome = attempt(&channel, &mut build, &mut last_version).await;
        let delay_ms = match outcome {
            Ok(advertised) => {
                tracing::debug!(version = advertised.version, "advertised to the XIS");
                status.send_replace(Status::Advertised(advertised));
                config.refresh_interval_ms
            }
            Err(error) => {
                tracing::warn!(%error, xis = %config.xis, "advertising failed; retrying");
                status.send_replace(Status::Failed(error.to_string()));
                RETRY_DELAY_MS.min(config.refresh_interval_ms)
            }
        };
        tokio::select! {
            _ = &mut stopped => return,
            () = tokio::time::sleep(Duration::from_millis(delay_ms)) => {}
        }
    }
}
