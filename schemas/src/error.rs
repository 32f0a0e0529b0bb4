//! Errors from reading documents: each names the element path, what was wrong, and where.

use crate::xml::Position;
use std::fmt;

/// One problem in a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentError {
    /// Element path from the root, root excluded (`QoS/CPUmsps`, `Files/File[2]/@sha256`); the
    /// root's name when the problem is the root itself; empty for problems of XML syntax.
    pub path: String,
    /// What is wrong (`expected a non-negative integer, got "fast"`).
    pub message: String,
    /// Where in the document.
    pub position: Position,
}

impl fmt::Display for DocumentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{} at {}", self.message, self.position)
        } else {
            write!(f, "{}: {} at {}", self.path, self.message, self.position)
        }
    }
}

/// Everything wrong with a document, in document order (at least one; at most
/// [`crate::schema::ERRORS_MAX`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DocumentErrors {
    /// The document type that was expected (`EnvironmentalRequirements`).
    pub document: &'static str,
    /// The problems.
    pub errors: Vec<DocumentError>,
}

impl DocumentErrors {
    /// The first problem, which is usually the one to fix first.
    pub fn first(&self) -> Option<&DocumentError> {
        self.errors.first()
    }
}

impl fmt::Display for DocumentErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, error) in self.errors.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}
