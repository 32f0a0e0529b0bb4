//! One task: its identity, counters, how it is stopped and how it ended. What runs it belongs
//! to the backend; everything the interface reports about it is here.

use crate::Error;
use crate::backend::{Backend, Control, Outcome};
use crate::domain::Domain;
use crate::metering::TaskMeter;
use crate::sync::lock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use xeno_schemas::proto::common::v1::{TaskExit, TaskState, UnknownCall, Usage};

/// A task of backend `B`.
pub struct Task<B: Backend> {
    /// Its id, chosen by the environment manager.
    pub id: String,
    /// A number unique within the domain (it names the task in the domain's CPU queue).
    pub key: u64,
    /// Identifies the DeployTask request, for idempotent retries.
    pub fingerprint: [u8; 32],
    /// Its usage counters.
    pub meter: Arc<TaskMeter>,
    /// How it is asked to stop.
    pub control: Arc<B::Control>,
    /// When it first ran its own code (for start-up measurements and logs).
    pub first_entry: OnceLock<Instant>,
    deployed: Instant,
    /// The system calls it made that were unknown, for its end event.
    unknown_calls: Mutex<Vec<UnknownCall>>,
    exit: OnceLock<TaskExit>,
    done: watch::Sender<bool>,
}

impl<B: Backend> Task<B> {
    pub(crate) fn new(id: String, key: u64, fingerprint: [u8; 32], deployed: Instant) -> Self {
        Task {
            id,
            key,
            fingerprint,
            meter: Arc::new(TaskMeter::new(deployed)),
            control: Arc::new(B::Control::default()),
            first_entry: OnceLock::new(),
            deployed,
            unknown_calls: Mutex::new(Vec::new()),
            exit: OnceLock::new(),
            done: watch::Sender::new(false),
        }
    }

    /// How it ended, once it has.
    pub fn exit(&self) -> Option<&TaskExit> {
        self.exit.get()
    }

    /// Running, or how it ended.
    pub fn state(&self) -> TaskState {
        self.exit
            .get()
            .map_or(TaskState::Running, |exit| exit.state())
    }

    /// Its usage so far.
    pub fn usage(&self, now: Instant) -> Usage {
        self.meter.usage(now)
    }

    /// Time from DeployTask to its first instruction, once known.
    pub fn start_latency(&self) -> Option<Duration> {
        Some(
            self.first_entry
                .get()?
                .saturating_duration_since(self.deployed),
        )
    }

    /// Records the unknown system calls the task made (number, count), for its end.
    pub fn note_unknown_calls(&self, calls: impl IntoIterator<Item = (u64, u64)>) {
        *lock(&self.unknown_calls) = calls
            .into_iter()
            .map(|(number, count)| UnknownCall {
                number: u32::try_from(number).unwrap_or(u32::MAX),
                count,
            })
            .collect();
    }

    /// Records how the task ended; only the first call counts. Returns the exit if this call
    /// recorded it.
    pub(crate) fn record_exit(&self, outcome: Outcome, now: Instant) -> Option<TaskExit> {
        if self.exit.get().is_some() {
            return None;
        }
        self.meter.end(now);
        let (state, exit_code, reason) = match outcome {
            Outcome::Exited(code) => (TaskState::Exited, code, format!("exit {code}")),
            Outcome::Failed(reason) => (TaskState::Failed, 0, reason),
            Outcome::Stopped(reason) => (TaskState::Stopped, 0, reason),
        };
        let exit = TaskExit {
            state: state.into(),
            exit_code,
            reason,
            usage: Some(self.meter.usage(now)),
            unknown_calls: lock(&self.unknown_calls).clone(),
        };
        self.exit.set(exit.clone()).ok()?;
        Some(exit)
    }

    pub(crate) fn mark_done(&self) {
        self.done.send_replace(true);
    }

    /// Asks the task to stop and waits for it to end, for at most `timeout`; a task that has
    /// not ended by then is abandoned (as its backend can) and recorded as stopped.
    pub async fn stop(self: &Arc<Self>, domain: &Domain<B>, reason: &str, timeout: Duration) {
        self.control.stop(reason);
        let mut done = self.done.subscribe();
        if tokio::time::timeout(timeout, done.wait_for(|done| *done))
            .await
            .is_ok()
        {
            return;
        }
        tracing::error!(task = %self.id, "task did not stop within {timeout:?}");
        let note = self.control.abandon(timeout);
        domain.finish_task(self, Outcome::Stopped(format!("{reason} ({note})")));
    }
}

/// A place among the task manager's running tasks, given back on drop: DeployTask takes one
/// before anything is started, the backend holds it until what ran the task is gone.
pub struct TaskSlot {
    running: Arc<AtomicU32>,
}

impl TaskSlot {
    pub(crate) fn take(running: &Arc<AtomicU32>, max: u32) -> Result<TaskSlot, Error> {
        running
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                (now < max).then_some(now + 1)
            })
            .map_err(|_| {
                Error::Exhausted(format!(
                    "this task manager already runs its maximum of {max} tasks"
                ))
            })?;
        Ok(TaskSlot {
            running: Arc::clone(running),
        })
    }
}

impl Drop for TaskSlot {
    fn drop(&mut self) {
        self.running.fetch_sub(1, Ordering::AcqRel);
    }
}
