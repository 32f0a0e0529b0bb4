//! How a task's process group is stopped, and the one rule that makes signalling it safe.
//!
//! The group id is the leader's pid. Once the leader is reaped that pid may be reused, so
//! nothing may signal the group after. The waiter thread (see `supervisor.rs`) marks the leader
//! exited under this lock, while it is still an unreaped zombie, and only then reaps it; every
//! signal to the group (StopTask, DestroyDomain, the wall clock, the CPU duty cycle) is sent
//! under the same lock after checking the mark.

use rustix::process::{Pid, Signal};
use std::sync::Mutex;
use std::time::Duration;
use xeno_taskmgr_kit::lock;

/// A task's process group, as far as signalling it goes.
#[derive(Debug, Default)]
pub struct GroupControl {
    state: Mutex<GroupState>,
}

#[derive(Debug, Default)]
struct GroupState {
    /// The group, once its leader runs.
    pgid: Option<Pid>,
    /// Set by the waiter when the leader has exited, just before it is reaped.
    leader_exited: bool,
    /// Why the task is being stopped, once something asked.
    stop_reason: Option<String>,
    /// Whether the CPU duty cycle has the group stopped (SIGSTOP) right now.
    paused: bool,
}

impl GroupControl {
    /// Records the group of a task just spawned. A stop asked for before it was known is
    /// carried out now.
    pub(crate) fn started(&self, pgid: Pid) {
        let mut state = lock(&self.state);
        state.pgid = Some(pgid);
        if state.stop_reason.is_some() {
            kill(pgid, Signal::KILL);
        }
    }

    /// Marks the leader exited and kills whatever is left of its group: from now on nothing
    /// signals the group (its id may be reused once the leader is reaped).
    pub(crate) fn leader_exited(&self) {
        let mut state = lock(&self.state);
        if let Some(pgid) = state.pgid.filter(|_| !state.leader_exited) {
            // The leader is a zombie still, so the group id cannot have been reused.
            kill(pgid, Signal::KILL);
        }
        state.leader_exited = true;
    }

    /// Why the task was stopped, if it was.
    pub(crate) fn stop_reason(&self) -> Option<String> {
        lock(&self.state).stop_reason.clone()
    }

    /// Stops (SIGSTOP) or continues (SIGCONT) the group for the CPU duty cycle; no-op when it
    /// is already so or can no longer be signalled.
    pub(crate) fn pause(&self, pause: bool) {
        let mut state = lock(&self.state);
        if state.paused == pause || state.leader_exited {
            return;
        }
        let Some(pgid) = state.pgid else {
            return;
        };
        let signal = if pause { Signal::STOP } else { Signal::CONT };
        match rustix::process::kill_process_group(pgid, signal) {
            Ok(()) => state.paused = pause,
            Err(error) => tracing::debug!(%error, "duty cycle signal failed"),
        }
    }
}

impl xeno_taskmgr_kit::Control for GroupControl {
    /// SIGKILLs the group; the task ends STOPPED with the first reason given.
    fn stop(&self, reason: &str) {
        let mut state = lock(&self.state);
        state.stop_reason.get_or_insert_with(|| reason.to_owned());
        if let Some(pgid) = state.pgid.filter(|_| !state.leader_exited) {
            kill(pgid, Signal::KILL);
        }
    }

    /// A process in uninterruptible sleep ignores even SIGKILL until the sleep ends: the task
    /// is recorded as stopped now and reaped when the kernel lets it go.
    fn abandon(&self, timeout: Duration) -> String {
        format!("its processes were killed but not reaped within {timeout:?}")
    }
}

fn kill(pgid: Pid, signal: Signal) {
    if let Err(error) = rustix::process::kill_process_group(pgid, signal) {
        tracing::warn!(pgid = pgid.as_raw_pid(), %error, "signalling the task's process group failed");
    }
}
