//! Reads untrusted bytes into a [`Element`] tree, refusing anything outside the small, safe
//! subset of XML our formats need.
//!
//! Refused outright: documents over the size limit (before parsing), anything but UTF-8,
//! XML versions other than 1.0, DOCTYPE declarations (so no DTDs, no entity definitions, no
//! external entities: entity bombs and XXE cannot start), references to entities other than
//! the five predefined ones, characters XML forbids, undeclared namespace prefixes, and nesting,
//! element or attribute counts over the [`Limits`]. The reader never allocates more than a
//! small multiple of the input, which is itself capped.

use super::limits::{Limits, NAME_BYTES_MAX};
use super::tree::{Attribute, Element, Node, Text};
use quick_xml::events::{BytesStart, Event};
use quick_xml::reader::Reader;

/// Why a document could not be read, and the byte offset where reading stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// What is wrong, in words a document author understands.
    pub message: String,
    /// Byte offset in the input where the problem was found.
    pub offset: usize,
}

impl SyntaxError {
    fn new(message: impl Into<String>, offset: usize) -> Self {
        SyntaxError {
            message: message.into(),
            offset,
        }
    }
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses `bytes` as one XML document within `limits`.
pub fn read_document(bytes: &[u8], limits: &Limits) -> Result<Element, SyntaxError> {
    if bytes.len() > limits.document_bytes_max {
        return Err(SyntaxError::new(
            format!(
                "document is {} bytes; the limit is {} bytes",
                bytes.len(),
                limits.document_bytes_max
            ),
            0,
        ));
    }
    let bom_len = if bytes.starts_with(UTF8_BOM) {
        UTF8_BOM.len()
    } else {
        0
    };
    let text = match std::str::from_utf8(&bytes[bom_len..]) {
        Ok(text) => text,
        Err(error) => {
            return Err(SyntaxError::new(
                "invalid UTF-8 (documents must be UTF-8)",
                bom_len + error.valid_up_to(),
            ));
        }
    };
    DocumentReader::new(text, bom_len, limits).run()
}

/// One open element and the namespace prefixes it declared.
struct Open {
    element: Element,
    declared_prefixes: usize,
    pending_text: Option<Text>,
}

struct DocumentReader<'a> {
    text: &'a str,
    reader: Reader<&'a [u8]>,
    base: usize,
    limits: &'a Limits,
    stack: Vec<Open>,
    prefixes: Vec<String>,
    root: Option<Element>,
    elements: usize,
    seen_content: bool,
}

impl<'a> DocumentReader<'a> {
    fn new(text: &'a str, base: usize, limits: &'a Limits) -> Self {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        config.expand_empty_elements = false;
        config.trim_text(false);
        config.allow_unmatched_ends = false;
        config.allow_dangling_amp = false;
        DocumentReader {
            text,
            reader,
            base,
            limits,
            stack: Vec::new(),
            prefixes: Vec::new(),
            root: None,
            elements: 0,
            seen_content: false,
        }
    }

    fn run(mut self) -> Result<Element, SyntaxError> {
        loop {
            let before = self.offset_now();
            let event = match self.reader.read_event() {
                Ok(event) => event,
                Err(error) => {
                    let at = self.base + usize::try_from(self.reader.error_position()).unwrap_or(0);
                    return Err(SyntaxError::new(format!("malformed XML: {error}"), at));
                }
            };
            match event {
                Event::Decl(decl) => self.declaration(&decl, before)?,
                Event::DocType(_) => {
                    return Err(SyntaxError::new(
                        "DOCTYPE declarations are not accepted (no DTDs, no entity definitions)",
                        before,
                    ));
                }
                Event::PI(pi) => {
                    if pi.target().eq_ignore_ascii_case("xml") {
                        return Err(SyntaxError::new(
                            "the XML declaration must come first in the document",
                            before,
                        ));
                    }
                    self.seen_content = true;
                }
                Event::Comment(_) => self.seen_content = true,
                Event::Start(start) => {
                    let element = self.open(&start, before)?;
                    self.stack.push(element);
                }
                Event::Empty(start) => {
                    let open = self.open(&start, before)?;
                    self.close(open)?;
                }
                Event::End(_) => match self.stack.pop() {
                    Some(open) => self.close(open)?,
                    None => return Err(SyntaxError::new("unexpected end tag", before)),
                },
                Event::Text(text) => {
                    let content = text.xml10_content();
                    self.character_data(&content, before, true)?;
                }
                Event::CData(cdata) => {
                    let content = cdata.xml10_content();
                    self.character_data(&content, before, false)?;
                }
                Event::GeneralRef(reference) => {
                    let resolved = resolve_reference(&reference, before)?;
                    let mut buffer = [0u8; 4];
                    self.character_data(resolved.encode_utf8(&mut buffer), before, false)?;
                }
                Event::Eof => return self.finish(before),
            }
        }
    }

