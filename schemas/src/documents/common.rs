//! Simple types and small elements shared by several documents, and the accessors that turn a
//! validated tree into typed Rust values.

use crate::schema::model::{Pattern, SimpleKind, SimpleType};
use crate::schema::validate::Problem;
use crate::schema::{Decimal, Valid, Value};
use crate::xml::{Element, Node};
use std::fmt;
use std::str::FromStr;
use time::OffsetDateTime;

/// Minor units per major unit of every currency: amounts are integers in millionths, so that a
/// millisecond of CPU can be priced exactly. (A ledger of cents could not charge 150 ms of CPU at
/// a realistic price without rounding every charge.)
pub const MINOR_UNITS_PER_MAJOR: u64 = 1_000_000;

/// Decimal places of a minor unit.
const MINOR_SCALE: u8 = 6;
const _: () = assert!(10u64.pow(MINOR_SCALE as u32) == MINOR_UNITS_PER_MAJOR);

/// Largest amount any document can carry: 12 integer digits of major units, as [`AMOUNT_TYPE`]
/// allows.
pub const AMOUNT_MINOR_MAX: u64 = 1_000_000_000_000 * MINOR_UNITS_PER_MAJOR - 1;

fn ascii_run(value: &str, first: fn(u8) -> bool, rest: fn(u8) -> bool, len_max: usize) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= len_max
        && first(bytes[0])
        && bytes[1..].iter().all(|b| rest(*b))
}

fn identifier_rest(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// `EnvType` values and other short names: a letter, then letters, digits, `_`, `.` or `-`.
pub static IDENTIFIER: Pattern = Pattern {
    xsd: "[A-Za-z][A-Za-z0-9_.\\-]{0,63}",
    max_chars: 64,
    matches: |v| ascii_run(v, |b| b.is_ascii_alphabetic(), identifier_rest, 64),
    description: "an identifier (a letter, then up to 63 letters, digits, '_', '.' or '-')",
};

/// Ids minted by corps and servers, which may carry the corp's id as a prefix (`corp1:po-42`).
pub static OBJECT_ID: Pattern = Pattern {
    xsd: "[A-Za-z0-9][A-Za-z0-9_.:\\-]{0,127}",
    max_chars: 128,
    matches: |v| {
        ascii_run(
            v,
            |b| b.is_ascii_alphanumeric(),
            |b| identifier_rest(b) || b == b':',
            128,
        )
    },
    description: "an id (a letter or digit, then up to 127 letters, digits, '_', '.', ':' or '-')",
};

/// Kernel and runtime versions (`2.4.18`, `6.1`, `wasmtime-48.0.8`).
pub static VERSION: Pattern = Pattern {
    xsd: "[0-9A-Za-z][0-9A-Za-z.+_\\-]{0,63}",
    max_chars: 64,
    matches: |v| {
        ascii_run(
            v,
            |b| b.is_ascii_alphanumeric(),
            |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'_' | b'-'),
            64,
        )
    },
    description: "a version (a letter or digit, then up to 63 letters, digits, '.', '+', '_' or '-')",
};

/// ISO 4217 currency codes.
pub static CURRENCY_PATTERN: Pattern = Pattern {
    xsd: "[A-Z]{3}",
    max_chars: 3,
    matches: |v| v.len() == 3 && v.bytes().all(|b| b.is_ascii_uppercase()),
    description: "a three-letter currency code such as GBP",
};

/// SHA-256 digests and key fingerprints, in lowercase hex.
pub static SHA256_PATTERN: Pattern = Pattern {
    xsd: "[0-9a-f]{64}",
    max_chars: 64,
    matches: |v| {
        v.len() == 64
            && v.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    },
    description: "a SHA-256 digest as 64 lowercase hex digits",
};

/// A name people choose (`MyEnvironment`): 1 to 128 characters, whitespace collapsed.
pub static NAME: SimpleType = SimpleType {
    name: "Name",
    doc: "A name chosen by a person: 1 to 128 characters, whitespace collapsed.",
    kind: SimpleKind::Token {
        min_chars: 1,
        max_chars: 128,
    },
};

/// See [`IDENTIFIER`].
pub static IDENTIFIER_TYPE: SimpleType = SimpleType {
    name: "Identifier",
    doc: "A short identifier: a letter, then letters, digits, '_', '.' or '-' (at most 64 characters).",
    kind: SimpleKind::Pattern(&IDENTIFIER),
};

/// See [`OBJECT_ID`].
pub static OBJECT_ID_TYPE: SimpleType = SimpleType {
    name: "ObjectId",
    doc: "An id issued by a corp or server; may be prefixed by the issuing corp's id and a colon.",
    kind: SimpleKind::Pattern(&OBJECT_ID),
};

