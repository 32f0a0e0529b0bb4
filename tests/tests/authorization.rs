//! The authorization matrix: every RPC of the corp and of a XenoServer, called by every kind of
//! caller, each with a request that is right in every other respect, and the status each must
//! get. The table below is the documentation: `docs/authorization.md` is rendered from it
//! (`XENO_WRITE_DOCS=1 cargo test -p xeno-tests --test authorization` rewrites it; the test
//! fails while the file differs).
//!
//! Then the other way round: every connection a party opens authenticates its peer by role and
//! identity, so an impostor holding a genuine certificate of the same corp is refused.

mod platform;

use platform::{
    POUND, Party, corp_in_process, gbp, key_and_csr, register_client, register_server,
    server_registration, write,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use tokio_stream::StreamExt;
use tonic::Code;
use tonic::transport::Channel;
use xeno_clients::transport::{Credentials, Peer, connect};
use xeno_schemas::Document;
use xeno_schemas::documents::{
    EnvironmentalRequirements, Money, Program, PurchaseOrder, Restrictions, TaskDescription,
    UsageRecord,
};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as corp;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;
use xeno_schemas::proto::server::v1 as server;
use xeno_schemas::proto::server::v1::xeno_server_client::XenoServerClient;

/// Who calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    /// No certificate at all.
    NoCertificate,
    /// A certificate from another corp's CA.
    OtherCorp,
    /// A certificate of this corp, past its validity.
    Expired,
    /// A client whose certificate the corp revoked.
    Revoked,
    /// The client who owns the order or the session.
    Client,
    /// Another client of the same corp.
    OtherClient,
    /// A client the operator made an auditor.
    Auditor,
    /// The server the order is (or is to be) bound to; the XenoServer itself, where it calls.
    BoundServer,
    /// Another registered server.
    OtherServer,
    /// A certificate claiming the corp's role, made by a registered server with its own key.
    PosingAsCorp,
}

const CALLERS: [Caller; 10] = [
    Caller::NoCertificate,
    Caller::OtherCorp,
    Caller::Expired,
    Caller::Revoked,
    Caller::Client,
    Caller::OtherClient,
    Caller::Auditor,
    Caller::BoundServer,
    Caller::OtherServer,
    Caller::PosingAsCorp,
];

impl Caller {
    fn heading(self) -> &'static str {
        match self {
            Caller::NoCertificate => "no certificate",
            Caller::OtherCorp => "another CA",
            Caller::Expired => "expired",
            Caller::Revoked => "revoked",
            Caller::Client => "the client",
            Caller::OtherClient => "another client",
            Caller::Auditor => "auditor",
            Caller::BoundServer => "the bound server",
            Caller::OtherServer => "another server",
            Caller::PosingAsCorp => "server posing as the corp",
        }
    }
}

/// What a call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    /// The TLS handshake refuses the caller's certificate: no call is made.
    Tls,
    Status(Code),
}

use Code::{
    FailedPrecondition as Precondition, NotFound, PermissionDenied as Denied,
    Unauthenticated as Unauth,
};
use Outcome::{Ok, Status as S, Tls};

