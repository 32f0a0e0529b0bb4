//! A domain's CPU rate (`cpu_msps`): a token bucket of CPU nanoseconds shared by the domain's
//! tasks, and a FIFO queue of the tasks waiting for it.
//!
//! Tokens accrue at `cpu_msps` CPU milliseconds per real second. A task may start a slice
//! (one poll, which runs until its next fuel yield) while the bucket holds tokens; afterwards
//! the CPU time the slice really took is charged, so the bucket may go negative and the debt is
//! paid back before anyone runs again. Because every nanosecond is charged, however slices and
//! timer wake-ups fall, the long-run rate is exact; the bucket depth only bounds how much an
//! idle domain can bank.
//!
//! Burst: when `cpu_peak_msps > cpu_msps` and `cpu_burst_ms > 0`, the mean bucket is
//! `cpu_burst_ms` deep, and a second bucket filling at `cpu_peak_msps` caps the rate at which
//! that credit is spent. A domain idle long enough to fill its credit can then run at the peak
//! rate for `cpu_burst_ms / (1 - cpu_msps / cpu_peak_msps)` of CPU time before falling back to
//! the mean. Without burst, the bucket holds `cpu_bucket_window_ms` worth of the rate.
//!
//! Waiting tasks queue in FIFO order and only the front one holds a timer, so a throttled
//! domain with a thousand tasks wakes one task per refill rather than a thousand, and its tasks
//! take turns: a task that ran a slice while others wait goes to the back.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::Waker;
use std::time::{Duration, Instant};
use xeno_taskmgr_kit::lock;
use xeno_taskmgr_kit::rate::CpuBudget;
pub(crate) use xeno_taskmgr_kit::rate::CpuLimits;

/// Longest a task is parked before checking again: a debt this large only comes from a very
/// low rate and a long host call, and re-checking hourly costs nothing.
const WAIT_MAX: Duration = Duration::from_secs(3600);

#[derive(Debug)]
struct Waiter {
    key: u64,
    waker: Waker,
}

#[derive(Debug)]
struct GateState {
    budget: CpuBudget,
    queue: VecDeque<Waiter>,
}

impl GateState {
    fn refill(&mut self, now: Instant) {
        self.budget.refill(now);
    }

    fn has_tokens(&self) -> bool {
        self.budget.tokens_ns() > 0
    }

    fn wait(&self) -> Duration {
        self.budget.wait().min(WAIT_MAX)
    }

    fn queue_position(&self, key: u64) -> Option<usize> {
        self.queue.iter().position(|waiter| waiter.key == key)
    }

    fn front_waker(&self) -> Option<Waker> {
        self.queue.front().map(|waiter| waiter.waker.clone())
    }
}

/// What a task may do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Run one slice, then report its CPU time with [`CpuGate::charge`].
    Run,
    /// The task is first in line: sleep until this instant, then ask again.
    WaitUntil(Instant),
    /// The task is in line behind others; it will be woken when it is first.
    Queued,
}

/// The CPU budget of one domain.
#[derive(Debug)]
pub struct CpuGate {
    state: Mutex<GateState>,
}

impl CpuGate {
    /// The gate for `limits`, or `None` when `msps` is 0 (no rate limit).
    pub(crate) fn new(limits: CpuLimits, window_ms: u64, now: Instant) -> Option<CpuGate> {
        Some(CpuGate {
            state: Mutex::new(GateState {
                budget: CpuBudget::new(limits, window_ms, now)?,
                queue: VecDeque::new(),
            }),
        })
    }

    /// Whether task `key` may run a slice now. Queued tasks are woken through `waker`.
    pub(crate) fn admit(&self, key: u64, waker: &Waker, now: Instant) -> Admission {
        let mut state = lock(&self.state);
        state.refill(now);
        match state.queue_position(key) {
            None if state.queue.is_empty() => {
                if state.has_tokens() {
                    return Admission::Run;
                }
                state.queue.push_back(Waiter {
                    key,
                    waker: waker.clone(),
                });
                Admission::WaitUntil(now + state.wait())
            }
            Some(0) => {
                if state.has_tokens() {
                    state.queue.pop_front();
                    // Budget left: let the next in line run too (domains may span cores).
                    let next = state.front_waker();
                    drop(state);
                    if let Some(next) = next {
                        next.wake();
                    }
                    return Admission::Run;
                }
                if let Some(front) = state.queue.front_mut() {
                    front.waker.clone_from(waker);
                }
                Admission::WaitUntil(now + state.wait())
            }
            Some(position) => {
                if let Some(waiter) = state.queue.get_mut(position) {
                    waiter.waker.clone_from(waker);
                }
                Admission::Queued
            }
            None => {
                // Others are waiting: take a turn at the back rather than run ahead of them.
                state.queue.push_back(Waiter {
                    key,
                    waker: waker.clone(),
                });
                Admission::Queued
            }
        }
    }

