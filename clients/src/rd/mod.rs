//! Asking a resource discovery system: what the `xeno` client (and `xeno dev`) calls.
//!
//! [`find_xeno_servers`] sends a [`FindRequest`] (the same type the RD core takes) and returns the
//! ranked suggestions with each server's advertisement parsed and its signature checked here,
//! so the caller can trust the price sheet, load and location it shows, then ask a suggested
//! server directly for a spot price.
//!
//! ```no_run
//! # async fn example() -> Result<(), xeno_clients::rd::RdClientError> {
//! use xeno_clients::rd::{self as client, Asked, FindRequest};
//! use xeno_schemas::documents::{EnvironmentalRequirements, Money};
//! let channel = client::connect("127.0.0.1:7400").await?;
//! let answer = client::find_xeno_servers(channel, &FindRequest {
//!     requirements: EnvironmentalRequirements::new("job", "Wasm"),
//!     objective: Asked::Cheapest {
//!         duration_seconds: 3600,
//!         budget: Some(Money { currency: "GBP".parse().expect("currency"), minor: 1000 }),
//!     },
//!     max_results: 5,
//! }).await?;
//! for suggestion in &answer.suggestions {
//!     println!("{} {:?}", suggestion.advertisement.endpoint, suggestion.estimated_cost);
//! }
//! # Ok(()) }
//! ```

use crate::vivaldi::Coordinates;
use crate::xis::ClientError;
use tonic::transport::Channel;
use xeno_schemas::documents::{Document, EnvironmentalRequirements, Money, ServerAdvertisement};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::rd::v1 as pb;
use xeno_schemas::proto::rd::v1::resource_discovery_client::ResourceDiscoveryClient;

/// Most suggestions in one answer (the contract's bound).
pub const MAX_RESULTS_MAX: u32 = 100;
/// Suggestions when the request asks for 0.
pub const MAX_RESULTS_DEFAULT: u32 = 10;
/// Most hosts in one request: each costs a distance per candidate.
pub const HOSTS_PER_REQUEST_MAX: usize = 16;
/// Largest request an RD system accepts: a requirements document (64 KiB) and hosts.
pub const MESSAGE_BYTES_MAX: usize = 128 * 1024;
/// Largest response an RD system sends: 100 suggestions with their advertisements (64 KiB
/// each at most).
pub const RESPONSE_BYTES_MAX: usize = 8 * 1024 * 1024;

/// A host the client cares about.
#[derive(Debug, Clone, PartialEq)]
pub enum Host {
    /// An address, resolved from the configured hosts or the catalogue.
    Address(String),
    /// Coordinates the client computed.
    Coordinates(Coordinates),
}

/// The objective as asked, before defaults.
#[derive(Debug, Clone, PartialEq)]
pub enum Asked {
    /// Cheapest for a duration within a budget (0 and `None`: the requirements' own
    /// `MaxDurationSeconds` and `MaxSpend`).
    Cheapest {
        /// Seconds.
        duration_seconds: u64,
        /// Budget.
        budget: Option<Money>,
    },
    /// Near these hosts.
    Near(Vec<Host>),
    /// Equidistant from these hosts (tolerance 0: the policy's default).
    Equidistant(Vec<Host>, f64),
    /// Disjoint paths toward this host.
    Disjoint(String),
}

/// A FindXenoServers request.
#[derive(Debug, Clone, PartialEq)]
pub struct FindRequest {
    /// What the session needs.
    pub requirements: EnvironmentalRequirements,
    /// The objective.
    pub objective: Asked,
    /// Most suggestions (0: the default).
    pub max_results: u32,
}

