//! StreamOutput: one reader of a domain's events. It replays the kept output (from the
//! positions the caller has already seen) and the events still in the log, then, when asked
//! to follow, continues live until the domain is destroyed; otherwise it ends once it has sent
//! what was recorded when it started. If it falls further behind than the log reaches, it
//! catches up the same way and the bytes it missed show as a gap in offsets. It never delays
//! the tasks: writers only append to the bounded log.

use crate::events::{CHUNK_BYTES_MAX, KeptChunk, ReaderSlot};
use futures::Stream;
use std::collections::{HashMap, HashSet, VecDeque};
use tokio::sync::watch;
use tonic::Status;
use xeno_schemas::proto::common::v1::OutputChunk;
use xeno_schemas::proto::taskmanager::v1::{
    DomainEvent, OutputDropped, TaskEnded, TaskStarted, domain_event::Event,
};

/// Events taken from the log per lock, so a reader far behind does not hold the writers up.
const BATCH_EVENTS_MAX: usize = 256;

pub(crate) struct Reader {
    slot: ReaderSlot,
    wake: watch::Receiver<u64>,
    /// Sequence number of the next log event to read; `None` before the first catch-up.
    next_seq: Option<u64>,
    /// Per task, the offset of the next byte this reader has not delivered.
    positions: HashMap<String, u64>,
    /// Tasks the caller listed in `from_offset`: it has seen their start.
    listed: HashSet<String>,
    started_seen: HashSet<String>,
    ended_seen: HashSet<String>,
    pending: VecDeque<DomainEvent>,
    finished: bool,
    /// Without `follow`, the first sequence number not to send: the end of what was recorded
    /// when the reader first caught up.
    end_seq: Option<u64>,
    /// The first sequence number written after this reader caught up. Output recorded before
    /// it is history: what of it is kept was replayed from the kept output, and the rest was
    /// dropped by the cap, so the log's copies of it are not sent again. Later output is live
    /// and is sent as it comes.
    history_end: Option<u64>,
    follow: bool,
}

impl Reader {
    pub(crate) fn new(slot: ReaderSlot, from_offset: HashMap<String, u64>, follow: bool) -> Self {
        let wake = slot.events().subscribe();
        let mut reader = Reader {
            slot,
            wake,
            next_seq: None,
            listed: from_offset.keys().cloned().collect(),
            positions: from_offset,
            started_seen: HashSet::new(),
            ended_seen: HashSet::new(),
            pending: VecDeque::new(),
            finished: false,
            end_seq: None,
            history_end: None,
            follow,
        };
        // Catch up now, not at the first poll: output written after the caller opened the
        // stream is live for it, even if it is slow to start reading, so the task's cap
        // (which only limits what is kept for replay) does not apply to it.
        reader.catch_up();
        reader
    }

    pub(crate) fn into_stream(self) -> impl Stream<Item = Result<DomainEvent, Status>> + Send {
        futures::stream::unfold(self, |mut reader| async move {
            let event = reader.next().await?;
            Some((Ok(event), reader))
        })
    }

