//! A process's CPU time and the timers counted in it: `ITIMER_VIRTUAL` (SIGVTALRM),
//! `ITIMER_PROF` (SIGPROF), and POSIX timers on its CPU clock (`CLOCK_PROCESS_CPUTIME_ID`).
//!
//! The CPU time is its threads' together, guest and VMM alike, as each thread's run loop
//! charges it (after every slice, wait or exit to the VMM; a slice is at most
//! `cpu_slice_us`, and a thread is kicked out of the guest sooner when a timer of its
//! process is due, see `hypervisor/run.rs`). The VMM serves a call in the thread that made
//! it, on its CPU clock, so there is no separate user time here: both timers count the same
//! time, which is what `ITIMER_PROF` counts on Linux and an upper bound of what
//! `ITIMER_VIRTUAL` counts. As on Linux, the interval timers survive `execve` (POSIX timers
//! do not) and a child of `fork` starts with none (each process has its own
//! `ProcessShared`).

use std::collections::BTreeMap;
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
/// `si_code` of a signal the kernel sends (an interval timer's).
const SI_KERNEL: i32 = 0x80;
/// `si_code` of a POSIX timer's signal.
const SI_TIMER: i32 = -2;
/// Shortest interval a periodic CPU timer may have (as for the wall-clock timers): a
/// shorter one would have every charge send a signal.
const INTERVAL_MIN_NS: u64 = 100_000;

#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    /// CPU time (ns) at which it expires next.
    deadline: Option<u64>,
    interval: u64,
}

impl Slot {
    /// Expires it if `used` reached its deadline, rearming a periodic one past `used`: how
    /// many periods passed (0: it did not expire).
    fn expire(&mut self, used: u64) -> u64 {
        let Some(deadline) = self.deadline.filter(|deadline| used >= *deadline) else {
            return 0;
        };
        if self.interval == 0 {
            self.deadline = None;
            return 1;
        }
        let periods = (used - deadline) / self.interval + 1;
        self.deadline = Some(deadline.saturating_add(periods.saturating_mul(self.interval)));
        periods
    }

    fn set(
        &mut self,
        used: u64,
        value: Option<Duration>,
        interval: Duration,
    ) -> (Duration, Duration) {
        let old = self.read(used);
        *self = Slot {
            deadline: value.map(|value| used.saturating_add(nanos(value))),
            interval: if interval.is_zero() {
                0
            } else {
                nanos(interval).max(INTERVAL_MIN_NS)
            },
        };
        old
    }

    fn read(&self, used: u64) -> (Duration, Duration) {
        let left = self.deadline.map_or(0, |at| at.saturating_sub(used).max(1));
        (
            Duration::from_nanos(left),
            Duration::from_nanos(self.interval),
        )
    }
}

/// A POSIX timer on the process's CPU clock.
#[derive(Debug, Default, Clone, Copy)]
struct PosixTimer {
    slot: Slot,
    /// Its signal (0: SIGEV_NONE, only read).
    signal: u64,
    /// Expirations merged into the last signal (`timer_getoverrun`).
    overrun: u64,
}

#[derive(Debug, Default)]
struct Timers {
    /// `ITIMER_VIRTUAL`, `ITIMER_PROF`.
    itimers: [Slot; 2],
    /// POSIX timers on the CPU clock, by timer id (at most
    /// [`POSIX_TIMERS_MAX`](crate::kernel::timers::POSIX_TIMERS_MAX), with the others).
    posix: BTreeMap<i32, PosixTimer>,
}

/// A process's CPU time and CPU-time timers.
#[derive(Debug)]
pub(crate) struct CpuTimers {
    /// Nanoseconds of CPU its threads have been charged.
    used: AtomicU64,
    /// Nanoseconds of CPU of its children that it reaped (theirs and their reaped
    /// children's), for `RUSAGE_CHILDREN` and `times`.
    children: AtomicU64,
    /// The earliest deadline of any timer (`u64::MAX`: none), for a check without the lock
    /// at every charge.
    next: AtomicU64,
    timers: Mutex<Timers>,
}

