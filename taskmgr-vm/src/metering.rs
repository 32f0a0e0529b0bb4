//! What a task and a domain used: vCPU thread CPU time, memory integrated over time, system
//! calls served, output and wall time. These numbers are what clients pay for, so every
//! counter only grows. Reported exactly like the Wasm manager's (`Usage`), with `syscalls`
//! in place of `fuel`.

use crate::sync::lock;
use std::sync::Mutex;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use xeno_schemas::proto::common::v1::Usage;

const NANOS_PER_MICRO: u64 = 1000;
const NANOS_PER_MILLI: u128 = 1_000_000;
/// Memory is reported in binary megabytes (MiB), the unit of `DomainLimits.memory_mb`.
const BYTES_PER_MB: u128 = 1024 * 1024;

/// CPU time consumed so far by the calling thread, nanoseconds. A task's vCPU thread is its
/// own: guest ring-3 time is accounted to it by the host kernel, and so is the VMM's
/// emulation of the task's system calls, which runs on it.
pub(crate) fn thread_cpu_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Memory held over time: the current amount, its peak, and its integral.
#[derive(Debug)]
pub(crate) struct MemoryMeter {
    bytes: u64,
    peak_bytes: u64,
    since: Instant,
    byte_nanos: u128,
}

impl MemoryMeter {
    pub(crate) fn new(now: Instant) -> Self {
        MemoryMeter {
            bytes: 0,
            peak_bytes: 0,
            since: now,
            byte_nanos: 0,
        }
    }

    fn integrate(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.since).as_nanos();
        self.byte_nanos = self
            .byte_nanos
            .saturating_add(elapsed.saturating_mul(u128::from(self.bytes)));
        self.since = self.since.max(now);
    }

    pub(crate) fn grow(&mut self, bytes: u64, now: Instant) {
        self.integrate(now);
        self.bytes = self.bytes.saturating_add(bytes);
        self.peak_bytes = self.peak_bytes.max(self.bytes);
    }

    pub(crate) fn release(&mut self, bytes: u64, now: Instant) {
        self.integrate(now);
        debug_assert!(bytes <= self.bytes, "released more memory than was held");
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Sets the amount held now.
    pub(crate) fn set(&mut self, bytes: u64, now: Instant) {
        self.integrate(now);
        self.bytes = bytes;
        self.peak_bytes = self.peak_bytes.max(bytes);
    }

    /// (MB·ms held up to `now`, peak bytes).
    pub(crate) fn read(&mut self, now: Instant) -> (u64, u64) {
        self.integrate(now);
        let mb_ms = self.byte_nanos / (BYTES_PER_MB * NANOS_PER_MILLI);
        (u64::try_from(mb_ms).unwrap_or(u64::MAX), self.peak_bytes)
    }
}

/// The counters of one task, shared by its vCPU thread (which adds to them) and the calls
/// that report usage (which read them).
#[derive(Debug)]
pub(crate) struct TaskMeter {
    cpu_ns: AtomicU64,
    syscalls: AtomicU64,
    output_bytes: AtomicU64,
    memory: Mutex<MemoryMeter>,
    started: Instant,
    ended: OnceLock<Instant>,
}

impl TaskMeter {
    pub(crate) fn new(now: Instant) -> Self {
        TaskMeter {
            cpu_ns: AtomicU64::new(0),
            syscalls: AtomicU64::new(0),
            output_bytes: AtomicU64::new(0),
            memory: Mutex::new(MemoryMeter::new(now)),
            started: now,
            ended: OnceLock::new(),
        }
    }

    pub(crate) fn add_cpu_ns(&self, ns: u64) {
        self.cpu_ns.fetch_add(ns, Ordering::Relaxed);
    }

    pub(crate) fn cpu_ns(&self) -> u64 {
        self.cpu_ns.load(Ordering::Relaxed)
    }

