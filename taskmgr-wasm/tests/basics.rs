//! The plugin interface's contract on WAT guests: capabilities, running and exiting,
//! idempotency, every refusal and its code, the compile cache, components, destroy.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;
use tonic::{Code, Request};
use xeno_schemas::proto::common::v1::{Payload, TaskState};
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::TaskManager;
use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn capabilities_describe_wasm() {
    let manager = manager();
    let capabilities = manager
        .get_capabilities(Request::new(pb::GetCapabilitiesRequest {}))
        .await
        .expect("capabilities")
        .into_inner();
    assert_eq!(capabilities.env_types, ["Wasm"]);
    assert_eq!(capabilities.versions, ["48.0.8"]);
    assert_eq!(capabilities.program_kinds, ["WasmModule", "WasmComponent"]);
    assert!(capabilities.reports_fuel);
    assert_eq!(capabilities.domains_max, small_config().domains_max);
}

#[tokio::test]
async fn hello_prints_exactly_and_exits_zero() {
    let manager = manager();
    create_domain(&manager, "d", limits(200, 16)).await;
    deploy(
        &manager,
        "d",
        "hello",
        &hello_module("Hello, XenoServer!\n"),
        "",
        vec![],
    )
    .await
    .expect("deployed");
    let finished = wait_end(&manager, "d", "hello", WAIT).await;
    assert_eq!(finished.stdout_text(), "Hello, XenoServer!\n");
    assert!(finished.stderr.is_empty());
    assert_eq!(finished.state(), TaskState::Exited);
    assert_eq!(
        (finished.exit.exit_code, finished.exit.reason.as_str()),
        (0, "exit 0")
    );
    let usage = finished.exit.usage.expect("usage");
    assert_eq!(usage.output_bytes, 19);
    assert!(usage.fuel > 0, "fuel is counted");
    assert_eq!(
        usage.memory_peak_bytes,
        64 * 1024,
        "one page of linear memory"
    );
}

#[tokio::test]
async fn proc_exit_code_is_reported() {
    let manager = manager();
    create_domain(&manager, "d", limits(0, 16)).await;
    let module = wat(r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start") (call $exit (i32.const 3)) unreachable))"#);
    deploy(&manager, "d", "three", &module, "", vec![])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "three", WAIT).await;
    assert_eq!(finished.state(), TaskState::Exited);
    assert_eq!(
        (finished.exit.exit_code, finished.exit.reason.as_str()),
        (3, "exit 3")
    );
}

#[tokio::test]
async fn trap_fails_the_task_with_its_reason() {
    let manager = manager();
    create_domain(&manager, "d", limits(0, 16)).await;
    let module = wat(r#"(module
        (memory (export "memory") 1)
        (func (export "_start") (drop (i32.div_u (i32.const 1) (i32.const 0)))))"#);
    deploy(&manager, "d", "div", &module, "", vec![])
        .await
        .expect("deployed");
    let divided = wait_end(&manager, "d", "div", WAIT).await;
    assert_eq!(divided.state(), TaskState::Failed);
    assert_eq!(divided.exit.reason, "trap: integer divide by zero");

    let module =
        wat(r#"(module (memory (export "memory") 1) (func (export "_start") unreachable))"#);
    deploy(&manager, "d", "unreachable", &module, "", vec![])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "unreachable", WAIT).await;
    assert_eq!(finished.state(), TaskState::Failed);
    assert!(
        finished.exit.reason.starts_with("trap: "),
        "{}",
        finished.exit.reason
    );
    assert!(
        finished.exit.reason.contains("unreachable"),
        "{}",
        finished.exit.reason
    );
}

#[tokio::test]
async fn custom_entry_point_runs_after_initialize() {
    let manager = manager();
    create_domain(&manager, "d", limits(0, 16)).await;
    let module = wat(r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (global $ready (mut i32) (i32.const 0))
        (func (export "_initialize") (global.set $ready (i32.const 40)))
        (func (export "go") (call $exit (i32.add (global.get $ready) (i32.const 2)))))"#);
    let xml = format!(
        r#"<TaskDescription><WasmModule sha256="{}" entry="go"/></TaskDescription>"#,
        sha256(&module)
    );
    let request = deploy_request("d", "go", xml, vec![module.clone()]);
    manager
        .deploy_task(Request::new(request))
        .await
        .expect("deployed");
    assert_eq!(wait_end(&manager, "d", "go", WAIT).await.exit.exit_code, 42);

    let xml = format!(
        r#"<TaskDescription><WasmModule sha256="{}" entry="nope"/></TaskDescription>"#,
        sha256(&module)
    );
    let request = deploy_request("d", "nope", xml, vec![module]);
    assert_code(
        manager.deploy_task(Request::new(request)).await,
        Code::InvalidArgument,
        "exports no function \"nope\"",
    );
}

