//! Talking to an XIS: what environment managers (advertising), the `xeno` client and resource
//! discovery systems (lookups) call.
//!
//! ```no_run
//! # async fn example(signed: xeno_schemas::documents::ServerAdvertisement) -> Result<(), xeno_clients::xis::ClientError> {
//! use xeno_clients::xis as client;
//! let channel = client::connect("127.0.0.1:7300").await?;
//! // The environment manager, every 30 seconds, with a new version each time:
//! let stored = client::advertise(channel.clone(), &signed).await?;
//! // A client: every server offering 100 to 150 ms of CPU per second, all pages.
//! let matches = client::lookup_all(
//!     channel.clone(), "CPUmsps", client::range(Some(100.0), Some(150.0)), false, 10_000,
//! ).await?;
//! // Read one back and check it is what that server signed.
//! let advertisement = client::get_advertisement(channel, &matches[0].server_id).await?;
//! # Ok(()) }
//! ```

pub mod advertiser;
pub mod query;

use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use xeno_schemas::documents::{Document, ServerAdvertisement};
use xeno_schemas::proto::xis::v1 as pb;
use xeno_schemas::proto::xis::v1::xis_client::XisClient;

/// Largest advertisement accepted, checked before parsing: the schema's document limit for
/// every XML document of the platform (64 KiB), which the largest legal advertisement fits.
pub const ADVERTISEMENT_BYTES_MAX: usize = 64 * 1024;
const _: () = assert!(
    ADVERTISEMENT_BYTES_MAX
        == xeno_schemas::documents::advertisement::SCHEMA
            .limits
            .document_bytes_max
);

/// Most matches in one page: the contract's bound, which keeps one answer under ~200 KB.
pub const PAGE_SIZE_MAX: u32 = 1000;
/// Page size when the request leaves it 0.
pub const PAGE_SIZE_DEFAULT: u32 = 100;

/// Largest request an XIS accepts: an advertisement (64 KiB) with room for the envelope.
pub const MESSAGE_BYTES_MAX: usize = 128 * 1024;
/// Largest response an XIS sends: a full page of 1,000 matches with 256-byte values and
/// endpoints.
pub const RESPONSE_BYTES_MAX: usize = 4 * 1024 * 1024;

/// An accepted advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// The server.
    pub server_id: String,
    /// The version now stored.
    pub version: u64,
    /// How many tokens were indexed.
    pub tokens: u32,
}

/// Which values a lookup wants.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Numbers in `[min, max]`; `None` leaves that end open.
    Range {
        /// Lowest, inclusive.
        min: Option<f64>,
        /// Highest, inclusive.
        max: Option<f64>,
    },
    /// Values equal to this (numbers compare as numbers).
    Exact(String),
    /// Every value: the servers that carry the token at all.
    Any,
}

/// One match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    /// The server.
    pub server_id: String,
    /// The token's value in its advertisement.
    pub value: String,
    /// The advertisement's version.
    pub version: u64,
    /// How long ago the XIS received it, ms.
    pub age_ms: u64,
    /// Older than one TTL.
    pub stale: bool,
    /// The server's endpoint.
    pub endpoint: String,
}

/// How long a call may take before the client gives up.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address is not usable.
    #[error("bad XIS address {address:?}: {reason}")]
    BadAddress {
        /// As given.
        address: String,
        /// Why.
        reason: String,
    },
    /// Could not connect.
    #[error("cannot reach the XIS at {address}: {reason}")]
    Connect {
        /// As given.
        address: String,
        /// Why.
        reason: String,
    },
    /// The XIS refused or failed the call (the status code says which; see the proto).
    #[error("XIS: {0}")]
    Status(#[from] tonic::Status),
    /// What the XIS returned does not verify: not signed by the server it names, or not an
    /// advertisement. Complain to the server's corp.
    #[error("the advertisement returned for {server_id} does not verify: {reason}")]
    Forged {
        /// The server asked for.
        server_id: String,
        /// What is wrong.
        reason: String,
    },
    /// A lookup has more matches than the caller's limit: narrow the query.
    #[error("{token}: {total} matches, more than the limit of {limit}; narrow the query")]
    TooManyMatches {
        /// The token looked up.
        token: String,
        /// How many matched.
        total: u64,
        /// The caller's limit.
        limit: usize,
    },
}

/// An endpoint for `address` (`host:port`, `http://…` or `https://…`), connecting lazily.
/// Plain TCP unless the address says `https://` (then the system's roots are not used: pass a
/// channel built with [`crate::transport`] for TLS with a corp CA).
pub fn endpoint(address: &str) -> Result<Endpoint, ClientError> {
    let url = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    Channel::from_shared(url)
        .map(|endpoint| {
            endpoint
                .connect_timeout(Duration::from_secs(5))
                .timeout(CALL_TIMEOUT)
                .tcp_nodelay(true)
        })
        .map_err(|error| ClientError::BadAddress {
            address: address.to_owned(),
            reason: error.to_string(),
        })
}

