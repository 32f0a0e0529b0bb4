//! # xeno-tests: end-to-end tests of the XenoServer Open Platform
//!
//! Tests that run the real daemons (XenoCorp, XenoServer, task managers, XIS, resource
//! discovery) together over mutual TLS on loopback, as a client would use them.
//!
//! The crate also holds what the task managers' own tests share:
//!
//! - [`prerequisite`]: what a test needs from the machine, skipped visibly without it, and
//!   failed under `CI=true`.
//! - [`probe`]: gRPC health and reflection as an operator's tools ask them.
//! - [`fuzz`]: arbitrary messages against the task manager and XenoServer RPC surfaces,
//!   for the property tests and the cargo-fuzz targets (`tests/fuzz/`).

pub mod fuzz;
pub mod prerequisite;
pub mod probe;