    fn offset_now(&self) -> usize {
        self.base + usize::try_from(self.reader.buffer_position()).unwrap_or(usize::MAX)
    }

    fn declaration(
        &mut self,
        decl: &quick_xml::events::BytesDecl<'_>,
        at: usize,
    ) -> Result<(), SyntaxError> {
        if self.seen_content || at != self.base {
            return Err(SyntaxError::new(
                "the XML declaration must come first in the document",
                at,
            ));
        }
        self.seen_content = true;
        let version = decl
            .version()
            .map_err(|error| SyntaxError::new(format!("bad XML declaration: {error}"), at))?;
        if version.as_ref() != "1.0" {
            return Err(SyntaxError::new(
                format!("XML version {version:?} is not supported; use 1.0"),
                at,
            ));
        }
        if let Some(encoding) = decl.encoding() {
            let encoding = encoding
                .map_err(|error| SyntaxError::new(format!("bad XML declaration: {error}"), at))?;
            if !encoding.eq_ignore_ascii_case("utf-8") {
                return Err(SyntaxError::new(
                    format!("encoding {encoding:?} is not supported; documents must be UTF-8"),
                    at,
                ));
            }
        }
        Ok(())
    }

    fn open(&mut self, start: &BytesStart<'_>, at: usize) -> Result<Open, SyntaxError> {
        self.seen_content = true;
        if self.root.is_some() {
            return Err(SyntaxError::new("content after the root element", at));
        }
        if self.stack.len() >= self.limits.depth_max {
            return Err(SyntaxError::new(
                format!("elements nest deeper than {} levels", self.limits.depth_max),
                at,
            ));
        }
        self.elements += 1;
        if self.elements > self.limits.elements_max {
            return Err(SyntaxError::new(
                format!("more than {} elements", self.limits.elements_max),
                at,
            ));
        }
        self.flush_text();
        let name = start.name();
        let name: &str = name.as_ref();
        check_name(name, at + 1)?;

        let mut attributes = Vec::new();
        let raw_tag = self.raw_tag(at);
        let mut name_offsets = attribute_name_offsets(raw_tag).into_iter();
        for attribute in start.attributes().with_checks(true) {
            let attribute = attribute
                .map_err(|error| SyntaxError::new(format!("malformed attribute: {error}"), at))?;
            let offset = at + name_offsets.next().unwrap_or(0);
            if attributes.len() >= self.limits.attributes_per_element_max {
                return Err(SyntaxError::new(
                    format!(
                        "more than {} attributes on one element",
                        self.limits.attributes_per_element_max
                    ),
                    offset,
                ));
            }
            let attribute_name: &str = attribute.key.as_ref();
            check_name(attribute_name, offset)?;
            let value = attribute
                .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                .map_err(|error| {
                    SyntaxError::new(format!("bad attribute value: {error}"), offset)
                })?;
            check_chars(&value, offset)?;
            attributes.push(Attribute {
                name: attribute_name.to_owned(),
                value: value.into_owned(),
                offset,
            });
        }

        let declared_before = self.prefixes.len();
        for attribute in &attributes {
            if let Some(prefix) = attribute.name.strip_prefix("xmlns:") {
                self.prefixes.push(prefix.to_owned());
            }
        }
        self.check_prefix(name, at + 1)?;
        for attribute in &attributes {
            if !attribute.name.starts_with("xmlns:") {
                self.check_prefix(&attribute.name, attribute.offset)?;
            }
        }
        Ok(Open {
            element: Element {
                name: name.to_owned(),
                attributes,
                children: Vec::new(),
                offset: at,
            },
            declared_prefixes: self.prefixes.len() - declared_before,
            pending_text: None,
        })
    }