#[tokio::test]
async fn create_domain_is_idempotent_and_checks_its_request() {
    let manager = manager();
    let request = pb::CreateDomainRequest {
        domain_id: "d".into(),
        env_type: "Wasm".into(),
        version: String::new(),
        limits: Some(limits(100, 16)),
        ..Default::default()
    };
    let first = manager
        .create_domain(Request::new(request.clone()))
        .await
        .expect("created");
    assert_eq!(first.into_inner().version, "48.0.8");
    let again = manager
        .create_domain(Request::new(request.clone()))
        .await
        .expect("identical retry");
    assert_eq!(again.into_inner().version, "48.0.8");
    let different = pb::CreateDomainRequest {
        limits: Some(limits(200, 16)),
        ..request.clone()
    };
    assert_code(
        manager.create_domain(Request::new(different)).await,
        Code::AlreadyExists,
        "\"d\"",
    );

    let wrong_type = pb::CreateDomainRequest {
        domain_id: "linux".into(),
        env_type: "Linux".into(),
        ..request.clone()
    };
    assert_code(
        manager.create_domain(Request::new(wrong_type)).await,
        Code::Unimplemented,
        "Wasm",
    );
    let wrong_version = pb::CreateDomainRequest {
        domain_id: "old".into(),
        version: "47.0.0".into(),
        ..request.clone()
    };
    assert_code(
        manager.create_domain(Request::new(wrong_version)).await,
        Code::Unimplemented,
        "48.0.8",
    );
    let too_big = pb::CreateDomainRequest {
        domain_id: "big".into(),
        limits: Some(limits(100, 8192)),
        ..request.clone()
    };
    assert_code(
        manager.create_domain(Request::new(too_big)).await,
        Code::InvalidArgument,
        "4096",
    );
    let no_dir = pb::CreateDomainRequest {
        domain_id: "nodir".into(),
        scratch_dir: "/nonexistent/xeno".into(),
        ..request
    };
    assert_code(
        manager.create_domain(Request::new(no_dir)).await,
        Code::InvalidArgument,
        "scratch_dir",
    );
}

#[tokio::test]
async fn domains_beyond_the_maximum_are_refused() {
    let manager = WasmTaskManager::new(WasmConfig {
        domains_max: 2,
        tasks_max: 8,
        ..WasmConfig::default()
    })
    .expect("manager");
    create_domain(&manager, "a", limits(10, 1)).await;
    create_domain(&manager, "b", limits(10, 1)).await;
    let third = manager
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: "c".into(),
            env_type: "Wasm".into(),
            ..Default::default()
        }))
        .await;
    assert_code(third, Code::ResourceExhausted, "2 domains");
    destroy(&manager, "a").await;
    create_domain(&manager, "c", limits(10, 1)).await;
}

#[tokio::test]
async fn deploy_is_idempotent_for_an_identical_request() {
    let manager = manager();
    create_domain(&manager, "d", limits(0, 16)).await;
    let module = hello_module("once\n");
    deploy(&manager, "d", "t", &module, "", vec![])
        .await
        .expect("deployed");
    deploy(&manager, "d", "t", &module, "", vec![])
        .await
        .expect("identical retry");
    let other = hello_module("twice\n");
    assert_code(
        deploy(&manager, "d", "t", &other, "", vec![]).await,
        Code::AlreadyExists,
        "\"t\"",
    );
    let finished = wait_end(&manager, "d", "t", WAIT).await;
    assert_eq!(
        finished.stdout_text(),
        "once\n",
        "the retry did not run the task again"
    );
    let report = report(&manager, "d").await;
    assert_eq!(report.tasks.len(), 1);
}

