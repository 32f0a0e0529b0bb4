//! A domain's events: the output each task has kept, and a bounded log of recent events
//! (output chunks, task starts and ends, the domain's destruction) that StreamOutput readers
//! follow.
//!
//! Each task's stdout and stderr share one byte sequence: a chunk's offset counts every byte
//! the task wrote to either stream before it, kept or not, so `from_offset` needs one number
//! per task and a reader sees dropped output as a jump in offsets. A task keeps the first
//! bytes of its output up to its cap (the documents' rule: "later output is counted and
//! dropped"); the log holds the most recent events up to its own bounds, so a live reader
//! still receives everything unless it falls further behind than the log reaches.
//!
//! Shared by the task managers: a task manager keeps one [`DomainEvents`] per domain, records
//! what its tasks do with [`DomainEvents::task_started`], [`DomainEvents::output`],
//! [`DomainEvents::task_ended`] and [`DomainEvents::destroyed`], and answers StreamOutput with
//! [`DomainEvents::open_stream`].

use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::watch;
use xeno_schemas::proto::common::v1::{OutputChunk, OutputStream};
use xeno_schemas::proto::taskmanager::v1::{
    DomainDestroyed, DomainEvent, TaskEnded, TaskStarted, domain_event::Event,
};

/// Largest chunk of output in one event: the interface's limit.
pub const CHUNK_BYTES_MAX: usize = 64 * 1024;
/// What an event costs in the log beyond its data, for the byte bound: small writes make many
/// events, and their bookkeeping is memory too.
const EVENT_OVERHEAD_BYTES: usize = 128;

/// Bounds of a domain's event log and kept output.
#[derive(Debug, Clone, Copy)]
pub struct EventLimits {
    /// Bytes of recent events kept for readers that fall behind (each event also costs a
    /// fixed overhead, so that many small writes are bounded too).
    pub log_bytes_max: usize,
    /// Count of recent events kept for readers that fall behind.
    pub log_events_max: usize,
    /// Output kept across the domain's tasks for replay; beyond it the oldest ended tasks'
    /// output is released first, then new output is counted and dropped.
    pub kept_bytes_max: u64,
    /// Readers open at once.
    pub readers_max: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct KeptChunk {
    pub(crate) stream: OutputStream,
    pub(crate) offset: u64,
    pub(crate) data: Bytes,
}

/// How much of a task's output is kept for replay, and the words that say so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputCap {
    /// Bytes kept: the first ones the task writes.
    pub bytes: u64,
    /// Why output beyond them is not kept, for clients ("the server keeps the first ...").
    pub reason: String,
}

impl OutputCap {
    /// The cap for a task that asked to keep `asked` bytes (`Limits/OutputBytes`) in a domain
    /// whose per-task cap is `domain` (`DomainLimits.output_bytes_max`, if set): the smaller of
    /// the two, either alone if the other is unset, else `default`; never above `max` (the
    /// task manager's ceiling). The reason names the limit that applied, and says so when the
    /// task asked for more than it got.
    pub fn choose(asked: Option<u64>, domain: Option<u64>, default: u64, max: u64) -> OutputCap {
        let (mut bytes, mut whose) = match (asked, domain) {
            (Some(asked), Some(domain)) if asked <= domain => (asked, "the task's OutputBytes"),
            (Some(_), Some(domain)) => (domain, "the session's output limit"),
            (Some(asked), None) => (asked, "the task's OutputBytes"),
            (None, Some(domain)) => (domain, "the session's output limit"),
            (None, None) => (default, "the task manager's default"),
        };
        if bytes > max {
            (bytes, whose) = (max, "the task manager's ceiling");
        }
        let asked_more = match asked {
            Some(asked) if asked > bytes => {
                format!("; the task asked to keep {asked} but may keep at most {bytes}")
            }
            _ => String::new(),
        };
        OutputCap {
            bytes,
            reason: format!(
                "only the first {bytes} bytes of a task's output are kept ({whose}){asked_more}"
            ),
        }
    }
}

