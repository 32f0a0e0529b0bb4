//! The corp process killed with SIGKILL in the middle of a charge storm, then restarted: every
//! charge it acknowledged is there, and every invariant holds. On every backend.

mod support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::*;
use xeno_clients::charging::Charger;
use xeno_schemas::proto::corp::v1 as pb;

struct CorpProcess {
    child: Child,
    grpc: String,
}

fn spawn(config_path: &std::path::Path) -> CorpProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_xenocorp"))
        .args([
            "--config",
            config_path.to_str().expect("utf-8 path"),
            "serve",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "warn")
        .spawn()
        .expect("starting xenocorp");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("reading the ready line");
    let grpc = line
        .split_whitespace()
        .find_map(|word| word.strip_prefix("grpc="))
        .unwrap_or_else(|| panic!("no grpc= in {line:?}"))
        .to_owned();
    CorpProcess { child, grpc }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_charges_survive_sigkill() {
    for backend in backends() {
        storm_and_kill(&backend).await;
    }
}

async fn storm_and_kill(backend: &Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let database = match backend {
        Backend::Sqlite => "sqlite".to_owned(),
        Backend::Postgres(url) => fresh_postgres_database(url),
    };
    let config_path = dir.path().join("xenocorp.toml");
    std::fs::write(
        &config_path,
        format!(
            "corp_id = \"corp-k\"\ndata_dir = {:?}\nlisten = \"127.0.0.1:0\"\nweb_listen = \"127.0.0.1:0\"\ndatabase = {database:?}\n",
            dir.path().join("data")
        ),
    )
    .expect("config");
    let mut process = spawn(&config_path);
    let ca = std::fs::read_to_string(dir.path().join("data/ca-cert.pem")).expect("CA certificate");
    let admin_socket = dir.path().join("data/admin.sock");

    // Parties and orders, through a TestCorp-like helper bound to the external process.
    let harness = Harness {
        address: process.grpc.clone(),
        ca: ca.clone(),
        admin_socket: admin_socket.clone(),
    };
    let mut alice = harness
        .register_client("Alice", pb::PrivacyMode::Identified)
        .await;
    harness.deposit(&alice.id, 1_000_000_000).await;
    let mut servers = Vec::new();
    for index in 0..8 {
        let mut server = harness.register_server(&format!("xs{index}")).await;
        let bought = alice.buy(50_000_000).await;
        let order = alice.sign(&bought, None);
        server
            .validate(&order, &format!("s{index}"), "Wasm")
            .await
            .expect("validate");
        servers.push((server, order.issued.order_id.clone()));
    }

    let acknowledged: Arc<std::sync::Mutex<HashMap<(String, u64), u64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut storm = tokio::task::JoinSet::new();
    for (server, order_id) in &servers {
        // Two lanes per order: odd sequences by the unary call, even ones over the server's
        // charge stream.
        let charger = Charger::new(server.corp.clone());
        for lane in 0..2u64 {
            let client = server.corp.clone();
            let charger = charger.clone();
            let order_id = order_id.clone();
            let acknowledged = Arc::clone(&acknowledged);
            let stop = Arc::clone(&stop);
            storm.spawn(async move {
                let mut sequence = lane;
                while !stop.load(Ordering::Relaxed) {
                    sequence += 2;
                    let amount = 1000 + sequence;
                    let request = pb::ChargeRequest {
                        order_id: order_id.clone(),
                        sequence,
                        amount: Some(gbp(amount)),
                        usage_record_xml: usage_xml(&order_id, sequence, amount),
                    };
                    let answer = if lane == 0 {
                        client
                            .clone()
                            .charge_from_purchase_order(request)
                            .await
                            .map(tonic::Response::into_inner)
                    } else {
                        charger.charge(request).await
                    };
                    match answer {
                        Ok(response) if response.outcome == pb::ChargeOutcome::Charged as i32 => {
                            acknowledged
                                .lock()
                                .expect("lock")
                                .insert((order_id.clone(), sequence), amount);
                        }
                        Ok(_) => {}
                        Err(_) => return,
                    }
                }
            });
        }
    }
    // Let the storm build up, then kill the corp mid-flight.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while acknowledged.lock().expect("lock").len() < 2000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process.child.kill().expect("SIGKILL");
    process.child.wait().expect("reaping");
    stop.store(true, Ordering::Relaxed);
    while storm.join_next().await.is_some() {}
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(
        acknowledged.len() >= 100,
        "the storm acknowledged only {} charges",
        acknowledged.len()
    );

    // Restart on the same state and check.
    let process = spawn(&config_path);
    let harness = Harness {
        address: process.grpc.clone(),
        ca,
        admin_socket,
    };
    let mut alice_again = harness.reconnect(&alice).await;
    for (_, order_id) in &servers {
        let audit = alice_again
            .corp
            .audit_order(pb::AuditOrderRequest {
                order_id: order_id.clone(),
                ..Default::default()
            })
            .await
            .expect("audit")
            .into_inner();
        let present: HashMap<u64, u64> = audit
            .charges
            .iter()
            .map(|charge| {
                (
                    charge.sequence,
                    charge.amount.as_ref().expect("amount").amount_minor,
                )
            })
            .collect();
        for ((order, sequence), amount) in &acknowledged {
            if order == order_id {
                assert_eq!(
                    present.get(sequence),
                    Some(amount),
                    "acknowledged charge {order} #{sequence} lost"
                );
            }
        }
        let total: u64 = present.values().sum();
        assert_eq!(
            audit
                .order
                .expect("order")
                .charged
                .expect("charged")
                .amount_minor,
            total
        );
    }
    let report = harness.assert_invariants().await;
    assert!(report.charges as usize >= acknowledged.len());
    let mut process = process;
    process.child.kill().expect("stopping");
    let _ = process.child.wait();
}
