//! The corp's certificate authority: it certifies the keys of clients and servers (from their
//! certificate signing requests: private keys never leave their owners), issues the corp's own
//! TLS certificate, and signs purchase orders with the same key.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};
use std::path::Path;
use time::{Duration, OffsetDateTime};
use xeno_schemas::signing::{SigningKey, pem_to_der};

/// What a certificate is for: a client calls servers and the corp; a server also serves clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertificateRole {
    /// TLS client authentication only.
    Client,
    /// TLS client and server authentication.
    Server,
}

/// A certificate signing request whose signature has been checked (proving that the requester
/// holds the private key).
pub struct Csr {
    params: CertificateSigningRequestParams,
    public_key_der: Vec<u8>,
}

impl Csr {
    /// Parses a PEM PKCS#10 request and checks its signature.
    pub fn parse(pem: &str) -> Result<Csr, String> {
        if pem.len() > CSR_BYTES_MAX {
            return Err(format!(
                "the certificate signing request is over {CSR_BYTES_MAX} bytes"
            ));
        }
        let params = CertificateSigningRequestParams::from_pem(pem)
            .map_err(|error| format!("unusable certificate signing request: {error}"))?;
        let public_key_der = params.public_key.subject_public_key_info();
        Ok(Csr {
            params,
            public_key_der,
        })
    }

    /// The requester's public key, DER SubjectPublicKeyInfo.
    pub fn public_key_der(&self) -> &[u8] {
        &self.public_key_der
    }
}

/// A certificate to issue.
#[derive(Debug, Clone)]
pub struct CertificateRequest<'a> {
    /// The subject's common name.
    pub common_name: &'a str,
    /// URIs naming the account (`urn:xenoserve:corp-a:client:corp-a:c-1`).
    pub uris: Vec<String>,
    /// DNS names and IP addresses, for servers.
    pub hosts: Vec<String>,
    /// Client or server.
    pub role: CertificateRole,
    /// The serial number, lowercase hex, chosen by the caller (so it can be recorded first).
    pub serial_hex: &'a str,
    /// Validity.
    pub lifetime: Duration,
}

/// A certificate that was issued.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The certified public key, DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
}

/// The corp's CA: its key pair and self-signed certificate.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    certificate_pem: String,
    signing_key: SigningKey,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("signing_key", &self.signing_key)
            .finish_non_exhaustive()
    }
}

const CA_KEY_FILE: &str = "ca-key.pem";
const CA_CERT_FILE: &str = "ca-cert.pem";

/// How far behind the corp's a party's clock may be and still accept a certificate the corp
/// has just issued.
pub const CLOCK_SKEW_TOLERANCE: Duration = Duration::days(1);

/// Most bytes of a CSR we accept: a P-256 or Ed25519 request is under 1 KiB; RSA-4096 under 4.
pub const CSR_BYTES_MAX: usize = 16 * 1024;

impl CertificateAuthority {
    /// Loads the CA from `data_dir`, creating it on first use.
    pub fn load_or_create(data_dir: &Path, corp_id: &str) -> anyhow::Result<Self> {
        let key_path = data_dir.join(CA_KEY_FILE);
        let cert_path = data_dir.join(CA_CERT_FILE);
        if key_path.exists() {
            let key_pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("reading {}", key_path.display()))?;
            let cert_pem = std::fs::read_to_string(&cert_path)
                .with_context(|| format!("reading {}", cert_path.display()))?;
            return Self::from_pem(&key_pem, &cert_pem);
        }
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, format!("XenoCorp {corp_id} CA"));
        name.push(DnType::OrganizationName, corp_id);
        params.distinguished_name = name;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(3650);
        let certificate = params
            .self_signed(&key)
            .context("self-signing the CA certificate")?;
        write_private(&key_path, &key.serialize_pem())?;
        std::fs::write(&cert_path, certificate.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        Self::from_pem(&key.serialize_pem(), &certificate.pem())
    }

    fn from_pem(key_pem: &str, cert_pem: &str) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem).context("reading the CA key")?;
        let pkcs8 = pem_to_der(key_pem, "PRIVATE KEY").context("the CA key is not PKCS#8 PEM")?;
        let signing_key =
            SigningKey::from_pkcs8_der(&pkcs8).context("loading the CA key for signing")?;
        let issuer =
            Issuer::from_ca_cert_pem(cert_pem, key).context("reading the CA certificate")?;
        Ok(CertificateAuthority {
            issuer,
            certificate_pem: cert_pem.to_owned(),
            signing_key,
        })
    }

    /// The CA certificate, PEM: what clients and servers trust.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// The key that signs purchase orders (the CA's own).
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// Certifies the key of a checked CSR. The subject and extensions are the corp's choice;
    /// whatever the CSR asked for is ignored.
    pub fn issue(
        &self,
        csr: &Csr,
        request: &CertificateRequest<'_>,
    ) -> Result<IssuedCertificate, String> {
        let params = leaf_params(request)?;
        let certificate = params
            .signed_by(&csr.params.public_key, &self.issuer)
            .map_err(|error| format!("cannot issue the certificate: {error}"))?;
        Ok(IssuedCertificate {
            certificate_pem: certificate.pem(),
            public_key_der: csr.public_key_der.clone(),
        })
    }

    /// A fresh key and certificate for the corp's own TLS endpoints. Returns (certificate PEM,
    /// private key PEM).
    pub fn issue_own_tls(
        &self,
        corp_id: &str,
        hosts: &[String],
    ) -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate().context("generating the TLS key")?;
        let serial = random_serial_hex();
        let request = CertificateRequest {
            common_name: corp_id,
            uris: vec![xeno_schemas::identity::Party::corp(corp_id).uri()],
            hosts: hosts.to_vec(),
            role: CertificateRole::Server,
            serial_hex: &serial,
            lifetime: Duration::days(365),
        };
        let params = leaf_params(&request).map_err(anyhow::Error::msg)?;
        let certificate = params
            .signed_by(&key, &self.issuer)
            .context("issuing the TLS certificate")?;
        Ok((certificate.pem(), key.serialize_pem()))
    }
}

