//! Limits and faults: memory, stopping runaway tasks, wall-clock limits, output floods, task
//! counts, and usage that never goes backwards.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use xeno_schemas::proto::common::v1::{TaskState, Usage};
use xeno_schemas::proto::taskmanager::v1::{self as pb, domain_event::Event};
use xeno_taskmgr_kit::TaskManager;
use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};

const WAIT: Duration = Duration::from_secs(30);
const PAGE: u64 = 64 * 1024;

/// Grows memory by 16 pages (fits a 2 MB domain), then by 32 more (does not); prints when the
/// second is refused and exits with 1 for the first success plus 2 for the second refusal.
const GROW: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) "grow refused\n")
  (func (export "_start")
    (local $first i32) (local $second i32)
    (local.set $first (memory.grow (i32.const 16)))
    (local.set $second (memory.grow (i32.const 32)))
    (if (i32.eq (local.get $second) (i32.const -1)) (then
      (i32.store (i32.const 0) (i32.const 64))
      (i32.store (i32.const 4) (i32.const 13))
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
    (call $exit (i32.add
      (i32.eq (local.get $first) (i32.const 1))
      (i32.mul (i32.const 2) (i32.eq (local.get $second) (i32.const -1)))))))"#;

#[tokio::test]
async fn memory_growth_beyond_the_domain_limit_fails_inside_the_guest() {
    let manager = manager();
    create_domain(&manager, "d", limits(0, 2)).await;
    deploy(&manager, "d", "grow", &wat(GROW), "", vec![])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "grow", WAIT).await;
    assert_eq!(finished.stdout_text(), "grow refused\n");
    assert_eq!(
        (finished.state(), finished.exit.exit_code),
        (TaskState::Exited, 3)
    );
    assert_eq!(
        finished.exit.usage.expect("usage").memory_peak_bytes,
        17 * PAGE
    );

    // A module whose initial memory exceeds the domain's fails to instantiate, cleanly.
    let big = wat(r#"(module (memory (export "memory") 64) (func (export "_start")))"#);
    deploy(&manager, "d", "big", &big, "", vec![])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "big", WAIT).await;
    assert_eq!(finished.state(), TaskState::Failed);
    assert!(
        finished.exit.reason.contains("exceeds memory limits"),
        "{}",
        finished.exit.reason
    );
    assert!(
        finished
            .exit
            .reason
            .contains("memory limit of 2097152 bytes"),
        "{}",
        finished.exit.reason
    );
}

