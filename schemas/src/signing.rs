//! Signing and verifying the platform's signed documents (purchase orders, server
//! advertisements). A [`Signature`] carries the signer's public key as a DER
//! SubjectPublicKeyInfo; [`verify`] checks the signature against that key, and the caller then
//! decides whether it trusts the key (a corp's CA key, a client's certified key, or the key whose
//! fingerprint names a server).
//!
//! ```
//! use xeno_schemas::signing::{SigningKey, verify};
//! use xeno_schemas::documents::SignatureAlgorithm;
//!
//! let (key, _pkcs8) = SigningKey::generate(SignatureAlgorithm::EcdsaP256Sha256)?;
//! let signature = key.sign(b"canonical bytes")?;
//! verify(&signature, b"canonical bytes")?;
//! assert!(verify(&signature, b"other bytes").is_err());
//! # Ok::<(), xeno_schemas::signing::SigningError>(())
//! ```

use crate::documents::{Signature, SignatureAlgorithm, key_fingerprint};
use ring::rand::SystemRandom;
use ring::signature::{self as ring_signature, EcdsaKeyPair, Ed25519KeyPair, KeyPair};

/// Why signing or verification failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SigningError {
    /// The private key could not be read.
    #[error("unreadable private key: {0}")]
    BadPrivateKey(String),
    /// The public key in a signature is not one we can use.
    #[error(
        "unsupported or malformed public key (expected an Ed25519 or P-256 SubjectPublicKeyInfo)"
    )]
    BadPublicKey,
    /// The public key does not fit the algorithm named beside it.
    #[error("the public key does not match the signature algorithm {0}")]
    AlgorithmMismatch(&'static str),
    /// The signature does not verify.
    #[error("the signature does not verify")]
    BadSignature,
    /// The system could not sign (no randomness).
    #[error("signing failed")]
    SigningFailed,
}

/// DER prefix of an Ed25519 SubjectPublicKeyInfo; the 32-byte key follows.
const ED25519_SPKI_PREFIX: &[u8] = &[
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];
/// DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: &[u8] = &[
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

enum Inner {
    Ed25519(Ed25519KeyPair),
    Ecdsa(EcdsaKeyPair),
}

/// A private key that signs documents.
pub struct SigningKey {
    inner: Inner,
    public_key_der: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Loads a PKCS#8 DER private key of either algorithm (what X.509 tools such as rcgen and
    /// openssl write).
    pub fn from_pkcs8_der(der: &[u8]) -> Result<Self, SigningError> {
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let public_key_der = [ED25519_SPKI_PREFIX, pair.public_key().as_ref()].concat();
            return Ok(SigningKey {
                inner: Inner::Ed25519(pair),
                public_key_der,
            });
        }
        let pair = EcdsaKeyPair::from_pkcs8(
            &ring_signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            der,
            &SystemRandom::new(),
        )
        .map_err(|error| SigningError::BadPrivateKey(error.to_string()))?;
        let public_key_der = [P256_SPKI_PREFIX, pair.public_key().as_ref()].concat();
        Ok(SigningKey {
            inner: Inner::Ecdsa(pair),
            public_key_der,
        })
    }

    /// Loads a PEM `PRIVATE KEY` (PKCS#8).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Self, SigningError> {
        Self::from_pkcs8_der(&pem_to_der(pem, "PRIVATE KEY").ok_or_else(|| {
            SigningError::BadPrivateKey("expected a PEM block \"PRIVATE KEY\" (PKCS#8)".to_owned())
        })?)
    }

    /// A new random key, and its PKCS#8 DER encoding to store.
    pub fn generate(algorithm: SignatureAlgorithm) -> Result<(Self, Vec<u8>), SigningError> {
        let rng = SystemRandom::new();
        let pkcs8 = match algorithm {
            SignatureAlgorithm::Ed25519 => Ed25519KeyPair::generate_pkcs8(&rng),
            SignatureAlgorithm::EcdsaP256Sha256 => {
                EcdsaKeyPair::generate_pkcs8(&ring_signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            }
        }
        .map_err(|_| SigningError::SigningFailed)?;
        let key = Self::from_pkcs8_der(pkcs8.as_ref())?;
        Ok((key, pkcs8.as_ref().to_vec()))
    }

    /// The algorithm this key signs with.
    pub fn algorithm(&self) -> SignatureAlgorithm {
        match self.inner {
            Inner::Ed25519(_) => SignatureAlgorithm::Ed25519,
            Inner::Ecdsa(_) => SignatureAlgorithm::EcdsaP256Sha256,
        }
    }

    /// The public key as DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }

    /// SHA-256 of the public key, lowercase hex: a XenoServer's id.
    pub fn fingerprint(&self) -> String {
        key_fingerprint(&self.public_key_der)
    }

    /// Signs `bytes`.
    pub fn sign(&self, bytes: &[u8]) -> Result<Signature, SigningError> {
        let value = match &self.inner {
            Inner::Ed25519(pair) => pair.sign(bytes).as_ref().to_vec(),
            Inner::Ecdsa(pair) => pair
                .sign(&SystemRandom::new(), bytes)
                .map_err(|_| SigningError::SigningFailed)?
                .as_ref()
                .to_vec(),
        };
        Ok(Signature {
            algorithm: self.algorithm(),
            public_key: self.public_key_der.clone(),
            value,
        })
    }
}