/// One task's output as kept, and where its sequence stands.
#[derive(Debug)]
struct TaskOutput {
    cap_bytes: u64,
    /// Why the output not kept was dropped (the cap, or the domain's store).
    drop_reason: String,
    /// Bytes written so far, kept or not: the offset of the next byte.
    offset: u64,
    kept: Vec<KeptChunk>,
    /// The chunk being filled: small writes coalesce here, up to [`CHUNK_BYTES_MAX`].
    tail: Option<(OutputStream, u64, BytesMut)>,
    kept_bytes: u64,
    /// Set once the task ended: the sequence number of its TaskEnded event and the event.
    ended: Option<(u64, TaskEnded)>,
}

impl TaskOutput {
    fn keep(&mut self, stream: OutputStream, offset: u64, data: &[u8]) {
        let contiguous = matches!(&self.tail, Some((s, o, buf))
            if *s == stream && o + buf.len() as u64 == offset && buf.len() + data.len() <= CHUNK_BYTES_MAX);
        if !contiguous {
            self.seal_tail();
            self.tail = Some((stream, offset, BytesMut::with_capacity(data.len())));
        }
        if let Some((_, _, buf)) = &mut self.tail {
            buf.extend_from_slice(data);
        }
        self.kept_bytes += data.len() as u64;
    }

    fn seal_tail(&mut self) {
        if let Some((stream, offset, buf)) = self.tail.take() {
            self.kept.push(KeptChunk {
                stream,
                offset,
                data: buf.freeze(),
            });
        }
    }

    fn snapshot(&self) -> Vec<KeptChunk> {
        let mut chunks = self.kept.clone();
        if let Some((stream, offset, buf)) = &self.tail {
            chunks.push(KeptChunk {
                stream: *stream,
                offset: *offset,
                data: Bytes::copy_from_slice(buf),
            });
        }
        chunks
    }

    /// Bytes written but not kept.
    fn dropped_bytes(&self) -> u64 {
        self.offset - self.kept_bytes
    }

    fn release_kept(&mut self) -> u64 {
        if self.kept_bytes > 0 {
            self.drop_reason =
                "its kept output was released to make room for the domain's running tasks"
                    .to_owned();
        }
        let released = self.kept_bytes;
        self.kept.clear();
        self.tail = None;
        self.kept_bytes = 0;
        released
    }
}

struct LogEntry {
    seq: u64,
    event: Arc<DomainEvent>,
    bytes: usize,
}

struct State {
    log: VecDeque<LogEntry>,
    log_bytes: usize,
    next_seq: u64,
    order: Vec<String>,
    tasks: HashMap<String, TaskOutput>,
    kept_bytes: u64,
    destroyed: bool,
}

impl State {
    fn first_retained_seq(&self) -> u64 {
        self.log.front().map_or(self.next_seq, |entry| entry.seq)
    }

    fn push(&mut self, event: Event, limits: &EventLimits) -> u64 {
        let bytes = EVENT_OVERHEAD_BYTES
            + match &event {
                Event::Output(chunk) => chunk.data.len(),
                _ => 0,
            };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.log.push_back(LogEntry {
            seq,
            event: Arc::new(DomainEvent { event: Some(event) }),
            bytes,
        });
        self.log_bytes += bytes;
        while self.log.len() > 1
            && (self.log_bytes > limits.log_bytes_max || self.log.len() > limits.log_events_max)
        {
            if let Some(old) = self.log.pop_front() {
                self.log_bytes -= old.bytes;
            }
        }
        seq
    }

    /// Room to keep `wanted` more bytes in the domain, releasing the kept output of the
    /// oldest ended tasks if needed.
    fn make_room(&mut self, wanted: u64, limits: &EventLimits) -> u64 {
        let mut index = 0;
        while self.kept_bytes + wanted > limits.kept_bytes_max && index < self.order.len() {
            if let Some(task) = self.tasks.get_mut(&self.order[index])
                && task.ended.is_some()
            {
                self.kept_bytes -= task.release_kept();
            }
            index += 1;
        }
        limits
            .kept_bytes_max
            .saturating_sub(self.kept_bytes)
            .min(wanted)
    }
}