/// See [`VERSION`].
pub static VERSION_TYPE: SimpleType = SimpleType {
    name: "Version",
    doc: "A kernel, ABI or runtime version such as 2.4.18 or 48.0.8.",
    kind: SimpleKind::Pattern(&VERSION),
};

/// See [`CURRENCY_PATTERN`].
pub static CURRENCY_TYPE: SimpleType = SimpleType {
    name: "Currency",
    doc: "An ISO 4217 currency code.",
    kind: SimpleKind::Pattern(&CURRENCY_PATTERN),
};

/// See [`SHA256_PATTERN`].
pub static SHA256_TYPE: SimpleType = SimpleType {
    name: "Sha256",
    doc: "A SHA-256 digest in lowercase hex: of payload bytes, or of a public key (a fingerprint).",
    kind: SimpleKind::Pattern(&SHA256_PATTERN),
};

/// Amounts of money in major units with up to six decimals.
pub static AMOUNT_TYPE: SimpleType = SimpleType {
    name: "Amount",
    doc: "An amount in major units of its currency (10.50 is ten pounds fifty), at most 12 digits \
          before the point and 6 after; held exactly as integer millionths.",
    kind: SimpleKind::Decimal {
        signed: false,
        integer_digits: 12,
        fraction_digits: 6,
    },
};

/// An amount as people write it and the documents carry it ([`AMOUNT_TYPE`]: `10.50` is ten
/// pounds fifty), in minor units; `None` if it is not one.
pub fn parse_major_amount(text: &str) -> Option<u64> {
    match crate::schema::types::check(&AMOUNT_TYPE.kind, text) {
        Ok(crate::schema::types::Value::Decimal(decimal)) => decimal
            .to_scaled(MINOR_SCALE)
            .and_then(|minor| u64::try_from(minor).ok()),
        _ => None,
    }
}

/// Instants.
pub static TIMESTAMP_TYPE: SimpleType = SimpleType {
    name: "Timestamp",
    doc: "An instant in UTC: YYYY-MM-DDThh:mm:ss with optional fraction, and Z.",
    kind: SimpleKind::DateTime,
};

/// Booleans.
pub static BOOLEAN_TYPE: SimpleType = SimpleType {
    name: "Boolean",
    doc: "true or false (1 and 0 are accepted too).",
    kind: SimpleKind::Boolean,
};

/// Free text of up to 1,024 characters.
pub static TEXT_TYPE: SimpleType = SimpleType {
    name: "Text",
    doc: "Free text, whitespace preserved, at most 1,024 characters.",
    kind: SimpleKind::String {
        min_chars: 0,
        max_chars: 1024,
    },
};

/// Counts of things: any 64-bit unsigned integer.
pub static COUNT_TYPE: SimpleType = SimpleType {
    name: "Count",
    doc: "A non-negative integer (at most 2^64 - 1).",
    kind: SimpleKind::Unsigned { max: u64::MAX },
};

/// A currency code, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// The code as text.
    pub fn as_str(&self) -> &str {
        // The constructor admits only ASCII uppercase letters.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl FromStr for Currency {
    type Err = String;
    fn from_str(code: &str) -> Result<Self, String> {
        if (CURRENCY_PATTERN.matches)(code) {
            let bytes = code.as_bytes();
            Ok(Currency([bytes[0], bytes[1], bytes[2]]))
        } else {
            Err(format!("{code:?} is not {}", CURRENCY_PATTERN.description))
        }
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An amount of money: integer minor units (millionths) of a currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    /// The currency.
    pub currency: Currency,
    /// The amount in millionths of a major unit.
    pub minor: u64,
}

impl Money {
    /// The amount in major units, as a decimal with six places trimmed of trailing zeros
    /// (at least two kept): `10.50`, `0.000150`.
    pub fn amount_text(&self) -> String {
        format_minor(self.minor)
    }
}

/// Writes minor units as a major-unit decimal (`10500000` → `10.50`).
pub fn format_minor(minor: u64) -> String {
    let major = minor / MINOR_UNITS_PER_MAJOR;
    let fraction = format!("{:06}", minor % MINOR_UNITS_PER_MAJOR);
    let trimmed = fraction.trim_end_matches('0');
    let shown = if trimmed.len() < 2 {
        &fraction[..2]
    } else {
        trimmed
    };
    format!("{major}.{shown}")
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_text(), self.currency)
    }
}

