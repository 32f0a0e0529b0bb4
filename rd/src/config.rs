//! The `xeno-rd` configuration file (TOML). Every field has a documented default, so an empty
//! file is a working configuration against a local XIS. Validated once, by
//! [`Config::validate`]. Several RD systems may run side by side, each with its own `[ranking]`.
//!
//! ```
//! let config: xeno_rd::config::Config = toml::from_str(r#"
//!     xis = "127.0.0.1:7300"
//!     [ranking]
//!     name = "green-and-idle"
//!     objectives = ["near", "equidistant"]
//!     load_weight = 1.0
//!     [hosts."131.111.202.88"]
//!     components = [10.0, 20.0, 30.0]
//!     height = 2.0
//! "#).unwrap();
//! config.validate().unwrap();
//! ```

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
pub use xeno_daemon::config::TlsConfig;

/// The objectives of the `FindXenoServers` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ObjectiveKind {
    /// Lowest total cost within a budget.
    Cheapest,
    /// Lowest latency to hosts.
    Near,
    /// Approximately equal latency to hosts.
    Equidistant,
    /// Pairs with disjoint paths toward a host.
    Disjoint,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The gRPC listen address. Default `127.0.0.1:7400`.
    pub listen: SocketAddr,
    /// The XIS to read from (`host:port`, or an `http://` URL). Default `127.0.0.1:7300`.
    pub xis: String,
    /// How often to fetch what changed in the XIS, ms. Default 1,000.
    pub sync_interval_ms: u64,
    /// How often to re-read everything (dropping servers the XIS discarded), seconds.
    /// Default 30.
    pub full_sync_interval_seconds: u64,
    /// How far before the newest receipt time already seen each sync starts again, ms
    /// (records arrive out of order across XIS nodes and pages). Default 2,000.
    pub sync_overlap_ms: u64,
    /// A server whose record is older than this is not suggested, seconds. Set it to the XIS's
    /// `ttl_seconds`. Default 90.
    pub stale_after_seconds: u64,
    /// Without a successful sync for this long, answer UNAVAILABLE rather than from an old
    /// view, seconds. Default 30.
    pub unavailable_after_seconds: u64,
    /// This RD system's ranking policy.
    pub ranking: RankingConfig,
    /// Known hosts' coordinates, by address, for `near` and `equidistant` requests that name
    /// hosts rather than give coordinates. Servers in the catalogue are known by id and
    /// endpoint host without being listed. Default empty.
    pub hosts: BTreeMap<String, HostCoordinates>,
    /// TLS for the gRPC service; plain TCP when absent. Default absent.
    pub tls: Option<TlsConfig>,
}

/// A ranking policy: what distinguishes competing RD systems (paper, section IV-B).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RankingConfig {
    /// A name for logs. Default `default`.
    pub name: String,
    /// The objectives this system answers; others are refused. Default all four.
    pub objectives: Vec<ObjectiveKind>,
    /// How much busy servers are pushed down: scores are multiplied by `1 + load_weight ×
    /// CPU utilisation (0 to 1)`. Default 0 (load ignored).
    pub load_weight: f64,
    /// Servers whose advertised coordinate error is above this are left out of latency
    /// objectives. Default 1.0 (drops only servers claiming less than no confidence).
    pub coordinate_error_max: f64,
    /// Servers placed higher (an RD system may charge for it). Default empty.
    pub sponsored: Vec<String>,
    /// Fraction taken off a sponsored server's score, 0 to 1. Default 0.
    pub sponsored_discount: f64,
    /// Spread accepted by `equidistant` when the request gives none, ms. Default 10.
    pub equidistant_tolerance_ms: f64,
}

