//! Charges per second and latency, with 64 concurrent servers charging over mutual TLS on
//! loopback against a `xenocorp` process, on SQLite and (when configured) PostgreSQL; and
//! pgbench's simple-update throughput on the same PostgreSQL for comparison.
//!
//! Each server has one mutual-TLS connection and runs sessions over it, each session charging
//! its own purchase order with one charge in flight; the run is repeated for each
//! sessions-per-server count, and for each way of charging: a `ChargeFromPurchaseOrder` call
//! per charge (`unary`), or all of the server's sessions over its one `StreamCharges` stream
//! through `xeno_clients::charging::Charger` (`stream`, as the environment manager charges).
//!
//! Run: `cargo bench -p xeno-corp --bench charges` (PostgreSQL: set XENO_TEST_POSTGRES_URL, and
//! have `pgbench` on PATH). Options by environment: BENCH_SECONDS (default 10),
//! BENCH_SERVERS (default 64), BENCH_SESSIONS (sessions per server, a list; default `1,4`),
//! BENCH_CALLS (`unary`, `stream` or both; default `unary,stream`).

use hdrhistogram::Histogram;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use xeno_clients::charging::Charger;
use xeno_clients::transport::{Credentials, Peer, connect};
use xeno_schemas::Document;
use xeno_schemas::documents::{Money, PurchaseOrder, UsageRecord};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as pb;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;
use xeno_schemas::signing::{SigningKey, pem_to_der};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn gbp(minor: u64) -> Option<common::Money> {
    Some(common::Money {
        currency: "GBP".to_owned(),
        amount_minor: minor,
    })
}

struct Corp {
    child: std::process::Child,
    address: String,
    ca: String,
    admin_socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Corp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_corp(database: &str) -> Corp {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("xenocorp.toml");
    std::fs::write(
        &config,
        format!("data_dir = {:?}\nlisten = \"127.0.0.1:0\"\nweb_listen = \"127.0.0.1:0\"\ndatabase = {database:?}\n", dir.path().join("data")),
    )
    .expect("config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xenocorp"))
        .args(["--config", config.to_str().expect("path"), "serve"])
        .stdout(Stdio::piped())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("xenocorp");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let address = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .expect("grpc=")
        .to_owned();
    let ca = std::fs::read_to_string(dir.path().join("data/ca-cert.pem")).expect("CA");
    Corp {
        child,
        address,
        ca,
        admin_socket: dir.path().join("data/admin.sock"),
        _dir: dir,
    }
}

async fn register(
    corp: &Corp,
    server: bool,
    name: &str,
) -> (
    String,
    XenoCorpClient<tonic::transport::Channel>,
    SigningKey,
) {
    let (key_pem, csr_pem) = xeno_clients::identity::key_and_csr(name).expect("csr");
    let mut anonymous = XenoCorpClient::new(
        connect(&corp.address, &corp.ca, None, &Peer::Corp(None))
            .await
            .expect("connect"),
    );
    let (id, certificate_pem) = if server {
        let r = anonymous
            .register_server(pb::RegisterServerRequest {
                owner_name: name.to_owned(),
                owner_address: "x".to_owned(),
                payout_details: "x".to_owned(),
                machine: Some(pb::MachineSpec {
                    architecture: "x86_64".to_owned(),
                    cpu_cores: 2,
                    memory_mb: 1024,
                    ..Default::default()
                }),
                csr_pem,
                // Each server claims its own endpoint (the corp refuses a second claim).
                endpoint: format!("{}.bench.test:7443", name.replace(' ', "-")),
            })
            .await
            .expect("register server")
            .into_inner();
        (r.server_id, r.certificate_pem)
    } else {
        let r = anonymous
            .register_client(pb::RegisterClientRequest {
                name: name.to_owned(),
                address: "x".to_owned(),
                charging_details: "x".to_owned(),
                privacy: 1,
                csr_pem,
            })
            .await
            .expect("register client")
            .into_inner();
        (r.account_id, r.certificate_pem)
    };
    let credentials = Credentials {
        certificate_pem,
        key_pem: key_pem.clone(),
    };
    let channel = connect(
        &corp.address,
        &corp.ca,
        Some(&credentials),
        &Peer::Corp(None),
    )
    .await
    .expect("mTLS");
    let key = SigningKey::from_pkcs8_der(&pem_to_der(&key_pem, "PRIVATE KEY").expect("pem"))
        .expect("key");
    (id, XenoCorpClient::new(channel), key)
}

