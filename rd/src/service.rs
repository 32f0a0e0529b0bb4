//! The `xenoserve.rd.v1.ResourceDiscovery` gRPC service: translates protobuf messages into a
//! [`FindRequest`] for the [`Rd`] core and its outcome back. No rule lives here.

use crate::core::{Asked, FindRequest, Host, Rd};
use std::sync::Arc;
use tonic::{Request, Response, Status};
use xeno_clients::vivaldi::Coordinates;
use xeno_schemas::documents::{Currency, Document, EnvironmentalRequirements, Money};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::rd::v1 as pb;

/// The service.
pub struct RdService {
    core: Arc<Rd>,
}

impl RdService {
    /// A service over `core`.
    pub fn new(core: Arc<Rd>) -> Self {
        RdService { core }
    }
}

fn hosts_from(hosts: Vec<pb::Host>) -> Vec<Host> {
    hosts
        .into_iter()
        .map(|host| match host.host {
            Some(pb::host::Host::Address(address)) => Host::Address(address),
            Some(pb::host::Host::Coordinates(c)) => Host::Coordinates(Coordinates {
                components: c.components,
                height: c.height,
            }),
            None => Host::Address(String::new()),
        })
        .collect()
}

fn money_from(field: &str, money: Option<common::Money>) -> Result<Option<Money>, Status> {
    money
        .map(|money| {
            let currency: Currency = money.currency.parse().map_err(|message: String| {
                Status::invalid_argument(format!("{field}.currency: {message}"))
            })?;
            Ok(Money {
                currency,
                minor: money.amount_minor,
            })
        })
        .transpose()
}

/// The core's request from a protobuf one.
pub fn request_from(request: pb::FindXenoServersRequest) -> Result<FindRequest, Status> {
    let requirements = EnvironmentalRequirements::parse(request.requirements_xml.as_bytes())
        .map_err(|errors| Status::invalid_argument(format!("requirements_xml: {errors}")))?;
    let objective = match request.objective {
        Some(pb::find_xeno_servers_request::Objective::Cheapest(cheapest)) => Asked::Cheapest {
            duration_seconds: cheapest.duration_seconds,
            budget: money_from("cheapest.budget", cheapest.budget)?,
        },
        Some(pb::find_xeno_servers_request::Objective::Near(near)) => {
            Asked::Near(hosts_from(near.hosts))
        }
        Some(pb::find_xeno_servers_request::Objective::Equidistant(equidistant)) => {
            Asked::Equidistant(hosts_from(equidistant.hosts), equidistant.tolerance_ms)
        }
        Some(pb::find_xeno_servers_request::Objective::Disjoint(disjoint)) => {
            Asked::Disjoint(disjoint.host)
        }
        None => {
            return Err(Status::invalid_argument(
                "objective: give one of cheapest, near, equidistant or disjoint",
            ));
        }
    };
    Ok(FindRequest {
        requirements,
        objective,
        max_results: request.max_results,
    })
}

#[tonic::async_trait]
impl pb::resource_discovery_server::ResourceDiscovery for RdService {
    async fn find_xeno_servers(
        &self,
        request: Request<pb::FindXenoServersRequest>,
    ) -> Result<Response<pb::FindXenoServersResponse>, Status> {
        let request = request_from(request.into_inner())?;
        let core = Arc::clone(&self.core);
        // Ranking walks the whole catalogue: keep it off the async workers.
        let outcome = tokio::task::spawn_blocking(move || core.find(&request))
            .await
            .map_err(|_| Status::internal("the ranking task failed"))??;
        Ok(Response::new(pb::FindXenoServersResponse {
            candidates: outcome.candidates,
            suggestions: outcome
                .ranked
                .into_iter()
                .map(|ranked| pb::Suggestion {
                    server_id: ranked.server.id.clone(),
                    endpoint: ranked.server.endpoint.clone(),
                    advertisement_xml: ranked.server.xml.to_string(),
                    estimated_cost: ranked.cost.map(|cost| common::Money {
                        currency: cost.currency.to_string(),
                        amount_minor: cost.minor,
                    }),
                    estimated_latency_ms: ranked.latencies_ms,
                    score: ranked.score,
                    pair_with: ranked.pair_with.and_then(|p| u32::try_from(p).ok()),
                })
                .collect(),
        }))
    }
}
