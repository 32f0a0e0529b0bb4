//! # xeno-corp: XenoCorp, the platform's trusted third party
//!
//! In the paper's architecture (sections II-A.1, II-A.3, II-B.1) a XenoCorp registers clients and
//! XenoServers and issues their credentials, issues purchase orders against ring-fenced funds,
//! validates each order once for the server that will be paid from it, takes charges annotated
//! with usage records (the audit trail), and settles. Several competing corps may exist; every id
//! a corp issues carries the corp's id.
//!
//! This crate is the `xenocorp` daemon, in layers:
//! - `core::Corp`: the state machine. Every operation on accounts, orders and money, run on
//!   one thread in a total order; it decides everything and emits `model::Effect`s.
//! - `ledger`: double-entry books; money is conserved by construction and checked.
//! - `store`: SQLite (embedded, default) and PostgreSQL persist effects in batches.
//! - `writer`: group commit: one durable transaction per batch, nothing acknowledged before it.
//! - `service`: the `xenoserve.corp.v1.XenoCorp` gRPC service over mutual TLS, and the
//!   operator's `CorpAdmin` service on a Unix socket (`xeno_clients::corp_admin` is its client).
//! - `web`: the registration form and account pages over HTTPS.
//! - [`daemon::start`] wires them together from a [`config::Config`].
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let config: xeno_corp::config::Config = toml::from_str("corp_id = \"corp-a\"\nlisten = \"127.0.0.1:0\"")?;
//! let corp = xeno_corp::daemon::start(config).await?;
//! println!("XenoCorp {} on {}", corp.corp_id, corp.grpc_addr);
//! corp.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod ca;
pub mod config;
mod core;
pub mod daemon;
mod error;
mod ledger;
mod model;
mod restrictions;
mod service;
#[cfg(test)]
mod simulation;
mod store;
#[cfg(test)]
mod testing;
mod web;
mod writer;
