//! Who is calling: the corp and account named in the caller's certificate. The TLS layer has
//! checked that the certificate chains to one of our corps' CAs; here we also check that it was
//! issued by the very corp it claims (its URI names the corp), so one corp cannot mint
//! identities in another's name.

use std::collections::HashMap;
use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, X509Certificate};
use xeno_schemas::identity::{Party, Role};

/// A client as this server knows it: its corp and its account there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId {
    /// The corp.
    pub corp: String,
    /// The account at that corp (`corp-a:c-3`).
    pub account: String,
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.account)
    }
}

/// The corps' CA public keys, by corp id, and the certificate serials they have revoked.
#[derive(Debug, Default)]
pub struct TrustedCorps {
    keys: HashMap<String, Vec<u8>>,
    revoked: std::sync::RwLock<HashMap<String, std::collections::HashSet<String>>>,
}

impl TrustedCorps {
    /// Trusts `corp`, whose CA certificate is `ca_pem`.
    pub fn add(&mut self, corp: &str, ca_pem: &str) -> anyhow::Result<()> {
        let der = xeno_schemas::signing::pem_to_der(ca_pem, "CERTIFICATE")
            .ok_or_else(|| anyhow::anyhow!("the CA certificate of {corp} is not PEM"))?;
        let (_, certificate) = X509Certificate::from_der(&der)
            .map_err(|error| anyhow::anyhow!("the CA certificate of {corp}: {error}"))?;
        self.keys.insert(
            corp.to_owned(),
            certificate.tbs_certificate.subject_pki.raw.to_vec(),
        );
        Ok(())
    }

    /// Whether `corp` is one of ours.
    pub fn contains(&self, corp: &str) -> bool {
        self.keys.contains_key(corp)
    }

    /// Replaces `corp`'s list of revoked serials (lowercase hex), as its GetTrustInfo gives it.
    pub fn set_revoked(&self, corp: &str, serials: impl IntoIterator<Item = String>) {
        if let Ok(mut revoked) = self.revoked.write() {
            revoked.insert(corp.to_owned(), serials.into_iter().collect());
        }
    }

    /// The caller of `request`, as a client.
    pub fn client<T>(&self, request: &Request<T>) -> Result<ClientId, Status> {
        let certificates = request.peer_certs().ok_or_else(|| {
            Status::unauthenticated(
                "a client certificate from a corp this server works with is required",
            )
        })?;
        let leaf = certificates
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        self.client_from_der(leaf.as_ref())
    }

    fn client_from_der(&self, der: &[u8]) -> Result<ClientId, Status> {
        let (_, certificate) = X509Certificate::from_der(der)
            .map_err(|_| Status::unauthenticated("unreadable client certificate"))?;
        let certified = xeno_schemas::identity::certified(der)
            .map_err(|reason| Status::permission_denied(format!("the certificate: {reason}")))?;
        let (corp, account) = match certified.party {
            Party {
                corp,
                role: Role::Client(account),
            } => (corp, account),
            other => {
                return Err(Status::permission_denied(format!(
                    "the certificate names {other}, not a client account"
                )));
            }
        };
        let key = self.keys.get(&corp).ok_or_else(|| {
            Status::permission_denied(format!("this server is not registered with {corp}"))
        })?;
        let (_, ca_key) = x509_parser::x509::SubjectPublicKeyInfo::from_der(key)
            .map_err(|_| Status::internal("bad stored CA key"))?;
        certificate.verify_signature(Some(&ca_key)).map_err(|_| {
            Status::unauthenticated(format!("the certificate was not issued by {corp}"))
        })?;
        let serial = hex::encode(certificate.tbs_certificate.raw_serial());
        let revoked = self
            .revoked
            .read()
            .map(|revoked| {
                revoked
                    .get(&corp)
                    .is_some_and(|serials| serials.contains(&serial))
            })
            .unwrap_or(false);
        if revoked {
            return Err(Status::unauthenticated(format!(
                "this certificate has been revoked by {corp}"
            )));
        }
        Ok(ClientId { corp, account })
    }
}
