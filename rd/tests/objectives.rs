//! FindXenoServers over gRPC on a generated population of 400 servers advertised into a real
//! XIS: each objective's answer is checked against a brute-force computation over the same
//! population (optimal, and every suggestion really qualifies), plus filtering, side-by-side
//! policies and refusals.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tonic::Code;
use tonic::transport::Channel;
use xeno_clients::simulated::population::{
    self, DEBIAN_IMAGE, DISJOINT_HOST, GeneratedServer, Place,
};
use xeno_rd::config::{Config as RdConfig, HostCoordinates, ObjectiveKind};
use xeno_rd::daemon::RunningRd;
use xeno_schemas::documents::{Document, EnvironmentalRequirements, ServerAdvertisement};
use xeno_schemas::proto::common::v1::Money;
use xeno_schemas::proto::rd::v1 as pb;
use xeno_xis::daemon::RunningXis;

const SERVERS: usize = 400;
/// The paper's example hosts: Cambridge and Plymouth.
const CAMBRIDGE: (&str, f64, f64) = ("131.111.202.88", 52.2053, 0.1218);
const PLYMOUTH: (&str, f64, f64) = ("141.163.61.250", 50.3755, -4.1427);

struct World {
    xis: RunningXis,
    servers: Vec<GeneratedServer>,
}

async fn world(seed: u64) -> World {
    let config: xeno_xis::config::Config =
        toml::from_str("listen = \"127.0.0.1:0\"\npersist = false").expect("config");
    let xis = xeno_xis::daemon::start(config).await.expect("xis");
    let channel = xeno_clients::xis::connect(&xis.addr.to_string())
        .await
        .expect("connect");
    let servers = population::generate(SERVERS, seed);
    for server in &servers {
        xeno_clients::xis::advertise_xml(channel.clone(), server.signed_xml(1))
            .await
            .expect("advertise");
    }
    World { xis, servers }
}

fn place(host: (&str, f64, f64)) -> Place {
    Place {
        latitude: host.1,
        longitude: host.2,
        access_ms: 2.0,
    }
}

fn rd_config(world: &World) -> RdConfig {
    let mut config = RdConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        xis: world.xis.addr.to_string(),
        sync_interval_ms: 200,
        ..RdConfig::default()
    };
    for host in [CAMBRIDGE, PLYMOUTH] {
        let coordinates = place(host).coordinates();
        config.hosts.insert(
            host.0.to_owned(),
            HostCoordinates {
                components: coordinates.components,
                height: coordinates.height,
            },
        );
    }
    config
}

async fn start_rd(
    config: RdConfig,
) -> (
    RunningRd,
    pb::resource_discovery_client::ResourceDiscoveryClient<Channel>,
) {
    let rd = xeno_rd::daemon::start(config).await.expect("rd");
    rd.sync_now(true).await.expect("sync");
    let channel = xeno_clients::xis::connect(&rd.addr.to_string())
        .await
        .expect("connect");
    let client = pb::resource_discovery_client::ResourceDiscoveryClient::new(channel)
        .max_decoding_message_size(16 * 1024 * 1024);
    (rd, client)
}

const REQUIREMENTS: &str = "<EnvironmentalRequirements><Basic><EnvName>job</EnvName><EnvType>Wasm</EnvType></Basic>\
<Network><NetMbps>1</NetMbps></Network><QoS><CPUmsps>250</CPUmsps><MemoryMB>512</MemoryMB></QoS></EnvironmentalRequirements>";

fn request(
    objective: pb::find_xeno_servers_request::Objective,
    max_results: u32,
) -> pb::FindXenoServersRequest {
    pb::FindXenoServersRequest {
        requirements_xml: REQUIREMENTS.to_owned(),
        objective: Some(objective),
        max_results,
    }
}

fn qualifies(server: &GeneratedServer) -> bool {
    let ad = &server.advertisement;
    let load = ad.load.clone().unwrap_or_default();
    ad.environments.iter().any(|e| e.env_type == "Wasm")
        && load.available_cpu_msps.unwrap_or(0) >= 250
        && load.available_memory_mb.unwrap_or(0) >= 512
        && load.available_kbps.unwrap_or(0) >= 1000
}

fn by_id<'a>(world: &'a World, id: &str) -> &'a GeneratedServer {
    world
        .servers
        .iter()
        .find(|s| s.server.id == id)
        .expect("one of ours")
}