/// Navigating a validated tree. The validator has already checked presence and types, so a
/// failure here means the Rust types and the model disagree: reported as an error naming the
/// path, never a panic. Semantic checks (rules an XSD cannot state) report through
/// [`Reader::problem`].
pub(crate) struct Reader<'a, 't> {
    pub(crate) node: &'a Valid<'t>,
    path: String,
    /// Namespace prefix declarations in scope, so that extension elements taken out of the
    /// tree keep the declarations their prefixes need.
    namespaces: Vec<crate::xml::Attribute>,
}

fn declarations(element: &Element) -> impl Iterator<Item = crate::xml::Attribute> + '_ {
    element
        .attributes
        .iter()
        .filter(|attribute| attribute.name.starts_with("xmlns:"))
        .map(|attribute| crate::xml::Attribute {
            offset: 0,
            ..attribute.clone()
        })
}

type Read<T> = Result<T, Problem>;

impl<'a, 't> Reader<'a, 't> {
    pub(crate) fn root(node: &'a Valid<'t>) -> Self {
        Reader {
            node,
            path: String::new(),
            namespaces: declarations(node.element).collect(),
        }
    }

    fn at(&self, node: &'a Valid<'t>, segment: &str) -> Reader<'a, 't> {
        let path = if self.path.is_empty() {
            segment.to_owned()
        } else {
            format!("{}/{segment}", self.path)
        };
        let mut namespaces = self.namespaces.clone();
        for declaration in declarations(node.element) {
            namespaces.retain(|existing| existing.name != declaration.name);
            namespaces.push(declaration);
        }
        Reader {
            node,
            path,
            namespaces,
        }
    }

    /// A problem with this element: `message` is reported at its path and position.
    pub(crate) fn problem(&self, message: impl Into<String>) -> Problem {
        let path = if self.path.is_empty() {
            self.node.decl.name.to_owned()
        } else {
            self.path.clone()
        };
        Problem {
            path,
            message: message.into(),
            offset: self.node.element.offset,
        }
    }

    fn mismatch(&self, what: &str) -> Problem {
        self.problem(format!(
            "{what}: the document model and its Rust type disagree (a bug in xeno-schemas)"
        ))
    }

    pub(crate) fn child(&self, name: &str) -> Option<Reader<'a, 't>> {
        self.node
            .children
            .iter()
            .find(|child| child.decl.name == name)
            .map(|node| self.at(node, name))
    }

    pub(crate) fn required_child(&self, name: &str) -> Read<Reader<'a, 't>> {
        self.child(name).ok_or_else(|| self.mismatch(name))
    }

    pub(crate) fn children(&self, name: &str) -> Vec<Reader<'a, 't>> {
        self.node
            .children
            .iter()
            .filter(|child| child.decl.name == name)
            .enumerate()
            .map(|(index, node)| self.at(node, &format!("{name}[{}]", index + 1)))
            .collect()
    }

