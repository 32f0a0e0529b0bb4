//! Waiting for a descriptor to become ready: an empty or full pipe, an eventfd at its bounds,
//! a poll with nothing ready.
//!
//! A call that cannot go on registers the calling thread's I/O waiter with every object it
//! waits on ([`WaitQueue::register`]) and returns [`Flow::Block`](super::syscalls::Flow::Block).
//! Outside the process lock the thread then sleeps until an object wakes it, the call's
//! deadline passes, or the task must stop (stopped, destroyed, ended, past its wall-clock
//! limit); then the same call runs again from the start with what it had already done
//! ([`Resume`]). So every call re-checks its conditions under the lock, a spurious wake-up
//! costs one more check, and nothing half-done survives a wait.

use crate::hypervisor::cpu::signal;
use crate::kernel::process::Waiter;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// Why a blocked call is waiting, and until when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// When the call gives up (a poll's timeout); `None` waits until woken.
    pub(crate) until: Option<Instant>,
    /// What the call had already done before it blocked (bytes of a large pipe write),
    /// handed back when it runs again.
    pub(crate) progress: u64,
}

/// What a call running again after a wait is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Resume {
    /// Its deadline as it first computed it.
    pub(crate) until: Option<Instant>,
    /// Whether the deadline has passed.
    pub(crate) timed_out: bool,
    /// What it had done before it blocked.
    pub(crate) progress: u64,
}

/// The threads waiting on one object. Each thread is in a queue at most once, so a queue
/// holds at most one entry per thread of the task ([`crate::kernel::threads::THREADS_MAX`]).
#[derive(Debug, Default)]
pub(crate) struct WaitQueue {
    waiters: Vec<Arc<Waiter>>,
}

impl WaitQueue {
    /// Adds `waiter`, if it is not there already.
    pub(crate) fn register(&mut self, waiter: &Arc<Waiter>) {
        if !self
            .waiters
            .iter()
            .any(|queued| Arc::ptr_eq(queued, waiter))
        {
            self.waiters.push(Arc::clone(waiter));
        }
    }

    /// Wakes every waiter (each re-checks what it waits for) and empties the queue.
    pub(crate) fn wake_all(&mut self) {
        for waiter in self.waiters.drain(..) {
            waiter.woken.store(true, Ordering::Release);
            let os_tid = waiter.os_tid.load(Ordering::Acquire);
            if os_tid != 0 {
                signal::kick(os_tid);
            }
        }
    }
}

/// What a call that may wait did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Io {
    /// Finished with this value.
    Done(u64),
    /// Not ready: wait, then run again.
    Wait(Blocked),
}

/// A call that may wait, or its errno.
pub(crate) type IoResult = Result<Io, crate::kernel::syscalls::Errno>;
