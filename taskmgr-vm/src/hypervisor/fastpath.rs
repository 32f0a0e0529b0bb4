//! The read fast path: `read` and `pread64` of a file the VMM has mapped into the domain are
//! served by the trampoline in the guest, with no exit.
//!
//! When a task has read a regular file it opened read-only [`WINDOW_AFTER_READS`] times
//! through the VMM (and its size is between [`WINDOW_BYTES_MIN`] and [`WINDOW_BYTES_MAX`]),
//! the VMM maps the file read-only into the domain as a memory slot (`vm/windows.rs`), maps
//! that into the task's address space (read-only, user), and records it in the task's
//! fast-path page: for descriptor `fd` below [`FAST_FDS`], the window's address, the file's
//! size and the read position (where the descriptor's reads had got to). The trampoline
//! checks the call number and descriptor, copies `min(count, size - pos)` bytes with
//! `rep movsb` into the caller's buffer, advances the position and returns: about 1.5 µs
//! against 35 µs for an exit.
//!
//! Everything on the guest side is untrusted. The fast-path page is writable by the task, so
//! a task can point a table entry anywhere; the trampoline then copies from the task's own
//! memory with the task's own permissions, which harms only the task. The VMM decides what is
//! windowed from its own records (the open file's [`WindowSlot`]), never from the table, and
//! reads back only a position from it. A copy that faults (a bad buffer, a window the task
//! unmapped) arrives as a page fault at the `rep movsb`; the VMM then restores the caller's
//! registers from the save area and serves the call itself, so the task gets `EFAULT` as from
//! Linux, or its data.

use crate::hypervisor::cpu::Vcpu;
use crate::hypervisor::vm::layout::{PAGE_SIZE, TRAMPOLINE_VA, USER_CS, USER_DS};
use crate::hypervisor::vm::system::SyscallPath;
use crate::hypervisor::vm::windows::Window;
use crate::kernel::fds::{Kind, OpenFile};
use crate::kernel::mm::{Backing, PROT_READ};
use crate::kernel::process::Process;
use std::sync::Arc;
use xeno_taskmgr_kit::lock;

/// Smallest file given a window: below it, the slot update costs more than the exits saved.
pub(crate) const WINDOW_BYTES_MIN: u64 = 64 * 1024;
/// Largest file given a window (guest page tables for it come from the domain's RAM: 2 MiB
/// of tables per GiB).
pub(crate) const WINDOW_BYTES_MAX: u64 = 1 << 30;
/// Reads through the VMM after which a file gets a window. A window is dear to make and
/// dearer to drop (adding a memory slot is about 60 µs; removing one makes KVM drop every
/// shadow page table of the domain, 150-250 µs and a fault for each page touched after),
/// against about 33 µs saved per read: the files programs open to read a header and then
/// `mmap` (every library the dynamic loader maps) or to read whole in a call or two are
/// better without one, and a file read more often than this soon repays it.
pub(crate) const WINDOW_AFTER_READS: u32 = 8;
/// Descriptors the fast-path table covers.
pub(crate) const FAST_FDS: u64 = 126;

/// Fast-path page layout: the trampoline's save area, then the table.
const SAVE_RCX: u64 = 0;
const SAVE_R11: u64 = 8;
const SAVE_RDI: u64 = 16;
const SAVE_RSI: u64 = 24;
const TABLE: u64 = 64;
/// Bytes per table entry: window address, file size, position, unused.
const ENTRY_BYTES: u64 = 32;

const _: () = assert!(TABLE + FAST_FDS * ENTRY_BYTES <= PAGE_SIZE);

