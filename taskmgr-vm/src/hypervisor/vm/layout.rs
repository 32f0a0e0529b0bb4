//! Where things live: the guest-physical map of a domain and the virtual map of each task.
//!
//! Guest-physical (one map per domain, shared by its tasks):
//!
//! ```text
//! 0 ..................... RAM: MemoryMB of guest RAM, one memory slot. Page tables, the
//!                         descriptor tables and every page a task maps come from it.
//! SYSCALL_EXIT_GPA ...... no memory slot: a store here is a KVM_EXIT_MMIO (the syscall exit).
//! WINDOW_GPA_BASE ....... read-only file windows (the read fast path), one slot each.
//! ```
//!
//! Virtual (one map per task, built by the VMM in the task's own page tables):
//!
//! ```text
//! 0x0000_0000_0001_0000 . lowest address a task may map (mmap_min_addr, as Linux).
//! ELF_DYN_BASE .......... where a static-PIE executable is loaded.
//! ... brk heap grows up; mmap areas are placed top-down below STACK_TOP - stack ...
//! STACK_TOP ............. the initial stack (argv, envp, auxv) grows down from here.
//! USER_SYSTEM_BASE ...... reserved: the syscall trampoline (user R-X), the fast-path
//!                         page (user RW), the syscall exit page (user, no RAM behind it).
//! USER_TOP .............. end of the canonical lower half.
//! KERNEL_BASE ........... supervisor only: IDT, exception stubs, GDT+TSS, ring-0 stack.
//! ```

/// Bytes in a page: the only page size the domain uses.
pub(crate) const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub(crate) const PAGE_SHIFT: u32 = 12;

/// The guest-physical address whose store means "system call": it has no memory slot, so the
/// trampoline's store to it ends KVM_RUN with an MMIO exit.
pub(crate) const SYSCALL_EXIT_GPA: u64 = 0xf_0000_0000;
/// First guest-physical address of the file windows.
pub(crate) const WINDOW_GPA_BASE: u64 = 0x10_0000_0000;
/// Guest-physical space for file windows: 64 GiB, past any RAM a domain may have.
pub(crate) const WINDOW_GPA_BYTES: u64 = 0x10_0000_0000;
/// Largest RAM a domain may have: RAM must end below [`SYSCALL_EXIT_GPA`].
pub(crate) const RAM_BYTES_MAX: u64 = SYSCALL_EXIT_GPA;

/// Lowest virtual address a task may map (Linux's default `mmap_min_addr`), so that null
/// pointer dereferences fault.
pub(crate) const USER_MIN: u64 = 0x1_0000;
/// Load base of a position-independent executable (Linux's `ELF_ET_DYN_BASE`, rounded).
pub(crate) const ELF_DYN_BASE: u64 = 0x5555_5555_4000;
/// Start of the reserved area at the top of the user half: nothing a task maps goes here.
pub(crate) const USER_SYSTEM_BASE: u64 = 0x7fff_f000_0000;
/// The syscall trampoline's page (user, read and execute): MSR_LSTAR points here.
pub(crate) const TRAMPOLINE_VA: u64 = USER_SYSTEM_BASE;
/// The fast-path page (user, read-write): the window table and the trampoline's save area.
pub(crate) const FAST_PAGE_VA: u64 = USER_SYSTEM_BASE + PAGE_SIZE;
/// The syscall exit page: user-writable, mapped to [`SYSCALL_EXIT_GPA`].
pub(crate) const EXIT_PAGE_VA: u64 = USER_SYSTEM_BASE + 2 * PAGE_SIZE;
/// One past the highest user address (47-bit canonical lower half).
pub(crate) const USER_TOP: u64 = 0x8000_0000_0000;
/// The initial stack's top; a gap separates it from the reserved area.
pub(crate) const STACK_TOP: u64 = USER_SYSTEM_BASE - 0x100_0000;