    pub(crate) fn add_syscall(&self) {
        self.syscalls.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn syscalls(&self) -> u64 {
        self.syscalls.load(Ordering::Relaxed)
    }

    pub(crate) fn add_output_bytes(&self, bytes: u64) {
        self.output_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn output_bytes(&self) -> u64 {
        self.output_bytes.load(Ordering::Relaxed)
    }

    /// Records the memory the task holds now (its address space's pages).
    pub(crate) fn set_memory(&self, bytes: u64) {
        lock(&self.memory).set(bytes, Instant::now());
    }

    /// Freezes the task's wall time and memory; later calls keep the first end.
    pub(crate) fn end(&self, now: Instant) {
        if self.ended.set(now).is_ok() {
            lock(&self.memory).set(0, now);
        }
    }

    /// The task's usage over its life so far.
    pub(crate) fn usage(&self, now: Instant) -> Usage {
        let until = self.ended.get().copied().unwrap_or(now);
        let (memory_mb_ms, memory_peak_bytes) = lock(&self.memory).read(until);
        Usage {
            cpu_time_us: self.cpu_ns() / NANOS_PER_MICRO,
            memory_mb_ms,
            memory_peak_bytes,
            syscalls: self.syscalls(),
            output_bytes: self.output_bytes(),
            wall_time_ms: duration_ms(self.started, until),
            ..Usage::default()
        }
    }
}

pub(crate) fn duration_ms(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_millis()).unwrap_or(u64::MAX)
}

/// Sums of the counters of tasks that ended, kept by their domain after the tasks themselves
/// are forgotten.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct EndedTotals {
    pub(crate) cpu_ns: u64,
    pub(crate) syscalls: u64,
    pub(crate) output_bytes: u64,
}

impl EndedTotals {
    pub(crate) fn add(&mut self, meter: &TaskMeter) {
        self.cpu_ns = self.cpu_ns.saturating_add(meter.cpu_ns());
        self.syscalls = self.syscalls.saturating_add(meter.syscalls());
        self.output_bytes = self.output_bytes.saturating_add(meter.output_bytes());
    }

    pub(crate) fn cpu_time_us(&self) -> u64 {
        self.cpu_ns / NANOS_PER_MICRO
    }
}

/// Makes a sequence of usage reports non-decreasing field by field. The counters behind a
/// report only grow, so this never changes a value; it is the last line of defence for the
/// interface's rule that a report going backwards is a bug (the caller bills differences).
#[derive(Debug, Default)]
pub(crate) struct Monotonic {
    last: Usage,
}

impl Monotonic {
    pub(crate) fn apply(&mut self, mut usage: Usage) -> Usage {
        let last = &self.last;
        debug_assert!(
            usage.cpu_time_us >= last.cpu_time_us,
            "cpu time went backwards"
        );
        usage.cpu_time_us = usage.cpu_time_us.max(last.cpu_time_us);
        usage.memory_mb_ms = usage.memory_mb_ms.max(last.memory_mb_ms);
        usage.memory_peak_bytes = usage.memory_peak_bytes.max(last.memory_peak_bytes);
        usage.syscalls = usage.syscalls.max(last.syscalls);
        usage.output_bytes = usage.output_bytes.max(last.output_bytes);
        usage.wall_time_ms = usage.wall_time_ms.max(last.wall_time_ms);
        self.last = usage;
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn memory_integral_counts_mb_ms() {
        let start = Instant::now();
        let mut meter = MemoryMeter::new(start);
        meter.grow(2 * 1024 * 1024, start);
        let (mb_ms, peak) = meter.read(start + Duration::from_millis(1500));
        assert_eq!(mb_ms, 3000);
        assert_eq!(peak, 2 * 1024 * 1024);
        meter.release(2 * 1024 * 1024, start + Duration::from_millis(1500));
        let (mb_ms, _) = meter.read(start + Duration::from_millis(9000));
        assert_eq!(mb_ms, 3000, "nothing held, nothing accrues");
    }
}
