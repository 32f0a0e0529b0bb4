//! Usage reports and the CPU rate limit.

use super::CheckOutcome;
use crate::conformance::report::Outcome;
use crate::conformance::rpc::{Ctx, ensure, never_decreases};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use xeno_schemas::proto::common::v1::{TaskState, Usage};

/// How long a spinning guest may take to start.
const START_WAIT: Duration = Duration::from_secs(10);

/// usage_grows: reports taken, and the time between them.
const USAGE_REPORTS: u32 = 12;
const USAGE_INTERVAL: Duration = Duration::from_millis(100);

/// usage_grows: the least CPU a spinning task must show over the reports (about 1.1 s at up to
/// one core). Low, so that a loaded test machine does not fail it; the rate check is cpu_rate.
const CPU_GROWTH_MIN_US: u64 = 100_000;

/// cpu_rate: the rate asked for, how long it is measured, and the tolerance. Precise accuracy
/// is each task manager's own test; this one catches a limit that is missing or far off.
const RATE_MSPS: u64 = 200;
const RATE_SETTLE: Duration = Duration::from_millis(500);
const RATE_WINDOW: Duration = Duration::from_secs(3);
const RATE_TOLERANCE_PERCENT: u64 = 20;

pub(super) async fn usage_grows(ctx: &Ctx<'_>) -> CheckOutcome {
    let domain = ctx.domain("usage").await?;
    start_spinning(ctx, &domain).await?;
    let mut reports: Vec<(Usage, Usage)> = Vec::new();
    for index in 0..USAGE_REPORTS {
        if index > 0 {
            tokio::time::sleep(USAGE_INTERVAL).await;
        }
        let report = ctx.usage(&domain).await?;
        let total = report.usage.unwrap_or_default();
        let task = report
            .tasks
            .iter()
            .find(|task| task.task_id == "spin")
            .ok_or_else(|| {
                format!(
                    "ReportUsage: expected task spin listed, got {:?}",
                    report.tasks
                )
            })?;
        ensure!(
            task.state == TaskState::Running as i32,
            "ReportUsage: expected spin RUNNING, got {:?}",
            TaskState::try_from(task.state)
        );
        let task_usage = task.usage.unwrap_or_default();
        ensure!(
            total.cpu_time_us >= task_usage.cpu_time_us,
            "ReportUsage: the domain's cpu_time_us ({}) must include its task's ({})",
            total.cpu_time_us,
            task_usage.cpu_time_us
        );
        if let Some((previous_total, previous_task)) = reports.last() {
            never_decreases(&format!("domain, report {index}"), previous_total, &total)?;
            never_decreases(
                &format!("task spin, report {index}"),
                previous_task,
                &task_usage,
            )?;
        }
        reports.push((total, task_usage));
    }
    let (first, last) = match (reports.first(), reports.last()) {
        (Some((first, _)), Some((last, _))) => (*first, *last),
        _ => return Err("no reports taken".into()),
    };
    let grew = last.cpu_time_us - first.cpu_time_us;
    ensure!(
        grew >= CPU_GROWTH_MIN_US,
        "spinning for {:?}: expected cpu_time_us to grow by at least {CPU_GROWTH_MIN_US}, it grew by {grew}",
        USAGE_INTERVAL * (USAGE_REPORTS - 1)
    );
    ensure!(
        last.wall_time_ms > first.wall_time_ms,
        "wall_time_ms did not grow over {:?}: {} then {}",
        USAGE_INTERVAL * (USAGE_REPORTS - 1),
        first.wall_time_ms,
        last.wall_time_ms
    );
    Ok(Outcome::Passed(Some(format!(
        "cpu_time_us grew by {grew} over {} ms",
        last.wall_time_ms - first.wall_time_ms
    ))))
}

pub(super) async fn cpu_rate(ctx: &Ctx<'_>) -> CheckOutcome {
    let mut limits = ctx.guests.limits();
    limits.cpu_msps = RATE_MSPS;
    limits.cpu_peak_msps = 0;
    limits.cpu_burst_ms = 0;
    let domain = ctx.domain_with("rate", limits).await?;
    start_spinning(ctx, &domain).await?;
    tokio::time::sleep(RATE_SETTLE).await;
    let (before, at_before) = (
        ctx.usage(&domain).await?.usage.unwrap_or_default(),
        Instant::now(),
    );
    tokio::time::sleep(RATE_WINDOW).await;
    let (after, at_after) = (
        ctx.usage(&domain).await?.usage.unwrap_or_default(),
        Instant::now(),
    );
    let used_us = after.cpu_time_us.saturating_sub(before.cpu_time_us);
    let elapsed_ms = u64::try_from(at_after.duration_since(at_before).as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    // CPU microseconds per millisecond is CPU milliseconds per second.
    let measured_msps = used_us / elapsed_ms;
    let low = RATE_MSPS * (100 - RATE_TOLERANCE_PERCENT) / 100;
    let high = RATE_MSPS * (100 + RATE_TOLERANCE_PERCENT) / 100;
    ensure!(
        (low..=high).contains(&measured_msps),
        "a spinning task in a domain limited to {RATE_MSPS} CPU ms per second: expected {low} to \
         {high} ms/s, measured {measured_msps} ms/s ({used_us} us of CPU over {elapsed_ms} ms)"
    );
    Ok(Outcome::Passed(Some(format!(
        "{measured_msps} ms/s against a limit of {RATE_MSPS}"
    ))))
}

/// Deploys the spin guest as task `spin` and waits until it has started.
async fn start_spinning(ctx: &Ctx<'_>, domain: &str) -> Result<(), String> {
    let mut watch = ctx.watch(domain, HashMap::new(), true).await?;
    ctx.deploy(domain, "spin", &ctx.guests.spin()).await?;
    watch
        .until(START_WAIT, "TaskStarted for spin", |watch| {
            watch.started("spin") > 0
        })
        .await
}