/// A usage record for one lane, built once; each charge substitutes its sequence number (the
/// load generator shares the two cores with the corp, so it keeps its own work small).
fn usage_template(order_id: &str) -> String {
    usage(order_id, 999_999_999, 1)
}

fn usage(order_id: &str, sequence: u64, minor: u64) -> String {
    let now = time::OffsetDateTime::now_utc();
    UsageRecord {
        order_id: order_id.to_owned(),
        session_id: "bench".to_owned(),
        sequence,
        period_start: now,
        period_end: now,
        cpu_ms: 150,
        memory_mb_ms: 64_000,
        network_bytes_in: None,
        network_bytes_out: None,
        fuel: Some(2_000_000),
        syscalls: None,
        output_bytes: Some(100),
        charge: Money {
            currency: "GBP".parse().expect("GBP"),
            minor,
        },
        activity: Some("bench task running".to_owned()),
        tasks: Vec::new(),
        extensions: Vec::new(),
    }
    .to_xml()
}

fn new_histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

fn charge_request(template: &str, order_id: &str, sequence: u64) -> pb::ChargeRequest {
    pb::ChargeRequest {
        order_id: order_id.to_owned(),
        sequence,
        amount: gbp(1),
        usage_record_xml: template.replace(
            "<Sequence>999999999</Sequence>",
            &format!("<Sequence>{sequence}</Sequence>"),
        ),
    }
}

/// How a lane's charges reach the corp.
enum Call {
    /// A `ChargeFromPurchaseOrder` call per charge.
    Unary(XenoCorpClient<tonic::transport::Channel>),
    /// The server's one `StreamCharges` stream, shared by its sessions (as the environment
    /// manager charges).
    Stream(Charger),
}

/// One session charging its order, one charge in flight.
async fn lane(
    call: Call,
    order_id: String,
    measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Histogram<u64> {
    let mut histogram = new_histogram();
    let template = usage_template(&order_id);
    let mut sequence = 0;
    while !stop.load(Ordering::Relaxed) {
        sequence += 1;
        let request = charge_request(&template, &order_id, sequence);
        let started = Instant::now();
        let answer = match &call {
            Call::Unary(server) => server
                .clone()
                .charge_from_purchase_order(request)
                .await
                .map(tonic::Response::into_inner),
            Call::Stream(charger) => charger.charge(request).await,
        }
        .expect("charge");
        assert_eq!(answer.outcome, pb::ChargeOutcome::Charged as i32);
        if measuring.load(Ordering::Relaxed) {
            histogram
                .record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX))
                .expect("record");
        }
    }
    histogram
}

struct Result {
    charges_per_second: f64,
    /// Growth of the corp's resident memory per charge acknowledged in the measured window.
    bytes_per_charge: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
}

