//! `eventfd`: a 64-bit counter a task's threads signal each other through, with Linux's rules.
//! A read takes the whole count (or 1 with `EFD_SEMAPHORE`) and waits while it is 0; a write
//! adds to it and waits while the sum would pass [`COUNTER_MAX`]; with `EFD_NONBLOCK` the
//! waits are `EAGAIN` instead.

use crate::kernel::process::Waiter;
use crate::kernel::wait::WaitQueue;
use std::sync::{Arc, Mutex};
use xeno_taskmgr_kit::lock;

/// The largest value the counter holds (Linux's: one below `u64::MAX`).
pub(crate) const COUNTER_MAX: u64 = u64::MAX - 1;

/// One eventfd object.
#[derive(Debug)]
pub(crate) struct EventFd {
    semaphore: bool,
    state: Mutex<EventState>,
}

#[derive(Debug, Default)]
struct EventState {
    counter: u64,
    readers: WaitQueue,
    writers: WaitQueue,
}

impl EventFd {
    pub(crate) fn new(initial: u64, semaphore: bool) -> EventFd {
        EventFd {
            semaphore,
            state: Mutex::new(EventState {
                counter: initial,
                ..EventState::default()
            }),
        }
    }

    /// The value a read returns, or `None` while the counter is 0 (then `waiter`, if any, is
    /// queued under the same lock).
    pub(crate) fn take(&self, waiter: Option<&Arc<Waiter>>) -> Option<u64> {
        let mut state = lock(&self.state);
        if state.counter == 0 {
            if let Some(waiter) = waiter {
                state.readers.register(waiter);
            }
            return None;
        }
        let value = if self.semaphore { 1 } else { state.counter };
        state.counter -= value;
        state.writers.wake_all();
        Some(value)
    }

    /// Adds `value`; false while that would pass [`COUNTER_MAX`] (then `waiter`, if any, is
    /// queued under the same lock).
    pub(crate) fn add(&self, value: u64, waiter: Option<&Arc<Waiter>>) -> bool {
        let mut state = lock(&self.state);
        match state.counter.checked_add(value) {
            Some(sum) if sum <= COUNTER_MAX => {
                state.counter = sum;
                if value > 0 {
                    state.readers.wake_all();
                }
                true
            }
            _ => {
                if let Some(waiter) = waiter {
                    state.writers.register(waiter);
                }
                false
            }
        }
    }

    /// (readable, writable by at least 1), for poll.
    pub(crate) fn readiness(&self) -> (bool, bool) {
        let state = lock(&self.state);
        (state.counter > 0, state.counter < COUNTER_MAX)
    }

    /// Queues `waiter` to be woken when a read (`write` false) or a write may go on.
    pub(crate) fn wait(&self, write: bool, waiter: &Arc<Waiter>) {
        let mut state = lock(&self.state);
        if write {
            state.writers.register(waiter);
        } else {
            state.readers.register(waiter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_as_linux_does() {
        let event = EventFd::new(0, false);
        assert_eq!(event.take(None), None);
        assert!(event.add(3, None) && event.add(4, None));
        assert_eq!(event.take(None), Some(7));
        assert_eq!(event.take(None), None);
        let semaphore = EventFd::new(2, true);
        assert_eq!(semaphore.take(None), Some(1));
        assert_eq!(semaphore.take(None), Some(1));
        assert_eq!(semaphore.take(None), None);
        assert!(event.add(COUNTER_MAX, None));
        assert!(!event.add(1, None), "the sum would pass the maximum");
        assert_eq!(event.readiness(), (true, false));
    }
}
