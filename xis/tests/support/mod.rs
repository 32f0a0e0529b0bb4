//! Shared by the XIS tests: configurations for each backend, and bounded waiting.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

pub mod redis_cluster;

use std::time::{Duration, Instant};
use xeno_xis::config::{Backend, Config};

/// An in-process XIS on the embedded backend, not persisted, on a free loopback port.
pub fn memory_config(ttl_seconds: u64) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        backend: Backend::Memory,
        persist: false,
        ttl_seconds,
        sweep_interval_ms: 100,
        ..Config::default()
    }
}

/// An in-process XIS on the Redis Cluster at `urls`, its keys under `prefix`.
pub fn redis_config(urls: &[String], prefix: &str, ttl_seconds: u64) -> Config {
    let mut config = memory_config(ttl_seconds);
    config.backend = Backend::Redis;
    config.redis.nodes = urls.to_vec();
    config.redis.key_prefix = prefix.to_owned();
    config
}

/// Polls `ready` every 50 ms until it holds, failing the test after `timeout`.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !ready().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