/// What a reader needs to catch up: each task's kept output and end, and where the log
/// starts.
pub(crate) struct Snapshot {
    pub(crate) tasks: Vec<TaskSnapshot>,
    pub(crate) first_retained_seq: u64,
    /// The sequence number the next event will get: everything recorded so far is before it.
    pub(crate) next_seq: u64,
}

pub(crate) struct TaskSnapshot {
    pub(crate) task_id: String,
    pub(crate) kept: Vec<KeptChunk>,
    /// Bytes the task had written: the offset where its next output starts.
    pub(crate) written: u64,
    /// Why what was written but not kept was dropped.
    pub(crate) drop_reason: String,
    /// The task's end, if it ended and its TaskEnded event is no longer in the log.
    pub(crate) ended_before_log: Option<TaskEnded>,
}

/// A domain's event log and kept output.
pub struct DomainEvents {
    limits: EventLimits,
    state: Mutex<State>,
    seq: watch::Sender<u64>,
    readers: AtomicUsize,
}

/// A reader's place among the domain's readers, given back when the reader is dropped.
pub(crate) struct ReaderSlot {
    events: Arc<DomainEvents>,
}

impl ReaderSlot {
    /// A place for one more reader, unless the domain has `readers_max` already.
    pub(crate) fn take(events: &Arc<DomainEvents>) -> Option<ReaderSlot> {
        let max = events.limits.readers_max;
        events
            .readers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |readers| {
                (readers < max).then_some(readers + 1)
            })
            .ok()?;
        Some(ReaderSlot {
            events: Arc::clone(events),
        })
    }

    pub(crate) fn events(&self) -> &Arc<DomainEvents> {
        &self.events
    }
}

impl Drop for ReaderSlot {
    fn drop(&mut self) {
        self.events.readers.fetch_sub(1, Ordering::AcqRel);
    }
}

impl DomainEvents {
    /// An empty log with these bounds.
    pub fn new(limits: EventLimits) -> Self {
        DomainEvents {
            limits,
            state: Mutex::new(State {
                log: VecDeque::new(),
                log_bytes: 0,
                next_seq: 0,
                order: Vec::new(),
                tasks: HashMap::new(),
                kept_bytes: 0,
                destroyed: false,
            }),
            seq: watch::Sender::new(0),
            readers: AtomicUsize::new(0),
        }
    }

    fn publish(&self, state: &State) {
        // Readers only use this as a wake-up; they read the log themselves.
        self.seq.send_replace(state.next_seq);
    }

    /// Records a task's start; it keeps the first `cap.bytes` of its output for replay.
    pub fn task_started(&self, task_id: &str, cap: &OutputCap) {
        let mut state = lock(&self.state);
        state.order.push(task_id.to_owned());
        state.tasks.insert(
            task_id.to_owned(),
            TaskOutput {
                cap_bytes: cap.bytes,
                drop_reason: cap.reason.clone(),
                offset: 0,
                kept: Vec::new(),
                tail: None,
                kept_bytes: 0,
                ended: None,
            },
        );
        state.push(
            Event::TaskStarted(TaskStarted {
                task_id: task_id.to_owned(),
            }),
            &self.limits,
        );
        self.publish(&state);
    }