/// Every RPC, and its outcome for each caller in [`CALLERS`] order.
const MATRIX: &[(&str, &str, [Outcome; 10])] = &[
    // Registration is open: a certificate, valid or not, is not needed.
    (
        "XenoCorp",
        "RegisterClient",
        [Ok, Tls, Tls, Ok, Ok, Ok, Ok, Ok, Ok, Tls],
    ),
    (
        "XenoCorp",
        "RegisterServer",
        [Ok, Tls, Tls, Ok, Ok, Ok, Ok, Ok, Ok, Tls],
    ),
    (
        "XenoCorp",
        "CreatePurchaseOrder",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            Ok,
            Ok,
            Ok,
            S(Denied),
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoCorp",
        "ValidatePurchaseOrder",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            S(Denied),
            S(Denied),
            S(Denied),
            Ok,
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoCorp",
        "ChargeFromPurchaseOrder",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            S(Denied),
            S(Denied),
            S(Denied),
            Ok,
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoCorp",
        "StreamCharges",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            S(Denied),
            S(Denied),
            S(Denied),
            Ok,
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoCorp",
        "ClosePurchaseOrder",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            S(Precondition),
            S(Denied),
            S(Denied),
            Ok,
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoCorp",
        "GetAccount",
        [S(Unauth), Tls, Tls, S(Unauth), Ok, Ok, Ok, Ok, Ok, Tls],
    ),
    (
        "XenoCorp",
        "AuditOrder",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            Ok,
            S(Denied),
            Ok,
            Ok,
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoCorp",
        "AuditServer",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            S(Denied),
            S(Denied),
            Ok,
            Ok,
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoCorp",
        "GetTrustInfo",
        [Ok, Tls, Tls, Ok, Ok, Ok, Ok, Ok, Ok, Tls],
    ),
    (
        "XenoCorp",
        "grpc.health.v1.Health/Check",
        [Ok, Tls, Tls, Ok, Ok, Ok, Ok, Ok, Ok, Tls],
    ),
    (
        "XenoServer",
        "QueryXenoServerStatus",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            Ok,
            Ok,
            Ok,
            S(Denied),
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoServer",
        "CreateSession",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            Ok,
            S(Denied),
            S(Denied),
            S(Denied),
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoServer",
        "DeployTask",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            Ok,
            S(NotFound),
            S(NotFound),
            S(Denied),
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoServer",
        "WatchSession",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            Ok,
            S(NotFound),
            S(NotFound),
            S(Denied),
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoServer",
        "TaskStatus",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            Ok,
            S(NotFound),
            S(NotFound),
            S(Denied),
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoServer",
        "DestroySession",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            Ok,
            S(NotFound),
            S(NotFound),
            S(Denied),
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoServer",
        "ListSessions",
        [
            S(Unauth),
            Tls,
            Tls,
            S(Unauth),
            Ok,
            Ok,
            Ok,
            S(Denied),
            S(Denied),
            Tls,
        ],
    ),
    (
        "XenoServer",
        "grpc.health.v1.Health/Check",
        [Ok, Tls, Tls, Ok, Ok, Ok, Ok, Ok, Ok, Tls],
    ),
];

/// The platform the matrix runs against.
struct World {
    _dir: tempfile::TempDir,
    corp: xeno_corp::daemon::RunningCorp,
    corp_address: String,
    ca: String,
    server: xeno_envmgr::daemon::RunningServer,
    server_address: String,
    callers: BTreeMap<Caller, Option<Credentials>>,
    client: Party,
    bound: Party,
    next_session: std::sync::atomic::AtomicU64,
}

