//! Writes a tree back out, deterministically: the same tree always gives the same bytes. The
//! compact form is what signatures cover; the pretty form is for people.

use super::tree::{Element, Node};

/// How to lay out the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// No XML declaration, no whitespace between elements: the canonical form that signatures
    /// cover.
    Compact,
    /// An XML declaration, one element per line, two-space indentation. Elements holding text
    /// are written on one line, so no whitespace is added to any value.
    Pretty,
}

/// Serializes `root` in the given layout.
pub fn write_document(root: &Element, layout: Layout) -> String {
    let mut out = String::new();
    if layout == Layout::Pretty {
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    }
    write_element(root, layout, 0, &mut out);
    if layout == Layout::Pretty {
        out.push('\n');
    }
    out
}

fn write_element(element: &Element, layout: Layout, depth: usize, out: &mut String) {
    out.push('<');
    out.push_str(&element.name);
    for attribute in &element.attributes {
        out.push(' ');
        out.push_str(&attribute.name);
        out.push_str("=\"");
        escape_into(&attribute.value, true, out);
        out.push('"');
    }
    if element.children.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    // Only element-only content may be re-indented; anything holding text keeps its exact shape.
    let has_text = element
        .children
        .iter()
        .any(|node| matches!(node, Node::Text(_)));
    let indent = layout == Layout::Pretty && !has_text;
    for child in &element.children {
        if indent {
            out.push('\n');
            push_indent(depth + 1, out);
        }
        match child {
            Node::Element(child) => {
                let child_layout = if indent { layout } else { Layout::Compact };
                write_element(child, child_layout, depth + 1, out);
            }
            Node::Text(text) => escape_into(&text.value, false, out),
        }
    }
    if indent {
        out.push('\n');
        push_indent(depth, out);
    }
    out.push_str("</");
    out.push_str(&element.name);
    out.push('>');
}

fn push_indent(depth: usize, out: &mut String) {
    for _ in 0..depth {
        out.push_str("  ");
    }
}

/// Escapes markup characters, and the whitespace characters that a reader would otherwise
/// normalize away (`\r` in text; tab, newline and `\r` in attribute values), so values survive
/// a round trip exactly.
fn escape_into(value: &str, attribute: bool, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\r' => out.push_str("&#13;"),
            '\n' if attribute => out.push_str("&#10;"),
            '\t' if attribute => out.push_str("&#9;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::limits::Limits;
    use crate::xml::reader::read_document;

    fn strip_offsets(element: &mut Element) {
        element.offset = 0;
        for attribute in &mut element.attributes {
            attribute.offset = 0;
        }
        for child in &mut element.children {
            match child {
                Node::Element(child) => strip_offsets(child),
                Node::Text(text) => text.offset = 0,
            }
        }
    }

    #[test]
    fn compact_output_round_trips_exactly() {
        let tree = Element::new("a")
            .with_attribute("v", "x\t\"y\"\n<&>\r")
            .with_child(Element::new("b").with_text(" spaced \r\n & <tagged> "))
            .with_child(Element::new("c"));
        let text = write_document(&tree, Layout::Compact);
        let mut back = read_document(text.as_bytes(), &Limits::DEFAULT).expect("re-read");
        strip_offsets(&mut back);
        assert_eq!(back, tree);
    }

    #[test]
    fn pretty_output_indents_only_element_content() {
        let tree = Element::new("a").with_child(Element::new("b").with_text("1"));
        assert_eq!(
            write_document(&tree, Layout::Pretty),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<a>\n  <b>1</b>\n</a>\n"
        );
    }
}
