//! # xeno-rd: resource discovery over the XIS
//!
//! In the paper's architecture (section IV) a Resource Discovery system does the match-making
//! between clients and XenoServers that the XIS deliberately leaves out: it takes a client's
//! `EnvironmentalRequirements` and an objective, searches the XIS on the client's behalf, and
//! suggests servers, best first, with each one's price sheet, load and location (its signed
//! advertisement, so a client can verify it and then ask the server itself for a spot price).
//! There is no single platform-wide algorithm: several RD systems can run side by side, each
//! with its own ranking policy (`[ranking]` in its configuration).
//!
//! - The sync loop keeps a catalogue of current advertisements, built from XIS lookups (the
//!   `Received` token gives what changed since the last look) and `GetAdvertisement`, each
//!   signature checked.
//! - Matching filters servers by the requirements and ranks them for an objective:
//!   **cheapest** within a budget for a duration, **near** a set of hosts, **equidistant**
//!   from several hosts, **disjoint** network paths toward a host. The latency objectives rank
//!   by Vivaldi estimates (`xeno_clients::vivaldi`, the coordinates every XenoServer
//!   advertises).
//! - The core applies the policy; the `xenoserve.rd.v1.ResourceDiscovery` gRPC service only
//!   translates; [`daemon::start`] wires it all from a [`config::Config`] (the `xeno-rd`
//!   binary is a thin wrapper; `xeno dev` calls it in process next to an XIS).
//! - The client call (`xeno find --objective …`) is `xeno_clients::rd::find_xeno_servers`: it
//!   sends a `FindRequest` and returns the suggestions with every advertisement's signature
//!   checked.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use xeno_clients::rd::{Asked, FindRequest};
//! let config: xeno_rd::config::Config =
//!     toml::from_str("listen = \"127.0.0.1:0\"\nxis = \"127.0.0.1:7300\"")?;
//! let rd = xeno_rd::daemon::start(config).await?;
//! rd.sync_now(true).await?;
//! let requirements = xeno_schemas::documents::EnvironmentalRequirements::new("job", "Wasm");
//! let outcome = rd.core.find(&FindRequest {
//!     requirements,
//!     objective: Asked::Cheapest {
//!         duration_seconds: 3600,
//!         budget: Some(xeno_schemas::documents::Money { currency: "GBP".parse().unwrap(), minor: 10_000_000 }),
//!     },
//!     max_results: 5,
//! })?;
//! for suggestion in &outcome.ranked {
//!     println!("{} at {:?}", suggestion.server.endpoint, suggestion.cost);
//! }
//! rd.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod config;
pub mod daemon;

mod catalogue;
mod core;
mod error;
mod matching;
mod service;
mod sync;