/// Why a FindXenoServers call failed.
#[derive(Debug, thiserror::Error)]
pub enum RdClientError {
    /// The address is unusable or the RD system unreachable.
    #[error(transparent)]
    Connect(#[from] ClientError),
    /// The RD system refused or failed the call (INVALID_ARGUMENT: the request; UNAVAILABLE:
    /// its XIS is unreachable).
    #[error("resource discovery: {0}")]
    Status(#[from] tonic::Status),
    /// A suggestion's advertisement does not verify (not signed by the server it names).
    #[error("suggestion {index} ({server_id}) does not verify: {reason}")]
    Forged {
        /// Its position in the answer.
        index: usize,
        /// The server it names.
        server_id: String,
        /// What is wrong.
        reason: String,
    },
}

/// One suggestion, its advertisement verified.
#[derive(Debug, Clone)]
pub struct Suggestion {
    /// The server's advertisement, signature checked.
    pub advertisement: ServerAdvertisement,
    /// Estimated total cost (cheapest).
    pub estimated_cost: Option<Money>,
    /// Estimated round trip to each requested host, ms, in request order.
    pub estimated_latency_ms: Vec<f64>,
    /// The objective's score; lower is better.
    pub score: f64,
    /// For disjoint: the index of the partner suggestion.
    pub pair_with: Option<usize>,
}

/// A FindXenoServers answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Best first.
    pub suggestions: Vec<Suggestion>,
    /// Servers that met the requirements before ranking.
    pub candidates: u64,
}

/// Connects to an RD system (`host:port` or a URL).
pub async fn connect(address: &str) -> Result<Channel, RdClientError> {
    Ok(crate::xis::connect(address).await?)
}

fn host_to_proto(host: &Host) -> pb::Host {
    pb::Host {
        host: Some(match host {
            Host::Address(address) => pb::host::Host::Address(address.clone()),
            Host::Coordinates(coordinates) => pb::host::Host::Coordinates(pb::Coordinates {
                components: coordinates.components.clone(),
                height: coordinates.height,
            }),
        }),
    }
}

/// The protobuf request for `request`.
pub fn to_proto(request: &FindRequest) -> pb::FindXenoServersRequest {
    use pb::find_xeno_servers_request::Objective;
    let objective = match &request.objective {
        Asked::Cheapest {
            duration_seconds,
            budget,
        } => Objective::Cheapest(pb::Cheapest {
            duration_seconds: *duration_seconds,
            budget: budget.as_ref().map(|money| common::Money {
                currency: money.currency.to_string(),
                amount_minor: money.minor,
            }),
        }),
        Asked::Near(hosts) => Objective::Near(pb::Near {
            hosts: hosts.iter().map(host_to_proto).collect(),
        }),
        Asked::Equidistant(hosts, tolerance_ms) => Objective::Equidistant(pb::Equidistant {
            hosts: hosts.iter().map(host_to_proto).collect(),
            tolerance_ms: *tolerance_ms,
        }),
        Asked::Disjoint(host) => Objective::Disjoint(pb::Disjoint { host: host.clone() }),
    };
    pb::FindXenoServersRequest {
        requirements_xml: request.requirements.to_canonical(),
        objective: Some(objective),
        max_results: request.max_results,
    }
}

fn verify(index: usize, suggestion: pb::Suggestion) -> Result<Suggestion, RdClientError> {
    let forged = |reason: String| RdClientError::Forged {
        index,
        server_id: suggestion.server_id.clone(),
        reason,
    };
    let advertisement = ServerAdvertisement::parse(suggestion.advertisement_xml.as_bytes())
        .map_err(|errors| forged(errors.to_string()))?;
    if advertisement.server_id != suggestion.server_id {
        return Err(forged(format!(
            "it carries the advertisement of {}",
            advertisement.server_id
        )));
    }
    advertisement.check_self_certified().map_err(forged)?;
    let estimated_cost = suggestion
        .estimated_cost
        .map(|money| {
            money
                .currency
                .parse()
                .map(|currency| Money {
                    currency,
                    minor: money.amount_minor,
                })
                .map_err(|message: String| forged(format!("estimated_cost: {message}")))
        })
        .transpose()?;
    Ok(Suggestion {
        advertisement,
        estimated_cost,
        estimated_latency_ms: suggestion.estimated_latency_ms,
        score: suggestion.score,
        pair_with: suggestion.pair_with.map(|p| p as usize),
    })
}

/// Asks the RD system for servers; every suggestion's advertisement is checked.
pub async fn find_xeno_servers(
    channel: Channel,
    request: &FindRequest,
) -> Result<Answer, RdClientError> {
    let response = ResourceDiscoveryClient::new(channel)
        .max_decoding_message_size(RESPONSE_BYTES_MAX)
        .max_encoding_message_size(MESSAGE_BYTES_MAX)
        .find_xeno_servers(to_proto(request))
        .await?
        .into_inner();
    let suggestions = response
        .suggestions
        .into_iter()
        .enumerate()
        .map(|(index, suggestion)| verify(index, suggestion))
        .collect::<Result<_, _>>()?;
    Ok(Answer {
        suggestions,
        candidates: response.candidates,
    })
}