#[tokio::test]
async fn the_memory_limit_is_shared_by_the_domains_tasks() {
    let manager = manager();
    create_domain(&manager, "d", limits(50, 2)).await;
    // Holds 25 pages (1.56 MiB) and spins.
    let holder = wat(r#"(module (memory (export "memory") 1)
        (func (export "_start") (drop (memory.grow (i32.const 24))) (loop $spin (br $spin))))"#);
    // Needs 9 pages (0.56 MiB): fits alone, not beside the holder. Exits 1 if refused.
    let grower = wat(r#"(module
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start") (call $exit (i32.eq (memory.grow (i32.const 8)) (i32.const -1)))))"#);
    deploy(&manager, "d", "holder", &holder, "", vec![])
        .await
        .expect("deployed");
    let started = Instant::now();
    while report(&manager, "d")
        .await
        .usage
        .expect("usage")
        .memory_peak_bytes
        < 25 * PAGE
    {
        assert!(started.elapsed() < WAIT, "the holder never grew");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    deploy(&manager, "d", "refused", &grower, "", vec![])
        .await
        .expect("deployed");
    assert_eq!(
        wait_end(&manager, "d", "refused", WAIT)
            .await
            .exit
            .exit_code,
        1
    );
    stop(&manager, "d", "holder", "make room").await;
    deploy(&manager, "d", "granted", &grower, "", vec![])
        .await
        .expect("deployed");
    assert_eq!(
        wait_end(&manager, "d", "granted", WAIT)
            .await
            .exit
            .exit_code,
        0
    );
}

async fn stop_spinner_promptly(cpu_msps: u64) {
    let manager = manager();
    create_domain(&manager, "d", limits(cpu_msps, 16)).await;
    deploy(&manager, "d", "spin", &spin_module(), "", vec![])
        .await
        .expect("deployed");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    stop(&manager, "d", "spin", "client asked").await;
    let took = started.elapsed();
    let finished = wait_end(&manager, "d", "spin", WAIT).await;
    assert_eq!(finished.state(), TaskState::Stopped);
    assert_eq!(finished.exit.reason, "client asked");
    assert!(
        took < Duration::from_millis(500),
        "StopTask took {took:?} at {cpu_msps} msps"
    );
    println!("StopTask at {cpu_msps} msps returned after {took:?}");
    let usage = finished.exit.usage.expect("usage");
    assert!(usage.cpu_time_us > 0 && usage.fuel > 0, "{usage:?}");
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_promptly() {
    stop_spinner_promptly(0).await;
}

#[tokio::test]
async fn an_infinite_loop_waiting_for_cpu_budget_is_stopped_promptly() {
    // At 1 ms of CPU per second the task spends nearly all its time parked.
    stop_spinner_promptly(1).await;
}

#[tokio::test]
async fn the_wall_clock_limit_fails_the_task() {
    let manager = manager();
    create_domain(&manager, "d", limits(20, 16)).await;
    let started = Instant::now();
    let rest = "<Limits><WallClockSeconds>1</WallClockSeconds></Limits>";
    deploy(&manager, "d", "slow", &spin_module(), rest, vec![])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "slow", WAIT).await;
    let took = started.elapsed();
    assert_eq!(finished.state(), TaskState::Failed);
    assert_eq!(finished.exit.reason, "wall-clock limit of 1 s reached");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "{took:?}"
    );
}

#[tokio::test]
async fn task_counts_are_bounded_per_domain_and_overall() {
    let manager = WasmTaskManager::new(WasmConfig {
        tasks_max: 3,
        ..small_config()
    })
    .expect("manager");
    let mut two = limits(10, 4);
    two.tasks_max = 2;
    create_domain(&manager, "a", two).await;
    create_domain(&manager, "b", limits(10, 4)).await;
    let spin = spin_module();
    deploy(&manager, "a", "1", &spin, "", vec![])
        .await
        .expect("deployed");
    deploy(&manager, "a", "2", &spin, "", vec![])
        .await
        .expect("deployed");
    assert_code(
        deploy(&manager, "a", "3", &spin, "", vec![]).await,
        Code::ResourceExhausted,
        "2 tasks",
    );
    deploy(&manager, "b", "1", &spin, "", vec![])
        .await
        .expect("deployed");
    assert_code(
        deploy(&manager, "b", "2", &spin, "", vec![]).await,
        Code::ResourceExhausted,
        "3 tasks",
    );
    stop(&manager, "a", "1", "make room").await;
    deploy(&manager, "b", "2", &spin, "", vec![])
        .await
        .expect("a slot was freed");
}

#[tokio::test]
async fn output_beyond_the_cap_is_counted_and_dropped() {
    // A short event log, so that later output pushes these tasks' chunks out of it and a late
    // reader sees only what was kept.
    let manager = WasmTaskManager::new(WasmConfig {
        stream_buffer_events: 16,
        ..small_config()
    })
    .expect("manager");
    let mut limits = limits(0, 16);
    limits.output_bytes_max = 12;
    create_domain(&manager, "d", limits).await;
    // A reader that follows from before the tasks start: it is in time for everything.
    let mut live = stream(&manager, "d", HashMap::new()).await;
    // The task asks for less than the domain allows: its own cap applies.
    let rest = "<Limits><OutputBytes>10</OutputBytes></Limits>";
    deploy(
        &manager,
        "d",
        "chatty",
        &hello_module("0123456789abcdef"),
        rest,
        vec![],
    )
    .await
    .expect("deployed");
    // Asking for more than the domain allows gets the domain's cap.
    let rest = "<Limits><OutputBytes>1000</OutputBytes></Limits>";
    deploy(
        &manager,
        "d",
        "greedy",
        &hello_module("0123456789abcdef"),
        rest,
        vec![],
    )
    .await
    .expect("deployed");
    let mut seen: HashMap<String, Vec<u8>> = HashMap::new();
    let mut ended: HashMap<String, u64> = HashMap::new();
    while ended.len() < 2 {
        let event = tokio::time::timeout(WAIT, live.next())
            .await
            .expect("the tasks end in time")
            .expect("the stream stays open")
            .expect("event");
        match event.event {
            Some(Event::Output(chunk)) => seen.entry(chunk.task_id).or_default().extend(chunk.data),
            Some(Event::TaskEnded(end)) => {
                let usage = end.exit.and_then(|exit| exit.usage).expect("usage");
                ended.insert(end.task_id, usage.output_bytes);
            }
            _ => {}
        }
    }
    for task in ["chatty", "greedy"] {
        assert_eq!(
            String::from_utf8_lossy(seen.get(task).map_or(&[][..], Vec::as_slice)),
            "0123456789abcdef",
            "a reader in time sees everything {task} wrote"
        );
        assert_eq!(
            ended.get(task),
            Some(&16),
            "all of {task}'s output is counted"
        );
    }
    deploy(&manager, "d", "dots", &wat(DOTS), "", vec![])
        .await
        .expect("deployed");
    wait_end(&manager, "d", "dots", WAIT).await;
    for (task, kept) in [("chatty", "0123456789"), ("greedy", "0123456789ab")] {
        // After the end, a reader that does not follow sees only what was kept.
        let mut replay = manager
            .stream_output(Request::new(pb::StreamOutputRequest {
                domain_id: "d".into(),
                from_offset: HashMap::new(),
                follow: false,
            }))
            .await
            .expect("stream")
            .into_inner();
        let mut text = Vec::new();
        while let Some(event) = tokio::time::timeout(WAIT, replay.next())
            .await
            .expect("event")
        {
            if let Some(Event::Output(chunk)) = event.expect("ok").event
                && chunk.task_id == task
            {
                text.extend(chunk.data);
            }
        }
        assert_eq!(String::from_utf8_lossy(&text), kept);
    }
}

/// Writes "." 40 times, one write each.
const DOTS: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) ".")
  (func (export "_start")
    (local $left i32)
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 1))
    (local.set $left (i32.const 40))
    (loop $again
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (local.tee $left (i32.sub (local.get $left) (i32.const 1)))
      (br_if $again))))"#;

