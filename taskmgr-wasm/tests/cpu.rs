//! CPU rate enforcement, measured: a domain's `cpu_msps` held within 5% over ten seconds,
//! domains at different rates side by side, burst credit, and two thousand tasks sharing the
//! cores. The tests in this file run one at a time, since each measures the machine.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};
use support::*;
use tokio::sync::Mutex;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

fn process_cpu_us() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1000
}

async fn domain_cpu_us(manager: &WasmTaskManager, domain: &str) -> u64 {
    report(manager, domain)
        .await
        .usage
        .expect("usage")
        .cpu_time_us
}

/// CPU used by each domain over `window`, after `warmup`, in ms per second of real time.
async fn measure_rates(
    manager: &WasmTaskManager,
    domains: &[&str],
    warmup: Duration,
    window: Duration,
) -> Vec<f64> {
    tokio::time::sleep(warmup).await;
    // Each domain's rate over its own window, from the moment its counter was first read to
    // the moment it was read again: the domains are read one after another.
    let mut before = Vec::new();
    for domain in domains {
        before.push((domain_cpu_us(manager, domain).await, Instant::now()));
    }
    tokio::time::sleep(window).await;
    let mut rates = Vec::new();
    for (domain, (before, read_at)) in domains.iter().zip(before) {
        let used_us = domain_cpu_us(manager, domain).await - before;
        rates.push(used_us as f64 / 1000.0 / read_at.elapsed().as_secs_f64());
    }
    rates
}

fn assert_within(rate: f64, expected: f64, tolerance: f64, what: &str) {
    let error = (rate - expected) / expected;
    println!(
        "{what}: {rate:.1} ms/s against {expected} ({:+.2}%)",
        error * 100.0
    );
    assert!(
        error.abs() <= tolerance,
        "{what}: {rate:.1} ms/s is more than {}% from {expected}",
        tolerance * 100.0
    );
}

#[tokio::test]
async fn cpu_msps_150_gives_1500_ms_over_10_s() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let manager = manager();
    create_domain(&manager, "d", limits(150, 16)).await;
    deploy(&manager, "d", "spin", &spin_module(), "", vec![])
        .await
        .expect("deployed");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let process_before = process_cpu_us();
    let reported_before = domain_cpu_us(&manager, "d").await;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let reported_us = domain_cpu_us(&manager, "d").await - reported_before;
    let elapsed = started.elapsed().as_secs_f64();
    let process_us = process_cpu_us() - process_before;
    let expected_ms = 150.0 * elapsed;
    let reported_ms = reported_us as f64 / 1000.0;
    let error = (reported_ms - expected_ms) / expected_ms;
    println!(
        "150 msps over {elapsed:.2} s: {reported_ms:.1} ms reported ({:+.2}%), process CPU {:.1} ms",
        error * 100.0,
        process_us as f64 / 1000.0
    );
    assert!(
        error.abs() <= 0.05,
        "{reported_ms:.1} ms is more than 5% from {expected_ms:.1}"
    );
    // The reported time is real CPU time of this process, not an estimate: the whole process
    // (task threads, timers, this test) used at least that much, and not much more.
    assert!(
        process_us >= reported_us,
        "reported {reported_us} µs but the process used {process_us} µs"
    );
    assert!(
        (process_us - reported_us) as f64 <= 0.15 * process_us as f64,
        "scheduling overhead {} µs of {process_us} µs",
        process_us - reported_us
    );
    let usage = destroy(&manager, "d").await;
    assert!(usage.fuel > 0);
}

#[tokio::test]
async fn two_domains_each_get_their_own_rate() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let manager = manager();
    create_domain(&manager, "slow", limits(100, 16)).await;
    create_domain(&manager, "fast", limits(300, 16)).await;
    // The fast domain runs two tasks: its rate is the domain's, however many tasks share it.
    deploy(&manager, "slow", "spin", &spin_module(), "", vec![])
        .await
        .expect("deployed");
    deploy(&manager, "fast", "spin1", &spin_module(), "", vec![])
        .await
        .expect("deployed");
    deploy(&manager, "fast", "spin2", &spin_module(), "", vec![])
        .await
        .expect("deployed");
    let rates = measure_rates(
        &manager,
        &["slow", "fast"],
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;
    assert_within(rates[0], 100.0, 0.05, "slow domain");
    assert_within(rates[1], 300.0, 0.05, "fast domain");
    let tasks = report(&manager, "fast").await.tasks;
    let shares: Vec<u64> = tasks
        .iter()
        .map(|task| task.usage.expect("usage").cpu_time_us)
        .collect();
    let (low, high) = (
        shares.iter().min().copied().unwrap_or(0),
        shares.iter().max().copied().unwrap_or(0),
    );
    println!("fast domain's tasks: {shares:?} µs");
    assert!(
        low as f64 >= 0.8 * high as f64,
        "the two tasks share the domain's rate evenly: {shares:?}"
    );
}

