//! Match-making (paper, section IV): which servers can run the client's requirements, and how
//! well each meets the objective. Pure functions over a catalogue snapshot.
//!
//! A server *qualifies* when it runs the requirement's `EnvType` (and the kernel or runtime
//! version, if one is asked for), advertises at least the CPU ms/s, memory and bandwidth asked
//! for (a requirement left out asks for nothing; a resource the server does not advertise
//! cannot satisfy one that is asked for), and its record is not stale. Then, lower scores
//! first:
//!
//! - **cheapest**: servers with a price sheet in the budget's currency whose total cost for the
//!   duration is within the budget; score = the cost. Cost, from the advertised unit prices:
//!   `CPUSecond × CPUmsps/1000 × seconds + MemoryMBSecond × MemoryMB × seconds + NetworkGB ×
//!   (NetMbps used in full for the duration, in GB) + SessionStart`, rounded up to the minor unit
//!   (fuel is not priced: requirements do not say how much a task will burn).
//! - **near**: servers with coordinates; score = the sum of estimated round trips to the hosts.
//! - **equidistant**: servers whose estimated round trips to the hosts differ by at most the
//!   tolerance; score = the largest of them (approximately equal, and then as near as
//!   possible).
//! - **disjoint**: servers with a measured path toward the host; pairs whose paths share no link
//!   (consecutive hops, and the last hop to the host), chosen greedily from the shortest paths;
//!   score of a pair = their hops together.
//!
//! The ranking policy then adjusts scores: `× (1 + load_weight × utilisation)` and `× (1 −
//! sponsored_discount)` for sponsored servers (an RD system may charge servers to be placed
//! higher, section IV-B).

use crate::catalogue::{Prices, Row, ServerView, Snapshot, disjoint};
use std::collections::HashSet;
use std::sync::Arc;
use xeno_clients::vivaldi::Coordinates;
use xeno_schemas::documents::{EnvVersion, EnvironmentalRequirements, Money, PriceSheet};

/// Candidates considered for pairs, shortest paths first: pairing is quadratic at worst.
pub const DISJOINT_CANDIDATES_MAX: usize = 4096;
/// Disjointness checks in one query, a bound on the quadratic worst case (all paths sharing a
/// link) of about 20 ms.
pub const DISJOINT_CHECKS_MAX: usize = 1_000_000;
/// Picounits per minor unit (10^-12 vs 10^-6 of the major unit).
const PICO_PER_MINOR: u128 = 1_000_000;

/// An objective, with its parameters resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum Objective {
    /// Lowest total cost for `duration_seconds`, within `budget`.
    Cheapest {
        /// How long the requirements must be met.
        duration_seconds: u64,
        /// The most the client will pay.
        budget: Money,
    },
    /// Lowest summed latency to these hosts.
    Near {
        /// The hosts' coordinates.
        hosts: Vec<Coordinates>,
    },
    /// Approximately equal latency to these hosts.
    Equidistant {
        /// The hosts' coordinates.
        hosts: Vec<Coordinates>,
        /// Largest accepted spread, ms.
        tolerance_ms: f64,
    },
    /// Pairs with link-disjoint paths toward this host.
    Disjoint {
        /// The destination, as servers name it in `Path/@toward`.
        host: String,
    },
}

/// Ranking adjustments and filters of one RD system.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    /// A record older than this is stale and not suggested, ms.
    pub stale_after_ms: u64,
    /// Score multiplier per unit of CPU utilisation (0 to 1).
    pub load_weight: f64,
    /// Servers whose coordinate error is above this are not used for latency objectives.
    pub coordinate_error_max: f64,
    /// Servers placed higher.
    pub sponsored: HashSet<String>,
    /// Fraction taken off a sponsored server's score.
    pub sponsored_discount: f64,
}

/// One ranked suggestion.
#[derive(Debug, Clone)]
pub struct Ranked {
    /// The server.
    pub server: Arc<ServerView>,
    /// Adjusted score, lower is better.
    pub score: f64,
    /// Total cost, for cheapest.
    pub cost: Option<Money>,
    /// Estimated round trips to each host, ms.
    pub latencies_ms: Vec<f64>,
    /// For disjoint: the index of its partner in the answer.
    pub pair_with: Option<usize>,
}