/// Connects now, so that a wrong address surfaces here.
pub async fn connect(address: &str) -> Result<Channel, ClientError> {
    endpoint(address)?
        .connect()
        .await
        .map_err(|error| ClientError::Connect {
            address: address.to_owned(),
            reason: error.to_string(),
        })
}

fn client(channel: Channel) -> XisClient<Channel> {
    XisClient::new(channel)
        .max_decoding_message_size(RESPONSE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
}

/// Publishes a signed advertisement. Errors as the proto documents: `InvalidArgument`
/// (malformed, oversized, expired), `Unauthenticated` (signature), `FailedPrecondition`
/// (version not newer than the stored one).
pub async fn advertise(
    channel: Channel,
    advertisement: &ServerAdvertisement,
) -> Result<Advertised, ClientError> {
    advertise_xml(channel, advertisement.to_canonical()).await
}

/// Publishes a signed advertisement given as XML.
pub async fn advertise_xml(channel: Channel, xml: String) -> Result<Advertised, ClientError> {
    let response = client(channel)
        .advertise(pb::AdvertiseRequest {
            advertisement_xml: xml,
        })
        .await?
        .into_inner();
    Ok(Advertised {
        server_id: response.server_id,
        version: response.version,
        tokens: response.tokens,
    })
}

/// A numeric range for lookups (`None`: open end).
pub fn range(min: Option<f64>, max: Option<f64>) -> Option<pb::lookup_request::Values> {
    Some(pb::lookup_request::Values::Range(pb::NumericRange {
        min,
        max,
    }))
}

/// An exact value for lookups.
pub fn exact(value: impl Into<String>) -> Option<pb::lookup_request::Values> {
    Some(pb::lookup_request::Values::Exact(value.into()))
}

/// One page of a lookup, as the service answers it.
pub async fn lookup(
    channel: Channel,
    request: pb::LookupRequest,
) -> Result<pb::LookupResponse, ClientError> {
    Ok(client(channel).lookup(request).await?.into_inner())
}

/// Every match of a lookup, following cursors, refusing beyond `limit` matches.
pub async fn lookup_all(
    channel: Channel,
    token: &str,
    values: Option<pb::lookup_request::Values>,
    include_stale: bool,
    limit: usize,
) -> Result<Vec<Match>, ClientError> {
    let mut client = client(channel);
    let mut matches = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = client
            .lookup(pb::LookupRequest {
                token: token.to_owned(),
                values: values.clone(),
                page_size: PAGE_SIZE_MAX,
                cursor: cursor.clone(),
                include_stale,
            })
            .await?
            .into_inner();
        if page.total_matches > limit as u64 {
            return Err(ClientError::TooManyMatches {
                token: token.to_owned(),
                total: page.total_matches,
                limit,
            });
        }
        matches.extend(page.matches.into_iter().map(|found| Match {
            server_id: found.server_id,
            value: found.value,
            version: found.version,
            age_ms: found.age_ms,
            stale: found.stale,
            endpoint: found.endpoint,
        }));
        // Entries can move while we page; the limit also bounds the walk.
        if page.next_cursor.is_empty() || matches.len() > limit {
            return Ok(matches);
        }
        cursor = page.next_cursor;
    }
}

/// A server's advertisement as stored, checked here: parsed, signed by the key its ServerId
/// names, and the server asked for. Returns it with its XML, age (ms) and stale flag.
pub async fn get_advertisement(
    channel: Channel,
    server_id: &str,
) -> Result<(ServerAdvertisement, pb::GetAdvertisementResponse), ClientError> {
    let response = client(channel)
        .get_advertisement(pb::GetAdvertisementRequest {
            server_id: server_id.to_owned(),
        })
        .await?
        .into_inner();
    let forged = |reason: String| ClientError::Forged {
        server_id: server_id.to_owned(),
        reason,
    };
    if response.advertisement_xml.len() > ADVERTISEMENT_BYTES_MAX {
        return Err(forged("oversized".to_owned()));
    }
    let advertisement = ServerAdvertisement::parse(response.advertisement_xml.as_bytes())
        .map_err(|errors| forged(errors.to_string()))?;
    if advertisement.server_id != server_id {
        return Err(forged(format!(
            "it is the advertisement of {}",
            advertisement.server_id
        )));
    }
    advertisement
        .check_self_certified()
        .map_err(|error| forged(error.to_string()))?;
    Ok((advertisement, response))
}
