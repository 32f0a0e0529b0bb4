//! Document types as data: the content model ([`model`]), checking values ([`types`]), checking
//! trees ([`validate`]) and generating the XSD files ([`xsd`]).

pub mod model;
pub mod types;
pub mod validate;
pub mod xsd;

pub use model::DocumentSchema;
pub use types::{Decimal, Value};
pub use validate::{ERRORS_MAX, Valid, validate};
