//! Generates the XSD for a [`DocumentSchema`]. The files in `schemas/xsd/` are this function's
//! output, committed so that anyone can read them or feed them to their own tools; a test fails
//! if they drift from the model.

use super::model::{
    AttributeDecl, Content, DocumentSchema, ElementDecl, Particle, SimpleKind, SimpleType, Term,
};
use std::collections::HashMap;
use std::fmt::Write;

/// The XSD text for `schema`.
///
/// # Panics
/// If two different declarations in one document share a type name: a bug in the model, caught
/// by the test suite.
pub fn generate(schema: &DocumentSchema) -> String {
    let mut collector = Collector::default();
    collector.visit(schema.root);
    let mut out = String::new();
    out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    out.push_str(
        "<!-- Generated from the document model in schemas/src/documents/ by `xeno schema xsd`.\n     \
         Do not edit by hand: the tests fail when this file and the model disagree. -->\n",
    );
    out.push_str("<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\">\n");
    let root = schema.root;
    let _ = writeln!(
        out,
        "  <xs:element name=\"{}\" type=\"{}\">",
        root.name,
        complex_name(root)
    );
    documentation(&mut out, root.doc, 2);
    out.push_str("  </xs:element>\n");
    for decl in &collector.complex {
        complex_type(&mut out, decl);
    }
    for ty in &collector.simple {
        simple_type(&mut out, ty);
    }
    out.push_str("</xs:schema>\n");
    out
}

#[derive(Default)]
struct Collector {
    complex: Vec<&'static ElementDecl>,
    simple: Vec<&'static SimpleType>,
    complex_names: HashMap<String, *const ElementDecl>,
    simple_names: HashMap<&'static str, *const SimpleType>,
}

impl Collector {
    fn visit(&mut self, decl: &'static ElementDecl) {
        for attribute in decl.attributes {
            self.simple_type(attribute.ty);
        }
        match &decl.content {
            Content::Simple(ty) => {
                self.simple_type(ty);
                if decl.attributes.is_empty() {
                    return;
                }
            }
            Content::Empty | Content::AnyElements | Content::Sequence(_) => {}
        }
        let name = complex_name(decl);
        match self.complex_names.get(&name) {
            Some(seen) if std::ptr::eq(*seen, decl) => return,
            Some(_) => panic!(
                "two different declarations of <{}> in one document",
                decl.name
            ),
            None => {
                self.complex_names.insert(name, decl);
                self.complex.push(decl);
            }
        }
        if let Content::Sequence(particles) = &decl.content {
            for particle in *particles {
                match particle.term {
                    Term::Element(child) => self.visit(child),
                    Term::Choice(children) => children.iter().for_each(|child| self.visit(child)),
                }
            }
        }
    }

    fn simple_type(&mut self, ty: &'static SimpleType) {
        match self.simple_names.get(ty.name) {
            Some(seen) if std::ptr::eq(*seen, ty) => {}
            Some(_) => panic!("two different simple types named {}", ty.name),
            None => {
                self.simple_names.insert(ty.name, ty);
                self.simple.push(ty);
            }
        }
    }
}

fn complex_name(decl: &ElementDecl) -> String {
    format!("{}Content", decl.name)
}

