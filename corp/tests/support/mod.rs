//! A corp for tests: started in process on a fresh data directory (SQLite) or a fresh
//! PostgreSQL database, with helpers that act as clients and servers over real mutual TLS.
#![allow(dead_code)]

use std::time::Duration;
use tonic::transport::Channel;
use xeno_clients::transport::{Credentials, Peer, connect};
use xeno_corp::config::Config;
use xeno_corp::daemon::RunningCorp;
use xeno_schemas::Document;
use xeno_schemas::documents::{Money, PurchaseOrder, Restrictions, UsageRecord};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as pb;
use xeno_schemas::proto::corp::v1::corp_admin_client::CorpAdminClient;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;
use xeno_schemas::signing::{SigningKey, pem_to_der};

/// Where a test corp keeps its state.
#[derive(Debug, Clone)]
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on the PostgreSQL server at this URL.
    Postgres(String),
}

/// The environment variable naming a PostgreSQL server for tests (`.ci/run` sets it).
pub const POSTGRES_URL_VARIABLE: &str = "XENO_TEST_POSTGRES_URL";

/// Every backend available: SQLite always; PostgreSQL when configured. Under CI a missing
/// PostgreSQL is an error, not a skip.
pub fn backends() -> Vec<Backend> {
    let mut backends = vec![Backend::Sqlite];
    match std::env::var(POSTGRES_URL_VARIABLE) {
        Ok(url) => backends.push(Backend::Postgres(url)),
        Err(_) => xeno_tests::prerequisite::missing(&format!(
            "PostgreSQL backend not configured (set {POSTGRES_URL_VARIABLE}; .ci/run starts PostgreSQL)"
        )),
    }
    backends
}

/// Creates a fresh database on the server at `url` and returns its URL.
pub fn fresh_postgres_database(url: &str) -> String {
    let name = format!("xeno_test_{}", hex::encode(rand::random::<[u8; 6]>()));
    let url = url.to_owned();
    let created = name.clone();
    std::thread::spawn(move || {
        let mut client = postgres::Client::connect(&url, postgres::NoTls)
            .expect("connecting to the test PostgreSQL");
        client
            .batch_execute(&format!("CREATE DATABASE {created}"))
            .expect("creating a test database");
        let base = url
            .rsplit_once('/')
            .map_or(url.as_str(), |(base, _)| base)
            .to_owned();
        format!("{base}/{created}")
    })
    .join()
    .expect("database creation thread")
}

/// A corp under test.
pub struct TestCorp {
    pub running: Option<RunningCorp>,
    pub config: Config,
    pub dir: tempfile::TempDir,
}

/// A registered client or server with its mTLS connection to the corp.
pub struct Party {
    pub id: String,
    pub credentials: Credentials,
    pub signing_key: SigningKey,
    pub corp: XenoCorpClient<Channel>,
}

pub fn test_config(backend: &Backend, dir: &std::path::Path) -> Config {
    Config {
        corp_id: "corp-t".to_owned(),
        data_dir: dir.to_owned(),
        listen: "127.0.0.1:0".parse().expect("address"),
        web_listen: Some("127.0.0.1:0".parse().expect("address")),
        database: match backend {
            Backend::Sqlite => "sqlite".to_owned(),
            Backend::Postgres(url) => fresh_postgres_database(url),
        },
        ..Config::default()
    }
}

impl TestCorp {
    pub async fn start(backend: &Backend) -> TestCorp {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = test_config(backend, dir.path());
        Self::start_with(config, dir).await
    }

    pub async fn start_with(config: Config, dir: tempfile::TempDir) -> TestCorp {
        let running = xeno_corp::daemon::start(config.clone())
            .await
            .expect("starting the corp");
        TestCorp {
            running: Some(running),
            config,
            dir,
        }
    }

    pub fn running(&self) -> &RunningCorp {
        self.running.as_ref().expect("running")
    }

    /// Helpers bound to the running corp.
    pub fn harness(&self) -> Harness {
        let running = self.running();
        Harness {
            address: running.grpc_addr.to_string(),
            ca: running.ca_certificate_pem.clone(),
            admin_socket: running.admin_socket.clone(),
        }
    }

    pub fn address(&self) -> String {
        self.harness().address
    }

    pub fn ca_pem(&self) -> String {
        self.harness().ca
    }

    pub async fn anonymous(&self) -> XenoCorpClient<Channel> {
        self.harness().anonymous().await
    }

    pub async fn admin(&self) -> CorpAdminClient<Channel> {
        self.harness().admin().await
    }

