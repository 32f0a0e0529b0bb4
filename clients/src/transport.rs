//! Opening gRPC channels the way every party on the platform does: TLS to a peer that proves
//! its *role and identity*, presenting our own corp-issued certificate when we have one (mutual
//! TLS).
//!
//! A peer is authenticated by what its certificate says it is ([`xeno_schemas::identity`]), under a
//! corp CA the caller pinned, never by the host name dialled: the corp by its role, a server by
//! its id (the fingerprint of its key) as the caller chose it from the XIS, a resource
//! discovery system or the command line. So a registered server cannot pass for the corp, nor
//! for another server, whatever names its endpoint or certificate carry.
//!
//! ```no_run
//! # async fn example(ca_pem: &str, server_id: &str) -> Result<(), xeno_clients::transport::TransportError> {
//! use xeno_clients::transport::{Peer, connect};
//! // The corp, by its role under its CA.
//! let corp = connect("corp.example:7100", ca_pem, None, &Peer::corp("corp-a")).await?;
//! // The very server chosen from the XIS, by its id.
//! let server = connect("198.51.100.7:7200", ca_pem, None, &Peer::Server(server_id.to_owned())).await?;
//! # Ok(()) }
//! ```

use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};
use xeno_schemas::identity::{Party, Role, certified};

/// How long connecting (TCP and the TLS handshake) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A party's credentials: its certificate and private key (PEM), as issued by a corp.
#[derive(Clone)]
pub struct Credentials {
    /// Certificate chain, PEM.
    pub certificate_pem: String,
    /// Private key, PEM (PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").finish_non_exhaustive()
    }
}

/// Who the peer must prove to be, beyond holding a certificate from the pinned CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// A corp: its certificate carries the corp role, for this corp id when one is given.
    Corp(Option<String>),
    /// The server with this id: its certificate carries the server role for this id and
    /// certifies the key whose fingerprint is the id.
    Server(String),
    /// Whichever server the CA certified (to read a server's status before choosing it; the
    /// id it proved is in [`Proved`]).
    AnyServer,
}

impl Peer {
    /// The corp `corp_id`.
    pub fn corp(corp_id: &str) -> Peer {
        Peer::Corp(Some(corp_id.to_owned()))
    }

    /// Whether `certificate` (already chained to the CA) proves this peer; the party it names.
    pub fn check(&self, certificate: &[u8]) -> Result<Party, String> {
        let certified = certified(certificate)?;
        let party = certified.party;
        match (self, &party.role) {
            (Peer::Corp(None), Role::Corp) => Ok(party),
            (Peer::Corp(Some(corp)), Role::Corp) if *corp == party.corp => Ok(party),
            (Peer::Corp(Some(corp)), Role::Corp) => {
                Err(format!("the peer is the corp {}, not {corp}", party.corp))
            }
            (Peer::Corp(_), _) => Err(format!("the peer is {party}, not a corp")),
            (Peer::Server(_) | Peer::AnyServer, Role::Server(id))
                if *id != certified.key_fingerprint =>
            {
                Err(format!(
                    "the certificate names server {id} but certifies the key {}",
                    certified.key_fingerprint
                ))
            }
            (Peer::AnyServer, Role::Server(_)) => Ok(party),
            (Peer::Server(wanted), Role::Server(id)) if wanted == id => Ok(party),
            (Peer::Server(wanted), Role::Server(id)) => {
                Err(format!("the peer is server {id}, not {wanted}"))
            }
            (Peer::Server(_) | Peer::AnyServer, _) => {
                Err(format!("the peer is {party}, not a server"))
            }
        }
    }
}

/// The party the peer proved to be, once a connection has been made (shared with the
/// channel's connector, which fills it in at every handshake).
#[derive(Debug, Clone, Default)]
pub struct Proved(Arc<Mutex<Option<Party>>>);

impl Proved {
    /// The party proved by the latest handshake.
    pub fn party(&self) -> Option<Party> {
        self.0.lock().ok().and_then(|party| party.clone())
    }

    fn set(&self, party: Party) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(party);
        }
    }
}

/// Why a channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The address or credentials are not usable.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Connecting or the TLS handshake failed (including a peer that is not who it must be).
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// Checks the peer's certificate chain against the pinned CA (for TLS server authentication,
/// at the current time), then that it proves the expected [`Peer`]; the host name dialled plays
/// no part.
#[derive(Debug)]
struct PeerVerifier {
    roots: Arc<RootCertStore>,
    expected: Peer,
    proved: Proved,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PeerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        let party = self.expected.check(end_entity.as_ref()).map_err(|reason| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(WrongPeer(reason)),
            )))
        })?;
        self.proved.set(party);
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The peer is not who the caller asked for.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct WrongPeer(String);

