//! The RD core: checks a request against this system's policy, resolves its hosts and
//! defaults, and runs [`crate::matching`] on the current catalogue snapshot.

use crate::catalogue::Catalogue;
use crate::config::{Config, ObjectiveKind};
use crate::error::RdError;
use crate::matching::{self, Objective, Outcome, Ranking};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
pub use xeno_clients::rd::{Asked, FindRequest, Host};
use xeno_clients::rd::{HOSTS_PER_REQUEST_MAX, MAX_RESULTS_DEFAULT, MAX_RESULTS_MAX};
use xeno_clients::vivaldi::Coordinates;
use xeno_schemas::clock::now_unix_ms as now_ms;

/// The RD system.
pub struct Rd {
    catalogue: Arc<Catalogue>,
    ranking: Ranking,
    objectives: HashSet<ObjectiveKind>,
    hosts: BTreeMap<String, Coordinates>,
    equidistant_tolerance_ms: f64,
    unavailable_after_ms: u64,
}

fn invalid(message: impl Into<String>) -> RdError {
    RdError::InvalidArgument(message.into())
}

impl Rd {
    /// A core over `catalogue` with `config`'s policy.
    pub fn new(catalogue: Arc<Catalogue>, config: &Config) -> Rd {
        Rd {
            catalogue,
            ranking: Ranking {
                stale_after_ms: config.stale_after_seconds * 1000,
                load_weight: config.ranking.load_weight,
                coordinate_error_max: config.ranking.coordinate_error_max,
                sponsored: config.ranking.sponsored.iter().cloned().collect(),
                sponsored_discount: config.ranking.sponsored_discount,
            },
            objectives: config.ranking.objectives.iter().copied().collect(),
            hosts: config
                .hosts
                .iter()
                .map(|(address, host)| {
                    (
                        address.clone(),
                        Coordinates {
                            components: host.components.clone(),
                            height: host.height,
                        },
                    )
                })
                .collect(),
            equidistant_tolerance_ms: config.ranking.equidistant_tolerance_ms,
            unavailable_after_ms: config.unavailable_after_seconds * 1000,
        }
    }

    /// The catalogue.
    pub fn catalogue(&self) -> &Arc<Catalogue> {
        &self.catalogue
    }

    fn resolve(
        &self,
        hosts: &[Host],
        snapshot: &crate::catalogue::Snapshot,
        at_least: usize,
    ) -> Result<Vec<Coordinates>, RdError> {
        if hosts.len() < at_least || hosts.len() > HOSTS_PER_REQUEST_MAX {
            return Err(invalid(format!(
                "hosts: give {at_least} to {HOSTS_PER_REQUEST_MAX} hosts"
            )));
        }
        hosts
            .iter()
            .enumerate()
            .map(|(index, host)| match host {
                Host::Coordinates(coordinates) => {
                    if (2..=8).contains(&coordinates.components.len())
                        && coordinates.components.iter().chain([&coordinates.height]).all(|c| c.is_finite())
                    {
                        Ok(coordinates.clone())
                    } else {
                        Err(invalid(format!("hosts[{index}]: coordinates need 2 to 8 finite components")))
                    }
                }
                Host::Address(address) => self
                    .hosts
                    .get(address)
                    .cloned()
                    .or_else(|| {
                        let view = snapshot.named(address)?;
                        view.coordinates.as_ref().map(|(c, _)| c.clone())
                    })
                    .ok_or_else(|| {
                        invalid(format!(
                            "hosts[{index}]: cannot estimate latency to {address:?}: give its coordinates, or configure it under [hosts]"
                        ))
                    }),
            })
            .collect()
    }

    fn check_offered(&self, kind: ObjectiveKind) -> Result<(), RdError> {
        if self.objectives.contains(&kind) {
            Ok(())
        } else {
            Err(invalid(format!(
                "this resource discovery system does not offer the {kind:?} objective"
            )))
        }
    }

    /// Answers a FindXenoServers request.
    pub fn find(&self, request: &FindRequest) -> Result<Outcome, RdError> {
        let max_results = match request.max_results {
            0 => MAX_RESULTS_DEFAULT,
            n if n <= MAX_RESULTS_MAX => n,
            n => {
                return Err(invalid(format!(
                    "max_results {n} is over the limit of {MAX_RESULTS_MAX}"
                )));
            }
        } as usize;
        let now = now_ms();
        match self.catalogue.last_sync_ok_ms() {
            Some(at) if now.saturating_sub(at) <= self.unavailable_after_ms => {}
            Some(at) => {
                return Err(RdError::Unavailable(format!(
                    "the XIS has not been reachable for {} s",
                    now.saturating_sub(at) / 1000
                )));
            }
            None => {
                return Err(RdError::Unavailable(
                    "the XIS has not been reached yet".to_owned(),
                ));
            }
        }
        let snapshot = self.catalogue.snapshot();
        let requirements = &request.requirements;
        let objective = match &request.objective {
            Asked::Cheapest {
                duration_seconds,
                budget,
            } => {
                self.check_offered(ObjectiveKind::Cheapest)?;
                let duration_seconds = match (*duration_seconds, requirements.max_duration_seconds)
                {
                    (0, Some(max)) => max,
                    (0, None) => {
                        return Err(invalid(
                            "cheapest.duration_seconds: give a duration (or MaxDurationSeconds in the requirements)",
                        ));
                    }
                    (seconds, _) => seconds,
                };
                let budget = budget.or(requirements.max_spend).ok_or_else(|| {
                    invalid("cheapest.budget: give a budget (or MaxSpend in the requirements)")
                })?;
                Objective::Cheapest {
                    duration_seconds,
                    budget,
                }
            }
            Asked::Near(hosts) => {
                self.check_offered(ObjectiveKind::Near)?;
                Objective::Near {
                    hosts: self.resolve(hosts, &snapshot, 1)?,
                }
            }
            Asked::Equidistant(hosts, tolerance_ms) => {
                self.check_offered(ObjectiveKind::Equidistant)?;
                if !(tolerance_ms.is_finite() && *tolerance_ms >= 0.0) {
                    return Err(invalid(
                        "equidistant.tolerance_ms must be a non-negative number",
                    ));
                }
                Objective::Equidistant {
                    hosts: self.resolve(hosts, &snapshot, 2)?,
                    tolerance_ms: if *tolerance_ms == 0.0 {
                        self.equidistant_tolerance_ms
                    } else {
                        *tolerance_ms
                    },
                }
            }
            Asked::Disjoint(host) => {
                self.check_offered(ObjectiveKind::Disjoint)?;
                if host.is_empty() || host.len() > 256 {
                    return Err(invalid(
                        "disjoint.host must name the destination (1 to 256 bytes)",
                    ));
                }
                Objective::Disjoint { host: host.clone() }
            }
        };
        Ok(matching::find(
            &snapshot,
            requirements,
            &objective,
            &self.ranking,
            max_results,
            now,
        ))
    }
}