/// A certificate for `uri`, signed by the CA whose key and certificate are given, valid
/// between the two offsets from now (days).
fn certificate(
    ca_key_pem: &str,
    ca_cert_pem: &str,
    uri: &str,
    valid_days: (i64, i64),
) -> Credentials {
    let ca_key = rcgen::KeyPair::from_pem(ca_key_pem).expect("CA key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(ca_cert_pem, ca_key).expect("issuer");
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::default();
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now + time::Duration::days(valid_days.0);
    params.not_after = now + time::Duration::days(valid_days.1);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    params
        .subject_alt_names
        .push(rcgen::SanType::URI(uri.try_into().expect("uri")));
    let certificate = params.signed_by(&key, &issuer).expect("certificate");
    Credentials {
        certificate_pem: certificate.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A self-signed CA made from `key_pem` (a registered server's own key).
fn self_made_ca(key_pem: &str) -> (String, String) {
    let key = rcgen::KeyPair::from_pem(key_pem).expect("key");
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let certificate = params.self_signed(&key).expect("self-signed");
    (key_pem.to_owned(), certificate.pem())
}

impl World {
    async fn start() -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let corp = corp_in_process(dir.path(), "corp-m").await;
        let other_corp = corp_in_process(dir.path(), "corp-x").await;
        let corp_address = corp.grpc_addr.to_string();
        let ca = corp.ca_certificate_pem.clone();
        let client = register_client(&corp_address, &ca, "Alice").await;
        let other_client = register_client(&corp_address, &ca, "Bob").await;
        let auditor = register_client(&corp_address, &ca, "Carol").await;
        let revoked = register_client(&corp_address, &ca, "Dave").await;
        let bound = register_server(&corp_address, &ca, "bound").await;
        let other_server = register_server(&corp_address, &ca, "other").await;
        let foreign = register_client(
            &other_corp.grpc_addr.to_string(),
            &other_corp.ca_certificate_pem,
            "Eve",
        )
        .await;
        let mut admin = xeno_clients::corp_admin::connect(&corp.admin_socket)
            .await
            .expect("admin");
        for account in [&client.id, &other_client.id, &auditor.id] {
            admin
                .deposit(corp::DepositRequest {
                    account_id: account.clone(),
                    amount: gbp(1000 * POUND),
                })
                .await
                .expect("deposit");
        }
        admin
            .grant_auditor(corp::GrantAuditorRequest {
                account_id: auditor.id.clone(),
            })
            .await
            .expect("auditor");
        admin
            .revoke(corp::RevokeRequest {
                account_id: revoked.id.clone(),
            })
            .await
            .expect("revoke");
        let ca_dir = dir.path().join("corp-m");
        let read = |name: &str| std::fs::read_to_string(ca_dir.join(name)).expect("CA file");
        let expired = certificate(
            &read("ca-key.pem"),
            &read("ca-cert.pem"),
            &xeno_schemas::identity::Party::client("corp-m", &client.id).uri(),
            (-3, -1),
        );
        let (fake_ca_key, fake_ca_cert) = self_made_ca(&bound.credentials.key_pem);
        let posing = certificate(
            &fake_ca_key,
            &fake_ca_cert,
            &xeno_schemas::identity::Party::corp("corp-m").uri(),
            (-1, 30),
        );

        // The XenoServer is the bound server, with the built-in Wasm task manager.
        let server_dir = dir.path().join("server");
        std::fs::create_dir_all(&server_dir).expect("server dir");
        let ca_file = write(&server_dir, "ca.pem", &ca);
        let certificate_file = write(&server_dir, "cert.pem", &bound.credentials.certificate_pem);
        let key_file = write(&server_dir, "key.pem", &bound.credentials.key_pem);
        let config: xeno_envmgr::config::Config = toml::from_str(&format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[corps]]\nid = \"corp-m\"\naddress = \"{corp_address}\"\nca = {ca_file:?}\ncertificate = {certificate_file:?}\nkey = {key_file:?}\n[metering]\nrevocation_refresh_ms = 100\n[limits]\npayload_bytes_max = 1048576\n[wasm]\ntasks_max = 64\ndomains_max = 64\n[[task_managers]]\nenv_type = \"Wasm\"\nbuiltin = \"wasm\"\n",
            server_dir.join("state")
        ))
        .expect("server config");
        let server = xeno_envmgr::daemon::start(config)
            .await
            .expect("server starts");
        let server_address = server.grpc_addr.to_string();
        // Wait until the server knows of the revocation.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let callers = BTreeMap::from([
            (Caller::NoCertificate, None),
            (Caller::OtherCorp, Some(foreign.credentials.clone())),
            (Caller::Expired, Some(expired)),
            (Caller::Revoked, Some(revoked.credentials.clone())),
            (Caller::Client, Some(client.credentials.clone())),
            (Caller::OtherClient, Some(other_client.credentials.clone())),
            (Caller::Auditor, Some(auditor.credentials.clone())),
            (Caller::BoundServer, Some(bound.credentials.clone())),
            (Caller::OtherServer, Some(other_server.credentials.clone())),
            (Caller::PosingAsCorp, Some(posing)),
        ]);
        drop(other_corp);
        World {
            _dir: dir,
            corp,
            corp_address,
            ca,
            server,
            server_address,
            callers,
            client,
            bound,
            next_session: std::sync::atomic::AtomicU64::new(1),
        }
    }

    async fn corp_as(&self, who: &Credentials) -> XenoCorpClient<Channel> {
        XenoCorpClient::new(
            connect(&self.corp_address, &self.ca, Some(who), &Peer::Corp(None))
                .await
                .expect("corp"),
        )
    }

    fn session_id(&self) -> String {
        let n = self
            .next_session
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("m-{n}")
    }

    /// A fresh order of the client's, restricted to the bound server and signed.
    async fn order(&self) -> PurchaseOrder {
        let created = self
            .corp_as(&self.client.credentials)
            .await
            .create_purchase_order(corp::CreatePurchaseOrderRequest {
                amount: gbp(POUND),
                lifetime_seconds: 600,
            })
            .await
            .expect("order")
            .into_inner();
        let mut order =
            PurchaseOrder::parse(created.purchase_order_xml.as_bytes()).expect("order parses");
        order.client_restrictions = Some(Restrictions {
            servers: Some(vec![self.bound.id.clone()]),
            ..Restrictions::default()
        });
        order.client_signature = Some(
            self.client
                .key
                .sign(&order.client_signed_bytes())
                .expect("sign"),
        );
        order
    }

    /// A fresh order bound to the bound server, charged once.
    async fn bound_order(&self) -> String {
        let order = self.order().await;
        let order_id = order.issued.order_id.clone();
        let mut corp = self.corp_as(&self.bound.credentials).await;
        corp.validate_purchase_order(corp::ValidatePurchaseOrderRequest {
            purchase_order_xml: order.to_xml(),
            session_id: self.session_id(),
            requirements_xml: requirements(),
        })
        .await
        .expect("validated");
        corp.charge_from_purchase_order(charge(&order_id, 1))
            .await
            .expect("charged");
        order_id
    }

    async fn server_as(&self, who: Option<&Credentials>) -> Result<XenoServerClient<Channel>, ()> {
        connect(
            &self.server_address,
            &self.ca,
            who,
            &Peer::Server(self.server.server_id.clone()),
        )
        .await
        .map(XenoServerClient::new)
        .map_err(|_| ())
    }

    /// A fresh session of the client's, running a task.
    async fn session(&self) -> String {
        let order = self.order().await;
        let mut server = self
            .server_as(Some(&self.client.credentials))
            .await
            .expect("server");
        let session = server
            .create_session(server::CreateSessionRequest {
                requirements_xml: requirements(),
                purchase_order_xml: order.to_xml(),
            })
            .await
            .expect("session")
            .into_inner()
            .session_id;
        let (task_xml, payloads) = task();
        server
            .deploy_task(server::DeployTaskRequest {
                session_id: session.clone(),
                task_xml,
                payloads,
            })
            .await
            .expect("deploy");
        session
    }
}

