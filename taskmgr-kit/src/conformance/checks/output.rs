//! What tasks print and how they exit: stdout, stderr, exit codes, arguments and environment,
//! the output cap, and the scratch directory.

use super::{CheckOutcome, passed};
use crate::conformance::events::{describe_exit, expect_exited};
use crate::conformance::guests::FLOOD_LINE;
use crate::conformance::report::Outcome;
use crate::conformance::rpc::{Ctx, TASK_END_WAIT, call, deploy_request, ensure, refused};
use std::collections::HashMap;
use tonic::{Code, Request};
use xeno_schemas::Document;
use xeno_schemas::documents::TaskDescription;
use xeno_schemas::proto::common::v1::{OutputStream, TaskState};

/// Arguments for echo_args_env: shell metacharacters, a space inside one argument, a quote.
const ECHO_ARGS: [&str; 5] = ["first", "$HOME", "*", "two words", "it's"];
const GREETING: &str = "hello from the conformance suite";

/// Exit codes every environment can produce: WASI (as Wasmtime implements it) accepts only
/// statuses below 126, so the largest checked is 125.
const EXIT_CODES: [u8; 4] = [0, 1, 42, 125];

/// The output cap of the output_cap check's domain, and how much the flood writes: 32 times
/// the cap, so nearly everything must be dropped.
const OUTPUT_CAP_BYTES: u64 = 4096;
const FLOOD_LINES: u32 = 2048;

pub(super) async fn hello_output(ctx: &Ctx<'_>) -> CheckOutcome {
    let domain = ctx.domain("hello").await?;
    let (watch, exit) = ctx
        .run_to_end(&domain, "hello", &ctx.guests.hello())
        .await?;
    watch.check_order("hello", true)?;
    watch.check_offsets("hello")?;
    let stdout = watch.output("hello", OutputStream::Stdout);
    ensure!(
        stdout == b"hello\n",
        "hello: expected stdout \"hello\\n\", got {:?}; events: {}",
        String::from_utf8_lossy(&stdout),
        watch.summary()
    );
    let first = watch.chunks("hello", OutputStream::Stdout)[0].offset;
    ensure!(
        first == 0,
        "hello: expected its output to start at offset 0, got {first}"
    );
    let stderr = watch.output("hello", OutputStream::Stderr);
    ensure!(
        stderr.is_empty(),
        "hello: expected no stderr, got {:?}",
        String::from_utf8_lossy(&stderr)
    );
    expect_exited("hello", &exit, 0)?;
    let exit_usage = exit.usage.unwrap_or_default();
    ensure!(
        exit.usage.is_some() && exit_usage.output_bytes >= 6,
        "hello: expected TaskEnded's usage to count its 6 bytes of output, got {:?}",
        exit.usage
    );

    let inspected = ctx.inspect(&domain, "hello").await?;
    ensure!(
        inspected.state == TaskState::Exited as i32,
        "InspectTask hello: expected state EXITED, got {:?}",
        TaskState::try_from(inspected.state)
    );
    ensure!(
        inspected
            .exit
            .as_ref()
            .is_some_and(|exit| exit.exit_code == 0),
        "InspectTask hello: expected its exit, code 0, got {}",
        describe_exit(inspected.exit.as_ref())
    );
    let report = ctx.usage(&domain).await?;
    let task = report.tasks.iter().find(|task| task.task_id == "hello");
    ensure!(
        task.is_some_and(|task| task.state == TaskState::Exited as i32),
        "ReportUsage: expected task hello listed as EXITED, got {:?}",
        report.tasks
    );
    let domain_output = report.usage.unwrap_or_default().output_bytes;
    ensure!(
        domain_output >= 6,
        "ReportUsage: expected the domain's output_bytes to count hello's 6 bytes, got {domain_output}"
    );
    passed()
}

pub(super) async fn deploy_task_idempotent(ctx: &Ctx<'_>) -> CheckOutcome {
    let domain = ctx.domain("redeploy").await?;
    let hello = ctx.guests.hello();
    let (_, exit) = ctx.run_to_end(&domain, "hello", &hello).await?;
    expect_exited("hello", &exit, 0)?;
    call(
        "DeployTask retried identically",
        ctx.tm
            .deploy_task(Request::new(deploy_request(&domain, "hello", &hello))),
    )
    .await?;
    refused(
        "DeployTask with the same id and a different task",
        &[Code::AlreadyExists],
        ctx.tm.deploy_task(Request::new(deploy_request(
            &domain,
            "hello",
            &ctx.guests.exit_code(3),
        ))),
    )
    .await?;
    let mut replay = ctx.watch(&domain, HashMap::new(), false).await?;
    replay
        .until_closed(TASK_END_WAIT, "replay after the retry")
        .await?;
    let stdout = replay.output("hello", OutputStream::Stdout);
    ensure!(
        replay.started("hello") == 1 && stdout == b"hello\n",
        "DeployTask retried identically: expected the task to have run once, got: {}",
        replay.summary()
    );
    passed()
}

pub(super) async fn exit_codes(ctx: &Ctx<'_>) -> CheckOutcome {
    let domain = ctx.domain("exits").await?;
    let mut watch = ctx.watch(&domain, HashMap::new(), true).await?;
    for code in EXIT_CODES {
        ctx.deploy(
            &domain,
            &format!("exit-{code}"),
            &ctx.guests.exit_code(code),
        )
        .await?;
    }
    for code in EXIT_CODES {
        let task = format!("exit-{code}");
        let exit = watch.until_ended(&task, TASK_END_WAIT).await?;
        expect_exited(&task, &exit, i32::from(code))?;
    }
    passed()
}

