//! A domain's physical memory: its RAM and the frame allocator over it, with the domain's
//! memory meter (what `memory_mb_ms` and `memory_peak_bytes` report).

use super::frames::Frames;
use super::memory::GuestRam;
use std::sync::Mutex;
use std::time::Instant;
use xeno_taskmgr_kit::lock;
use xeno_taskmgr_kit::metering::MemoryMeter;

#[derive(Debug)]
pub(crate) struct Physical {
    pub(crate) ram: GuestRam,
    frames: Mutex<Frames>,
    meter: Mutex<MemoryMeter>,
}

impl Physical {
    pub(crate) fn new(ram: GuestRam, now: Instant) -> Physical {
        let frames = Frames::new(ram.bytes());
        Physical {
            ram,
            frames: Mutex::new(frames),
            meter: Mutex::new(MemoryMeter::new(now)),
        }
    }

    /// A zeroed frame, or `None` when the domain's RAM is used up.
    pub(crate) fn alloc(&self) -> Option<u64> {
        let gpa = lock(&self.frames).alloc()?;
        lock(&self.meter).grow(super::layout::PAGE_SIZE, Instant::now());
        Some(gpa)
    }

    /// Frees frames this domain allocated (and empties `gpas`).
    pub(crate) fn free(&self, gpas: &mut Vec<u64>) {
        if gpas.is_empty() {
            return;
        }
        let count = gpas.len() as u64;
        lock(&self.frames).free(gpas, &self.ram);
        lock(&self.meter).release(count * super::layout::PAGE_SIZE, Instant::now());
        gpas.clear();
    }

    /// Frames still free.
    pub(crate) fn free_frames(&self) -> u64 {
        lock(&self.frames).free_count()
    }

    /// (MB·ms held up to `now`, peak bytes).
    pub(crate) fn meter(&self, now: Instant) -> (u64, u64) {
        lock(&self.meter).read(now)
    }
}