/// The trampoline, assembled from this source (GNU as, linked at 0 with the fast-path page
/// at 0x1000 and the exit page at 0x2000: `ld -Ttext=0 --defsym save_rcx=0x1000 …`, then
/// `objcopy -O binary -j .text`):
///
/// ```text
/// _start:   test %rax,%rax; jz do_read; cmp $17,%rax; je do_pread; jmp slow
/// do_read:  cmp $126,%rdi; jae slow
///           mov %rcx,save_rcx(%rip); mov %r11,save_r11(%rip)
///           mov %rdi,%r11; shl $5,%r11; lea table(%rip),%rcx; add %rcx,%r11
///           mov (%r11),%rcx; test %rcx,%rcx; jz restore_slow      # no window
///           mov 8(%r11),%rax; sub 16(%r11),%rax; jbe eof_read       # size - pos
///           cmp %rdx,%rax; cmova %rdx,%rax                          # n = min(count, left)
///           add 16(%r11),%rcx                                       # src = window + pos
///           mov %rdi,save_rdi(%rip); mov %rsi,save_rsi(%rip)
///           mov %rsi,%rdi; mov %rcx,%rsi; mov %rax,%rcx; cld
/// copy_read: rep movsb
///           add %rax,16(%r11)                                       # pos += n
///           mov save_rdi(%rip),%rdi; mov save_rsi(%rip),%rsi; jmp done
/// do_pread: the same with the offset in %r10 (negative offsets go to the VMM), no pos
///           update, `jbe eof_pread`, falling through to done
/// copy_pread: rep movsb
/// done:     testl $0x400,save_r11(%rip); jz 1f; std                 # the caller's DF
/// 1:        mov save_r11(%rip),%r11; mov save_rcx(%rip),%rcx; jmp ret_insn
/// eof_pread: mov $17,%eax; jmp restore_slow
/// eof_read: xor %eax,%eax                                           # at or past the size
/// restore_slow: mov save_rcx(%rip),%rcx; mov save_r11(%rip),%r11
/// slow:     movb %al,exit_page(%rip)                                # the syscall exit
/// ret_insn: jmp *%rcx                                               # or sysretq
/// ```
///
/// A read at or past the size the window was made with goes to the VMM: the file may have
/// grown since (through another descriptor, or another task of the domain), and only the host
/// file knows.
const TRAMPOLINE: [u8; 321] = [
    0x48, 0x85, 0xc0, 0x74, 0x0f, 0x48, 0x83, 0xf8, 0x11, 0x0f, 0x84, 0x81, 0x00, 0x00, 0x00, 0xe9,
    0x25, 0x01, 0x00, 0x00, 0x48, 0x83, 0xff, 0x7e, 0x0f, 0x83, 0x1b, 0x01, 0x00, 0x00, 0x48, 0x89,
    0x0d, 0xdb, 0x0f, 0x00, 0x00, 0x4c, 0x89, 0x1d, 0xdc, 0x0f, 0x00, 0x00, 0x49, 0x89, 0xfb, 0x49,
    0xc1, 0xe3, 0x05, 0x48, 0x8d, 0x0d, 0x06, 0x10, 0x00, 0x00, 0x49, 0x01, 0xcb, 0x49, 0x8b, 0x0b,
    0x48, 0x85, 0xc9, 0x0f, 0x84, 0xe2, 0x00, 0x00, 0x00, 0x49, 0x8b, 0x43, 0x08, 0x49, 0x2b, 0x43,
    0x10, 0x0f, 0x86, 0xd2, 0x00, 0x00, 0x00, 0x48, 0x39, 0xd0, 0x48, 0x0f, 0x47, 0xc2, 0x49, 0x03,
    0x4b, 0x10, 0x48, 0x89, 0x3d, 0xa7, 0x0f, 0x00, 0x00, 0x48, 0x89, 0x35, 0xa8, 0x0f, 0x00, 0x00,
    0x48, 0x89, 0xf7, 0x48, 0x89, 0xce, 0x48, 0x89, 0xc1, 0xfc, 0xf3, 0xa4, 0x49, 0x01, 0x43, 0x10,
    0x48, 0x8b, 0x3d, 0x89, 0x0f, 0x00, 0x00, 0x48, 0x8b, 0x35, 0x8a, 0x0f, 0x00, 0x00, 0xeb, 0x75,
    0x48, 0x83, 0xff, 0x7e, 0x0f, 0x83, 0x9f, 0x00, 0x00, 0x00, 0x4d, 0x85, 0xd2, 0x0f, 0x88, 0x96,
    0x00, 0x00, 0x00, 0x48, 0x89, 0x0d, 0x56, 0x0f, 0x00, 0x00, 0x4c, 0x89, 0x1d, 0x57, 0x0f, 0x00,
    0x00, 0x49, 0x89, 0xfb, 0x49, 0xc1, 0xe3, 0x05, 0x48, 0x8d, 0x0d, 0x81, 0x0f, 0x00, 0x00, 0x49,
    0x01, 0xcb, 0x49, 0x8b, 0x0b, 0x48, 0x85, 0xc9, 0x74, 0x61, 0x49, 0x8b, 0x43, 0x08, 0x4c, 0x29,
    0xd0, 0x76, 0x4f, 0x48, 0x39, 0xd0, 0x48, 0x0f, 0x47, 0xc2, 0x4c, 0x01, 0xd1, 0x48, 0x89, 0x3d,
    0x2c, 0x0f, 0x00, 0x00, 0x48, 0x89, 0x35, 0x2d, 0x0f, 0x00, 0x00, 0x48, 0x89, 0xf7, 0x48, 0x89,
    0xce, 0x48, 0x89, 0xc1, 0xfc, 0xf3, 0xa4, 0x48, 0x8b, 0x3d, 0x12, 0x0f, 0x00, 0x00, 0x48, 0x8b,
    0x35, 0x13, 0x0f, 0x00, 0x00, 0xf7, 0x05, 0xf9, 0x0e, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x74,
    0x01, 0xfd, 0x4c, 0x8b, 0x1d, 0xef, 0x0e, 0x00, 0x00, 0x48, 0x8b, 0x0d, 0xe0, 0x0e, 0x00, 0x00,
    0xeb, 0x1d, 0xb8, 0x11, 0x00, 0x00, 0x00, 0xeb, 0x02, 0x31, 0xc0, 0x48, 0x8b, 0x0d, 0xce, 0x0e,
    0x00, 0x00, 0x4c, 0x8b, 0x1d, 0xcf, 0x0e, 0x00, 0x00, 0x88, 0x05, 0xc1, 0x1e, 0x00, 0x00, 0xff,
    0xe1,
];
/// Offsets in [`TRAMPOLINE`]: the two copies, and the return instruction.
const COPY_READ: u64 = 0x7a;
const COPY_PREAD: u64 = 0xf5;
const RET_INSN: usize = 0x13f;