#[tokio::test]
async fn burst_credit_runs_at_the_peak_then_falls_back_to_the_mean() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let manager = manager();
    let limits = pb::DomainLimits {
        cpu_msps: 100,
        cpu_peak_msps: 400,
        cpu_burst_ms: 300,
        memory_mb: 16,
        ..Default::default()
    };
    create_domain(&manager, "d", limits).await;
    let started = Instant::now();
    deploy(&manager, "d", "spin", &spin_module(), "", vec![])
        .await
        .expect("deployed");
    // 300 ms of credit drains at 400 - 100 = 300 ms/s: one second at the peak (400 ms of CPU).
    tokio::time::sleep(Duration::from_millis(1000).saturating_sub(started.elapsed())).await;
    let first_second = domain_cpu_us(&manager, "d").await as f64 / 1000.0;
    let rates = measure_rates(
        &manager,
        &["d"],
        Duration::from_millis(200),
        Duration::from_secs(3),
    )
    .await;
    assert_within(first_second, 400.0, 0.10, "first second (peak)");
    assert_within(rates[0], 100.0, 0.05, "after the credit (mean)");
}

async fn task_cpu_us(manager: &WasmTaskManager, domain: &str) -> HashMap<String, u64> {
    report(manager, domain)
        .await
        .tasks
        .into_iter()
        .map(|task| (task.task_id.clone(), task.usage.expect("usage").cpu_time_us))
        .collect()
}

/// Jain's fairness index of `shares`: 1 when all are equal, 1/n when one task has everything.
fn jain(shares: &[f64]) -> f64 {
    let sum: f64 = shares.iter().sum();
    let squares: f64 = shares.iter().map(|share| share * share).sum();
    sum * sum / (shares.len() as f64 * squares)
}

#[tokio::test]
async fn two_thousand_tasks_share_the_cores_fairly() {
    let _alone = ONE_AT_A_TIME.lock().await;
    const DOMAINS: usize = 20;
    const TASKS_PER_DOMAIN: usize = 100;
    const MSPS: u64 = 25;
    const WINDOW: Duration = Duration::from_secs(10);
    // The default configuration: the pool must hold these 2000 instances.
    let manager = WasmTaskManager::new(WasmConfig::default()).expect("manager");
    let spin = spin_module();
    let deploying = Instant::now();
    let names: Vec<String> = (0..DOMAINS).map(|i| format!("d{i}")).collect();
    for name in &names {
        // 100 instances of one 64 KiB page each: 6.25 MiB.
        create_domain(&manager, name, limits(MSPS, 8)).await;
        for task in 0..TASKS_PER_DOMAIN {
            deploy(&manager, name, &format!("t{task}"), &spin, "", vec![])
                .await
                .expect("deployed");
        }
    }
    println!(
        "deployed {} tasks in {:?}",
        DOMAINS * TASKS_PER_DOMAIN,
        deploying.elapsed()
    );
    // Every task has had its first turn before measuring.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Each domain's rate over its own window (the domains are read one after another).
    let mut before = Vec::new();
    for name in &names {
        let read_at = Instant::now();
        before.push((
            domain_cpu_us(&manager, name).await,
            task_cpu_us(&manager, name).await,
            read_at,
        ));
    }
    tokio::time::sleep(WINDOW).await;
    let mut rates = Vec::new();
    let mut worst_jain: f64 = 1.0;
    for (name, (domain_before, tasks_before, read_at)) in names.iter().zip(&before) {
        let elapsed = read_at.elapsed().as_secs_f64();
        rates.push((domain_cpu_us(&manager, name).await - domain_before) as f64 / 1000.0 / elapsed);
        let after = task_cpu_us(&manager, name).await;
        let shares: Vec<f64> = after
            .iter()
            .map(|(task, used)| (used - tasks_before[task]) as f64)
            .collect();
        assert_eq!(shares.len(), TASKS_PER_DOMAIN);
        assert!(
            shares.iter().all(|share| *share > 0.0),
            "{name}: a task got no CPU in {WINDOW:?}"
        );
        worst_jain = worst_jain.min(jain(&shares));
    }
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    for (name, rate) in names.iter().zip(&rates) {
        assert!(
            *rate <= MSPS as f64 * 1.05,
            "{name} used {rate:.1} ms/s, over its {MSPS}"
        );
        // Domains with equal rates get equal shares, even when the machine cannot give every
        // domain its whole rate (other work on this host).
        assert_within(
            *rate,
            mean,
            0.10,
            &format!("{name} against the domains' mean"),
        );
    }
    println!(
        "domains' mean rate {mean:.1} ms/s against {MSPS}; worst fairness index across domains' tasks: {worst_jain:.3}"
    );
    if mean >= MSPS as f64 * 0.95 {
        for (name, rate) in names.iter().zip(&rates) {
            assert_within(*rate, MSPS as f64, 0.10, name);
        }
    } else {
        println!("the machine is busy: domains got {mean:.1} of their {MSPS} ms/s");
    }
    assert!(
        worst_jain >= 0.8,
        "tasks in a domain share its CPU unevenly (Jain index {worst_jain:.3})"
    );
    for name in &names {
        destroy(&manager, name).await;
    }
}
