//! A domain's physical memory: its RAM and the frame allocator over it, with the domain's
//! memory meter (what `memory_mb_ms` and `memory_peak_bytes` report).
//!
//! A frame may be held by several address spaces at once: `fork` gives the child the
//! parent's read-only pages rather than copies (`kernel/mm.rs`, the `COPY_ON_WRITE` bit).
//! Such a frame is counted here; every way of freeing a frame gives up one hold, and only
//! the last one frees it, so the rule lives once, below every caller.
//!
//! Pages of the domain's read-only image mapped privately without write access are shared
//! the same way, between every mapping of them in the domain (the dynamic loader's maps of
//! a library in every process, and its own map of a library's whole span before it maps
//! the segments over it): the first mapping reads the page into a frame, which is indexed
//! here by file and page while any mapping holds it ([`Physical::share_file_page`]).

use super::frames::Frames;
use super::memory::GuestRam;
use super::shadow::Shadow;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use xeno_taskmgr_kit::lock;
use xeno_taskmgr_kit::metering::MemoryMeter;

/// Most freed page-table frames held in quarantine before KVM is made to forget them (a
/// flush pauses the domain and makes every process of it rebuild its translations, about
/// 7 µs a page, so it is batched; 8 MiB at most, a sixteenth of the RAM for small domains).
const QUARANTINE_MAX: usize = 2048;
/// Most runs of neighbouring frames whose translations one free makes KVM forget one run at
/// a time (two host `mprotect` calls a run, a few µs); beyond, one flush of every
/// translation (150-250 µs and a fault for every page touched after) is cheaper.
const FORGET_RUNS_MAX: usize = 64;

/// A page of an image file: (device, inode, page index in the file).
pub(crate) type FilePage = (u64, u64, u64);

#[derive(Debug, Default)]
struct Holds {
    /// Frames held by more than one address space, with how many holds beyond the first.
    extra: HashMap<u64, u32>,
    /// The frame holding each shared image-file page, while any mapping holds it.
    file_pages: HashMap<FilePage, u64>,
    /// The page each of those frames holds.
    frame_pages: HashMap<u64, FilePage>,
}

impl Holds {
    /// Frames in `gpas` about to be freed leave the index.
    fn unindex(&mut self, gpas: &[u64]) {
        if self.frame_pages.is_empty() {
            return;
        }
        for gpa in gpas {
            if let Some(page) = self.frame_pages.remove(gpa) {
                self.file_pages.remove(&page);
            }
        }
    }
}

#[derive(Debug)]
pub(crate) struct Physical {
    /// How KVM is made to drop its shadow page tables (dropped before the RAM it maps).
    shadow: std::sync::OnceLock<Shadow>,
    pub(crate) ram: GuestRam,
    frames: Mutex<Frames>,
    meter: Mutex<MemoryMeter>,
    /// Flushes are one at a time (and counted, for the log).
    flushes: Mutex<u64>,
    /// The domain's shared-memory objects (`MAP_SHARED`), whose frames are allocated here.
    pub(crate) shared: crate::kernel::shared::SharedMemory,
    /// Frames held by more than one address space, and the shared pages of image files.
    holds: Mutex<Holds>,
}

impl Physical {
    pub(crate) fn new(ram: GuestRam, now: Instant) -> Physical {
        let frames = Frames::new(ram.bytes());
        Physical {
            ram,
            frames: Mutex::new(frames),
            meter: Mutex::new(MemoryMeter::new(now)),
            shadow: std::sync::OnceLock::new(),
            flushes: Mutex::new(0),
            shared: crate::kernel::shared::SharedMemory::default(),
            holds: Mutex::new(Holds::default()),
        }
    }

    /// One more address space holds the frame at `gpa` (a fork child sharing its parent's
    /// read-only page): it is freed only once every holder has freed it.
    pub(crate) fn hold(&self, gpa: u64) {
        *lock(&self.holds).extra.entry(gpa).or_insert(0) += 1;
    }

    /// Gives up one of several holds on the frame at `gpa` (another holder keeps it, and
    /// the caller's address space keeps no translation of it that is now wrong).
    pub(crate) fn drop_hold(&self, gpa: u64) {
        let mut holds = lock(&self.holds);
        if let Some(extra) = holds.extra.get_mut(&gpa) {
            *extra -= 1;
            if *extra == 0 {
                holds.extra.remove(&gpa);
            }
        }
    }

    /// Whether the caller's address space is the only holder of the frame at `gpa`; if so,
    /// the frame stops being a shared image-file page (the caller may now change it in
    /// place, and no new mapping may find it).
    pub(crate) fn claim(&self, gpa: u64) -> bool {
        let mut holds = lock(&self.holds);
        if holds.extra.contains_key(&gpa) {
            return false;
        }
        holds.unindex(&[gpa]);
        true
    }

    /// The frame holding image-file page `page`, held once more for the caller, if a
    /// mapping holds it; otherwise `fill` reads the page into a fresh frame (false: it
    /// could not), which is indexed. `None` when the domain's RAM is used up or `fill`
    /// failed.
    pub(crate) fn share_file_page(
        &self,
        page: FilePage,
        fill: &mut dyn FnMut(u64) -> bool,
    ) -> Option<u64> {
        {
            let mut holds = lock(&self.holds);
            if let Some(&gpa) = holds.file_pages.get(&page) {
                *holds.extra.entry(gpa).or_insert(0) += 1;
                return Some(gpa);
            }
        }
        let gpa = self.alloc()?;
        if !fill(gpa) {
            self.free(&mut vec![gpa]);
            return None;
        }
        let mut holds = lock(&self.holds);
        if let Some(&other) = holds.file_pages.get(&page) {
            // Another mapping read it meanwhile: that one is used.
            *holds.extra.entry(other).or_insert(0) += 1;
            drop(holds);
            self.free(&mut vec![gpa]);
            return Some(other);
        }
        holds.file_pages.insert(page, gpa);
        holds.frame_pages.insert(gpa, page);
        Some(gpa)
    }

