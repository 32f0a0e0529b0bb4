//! FindXenoServers over 100,000 servers: a generated population advertised into an XIS
//! (embedded backend), an RD system synced from it, then each objective queried over gRPC
//! with varying parameters. Prints p50/p99 per objective beside the peer: SWORD, PlanetLab's
//! resource discovery service, measured median query latencies of 251 ms to 3.3 s on about
//! 200 nodes.
//!
//! ```sh
//! cargo bench -p xeno-rd --bench find
//! RD_BENCH_SERVERS=20000 RD_BENCH_QUERIES=100 cargo bench -p xeno-rd --bench find
//! ```

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use xeno_clients::simulated::population::{self, DISJOINT_HOST, Place, REGIONS};
use xeno_schemas::proto::common::v1::Money;
use xeno_schemas::proto::rd::v1 as pb;
use xeno_schemas::proto::rd::v1::find_xeno_servers_request::Objective;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

const REQUIREMENTS: &str = "<EnvironmentalRequirements><Basic><EnvName>job</EnvName><EnvType>Wasm</EnvType></Basic>\
<Network><NetMbps>1</NetMbps></Network><QoS><CPUmsps>250</CPUmsps><MemoryMB>512</MemoryMB></QoS></EnvironmentalRequirements>";

fn random_host(rng: &mut StdRng) -> pb::Host {
    let (_, lat, long, _) = REGIONS[rng.random_range(0..REGIONS.len())];
    let coordinates = Place {
        latitude: lat + rng.random_range(-8.0..8.0),
        longitude: long + rng.random_range(-12.0..12.0),
        access_ms: rng.random_range(1.0..20.0),
    }
    .coordinates();
    pb::Host {
        host: Some(pb::host::Host::Coordinates(pb::Coordinates {
            components: coordinates.components,
            height: coordinates.height,
        })),
    }
}

fn objective(kind: &str, rng: &mut StdRng) -> Objective {
    match kind {
        "cheapest" => Objective::Cheapest(pb::Cheapest {
            duration_seconds: rng.random_range(60..86_400),
            budget: Some(Money {
                currency: "GBP".to_owned(),
                amount_minor: rng.random_range(1..50) * 1_000_000,
            }),
        }),
        "near" => Objective::Near(pb::Near {
            hosts: (0..rng.random_range(1..4))
                .map(|_| random_host(rng))
                .collect(),
        }),
        "equidistant" => Objective::Equidistant(pb::Equidistant {
            hosts: (0..2).map(|_| random_host(rng)).collect(),
            tolerance_ms: 10.0,
        }),
        _ => Objective::Disjoint(pb::Disjoint {
            host: DISJOINT_HOST.to_owned(),
        }),
    }
}

fn main() {
    let servers = env_number("RD_BENCH_SERVERS", 100_000) as usize;
    let queries = env_number("RD_BENCH_QUERIES", 300);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let began = Instant::now();
        let population = population::generate(servers, 42);
        let adverts: Vec<String> = population.iter().map(|s| s.signed_xml(1)).collect();
        println!(
            "generated and signed {servers} advertisements in {:.1} s",
            began.elapsed().as_secs_f64()
        );

        let config: xeno_xis::config::Config =
            toml::from_str("listen = \"127.0.0.1:0\"\npersist = false\nttl_seconds = 3600")
                .expect("config");
        let xis = xeno_xis::daemon::start(config).await.expect("xis");
        let channel = xeno_clients::xis::connect(&xis.addr.to_string())
            .await
            .expect("connect");
        let began = Instant::now();
        let permits = Arc::new(Semaphore::new(256));
        let mut tasks = tokio::task::JoinSet::new();
        for xml in adverts {
            let permit = Arc::clone(&permits).acquire_owned().await.expect("permit");
            let channel = channel.clone();
            tasks.spawn(async move {
                xeno_clients::xis::advertise_xml(channel, xml)
                    .await
                    .expect("advertise");
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
        println!(
            "advertised into the XIS in {:.1} s",
            began.elapsed().as_secs_f64()
        );

        let config = xeno_rd::config::Config {
            listen: "127.0.0.1:0".parse().expect("addr"),
            xis: xis.addr.to_string(),
            // Measure queries, not syncs: the first full sync is done by hand below.
            sync_interval_ms: 60_000,
            full_sync_interval_seconds: 600,
            unavailable_after_seconds: 3600,
            // The population is advertised once: keep it fresh for the whole run.
            stale_after_seconds: 3600,
            ..xeno_rd::config::Config::default()
        };
        let rd = xeno_rd::daemon::start(config).await.expect("rd");
        let began = Instant::now();
        let report = rd.sync_now(true).await.expect("sync");
        println!(
            "RD initial sync: {} servers fetched and verified in {:.1} s",
            report.fetched,
            began.elapsed().as_secs_f64()
        );
        let channel = xeno_clients::xis::connect(&rd.addr.to_string())
            .await
            .expect("connect");
        let mut client = pb::resource_discovery_client::ResourceDiscoveryClient::new(channel)
            .max_decoding_message_size(16 * 1024 * 1024);
        let mut rng = StdRng::seed_from_u64(7);
        println!(
            "FindXenoServers over {servers} servers, {queries} queries per objective, 10 results:"
        );
        for kind in ["cheapest", "near", "equidistant", "disjoint"] {
            let mut histogram = Histogram::<u64>::new(3).expect("histogram");
            let mut candidates = 0;
            for _ in 0..queries {
                let request = pb::FindXenoServersRequest {
                    requirements_xml: REQUIREMENTS.to_owned(),
                    objective: Some(objective(kind, &mut rng)),
                    max_results: 10,
                };
                let start = Instant::now();
                let answer = client
                    .find_xeno_servers(request)
                    .await
                    .expect("find")
                    .into_inner();
                histogram
                    .record(start.elapsed().as_micros() as u64)
                    .expect("record");
                candidates += answer.candidates;
            }
            let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
            println!(
                "  {kind:<12} p50 {:>6.2} ms  p99 {:>6.2} ms  max {:>6.2} ms  (mean candidates {})",
                ms(0.5),
                ms(0.99),
                histogram.max() as f64 / 1000.0,
                candidates / queries
            );
        }
        println!(
            "target: p99 under 50 ms. Peer: SWORD (PlanetLab) median 251 ms to 3.3 s on ~200 nodes."
        );
        rd.shutdown().await;
        xis.shutdown().await;
    });
}