/// Checks `signature` over `bytes` with the public key it carries.
pub fn verify(signature: &Signature, bytes: &[u8]) -> Result<(), SigningError> {
    let key = &signature.public_key;
    let (algorithm, raw): (&'static dyn ring_signature::VerificationAlgorithm, &[u8]) =
        if let Some(raw) = key
            .strip_prefix(ED25519_SPKI_PREFIX)
            .filter(|raw| raw.len() == 32)
        {
            if signature.algorithm != SignatureAlgorithm::Ed25519 {
                return Err(SigningError::AlgorithmMismatch(
                    signature.algorithm.as_str(),
                ));
            }
            (&ring_signature::ED25519, raw)
        } else if let Some(raw) = key
            .strip_prefix(P256_SPKI_PREFIX)
            .filter(|raw| raw.len() == 65)
        {
            if signature.algorithm != SignatureAlgorithm::EcdsaP256Sha256 {
                return Err(SigningError::AlgorithmMismatch(
                    signature.algorithm.as_str(),
                ));
            }
            (&ring_signature::ECDSA_P256_SHA256_ASN1, raw)
        } else {
            return Err(SigningError::BadPublicKey);
        };
    ring_signature::UnparsedPublicKey::new(algorithm, raw)
        .verify(bytes, &signature.value)
        .map_err(|_| SigningError::BadSignature)
}

/// The DER inside the first PEM block labelled `label`.
pub fn pem_to_der(pem: &str, label: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_algorithms_sign_and_verify() {
        for algorithm in [
            SignatureAlgorithm::Ed25519,
            SignatureAlgorithm::EcdsaP256Sha256,
        ] {
            let (key, pkcs8) = SigningKey::generate(algorithm).expect("key");
            let signature = key.sign(b"order").expect("sign");
            assert_eq!(verify(&signature, b"order"), Ok(()));
            assert_eq!(
                verify(&signature, b"orders"),
                Err(SigningError::BadSignature)
            );
            let reloaded = SigningKey::from_pkcs8_der(&pkcs8).expect("reload");
            assert_eq!(reloaded.fingerprint(), key.fingerprint());
            let mut tampered = signature.clone();
            tampered.public_key[5] ^= 1;
            assert!(verify(&tampered, b"order").is_err());
        }
    }

    #[test]
    fn a_signature_cannot_claim_another_algorithm() {
        let (key, _) = SigningKey::generate(SignatureAlgorithm::Ed25519).expect("key");
        let mut signature = key.sign(b"x").expect("sign");
        signature.algorithm = SignatureAlgorithm::EcdsaP256Sha256;
        assert_eq!(
            verify(&signature, b"x"),
            Err(SigningError::AlgorithmMismatch("ECDSA-P256-SHA256"))
        );
    }
}
