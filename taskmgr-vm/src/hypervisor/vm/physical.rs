//! A domain's physical memory: its RAM and the frame allocator over it, with the domain's
//! memory meter (what `memory_mb_ms` and `memory_peak_bytes` report).

use super::frames::Frames;
use super::memory::GuestRam;
use std::sync::Mutex;
use std::time::Instant;
use xeno_taskmgr_kit::lock;
use xeno_taskmgr_kit::metering::MemoryMeter;

/// `KVM_SET_NR_MMU_PAGES` (`_IO(KVMIO, 0x44)`; its getter is gone from current kernels).
const KVM_SET_NR_MMU_PAGES: libc::c_ulong = 0xae44;
/// Shadow pages KVM may keep for a domain after a flush: KVM's own default is 2% of guest
/// memory; this allows 4% of the RAM, plus room for the file windows' tables.
const SHADOW_PAGES_PER_MILLE: u64 = 40;
const SHADOW_PAGES_FOR_WINDOWS: u64 = 8192;
/// The fewest shadow pages KVM keeps (KVM_MIN_ALLOC_MMU_PAGES): asking for this many makes it
/// zap the rest.
const MMU_PAGES_MIN: libc::c_ulong = 64;
/// Most freed page-table frames held in quarantine before KVM is made to forget them (a
/// flush makes every process of the domain rebuild its translations, about 7 µs a page, so
/// it is batched; 8 MiB at most, a sixteenth of the RAM for small domains).
const QUARANTINE_MAX: usize = 2048;

#[derive(Debug)]
pub(crate) struct Physical {
    pub(crate) ram: GuestRam,
    frames: Mutex<Frames>,
    meter: Mutex<MemoryMeter>,
    /// The VM (a duplicate of its descriptor), to make KVM drop its shadow page tables.
    vm: std::sync::OnceLock<std::os::fd::OwnedFd>,
    /// Flushes are one at a time (and counted, for tests and the log).
    flushes: Mutex<u64>,
}

impl Physical {
    pub(crate) fn new(ram: GuestRam, now: Instant) -> Physical {
        let frames = Frames::new(ram.bytes());
        Physical {
            ram,
            frames: Mutex::new(frames),
            meter: Mutex::new(MemoryMeter::new(now)),
            vm: std::sync::OnceLock::new(),
            flushes: Mutex::new(0),
        }
    }

    /// Gives the allocator its VM, so that quarantined page-table frames can be released.
    /// Without one (unit tests) they stay quarantined.
    pub(crate) fn attach(&self, vm: &kvm_ioctls::VmFd) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        // SAFETY: `vm` is an open VM descriptor, borrowed only for the duplication.
        let fd =
            unsafe { std::os::fd::BorrowedFd::borrow_raw(vm.as_raw_fd()) }.try_clone_to_owned()?;
        let _ = self.vm.set(fd);
        Ok(())
    }

    /// A zeroed frame, or `None` when the domain's RAM is used up.
    pub(crate) fn alloc(&self) -> Option<u64> {
        let gpa = match lock(&self.frames).alloc() {
            Some(gpa) => gpa,
            None => {
                // Out of free frames: release the quarantine, if it holds any, and retry.
                if !self.flush() {
                    return None;
                }
                lock(&self.frames).alloc()?
            }
        };
        lock(&self.meter).grow(super::layout::PAGE_SIZE, Instant::now());
        Some(gpa)
    }

    /// Frees the pages of an address space no vCPU can use any more (see
    /// [`Frames::free_unreachable`]), and empties `gpas`.
    pub(crate) fn free_unreachable(&self, gpas: &mut Vec<u64>) {
        if gpas.is_empty() {
            return;
        }
        let count = gpas.len() as u64;
        lock(&self.frames).free_unreachable(gpas, &self.ram);
        lock(&self.meter).release(count * super::layout::PAGE_SIZE, Instant::now());
        gpas.clear();
    }

    /// Frees frames that held page tables: into quarantine, released in batches once KVM has
    /// dropped every shadow page table (see `frames.rs`).
    pub(crate) fn free_tables(&self, gpas: &mut Vec<u64>) {
        if gpas.is_empty() {
            return;
        }
        let count = gpas.len() as u64;
        let full = {
            let mut frames = lock(&self.frames);
            frames.free_tables(gpas, &self.ram);
            frames.quarantined() >= QUARANTINE_MAX.min((frames.free_count() / 16).max(64) as usize)
        };
        lock(&self.meter).release(count * super::layout::PAGE_SIZE, Instant::now());
        gpas.clear();
        if full {
            self.flush();
        }
    }

    /// Makes KVM zap every shadow page table (it rebuilds what running processes use from
    /// their tables, the truth), then frees the frames quarantined before it began. Whether
    /// any frame was freed.
    fn flush(&self) -> bool {
        use std::os::fd::AsRawFd;
        let Some(vm) = self.vm.get() else {
            return false;
        };
        let mut flushes = lock(&self.flushes);
        let held = lock(&self.frames).take_quarantine();
        if held.is_empty() {
            return false;
        }
        let fd = vm.as_raw_fd();
        let usual = self.shadow_pages_max();
        // SAFETY: KVM_SET_NR_MMU_PAGES takes an integer argument (no memory) on a VM
        // descriptor this struct owns.
        let zapped = unsafe {
            libc::ioctl(fd, KVM_SET_NR_MMU_PAGES, MMU_PAGES_MIN) == 0
                && libc::ioctl(fd, KVM_SET_NR_MMU_PAGES, usual) == 0
        };
        if !zapped {
            // KVM would still trust its shadows of these frames: they stay out of use.
            tracing::warn!(
                "KVM_SET_NR_MMU_PAGES failed ({}); {} page-table frames stay quarantined",
                std::io::Error::last_os_error(),
                held.len()
            );
            lock(&self.frames).requarantine(held);
            return false;
        }
        *flushes += 1;
        lock(&self.frames).release(&held);
        true
    }

    /// The shadow-page allowance set back after a flush.
    fn shadow_pages_max(&self) -> libc::c_ulong {
        let pages = self.ram.bytes() / super::layout::PAGE_SIZE;
        (pages * SHADOW_PAGES_PER_MILLE / 1000 + SHADOW_PAGES_FOR_WINDOWS).max(MMU_PAGES_MIN as u64)
            as libc::c_ulong
    }

    /// How many times KVM was made to forget its shadow page tables.
    #[cfg(test)]
    pub(crate) fn flushes(&self) -> u64 {
        *lock(&self.flushes)
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