    pub(crate) fn name(&self) -> &'static str {
        self.node.decl.name
    }

    fn value(&self) -> Option<&'a Value> {
        self.node.value.as_ref()
    }

    pub(crate) fn text(&self) -> Read<String> {
        match self.value() {
            Some(Value::Text(text)) => Ok(text.clone()),
            _ => Err(self.mismatch("text")),
        }
    }

    pub(crate) fn unsigned(&self) -> Read<u64> {
        match self.value() {
            Some(Value::Unsigned(number)) => Ok(*number),
            _ => Err(self.mismatch("unsigned")),
        }
    }

    pub(crate) fn decimal(&self) -> Read<Decimal> {
        match self.value() {
            Some(Value::Decimal(decimal)) => Ok(*decimal),
            _ => Err(self.mismatch("decimal")),
        }
    }

    pub(crate) fn boolean(&self) -> Read<bool> {
        match self.value() {
            Some(Value::Boolean(value)) => Ok(*value),
            _ => Err(self.mismatch("boolean")),
        }
    }

    pub(crate) fn timestamp(&self) -> Read<OffsetDateTime> {
        match self.value() {
            Some(Value::DateTime(at)) => Ok(*at),
            _ => Err(self.mismatch("timestamp")),
        }
    }

    pub(crate) fn bytes(&self) -> Read<Vec<u8>> {
        match self.value() {
            Some(Value::Bytes(bytes)) => Ok(bytes.clone()),
            _ => Err(self.mismatch("bytes")),
        }
    }

    pub(crate) fn child_text(&self, name: &str) -> Read<Option<String>> {
        self.child(name).map(|child| child.text()).transpose()
    }

    pub(crate) fn required_text(&self, name: &str) -> Read<String> {
        self.required_child(name)?.text()
    }

    pub(crate) fn child_unsigned(&self, name: &str) -> Read<Option<u64>> {
        self.child(name).map(|child| child.unsigned()).transpose()
    }

    pub(crate) fn required_unsigned(&self, name: &str) -> Read<u64> {
        self.required_child(name)?.unsigned()
    }

    pub(crate) fn child_decimal(&self, name: &str) -> Read<Option<Decimal>> {
        self.child(name).map(|child| child.decimal()).transpose()
    }

    pub(crate) fn child_boolean(&self, name: &str) -> Read<Option<bool>> {
        self.child(name).map(|child| child.boolean()).transpose()
    }

    pub(crate) fn child_timestamp(&self, name: &str) -> Read<Option<OffsetDateTime>> {
        self.child(name).map(|child| child.timestamp()).transpose()
    }

    pub(crate) fn required_timestamp(&self, name: &str) -> Read<OffsetDateTime> {
        self.required_child(name)?.timestamp()
    }

    fn attribute(&self, name: &str) -> Option<&'a Value> {
        self.node
            .attributes
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, value)| value)
    }

    pub(crate) fn attribute_text(&self, name: &str) -> Read<Option<String>> {
        match self.attribute(name) {
            None => Ok(None),
            Some(Value::Text(text)) => Ok(Some(text.clone())),
            Some(_) => Err(self.mismatch(&format!("@{name}"))),
        }
    }

    pub(crate) fn required_attribute_text(&self, name: &str) -> Read<String> {
        self.attribute_text(name)?
            .ok_or_else(|| self.mismatch(&format!("@{name}")))
    }

    /// An amount element: a decimal value with a `currency` attribute.
    pub(crate) fn money(&self) -> Read<Money> {
        let currency = self.required_attribute_text("currency")?;
        let currency = currency.parse().map_err(|_| self.mismatch("@currency"))?;
        let minor = self
            .decimal()?
            .to_scaled(MINOR_SCALE)
            .and_then(|minor| u64::try_from(minor).ok())
            .ok_or_else(|| self.mismatch("money"))?;
        Ok(Money { currency, minor })
    }

    pub(crate) fn child_money(&self, name: &str) -> Read<Option<Money>> {
        self.child(name).map(|child| child.money()).transpose()
    }

    pub(crate) fn required_money(&self, name: &str) -> Read<Money> {
        self.required_child(name)?.money()
    }

    /// The raw elements inside an `Extensions` child, if any.
    pub(crate) fn extensions(&self) -> Vec<Element> {
        let Some(extensions) = self.child("Extensions") else {
            return Vec::new();
        };
        extensions
            .node
            .element
            .elements()
            .map(|element| {
                let mut element = without_offsets(element);
                for declaration in extensions.namespaces.iter().rev() {
                    if element.attribute(&declaration.name).is_none() {
                        element.attributes.insert(0, declaration.clone());
                    }
                }
                element
            })
            .collect()
    }
}

/// A copy of `element` with every source offset cleared, so that parsed extensions compare equal
/// to ones built in code.
pub fn without_offsets(element: &Element) -> Element {
    Element {
        name: element.name.clone(),
        attributes: element
            .attributes
            .iter()
            .map(|attribute| crate::xml::Attribute {
                offset: 0,
                ..attribute.clone()
            })
            .collect(),
        children: element
            .children
            .iter()
            .map(|child| match child {
                Node::Element(child) => Node::Element(without_offsets(child)),
                Node::Text(text) => Node::Text(crate::xml::Text {
                    value: text.value.clone(),
                    offset: 0,
                }),
            })
            .collect(),
        offset: 0,
    }
}

/// The `Extensions` element: anything a task manager plugin or other extension defines.
pub static EXTENSIONS: crate::schema::model::ElementDecl = crate::schema::model::ElementDecl {
    name: "Extensions",
    doc: "Elements defined by task manager plugins or other extensions, in any namespace; not \
          checked by this schema (the plugin that defines them checks them).",
    attributes: &[],
    content: crate::schema::model::Content::AnyElements,
};

/// Writes an `Extensions` element when there are any.
pub(crate) fn extensions_element(elements: &[crate::xml::Element]) -> Option<crate::xml::Element> {
    if elements.is_empty() {
        return None;
    }
    let mut extensions = crate::xml::Element::new("Extensions");
    for element in elements {
        extensions = extensions.with_child(element.clone());
    }
    Some(extensions)
}

/// An amount element with its currency attribute.
pub(crate) fn money_element(name: &str, money: &Money) -> crate::xml::Element {
    crate::xml::Element::new(name)
        .with_attribute("currency", money.currency.as_str())
        .with_text(money.amount_text())
}