    /// Records `data` written by a task to `stream`. Never blocks on readers and never fails:
    /// what does not fit is counted and dropped.
    pub fn output(&self, task_id: &str, stream: OutputStream, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let mut state = lock(&self.state);
        let limits = self.limits;
        let Some(task) = state.tasks.get(task_id) else {
            return;
        };
        let offset = task.offset;
        let keep_wanted = task
            .cap_bytes
            .saturating_sub(task.kept_bytes)
            .min(data.len() as u64);
        let keep = if keep_wanted > 0 {
            state.make_room(keep_wanted, &limits)
        } else {
            0
        };
        if let Some(task) = state.tasks.get_mut(task_id) {
            task.offset += data.len() as u64;
            if keep < keep_wanted {
                task.drop_reason = format!(
                    "the domain keeps at most {} bytes of output across its tasks",
                    limits.kept_bytes_max
                );
            }
            let keep = usize::try_from(keep).unwrap_or(data.len()).min(data.len());
            if keep > 0 {
                task.keep(stream, offset, &data[..keep]);
            }
            state.kept_bytes += keep as u64;
        }
        let mut chunk_offset = offset;
        for piece in data.chunks(CHUNK_BYTES_MAX) {
            state.push(
                Event::Output(OutputChunk {
                    task_id: task_id.to_owned(),
                    stream: stream.into(),
                    data: piece.to_vec(),
                    offset: chunk_offset,
                }),
                &limits,
            );
            chunk_offset += piece.len() as u64;
        }
        self.publish(&state);
    }

    /// Records a task's end.
    pub fn task_ended(&self, ended: TaskEnded) {
        let mut state = lock(&self.state);
        let seq = state.push(Event::TaskEnded(ended.clone()), &self.limits);
        if let Some(task) = state.tasks.get_mut(&ended.task_id) {
            task.seal_tail();
            task.ended = Some((seq, ended));
        }
        self.publish(&state);
    }

    /// The bytes of `task_id`'s output not kept for replay, and why (0 and empty if all are
    /// kept, or the task is unknown).
    pub fn dropped(&self, task_id: &str) -> (u64, String) {
        let state = lock(&self.state);
        match state.tasks.get(task_id) {
            Some(task) if task.dropped_bytes() > 0 => {
                (task.dropped_bytes(), task.drop_reason.clone())
            }
            _ => (0, String::new()),
        }
    }

    /// Forgets an ended task's output (the domain no longer remembers the task).
    pub fn forget(&self, task_id: &str) {
        let mut state = lock(&self.state);
        if let Some(mut task) = state.tasks.remove(task_id) {
            state.kept_bytes -= task.release_kept();
        }
        state.order.retain(|id| id != task_id);
    }

    /// Records the domain's destruction (the last event) and releases all kept output.
    pub fn destroyed(&self, reason: &str) {
        let mut state = lock(&self.state);
        if state.destroyed {
            return;
        }
        state.destroyed = true;
        state.push(
            Event::Destroyed(DomainDestroyed {
                reason: reason.to_owned(),
            }),
            &self.limits,
        );
        for task in state.tasks.values_mut() {
            task.release_kept();
        }
        state.kept_bytes = 0;
        self.publish(&state);
    }

    /// A StreamOutput reader: replays what is kept from the positions in `from_offset`, then
    /// follows live if asked. `None` when the domain already has `readers_max` readers.
    pub fn open_stream(
        self: &Arc<Self>,
        from_offset: HashMap<String, u64>,
        follow: bool,
    ) -> Option<crate::EventStream> {
        let slot = ReaderSlot::take(self)?;
        Some(Box::pin(
            crate::stream::Reader::new(slot, from_offset, follow).into_stream(),
        ))
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.seq.subscribe()
    }

