//! The whole purchase order life over real mutual TLS to a running XenoCorp, with the `xeno`
//! command doing the client's part (`register`, `order create`, `order restrict`, `order show`,
//! `account`, `audit`) and a server registered with `xeno register server` doing its part.

use std::path::Path;
use std::process::Command;
use xeno_clients::transport::{Credentials, Peer, connect};
use xeno_schemas::Document;
use xeno_schemas::documents::PurchaseOrder;
use xeno_schemas::proto::common::v1::Money;
use xeno_schemas::proto::corp::v1 as pb;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;

/// Runs `xeno` and returns (exit code, stdout, stderr).
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

fn gbp(minor: u64) -> Option<Money> {
    Some(Money {
        currency: "GBP".to_owned(),
        amount_minor: minor,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_order_narrow_validate_charge_close_audit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = xeno_corp::config::Config {
        data_dir: dir.path().join("corp"),
        listen: "127.0.0.1:0".parse().expect("address"),
        web_listen: None,
        ..xeno_corp::config::Config::default()
    };
    let corp = xeno_corp::daemon::start(config).await.expect("corp");
    let address = corp.grpc_addr.to_string();
    let ca_file = dir.path().join("corp-ca.pem");
    std::fs::write(&ca_file, &corp.ca_certificate_pem).expect("CA file");
    let ca = ca_file.to_str().expect("utf-8");
    let alice = dir.path().join("alice");
    let host = dir.path().join("host");

    // The client registers; its key never leaves its profile directory.
    let out = ok(
        &alice,
        &[
            "register",
            "client",
            "--corp",
            &address,
            "--corp-ca",
            ca,
            "--name",
            "Alice",
            "--address",
            "1 Road",
            "--charging",
            "card 4242",
        ],
    );
    let alice_id = out
        .split_whitespace()
        .nth(2)
        .expect("account id")
        .to_owned();
    assert!(alice_id.starts_with("corp-a:c-"), "{out}");
    let key_mode = std::fs::metadata(alice.join("key.pem"))
        .expect("key")
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&key_mode) & 0o777,
        0o600
    );
    // Registering twice into the same profile is refused before anything is sent.
    let (code, _, stderr) = xeno(
        &alice,
        &[
            "register",
            "client",
            "--corp",
            &address,
            "--corp-ca",
            ca,
            "--name",
            "A",
            "--address",
            "x",
            "--charging",
            "x",
        ],
    );
    assert_eq!(code, 2, "{stderr}");

    let out = ok(
        &host,
        &[
            "register",
            "server",
            "--corp",
            &address,
            "--corp-ca",
            ca,
            "--owner-name",
            "Host Ltd",
            "--owner-address",
            "2 Lane",
            "--payout",
            "bank 1",
            "--endpoint",
            "127.0.0.1:7443",
            "--cores",
            "2",
            "--memory-mb",
            "2048",
        ],
    );
    let server_id = out.split_whitespace().nth(2).expect("server id").to_owned();
    assert_eq!(server_id.len(), 64, "{out}");

    // The operator credits the client; the client buys an order.
    let mut admin = xeno_clients::corp_admin::connect(&corp.admin_socket)
        .await
        .expect("admin");
    admin
        .deposit(pb::DepositRequest {
            account_id: alice_id.clone(),
            amount: gbp(100_000_000),
        })
        .await
        .expect("deposit");
    let (code, _, stderr) = xeno(&alice, &["order", "create", "--amount", "500"]);
    assert_eq!(
        code, 1,
        "an order beyond the balance is a refusal: {stderr}"
    );
    assert!(
        stderr.contains("insufficient available balance"),
        "{stderr}"
    );
    let order_file = dir.path().join("order.xml");
    let out = ok(
        &alice,
        &[
            "order",
            "create",
            "--amount",
            "10.00",
            "--out",
            order_file.to_str().expect("utf-8"),
        ],
    );
    assert!(out.contains("available now 90.00 GBP"), "{out}");
    let (code, out, _) = xeno(
        &alice,
        &["order", "show", order_file.to_str().expect("utf-8")],
    );
    assert_eq!(code, 0);
    assert!(
        out.contains("corp signature       valid") && out.contains("not signed yet"),
        "{out}"
    );

    // Narrow to this server and 5.00, and sign.
    let signed_file = dir.path().join("signed.xml");
    ok(
        &alice,
        &[
            "order",
            "restrict",
            order_file.to_str().expect("utf-8"),
            "--server",
            &server_id,
            "--env-type",
            "Wasm",
            "--max-amount",
            "5",
            "--not-after",
            "+3600",
            "--out",
            signed_file.to_str().expect("utf-8"),
        ],
    );
    let out = ok(
        &alice,
        &["order", "show", signed_file.to_str().expect("utf-8")],
    );
    assert!(
        out.contains("client signature     valid") && out.contains("at most 5.00 GBP"),
        "{out}"
    );
    // A tampered order no longer verifies.
    let tampered = std::fs::read_to_string(&signed_file)
        .expect("signed")
        .replace(
            "<Amount currency=\"GBP\">10.00</Amount>",
            "<Amount currency=\"GBP\">99.00</Amount>",
        );
    let tampered_file = dir.path().join("tampered.xml");
    std::fs::write(&tampered_file, tampered).expect("tampered");
    let (code, out, _) = xeno(
        &alice,
        &["order", "show", tampered_file.to_str().expect("utf-8")],
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("corp signature       INVALID"), "{out}");

    // The server, with the credentials `xeno register server` left in its profile, validates,
    // charges and closes over mTLS.
    let read = |name: &str| std::fs::read_to_string(host.join(name)).expect("server profile");
    let credentials = Credentials {
        certificate_pem: read("cert.pem"),
        key_pem: read("key.pem"),
    };
    let mut server = XenoCorpClient::new(
        connect(
            &address,
            &corp.ca_certificate_pem,
            Some(&credentials),
            &Peer::Corp(None),
        )
        .await
        .expect("server mTLS"),
    );
    let order =
        PurchaseOrder::parse(&std::fs::read(&signed_file).expect("order")).expect("order parses");
    let order_id = order.issued.order_id.clone();
    let mut requirements = xeno_schemas::documents::EnvironmentalRequirements::new("e2e", "Wasm");
    requirements.qos.cpu_msps = Some(100);
    let validation = server
        .validate_purchase_order(pb::ValidatePurchaseOrderRequest {
            purchase_order_xml: order.to_xml(),
            session_id: "s-1".to_owned(),
            requirements_xml: requirements.to_xml(),
        })
        .await
        .expect("validation")
        .into_inner();
    assert_eq!(validation.limit.expect("limit").amount_minor, 5_000_000);
    for (sequence, minor) in [(1, 1_500_000), (2, 500_000)] {
        let usage = xeno_schemas::documents::UsageRecord {
            order_id: order_id.clone(),
            session_id: "s-1".to_owned(),
            sequence,
            period_start: time::OffsetDateTime::now_utc(),
            period_end: time::OffsetDateTime::now_utc(),
            cpu_ms: 150,
            memory_mb_ms: 64_000,
            network_bytes_in: None,
            network_bytes_out: None,
            fuel: None,
            syscalls: None,
            output_bytes: None,
            charge: xeno_schemas::documents::Money {
                currency: "GBP".parse().expect("GBP"),
                minor,
            },
            activity: Some(format!("e2e step {sequence}")),
            tasks: Vec::new(),
            extensions: Vec::new(),
        };
        let answer = server
            .charge_from_purchase_order(pb::ChargeRequest {
                order_id: order_id.clone(),
                sequence,
                amount: gbp(minor),
                usage_record_xml: usage.to_xml(),
            })
            .await
            .expect("charge")
            .into_inner();
        assert_eq!(answer.outcome, pb::ChargeOutcome::Charged as i32);
    }
    let settlement = server
        .close_purchase_order(pb::ClosePurchaseOrderRequest {
            order_id: order_id.clone(),
        })
        .await
        .expect("close")
        .into_inner();
    assert_eq!(
        settlement.returned.expect("returned").amount_minor,
        8_000_000
    );

    // The client reads the audit trail and its balance.
    let out = ok(&alice, &["audit", &order_id]);
    assert!(
        out.contains("e2e step 1")
            && out.contains("e2e step 2")
            && out.contains("charged 2.00 GBP"),
        "{out}"
    );
    let out = ok(&alice, &["account"]);
    assert!(out.contains("available 98.00 GBP"), "{out}");
    let report = admin
        .check_invariants(pb::CheckInvariantsRequest {})
        .await
        .expect("check")
        .into_inner();
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    corp.shutdown().await;
}
