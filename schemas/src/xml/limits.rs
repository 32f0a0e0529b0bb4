//! Hard limits on what the XML reader accepts. Every document arrives from someone we do not
//! trust (a client, a server, a guest), so each count the sender controls has a maximum.

/// Limits applied while reading one document. Each document type chooses its own
/// (see `crate::documents`); [`Limits::DEFAULT`] suits small control documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest document accepted, in bytes. Checked before any parsing, so an oversized document
    /// costs nothing but the comparison.
    pub document_bytes_max: usize,
    /// Deepest element nesting accepted, the root being depth 1. Our formats nest at most 5
    /// deep; the rest is room for plugin `Extensions`.
    pub depth_max: usize,
    /// Most elements in one document.
    pub elements_max: usize,
    /// Most attributes on one element.
    pub attributes_per_element_max: usize,
}

/// Depth allowed in every format: five levels of our own structure plus room for extensions,
/// and far below anything that could exhaust a stack.
pub const DEPTH_MAX: usize = 32;

/// No element of ours carries more than six attributes; extensions get some slack.
pub const ATTRIBUTES_PER_ELEMENT_MAX: usize = 32;

/// Longest element or attribute name accepted, in bytes.
pub const NAME_BYTES_MAX: usize = 256;

impl Limits {
    /// 64 KiB, 32 deep, 4,096 elements: enough for any requirements document, advertisement,
    /// purchase order or usage record we produce, with extensions.
    pub const DEFAULT: Limits = Limits {
        document_bytes_max: 64 * 1024,
        depth_max: DEPTH_MAX,
        elements_max: 4096,
        attributes_per_element_max: ATTRIBUTES_PER_ELEMENT_MAX,
    };
}
