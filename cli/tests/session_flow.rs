//! A client's whole session with the `xeno` command against a real XenoCorp and XenoServer on
//! loopback: register, order, narrow and sign, create a Wasm session, deploy a task with its
//! payload, read its output and status, destroy the session, and read the charges. And
//! `xeno dev --once`, the README's main command.

use std::path::Path;
use std::process::Command;
use xeno_schemas::Document;
use xeno_schemas::proto::common::v1::Money;
use xeno_schemas::proto::corp::v1 as corp_pb;

fn xeno(profile: &Path, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_xeno"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .output()
        .expect("running xeno");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn ok(profile: &Path, args: &[&str]) -> String {
    let (code, stdout, stderr) = xeno(profile, args);
    assert_eq!(code, 0, "xeno {args:?} failed: {stderr}");
    stdout
}

/// A Wasm module printing "hi from wasm\n".
const HELLO_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hi from wasm\n")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 13))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_with_the_xeno_command() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corp = xeno_corp::daemon::start(xeno_corp::config::Config {
        data_dir: dir.path().join("corp"),
        listen: "127.0.0.1:0".parse().expect("address"),
        web_listen: None,
        ..xeno_corp::config::Config::default()
    })
    .await
    .expect("corp");
    let corp_address = corp.grpc_addr.to_string();
    let ca = dir.path().join("corp-ca.pem");
    std::fs::write(&ca, &corp.ca_certificate_pem).expect("ca");
    let ca = ca.to_str().expect("utf-8");
    let host = dir.path().join("host");
    let alice = dir.path().join("alice");
    ok(
        &host,
        &[
            "register",
            "server",
            "--corp",
            &corp_address,
            "--corp-ca",
            ca,
            "--owner-name",
            "Host",
            "--owner-address",
            "x",
            "--payout",
            "x",
            "--endpoint",
            "127.0.0.1:7443",
            "--cores",
            "2",
            "--memory-mb",
            "4096",
        ],
    );
    let server_config: xeno_envmgr::config::Config = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[corps]]\nid = \"corp-a\"\naddress = \"{corp_address}\"\nca = {:?}\ncertificate = {:?}\nkey = {:?}\n[metering]\nperiod_ms = 100\ncharge_interval_ms = 200\n[pricing]\ncpu_second = \"0.01\"\n",
        dir.path().join("server"),
        host.join("corp-ca.pem"),
        host.join("cert.pem"),
        host.join("key.pem"),
    ))
    .expect("server config");
    let server = xeno_envmgr::daemon::start(server_config)
        .await
        .expect("server");
    let server_address = server.grpc_addr.to_string();

    let out = ok(
        &alice,
        &[
            "register",
            "client",
            "--corp",
            &corp_address,
            "--corp-ca",
            ca,
            "--name",
            "Alice",
            "--address",
            "1 Road",
            "--charging",
            "card",
        ],
    );
    let alice_id = out.split_whitespace().nth(2).expect("id").to_owned();
    xeno_clients::corp_admin::connect(&corp.admin_socket)
        .await
        .expect("admin")
        .deposit(corp_pb::DepositRequest {
            account_id: alice_id,
            amount: Some(Money {
                currency: "GBP".into(),
                amount_minor: 10_000_000,
            }),
        })
        .await
        .expect("deposit");
    let out = ok(&alice, &["server", "status", &server_address]);
    assert!(
        out.contains(&format!("{}@{server_address}", server.server_id)) && out.contains("Wasm"),
        "the id the server proved, ready for --server: {out}"
    );
    // Named by another id, the same server is refused: it cannot prove to be that one.
    let someone_else = format!("{}@{server_address}", "0".repeat(64));
    let (code, _, stderr) = xeno(&alice, &["server", "status", &someone_else]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "the peer is server {}, not {}",
            server.server_id,
            "0".repeat(64)
        )),
        "{stderr}"
    );

    let order = dir.path().join("order.xml");
    let order = order.to_str().expect("utf-8");
    ok(
        &alice,
        &["order", "create", "--amount", "2.00", "--out", order],
    );
    // An unsigned order is refused before anything is sent.
    let requirements = dir.path().join("requirements.xml");
    let mut document = xeno_schemas::documents::EnvironmentalRequirements::new("cli", "Wasm");
    document.qos.cpu_msps = Some(200);
    document.qos.memory_mb = Some(32);
    std::fs::write(&requirements, document.to_xml()).expect("requirements");
    let requirements = requirements.to_str().expect("utf-8");
    let (code, _, stderr) = xeno(
        &alice,
        &[
            "session",
            "create",
            "-f",
            requirements,
            "--order",
            order,
            "--server",
            &server_address,
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("not signed yet"), "{stderr}");
    ok(
        &alice,
        &["order", "restrict", order, "--server", &server.server_id],
    );
    let out = ok(
        &alice,
        &[
            "session",
            "create",
            "-f",
            requirements,
            "--order",
            order,
            "--server",
            &server_address,
        ],
    );
    let session = out
        .split_whitespace()
        .nth(1)
        .expect("session id")
        .to_owned();
    assert!(session.starts_with("s-"), "{out}");

    // Deploy a task with its payload; its output comes back through `logs`.
    let wasm = wat::parse_str(HELLO_WAT).expect("wat");
    let wasm_path = dir.path().join("hello.wasm");
    std::fs::write(&wasm_path, &wasm).expect("wasm");
    let hash = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&wasm))
    };
    let task = xeno_schemas::documents::TaskDescription::new(
        xeno_schemas::documents::Program::WasmModule {
            sha256: hash,
            entry: None,
        },
    );
    let task_path = dir.path().join("task.xml");
    std::fs::write(&task_path, task.to_xml()).expect("task");
    let (code, _, stderr) = xeno(
        &alice,
        &["deploy", &session, task_path.to_str().expect("utf-8")],
    );
    assert_eq!(code, 1, "a missing payload is refused: {stderr}");
    let out = ok(
        &alice,
        &[
            "deploy",
            &session,
            task_path.to_str().expect("utf-8"),
            "--payload",
            wasm_path.to_str().expect("utf-8"),
        ],
    );
    assert!(out.contains("task t-1 deployed"), "{out}");
    let mut output = String::new();
    for _ in 0..100 {
        let (_, stdout, _) = xeno(&alice, &["logs", &session]);
        output = stdout;
        if output.contains("hi from wasm") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(output, "hi from wasm\n");
    let out = ok(&alice, &["status", &session, "t-1"]);
    assert!(
        out.contains("TASK_STATE_EXITED") && out.contains("exit 0"),
        "{out}"
    );
    let out = ok(&alice, &["status", &session]);
    assert!(out.contains("running") && out.contains("tasks 1"), "{out}");

    let out = ok(&alice, &["destroy", &session]);
    assert!(
        out.contains("destroyed by its client") && out.contains("returned"),
        "{out}"
    );
    let out = ok(&alice, &["charges", &session]);
    assert!(
        out.contains("CHARGE_OUTCOME_CHARGED") && out.contains("t-1"),
        "{out}"
    );
    let (code, _, stderr) = xeno(
        &alice,
        &[
            "deploy",
            &session,
            task_path.to_str().expect("utf-8"),
            "--payload",
            wasm_path.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("the session has ended"), "{stderr}");
    server.shutdown().await;
    corp.shutdown().await;
}

#[test]
fn xeno_dev_once_runs_the_demo_through_the_whole_platform() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("dev");
    let output = Command::new(env!("CARGO_BIN_EXE_xeno"))
        .args(["dev", "--once", "--data-dir"])
        .arg(&data)
        .output()
        .expect("xeno dev");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("| Hello from a XenoServer!"), "{stdout}");
    assert!(stdout.contains("| sum = 80000000200000000"), "{stdout}");
    assert!(stdout.contains("task t-1: exit 0"), "{stdout}");
    assert!(
        stdout.contains("CHARGE_OUTCOME_CHARGED") && stdout.contains("demo complete."),
        "{stdout}"
    );
    // Where KVM is available, the Linux demo runs Debian's busybox in a paravirtual domain.
    let linux = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok()
        && std::path::Path::new("/bin/busybox").is_file();
    if linux {
        assert!(stdout.contains("== Linux demo"), "{stdout}");
        assert!(
            stdout.contains("| Hello from busybox in a paravirtual Linux domain!"),
            "{stdout}"
        );
        assert!(
            stdout.matches("CHARGE_OUTCOME_CHARGED").count() >= 2,
            "both demos were charged: {stdout}"
        );
    } else {
        xeno_tests::prerequisite::missing(
            "/dev/kvm or /bin/busybox unavailable: the Linux demo is not checked",
        );
        assert!(stdout.contains("The Linux demo is skipped"), "{stdout}");
    }
    // A second run on the same state reuses the registrations.
    let again = Command::new(env!("CARGO_BIN_EXE_xeno"))
        .args(["dev", "--once", "--data-dir"])
        .arg(&data)
        .output()
        .expect("xeno dev again");
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let next_order = if linux {
        "dev-corp:po-3"
    } else {
        "dev-corp:po-2"
    };
    assert!(String::from_utf8_lossy(&again.stdout).contains(next_order));
}
