//! How a certificate names the party that holds it: the platform's identity format.
//!
//! A corp certifies every key it knows and writes the holder's *role and identity* into the
//! certificate as a URI subject alternative name, never as a host name:
//!
//! - the corp itself: `urn:xenoserve:{corp}:corp`;
//! - a XenoServer: `urn:xenoserve:{corp}:server:{server_id}`, where the server id is the SHA-256
//!   fingerprint of the certified key (so the name is self-certifying: [`key_fingerprint`]);
//! - a client: `urn:xenoserve:{corp}:client:{account}`.
//!
//! Peers are authenticated by these, and by the corp CA that signed them (pinned by whoever
//! connects), not by host names: a server's certificate names no host at all, so it can never
//! pass for the corp's endpoint or another server's.
//!
//! ```
//! use xeno_schemas::identity::{Party, Role};
//!
//! let party = Party::from_uri("urn:xenoserve:corp-a:server:ab12").unwrap();
//! assert_eq!(party.corp, "corp-a");
//! assert_eq!(party.role, Role::Server("ab12".to_owned()));
//! assert_eq!(party.uri(), "urn:xenoserve:corp-a:server:ab12");
//! assert!(Party::from_uri("urn:xenoserve:corp-a:janitor:x").is_none());
//! ```

pub use crate::documents::key_fingerprint;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

const URN_PREFIX: &str = "urn:xenoserve:";

/// What a certified party is, with its identity within its corp.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// The corp itself (its own TLS endpoints).
    Corp,
    /// A XenoServer, by its id (its key's fingerprint).
    Server(String),
    /// A client, by its account (`corp-a:c-3`).
    Client(String),
}

/// A party as its certificate names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Party {
    /// The corp that certified it.
    pub corp: String,
    /// Its role and identity.
    pub role: Role,
}

impl Party {
    /// The corp `corp`.
    pub fn corp(corp: &str) -> Party {
        Party {
            corp: corp.to_owned(),
            role: Role::Corp,
        }
    }

    /// The server `server_id`, certified by `corp`.
    pub fn server(corp: &str, server_id: &str) -> Party {
        Party {
            corp: corp.to_owned(),
            role: Role::Server(server_id.to_owned()),
        }
    }

    /// The client `account`, certified by `corp`.
    pub fn client(corp: &str, account: &str) -> Party {
        Party {
            corp: corp.to_owned(),
            role: Role::Client(account.to_owned()),
        }
    }

    /// The URI that names this party in a certificate.
    pub fn uri(&self) -> String {
        match &self.role {
            Role::Corp => format!("{URN_PREFIX}{}:corp", self.corp),
            Role::Server(id) => format!("{URN_PREFIX}{}:server:{id}", self.corp),
            Role::Client(account) => format!("{URN_PREFIX}{}:client:{account}", self.corp),
        }
    }

    /// The party a URI names, if it is one of ours.
    pub fn from_uri(uri: &str) -> Option<Party> {
        let rest = uri.strip_prefix(URN_PREFIX)?;
        let (corp, rest) = rest.split_once(':')?;
        if corp.is_empty() {
            return None;
        }
        let role = if rest == "corp" {
            Role::Corp
        } else if let Some(id) = rest.strip_prefix("server:") {
            Role::Server(id.to_owned())
        } else if let Some(account) = rest.strip_prefix("client:") {
            Role::Client(account.to_owned())
        } else {
            return None;
        };
        if matches!(&role, Role::Server(id) | Role::Client(id) if id.is_empty()) {
            return None;
        }
        Some(Party {
            corp: corp.to_owned(),
            role,
        })
    }
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.role {
            Role::Corp => write!(f, "corp {}", self.corp),
            Role::Server(id) => write!(f, "server {id} of {}", self.corp),
            Role::Client(account) => write!(f, "client {account}"),
        }
    }
}

/// What a certificate says about its holder: the party its URI names (exactly one of ours),
/// the fingerprint of the key it certifies, and its serial number (lowercase hex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certified {
    /// The party named.
    pub party: Party,
    /// SHA-256 of the certified key (DER SubjectPublicKeyInfo), lowercase hex.
    pub key_fingerprint: String,
    /// The certificate's serial number.
    pub serial_hex: String,
}

/// Reads the party a DER certificate names. The caller has already checked the certificate's
/// signature chain; this only reads what it says. A certificate naming no party, or more than
/// one, names nobody.
pub fn certified(der: &[u8]) -> Result<Certified, String> {
    let (_, certificate) = X509Certificate::from_der(der)
        .map_err(|error| format!("unreadable certificate: {error}"))?;
    let names = certificate
        .subject_alternative_name()
        .map_err(|error| format!("unreadable subject alternative names: {error}"))?;
    let mut parties = names
        .iter()
        .flat_map(|extension| extension.value.general_names.iter())
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Party::from_uri(uri),
            _ => None,
        });
    let party = parties
        .next()
        .ok_or_else(|| "the certificate names no party of the platform".to_owned())?;
    if parties.next().is_some() {
        return Err("the certificate names more than one party".to_owned());
    }
    Ok(Certified {
        party,
        key_fingerprint: key_fingerprint(certificate.tbs_certificate.subject_pki.raw),
        serial_hex: hex::encode(certificate.tbs_certificate.raw_serial()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_strangers_are_refused() {
        for party in [
            Party::corp("corp-a"),
            Party::server("corp-a", "00ff"),
            Party::client("corp-a", "corp-a:c-1"),
        ] {
            assert_eq!(Party::from_uri(&party.uri()), Some(party));
        }
        for stranger in [
            "urn:xenoserve::corp",
            "urn:xenoserve:corp-a:server:",
            "urn:xenoserve:corp-a:corpx",
            "urn:other:corp-a:corp",
            "https://corp-a/corp",
        ] {
            assert_eq!(Party::from_uri(stranger), None, "{stranger}");
        }
    }
}
