//! A task's address space: its page tables and the areas (VMAs) mapped in them, with the
//! operations behind `mmap`, `munmap`, `mprotect`, `brk`, and the VMM's own copies to and
//! from guest memory.
//!
//! Pages are backed eagerly: `mmap` allocates and maps every page of an accessible area at
//! once, so a task never takes a page fault (an exception exit costs about 55 µs here, against
//! well under a microsecond for the VMM to write an entry) and running out of `MemoryMB` is an
//! `ENOMEM` from the call that asked, never a fault later. The stack is the exception: it is
//! reserved at its full size and backed from the top, and grows on demand when the task
//! faults below what is backed.

use crate::hypervisor::vm::layout::{
    EXIT_PAGE_VA, FAST_PAGE_VA, IDT_VA, KernelSlot, PAGE_SIZE, STUBS_VA, SYSCALL_EXIT_GPA,
    TRAMPOLINE_VA, USER_MIN, USER_SYSTEM_BASE, page_ceil, page_floor,
};
use crate::hypervisor::vm::physical::Physical;
use crate::hypervisor::vm::system::{SharedPages, gdt_page};
use crate::kernel::paging::{
    ACCESSED, ADDRESS_MASK, BORROWED, COPY_ON_WRITE, DIRTY, NO_EXECUTE, NoMemory, OWNED, PRESENT,
    PageTables, SHARED, USER, WRITABLE,
};
use std::collections::BTreeMap;

/// `PROT_READ`.
pub(crate) const PROT_READ: u32 = 1;
/// `PROT_WRITE`.
pub(crate) const PROT_WRITE: u32 = 2;
/// `PROT_EXEC`.
pub(crate) const PROT_EXEC: u32 = 4;

/// Most areas one address space may have (Linux's default `vm.max_map_count` is 65530): a
/// bound on the VMM's bookkeeping for a task that maps page by page.
pub(crate) const VMAS_MAX: usize = 65_530;

/// Errors of address space operations, as the errno a system call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MmError {
    /// ENOMEM: out of RAM, or out of address space, or too many areas.
    NoMemory,
    /// EINVAL: a bad address or length.
    Invalid,
    /// EACCES: a protection the area cannot have.
    Access,
    /// EFAULT: an address not mapped as needed.
    Fault,
}

impl From<NoMemory> for MmError {
    fn from(_: NoMemory) -> MmError {
        MmError::NoMemory
    }
}

/// What backs an area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backing {
    /// Anonymous memory (also the executable's segments, heap and stack).
    Anonymous,
    /// A read-only file window at this guest-physical address (see `hypervisor/fastpath.rs`).
    Window { gpa: u64 },
    /// Pages of the domain's shared-memory object `id`, from its page `page` on (see
    /// `kernel/shared.rs`).
    Shared { id: u32, page: u64 },
}

/// One mapped area.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Vma {
    pub(crate) end: u64,
    pub(crate) prot: u32,
    /// Backed on first touch rather than when mapped (the stack).
    pub(crate) lazy: bool,
    pub(crate) backing: Backing,
}

/// The page-table flags for `prot` (0 when the page must not be present).
fn leaf_flags(prot: u32) -> u64 {
    if prot & (PROT_READ | PROT_WRITE | PROT_EXEC) == 0 {
        return 0;
    }
    let mut flags = PRESENT | USER | ACCESSED | DIRTY;
    if prot & PROT_WRITE != 0 {
        flags |= WRITABLE;
    }
    if prot & PROT_EXEC == 0 {
        flags |= NO_EXECUTE;
    }
    flags
}

/// Whether changing a present entry `old` to `flags` takes any access away.
fn lowers(old: u64, flags: u64) -> bool {
    old & PRESENT != 0
        && (flags & PRESENT == 0
            || (old & WRITABLE != 0 && flags & WRITABLE == 0)
            || (old & NO_EXECUTE == 0 && flags & NO_EXECUTE != 0))
}

/// Frames `mprotect` has taken out of the tables, to be freed.
#[derive(Debug, Default)]
struct Retired {
    /// Frames of this address space alone: freed in batches as the call goes.
    frames: Vec<u64>,
    /// Frames shared since a fork: freed (one hold given up, and KVM made to forget this
    /// address space's translations, once) at the end.
    shared: Vec<u64>,
    /// Whether a page of shared memory lost access, which KVM must be made to see.
    forget: bool,
}

/// Frames a lowered `mprotect` frees at a time: it moves each page to a fresh frame, so this
/// bounds the frames it needs besides the area's own.
const RETIRED_BATCH: usize = 256;

/// A task's address space.
#[derive(Debug)]
pub(crate) struct Mm {
    tables: PageTables,
    vmas: BTreeMap<u64, Vma>,
    /// Where the heap starts (just past the executable) and where it ends now.
    brk_base: u64,
    brk: u64,
    /// mmap places areas top-down from here.
    mmap_top: u64,
    /// Frames this address space owns (its pages and its page tables are both in RAM; this
    /// counts pages only): its resident set.
    pages_owned: u64,
    /// Of those, pages shared from the parent at fork ([`BORROWED`]), which the parent's
    /// process counts in the task's memory meter.
    pages_borrowed: u64,
    kstack_gpa: u64,
    fast_page_gpa: u64,
    /// Counts changes of its areas, so that `/proc/<pid>/maps` is published again only after
    /// one.
    generation: u64,
}

impl Mm {
    /// An address space with the domain's kernel pages and the trampoline mapped, and nothing
    /// else.
    pub(crate) fn new(
        physical: &Physical,
        shared: &SharedPages,
        mmap_top: u64,
    ) -> Result<Mm, MmError> {
        let tables = PageTables::new(physical)?;
        let mut mm = Mm {
            tables,
            vmas: BTreeMap::new(),
            brk_base: 0,
            brk: 0,
            mmap_top,
            pages_owned: 0,
            pages_borrowed: 0,
            kstack_gpa: 0,
            fast_page_gpa: 0,
            generation: 0,
        };
        if let Err(error) = mm.map_system(physical, shared) {
            mm.destroy(physical);
            return Err(error);
        }
        Ok(mm)
    }

    /// An address space with nothing in it and no tables: what a `vfork` parent holds
    /// while its own is lent to the child (see [`crate::kernel::fork`]).
    pub(crate) const fn none() -> Mm {
        Mm {
            tables: PageTables::none(),
            vmas: BTreeMap::new(),
            brk_base: 0,
            brk: 0,
            mmap_top: 0,
            pages_owned: 0,
            pages_borrowed: 0,
            kstack_gpa: 0,
            fast_page_gpa: 0,
            generation: 0,
        }
    }

