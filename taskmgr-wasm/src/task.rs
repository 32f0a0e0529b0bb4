//! One task: its identity, counters, how it is stopped, how it ended, and the future that
//! runs it on the task threads.

use crate::domain::Domain;
use crate::guest::{self, Launch, Outcome};
use crate::interrupt::Interrupt;
use crate::metered::{Budget, Metered};
use crate::sync::lock;
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, watch};
use tokio::task::AbortHandle;
use xeno_schemas::proto::common::v1::{TaskExit, TaskState, Usage};
use xeno_schemas::taskmanager::metering::TaskMeter;

pub(crate) struct Task {
    pub(crate) id: String,
    /// A number unique within the domain, naming the task in its CPU queue.
    pub(crate) key: u64,
    /// Identifies the DeployTask request, for idempotent retries.
    pub(crate) fingerprint: [u8; 32],
    pub(crate) meter: Arc<TaskMeter>,
    pub(crate) interrupt: Arc<Interrupt>,
    exit: OnceLock<TaskExit>,
    done: watch::Sender<bool>,
    abort: Mutex<Option<AbortHandle>>,
}

impl Task {
    pub(crate) fn new(id: String, key: u64, fingerprint: [u8; 32], now: Instant) -> Self {
        Task {
            id,
            key,
            fingerprint,
            meter: Arc::new(TaskMeter::new(now)),
            interrupt: Arc::new(Interrupt::new()),
            exit: OnceLock::new(),
            done: watch::Sender::new(false),
            abort: Mutex::new(None),
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
            unknown_calls: Vec::new(),
        };
        self.exit.set(exit.clone()).ok()?;
        Some(exit)
    }

    pub(crate) fn mark_done(&self) {
        self.done.send_replace(true);
    }

    /// Asks the task to stop and waits for it to end, for at most `timeout`; a task that has
    /// not ended by then is abandoned (its future dropped) and recorded as stopped.
    pub(crate) async fn stop(self: &Arc<Self>, domain: &Domain, reason: &str, timeout: Duration) {
        self.interrupt.stop(reason);
        let mut done = self.done.subscribe();
        if tokio::time::timeout(timeout, done.wait_for(|done| *done))
            .await
            .is_ok()
        {
            return;
        }
        tracing::error!(task = %self.id, "task did not stop within {timeout:?}; abandoning it");
        if let Some(abort) = lock(&self.abort).take() {
            abort.abort();
        }
        domain.finish_task(
            self,
            Outcome::Stopped(format!(
                "{reason} (abandoned: did not stop within {timeout:?})"
            )),
        );
    }
}

/// Starts `launch` on the task threads. The permit (the task's slot in the instance pool) is
/// held until the task's store is gone.
pub(crate) fn spawn(
    runtime: &tokio::runtime::Handle,
    domain: Arc<Domain>,
    task: Arc<Task>,
    launch: Launch,
    quantum_us: u64,
    permit: OwnedSemaphorePermit,
) {
    let budget = domain.cpu_gate().map(|gate| Budget {
        gate,
        key: task.key,
    });
    let deadline = launch.wall_clock.map(|(at, _)| at);
    let quantum_ns = quantum_us.saturating_mul(1000);
    // Unconstrained by tokio's cooperative budget: `Metered` bounds each poll itself, and a
    // budget running out mid-quantum would make the task's timers and channels report
    // spurious wake-ups.
    let metered = Metered::new(
        tokio::task::unconstrained(guest::run(launch)),
        Arc::clone(&task.meter),
        budget,
        Arc::clone(&task.interrupt),
        deadline,
        quantum_ns,
    );
    let running = Arc::clone(&task);
    let handle = runtime.spawn(async move {
        let outcome = AssertUnwindSafe(metered)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(task = %running.id, "the task's host code panicked");
                Outcome::Failed(
                    "internal error: the task manager failed while running this task".to_owned(),
                )
            });
        // The store went with `metered` above, so the pool slot is free: give it back before
        // the task is seen to end, so that a deploy after StopTask or TaskEnded finds it.
        drop(permit);
        domain.finish_task(&running, outcome);
    });
    *lock(&task.abort) = Some(handle.abort_handle());
}
