//! The signature block shared by signed documents (purchase orders, server advertisements). A
//! signature covers the canonical compact serialization (see
//! [`Document::to_canonical`](super::Document::to_canonical)) of the parts it follows, as each
//! document type defines; the signer's public key travels with it so that a reader can check
//! the signature and then decide whether it trusts that key (a corp's key, or the key whose
//! fingerprint is a server's id).

use super::common::Reader;
use crate::schema::model::{Content, ElementDecl, SimpleKind, SimpleType, leaf, one};
use crate::schema::types::encode_base64;
use crate::schema::validate::Problem;
use crate::xml::Element;
use sha2::{Digest, Sha256};

/// Signature algorithms we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SignatureAlgorithm {
    /// Ed25519 (RFC 8032).
    Ed25519,
    /// ECDSA over P-256 with SHA-256, ASN.1 DER signature (the default key type of X.509 tools).
    EcdsaP256Sha256,
}

impl SignatureAlgorithm {
    /// The name used in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureAlgorithm::Ed25519 => "Ed25519",
            SignatureAlgorithm::EcdsaP256Sha256 => "ECDSA-P256-SHA256",
        }
    }
}

static ALGORITHM_TYPE: SimpleType = SimpleType {
    name: "SignatureAlgorithm",
    doc: "The signature algorithm.",
    kind: SimpleKind::Enumeration(&["Ed25519", "ECDSA-P256-SHA256"]),
};

static KEY_TYPE: SimpleType = SimpleType {
    name: "PublicKeyBase64",
    doc: "A public key as base64 of its DER SubjectPublicKeyInfo.",
    kind: SimpleKind::Base64 { max_chars: 1024 },
};

static VALUE_TYPE: SimpleType = SimpleType {
    name: "SignatureBase64",
    doc: "Signature bytes in base64.",
    kind: SimpleKind::Base64 { max_chars: 1024 },
};

static ALGORITHM: ElementDecl = leaf("Algorithm", &ALGORITHM_TYPE, "How the signature was made.");
static PUBLIC_KEY: ElementDecl = leaf(
    "PublicKey",
    &KEY_TYPE,
    "The signer's public key (DER SubjectPublicKeyInfo, base64). Its SHA-256 is the signer's fingerprint.",
);
static VALUE: ElementDecl = leaf("Value", &VALUE_TYPE, "The signature.");

/// The content every signature element shares.
pub(crate) const SIGNATURE_CONTENT: Content =
    Content::Sequence(&[one(&ALGORITHM), one(&PUBLIC_KEY), one(&VALUE)]);

/// A signature over some canonical bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// How it was made.
    pub algorithm: SignatureAlgorithm,
    /// DER SubjectPublicKeyInfo of the signer's key.
    pub public_key: Vec<u8>,
    /// The signature bytes.
    pub value: Vec<u8>,
}

impl Signature {
    /// SHA-256 of the signer's public key, lowercase hex: the signer's self-certifying name.
    pub fn key_fingerprint(&self) -> String {
        key_fingerprint(&self.public_key)
    }
}

/// SHA-256 of a DER SubjectPublicKeyInfo, in lowercase hex: how XenoServers are named.
pub fn key_fingerprint(public_key_der: &[u8]) -> String {
    hex::encode(Sha256::digest(public_key_der))
}

pub(crate) fn read_signature(reader: &Reader<'_, '_>) -> Result<Signature, Problem> {
    let algorithm = match reader.required_text("Algorithm")?.as_str() {
        "Ed25519" => SignatureAlgorithm::Ed25519,
        _ => SignatureAlgorithm::EcdsaP256Sha256,
    };
    Ok(Signature {
        algorithm,
        public_key: reader.required_child("PublicKey")?.bytes()?,
        value: reader.required_child("Value")?.bytes()?,
    })
}

pub(crate) fn signature_element(name: &str, signature: &Signature) -> Element {
    Element::new(name)
        .with_leaf("Algorithm", signature.algorithm.as_str())
        .with_leaf("PublicKey", encode_base64(&signature.public_key))
        .with_leaf("Value", encode_base64(&signature.value))
}
