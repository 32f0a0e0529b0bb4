//! The `xis` configuration file (TOML). Every field has a documented default, so an empty file
//! is a working configuration: the embedded backend, persisted in `./xis-data`, serving plain
//! gRPC on `127.0.0.1:7300`. Validated once, by [`Config::validate`].
//!
//! ```
//! let config: xeno_xis::config::Config = toml::from_str(r#"
//!     listen = "127.0.0.1:0"
//!     ttl_seconds = 90
//!     backend = "redis"
//!     [redis]
//!     nodes = ["redis://127.0.0.1:7001", "redis://127.0.0.1:7002"]
//! "#).unwrap();
//! config.validate().unwrap();
//! ```
//!
//! Transport: advertisements are self-certifying (signed by the key that names the server, and
//! checked by the XIS and by any client that reads them), and lookups return public data, so
//! plain TCP is acceptable, on loopback or inside an operator's network. Set `tls` to serve
//! TLS (for privacy of who looks up what, and against a man in the middle dropping answers).

use crate::core::Rules;
use crate::store::Aging;
use crate::store::redis::RedisOptions;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
pub use xeno_daemon::config::TlsConfig;

/// Which store holds the inverted file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// Ordered maps in this process, logged to `data_dir` (unless `persist = false`).
    Memory,
    /// A Redis Cluster (`[redis]`).
    Redis,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The gRPC listen address. Default `127.0.0.1:7300`.
    pub listen: SocketAddr,
    /// Where the embedded store keeps its log. Default `./xis-data`.
    pub data_dir: PathBuf,
    /// `memory` (embedded) or `redis`. Default `memory`.
    pub backend: Backend,
    /// Whether the embedded store logs to `data_dir`, so that a restart keeps what it had.
    /// Default true.
    pub persist: bool,
    /// A record without an update is stale after this long and discarded after twice this
    /// long. Default 90 (three missed refreshes at the environment manager's 30 s).
    pub ttl_seconds: u64,
    /// How often records are aged, ms. Default 1,000. At most the TTL.
    pub sweep_interval_ms: u64,
    /// Longest advertisement lifetime (Expiry minus Issued) accepted, seconds; also how long a
    /// discarded record's version is remembered to refuse replays. Default 3,600.
    pub lifetime_max_seconds: u64,
    /// The Redis Cluster backend.
    pub redis: RedisConfig,
    /// TLS for the gRPC service; plain TCP when absent (see the module docs). Default absent.
    pub tls: Option<TlsConfig>,
}

/// The Redis Cluster backend's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// Seed nodes (`redis://host:port`); the client discovers the rest. Default empty (required
    /// when `backend = "redis"`).
    pub nodes: Vec<String>,
    /// Prefix of every key, so that deployments can share a cluster. Default `xis`. Letters,
    /// digits, `_`, `-`, `.` and `:` only (no braces: they would change the hash tag).
    pub key_prefix: String,
    /// Read from replicas: lookups keep answering while a failed master's slots fail over, at
    /// the cost of reading up to the replication lag behind writes. Default false.
    pub read_from_replicas: bool,
    /// Per-attempt response timeout, ms. Default 1,000.
    pub response_timeout_ms: u64,
    /// Retries per command across topology changes and failover. Default 12 (with backoff to
    /// one second, enough to ride out a failover).
    pub retries: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 7300)),
            data_dir: PathBuf::from("xis-data"),
            backend: Backend::Memory,
            persist: true,
            ttl_seconds: 90,
            sweep_interval_ms: 1000,
            lifetime_max_seconds: 3600,
            redis: RedisConfig::default(),
            tls: None,
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            nodes: Vec::new(),
            key_prefix: "xis".to_owned(),
            read_from_replicas: false,
            response_timeout_ms: 1000,
            retries: 12,
        }
    }
}

/// Longest TTL accepted: a day. Longer would keep dead servers in answers for days.
pub const TTL_SECONDS_MAX: u64 = 86_400;

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
        xeno_daemon::config::load(path)
    }

    /// Checks every field once, so that the daemon never meets a bad value later.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(
            (1..=TTL_SECONDS_MAX).contains(&self.ttl_seconds),
            "ttl_seconds must be between 1 and {TTL_SECONDS_MAX}"
        );
        ensure!(
            self.sweep_interval_ms > 0 && self.sweep_interval_ms <= self.ttl_seconds * 1000,
            "sweep_interval_ms must be positive and at most ttl_seconds"
        );
        ensure!(
            self.lifetime_max_seconds > 0,
            "lifetime_max_seconds must be positive"
        );
        if self.backend == Backend::Redis {
            ensure!(
                !self.redis.nodes.is_empty(),
                "redis.nodes must name at least one node when backend = \"redis\""
            );
            for node in &self.redis.nodes {
                ensure!(
                    node.starts_with("redis://") || node.starts_with("rediss://"),
                    "redis.nodes: {node:?} is not a redis:// URL"
                );
            }
            ensure!(
                !self.redis.key_prefix.is_empty()
                    && self
                        .redis
                        .key_prefix
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b)),
                "redis.key_prefix must be letters, digits, '_', '-', '.' or ':'"
            );
            ensure!(
                self.redis.response_timeout_ms > 0,
                "redis.response_timeout_ms must be positive"
            );
        }
        Ok(())
    }

    /// The core's rules.
    pub fn rules(&self) -> Rules {
        Rules {
            aging: Aging {
                ttl_ms: self.ttl_seconds * 1000,
                replay_window_ms: self.lifetime_max_seconds * 1000 + crate::core::CLOCK_SKEW_MAX_MS,
            },
            lifetime_max_ms: self.lifetime_max_seconds * 1000,
        }
    }

    /// The Redis client's options.
    pub fn redis_options(&self) -> RedisOptions {
        RedisOptions {
            nodes: self.redis.nodes.clone(),
            key_prefix: self.redis.key_prefix.clone(),
            read_from_replicas: self.redis.read_from_replicas,
            response_timeout: Duration::from_millis(self.redis.response_timeout_ms),
            retries: self.redis.retries,
        }
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
        assert_eq!(config.rules().aging.ttl_ms, 90_000);
    }

    #[test]
    fn bad_values_are_named() {
        let config: Config = toml::from_str("backend = \"redis\"").expect("parses");
        assert!(
            config
                .validate()
                .expect_err("no nodes")
                .to_string()
                .contains("redis.nodes")
        );
        let config: Config = toml::from_str("ttl_seconds = 0").expect("parses");
        assert!(
            config
                .validate()
                .expect_err("ttl")
                .to_string()
                .contains("ttl_seconds")
        );
        let error = toml::from_str::<Config>("ttl = 5").expect_err("unknown field");
        assert!(error.to_string().contains("ttl"));
        let config: Config = toml::from_str(
            "backend = \"redis\"\n[redis]\nnodes = [\"redis://127.0.0.1:1\"]\nkey_prefix = \"a{b}\"",
        )
        .expect("parses");
        assert!(
            config
                .validate()
                .expect_err("prefix")
                .to_string()
                .contains("key_prefix")
        );
    }
}
