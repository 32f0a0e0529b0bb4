//! A whole platform for end-to-end tests: corps and XenoServers in this process or as their
//! own processes (to be killed), parties registered with real keys, orders bought, narrowed and
//! signed, and the money checks every fault test ends with.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tonic::transport::Channel;
use xeno_clients::transport::{Credentials, Peer, connect};
use xeno_schemas::Document;
use xeno_schemas::documents::{EnvironmentalRequirements, PurchaseOrder, Restrictions};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as corp;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;
use xeno_schemas::proto::server::v1::xeno_server_client::XenoServerClient;
use xeno_schemas::signing::{SigningKey, pem_to_der};

/// One pound, in minor units.
pub const POUND: u64 = 1_000_000;

pub fn gbp(minor: u64) -> Option<common::Money> {
    Some(common::Money {
        currency: "GBP".to_owned(),
        amount_minor: minor,
    })
}

/// A registered party: its id, credentials and signing key.
pub struct Party {
    pub id: String,
    pub credentials: Credentials,
    pub key: SigningKey,
}

pub fn key_and_csr(name: &str) -> (String, String) {
    xeno_clients::identity::key_and_csr(name).expect("csr")
}

fn party(id: String, certificate_pem: String, key_pem: String) -> Party {
    let key = SigningKey::from_pkcs8_der(&pem_to_der(&key_pem, "PRIVATE KEY").expect("pem"))
        .expect("key");
    Party {
        id,
        credentials: Credentials {
            certificate_pem,
            key_pem,
        },
        key,
    }
}

/// A corp connection without a certificate (registration).
pub async fn anonymous(address: &str, ca: &str) -> XenoCorpClient<Channel> {
    XenoCorpClient::new(
        connect(address, ca, None, &Peer::Corp(None))
            .await
            .expect("the corp"),
    )
}

/// A corp connection as `who`.
pub async fn corp_as(address: &str, ca: &str, who: &Credentials) -> XenoCorpClient<Channel> {
    XenoCorpClient::new(
        connect(address, ca, Some(who), &Peer::Corp(None))
            .await
            .expect("the corp"),
    )
}

/// A server connection as `who`, to the server `server_id`.
pub async fn server_as(
    address: &str,
    ca: &str,
    who: &Credentials,
    server_id: &str,
) -> XenoServerClient<Channel> {
    XenoServerClient::new(
        connect(address, ca, Some(who), &Peer::Server(server_id.to_owned()))
            .await
            .expect("the server"),
    )
}

pub async fn register_client(address: &str, ca: &str, name: &str) -> Party {
    let (key_pem, csr_pem) = key_and_csr(name);
    let response = anonymous(address, ca)
        .await
        .register_client(corp::RegisterClientRequest {
            name: name.to_owned(),
            address: "1 Test Row".to_owned(),
            charging_details: "card".to_owned(),
            privacy: corp::PrivacyMode::Identified as i32,
            csr_pem,
        })
        .await
        .expect("client registers")
        .into_inner();
    party(response.account_id, response.certificate_pem, key_pem)
}

/// A server registration with an endpoint no other test server claims.
pub fn server_registration(name: &str, csr_pem: String) -> corp::RegisterServerRequest {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    corp::RegisterServerRequest {
        owner_name: format!("{name} Hosting"),
        owner_address: "2 Rack Row".to_owned(),
        payout_details: "bank".to_owned(),
        machine: Some(corp::MachineSpec {
            architecture: "x86_64".to_owned(),
            cpu_cores: 2,
            memory_mb: 4096,
            ..Default::default()
        }),
        csr_pem,
        endpoint: format!("{name}-{}-{n}.test:7443", std::process::id()),
    }
}

pub async fn register_server(address: &str, ca: &str, name: &str) -> Party {
    let (key_pem, csr_pem) = key_and_csr(name);
    let response = anonymous(address, ca)
        .await
        .register_server(server_registration(name, csr_pem))
        .await
        .expect("server registers")
        .into_inner();
    party(response.server_id, response.certificate_pem, key_pem)
}

/// The operator's connection to a corp.
pub async fn admin(
    socket: &Path,
) -> xeno_schemas::proto::corp::v1::corp_admin_client::CorpAdminClient<Channel> {
    xeno_clients::corp_admin::connect(socket)
        .await
        .expect("admin")
}

pub async fn deposit(socket: &Path, account: &str, minor: u64) {
    admin(socket)
        .await
        .deposit(corp::DepositRequest {
            account_id: account.to_owned(),
            amount: gbp(minor),
        })
        .await
        .expect("deposit");
}

/// Asserts the corp's ledger invariants (in memory and in its store).
pub async fn assert_invariants(socket: &Path) {
    let report = admin(socket)
        .await
        .check_invariants(corp::CheckInvariantsRequest {})
        .await
        .expect("check")
        .into_inner();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
}

