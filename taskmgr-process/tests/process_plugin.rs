//! The Process task manager plugin as an environment manager uses it: the
//! `xeno-process-plugin` binary serving on a Unix socket, reached through
//! `RemoteTaskManager`. It must pass the whole conformance suite; then come the checks of what
//! this plugin promises beyond the contract (rlimits, process groups, signals, files, the
//! wall-clock limit, a domain-wide CPU rate, a clean shutdown on SIGTERM).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::{Plugin, kernel_release, live_group_members, scratch, shell_guests};
use tonic::{Code, Request};
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription, TaskFile};
use xeno_schemas::proto::common::v1::{OutputStream, Payload, TaskExit, TaskState};
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::conformance::{self, Guest, Guests, default_limits};
use xeno_taskmgr_kit::{DynTaskManager, EventStream};

/// Longest any of these tests waits for a task to end.
const END_WAIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread")]
async fn passes_the_conformance_suite() {
    let plugin = Plugin::start().await;
    let started = Instant::now();
    match conformance::run_suite(plugin.client.clone(), &shell_guests()).await {
        Ok(report) => println!("{report}\nsuite took {:?}", started.elapsed()),
        Err(failed) => panic!("{failed}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_offer_the_host_kernel() {
    let plugin = Plugin::start().await;
    let caps = plugin
        .client
        .get_capabilities(Request::new(pb::GetCapabilitiesRequest {}))
        .await
        .expect("GetCapabilities")
        .into_inner();
    assert_eq!(caps.env_types, ["Process"]);
    assert_eq!(caps.versions, [kernel_release()]);
    assert_eq!(caps.program_kinds, ["Executable", "ExecutablePath"]);
    assert!(!caps.reports_fuel);
    // The version asked for by name is accepted and presented.
    let domain = create(
        &plugin.client,
        "kernel",
        limits(),
        Some(&kernel_release()),
        None,
    )
    .await;
    destroy(&plugin.client, &domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_memory_rlimit_makes_a_hungry_program_fail() {
    let plugin = Plugin::start().await;
    let guests = shell_guests();
    // Doubles a string 26 times, to 64 MiB, which needs well over 64 MiB of address space.
    let hungry = guests.script(
        "x=a; i=0; while [ $i -lt 26 ]; do x=\"$x$x\"; i=$((i + 1)); done; printf 'survived\\n'",
        &[],
        &[],
    );
    let small = pb::DomainLimits {
        memory_mb: 64,
        ..limits()
    };
    let domain = create(&plugin.client, "hungry", small, None, None).await;
    let (exit, stdout) = run(&plugin.client, &domain, "hungry", &hungry).await;
    assert!(
        !(exit.state == TaskState::Exited as i32 && exit.exit_code == 0),
        "a program needing more than its 64 MiB address space succeeded: {exit:?}"
    );
    assert!(stdout.is_empty(), "it got past the allocation: {stdout:?}");
    destroy(&plugin.client, &domain).await;

    // The same program with room to spare succeeds: the cap, not the program, stopped it.
    let roomy = pb::DomainLimits {
        memory_mb: 1024,
        ..limits()
    };
    let domain = create(&plugin.client, "roomy", roomy, None, None).await;
    let (exit, stdout) = run(&plugin.client, &domain, "hungry", &hungry).await;
    assert_eq!(
        (exit.state, exit.exit_code),
        (TaskState::Exited as i32, 0),
        "{exit:?}"
    );
    assert_eq!(stdout, b"survived\n");
    destroy(&plugin.client, &domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_process_of_the_group_survives_destroy() {
    let plugin = Plugin::start().await;
    let guests = shell_guests();
    // A background spinner in the task's group, then the leader prints its pid (the pgid).
    let forker = guests.script(
        "( while :; do :; done ) & printf '%s\\n' $$; while :; do :; done",
        &[],
        &[],
    );
    let domain = create(&plugin.client, "forker", limits(), None, None).await;
    let mut events = watch(&plugin.client, &domain).await;
    deploy(&plugin.client, &domain, "forker", &forker).await;
    let mut stdout = Vec::new();
    let deadline = Instant::now() + END_WAIT;
    while !stdout.ends_with(b"\n") {
        let event = next_event(&mut events, deadline).await;
        if let Some(pb::domain_event::Event::Output(chunk)) = event {
            stdout.extend_from_slice(&chunk.data);
        }
    }
    let pgid: i32 = String::from_utf8_lossy(&stdout)
        .trim()
        .parse()
        .expect("the task printed its pid");
    assert_ne!(pgid, plugin.pid() as i32, "the task has a group of its own");
    wait_until(END_WAIT, "both processes of the group running", || {
        live_group_members(pgid).len() >= 2
    })
    .await;
    destroy(&plugin.client, &domain).await;
    wait_until(
        Duration::from_secs(3),
        "no live process left in the group",
        || live_group_members(pgid).is_empty(),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_destroys_every_domain_before_the_plugin_exits() {
    let mut plugin = Plugin::start().await;
    let guests = shell_guests();
    let domain = create(&plugin.client, "sigterm", limits(), None, None).await;
    let mut events = watch(&plugin.client, &domain).await;
    let printer = guests.script("printf '%s\\n' $$; while :; do :; done", &[], &[]);
    deploy(&plugin.client, &domain, "spin", &printer).await;
    let deadline = Instant::now() + END_WAIT;
    let mut stdout = Vec::new();
    while !stdout.ends_with(b"\n") {
        if let Some(pb::domain_event::Event::Output(chunk)) =
            next_event(&mut events, deadline).await
        {
            stdout.extend_from_slice(&chunk.data);
        }
    }
    let pgid: i32 = String::from_utf8_lossy(&stdout)
        .trim()
        .parse()
        .expect("the task printed its pid");
    // The plugin is terminated while a watcher follows the domain: the watcher sees the task
    // stopped and the domain destroyed, and the plugin still exits promptly.
    let exited = tokio::task::spawn_blocking(move || {
        let exited = plugin.terminate(Duration::from_secs(10));
        (plugin, exited)
    });
    let mut ended = None;
    loop {
        match next_event(&mut events, deadline).await {
            Some(pb::domain_event::Event::TaskEnded(task)) => ended = task.exit,
            Some(pb::domain_event::Event::Destroyed(_)) => break,
            _ => {}
        }
    }
    let ended = ended.expect("TaskEnded before DomainDestroyed");
    assert_eq!(ended.state, TaskState::Stopped as i32, "{ended:?}");
    let (_plugin, exited) = exited.await.expect("terminate");
    assert!(
        exited,
        "the plugin did not exit cleanly within 10 s of SIGTERM"
    );
    assert!(
        live_group_members(pgid).is_empty(),
        "the task outlived the plugin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fatal_signal_is_a_failure() {
    let plugin = Plugin::start().await;
    let guests = shell_guests();
    let domain = create(&plugin.client, "segv", limits(), None, None).await;
    let (exit, _) = run(
        &plugin.client,
        &domain,
        "segv",
        &guests.script("kill -SEGV $$", &[], &[]),
    )
    .await;
    assert_eq!(exit.state, TaskState::Failed as i32, "{exit:?}");
    assert_eq!(exit.reason, "killed by signal 11 (SIGSEGV)");
    destroy(&plugin.client, &domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn files_working_dir_and_executable_path() {
    let plugin = Plugin::start().await;
    let guests = shell_guests();
    let (_dir, scratch) = scratch();
    let domain = create(&plugin.client, "files", limits(), None, Some(&scratch)).await;
    let script = b"#!/bin/sh\nprintf '%s\\n' \"$(pwd)\"\ncat ../data.txt\n".to_vec();
    let data = b"shipped beside the task\n".to_vec();
    let mut task = TaskDescription::new(Program::ExecutablePath("bin/greet".into()));
    task.working_dir = Some("work/dir".into());
    task.env = vec![("PATH".into(), "/usr/bin:/bin".into())];
    task.files = vec![
        file("bin/greet", &script, 0o755),
        file("work/data.txt", &data, 0o644),
    ];
    let guest = Guest {
        task_xml: task.to_xml(),
        payloads: vec![payload(script), payload(data)],
    };
    let (exit, stdout) = run(&plugin.client, &domain, "greet", &guest).await;
    assert_eq!(exit.state, TaskState::Exited as i32, "{exit:?}");
    let expected = format!(
        "{}\nshipped beside the task\n",
        scratch.join("work/dir").display()
    );
    assert_eq!(String::from_utf8_lossy(&stdout), expected);

    // Argv0 is what the program sees as its name (with -c and no name after the script,
    // the shell's $0 is its argv[0]).
    let mut named = TaskDescription::new(Program::Executable {
        sha256: guests.payload().sha256,
    });
    named.argv0 = Some("custom-name".into());
    named.args = vec!["-c".into(), "printf '%s\\n' \"$0\"".into()];
    let named = Guest {
        task_xml: named.to_xml(),
        payloads: vec![guests.payload()],
    };
    let (_, stdout) = run(&plugin.client, &domain, "named", &named).await;
    assert_eq!(stdout, b"custom-name\n");

    // A payload whose bytes do not match its hash, and a program kind this plugin lacks.
    let mut tampered = guests.hello();
    tampered.payloads[0].data.push(0);
    let refused = deploy_result(&plugin.client, &domain, "tampered", &tampered).await;
    assert_eq!(
        refused.map_err(|status| status.code()),
        Err(Code::InvalidArgument)
    );
    let wasm = TaskDescription::new(Program::WasmModule {
        sha256: guests.payload().sha256,
        entry: None,
    });
    let wasm = Guest {
        task_xml: wasm.to_xml(),
        payloads: vec![guests.payload()],
    };
    let refused = deploy_result(&plugin.client, &domain, "wasm", &wasm).await;
    assert_eq!(
        refused.map_err(|status| status.code()),
        Err(Code::Unimplemented)
    );
    destroy(&plugin.client, &domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_wall_clock_limit_stops_a_task() {
    let plugin = Plugin::start().await;
    let guests = shell_guests();
    let mut task = guests.task("while :; do :; done", &[], &[]);
    task.wall_clock_seconds = Some(1);
    let guest = Guest {
        task_xml: task.to_xml(),
        payloads: vec![guests.payload()],
    };
    let domain = create(&plugin.client, "wall", limits(), None, None).await;
    let started = Instant::now();
    let (exit, _) = run(&plugin.client, &domain, "spin", &guest).await;
    assert_eq!(exit.state, TaskState::Stopped as i32, "{exit:?}");
    assert_eq!(exit.reason, "wall-clock limit of 1 s reached");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "stopped after {took:?}");
    destroy(&plugin.client, &domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cpu_rate_holds_for_the_domain_as_a_whole() {
    const MSPS: u64 = 300;
    let plugin = Plugin::start().await;
    let guests = shell_guests();
    let domain = create(
        &plugin.client,
        "shared",
        pb::DomainLimits {
            cpu_msps: MSPS,
            ..limits()
        },
        None,
        None,
    )
    .await;
    for task in ["spin-1", "spin-2"] {
        deploy(&plugin.client, &domain, task, &guests.spin()).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (before, at_before) = (usage(&plugin.client, &domain).await, Instant::now());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (after, at_after) = (usage(&plugin.client, &domain).await, Instant::now());
    let measured = (after.cpu_time_us - before.cpu_time_us)
        / u64::try_from(at_after.duration_since(at_before).as_millis()).expect("milliseconds fit");
    assert!(
        (MSPS * 85 / 100..=MSPS * 115 / 100).contains(&measured),
        "two spinners in a domain of {MSPS} ms/s together used {measured} ms/s"
    );
    destroy(&plugin.client, &domain).await;
}

/// The limits of these tests' domains: the suite's, at a modest CPU rate so the tests running
/// side by side leave each other (and the conformance suite's rate check) CPU.
fn limits() -> pb::DomainLimits {
    pb::DomainLimits {
        cpu_msps: 300,
        ..default_limits()
    }
}

async fn create(
    client: &DynTaskManager,
    name: &str,
    limits: pb::DomainLimits,
    version: Option<&str>,
    scratch: Option<&std::path::Path>,
) -> String {
    let domain = format!("process-test-{name}-{}", std::process::id());
    let request = pb::CreateDomainRequest {
        domain_id: domain.clone(),
        env_type: shell_guests().env_type().into(),
        version: version.unwrap_or_default().into(),
        limits: Some(limits),
        requirements_xml: String::new(),
        scratch_dir: scratch
            .map(|path| path.display().to_string())
            .unwrap_or_default(),
    };
    let response = client
        .create_domain(Request::new(request))
        .await
        .expect("CreateDomain")
        .into_inner();
    assert_eq!(response.version, kernel_release());
    domain
}

async fn deploy_result(
    client: &DynTaskManager,
    domain: &str,
    task: &str,
    guest: &Guest,
) -> Result<(), tonic::Status> {
    let request = pb::DeployTaskRequest {
        domain_id: domain.into(),
        task_id: task.into(),
        task_xml: guest.task_xml.clone(),
        payloads: guest.payloads.clone(),
    };
    client.deploy_task(Request::new(request)).await.map(|_| ())
}

async fn deploy(client: &DynTaskManager, domain: &str, task: &str, guest: &Guest) {
    deploy_result(client, domain, task, guest)
        .await
        .unwrap_or_else(|status| panic!("DeployTask {task}: {status}"));
}

async fn watch(client: &DynTaskManager, domain: &str) -> EventStream {
    let request = pb::StreamOutputRequest {
        domain_id: domain.into(),
        from_offset: HashMap::new(),
        follow: true,
    };
    client
        .stream_output(Request::new(request))
        .await
        .expect("StreamOutput")
        .into_inner()
}

async fn next_event(
    events: &mut EventStream,
    deadline: Instant,
) -> Option<pb::domain_event::Event> {
    use tokio_stream::StreamExt;
    let left = deadline.saturating_duration_since(Instant::now());
    tokio::time::timeout(left, events.next())
        .await
        .expect("an event before the deadline")
        .expect("the stream stays open")
        .expect("events, not errors")
        .event
}

/// Deploys a guest and waits for it to end; returns its exit and stdout.
async fn run(
    client: &DynTaskManager,
    domain: &str,
    task: &str,
    guest: &Guest,
) -> (TaskExit, Vec<u8>) {
    let mut events = watch(client, domain).await;
    deploy(client, domain, task, guest).await;
    let deadline = Instant::now() + END_WAIT;
    let mut stdout = Vec::new();
    loop {
        match next_event(&mut events, deadline).await {
            Some(pb::domain_event::Event::Output(chunk))
                if chunk.task_id == task && chunk.stream == OutputStream::Stdout as i32 =>
            {
                stdout.extend_from_slice(&chunk.data);
            }
            Some(pb::domain_event::Event::TaskEnded(ended)) if ended.task_id == task => {
                return (ended.exit.expect("TaskEnded has the exit"), stdout);
            }
            _ => {}
        }
    }
}

async fn usage(client: &DynTaskManager, domain: &str) -> xeno_schemas::proto::common::v1::Usage {
    client
        .report_usage(Request::new(pb::ReportUsageRequest {
            domain_id: domain.into(),
        }))
        .await
        .expect("ReportUsage")
        .into_inner()
        .usage
        .expect("the domain's usage")
}

async fn destroy(client: &DynTaskManager, domain: &str) {
    client
        .destroy_domain(Request::new(pb::DestroyDomainRequest {
            domain_id: domain.into(),
            reason: "test finished".into(),
        }))
        .await
        .expect("DestroyDomain");
}

async fn wait_until(limit: Duration, what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !condition() {
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn file(path: &str, data: &[u8], mode: u32) -> TaskFile {
    TaskFile {
        path: path.into(),
        sha256: payload(data.to_vec()).sha256,
        mode,
    }
}

fn payload(data: Vec<u8>) -> Payload {
    use sha2::{Digest, Sha256};
    Payload {
        sha256: hex::encode(Sha256::digest(&data)),
        data,
    }
}