    fn map_system(&mut self, physical: &Physical, shared: &SharedPages) -> Result<(), MmError> {
        let kernel = PRESENT | ACCESSED | DIRTY;
        let set = |va: u64, entry: u64| self.tables.set(physical, va, entry);
        set(IDT_VA, shared.idt | kernel | NO_EXECUTE)?;
        set(STUBS_VA, shared.stubs | kernel)?;
        let user = PRESENT | USER | ACCESSED | DIRTY;
        set(TRAMPOLINE_VA, shared.trampoline | user)?;
        let fast = physical.alloc().ok_or(MmError::NoMemory)?;
        set(FAST_PAGE_VA, fast | user | WRITABLE | NO_EXECUTE | OWNED)?;
        self.fast_page_gpa = fast;
        set(
            EXIT_PAGE_VA,
            SYSCALL_EXIT_GPA | user | WRITABLE | NO_EXECUTE,
        )?;
        self.kstack_gpa = self.map_kernel_slot(physical, 0)?.kstack_gpa;
        Ok(())
    }

    /// Maps a thread's kernel pages (GDT with TSS, ring-0 stack) at slot `index`.
    pub(crate) fn map_kernel_slot(
        &mut self,
        physical: &Physical,
        index: u64,
    ) -> Result<KernelSlot, MmError> {
        let mut slot = KernelSlot::at(index);
        let kernel = PRESENT | ACCESSED | DIRTY | WRITABLE | NO_EXECUTE | OWNED;
        let gdt = physical.alloc().ok_or(MmError::NoMemory)?;
        if let Err(error) = self.tables.set(physical, slot.gdt_va, gdt | kernel) {
            physical.free(&mut vec![gdt]);
            return Err(error.into());
        }
        if !physical
            .ram
            .write(gdt, &gdt_page(slot.gdt_va, slot.kstack_va))
        {
            return Err(MmError::NoMemory);
        }
        let kstack = physical.alloc().ok_or(MmError::NoMemory)?;
        if let Err(error) = self.tables.set(physical, slot.kstack_va, kstack | kernel) {
            physical.free(&mut vec![kstack]);
            return Err(error.into());
        }
        slot.kstack_gpa = kstack;
        Ok(slot)
    }

    /// Unmaps and frees a thread's kernel pages (never slot 0's, which live as long as the
    /// address space).
    pub(crate) fn unmap_kernel_slot(&mut self, physical: &Physical, slot: KernelSlot) {
        let mut freed = Vec::new();
        for va in [slot.gdt_va, slot.kstack_va] {
            let old = self.tables.clear(physical, va);
            if old & OWNED != 0 {
                freed.push(old & ADDRESS_MASK);
            }
        }
        physical.free(&mut freed);
    }

    /// The root of the page tables, for CR3.
    pub(crate) fn cr3(&self) -> u64 {
        self.tables.root()
    }

    /// Guest-physical address of this task's ring-0 stack page.
    pub(crate) fn kstack_gpa(&self) -> u64 {
        self.kstack_gpa
    }

    /// Guest-physical address of this task's fast-path page.
    pub(crate) fn fast_page_gpa(&self) -> u64 {
        self.fast_page_gpa
    }

    /// Bytes of address space its areas cover (VmSize).
    pub(crate) fn mapped_bytes(&self) -> u64 {
        self.vmas.iter().map(|(start, vma)| vma.end - start).sum()
    }

    /// Its areas as `/proc/self/maps` lists them: (start, end, protection, whether it is the
    /// stack); the fast path's file windows are the VMM's, not the program's, and are left out.
    pub(crate) fn areas(&self) -> Vec<(u64, u64, u32, bool)> {
        self.vmas
            .iter()
            .filter(|(_, vma)| vma.backing == Backing::Anonymous)
            .map(|(start, vma)| {
                (
                    *start,
                    vma.end,
                    vma.prot,
                    vma.end == crate::hypervisor::vm::layout::STACK_TOP,
                )
            })
            .collect()
    }

    /// Which change of its areas this is (see `generation`).
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Bytes of pages this address space owns (its resident set).
    pub(crate) fn bytes_owned(&self) -> u64 {
        self.pages_owned * PAGE_SIZE
    }

    /// Bytes it adds to its task's memory: its pages less those shared from its parent at
    /// fork, so that a page two processes share counts once, in the parent's (not at all
    /// once the parent has let it go; the domain's own meter counts frames, exactly).
    pub(crate) fn bytes_charged(&self) -> u64 {
        (self.pages_owned - self.pages_borrowed) * PAGE_SIZE
    }

    /// The child's address space for `fork`: the same areas, heap and layout. A page the
    /// parent owns that is read-only (program text, read-only data, RELRO) is shared: both
    /// map the same frame, marked [`COPY_ON_WRITE`], which neither writes (a later change of
    /// its protection gives the changer a copy). Every other owned page (writable, or
    /// parked) is copied into a fresh frame now. The fast-path windows must have been
    /// dropped first (they are one address space's; see `threads.rs`): window areas are not
    /// copied.
    ///
    /// Writable pages are copied rather than shared copy-on-write: write-protecting the
    /// parent's would not hold (KVM's shadow MMU keeps the writable translations it made of
    /// the parent's tables, since the VMM writes tables from the host, unseen; dropping them
    /// means flushing the whole domain), and each copy-on-write fault would be an exception
    /// exit of about 55 µs, against about a microsecond to copy a page here. A read-only
    /// page needs neither: its translations are already read-only in the parent.
    pub(crate) fn fork_copy(
        &self,
        physical: &Physical,
        shared: &SharedPages,
    ) -> Result<Mm, MmError> {
        // The child's tables and system pages need a few frames besides its copies.
        if physical.free_frames() < 64 {
            return Err(MmError::NoMemory);
        }
        let mut child = Mm::new(physical, shared, self.mmap_top)?;
        child.brk_base = self.brk_base;
        child.brk = self.brk;
        if let Err(error) = self.copy_into(physical, &mut child) {
            child.destroy(physical);
            return Err(error);
        }
        Ok(child)
    }

