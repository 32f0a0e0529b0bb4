//! DeployTask to the task's first instruction, for an already-compiled Wasm module: p50 and p99
//! in process (the environment manager's core, and the task manager alone) and over mutual TLS
//! on loopback (a client calling the XenoServer); plus first-deploy latency, which includes
//! compiling the module. The guest's first act is to read the real-time clock and print it, so
//! "first instruction" is measured by the guest itself against the time the deploy began.
//!
//! Run: `cargo bench -p xeno-tests --bench deploy` (DEPLOYS=500 by default).

use hdrhistogram::Histogram;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::Duration;
use tonic::Request;
use xeno_clients::transport::{Credentials, Peer, connect};
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, PurchaseOrder, Restrictions, TaskDescription};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as corp_pb;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::server::v1::xeno_server_client::XenoServerClient;
use xeno_schemas::proto::taskmanager::v1 as tm;
use xeno_schemas::signing::{SigningKey, pem_to_der};

/// Reads the real-time clock, writes its 8 bytes to stdout, exits. `$salt` varies the module's
/// bytes (and so its hash) without changing what it does.
fn guest(salt: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
  (import "wasi_snapshot_preview1" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $salt i32 (i32.const {salt}))
  (func (export "_start")
    (drop (call $clock (i32.const 0) (i64.const 1) (i32.const 16)))
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 8))
    (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    ))
    .expect("WAT")
}

fn now_ns() -> u64 {
    u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos()).unwrap_or(0)
}

fn task(wasm: &[u8]) -> (String, Vec<common::Payload>) {
    let sha256 = hex::encode(Sha256::digest(wasm));
    (
        TaskDescription::new(Program::WasmModule {
            sha256: sha256.clone(),
            entry: None,
        })
        .to_xml(),
        vec![common::Payload {
            sha256,
            data: wasm.to_vec(),
        }],
    )
}

struct Stats(Histogram<u64>);