    pub async fn register_client(&self, name: &str, privacy: pb::PrivacyMode) -> Party {
        self.harness().register_client(name, privacy).await
    }

    pub async fn register_server(&self, name: &str) -> Party {
        self.harness().register_server(name).await
    }

    pub async fn deposit(&self, account: &str, amount_minor: u64) {
        self.harness().deposit(account, amount_minor).await;
    }

    pub async fn assert_invariants(&self) -> pb::CheckInvariantsResponse {
        self.harness().assert_invariants().await
    }

    pub async fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
    }

    pub async fn restart(&mut self) {
        self.stop().await;
        let running = xeno_corp::daemon::start(self.config.clone())
            .await
            .expect("restarting the corp");
        self.running = Some(running);
    }
}

/// An endpoint no other server of this test process has claimed (the corp refuses a second
/// claim on one endpoint).
pub fn unique_endpoint() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("server-{n}.test:7443")
}

/// Test helpers against a corp, in process or not: its gRPC address, CA and admin socket.
pub struct Harness {
    pub address: String,
    pub ca: String,
    pub admin_socket: std::path::PathBuf,
}

impl Harness {
    /// A connection without a client certificate (for registration).
    pub async fn anonymous(&self) -> XenoCorpClient<Channel> {
        XenoCorpClient::new(
            connect(&self.address, &self.ca, None, &Peer::Corp(None))
                .await
                .expect("connecting"),
        )
    }

    pub async fn admin(&self) -> CorpAdminClient<Channel> {
        xeno_clients::corp_admin::connect(&self.admin_socket)
            .await
            .expect("admin socket")
    }

    pub async fn party(&self, id: String, certificate_pem: String, key_pem: String) -> Party {
        let credentials = Credentials {
            certificate_pem,
            key_pem: key_pem.clone(),
        };
        let channel = connect(
            &self.address,
            &self.ca,
            Some(&credentials),
            &Peer::Corp(None),
        )
        .await
        .expect("mTLS connection");
        let signing_key =
            SigningKey::from_pkcs8_der(&pem_to_der(&key_pem, "PRIVATE KEY").expect("pem"))
                .expect("key");
        Party {
            id,
            credentials,
            signing_key,
            corp: XenoCorpClient::new(channel),
        }
    }

    /// The same party, connected afresh (after a restart).
    pub async fn reconnect(&self, party: &Party) -> Party {
        self.party(
            party.id.clone(),
            party.credentials.certificate_pem.clone(),
            party.credentials.key_pem.clone(),
        )
        .await
    }

    pub async fn register_client(&self, name: &str, privacy: pb::PrivacyMode) -> Party {
        let (key_pem, csr_pem) = xeno_clients::identity::key_and_csr(name).expect("csr");
        let response = self
            .anonymous()
            .await
            .register_client(pb::RegisterClientRequest {
                name: name.to_owned(),
                address: format!("1 {name} Street, Cambridge"),
                charging_details: format!("card ending 42 ({name})"),
                privacy: privacy as i32,
                csr_pem,
            })
            .await
            .expect("registering a client")
            .into_inner();
        self.party(response.account_id, response.certificate_pem, key_pem)
            .await
    }

    pub async fn register_server(&self, name: &str) -> Party {
        let (key_pem, csr_pem) = xeno_clients::identity::key_and_csr(name).expect("csr");
        let response = self
            .anonymous()
            .await
            .register_server(pb::RegisterServerRequest {
                owner_name: format!("{name} Hosting Ltd"),
                owner_address: "2 Server Lane".to_owned(),
                payout_details: "sort code 00-00-00".to_owned(),
                machine: Some(pb::MachineSpec {
                    architecture: "x86_64".to_owned(),
                    cpu_model: "test".to_owned(),
                    cpu_cores: 2,
                    memory_mb: 4096,
                    network_mbps: 1000,
                    xis_node: "xis.local:7300".to_owned(),
                }),
                csr_pem,
                endpoint: unique_endpoint(),
            })
            .await
            .expect("registering a server")
            .into_inner();
        self.party(response.server_id, response.certificate_pem, key_pem)
            .await
    }

    pub async fn deposit(&self, account: &str, amount_minor: u64) {
        self.admin()
            .await
            .deposit(pb::DepositRequest {
                account_id: account.to_owned(),
                amount: Some(gbp(amount_minor)),
            })
            .await
            .expect("deposit");
    }