/// Coordinates of a known host.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostCoordinates {
    /// Euclidean components, ms.
    pub components: Vec<f64>,
    /// Height, ms. Default 0.
    #[serde(default)]
    pub height: f64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            xis: "127.0.0.1:7300".to_owned(),
            sync_interval_ms: 1000,
            full_sync_interval_seconds: 30,
            sync_overlap_ms: 2000,
            stale_after_seconds: 90,
            unavailable_after_seconds: 30,
            ranking: RankingConfig::default(),
            hosts: BTreeMap::new(),
            tls: None,
        }
    }
}

impl Default for RankingConfig {
    fn default() -> Self {
        RankingConfig {
            name: "default".to_owned(),
            objectives: vec![
                ObjectiveKind::Cheapest,
                ObjectiveKind::Near,
                ObjectiveKind::Equidistant,
                ObjectiveKind::Disjoint,
            ],
            load_weight: 0.0,
            coordinate_error_max: 1.0,
            sponsored: Vec::new(),
            sponsored_discount: 0.0,
            equidistant_tolerance_ms: 10.0,
        }
    }
}

/// Most known hosts in the configuration.
pub const HOSTS_MAX: usize = 10_000;

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
        xeno_daemon::config::load(path)
    }

    /// Checks every field once, so that the daemon never meets a bad value later.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(!self.xis.is_empty(), "xis must name the XIS address");
        ensure!(
            self.sync_interval_ms > 0,
            "sync_interval_ms must be positive"
        );
        ensure!(
            self.full_sync_interval_seconds * 1000 >= self.sync_interval_ms,
            "full_sync_interval_seconds must be at least sync_interval_ms"
        );
        ensure!(
            self.stale_after_seconds > 0,
            "stale_after_seconds must be positive"
        );
        ensure!(
            self.unavailable_after_seconds * 1000 > self.sync_interval_ms,
            "unavailable_after_seconds must be longer than sync_interval_ms"
        );
        let ranking = &self.ranking;
        ensure!(
            !ranking.objectives.is_empty(),
            "ranking.objectives must name at least one objective"
        );
        ensure!(
            ranking.load_weight.is_finite() && ranking.load_weight >= 0.0,
            "ranking.load_weight must be a non-negative number"
        );
        ensure!(
            ranking.coordinate_error_max.is_finite() && ranking.coordinate_error_max >= 0.0,
            "ranking.coordinate_error_max must be a non-negative number"
        );
        ensure!(
            (0.0..=1.0).contains(&ranking.sponsored_discount),
            "ranking.sponsored_discount must be between 0 and 1"
        );
        ensure!(
            ranking.equidistant_tolerance_ms.is_finite() && ranking.equidistant_tolerance_ms >= 0.0,
            "ranking.equidistant_tolerance_ms must be a non-negative number"
        );
        ensure!(self.hosts.len() <= HOSTS_MAX, "at most {HOSTS_MAX} hosts");
        for (address, host) in &self.hosts {
            ensure!(
                (2..=8).contains(&host.components.len())
                    && host
                        .components
                        .iter()
                        .chain([&host.height])
                        .all(|c| c.is_finite()),
                "hosts.{address:?}: 2 to 8 finite components and a finite height"
            );
        }
        Ok(())
    }
}

impl xeno_daemon::DaemonConfig for Config {
    fn check(&self) -> anyhow::Result<()> {
        self.validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_a_valid_configuration() {
        let config: Config = toml::from_str("").expect("defaults");
        config.validate().expect("valid");
        assert_eq!(config.ranking.objectives.len(), 4);
    }

    #[test]
    fn bad_values_are_named() {
        let config: Config = toml::from_str("[ranking]\nsponsored_discount = 2.0").expect("parses");
        assert!(
            config
                .validate()
                .expect_err("invalid")
                .to_string()
                .contains("sponsored_discount")
        );
        let config: Config = toml::from_str("[hosts.a]\ncomponents = [1.0]").expect("parses");
        assert!(
            config
                .validate()
                .expect_err("invalid")
                .to_string()
                .contains("hosts")
        );
        assert!(toml::from_str::<Config>("[ranking]\nobjectives = [\"fastest\"]").is_err());
    }
}
