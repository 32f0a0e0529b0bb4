//! XIS under the platform's steady load: 100,000 servers each refreshing every 30 seconds
//! (about 3,300 signed advertisements a second) into one XIS node, while clients look servers
//! up. Prints the sustained update rate and lookup latency percentiles, on the embedded
//! backend and on a local Redis Cluster (three masters, three replicas) when `redis-server` is
//! installed.
//!
//! ```sh
//! cargo bench -p xeno-xis --bench xis_load
//! XIS_BENCH_SERVERS=20000 XIS_BENCH_SECONDS=10 XIS_BENCH_BACKENDS=memory cargo bench -p xeno-xis --bench xis_load
//! ```
//!
//! Everything runs on this machine: the XIS (in this process, on its own two-thread runtime as
//! the daemon would have, over loopback gRPC), the load generator and the lookup clients (on
//! another runtime), and for Redis the six redis-server processes.

#[path = "../tests/support/redis_cluster.rs"]
mod redis_cluster;

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tonic::transport::Channel;
use xeno_clients::simulated::SimulatedServer;
use xeno_clients::xis as client;
use xeno_schemas::documents::Document;
use xeno_schemas::proto::xis::v1 as pb;
use xeno_xis::config::{Backend, Config};

/// The paper's refresh period, as the environment manager uses it.
const REFRESH_SECONDS: f64 = 30.0;
/// Most updates in flight: the backlog a slow XIS builds before the generator waits.
const IN_FLIGHT_MAX: usize = 512;
/// Lookup clients running at once, each one request at a time.
const LOOKUP_CLIENTS: usize = 2;

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Two versions of every server's advertisement, signed up front (the XIS verifies them).
fn sign_all(servers: &[SimulatedServer]) -> Vec<[String; 2]> {
    let chunks: Vec<&[SimulatedServer]> =
        servers.chunks(servers.len().div_ceil(2).max(1)).collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .into_iter()
            .enumerate()
            .map(|(chunk_index, chunk)| {
                scope.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(chunk_index as u64);
                    chunk
                        .iter()
                        .map(|server| {
                            let make = |version: u64, rng: &mut StdRng| {
                                let mut ad = server.advertisement(version);
                                // Valid for the whole run (the XIS accepts up to an hour).
                                ad.expires_at = ad.issued_at + time::Duration::seconds(3000);
                                let load = ad.load.get_or_insert_with(Default::default);
                                load.available_cpu_msps = Some(rng.random_range(0..=40u64) * 100);
                                load.available_memory_mb = Some(rng.random_range(1..=128u64) * 256);
                                load.sessions = Some(rng.random_range(0..50));
                                if rng.random_bool(0.4) {
                                    ad.environments.push(xeno_schemas::documents::Environment {
                                        env_type: "Linux".to_owned(),
                                        versions: vec!["6.1".to_owned()],
                                        images: Vec::new(),
                                    });
                                }
                                ad.price_sheets[0].cpu_second_pico =
                                    Some(rng.random_range(10_000_000..100_000_000));
                                let countries = ["GB", "FR", "DE", "US", "JP", "BR"];
                                ad.location.get_or_insert_with(Default::default).country = Some(
                                    countries[rng.random_range(0..countries.len())].to_owned(),
                                );
                                ad.tokens = vec![(
                                    "rack".to_owned(),
                                    rng.random_range(0..500u32).to_string(),
                                )];
                                server.sign(ad).to_canonical()
                            };
                            [make(1, &mut rng), make(2, &mut rng)]
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("signer"))
            .collect()
    })
}

/// Advertises; a refusal is counted by the caller, and the first few are printed.
async fn advertise(channel: Channel, xml: String) -> bool {
    static SHOWN: AtomicU64 = AtomicU64::new(0);
    match client::advertise_xml(channel, xml).await {
        Ok(_) => true,
        Err(error) => {
            if SHOWN.fetch_add(1, Ordering::Relaxed) < 3 {
                println!("  advertisement refused: {error}");
            }
            false
        }
    }
}

fn random_lookup(rng: &mut StdRng) -> pb::LookupRequest {
    let (token, values) = match rng.random_range(0..4) {
        0 => {
            let low = f64::from(rng.random_range(0..36u32) * 100);
            ("CPUmsps", client::range(Some(low), Some(low + 400.0)))
        }
        1 => (
            "EnvType",
            client::exact(if rng.random_bool(0.5) {
                "Wasm"
            } else {
                "Linux"
            }),
        ),
        2 => (
            "CPUSecond@GBP",
            client::range(None, Some(rng.random_range(0.00001..0.0001))),
        ),
        _ => ("Country", client::exact("GB")),
    };
    pb::LookupRequest {
        token: token.to_owned(),
        values,
        page_size: 100,
        cursor: String::new(),
        include_stale: false,
    }
}

struct Outcome {
    core_only: Histogram<u64>,
    initial_rate: f64,
    update_rate: f64,
    update_errors: u64,
    lookups: Histogram<u64>,
    /// Lookups that failed (under load and while idle), not in the histograms.
    lookup_errors: u64,
}

async fn run(
    xis_runtime: &tokio::runtime::Handle,
    config: Config,
    adverts: &[[String; 2]],
    seconds: u64,
) -> Outcome {
    let xis = xis_runtime
        .spawn(xeno_xis::daemon::start(config))
        .await
        .expect("xis start task")
        .expect("xis starts");
    let address = xis.addr.to_string();
    // A few connections, as many servers would open.
    let channels: Vec<Channel> =
        futures::future::join_all((0..4).map(|_| client::connect(&address)))
            .await
            .into_iter()
            .map(|c| c.expect("connect"))
            .collect();

    // Every server's first advertisement, as fast as the XIS takes them.
    let started = Instant::now();
    let permits = Arc::new(Semaphore::new(IN_FLIGHT_MAX));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, pair) in adverts.iter().enumerate() {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("semaphore");
        let channel = channels[index % channels.len()].clone();
        let xml = pair[0].clone();
        tasks.spawn(async move {
            let ok = advertise(channel, xml).await;
            drop(permit);
            ok
        });
    }
    let mut initial_errors = 0;
    while let Some(ok) = tasks.join_next().await {
        if !ok.unwrap_or(false) {
            initial_errors += 1;
        }
    }
    if initial_errors > 0 {
        println!("  initial load: {initial_errors} advertisements refused");
    }
    let initial_rate = adverts.len() as f64 / started.elapsed().as_secs_f64();

    // The lookup itself, in process (no gRPC, no load): what the index costs.
    let mut core_only = Histogram::<u64>::new(3).expect("histogram");
    let mut core_errors = 0u64;
    let mut rng = StdRng::seed_from_u64(99);
    for _ in 0..500 {
        let query = xeno_xis::daemon::LookupQuery::from(random_lookup(&mut rng));
        let began = Instant::now();
        if let Err(error) = xis.core.lookup(&query).await {
            core_errors += 1;
            if core_errors == 1 {
                println!("  first failed lookup (in process): {error}");
            }
            continue;
        }
        core_only
            .record(began.elapsed().as_micros() as u64)
            .expect("record");
    }

    // The steady state: each server refreshes once per period, spread evenly, while lookups run.
    let target_rate = adverts.len() as f64 / REFRESH_SECONDS;
    let updates = ((target_rate * seconds as f64) as usize).min(adverts.len());
    let stop = Arc::new(AtomicBool::new(false));
    // Clients have their own connections, apart from the servers'.
    let lookup_channels: Vec<Channel> =
        futures::future::join_all((0..LOOKUP_CLIENTS).map(|_| client::connect(&address)))
            .await
            .into_iter()
            .map(|c| c.expect("connect"))
            .collect();
    let lookup_tasks: Vec<_> = (0..LOOKUP_CLIENTS)
        .map(|client_index| {
            let channel = lookup_channels[client_index].clone();
            let stop = Arc::clone(&stop);
            tokio::spawn(async move {
                let mut histogram = Histogram::<u64>::new(3).expect("histogram");
                let mut failed = 0u64;
                let mut rng = StdRng::seed_from_u64(100 + client_index as u64);
                let mut xis = pb::xis_client::XisClient::new(channel);
                while !stop.load(Ordering::Relaxed) {
                    let request = random_lookup(&mut rng);
                    let began = Instant::now();
                    if xis.lookup(request).await.is_err() {
                        failed += 1;
                        continue;
                    }
                    histogram
                        .record(began.elapsed().as_micros() as u64)
                        .expect("record");
                    // A client thinking between lookups: 20 ms.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                (histogram, failed)
            })
        })
        .collect();
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / target_rate);
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..updates {
        let due = started + interval.mul_f64(index as f64);
        tokio::time::sleep_until(due.into()).await;
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("semaphore");
        let channel = channels[index % channels.len()].clone();
        let xml = adverts[index][1].clone();
        let errors = Arc::clone(&errors);
        tasks.spawn(async move {
            if !advertise(channel, xml).await {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    while tasks.join_next().await.is_some() {}
    let update_rate = updates as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut lookups = Histogram::<u64>::new(3).expect("histogram");
    let mut lookup_errors = 0;
    for task in lookup_tasks {
        let (histogram, failed) = task.await.expect("lookup client");
        lookups.add(histogram).expect("merge");
        lookup_errors += failed;
    }
    xis_runtime
        .spawn(xis.shutdown())
        .await
        .expect("xis shutdown task");
    Outcome {
        core_only,
        initial_rate,
        update_rate,
        update_errors: errors.load(Ordering::Relaxed),
        lookups,
        lookup_errors: lookup_errors + core_errors,
    }
}

fn report(name: &str, target_rate: f64, outcome: &Outcome) {
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "{name:<22} initial load {:>7.0} ads/s | sustained {:>6.0} ads/s (target {:.0}, {} refused) | lookups n={} ({} failed) p50 {:.2} ms p99 {:.2} ms p99.9 {:.2} ms max {:.2} ms",
        outcome.initial_rate,
        outcome.update_rate,
        target_rate,
        outcome.update_errors,
        outcome.lookups.len(),
        outcome.lookup_errors,
        ms(outcome.lookups.value_at_quantile(0.5)),
        ms(outcome.lookups.value_at_quantile(0.99)),
        ms(outcome.lookups.value_at_quantile(0.999)),
        ms(outcome.lookups.max()),
    );
    println!(
        "{:<22} lookup in process, idle: p50 {:.3} ms p99 {:.3} ms",
        "",
        ms(outcome.core_only.value_at_quantile(0.5)),
        ms(outcome.core_only.value_at_quantile(0.99)),
    );
}

/// Where an advertisement's CPU goes in the XIS, per advertisement, single-threaded.
fn profile(adverts: &[[String; 2]]) {
    use xeno_schemas::documents::ServerAdvertisement;
    let sample = &adverts[..adverts.len().min(5000)];
    let began = Instant::now();
    let parsed: Vec<ServerAdvertisement> = sample
        .iter()
        .map(|pair| ServerAdvertisement::parse(pair[0].as_bytes()).expect("parses"))
        .collect();
    let parse = began.elapsed();
    let began = Instant::now();
    for advertisement in &parsed {
        advertisement.check_self_certified().expect("verifies");
    }
    let verify = began.elapsed();
    let began = Instant::now();
    for advertisement in &parsed {
        xeno_schemas::documents::tokens::extract(advertisement).expect("tokens");
    }
    let tokens = began.elapsed();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / sample.len() as f64;
    println!(
        "per advertisement ({} bytes): parse+validate {:.0} us, signature (canonical form + Ed25519) {:.0} us, tokens {:.0} us",
        sample[0][0].len(),
        per(parse),
        per(verify),
        per(tokens)
    );
}

fn main() {
    let servers_count = env_number("XIS_BENCH_SERVERS", 100_000) as usize;
    let seconds = env_number("XIS_BENCH_SECONDS", 30);
    let backends =
        std::env::var("XIS_BENCH_BACKENDS").unwrap_or_else(|_| "memory,redis".to_owned());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load")
        .enable_all()
        .build()
        .expect("runtime");
    // The XIS daemon's own runtime (`#[tokio::main]` gives it one worker per core, two here): its
    // workers are not shared with the load generator's tasks, as they would not be in production.
    let xis_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("xis")
        .enable_all()
        .build()
        .expect("xis runtime");
    let xis_handle = xis_runtime.handle();
    println!(
        "XIS load: {servers_count} servers refreshing every {REFRESH_SECONDS} s, {seconds} s measured, {LOOKUP_CLIENTS} lookup clients (page 100, 20 ms think time)"
    );
    let began = Instant::now();
    let servers: Vec<SimulatedServer> = (0..servers_count)
        .map(|_| SimulatedServer::generate())
        .collect();
    let adverts = sign_all(&servers);
    println!(
        "generated and signed {} advertisements in {:.1} s",
        adverts.len() * 2,
        began.elapsed().as_secs_f64()
    );
    profile(&adverts);
    let target_rate = servers_count as f64 / REFRESH_SECONDS;
    let base = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        persist: false,
        ..Config::default()
    };
    if backends.contains("memory") {
        let outcome = runtime.block_on(run(xis_handle, base.clone(), &adverts, seconds));
        report("embedded (memory)", target_rate, &outcome);
        let dir = tempfile::tempdir().expect("tempdir");
        let persisted = Config {
            persist: true,
            data_dir: dir.path().to_owned(),
            ..base.clone()
        };
        let outcome = runtime.block_on(run(xis_handle, persisted, &adverts, seconds));
        report("embedded (persisted)", target_rate, &outcome);
    }
    if backends.contains("redis") {
        match redis_cluster::RedisCluster::start() {
            Some(cluster) => {
                let config = Config {
                    backend: Backend::Redis,
                    redis: xeno_xis::config::RedisConfig {
                        nodes: cluster.urls(),
                        // The six redis-servers share this machine's two cores with the load
                        // generator and the XIS: allow a slow answer rather than fail it.
                        response_timeout_ms: 5000,
                        ..Default::default()
                    },
                    ..base
                };
                let outcome = runtime.block_on(run(xis_handle, config, &adverts, seconds));
                report("redis cluster 3+3", target_rate, &outcome);
            }
            None => println!("redis cluster: skipped"),
        }
    }
    println!("target: lookup p99 under 5 ms on the embedded backend at {target_rate:.0} updates/s");
}
