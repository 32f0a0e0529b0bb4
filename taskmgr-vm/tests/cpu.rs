//! CPU rates enforced by the VMM itself (no cgroups): a CPU-bound task in a domain of 150 CPU
//! ms per second gets 150 ms of CPU per real second, within 5%, over 10 s (every window here is
//! 10 s: the bucket may bank `cpu_bucket_window_ms` of its rate, 5% of 10 s), measured through
//! ReportUsage's `cpu_time_us`; domains side by side each get their own rate.
//!
//! The limit is a ceiling the VMM enforces; the floor is whatever the host can give. On a
//! machine shared with other work a vCPU thread may wait on the host's run queue while its
//! domain still has budget, and no limiter can give that time back. So every rate is checked
//! against its ceiling as measured, and against its floor counting the time the domain's vCPU
//! threads spent runnable but not running (their `run_delay` in `/proc/self/task/*/schedstat`):
//! used + delayed is the CPU time the VMM *allowed*, and that must be the limit within 5%.
//! The tests of this file take turns (one lock), so they do not compete with each other.

mod support;

use std::time::{Duration, Instant};
use support::*;

/// The tests of this file run one at a time: together they would ask for more CPU than the
/// machine has, and each would measure the others.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Nanoseconds the process's vCPU threads (`xeno-vcpu`) have spent runnable but waiting for a
/// host CPU, summed; 0 where the kernel keeps no schedstat.
fn vcpu_run_delay_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|task| {
            std::fs::read_to_string(task.path().join("comm"))
                .is_ok_and(|comm| comm.trim_end() == "xeno-vcpu")
        })
        .filter_map(|task| {
            let stat = std::fs::read_to_string(task.path().join("schedstat")).ok()?;
            stat.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// What a domain got over a window: CPU ms per second used, and ms per second its vCPU
/// threads (all of this process's, shared out by the caller) waited for the host.
#[derive(Debug, Clone, Copy)]
struct Rate {
    used_msps: f64,
    host_delay_msps: f64,
}

/// Checks a rate against `limit` ± 5%: the ceiling as used, the floor with host delay
/// (`delay_share` of the measured delay is this domain's).
fn check(rate: Rate, limit: f64, delay_share: f64, what: &str) {
    let allowed = rate.used_msps + rate.host_delay_msps * delay_share;
    println!(
        "{what}: used {:.1} ms/s, host run-queue delay {:.1} ms/s (share {delay_share:.2}), limit {limit}",
        rate.used_msps, rate.host_delay_msps
    );
    assert!(
        rate.used_msps <= limit * 1.05,
        "{what}: used {:.1} ms/s, above its limit of {limit} by more than 5%",
        rate.used_msps
    );
    assert!(
        allowed >= limit * 0.95,
        "{what}: the VMM allowed {allowed:.1} ms/s (used {:.1} + host delay), below its limit of {limit} by more than 5%",
        rate.used_msps
    );
}

const SPIN_C: &str = "int main(void) { for (;;) { __asm__ volatile (\"\"); } }";

/// CPU ms per second a domain's tasks used over `window`, after `settle`.
async fn measured_msps(
    manager: &xeno_taskmgr_vm::VmTaskManager,
    domain: &str,
    settle: Duration,
    window: Duration,
) -> Rate {
    tokio::time::sleep(settle).await;
    let (before, delay_before, at_before) = (
        usage(manager, domain).await.usage.expect("usage"),
        vcpu_run_delay_ns(),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (after, delay_after, at_after) = (
        usage(manager, domain).await.usage.expect("usage"),
        vcpu_run_delay_ns(),
        Instant::now(),
    );
    let seconds = at_after.duration_since(at_before).as_secs_f64();
    let used_ms = (after.cpu_time_us - before.cpu_time_us) as f64 / 1000.0;
    let delay_ms = delay_after.saturating_sub(delay_before) as f64 / 1e6;
    Rate {
        used_msps: used_ms / seconds,
        host_delay_msps: delay_ms / seconds,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_spinner_gets_150_ms_per_second_within_5_percent_over_10_s() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (Some(manager), Some(program)) = (manager(), musl_program("spin", SPIN_C)) else {
        return;
    };
    let domain = create(&manager, limits(150, 16), None).await;
    deploy(
        &manager,
        &domain,
        "spin",
        &Guest::new(&program, "spin", &[]),
    )
    .await
    .expect("deploy");
    let rate = measured_msps(
        &manager,
        &domain,
        Duration::from_millis(500),
        Duration::from_secs(10),
    )
    .await;
    check(rate, 150.0, 1.0, "a spinner of 150 ms/s over 10 s");
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn domains_side_by_side_each_get_their_own_rate() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (Some(manager), Some(program)) = (manager(), musl_program("spin", SPIN_C)) else {
        return;
    };
    let slow = create(&manager, limits(100, 16), None).await;
    let fast = create(&manager, limits(300, 16), None).await;
    for domain in [&slow, &fast] {
        // Two spinners in the fast domain: the rate is the domain's, not each task's.
        deploy(&manager, domain, "spin", &Guest::new(&program, "spin", &[]))
            .await
            .expect("deploy");
    }
    deploy(&manager, &fast, "spin2", &Guest::new(&program, "spin", &[]))
        .await
        .expect("deploy");
    let (slow_rate, fast_rate) = tokio::join!(
        measured_msps(
            &manager,
            &slow,
            Duration::from_millis(500),
            Duration::from_secs(10)
        ),
        measured_msps(
            &manager,
            &fast,
            Duration::from_millis(500),
            Duration::from_secs(10)
        ),
    );
    // Three vCPU threads, one of them the slow domain's: the delay is shared by thread.
    check(slow_rate, 100.0, 1.0 / 3.0, "slow domain (one spinner)");
    check(fast_rate, 300.0, 2.0 / 3.0, "fast domain (two spinners)");
    destroy(&manager, &slow).await;
    destroy(&manager, &fast).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_domains_each_get_their_rate() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let (Some(manager), Some(program)) = (manager(), musl_program("spin", SPIN_C)) else {
        return;
    };
    let mut domains = Vec::new();
    for _ in 0..20 {
        let domain = create(&manager, limits(40, 16), None).await;
        deploy(
            &manager,
            &domain,
            "spin",
            &Guest::new(&program, "spin", &[]),
        )
        .await
        .expect("deploy");
        domains.push(domain);
    }
    let rates = futures::future::join_all(domains.iter().map(|domain| {
        measured_msps(
            &manager,
            domain,
            Duration::from_millis(500),
            Duration::from_secs(10),
        )
    }))
    .await;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let used: Vec<f64> = rates.iter().map(|rate| rate.used_msps).collect();
    println!("20 domains at 40 ms/s: {used:.1?} (load {load})");
    for domain in &domains {
        destroy(&manager, domain).await;
    }
    // The host delay is measured over all vCPU threads and shared out evenly, so on its own
    // it would let one starved domain pass on the others' delay: every domain must also have
    // had at least 80% of what the median domain had.
    let mut sorted = used.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    for (index, got) in used.iter().enumerate() {
        assert!(
            *got >= median * 0.8,
            "domain {index} of 20 got {got:.1} ms/s, under 80% of the median {median:.1}: {used:.1?}"
        );
    }
    for (index, rate) in rates.into_iter().enumerate() {
        check(rate, 40.0, 1.0 / 20.0, &format!("domain {index} of 20"));
    }
}
