//! The server restarted in the middle of a session: with the Wasm task manager running as an
//! external plugin, the session's task keeps running, the restarted server resumes metering
//! from the cumulative usage, and the corp ends up charged exactly the priced usage, with no
//! charge lost or made twice.

mod support;

use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;
use support::*;
use xeno_envmgr::config::{Basis, PriceSheet, split_minor};
use xeno_schemas::Document;
use xeno_schemas::proto::server::v1 as pb;

/// The plugin process, killed when dropped.
struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `xeno-taskmgr-wasm` binary beside this test's own (building it if needed).
fn plugin_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let binary = dir.join("xeno-taskmgr-wasm");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args([
                "build",
                "-p",
                "xeno-taskmgr-wasm",
                "--bin",
                "xeno-taskmgr-wasm",
            ])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building the Wasm task manager plugin");
    }
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_mid_session_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("wasm.sock");
    let _plugin = Plugin(
        Command::new(plugin_binary())
            .arg("--socket")
            .arg(&socket)
            .spawn()
            .expect("starting the plugin"),
    );
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(socket.exists(), "the plugin did not open its socket");
    let extra = format!(
        "[metering]\nperiod_ms = 100\ncharge_interval_ms = 300\n[[task_managers]]\nenv_type = \"Wasm\"\naddress = \"unix:{}\"\n",
        socket.display()
    );
    let mut platform = Platform::start(&extra).await;
    let (mut server, order, session_id) = spinning_session(&mut platform, 5 * POUND, 300).await;
    let charged_before = collect_events(&mut server, &session_id, true, {
        let mut seen = 0;
        move |event| {
            seen += usize::from(matches!(
                event.event,
                Some(pb::session_event::Event::Charge(_))
            ));
            seen >= 2
        }
    })
    .await;
    assert!(charged_before.len() >= 2);

    platform.restart_server().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut server = platform.client.server(&platform).await;
    let charged_after = collect_events(&mut server, &session_id, true, {
        let mut seen = 0;
        move |event| {
            seen += usize::from(matches!(
                event.event,
                Some(pb::session_event::Event::Charge(_))
            ));
            seen >= 2
        }
    })
    .await;
    assert!(
        charged_after
            .iter()
            .any(|e| matches!(e.event, Some(pb::session_event::Event::Charge(_)))),
        "the restarted server charges on"
    );

    let destroyed = server
        .destroy_session(pb::DestroySessionRequest {
            session_id: session_id.clone(),
        })
        .await
        .expect("destroy")
        .into_inner();
    let usage = destroyed.usage.expect("usage");
    assert!(
        usage.cpu_time_us > 300_000,
        "the task kept running across the restart: {usage:?}"
    );
    let prices = PriceSheet::from_config(&platform.server_config.pricing).expect("prices");
    let (expected, _) =
        split_minor(prices.cost_fine(&usage, Basis::Time) + prices.session_start_fine());
    let charged = destroyed.charged_total.expect("charged").amount_minor;
    assert_eq!(
        charged, expected,
        "all the usage across the restart is charged, once"
    );
    let audit = platform.client.audit(&order.issued.order_id).await;
    let sequences: Vec<u64> = audit.charges.iter().map(|c| c.sequence).collect();
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        audit
            .charges
            .iter()
            .map(|c| c.amount.as_ref().map_or(0, |m| m.amount_minor))
            .sum::<u64>(),
        charged
    );
    platform.invariants().await;
}

#[tokio::test]
async fn a_corp_outage_mid_session_is_charged_in_full_once_it_is_back() {
    let mut platform =
        Platform::start("[metering]\nperiod_ms = 100\ncharge_interval_ms = 300\n").await;
    let (mut server, order, session_id) = spinning_session(&mut platform, 5 * POUND, 300).await;
    let charge_events = |wanted: usize| {
        let mut seen = 0;
        move |event: &pb::SessionEvent| {
            seen += usize::from(matches!(
                event.event,
                Some(pb::session_event::Event::Charge(_))
            ));
            seen >= wanted
        }
    };
    collect_events(&mut server, &session_id, true, charge_events(1)).await;

    // Several charge intervals without the corp: the server keeps metering and keeps the
    // charges it could not deliver.
    let unix_ms = || {
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock")
                .as_millis(),
        )
        .expect("ms")
    };
    let down_at = unix_ms();
    platform.corp_outage(Duration::from_millis(1200)).await;
    let back_at = unix_ms();
    collect_events(&mut server, &session_id, true, charge_events(2)).await;

    let destroyed = server
        .destroy_session(pb::DestroySessionRequest {
            session_id: session_id.clone(),
        })
        .await
        .expect("destroy")
        .into_inner();
    let usage = destroyed.usage.expect("usage");
    let prices = PriceSheet::from_config(&platform.server_config.pricing).expect("prices");
    let (expected, _) =
        split_minor(prices.cost_fine(&usage, Basis::Time) + prices.session_start_fine());
    let charged = destroyed.charged_total.expect("charged").amount_minor;
    assert_eq!(
        charged, expected,
        "the usage during the outage is charged once the corp is back, once"
    );
    let audit = platform.client.audit(&order.issued.order_id).await;
    assert!(
        audit.charges.iter().any(|charge| {
            let record =
                xeno_schemas::documents::UsageRecord::parse(charge.usage_record_xml.as_bytes())
                    .expect("usage record");
            let ended =
                i64::try_from(record.period_end.unix_timestamp_nanos() / 1_000_000).expect("ms");
            (down_at..back_at).contains(&ended) && charge.recorded_at_unix_ms >= back_at
        }),
        "a charge made while the corp was down reached it once it was back"
    );
    let sequences: Vec<u64> = audit.charges.iter().map(|c| c.sequence).collect();
    assert_eq!(sequences, (1..=sequences.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        audit
            .charges
            .iter()
            .map(|c| c.amount.as_ref().map_or(0, |m| m.amount_minor))
            .sum::<u64>(),
        charged
    );
    platform.invariants().await;
}
