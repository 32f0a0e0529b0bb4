//! The platform's XML documents as Rust types. Each implements [`Document`]: `parse` from
//! untrusted bytes (bounded, validated, every error located) and `to_xml` / `to_canonical` back.

pub mod advertisement;
pub mod common;
pub(crate) mod document;
pub mod purchase_order;
pub mod requirements;
pub mod signature;
pub mod task;
pub mod tokens;
pub mod usage;

pub use advertisement::{
    Environment, Load, Location, NetworkCoordinates, NetworkPath, PriceSheet, ServerAdvertisement,
};
pub use common::{Currency, MINOR_UNITS_PER_MAJOR, Money, format_minor};
pub use document::Document;
pub use purchase_order::{IssuedOrder, PurchaseOrder, Restrictions};
pub use requirements::{EnvVersion, EnvironmentalRequirements, QoS};
pub use signature::{Signature, SignatureAlgorithm, key_fingerprint};
pub use task::{Program, TaskDescription, TaskFile};
pub use usage::{TaskActivity, TaskState, UsageRecord};

use crate::schema::DocumentSchema;

/// Every document type's schema, in the order the docs list them.
pub const ALL_SCHEMAS: [&DocumentSchema; 5] = [
    &requirements::SCHEMA,
    &task::SCHEMA,
    &advertisement::SCHEMA,
    &purchase_order::SCHEMA,
    &usage::SCHEMA,
];

/// A document of any of our types, for tools that take whatever they are given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyDocument {
    /// An `EnvironmentalRequirements`.
    EnvironmentalRequirements(Box<EnvironmentalRequirements>),
    /// A `TaskDescription`.
    TaskDescription(Box<TaskDescription>),
    /// A `ServerAdvertisement`.
    ServerAdvertisement(Box<ServerAdvertisement>),
    /// A `PurchaseOrder`.
    PurchaseOrder(Box<PurchaseOrder>),
    /// A `UsageRecord`.
    UsageRecord(Box<UsageRecord>),
}

/// The schema whose root element is `name`.
pub fn schema_for_root(name: &str) -> Option<&'static DocumentSchema> {
    ALL_SCHEMAS
        .into_iter()
        .find(|schema| schema.root.name == name)
}

/// Parses a document of whichever type its root element names.
pub fn parse_any(bytes: &[u8]) -> Result<AnyDocument, crate::DocumentErrors> {
    let root = root_element_name(bytes);
    Ok(match root.as_deref() {
        Some("TaskDescription") => {
            AnyDocument::TaskDescription(Box::new(TaskDescription::parse(bytes)?))
        }
        Some("ServerAdvertisement") => {
            AnyDocument::ServerAdvertisement(Box::new(ServerAdvertisement::parse(bytes)?))
        }
        Some("PurchaseOrder") => AnyDocument::PurchaseOrder(Box::new(PurchaseOrder::parse(bytes)?)),
        Some("UsageRecord") => AnyDocument::UsageRecord(Box::new(UsageRecord::parse(bytes)?)),
        // Anything else is reported against the paper's own document type.
        _ => AnyDocument::EnvironmentalRequirements(Box::new(EnvironmentalRequirements::parse(
            bytes,
        )?)),
    })
}

/// The root element's name, read from at most the first 64 KiB without building a tree.
fn root_element_name(bytes: &[u8]) -> Option<String> {
    const SNIFF_BYTES_MAX: usize = 64 * 1024;
    let head = &bytes[..bytes.len().min(SNIFF_BYTES_MAX)];
    let mut reader = quick_xml::reader::Reader::from_reader(head);
    loop {
        match reader.read_event() {
            Ok(quick_xml::events::Event::Start(start) | quick_xml::events::Event::Empty(start)) => {
                return Some(start.name().as_ref().to_owned());
            }
            Ok(quick_xml::events::Event::Eof) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}
