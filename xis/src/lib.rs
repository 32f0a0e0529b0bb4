//! # xeno-xis: the XenoServer Information Service
//!
//! In the paper's architecture (section III) the XIS sits between XenoServers, which advertise
//! their status in it, and clients and resource discovery systems, which look servers up in it.
//! It is deliberately agnostic about what it holds: it keeps each server's latest signed
//! `ServerAdvertisement`, ages it, and presents all of them as an *inverted file*, a mapping
//! from every token of the XML onto the servers that carry it, queried one token and value
//! range at a time. Richer searches are the client's ([`query`]) or a resource discovery
//! system's (`xeno-rd`).
//!
//! - **Advertise / update**: names are self-certifying: the `ServerId` is the SHA-256
//!   fingerprint of the key that signs, so nobody can publish for another server and any
//!   reader can verify what it got (`xeno_clients::xis::get_advertisement` does).
//!   Writes are total rewrites with an increasing version; an older version never replaces a
//!   newer one, and a discarded record's version is remembered for the replay window.
//!   Unsigned, forged, replayed, expired, oversized or malformed advertisements are refused
//!   with the status codes the proto documents, the index unchanged.
//! - **Aging**: a record without an update is stale after one TTL (default 90 s) and discarded
//!   after two; every answer says how old it is.
//! - **Lookup**: a token and a value range (`token=CPUmsps, values=100-150`) or an exact value
//!   (`EnvType=Wasm`), answered with the number of matches and a page of them (server id,
//!   value, version, age, stale flag, endpoint) in a stable order — fresh before stale, by
//!   value, then by server id — with an opaque cursor for the rest.
//!   [`xeno_schemas::documents::tokens`] defines exactly which tokens an advertisement yields
//!   (a rule of the format, shared with every reader of it).
//! - **Storage**: the embedded in-process index (ordered maps per token, persisted to a log)
//!   by default; Redis Cluster to scale out, the inverted file partitioned by token across
//!   masters and replicated to their replicas, with aging by key expiry.
//!
//! The crate's face is [`daemon::start`], which runs a node from a [`config::Config`] (the
//! `xis` binary is a thin wrapper; `xeno dev` calls it in process). Everything that talks to
//! an XIS (advertising, lookups, boolean queries, verified reads) is in `xeno_clients::xis`.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let config: xeno_xis::config::Config =
//!     toml::from_str("listen = \"127.0.0.1:0\"\npersist = false")?;
//! let xis = xeno_xis::daemon::start(config).await?;
//! let channel = xeno_clients::xis::connect(&xis.addr.to_string()).await?;
//! let query = xeno_clients::xis::query::Query::parse("EnvType=Wasm CPUmsps=100-150")?;
//! let servers = xeno_clients::xis::query::find(channel, &query, false, 10_000).await?;
//! println!("{} servers", servers.len());
//! xis.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod daemon;

mod core;
mod cursor;
mod error;
mod service;
mod store;
#[cfg(test)]
mod tampering_tests;
