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

use std::sync::Mutex;
use std::time::{Duration, Instant};
use xeno_taskmgr_kit::lock;
use xeno_taskmgr_kit::rate::CpuBudget;
pub(crate) use xeno_taskmgr_kit::rate::CpuLimits;

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
pub struct CpuGate {
    budget: Mutex<CpuBudget>,
}

impl CpuGate {
    /// The gate for `limits`, or `None` when `msps` is 0 (no rate limit).
    pub(crate) fn new(limits: CpuLimits, window_ms: u64, now: Instant) -> Option<CpuGate> {
        Some(CpuGate {
            budget: Mutex::new(CpuBudget::new(limits, window_ms, now)?),
        })
    }

    /// Whether a thread may enter the guest now, and for how much CPU time at most.
    pub(crate) fn admit(&self, now: Instant, slice_max: Duration) -> Admission {
        let mut budget = lock(&self.budget);
        budget.refill(now);
        let tokens = budget.tokens_ns();
        if tokens > 0 {
            let allowed = Duration::from_nanos(u64::try_from(tokens).unwrap_or(0));
            return Admission::Run(allowed.min(slice_max));
        }
        Admission::Wait(budget.wait())
    }

    /// Charges CPU time a thread used.
    pub(crate) fn charge(&self, cpu_ns: u64, now: Instant) {
        lock(&self.budget).charge(cpu_ns, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debt_is_paid_back_before_running_again() {
        let start = Instant::now();
        let gate = CpuGate::new(CpuLimits::steady(100), 20, start).expect("rate set");
        let slice = Duration::from_millis(10);
        assert_eq!(
            gate.admit(start, slice),
            Admission::Run(Duration::from_millis(2))
        );
        // The slice ran 12 ms against a 2 ms bucket: 10 ms of debt, then 1 ms to bank before
        // resuming, 110 ms at 100 msps.
        gate.charge(12_000_000, start);
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
        let gate = CpuGate::new(CpuLimits::steady(150), 20, start).expect("rate set");
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
        assert!(CpuGate::new(CpuLimits::steady(0), 20, Instant::now()).is_none());
    }
}