/// The answer: suggestions, best first, and how many servers qualified.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Best first.
    pub ranked: Vec<Ranked>,
    /// Servers that met the requirements (and the objective's own conditions).
    pub candidates: u64,
}

/// Whether `server` can run `requirements` now.
pub fn qualifies(
    server: &ServerView,
    requirements: &EnvironmentalRequirements,
    now_ms: u64,
    stale_after_ms: u64,
) -> bool {
    if now_ms.saturating_sub(server.received_ms()) >= stale_after_ms {
        return false;
    }
    let Some(environment) = server
        .environments
        .iter()
        .find(|environment| environment.env_type == requirements.env_type)
    else {
        return false;
    };
    if let Some(EnvVersion::Kernel(version) | EnvVersion::Runtime(version)) = &requirements.version
        && !environment.versions.contains(version)
    {
        return false;
    }
    if requirements
        .image
        .as_ref()
        .is_some_and(|image| !environment.images.contains(image))
    {
        return false;
    }
    let enough = |asked: Option<u64>, available: Option<u64>| match asked {
        None | Some(0) => true,
        Some(asked) => available.is_some_and(|available| available >= asked),
    };
    enough(requirements.qos.cpu_msps, server.available_cpu_msps)
        && enough(requirements.qos.memory_mb, server.available_memory_mb)
        && enough(requirements.net_kbps, server.available_kbps)
}

/// The unit costs are summed in, per picounit: the least common multiple of the CPU term's
/// denominator (1,000 ms per second) and the network term's (8,000,000 kbit per GB).
const COST_DENOMINATOR: u128 = 8_000_000;

/// The total cost of running `requirements` for `duration_seconds` on `sheet`'s prices, in
/// minor units rounded up; `None` if it overflows.
pub fn total_cost_minor(
    sheet: &PriceSheet,
    requirements: &EnvironmentalRequirements,
    duration_seconds: u64,
) -> Option<u64> {
    let prices: Prices = [
        sheet.cpu_second_pico.unwrap_or(0),
        sheet.memory_mb_second_pico.unwrap_or(0),
        sheet.network_gb_pico.unwrap_or(0),
        sheet.million_fuel_pico.unwrap_or(0),
        sheet.session_start_pico.unwrap_or(0),
    ];
    cost_minor(&prices, requirements, duration_seconds)
}

/// [`total_cost_minor`] on packed prices.
pub fn cost_minor(
    prices: &Prices,
    requirements: &EnvironmentalRequirements,
    duration_seconds: u64,
) -> Option<u64> {
    let seconds = u128::from(duration_seconds);
    let [
        cpu_second,
        memory_mb_second,
        network_gb,
        _fuel,
        session_start,
    ] = prices.map(u128::from);
    let cpu_msps = u128::from(requirements.qos.cpu_msps.unwrap_or(0));
    let memory_mb = u128::from(requirements.qos.memory_mb.unwrap_or(0));
    let kbps = u128::from(requirements.net_kbps.unwrap_or(0));
    // Every term is counted in 1/8,000,000ths of a picounit, so that none is truncated before
    // the one rounding up at the end (a cost of a thousandth of a picounit is still a cost):
    // CPU: ms/s × s = CPU-ms, a thousandth of a CPU-second each.
    let cpu = cpu_msps
        .checked_mul(seconds)?
        .checked_mul(cpu_second)?
        .checked_mul(COST_DENOMINATOR / 1000)?;
    let memory = memory_mb
        .checked_mul(seconds)?
        .checked_mul(memory_mb_second)?
        .checked_mul(COST_DENOMINATOR)?;
    // Network: kbit/s × s = kbit; × 1000 / 8 = bytes; / 10^9 = GB. So a kbit is an
    // 8,000,000th of a GB.
    let network = kbps.checked_mul(seconds)?.checked_mul(network_gb)?;
    let start = session_start.checked_mul(COST_DENOMINATOR)?;
    let total = cpu
        .checked_add(memory)?
        .checked_add(network)?
        .checked_add(start)?;
    u64::try_from(total.div_ceil(PICO_PER_MINOR.checked_mul(COST_DENOMINATOR)?)).ok()
}