/// The cost in major units, computed independently in floating point.
fn cost_major(ad: &ServerAdvertisement, seconds: f64) -> f64 {
    let sheet = &ad.price_sheets[0];
    let price = |pico: Option<u64>| pico.unwrap_or(0) as f64 / 1e12;
    let gigabytes = 1.0 * 1e6 / 8.0 * seconds / 1e9; // 1 Mbps for the duration
    price(sheet.cpu_second_pico) * 0.25 * seconds
        + price(sheet.memory_mb_second_pico) * 512.0 * seconds
        + price(sheet.network_gb_pico) * gigabytes
        + price(sheet.session_start_pico)
}

fn gbp(major: f64) -> Money {
    Money {
        currency: "GBP".to_owned(),
        amount_minor: (major * 1e6) as u64,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cheapest_within_a_budget() {
    let world = world(1).await;
    let (rd, mut client) = start_rd(rd_config(&world)).await;
    // "Find a XenoServer which may run a job with these resource requirements at a total cost
    // of 10" (GBP), for an hour.
    let hour = 3600.0;
    let cheapest = |budget: Money| {
        pb::find_xeno_servers_request::Objective::Cheapest(pb::Cheapest {
            duration_seconds: 3600,
            budget: Some(budget),
        })
    };
    let answer = client
        .find_xeno_servers(request(cheapest(gbp(10.0)), 10))
        .await
        .expect("find")
        .into_inner();
    let mut expected: Vec<(f64, String)> = world
        .servers
        .iter()
        .filter(|s| qualifies(s) && s.advertisement.price_sheets[0].currency.as_str() == "GBP")
        .map(|s| (cost_major(&s.advertisement, hour), s.server.id.clone()))
        .filter(|(cost, _)| *cost <= 10.0)
        .collect();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(answer.candidates as usize, expected.len());
    assert!(expected.len() > 10, "the population has choice");
    let got: Vec<&str> = answer
        .suggestions
        .iter()
        .map(|s| s.server_id.as_str())
        .collect();
    let want: Vec<&str> = expected
        .iter()
        .take(10)
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(got, want, "the ten cheapest, cheapest first");
    for suggestion in &answer.suggestions {
        let server = by_id(&world, &suggestion.server_id);
        let cost = suggestion.estimated_cost.as_ref().expect("cost");
        let exact = cost_major(&server.advertisement, hour) * 1e6;
        assert_eq!(cost.currency, "GBP");
        assert!(
            (cost.amount_minor as f64 - exact).abs() <= 1.0,
            "{} vs {exact}",
            cost.amount_minor
        );
        let advertisement = ServerAdvertisement::parse(suggestion.advertisement_xml.as_bytes())
            .expect("signed advertisement");
        assert_eq!(advertisement.server_id, suggestion.server_id);
        assert!(advertisement.signature.is_some());
    }
    // The same question through the library client, which checks every advertisement.
    let channel = xeno_clients::rd::connect(&rd.addr.to_string())
        .await
        .expect("connect");
    let verified = xeno_clients::rd::find_xeno_servers(
        channel,
        &xeno_clients::rd::FindRequest {
            requirements: EnvironmentalRequirements::parse(REQUIREMENTS.as_bytes())
                .expect("requirements"),
            objective: xeno_clients::rd::Asked::Cheapest {
                duration_seconds: 3600,
                budget: Some(xeno_schemas::documents::Money {
                    currency: "GBP".parse().expect("currency"),
                    minor: 10_000_000,
                }),
            },
            max_results: 10,
        },
    )
    .await
    .expect("find through the client");
    let verified_ids: Vec<&str> = verified
        .suggestions
        .iter()
        .map(|s| s.advertisement.server_id.as_str())
        .collect();
    assert_eq!(verified_ids, want);
    assert_eq!(verified.candidates, answer.candidates);
    // A budget just under the cheapest: nothing.
    let under = gbp(expected[0].0 - 0.000_01);
    let answer = client
        .find_xeno_servers(request(cheapest(under), 10))
        .await
        .expect("find")
        .into_inner();
    assert!(answer.suggestions.is_empty() && answer.candidates == 0);
    // Only servers pricing in the budget's currency.
    let euros = Money {
        currency: "EUR".to_owned(),
        amount_minor: 10_000_000,
    };
    let answer = client
        .find_xeno_servers(request(cheapest(euros), 100))
        .await
        .expect("find")
        .into_inner();
    assert!(!answer.suggestions.is_empty());
    for suggestion in &answer.suggestions {
        assert_eq!(
            by_id(&world, &suggestion.server_id)
                .advertisement
                .price_sheets[0]
                .currency
                .as_str(),
            "EUR"
        );
    }
    rd.shutdown().await;
    world.xis.shutdown().await;
}

fn host_coordinates(host: (&str, f64, f64)) -> pb::Host {
    let coordinates = place(host).coordinates();
    pb::Host {
        host: Some(pb::host::Host::Coordinates(pb::Coordinates {
            components: coordinates.components,
            height: coordinates.height,
        })),
    }
}

fn address(host: (&str, f64, f64)) -> pb::Host {
    pb::Host {
        host: Some(pb::host::Host::Address(host.0.to_owned())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_and_equidistant_by_network_coordinates() {
    let world = world(2).await;
    let (rd, mut client) = start_rd(rd_config(&world)).await;
    let hosts = [place(CAMBRIDGE), place(PLYMOUTH)];
    let estimate = |server: &GeneratedServer, host: &Place| {
        server.place.coordinates().distance_ms(&host.coordinates())
    };

    // Near: the lowest summed latency to both hosts.
    let near = pb::find_xeno_servers_request::Objective::Near(pb::Near {
        hosts: vec![host_coordinates(CAMBRIDGE), host_coordinates(PLYMOUTH)],
    });
    let answer = client
        .find_xeno_servers(request(near, 10))
        .await
        .expect("near")
        .into_inner();
    let mut expected: Vec<(f64, String)> = world
        .servers
        .iter()
        .filter(|s| qualifies(s))
        .map(|s| {
            (
                hosts.iter().map(|h| estimate(s, h)).sum(),
                s.server.id.clone(),
            )
        })
        .collect();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0));
    let got: Vec<&str> = answer
        .suggestions
        .iter()
        .map(|s| s.server_id.as_str())
        .collect();
    let want: Vec<&str> = expected
        .iter()
        .take(10)
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(got, want);
    // And they are near in truth: their real round trips beat the population's average.
    let true_sum = |s: &GeneratedServer| hosts.iter().map(|h| s.place.rtt_ms(h)).sum::<f64>();
    let suggested: f64 = got
        .iter()
        .map(|id| true_sum(by_id(&world, id)))
        .sum::<f64>()
        / got.len() as f64;
    let everyone: f64 =
        world.servers.iter().map(true_sum).sum::<f64>() / world.servers.len() as f64;
    assert!(
        suggested < everyone / 3.0,
        "suggested {suggested} ms vs average {everyone} ms"
    );
    for suggestion in &answer.suggestions {
        assert_eq!(suggestion.estimated_latency_ms.len(), 2);
    }

    // Equidistant (the paper's first example), hosts named by address.
    let equidistant = pb::find_xeno_servers_request::Objective::Equidistant(pb::Equidistant {
        hosts: vec![address(CAMBRIDGE), address(PLYMOUTH)],
        tolerance_ms: 2.0,
    });
    let answer = client
        .find_xeno_servers(request(equidistant, 10))
        .await
        .expect("equidistant")
        .into_inner();
    let mut expected: Vec<(f64, String)> = world
        .servers
        .iter()
        .filter(|s| qualifies(s))
        .filter_map(|s| {
            let (a, b) = (estimate(s, &hosts[0]), estimate(s, &hosts[1]));
            ((a - b).abs() <= 2.0).then(|| (a.max(b), s.server.id.clone()))
        })
        .collect();
    expected.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(answer.candidates as usize, expected.len());
    assert!(
        answer.suggestions.len() >= 3,
        "some servers are equidistant"
    );
    let got: Vec<&str> = answer
        .suggestions
        .iter()
        .map(|s| s.server_id.as_str())
        .collect();
    let want: Vec<&str> = expected
        .iter()
        .take(10)
        .map(|(_, id)| id.as_str())
        .collect();
    assert_eq!(got, want);
    for suggestion in &answer.suggestions {
        let latencies = &suggestion.estimated_latency_ms;
        assert!((latencies[0] - latencies[1]).abs() <= 2.0, "{latencies:?}");
    }
    // A host it cannot place is refused, naming it.
    let unknown = pb::find_xeno_servers_request::Objective::Near(pb::Near {
        hosts: vec![pb::Host {
            host: Some(pb::host::Host::Address("192.0.2.1".to_owned())),
        }],
    });
    let error = client
        .find_xeno_servers(request(unknown, 10))
        .await
        .expect_err("unknown host");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(error.message().contains("192.0.2.1"), "{}", error.message());
    rd.shutdown().await;
    world.xis.shutdown().await;
}

fn links(ad: &ServerAdvertisement) -> HashSet<(String, String)> {
    let path = ad
        .paths
        .iter()
        .find(|p| p.toward == DISJOINT_HOST)
        .expect("a path");
    let mut hops = path.hops.clone();
    hops.push(path.toward.clone());
    hops.windows(2)
        .map(|pair| {
            let (a, b) = (pair[0].clone(), pair[1].clone());
            if a <= b { (a, b) } else { (b, a) }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disjoint_pairs_share_no_link() {
    let world = world(3).await;
    let (rd, mut client) = start_rd(rd_config(&world)).await;
    let disjoint = pb::find_xeno_servers_request::Objective::Disjoint(pb::Disjoint {
        host: DISJOINT_HOST.to_owned(),
    });
    let answer = client
        .find_xeno_servers(request(disjoint, 20))
        .await
        .expect("disjoint")
        .into_inner();
    assert_eq!(answer.suggestions.len(), 20, "ten pairs");
    let mut seen = HashSet::new();
    for (index, suggestion) in answer.suggestions.iter().enumerate() {
        assert!(
            seen.insert(suggestion.server_id.clone()),
            "each server in one pair"
        );
        let partner = suggestion.pair_with.expect("paired") as usize;
        assert_eq!(answer.suggestions[partner].pair_with, Some(index as u32));
        // Checked from the signed advertisements themselves.
        let mine = ServerAdvertisement::parse(suggestion.advertisement_xml.as_bytes()).expect("ad");
        let theirs =
            ServerAdvertisement::parse(answer.suggestions[partner].advertisement_xml.as_bytes())
                .expect("ad");
        assert!(
            links(&mine).is_disjoint(&links(&theirs)),
            "pair {index} shares a link"
        );
        assert!(qualifies(by_id(&world, &suggestion.server_id)));
    }
    // The topology allows exactly this: paths are disjoint only across the host's two
    // upstream routers, so every pair joins a provider behind `up-a` with one behind `up-b`.
    let groups: BTreeMap<&str, bool> = answer
        .suggestions
        .iter()
        .map(|s| {
            (
                s.server_id.as_str(),
                by_id(&world, &s.server_id).provider <= 2,
            )
        })
        .collect();
    for suggestion in &answer.suggestions {
        let partner = &answer.suggestions[suggestion.pair_with.expect("paired") as usize];
        assert_ne!(
            groups[suggestion.server_id.as_str()],
            groups[partner.server_id.as_str()]
        );
    }
    rd.shutdown().await;
    world.xis.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requirements_filter_and_policies_differ_side_by_side() {
    let world = world(4).await;
    // Two RD systems over one XIS: one ignores load; the other pushes busy servers down and
    // offers only latency objectives.
    let (plain, mut plain_client) = start_rd(rd_config(&world)).await;
    let mut idle_config = rd_config(&world);
    idle_config.ranking.name = "idle".to_owned();
    idle_config.ranking.load_weight = 20.0;
    idle_config.ranking.objectives = vec![ObjectiveKind::Near, ObjectiveKind::Equidistant];
    let (idle, mut idle_client) = start_rd(idle_config).await;
    let near = || {
        pb::find_xeno_servers_request::Objective::Near(pb::Near {
            hosts: vec![address(CAMBRIDGE)],
        })
    };
    let utilisation = |answer: &pb::FindXenoServersResponse| {
        answer
            .suggestions
            .iter()
            .map(|s| {
                by_id(&world, &s.server_id)
                    .advertisement
                    .load
                    .as_ref()
                    .and_then(|l| l.cpu_utilisation_percent)
                    .map_or(0.0, |d| d.to_f64())
            })
            .sum::<f64>()
            / answer.suggestions.len() as f64
    };
    let plain_answer = plain_client
        .find_xeno_servers(request(near(), 10))
        .await
        .expect("plain")
        .into_inner();
    let idle_answer = idle_client
        .find_xeno_servers(request(near(), 10))
        .await
        .expect("idle")
        .into_inner();
    assert_ne!(
        plain_answer
            .suggestions
            .iter()
            .map(|s| &s.server_id)
            .collect::<Vec<_>>(),
        idle_answer
            .suggestions
            .iter()
            .map(|s| &s.server_id)
            .collect::<Vec<_>>()
    );
    assert!(utilisation(&idle_answer) < utilisation(&plain_answer));
    let error = idle_client
        .find_xeno_servers(request(
            pb::find_xeno_servers_request::Objective::Cheapest(pb::Cheapest {
                duration_seconds: 60,
                budget: Some(gbp(1.0)),
            }),
            10,
        ))
        .await
        .expect_err("not offered");
    assert_eq!(error.code(), Code::InvalidArgument);
    assert!(
        error.message().contains("does not offer"),
        "{}",
        error.message()
    );

    // Versions: only servers offering Linux 2.4.18 (the paper's kernel).
    let mut linux = request(near(), 100);
    linux.requirements_xml = "<EnvironmentalRequirements><Basic><EnvName>old</EnvName><EnvType>Linux</EnvType><EnvKernel>2.4.18</EnvKernel></Basic></EnvironmentalRequirements>".to_owned();
    let answer = plain_client
        .find_xeno_servers(linux)
        .await
        .expect("linux")
        .into_inner();
    let expected = world
        .servers
        .iter()
        .filter(|s| {
            s.advertisement
                .environments
                .iter()
                .any(|e| e.env_type == "Linux" && e.versions == ["2.4.18"])
        })
        .count();
    assert_eq!(answer.candidates as usize, expected);
    for suggestion in &answer.suggestions {
        let server = by_id(&world, &suggestion.server_id);
        assert!(
            server
                .advertisement
                .environments
                .iter()
                .any(|e| e.versions == ["2.4.18"])
        );
    }

    // Images: only Linux servers offering the Debian image.
    let mut image = request(near(), 100);
    image.requirements_xml = format!(
        "<EnvironmentalRequirements><Basic><EnvName>py</EnvName><EnvType>Linux</EnvType>\
         <EnvImage>{DEBIAN_IMAGE}</EnvImage></Basic></EnvironmentalRequirements>"
    );
    let answer = plain_client
        .find_xeno_servers(image)
        .await
        .expect("image")
        .into_inner();
    let offering = |s: &&GeneratedServer| {
        s.advertisement
            .environments
            .iter()
            .any(|e| e.env_type == "Linux" && e.images.iter().any(|i| i == DEBIAN_IMAGE))
    };
    let expected = world.servers.iter().filter(offering).count();
    assert!(expected > 0 && expected < world.servers.len());
    assert_eq!(answer.candidates as usize, expected);
    for suggestion in &answer.suggestions {
        assert!(offering(&by_id(&world, &suggestion.server_id)));
    }

    // Refusals.
    let mut malformed = request(near(), 10);
    malformed.requirements_xml = "<EnvironmentalRequirements>".to_owned();
    let error = plain_client
        .find_xeno_servers(malformed)
        .await
        .expect_err("malformed");
    assert_eq!(error.code(), Code::InvalidArgument);
    let mut none = request(near(), 10);
    none.objective = None;
    let error = plain_client
        .find_xeno_servers(none)
        .await
        .expect_err("no objective");
    assert_eq!(error.code(), Code::InvalidArgument);
    let error = plain_client
        .find_xeno_servers(request(near(), 101))
        .await
        .expect_err("too many");
    assert_eq!(error.code(), Code::InvalidArgument);
    plain.shutdown().await;
    idle.shutdown().await;
    world.xis.shutdown().await;
}

/// Stale records are not suggested, and an RD system that cannot reach its XIS says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_servers_are_left_out_and_a_missing_xis_is_unavailable() {
    let world = world(5).await;
    let mut config = rd_config(&world);
    config.stale_after_seconds = 1;
    let (rd, mut client) = start_rd(config).await;
    let near = || {
        request(
            pb::find_xeno_servers_request::Objective::Near(pb::Near {
                hosts: vec![address(CAMBRIDGE)],
            }),
            10,
        )
    };
    let fresh = client
        .find_xeno_servers(near())
        .await
        .expect("fresh")
        .into_inner();
    assert!(fresh.candidates > 0);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let stale = client
        .find_xeno_servers(near())
        .await
        .expect("stale")
        .into_inner();
    assert_eq!((stale.candidates, stale.suggestions.len()), (0, 0));
    rd.shutdown().await;

    let xis_addr = world.xis.addr.to_string();
    world.xis.shutdown().await;
    let mut config = RdConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        xis: xis_addr,
        ..RdConfig::default()
    };
    config.sync_interval_ms = 100;
    let rd = xeno_rd::daemon::start(config).await.expect("rd");
    let channel = xeno_clients::xis::connect(&rd.addr.to_string())
        .await
        .expect("connect");
    let mut client = pb::resource_discovery_client::ResourceDiscoveryClient::new(channel);
    let error = client.find_xeno_servers(near()).await.expect_err("no XIS");
    assert_eq!(error.code(), Code::Unavailable);
    rd.shutdown().await;
}
