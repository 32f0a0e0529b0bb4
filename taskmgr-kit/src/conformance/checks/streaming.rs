//! StreamOutput: replay, live following, and resuming from an offset.

use super::{CheckOutcome, passed};
use crate::conformance::events::expect_exited;
use crate::conformance::rpc::{Ctx, TASK_END_WAIT, ensure};
use std::collections::HashMap;
use std::time::Duration;
use xeno_schemas::proto::common::v1::OutputStream;
use xeno_schemas::proto::taskmanager::v1::domain_event::Event;

/// How long a following stream must stay open after its domain's only task ended.
const STAYS_OPEN_FOR: Duration = Duration::from_millis(300);

/// How long a stream may take to end once it has nothing left to send.
const STREAM_END_WAIT: Duration = Duration::from_secs(5);

pub(super) async fn replay_ends(ctx: &Ctx<'_>) -> CheckOutcome {
    let domain = ctx.domain("replay").await?;
    let (_, exit) = ctx
        .run_to_end(&domain, "hello", &ctx.guests.hello())
        .await?;
    expect_exited("hello", &exit, 0)?;
    let mut replay = ctx.watch(&domain, HashMap::new(), false).await?;
    replay
        .until_closed(
            STREAM_END_WAIT,
            "StreamOutput with follow false to end after the replay",
        )
        .await?;
    replay.check_order("hello", true)?;
    let stdout = replay.output("hello", OutputStream::Stdout);
    ensure!(
        stdout == b"hello\n" && replay.ended("hello").is_some() && !replay.destroyed(),
        "replay: expected TaskStarted, \"hello\\n\" and TaskEnded for hello (and no DomainDestroyed), got: {}",
        replay.summary()
    );
    passed()
}

pub(super) async fn follow_live(ctx: &Ctx<'_>) -> CheckOutcome {
    let domain = ctx.domain("follow").await?;
    // Opened before any task exists, so everything it gets is live.
    let mut watch = ctx.watch(&domain, HashMap::new(), true).await?;
    ctx.deploy(&domain, "hello", &ctx.guests.hello()).await?;
    let exit = watch.until_ended("hello", TASK_END_WAIT).await?;
    expect_exited("hello", &exit, 0)?;
    let stdout = watch.output("hello", OutputStream::Stdout);
    ensure!(
        stdout == b"hello\n",
        "follow: expected hello's output live, got: {}",
        watch.summary()
    );
    watch
        .stays_open(
            STAYS_OPEN_FOR,
            "StreamOutput with follow true to stay open while the domain lives",
        )
        .await?;
    ctx.destroy(&domain, "conformance: follow_live").await?;
    watch
        .until_closed(
            STREAM_END_WAIT,
            "StreamOutput with follow true to end after DomainDestroyed",
        )
        .await?;
    ensure!(
        matches!(watch.events.last(), Some(Event::Destroyed(_))),
        "follow: expected DomainDestroyed as the last event, got: {}",
        watch.summary()
    );
    passed()
}

pub(super) async fn resume_from_offset(ctx: &Ctx<'_>) -> CheckOutcome {
    let domain = ctx.domain("resume").await?;
    let (_, exit) = ctx
        .run_to_end(&domain, "hello", &ctx.guests.hello())
        .await?;
    expect_exited("hello", &exit, 0)?;

    let from = HashMap::from([("hello".to_owned(), 3)]);
    let mut resumed = ctx.watch(&domain, from, false).await?;
    resumed
        .until_closed(STREAM_END_WAIT, "replay from offset 3")
        .await?;
    resumed.check_order("hello", false)?;
    let chunks = resumed.chunks("hello", OutputStream::Stdout);
    let stdout = resumed.output("hello", OutputStream::Stdout);
    ensure!(
        stdout == b"lo\n" && chunks.first().is_some_and(|chunk| chunk.offset == 3),
        "replay from offset 3: expected \"lo\\n\" at offset 3, got: {}",
        resumed.summary()
    );

    let from = HashMap::from([("hello".to_owned(), 6)]);
    let mut past_the_end = ctx.watch(&domain, from, false).await?;
    past_the_end
        .until_closed(STREAM_END_WAIT, "replay from offset 6")
        .await?;
    ensure!(
        past_the_end
            .chunks("hello", OutputStream::Stdout)
            .is_empty(),
        "replay from offset 6 (all of hello's output seen): expected no output, got: {}",
        past_the_end.summary()
    );
    // A resumed watcher still gets the other tasks from the start.
    let (_, exit) = ctx
        .run_to_end(&domain, "second", &ctx.guests.hello())
        .await?;
    expect_exited("second", &exit, 0)?;
    let from = HashMap::from([("hello".to_owned(), 6)]);
    let mut others = ctx.watch(&domain, from, false).await?;
    others
        .until_closed(STREAM_END_WAIT, "replay from offset 6 of hello only")
        .await?;
    let second = others.output("second", OutputStream::Stdout);
    ensure!(
        second == b"hello\n",
        "replay with an offset for hello only: expected all of task second's output, got: {}",
        others.summary()
    );
    passed()
}
