//! `xeno dev`: the whole platform on loopback in one process — a XenoCorp, an XIS and a
//! resource discovery system, a XenoServer with the built-in Wasm task manager (and the Linux
//! one where `/dev/kvm` opens) advertising itself in the XIS, and a demo client — with sample
//! tasks run through the full path: discovery, order, narrow and sign, session, deploy,
//! output, charges, settlement and the corp's audit trail. The Wasm demo sums numbers in a
//! WAT module; the Linux demo runs Debian's unmodified static busybox in a paravirtual
//! domain. Then it keeps serving (printing how to use it) until interrupted; `--once` runs the
//! demos and exits.

use crate::profile::{self, Profile, ProfileFile};
use anyhow::{Context, Result};
use clap::Args;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use xeno_schemas::Document;
use xeno_schemas::documents::{
    EnvironmentalRequirements, Program, PurchaseOrder, Restrictions, TaskDescription,
};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as corp_pb;
use xeno_schemas::proto::server::v1 as pb;

#[derive(Args)]
pub struct DevArgs {
    /// Where the platform keeps its state (corp ledger, server sessions, credentials).
    #[arg(long, default_value = "xeno-dev")]
    data_dir: PathBuf,
    /// Run the demo once and exit (0 on success), instead of serving afterwards.
    #[arg(long)]
    once: bool,
}

/// The demo task: prints a greeting, does a little arithmetic so there is CPU to bill, prints
/// the result and exits 0.
const DEMO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "Hello from a XenoServer! Summing 1..400,000,000 ...\n")
  (data (i32.const 128) "sum = ")
  (func $write (param $ptr i32) (param $len i32)
    (i32.store (i32.const 0) (local.get $ptr))
    (i32.store (i32.const 4) (local.get $len))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8))))
  (func $digits (param $n i64) (result i32)
    ;; Writes $n in decimal ending at offset 255, then a newline; returns the start offset.
    (local $at i32)
    (local.set $at (i32.const 255))
    (i32.store8 (i32.const 256) (i32.const 10))
    (loop $next
      (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 10)))))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (local.set $at (i32.sub (local.get $at) (i32.const 1)))
      (br_if $next (i64.ne (local.get $n) (i64.const 0))))
    (i32.add (local.get $at) (i32.const 1)))
  (func (export "_start")
    (local $i i64) (local $sum i64) (local $start i32)
    (call $write (i32.const 64) (i32.const 52))
    (loop $add
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (local.set $sum (i64.add (local.get $sum) (local.get $i)))
      (br_if $add (i64.lt_u (local.get $i) (i64.const 400000000))))
    (call $write (i32.const 128) (i32.const 6))
    (local.set $start (call $digits (local.get $sum)))
    (call $write (local.get $start) (i32.sub (i32.const 257) (local.get $start)))))
"#;

/// Registers a server with the corp, or reuses the credentials from an earlier run.
async fn server_credentials(
    dir: &Path,
    corp_address: &str,
    ca: &str,
) -> Result<(PathBuf, PathBuf)> {
    let certificate = dir.join("server-cert.pem");
    let key = dir.join("server-key.pem");
    if certificate.exists() && key.exists() {
        return Ok((certificate, key));
    }
    std::fs::create_dir_all(dir)?;
    let (key_pem, csr_pem) = xeno_clients::identity::key_and_csr("xenoserver")?;
    let mut corp = xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient::new(
        xeno_clients::transport::connect(
            corp_address,
            ca,
            None,
            &xeno_clients::transport::Peer::Corp(None),
        )
        .await?,
    );
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let response = corp
        .register_server(corp_pb::RegisterServerRequest {
            owner_name: "xeno dev".to_owned(),
            owner_address: "localhost".to_owned(),
            payout_details: "demo".to_owned(),
            machine: Some(corp_pb::MachineSpec {
                architecture: std::env::consts::ARCH.to_owned(),
                cpu_model: String::new(),
                cpu_cores: u32::try_from(cores).unwrap_or(1),
                memory_mb: 4096,
                network_mbps: 1000,
                xis_node: String::new(),
            }),
            csr_pem,
            endpoint: "127.0.0.1:7443".to_owned(),
        })
        .await
        .context("registering the demo server")?
        .into_inner();
    profile::write_private(&key, &key_pem)?;
    std::fs::write(&certificate, response.certificate_pem)?;
    Ok((certificate, key))
}

