//! A process's CPU time and the interval timers counted in it: `ITIMER_VIRTUAL` (SIGVTALRM)
//! and `ITIMER_PROF` (SIGPROF).
//!
//! The CPU time is its threads' together, guest and VMM alike, as each thread's run loop
//! charges it (after every slice, wait or exit to the VMM; a slice is at most
//! `cpu_slice_us`, and a thread is kicked out of the guest sooner when a timer of its
//! process is due, see `hypervisor/run.rs`). The VMM serves a call in the thread that made
//! it, on its CPU clock, so there is no separate user time here: both timers count the same
//! time, which is what `ITIMER_PROF` counts on Linux and an upper bound of what
//! `ITIMER_VIRTUAL` counts. As on Linux, the timers survive `execve` and a child of `fork`
//! starts with neither (each process has its own `ProcessShared`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use xeno_taskmgr_kit::lock;

/// `ITIMER_VIRTUAL`.
pub(crate) const ITIMER_VIRTUAL: u64 = 1;
/// `ITIMER_PROF`.
pub(crate) const ITIMER_PROF: u64 = 2;
const SIGVTALRM: u64 = 26;
const SIGPROF: u64 = 27;
/// Shortest interval a periodic CPU timer may have (as for the wall-clock timers): a
/// shorter one would have every charge send a signal.
const INTERVAL_MIN_NS: u64 = 100_000;

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    /// CPU time (ns) at which it expires next.
    deadline: Option<u64>,
    interval: u64,
}

/// A process's CPU time and CPU-time timers.
#[derive(Debug)]
pub(crate) struct CpuTimers {
    /// Nanoseconds of CPU its threads have been charged.
    used: AtomicU64,
    /// The earliest deadline of either timer (`u64::MAX`: none), for a check without the
    /// lock at every charge.
    next: AtomicU64,
    /// `ITIMER_VIRTUAL`, `ITIMER_PROF`.
    slots: Mutex<[Slot; 2]>,
}

impl Default for CpuTimers {
    fn default() -> CpuTimers {
        CpuTimers {
            used: AtomicU64::new(0),
            next: AtomicU64::new(u64::MAX),
            slots: Mutex::new([Slot::default(); 2]),
        }
    }
}

fn index(which: u64) -> Option<usize> {
    match which {
        ITIMER_VIRTUAL => Some(0),
        ITIMER_PROF => Some(1),
        _ => None,
    }
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

impl CpuTimers {
    /// Adds `ns` of CPU a thread used; the signals of the timers that expired, to send.
    pub(crate) fn charge(&self, ns: u64) -> Vec<u64> {
        let used = self.used.fetch_add(ns, Ordering::AcqRel).saturating_add(ns);
        if used < self.next.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut slots = lock(&self.slots);
        let mut signals = Vec::new();
        for (slot, signal) in slots.iter_mut().zip([SIGVTALRM, SIGPROF]) {
            let Some(deadline) = slot.deadline else {
                continue;
            };
            if used < deadline {
                continue;
            }
            signals.push(signal);
            slot.deadline = (slot.interval > 0).then(|| {
                // Periods missed within one charge are one signal, as Linux merges them.
                let behind = (used - deadline) / slot.interval + 1;
                deadline.saturating_add(behind.saturating_mul(slot.interval))
            });
        }
        self.update_next(&slots);
        signals
    }

    fn update_next(&self, slots: &[Slot; 2]) {
        let next = slots
            .iter()
            .filter_map(|slot| slot.deadline)
            .min()
            .unwrap_or(u64::MAX);
        self.next.store(next, Ordering::Release);
    }

    /// CPU time left until a timer expires (`None`: none is armed), for the run loop to
    /// kick a thread out of the guest in time.
    pub(crate) fn left(&self) -> Option<Duration> {
        let next = self.next.load(Ordering::Acquire);
        (next != u64::MAX)
            .then(|| Duration::from_nanos(next.saturating_sub(self.used.load(Ordering::Acquire))))
    }

    /// `setitimer` of `which` (ITIMER_VIRTUAL or ITIMER_PROF): arms it to expire after `value`
    /// of CPU time (disarms it when zero), then every `interval`. What was left of the
    /// previous setting and its interval; `None` for another `which`.
    pub(crate) fn set(
        &self,
        which: u64,
        value: Duration,
        interval: Duration,
    ) -> Option<(Duration, Duration)> {
        let at = index(which)?;
        let mut slots = lock(&self.slots);
        let used = self.used.load(Ordering::Acquire);
        let old = Self::read(&slots[at], used);
        slots[at] = Slot {
            deadline: (!value.is_zero()).then(|| used.saturating_add(nanos(value))),
            interval: if interval.is_zero() {
                0
            } else {
                nanos(interval).max(INTERVAL_MIN_NS)
            },
        };
        self.update_next(&slots);
        Some(old)
    }

    /// `getitimer` of `which`: (time left, interval).
    pub(crate) fn get(&self, which: u64) -> Option<(Duration, Duration)> {
        let at = index(which)?;
        let slots = lock(&self.slots);
        Some(Self::read(&slots[at], self.used.load(Ordering::Acquire)))
    }

    fn read(slot: &Slot, used: u64) -> (Duration, Duration) {
        let left = slot.deadline.map_or(0, |at| at.saturating_sub(used).max(1));
        (
            Duration::from_nanos(left),
            Duration::from_nanos(slot.interval),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_expire_in_cpu_time_and_repeat() {
        let timers = CpuTimers::default();
        assert_eq!(timers.left(), None);
        let previous = timers.set(
            ITIMER_PROF,
            Duration::from_millis(10),
            Duration::from_millis(5),
        );
        assert_eq!(previous, Some((Duration::ZERO, Duration::ZERO)));
        assert_eq!(timers.left(), Some(Duration::from_millis(10)));
        assert!(timers.charge(9_000_000).is_empty());
        assert_eq!(timers.charge(1_000_000), vec![SIGPROF]);
        // Three periods passed in one charge: one signal, the next deadline past them.
        assert_eq!(timers.charge(16_000_000), vec![SIGPROF]);
        assert_eq!(timers.left(), Some(Duration::from_millis(4)));
        let (left, interval) = timers.get(ITIMER_PROF).expect("prof");
        assert_eq!(
            (left, interval),
            (Duration::from_millis(4), Duration::from_millis(5))
        );
        timers.set(ITIMER_PROF, Duration::ZERO, Duration::ZERO);
        assert_eq!(timers.left(), None);
        assert!(timers.charge(100_000_000).is_empty());
        assert_eq!(timers.set(0, Duration::ZERO, Duration::ZERO), None);
    }

    #[test]
    fn a_one_shot_timer_fires_once() {
        let timers = CpuTimers::default();
        timers.set(ITIMER_VIRTUAL, Duration::from_millis(1), Duration::ZERO);
        assert_eq!(timers.charge(2_000_000), vec![SIGVTALRM]);
        assert!(timers.charge(50_000_000).is_empty());
        assert_eq!(
            timers.get(ITIMER_VIRTUAL),
            Some((Duration::ZERO, Duration::ZERO))
        );
    }
}
