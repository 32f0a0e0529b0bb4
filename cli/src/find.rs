//! `xeno find`: finding XenoServers, two ways (paper, sections III and IV).
//!
//! - With `--xis`, a boolean query over the XIS's inverted file, combined here from one lookup
//!   per term as the paper leaves it to clients: `xeno find --xis HOST:PORT "EnvType=Wasm
//!   CPUmsps=100..150 | Country=GB"`.
//! - With `--rd`, a resource discovery system's match-making: `xeno find --rd HOST:PORT -f
//!   requirements.xml --objective cheapest --duration 3600 --budget "10.00 GBP"`, or `near` /
//!   `equidistant` with `--host` (repeatable) and/or `--locate-via XIS` (this machine, placed
//!   by round trips to servers found there), or `disjoint` with `--toward`.

use crate::refusal::{Refused, from_status};
use anyhow::{Context, Result};
use clap::{Args, ValueEnum};
use std::path::PathBuf;
use xeno_clients::rd::{Asked, FindRequest, Host};
use xeno_schemas::Document;
use xeno_schemas::documents::{EnvironmentalRequirements, Money, format_minor};

#[derive(Args)]
pub struct FindArgs {
    /// Query this XIS node (host:port) with QUERY.
    #[arg(long, conflicts_with = "rd", required_unless_present = "rd")]
    xis: Option<String>,
    /// Ask this resource discovery system (host:port) for suggestions.
    #[arg(long)]
    rd: Option<String>,
    /// With --xis: terms separated by spaces must all hold, `|` separates alternatives; a term
    /// is `token=value`, `token=min..max` (either end may be empty) or `token`.
    #[arg(required_unless_present = "rd")]
    query: Option<String>,
    /// With --xis: include records that are stale (not refreshed for one TTL).
    #[arg(long)]
    stale: bool,
    /// With --xis: refuse queries any of whose lookups matches more servers than this.
    #[arg(long, default_value_t = 10_000)]
    limit: usize,
    /// With --rd: the session's EnvironmentalRequirements document.
    #[arg(short = 'f', long, required_unless_present = "xis")]
    requirements: Option<PathBuf>,
    /// With --rd: what to optimise.
    #[arg(long, value_enum, default_value_t = Objective::Cheapest)]
    objective: Objective,
    /// cheapest: how long the session will run, seconds (default: the requirements').
    #[arg(long, default_value_t = 0)]
    duration: u64,
    /// cheapest: the most to spend, e.g. "10.00 GBP" (default: the requirements' MaxSpend).
    #[arg(long)]
    budget: Option<String>,
    /// near, equidistant: a host the servers should be near (address known to the RD system);
    /// repeatable.
    #[arg(long = "host")]
    hosts: Vec<String>,
    /// near, equidistant: this machine as a host too, placed by Vivaldi from TCP round trips
    /// to servers (with coordinates) found in the XIS at this address.
    #[arg(long, value_name = "XIS")]
    locate_via: Option<String>,
    /// equidistant: how unequal the latencies may be, ms (0: the RD system's default).
    #[arg(long, default_value_t = 0.0)]
    tolerance_ms: f64,
    /// disjoint: the host the pairs' paths lead toward.
    #[arg(long)]
    toward: Option<String>,
    /// Most suggestions (0: the RD system's default).
    #[arg(long, default_value_t = 0)]
    max: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum Objective {
    /// The lowest total cost for the duration, within the budget.
    Cheapest,
    /// The lowest estimated latency to the hosts.
    Near,
    /// Approximately equal latency to each host.
    Equidistant,
    /// Pairs of servers whose paths toward a host share no link.
    Disjoint,
}

pub async fn run(args: FindArgs) -> Result<()> {
    match (&args.xis, &args.rd) {
        (Some(xis), _) => query_xis(xis, &args).await,
        (None, Some(rd)) => ask_rd(rd, &args).await,
        (None, None) => anyhow::bail!("give --xis or --rd"),
    }
}

async fn query_xis(xis: &str, args: &FindArgs) -> Result<()> {
    let text = args.query.as_deref().unwrap_or_default();
    let query = xeno_clients::xis::query::Query::parse(text)
        .map_err(|error| Refused(format!("query {text:?}: {error}")))?;
    let channel = xeno_clients::xis::connect(xis)
        .await
        .with_context(|| format!("connecting to the XIS at {xis}"))?;
    let found = xeno_clients::xis::query::find(channel, &query, args.stale, args.limit)
        .await
        .map_err(|error| match error {
            xeno_clients::xis::ClientError::Status(status) => {
                from_status(&format!("query {text:?}"), status)
            }
            other => anyhow::Error::new(Refused(other.to_string())),
        })?;
    println!("{} servers match {query}", found.len());
    for server in &found {
        let values: Vec<String> = server
            .values
            .iter()
            .map(|(token, values)| format!("{token}={}", values.join(",")))
            .collect();
        println!(
            "{}@{}  age {:.1} s{}  {}",
            server.server_id,
            server.endpoint,
            server.age_ms as f64 / 1000.0,
            if server.stale { " (stale)" } else { "" },
            values.join(" ")
        );
    }
    Ok(())
}

fn parse_budget(text: &str) -> Result<Money> {
    let (amount, currency) = text.trim().split_once(' ').ok_or_else(|| {
        Refused(format!(
            "--budget {text:?}: expected an amount and a currency, like \"10.00 GBP\""
        ))
    })?;
    let minor = crate::order::parse_amount(amount.trim())
        .map_err(|error| Refused(format!("--budget {text:?}: {error:#}")))?;
    let currency = currency
        .trim()
        .parse()
        .map_err(|error| Refused(format!("--budget {text:?}: {error}")))?;
    Ok(Money { currency, minor })
}

/// Longest wait for one round trip while placing this machine.
const LANDMARK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1500);

