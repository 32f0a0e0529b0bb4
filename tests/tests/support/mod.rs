//! A whole platform for tests: a XenoCorp and a XenoServer (with the built-in Wasm task manager,
//! or an external one) on loopback, and a client acting over real mutual TLS.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tonic::transport::Channel;
use xeno_clients::transport::{Credentials, Peer, connect};
use xeno_schemas::Document;
use xeno_schemas::documents::{
    EnvironmentalRequirements, Program, PurchaseOrder, Restrictions, TaskDescription,
};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as corp_pb;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::server::v1::xeno_server_client::XenoServerClient;
use xeno_schemas::signing::{SigningKey, pem_to_der};

pub const POUND: u64 = 1_000_000;

pub fn gbp(minor: u64) -> Option<common::Money> {
    Some(common::Money {
        currency: "GBP".to_owned(),
        amount_minor: minor,
    })
}

/// The corp, the server's credentials at it, and a funded client.
pub struct Platform {
    pub dir: tempfile::TempDir,
    pub corp: xeno_corp::daemon::RunningCorp,
    pub corp_config: xeno_corp::config::Config,
    pub server: Option<xeno_envmgr::daemon::RunningServer>,
    pub server_config: xeno_envmgr::config::Config,
    pub client: Client,
}

/// A client with its connections.
pub struct Client {
    pub id: String,
    pub credentials: Credentials,
    pub key: SigningKey,
    pub corp: XenoCorpClient<Channel>,
    pub ca: String,
}

async fn register_server(
    corp: &xeno_corp::daemon::RunningCorp,
    dir: &Path,
) -> (PathBuf, PathBuf, PathBuf) {
    let (key_pem, csr_pem) = xeno_clients::identity::key_and_csr("xenoserver").expect("csr");
    let mut anonymous = XenoCorpClient::new(
        connect(
            &corp.grpc_addr.to_string(),
            &corp.ca_certificate_pem,
            None,
            &Peer::Corp(None),
        )
        .await
        .expect("connect"),
    );
    let response = anonymous
        .register_server(corp_pb::RegisterServerRequest {
            owner_name: "Test Hosting".to_owned(),
            owner_address: "1 Rack Row".to_owned(),
            payout_details: "bank".to_owned(),
            machine: Some(corp_pb::MachineSpec {
                architecture: "x86_64".to_owned(),
                cpu_cores: 2,
                memory_mb: 4096,
                ..Default::default()
            }),
            csr_pem,
            // Each server claims its own endpoint (the corp refuses a second claim).
            endpoint: {
                static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                format!("server-{n}.test:7443")
            },
        })
        .await
        .expect("register server")
        .into_inner();
    let (ca, certificate, key) = (
        dir.join("corp-ca.pem"),
        dir.join("server-cert.pem"),
        dir.join("server-key.pem"),
    );
    std::fs::write(&ca, &corp.ca_certificate_pem).expect("write");
    std::fs::write(&certificate, response.certificate_pem).expect("write");
    std::fs::write(&key, key_pem).expect("write");
    (ca, certificate, key)
}

