//! A domain's memory limit (`memory_mb`), enforced across all its tasks through Wasmtime's
//! resource limiter: growth beyond it fails inside the guest (`memory.grow` returns -1, a
//! module whose initial memory does not fit fails to instantiate), never in the host.

use std::sync::{Arc, Mutex};
use std::time::Instant;
use wasmtime::ResourceLimiter;
use xeno_taskmgr_kit::lock;
use xeno_taskmgr_kit::metering::{MemoryMeter, TaskMeter};

/// Linear memory held by a domain's tasks, against its cap.
#[derive(Debug)]
pub struct DomainMemory {
    cap_bytes: u64,
    meter: Mutex<MemoryMeter>,
}

impl DomainMemory {
    pub(crate) fn new(cap_bytes: u64, now: Instant) -> Self {
        DomainMemory {
            cap_bytes,
            meter: Mutex::new(MemoryMeter::new(now)),
        }
    }

    /// Takes `bytes` more for the domain if they fit under the cap; otherwise says why not.
    fn try_grow(&self, bytes: u64) -> Result<(), String> {
        let mut meter = lock(&self.meter);
        if meter.bytes().saturating_add(bytes) > self.cap_bytes {
            return Err(format!(
                "the domain's memory limit of {} bytes is reached ({} held by its tasks, {bytes} more asked)",
                self.cap_bytes,
                meter.bytes()
            ));
        }
        meter.grow(bytes, Instant::now());
        Ok(())
    }

    fn release(&self, bytes: u64) {
        lock(&self.meter).release(bytes, Instant::now());
    }

    /// (MB·ms held since the domain was created, peak bytes held at once).
    pub(crate) fn read(&self, now: Instant) -> (u64, u64) {
        lock(&self.meter).read(now)
    }
}

/// The limiter of one task's store: charges its memory to the task and the domain, and gives
/// it all back when the store is dropped.
pub(crate) struct TaskLimiter {
    domain: Arc<DomainMemory>,
    meter: Arc<TaskMeter>,
    held_bytes: u64,
    instance_bytes_max: u64,
    table_elements_max: usize,
    /// Why the last growth was refused, to explain a failed instantiation.
    refusal: Option<String>,
}

impl TaskLimiter {
    pub(crate) fn new(
        domain: Arc<DomainMemory>,
        meter: Arc<TaskMeter>,
        instance_bytes_max: u64,
        table_elements_max: usize,
    ) -> Self {
        TaskLimiter {
            domain,
            meter,
            held_bytes: 0,
            instance_bytes_max,
            table_elements_max,
            refusal: None,
        }
    }

    /// Why the most recent memory growth was refused, if one was.
    pub(crate) fn refusal(&self) -> Option<&str> {
        self.refusal.as_deref()
    }
}

impl ResourceLimiter for TaskLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired_bytes = u64::try_from(desired).unwrap_or(u64::MAX);
        // Refuse here what Wasmtime would refuse after asking us, so that everything we
        // approve is really held (Wasmtime has no callback for a growth that succeeded).
        if maximum.is_some_and(|maximum| desired > maximum) {
            self.refusal = Some(format!(
                "the memory's declared maximum is {maximum:?} bytes"
            ));
            return Ok(false);
        }
        if desired_bytes > self.instance_bytes_max {
            self.refusal = Some(format!(
                "one instance may have at most {} bytes of memory",
                self.instance_bytes_max
            ));
            return Ok(false);
        }
        let added = desired_bytes.saturating_sub(u64::try_from(current).unwrap_or(u64::MAX));
        if let Err(refusal) = self.domain.try_grow(added) {
            tracing::debug!(current, desired, "memory growth refused: {refusal}");
            self.refusal = Some(refusal);
            return Ok(false);
        }
        self.meter.memory_grow(added);
        self.held_bytes += added;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Only a host mmap failure gets here after our approval; the approved bytes stay
        // charged until the task ends (an over-report in a case that means the host is out
        // of memory), which is safer than guessing which growth failed.
        tracing::warn!("memory growth failed after approval: {error}");
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= self.table_elements_max)
    }
}

impl Drop for TaskLimiter {
    fn drop(&mut self) {
        self.domain.release(self.held_bytes);
        self.meter.memory_release(self.held_bytes);
    }
}