pub(super) async fn args_and_env(ctx: &Ctx<'_>) -> CheckOutcome {
    let guest = ctx.guests.echo_args_env(&ECHO_ARGS, GREETING);
    // The guest must pass the values through the document, or this would test nothing.
    let task = TaskDescription::parse(guest.task_xml.as_bytes()).map_err(|error| {
        format!("the echo_args_env guest's TaskDescription is invalid: {error}")
    })?;
    ensure!(
        task.args.ends_with(&ECHO_ARGS.map(String::from)),
        "the echo_args_env guest must end its Args with {ECHO_ARGS:?}, it has {:?}",
        task.args
    );
    ensure!(
        task.env
            .contains(&("XENO_GREETING".into(), GREETING.into())),
        "the echo_args_env guest must set XENO_GREETING in Env, it has {:?}",
        task.env
    );
    let domain = ctx.domain("echo").await?;
    let (watch, exit) = ctx.run_to_end(&domain, "echo", &guest).await?;
    let expected = format!("{}\n{GREETING}\n", ECHO_ARGS.join(" "));
    let stdout = watch.output("echo", OutputStream::Stdout);
    ensure!(
        stdout == expected.as_bytes(),
        "echo: expected stdout {expected:?}, got {:?}",
        String::from_utf8_lossy(&stdout)
    );
    expect_exited("echo", &exit, 0)?;
    passed()
}

pub(super) async fn stderr_separate(ctx: &Ctx<'_>) -> CheckOutcome {
    let domain = ctx.domain("stderr").await?;
    let (watch, exit) = ctx
        .run_to_end(&domain, "oops", &ctx.guests.stderr())
        .await?;
    watch.check_order("oops", true)?;
    watch.check_offsets("oops")?;
    let stdout = watch.output("oops", OutputStream::Stdout);
    let stderr = watch.output("oops", OutputStream::Stderr);
    ensure!(
        stderr == b"oops\n" && stdout.is_empty(),
        "oops: expected stderr \"oops\\n\" and no stdout, got stderr {:?} and stdout {:?}",
        String::from_utf8_lossy(&stderr),
        String::from_utf8_lossy(&stdout)
    );
    expect_exited("oops", &exit, 0)?;
    passed()
}

pub(super) async fn output_cap(ctx: &Ctx<'_>) -> CheckOutcome {
    let mut limits = ctx.guests.limits();
    limits.output_bytes_max = OUTPUT_CAP_BYTES;
    let domain = ctx.domain_with("flood", limits).await?;
    let produced = u64::from(FLOOD_LINES) * FLOOD_LINE.len() as u64;
    let (live, exit) = ctx
        .run_to_end(&domain, "flood", &ctx.guests.flood(FLOOD_LINES))
        .await?;
    expect_exited("flood", &exit, 0)?;
    live.check_offsets("flood")?;
    live.check_flood("flood", produced)?;

    let report = ctx.usage(&domain).await?;
    let counted = report
        .tasks
        .iter()
        .find(|task| task.task_id == "flood")
        .and_then(|task| task.usage)
        .map(|usage| usage.output_bytes);
    ensure!(
        counted.is_some_and(|counted| counted >= produced),
        "flood: expected its usage to count all {produced} bytes written (kept or dropped), got {counted:?}"
    );
    let mut replay = ctx.watch(&domain, HashMap::new(), false).await?;
    replay
        .until_closed(TASK_END_WAIT, "replay of the flood")
        .await?;
    replay.check_offsets("flood")?;
    let kept = replay.check_flood("flood", produced)?;
    ensure!(
        kept <= OUTPUT_CAP_BYTES,
        "flood: expected at most the cap of {OUTPUT_CAP_BYTES} bytes kept for replay, got {kept}"
    );
    Ok(Outcome::Passed(Some(format!(
        "{kept} of {produced} bytes kept, {} delivered live",
        live.output("flood", OutputStream::Stdout).len()
    ))))
}

pub(super) async fn write_file(ctx: &Ctx<'_>) -> CheckOutcome {
    let Some(guest) = ctx.guests.write_file() else {
        return Ok(Outcome::Skipped("the guests provide no write_file".into()));
    };
    let scratch = tempfile::Builder::new()
        .prefix("xeno-conformance-")
        .tempdir()
        .map_err(|error| format!("could not make a scratch directory: {error}"))?;
    let domain = ctx.new_id("scratch");
    let mut request = ctx.create_request(&domain, ctx.guests.limits());
    request.scratch_dir = scratch.path().to_string_lossy().into_owned();
    ctx.create(request).await?;
    let (_, exit) = ctx.run_to_end(&domain, "write", &guest).await?;
    expect_exited("write", &exit, 0)?;
    let path = scratch.path().join("out.txt");
    let written = std::fs::read_to_string(&path).map_err(|error| {
        format!(
            "write: expected {} in the scratch directory given to CreateDomain, could not read it: {error}",
            path.display()
        )
    })?;
    ensure!(
        written.trim_end_matches('\n') == "done",
        "write: expected out.txt to contain \"done\", got {written:?}"
    );
    // Destroyed while its scratch directory still exists.
    ctx.destroy(&domain, "conformance check finished").await?;
    passed()
}
