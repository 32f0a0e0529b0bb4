//! Checks a [`Element`] tree against a [`DocumentSchema`], collecting every problem with its
//! path and offset, and returns the tree annotated with typed values.

use super::model::{Content, DocumentSchema, ElementDecl, Particle, Term};
use super::types::{Value, check};
use crate::xml::reader::is_xml_whitespace;
use crate::xml::{Element, Node};

/// Most problems reported for one document: enough to fix a file in one pass, bounded so that a
/// hostile document cannot make us build a huge report.
pub const ERRORS_MAX: usize = 20;

/// A problem found by validation, located by byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Element path (see [`crate::DocumentError::path`]).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// Byte offset in the source.
    pub offset: usize,
}

/// An element that passed validation, with its typed value, attributes and children.
#[derive(Debug)]
pub struct Valid<'t> {
    /// Its declaration.
    pub decl: &'static ElementDecl,
    /// The element itself.
    pub element: &'t Element,
    /// Its value, when its content is simple.
    pub value: Option<Value>,
    /// Its attributes' typed values, by name.
    pub attributes: Vec<(&'static str, Value)>,
    /// Its validated child elements, in order (empty for `AnyElements` content).
    pub children: Vec<Valid<'t>>,
}

/// Validates `root` against `schema`.
pub fn validate<'t>(schema: &DocumentSchema, root: &'t Element) -> Result<Valid<'t>, Vec<Problem>> {
    let mut validator = Validator {
        problems: Vec::new(),
    };
    if root.name != schema.root.name {
        validator.report(
            &root.name,
            format!(
                "expected root element <{}>, found <{}>",
                schema.root.name, root.name
            ),
            root.offset,
        );
        return Err(validator.problems);
    }
    let valid = validator.element(schema.root, root, "");
    match valid {
        Some(valid) if validator.problems.is_empty() => Ok(valid),
        _ => Err(validator.problems),
    }
}

struct Validator {
    problems: Vec<Problem>,
}

fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// A value as it appears in an error message: quoted, and shortened if long.
fn quoted(raw: &str) -> String {
    const SHOWN_CHARS_MAX: usize = 40;
    if raw.chars().count() > SHOWN_CHARS_MAX {
        let shown: String = raw.chars().take(SHOWN_CHARS_MAX).collect();
        format!("{shown:?}...")
    } else {
        format!("{raw:?}")
    }
}

impl Validator {
    fn report(&mut self, path: &str, message: String, offset: usize) {
        if self.problems.len() < ERRORS_MAX {
            self.problems.push(Problem {
                path: path.to_owned(),
                message,
                offset,
            });
        }
    }

