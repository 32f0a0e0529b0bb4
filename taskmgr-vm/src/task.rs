//! One task: its identity, counters, how it is stopped, how it ended, and the vCPU thread
//! that loads and runs it.

use crate::control::TaskControl;
use crate::domain::Domain;
use crate::error::Error;
use crate::run::Outcome;
use crate::sync::lock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use xeno_schemas::proto::common::v1::{TaskExit, TaskState, UnknownCall, Usage};
use xeno_schemas::taskmanager::metering::TaskMeter;

pub(crate) struct Task {
    pub(crate) id: String,
    /// Identifies the DeployTask request, for idempotent retries.
    pub(crate) fingerprint: [u8; 32],
    pub(crate) meter: Arc<TaskMeter>,
    pub(crate) control: Arc<TaskControl>,
    exit: OnceLock<TaskExit>,
    done: watch::Sender<bool>,
    /// When the vCPU first entered the guest (for start-up measurements and logs).
    pub(crate) first_entry: OnceLock<Instant>,
    deployed: Mutex<Option<Instant>>,
    /// The system calls it made that returned ENOSYS as unknown, for its end event.
    unknown_calls: Mutex<Vec<UnknownCall>>,
}

impl Task {
    pub(crate) fn new(id: String, fingerprint: [u8; 32], now: Instant) -> Self {
        Task {
            id,
            fingerprint,
            meter: Arc::new(TaskMeter::new(now)),
            control: Arc::new(TaskControl::new()),
            exit: OnceLock::new(),
            done: watch::Sender::new(false),
            first_entry: OnceLock::new(),
            deployed: Mutex::new(Some(now)),
            unknown_calls: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn exit(&self) -> Option<&TaskExit> {
        self.exit.get()
    }

    pub(crate) fn state(&self) -> TaskState {
        self.exit
            .get()
            .map_or(TaskState::Running, |exit| exit.state())
    }

    pub(crate) fn usage(&self, now: Instant) -> Usage {
        self.meter.usage(now)
    }

    /// Time from DeployTask to the first guest instruction, once known.
    pub(crate) fn start_latency(&self) -> Option<Duration> {
        let deployed = (*lock(&self.deployed))?;
        Some(self.first_entry.get()?.saturating_duration_since(deployed))
    }

    /// Records the unknown system calls the task made (number, count), for its end.
    pub(crate) fn note_unknown_calls(&self, calls: impl IntoIterator<Item = (u64, u64)>) {
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

    /// Asks the task to stop and waits for its thread to end it, for at most `timeout`; a task
    /// whose thread has not ended by then is recorded as stopped (the thread ends it later).
    pub(crate) async fn stop(self: &Arc<Self>, domain: &Domain, reason: &str, timeout: Duration) {
        self.control.stop(reason);
        let mut done = self.done.subscribe();
        if tokio::time::timeout(timeout, done.wait_for(|done| *done))
            .await
            .is_ok()
        {
            return;
        }
        tracing::error!(task = %self.id, "task did not stop within {timeout:?}");
        domain.finish_task(
            self,
            Outcome::Stopped(format!(
                "{reason} (its vCPU did not stop within {timeout:?})"
            )),
        );
    }
}

/// A place among the task manager's running tasks (vCPU threads), given back on drop.
pub(crate) struct TaskSlot {
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