    fn copy_into(&self, physical: &Physical, child: &mut Mm) -> Result<(), MmError> {
        for (&start, vma) in &self.vmas {
            if matches!(vma.backing, Backing::Window { .. }) {
                continue;
            }
            child.vmas.insert(start, *vma);
            if let Backing::Shared { id, page } = vma.backing {
                // The child maps the same frames: shared memory stays shared across fork.
                let tables = &child.tables;
                self.tables
                    .for_each_leaf(physical, start, vma.end, &mut |va, entry| {
                        if entry & SHARED != 0 {
                            physical.shared.retain(id, page + (va - start) / PAGE_SIZE);
                            if let Err(error) = tables.set(physical, va, entry) {
                                // The child never ran on it: nothing of it to forget.
                                let _ = physical.shared.release(
                                    physical,
                                    id,
                                    page + (va - start) / PAGE_SIZE,
                                );
                                return Err(error);
                            }
                        }
                        Ok(())
                    })?;
                continue;
            }
            let parent = &self.tables;
            let tables = &child.tables;
            let (owned, borrowed) = (&mut child.pages_owned, &mut child.pages_borrowed);
            self.tables
                .for_each_leaf(physical, start, vma.end, &mut |va, entry| {
                    if entry & OWNED == 0 {
                        return Ok(());
                    }
                    if entry & PRESENT != 0 && entry & WRITABLE == 0 {
                        // Only a software bit changes in the parent's entry: the translations
                        // KVM holds of it stay right.
                        let entry = entry | COPY_ON_WRITE;
                        parent.set(physical, va, entry)?;
                        tables.set(physical, va, entry | BORROWED)?;
                        physical.hold(entry & ADDRESS_MASK);
                        *owned += 1;
                        *borrowed += 1;
                        return Ok(());
                    }
                    let fresh = physical.alloc().ok_or(NoMemory)?;
                    if !physical.ram.copy_page(entry & ADDRESS_MASK, fresh) {
                        physical.free(&mut vec![fresh]);
                        return Err(NoMemory);
                    }
                    if let Err(error) = tables.set(physical, va, fresh | (entry & !ADDRESS_MASK)) {
                        physical.free(&mut vec![fresh]);
                        return Err(error);
                    }
                    *owned += 1;
                    Ok(())
                })?;
        }
        Ok(())
    }

    /// Frees every page and table. The address space must not be in use by a vCPU.
    pub(crate) fn destroy(mut self, physical: &Physical) {
        self.release(physical);
    }

    /// Frees every page and table, leaving an empty address space that must not be used
    /// again (for an address space shared by threads, released by the last one).
    pub(crate) fn release(&mut self, physical: &Physical) {
        let shared: Vec<(u64, u64)> = self
            .vmas
            .iter()
            .filter(|(_, vma)| matches!(vma.backing, Backing::Shared { .. }))
            .map(|(start, vma)| (*start, vma.end))
            .collect();
        for (start, end) in shared {
            let _ = self.unmap_range(physical, start, end, false);
        }
        self.tables.release(physical);
        self.vmas.clear();
        self.pages_owned = 0;
        self.pages_borrowed = 0;
    }

    /// Whether `[start, end)` is a valid user range for a new mapping.
    fn check_range(start: u64, end: u64) -> Result<(), MmError> {
        if !start.is_multiple_of(PAGE_SIZE)
            || end <= start
            || start < USER_MIN
            || end > USER_SYSTEM_BASE
        {
            return Err(MmError::Invalid);
        }
        Ok(())
    }

    /// Ensures an area boundary at `at` (splitting the area that spans it).
    fn split_at(&mut self, at: u64) {
        let Some((&start, &vma)) = self.vmas.range(..at).next_back() else {
            return;
        };
        if vma.end <= at {
            return;
        }
        let tail_backing = match vma.backing {
            Backing::Window { gpa } => Backing::Window {
                gpa: gpa + (at - start),
            },
            Backing::Anonymous => Backing::Anonymous,
            Backing::Shared { id, page } => Backing::Shared {
                id,
                page: page + (at - start) / PAGE_SIZE,
            },
        };
        self.vmas.insert(start, Vma { end: at, ..vma });
        self.vmas.insert(
            at,
            Vma {
                backing: tail_backing,
                ..vma
            },
        );
    }

    /// The areas overlapping `[start, end)`, after splitting at both ends.
    fn carve(&mut self, start: u64, end: u64) -> Vec<(u64, Vma)> {
        self.split_at(start);
        self.split_at(end);
        self.vmas
            .range(start..end)
            .map(|(start, vma)| (*start, *vma))
            .collect()
    }

    /// Maps `[start, end)` afresh (replacing whatever was there) with `prot`, backed by
    /// `backing`. Anonymous areas are backed at once unless `lazy`.
    pub(crate) fn map_fixed(
        &mut self,
        physical: &Physical,
        start: u64,
        end: u64,
        prot: u32,
        lazy: bool,
        backing: Backing,
    ) -> Result<(), MmError> {
        Self::check_range(start, end)?;
        if self.vmas.len() + 2 > VMAS_MAX {
            return Err(MmError::NoMemory);
        }
        let pages = (end - start) / PAGE_SIZE;
        if backing == Backing::Anonymous && !lazy && prot != 0 && pages > physical.free_frames() {
            return Err(MmError::NoMemory);
        }
        self.unmap(physical, start, end)?;
        self.generation += 1;
        self.vmas.insert(
            start,
            Vma {
                end,
                prot,
                lazy,
                backing,
            },
        );
        if lazy {
            return Ok(());
        }
        if let Err(error) = self.populate(physical, start, end, prot, backing) {
            let _ = self.unmap(physical, start, end);
            return Err(error);
        }
        Ok(())
    }