fn requirements() -> String {
    let mut requirements = EnvironmentalRequirements::new("matrix", "Wasm");
    requirements.qos.cpu_msps = Some(10);
    requirements.qos.memory_mb = Some(8);
    requirements.to_xml()
}

fn task() -> (String, Vec<common::Payload>) {
    let wasm = wat::parse_str(r#"(module (func (export "_start")))"#).expect("wat");
    let sha256 = hex::encode(Sha256::digest(&wasm));
    let task = TaskDescription::new(Program::WasmModule {
        sha256: sha256.clone(),
        entry: None,
    });
    (task.to_xml(), vec![common::Payload { sha256, data: wasm }])
}

fn charge(order_id: &str, sequence: u64) -> corp::ChargeRequest {
    let start = time::OffsetDateTime::now_utc();
    let money = Money {
        currency: "GBP".parse().expect("GBP"),
        minor: 10,
    };
    let usage = UsageRecord {
        order_id: order_id.to_owned(),
        session_id: "m".to_owned(),
        sequence,
        period_start: start,
        period_end: start + time::Duration::seconds(1),
        cpu_ms: 1,
        memory_mb_ms: 1,
        network_bytes_in: None,
        network_bytes_out: None,
        fuel: None,
        syscalls: None,
        output_bytes: None,
        charge: money,
        activity: None,
        tasks: Vec::new(),
        extensions: Vec::new(),
    };
    corp::ChargeRequest {
        order_id: order_id.to_owned(),
        sequence,
        amount: gbp(10),
        usage_record_xml: usage.to_xml(),
    }
}

/// A status that is the TLS layer refusing the certificate: with TLS 1.3 the server checks
/// the client's certificate after the client thinks the handshake is done, so the client
/// learns it at its first call, as a broken connection (UNAVAILABLE, UNKNOWN or CANCELLED,
/// depending on when the alert arrives). No service answers those codes itself.
fn classify<T>(result: Result<T, tonic::Status>) -> Outcome {
    match result {
        Result::Ok(_) => Outcome::Ok,
        Err(status)
            if matches!(
                status.code(),
                Code::Unavailable | Code::Unknown | Code::Cancelled
            ) =>
        {
            Outcome::Tls
        }
        Err(status) => Outcome::Status(status.code()),
    }
}

async fn call_corp(world: &World, rpc: &str, who: Option<&Credentials>) -> Outcome {
    let channel = match connect(&world.corp_address, &world.ca, who, &Peer::Corp(None)).await {
        Result::Ok(channel) => channel,
        Err(_) => return Outcome::Tls,
    };
    let mut corp = XenoCorpClient::new(channel.clone());
    match rpc {
        "RegisterClient" => {
            let (_, csr_pem) = key_and_csr("matrix");
            classify(
                corp.register_client(corp::RegisterClientRequest {
                    name: "Matrix".to_owned(),
                    address: "3 Matrix Row".to_owned(),
                    charging_details: "card".to_owned(),
                    privacy: corp::PrivacyMode::Pseudonymous as i32,
                    csr_pem,
                })
                .await,
            )
        }
        "RegisterServer" => {
            let (_, csr_pem) = key_and_csr("matrix");
            classify(
                corp.register_server(server_registration("matrix", csr_pem))
                    .await,
            )
        }
        "CreatePurchaseOrder" => classify(
            corp.create_purchase_order(corp::CreatePurchaseOrderRequest {
                amount: gbp(POUND),
                lifetime_seconds: 600,
            })
            .await,
        ),
        "ValidatePurchaseOrder" => {
            let order = world.order().await;
            classify(
                corp.validate_purchase_order(corp::ValidatePurchaseOrderRequest {
                    purchase_order_xml: order.to_xml(),
                    session_id: world.session_id(),
                    requirements_xml: requirements(),
                })
                .await,
            )
        }
        "ChargeFromPurchaseOrder" => {
            let order_id = world.bound_order().await;
            classify(corp.charge_from_purchase_order(charge(&order_id, 2)).await)
        }
        "StreamCharges" => {
            let order_id = world.bound_order().await;
            let requests = tokio_stream::iter(vec![charge(&order_id, 2)]);
            match corp.stream_charges(requests).await {
                Err(status) => classify::<()>(Err(status)),
                Result::Ok(replies) => match replies.into_inner().next().await {
                    Some(Result::Ok(reply)) => match reply.result {
                        Some(corp::charge_stream_reply::Result::Answer(_)) => Outcome::Ok,
                        Some(corp::charge_stream_reply::Result::Refusal(refusal)) => {
                            Outcome::Status(Code::from(refusal.code))
                        }
                        None => Outcome::Status(Code::Internal),
                    },
                    Some(Err(status)) => classify::<()>(Err(status)),
                    None => Outcome::Status(Code::Internal),
                },
            }
        }
        "ClosePurchaseOrder" => {
            let order_id = world.bound_order().await;
            classify(
                corp.close_purchase_order(corp::ClosePurchaseOrderRequest { order_id })
                    .await,
            )
        }
        "GetAccount" => classify(corp.get_account(corp::GetAccountRequest {}).await),
        "AuditOrder" => {
            let order_id = world.bound_order().await;
            classify(
                corp.audit_order(corp::AuditOrderRequest {
                    order_id,
                    after_sequence: 0,
                    limit: 0,
                })
                .await,
            )
        }
        "AuditServer" => classify(
            corp.audit_server(corp::AuditServerRequest {
                server_id: world.bound.id.clone(),
            })
            .await,
        ),
        "GetTrustInfo" => classify(corp.get_trust_info(corp::GetTrustInfoRequest {}).await),
        "grpc.health.v1.Health/Check" => health(channel).await,
        other => panic!("no call for {other}"),
    }
}

async fn health(channel: Channel) -> Outcome {
    classify(
        tonic_health::pb::health_client::HealthClient::new(channel)
            .check(tonic_health::pb::HealthCheckRequest::default())
            .await,
    )
}

async fn call_server(world: &World, rpc: &str, who: Option<&Credentials>) -> Outcome {
    // The session (and order) a call is about is the client's, made first.
    let session = match rpc {
        "DeployTask" | "WatchSession" | "TaskStatus" | "DestroySession" => world.session().await,
        _ => String::new(),
    };
    let order = match rpc {
        "CreateSession" => Some(world.order().await),
        _ => None,
    };
    let Result::Ok(mut server) = world.server_as(who).await else {
        return Outcome::Tls;
    };
    match rpc {
        "QueryXenoServerStatus" => classify(
            server
                .query_xeno_server_status(server::QueryStatusRequest {})
                .await,
        ),
        "CreateSession" => classify(
            server
                .create_session(server::CreateSessionRequest {
                    requirements_xml: requirements(),
                    purchase_order_xml: order.map(|order| order.to_xml()).unwrap_or_default(),
                })
                .await,
        ),
        "DeployTask" => {
            let (task_xml, payloads) = task();
            classify(
                server
                    .deploy_task(server::DeployTaskRequest {
                        session_id: session,
                        task_xml,
                        payloads,
                    })
                    .await,
            )
        }
        "WatchSession" => classify(
            server
                .watch_session(server::WatchSessionRequest {
                    session_id: session,
                    from_offset: Default::default(),
                    follow: false,
                })
                .await,
        ),
        "TaskStatus" => classify(
            server
                .task_status(server::TaskStatusRequest {
                    session_id: session,
                    task_id: "t-1".to_owned(),
                })
                .await,
        ),
        "DestroySession" => classify(
            server
                .destroy_session(server::DestroySessionRequest {
                    session_id: session,
                })
                .await,
        ),
        "ListSessions" => classify(server.list_sessions(server::ListSessionsRequest {}).await),
        "grpc.health.v1.Health/Check" => {
            let channel = connect(
                &world.server_address,
                &world.ca,
                who,
                &Peer::Server(world.server.server_id.clone()),
            )
            .await;
            match channel {
                Result::Ok(channel) => health(channel).await,
                Err(_) => Outcome::Tls,
            }
        }
        other => panic!("no call for {other}"),
    }
}

fn cell(outcome: Outcome) -> String {
    match outcome {
        Outcome::Ok => "OK".to_owned(),
        Outcome::Tls => "TLS refused".to_owned(),
        Outcome::Status(code) => format!("{code:?}")
            .chars()
            .fold(String::new(), |mut text, c| {
                if c.is_uppercase() && !text.is_empty() {
                    text.push('_');
                }
                text.push(c.to_ascii_uppercase());
                text
            }),
    }
}

fn render(rows: &[(String, String, Vec<Outcome>)]) -> String {
    let mut text = String::from(
        "# Authorization matrix\n\n\
         Every RPC of the corp (`xenoserve.corp.v1.XenoCorp`) and of a XenoServer\n\
         (`xenoserve.server.v1.XenoServer`), called by every kind of caller with a request that is\n\
         right in every other respect, and what it gets. **TLS refused**: the handshake rejects the\n\
         certificate (not from this corp's CA, expired, or not signed by the CA at all), so no call\n\
         is made. The orders and sessions are the client's; the order is bound to (or named for)\n\
         the bound server, which is the XenoServer called. Another client sees another's session\n\
         as no session at all (NOT_FOUND); a client closing its bound order before the server's\n\
         grace period ends gets FAILED_PRECONDITION.\n\n\
         Generated from the table in `tests/tests/authorization.rs`, which asserts every cell\n\
         (`XENO_WRITE_DOCS=1 cargo test -p xeno-tests --test authorization` rewrites this file).\n\
         The corp's operator service (`CorpAdmin`) and task manager plugins listen on Unix sockets\n\
         only their user may open (mode 0600, also asserted there); the XIS and resource discovery\n\
         answer anyone, and what they serve is self-certifying (signed by each server's key).\n\n\
         Peers are authenticated the other way round too: a client or server dialling the corp\n\
         accepts only the corp's role under the CA it pinned, and one dialling a server accepts\n\
         only the server id it chose (`xeno_clients::transport::Peer`).\n\n",
    );
    text.push_str("| Service | RPC |");
    for caller in CALLERS {
        text.push_str(&format!(" {} |", caller.heading()));
    }
    text.push_str("\n|---|---|");
    for _ in CALLERS {
        text.push_str("---|");
    }
    text.push('\n');
    for (service, rpc, outcomes) in rows {
        text.push_str(&format!("| {service} | {rpc} |"));
        for outcome in outcomes {
            text.push_str(&format!(" {} |", cell(*outcome)));
        }
        text.push('\n');
    }
    text
}

fn docs_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("docs")
        .join("authorization.md")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_answers_every_caller_as_the_matrix_says() {
    let world = World::start().await;
    let mut actual = Vec::new();
    for (service, rpc, _) in MATRIX {
        let mut outcomes = Vec::new();
        for caller in CALLERS {
            let who = world.callers[&caller].as_ref();
            let outcome = match *service {
                "XenoCorp" => call_corp(&world, rpc, who).await,
                _ => call_server(&world, rpc, who).await,
            };
            outcomes.push(outcome);
        }
        actual.push((service.to_string(), rpc.to_string(), outcomes));
    }
    let expected: Vec<(String, String, Vec<Outcome>)> = MATRIX
        .iter()
        .map(|(service, rpc, outcomes)| (service.to_string(), rpc.to_string(), outcomes.to_vec()))
        .collect();
    let mut wrong = Vec::new();
    for ((service, rpc, got), (_, _, want)) in actual.iter().zip(&expected) {
        for ((caller, got), want) in CALLERS.iter().zip(got).zip(want) {
            if got != want {
                wrong.push(format!(
                    "{service}.{rpc} by {}: got {}, want {}",
                    caller.heading(),
                    cell(*got),
                    cell(*want)
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} cells differ:\n{}\n\nthe matrix as measured:\n{}",
        wrong.len(),
        wrong.join("\n"),
        render(&actual)
    );

    let rendered = render(&expected);
    if std::env::var_os("XENO_WRITE_DOCS").is_some() {
        std::fs::write(docs_path(), &rendered).expect("writing docs/authorization.md");
    }
    let documented = std::fs::read_to_string(docs_path()).unwrap_or_default();
    assert!(
        documented == rendered,
        "docs/authorization.md is out of date: run XENO_WRITE_DOCS=1 cargo test -p xeno-tests --test authorization"
    );

    // The operator's socket is its user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&world.corp.admin_socket)
        .expect("admin socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "admin socket mode {mode:o}");
    world.server.shutdown().await;
    world.corp.shutdown().await;
}

/// Every connection authenticates its peer: the corp by its role under the pinned CA, a
/// server by the id the caller chose. Impostors hold genuine certificates of the same corp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_refuses_a_peer_that_is_not_who_was_chosen() {
    let world = World::start().await;
    let client = Some(&world.client.credentials);
    // The server's own endpoint, dialled as if it were the corp.
    let error = connect(&world.server_address, &world.ca, client, &Peer::Corp(None))
        .await
        .expect_err("a server posing as the corp");
    assert!(error.to_string().contains("not a corp"), "{error}");
    // The real server, chosen by another server's id.
    let someone_else = "0".repeat(64);
    let error = connect(
        &world.server_address,
        &world.ca,
        client,
        &Peer::Server(someone_else.clone()),
    )
    .await
    .expect_err("the wrong server");
    assert!(
        error.to_string().contains(&format!(
            "the peer is server {}, not {someone_else}",
            world.server.server_id
        )),
        "{error}"
    );
    // The corp, dialled as a server.
    let error = connect(
        &world.corp_address,
        &world.ca,
        client,
        &Peer::Server(world.bound.id.clone()),
    )
    .await
    .expect_err("the corp is no server");
    assert!(error.to_string().contains("not a server"), "{error}");
    // And the genuine pairs connect.
    connect(
        &world.corp_address,
        &world.ca,
        client,
        &Peer::corp("corp-m"),
    )
    .await
    .expect("the corp");
    world
        .server_as(client)
        .await
        .expect("the server chosen by its id");
    world.server.shutdown().await;
    world.corp.shutdown().await;
}

async fn raw_call(channel: Channel, path: &'static str, body: Vec<u8>) -> tonic::Status {
    match xeno_tests::fuzz::raw_call(channel, path, body).await {
        Result::Ok(()) => panic!("{path} accepted a malformed request"),
        Err(status) => status,
    }
}

/// A protobuf message whose field 1 (a string in every request used here) holds `bytes`.
fn field_one(bytes: &[u8]) -> Vec<u8> {
    let mut message = vec![0x0a];
    let mut length = bytes.len();
    loop {
        let low = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            message.push(low);
            break;
        }
        message.push(low | 0x80);
    }
    message.extend_from_slice(bytes);
    message
}

/// Oversized messages used to come back OUT_OF_RANGE and invalid UTF-8 INTERNAL, where the
/// protos promise INVALID_ARGUMENT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_invalid_arguments_on_the_corp_the_server_and_the_xis() {
    let world = World::start().await;
    let client = Some(&world.client.credentials);
    let corp = connect(&world.corp_address, &world.ca, client, &Peer::Corp(None))
        .await
        .expect("corp");
    let server = connect(
        &world.server_address,
        &world.ca,
        client,
        &Peer::Server(world.server.server_id.clone()),
    )
    .await
    .expect("server");
    let xis_config = xeno_xis::config::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        persist: false,
        ..xeno_xis::config::Config::default()
    };
    let xis = xeno_xis::daemon::start(xis_config).await.expect("xis");
    let xis_channel = xeno_clients::xis::connect(&xis.addr.to_string())
        .await
        .expect("xis");
    let not_utf8 = field_one(&[0xff, 0xfe, b'x']);
    for (channel, path, oversized) in [
        (
            xis_channel,
            "/xenoserve.xis.v1.Xis/Advertise",
            field_one(&vec![b'a'; 200 * 1024]),
        ),
        (
            corp.clone(),
            "/xenoserve.corp.v1.XenoCorp/RegisterClient",
            field_one(&vec![b'a'; 300 * 1024]),
        ),
        (
            server.clone(),
            "/xenoserve.server.v1.XenoServer/CreateSession",
            field_one(&vec![b'a'; 4 << 20]),
        ),
    ] {
        let status = raw_call(channel.clone(), path, not_utf8.clone()).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{path}, not UTF-8: {status:?}"
        );
        let status = raw_call(channel, path, oversized).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{path}, oversized: {status:?}"
        );
        assert!(status.message().contains("too large"), "{status:?}");
    }
    // The daemons are still up and answer well-formed calls.
    XenoCorpClient::new(corp)
        .get_account(corp::GetAccountRequest {})
        .await
        .expect("the corp answers");
    XenoServerClient::new(server)
        .list_sessions(server::ListSessionsRequest {})
        .await
        .expect("the server answers");
    xis.shutdown().await;
    world.server.shutdown().await;
    world.corp.shutdown().await;
}
