//! The XML layer: a bounded reader from untrusted bytes into a positioned tree, and a
//! deterministic writer back to bytes. It knows nothing of our document types; `crate::schema`
//! checks trees against them.

pub mod limits;
pub mod position;
pub mod reader;
pub mod tree;
pub mod writer;

pub use limits::Limits;
pub use position::{LineIndex, Position};
pub use reader::{SyntaxError, read_document};
pub use tree::{Attribute, Element, Node, Text};
pub use writer::{Layout, write_document};