/// A channel to `address` (`host:port`, `[v6]:port` or `https://host:port`) whose peer must
/// prove to be `peer` under the CA `ca_pem`, presenting `credentials` if given. Connects
/// lazily (on the first call, and again after the connection breaks); [`Proved`] says who
/// answered.
pub fn channel(
    address: &str,
    ca_pem: &str,
    credentials: Option<&Credentials>,
    peer: &Peer,
) -> Result<(Channel, Proved), TransportError> {
    let (endpoint, connector, proved) = prepare(address, ca_pem, credentials, peer)?;
    Ok((endpoint.connect_with_connector_lazy(connector), proved))
}

/// Connects now (so that errors, a wrong peer among them, surface here rather than on the
/// first call).
pub async fn connect(
    address: &str,
    ca_pem: &str,
    credentials: Option<&Credentials>,
    peer: &Peer,
) -> Result<Channel, TransportError> {
    connect_proved(address, ca_pem, credentials, peer)
        .await
        .map(|(channel, _)| channel)
}

/// [`connect`], also returning who answered.
pub async fn connect_proved(
    address: &str,
    ca_pem: &str,
    credentials: Option<&Credentials>,
    peer: &Peer,
) -> Result<(Channel, Proved), TransportError> {
    let (endpoint, connector, proved) = prepare(address, ca_pem, credentials, peer)?;
    let channel = endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|error| TransportError::Connect {
            endpoint: address.to_owned(),
            reason: describe(&error),
        })?;
    Ok((channel, proved))
}

/// The TLS client configuration for `peer`: the pinned CA, our credentials, HTTP/2.
fn client_config(
    ca_pem: &str,
    credentials: Option<&Credentials>,
    peer: &Peer,
    proved: &Proved,
) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    let mut anchors = 0;
    for certificate in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        let certificate = certificate.map_err(|error| format!("the CA certificate: {error}"))?;
        roots
            .add(certificate)
            .map_err(|error| format!("the CA certificate: {error}"))?;
        anchors += 1;
    }
    if anchors == 0 {
        return Err("the CA certificate is not PEM".to_owned());
    }
    let verifier = Arc::new(PeerVerifier {
        roots: Arc::new(roots),
        expected: peer.clone(),
        proved: proved.clone(),
        provider: Arc::clone(&provider),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match credentials {
        None => builder.with_no_client_auth(),
        Some(credentials) => {
            let chain = rustls_pemfile::certs(&mut credentials.certificate_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| format!("our certificate: {error}"))?;
            let key = rustls_pemfile::private_key(&mut credentials.key_pem.as_bytes())
                .map_err(|error| format!("our key: {error}"))?
                .ok_or_else(|| "our key is not PEM".to_owned())?;
            builder
                .with_client_auth_cert(chain, PrivateKeyDer::clone_key(&key))
                .map_err(|error| format!("our credentials: {error}"))?
        }
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

type Connector = tower::util::BoxService<Uri, TokioIo<Stream>, std::io::Error>;
type Stream = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

fn prepare(
    address: &str,
    ca_pem: &str,
    credentials: Option<&Credentials>,
    peer: &Peer,
) -> Result<(Endpoint, Connector, Proved), TransportError> {
    let bad = |reason: String| TransportError::BadEndpoint {
        endpoint: address.to_owned(),
        reason,
    };
    let authority = address
        .strip_prefix("https://")
        .unwrap_or(address)
        .trim_end_matches('/');
    if authority.contains("://") || authority.contains('/') {
        return Err(bad("expected host:port or https://host:port".to_owned()));
    }
    // The TLS layer is ours (the connector below), so the channel itself speaks plain HTTP/2
    // over it.
    let endpoint = Endpoint::from_shared(format!("http://{authority}"))
        .map_err(|error| bad(error.to_string()))?
        .connect_timeout(CONNECT_TIMEOUT);
    let uri = endpoint.uri().clone();
    let host = uri
        .host()
        .map(|host| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .ok_or_else(|| bad("no host".to_owned()))?;
    let port = uri.port_u16().ok_or_else(|| bad("no port".to_owned()))?;
    let server_name = ServerName::try_from(host.clone())
        .map_err(|error| bad(format!("host {host:?}: {error}")))?;
    let proved = Proved::default();
    let config = client_config(ca_pem, credentials, peer, &proved).map_err(bad)?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config));
    let connector = tower::service_fn(move |_: Uri| {
        let tls = tls.clone();
        let host = host.clone();
        let server_name = server_name.clone();
        async move {
            let connecting = async {
                let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                tcp.set_nodelay(true)?;
                tls.connect(server_name, tcp).await
            };
            let stream = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
                .await
                .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))??;
            Ok(TokioIo::new(stream))
        }
    });
    Ok((endpoint, tower::util::BoxService::new(connector), proved))
}

/// An error with its causes, for messages.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
