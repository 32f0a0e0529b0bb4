//! End to end with the built-in Linux task manager: a client opens a session of `EnvType`
//! `Linux`, deploys Debian's unmodified static busybox into its paravirtual domain (a file
//! shipped beside it, then a CPU-bound shell loop), watches the output, and destroys the
//! session; the corp is charged exactly the priced usage, as for Wasm.
//!
//! Needs `/dev/kvm` and Debian's `busybox-static`; prints SKIP otherwise.

mod support;

use sha2::{Digest, Sha256};
use support::*;
use xeno_envmgr::config::{Basis, PriceSheet, split_minor};
use xeno_schemas::Document;
use xeno_schemas::documents::{EnvironmentalRequirements, Program, TaskDescription, TaskFile};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::server::v1 as pb;

const LINUX: &str = "[metering]\nperiod_ms = 100\ncharge_interval_ms = 300\n[[task_managers]]\nenv_type = \"Wasm\"\nbuiltin = \"wasm\"\n[[task_managers]]\nenv_type = \"Linux\"\nbuiltin = \"linux\"\n";

fn busybox() -> Option<Vec<u8>> {
    if !xeno_tests::prerequisite::kvm() {
        return None;
    }
    match std::fs::read("/bin/busybox") {
        Ok(bytes) => Some(bytes),
        Err(_) => {
            xeno_tests::prerequisite::missing("/bin/busybox unavailable (Debian: busybox-static)");
            None
        }
    }
}

fn payload(data: &[u8]) -> common::Payload {
    common::Payload {
        sha256: hex::encode(Sha256::digest(data)),
        data: data.to_vec(),
    }
}

/// busybox running `applet args...`, with `files` (path, bytes) placed first.
fn busybox_task(
    busybox: &[u8],
    name: &str,
    applet: &str,
    args: &[&str],
    files: &[(&str, &[u8])],
) -> (String, Vec<common::Payload>) {
    let program = payload(busybox);
    let mut task = TaskDescription::new(Program::Executable {
        sha256: program.sha256.clone(),
    });
    task.name = Some(name.to_owned());
    task.argv0 = Some(applet.to_owned());
    task.args = args.iter().map(|arg| (*arg).to_owned()).collect();
    let mut payloads = vec![program];
    for (path, data) in files {
        let file = payload(data);
        task.files.push(TaskFile {
            path: (*path).to_owned(),
            sha256: file.sha256.clone(),
            mode: 0o644,
        });
        payloads.push(file);
    }
    (task.to_xml(), payloads)
}

fn ended(events: &[pb::SessionEvent], task: &str) -> Option<common::TaskExit> {
    events.iter().find_map(|event| match &event.event {
        Some(pb::session_event::Event::TaskEnded(end)) if end.task_id == task => end.exit.clone(),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linux_session_runs_busybox_and_is_charged_exactly() {
    let Some(busybox) = busybox() else {
        return;
    };
    let mut platform = Platform::start(LINUX).await;
    let server_id = platform.server().server_id.clone();
    let order = platform.client.order(5 * POUND, &server_id).await;
    let mut server = platform.client.server(&platform).await;

    // The server says what it runs.
    let status = server
        .query_xeno_server_status(pb::QueryStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let linux = status
        .environments
        .iter()
        .find(|environment| environment.env_type == "Linux")
        .expect("Linux is offered");
    assert!(!linux.versions.is_empty());

    let mut requirements = EnvironmentalRequirements::new("linux test", "Linux");
    requirements.qos.cpu_msps = Some(200);
    requirements.qos.memory_mb = Some(64);
    let session = server
        .create_session(pb::CreateSessionRequest {
            requirements_xml: requirements.to_xml(),
            purchase_order_xml: order.to_xml(),
        })
        .await
        .expect("session")
        .into_inner();
    assert_eq!(session.env_type, "Linux");

    // sha256sum of a file shipped with the task, inside the domain.
    let data = b"the XenoServer Open Platform\n".repeat(1000);
    let (task_xml, payloads) = busybox_task(
        &busybox,
        "digest",
        "sha256sum",
        &["/data.txt"],
        &[("data.txt", &data)],
    );
    let watcher = {
        let mut server = platform.client.server(&platform).await;
        let session = session.session_id.clone();
        tokio::spawn(async move {
            collect_events(&mut server, &session, true, |event| {
                matches!(&event.event, Some(pb::session_event::Event::TaskEnded(end)) if end.task_id == "t-1")
            })
            .await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    server
        .deploy_task(pb::DeployTaskRequest {
            session_id: session.session_id.clone(),
            task_xml,
            payloads,
        })
        .await
        .expect("deploy");
    let events = watcher.await.expect("watcher");
    assert_eq!(
        stdout_of(&events),
        format!("{}  /data.txt\n", hex::encode(Sha256::digest(&data)))
    );
    let exit = ended(&events, "t-1").expect("t-1 ended");
    assert_eq!(
        (exit.state, exit.exit_code),
        (common::TaskState::Exited as i32, 0)
    );

    // What the first task used counts in the session's usage too.
    let first_cpu_ms = server
        .task_status(pb::TaskStatusRequest {
            session_id: session.session_id.clone(),
            task_id: "t-1".into(),
        })
        .await
        .expect("t-1 status")
        .into_inner()
        .usage
        .expect("t-1 usage")
        .cpu_time_us
        / 1000;

    // A CPU-bound task: charged while it runs, held to the session's 200 CPUmsps.
    let (spin_xml, spin_payloads) = busybox_task(
        &busybox,
        "spin",
        "sh",
        &["-c", "while true; do :; done"],
        &[],
    );
    server
        .deploy_task(pb::DeployTaskRequest {
            session_id: session.session_id.clone(),
            task_xml: spin_xml,
            payloads: spin_payloads,
        })
        .await
        .expect("deploy spin");
    let started = std::time::Instant::now();
    let charges = collect_events(&mut server, &session.session_id, true, {
        let mut seen = 0;
        move |event| {
            if matches!(event.event, Some(pb::session_event::Event::Charge(_))) {
                seen += 1;
            }
            seen >= 4
        }
    })
    .await;
    assert!(
        charges
            .iter()
            .filter(|event| matches!(event.event, Some(pb::session_event::Event::Charge(_))))
            .count()
            >= 4,
        "charges are made while the task runs"
    );

    let destroyed = server
        .destroy_session(pb::DestroySessionRequest {
            session_id: session.session_id.clone(),
        })
        .await
        .expect("destroy")
        .into_inner();
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let usage = destroyed.usage.expect("final usage");
    assert!(usage.cpu_time_us > 50_000, "the loop used CPU: {usage:?}");
    // 200 ms per second, plus the bucket's small start-up credit (and the first task's CPU).
    assert!(
        usage.cpu_time_us / 1000 <= first_cpu_ms + elapsed_ms / 5 + 100,
        "held to 200 CPUmsps: {} ms of CPU in {elapsed_ms} ms, {first_cpu_ms} ms of it the first task's",
        usage.cpu_time_us / 1000
    );
    let charged = destroyed.charged_total.expect("charged").amount_minor;
    let prices = PriceSheet::from_config(&platform.server_config.pricing).expect("prices");
    let (expected, _) =
        split_minor(prices.cost_fine(&usage, Basis::Time) + prices.session_start_fine());
    assert_eq!(charged, expected, "charged exactly the priced usage");
    assert_eq!(
        destroyed.returned.expect("returned").amount_minor,
        5 * POUND - charged
    );
    platform.invariants().await;
}