const _: () =
    assert!(TRAMPOLINE[COPY_READ as usize] == 0xf3 && TRAMPOLINE[COPY_PREAD as usize] == 0xf3);
const _: () = assert!(TRAMPOLINE[RET_INSN] == 0xff && TRAMPOLINE.len() == RET_INSN + 2);

/// RFLAGS bits a task may have restored (arithmetic flags, TF, DF, AC, ID): never IOPL.
const USER_RFLAGS_MASK: u64 = 0x25_4dd5;

/// The trampoline page's code for `path`.
pub(crate) fn trampoline(path: SyscallPath) -> Vec<u8> {
    let mut code = TRAMPOLINE.to_vec();
    if path == SyscallPath::Ring0Entry {
        code.truncate(RET_INSN);
        code.extend_from_slice(&[0x48, 0x0f, 0x07]); // sysretq
    }
    code.resize(PAGE_SIZE as usize, 0xcc);
    code
}

/// A file's window, as the VMM records it (the authority on what is windowed).
#[derive(Debug)]
pub(crate) struct WindowSlot {
    window: Window,
    /// The file's size when the window was made: the fast path never reads beyond it.
    size: u64,
    /// The descriptor whose table entry serves it.
    fd: u64,
    /// Where it is mapped in the task.
    va: u64,
}

fn entry_gpa(process: &Process, fd: u64) -> u64 {
    process.mm.fast_page_gpa() + TABLE + fd * ENTRY_BYTES
}

fn write_entry(process: &Process, fd: u64, entry: [u64; 3]) {
    let base = entry_gpa(process, fd);
    for (index, word) in entry.iter().enumerate() {
        process
            .vm
            .physical
            .ram
            .write_u64(base + index as u64 * 8, *word);
    }
}

/// The VMM served a read of `fd`: on the [`WINDOW_AFTER_READS`]th, the file gets a window
/// if it qualifies (opened read-only, held by this one descriptor, in a process that is
/// alone on its address space) and the domain has room.
pub(crate) fn note_read(process: &mut Process, fd: u64, file: &Arc<OpenFile>) {
    let reads = file
        .served_reads
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        .saturating_add(1);
    // Two holders: the descriptor table's and the caller's (a dup, a fork or an epoll set
    // adds more, and a shared read position the table cannot keep).
    if reads != WINDOW_AFTER_READS
        || file.flags() & 3 != 0
        || Arc::strong_count(file) > 2
        || process.shares_address_space()
        || lock(&file.window).is_some()
    {
        return;
    }
    open_window(process, fd, file);
}