    async fn next(&mut self) -> Option<DomainEvent> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                if matches!(event.event, Some(Event::Destroyed(_))) {
                    self.finished = true;
                    self.pending.clear();
                }
                return Some(event);
            }
            if self.finished {
                return None;
            }
            // Mark the current value seen before reading, so a write after the read wakes us.
            self.wake.borrow_and_update();
            let progressed = self.fill();
            if self.pending.is_empty()
                && !self.finished
                && !progressed
                && self.wake.changed().await.is_err()
            {
                return None;
            }
        }
    }

    /// Takes what the log has for this reader; whether anything was read.
    fn fill(&mut self) -> bool {
        let batch = self
            .next_seq
            .and_then(|seq| self.slot.events().events_since(seq, BATCH_EVENTS_MAX));
        let Some(batch) = batch else {
            self.catch_up();
            return true;
        };
        let end = self.end_seq.unwrap_or(u64::MAX);
        let mut progressed = false;
        let history_end = self.history_end.unwrap_or(0);
        for (seq, event) in batch.into_iter().take_while(|(seq, _)| *seq < end) {
            self.next_seq = Some(seq + 1);
            progressed = true;
            if seq < history_end && matches!(event.event, Some(Event::Output(_))) {
                continue;
            }
            self.offer(&event);
        }
        if self.next_seq.is_some_and(|next| next >= end) {
            self.finished = true;
        }
        progressed
    }

    /// Replays kept output and the ends the log no longer holds, then continues from the
    /// oldest event the log still has (duplicates are filtered by position).
    fn catch_up(&mut self) {
        let snapshot = self.slot.events().snapshot();
        let first = self.history_end.is_none();
        for task in snapshot.tasks {
            if !self.listed.contains(&task.task_id) {
                self.offer(&DomainEvent {
                    event: Some(Event::TaskStarted(TaskStarted {
                        task_id: task.task_id.clone(),
                    })),
                });
            }
            for chunk in &task.kept {
                self.offer_chunk(&task.task_id, chunk);
            }
            // At the first catch-up, what was written before it and is not kept will never
            // reach this reader (the log's copies of it are history, not sent): say so, and
            // why. Later catch-ups resume from the log, where a gap shows itself.
            let position = self.positions.get(&task.task_id).copied().unwrap_or(0);
            if first && task.written > position {
                self.drop_notice(
                    &task.task_id,
                    position,
                    task.written - position,
                    task.drop_reason,
                );
                self.positions.insert(task.task_id.clone(), task.written);
            }
            if let Some(ended) = task.ended_before_log {
                self.offer(&DomainEvent {
                    event: Some(Event::TaskEnded(ended)),
                });
            }
        }
        self.next_seq = Some(snapshot.first_retained_seq);
        // Only the first catch-up draws the line: output after it is live for this reader, so
        // when a later catch-up (after falling behind) finds it still in the log, it is sent.
        self.history_end.get_or_insert(snapshot.next_seq);
        if !self.follow && self.end_seq.is_none() {
            self.end_seq = Some(snapshot.next_seq);
        }
    }

    fn offer_chunk(&mut self, task_id: &str, chunk: &KeptChunk) {
        debug_assert!(chunk.data.len() <= CHUNK_BYTES_MAX);
        self.offer(&DomainEvent {
            event: Some(Event::Output(OutputChunk {
                task_id: task_id.to_owned(),
                stream: chunk.stream.into(),
                data: chunk.data.to_vec(),
                offset: chunk.offset,
            })),
        });
    }

    fn drop_notice(&mut self, task_id: &str, offset: u64, bytes: u64, reason: String) {
        self.pending.push_back(DomainEvent {
            event: Some(Event::Dropped(OutputDropped {
                task_id: task_id.to_owned(),
                offset,
                bytes,
                reason,
            })),
        });
    }

    /// Queues `event` unless this reader has already delivered it.
    fn offer(&mut self, event: &DomainEvent) {
        match &event.event {
            Some(Event::TaskStarted(TaskStarted { task_id })) => {
                if self.listed.contains(task_id) || !self.started_seen.insert(task_id.clone()) {
                    return;
                }
                self.pending.push_back(event.clone());
            }
            Some(Event::Output(chunk)) => {
                let position = self.positions.get(&chunk.task_id).copied().unwrap_or(0);
                let end = chunk.offset + chunk.data.len() as u64;
                if end <= position {
                    return;
                }
                if chunk.offset > position {
                    self.drop_notice(
                        &chunk.task_id,
                        position,
                        chunk.offset - position,
                        "this reader fell behind the event log".to_owned(),
                    );
                }
                let skip = usize::try_from(position.saturating_sub(chunk.offset)).unwrap_or(0);
                let mut chunk = chunk.clone();
                if skip > 0 {
                    chunk.data.drain(..skip);
                    chunk.offset += skip as u64;
                }
                self.positions.insert(chunk.task_id.clone(), end);
                self.pending.push_back(DomainEvent {
                    event: Some(Event::Output(chunk)),
                });
            }
            Some(Event::TaskEnded(TaskEnded { task_id, .. }))
                if self.ended_seen.insert(task_id.clone()) =>
            {
                self.pending.push_back(event.clone());
            }
            Some(Event::TaskEnded(_)) => {}
            Some(Event::Destroyed(_)) => self.pending.push_back(event.clone()),
            // Written by readers for themselves, never logged.
            Some(Event::Dropped(_)) | None => {}
        }
    }
}