    /// Gives up one hold on each frame of `gpas` that another address space also holds,
    /// and keeps in `gpas` only the frames that are to be freed now (which leave the index
    /// of image-file pages). With `forget`, KVM is first made to drop its translations of
    /// the frames that stay held (the caller's address space goes on running: see
    /// [`Physical::free`]). Whether that was done (or not needed); false means every
    /// translation must go.
    fn give_up_holds(&self, gpas: &mut Vec<u64>, forget: bool) -> bool {
        let mut holds = lock(&self.holds);
        if holds.extra.is_empty() {
            holds.unindex(gpas);
            return true;
        }
        let mut forgotten = true;
        if forget {
            let mut kept: Vec<u64> = gpas
                .iter()
                .copied()
                .filter(|gpa| holds.extra.contains_key(gpa))
                .collect();
            // Done under the lock: while this address space holds them, no other can make
            // them writable in place, which the invalidation relies on.
            forgotten = self.invalidate(&mut kept);
        }
        let holds = &mut *holds;
        gpas.retain(|gpa| match holds.extra.get_mut(gpa) {
            Some(extra) => {
                *extra -= 1;
                if *extra == 0 {
                    holds.extra.remove(gpa);
                }
                false
            }
            None => true,
        });
        holds.unindex(gpas);
        forgotten
    }

    /// Makes KVM drop its translations of the copy-on-write frames `gpas` (sorted here, and
    /// invalidated in runs of neighbours). Whether every run was; false without trying when
    /// there are more than [`FORGET_RUNS_MAX`] runs.
    fn invalidate(&self, gpas: &mut [u64]) -> bool {
        if gpas.is_empty() {
            return true;
        }
        gpas.sort_unstable();
        let page = super::layout::PAGE_SIZE;
        let adjacent = |a: &u64, b: &u64| b.checked_sub(*a) == Some(page);
        if gpas.chunk_by(adjacent).count() > FORGET_RUNS_MAX {
            return false;
        }
        let mut runs = gpas.chunk_by(adjacent);
        runs.all(|run| self.ram.invalidate(run[0], run.len() as u64 * page))
    }

    /// Gives the allocator its VM's flush, so that quarantined page-table frames can be
    /// released. Without one (unit tests) they stay quarantined.
    pub(crate) fn attach(&self, shadow: Shadow) {
        let _ = self.shadow.set(shadow);
    }

    /// The domain's shadow-table flush, once attached.
    pub(crate) fn shadow(&self) -> Option<&Shadow> {
        self.shadow.get()
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
        self.give_up_holds(gpas, false);
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

    /// Makes KVM drop every translation it holds of the domain's RAM, for an address space
    /// that gave up a frame another one still holds (see [`Physical::free`]): its old
    /// translation of that frame must not outlive the change. Costly (the domain pauses,
    /// and every process rebuilds its translations as it runs), and rare: a page shared
    /// since a fork is made writable, discarded or unmapped before the process ends or execs,
    /// or a page of shared memory another mapping keeps is unmapped or loses access.
    pub(crate) fn forget_translations(&self) {
        self.flush_shadow(true);
    }

    /// Makes KVM drop every shadow page table (running processes rebuild theirs from their
    /// tables, the truth), then frees the frames quarantined before it began. Whether any
    /// frame was freed.
    fn flush(&self) -> bool {
        self.flush_shadow(false)
    }

    /// The flush, done even with nothing in quarantine when `always`.
    fn flush_shadow(&self, always: bool) -> bool {
        let Some(shadow) = self.shadow.get() else {
            return false;
        };
        let mut flushes = lock(&self.flushes);
        let held = lock(&self.frames).take_quarantine();
        if held.is_empty() && !always {
            return false;
        }
        if !shadow.flush() {
            // KVM would still trust its shadows of these frames: they stay out of use.
            lock(&self.frames).requarantine(held);
            return false;
        }
        *flushes += 1;
        tracing::debug!(
            flushes = *flushes,
            released = held.len(),
            "KVM's shadow page tables flushed; quarantined page-table frames released"
        );
        lock(&self.frames).release(&held);
        true
    }

    /// Frees frames this domain allocated (and empties `gpas`); a frame another address
    /// space also holds only loses one hold. The caller's address space may still reach
    /// such a frame through translations KVM holds (the discard a free does is what
    /// invalidates them), so KVM is made to forget its translations of that frame (of a few
    /// such frames, one by one; of many, all translations at once) before anything runs
    /// again.
    pub(crate) fn free(&self, gpas: &mut Vec<u64>) {
        let forgotten = self.give_up_holds(gpas, true);
        self.free_held(gpas);
        if !forgotten {
            self.forget_translations();
        }
    }

    /// Frees frames no other address space holds (and empties `gpas`).
    fn free_held(&self, gpas: &mut Vec<u64>) {
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