/// Works in 300 rounds; each round spins, writes one byte and every 10th grows memory.
const WORKER: &str = r#"(module
  (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 64) ".")
  (func (export "_start")
    (local $round i32) (local $spin i32)
    (i32.store (i32.const 0) (i32.const 64))
    (i32.store (i32.const 4) (i32.const 1))
    (loop $rounds
      (local.set $spin (i32.const 200000))
      (loop $busy
        (local.tee $spin (i32.sub (local.get $spin) (i32.const 1)))
        (br_if $busy))
      (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
      (if (i32.eqz (i32.rem_u (local.get $round) (i32.const 10)))
        (then (drop (memory.grow (i32.const 1)))))
      (local.tee $round (i32.add (local.get $round) (i32.const 1)))
      (br_if $rounds (i32.lt_u (i32.const 300))))))"#;

fn assert_not_less(later: &Usage, earlier: &Usage, what: &str) {
    let pairs = [
        ("cpu_time_us", later.cpu_time_us, earlier.cpu_time_us),
        ("fuel", later.fuel, earlier.fuel),
        ("memory_mb_ms", later.memory_mb_ms, earlier.memory_mb_ms),
        (
            "memory_peak_bytes",
            later.memory_peak_bytes,
            earlier.memory_peak_bytes,
        ),
        ("output_bytes", later.output_bytes, earlier.output_bytes),
        ("wall_time_ms", later.wall_time_ms, earlier.wall_time_ms),
    ];
    for (field, now, before) in pairs {
        assert!(
            now >= before,
            "{what} {field} went backwards: {before} then {now}"
        );
    }
}

