//! End to end through the real daemons over mutual TLS: a client orders, opens a Wasm session,
//! deploys tasks, watches their output, and destroys the session; the corp's charges equal the
//! priced usage exactly, and the order is closed with the remainder released. Plus funds
//! exhaustion, bad input, and a restart of the server in the middle of a session.

mod support;

use sha2::{Digest, Sha256};
use support::*;
use tonic::Code;
use xeno_envmgr::config::{Basis, PriceSheet, split_minor};
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription, UsageRecord};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as corp_pb;
use xeno_schemas::proto::server::v1 as pb;

const FAST_METERING: &str = "[metering]\nperiod_ms = 100\ncharge_interval_ms = 300\n";

fn ended_task(events: &[pb::SessionEvent], task: &str) -> Option<common::TaskExit> {
    events.iter().find_map(|event| match &event.event {
        Some(pb::session_event::Event::TaskEnded(ended)) if ended.task_id == task => {
            ended.exit.clone()
        }
        _ => None,
    })
}

/// What the corp recorded for an order: (sequence, amount) pairs and the usage records.
async fn charges(client: &mut Client, order_id: &str) -> (Vec<(u64, u64)>, Vec<UsageRecord>, u64) {
    let audit = client.audit(order_id).await;
    let pairs = audit
        .charges
        .iter()
        .map(|c| (c.sequence, c.amount.as_ref().map_or(0, |m| m.amount_minor)))
        .collect();
    let records = audit
        .charges
        .iter()
        .map(|c| UsageRecord::parse(c.usage_record_xml.as_bytes()).expect("usage record"))
        .collect();
    let total = audit
        .order
        .and_then(|o| o.charged)
        .map_or(0, |m| m.amount_minor);
    (pairs, records, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_run_and_the_corp_is_charged_exactly_what_was_used() {
    let mut platform = Platform::start(FAST_METERING).await;
    let server_id = platform.server().server_id.clone();
    let order = platform.client.order(5 * POUND, &server_id).await;
    let order_id = order.issued.order_id.clone();
    let mut server = platform.client.server(&platform).await;
    let session = server
        .create_session(pb::CreateSessionRequest {
            requirements_xml: requirements(500, 64),
            purchase_order_xml: order.to_xml(),
        })
        .await
        .expect("session")
        .into_inner();
    assert_eq!(
        (
            session.env_type.as_str(),
            session.cpu_msps,
            session.memory_mb
        ),
        ("Wasm", 500, 64)
    );
    let status = server
        .query_xeno_server_status(pb::QueryStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.server_id, server_id);
    assert!(
        status
            .advertisement_xml
            .contains("<PriceSheet currency=\"GBP\">")
    );

    // A hello task: its output is streamed, it exits 0.
    let (task_xml, payloads) = wasm_task(&hello_wat("hello, xenoserver\n"), "hello");
    let watcher = {
        let mut server = platform.client.server(&platform).await;
        let session = session.session_id.clone();
        tokio::spawn(async move {
            collect_events(&mut server, &session, true, |e| matches!(&e.event, Some(pb::session_event::Event::TaskEnded(ended)) if ended.task_id == "t-1")).await
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let deployed = server
        .deploy_task(pb::DeployTaskRequest {
            session_id: session.session_id.clone(),
            task_xml,
            payloads,
        })
        .await
        .expect("deploy")
        .into_inner();
    assert_eq!(deployed.task_id, "t-1");
    let events = watcher.await.expect("watcher");
    assert_eq!(stdout_of(&events), "hello, xenoserver\n");
    let exit = ended_task(&events, "t-1").expect("t-1 ended");
    assert_eq!(
        (exit.state, exit.exit_code),
        (common::TaskState::Exited as i32, 0)
    );

    // A CPU-bound task: charges arrive while it runs.
    let (spin_xml, spin_payloads) = wasm_task(SPIN_WAT, "spin");
    server
        .deploy_task(pb::DeployTaskRequest {
            session_id: session.session_id.clone(),
            task_xml: spin_xml,
            payloads: spin_payloads,
        })
        .await
        .expect("deploy spin");
    let charges_seen = collect_events(&mut server, &session.session_id, true, {
        let mut seen = 0;
        move |event| {
            if matches!(event.event, Some(pb::session_event::Event::Charge(_))) {
                seen += 1;
            }
            seen >= 3
        }
    })
    .await;
    assert!(
        charges_seen
            .iter()
            .filter(|e| matches!(e.event, Some(pb::session_event::Event::Charge(_))))
            .count()
            >= 3,
        "charges are made while the task runs"
    );

    // Destroy: final charge, order closed, remainder back to the client.
    let destroyed = server
        .destroy_session(pb::DestroySessionRequest {
            session_id: session.session_id.clone(),
        })
        .await
        .expect("destroy")
        .into_inner();
    let usage = destroyed.usage.expect("final usage");
    assert!(
        usage.cpu_time_us > 200_000,
        "the spinning task used CPU: {usage:?}"
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
    let (pairs, records, total) = charges(&mut platform.client, &order_id).await;
    assert_eq!(total, charged);
    assert_eq!(
        pairs
            .iter()
            .map(|(sequence, _)| *sequence)
            .collect::<Vec<_>>(),
        (1..=pairs.len() as u64).collect::<Vec<_>>(),
        "sequence numbers run 1..n without gaps or repeats"
    );
    // Each record's CPUms is whole milliseconds of its own period, so the sum may trail the
    // exact total by under a millisecond per record.
    let recorded_ms: u64 = records.iter().map(|r| r.cpu_ms).sum();
    assert!(
        recorded_ms <= usage.cpu_time_us / 1000
            && recorded_ms + records.len() as u64 >= usage.cpu_time_us / 1000,
        "the usage records account for the CPU"
    );
    assert!(
        records.iter().any(|r| r
            .activity
            .as_deref()
            .is_some_and(|a| a.contains("t-2 spin"))),
        "annotations say what the session was doing"
    );
    let account = platform.client.account().await;
    let available = account
        .balances
        .iter()
        .find_map(|b| b.available.clone())
        .map_or(0, |m| m.amount_minor);
    assert_eq!(available, 100 * POUND - charged);
    // Destroying again returns the same summary; the session is gone for deployment.
    let again = server
        .destroy_session(pb::DestroySessionRequest {
            session_id: session.session_id.clone(),
        })
        .await
        .expect("destroy again")
        .into_inner();
    assert_eq!(again.charged_total.expect("charged").amount_minor, charged);
    let refused = server
        .deploy_task(pb::DeployTaskRequest {
            session_id: session.session_id.clone(),
            task_xml: wasm_task(SPIN_WAT, "late").0,
            payloads: wasm_task(SPIN_WAT, "late").1,
        })
        .await;
    assert_eq!(refused.expect_err("ended").code(), Code::FailedPrecondition);
    platform.invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_funds_stops_the_task_and_charges_no_more_than_the_order() {
    // A pricey CPU: 0.001 GBP per CPU second; the order covers half a CPU second.
    let mut platform = Platform::start(&format!(
        "{FAST_METERING}[pricing]\ncpu_second = \"0.001\"\n"
    ))
    .await;
    let (mut server, order, session_id) = spinning_session(&mut platform, 500, 500).await;
    let events = collect_events(&mut server, &session_id, true, |e| {
        matches!(e.event, Some(pb::session_event::Event::SessionEnded(_)))
    })
    .await;
    let end = events
        .iter()
        .find_map(|e| match &e.event {
            Some(pb::session_event::Event::SessionEnded(end)) => Some(end.clone()),
            _ => None,
        })
        .expect("the session ends by itself");
    assert_eq!(end.reason, "funds exhausted");
    let exit = ended_task(&events, "t-1").expect("the task was stopped");
    assert_eq!(exit.state, common::TaskState::Stopped as i32);
    assert_eq!(
        end.charged_total.expect("charged").amount_minor,
        500,
        "the whole order, and not a unit more"
    );
    let (_, _, total) = charges(&mut platform.client, &order.issued.order_id).await;
    assert_eq!(total, 500);
    platform.invariants().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors_and_harms_nothing() {
    let mut platform = Platform::start(&format!("{FAST_METERING}[limits]\npayload_bytes_max = 1048576\n[capacity]\ncpu_msps = 2000\nmemory_mb = 1024\n")).await;
    let server_id = platform.server().server_id.clone();
    let mut server = platform.client.server(&platform).await;
    let expect = |result: Result<tonic::Response<pb::CreateSessionResponse>, tonic::Status>,
                  code: Code,
                  words: &str| {
        let status = result.expect_err(words);
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().contains(words),
            "{:?} lacks {words:?}",
            status.message()
        );
    };
    let order = platform.client.order(POUND, &server_id).await;
    expect(
        server
            .create_session(pb::CreateSessionRequest {
                requirements_xml: "<EnvironmentalRequirements><Basic/></EnvironmentalRequirements>"
                    .into(),
                purchase_order_xml: order.to_xml(),
            })
            .await,
        Code::InvalidArgument,
        "requirements: Basic: missing <EnvName>",
    );
    let mut linux = xeno_schemas::documents::EnvironmentalRequirements::new("x", "Quantum");
    linux.qos.cpu_msps = Some(100);
    expect(
        server
            .create_session(pb::CreateSessionRequest {
                requirements_xml: linux.to_xml(),
                purchase_order_xml: order.to_xml(),
            })
            .await,
        Code::Unimplemented,
        "does not run Quantum",
    );
    expect(
        server
            .create_session(pb::CreateSessionRequest {
                requirements_xml: requirements(1_000_000, 64),
                purchase_order_xml: order.to_xml(),
            })
            .await,
        Code::ResourceExhausted,
        "not enough CPU",
    );
    expect(
        server
            .create_session(pb::CreateSessionRequest {
                requirements_xml: requirements(100, 1_000_000),
                purchase_order_xml: order.to_xml(),
            })
            .await,
        Code::ResourceExhausted,
        "not enough memory",
    );
    let mut unsigned = order.clone();
    unsigned.client_signature = None;
    expect(
        server
            .create_session(pb::CreateSessionRequest {
                requirements_xml: requirements(100, 64),
                purchase_order_xml: unsigned.to_xml(),
            })
            .await,
        Code::PermissionDenied,
        "not signed by its client",
    );
    // Someone else's order.
    let mut bob = Platform::new_client(&platform.corp, "Bob").await;
    let mut bob_server = bob.server(&platform).await;
    expect(
        bob_server
            .create_session(pb::CreateSessionRequest {
                requirements_xml: requirements(100, 64),
                purchase_order_xml: order.to_xml(),
            })
            .await,
        Code::PermissionDenied,
        "belongs to another client",
    );

    // A good session, then bad deployments into it.
    let session = server
        .create_session(pb::CreateSessionRequest {
            requirements_xml: requirements(300, 64),
            purchase_order_xml: order.to_xml(),
        })
        .await
        .expect("session")
        .into_inner();
    let id = session.session_id.clone();
    let deploy = |task_xml: String, payloads: Vec<common::Payload>| pb::DeployTaskRequest {
        session_id: id.clone(),
        task_xml,
        payloads,
    };
    let (hello_xml, hello_payloads) = wasm_task(&hello_wat("hi\n"), "hello");
    let check = |result: Result<tonic::Response<pb::DeployTaskResponse>, tonic::Status>,
                 code: Code,
                 words: &str| {
        let status = result.expect_err(words);
        assert_eq!(status.code(), code, "{}", status.message());
        assert!(
            status.message().contains(words),
            "{:?} lacks {words:?}",
            status.message()
        );
    };
    let mut wrong = hello_payloads.clone();
    wrong[0].data.push(0);
    check(
        server.deploy_task(deploy(hello_xml.clone(), wrong)).await,
        Code::InvalidArgument,
        "hashes to",
    );
    check(
        server
            .deploy_task(deploy(hello_xml.clone(), Vec::new()))
            .await,
        Code::InvalidArgument,
        "but it was not sent",
    );
    check(
        server
            .deploy_task(deploy("<TaskDescription/>".into(), Vec::new()))
            .await,
        Code::InvalidArgument,
        "task: TaskDescription: missing one of <WasmModule>",
    );
    let garbage = vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, 0xff];
    let (garbage_xml, garbage_payloads) = {
        let sha256 = hex::encode(Sha256::digest(&garbage));
        let task = TaskDescription::new(xeno_schemas::documents::Program::WasmModule {
            sha256: sha256.clone(),
            entry: None,
        });
        (
            task.to_xml(),
            vec![common::Payload {
                sha256,
                data: garbage,
            }],
        )
    };
    check(
        server
            .deploy_task(deploy(garbage_xml, garbage_payloads))
            .await,
        Code::InvalidArgument,
        "",
    );
    let big = vec![0u8; 3 << 19];
    let big_hash = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(&big))
    };
    check(
        server
            .deploy_task(deploy(
                hello_xml.clone(),
                vec![common::Payload {
                    sha256: big_hash,
                    data: big,
                }],
            ))
            .await,
        Code::ResourceExhausted,
        "at most 1048576",
    );
    // Other clients see nothing of this session; unknown sessions are not found.
    check(
        bob_server
            .deploy_task(deploy(hello_xml.clone(), hello_payloads.clone()))
            .await,
        Code::NotFound,
        "no session",
    );
    let status = bob_server
        .destroy_session(pb::DestroySessionRequest {
            session_id: id.clone(),
        })
        .await
        .expect_err("not Bob's");
    assert_eq!(status.code(), Code::NotFound);
    let status = server
        .task_status(pb::TaskStatusRequest {
            session_id: "s-nope".into(),
            task_id: "t-1".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound);

    // A trapping task ends alone; the server and the session carry on.
    let (trap_xml, trap_payloads) =
        wasm_task(r#"(module (func (export "_start") unreachable))"#, "trap");
    server
        .deploy_task(deploy(trap_xml, trap_payloads))
        .await
        .expect("deploy trap");
    let events = collect_events(&mut server, &id, true, |e| matches!(&e.event, Some(pb::session_event::Event::TaskEnded(ended)) if ended.task_id == "t-1")).await;
    let exit = ended_task(&events, "t-1").expect("trap ended");
    assert_eq!(
        exit.state,
        common::TaskState::Failed as i32,
        "{}",
        exit.reason
    );
    server
        .deploy_task(deploy(hello_xml, hello_payloads))
        .await
        .expect("the session still works");
    let destroyed = server
        .destroy_session(pb::DestroySessionRequest {
            session_id: id.clone(),
        })
        .await
        .expect("destroy")
        .into_inner();
    let usage = destroyed.usage.expect("usage");
    let prices = PriceSheet::from_config(&platform.server_config.pricing).expect("prices");
    let (priced, _) =
        split_minor(prices.cost_fine(&usage, Basis::Time) + prices.session_start_fine());
    assert_eq!(
        destroyed.charged_total.expect("charged").amount_minor,
        priced,
        "no charge exceeds what was consumed"
    );
    let _ = bob.account().await;
    platform.invariants().await;
    let audit = platform.client.audit(&order.issued.order_id).await;
    assert_eq!(
        audit.order.expect("order").state,
        corp_pb::OrderState::Closed as i32
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_revoked_by_its_corp_is_refused_by_the_server() {
    let platform = Platform::start(
        "[metering]\nperiod_ms = 100\ncharge_interval_ms = 300\nrevocation_refresh_ms = 100\n",
    )
    .await;
    let mut server = platform.client.server(&platform).await;
    server
        .list_sessions(pb::ListSessionsRequest {})
        .await
        .expect("allowed before revocation");
    xeno_clients::corp_admin::connect(&platform.corp.admin_socket)
        .await
        .expect("admin")
        .revoke(corp_pb::RevokeRequest {
            account_id: platform.client.id.clone(),
        })
        .await
        .expect("revoke");
    let mut refused = None;
    for _ in 0..100 {
        match server.list_sessions(pb::ListSessionsRequest {}).await {
            Err(status) => {
                refused = Some(status);
                break;
            }
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
    let status = refused.expect("the server learns of the revocation");
    assert_eq!(status.code(), Code::Unauthenticated);
    assert!(
        status.message().contains("revoked by corp-e"),
        "{}",
        status.message()
    );
}

/// Output beyond the server's kept cap used to vanish silently: `xeno logs` ended at
/// 1,048,576 of 1,048,754 bytes with no notice, and an OutputBytes above the cap was clamped
/// without a word. Watchers and TaskStatus now say how much was not kept, and why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_the_server_does_not_keep_is_announced_with_its_reason() {
    let mut platform = Platform::start(&format!(
        "{FAST_METERING}\n[defaults]\noutput_bytes_max = 1000\n"
    ))
    .await;
    let server_id = platform.server().server_id.clone();
    let order = platform.client.order(POUND, &server_id).await;
    let mut server = platform.client.server(&platform).await;
    let session = server
        .create_session(pb::CreateSessionRequest {
            requirements_xml: requirements(500, 32),
            purchase_order_xml: order.to_xml(),
        })
        .await
        .expect("session")
        .into_inner()
        .session_id;
    let text = "x".repeat(1500);
    let wasm = wat::parse_str(hello_wat(&text)).expect("WAT");
    let sha256 = hex::encode(Sha256::digest(&wasm));
    let mut task = TaskDescription::new(Program::WasmModule {
        sha256: sha256.clone(),
        entry: None,
    });
    task.output_bytes = Some(100_000);
    let task_id = server
        .deploy_task(pb::DeployTaskRequest {
            session_id: session.clone(),
            task_xml: task.to_xml(),
            payloads: vec![common::Payload { sha256, data: wasm }],
        })
        .await
        .expect("deploy")
        .into_inner()
        .task_id;
    // Wait for the end, then replay what is kept, as `xeno logs` does.
    collect_events(&mut server, &session, true, |event| {
        matches!(&event.event, Some(pb::session_event::Event::TaskEnded(_)))
    })
    .await;
    let replay = collect_events(&mut server, &session, false, |_| false).await;
    assert_eq!(stdout_of(&replay).len(), 1000, "the kept head");
    let notice = replay
        .iter()
        .find_map(|event| match &event.event {
            Some(pb::session_event::Event::Dropped(dropped)) => Some(dropped.clone()),
            _ => None,
        })
        .expect("a notice of the output not kept");
    assert_eq!((notice.offset, notice.bytes), (1000, 500), "{notice:?}");
    assert!(
        notice
            .reason
            .contains("the task asked to keep 100000 but may keep at most 1000"),
        "{notice:?}"
    );
    let status = server
        .task_status(pb::TaskStatusRequest {
            session_id: session.clone(),
            task_id,
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.output_dropped_bytes, 500);
    assert_eq!(status.output_dropped_reason, notice.reason);
    assert_eq!(status.usage.expect("usage").output_bytes, 1500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_deploys_at_once_into_one_session_make_six_tasks_with_distinct_ids() {
    let mut platform = Platform::start(FAST_METERING).await;
    let server_id = platform.server().server_id.clone();
    let order = platform.client.order(POUND, &server_id).await;
    let mut server = platform.client.server(&platform).await;
    let session = server
        .create_session(pb::CreateSessionRequest {
            requirements_xml: requirements(500, 32),
            purchase_order_xml: order.to_xml(),
        })
        .await
        .expect("session")
        .into_inner()
        .session_id;
    let mut deploys = tokio::task::JoinSet::new();
    for index in 0..6 {
        let mut server = server.clone();
        let session = session.clone();
        let (task_xml, payloads) = wasm_task(&hello_wat(&format!("task {index}\n")), "hello");
        deploys.spawn(async move {
            server
                .deploy_task(pb::DeployTaskRequest {
                    session_id: session,
                    task_xml,
                    payloads,
                })
                .await
                .map(|response| response.into_inner().task_id)
        });
    }
    let mut ids = Vec::new();
    while let Some(joined) = deploys.join_next().await {
        ids.push(joined.expect("task").expect("every deploy is accepted"));
    }
    ids.sort();
    assert_eq!(ids, ["t-1", "t-2", "t-3", "t-4", "t-5", "t-6"]);
    let events = collect_events(&mut server, &session, true, {
        let mut ended = 0;
        move |event| {
            if matches!(&event.event, Some(pb::session_event::Event::TaskEnded(_))) {
                ended += 1;
            }
            ended == 6
        }
    })
    .await;
    let mut outputs: Vec<String> = stdout_of(&events).lines().map(str::to_owned).collect();
    outputs.sort();
    let expected: Vec<String> = (0..6).map(|index| format!("task {index}")).collect();
    assert_eq!(outputs, expected, "each task ran once");
}
