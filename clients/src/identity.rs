//! The key pair and certificate signing request a XenoServer or a client makes before it
//! registers with a corp: the corp signs the request; the key never leaves its maker.

use anyhow::Context;
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

/// A fresh key pair and a CSR naming `common_name`: (private key as PKCS#8 PEM, CSR PEM).
pub fn key_and_csr(common_name: &str) -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating a key pair")?;
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    let csr = params
        .serialize_request(&key)
        .context("making the certificate signing request")?;
    Ok((key.serialize_pem(), csr.pem()?))
}
