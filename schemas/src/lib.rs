//! # xeno-schemas: the XenoServer Open Platform's wire formats
//!
//! The paper fixes only a small core across the whole platform: the interfaces between clients,
//! XenoServers and XenoCorps, and the documents they exchange (sections II-B, III-A, IV-A).
//! This crate is that core. Every other crate speaks through it.
//!
//! - [`documents`]: the XML documents as Rust types —
//!   [`EnvironmentalRequirements`](documents::EnvironmentalRequirements) (what a session needs),
//!   [`TaskDescription`](documents::TaskDescription) (what to run in it),
//!   [`ServerAdvertisement`](documents::ServerAdvertisement) (what a server publishes in the XIS),
//!   [`PurchaseOrder`](documents::PurchaseOrder) (how a session is paid for) and
//!   [`UsageRecord`](documents::UsageRecord) (the audit-trail annotation on each charge).
//!   Each parses untrusted bytes through one bounded pipeline and reports every problem with its
//!   element path and line:column.
//! - [`schema`]: the content models as data. The XSD files in `schemas/xsd/` are generated from
//!   them, so Rust and XSD validation cannot drift; the tests also check them against `xmllint`.
//! - [`xml`]: the reader that untrusted bytes meet first (no DTDs, no entities, capped size,
//!   depth and counts) and the deterministic writer whose compact output signatures cover.
//! - [`signing`]: signing and verifying documents (purchase orders, advertisements).
//! - [`identity`]: how certificates name parties (the corp, servers, clients).
//! - [`text`]: showing other parties' text safely (no control or bidirectional characters).
//! - [`proto`]: the gRPC services (XenoCorp, XenoServer, TaskManager, XIS, ResourceDiscovery),
//!   generated from `schemas/proto/` at build time without a system `protoc`.
//!
//! Nothing here runs a connection: the clients of these interfaces are `xeno-clients`, the
//! daemons' shared scaffolding is `xeno-daemon`.
//!
//! ```
//! use xeno_schemas::documents::{Document, EnvironmentalRequirements};
//!
//! let bad = b"<EnvironmentalRequirements>\n  <Basic>\n    <EnvName>x</EnvName>\n    <EnvType>Wasm</EnvType>\n  </Basic>\n  <QoS>\n    <CPUmsps>fast</CPUmsps>\n  </QoS>\n</EnvironmentalRequirements>";
//! let error = EnvironmentalRequirements::parse(bad).unwrap_err();
//! assert_eq!(
//!     error.to_string(),
//!     "QoS/CPUmsps: expected a non-negative integer no greater than 1000000, got \"fast\" at 7:14"
//! );
//! ```
#![deny(missing_docs)]

pub mod clock;
pub mod documents;
pub mod error;
pub mod identity;
pub mod proto;
pub mod schema;
pub mod signing;
pub mod text;
pub mod xml;

pub use documents::Document;
pub use error::{DocumentError, DocumentErrors};