    /// The raw bytes of the tag starting at `at`, up to the reader's current position.
    fn raw_tag(&self, at: usize) -> &'a str {
        let start = at - self.base;
        let end = (self.offset_now() - self.base).min(self.text.len());
        self.text.get(start..end).unwrap_or("")
    }

    fn check_prefix(&self, name: &str, at: usize) -> Result<(), SyntaxError> {
        let Some((prefix, _)) = name.split_once(':') else {
            return Ok(());
        };
        if prefix == "xml" || prefix == "xmlns" || self.prefixes.iter().any(|p| p == prefix) {
            return Ok(());
        }
        Err(SyntaxError::new(
            format!("namespace prefix {prefix:?} is not declared"),
            at,
        ))
    }

    fn close(&mut self, mut open: Open) -> Result<(), SyntaxError> {
        if let Some(text) = open.pending_text.take() {
            open.element.children.push(Node::Text(text));
        }
        let keep = self.prefixes.len() - open.declared_prefixes;
        self.prefixes.truncate(keep);
        match self.stack.last_mut() {
            Some(parent) => parent.element.children.push(Node::Element(open.element)),
            None => self.root = Some(open.element),
        }
        Ok(())
    }

    fn flush_text(&mut self) {
        if let Some(open) = self.stack.last_mut()
            && let Some(text) = open.pending_text.take()
        {
            open.element.children.push(Node::Text(text));
        }
    }

    fn character_data(&mut self, data: &str, at: usize, raw: bool) -> Result<(), SyntaxError> {
        check_chars(data, at)?;
        if raw && let Some(index) = data.find("]]>") {
            return Err(SyntaxError::new(
                "\"]]>\" is not allowed in text",
                at + index,
            ));
        }
        match self.stack.last_mut() {
            Some(open) => {
                let text = open.pending_text.get_or_insert_with(|| Text {
                    value: String::new(),
                    offset: at,
                });
                text.value.push_str(data);
                Ok(())
            }
            None if raw && data.chars().all(is_xml_whitespace) => {
                if !data.is_empty() {
                    self.seen_content = true;
                }
                Ok(())
            }
            None => Err(SyntaxError::new("text outside the root element", at)),
        }
    }

    fn finish(self, at: usize) -> Result<Element, SyntaxError> {
        if let Some(open) = self.stack.last() {
            return Err(SyntaxError::new(
                format!("element <{}> is not closed", open.element.name),
                at,
            ));
        }
        self.root
            .ok_or_else(|| SyntaxError::new("the document has no root element", at))
    }
}

/// Whitespace as XML defines it (and as XML Schema collapses it).
pub fn is_xml_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// The character a reference stands for: one of the five predefined entities or a character
/// reference. Every other entity is refused: we never define any.
fn resolve_reference(reference: &str, at: usize) -> Result<char, SyntaxError> {
    let resolved = match reference {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "apos" => Some('\''),
        "quot" => Some('"'),
        _ => {
            if let Some(hex) = reference.strip_prefix("#x") {
                u32::from_str_radix(hex, 16).ok().and_then(char::from_u32)
            } else if let Some(decimal) = reference.strip_prefix('#') {
                decimal.parse::<u32>().ok().and_then(char::from_u32)
            } else {
                return Err(SyntaxError::new(
                    format!(
                        "entity reference &{reference}; is not defined (entities are not accepted)"
                    ),
                    at,
                ));
            }
        }
    };
    match resolved {
        Some(c) if is_xml_char(c) => Ok(c),
        _ => Err(SyntaxError::new(
            format!("&{reference}; is not a character XML allows"),
            at,
        )),
    }
}

/// XML 1.0's `Char` production (surrogates cannot occur in a Rust `char`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
}

fn check_chars(data: &str, at: usize) -> Result<(), SyntaxError> {
    match data.char_indices().find(|(_, c)| !is_xml_char(*c)) {
        None => Ok(()),
        Some((index, c)) => Err(SyntaxError::new(
            format!("character U+{:04X} is not allowed in XML", u32::from(c)),
            at + index,
        )),
    }
}

fn is_name_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':' || u32::from(c) >= 0xC0
}

fn is_name_char(c: char) -> bool {
    is_name_start(c) || c.is_ascii_digit() || c == '-' || c == '.' || c == '\u{B7}'
}

fn check_name(name: &str, at: usize) -> Result<(), SyntaxError> {
    let mut chars = name.chars();
    let valid = name.len() <= NAME_BYTES_MAX
        && chars.next().is_some_and(is_name_start)
        && chars.all(is_name_char)
        && !name.starts_with(':')
        && !name.ends_with(':')
        && name.matches(':').count() <= 1;
    if valid {
        Ok(())
    } else {
        Err(SyntaxError::new(
            format!("{name:?} is not a valid XML name"),
            at,
        ))
    }
}