impl Stats {
    fn new() -> Stats {
        Stats(Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram"))
    }
    fn record(&mut self, ns: u64) {
        let _ = self.0.record(ns.max(1));
    }
    fn line(&self, what: &str) {
        println!(
            "{what:<44} {:>10.1} {:>10.1} {:>8}",
            self.0.value_at_quantile(0.5) as f64 / 1000.0,
            self.0.value_at_quantile(0.99) as f64 / 1000.0,
            self.0.len()
        );
    }
}

/// The first-instruction timestamps the tasks of a domain printed, by task id.
async fn first_instructions(
    manager: &xeno_taskmgr_kit::DynTaskManager,
    domain: &str,
) -> HashMap<String, u64> {
    use tokio_stream::StreamExt;
    let mut stream = manager
        .stream_output(Request::new(tm::StreamOutputRequest {
            domain_id: domain.to_owned(),
            from_offset: HashMap::new(),
            follow: false,
        }))
        .await
        .expect("stream")
        .into_inner();
    let mut bytes: HashMap<String, Vec<u8>> = HashMap::new();
    while let Some(Ok(event)) = stream.next().await {
        if let Some(tm::domain_event::Event::Output(chunk)) = event.event {
            bytes.entry(chunk.task_id).or_default().extend(chunk.data);
        }
    }
    bytes
        .into_iter()
        .filter_map(|(task, data)| {
            Some((task, u64::from_le_bytes(data.get(..8)?.try_into().ok()?)))
        })
        .collect()
}

async fn wait_ended(manager: &xeno_taskmgr_kit::DynTaskManager, domain: &str, task: &str) {
    for _ in 0..2000 {
        let state = manager
            .inspect_task(Request::new(tm::InspectTaskRequest {
                domain_id: domain.to_owned(),
                task_id: task.to_owned(),
            }))
            .await
            .map(|r| r.into_inner().state)
            .unwrap_or(0);
        if state == common::TaskState::Exited as i32 {
            return;
        }
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
}

fn main() {
    let deploys: usize = std::env::var("DEPLOYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run(deploys));
}

async fn run(deploys: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let corp = xeno_corp::daemon::start(xeno_corp::config::Config {
        data_dir: dir.path().join("corp"),
        listen: "127.0.0.1:0".parse().expect("address"),
        web_listen: None,
        ..xeno_corp::config::Config::default()
    })
    .await
    .expect("corp");
    let ca = corp.ca_certificate_pem.clone();
    let anonymous = || async {
        XenoCorpClient::new(
            connect(&corp.grpc_addr.to_string(), &ca, None, &Peer::Corp(None))
                .await
                .expect("connect"),
        )
    };
    let (server_key, server_csr) = xeno_clients::identity::key_and_csr("xenoserver").expect("csr");
    let registered = anonymous()
        .await
        .register_server(corp_pb::RegisterServerRequest {
            owner_name: "bench".into(),
            owner_address: "x".into(),
            payout_details: "x".into(),
            machine: Some(corp_pb::MachineSpec {
                architecture: "x86_64".into(),
                cpu_cores: 2,
                memory_mb: 4096,
                ..Default::default()
            }),
            csr_pem: server_csr,
            endpoint: "127.0.0.1:7443".into(),
        })
        .await
        .expect("server")
        .into_inner();
    std::fs::write(dir.path().join("ca.pem"), &ca).expect("write");
    std::fs::write(dir.path().join("cert.pem"), &registered.certificate_pem).expect("write");
    std::fs::write(dir.path().join("key.pem"), &server_key).expect("write");
    // The bench opens a new 1000-CPUmsps session every 200 deploys and keeps the old ones, so
    // the capacity is set beyond what admission control would otherwise allow on two cores.
    let config: xeno_envmgr::config::Config = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[corps]]\nid = \"corp-a\"\naddress = \"{}\"\nca = {:?}\ncertificate = {:?}\nkey = {:?}\n[defaults]\ntasks_max = 64\n[wasm]\ntasks_max = 256\n[capacity]\ncpu_msps = 1000000\nmemory_mb = 1000000\n",
        dir.path().join("server"),
        corp.grpc_addr,
        dir.path().join("ca.pem"),
        dir.path().join("cert.pem"),
        dir.path().join("key.pem"),
    ))
    .expect("config");
    let server = xeno_envmgr::daemon::start(config).await.expect("server");
    let (client_key, client_csr) = xeno_clients::identity::key_and_csr("bench").expect("csr");
    let client = anonymous()
        .await
        .register_client(corp_pb::RegisterClientRequest {
            name: "bench".into(),
            address: "x".into(),
            charging_details: "x".into(),
            privacy: 1,
            csr_pem: client_csr,
        })
        .await
        .expect("client")
        .into_inner();
    xeno_clients::corp_admin::connect(&corp.admin_socket)
        .await
        .expect("admin")
        .deposit(corp_pb::DepositRequest {
            account_id: client.account_id.clone(),
            amount: Some(common::Money {
                currency: "GBP".into(),
                amount_minor: 1_000_000_000,
            }),
        })
        .await
        .expect("deposit");
    let credentials = Credentials {
        certificate_pem: client.certificate_pem,
        key_pem: client_key.clone(),
    };
    let corp_client = XenoCorpClient::new(
        connect(
            &corp.grpc_addr.to_string(),
            &ca,
            Some(&credentials),
            &Peer::Corp(None),
        )
        .await
        .expect("mTLS"),
    );
    let key = SigningKey::from_pkcs8_der(&pem_to_der(&client_key, "PRIVATE KEY").expect("pem"))
        .expect("key");
    let mut remote = XenoServerClient::new(
        connect(
            &server.grpc_addr.to_string(),
            &ca,
            Some(&credentials),
            &Peer::Server(server.server_id.clone()),
        )
        .await
        .expect("server mTLS"),
    );
    let caller = xeno_envmgr::daemon::ClientId {
        corp: "corp-a".into(),
        account: client.account_id.clone(),
    };
    let manager = xeno_taskmgr_kit::DynTaskManager::clone(&server.server.managers["Wasm"].handle);

    let session_remote = remote.clone();
    let new_session = || {
        let mut corp_client = corp_client.clone();
        let mut remote = session_remote.clone();
        let key = &key;
        let server_id = server.server_id.clone();
        async move {
            let created = corp_client
                .create_purchase_order(corp_pb::CreatePurchaseOrderRequest {
                    amount: Some(common::Money {
                        currency: "GBP".into(),
                        amount_minor: 1_000_000,
                    }),
                    lifetime_seconds: 3600,
                })
                .await
                .expect("order")
                .into_inner();
            let mut order =
                PurchaseOrder::parse(created.purchase_order_xml.as_bytes()).expect("order");
            order.client_restrictions = Some(Restrictions {
                servers: Some(vec![server_id]),
                ..Restrictions::default()
            });
            order.client_signature = Some(key.sign(&order.client_signed_bytes()).expect("sign"));
            let mut requirements =
                xeno_schemas::documents::EnvironmentalRequirements::new("bench", "Wasm");
            requirements.qos.cpu_msps = Some(1000);
            remote
                .create_session(pb::CreateSessionRequest {
                    requirements_xml: requirements.to_xml(),
                    purchase_order_xml: order.to_xml(),
                })
                .await
                .expect("session")
                .into_inner()
                .session_id
        }
    };