async fn run(
    database: &str,
    servers: usize,
    sessions: usize,
    seconds: u64,
    streamed: bool,
) -> Result {
    let corp = start_corp(database);
    let (client_id, mut client, client_key) = register(&corp, false, "bench client").await;
    xeno_clients::corp_admin::connect(&corp.admin_socket)
        .await
        .expect("admin")
        .deposit(pb::DepositRequest {
            account_id: client_id,
            amount: gbp(1_000_000_000_000),
        })
        .await
        .expect("deposit");
    let mut servers_lanes = Vec::new();
    for index in 0..servers {
        let (_, server, _) = register(&corp, true, &format!("server {index}")).await;
        let mut orders = Vec::new();
        for session in 0..sessions {
            let response = client
                .create_purchase_order(pb::CreatePurchaseOrderRequest {
                    amount: gbp(1_000_000_000),
                    lifetime_seconds: 0,
                })
                .await
                .expect("order")
                .into_inner();
            let mut order =
                PurchaseOrder::parse(response.purchase_order_xml.as_bytes()).expect("order");
            order.client_signature =
                Some(client_key.sign(&order.client_signed_bytes()).expect("sign"));
            let mut requirements =
                xeno_schemas::documents::EnvironmentalRequirements::new("bench", "Wasm");
            requirements.qos.cpu_msps = Some(100);
            server
                .clone()
                .validate_purchase_order(pb::ValidatePurchaseOrderRequest {
                    purchase_order_xml: order.to_xml(),
                    session_id: format!("s{index}-{session}"),
                    requirements_xml: requirements.to_xml(),
                })
                .await
                .expect("validate");
            orders.push(order.issued.order_id);
        }
        servers_lanes.push((server, orders));
    }
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = tokio::task::JoinSet::new();
    for (server, orders) in servers_lanes {
        let measuring = Arc::clone(&measuring);
        let stop = Arc::clone(&stop);
        let charger = streamed.then(|| Charger::new(server.clone()));
        for order_id in orders {
            let call = match &charger {
                Some(charger) => Call::Stream(charger.clone()),
                None => Call::Unary(server.clone()),
            };
            tasks.spawn(lane(
                call,
                order_id,
                Arc::clone(&measuring),
                Arc::clone(&stop),
            ));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let resident_before = resident_bytes(corp.child.id());
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let resident_after = resident_bytes(corp.child.id());
    stop.store(true, Ordering::Relaxed);
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    while let Some(histogram) = tasks.join_next().await {
        total.add(histogram.expect("lane")).expect("merge");
    }
    let report = xeno_clients::corp_admin::connect(&corp.admin_socket)
        .await
        .expect("admin")
        .check_invariants(pb::CheckInvariantsRequest {})
        .await
        .expect("check")
        .into_inner();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    Result {
        charges_per_second: total.len() as f64 / elapsed.as_secs_f64(),
        bytes_per_charge: resident_after.saturating_sub(resident_before) as f64
            / total.len().max(1) as f64,
        p50_ms: total.value_at_quantile(0.50) as f64 / 1000.0,
        p99_ms: total.value_at_quantile(0.99) as f64 / 1000.0,
        p999_ms: total.value_at_quantile(0.999) as f64 / 1000.0,
    }
}

/// A process's resident memory, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("VmRSS:"))
                .and_then(|kib| kib.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// pgbench's simple-update (`-N`) throughput with the same client count, on a scratch database.
fn pgbench(url: &str, clients: usize, seconds: u64) -> Option<f64> {
    let scratch = format!("xeno_pgbench_{}", std::process::id());
    let base = url.rsplit_once('/').map(|(b, _)| b)?.to_owned();
    let mut admin = postgres::Client::connect(url, postgres::NoTls).ok()?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {scratch}"))
        .ok()?;
    admin
        .batch_execute(&format!("CREATE DATABASE {scratch}"))
        .ok()?;
    let target = format!("{base}/{scratch}");
    let init = Command::new("pgbench")
        .args(["-i", "-q", "-s", "10", &target])
        .output()
        .ok()?;
    if !init.status.success() {
        eprintln!(
            "pgbench -i failed: {}",
            String::from_utf8_lossy(&init.stderr)
        );
        return None;
    }
    let output = Command::new("pgbench")
        .args([
            "-N",
            "-c",
            &clients.to_string(),
            "-j",
            "2",
            "-T",
            &seconds.to_string(),
            &target,
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|v| v.parse().ok());
    let _ = admin.batch_execute(&format!("DROP DATABASE IF EXISTS {scratch}"));
    tps
}

fn main() {
    let servers = usize::try_from(env_number("BENCH_SERVERS", 64)).unwrap_or(64);
    let seconds = env_number("BENCH_SECONDS", 10);
    let sessions: Vec<usize> = std::env::var("BENCH_SESSIONS")
        .unwrap_or_else(|_| "1,4".to_owned())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .filter(|n| *n > 0)
        .collect();
    let modes: Vec<bool> = std::env::var("BENCH_CALLS")
        .unwrap_or_else(|_| "unary,stream".to_owned())
        .split(',')
        .filter_map(|call| match call.trim() {
            "unary" => Some(false),
            "stream" => Some(true),
            _ => None,
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "charges: {servers} concurrent servers, mTLS on loopback (one connection each), each with \
         {sessions:?} sessions charging their own orders, one charge in flight per session; \
         {seconds} s measured after 2 s warm-up"
    );
    println!(
        "{:<12} {:<7} {:>9} {:>12} {:>9} {:>9} {:>9} {:>12}",
        "backend", "call", "sessions", "charges/s", "p50 ms", "p99 ms", "p99.9 ms", "RSS B/charge"
    );
    let row = |backend: &str, streamed: bool, sessions: usize, result: &Result| {
        println!(
            "{:<12} {:<7} {:>9} {:>12.0} {:>9.2} {:>9.2} {:>9.2} {:>12.0}",
            backend,
            if streamed { "stream" } else { "unary" },
            servers * sessions,
            result.charges_per_second,
            result.p50_ms,
            result.p99_ms,
            result.p999_ms,
            result.bytes_per_charge
        );
    };
    for &streamed in &modes {
        for &per_server in &sessions {
            let sqlite = runtime.block_on(run("sqlite", servers, per_server, seconds, streamed));
            row("sqlite", streamed, per_server, &sqlite);
        }
    }
    if let Ok(url) = std::env::var("XENO_TEST_POSTGRES_URL") {
        let fresh_database = |run_index: usize| {
            let url = url.clone();
            std::thread::spawn(move || {
                let name = format!("xeno_bench_{}_{run_index}", std::process::id());
                let mut client =
                    postgres::Client::connect(&url, postgres::NoTls).expect("postgres");
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                    .expect("drop");
                client
                    .batch_execute(&format!("CREATE DATABASE {name}"))
                    .expect("create");
                format!(
                    "{}/{name}",
                    url.rsplit_once('/').map(|(b, _)| b).expect("url")
                )
            })
            .join()
            .expect("thread")
        };
        let mut single_session: Vec<(bool, f64)> = Vec::new();
        let mut run_index = 0;
        for &streamed in &modes {
            for &per_server in &sessions {
                run_index += 1;
                let database = fresh_database(run_index);
                let postgres =
                    runtime.block_on(run(&database, servers, per_server, seconds, streamed));
                row("postgresql", streamed, per_server, &postgres);
                if per_server == 1 {
                    single_session.push((streamed, postgres.charges_per_second));
                }
            }
        }
        let url_for_bench = url.clone();
        let tps = std::thread::spawn(move || pgbench(&url_for_bench, servers, seconds))
            .join()
            .ok()
            .flatten();
        match tps {
            Some(tps) => {
                println!("pgbench -N -c {servers}: {tps:.0} tps");
                for (streamed, ours) in single_session {
                    println!(
                        "xenocorp on PostgreSQL, {servers} servers, {}: {:.2}x pgbench",
                        if streamed { "stream" } else { "unary" },
                        ours / tps
                    );
                }
            }
            None => println!("pgbench: not available"),
        }
    } else {
        println!("postgresql: skipped (set XENO_TEST_POSTGRES_URL)");
    }
}
