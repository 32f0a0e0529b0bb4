//! Reading a StreamOutput stream with deadlines, and what the checks ask of the events.

use super::guests::FLOOD_LINE;
use super::rpc::ensure;
use crate::EventStream;
use std::time::Duration;
use tokio_stream::StreamExt;
use xeno_schemas::proto::common::v1::{OutputChunk, OutputStream, TaskExit, TaskState};
use xeno_schemas::proto::taskmanager::v1::domain_event::Event;

/// Largest chunk of output the contract allows in one event.
pub(crate) const CHUNK_BYTES_MAX: usize = 64 * 1024;

/// Events shown in a failure message, so a runaway stream does not flood it.
const SUMMARY_EVENTS_MAX: usize = 40;

/// A StreamOutput stream and everything read from it so far.
pub(crate) struct Watch {
    stream: EventStream,
    /// The events read, in order.
    pub events: Vec<Event>,
    /// Whether the stream has ended.
    pub closed: bool,
}

impl Watch {
    pub fn new(stream: EventStream) -> Watch {
        Watch {
            stream,
            events: Vec::new(),
            closed: false,
        }
    }

    /// Reads until `done` holds, failing if the stream ends or fails first or `within` passes.
    pub async fn until(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&Watch) -> bool,
    ) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + within;
        while !done(self) {
            ensure!(
                !self.closed,
                "{what}: the stream ended first, after: {}",
                self.summary()
            );
            if !self.read_one(deadline, what).await? {
                return Err(format!(
                    "{what}: not within {within:?}; the stream had: {}",
                    self.summary()
                ));
            }
        }
        Ok(())
    }

    /// Reads one event, or the end of the stream, before `deadline`; `false` if neither came.
    async fn read_one(
        &mut self,
        deadline: tokio::time::Instant,
        what: &str,
    ) -> Result<bool, String> {
        match tokio::time::timeout_at(deadline, self.stream.next()).await {
            Err(_) => Ok(false),
            Ok(None) => {
                self.closed = true;
                Ok(true)
            }
            Ok(Some(Err(status))) => Err(format!(
                "{what}: the stream failed with {:?}: {} after: {}",
                status.code(),
                status.message(),
                self.summary()
            )),
            Ok(Some(Ok(event))) => match event.event {
                Some(event) => {
                    self.events.push(event);
                    Ok(true)
                }
                None => Err(format!("{what}: an event with nothing in it")),
            },
        }
    }

    /// Reads until `task` has ended; returns its exit.
    pub async fn until_ended(&mut self, task: &str, within: Duration) -> Result<TaskExit, String> {
        self.until(within, &format!("TaskEnded for {task}"), |watch| {
            watch.ended(task).is_some()
        })
        .await?;
        self.ended(task)
            .cloned()
            .ok_or_else(|| format!("TaskEnded for {task} went missing"))
    }

    /// Reads until the stream ends.
    pub async fn until_closed(&mut self, within: Duration, what: &str) -> Result<(), String> {
        self.until(within, what, |watch| watch.closed).await
    }

    /// Reads for `period`, failing if the stream ends meanwhile.
    pub async fn stays_open(&mut self, period: Duration, what: &str) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + period;
        while self.read_one(deadline, what).await? {
            ensure!(
                !self.closed,
                "{what}: the stream ended, after: {}",
                self.summary()
            );
        }
        Ok(())
    }

    /// The output chunks of one task and stream, in order.
    pub fn chunks(&self, task: &str, stream: OutputStream) -> Vec<&OutputChunk> {
        self.events
            .iter()
            .filter_map(|event| match event {
                Event::Output(chunk) if chunk.task_id == task && chunk.stream == stream as i32 => {
                    Some(chunk)
                }
                _ => None,
            })
            .collect()
    }

    /// The bytes of one task and stream, concatenated.
    pub fn output(&self, task: &str, stream: OutputStream) -> Vec<u8> {
        self.chunks(task, stream)
            .into_iter()
            .flat_map(|chunk| chunk.data.iter().copied())
            .collect()
    }

    /// How many TaskStarted events `task` had.
    pub fn started(&self, task: &str) -> usize {
        self.position_all(
            |event| matches!(event, Event::TaskStarted(started) if started.task_id == task),
        )
        .len()
    }

    /// The task's TaskEnded exit, if it came.
    pub fn ended(&self, task: &str) -> Option<&TaskExit> {
        self.events.iter().find_map(|event| match event {
            Event::TaskEnded(ended) if ended.task_id == task => ended.exit.as_ref(),
            _ => None,
        })
    }

    /// Whether DomainDestroyed came.
    pub fn destroyed(&self) -> bool {
        self.events
            .iter()
            .any(|event| matches!(event, Event::Destroyed(_)))
    }

    fn position_all(&self, matches: impl Fn(&Event) -> bool) -> Vec<usize> {
        self.events
            .iter()
            .enumerate()
            .filter(|(_, event)| matches(event))
            .map(|(index, _)| index)
            .collect()
    }

    /// Checks the order of a task's events: one TaskStarted before any of its output, and
    /// TaskEnded (if any) once, after all of it. Tasks resumed from an offset may have no
    /// TaskStarted (`started_required` false).
    pub fn check_order(&self, task: &str, started_required: bool) -> Result<(), String> {
        let starts = self.position_all(
            |event| matches!(event, Event::TaskStarted(started) if started.task_id == task),
        );
        let outputs = self
            .position_all(|event| matches!(event, Event::Output(chunk) if chunk.task_id == task));
        let ends = self.position_all(
            |event| matches!(event, Event::TaskEnded(ended) if ended.task_id == task),
        );
        ensure!(
            starts.len() <= 1 && (!started_required || starts.len() == 1),
            "expected one TaskStarted for {task}, got {}: {}",
            starts.len(),
            self.summary()
        );
        ensure!(
            ends.len() <= 1,
            "expected at most one TaskEnded for {task}, got {}: {}",
            ends.len(),
            self.summary()
        );
        if let (Some(start), Some(first)) = (starts.first(), outputs.first()) {
            ensure!(
                start < first,
                "expected TaskStarted for {task} before its output: {}",
                self.summary()
            );
        }
        if let (Some(end), Some(last)) = (ends.first(), outputs.last()) {
            ensure!(
                last < end,
                "expected TaskEnded for {task} after all its output: {}",
                self.summary()
            );
        }
        Ok(())
    }

    /// Checks a task's chunks, per stream: each at most 64 KiB, not empty, and each starting
    /// at or after the end of the one before (a gap is dropped output; an overlap is a
    /// duplicate). Returns nothing; fails with the offending chunk.
    pub fn check_offsets(&self, task: &str) -> Result<(), String> {
        for stream in [OutputStream::Stdout, OutputStream::Stderr] {
            let mut end = None;
            for chunk in self.chunks(task, stream) {
                ensure!(
                    !chunk.data.is_empty() && chunk.data.len() <= CHUNK_BYTES_MAX,
                    "{task} {stream:?}: expected chunks of 1 to {CHUNK_BYTES_MAX} bytes, got {} at offset {}",
                    chunk.data.len(),
                    chunk.offset
                );
                if let Some(end) = end {
                    ensure!(
                        chunk.offset >= end,
                        "{task} {stream:?}: a chunk at offset {} overlaps the one before, which ended at {end}",
                        chunk.offset
                    );
                }
                end = Some(chunk.offset + chunk.data.len() as u64);
            }
        }
        Ok(())
    }

    /// Checks that every byte of a task's stdout is the byte [`FLOOD_LINE`] has at that offset,
    /// and that nothing lies beyond `produced`. Returns the bytes seen.
    pub fn check_flood(&self, task: &str, produced: u64) -> Result<u64, String> {
        let mut seen = 0u64;
        for chunk in self.chunks(task, OutputStream::Stdout) {
            let end = chunk.offset + chunk.data.len() as u64;
            ensure!(
                end <= produced,
                "{task}: a chunk reaches offset {end}, beyond the {produced} bytes the guest wrote"
            );
            for (index, byte) in chunk.data.iter().enumerate() {
                let offset = chunk.offset + index as u64;
                let expected = FLOOD_LINE[(offset % FLOOD_LINE.len() as u64) as usize];
                ensure!(
                    *byte == expected,
                    "{task}: byte at offset {offset} is {byte:#04x}, but the guest wrote {expected:#04x} there"
                );
            }
            seen += chunk.data.len() as u64;
        }
        Ok(seen)
    }

    /// The events in brief, for failure messages.
    pub fn summary(&self) -> String {
        let mut parts: Vec<String> = self
            .events
            .iter()
            .take(SUMMARY_EVENTS_MAX)
            .map(|event| match event {
                Event::Output(chunk) => {
                    let stream =
                        OutputStream::try_from(chunk.stream).map_or(
                            "stream?",
                            |stream| match stream {
                                OutputStream::Stdout => "stdout",
                                OutputStream::Stderr => "stderr",
                                OutputStream::Console => "console",
                                OutputStream::Unspecified => "unspecified",
                            },
                        );
                    let shown: String = String::from_utf8_lossy(&chunk.data)
                        .chars()
                        .take(40)
                        .collect();
                    format!("{stream}({})@{} {:?}", chunk.task_id, chunk.offset, shown)
                }
                Event::TaskStarted(started) => format!("TaskStarted({})", started.task_id),
                Event::Dropped(dropped) => format!(
                    "Dropped({}, {} bytes at {})",
                    dropped.task_id, dropped.bytes, dropped.offset
                ),
                Event::TaskEnded(ended) => format!(
                    "TaskEnded({}, {})",
                    ended.task_id,
                    describe_exit(ended.exit.as_ref())
                ),
                Event::Destroyed(destroyed) => format!("DomainDestroyed({:?})", destroyed.reason),
            })
            .collect();
        if self.events.len() > SUMMARY_EVENTS_MAX {
            parts.push(format!(
                "... {} more",
                self.events.len() - SUMMARY_EVENTS_MAX
            ));
        }
        if self.closed {
            parts.push("(end of stream)".into());
        }
        if parts.is_empty() {
            "no events".into()
        } else {
            parts.join(", ")
        }
    }
}

/// An exit in brief: state, code and reason.
pub(crate) fn describe_exit(exit: Option<&TaskExit>) -> String {
    match exit {
        None => "no exit".into(),
        Some(exit) => {
            let state = TaskState::try_from(exit.state).map_or_else(
                |_| format!("state {}", exit.state),
                |state| format!("{state:?}"),
            );
            format!("{state} code {} {:?}", exit.exit_code, exit.reason)
        }
    }
}

/// Fails unless the exit is EXITED with `code`.
pub(crate) fn expect_exited(task: &str, exit: &TaskExit, code: i32) -> Result<(), String> {
    ensure!(
        exit.state == TaskState::Exited as i32 && exit.exit_code == code,
        "{task}: expected EXITED with code {code}, got {}",
        describe_exit(Some(exit))
    );
    Ok(())
}