/// The type an element refers to: its simple type when it holds a bare value, else its content type.
fn type_of(decl: &ElementDecl) -> String {
    match &decl.content {
        Content::Simple(ty) if decl.attributes.is_empty() => ty.name.to_owned(),
        _ => complex_name(decl),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn documentation(out: &mut String, doc: &str, depth: usize) {
    let indent = "  ".repeat(depth);
    let _ = writeln!(
        out,
        "{indent}<xs:annotation><xs:documentation>{}</xs:documentation></xs:annotation>",
        escape(doc)
    );
}

fn occurs(particle: &Particle) -> String {
    let mut text = String::new();
    if particle.min != 1 {
        let _ = write!(text, " minOccurs=\"{}\"", particle.min);
    }
    if particle.max != 1 {
        let _ = write!(text, " maxOccurs=\"{}\"", particle.max);
    }
    text
}

fn element_ref(out: &mut String, decl: &ElementDecl, occurs: &str, depth: usize) {
    let indent = "  ".repeat(depth);
    let _ = writeln!(
        out,
        "{indent}<xs:element name=\"{}\" type=\"{}\"{occurs}>",
        decl.name,
        type_of(decl)
    );
    documentation(out, decl.doc, depth + 1);
    let _ = writeln!(out, "{indent}</xs:element>");
}

fn attributes(out: &mut String, attributes: &[AttributeDecl], depth: usize) {
    let indent = "  ".repeat(depth);
    for attribute in attributes {
        let use_ = if attribute.required {
            "required"
        } else {
            "optional"
        };
        let _ = writeln!(
            out,
            "{indent}<xs:attribute name=\"{}\" type=\"{}\" use=\"{use_}\">",
            attribute.name, attribute.ty.name
        );
        documentation(out, attribute.doc, depth + 1);
        let _ = writeln!(out, "{indent}</xs:attribute>");
    }
}

fn complex_type(out: &mut String, decl: &ElementDecl) {
    let _ = writeln!(out, "  <xs:complexType name=\"{}\">", complex_name(decl));
    match &decl.content {
        Content::Empty => attributes(out, decl.attributes, 2),
        Content::Simple(ty) => {
            out.push_str("    <xs:simpleContent>\n");
            let _ = writeln!(out, "      <xs:extension base=\"{}\">", ty.name);
            attributes(out, decl.attributes, 4);
            out.push_str("      </xs:extension>\n    </xs:simpleContent>\n");
        }
        Content::AnyElements => {
            out.push_str("    <xs:sequence>\n");
            out.push_str(
                "      <xs:any namespace=\"##any\" processContents=\"skip\" minOccurs=\"0\" maxOccurs=\"unbounded\"/>\n",
            );
            out.push_str("    </xs:sequence>\n");
            attributes(out, decl.attributes, 2);
        }
        Content::Sequence(particles) => {
            out.push_str("    <xs:sequence>\n");
            for particle in *particles {
                match particle.term {
                    Term::Element(child) => element_ref(out, child, &occurs(particle), 3),
                    Term::Choice(children) => {
                        let _ = writeln!(out, "      <xs:choice{}>", occurs(particle));
                        for child in children {
                            element_ref(out, child, "", 4);
                        }
                        out.push_str("      </xs:choice>\n");
                    }
                }
            }
            out.push_str("    </xs:sequence>\n");
            attributes(out, decl.attributes, 2);
        }
    }
    out.push_str("  </xs:complexType>\n");
}

fn simple_type(out: &mut String, ty: &SimpleType) {
    let _ = writeln!(out, "  <xs:simpleType name=\"{}\">", ty.name);
    documentation(out, ty.doc, 2);
    let facets: Vec<String> = match &ty.kind {
        SimpleKind::String {
            min_chars,
            max_chars,
        } => restriction(
            "xs:string",
            vec![
                facet("minLength", &min_chars.to_string()),
                facet("maxLength", &max_chars.to_string()),
            ],
        ),
        SimpleKind::Token {
            min_chars,
            max_chars,
        } => restriction(
            "xs:token",
            vec![
                facet("minLength", &min_chars.to_string()),
                facet("maxLength", &max_chars.to_string()),
            ],
        ),
        SimpleKind::Pattern(pattern) => restriction(
            "xs:token",
            vec![
                facet("maxLength", &pattern.max_chars.to_string()),
                facet("pattern", pattern.xsd),
            ],
        ),
        SimpleKind::Unsigned { max } => restriction(
            "xs:unsignedLong",
            vec![
                facet("pattern", "[0-9]+"),
                facet("maxInclusive", &max.to_string()),
            ],
        ),
        SimpleKind::Decimal {
            signed,
            integer_digits,
            fraction_digits,
        } => {
            let sign = if *signed { "-?" } else { "" };
            let fraction = if *fraction_digits == 0 {
                String::new()
            } else {
                format!("(\\.[0-9]{{1,{fraction_digits}}})?")
            };
            let pattern = format!("{sign}[0-9]{{1,{integer_digits}}}{fraction}");
            restriction("xs:decimal", vec![facet("pattern", &pattern)])
        }
        SimpleKind::DateTime => restriction(
            "xs:dateTime",
            vec![facet(
                "pattern",
                "[1-9][0-9]{3}-[0-9]{2}-[0-9]{2}T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\\.[0-9]{1,9})?Z",
            )],
        ),
        SimpleKind::Boolean => restriction("xs:boolean", Vec::new()),
        SimpleKind::Enumeration(values) => restriction(
            "xs:token",
            values
                .iter()
                .map(|value| facet("enumeration", value))
                .collect(),
        ),
        SimpleKind::Base64 { max_chars } => restriction(
            "xs:token",
            vec![
                facet("maxLength", &max_chars.to_string()),
                facet(
                    "pattern",
                    "([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?",
                ),
            ],
        ),
    };
    for line in facets {
        let _ = writeln!(out, "    {line}");
    }
    out.push_str("  </xs:simpleType>\n");
}

fn facet(name: &str, value: &str) -> String {
    format!("  <xs:{name} value=\"{}\"/>", escape(value))
}

fn restriction(base: &str, facets: Vec<String>) -> Vec<String> {
    if facets.is_empty() {
        return vec![format!("<xs:restriction base=\"{base}\"/>")];
    }
    let mut lines = vec![format!("<xs:restriction base=\"{base}\">")];
    lines.extend(facets);
    lines.push("</xs:restriction>".to_owned());
    lines
}