#[tokio::test]
async fn usage_never_decreases() {
    let manager = manager();
    create_domain(&manager, "d", limits(300, 16)).await;
    let worker = wat(WORKER);
    deploy(&manager, "d", "w1", &worker, "", vec![])
        .await
        .expect("deployed");
    deploy(&manager, "d", "w2", &worker, "", vec![])
        .await
        .expect("deployed");
    let mut last_domain = Usage::default();
    let mut last_tasks: HashMap<String, Usage> = HashMap::new();
    let mut fuel_seen_while_running = false;
    let started = Instant::now();
    let mut quiet_rounds = 0;
    while quiet_rounds < 5 {
        assert!(started.elapsed() < WAIT, "the workers did not end");
        let report = report(&manager, "d").await;
        let usage = report.usage.expect("usage");
        assert_not_less(&usage, &last_domain, "domain");
        last_domain = usage;
        for task in report.tasks {
            let usage = task.usage.expect("usage");
            if let Some(before) = last_tasks.get(&task.task_id) {
                assert_not_less(&usage, before, &task.task_id);
            }
            if task.state() == TaskState::Running && usage.fuel > 0 {
                fuel_seen_while_running = true;
            }
            last_tasks.insert(task.task_id.clone(), usage);
        }
        let all_ended = last_tasks.len() == 2
            && report_states(&manager)
                .await
                .iter()
                .all(|state| *state != TaskState::Running);
        if all_ended {
            quiet_rounds += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(fuel_seen_while_running, "fuel is reported while tasks run");
    assert_eq!(last_domain.output_bytes, 600);
    assert!(last_domain.memory_mb_ms > 0);
    let task_cpu: u64 = last_tasks.values().map(|usage| usage.cpu_time_us).sum();
    // The domain's CPU time is its tasks' and its compilation's.
    assert!(last_domain.compile_time_us > 0, "{last_domain:?}");
    let run_cpu = last_domain.cpu_time_us - last_domain.compile_time_us;
    assert!(
        run_cpu + 2 >= task_cpu && run_cpu <= task_cpu + 2,
        "{last_domain:?}"
    );
    let last = destroy(&manager, "d").await;
    assert_not_less(&last, &last_domain, "final domain");
}

async fn report_states(manager: &WasmTaskManager) -> Vec<TaskState> {
    report(manager, "d")
        .await
        .tasks
        .iter()
        .map(|task| task.state())
        .collect()
}

/// Sleeps 100 s in `poll_oneoff` (a relative monotonic-clock subscription), then exits 7.
const SLEEP_100_S: &str = r#"(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start")
    (i32.store8 (i32.const 8) (i32.const 0))
    (i32.store (i32.const 16) (i32.const 1))
    (i64.store (i32.const 24) (i64.const 100000000000))
    (i64.store (i32.const 32) (i64.const 1000))
    (i32.store16 (i32.const 40) (i32.const 0))
    (drop (call $poll (i32.const 0) (i32.const 64) (i32.const 1) (i32.const 128)))
    (call $exit (i32.const 7))))"#;

/// Every limit holds in every state a task can be in: one asleep in the host is ended by its
/// wall-clock limit like one that spins.
#[tokio::test]
async fn the_wall_clock_limit_ends_a_sleeping_task() {
    let manager = manager();
    create_domain(&manager, "d", limits(20, 16)).await;
    let rest = "<Limits><WallClockSeconds>1</WallClockSeconds></Limits>";
    let started = Instant::now();
    deploy(&manager, "d", "sleeper", &wat(SLEEP_100_S), rest, vec![])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "sleeper", WAIT).await;
    let took = started.elapsed();
    assert_eq!(finished.state(), TaskState::Failed, "{:?}", finished.exit);
    assert_eq!(finished.exit.reason, "wall-clock limit of 1 s reached");
    assert!(took < Duration::from_secs(5), "ended after {took:?}");
}