/// The supervisor-only area: the last 512 GiB of the address space (PML4 slot 511).
pub(crate) const KERNEL_BASE: u64 = 0xffff_ff80_0000_0000;
/// The IDT (shared by every task of a domain).
pub(crate) const IDT_VA: u64 = KERNEL_BASE;
/// The exception stubs (shared).
pub(crate) const STUBS_VA: u64 = KERNEL_BASE + PAGE_SIZE;
/// This task's GDT and TSS.
pub(crate) const GDT_VA: u64 = KERNEL_BASE + 2 * PAGE_SIZE;
/// Offset of the TSS within the GDT page.
pub(crate) const TSS_OFFSET: u64 = 0x800;
/// This task's ring-0 stack page (below it, an unmapped guard page at `KERNEL_BASE + 3 pages`).
pub(crate) const KSTACK_VA: u64 = KERNEL_BASE + 4 * PAGE_SIZE;

/// Each further thread of a task has its own GDT+TSS page and ring-0 stack page here: slot
/// `n` (1 and up) at `THREAD_AREA_BASE + (n - 1) * THREAD_AREA_STRIDE`, the stack page two
/// pages in (a guard page between). Slot 0 is the task's first thread, at `GDT_VA`/`KSTACK_VA`.
pub(crate) const THREAD_AREA_BASE: u64 = KERNEL_BASE + 0x10_0000;
/// Bytes between two threads' kernel pages.
pub(crate) const THREAD_AREA_STRIDE: u64 = 4 * PAGE_SIZE;

/// The kernel pages of one thread: where its GDT (with its TSS) and ring-0 stack are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KernelSlot {
    pub(crate) gdt_va: u64,
    pub(crate) kstack_va: u64,
    pub(crate) kstack_gpa: u64,
}

impl KernelSlot {
    /// The addresses of slot `index` (the GPA of its stack is filled in when it is mapped).
    pub(crate) const fn at(index: u64) -> KernelSlot {
        if index == 0 {
            return KernelSlot {
                gdt_va: GDT_VA,
                kstack_va: KSTACK_VA,
                kstack_gpa: 0,
            };
        }
        let base = THREAD_AREA_BASE + (index - 1) * THREAD_AREA_STRIDE;
        KernelSlot {
            gdt_va: base,
            kstack_va: base + 2 * PAGE_SIZE,
            kstack_gpa: 0,
        }
    }
}

/// GDT selectors (Linux's layout, so that STAR works for both `syscall` and `sysret`).
pub(crate) const KERNEL_CS: u16 = 0x08;
/// User data with RPL 3.
pub(crate) const USER_DS: u16 = 0x20 | 3;
/// 64-bit user code with RPL 3.
pub(crate) const USER_CS: u16 = 0x28 | 3;
/// The TSS descriptor (16 bytes, entries 6 and 7).
pub(crate) const TSS_SELECTOR: u16 = 0x30;

/// Bytes between two exception stubs.
pub(crate) const STUB_BYTES: u64 = 16;
/// Exception vectors with stubs and IDT gates (the architecture's 32).
pub(crate) const VECTORS: u64 = 32;

const _: () =
    assert!(SYSCALL_EXIT_GPA.is_multiple_of(PAGE_SIZE) && WINDOW_GPA_BASE > SYSCALL_EXIT_GPA);
const _: () = assert!(STACK_TOP < USER_SYSTEM_BASE && EXIT_PAGE_VA < USER_TOP);
const _: () = assert!(TSS_OFFSET + 0x68 <= PAGE_SIZE && STUB_BYTES * VECTORS <= PAGE_SIZE);

/// `value` rounded down to a page boundary.
pub(crate) const fn page_floor(value: u64) -> u64 {
    value & !(PAGE_SIZE - 1)
}

/// `value` rounded up to a page boundary, or `None` on overflow.
pub(crate) const fn page_ceil(value: u64) -> Option<u64> {
    match value.checked_add(PAGE_SIZE - 1) {
        Some(value) => Some(value & !(PAGE_SIZE - 1)),
        None => None,
    }
}