/// Registers the demo client, or reuses its profile.
async fn client_profile(dir: &Path, corp_address: &str, ca: &str) -> Result<(Profile, bool)> {
    if let Ok(mut profile) = Profile::load(dir) {
        // The corp listens on a new port each run.
        profile.move_corp(corp_address)?;
        return Ok((profile, false));
    }
    let (key_pem, csr_pem) = xeno_clients::identity::key_and_csr("Demo Client")?;
    let mut corp = xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient::new(
        xeno_clients::transport::connect(
            corp_address,
            ca,
            None,
            &xeno_clients::transport::Peer::Corp(None),
        )
        .await?,
    );
    let response = corp
        .register_client(corp_pb::RegisterClientRequest {
            name: "Demo Client".to_owned(),
            address: "1 Loopback Lane".to_owned(),
            charging_details: "demo".to_owned(),
            privacy: corp_pb::PrivacyMode::Identified as i32,
            csr_pem,
        })
        .await
        .context("registering the demo client")?
        .into_inner();
    let file = ProfileFile {
        corp: corp_address.to_owned(),
        account_id: response.account_id,
        role: "client".to_owned(),
    };
    profile::create(dir, &file, &key_pem, &response.certificate_pem, ca)?;
    Ok((Profile::load(dir)?, true))
}