/// Gives a read-only file a window, if it qualifies and the domain has room; the table's
/// read position starts where the descriptor's is.
fn open_window(process: &mut Process, fd: u64, file: &Arc<OpenFile>) {
    let Kind::File(handle) = &file.kind else {
        return;
    };
    if fd >= FAST_FDS {
        return;
    }
    use std::io::Seek;
    let Ok(position) = (&*handle).stream_position() else {
        return;
    };
    let Ok(metadata) = handle.metadata() else {
        return;
    };
    let size = metadata.len();
    if !metadata.is_file() || !(WINDOW_BYTES_MIN..=WINDOW_BYTES_MAX).contains(&size) {
        return;
    }
    let vm = Arc::clone(&process.vm);
    let Some(window) = vm.windows.open(vm.vm_fd(), handle, size) else {
        return;
    };
    let Some(va) = process.mm.find_free(window.len) else {
        vm.windows.close(vm.vm_fd(), window);
        return;
    };
    let mapped = process.mm.map_fixed(
        &vm.physical,
        va,
        va + window.len,
        PROT_READ,
        false,
        Backing::Window { gpa: window.gpa },
    );
    if mapped.is_err() {
        let _ = process.mm.unmap(&vm.physical, va, va + window.len);
        vm.windows.close(vm.vm_fd(), window);
        return;
    }
    write_entry(process, fd, [va, size, position]);
    *lock(&file.window) = Some(WindowSlot {
        window,
        size,
        fd,
        va,
    });
}

fn remove(process: &mut Process, slot: WindowSlot) {
    write_entry(process, slot.fd, [0, 0, 0]);
    process.mm.unmap_window(
        &process.vm.physical,
        slot.va,
        slot.window.len,
        slot.window.gpa,
    );
    let vm = Arc::clone(&process.vm);
    vm.windows.close(vm.vm_fd(), slot.window);
}

/// Descriptor `fd` is being closed: drops its window if it has one.
pub(crate) fn close_window(process: &mut Process, fd: u64, file: &Arc<OpenFile>) {
    let slot = {
        let mut held = lock(&file.window);
        match held.as_ref() {
            Some(slot) if slot.fd == fd => held.take(),
            _ => None,
        }
    };
    if let Some(slot) = slot {
        remove(process, slot);
    }
}

/// The file is about to be shared by two descriptors: its reads go back through the VMM, at
/// the position the fast path reached.
pub(crate) fn unwindow_all(process: &mut Process, file: &Arc<OpenFile>) {
    let Some(slot) = lock(&file.window).take() else {
        return;
    };
    let position = read_position(process, slot.fd);
    if let Kind::File(handle) = &file.kind {
        use std::io::{Seek, SeekFrom};
        let _ = (&*handle).seek(SeekFrom::Start(position));
    }
    remove(process, slot);
}

/// A read of windowed `fd` reached the VMM (at or past the window's end): if the file's size
/// changed since the window was made (another descriptor or task truncated or extended it),
/// the window goes, and reads are served from the host file, as Linux would serve them.
pub(crate) fn refresh(process: &mut Process, fd: u64, file: &Arc<OpenFile>) {
    let Kind::File(handle) = &file.kind else {
        return;
    };
    let recorded = match lock(&file.window).as_ref() {
        Some(slot) if slot.fd == fd => slot.size,
        _ => return,
    };
    let current = handle.metadata().map(|m| m.len()).ok();
    if current != Some(recorded) {
        unwindow_all(process, file);
    }
}

