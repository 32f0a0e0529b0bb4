//! StreamOutput: replaying a domain's recorded events, then following it live.
//!
//! A watcher does not receive pushed copies of events. It keeps a cursor (per task: the next
//! offset it wants, and whether it has had the task's start and end) and pulls whatever is
//! beyond its cursor from the tasks' output logs, then sleeps until the domain says something
//! changed. So replay and live streaming are one loop; producers never wait for watchers (they
//! append to a bounded log and bump a counter); and a watcher that falls behind loses only what
//! the log itself dropped, which it sees as a gap in offsets, as the contract says.

use super::domain::{Domain, DomainState, Phase};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use xeno_schemas::proto::common::v1::OutputChunk;
use xeno_schemas::proto::taskmanager::v1::{
    DomainDestroyed, DomainEvent, TaskEnded, TaskStarted, domain_event,
};
use xeno_taskmgr_kit::EventStream;

/// Events queued for one watcher ahead of its gRPC stream: bounds the memory one slow watcher
/// holds (at most this many 64 KiB chunks). When it is full the watcher's pump waits; the tasks
/// do not.
pub(crate) const WATCHER_QUEUE_EVENTS: usize = 16;

/// Events taken from the domain per hold of its lock, so a long replay does not hold up the
/// tasks' output for long.
pub(crate) const PULL_EVENTS_MAX: usize = 16;

/// Where a watcher is in one task.
#[derive(Debug, Default, Clone, Copy)]
struct TaskCursor {
    next_offset: u64,
    started_sent: bool,
    ended_sent: bool,
}

/// Where a watcher is in the domain.
#[derive(Debug, Default)]
struct Cursor {
    tasks: HashMap<String, TaskCursor>,
}

impl Cursor {
    /// A cursor resuming at the given offsets. A task named there is one the watcher already
    /// knows, so its start is not sent again.
    fn resuming(from_offset: HashMap<String, u64>) -> Cursor {
        let tasks = from_offset
            .into_iter()
            .map(|(task, offset)| {
                let cursor = TaskCursor {
                    next_offset: offset,
                    started_sent: true,
                    ended_sent: false,
                };
                (task, cursor)
            })
            .collect();
        Cursor { tasks }
    }

    /// The events beyond the cursor, at most `max`, advancing past them.
    fn pull(&mut self, state: &DomainState, max: usize) -> Vec<DomainEvent> {
        let mut events = Vec::new();
        for task in &state.tasks {
            let cursor = self.tasks.entry(task.id.clone()).or_default();
            if events.len() >= max {
                break;
            }
            if !cursor.started_sent {
                events.push(event(domain_event::Event::TaskStarted(TaskStarted {
                    task_id: task.id.clone(),
                })));
                cursor.started_sent = true;
            }
            for chunk in task.output.from(cursor.next_offset) {
                if events.len() >= max {
                    return events;
                }
                cursor.next_offset = chunk.end();
                events.push(event(domain_event::Event::Output(OutputChunk {
                    task_id: task.id.clone(),
                    stream: chunk.stream.into(),
                    data: chunk.data,
                    offset: chunk.offset,
                })));
            }
            // Ended is recorded only after the task's output is all in its log, so the end
            // comes after the last output.
            if let Some(exit) = &task.ended
                && !cursor.ended_sent
                && events.len() < max
            {
                events.push(event(domain_event::Event::TaskEnded(TaskEnded {
                    task_id: task.id.clone(),
                    exit: Some(exit.clone()),
                })));
                cursor.ended_sent = true;
            }
        }
        events
    }
}

fn event(event: domain_event::Event) -> DomainEvent {
    DomainEvent { event: Some(event) }
}

fn destroyed(reason: &str) -> DomainEvent {
    event(domain_event::Event::Destroyed(DomainDestroyed {
        reason: reason.to_owned(),
    }))
}

/// The stream for a destroyed domain whose records are gone: just its destruction.
pub(crate) fn destroyed_only(reason: &str) -> EventStream {
    Box::pin(tokio_stream::iter([Ok(destroyed(reason))]))
}

/// Opens a StreamOutput stream on a live domain.
pub(crate) fn open(
    domain: Arc<Domain>,
    from_offset: HashMap<String, u64>,
    follow: bool,
) -> EventStream {
    let (sender, receiver) = mpsc::channel(WATCHER_QUEUE_EVENTS);
    tokio::spawn(pump(domain, Cursor::resuming(from_offset), follow, sender));
    Box::pin(ReceiverStream::new(receiver))
}

/// Moves events from the domain to the watcher until the domain is destroyed, the replay is
/// done (`follow` false) or the watcher goes away.
async fn pump(
    domain: Arc<Domain>,
    mut cursor: Cursor,
    follow: bool,
    sender: mpsc::Sender<Result<DomainEvent, tonic::Status>>,
) {
    let mut changes = domain.subscribe();
    loop {
        // Marked seen before pulling: a change after this point wakes the wait below even if
        // the pull already included it, so nothing is missed.
        changes.borrow_and_update();
        let (events, destroyed_reason) = {
            let state = domain.lock();
            let events = cursor.pull(&state, PULL_EVENTS_MAX);
            let reason = match &state.phase {
                Phase::Destroyed { reason, .. } => Some(reason.clone()),
                Phase::Live | Phase::Destroying => None,
            };
            (events, reason)
        };
        let caught_up = events.len() < PULL_EVENTS_MAX;
        for event in events {
            if sender.send(Ok(event)).await.is_err() {
                return;
            }
        }
        if !caught_up {
            continue;
        }
        if let Some(reason) = destroyed_reason {
            let _ = sender.send(Ok(destroyed(&reason))).await;
            return;
        }
        if !follow {
            return;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            () = sender.closed() => return,
        }
    }
}