/// This machine's network coordinates, from round trips to servers found in the XIS; each
/// server's advertisement (and so its coordinates) is verified before it is used.
async fn locate_here(xis: &str) -> Result<xeno_clients::vivaldi::Coordinates> {
    use xeno_clients::vivaldi::{CANDIDATES_MAX, Coordinates, Landmark, locate};
    let channel = xeno_clients::xis::connect(xis)
        .await
        .with_context(|| format!("connecting to the XIS at {xis}"))?;
    // Every advertisement has a version, so this lists servers: a sample of the XIS, as
    // server ids are key hashes.
    let page = xeno_clients::xis::lookup(
        channel.clone(),
        xeno_schemas::proto::xis::v1::LookupRequest {
            token: "Version".to_owned(),
            values: xeno_clients::xis::range(None, None),
            page_size: u32::try_from(CANDIDATES_MAX).unwrap_or(u32::MAX),
            cursor: String::new(),
            include_stale: false,
        },
    )
    .await
    .map_err(|error| anyhow::anyhow!("listing servers in the XIS at {xis}: {error}"))?;
    let mut landmarks = Vec::new();
    for found in page.matches {
        if landmarks.len() == CANDIDATES_MAX {
            break;
        }
        let Ok((advertisement, _)) =
            xeno_clients::xis::get_advertisement(channel.clone(), &found.server_id).await
        else {
            continue;
        };
        if let Some(advertised) = &advertisement.coordinates {
            landmarks.push(Landmark {
                coordinates: Coordinates::from_advertised(advertised),
                error: advertised
                    .error
                    .map_or(1.0, xeno_schemas::schema::Decimal::to_f64),
                endpoint: advertisement.endpoint.clone(),
            });
        }
    }
    anyhow::ensure!(
        !landmarks.is_empty(),
        Refused(format!(
            "--locate-via {xis}: no server there advertises network coordinates to measure against"
        ))
    );
    let (coordinates, error, measured) =
        locate(&landmarks, 4, LANDMARK_TIMEOUT)
            .await
            .ok_or_else(|| {
                Refused(format!(
                    "--locate-via {xis}: none of {} servers answered a round trip",
                    landmarks.len()
                ))
            })?;
    eprintln!(
        "this machine placed by {measured} round trips to {} servers (error estimate {error:.2})",
        landmarks.len()
    );
    Ok(coordinates)
}

async fn ask_rd(rd: &str, args: &FindArgs) -> Result<()> {
    let path = args
        .requirements
        .as_ref()
        .context("--rd needs -f REQUIREMENTS.xml")?;
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let requirements = EnvironmentalRequirements::parse(&bytes)
        .map_err(|errors| Refused(format!("{}: {errors}", path.display())))?;
    let mut host_list: Vec<Host> = args.hosts.iter().cloned().map(Host::Address).collect();
    if let Some(xis) = &args.locate_via {
        host_list.push(Host::Coordinates(locate_here(xis).await?));
    }
    let hosts = || host_list.clone();
    let objective = match args.objective {
        Objective::Cheapest => Asked::Cheapest {
            duration_seconds: args.duration,
            budget: args.budget.as_deref().map(parse_budget).transpose()?,
        },
        Objective::Near => Asked::Near(hosts()),
        Objective::Equidistant => Asked::Equidistant(hosts(), args.tolerance_ms),
        Objective::Disjoint => Asked::Disjoint(
            args.toward
                .clone()
                .context("--objective disjoint needs --toward HOST")?,
        ),
    };
    let request = FindRequest {
        requirements,
        objective,
        max_results: args.max,
    };
    let channel = xeno_clients::rd::connect(rd)
        .await
        .with_context(|| format!("connecting to the RD system at {rd}"))?;
    let answer = xeno_clients::rd::find_xeno_servers(channel, &request)
        .await
        .map_err(|error| match error {
            xeno_clients::rd::RdClientError::Status(status) => {
                from_status("FindXenoServers", status)
            }
            other => anyhow::anyhow!("FindXenoServers: {other}"),
        })?;
    println!(
        "{} suggestions ({} servers met the requirements)",
        answer.suggestions.len(),
        answer.candidates
    );
    for (rank, suggestion) in answer.suggestions.iter().enumerate() {
        let server = &suggestion.advertisement;
        let mut line = format!("{:>2}. {}@{}", rank + 1, server.server_id, server.endpoint);
        if let Some(cost) = &suggestion.estimated_cost {
            line.push_str(&format!(
                "  cost {} {}",
                format_minor(cost.minor),
                cost.currency
            ));
        }
        if !suggestion.estimated_latency_ms.is_empty() {
            let latencies: Vec<String> = suggestion
                .estimated_latency_ms
                .iter()
                .map(|ms| format!("{ms:.1}"))
                .collect();
            line.push_str(&format!("  latency ms {}", latencies.join("/")));
        }
        if let Some(partner) = suggestion.pair_with {
            line.push_str(&format!("  pairs with {}", partner + 1));
        }
        if let Some(location) = &server.location {
            let place: Vec<&str> = [&location.city, &location.country]
                .into_iter()
                .filter_map(|part| part.as_deref())
                .collect();
            if !place.is_empty() {
                line.push_str(&format!("  in {}", place.join(", ")));
            }
        }
        println!("{line}");
    }
    Ok(())
}
