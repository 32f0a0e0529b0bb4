//! Faults injected into a running platform, each followed by the money check: the corp's
//! ledger invariants hold, every charge the server was told of is in the corp's audit trail,
//! sequence numbers are unique and contiguous, the client was billed exactly once for what the
//! server metered, and no funds are left held by an order nobody can spend.
//!
//! - the XenoServer SIGKILLed during session creation, deployment, charging and destroy, then
//!   restarted;
//! - the task manager plugin SIGKILLed mid-session and restarted;
//! - the corp unreachable mid-session: it runs in a network namespace this test makes, whose
//!   link is taken down (`XENO_FAULT_OUTAGE_SECONDS`, default 8; the issue's minute by hand);
//! - the corp's disk full: its data on a small tmpfs, filled up, then given room again;
//! - the server's clock 10 minutes ahead of the corp's, and 10 minutes behind (libfaketime).
//!
//! The last three need root (namespaces, mounts) and Debian's `faketime`; without them they
//! print SKIP, and under `CI=true` they fail instead.

mod platform;

use platform::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use tonic::Code;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as corp;
use xeno_schemas::proto::server::v1 as server;

/// Fast metering, so that a few seconds make several charges.
const METERING: &str =
    "[metering]\nperiod_ms = 100\ncharge_interval_ms = 300\norphan_retry_ms = 200\n";
const WASM: &str = "[[task_managers]]\nenv_type = \"Wasm\"\nbuiltin = \"wasm\"\n";
const WAIT: Duration = Duration::from_secs(60);

/// Whether this test may do what needs root; SKIP (or, under CI, fail) otherwise.
fn root(what: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        xeno_tests::prerequisite::missing(&format!("{what} needs root"));
    }
    root
}

fn spin_task() -> (String, Vec<common::Payload>) {
    let wasm =
        wat::parse_str(r#"(module (func (export "_start") (loop $l (br $l))))"#).expect("wat");
    let sha256 = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&wasm))
    };
    let task = TaskDescription::new(Program::WasmModule {
        sha256: sha256.clone(),
        entry: None,
    });
    (task.to_xml(), vec![common::Payload { sha256, data: wasm }])
}

/// A corp in this process with a funded client and a registered server.
struct Books {
    _dir: tempfile::TempDir,
    corp: xeno_corp::daemon::RunningCorp,
    address: String,
    ca: String,
    client: Party,
    server: Party,
    /// The client's available balance before any order.
    funded: u64,
}

impl Books {
    async fn open() -> Books {
        let dir = tempfile::tempdir().expect("tempdir");
        let corp = corp_in_process(dir.path(), "corp-f").await;
        let address = corp.grpc_addr.to_string();
        let ca = corp.ca_certificate_pem.clone();
        let client = register_client(&address, &ca, "Alice").await;
        let server = register_server(&address, &ca, "faulty").await;
        deposit(&corp.admin_socket, &client.id, 100 * POUND).await;
        let funded = available(&address, &ca, &client).await;
        Books {
            _dir: dir,
            corp,
            address,
            ca,
            client,
            server,
            funded,
        }
    }

    fn server_config(&self, dir: &Path, extra: &str) -> String {
        server_config(
            dir,
            "corp-f",
            &self.address,
            &self.ca,
            &self.server,
            "127.0.0.1:0",
            extra,
        )
    }

    async fn order(
        &self,
        minor: u64,
        lifetime_seconds: u64,
    ) -> xeno_schemas::documents::PurchaseOrder {
        order(
            &self.address,
            &self.ca,
            &self.client,
            minor,
            lifetime_seconds,
            &self.server.id,
        )
        .await
    }

