//! # xeno-envmgr: the XenoServer environment manager
//!
//! The paper's indirection layer (sections II-B.2 and V-B): the `xenoserver` daemon answers
//! status queries, creates sessions from `EnvironmentalRequirements` and a purchase order (after
//! an admission decision and the order's validation with its corp), deploys tasks into them,
//! streams their output, meters their usage and charges the corp, dispatching each session by
//! `EnvType` to a task manager through the plugin interface of `xeno_taskmgr_kit`
//! (built in — Wasm, and Linux paravirtual domains on KVM — or an external plugin over a Unix
//! socket or TCP). It also takes part in discovery (sections III and IV): it advertises its
//! signed status in the XIS and computes its Vivaldi network coordinates.
//!
//! - `server::Server`: admission, sessions, deployment, settlement; its refusals are
//!   `error::ServerError`, turned into gRPC statuses in one place.
//! - `session::Session`: one session's metering and charging (durable, idempotent, exact).
//! - `pricing`: the price sheet and exact cost arithmetic.
//! - `store`: sessions, tasks and charges in SQLite, so a restart loses nothing.
//! - `service`: the `xenoserve.server.v1.XenoServer` gRPC service; `watch`: what
//!   WatchSession streams.
//! - `advertisement`: what the server says about itself; `discovery`: advertising it in the
//!   XIS and measuring network coordinates.
//! - [`daemon::start`]: everything wired from a [`config::Config`].
#![deny(missing_docs)]

mod advertisement;
pub mod config;
pub mod daemon;
mod discovery;
mod error;
mod identity;
mod pricing;
mod server;
mod service;
mod session;
mod store;
mod watch;
