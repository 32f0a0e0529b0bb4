//! Stopping tasks and destroying domains.

use super::{CheckOutcome, passed};
use crate::conformance::events::{describe_exit, expect_exited};
use crate::conformance::report::Outcome;
use crate::conformance::rpc::{Ctx, deploy_request, ensure, never_decreases, refused};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tonic::{Code, Request};
use xeno_schemas::proto::common::v1::TaskState;
use xeno_schemas::proto::taskmanager::v1 as pb;

/// How soon a spinning task must have ended after StopTask or DestroyDomain: "promptly".
const STOP_WAIT: Duration = Duration::from_secs(3);

/// How long a spinning guest may take to start.
const START_WAIT: Duration = Duration::from_secs(10);

/// How long guests spin before they are stopped, so they are well under way.
const SPIN_FIRST: Duration = Duration::from_millis(200);

const STOP_REASON: &str = "conformance: stopped by the suite";

pub(super) async fn stop_task(ctx: &Ctx<'_>) -> CheckOutcome {
    let domain = ctx.domain("stop").await?;
    let mut watch = ctx.watch(&domain, HashMap::new(), true).await?;
    ctx.deploy(&domain, "spin", &ctx.guests.spin()).await?;
    watch
        .until(START_WAIT, "TaskStarted for spin", |watch| {
            watch.started("spin") > 0
        })
        .await?;
    let running = ctx.inspect(&domain, "spin").await?;
    ensure!(
        running.state == TaskState::Running as i32,
        "InspectTask of a spinning task: expected RUNNING, got {:?}",
        TaskState::try_from(running.state)
    );
    tokio::time::sleep(SPIN_FIRST).await;
    let asked = Instant::now();
    ctx.stop(&domain, "spin", STOP_REASON).await?;
    let exit = watch.until_ended("spin", STOP_WAIT).await?;
    let took = asked.elapsed();
    ensure!(
        exit.state == TaskState::Stopped as i32 && exit.reason.contains(STOP_REASON),
        "spin after StopTask: expected STOPPED with reason {STOP_REASON:?}, got {}",
        describe_exit(Some(&exit))
    );
    let inspected = ctx.inspect(&domain, "spin").await?;
    ensure!(
        inspected.state == TaskState::Stopped as i32,
        "InspectTask after StopTask: expected STOPPED, got {:?}",
        TaskState::try_from(inspected.state)
    );
    Ok(Outcome::Passed(Some(format!(
        "ended {} ms after StopTask",
        took.as_millis()
    ))))
}

pub(super) async fn destroy_domain(ctx: &Ctx<'_>) -> CheckOutcome {
    let domain = ctx.domain("destroy").await?;
    let mut watch = ctx.watch(&domain, HashMap::new(), true).await?;
    let spinners = ["spin-1", "spin-2"];
    for task in spinners {
        ctx.deploy(&domain, task, &ctx.guests.spin()).await?;
    }
    watch
        .until(START_WAIT, "TaskStarted for both spinners", |watch| {
            spinners.iter().all(|task| watch.started(task) > 0)
        })
        .await?;
    tokio::time::sleep(SPIN_FIRST).await;
    let last = ctx.usage(&domain).await?.usage.unwrap_or_default();
    let asked = Instant::now();
    let final_usage = ctx.destroy(&domain, "conformance: destroy_domain").await?;
    let took = asked.elapsed();
    ensure!(
        took <= STOP_WAIT,
        "DestroyDomain with two spinning tasks: expected it within {STOP_WAIT:?}, took {took:?}"
    );
    never_decreases(
        "DestroyDomain's final usage against the last ReportUsage",
        &last,
        &final_usage,
    )?;
    watch
        .until(
            STOP_WAIT,
            "TaskEnded for both spinners and DomainDestroyed",
            |watch| watch.destroyed() && spinners.iter().all(|task| watch.ended(task).is_some()),
        )
        .await?;
    for task in spinners {
        let exit = watch.ended(task);
        ensure!(
            exit.is_some_and(|exit| exit.state == TaskState::Stopped as i32),
            "{task} in a destroyed domain: expected STOPPED, got {}",
            describe_exit(exit)
        );
    }
    let again = ctx
        .destroy(&domain, "conformance: destroy_domain again")
        .await?;
    ensure!(
        again == final_usage,
        "DestroyDomain again: expected the same final usage {final_usage:?}, got {again:?}"
    );
    refused(
        "DeployTask into a destroyed domain",
        &[Code::FailedPrecondition, Code::NotFound],
        ctx.tm.deploy_task(Request::new(deploy_request(
            &domain,
            "late",
            &ctx.guests.hello(),
        ))),
    )
    .await?;
    Ok(Outcome::Passed(Some(format!(
        "DestroyDomain took {} ms",
        took.as_millis()
    ))))
}

pub(super) async fn domains_independent(ctx: &Ctx<'_>) -> CheckOutcome {
    let busy = ctx.domain("busy").await?;
    let quiet = ctx.domain("quiet").await?;
    let mut busy_watch = ctx.watch(&busy, HashMap::new(), true).await?;
    ctx.deploy(&busy, "busy-spin", &ctx.guests.spin()).await?;
    busy_watch
        .until(START_WAIT, "TaskStarted for busy-spin", |watch| {
            watch.started("busy-spin") > 0
        })
        .await?;
    let (mut quiet_watch, exit) = ctx
        .run_to_end(&quiet, "quiet-hello", &ctx.guests.hello())
        .await?;
    expect_exited("quiet-hello", &exit, 0)?;
    ensure!(
        quiet_watch.started("busy-spin") == 0 && busy_watch.started("quiet-hello") == 0,
        "each domain's stream must carry only its own tasks; quiet had: {}; busy had: {}",
        quiet_watch.summary(),
        busy_watch.summary()
    );
    let quiet_report = ctx.usage(&quiet).await?;
    let names: Vec<&str> = quiet_report
        .tasks
        .iter()
        .map(|task| task.task_id.as_str())
        .collect();
    ensure!(
        names == ["quiet-hello"],
        "ReportUsage of the quiet domain: expected only its own task, got {names:?}"
    );
    refused(
        "InspectTask of another domain's task",
        &[Code::NotFound],
        ctx.tm.inspect_task(Request::new(pb::InspectTaskRequest {
            domain_id: quiet.clone(),
            task_id: "busy-spin".into(),
        })),
    )
    .await?;
    ctx.destroy(&busy, "conformance: domains_independent")
        .await?;
    // The quiet domain is untouched: its stream stays open without DomainDestroyed, and it
    // still runs tasks.
    quiet_watch
        .stays_open(
            SPIN_FIRST,
            "the other domain's stream after one was destroyed",
        )
        .await?;
    ensure!(
        !quiet_watch.destroyed(),
        "destroying one domain sent DomainDestroyed to another: {}",
        quiet_watch.summary()
    );
    ctx.deploy(&quiet, "after", &ctx.guests.hello()).await?;
    let exit = quiet_watch.until_ended("after", STOP_WAIT).await?;
    expect_exited("after", &exit, 0)?;
    passed()
}
