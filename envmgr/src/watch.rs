//! WatchSession: a session's task output and lifecycle from its task manager, merged with the
//! session's own events (charges, its end), replayed from the offsets the client gives and,
//! with `follow`, followed until the session's end has been delivered.

use crate::error::ServerError;
use crate::session::Session;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Status};
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::taskmanager::v1 as tm;

/// A session's events as WatchSession streams them.
pub type SessionEvents = Pin<Box<dyn Stream<Item = Result<pb::SessionEvent, Status>> + Send>>;

fn session_event(event: tm::DomainEvent) -> Option<pb::SessionEvent> {
    use pb::session_event::Event;
    use tm::domain_event::Event as Domain;
    let event = match event.event? {
        Domain::Output(chunk) => Event::Output(chunk),
        Domain::TaskStarted(started) => Event::TaskStarted(pb::TaskStarted {
            task_id: started.task_id,
            name: String::new(),
        }),
        Domain::TaskEnded(ended) => Event::TaskEnded(pb::TaskEnded {
            task_id: ended.task_id,
            exit: ended.exit,
        }),
        Domain::Dropped(dropped) => Event::Dropped(pb::OutputDropped {
            task_id: dropped.task_id,
            bytes: dropped.bytes,
            offset: dropped.offset,
            reason: dropped.reason,
        }),
        Domain::Destroyed(_) => return None,
    };
    Some(pb::SessionEvent { event: Some(event) })
}

/// The events of `session` from `from_offset` (per task), followed to its end if `follow`.
pub async fn events(
    session: &Arc<Session>,
    from_offset: HashMap<String, u64>,
    follow: bool,
) -> Result<SessionEvents, ServerError> {
    let events = session.events.subscribe();
    let ended = session.ended.borrow().clone();
    let output = session
        .task_manager
        .stream_output(Request::new(tm::StreamOutputRequest {
            domain_id: session.id().to_owned(),
            from_offset,
            follow: follow && ended.is_none(),
        }))
        .await;
    let output: SessionEvents = match output {
        Ok(stream) => Box::pin(stream.into_inner().filter_map(|item| match item {
            Ok(event) => session_event(event).map(Ok),
            Err(status) => Some(Err(status)),
        })),
        // An ended session's domain is gone: only the end is left to tell.
        Err(status) if status.code() == tonic::Code::NotFound && ended.is_some() => {
            Box::pin(tokio_stream::empty())
        }
        Err(status) => return Err(status.into()),
    };
    if let Some(reason) = ended {
        let charged = session.live.lock().await.billing.charged_minor;
        let end = pb::SessionEvent {
            event: Some(pb::session_event::Event::SessionEnded(pb::SessionEnded {
                reason,
                charged_total: Some(xeno_schemas::proto::common::v1::Money {
                    currency: session.row.currency.clone(),
                    amount_minor: charged,
                }),
            })),
        };
        return Ok(Box::pin(output.chain(tokio_stream::once(Ok(end)))));
    }
    if !follow {
        return Ok(output);
    }
    let session_events =
        tokio_stream::wrappers::BroadcastStream::new(events).filter_map(|item| match item {
            Ok(event) => Some(Ok(event)),
            // A watcher too slow for the event buffer skips what it missed.
            Err(_) => None,
        });
    let merged = output.merge(session_events);
    // Stop after the session's end has been delivered.
    let mut done = false;
    let stream = merged.take_while(move |item| {
        if done {
            return false;
        }
        if let Ok(pb::SessionEvent {
            event: Some(pb::session_event::Event::SessionEnded(_)),
        }) = item
        {
            done = true;
        }
        true
    });
    Ok(Box::pin(stream))
}