/// The score after the ranking policy's adjustments.
fn adjusted(ranking: &Ranking, server: &ServerView, utilisation: f32, score: f64) -> f64 {
    let mut score = score * (1.0 + ranking.load_weight * f64::from(utilisation));
    if !ranking.sponsored.is_empty() && ranking.sponsored.contains(&server.id) {
        score *= 1.0 - ranking.sponsored_discount;
    }
    score
}

/// What a query asks of a row, resolved once against the snapshot's interned names.
struct Wanted<'a> {
    requirements: &'a EnvironmentalRequirements,
    /// The environment type's bit (`None`: no row has it in its mask).
    env: Option<u64>,
    /// The version's bit, when one is asked (`Some(None)`: asked, no row has it).
    version: Option<Option<u64>>,
}

impl Wanted<'_> {
    fn new<'a>(snapshot: &Snapshot, requirements: &'a EnvironmentalRequirements) -> Wanted<'a> {
        let env = snapshot
            .interned
            .env_types
            .get(&requirements.env_type)
            .map(|bit| 1u64 << bit);
        let version = requirements.version.as_ref().map(|version| {
            let (EnvVersion::Kernel(version) | EnvVersion::Runtime(version)) = version;
            snapshot
                .interned
                .versions
                .get(&(requirements.env_type.clone(), version.clone()))
                .map(|bit| 1u64 << bit)
        });
        Wanted {
            requirements,
            env,
            version,
        }
    }

    /// Whether the server at `index` qualifies (rows first; the full view for overflow rows).
    fn qualifies(
        &self,
        snapshot: &Snapshot,
        index: usize,
        now_ms: u64,
        stale_after_ms: u64,
    ) -> bool {
        let row = &snapshot.rows[index];
        if now_ms.saturating_sub(row.received_ms) >= stale_after_ms {
            return false;
        }
        if row.overflow {
            return qualifies(
                &snapshot.servers[index],
                self.requirements,
                now_ms,
                stale_after_ms,
            );
        }
        if self.env.is_none_or(|bit| row.env_mask & bit == 0) {
            return false;
        }
        if let Some(version) = self.version
            && version.is_none_or(|bit| row.version_mask & bit == 0)
        {
            return false;
        }
        // Images are rarely asked for and not interned: the server's own list decides.
        if let Some(image) = &self.requirements.image {
            let offered = snapshot.servers[index]
                .environments
                .iter()
                .any(|environment| {
                    environment.env_type == self.requirements.env_type
                        && environment.images.contains(image)
                });
            if !offered {
                return false;
            }
        }
        let enough = |asked: Option<u64>, available: Option<u64>| match asked {
            None | Some(0) => true,
            Some(asked) => available.is_some_and(|available| available >= asked),
        };
        let [cpu, memory, kbps] = row.resources;
        enough(self.requirements.qos.cpu_msps, cpu)
            && enough(self.requirements.qos.memory_mb, memory)
            && enough(self.requirements.net_kbps, kbps)
    }
}

/// The `count` lowest of `scored` (score, index, cost), in order (ties by server id).
fn best(
    snapshot: &Snapshot,
    mut scored: Vec<(f64, u32, u64)>,
    count: usize,
) -> Vec<(f64, u32, u64)> {
    let id = |index: u32| snapshot.servers[index as usize].id.as_str();
    let order = |a: &(f64, u32, u64), b: &(f64, u32, u64)| {
        a.0.total_cmp(&b.0).then_with(|| id(a.1).cmp(id(b.1)))
    };
    if scored.len() > count && count > 0 {
        scored.select_nth_unstable_by(count - 1, order);
        scored.truncate(count);
    }
    scored.sort_by(order);
    scored
}