    /// Asserts every ledger invariant.
    pub async fn assert_invariants(&self) -> pb::CheckInvariantsResponse {
        let report = self
            .admin()
            .await
            .check_invariants(pb::CheckInvariantsRequest {})
            .await
            .expect("check")
            .into_inner();
        assert!(
            report.violations.is_empty(),
            "ledger invariants violated: {:#?}",
            report.violations
        );
        report
    }
}

pub fn gbp(minor: u64) -> common::Money {
    common::Money {
        currency: "GBP".to_owned(),
        amount_minor: minor,
    }
}

impl Party {
    pub async fn buy(&mut self, amount_minor: u64) -> PurchaseOrder {
        let response = self
            .corp
            .create_purchase_order(pb::CreatePurchaseOrderRequest {
                amount: Some(gbp(amount_minor)),
                lifetime_seconds: 0,
            })
            .await
            .expect("creating an order")
            .into_inner();
        PurchaseOrder::parse(response.purchase_order_xml.as_bytes())
            .expect("the corp's order parses")
    }

    /// The order with the client's restrictions added and signed.
    pub fn sign(&self, order: &PurchaseOrder, restrictions: Option<Restrictions>) -> PurchaseOrder {
        let mut signed = PurchaseOrder {
            client_restrictions: restrictions,
            client_signature: None,
            ..order.clone()
        };
        signed.client_signature = Some(
            self.signing_key
                .sign(&signed.client_signed_bytes())
                .expect("signing"),
        );
        signed
    }

    pub async fn validate(
        &mut self,
        order: &PurchaseOrder,
        session: &str,
        env_type: &str,
    ) -> Result<pb::ValidatePurchaseOrderResponse, tonic::Status> {
        self.corp
            .validate_purchase_order(pb::ValidatePurchaseOrderRequest {
                purchase_order_xml: order.to_xml(),
                session_id: session.to_owned(),
                requirements_xml: requirements(env_type, Some(150)),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn charge(
        &mut self,
        order_id: &str,
        sequence: u64,
        amount_minor: u64,
    ) -> Result<pb::ChargeResponse, tonic::Status> {
        self.corp
            .charge_from_purchase_order(pb::ChargeRequest {
                order_id: order_id.to_owned(),
                sequence,
                amount: Some(gbp(amount_minor)),
                usage_record_xml: usage_xml(order_id, sequence, amount_minor),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    pub async fn account(&mut self) -> pb::GetAccountResponse {
        self.corp
            .get_account(pb::GetAccountRequest {})
            .await
            .expect("account")
            .into_inner()
    }
}

pub fn requirements(env_type: &str, cpu_msps: Option<u64>) -> String {
    let mut requirements =
        xeno_schemas::documents::EnvironmentalRequirements::new("test", env_type);
    requirements.qos.cpu_msps = cpu_msps;
    requirements.to_xml()
}

/// A usage record for a charge, as a server would annotate it.
pub fn usage_xml(order_id: &str, sequence: u64, amount_minor: u64) -> String {
    let start = time::OffsetDateTime::from_unix_timestamp(1_800_000_000).expect("time")
        + time::Duration::seconds(i64::try_from(sequence).unwrap_or(0));
    UsageRecord {
        order_id: order_id.to_owned(),
        session_id: "s-1".to_owned(),
        sequence,
        period_start: start,
        period_end: start + time::Duration::seconds(1),
        cpu_ms: 150,
        memory_mb_ms: 64_000,
        network_bytes_in: None,
        network_bytes_out: None,
        fuel: Some(1_000_000),
        syscalls: None,
        output_bytes: Some(12),
        charge: Money {
            currency: "GBP".parse().expect("GBP"),
            minor: amount_minor,
        },
        activity: Some(format!("task hello running (charge {sequence})")),
        tasks: Vec::new(),
        extensions: Vec::new(),
    }
    .to_xml()
}

/// The available balance in GBP of an account answer.
pub fn available_gbp(account: &pb::GetAccountResponse) -> u64 {
    account
        .balances
        .iter()
        .find_map(|b| {
            b.available
                .as_ref()
                .filter(|m| m.currency == "GBP")
                .map(|m| m.amount_minor)
        })
        .unwrap_or(0)
}

pub fn reserved_gbp(account: &pb::GetAccountResponse) -> u64 {
    account
        .balances
        .iter()
        .find_map(|b| {
            b.reserved
                .as_ref()
                .filter(|m| m.currency == "GBP")
                .map(|m| m.amount_minor)
        })
        .unwrap_or(0)
}

/// Waits until `condition` holds or a generous deadline passes.
pub async fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    for _ in 0..200 {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    false
}