    /// The money check for `orders`, once each is settled: everything charged is in the
    /// trail once, and nothing is held.
    async fn check(&self, orders: &[(String, Vec<(u64, u64)>)]) {
        let mut charged_total = 0;
        for (order_id, told) in orders {
            eventually(&format!("order {order_id} settled"), WAIT, || async {
                let (state, ..) =
                    order_books(&self.address, &self.ca, &self.client, order_id).await;
                matches!(state, corp::OrderState::Closed | corp::OrderState::Issued)
            })
            .await;
            let (state, charged, audited, sequences) =
                order_books(&self.address, &self.ca, &self.client, order_id).await;
            if state == corp::OrderState::Issued {
                // It never reached the corp: the client takes it back.
                corp_as(&self.address, &self.ca, &self.client.credentials)
                    .await
                    .close_purchase_order(corp::ClosePurchaseOrderRequest {
                        order_id: order_id.clone(),
                    })
                    .await
                    .expect("the client closes its unused order");
            }
            assert_eq!(
                charged, audited,
                "{order_id}: the total is its charges' sum"
            );
            assert_eq!(
                sequences,
                (1..=sequences.len() as u64).collect::<Vec<_>>(),
                "{order_id}: charge sequence numbers unique and contiguous"
            );
            let trail = corp_as(&self.address, &self.ca, &self.client.credentials)
                .await
                .audit_order(corp::AuditOrderRequest {
                    order_id: order_id.clone(),
                    after_sequence: 0,
                    limit: 0,
                })
                .await
                .expect("audit")
                .into_inner();
            for (sequence, amount) in told {
                assert!(
                    trail
                        .charges
                        .iter()
                        .any(|charge| charge.sequence == *sequence
                            && charge.amount.as_ref().map_or(0, |m| m.amount_minor) == *amount),
                    "{order_id}: charge #{sequence} of {amount}, announced to the client, is in the trail"
                );
            }
            charged_total += charged;
        }
        assert_invariants(&self.corp.admin_socket).await;
        assert_eq!(
            available(&self.address, &self.ca, &self.client).await,
            self.funded - charged_total,
            "every order settled: the client has back all it did not spend"
        );
    }
}

/// The charges announced in `events` (sequence, amount).
fn announced(events: &[server::SessionEvent]) -> Vec<(u64, u64)> {
    events
        .iter()
        .filter_map(|event| match &event.event {
            Some(server::session_event::Event::Charge(charge)) => Some((
                charge.sequence,
                charge.amount.as_ref().map_or(0, |m| m.amount_minor),
            )),
            _ => None,
        })
        .collect()
}

/// Watches a session until `charges` charges were announced (or it ends).
async fn watch_charges(
    client: &mut xeno_schemas::proto::server::v1::xeno_server_client::XenoServerClient<
        tonic::transport::Channel,
    >,
    session: &str,
    charges: usize,
) -> Vec<server::SessionEvent> {
    let mut stream = client
        .watch_session(server::WatchSessionRequest {
            session_id: session.to_owned(),
            from_offset: Default::default(),
            follow: true,
        })
        .await
        .expect("watch")
        .into_inner();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while announced(&events).len() < charges {
        match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(Ok(Some(event))) => {
                let ended = matches!(
                    event.event,
                    Some(server::session_event::Event::SessionEnded(_))
                );
                events.push(event);
                if ended {
                    break;
                }
            }
            _ => break,
        }
    }
    events
}

/// The XenoServer SIGKILLed at each stage of a session's life, then restarted: the orders all
/// settle, exactly as charged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_at_any_stage_loses_no_money() {
    let books = Books::open().await;
    let dir = tempfile::tempdir().expect("server dir");
    let config = books.server_config(dir.path(), &format!("{METERING}{WASM}"));
    let mut daemon = server_process(dir.path(), &config);
    let mut orders = Vec::new();
    for stage in [
        "creating the session",
        "deploying",
        "charging",
        "destroying",
    ] {
        let order = books.order(5 * POUND, 3600).await;
        let order_id = order.issued.order_id.clone();
        let mut client = server_as(
            &daemon.grpc,
            &books.ca,
            &books.client.credentials,
            &daemon.id,
        )
        .await;
        let mut told = Vec::new();
        if stage == "creating the session" {
            let mut creating = client.clone();
            let request = server::CreateSessionRequest {
                requirements_xml: requirements(200, 16),
                purchase_order_xml: order.to_xml(),
            };
            let call = tokio::spawn(async move { creating.create_session(request).await });
            tokio::time::sleep(Duration::from_millis(15)).await;
            daemon.kill();
            let _ = call.await;
        } else {
            let session = client
                .create_session(server::CreateSessionRequest {
                    requirements_xml: requirements(200, 16),
                    purchase_order_xml: order.to_xml(),
                })
                .await
                .expect("session")
                .into_inner()
                .session_id;
            let (task_xml, payloads) = spin_task();
            let deploy = server::DeployTaskRequest {
                session_id: session.clone(),
                task_xml,
                payloads,
            };
            match stage {
                "deploying" => {
                    let mut deploying = client.clone();
                    let call = tokio::spawn(async move { deploying.deploy_task(deploy).await });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    daemon.kill();
                    let _ = call.await;
                }
                "charging" => {
                    client.deploy_task(deploy).await.expect("deploy");
                    told = announced(&watch_charges(&mut client, &session, 3).await);
                    assert!(told.len() >= 3, "charges before the kill: {told:?}");
                    daemon.kill();
                }
                _ => {
                    client.deploy_task(deploy).await.expect("deploy");
                    told = announced(&watch_charges(&mut client, &session, 1).await);
                    let mut destroying = client.clone();
                    let call = tokio::spawn(async move {
                        destroying
                            .destroy_session(server::DestroySessionRequest {
                                session_id: session,
                            })
                            .await
                    });
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    daemon.kill();
                    let _ = call.await;
                }
            }
        }
        println!("killed the server while {stage}");
        daemon = server_process(dir.path(), &config);
        orders.push((order_id, told));
    }
    // The restarted server settles what it can no longer run and closes what it validated for
    // sessions it never stored.
    books.check(&orders).await;
    // And it still works.
    let order = books.order(POUND, 3600).await;
    server_as(
        &daemon.grpc,
        &books.ca,
        &books.client.credentials,
        &daemon.id,
    )
    .await
    .create_session(server::CreateSessionRequest {
        requirements_xml: requirements(200, 16),
        purchase_order_xml: order.to_xml(),
    })
    .await
    .expect("a session after all that");
}