    /// Maps `[start, end)` privately with `prot` (which must not allow writing) onto
    /// `frames`, one a page, each already held for this address space: pages of an image
    /// file that every such mapping in the domain shares (see
    /// [`Physical::share_file_page`]), marked [`COPY_ON_WRITE`] so that a later change of
    /// protection gives this address space a copy. The frames are given up on any error.
    ///
    /// A page already mapping its frame here with no wider access is left as it is, so that
    /// mapping a span over itself (the dynamic loader's segments over its first map of a
    /// whole library) changes nothing KVM holds and needs no invalidation.
    pub(crate) fn map_shared_frames(
        &mut self,
        physical: &Physical,
        start: u64,
        end: u64,
        prot: u32,
        mut frames: Vec<u64>,
    ) -> Result<(), MmError> {
        let pages = (end.saturating_sub(start) / PAGE_SIZE) as usize;
        let fits = Self::check_range(start, end).and_then(|()| {
            if self.vmas.len() + 2 > VMAS_MAX || frames.len() != pages || prot & PROT_WRITE != 0 {
                Err(MmError::Invalid)
            } else {
                Ok(())
            }
        });
        if let Err(error) = fits {
            physical.free(&mut frames);
            return Err(error);
        }
        let flags = leaf_flags(prot) | OWNED | COPY_ON_WRITE;
        for (index, frame) in frames.iter().enumerate() {
            let va = start + index as u64 * PAGE_SIZE;
            let old = self.tables.get(physical, va);
            if old & (PRESENT | COPY_ON_WRITE) == PRESENT | COPY_ON_WRITE
                && old & ADDRESS_MASK == *frame
                && !lowers(old, flags)
            {
                // The old entry's hold becomes the new one's: the caller's extra hold goes.
                self.tables.clear(physical, va);
                self.pages_owned -= 1;
                if old & BORROWED != 0 {
                    self.pages_borrowed -= 1;
                }
                physical.drop_hold(*frame);
            }
        }
        if let Err(error) = self.unmap(physical, start, end) {
            physical.free(&mut frames);
            return Err(error);
        }
        self.generation += 1;
        self.vmas.insert(
            start,
            Vma {
                end,
                prot,
                lazy: false,
                backing: Backing::Anonymous,
            },
        );
        for index in 0..frames.len() {
            let va = start + index as u64 * PAGE_SIZE;
            if let Err(error) = self.tables.set(physical, va, frames[index] | flags) {
                // The pages not mapped yet go here; the mapped ones with the area.
                physical.free(&mut frames.split_off(index));
                let _ = self.unmap(physical, start, end);
                return Err(error.into());
            }
            self.pages_owned += 1;
        }
        Ok(())
    }

    fn populate(
        &mut self,
        physical: &Physical,
        start: u64,
        end: u64,
        prot: u32,
        backing: Backing,
    ) -> Result<(), MmError> {
        let flags = leaf_flags(prot);
        let mut va = start;
        while va < end {
            match backing {
                Backing::Anonymous if flags != 0 => self.back_page(physical, va, flags)?,
                Backing::Anonymous => {}
                Backing::Shared { id, page } => {
                    let index = page + (va - start) / PAGE_SIZE;
                    let frame = physical
                        .shared
                        .page(physical, id, index)
                        .ok_or(MmError::NoMemory)?;
                    let entry = frame | SHARED | if flags == 0 { 0 } else { flags };
                    if let Err(error) = self.tables.set(physical, va, entry) {
                        let _ = physical.shared.release(physical, id, index);
                        return Err(error.into());
                    }
                }
                Backing::Window { gpa } => {
                    let frame = gpa + (va - start);
                    let entry = if flags == 0 {
                        0
                    } else {
                        frame | (flags & !WRITABLE)
                    };
                    self.tables.set(physical, va, entry)?;
                }
            }
            va += PAGE_SIZE;
        }
        Ok(())
    }

    fn back_page(&mut self, physical: &Physical, va: u64, flags: u64) -> Result<(), MmError> {
        // An entry overwritten here would leak its frame and leave KVM translating the page
        // to it (nothing discarded it): every caller backs only pages that have none.
        debug_assert_eq!(self.tables.get(physical, va), 0, "backing {va:#x} twice");
        let frame = physical.alloc().ok_or(MmError::NoMemory)?;
        if let Err(error) = self.tables.set(physical, va, frame | flags | OWNED) {
            physical.free(&mut vec![frame]);
            return Err(error.into());
        }
        self.pages_owned += 1;
        Ok(())
    }

    /// Unmaps `[start, end)` (any part of it may be unmapped already), freeing owned pages.
    pub(crate) fn unmap(
        &mut self,
        physical: &Physical,
        start: u64,
        end: u64,
    ) -> Result<(), MmError> {
        self.unmap_range(physical, start, end, true)
    }

    /// `unmap`; `in_use` when the address space goes on being used afterwards (not when it
    /// is being released), so that its translations of frames other mappings keep must go.
    fn unmap_range(
        &mut self,
        physical: &Physical,
        start: u64,
        end: u64,
        in_use: bool,
    ) -> Result<(), MmError> {
        if !start.is_multiple_of(PAGE_SIZE) || end < start || end > USER_SYSTEM_BASE {
            return Err(MmError::Invalid);
        }
        self.generation += 1;
        let mut lingering = false;
        let mut freed = Vec::new();
        for (vma_start, vma) in self.carve(start, end) {
            self.vmas.remove(&vma_start);
            let mut va = vma_start;
            while va < vma.end {
                let old = self.tables.clear(physical, va);
                if old & OWNED != 0 {
                    freed.push(old & ADDRESS_MASK);
                }
                if old & BORROWED != 0 {
                    self.pages_borrowed -= 1;
                }
                if old & SHARED != 0
                    && let Backing::Shared { id, page } = vma.backing
                {
                    lingering |=
                        physical
                            .shared
                            .release(physical, id, page + (va - vma_start) / PAGE_SIZE);
                }
                va += PAGE_SIZE;
            }
        }
        if lingering && in_use {
            // Another mapping keeps those frames, so no discard invalidated this address
            // space's translations of them: fresh memory mapped here must not read them.
            physical.forget_translations();
        }
        self.pages_owned -= freed.len() as u64;
        physical.free(&mut freed);
        Ok(())
    }

    /// Unmaps what is left of a window `[va, va + len)` backed from `gpa`: only areas that
    /// still map that window (the task may have replaced them with its own mappings).
    pub(crate) fn unmap_window(&mut self, physical: &Physical, va: u64, len: u64, gpa: u64) {
        let Some(end) = va.checked_add(len) else {
            return;
        };
        let areas: Vec<(u64, Vma)> = self
            .vmas
            .range(..end)
            .filter(|(start, vma)| vma.end > va && **start >= va)
            .map(|(start, vma)| (*start, *vma))
            .collect();
        for (start, vma) in areas {
            if let Backing::Window { gpa: at } = vma.backing
                && at >= gpa
                && at < gpa + len
            {
                let _ = self.unmap(physical, start, vma.end);
            }
        }
    }