/// KVM_RUN failed with EFAULT: the host could not back a guest page, which happens when a
/// windowed file shrank under its window (the pages past the new end are gone). If the vCPU
/// was in one of the trampoline's copies, the call is taken back (the caller's registers as at
/// `syscall`, returning through the trampoline's exit), the window dropped, and `true` returned:
/// the VMM then serves the call from the host file. Otherwise the task touched a window page
/// itself, and `false` is returned (Linux gives SIGBUS for a mapped page past the end).
pub(crate) fn abandon_faulted_copy(process: &mut Process, vcpu: &mut Vcpu) -> bool {
    if vcpu.reload_regs().is_err() || !in_copy(vcpu.regs().rip) {
        return false;
    }
    let ram = &process.vm.physical.ram;
    let save = process.mm.fast_page_gpa();
    let word = |offset: u64| ram.read_u64(save + offset).unwrap_or(0);
    let (rcx, r11, rdi, rsi) = (
        word(SAVE_RCX),
        word(SAVE_R11),
        word(SAVE_RDI),
        word(SAVE_RSI),
    );
    let regs = vcpu.regs_mut();
    regs.rax = if regs.rip == TRAMPOLINE_VA + COPY_PREAD {
        17
    } else {
        0
    };
    regs.rcx = rcx;
    regs.r11 = r11;
    regs.rdi = rdi;
    regs.rsi = rsi;
    regs.rflags = (r11 & USER_RFLAGS_MASK) | 0x2;
    regs.rip = TRAMPOLINE_VA + RET_INSN as u64;
    if let Ok(file) = process.fds.file(rdi) {
        unwindow_all(process, &file);
    }
    true
}

/// Releases a window at the task's end.
pub(crate) fn release(process: &mut Process, file: &Arc<OpenFile>) {
    if let Some(slot) = lock(&file.window).take() {
        remove(process, slot);
    }
}

/// The position the task's table holds for `fd` (clamped to what `lseek` could have set).
fn read_position(process: &Process, fd: u64) -> u64 {
    process
        .vm
        .physical
        .ram
        .read_u64(entry_gpa(process, fd) + 16)
        .unwrap_or(0)
        .min(i64::MAX as u64)
}

/// The read position of `fd` if it is windowed (then the table, not the host file, holds it).
pub(crate) fn window_position(process: &mut Process, fd: u64) -> Option<u64> {
    let file = process.fds.file(fd).ok()?;
    let windowed = matches!(lock(&file.window).as_ref(), Some(slot) if slot.fd == fd);
    windowed.then(|| read_position(process, fd))
}

/// Sets the read position of windowed `fd`.
pub(crate) fn set_window_position(process: &mut Process, fd: u64, position: u64) {
    if window_position(process, fd).is_some() {
        process
            .vm
            .physical
            .ram
            .write_u64(entry_gpa(process, fd) + 16, position);
    }
}

/// Whether a fault at `rip` is one of the trampoline's copies.
pub(crate) fn in_copy(rip: u64) -> bool {
    rip == TRAMPOLINE_VA + COPY_READ || rip == TRAMPOLINE_VA + COPY_PREAD
}

/// A copy faulted: puts the caller's registers back as they were at `syscall`, and makes the
/// exception return to the caller's return address, so that the VMM can serve the call.
pub(crate) fn abandon_copy(process: &mut Process, vcpu: &mut Vcpu) {
    let ram = &process.vm.physical.ram;
    let save = process.mm.fast_page_gpa();
    let word = |offset: u64| ram.read_u64(save + offset).unwrap_or(0);
    let (rcx, r11, rdi, rsi) = (
        word(SAVE_RCX),
        word(SAVE_R11),
        word(SAVE_RDI),
        word(SAVE_RSI),
    );
    let kernel_rsp = vcpu.regs().rsp;
    let regs = vcpu.regs_mut();
    // The frame is error code, rip, cs, rflags, rsp, ss: RIP is what the fault saw.
    let fault_rip = kernel_rsp
        .checked_sub(process.kstack.kstack_va)
        .and_then(|offset| ram.read_u64(process.kstack.kstack_gpa + offset + 8))
        .unwrap_or(0);
    regs.rax = if fault_rip == TRAMPOLINE_VA + COPY_PREAD {
        17
    } else {
        0
    };
    regs.rcx = rcx;
    regs.r11 = r11;
    regs.rdi = rdi;
    regs.rsi = rsi;
    if let Some(offset) = kernel_rsp
        .checked_sub(process.kstack.kstack_va)
        .filter(|offset| offset + 48 <= PAGE_SIZE)
    {
        let frame = process.kstack.kstack_gpa + offset;
        ram.write_u64(frame + 8, rcx);
        ram.write_u64(frame + 16, u64::from(USER_CS));
        ram.write_u64(frame + 24, (r11 & USER_RFLAGS_MASK) | 0x2);
        ram.write_u64(frame + 40, u64::from(USER_DS));
    }
}