fn latency_ok(row: &Row, ranking: &Ranking, hosts: &[Coordinates]) -> bool {
    row.dimensions > 0
        && f64::from(row.coordinate_error) <= ranking.coordinate_error_max
        && hosts
            .iter()
            .all(|host| host.components.len() == usize::from(row.dimensions))
}

/// Finds and ranks servers for `requirements` and `objective`; at most `max_results`
/// suggestions (pairs count as two).
pub fn find(
    snapshot: &Snapshot,
    requirements: &EnvironmentalRequirements,
    objective: &Objective,
    ranking: &Ranking,
    max_results: usize,
    now_ms: u64,
) -> Outcome {
    let wanted = Wanted::new(snapshot, requirements);
    let qualified =
        |index: usize| wanted.qualifies(snapshot, index, now_ms, ranking.stale_after_ms);
    let view = |index: u32| &snapshot.servers[index as usize];
    let row = |index: u32| &snapshot.rows[index as usize];
    let indices = 0..u32::try_from(snapshot.rows.len()).unwrap_or(u32::MAX);
    let scored: Vec<(f64, u32, u64)> = match objective {
        Objective::Cheapest {
            duration_seconds,
            budget,
        } => {
            let currency = snapshot
                .interned
                .currencies
                .get(budget.currency.as_str())
                .copied();
            indices
                .filter(|i| qualified(*i as usize))
                .filter_map(|i| {
                    let packed = row(i)
                        .sheets
                        .iter()
                        .flatten()
                        .find(|(id, _)| Some(*id) == currency);
                    let cost = match packed {
                        Some((_, prices)) => cost_minor(prices, requirements, *duration_seconds)?,
                        None if row(i).overflow => {
                            let sheet = view(i)
                                .price_sheets
                                .iter()
                                .find(|s| s.currency == budget.currency)?;
                            total_cost_minor(sheet, requirements, *duration_seconds)?
                        }
                        None => return None,
                    };
                    #[allow(clippy::cast_precision_loss)]
                    let score = adjusted(ranking, view(i), row(i).utilisation, cost as f64);
                    (cost <= budget.minor).then_some((score, i, cost))
                })
                .collect()
        }
        Objective::Near { hosts } => indices
            .filter(|i| latency_ok(row(*i), ranking, hosts) && qualified(*i as usize))
            .map(|i| {
                let total: f64 = hosts.iter().map(|h| row(i).distance_ms(h)).sum();
                (adjusted(ranking, view(i), row(i).utilisation, total), i, 0)
            })
            .collect(),
        Objective::Equidistant {
            hosts,
            tolerance_ms,
        } => indices
            .filter(|i| latency_ok(row(*i), ranking, hosts))
            .filter_map(|i| {
                let (mut high, mut low) = (f64::NEG_INFINITY, f64::INFINITY);
                for host in hosts {
                    let latency = row(i).distance_ms(host);
                    high = high.max(latency);
                    low = low.min(latency);
                }
                (high - low <= *tolerance_ms && qualified(i as usize))
                    .then(|| (adjusted(ranking, view(i), row(i).utilisation, high), i, 0))
            })
            .collect(),
        Objective::Disjoint { host } => {
            return pairs(snapshot, host, ranking, max_results, &qualified);
        }
    };
    let candidates = scored.len() as u64;
    let hosts: &[Coordinates] = match objective {
        Objective::Near { hosts } | Objective::Equidistant { hosts, .. } => hosts,
        _ => &[],
    };
    let ranked = best(snapshot, scored, max_results)
        .into_iter()
        .map(|(score, i, cost)| Ranked {
            server: Arc::clone(view(i)),
            score,
            cost: match objective {
                Objective::Cheapest { budget, .. } => Some(Money {
                    currency: budget.currency,
                    minor: cost,
                }),
                _ => None,
            },
            latencies_ms: hosts.iter().map(|h| row(i).distance_ms(h)).collect(),
            pair_with: None,
        })
        .collect();
    Outcome { ranked, candidates }
}

