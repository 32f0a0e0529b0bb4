//! How a running task is told to stop: StopTask, DestroyDomain and the task manager's
//! shutdown set the reason once and kick the task's vCPU thread, which leaves KVM_RUN (or its
//! sleep) at once and ends the task with that reason.

use crate::hypervisor::cpu::signal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use xeno_taskmgr_kit::lock;

/// A task's stop switch and the vCPU threads it kicks.
pub struct TaskControl {
    stop_requested: AtomicBool,
    reason: Mutex<Option<String>>,
    /// The ids of the vCPU threads running the task; the lock is held while kicking them, and
    /// each thread removes itself (under the lock) before it exits, so a kick never reaches
    /// another thread that reused the id.
    threads: Mutex<Vec<i32>>,
}

impl Default for TaskControl {
    fn default() -> Self {
        TaskControl {
            stop_requested: AtomicBool::new(false),
            reason: Mutex::new(None),
            threads: Mutex::new(Vec::new()),
        }
    }
}

impl xeno_taskmgr_kit::Control for TaskControl {
    fn stop(&self, reason: &str) {
        TaskControl::stop(self, reason);
    }

    /// A vCPU thread cannot be dropped where it stands: it ends the task later, when it
    /// leaves the guest.
    fn abandon(&self, timeout: Duration) -> String {
        format!("its vCPU did not stop within {timeout:?}")
    }
}

impl TaskControl {
    /// Asks the task to stop; the first reason given is the one reported.
    pub(crate) fn stop(&self, reason: &str) {
        {
            let mut held = lock(&self.reason);
            if held.is_none() {
                *held = Some(reason.to_owned());
            }
        }
        self.stop_requested.store(true, Ordering::Release);
        self.kick_all();
    }

    fn kick_all(&self) {
        for tid in lock(&self.threads).iter() {
            signal::kick(*tid);
        }
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    pub(crate) fn reason(&self) -> String {
        lock(&self.reason)
            .clone()
            .unwrap_or_else(|| "stopped".to_owned())
    }

    /// Called by a vCPU thread when it starts running the task.
    pub(crate) fn register(&self, tid: i32) {
        lock(&self.threads).push(tid);
    }

    /// Called by a vCPU thread before it stops running the task.
    pub(crate) fn deregister(&self, tid: i32) {
        lock(&self.threads).retain(|t| *t != tid);
    }
}