fn leaf_params(request: &CertificateRequest<'_>) -> Result<CertificateParams, String> {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, request.common_name);
    params.distinguished_name = name;
    let serial = hex::decode(request.serial_hex).map_err(|_| "bad serial".to_owned())?;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = OffsetDateTime::now_utc();
    // Valid from a day back: a party whose clock is behind the corp's (by minutes, or hours)
    // must not find a fresh certificate not yet valid.
    params.not_before = now - CLOCK_SKEW_TOLERANCE;
    params.not_after = now + request.lifetime;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match request.role {
        CertificateRole::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
        CertificateRole::Server => vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ],
    };
    params.use_authority_key_identifier_extension = true;
    for uri in &request.uris {
        let uri = uri
            .clone()
            .try_into()
            .map_err(|_| format!("{uri:?} cannot go in a certificate"))?;
        params.subject_alt_names.push(SanType::URI(uri));
    }
    for host in &request.hosts {
        match host.parse::<std::net::IpAddr>() {
            Ok(address) => params.subject_alt_names.push(SanType::IpAddress(address)),
            Err(_) => {
                let name = host
                    .clone()
                    .try_into()
                    .map_err(|_| format!("{host:?} is not a host name"))?;
                params.subject_alt_names.push(SanType::DnsName(name));
            }
        }
    }
    Ok(params)
}

/// A random positive 128-bit serial number, lowercase hex.
pub fn random_serial_hex() -> String {
    let mut bytes: [u8; 16] = rand::random();
    // Positive, and no leading zero byte that DER would strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    hex::encode(bytes)
}

/// The serial number (lowercase hex) of a DER certificate.
///
/// Every authenticated request needs it, so it walks only the few DER headers in front of the
/// serial (Certificate ▸ TBSCertificate ▸ [0] version ▸ serialNumber) instead of parsing the
/// whole certificate. The TLS layer has already verified the certificate.
pub fn certificate_serial(der: &[u8]) -> Option<String> {
    /// Splits one DER element off `input`: (tag, contents, rest).
    fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
        let (&tag, rest) = input.split_first()?;
        let (&first, rest) = rest.split_first()?;
        let (length, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let count = usize::from(first & 0x7f);
            if count == 0 || count > 4 || rest.len() < count {
                return None;
            }
            let length = rest[..count]
                .iter()
                .fold(0usize, |acc, byte| (acc << 8) | usize::from(*byte));
            (length, &rest[count..])
        };
        (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
    }
    const SEQUENCE: u8 = 0x30;
    const VERSION: u8 = 0xa0;
    const INTEGER: u8 = 0x02;
    let (SEQUENCE, certificate, _) = element(der)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = element(certificate)? else {
        return None;
    };
    let (tag, contents, rest) = element(tbs)?;
    let (tag, serial) = if tag == VERSION {
        element(rest).map(|(tag, serial, _)| (tag, serial))?
    } else {
        (tag, contents)
    };
    (tag == INTEGER).then(|| hex::encode(serial))
}

/// Writes a file only its owner can read.
pub fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_certificates_for_csrs_and_keeps_its_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = CertificateAuthority::load_or_create(dir.path(), "corp-t").expect("ca");
        let (_key, csr) = xeno_clients::identity::key_and_csr("alice").expect("csr");
        let serial = random_serial_hex();
        let csr = Csr::parse(&csr).expect("csr parses");
        let issued = ca
            .issue(
                &csr,
                &CertificateRequest {
                    common_name: "alice",
                    uris: vec!["urn:xenoserve:corp-t:client:corp-t:c-1".to_owned()],
                    hosts: vec![],
                    role: CertificateRole::Client,
                    serial_hex: &serial,
                    lifetime: Duration::days(1),
                },
            )
            .expect("issue");
        let der = pem_to_der(&issued.certificate_pem, "CERTIFICATE").expect("pem");
        assert_eq!(certificate_serial(&der), Some(serial.clone()));
        let (_, parsed) = x509_parser::parse_x509_certificate(&der).expect("x509");
        assert_eq!(
            hex::encode(parsed.tbs_certificate.raw_serial()),
            serial,
            "the fast path agrees with a full parse"
        );
        assert_eq!(certificate_serial(&der[..40]), None);
        let again = CertificateAuthority::load_or_create(dir.path(), "corp-t").expect("reload");
        assert_eq!(
            again.signing_key().fingerprint(),
            ca.signing_key().fingerprint()
        );
        let bad = Csr::parse(
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----",
        );
        assert!(
            bad.err()
                .expect("bad csr")
                .contains("unusable certificate signing request")
        );
    }
}
