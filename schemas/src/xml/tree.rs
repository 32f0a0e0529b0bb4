//! The document tree the reader produces: elements, attributes and text, each with the byte
//! offset it came from so that every later error can name a line and column.

/// An element with its attributes and children, in document order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// The qualified name as written (`prefix:local` or `local`).
    pub name: String,
    /// Attributes in document order, values unescaped and normalized as XML 1.0 requires.
    pub attributes: Vec<Attribute>,
    /// Child elements and text runs in document order. Adjacent text, CDATA sections and
    /// references are merged into one [`Text`]; comments and processing instructions are dropped.
    pub children: Vec<Node>,
    /// Byte offset of the element's `<` in the source (0 for trees built in code).
    pub offset: usize,
}

/// One attribute of an [`Element`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    /// The qualified name as written.
    pub name: String,
    /// The value after unescaping and attribute-value normalization.
    pub value: String,
    /// Byte offset of the attribute's name in the source.
    pub offset: usize,
}

/// A run of character data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// The characters, with references resolved and line ends normalized to `\n`.
    pub value: String,
    /// Byte offset where the run starts in the source.
    pub offset: usize,
}

/// A child of an [`Element`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A nested element.
    Element(Element),
    /// Character data.
    Text(Text),
}

impl Element {
    /// A new element with no attributes or children, for building documents in code.
    pub fn new(name: impl Into<String>) -> Self {
        Element {
            name: name.into(),
            attributes: Vec::new(),
            children: Vec::new(),
            offset: 0,
        }
    }

    /// Adds an attribute (builder style).
    pub fn with_attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.push(Attribute {
            name: name.into(),
            value: value.into(),
            offset: 0,
        });
        self
    }

    /// Adds a child element (builder style).
    pub fn with_child(mut self, child: Element) -> Self {
        self.children.push(Node::Element(child));
        self
    }

    /// Adds a text child (builder style).
    pub fn with_text(mut self, text: impl Into<String>) -> Self {
        self.children.push(Node::Text(Text {
            value: text.into(),
            offset: 0,
        }));
        self
    }

    /// Adds a child element holding only `text`: the common `<Name>value</Name>` shape.
    pub fn with_leaf(self, name: &str, text: impl Into<String>) -> Self {
        self.with_child(Element::new(name).with_text(text))
    }

    /// Adds the leaf only when `value` is present.
    pub fn with_optional_leaf(self, name: &str, value: Option<impl Into<String>>) -> Self {
        match value {
            Some(value) => self.with_leaf(name, value),
            None => self,
        }
    }

    /// The child elements, skipping text.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.children.iter().filter_map(|node| match node {
            Node::Element(element) => Some(element),
            Node::Text(_) => None,
        })
    }

    /// The value of the attribute called `name`, if present.
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes
            .iter()
            .find(|attribute| attribute.name == name)
    }

    /// All character data directly inside this element, concatenated, and the offset of the
    /// first run (or of the element itself when it holds no text).
    pub fn text(&self) -> (String, usize) {
        let mut value = String::new();
        let mut offset = None;
        for node in &self.children {
            if let Node::Text(text) = node {
                offset.get_or_insert(text.offset);
                value.push_str(&text.value);
            }
        }
        (value, offset.unwrap_or(self.offset))
    }
}
