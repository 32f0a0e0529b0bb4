//! The property every fuzz target checks: parsing never panics, and whatever parses survives a
//! round trip through our writer unchanged.

use xeno_schemas::Document;

pub fn check<T: Document + PartialEq + std::fmt::Debug>(data: &[u8]) {
    if let Ok(document) = T::parse(data) {
        let xml = document.to_xml();
        let back = T::parse(xml.as_bytes()).expect("our own output must parse");
        assert_eq!(back, document, "round trip changed the document");
    }
}
