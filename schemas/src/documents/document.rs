//! The [`Document`] trait every format implements, and the one parse pipeline they share:
//! bytes → bounded XML tree → schema validation → typed value (with the rules an XSD cannot
//! state) → errors with paths and line:column positions.

use super::common::Reader;
use crate::error::{DocumentError, DocumentErrors};
use crate::schema::validate::Problem;
use crate::schema::{DocumentSchema, validate};
use crate::xml::{Element, Layout, LineIndex, read_document, write_document};

/// A document type of the platform.
pub trait Document: Sized {
    /// Its schema: root element, content model, limits and XSD file.
    const SCHEMA: &'static DocumentSchema;

    /// Parses and validates untrusted bytes. Every problem comes back with its path and
    /// line:column; nothing is half-read.
    fn parse(bytes: &[u8]) -> Result<Self, DocumentErrors>;

    /// The document as an XML tree.
    fn to_element(&self) -> Element;

    /// The document as indented XML with a declaration, for people and files.
    fn to_xml(&self) -> String {
        write_document(&self.to_element(), Layout::Pretty)
    }

    /// The canonical compact form that signatures cover: the same value always gives the same
    /// bytes.
    fn to_canonical(&self) -> String {
        write_document(&self.to_element(), Layout::Compact)
    }
}

/// Runs the parse pipeline for `schema`, with `read` turning the validated tree into a value.
pub(crate) fn parse_with<T>(
    bytes: &[u8],
    schema: &'static DocumentSchema,
    read: impl FnOnce(&Reader<'_, '_>) -> Result<T, Problem>,
) -> Result<T, DocumentErrors> {
    let fail = |problems: Vec<Problem>| {
        let lines = LineIndex::new(bytes);
        DocumentErrors {
            document: schema.root.name,
            errors: problems
                .into_iter()
                .map(|problem| DocumentError {
                    path: problem.path,
                    message: problem.message,
                    position: lines.position(bytes, problem.offset),
                })
                .collect(),
        }
    };
    let tree = read_document(bytes, &schema.limits).map_err(|error| {
        fail(vec![Problem {
            path: String::new(),
            message: error.message,
            offset: error.offset,
        }])
    })?;
    let valid = validate(schema, &tree).map_err(fail)?;
    read(&Reader::root(&valid)).map_err(|problem| fail(vec![problem]))
}

/// Implements [`Document`] for a type from its schema, reader and writer functions.
macro_rules! impl_document {
    ($type:ty, $schema:expr, $read:path, $write:path) => {
        impl $crate::documents::Document for $type {
            const SCHEMA: &'static $crate::schema::DocumentSchema = &$schema;

            fn parse(bytes: &[u8]) -> Result<Self, $crate::error::DocumentErrors> {
                $crate::documents::document::parse_with(bytes, &$schema, $read)
            }

            fn to_element(&self) -> $crate::xml::Element {
                $write(self)
            }
        }
    };
}
pub(crate) use impl_document;