fn pairs(
    snapshot: &Snapshot,
    host: &str,
    ranking: &Ranking,
    max_results: usize,
    qualified: &dyn Fn(usize) -> bool,
) -> Outcome {
    let Some(toward) = snapshot.paths_toward.get(host) else {
        return Outcome {
            ranked: Vec::new(),
            candidates: 0,
        };
    };
    let scored: Vec<(f64, u32, u64)> = toward
        .iter()
        .filter(|(i, _)| qualified(*i as usize))
        .map(|(i, hops)| {
            let server = &snapshot.servers[*i as usize];
            let score = adjusted(
                ranking,
                server,
                snapshot.rows[*i as usize].utilisation,
                f64::from(*hops),
            );
            (score, *i, 0)
        })
        .collect();
    let candidates = scored.len() as u64;
    let shortlist = best(snapshot, scored, DISJOINT_CANDIDATES_MAX);
    let links: Vec<&[u64]> = shortlist
        .iter()
        .map(|(_, i, _)| {
            snapshot.servers[*i as usize]
                .paths
                .iter()
                .find(|(to, _, _)| to == host)
                .map_or(&[][..], |(_, _, links)| links.as_slice())
        })
        .collect();
    let mut used = vec![false; shortlist.len()];
    let mut ranked: Vec<Ranked> = Vec::new();
    let mut checks = 0usize;
    'outer: for i in 0..shortlist.len() {
        if ranked.len() + 2 > max_results {
            break;
        }
        if used[i] {
            continue;
        }
        for j in i + 1..shortlist.len() {
            if used[j] {
                continue;
            }
            checks += 1;
            if checks > DISJOINT_CHECKS_MAX {
                break 'outer;
            }
            if disjoint(links[i], links[j]) {
                used[i] = true;
                used[j] = true;
                let score = shortlist[i].0 + shortlist[j].0;
                let first = ranked.len();
                for (index, partner) in [(i, first + 1), (j, first)] {
                    ranked.push(Ranked {
                        server: Arc::clone(&snapshot.servers[shortlist[index].1 as usize]),
                        score,
                        cost: None,
                        latencies_ms: Vec::new(),
                        pair_with: Some(partner),
                    });
                }
                break;
            }
        }
    }
    Outcome { ranked, candidates }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn requirements(cpu_msps: u64, memory_mb: u64, kbps: u64) -> EnvironmentalRequirements {
        let mut requirements = EnvironmentalRequirements::new("t", "Wasm");
        requirements.qos.cpu_msps = Some(cpu_msps);
        requirements.qos.memory_mb = Some(memory_mb);
        requirements.net_kbps = Some(kbps);
        requirements
    }

    /// A cost below one picounit per term used to be truncated to nothing before the cost was
    /// rounded up, so it showed as 0 and passed a zero budget.
    #[test]
    fn costs_are_rounded_up_once_never_truncated_on_the_way() {
        // 1 picounit per CPU-second, 1 ms of CPU per second, for one second: 1/1000 picounit.
        let cpu: Prices = [1, 0, 0, 0, 0];
        assert_eq!(cost_minor(&cpu, &requirements(1, 0, 0), 1), Some(1));
        // 1 picounit per GB at 1 kbps for one second: 1/8,000,000 picounit.
        let network: Prices = [0, 0, 1, 0, 0];
        assert_eq!(cost_minor(&network, &requirements(0, 0, 1), 1), Some(1));
        // Nothing priced costs nothing.
        assert_eq!(
            cost_minor(&[0; 5], &requirements(100, 64, 1000), 3600),
            Some(0)
        );
        // Exact multiples stay exact: 1,000 CPUmsps × 1 s × one minor unit per CPU-second.
        let minor: Prices = [PICO_PER_MINOR as u64, 0, 0, 0, 0];
        assert_eq!(cost_minor(&minor, &requirements(1000, 0, 0), 1), Some(1));
        assert_eq!(cost_minor(&minor, &requirements(1000, 0, 0), 2), Some(2));
        assert_eq!(
            cost_minor(
                &[u64::MAX; 5],
                &requirements(1_000_000, 1 << 40, 1 << 40),
                u64::MAX
            ),
            None
        );
    }
}