/// Offsets (relative to the tag's `<`) of each attribute name in a raw start tag that the
/// parser has already accepted, so that attribute errors point at the attribute.
fn attribute_name_offsets(raw_tag: &str) -> Vec<usize> {
    let bytes = raw_tag.as_bytes();
    let mut offsets = Vec::new();
    // Skip `<` and the element name.
    let mut i = 1;
    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' && bytes[i] != b'/'
    {
        i += 1;
    }
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= bytes.len() || bytes[i] == b'>' || bytes[i] == b'/' {
            return offsets;
        }
        offsets.push(i);
        while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\'' {
            i += 1;
        }
        let Some(&quote) = bytes.get(i) else {
            return offsets;
        };
        i += 1;
        while i < bytes.len() && bytes[i] != quote {
            i += 1;
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Element, SyntaxError> {
        read_document(text.as_bytes(), &Limits::DEFAULT)
    }

    #[test]
    fn reads_elements_attributes_and_text() {
        let root = read("<?xml version=\"1.0\"?>\n<a x='1' y=\"&lt;\"><b>hi &amp; <![CDATA[<bye>]]></b><c/></a>")
            .expect("valid document");
        assert_eq!(root.name, "a");
        assert_eq!(root.attribute("y").map(|a| a.value.as_str()), Some("<"));
        let children: Vec<_> = root.elements().collect();
        assert_eq!(children.len(), 2);
        assert_eq!(children[0].text().0, "hi & <bye>");
        assert_eq!(root.attribute("y").map(|a| a.offset), Some(31));
    }

    #[test]
    fn refuses_doctype_before_looking_at_entities() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;\">]><lolz>&lol2;</lolz>";
        let error = read(bomb).expect_err("DOCTYPE must be refused");
        assert!(error.message.contains("DOCTYPE"), "{}", error.message);
        assert_eq!(error.offset, 21);
    }

    #[test]
    fn refuses_undefined_entities_and_bad_characters() {
        assert!(
            read("<a>&nbsp;</a>")
                .expect_err("entity")
                .message
                .contains("not defined")
        );
        assert!(
            read("<a>&#1;</a>")
                .expect_err("char ref")
                .message
                .contains("not a character")
        );
        assert!(
            read("<a>\u{1}</a>")
                .expect_err("control")
                .message
                .contains("U+0001")
        );
    }

    #[test]
    fn refuses_oversized_documents_without_parsing() {
        let limits = Limits {
            document_bytes_max: 10,
            ..Limits::DEFAULT
        };
        let error = read_document(b"<a>0123456789</a>", &limits).expect_err("too big");
        assert_eq!(error.offset, 0);
        assert!(error.message.contains("limit is 10 bytes"));
    }

    #[test]
    fn stops_at_the_depth_limit() {
        let deep = "<a>".repeat(1000);
        let error = read(&deep).expect_err("too deep");
        assert!(error.message.contains("deeper than 32"));
        assert_eq!(error.offset, 32 * 3);
    }

    #[test]
    fn checks_namespace_prefixes() {
        assert!(read("<a><p:b/></a>").is_err());
        assert!(read("<a xmlns:p='urn:x'><p:b p:c='1'/></a>").is_ok());
        assert!(read("<a><b xmlns:p='urn:x'/><p:c/></a>").is_err());
    }

    #[test]
    fn refuses_non_utf8_and_other_encodings() {
        assert!(read_document(b"<a>\xff</a>", &Limits::DEFAULT).is_err());
        assert!(read("<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><a/>").is_err());
        assert!(read("\u{FEFF}<?xml version=\"1.0\" encoding=\"utf-8\"?><a/>").is_ok());
    }

    #[test]
    fn refuses_structural_errors() {
        assert!(read("<a></b>").is_err());
        assert!(read("<a>").is_err());
        assert!(read("<a/><b/>").is_err());
        assert!(read("text<a/>").is_err());
        assert!(read("").is_err());
        assert!(read("<a x='1' x='2'/>").is_err());
        assert!(read("<1a/>").is_err());
        assert!(read("<a/><?xml version=\"1.0\"?>").is_err());
    }
}
