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
//! - **Advertise / update** ([`core::Xis::advertise`]): names are self-certifying: the
//!   `ServerId` is the SHA-256 fingerprint of the key that signs, so nobody can publish for
//!   another server and any reader can verify what it got ([`client::get_advertisement`] does).
//!   Writes are total rewrites with an increasing version; an older version never replaces a
//!   newer one, and a discarded record's version is remembered for the replay window.
//!   Unsigned, forged, replayed, expired, oversized or malformed advertisements are refused
//!   with the status codes the proto documents, the index unchanged.
//! - **Aging**: a record without an update is stale after one TTL (default 90 s) and discarded
//!   after two; every answer says how old it is.
//! - **Lookup** ([`core::Xis::lookup`]): a token and a value range (`token=CPUmsps,
//!   values=100-150`) or an exact value (`EnvType=Wasm`), answered with the number of matches
//!   and a page of them (server id, value, version, age, stale flag, endpoint) in a stable
//!   order — fresh before stale, by value, then by server id — with an opaque [`cursor`] for
//!   the rest. [`xeno_schemas::documents::tokens`] defines exactly which tokens an
//!   advertisement yields (a rule of the format, shared with every reader of it).
//! - **Storage** ([`store`]): the embedded in-process index (ordered maps per token, persisted
//!   to a log) by default; Redis Cluster to scale out, the inverted file partitioned by token
//!   across masters and replicated to their replicas, with aging by key expiry.
//!
//! Public API:
//! - [`daemon::start`] runs a node from a [`config::Config`] (the `xis` binary is a thin
//!   wrapper; `xeno dev` can call it in process, with `persist = false` or a data directory);
//! - [`advertiser::Advertiser`] is the environment manager's side: it advertises the server's
//!   signed `ServerAdvertisement` on start and refreshes it every
//!   [`advertiser::AdvertiserConfig::refresh_interval_ms`] (default 30 s), versions always
//!   going forward, even across restarts;
//! - [`client`] advertises once, looks up (one page, or every page with a limit) and fetches
//!   an advertisement with its signature checked;
//! - [`query`] parses and combines the client's boolean searches (`xeno find
//!   "EnvType=Wasm CPUmsps=100-150"`): each term is one lookup, combined with and / or;
//! - [`testing::SimulatedServer`] makes keys and signed advertisements for tests and demos.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let config: xeno_xis::config::Config =
//!     toml::from_str("listen = \"127.0.0.1:0\"\npersist = false")?;
//! let xis = xeno_xis::daemon::start(config).await?;
//! let channel = xeno_xis::client::connect(&xis.addr.to_string()).await?;
//! let query = xeno_xis::query::Query::parse("EnvType=Wasm CPUmsps=100-150")?;
//! let servers = xeno_xis::query::find(channel, &query, false, 10_000).await?;
//! println!("{} servers", servers.len());
//! xis.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod advertiser;
pub mod client;
pub mod config;
pub mod core;
pub mod cursor;
pub mod daemon;
pub mod error;
pub mod query;
pub mod service;
pub mod store;
pub mod testing;