impl Platform {
    /// A platform whose server takes `extra` TOML (e.g. task managers, capacity) on top of
    /// fast metering.
    pub async fn start(extra: &str) -> Platform {
        let dir = tempfile::tempdir().expect("tempdir");
        let corp_config = xeno_corp::config::Config {
            corp_id: "corp-e".to_owned(),
            data_dir: dir.path().join("corp"),
            listen: "127.0.0.1:0".parse().expect("address"),
            web_listen: None,
            ..xeno_corp::config::Config::default()
        };
        let mut corp_config = corp_config;
        let corp = xeno_corp::daemon::start(corp_config.clone())
            .await
            .expect("corp");
        // A restarted corp comes back where the server expects it.
        corp_config.listen = corp.grpc_addr;
        let (ca, certificate, key) = register_server(&corp, dir.path()).await;
        let server_config: xeno_envmgr::config::Config = toml::from_str(&format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[corps]]\nid = \"corp-e\"\naddress = \"{}\"\nca = {ca:?}\ncertificate = {certificate:?}\nkey = {key:?}\n[wasm]\ntasks_max = 64\ndomains_max = 32\n{extra}\n",
            dir.path().join("server"),
            corp.grpc_addr,
        ))
        .expect("server config");
        let server = xeno_envmgr::daemon::start(server_config.clone())
            .await
            .expect("server");
        let client = Self::new_client(&corp, "Alice").await;
        xeno_clients::corp_admin::connect(&corp.admin_socket)
            .await
            .expect("admin")
            .deposit(corp_pb::DepositRequest {
                account_id: client.id.clone(),
                amount: gbp(100 * POUND),
            })
            .await
            .expect("deposit");
        Platform {
            dir,
            corp,
            corp_config,
            server: Some(server),
            server_config,
            client,
        }
    }

    pub async fn new_client(corp: &xeno_corp::daemon::RunningCorp, name: &str) -> Client {
        let ca = corp.ca_certificate_pem.clone();
        let (key_pem, csr_pem) = xeno_clients::identity::key_and_csr(name).expect("csr");
        let mut anonymous = XenoCorpClient::new(
            connect(&corp.grpc_addr.to_string(), &ca, None, &Peer::Corp(None))
                .await
                .expect("connect"),
        );
        let response = anonymous
            .register_client(corp_pb::RegisterClientRequest {
                name: name.to_owned(),
                address: "1 Road".to_owned(),
                charging_details: "card".to_owned(),
                privacy: corp_pb::PrivacyMode::Identified as i32,
                csr_pem,
            })
            .await
            .expect("register client")
            .into_inner();
        let credentials = Credentials {
            certificate_pem: response.certificate_pem,
            key_pem: key_pem.clone(),
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
        let key = SigningKey::from_pkcs8_der(&pem_to_der(&key_pem, "PRIVATE KEY").expect("pem"))
            .expect("key");
        Client {
            id: response.account_id,
            credentials,
            key,
            corp: corp_client,
            ca,
        }
    }

    pub fn server(&self) -> &xeno_envmgr::daemon::RunningServer {
        self.server.as_ref().expect("server running")
    }

    pub async fn restart_server(&mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        self.server = Some(
            xeno_envmgr::daemon::start(self.server_config.clone())
                .await
                .expect("server restart"),
        );
    }

    /// Stops the corp, keeps it down for `outage`, and starts it again on the same address.
    pub async fn corp_outage(&mut self, outage: std::time::Duration) {
        self.corp.stop().await;
        tokio::time::sleep(outage).await;
        self.corp = xeno_corp::daemon::start(self.corp_config.clone())
            .await
            .expect("corp restart");
    }

    pub async fn invariants(&self) {
        let report = xeno_clients::corp_admin::connect(&self.corp.admin_socket)
            .await
            .expect("admin")
            .check_invariants(corp_pb::CheckInvariantsRequest {})
            .await
            .expect("check")
            .into_inner();
        assert!(report.violations.is_empty(), "{:?}", report.violations);
    }
}

impl Client {
    /// Connects to the XenoServer.
    pub async fn server(&self, platform: &Platform) -> XenoServerClient<Channel> {
        XenoServerClient::new(
            connect(
                &platform.server().grpc_addr.to_string(),
                &self.ca,
                Some(&self.credentials),
                &Peer::Server(platform.server().server_id.clone()),
            )
            .await
            .expect("server mTLS"),
        )
        .max_encoding_message_size(128 << 20)
    }

    /// Buys an order and signs it, restricted to `server_id`.
    pub async fn order(&mut self, amount_minor: u64, server_id: &str) -> PurchaseOrder {
        let created = self
            .corp
            .create_purchase_order(corp_pb::CreatePurchaseOrderRequest {
                amount: gbp(amount_minor),
                lifetime_seconds: 3600,
            })
            .await
            .expect("order")
            .into_inner();
        let mut order = PurchaseOrder::parse(created.purchase_order_xml.as_bytes()).expect("parse");
        order.client_restrictions = Some(Restrictions {
            servers: Some(vec![server_id.to_owned()]),
            ..Restrictions::default()
        });
        order.client_signature = Some(self.key.sign(&order.client_signed_bytes()).expect("sign"));
        order
    }