    /// Validates one element; `path` is "" for the root. Returns `None` if it had problems.
    fn element<'t>(
        &mut self,
        decl: &'static ElementDecl,
        element: &'t Element,
        path: &str,
    ) -> Option<Valid<'t>> {
        let before = self.problems.len();
        let shown_path = if path.is_empty() {
            element.name.as_str()
        } else {
            path
        };
        let attributes = self.attributes(decl, element, shown_path);
        let mut value = None;
        let mut children = Vec::new();
        match &decl.content {
            Content::Empty => {
                self.no_text(element, shown_path, "must be empty");
                if let Some(child) = element.elements().next() {
                    let message = format!("unexpected element; <{}> must be empty", decl.name);
                    self.report(&child_path(path, &child.name), message, child.offset);
                }
            }
            Content::Simple(ty) => {
                if let Some(child) = element.elements().next() {
                    let message = format!("unexpected element inside the value of <{}>", decl.name);
                    self.report(&child_path(path, &child.name), message, child.offset);
                } else {
                    let (raw, offset) = element.text();
                    match check(&ty.kind, &raw) {
                        Ok(checked) => value = Some(checked),
                        Err(expected) => self.report(
                            shown_path,
                            format!("expected {expected}, got {}", quoted(&raw)),
                            offset,
                        ),
                    }
                }
            }
            Content::AnyElements => self.no_text(element, shown_path, "holds only elements"),
            Content::Sequence(particles) => {
                self.no_text(element, shown_path, "holds only elements");
                children = self.sequence(decl, particles, element, path);
            }
        }
        (self.problems.len() == before).then_some(Valid {
            decl,
            element,
            value,
            attributes,
            children,
        })
    }

    fn attributes(
        &mut self,
        decl: &ElementDecl,
        element: &Element,
        path: &str,
    ) -> Vec<(&'static str, Value)> {
        let mut values = Vec::new();
        for attribute in &element.attributes {
            let attribute_path = format!("{path}/@{}", attribute.name);
            // Namespace declarations are not attributes in XML Schema's view. Prefixes only
            // matter inside Extensions (a prefixed name anywhere else is an unknown element), but
            // a default namespace would move the element itself out of our no-namespace schema.
            if attribute.name.starts_with("xmlns:") {
                continue;
            }
            if attribute.name == "xmlns" {
                if !attribute.value.is_empty() {
                    let message = "a default namespace is not allowed here: our documents are in no namespace";
                    self.report(&attribute_path, message.to_owned(), attribute.offset);
                }
                continue;
            }
            let Some(attribute_decl) = decl.attributes.iter().find(|a| a.name == attribute.name)
            else {
                let message = if decl.attributes.is_empty() {
                    format!("unknown attribute; <{}> takes none", decl.name)
                } else {
                    let names: Vec<_> = decl.attributes.iter().map(|a| a.name).collect();
                    format!(
                        "unknown attribute; <{}> takes {}",
                        decl.name,
                        names.join(", ")
                    )
                };
                self.report(&attribute_path, message, attribute.offset);
                continue;
            };
            match check(&attribute_decl.ty.kind, &attribute.value) {
                Ok(value) => values.push((attribute_decl.name, value)),
                Err(expected) => self.report(
                    &attribute_path,
                    format!("expected {expected}, got {}", quoted(&attribute.value)),
                    attribute.offset,
                ),
            }
        }
        for attribute_decl in decl.attributes.iter().filter(|a| a.required) {
            if element.attribute(attribute_decl.name).is_none() {
                let message = format!("missing required attribute {:?}", attribute_decl.name);
                self.report(path, message, element.offset);
            }
        }
        values
    }

    fn no_text(&mut self, element: &Element, path: &str, rule: &str) {
        for node in &element.children {
            if let Node::Text(text) = node
                && !text.value.chars().all(is_xml_whitespace)
            {
                let message = format!(
                    "unexpected text {}; <{}> {rule}",
                    quoted(text.value.trim()),
                    element.name
                );
                self.report(path, message, text.offset);
                return;
            }
        }
    }

    fn sequence<'t>(
        &mut self,
        decl: &ElementDecl,
        particles: &'static [Particle],
        element: &'t Element,
        path: &str,
    ) -> Vec<Valid<'t>> {
        let shown_path = if path.is_empty() {
            element.name.as_str()
        } else {
            path
        };
        let children: Vec<&Element> = element.elements().collect();
        let mut counts = vec![0u32; particles.len()];
        let mut valid = Vec::new();
        let mut next = 0;
        for (index, particle) in particles.iter().enumerate() {
            while counts[index] < particle.max
                && let Some(child) = children.get(next)
                && let Some(child_decl) = matching(particle, &child.name)
            {
                counts[index] += 1;
                next += 1;
                let name = if particle.max > 1 {
                    format!("{}[{}]", child.name, counts[index])
                } else {
                    child.name.clone()
                };
                if let Some(checked) = self.element(child_decl, child, &child_path(path, &name)) {
                    valid.push(checked);
                }
            }
            if counts[index] < particle.min {
                match children.get(next) {
                    // The element in the way belongs earlier: that is the mistake to report.
                    Some(found)
                        if particles[..index]
                            .iter()
                            .any(|p| matching(p, &found.name).is_some()) =>
                    {
                        break;
                    }
                    Some(found) => {
                        let message =
                            format!("missing {} before <{}>", describe(particle), found.name);
                        self.report(shown_path, message, found.offset);
                        return valid;
                    }
                    None => {
                        self.report(
                            shown_path,
                            format!("missing {}", describe(particle)),
                            element.offset,
                        );
                        return valid;
                    }
                }
            }
        }
        if let Some(extra) = children.get(next) {
            let previous = next
                .checked_sub(1)
                .and_then(|i| children.get(i))
                .map(|e| e.name.as_str());
            let message = unexpected(decl, particles, &counts, &extra.name, previous);
            self.report(&child_path(path, &extra.name), message, extra.offset);
        }
        valid
    }
}

/// Why `name` cannot come where it is: too many of it, in the wrong place, or not ours at all.
fn unexpected(
    decl: &ElementDecl,
    particles: &[Particle],
    counts: &[u32],
    name: &str,
    previous: Option<&str>,
) -> String {
    let Some(index) = particles.iter().position(|p| matching(p, name).is_some()) else {
        let names: Vec<String> = particles.iter().map(describe).collect();
        return format!(
            "unknown element; <{}> holds {}",
            decl.name,
            names.join(", ")
        );
    };
    let particle = &particles[index];
    if counts[index] >= particle.max {
        if let (Term::Choice(choices), 1) = (&particle.term, particle.max) {
            let names: Vec<String> = choices
                .iter()
                .map(|decl| format!("<{}>", decl.name))
                .collect();
            format!(
                "only one of {} may appear in <{}>",
                names.join(", "),
                decl.name
            )
        } else if particle.max == 1 {
            format!("<{name}> may appear only once in <{}>", decl.name)
        } else {
            format!(
                "at most {} <{name}> elements may appear in <{}>",
                particle.max, decl.name
            )
        }
    } else {
        match previous {
            Some(previous) => format!(
                "out of order: <{name}> must come before <{previous}> in <{}>",
                decl.name
            ),
            None => format!("out of order in <{}>", decl.name),
        }
    }
}

fn matching(particle: &Particle, name: &str) -> Option<&'static ElementDecl> {
    match particle.term {
        Term::Element(decl) => (decl.name == name).then_some(decl),
        Term::Choice(decls) => decls.iter().copied().find(|decl| decl.name == name),
    }
}

fn describe(particle: &Particle) -> String {
    match particle.term {
        Term::Element(decl) => format!("<{}>", decl.name),
        Term::Choice(decls) => {
            let names: Vec<String> = decls
                .iter()
                .map(|decl| format!("<{}>", decl.name))
                .collect();
            format!("one of {}", names.join(" or "))
        }
    }
}