pub async fn run(args: DevArgs) -> Result<ExitCode> {
    let data = std::path::absolute(&args.data_dir).context("resolving --data-dir")?;
    std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
    println!("xeno dev: state in {}", data.display());

    // The corp.
    let corp_config = xeno_corp::config::Config {
        corp_id: "dev-corp".to_owned(),
        data_dir: data.join("corp"),
        listen: "127.0.0.1:0".parse()?,
        web_listen: Some("127.0.0.1:0".parse()?),
        ..xeno_corp::config::Config::default()
    };
    let corp = xeno_corp::daemon::start(corp_config)
        .await
        .context("starting the corp")?;
    let corp_address = corp.grpc_addr.to_string();
    let ca = corp.ca_certificate_pem.clone();
    let ca_file = data.join("corp-ca.pem");
    std::fs::write(&ca_file, &ca)?;
    println!(
        "  XenoCorp dev-corp     grpc {corp_address}, web https://{}",
        corp.web_addr.map(|a| a.to_string()).unwrap_or_default()
    );

    // The XIS the server advertises in, and a resource discovery system reading it.
    let xis_config: xeno_xis::config::Config = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n",
        data.join("xis")
    ))?;
    let xis = xeno_xis::daemon::start(xis_config)
        .await
        .context("starting the XIS")?;
    let xis_address = xis.addr.to_string();
    let rd_config: xeno_rd::config::Config = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\nxis = {xis_address:?}\n"
    ))?;
    let rd = xeno_rd::daemon::start(rd_config)
        .await
        .context("starting resource discovery")?;
    let rd_address = rd.addr.to_string();
    println!("  XIS                   grpc {xis_address}");
    println!("  resource discovery    grpc {rd_address}");

    // The XenoServer, registered with the corp.
    let server_dir = data.join("server");
    let (certificate, key) = server_credentials(&server_dir, &corp_address, &ca).await?;
    let linux = linux_demo_available();
    let mut task_managers =
        "[[task_managers]]\nenv_type = \"Wasm\"\nbuiltin = \"wasm\"\n".to_owned();
    if linux.is_ok() {
        task_managers.push_str("[[task_managers]]\nenv_type = \"Linux\"\nbuiltin = \"linux\"\n");
    }
    let server_config: xeno_envmgr::config::Config = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n{task_managers}[xis]\naddress = {xis_address:?}\n[[corps]]\nid = \"dev-corp\"\naddress = {corp_address:?}\nca = {:?}\ncertificate = {:?}\nkey = {:?}\n[metering]\nperiod_ms = 500\ncharge_interval_ms = 1000\n[pricing]\ncpu_second = \"0.01\"\nmemory_mb_second = \"0.000001\"\n",
        server_dir.join("state"),
        ca_file,
        certificate,
        key
    ))?;
    let server = xeno_envmgr::daemon::start(server_config)
        .await
        .context("starting the XenoServer")?;
    let server_address = server.grpc_addr.to_string();
    let server_id = server.server_id.clone();
    println!(
        "  XenoServer {}  grpc {server_address} ({})",
        &server.server_id[..16],
        if linux.is_ok() { "Wasm, Linux" } else { "Wasm" }
    );

    // The demo client, with money.
    let (client, fresh) = client_profile(&data.join("client"), &corp_address, &ca).await?;
    if fresh {
        xeno_clients::corp_admin::connect(&corp.admin_socket)
            .await?
            .deposit(corp_pb::DepositRequest {
                account_id: client.file.account_id.clone(),
                amount: Some(common::Money {
                    currency: "GBP".to_owned(),
                    amount_minor: 100_000_000,
                }),
            })
            .await
            .context("crediting the demo client")?;
    }
    println!(
        "  demo client {}      profile {}",
        client.file.account_id,
        client.dir.display()
    );

    let demo_dir = data.join("demo");
    let found = discover(&server, &rd, &rd_address).await;
    let mut outcome = match found.and_then(|()| wasm_demo(&demo_dir)) {
        Ok(demo) => demo.run(&client, &server_address, &server.server_id).await,
        Err(error) => Err(error),
    };
    if outcome.is_ok() {
        outcome = match &linux {
            Ok(busybox) => match linux_demo(&demo_dir, busybox) {
                Ok(demo) => demo.run(&client, &server_address, &server.server_id).await,
                Err(error) => Err(error),
            },
            Err(why) => {
                println!("\nThe Linux demo is skipped: {why}.");
                Ok(())
            }
        };
    }
    match &outcome {
        Ok(()) => println!("\ndemo complete."),
        Err(error) => eprintln!("\ndemo failed: {error:#}"),
    }
    if args.once {
        server.shutdown().await;
        rd.shutdown().await;
        xis.shutdown().await;
        corp.shutdown().await;
        return Ok(if outcome.is_ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    println!(
        "\nServing on loopback until interrupted (Ctrl-C). Try:\n  export XENO_PROFILE={}\n  xeno account\n  xeno find --xis {xis_address} \"EnvType=Wasm CPUmsps=100..\"\n  xeno find --rd {rd_address} -f {} --objective cheapest --duration 600 --budget \"10.00 GBP\"\n  xeno server status {server_id}@{server_address}\n  xeno order create --amount 1.00 --out order.xml\n  xeno order restrict order.xml --server {server_id}\n  xeno session create -f {} --order order.xml --server {server_id}@{server_address}\n  xeno deploy SESSION {} --payload {}\n  xeno logs -f SESSION",
        client.dir.display(),
        demo_dir.join("wasm/requirements.xml").display(),
        demo_dir.join("wasm/requirements.xml").display(),
        demo_dir.join("wasm/task.xml").display(),
        demo_dir.join("wasm/hello.wasm").display(),
    );
    let _ = tokio::signal::ctrl_c().await;
    println!("stopping");
    server.shutdown().await;
    rd.shutdown().await;
    xis.shutdown().await;
    corp.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

/// Step 0: the client finds the server through resource discovery, once the server's first
/// advertisement is in the XIS.
async fn discover(
    server: &xeno_envmgr::daemon::RunningServer,
    rd: &xeno_rd::daemon::RunningRd,
    rd_address: &str,
) -> Result<()> {
    if let Some(discovery) = &server.discovery {
        discovery
            .wait_advertised()
            .await
            .context("advertising the server in the XIS")?;
    }
    rd.sync_now(true)
        .await
        .context("syncing resource discovery")?;
    let mut requirements = EnvironmentalRequirements::new("xeno dev demo", "Wasm");
    requirements.qos.cpu_msps = Some(500);
    requirements.qos.memory_mb = Some(32);
    println!(
        "\n0. The client asks resource discovery for the cheapest Wasm server for ten minutes, within 10 GBP:"
    );
    let answer = xeno_clients::rd::find_xeno_servers(
        xeno_clients::rd::connect(rd_address).await?,
        &xeno_clients::rd::FindRequest {
            requirements,
            objective: xeno_clients::rd::Asked::Cheapest {
                duration_seconds: 600,
                budget: Some(xeno_schemas::documents::Money {
                    currency: "GBP".parse().map_err(anyhow::Error::msg)?,
                    minor: 10 * xeno_schemas::documents::MINOR_UNITS_PER_MAJOR,
                }),
            },
            max_results: 3,
        },
    )
    .await
    .context("finding servers")?;
    let best = answer
        .suggestions
        .first()
        .context("resource discovery suggested no server")?;
    let cost = best
        .estimated_cost
        .as_ref()
        .map(|money| {
            format!(
                ", about {} {} for ten minutes",
                xeno_schemas::documents::format_minor(money.minor),
                money.currency
            )
        })
        .unwrap_or_default();
    println!(
        "   {} at {}{cost} (signature checked)",
        &best.advertisement.server_id[..16],
        best.advertisement.endpoint
    );
    anyhow::ensure!(
        best.advertisement.server_id == server.server_id,
        "resource discovery suggested another server"
    );
    Ok(())
}

/// Where busybox is, if this machine can run the Linux demo; otherwise why not.
fn linux_demo_available() -> std::result::Result<PathBuf, String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|error| format!("/dev/kvm unavailable ({error})"))?;
    let busybox = PathBuf::from("/bin/busybox");
    if !busybox.is_file() {
        return Err("/bin/busybox not found (Debian: apt-get install busybox-static)".to_owned());
    }
    Ok(busybox)
}