/// A fresh order of `client`'s for `minor`, restricted to `server_id` and signed.
pub async fn order(
    address: &str,
    ca: &str,
    client: &Party,
    minor: u64,
    lifetime_seconds: u64,
    server_id: &str,
) -> PurchaseOrder {
    let created = corp_as(address, ca, &client.credentials)
        .await
        .create_purchase_order(corp::CreatePurchaseOrderRequest {
            amount: gbp(minor),
            lifetime_seconds,
        })
        .await
        .expect("order")
        .into_inner();
    let mut order =
        PurchaseOrder::parse(created.purchase_order_xml.as_bytes()).expect("order parses");
    order.client_restrictions = Some(Restrictions {
        servers: Some(vec![server_id.to_owned()]),
        ..Restrictions::default()
    });
    order.client_signature = Some(client.key.sign(&order.client_signed_bytes()).expect("sign"));
    order
}

pub fn requirements(cpu_msps: u64, memory_mb: u64) -> String {
    let mut requirements = EnvironmentalRequirements::new("test", "Wasm");
    requirements.qos.cpu_msps = Some(cpu_msps);
    requirements.qos.memory_mb = Some(memory_mb);
    requirements.to_xml()
}

/// A corp in this process, on loopback, with SQLite in `dir/<id>`.
pub async fn corp_in_process(dir: &Path, id: &str) -> xeno_corp::daemon::RunningCorp {
    let config = xeno_corp::config::Config {
        corp_id: id.to_owned(),
        data_dir: dir.join(id),
        listen: "127.0.0.1:0".parse().expect("address"),
        web_listen: None,
        ..xeno_corp::config::Config::default()
    };
    xeno_corp::daemon::start(config).await.expect("corp starts")
}

pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("dir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// A server's configuration: `server` registered with the corp `corp_id` at `corp_address`,
/// serving on `listen`, keeping its state in `dir/state`, with `extra` TOML after.
pub fn server_config(
    dir: &Path,
    corp_id: &str,
    corp_address: &str,
    ca: &str,
    server: &Party,
    listen: &str,
    extra: &str,
) -> String {
    let ca_file = write(dir, "ca.pem", ca);
    let certificate_file = write(dir, "cert.pem", &server.credentials.certificate_pem);
    let key_file = write(dir, "key.pem", &server.credentials.key_pem);
    format!(
        "listen = \"{listen}\"\ndata_dir = {:?}\n[[corps]]\nid = \"{corp_id}\"\naddress = \"{corp_address}\"\nca = {ca_file:?}\ncertificate = {certificate_file:?}\nkey = {key_file:?}\n{extra}\n",
        dir.join("state")
    )
}

/// Set to make this test binary, re-executed, run a daemon instead of tests:
/// `xenoserver:<config>`, `xenocorp:<config>` or `wasm-plugin:<socket>`. The daemons are the
/// very libraries the real binaries wrap, built with this test binary: no stale binary from an
/// earlier build, no build of another package's (with other features) in the middle of a test.
const DAEMON_ENV: &str = "XENO_TEST_DAEMON";

/// A command running the daemon `role` with `argument` in a process of its own (see
/// [`DAEMON_ENV`]).
pub fn daemon_command(role: &str, argument: &Path) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test executable"));
    command
        .env(DAEMON_ENV, format!("{role}:{}", argument.display()))
        .env("RUST_LOG", "warn");
    command
}

/// Runs the daemon [`DAEMON_ENV`] names, printing a ready line as the real binary does
/// (`<name> <id> grpc=<address>`), until killed.
fn run_daemon(role: &str) -> i32 {
    let Some((name, argument)) = role.split_once(':') else {
        eprintln!("bad {DAEMON_ENV} {role:?}");
        return 2;
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("{error}");
            return 2;
        }
    };
    let argument = PathBuf::from(argument);
    let result: anyhow::Result<()> = runtime.block_on(async move {
        match name {
            "xenoserver" => {
                let config = xeno_envmgr::config::Config::load(&argument)?;
                let running = xeno_envmgr::daemon::start(config).await?;
                println!(
                    "xenoserver {} grpc={}",
                    running.server_id, running.grpc_addr
                );
                running.wait(std::future::pending()).await
            }
            "xenocorp" => {
                let config = xeno_corp::config::Config::load(&argument)?;
                let corp = xeno_corp::daemon::start(config).await?;
                println!("xenocorp {} grpc={}", corp.corp_id, corp.grpc_addr);
                corp.wait(std::future::pending()).await
            }
            "wasm-plugin" => {
                let manager =
                    xeno_taskmgr_wasm::WasmTaskManager::new(xeno_taskmgr_wasm::WasmConfig {
                        tasks_max: 64,
                        domains_max: 32,
                        ..xeno_taskmgr_wasm::WasmConfig::default()
                    })?;
                println!("wasm-plugin - grpc=unix:{}", argument.display());
                xeno_taskmgr_kit::serve_unix(manager, &argument, std::future::pending()).await?;
                Ok(())
            }
            other => anyhow::bail!("no daemon {other:?}"),
        }
    });
    match result {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("{name}: {error:#}");
            1
        }
    }
}