    println!(
        "DeployTask to the task's first instruction (Wasm, already-compiled module unless noted)"
    );
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "path", "p50 µs", "p99 µs", "samples"
    );
    let hot = guest(0);
    let (hot_xml, hot_payloads) = task(&hot);
    // Warm the module cache.
    let warm = new_session().await;
    server
        .server
        .deploy(&caller, &warm, &hot_xml, hot_payloads.clone())
        .await
        .expect("warm-up deploy");

    // The task manager alone, in process.
    let mut stats = Stats::new();
    let mut session = new_session().await;
    let mut started: HashMap<String, u64> = HashMap::new();
    for index in 0..deploys {
        if index > 0 && index % 200 == 0 {
            for (task, first) in first_instructions(&manager, &session).await {
                stats.record(first.saturating_sub(started[&task]));
            }
            started.clear();
            session = new_session().await;
        }
        let task_id = format!("bench-{index}");
        let begin = now_ns();
        manager
            .deploy_task(Request::new(tm::DeployTaskRequest {
                domain_id: session.clone(),
                task_id: task_id.clone(),
                task_xml: hot_xml.clone(),
                payloads: hot_payloads.clone(),
            }))
            .await
            .expect("deploy");
        started.insert(task_id.clone(), begin);
        wait_ended(&manager, &session, &task_id).await;
    }
    for (task, first) in first_instructions(&manager, &session).await {
        stats.record(first.saturating_sub(started[&task]));
    }
    stats.line("task manager, in process");

    // The environment manager's core, in process (document parsing, hashes, dispatch).
    let mut stats = Stats::new();
    let mut session = new_session().await;
    let mut started: HashMap<String, u64> = HashMap::new();
    for index in 0..deploys {
        if index > 0 && index % 200 == 0 {
            for (task, first) in first_instructions(&manager, &session).await {
                stats.record(first.saturating_sub(started[&task]));
            }
            started.clear();
            session = new_session().await;
        }
        let begin = now_ns();
        let task_id = server
            .server
            .deploy(&caller, &session, &hot_xml, hot_payloads.clone())
            .await
            .expect("deploy");
        started.insert(task_id.clone(), begin);
        wait_ended(&manager, &session, &task_id).await;
    }
    for (task, first) in first_instructions(&manager, &session).await {
        stats.record(first.saturating_sub(started[&task]));
    }
    stats.line("environment manager core, in process");

    // A client over mutual TLS on loopback.
    let mut stats = Stats::new();
    let mut session = new_session().await;
    let mut started: HashMap<String, u64> = HashMap::new();
    for index in 0..deploys {
        if index > 0 && index % 200 == 0 {
            for (task, first) in first_instructions(&manager, &session).await {
                stats.record(first.saturating_sub(started[&task]));
            }
            started.clear();
            session = new_session().await;
        }
        let begin = now_ns();
        let task_id = remote
            .deploy_task(pb::DeployTaskRequest {
                session_id: session.clone(),
                task_xml: hot_xml.clone(),
                payloads: hot_payloads.clone(),
            })
            .await
            .expect("deploy")
            .into_inner()
            .task_id;
        started.insert(task_id.clone(), begin);
        wait_ended(&manager, &session, &task_id).await;
    }
    for (task, first) in first_instructions(&manager, &session).await {
        stats.record(first.saturating_sub(started[&task]));
    }
    stats.line("client over mTLS on loopback");

    // First deploys: each module is new, so it is compiled.
    let mut stats = Stats::new();
    let session = new_session().await;
    let mut started: HashMap<String, u64> = HashMap::new();
    for index in 0..deploys.min(200) {
        let (xml, payloads) = task(&guest(u32::try_from(index).unwrap_or(0) + 1));
        let begin = now_ns();
        let task_id = remote
            .deploy_task(pb::DeployTaskRequest {
                session_id: session.clone(),
                task_xml: xml,
                payloads,
            })
            .await
            .expect("deploy")
            .into_inner()
            .task_id;
        started.insert(task_id.clone(), begin);
        wait_ended(&manager, &session, &task_id).await;
    }
    for (task, first) in first_instructions(&manager, &session).await {
        stats.record(first.saturating_sub(started[&task]));
    }
    stats.line("first deploy (compile), client over mTLS");
    server.shutdown().await;
    corp.shutdown().await;
}