/// One sample task and the session it runs in.
struct Demo {
    env_type: &'static str,
    /// What the demo prints it deploys.
    what: String,
    requirements: EnvironmentalRequirements,
    task: TaskDescription,
    program: Vec<u8>,
}

/// The Wasm demo: the WAT summing module above, written beside its documents so the commands
/// printed afterwards can deploy it again.
fn wasm_demo(demo_dir: &Path) -> Result<Demo> {
    let dir = demo_dir.join("wasm");
    std::fs::create_dir_all(&dir)?;
    let wasm = wat::parse_str(DEMO_WAT).context("assembling the demo module")?;
    let mut task = TaskDescription::new(Program::WasmModule {
        sha256: hex::encode(Sha256::digest(&wasm)),
        entry: None,
    });
    task.name = Some("hello".to_owned());
    let mut requirements = EnvironmentalRequirements::new("xeno dev demo", "Wasm");
    requirements.qos.cpu_msps = Some(500);
    requirements.qos.memory_mb = Some(32);
    std::fs::write(dir.join("hello.wasm"), &wasm)?;
    std::fs::write(dir.join("task.xml"), task.to_xml())?;
    std::fs::write(dir.join("requirements.xml"), requirements.to_xml())?;
    Ok(Demo {
        env_type: "Wasm",
        what: "hello.wasm".to_owned(),
        requirements,
        task,
        program: wasm,
    })
}

/// The Linux demo: Debian's static busybox, unmodified, in a paravirtual domain.
fn linux_demo(demo_dir: &Path, busybox: &Path) -> Result<Demo> {
    let dir = demo_dir.join("linux");
    std::fs::create_dir_all(&dir)?;
    let program =
        std::fs::read(busybox).with_context(|| format!("reading {}", busybox.display()))?;
    let mut task = TaskDescription::new(Program::Executable {
        sha256: hex::encode(Sha256::digest(&program)),
    });
    task.name = Some("busybox-echo".to_owned());
    task.argv0 = Some("echo".to_owned());
    task.args = vec!["Hello from busybox in a paravirtual Linux domain!".to_owned()];
    let mut requirements = EnvironmentalRequirements::new("xeno dev Linux demo", "Linux");
    requirements.qos.cpu_msps = Some(500);
    requirements.qos.memory_mb = Some(64);
    std::fs::write(dir.join("task.xml"), task.to_xml())?;
    std::fs::write(dir.join("requirements.xml"), requirements.to_xml())?;
    Ok(Demo {
        env_type: "Linux",
        what: format!("{} (echo)", busybox.display()),
        requirements,
        task,
        program,
    })
}

