//! Opening gRPC channels the way every party on the platform does: TLS to a peer whose
//! certificate chains to a trusted corp CA, presenting our own corp-issued certificate when we
//! have one (mutual TLS).

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

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

/// Why a channel could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The address is not a valid endpoint.
    #[error("bad endpoint {endpoint:?}: {reason}")]
    BadEndpoint {
        /// The endpoint given.
        endpoint: String,
        /// Why.
        reason: String,
    },
    /// Connecting or the TLS handshake failed.
    #[error("cannot connect to {endpoint}: {reason}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

/// A TLS endpoint for `address` (`host:port` or `https://host:port`), trusting `ca_pem` and
/// presenting `credentials` if given. Connects lazily.
pub fn endpoint(
    address: &str,
    ca_pem: &str,
    credentials: Option<&Credentials>,
) -> Result<Endpoint, TransportError> {
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("https://{address}")
    };
    let bad = |reason: String| TransportError::BadEndpoint {
        endpoint: address.to_owned(),
        reason,
    };
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem));
    if let Some(credentials) = credentials {
        tls = tls.identity(Identity::from_pem(
            &credentials.certificate_pem,
            &credentials.key_pem,
        ));
    }
    Channel::from_shared(url)
        .map_err(|error| bad(error.to_string()))?
        .tls_config(tls)
        .map_err(|error| bad(error.to_string()))
        .map(|endpoint| endpoint.connect_timeout(std::time::Duration::from_secs(10)))
}

/// Connects now (so that errors surface here rather than on the first call).
pub async fn connect(
    address: &str,
    ca_pem: &str,
    credentials: Option<&Credentials>,
) -> Result<Channel, TransportError> {
    endpoint(address, ca_pem, credentials)?
        .connect()
        .await
        .map_err(|error| TransportError::Connect {
            endpoint: address.to_owned(),
            reason: describe(&error),
        })
}

/// An error with its causes, for messages.
fn describe(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The connections a listener accepts, ready for a gRPC server: Nagle's algorithm off, so that
/// small responses are not held back waiting for the peer's delayed acknowledgement (which shows
/// as ~40 ms tail latencies on request/response traffic).
pub fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}