    /// Charges a slice's CPU time and lets the first waiter re-check the budget.
    pub(crate) fn charge(&self, cpu_ns: u64, now: Instant) {
        let mut state = lock(&self.state);
        state.budget.charge(cpu_ns, now);
        let front = state.front_waker();
        drop(state);
        if let Some(front) = front {
            front.wake();
        }
    }

    /// Removes task `key` from the line (it ended or is being stopped).
    pub(crate) fn leave(&self, key: u64) {
        let mut state = lock(&self.state);
        let Some(position) = state.queue_position(key) else {
            return;
        };
        state.queue.remove(position);
        let front = if position == 0 {
            state.front_waker()
        } else {
            None
        };
        drop(state);
        if let Some(front) = front {
            front.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_paid_back_before_running_again() {
        let start = Instant::now();
        let gate = CpuGate::new(CpuLimits::steady(100), 20, start).expect("rate set");
        let waker = Waker::noop();
        assert_eq!(gate.admit(1, waker, start), Admission::Run);
        // The slice ran 12 ms against a 2 ms bucket: 10 ms of debt, then 1 ms to bank before
        // resuming, 110 ms at 100 msps.
        gate.charge(12_000_000, start);
        match gate.admit(1, waker, start) {
            Admission::WaitUntil(at) => {
                let wait = at - start;
                assert!(wait >= Duration::from_millis(110), "{wait:?}");
                assert!(wait <= Duration::from_millis(111), "{wait:?}");
            }
            other => panic!("expected to wait, got {other:?}"),
        }
        assert_eq!(
            gate.admit(2, waker, start),
            Admission::Queued,
            "a second task lines up behind the first"
        );
        let later = start + Duration::from_millis(111);
        assert_eq!(gate.admit(2, waker, later), Admission::Queued);
        assert_eq!(gate.admit(1, waker, later), Admission::Run);
        assert_eq!(gate.admit(2, waker, later), Admission::Run);
    }

    #[test]
    fn no_rate_means_no_gate() {
        assert!(CpuGate::new(CpuLimits::steady(0), 20, Instant::now()).is_none());
    }

    #[test]
    fn burst_spends_credit_at_the_peak_rate() {
        let start = Instant::now();
        let gate = CpuGate::new(
            CpuLimits {
                msps: 100,
                peak_msps: 500,
                burst_ms: 200,
            },
            20,
            start,
        )
        .expect("rate set");
        // Simulate a CPU-bound task in 100 µs slices for 2 s of real time.
        let waker = Waker::noop();
        let slice = Duration::from_micros(100);
        let mut now = start;
        let mut used = Duration::ZERO;
        let mut used_first_half_second = Duration::ZERO;
        while now < start + Duration::from_secs(2) {
            match gate.admit(1, waker, now) {
                Admission::Run => {
                    now += slice;
                    used += slice;
                    if now <= start + Duration::from_millis(500) {
                        used_first_half_second += slice;
                    }
                    gate.charge(slice.as_nanos() as u64, now);
                }
                Admission::WaitUntil(at) => now = at,
                Admission::Queued => unreachable!("one task is never queued behind another"),
            }
        }
        // Peak 500 msps while 200 ms of credit lasts (0.5 s, 250 ms used), then 100 msps.
        let ms = used.as_millis() as i64;
        assert!((ms - 400).abs() <= 15, "used {ms} ms in 2 s");
        let first = used_first_half_second.as_millis() as i64;
        assert!(
            (first - 250).abs() <= 15,
            "used {first} ms in the first 0.5 s"
        );
    }
}