impl Demo {
    /// Runs the sample task through the whole path, printing what happens.
    async fn run(self, client: &Profile, server_address: &str, server_id: &str) -> Result<()> {
        let Demo {
            env_type,
            what,
            requirements,
            task,
            program,
        } = self;
        let hash = hex::encode(Sha256::digest(&program));
        println!("\n== {env_type} demo");
        println!(
            "\n1. The client buys a purchase order for 1.00 GBP and narrows it to this server:"
        );
        let mut corp = crate::order::corp(client).await?;
        let created = corp
            .create_purchase_order(corp_pb::CreatePurchaseOrderRequest {
                amount: Some(common::Money {
                    currency: "GBP".to_owned(),
                    amount_minor: 1_000_000,
                }),
                lifetime_seconds: 3600,
            })
            .await
            .context("buying the order")?
            .into_inner();
        let mut order = PurchaseOrder::parse(created.purchase_order_xml.as_bytes())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        order.client_restrictions = Some(Restrictions {
            servers: Some(vec![server_id.to_owned()]),
            env_types: Some(vec![env_type.to_owned()]),
            ..Restrictions::default()
        });
        order.client_signature = Some(client.signing_key()?.sign(&order.client_signed_bytes())?);
        println!(
            "   order {} signed by the corp and the client",
            order.issued.order_id
        );

        println!(
            "2. A session ({env_type}, {} CPUmsps, {} MB) on the XenoServer:",
            requirements.qos.cpu_msps.unwrap_or_default(),
            requirements.qos.memory_mb.unwrap_or_default()
        );
        let target = crate::session::ServerTarget {
            id: Some(server_id.to_owned()),
            endpoint: server_address.to_owned(),
        };
        let mut server = crate::session::server(client, &target).await?;
        let session = server
            .create_session(pb::CreateSessionRequest {
                requirements_xml: requirements.to_xml(),
                purchase_order_xml: order.to_xml(),
            })
            .await
            .context("creating the session")?
            .into_inner();
        println!("   session {}", session.session_id);

        println!("3. Deploy {what} and stream its output:");
        let watch = server
            .watch_session(pb::WatchSessionRequest {
                session_id: session.session_id.clone(),
                from_offset: Default::default(),
                follow: true,
            })
            .await
            .context("watching")?;
        let deployed = server
            .deploy_task(pb::DeployTaskRequest {
                session_id: session.session_id.clone(),
                task_xml: task.to_xml(),
                payloads: vec![common::Payload {
                    sha256: hash,
                    data: program,
                }],
            })
            .await
            .context("deploying")?
            .into_inner();
        let mut stream = watch.into_inner();
        let mut line_start = true;
        while let Some(event) = stream.message().await? {
            use pb::session_event::Event;
            match event.event {
                Some(Event::Output(chunk)) => {
                    for c in String::from_utf8_lossy(&chunk.data).chars() {
                        if line_start {
                            print!("   | ");
                        }
                        print!("{c}");
                        line_start = c == '\n';
                    }
                }
                Some(Event::TaskEnded(ended)) if ended.task_id == deployed.task_id => {
                    let exit = ended.exit.unwrap_or_default();
                    let usage = exit.usage.unwrap_or_default();
                    let fuel = if usage.fuel > 0 {
                        format!(", {} fuel", usage.fuel)
                    } else {
                        String::new()
                    };
                    println!(
                        "   task {}: {} ({:.1} ms CPU{fuel})",
                        ended.task_id,
                        exit.reason,
                        usage.cpu_time_us as f64 / 1000.0
                    );
                    break;
                }
                _ => {}
            }
        }

        println!("4. Destroy the session: final charge, and the order is closed:");
        let destroyed = server
            .destroy_session(pb::DestroySessionRequest {
                session_id: session.session_id.clone(),
            })
            .await
            .context("destroying")?
            .into_inner();
        let amount = |money: Option<common::Money>| {
            money
                .map(|m| {
                    format!(
                        "{} {}",
                        xeno_schemas::documents::format_minor(m.amount_minor),
                        m.currency
                    )
                })
                .unwrap_or_default()
        };
        println!(
            "   charged {}, returned {} to the client",
            amount(destroyed.charged_total),
            amount(destroyed.returned)
        );

        println!("5. The corp's audit trail for the order:");
        let audit = crate::order::whole_audit(&mut corp, &order.issued.order_id)
            .await
            .context("auditing")?;
        crate::order::print_audit(&audit);
        anyhow::ensure!(!audit.charges.is_empty(), "the corp recorded no charges");
        Ok(())
    }
}
