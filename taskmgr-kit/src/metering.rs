//! What a task used, counted the same way by every task manager: CPU time measured on the
//! threads that ran it, fuel (Wasm) or system calls served (Linux), memory integrated over
//! time, output and wall time. These numbers are what clients pay for, so every counter only
//! grows, and a domain's reports pass through [`Monotonic`] so that none ever goes backwards.
//!
//! A task manager creates a [`TaskMeter`] per task, adds to it from whatever runs the task
//! (a thread's CPU clock read with [`thread_cpu_ns`] around each stretch of work, memory as it
//! is mapped or grown), calls [`TaskMeter::end`] when the task ends, and keeps the counters of
//! forgotten tasks in its domain's [`EndedTotals`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;
use xeno_schemas::proto::common::v1::Usage;

const NANOS_PER_MICRO: u64 = 1000;
const NANOS_PER_MILLI: u128 = 1_000_000;
/// Memory is reported in binary megabytes (MiB), the unit of `DomainLimits.memory_mb`.
const BYTES_PER_MB: u128 = 1024 * 1024;

/// CPU time consumed so far by the calling thread, in nanoseconds. The difference between two
/// readings on one thread is what that thread ran in between, wherever the kernel scheduled it:
/// a task's CPU time is the sum of such differences over the stretches it ran.
pub fn thread_cpu_ns() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let seconds = u64::try_from(now.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(now.tv_nsec).unwrap_or(0);
    seconds.saturating_mul(1_000_000_000).saturating_add(nanos)
}

/// Whole milliseconds from `from` to `to` (zero if `to` is earlier).
pub fn duration_ms(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_millis()).unwrap_or(u64::MAX)
}

// A poisoned meter still holds consistent numbers (no section of this module can leave them
// half-updated), and losing a task's bill to another thread's panic would be worse.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Memory held over time: the current amount, its peak, and its integral. Once frozen (its
/// holder ended), the integral stops growing whatever is released afterwards.
#[derive(Debug)]
pub struct MemoryMeter {
    bytes: u64,
    peak_bytes: u64,
    since: Instant,
    byte_nanos: u128,
    frozen: bool,
}