    /// Events with sequence numbers from `from` on (at most `max`), or `None` if the log no
    /// longer reaches back that far.
    pub(crate) fn events_since(
        &self,
        from: u64,
        max: usize,
    ) -> Option<Vec<(u64, Arc<DomainEvent>)>> {
        let state = lock(&self.state);
        if from < state.first_retained_seq() {
            return None;
        }
        let skip = usize::try_from(from - state.first_retained_seq()).unwrap_or(usize::MAX);
        Some(
            state
                .log
                .iter()
                .skip(skip)
                .take(max)
                .map(|entry| (entry.seq, Arc::clone(&entry.event)))
                .collect(),
        )
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let state = lock(&self.state);
        let first_retained_seq = state.first_retained_seq();
        let tasks = state
            .order
            .iter()
            .filter_map(|task_id| {
                let task = state.tasks.get(task_id)?;
                Some(TaskSnapshot {
                    task_id: task_id.clone(),
                    kept: task.snapshot(),
                    written: task.offset,
                    drop_reason: task.drop_reason.clone(),
                    ended_before_log: task
                        .ended
                        .as_ref()
                        .filter(|(seq, _)| *seq < first_retained_seq)
                        .map(|(_, ended)| ended.clone()),
                })
            })
            .collect();
        Snapshot {
            tasks,
            first_retained_seq,
            next_seq: state.next_seq,
        }
    }
}

/// A poisoned lock still guards consistent data here (every critical section leaves the state
/// valid before anything that can panic), and failing every later call would be worse.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cap(bytes: u64) -> OutputCap {
        OutputCap::choose(Some(bytes), None, 0, u64::MAX)
    }

    #[test]
    fn the_cap_names_the_limit_that_applied() {
        let clamped = OutputCap::choose(Some(10 << 20), Some(1 << 20), 64, 64 << 20);
        assert_eq!(clamped.bytes, 1 << 20);
        assert_eq!(
            clamped.reason,
            "only the first 1048576 bytes of a task's output are kept (the session's output limit); the task asked to keep 10485760 but may keep at most 1048576"
        );
        let own = OutputCap::choose(Some(100), Some(1 << 20), 64, 64 << 20);
        assert_eq!(
            (own.bytes, own.reason.contains("the task's OutputBytes")),
            (100, true)
        );
        assert_eq!(OutputCap::choose(None, None, 64, 32).bytes, 32);
    }

    fn events(kept_bytes_max: u64) -> DomainEvents {
        DomainEvents::new(EventLimits {
            log_bytes_max: 1 << 20,
            log_events_max: 1000,
            kept_bytes_max,
            readers_max: 4,
        })
    }

    #[test]
    fn small_writes_coalesce_and_the_cap_keeps_the_head() {
        let events = events(1 << 20);
        events.task_started("t", &cap(10));
        events.output("t", OutputStream::Stdout, b"abc");
        events.output("t", OutputStream::Stdout, b"def");
        events.output("t", OutputStream::Stderr, b"ghijkl");
        let snapshot = events.snapshot();
        let kept = &snapshot.tasks[0].kept;
        assert_eq!(kept.len(), 2);
        assert_eq!(&kept[0].data[..], b"abcdef");
        assert_eq!((kept[1].offset, &kept[1].data[..]), (6, &b"ghij"[..]));
    }

    #[test]
    fn the_log_drops_its_oldest_events_past_its_bounds() {
        let events = DomainEvents::new(EventLimits {
            log_bytes_max: 1 << 20,
            log_events_max: 16,
            kept_bytes_max: 0,
            readers_max: 4,
        });
        events.task_started("t", &cap(0));
        for _ in 0..100 {
            events.output("t", OutputStream::Stdout, b"x");
        }
        assert!(
            events.events_since(0, 10).is_none(),
            "the start was dropped"
        );
        let recent = events.events_since(101 - 16 + 1, 100).expect("retained");
        assert_eq!(recent.len(), 15);
    }

    #[test]
    fn ended_tasks_give_up_kept_output_to_running_ones() {
        let events = events(8);
        events.task_started("old", &cap(100));
        events.output("old", OutputStream::Stdout, b"12345678");
        events.task_ended(TaskEnded {
            task_id: "old".into(),
            exit: None,
        });
        events.task_started("new", &cap(100));
        events.output("new", OutputStream::Stdout, b"abcd");
        let snapshot = events.snapshot();
        assert!(snapshot.tasks[0].kept.is_empty());
        assert_eq!(&snapshot.tasks[1].kept[0].data[..], b"abcd");
    }
}