/// The task manager plugin SIGKILLed mid-session and started again: the server finds the
/// session's domain gone, ends the session and settles exactly what it metered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_manager_plugin_killed_mid_session_ends_it_cleanly() {
    let books = Books::open().await;
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("wasm.sock");
    let plugin = || {
        let _ = std::fs::remove_file(&socket);
        Daemon::start(daemon_command("wasm-plugin", &socket))
    };
    let socket_path = socket.clone();
    let mut first = plugin();
    for _ in 0..200 {
        if socket_path.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let config = books.server_config(
        dir.path(),
        &format!(
            "{METERING}[[task_managers]]\nenv_type = \"Wasm\"\naddress = \"unix:{}\"\n",
            socket_path.display()
        ),
    );
    let running = xeno_envmgr::daemon::start(toml::from_str(&config).expect("config"))
        .await
        .expect("server");
    let address = running.grpc_addr.to_string();
    let mut client = server_as(
        &address,
        &books.ca,
        &books.client.credentials,
        &running.server_id,
    )
    .await;
    let order = books.order(5 * POUND, 3600).await;
    let session = client
        .create_session(server::CreateSessionRequest {
            requirements_xml: requirements(200, 16),
            purchase_order_xml: order.to_xml(),
        })
        .await
        .expect("session")
        .into_inner()
        .session_id;
    let (task_xml, payloads) = spin_task();
    client
        .deploy_task(server::DeployTaskRequest {
            session_id: session.clone(),
            task_xml,
            payloads,
        })
        .await
        .expect("deploy");
    let told = announced(&watch_charges(&mut client, &session, 2).await);
    first.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let second = plugin();
    let deadline = Instant::now() + WAIT;
    let state = loop {
        let sessions = client
            .list_sessions(server::ListSessionsRequest {})
            .await
            .expect("list")
            .into_inner()
            .sessions;
        let state = sessions
            .iter()
            .find(|s| s.session_id == session)
            .map(|s| s.state.clone())
            .unwrap_or_default();
        if state.starts_with("ended") {
            break state;
        }
        assert!(
            Instant::now() < deadline,
            "the session did not end: {state}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    println!("after the plugin died: {state}");
    books.check(&[(order.issued.order_id.clone(), told)]).await;
    running.shutdown().await;
    drop(second);
}

/// A network namespace with a veth pair to it, torn down when dropped.
struct Namespace {
    name: String,
    host_link: String,
    inner_link: String,
    inside: String,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("ip");
    assert!(status.success(), "ip {args:?}");
}

impl Namespace {
    fn create() -> Namespace {
        let id = std::process::id() % 10_000;
        let name = format!("xs-corp-{id}");
        let host_link = format!("xsh{id}");
        let inner_link = format!("xsn{id}");
        let net = format!("10.213.{}", id % 250);
        // A namespace left by an earlier run that was killed.
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(std::process::Stdio::null())
            .status();
        ip(&["netns", "add", &name]);
        ip(&[
            "link",
            "add",
            &host_link,
            "type",
            "veth",
            "peer",
            "name",
            &inner_link,
        ]);
        ip(&["link", "set", &inner_link, "netns", &name]);
        ip(&["addr", "add", &format!("{net}.1/30"), "dev", &host_link]);
        ip(&["link", "set", &host_link, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{net}.2/30"),
            "dev",
            &inner_link,
        ]);
        ip(&["-n", &name, "link", "set", &inner_link, "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        Namespace {
            name,
            host_link,
            inner_link,
            inside: format!("{net}.2"),
        }
    }

    /// Takes the link down or up from inside the namespace. The host's end keeps its address
    /// and route (marked linkdown), so while the link is down the host's packets to the corp
    /// are dropped at the veth: none falls through to the host's default route, which would
    /// send them off the machine (and let whatever answers there reset the connection).
    fn link(&self, up: bool) {
        ip(&[
            "-n",
            &self.name,
            "link",
            "set",
            &self.inner_link,
            if up { "up" } else { "down" },
        ]);
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        // Gone with the namespace, normally.
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_link])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The corp, in a network namespace of its own, unreachable for a while mid-session: the
/// session keeps running, the server keeps the charges it cannot deliver, and once the link
/// is back every one reaches the corp once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corp_unreachable_mid_session_is_charged_in_full_once_it_is_back() {
    if !root("a network namespace for the corp") {
        return;
    }
    let outage = Duration::from_secs(
        std::env::var("XENO_FAULT_OUTAGE_SECONDS")
            .ok()
            .and_then(|value| value.parse().ok())
            .unwrap_or(8),
    );
    let namespace = Namespace::create();
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("corp");
    let config = write(
        dir.path(),
        "xenocorp.toml",
        &format!(
            "corp_id = \"corp-n\"\ndata_dir = {data:?}\nlisten = \"{}:0\"\n",
            namespace.inside
        ),
    );
    let inner = daemon_command("xenocorp", &config);
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", &namespace.name])
        .arg(inner.get_program())
        .envs(
            inner
                .get_envs()
                .filter_map(|(key, value)| Some((key, value?))),
        );
    let corp_daemon = Daemon::start(command);
    let address = corp_daemon.grpc.clone();
    let ca = std::fs::read_to_string(data.join("ca-cert.pem")).expect("CA");
    let admin_socket = data.join("admin.sock");
    let client = register_client(&address, &ca, "Alice").await;
    let server_party = register_server(&address, &ca, "cut-off").await;
    deposit(&admin_socket, &client.id, 100 * POUND).await;
    let funded = available(&address, &ca, &client).await;
    let server_dir = dir.path().join("server");
    let running = xeno_envmgr::daemon::start(
        toml::from_str(&server_config(
            &server_dir,
            "corp-n",
            &address,
            &ca,
            &server_party,
            "127.0.0.1:0",
            &format!("{METERING}{WASM}"),
        ))
        .expect("config"),
    )
    .await
    .expect("server");
    let server_address = running.grpc_addr.to_string();
    let mut session_client = server_as(
        &server_address,
        &ca,
        &client.credentials,
        &running.server_id,
    )
    .await;
    let order = order(&address, &ca, &client, 5 * POUND, 3600, &server_party.id).await;
    let session = session_client
        .create_session(server::CreateSessionRequest {
            requirements_xml: requirements(200, 16),
            purchase_order_xml: order.to_xml(),
        })
        .await
        .expect("session")
        .into_inner()
        .session_id;
    let (task_xml, payloads) = spin_task();
    session_client
        .deploy_task(server::DeployTaskRequest {
            session_id: session.clone(),
            task_xml,
            payloads,
        })
        .await
        .expect("deploy");
    let before = announced(&watch_charges(&mut session_client, &session, 2).await).len();
    namespace.link(false);
    let cut = Instant::now();
    tokio::time::sleep(outage).await;
    // The session ran on through the outage.
    let status = session_client
        .task_status(server::TaskStatusRequest {
            session_id: session.clone(),
            task_id: "t-1".to_owned(),
        })
        .await
        .expect("status while the corp is away")
        .into_inner();
    assert_eq!(status.state, common::TaskState::Running as i32);
    namespace.link(true);
    println!("the corp was unreachable for {:?}", cut.elapsed());
    // Watched from the start: one charge more than before the cut is one made after it.
    let events = watch_charges(&mut session_client, &session, before + 1).await;
    let destroyed = session_client
        .destroy_session(server::DestroySessionRequest {
            session_id: session.clone(),
        })
        .await
        .expect("destroy")
        .into_inner();
    let charged = destroyed.charged_total.map_or(0, |m| m.amount_minor);
    let (state, corp_charged, audited, sequences) =
        order_books(&address, &ca, &client, &order.issued.order_id).await;
    assert_eq!(state, corp::OrderState::Closed);
    assert_eq!(
        (corp_charged, audited),
        (charged, charged),
        "what the server metered is what the corp charged, once"
    );
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
    assert!(announced(&events).len() > before, "charging resumed");
    assert_invariants(&admin_socket).await;
    assert_eq!(available(&address, &ca, &client).await, funded - charged);
    running.shutdown().await;
    drop(corp_daemon);
}

/// A tmpfs mounted for this test, unmounted when dropped.
struct SmallDisk {
    path: std::path::PathBuf,
    _parent: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(megabytes: u64) -> SmallDisk {
        let parent = tempfile::tempdir().expect("dir");
        let path = parent.path().join("disk");
        std::fs::create_dir(&path).expect("mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(&path)
            .status()
            .expect("mount");
        assert!(status.success(), "mounting a tmpfs");
        SmallDisk {
            path,
            _parent: parent,
        }
    }
}

impl SmallDisk {
    /// Bytes free on it.
    fn free_bytes(&self) -> u64 {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.path.as_os_str().as_bytes()).expect("path");
        // SAFETY: an all-zero statvfs is a valid value to be overwritten.
        let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `stats` valid for writes.
        let result = unsafe { libc::statvfs(path.as_ptr(), &mut stats) };
        assert_eq!(result, 0, "statvfs");
        stats.f_bavail * stats.f_frsize
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

/// The corp's disk full: writes are refused cleanly (nothing acknowledged is lost, nothing is
/// half-written), and when space returns the same requests succeed, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_corps_disk_full_refuses_writes_cleanly_and_recovers() {
    if !root("a small tmpfs for the corp's data") {
        return;
    }
    let disk = SmallDisk::mount(16);
    let config = xeno_corp::config::Config {
        corp_id: "corp-d".to_owned(),
        data_dir: disk.path.join("corp"),
        listen: "127.0.0.1:0".parse().expect("address"),
        web_listen: None,
        ..xeno_corp::config::Config::default()
    };
    let running = xeno_corp::daemon::start(config.clone())
        .await
        .expect("corp");
    let address = running.grpc_addr.to_string();
    let ca = running.ca_certificate_pem.clone();
    let client = register_client(&address, &ca, "Alice").await;
    let server_party = register_server(&address, &ca, "full").await;
    deposit(&running.admin_socket, &client.id, 100 * POUND).await;
    let order = order(&address, &ca, &client, 50 * POUND, 3600, &server_party.id).await;
    let order_id = order.issued.order_id.clone();
    let mut as_server = corp_as(&address, &ca, &server_party.credentials).await;
    as_server
        .validate_purchase_order(corp::ValidatePurchaseOrderRequest {
            purchase_order_xml: order.to_xml(),
            session_id: "s-full".to_owned(),
            requirements_xml: requirements(100, 16),
        })
        .await
        .expect("validated");
    // Fill the disk but for a little room, then charge until the corp refuses.
    let filler = disk.path.join("filler");
    let room = disk.free_bytes().saturating_sub(512 * 1024);
    std::fs::write(&filler, vec![0u8; usize::try_from(room).expect("size")]).expect("filler");
    let mut acknowledged = Vec::new();
    let mut refused_at = None;
    for sequence in 1..=2000u64 {
        match as_server
            .charge_from_purchase_order(fault_charge(&order_id, sequence))
            .await
        {
            Ok(_) => acknowledged.push(sequence),
            Err(status) => {
                assert_eq!(
                    status.code(),
                    Code::Unavailable,
                    "a full disk is the corp's problem, reported as such: {status:?}"
                );
                refused_at = Some(sequence);
                break;
            }
        }
    }
    let refused_at = refused_at.expect("the full disk refused a charge");
    println!(
        "disk full: {} charges acknowledged, #{refused_at} refused",
        acknowledged.len()
    );
    // Refused again while full, and the corp still answers reads.
    assert!(
        as_server
            .charge_from_purchase_order(fault_charge(&order_id, refused_at))
            .await
            .is_err()
    );
    corp_as(&address, &ca, &client.credentials)
        .await
        .get_account(corp::GetAccountRequest {})
        .await
        .expect("reads still work");
    std::fs::remove_file(&filler).expect("room again");
    for sequence in refused_at..refused_at + 5 {
        let answer = as_server
            .charge_from_purchase_order(fault_charge(&order_id, sequence))
            .await
            .expect("charges succeed once there is room")
            .into_inner();
        assert!(!answer.replayed, "#{sequence} was not half-stored before");
        acknowledged.push(sequence);
    }
    assert_invariants(&running.admin_socket).await;
    running.shutdown().await;
    // After a restart from that disk: every acknowledged charge, nothing else.
    let running = xeno_corp::daemon::start(config)
        .await
        .expect("corp restarts");
    let (_, charged, audited, sequences) =
        order_books(&running.grpc_addr.to_string(), &ca, &client, &order_id).await;
    assert_eq!(sequences, acknowledged);
    assert_eq!(charged, audited);
    assert_eq!(charged, 10 * acknowledged.len() as u64);
    assert_invariants(&running.admin_socket).await;
    running.shutdown().await;
}

fn fault_charge(order_id: &str, sequence: u64) -> corp::ChargeRequest {
    let start = time::OffsetDateTime::now_utc();
    let usage = xeno_schemas::documents::UsageRecord {
        order_id: order_id.to_owned(),
        session_id: "s-full".to_owned(),
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
        charge: xeno_schemas::documents::Money {
            currency: "GBP".parse().expect("GBP"),
            minor: 10,
        },
        // A long annotation, so that the disk fills in a few hundred charges.
        activity: Some("x".repeat(1000)),
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

const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// The server's clock 10 minutes ahead of the corp's, then 10 minutes behind: certificates
/// are accepted, the session ends when the corp's expiry passes (not 10 minutes early or
/// late), and its final charge lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_ten_minutes_apart_still_bill_exactly() {
    if !Path::new(LIBFAKETIME).exists() {
        xeno_tests::prerequisite::missing(&format!("{LIBFAKETIME} missing (install faketime)"));
        return;
    }
    let books = Books::open().await;
    let mut orders = Vec::new();
    for skew in ["+10m", "-10m"] {
        let dir = tempfile::tempdir().expect("dir");
        let config = books.server_config(dir.path(), &format!("{METERING}{WASM}"));
        let path = write(dir.path(), "xenoserver.toml", &config);
        let mut command = daemon_command("xenoserver", &path);
        command
            .env("LD_PRELOAD", LIBFAKETIME)
            .env("FAKETIME", skew)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        let daemon = Daemon::start(command);
        let mut client = server_as(
            &daemon.grpc,
            &books.ca,
            &books.client.credentials,
            &daemon.id,
        )
        .await;
        let lifetime = 6;
        let order = books.order(5 * POUND, lifetime).await;
        let started = Instant::now();
        let session = client
            .create_session(server::CreateSessionRequest {
                requirements_xml: requirements(200, 16),
                purchase_order_xml: order.to_xml(),
            })
            .await
            .expect("a session with the server's clock off")
            .into_inner()
            .session_id;
        let (task_xml, payloads) = spin_task();
        client
            .deploy_task(server::DeployTaskRequest {
                session_id: session.clone(),
                task_xml,
                payloads,
            })
            .await
            .expect("deploy");
        let events = watch_charges(&mut client, &session, usize::MAX).await;
        let took = started.elapsed();
        let end = events
            .iter()
            .find_map(|event| match &event.event {
                Some(server::session_event::Event::SessionEnded(end)) => Some(end.clone()),
                _ => None,
            })
            .expect("the session ended");
        println!("server clock {skew}: ended after {took:?}: {}", end.reason);
        assert!(
            took > Duration::from_secs(lifetime - 2) && took < Duration::from_secs(lifetime + 20),
            "with its clock {skew}, the server ended a {lifetime} s order after {took:?}"
        );
        orders.push((order.issued.order_id.clone(), announced(&events)));
        drop(daemon);
    }
    books.check(&orders).await;
}