/// Runs before the test harness's `main`: a re-executed test binary becomes its daemon here.
///
/// This runs before Rust's runtime set-up, which in a real daemon's `main` ignores SIGPIPE
/// (and `Command` gives every child SIGPIPE's default action back). Without that, a daemon
/// writing to a peer that has just gone (a Unix socket client that hung up) dies of SIGPIPE
/// instead of getting EPIPE: the fault tests saw their corp killed so, about one run in
/// twenty. So it is ignored here first, as the real binaries have it.
extern "C" fn daemon_entry() {
    if let Some(role) = std::env::var_os(DAEMON_ENV) {
        // SAFETY: setting a signal's disposition to SIG_IGN, before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        std::process::exit(run_daemon(&role.to_string_lossy()));
    }
}

#[used]
#[unsafe(link_section = ".init_array")]
static DAEMON_ENTRY: extern "C" fn() = daemon_entry;

/// A daemon running as its own process, killed (SIGKILL) when dropped.
pub struct Daemon {
    child: Child,
    /// Its gRPC address, from its ready line.
    pub grpc: String,
    /// The id it printed first on its ready line (a server's id), if any.
    pub id: String,
    /// Whether `kill` has run.
    killed: bool,
}

impl Daemon {
    /// Runs `command` and waits for its ready line (`<name> <id> grpc=<address>`, or
    /// `... grpc=<address>`).
    pub fn start(mut command: Command) -> Daemon {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the daemon");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line).expect("reading the ready line");
        let grpc = line
            .split_whitespace()
            .find_map(|word| word.strip_prefix("grpc="))
            .unwrap_or_else(|| panic!("no grpc= in {line:?}"))
            .to_owned();
        let id = line
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        // Keep reading so the daemon never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut sink = String::new();
            while reader.read_line(&mut sink).is_ok_and(|n| n > 0) {
                sink.clear();
            }
        });
        Daemon {
            child,
            grpc,
            id,
            killed: false,
        }
    }

    /// SIGKILL, and reap. A daemon that had already exited says how, for the failure it
    /// likely explains.
    pub fn kill(&mut self) {
        if self.killed {
            return;
        }
        self.killed = true;
        if let Ok(Some(status)) = self.child.try_wait() {
            eprintln!(
                "daemon {} (pid {}) had exited: {status}",
                self.grpc,
                self.child.id()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A XenoServer process with `config` (written into `dir`).
pub fn server_process(dir: &Path, config: &str) -> Daemon {
    let path = write(dir, "xenoserver.toml", config);
    Daemon::start(daemon_command("xenoserver", &path))
}

/// Waits until `condition` holds, polling; fails after `timeout` naming `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether an order is settled, and the corp's view of it: (state, charged, sum of its
/// audited charges, the charge sequence numbers).
pub async fn order_books(
    address: &str,
    ca: &str,
    client: &Party,
    order_id: &str,
) -> (corp::OrderState, u64, u64, Vec<u64>) {
    let audit = corp_as(address, ca, &client.credentials)
        .await
        .audit_order(corp::AuditOrderRequest {
            order_id: order_id.to_owned(),
            after_sequence: 0,
            limit: 0,
        })
        .await
        .expect("audit")
        .into_inner();
    let summary = audit.order.unwrap_or_default();
    let charged = summary.charged.map_or(0, |m| m.amount_minor);
    let audited = audit
        .charges
        .iter()
        .filter(|c| c.outcome == corp::ChargeOutcome::Charged as i32)
        .map(|c| c.amount.as_ref().map_or(0, |m| m.amount_minor))
        .sum();
    let sequences = audit.charges.iter().map(|c| c.sequence).collect();
    (
        corp::OrderState::try_from(summary.state).unwrap_or(corp::OrderState::Unspecified),
        charged,
        audited,
        sequences,
    )
}

/// The client's available balance, minor units of GBP.
pub async fn available(address: &str, ca: &str, client: &Party) -> u64 {
    let account = corp_as(address, ca, &client.credentials)
        .await
        .get_account(corp::GetAccountRequest {})
        .await
        .expect("account")
        .into_inner();
    account
        .balances
        .iter()
        .filter_map(|balance| balance.available.as_ref())
        .filter(|money| money.currency == "GBP")
        .map(|money| money.amount_minor)
        .sum()
}