impl Default for CpuTimers {
    fn default() -> CpuTimers {
        CpuTimers {
            used: AtomicU64::new(0),
            children: AtomicU64::new(0),
            next: AtomicU64::new(u64::MAX),
            timers: Mutex::new(Timers::default()),
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
    /// Adds `ns` of CPU a thread used; the signals of the timers that expired, to send, with
    /// their `si_code`.
    pub(crate) fn charge(&self, ns: u64) -> Vec<(u64, i32)> {
        let used = self.used.fetch_add(ns, Ordering::AcqRel).saturating_add(ns);
        if used < self.next.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut timers = lock(&self.timers);
        let mut signals = Vec::new();
        for (slot, signal) in timers.itimers.iter_mut().zip([SIGVTALRM, SIGPROF]) {
            // Periods missed within one charge are one signal, as Linux merges them.
            if slot.expire(used) > 0 {
                signals.push((signal, SI_KERNEL));
            }
        }
        for timer in timers.posix.values_mut() {
            let periods = timer.slot.expire(used);
            if periods > 0 && timer.signal != 0 {
                timer.overrun = periods - 1;
                signals.push((timer.signal, SI_TIMER));
            }
        }
        self.update_next(&timers);
        signals
    }

    fn update_next(&self, timers: &Timers) {
        let next = timers
            .itimers
            .iter()
            .chain(timers.posix.values().map(|timer| &timer.slot))
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

    /// CPU time charged so far, ns.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }

    /// CPU time of the children it reaped, ns.
    pub(crate) fn children(&self) -> u64 {
        self.children.load(Ordering::Acquire)
    }

    /// Its own CPU time and its reaped children's: what its parent's `wait` reports and
    /// adds to its own children's time once the process has ended.
    pub(crate) fn total(&self) -> u64 {
        self.used().saturating_add(self.children())
    }

    /// A child that used `ns` (with its own reaped children) was reaped.
    pub(crate) fn add_children(&self, ns: u64) {
        self.children.fetch_add(ns, Ordering::AcqRel);
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
        let mut timers = lock(&self.timers);
        let old =
            timers.itimers[at].set(self.used(), (!value.is_zero()).then_some(value), interval);
        self.update_next(&timers);
        Some(old)
    }

    /// `getitimer` of `which`: (time left, interval).
    pub(crate) fn get(&self, which: u64) -> Option<(Duration, Duration)> {
        let at = index(which)?;
        Some(lock(&self.timers).itimers[at].read(self.used()))
    }

    /// A new POSIX timer `id`, disarmed, sending `signal` (0: none) when it expires.
    pub(crate) fn posix_create(&self, id: i32, signal: u64) {
        lock(&self.timers).posix.insert(
            id,
            PosixTimer {
                signal,
                ..PosixTimer::default()
            },
        );
    }

    /// `timer_settime` of POSIX timer `id`: what was left of it and its interval.
    pub(crate) fn posix_set(
        &self,
        id: i32,
        value: Option<Duration>,
        interval: Duration,
    ) -> Option<(Duration, Duration)> {
        let used = self.used();
        let mut timers = lock(&self.timers);
        let timer = timers.posix.get_mut(&id)?;
        timer.overrun = 0;
        let old = timer.slot.set(used, value, interval);
        self.update_next(&timers);
        Some(old)
    }

    /// `timer_gettime` of POSIX timer `id`.
    pub(crate) fn posix_get(&self, id: i32) -> Option<(Duration, Duration)> {
        let used = self.used();
        lock(&self.timers)
            .posix
            .get(&id)
            .map(|timer| timer.slot.read(used))
    }

    /// `timer_getoverrun` of POSIX timer `id`.
    pub(crate) fn posix_overrun(&self, id: i32) -> Option<u64> {
        lock(&self.timers).posix.get(&id).map(|timer| timer.overrun)
    }

    /// Deletes POSIX timer `id`.
    pub(crate) fn posix_delete(&self, id: i32) {
        let mut timers = lock(&self.timers);
        timers.posix.remove(&id);
        self.update_next(&timers);
    }

    /// Deletes every POSIX timer (`execve`).
    pub(crate) fn posix_clear(&self) {
        let mut timers = lock(&self.timers);
        timers.posix.clear();
        self.update_next(&timers);
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
        assert_eq!(timers.charge(1_000_000), vec![(SIGPROF, SI_KERNEL)]);
        // Three periods passed in one charge: one signal, the next deadline past them.
        assert_eq!(timers.charge(16_000_000), vec![(SIGPROF, SI_KERNEL)]);
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
        assert_eq!(timers.charge(2_000_000), vec![(SIGVTALRM, SI_KERNEL)]);
        assert!(timers.charge(50_000_000).is_empty());
        assert_eq!(
            timers.get(ITIMER_VIRTUAL),
            Some((Duration::ZERO, Duration::ZERO))
        );
    }

    #[test]
    fn posix_timers_count_overruns_and_go_with_exec() {
        let timers = CpuTimers::default();
        timers.posix_create(3, 10);
        timers.posix_create(4, 0);
        let step = Duration::from_millis(1);
        assert_eq!(
            timers.posix_set(3, Some(step), step),
            Some((Duration::ZERO, Duration::ZERO))
        );
        timers.posix_set(4, Some(step), Duration::ZERO);
        // Three periods in one charge: one signal, two overruns; SIGEV_NONE sends none.
        assert_eq!(timers.charge(3_000_000), vec![(10, SI_TIMER)]);
        assert_eq!(timers.posix_overrun(3), Some(2));
        assert_eq!(timers.posix_get(4), Some((Duration::ZERO, Duration::ZERO)));
        assert_eq!(timers.posix_set(9, Some(step), step), None);
        timers.posix_clear();
        assert_eq!(timers.left(), None);
        assert_eq!(timers.posix_get(3), None);
    }
}
