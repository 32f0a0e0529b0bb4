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

use crate::sync::lock;
use std::collections::VecDeque;
use std::sync::Mutex;
use std::task::Waker;
use std::time::{Duration, Instant};

const NANOS_PER_MILLI: u64 = 1_000_000;
/// How much CPU time a throttled domain waits to bank before its first waiting task is woken
/// (at most half the bucket's depth, so that a late wake-up still finds room for what accrued
/// meanwhile). Waking for every slice's worth (tens of microseconds) would cost a timer
/// wake-up, a futex and a context switch per slice; waiting for a millisecond's worth divides
/// that host overhead by ten to a hundred and changes no long-run rate.
const RESUME_TOKENS_NS: i64 = 1_000_000;
/// Longest a task is parked before checking again: a debt this large only comes from a very
/// low rate and a long host call, and re-checking hourly costs nothing.
const WAIT_MAX: Duration = Duration::from_secs(3600);
/// Rates are CPU milliseconds per real second: tokens (CPU ns) = real ns × msps / 1000.
const MSPS_SCALE: u128 = 1000;

/// A domain's CPU limits as given in `DomainLimits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuLimits {
    pub(crate) msps: u64,
    pub(crate) peak_msps: u64,
    pub(crate) burst_ms: u64,
}

#[derive(Debug)]
struct Bucket {
    msps: u64,
    capacity_ns: i64,
    tokens_ns: i64,
    last: Instant,
    /// Sub-nanosecond remainder of the last refill, so that rounding never loses time.
    carry: u128,
}

impl Bucket {
    fn full(msps: u64, capacity_ns: i64, now: Instant) -> Self {
        Bucket {
            msps,
            capacity_ns,
            tokens_ns: capacity_ns,
            last: now,
            carry: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed_ns = now.saturating_duration_since(self.last).as_nanos();
        self.last = self.last.max(now);
        let scaled = elapsed_ns
            .saturating_mul(u128::from(self.msps))
            .saturating_add(self.carry);
        let added = i64::try_from(scaled / MSPS_SCALE).unwrap_or(i64::MAX);
        self.carry = scaled % MSPS_SCALE;
        self.tokens_ns = self.tokens_ns.saturating_add(added);
        if self.tokens_ns >= self.capacity_ns {
            self.tokens_ns = self.capacity_ns;
            self.carry = 0;
        }
    }

    /// Real time until the bucket holds enough tokens to resume.
    fn wait(&self) -> Duration {
        if self.tokens_ns > 0 {
            return Duration::ZERO;
        }
        let resume_ns = RESUME_TOKENS_NS.min(self.capacity_ns / 2).max(1);
        let needed_ns = u128::from(self.tokens_ns.unsigned_abs()) + resume_ns as u128;
        let real_ns = (needed_ns * MSPS_SCALE)
            .saturating_sub(self.carry)
            .div_ceil(u128::from(self.msps.max(1)));
        Duration::from_nanos(u64::try_from(real_ns).unwrap_or(u64::MAX))
    }
}

#[derive(Debug)]
struct Waiter {
    key: u64,
    waker: Waker,
}

#[derive(Debug)]
struct GateState {
    mean: Bucket,
    peak: Option<Bucket>,
    queue: VecDeque<Waiter>,
}

impl GateState {
    fn refill(&mut self, now: Instant) {
        self.mean.refill(now);
        if let Some(peak) = &mut self.peak {
            peak.refill(now);
        }
    }

    fn has_tokens(&self) -> bool {
        self.mean.tokens_ns > 0 && self.peak.as_ref().is_none_or(|peak| peak.tokens_ns > 0)
    }

    fn wait(&self) -> Duration {
        let peak = self.peak.as_ref().map_or(Duration::ZERO, Bucket::wait);
        self.mean.wait().max(peak).min(WAIT_MAX)
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
pub(crate) struct CpuGate {
    state: Mutex<GateState>,
}

impl CpuGate {
    /// The gate for `limits`, or `None` when `msps` is 0 (no rate limit).
    pub(crate) fn new(limits: CpuLimits, window_ms: u64, now: Instant) -> Option<CpuGate> {
        if limits.msps == 0 {
            return None;
        }
        let window_ns = |msps: u64| {
            // msps ms per s over window_ms ms is msps × window_ms µs.
            let ns = u128::from(msps) * u128::from(window_ms) * 1000;
            i64::try_from(ns).unwrap_or(i64::MAX)
        };
        let burst = limits.peak_msps > limits.msps && limits.burst_ms > 0;
        let (mean_capacity, peak) = if burst {
            let credit =
                i64::try_from(limits.burst_ms.saturating_mul(NANOS_PER_MILLI)).unwrap_or(i64::MAX);
            let peak = Bucket::full(limits.peak_msps, window_ns(limits.peak_msps), now);
            (credit.max(window_ns(limits.msps)), Some(peak))
        } else {
            (window_ns(limits.msps), None)
        };
        Some(CpuGate {
            state: Mutex::new(GateState {
                mean: Bucket::full(limits.msps, mean_capacity, now),
                peak,
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
        state.refill(now);
        let cost = i64::try_from(cpu_ns).unwrap_or(i64::MAX);
        state.mean.tokens_ns = state.mean.tokens_ns.saturating_sub(cost);
        if let Some(peak) = &mut state.peak {
            peak.tokens_ns = peak.tokens_ns.saturating_sub(cost);
        }
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

    fn limits(msps: u64) -> CpuLimits {
        CpuLimits {
            msps,
            peak_msps: 0,
            burst_ms: 0,
        }
    }

    #[test]
    fn bucket_refills_at_the_rate_without_drift() {
        let start = Instant::now();
        let mut bucket = Bucket::full(150, 3 * NANOS_PER_MILLI as i64, start);
        bucket.tokens_ns = 0;
        // 10,000 refills of 1.0003 ms each: rounding must not lose time.
        let mut now = start;
        let mut total = 0i64;
        for _ in 0..10_000 {
            now += Duration::from_nanos(1_000_300);
            bucket.refill(now);
            total += bucket.tokens_ns;
            bucket.tokens_ns = 0;
        }
        let expected = (10_000u128 * 1_000_300 * 150 / 1000) as i64;
        assert!((total - expected).abs() <= 1, "{total} vs {expected}");
    }

    #[test]
    fn debt_is_paid_back_before_running_again() {
        let start = Instant::now();
        let gate = CpuGate::new(limits(100), 20, start).expect("rate set");
        let waker = Waker::noop();
        assert_eq!(gate.admit(1, waker, start), Admission::Run);
        // The slice ran 12 ms against a 2 ms bucket: 10 ms of debt, then 1 ms to bank before
        // resuming, 110 ms at 100 msps.
        gate.charge(12 * NANOS_PER_MILLI, start);
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
        assert!(CpuGate::new(limits(0), 20, Instant::now()).is_none());
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