impl MemoryMeter {
    /// A meter holding nothing since `now`.
    pub fn new(now: Instant) -> Self {
        MemoryMeter {
            bytes: 0,
            peak_bytes: 0,
            since: now,
            byte_nanos: 0,
            frozen: false,
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn integrate(&mut self, now: Instant) {
        if self.frozen {
            return;
        }
        let elapsed = now.saturating_duration_since(self.since).as_nanos();
        self.byte_nanos = self
            .byte_nanos
            .saturating_add(elapsed.saturating_mul(u128::from(self.bytes)));
        self.since = self.since.max(now);
    }

    /// `bytes` more are held from `now`.
    pub fn grow(&mut self, bytes: u64, now: Instant) {
        self.integrate(now);
        self.bytes = self.bytes.saturating_add(bytes);
        self.peak_bytes = self.peak_bytes.max(self.bytes);
    }

    /// `bytes` fewer are held from `now`.
    pub fn release(&mut self, bytes: u64, now: Instant) {
        self.integrate(now);
        debug_assert!(bytes <= self.bytes, "released more memory than was held");
        self.bytes = self.bytes.saturating_sub(bytes);
    }

    /// Exactly `bytes` are held from `now`.
    pub fn set(&mut self, bytes: u64, now: Instant) {
        self.integrate(now);
        self.bytes = bytes;
        self.peak_bytes = self.peak_bytes.max(bytes);
    }

    /// Raises the peak to `bytes` if that is higher, without holding anything: for a peak the
    /// holder learned afterwards (a process's peak resident size from its rusage).
    pub fn raise_peak(&mut self, bytes: u64) {
        self.peak_bytes = self.peak_bytes.max(bytes);
    }

    /// Stops the integral at `now`.
    pub fn freeze(&mut self, now: Instant) {
        self.integrate(now);
        self.frozen = true;
    }

    /// (MB·ms held up to `now`, peak bytes).
    pub fn read(&mut self, now: Instant) -> (u64, u64) {
        self.integrate(now);
        let mb_ms = self.byte_nanos / (BYTES_PER_MB * NANOS_PER_MILLI);
        (u64::try_from(mb_ms).unwrap_or(u64::MAX), self.peak_bytes)
    }
}

/// The counters of one task, shared by what runs it (which adds to them) and the calls that
/// report usage (which read them).
#[derive(Debug)]
pub struct TaskMeter {
    cpu_ns: AtomicU64,
    /// Fuel consumed as of the last checkpoint. Fuel cannot be read while Wasm runs, so a
    /// task that never calls the host shows its fuel when it ends.
    fuel: AtomicU64,
    syscalls: AtomicU64,
    output_bytes: AtomicU64,
    memory: Mutex<MemoryMeter>,
    started: Instant,
    ended: OnceLock<Instant>,
}

impl TaskMeter {
    /// A task starting `now`.
    pub fn new(now: Instant) -> Self {
        TaskMeter {
            cpu_ns: AtomicU64::new(0),
            fuel: AtomicU64::new(0),
            syscalls: AtomicU64::new(0),
            output_bytes: AtomicU64::new(0),
            memory: Mutex::new(MemoryMeter::new(now)),
            started: now,
            ended: OnceLock::new(),
        }
    }

    /// Adds CPU time the task ran.
    pub fn add_cpu_ns(&self, ns: u64) {
        self.cpu_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// CPU time so far, nanoseconds.
    pub fn cpu_ns(&self) -> u64 {
        self.cpu_ns.load(Ordering::Relaxed)
    }

    /// Records fuel consumed so far; a stale or repeated checkpoint never lowers it.
    pub fn checkpoint_fuel(&self, consumed: u64) {
        self.fuel.fetch_max(consumed, Ordering::Relaxed);
    }

    /// Fuel as of the last checkpoint.
    pub fn fuel(&self) -> u64 {
        self.fuel.load(Ordering::Relaxed)
    }

    /// Counts one system call served.
    pub fn add_syscall(&self) {
        self.syscalls.fetch_add(1, Ordering::Relaxed);
    }

    /// System calls served so far.
    pub fn syscalls(&self) -> u64 {
        self.syscalls.load(Ordering::Relaxed)
    }

    /// Adds bytes the task wrote to its output.
    pub fn add_output_bytes(&self, bytes: u64) {
        self.output_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Output bytes so far.
    pub fn output_bytes(&self) -> u64 {
        self.output_bytes.load(Ordering::Relaxed)
    }

    /// The task holds `bytes` more memory from now.
    pub fn memory_grow(&self, bytes: u64) {
        lock(&self.memory).grow(bytes, Instant::now());
    }

    /// The task holds `bytes` less memory from now.
    pub fn memory_release(&self, bytes: u64) {
        lock(&self.memory).release(bytes, Instant::now());
    }

    /// The task holds exactly `bytes` of memory from now.
    pub fn set_memory(&self, bytes: u64) {
        lock(&self.memory).set(bytes, Instant::now());
    }

    /// Raises the task's memory peak to `bytes` if that is higher; what it held over time is
    /// unchanged.
    pub fn raise_memory_peak(&self, bytes: u64) {
        lock(&self.memory).raise_peak(bytes);
    }

    /// Freezes the task's wall time and memory integral; later calls keep the first end.
    pub fn end(&self, now: Instant) {
        if self.ended.set(now).is_ok() {
            lock(&self.memory).freeze(now);
        }
    }

    /// The task's usage over its life so far.
    pub fn usage(&self, now: Instant) -> Usage {
        let until = self.ended.get().copied().unwrap_or(now);
        let (memory_mb_ms, memory_peak_bytes) = lock(&self.memory).read(until);
        Usage {
            cpu_time_us: self.cpu_ns() / NANOS_PER_MICRO,
            memory_mb_ms,
            memory_peak_bytes,
            fuel: self.fuel(),
            syscalls: self.syscalls(),
            output_bytes: self.output_bytes(),
            wall_time_ms: duration_ms(self.started, until),
            ..Usage::default()
        }
    }
}

/// Sums of the counters of tasks that ended, kept by their domain after the tasks themselves
/// are forgotten.
#[derive(Debug, Default, Clone, Copy)]
pub struct EndedTotals {
    /// CPU time, nanoseconds.
    pub cpu_ns: u64,
    /// Fuel.
    pub fuel: u64,
    /// System calls served.
    pub syscalls: u64,
    /// Output bytes.
    pub output_bytes: u64,
}

impl EndedTotals {
    /// Adds a task's counters.
    pub fn add(&mut self, meter: &TaskMeter) {
        self.cpu_ns = self.cpu_ns.saturating_add(meter.cpu_ns());
        self.fuel = self.fuel.saturating_add(meter.fuel());
        self.syscalls = self.syscalls.saturating_add(meter.syscalls());
        self.output_bytes = self.output_bytes.saturating_add(meter.output_bytes());
    }

    /// CPU time, microseconds (the unit of `Usage.cpu_time_us`).
    pub fn cpu_time_us(&self) -> u64 {
        self.cpu_ns / NANOS_PER_MICRO
    }
}

/// Makes a sequence of usage reports non-decreasing field by field. The counters behind a
/// report only grow, so this never changes a value; it is the last line of defence for the
/// interface's rule that a report going backwards is a bug (the caller bills differences).
#[derive(Debug, Default)]
pub struct Monotonic {
    last: Usage,
}

impl Monotonic {
    /// `usage`, raised field by field to at least the last report.
    pub fn apply(&mut self, mut usage: Usage) -> Usage {
        let last = &self.last;
        debug_assert!(
            usage.cpu_time_us >= last.cpu_time_us,
            "cpu time went backwards"
        );
        debug_assert!(usage.fuel >= last.fuel, "fuel went backwards");
        usage.cpu_time_us = usage.cpu_time_us.max(last.cpu_time_us);
        usage.memory_mb_ms = usage.memory_mb_ms.max(last.memory_mb_ms);
        usage.memory_peak_bytes = usage.memory_peak_bytes.max(last.memory_peak_bytes);
        usage.fuel = usage.fuel.max(last.fuel);
        usage.syscalls = usage.syscalls.max(last.syscalls);
        usage.output_bytes = usage.output_bytes.max(last.output_bytes);
        usage.wall_time_ms = usage.wall_time_ms.max(last.wall_time_ms);
        usage.compile_time_us = usage.compile_time_us.max(last.compile_time_us);
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

    #[test]
    fn a_peak_learned_afterwards_raises_the_peak_not_the_bill() {
        let start = Instant::now();
        let mut meter = MemoryMeter::new(start);
        meter.set(1024 * 1024, start);
        meter.raise_peak(8 * 1024 * 1024);
        meter.raise_peak(2 * 1024 * 1024);
        let (mb_ms, peak) = meter.read(start + Duration::from_millis(1000));
        assert_eq!((mb_ms, peak), (1000, 8 * 1024 * 1024));
    }

    #[test]
    fn an_ended_task_stops_paying_for_memory() {
        let start = Instant::now();
        let meter = TaskMeter::new(start);
        lock(&meter.memory).set(4 * 1024 * 1024, start);
        meter.end(start + Duration::from_millis(250));
        // Released late (a Wasm store dropped after its task ended): not billed past the end.
        lock(&meter.memory).release(4 * 1024 * 1024, start + Duration::from_secs(5));
        let usage = meter.usage(start + Duration::from_secs(9));
        assert_eq!((usage.memory_mb_ms, usage.wall_time_ms), (1000, 250));
        assert_eq!(usage.memory_peak_bytes, 4 * 1024 * 1024);
    }

    #[test]
    fn reports_never_go_backwards() {
        let mut monotonic = Monotonic::default();
        let first = monotonic.apply(Usage {
            memory_mb_ms: 10,
            syscalls: 5,
            ..Usage::default()
        });
        assert_eq!(first.syscalls, 5);
        let second = monotonic.apply(Usage {
            memory_mb_ms: 7,
            syscalls: 6,
            ..Usage::default()
        });
        assert_eq!((second.memory_mb_ms, second.syscalls), (10, 6));
    }

    #[test]
    fn thread_cpu_clock_advances_with_work() {
        let before = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(thread_cpu_ns() > before);
    }
}