    /// `mprotect`: every page of `[start, end)` must be mapped.
    pub(crate) fn protect(
        &mut self,
        physical: &Physical,
        start: u64,
        end: u64,
        prot: u32,
    ) -> Result<(), MmError> {
        if !start.is_multiple_of(PAGE_SIZE) || end < start || end > USER_SYSTEM_BASE {
            return Err(MmError::Invalid);
        }
        if !self.covered(start, end) {
            return Err(MmError::NoMemory);
        }
        self.generation += 1;
        let areas = self.carve(start, end);
        if areas
            .iter()
            .any(|(_, vma)| matches!(vma.backing, Backing::Window { .. }) && prot & PROT_WRITE != 0)
        {
            return Err(MmError::Access);
        }
        let flags = leaf_flags(prot);
        let mut retired = Retired::default();
        let done = self.protect_areas(physical, areas, prot, flags, &mut retired);
        // Whatever happened, the frames given up are not in the tables any more.
        physical.free(&mut retired.frames);
        physical.free(&mut retired.shared);
        if retired.forget {
            physical.forget_translations();
        }
        done
    }

    /// `protect`'s page-by-page work over `areas`, giving up frames into `retired`.
    fn protect_areas(
        &mut self,
        physical: &Physical,
        areas: Vec<(u64, Vma)>,
        prot: u32,
        flags: u64,
        retired: &mut Retired,
    ) -> Result<(), MmError> {
        for (vma_start, vma) in areas {
            self.vmas.insert(vma_start, Vma { prot, ..vma });
            let mut va = vma_start;
            while va < vma.end {
                let old = self.tables.get(physical, va);
                let frame = old & ADDRESS_MASK;
                if old & COPY_ON_WRITE != 0
                    && old & !(ADDRESS_MASK | OWNED | COPY_ON_WRITE | BORROWED) != flags
                {
                    self.unshare(physical, va, old, flags, retired)?;
                } else if old & COPY_ON_WRITE != 0 {
                    // The same access: the page stays shared.
                } else if old & OWNED != 0 && lowers(old, flags) {
                    // See `migrate`: the page moves to a fresh frame.
                    let fresh = self.migrate(physical, frame)?;
                    self.tables.set(physical, va, fresh | flags | OWNED)?;
                    retired.frames.push(frame);
                    if retired.frames.len() >= RETIRED_BATCH {
                        // Freed as it goes: a large area needs few frames besides its own.
                        physical.free(&mut retired.frames);
                    }
                } else if old & OWNED != 0 {
                    self.tables.set(physical, va, frame | flags | OWNED)?;
                } else if old & SHARED != 0 {
                    // Shared frames cannot move (every mapping holds them): for a lowered
                    // access to hold, KVM forgets its translations (once, at the end).
                    retired.forget |= lowers(old, flags);
                    self.tables.set(physical, va, frame | flags | SHARED)?;
                } else if let Backing::Shared { id, page } = vma.backing {
                    let index = page + (va - vma_start) / PAGE_SIZE;
                    let frame = physical
                        .shared
                        .page(physical, id, index)
                        .ok_or(MmError::NoMemory)?;
                    self.tables.set(physical, va, frame | flags | SHARED)?;
                } else if let Backing::Window { gpa } = vma.backing {
                    let entry = if flags == 0 {
                        0
                    } else {
                        (gpa + va - vma_start) | (flags & !WRITABLE)
                    };
                    self.tables.set(physical, va, entry)?;
                } else if flags != 0 && !vma.lazy {
                    self.back_page(physical, va, flags)?;
                }
                va += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// Gives the shared page at `va` (entry `old`, see [`COPY_ON_WRITE`]) a frame of its own
    /// with access `flags` (0: parked): a copy, the shared frame going into `retired` (one
    /// hold given up when it is freed), or the frame itself once no other address space
    /// holds it. Then no other address space can have a translation of it either: each
    /// that held it gave it up through [`Physical::free`], which makes KVM forget them.
    fn unshare(
        &mut self,
        physical: &Physical,
        va: u64,
        old: u64,
        flags: u64,
        retired: &mut Retired,
    ) -> Result<(), MmError> {
        let frame = old & ADDRESS_MASK;
        // A lowered access needs a fresh frame even when this is the last holder (see
        // `migrate`).
        // (Claimed, a frame holding a page of an image file stops being shared with
        // mappings made later: it may change now.)
        let frame = if !physical.claim(frame) {
            let fresh = self.migrate(physical, frame)?;
            retired.shared.push(frame);
            fresh
        } else if lowers(old, flags) {
            let fresh = self.migrate(physical, frame)?;
            retired.frames.push(frame);
            fresh
        } else {
            frame
        };
        self.tables.set(physical, va, frame | flags | OWNED)?;
        if old & BORROWED != 0 {
            self.pages_borrowed -= 1;
        }
        Ok(())
    }

    /// A copy of `frame` in a fresh frame, for a page whose access is being lowered.
    ///
    /// KVM's shadow MMU (and a TLB) may still hold the old, wider translation: the VMM writes
    /// page tables from the host, which KVM does not see, and KVM only re-reads a guest entry
    /// when a translation is missing or too narrow. Giving the page a new frame and discarding
    /// the old one makes the host invalidate every translation of the old frame (KVM's MMU
    /// notifier), so the lowered access holds from the next instruction. Widening needs none
    /// of this: a too-narrow translation faults and KVM re-reads the entry.
    fn migrate(&mut self, physical: &Physical, frame: u64) -> Result<u64, MmError> {
        let fresh = physical.alloc().ok_or(MmError::NoMemory)?;
        let mut page = [0u8; PAGE_SIZE as usize];
        if !physical.ram.read(frame, &mut page) || !physical.ram.write(fresh, &page) {
            physical.free(&mut vec![fresh]);
            return Err(MmError::NoMemory);
        }
        Ok(fresh)
    }

    /// Whether every page of `[start, end)` is in some area.
    fn covered(&self, start: u64, end: u64) -> bool {
        let mut at = start;
        if let Some((_, vma)) = self.vmas.range(..=start).next_back()
            && vma.end > start
        {
            at = vma.end;
        } else if start < end {
            return false;
        }
        while at < end {
            match self.vmas.get(&at) {
                Some(vma) => at = vma.end,
                None => return false,
            }
        }
        true
    }

    /// A free range of `len` bytes for `mmap`, top-down below `mmap_top`.
    pub(crate) fn find_free(&self, len: u64) -> Option<u64> {
        let mut top = self.mmap_top;
        for (&start, vma) in self.vmas.range(..self.mmap_top).rev() {
            if vma.end <= top && top - vma.end >= len {
                return Some(top - len);
            }
            top = top.min(start);
        }
        let floor = self.brk_base.max(USER_MIN);
        (top >= floor && top - floor >= len).then(|| top - len)
    }

    /// Whether `[start, end)` overlaps no area.
    pub(crate) fn is_free(&self, start: u64, end: u64) -> bool {
        if let Some((_, vma)) = self.vmas.range(..end).next_back() {
            return vma.end <= start;
        }
        true
    }

    /// Sets where the heap begins (just past the executable).
    pub(crate) fn set_brk_base(&mut self, base: u64) {
        self.brk_base = base;
        self.brk = base;
    }

    /// `brk`: moves the heap's end to `wanted` if it can, and returns the end either way.
    pub(crate) fn brk(&mut self, physical: &Physical, wanted: u64) -> u64 {
        if wanted < self.brk_base || wanted >= self.mmap_top {
            return self.brk;
        }
        let (Some(old_end), Some(new_end)) = (page_ceil(self.brk), page_ceil(wanted)) else {
            return self.brk;
        };
        if new_end > old_end {
            if !self.is_free(old_end, new_end) {
                return self.brk;
            }
            let rw = PROT_READ | PROT_WRITE;
            if self
                .map_fixed(physical, old_end, new_end, rw, false, Backing::Anonymous)
                .is_err()
            {
                return self.brk;
            }
        } else if new_end < old_end && self.unmap(physical, new_end, old_end).is_err() {
            return self.brk;
        }
        self.brk = wanted;
        self.brk
    }

    /// Backs the page holding `va` if it lies in an accessible area and has no page yet (a
    /// stack growing down, or a buffer there the VMM is asked to fill). Whether it did.
    pub(crate) fn fault_in(&mut self, physical: &Physical, va: u64, write: bool) -> bool {
        let page = page_floor(va);
        let Some((_, vma)) = self.vmas.range(..=page).next_back() else {
            return false;
        };
        let vma = *vma;
        if vma.end <= page || vma.backing != Backing::Anonymous {
            return false;
        }
        let allowed = if write {
            PROT_WRITE
        } else {
            PROT_READ | PROT_WRITE | PROT_EXEC
        };
        if vma.prot & allowed == 0 || self.tables.get(physical, page) != 0 {
            return false;
        }
        self.back_page(physical, page, leaf_flags(vma.prot)).is_ok()
    }

    /// `mremap`: shrinks, grows in place, or (with `may_move`) moves `[old, old + old_len)` to
    /// a new place of `new_len` bytes (its pages copied into fresh frames there).
    pub(crate) fn remap(
        &mut self,
        physical: &Physical,
        old: u64,
        old_len: u64,
        new_len: u64,
        may_move: bool,
    ) -> Result<u64, MmError> {
        let old_end = old.checked_add(old_len).ok_or(MmError::Fault)?;
        if old_len == 0 || old_end > USER_SYSTEM_BASE || !self.covered(old, old_end) {
            return Err(MmError::Fault);
        }
        if new_len <= old_len {
            self.unmap(physical, old + new_len, old_end)?;
            return Ok(old);
        }
        let areas = self.carve(old, old_end);
        if areas
            .iter()
            .any(|(_, vma)| vma.backing != Backing::Anonymous)
        {
            return Err(MmError::Invalid);
        }
        let last = areas.last().map(|(_, vma)| *vma).ok_or(MmError::Fault)?;
        // Linux grows one mapping: a range over areas of different access is several there.
        if areas.iter().any(|(_, vma)| vma.prot != last.prot) {
            return Err(MmError::Fault);
        }
        let grown_end = old.checked_add(new_len).ok_or(MmError::NoMemory)?;
        if grown_end <= USER_SYSTEM_BASE && self.is_free(old_end, grown_end) {
            self.map_fixed(
                physical,
                old_end,
                grown_end,
                last.prot,
                last.lazy,
                Backing::Anonymous,
            )?;
            return Ok(old);
        }
        if !may_move {
            return Err(MmError::NoMemory);
        }
        let new = self.find_free(new_len).ok_or(MmError::NoMemory)?;
        // Moved by copying into fresh frames and freeing the old ones, not by moving entries:
        // the old addresses' translations must die with their frames (see `migrate`).
        if let Err(error) = self.move_areas(physical, &areas, old, new) {
            let _ = self.unmap(physical, new, new + old_len);
            return Err(error);
        }
        if let Err(error) = self.map_fixed(
            physical,
            new + old_len,
            new + new_len,
            last.prot,
            last.lazy,
            Backing::Anonymous,
        ) {
            let _ = self.unmap(physical, new, new + new_len);
            return Err(error);
        }
        self.unmap(physical, old, old_end)?;
        Ok(new)
    }

    /// `remap`'s move: each area of `areas` (taken from `[old, ..)`) mapped again at the same
    /// offset from `new`, and a copy in a frame of its own for each page that had one
    /// (parked pages stay parked).
    fn move_areas(
        &mut self,
        physical: &Physical,
        areas: &[(u64, Vma)],
        old: u64,
        new: u64,
    ) -> Result<(), MmError> {
        let mut page = [0u8; PAGE_SIZE as usize];
        for &(start, vma) in areas {
            let target = new + (start - old);
            let end = target + (vma.end - start);
            self.map_fixed(physical, target, end, vma.prot, true, Backing::Anonymous)?;
            if let Some(moved) = self.vmas.get_mut(&target) {
                moved.lazy = vma.lazy;
            }
            let mut va = start;
            while va < vma.end {
                let entry = self.tables.get(physical, va);
                if entry & OWNED != 0 {
                    let to = target + (va - start);
                    self.back_page(physical, to, leaf_flags(vma.prot))?;
                    let fresh = self.tables.get(physical, to) & ADDRESS_MASK;
                    if !(physical.ram.read(entry & ADDRESS_MASK, &mut page)
                        && physical.ram.write(fresh, &page))
                    {
                        return Err(MmError::NoMemory);
                    }
                }
                va += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// `madvise(MADV_DONTNEED)`: the task's pages in `[start, end)` read as zero afterwards
    /// (their frames stay the task's; the host gets the memory back until touched). A page
    /// shared since a fork gets a zeroed frame of its own, which may be `NoMemory`.
    pub(crate) fn discard(
        &mut self,
        physical: &Physical,
        start: u64,
        end: u64,
    ) -> Result<(), MmError> {
        let areas: Vec<(u64, Vma)> = self
            .vmas
            .range(..end)
            .filter(|(_, vma)| vma.end > start)
            .map(|(s, vma)| (*s, *vma))
            .collect();
        let mut retired = Vec::new();
        let done = self.discard_areas(physical, areas, start, end, &mut retired);
        physical.free(&mut retired);
        done
    }

    /// `discard`'s page-by-page work, giving up shared frames into `retired`.
    fn discard_areas(
        &mut self,
        physical: &Physical,
        areas: Vec<(u64, Vma)>,
        start: u64,
        end: u64,
        retired: &mut Vec<u64>,
    ) -> Result<(), MmError> {
        for (area_start, vma) in areas {
            let mut va = area_start.max(start);
            while va < vma.end.min(end) {
                let entry = self.tables.get(physical, va);
                let frame = entry & ADDRESS_MASK;
                if entry & COPY_ON_WRITE != 0 && !physical.claim(frame) {
                    // Shared since a fork: this address space alone gets a zeroed frame.
                    let fresh = physical.alloc().ok_or(MmError::NoMemory)?;
                    let flags = entry & !(ADDRESS_MASK | COPY_ON_WRITE | BORROWED);
                    if let Err(error) = self.tables.set(physical, va, fresh | flags) {
                        physical.free(&mut vec![fresh]);
                        return Err(error.into());
                    }
                    if entry & BORROWED != 0 {
                        self.pages_borrowed -= 1;
                    }
                    retired.push(frame);
                } else if entry & OWNED != 0 {
                    physical.ram.discard(frame, PAGE_SIZE);
                }
                va += PAGE_SIZE;
            }
        }
        Ok(())
    }

    /// The shared object and its page index mapped at `va`, if `va` is in a shared area.
    pub(crate) fn shared_at(&self, va: u64) -> Option<(u32, u64)> {
        let (start, vma) = self.vmas.range(..=va).next_back()?;
        match vma.backing {
            Backing::Shared { id, page } if va < vma.end => {
                Some((id, page + (va - start) / PAGE_SIZE))
            }
            _ => None,
        }
    }

    /// The shared areas overlapping `[start, end)`: object, first and last page index.
    pub(crate) fn shared_in(&self, start: u64, end: u64) -> Vec<(u32, u64, u64)> {
        self.vmas
            .range(..end)
            .filter(|(area, vma)| vma.end > start && **area < end)
            .filter_map(|(area, vma)| match vma.backing {
                Backing::Shared { id, page } => {
                    let from = start.max(*area);
                    let to = end.min(vma.end);
                    Some((
                        id,
                        page + (from - area) / PAGE_SIZE,
                        page + (to - 1 - area) / PAGE_SIZE,
                    ))
                }
                _ => None,
            })
            .collect()
    }

    /// Guest-physical address of user address `va` as ring 3 may access it.
    pub(crate) fn translate(&self, physical: &Physical, va: u64, write: bool) -> Option<u64> {
        self.tables.translate_user(physical, va, write)
    }

    /// Writes `bytes` at `va` into pages this address space owns, whatever their protection
    /// (the loader's segments, a private file mapping being filled): `Fault` where a page is
    /// not owned.
    pub(crate) fn fill(&self, physical: &Physical, va: u64, bytes: &[u8]) -> Result<(), MmError> {
        let mut done = 0usize;
        while done < bytes.len() {
            let at = va + done as u64;
            let chunk = ((PAGE_SIZE - at % PAGE_SIZE) as usize).min(bytes.len() - done);
            let gpa = self.translate_owned(physical, at).ok_or(MmError::Fault)?;
            if !physical.ram.write(gpa, &bytes[done..done + chunk]) {
                return Err(MmError::Fault);
            }
            done += chunk;
        }
        Ok(())
    }

    /// Guest-physical address of `va` whatever its protection (for the loader writing
    /// read-only segments), if it is backed by this task's RAM in a frame of its own (not
    /// one shared since a fork).
    pub(crate) fn translate_owned(&self, physical: &Physical, va: u64) -> Option<u64> {
        let entry = self.tables.get(physical, va);
        (entry & (OWNED | COPY_ON_WRITE) == OWNED)
            .then_some((entry & ADDRESS_MASK) | (va & (PAGE_SIZE - 1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypervisor::vm::memory::GuestRam;
    use crate::hypervisor::vm::system::SyscallPath;
    use std::time::Instant;

    fn setup(pages: u64) -> (Physical, SharedPages) {
        let physical = Physical::new(
            GuestRam::new(pages * PAGE_SIZE).expect("ram"),
            Instant::now(),
        );
        let shared = SharedPages::build(&physical, SyscallPath::Ring3Trampoline).expect("shared");
        (physical, shared)
    }

    #[test]
    fn map_protect_unmap_keep_frames_balanced() {
        let (physical, shared) = setup(256);
        let before = physical.free_frames();
        let mut mm = Mm::new(&physical, &shared, 0x7000_0000).expect("mm");
        let rw = PROT_READ | PROT_WRITE;
        mm.map_fixed(
            &physical,
            0x40_0000,
            0x40_8000,
            rw,
            false,
            Backing::Anonymous,
        )
        .expect("map");
        assert!(mm.translate(&physical, 0x40_1000, true).is_some());
        mm.protect(&physical, 0x40_2000, 0x40_4000, 0)
            .expect("protect none");
        assert!(mm.translate(&physical, 0x40_2000, false).is_none());
        mm.protect(&physical, 0x40_2000, 0x40_4000, PROT_READ)
            .expect("protect read");
        assert!(mm.translate(&physical, 0x40_2000, false).is_some());
        assert!(mm.translate(&physical, 0x40_2000, true).is_none());
        assert_eq!(mm.vmas.len(), 3);
        mm.unmap(&physical, 0x40_1000, 0x40_3000).expect("unmap");
        assert!(mm.translate(&physical, 0x40_1000, false).is_none());
        assert_eq!(mm.bytes_owned(), 6 * PAGE_SIZE);
        let found = mm.find_free(0x10_0000).expect("room");
        assert_eq!(found, 0x7000_0000 - 0x10_0000);
        mm.destroy(&physical);
        assert_eq!(physical.free_frames(), before, "every frame came back");
    }

    /// A mapping moved to grow keeps every page in an area: unmapping where it went gives
    /// back each frame it took, with none left in the tables.
    #[test]
    fn a_moved_mapping_is_all_areas_and_gives_every_frame_back() {
        let (physical, shared) = setup(256);
        let before = physical.free_frames();
        let mut mm = Mm::new(&physical, &shared, 0x7000_0000).expect("mm");
        let rw = PROT_READ | PROT_WRITE;
        let (old, blocker) = (0x40_0000, 0x40_2000);
        mm.map_fixed(&physical, old, blocker, rw, false, Backing::Anonymous)
            .expect("map");
        mm.map_fixed(
            &physical,
            blocker,
            blocker + PAGE_SIZE,
            PROT_READ,
            false,
            Backing::Anonymous,
        )
        .expect("blocker");
        mm.fill(&physical, old + 5, b"kept").expect("fill");
        let new = mm
            .remap(&physical, old, 2 * PAGE_SIZE, 8 * PAGE_SIZE, true)
            .expect("moved");
        assert_ne!(new, old);
        assert!(
            mm.covered(new, new + 8 * PAGE_SIZE),
            "the grown part is mapped"
        );
        assert!(mm.is_free(old, blocker), "the old place is free");
        let gpa = mm.translate(&physical, new + 5, false).expect("moved page");
        let mut word = [0u8; 4];
        assert!(physical.ram.read(gpa, &mut word));
        assert_eq!(&word, b"kept");
        assert_eq!(mm.bytes_owned(), 9 * PAGE_SIZE);
        mm.unmap(&physical, new, new + 8 * PAGE_SIZE)
            .expect("unmap");
        assert_eq!(mm.bytes_owned(), PAGE_SIZE, "the blocker alone");
        let mut left = 0;
        mm.tables
            .for_each_leaf(&physical, new, new + 8 * PAGE_SIZE, &mut |_, _| {
                left += 1;
                Ok(())
            })
            .expect("walk");
        assert_eq!(left, 0, "no entry outlives its area");
        mm.destroy(&physical);
        assert_eq!(physical.free_frames(), before, "every frame came back");
    }

    /// Fork shares read-only pages and copies writable ones; a change of protection or a
    /// discard of a shared page gives that process a copy and leaves the other's alone, and
    /// the last holder changes it in place; every frame comes back.
    #[test]
    fn fork_shares_read_only_pages_until_one_side_changes_them() {
        let (physical, shared) = setup(512);
        let before = physical.free_frames();
        let mut parent = Mm::new(&physical, &shared, 0x7000_0000).expect("mm");
        let (rw, ro) = (PROT_READ | PROT_WRITE, PROT_READ);
        let base = 0x40_0000;
        parent
            .map_fixed(
                &physical,
                base,
                base + 4 * PAGE_SIZE,
                rw,
                false,
                Backing::Anonymous,
            )
            .expect("map");
        for page in 0..4 {
            parent
                .fill(&physical, base + page * PAGE_SIZE, &[b'a' + page as u8; 8])
                .expect("fill");
        }
        parent
            .protect(&physical, base, base + 3 * PAGE_SIZE, ro)
            .expect("read-only");
        let gpa = |mm: &Mm, page: u64| mm.translate(&physical, base + page * PAGE_SIZE, false);
        let byte = |mm: &Mm, page: u64| {
            let mut one = [0u8];
            assert!(physical.ram.read(gpa(mm, page).expect("mapped"), &mut one));
            one[0]
        };
        let empty_cost = {
            let free = physical.free_frames();
            let empty = Mm::new(&physical, &shared, 0x7000_0000).expect("mm");
            let cost = free - physical.free_frames();
            empty.destroy(&physical);
            cost
        };
        let free_before_fork = physical.free_frames();
        let mut child = parent.fork_copy(&physical, &shared).expect("fork");
        // Its system pages, three tables for the area, and one copy (not four).
        assert_eq!(
            free_before_fork - physical.free_frames(),
            empty_cost + 3 + 1
        );
        for page in 0..3 {
            assert_eq!(
                gpa(&child, page),
                gpa(&parent, page),
                "page {page} is shared"
            );
        }
        assert_ne!(
            gpa(&child, 3),
            gpa(&parent, 3),
            "the writable page is copied"
        );
        assert_eq!(byte(&child, 3), b'd');
        assert_eq!(child.bytes_owned(), 4 * PAGE_SIZE);
        assert_eq!(
            child.bytes_charged(),
            PAGE_SIZE,
            "shared pages count in the parent"
        );
        assert_eq!(parent.bytes_charged(), 4 * PAGE_SIZE);
        assert!(
            child.translate_owned(&physical, base).is_none(),
            "never written"
        );

        // The parent makes page 0 writable: it gets a copy; the child keeps the original.
        let original = gpa(&child, 0);
        parent
            .protect(&physical, base, base + PAGE_SIZE, rw)
            .expect("writable");
        let copy = parent
            .translate(&physical, base, true)
            .expect("writable now");
        assert_ne!(Some(copy & ADDRESS_MASK), original);
        assert!(physical.ram.write(copy, b"A"));
        assert_eq!((byte(&parent, 0), byte(&child, 0)), (b'A', b'a'));
        assert_eq!(gpa(&child, 0), original);

        // The child discards page 1: zero for it, the parent's contents unchanged.
        child
            .discard(&physical, base + PAGE_SIZE, base + 2 * PAGE_SIZE)
            .expect("discard");
        assert_eq!((byte(&child, 1), byte(&parent, 1)), (0, b'b'));

        // The child unmaps page 2 (the parent's frame stays), then ends.
        child
            .unmap(&physical, base + 2 * PAGE_SIZE, base + 3 * PAGE_SIZE)
            .expect("unmap");
        assert_eq!(byte(&parent, 2), b'c');
        child.destroy(&physical);
        assert_eq!(
            physical.free_frames(),
            free_before_fork,
            "the child's frames came back (the original of page 0 with them)"
        );
        // Now the parent alone holds page 2's frame: made writable in place.
        let alone = gpa(&parent, 2);
        parent
            .protect(&physical, base + 2 * PAGE_SIZE, base + 3 * PAGE_SIZE, rw)
            .expect("writable");
        assert_eq!(gpa(&parent, 2), alone, "no copy for the last holder");
        assert!(
            parent
                .translate_owned(&physical, base + 2 * PAGE_SIZE)
                .is_some()
        );
        parent.destroy(&physical);
        assert_eq!(physical.free_frames(), before, "every frame came back");
    }

    #[test]
    fn running_out_of_ram_is_enomem_and_leaks_nothing() {
        let (physical, shared) = setup(64);
        let mut mm = Mm::new(&physical, &shared, 0x7000_0000).expect("mm");
        let before = physical.free_frames();
        let rw = PROT_READ | PROT_WRITE;
        assert_eq!(
            mm.map_fixed(
                &physical,
                0x40_0000,
                0x40_0000 + 100 * PAGE_SIZE,
                rw,
                false,
                Backing::Anonymous
            ),
            Err(MmError::NoMemory)
        );
        assert_eq!(physical.free_frames(), before);
        mm.destroy(&physical);
    }
}