    pub async fn account(&mut self) -> corp_pb::GetAccountResponse {
        self.corp
            .get_account(corp_pb::GetAccountRequest {})
            .await
            .expect("account")
            .into_inner()
    }

    pub async fn audit(&mut self, order_id: &str) -> corp_pb::AuditOrderResponse {
        self.corp
            .audit_order(corp_pb::AuditOrderRequest {
                order_id: order_id.to_owned(),
                ..Default::default()
            })
            .await
            .expect("audit")
            .into_inner()
    }
}

pub fn requirements(cpu_msps: u64, memory_mb: u64) -> String {
    let mut requirements = EnvironmentalRequirements::new("test", "Wasm");
    requirements.qos.cpu_msps = Some(cpu_msps);
    requirements.qos.memory_mb = Some(memory_mb);
    requirements.to_xml()
}

/// A WASI module and the task that runs it.
pub fn wasm_task(wat: &str, name: &str) -> (String, Vec<common::Payload>) {
    let wasm = wat::parse_str(wat).expect("WAT");
    let sha256 = hex::encode(Sha256::digest(&wasm));
    let mut task = TaskDescription::new(Program::WasmModule {
        sha256: sha256.clone(),
        entry: None,
    });
    task.name = Some(name.to_owned());
    (task.to_xml(), vec![common::Payload { sha256, data: wasm }])
}

/// Prints `text` and exits 0.
pub fn hello_wat(text: &str) -> String {
    let escaped: String = text.bytes().map(|b| format!("\\{b:02x}")).collect();
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "{escaped}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const {}))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        text.len()
    )
}

/// Burns CPU forever.
pub const SPIN_WAT: &str = r#"(module
  (func (export "_start") (loop $forever (br $forever))))"#;

/// Collects a session's events until `stop` says so or the deadline passes.
/// A session paid by a new order of `amount_minor`, with `cpu_msps`, running the spinning task:
/// the client's connection to the server, the order and the session id.
pub async fn spinning_session(
    platform: &mut Platform,
    amount_minor: u64,
    cpu_msps: u64,
) -> (XenoServerClient<Channel>, PurchaseOrder, String) {
    let server_id = platform.server().server_id.clone();
    let order = platform.client.order(amount_minor, &server_id).await;
    let mut server = platform.client.server(platform).await;
    let session = server
        .create_session(pb::CreateSessionRequest {
            requirements_xml: requirements(cpu_msps, 32),
            purchase_order_xml: order.to_xml(),
        })
        .await
        .expect("session")
        .into_inner();
    let (spin_xml, spin_payloads) = wasm_task(SPIN_WAT, "spin");
    server
        .deploy_task(pb::DeployTaskRequest {
            session_id: session.session_id.clone(),
            task_xml: spin_xml,
            payloads: spin_payloads,
        })
        .await
        .expect("deploy");
    (server, order, session.session_id)
}

pub async fn collect_events(
    server: &mut XenoServerClient<Channel>,
    session: &str,
    follow: bool,
    mut stop: impl FnMut(&pb::SessionEvent) -> bool,
) -> Vec<pb::SessionEvent> {
    let mut stream = server
        .watch_session(pb::WatchSessionRequest {
            session_id: session.to_owned(),
            from_offset: Default::default(),
            follow,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let next = tokio::time::timeout_at(deadline, stream.message()).await;
        match next {
            Ok(Ok(Some(event))) => {
                let done = stop(&event);
                events.push(event);
                if done {
                    break;
                }
            }
            Ok(Ok(None)) | Err(_) => break,
            Ok(Err(status)) => panic!("watch failed: {status}"),
        }
    }
    events
}

/// The stdout text among `events`.
pub fn stdout_of(events: &[pb::SessionEvent]) -> String {
    events
        .iter()
        .filter_map(|event| match &event.event {
            Some(pb::session_event::Event::Output(chunk))
                if chunk.stream == common::OutputStream::Stdout as i32 =>
            {
                Some(String::from_utf8_lossy(&chunk.data).into_owned())
            }
            _ => None,
        })
        .collect()
}