#[tokio::test]
async fn bad_payloads_and_programs_are_refused() {
    let manager = WasmTaskManager::new(WasmConfig {
        program_bytes_max: 1024 * 1024,
        ..small_config()
    })
    .expect("manager");
    create_domain(&manager, "d", limits(0, 16)).await;

    let garbage = b"\0asm\x01\0\0\0this is not a module".to_vec();
    assert_code(
        deploy(&manager, "d", "garbage", &garbage, "", vec![]).await,
        Code::InvalidArgument,
        "invalid WebAssembly module",
    );

    let module = hello_module("x");
    let mut request = deploy_request(
        "d",
        "mismatch",
        module_xml(&sha256(&module), ""),
        vec![module.clone()],
    );
    request.payloads[0].data.push(0);
    assert_code(
        manager.deploy_task(Request::new(request)).await,
        Code::InvalidArgument,
        "hashes to",
    );

    let request = deploy_request("d", "missing", module_xml(&sha256(&module), ""), vec![]);
    assert_code(
        manager.deploy_task(Request::new(request)).await,
        Code::InvalidArgument,
        "was not sent",
    );

    let request = deploy_request(
        "d",
        "extra",
        module_xml(&sha256(&module), ""),
        vec![module.clone(), b"stowaway".to_vec()],
    );
    assert_code(
        manager.deploy_task(Request::new(request)).await,
        Code::InvalidArgument,
        "does not name it",
    );

    // A valid module over the program size limit: a data segment of 2 MiB.
    let big = wat(&format!(
        r#"(module (memory (export "memory") 64) (data (i32.const 0) "{}") (func (export "_start")))"#,
        "\\00".repeat(2 * 1024 * 1024)
    ));
    assert_code(
        deploy(&manager, "d", "big", &big, "", vec![]).await,
        Code::InvalidArgument,
        "at most 1048576 bytes",
    );

    let unknown_import =
        wat(r#"(module (import "env" "launch_missiles" (func)) (func (export "_start")))"#);
    assert_code(
        deploy(&manager, "d", "import", &unknown_import, "", vec![]).await,
        Code::InvalidArgument,
        "launch_missiles",
    );

    let request = deploy_request("d", "xml", "<TaskDescription>".into(), vec![]);
    assert_code(
        manager.deploy_task(Request::new(request)).await,
        Code::InvalidArgument,
        "TaskDescription",
    );

    let hash = sha256(b"elf");
    let request = pb::DeployTaskRequest {
        domain_id: "d".into(),
        task_id: "elf".into(),
        task_xml: format!(r#"<TaskDescription><Executable sha256="{hash}"/></TaskDescription>"#),
        payloads: vec![Payload {
            sha256: hash,
            data: b"elf".to_vec(),
        }],
    };
    assert_code(
        manager.deploy_task(Request::new(request)).await,
        Code::Unimplemented,
        "WasmModule",
    );

    let report = report(&manager, "d").await;
    assert!(report.tasks.is_empty(), "no refused task was registered");

    // Payloads together over the per-task limit, before any hashing or compiling.
    let manager = WasmTaskManager::new(WasmConfig {
        payload_bytes_max: 512 * 1024,
        ..small_config()
    })
    .expect("manager");
    create_domain(&manager, "d", limits(0, 16)).await;
    let file = vec![7u8; 600 * 1024];
    let rest = format!(
        r#"<Files><File path="/big.bin" sha256="{}"/></Files>"#,
        sha256(&file)
    );
    assert_code(
        deploy(
            &manager,
            "d",
            "heavy",
            &hello_module("x"),
            &rest,
            vec![file],
        )
        .await,
        Code::InvalidArgument,
        "at most 524288 per task",
    );
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let manager = manager();
    create_domain(&manager, "d", limits(0, 16)).await;
    let module = hello_module("x");
    assert_code(
        deploy(&manager, "nope", "t", &module, "", vec![]).await,
        Code::NotFound,
        "nope",
    );
    let usage = manager
        .report_usage(Request::new(pb::ReportUsageRequest {
            domain_id: "nope".into(),
        }))
        .await;
    assert_code(usage, Code::NotFound, "nope");
    let stream = manager
        .stream_output(Request::new(pb::StreamOutputRequest {
            domain_id: "nope".into(),
            from_offset: HashMap::new(),
            follow: true,
        }))
        .await
        .map(|_| ());
    assert_code(stream, Code::NotFound, "nope");
    for domain in ["d", "nope"] {
        let stopped = manager
            .stop_task(Request::new(pb::StopTaskRequest {
                domain_id: domain.into(),
                task_id: "ghost".into(),
                reason: String::new(),
            }))
            .await;
        assert_code(stopped, Code::NotFound, domain);
        let inspected = manager
            .inspect_task(Request::new(pb::InspectTaskRequest {
                domain_id: domain.into(),
                task_id: "ghost".into(),
            }))
            .await;
        assert_code(inspected, Code::NotFound, domain);
    }
    let destroyed = manager
        .destroy_domain(Request::new(pb::DestroyDomainRequest {
            domain_id: "nope".into(),
            reason: String::new(),
        }))
        .await;
    assert_code(destroyed, Code::NotFound, "nope");
}

#[tokio::test]
async fn repeated_deploys_hit_the_compile_cache() {
    let manager = manager();
    create_domain(&manager, "d", limits(0, 16)).await;
    let module = hello_module("cached\n");
    let before = manager.backend().cache_stats();
    let started = Instant::now();
    deploy(&manager, "d", "first", &module, "", vec![])
        .await
        .expect("deployed");
    let first = started.elapsed();
    let after_first = manager.backend().cache_stats();
    assert_eq!(after_first.misses, before.misses + 1);
    let started = Instant::now();
    for i in 0..5 {
        deploy(&manager, "d", &format!("again{i}"), &module, "", vec![])
            .await
            .expect("deployed");
    }
    let again = started.elapsed() / 5;
    let after = manager.backend().cache_stats();
    assert_eq!(after.misses, after_first.misses, "no recompilation");
    assert_eq!(after.hits, after_first.hits + 5);
    assert_eq!(after.entries, 1);
    assert!(after.code_bytes > 0);
    for i in 0..5 {
        let done = wait_end(&manager, "d", &format!("again{i}"), WAIT).await;
        assert_eq!(done.stdout_text(), "cached\n");
    }
    println!("first deploy {first:?}, cached deploy {again:?}");
}

#[tokio::test]
async fn destroy_stops_tasks_and_returns_the_same_usage_twice() {
    let manager = manager();
    create_domain(&manager, "d", limits(100, 16)).await;
    deploy(&manager, "d", "spin", &spin_module(), "", vec![])
        .await
        .expect("deployed");
    let mut events = stream(&manager, "d", HashMap::new()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = destroy(&manager, "d").await;
    assert!(first.cpu_time_us > 0 && first.fuel > 0, "{first:?}");
    let second = destroy(&manager, "d").await;
    assert_eq!(first, second);

    use tokio_stream::StreamExt;
    use xeno_schemas::proto::taskmanager::v1::domain_event::Event;
    let mut saw_stop = false;
    let mut saw_destroyed = false;
    while let Some(event) = tokio::time::timeout(WAIT, events.next())
        .await
        .expect("events")
    {
        match event.expect("event").event {
            Some(Event::TaskEnded(ended)) => {
                let exit = ended.exit.expect("exit");
                assert_eq!(exit.state(), TaskState::Stopped);
                assert_eq!(exit.reason, "test over");
                saw_stop = true;
            }
            Some(Event::Destroyed(destroyed)) => {
                assert_eq!(destroyed.reason, "test over");
                saw_destroyed = true;
            }
            _ => {}
        }
    }
    assert!(
        saw_stop && saw_destroyed,
        "the stream ends after DomainDestroyed"
    );

    assert_code(
        deploy(&manager, "d", "late", &hello_module("x"), "", vec![]).await,
        Code::FailedPrecondition,
        "destroyed",
    );
    let usage = manager
        .report_usage(Request::new(pb::ReportUsageRequest {
            domain_id: "d".into(),
        }))
        .await;
    assert_code(usage, Code::FailedPrecondition, "destroyed");
}

/// A hand-written component exporting `wasi:cli/run` that writes to stdout through
/// `wasi:cli/stdout` and `wasi:io/streams`, then returns `ok` or `err` as asked.
fn component(text: &str, succeed: bool) -> Vec<u8> {
    let escaped: String = text.bytes().map(|b| format!("\\{b:02x}")).collect();
    wat(&format!(
        r#"(component
  (import "wasi:io/error@0.2.0" (instance $error
    (export "error" (type (sub resource)))))
  (alias export $error "error" (type $error-type))
  (import "wasi:io/streams@0.2.0" (instance $streams
    (export "output-stream" (type $output-stream (sub resource)))
    (alias outer 1 $error-type (type $error))
    (export "error" (type $error-export (eq $error)))
    (type $stream-error (variant (case "last-operation-failed" (own $error-export)) (case "closed")))
    (export "stream-error" (type $stream-error-export (eq $stream-error)))
    (export "[method]output-stream.blocking-write-and-flush"
      (func (param "self" (borrow $output-stream)) (param "contents" (list u8))
            (result (result (error $stream-error-export)))))))
  (alias export $streams "output-stream" (type $output-stream))
  (import "wasi:cli/stdout@0.2.0" (instance $stdout
    (alias outer 1 $output-stream (type $os))
    (export "output-stream" (type $os-export (eq $os)))
    (export "get-stdout" (func (result (own $os-export))))))

  (core module $memory (memory (export "memory") 1))
  (core instance $memory (instantiate $memory))
  (core func $get-stdout (canon lower (func $stdout "get-stdout")))
  (core func $write (canon lower (func $streams "[method]output-stream.blocking-write-and-flush")
    (memory (core memory $memory "memory"))))
  (core func $drop-stream (canon resource.drop $output-stream))

  (core module $main
    (import "memory" "memory" (memory 1))
    (import "host" "get-stdout" (func $get-stdout (result i32)))
    (import "host" "write" (func $write (param i32 i32 i32 i32)))
    (import "host" "drop-stream" (func $drop (param i32)))
    (data (i32.const 64) "{escaped}")
    (func (export "run") (result i32)
      (local $stream i32)
      (local.set $stream (call $get-stdout))
      (call $write (local.get $stream) (i32.const 64) (i32.const {len}) (i32.const 0))
      (call $drop (local.get $stream))
      (i32.const {status})))
  (core instance $main (instantiate $main
    (with "memory" (instance $memory))
    (with "host" (instance
      (export "get-stdout" (func $get-stdout))
      (export "write" (func $write))
      (export "drop-stream" (func $drop-stream))))))
  (func $run (result (result)) (canon lift (core func $main "run")))
  (instance $run-instance (export "run" (func $run)))
  (export "wasi:cli/run@0.2.0" (instance $run-instance)))"#,
        len = text.len(),
        status = if succeed { 0 } else { 1 },
    ))
}

#[tokio::test]
async fn a_component_runs_and_exits() {
    let manager = manager();
    create_domain(&manager, "d", limits(0, 16)).await;
    for (task, succeed, code) in [("ok", true, 0), ("err", false, 1)] {
        let component = component("hello from a component\n", succeed);
        let hash = sha256(&component);
        let request = pb::DeployTaskRequest {
            domain_id: "d".into(),
            task_id: task.into(),
            task_xml: format!(
                r#"<TaskDescription><WasmComponent sha256="{hash}"/></TaskDescription>"#
            ),
            payloads: vec![Payload {
                sha256: hash,
                data: component,
            }],
        };
        manager
            .deploy_task(Request::new(request))
            .await
            .expect("deployed");
        let finished = wait_end(&manager, "d", task, WAIT).await;
        assert_eq!(finished.stdout_text(), "hello from a component\n");
        assert_eq!(finished.state(), TaskState::Exited);
        assert_eq!(finished.exit.exit_code, code);
    }

    // A core module sent as a component is refused with Wasmtime's reason.
    let module = hello_module("x");
    let hash = sha256(&module);
    let request = pb::DeployTaskRequest {
        domain_id: "d".into(),
        task_id: "module-as-component".into(),
        task_xml: format!(r#"<TaskDescription><WasmComponent sha256="{hash}"/></TaskDescription>"#),
        payloads: vec![Payload {
            sha256: hash,
            data: module,
        }],
    };
    assert_code(
        manager.deploy_task(Request::new(request)).await,
        Code::InvalidArgument,
        "invalid WebAssembly component",
    );
}
