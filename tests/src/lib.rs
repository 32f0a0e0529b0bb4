//! # xeno-tests: end-to-end tests of the XenoServer Open Platform
//!
//! Tests that run the real daemons (XenoCorp, XenoServer, task managers, XIS, resource
//! discovery) together over mutual TLS on loopback, as a client would use them.
//!
//! The crate also holds what the task managers' own tests share:
//!
//! - [`conformance`]: the published conformance suite of the task manager plugin interface,
//!   which every task manager (the built-in Wasm and Linux VM ones, and any external plugin)
//!   must pass.
//! - [`fuzz`]: arbitrary messages against the task manager and XenoServer RPC surfaces,
//!   for the property tests and the cargo-fuzz targets (`tests/fuzz/`).
//! - [`process_plugin`]: the `Process` task manager, an example external plugin that runs
//!   native executables under rlimits, served by the `xeno-process-plugin` binary. It is the
//!   example plugin authors read, and the suite's own first customer.

pub mod conformance;
pub mod fuzz;
pub mod process_plugin;
