//! A domain's CPU rate (`cpu_msps`): a token bucket of CPU nanoseconds shared by the vCPU
//! threads of the domain's tasks, enforced by the VMM itself, without cgroups.
//!
//! Tokens accrue at `cpu_msps` CPU milliseconds per real second. A vCPU thread may enter the
//! guest while the bucket holds tokens, with a CPU-time timer armed for what the bucket holds
//! (at most one slice), so the kernel kicks it out of KVM_RUN when that is spent; afterwards
//! the CPU time it really used (its thread CPU clock) is charged, so the bucket may go
//! negative and the debt is paid back before it runs again. Because every nanosecond is
//! charged, however slices, timer ticks and wake-ups fall, the long-run rate is exact; the
//! bucket depth only bounds how much an idle domain can bank. A thread without budget sleeps
//! (in `sigtimedwait`, so a stop request still wakes it) until the bucket has banked
//! `RESUME_TOKENS_NS`.
//!
//! Burst: when `cpu_peak_msps > cpu_msps` and `cpu_burst_ms > 0`, the mean bucket is
//! `cpu_burst_ms` deep, and a second bucket filling at `cpu_peak_msps` caps the rate at which
//! that credit is spent (the same scheme as the Wasm manager's).

use crate::sync::lock;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NANOS_PER_MILLI: u64 = 1_000_000;
/// How much CPU time a throttled domain waits to bank before a waiting thread resumes (at most
/// half the bucket's depth): waking for every few microseconds' worth would cost a timer,
/// a context switch and a VM entry each, for no change in the long-run rate.
const RESUME_TOKENS_NS: i64 = 1_000_000;
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
struct GateState {
    mean: Bucket,
    peak: Option<Bucket>,
}

impl GateState {
    fn refill(&mut self, now: Instant) {
        self.mean.refill(now);
        if let Some(peak) = &mut self.peak {
            peak.refill(now);
        }
    }

    fn tokens_ns(&self) -> i64 {
        let peak = self.peak.as_ref().map_or(i64::MAX, |peak| peak.tokens_ns);
        self.mean.tokens_ns.min(peak)
    }

    fn wait(&self) -> Duration {
        let peak = self.peak.as_ref().map_or(Duration::ZERO, Bucket::wait);
        self.mean.wait().max(peak)
    }
}

/// What a vCPU thread may do now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Enter the guest for at most this much CPU time, then charge what was used.
    Run(Duration),
    /// Sleep this long, then ask again.
    Wait(Duration),
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
            }),
        })
    }

    /// Whether a thread may enter the guest now, and for how much CPU time at most.
    pub(crate) fn admit(&self, now: Instant, slice_max: Duration) -> Admission {
        let mut state = lock(&self.state);
        state.refill(now);
        let tokens = state.tokens_ns();
        if tokens > 0 {
            let budget = Duration::from_nanos(u64::try_from(tokens).unwrap_or(0));
            return Admission::Run(budget.min(slice_max));
        }
        Admission::Wait(state.wait())
    }

    /// Charges CPU time a thread used.
    pub(crate) fn charge(&self, cpu_ns: u64, now: Instant) {
        let mut state = lock(&self.state);
        state.refill(now);
        let cost = i64::try_from(cpu_ns).unwrap_or(i64::MAX);
        state.mean.tokens_ns = state.mean.tokens_ns.saturating_sub(cost);
        if let Some(peak) = &mut state.peak {
            peak.tokens_ns = peak.tokens_ns.saturating_sub(cost);
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
    fn debt_is_paid_back_before_running_again() {
        let start = Instant::now();
        let gate = CpuGate::new(limits(100), 20, start).expect("rate set");
        let slice = Duration::from_millis(10);
        assert_eq!(
            gate.admit(start, slice),
            Admission::Run(Duration::from_millis(2))
        );
        // The slice ran 12 ms against a 2 ms bucket: 10 ms of debt, then 1 ms to bank before
        // resuming, 110 ms at 100 msps.
        gate.charge(12 * NANOS_PER_MILLI, start);
        match gate.admit(start, slice) {
            Admission::Wait(wait) => {
                assert!(wait >= Duration::from_millis(110), "{wait:?}");
                assert!(wait <= Duration::from_millis(111), "{wait:?}");
            }
            other => panic!("expected to wait, got {other:?}"),
        }
        let later = start + Duration::from_millis(111);
        assert!(matches!(gate.admit(later, slice), Admission::Run(_)));
    }

    #[test]
    fn simulated_spinner_gets_exactly_its_rate() {
        let start = Instant::now();
        let gate = CpuGate::new(limits(150), 20, start).expect("rate set");
        let mut now = start;
        let mut used = Duration::ZERO;
        // Slices overshoot their budget by up to a 4 ms tick, as CPU timers do.
        while now < start + Duration::from_secs(10) {
            match gate.admit(now, Duration::from_millis(10)) {
                Admission::Run(budget) => {
                    let ran = budget + Duration::from_millis(3);
                    now += ran;
                    used += ran;
                    gate.charge(ran.as_nanos() as u64, now);
                }
                Admission::Wait(wait) => now += wait,
            }
        }
        let ms = used.as_millis() as i64;
        assert!((ms - 1500).abs() <= 30, "used {ms} ms in 10 s");
    }

    #[test]
    fn no_rate_means_no_gate() {
        assert!(CpuGate::new(limits(0), 20, Instant::now()).is_none());
    }
}
