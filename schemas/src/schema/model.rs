//! The content models of our documents, as plain static data. One description drives both the
//! Rust validator (`super::validate`) and the generated XSD files (`super::xsd`), so the two
//! cannot drift apart; `xmllint --schema` then checks the XSD independently in the tests.
//!
//! The model is the subset of XML Schema 1.0 our formats need: ordered sequences with bounded
//! occurrence counts, choices, attributes, simple types restricted by length, pattern, range or
//! enumeration, and one wildcard (`Extensions`) whose content is left to plugins.

/// An element: its name, what it may carry, and what it means.
#[derive(Debug)]
pub struct ElementDecl {
    /// The element name (no namespace: our documents are in no namespace, as in the paper).
    pub name: &'static str,
    /// What the element means; becomes the XSD annotation.
    pub doc: &'static str,
    /// The attributes it accepts; any other attribute is an error.
    pub attributes: &'static [AttributeDecl],
    /// What may appear between its tags.
    pub content: Content,
}

/// What an element may contain.
#[derive(Debug)]
pub enum Content {
    /// Nothing (whitespace only).
    Empty,
    /// A value of a simple type; no child elements.
    Simple(&'static SimpleType),
    /// Child elements in this order; only whitespace between them.
    Sequence(&'static [Particle]),
    /// Any well-formed elements, unchecked: the `Extensions` escape hatch for task manager
    /// plugins. Text directly inside must be whitespace.
    AnyElements,
}

/// One step of a sequence: a term that occurs between `min` and `max` times.
#[derive(Debug)]
pub struct Particle {
    /// What may occur here.
    pub term: Term,
    /// Fewest occurrences.
    pub min: u32,
    /// Most occurrences. Every count is bounded: no list in our formats is unlimited.
    pub max: u32,
}

/// The thing a [`Particle`] matches.
#[derive(Debug)]
pub enum Term {
    /// One particular element.
    Element(&'static ElementDecl),
    /// Any one of these elements (an `xs:choice`).
    Choice(&'static [&'static ElementDecl]),
}

/// An attribute an element accepts.
#[derive(Debug)]
pub struct AttributeDecl {
    /// The attribute name.
    pub name: &'static str,
    /// Its value type.
    pub ty: &'static SimpleType,
    /// Whether it must be present.
    pub required: bool,
    /// What it means.
    pub doc: &'static str,
}

/// A named simple type: the lexical rules a value must meet.
#[derive(Debug)]
pub struct SimpleType {
    /// The XSD type name (unique across all documents).
    pub name: &'static str,
    /// What values of this type mean.
    pub doc: &'static str,
    /// The rules.
    pub kind: SimpleKind,
}

/// The lexical rules of a [`SimpleType`]. Each variant maps to one XSD restriction whose
/// whitespace handling and facets the validator reproduces exactly.
#[derive(Debug)]
pub enum SimpleKind {
    /// `xs:string` (whitespace preserved) with a length range in characters.
    String {
        /// Fewest characters.
        min_chars: u32,
        /// Most characters.
        max_chars: u32,
    },
    /// `xs:token` (whitespace collapsed) with a length range in characters.
    Token {
        /// Fewest characters after collapsing.
        min_chars: u32,
        /// Most characters after collapsing.
        max_chars: u32,
    },
    /// `xs:token` restricted by a pattern.
    Pattern(&'static Pattern),
    /// `xs:unsignedLong` restricted to plain digits and a maximum.
    Unsigned {
        /// Largest value accepted.
        max: u64,
    },
    /// `xs:decimal` restricted to plain notation: optional minus (when `signed`), at most
    /// `integer_digits` digits, and at most `fraction_digits` after a point.
    Decimal {
        /// Whether a leading `-` is allowed.
        signed: bool,
        /// Most digits before the point.
        integer_digits: u8,
        /// Most digits after the point (0: no point).
        fraction_digits: u8,
    },
    /// `xs:dateTime` in UTC with a `Z` suffix, seconds below 60, year 1000 to 9999.
    DateTime,
    /// `xs:boolean`: `true`, `false`, `1` or `0`.
    Boolean,
    /// `xs:token` restricted to a list of values.
    Enumeration(&'static [&'static str]),
    /// Base64 (standard alphabet, padded) of at most `max_chars` characters, as `xs:token`.
    Base64 {
        /// Most characters of encoded text.
        max_chars: u32,
    },
}

/// A pattern for a token, given twice: as an XSD regular expression and as a Rust function
/// that accepts exactly the same strings (the tests check the two against each other).
#[derive(Debug)]
pub struct Pattern {
    /// The XSD `pattern` facet.
    pub xsd: &'static str,
    /// Most characters (the XSD `maxLength` facet), whatever the pattern allows.
    pub max_chars: u32,
    /// A Rust predicate equivalent to `xsd`.
    pub matches: fn(&str) -> bool,
    /// What the pattern means, for error messages (`"a 64-digit lowercase hex SHA-256"`).
    pub description: &'static str,
}

/// A whole document type: its root element and reading limits.
#[derive(Debug)]
pub struct DocumentSchema {
    /// The root element.
    pub root: &'static ElementDecl,
    /// Limits for reading documents of this type.
    pub limits: crate::xml::Limits,
    /// The file name of its XSD under `schemas/xsd/`.
    pub xsd_file: &'static str,
}

/// Shorthand for a required, single element.
pub const fn one(element: &'static ElementDecl) -> Particle {
    Particle {
        term: Term::Element(element),
        min: 1,
        max: 1,
    }
}

/// Shorthand for an optional, single element.
pub const fn optional(element: &'static ElementDecl) -> Particle {
    Particle {
        term: Term::Element(element),
        min: 0,
        max: 1,
    }
}

/// Shorthand for an element repeated between `min` and `max` times.
pub const fn repeated(element: &'static ElementDecl, min: u32, max: u32) -> Particle {
    Particle {
        term: Term::Element(element),
        min,
        max,
    }
}

/// Shorthand for a leaf element holding a simple value.
pub const fn leaf(name: &'static str, ty: &'static SimpleType, doc: &'static str) -> ElementDecl {
    ElementDecl {
        name,
        doc,
        attributes: &[],
        content: Content::Simple(ty),
    }
}

/// Shorthand for a required attribute.
pub const fn required_attribute(
    name: &'static str,
    ty: &'static SimpleType,
    doc: &'static str,
) -> AttributeDecl {
    AttributeDecl {
        name,
        ty,
        required: true,
        doc,
    }
}

/// Shorthand for an optional attribute.
pub const fn optional_attribute(
    name: &'static str,
    ty: &'static SimpleType,
    doc: &'static str,
) -> AttributeDecl {
    AttributeDecl {
        name,
        ty,
        required: false,
        doc,
    }
}
