//! A domain's CPU rate (`cpu_msps`, with the optional burst of `cpu_peak_msps` and
//! `cpu_burst_ms`) as a token bucket of CPU nanoseconds, for task managers that enforce it
//! themselves, without cgroups.
//!
//! Tokens accrue at `cpu_msps` CPU milliseconds per real second. A task manager lets a domain
//! run while [`CpuBudget::tokens_ns`] is positive and afterwards [`CpuBudget::charge`]s the CPU
//! time really used, so the budget may go negative and the debt is paid back before the domain
//! runs again. Because every nanosecond is charged, however slices and wake-ups fall, the
//! long-run rate is exact; the bucket's depth (`window_ms` of the rate) only bounds how much an
//! idle domain can bank.
//!
//! Burst: when `cpu_peak_msps > cpu_msps` and `cpu_burst_ms > 0`, the mean bucket is
//! `cpu_burst_ms` deep, and a second bucket filling at `cpu_peak_msps` caps the rate at which
//! that credit is spent. A domain idle long enough to fill its credit can then run at the peak
//! rate for `cpu_burst_ms / (1 - cpu_msps / cpu_peak_msps)` of CPU time before falling back to
//! the mean.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use xeno_taskmgr_kit::rate::{CpuBudget, CpuLimits};
//! let start = Instant::now();
//! let limits = CpuLimits { msps: 100, peak_msps: 0, burst_ms: 0 };
//! let mut budget = CpuBudget::new(limits, 20, start).expect("a rate is set");
//! assert_eq!(budget.tokens_ns(), 2_000_000); // 20 ms of 100 ms/s
//! budget.charge(12_000_000, start); // a slice ran 12 ms: 10 ms of debt
//! // The debt, and 1 ms to bank before resuming, take 110 ms at 100 ms/s.
//! assert_eq!(budget.wait(), Duration::from_millis(110));
//! ```

use std::time::{Duration, Instant};

const NANOS_PER_MILLI: u64 = 1_000_000;
/// How much CPU time a throttled domain waits to bank before it resumes (at most half the
/// bucket's depth, so that a late wake-up still finds room for what accrued meanwhile). Waking
/// for every slice's worth (tens of microseconds) would cost a timer, a context switch (and for
/// a VM an entry) each; a millisecond's worth divides that overhead by ten to a hundred and
/// changes no long-run rate.
const RESUME_TOKENS_NS: i64 = 1_000_000;
/// Rates are CPU milliseconds per real second: tokens (CPU ns) = real ns × msps / 1000.
const MSPS_SCALE: u128 = 1000;

/// A domain's CPU limits as given in `DomainLimits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuLimits {
    /// The mean rate, CPU ms per real second; 0 means no limit.
    pub msps: u64,
    /// The peak rate while burst credit lasts (0 or not above `msps`: no burst).
    pub peak_msps: u64,
    /// Burst credit, CPU ms.
    pub burst_ms: u64,
}

impl CpuLimits {
    /// A steady rate of `msps` with no burst.
    pub fn steady(msps: u64) -> CpuLimits {
        CpuLimits {
            msps,
            peak_msps: 0,
            burst_ms: 0,
        }
    }
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

    fn charge(&mut self, cost_ns: i64) {
        self.tokens_ns = self.tokens_ns.saturating_sub(cost_ns);
    }
}

/// One domain's CPU budget: the mean bucket and, with burst, the peak bucket. Not
/// synchronised: a task manager keeps it under its own lock with whatever else it schedules.
#[derive(Debug)]
pub struct CpuBudget {
    mean: Bucket,
    peak: Option<Bucket>,
}

impl CpuBudget {
    /// The budget for `limits`, full, with a mean bucket `window_ms` of the rate deep (or the
    /// burst credit, if larger); `None` when `msps` is 0 (no rate limit).
    pub fn new(limits: CpuLimits, window_ms: u64, now: Instant) -> Option<CpuBudget> {
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
        Some(CpuBudget {
            mean: Bucket::full(limits.msps, mean_capacity, now),
            peak,
        })
    }

    /// Adds what accrued up to `now`.
    pub fn refill(&mut self, now: Instant) {
        self.mean.refill(now);
        if let Some(peak) = &mut self.peak {
            peak.refill(now);
        }
    }

    /// CPU time the domain may use now (as last refilled); not positive means wait.
    pub fn tokens_ns(&self) -> i64 {
        let peak = self.peak.as_ref().map_or(i64::MAX, |peak| peak.tokens_ns);
        self.mean.tokens_ns.min(peak)
    }

    /// Real time until the domain should resume (zero if it may run now).
    pub fn wait(&self) -> Duration {
        let peak = self.peak.as_ref().map_or(Duration::ZERO, Bucket::wait);
        self.mean.wait().max(peak)
    }

    /// Charges CPU time the domain used, after refilling up to `now`.
    pub fn charge(&mut self, cpu_ns: u64, now: Instant) {
        self.refill(now);
        let cost = i64::try_from(cpu_ns).unwrap_or(i64::MAX);
        self.mean.charge(cost);
        if let Some(peak) = &mut self.peak {
            peak.charge(cost);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refills_never_lose_time_to_rounding() {
        let start = Instant::now();
        let mut bucket = Bucket::full(150, 3 * NANOS_PER_MILLI as i64, start);
        bucket.tokens_ns = 0;
        let mut total = 0i64;
        let mut now = start;
        // 1 ms steps at 150 msps: 0.15 ms each, exactly.
        for _ in 0..1000 {
            now += Duration::from_nanos(1_000_001);
            bucket.refill(now);
            total += bucket.tokens_ns;
            bucket.tokens_ns = 0;
        }
        let expected = (1000u128 * 1_000_001 * 150 / 1000) as i64;
        assert!((total - expected).abs() <= 1, "{total} vs {expected}");
    }

    #[test]
    fn burst_credit_runs_at_the_peak_then_falls_back() {
        let start = Instant::now();
        let limits = CpuLimits {
            msps: 100,
            peak_msps: 500,
            burst_ms: 200,
        };
        let mut budget = CpuBudget::new(limits, 20, start).expect("rate");
        // The peak bucket (20 ms of 500 ms/s = 10 ms) caps each spend.
        assert_eq!(budget.tokens_ns(), 10 * NANOS_PER_MILLI as i64);
        budget.charge(10 * NANOS_PER_MILLI, start);
        budget.refill(start + Duration::from_millis(20));
        // 20 ms later the peak bucket has 10 ms again; the mean still has credit.
        assert_eq!(budget.tokens_ns(), 10 * NANOS_PER_MILLI as i64);
    }
}
