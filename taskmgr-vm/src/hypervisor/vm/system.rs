//! The kernel structures a domain's tasks run on, written by the VMM (no firmware, no boot
//! code): the IDT and its exception stubs, shared by the domain's tasks; the syscall
//! trampoline page, shared; and each task's GDT, TSS and ring-0 stack.
//!
//! Exceptions from ring 3 go through the IDT to a stub of three instructions: `hlt` (the
//! VMM sees KVM_EXIT_HLT and knows the vector from RIP), then, if the VMM lets the task go
//! on, `add rsp, 8` to drop an error code and `iretq` back to ring 3. Nothing else runs in
//! ring 0, which on hosts without hardware virtualization is emulated one instruction at a
//! time.
//!
//! The trampoline is where `syscall` lands (MSR_LSTAR). Its first instruction stores to the
//! syscall exit page, which has no memory behind it, so KVM_RUN returns with an MMIO exit and
//! the VMM emulates the call; then it returns to the caller (`jmp rcx` when `syscall` stayed
//! in ring 3, `sysretq` when it entered ring 0). It never touches the stack: programs keep
//! live data in the 128-byte red zone below RSP. The read fast path (`fastpath.rs`) runs
//! before the store and skips it when it can serve the call itself.

use crate::hypervisor::fastpath;
use crate::hypervisor::vm::layout::{
    KERNEL_CS, PAGE_SIZE, STUB_BYTES, STUBS_VA, TSS_OFFSET, VECTORS,
};
use crate::hypervisor::vm::physical::Physical;

/// How `syscall` reaches the VMM on this host, found by the self-test (`selftest.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallPath {
    /// `syscall` stays in ring 3 and jumps to the trampoline (KVM without hardware
    /// virtualization, such as the PVM module): the trampoline returns with `jmp rcx`.
    Ring3Trampoline,
    /// `syscall` enters ring 0 as on hardware; the trampoline returns with `sysretq`.
    Ring0Entry,
}

/// Vectors whose exceptions push an error code.
pub(crate) fn has_error_code(vector: u64) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30)
}

/// `hlt`, then `add rsp, 8` for vectors with an error code, then `iretq`.
fn stub(vector: u64) -> Vec<u8> {
    let mut code = vec![0xf4];
    if has_error_code(vector) {
        code.extend_from_slice(&[0x48, 0x83, 0xc4, 0x08]);
    }
    code.extend_from_slice(&[0x48, 0xcf]);
    code.resize(STUB_BYTES as usize, 0xf4);
    code
}

/// The address just past a vector's `hlt`, where RIP stands at its HLT exit.
pub(crate) fn vector_of_hlt(rip: u64) -> Option<u64> {
    let offset = rip.checked_sub(STUBS_VA + 1)?;
    (offset % STUB_BYTES == 0 && offset / STUB_BYTES < VECTORS).then_some(offset / STUB_BYTES)
}

fn idt(gate_dpl3: impl Fn(u64) -> bool) -> Vec<u8> {
    let mut table = Vec::with_capacity((VECTORS * 16) as usize);
    for vector in 0..VECTORS {
        let handler = STUBS_VA + vector * STUB_BYTES;
        // Present interrupt gate; DPL 3 for int3/into so ring 3 may raise them, as on Linux.
        let type_attr: u64 = if gate_dpl3(vector) { 0xee } else { 0x8e };
        let low = (handler & 0xffff)
            | (u64::from(KERNEL_CS) << 16)
            | (type_attr << 40)
            | ((handler >> 16) & 0xffff) << 48;
        let high = handler >> 32;
        table.extend_from_slice(&low.to_le_bytes());
        table.extend_from_slice(&high.to_le_bytes());
    }
    table
}

/// A thread's GDT (Linux's selector layout) at `gdt_va`, with its TSS in the same page and
/// RSP0 at the top of its ring-0 stack page at `kstack_va`.
pub(crate) fn gdt_page(gdt_va: u64, kstack_va: u64) -> Vec<u8> {
    let tss_base = gdt_va + TSS_OFFSET;
    let tss_limit: u64 = 0x67;
    let tss_low = (tss_limit & 0xffff)
        | ((tss_base & 0xff_ffff) << 16)
        | (0x8b << 40)
        | (((tss_base >> 24) & 0xff) << 56);
    let entries: [u64; 8] = [
        0,
        0x00af_9b00_0000_ffff, // 0x08 kernel code, 64-bit
        0x00cf_9300_0000_ffff, // 0x10 kernel data
        0x00cf_fb00_0000_ffff, // 0x18 user code, 32-bit (unused; keeps Linux's layout)
        0x00cf_f300_0000_ffff, // 0x20 user data
        0x00af_fb00_0000_ffff, // 0x28 user code, 64-bit
        tss_low,               // 0x30 TSS, low half
        tss_base >> 32,        // 0x38 TSS, high half
    ];
    let mut page = vec![0u8; PAGE_SIZE as usize];
    for (index, entry) in entries.iter().enumerate() {
        page[index * 8..index * 8 + 8].copy_from_slice(&entry.to_le_bytes());
    }
    let tss = TSS_OFFSET as usize;
    page[tss + 4..tss + 12].copy_from_slice(&(kstack_va + PAGE_SIZE).to_le_bytes());
    // I/O map base past the limit: no I/O permission bitmap, so every port access faults.
    page[tss + 0x66..tss + 0x68].copy_from_slice(&0x68u16.to_le_bytes());
    page
}

/// The domain's shared pages, allocated once from its RAM.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SharedPages {
    pub(crate) idt: u64,
    pub(crate) stubs: u64,
    pub(crate) trampoline: u64,
}

impl SharedPages {
    pub(crate) fn build(physical: &Physical, path: SyscallPath) -> Option<SharedPages> {
        let idt_gpa = physical.alloc()?;
        let stubs = physical.alloc()?;
        let trampoline_gpa = physical.alloc()?;
        let table = idt(|vector| matches!(vector, 3 | 4));
        let mut code = Vec::with_capacity(PAGE_SIZE as usize);
        for vector in 0..VECTORS {
            code.extend_from_slice(&stub(vector));
        }
        let written = physical.ram.write(idt_gpa, &table)
            && physical.ram.write(stubs, &code)
            && physical
                .ram
                .write(trampoline_gpa, &fastpath::trampoline(path));
        written.then_some(SharedPages {
            idt: idt_gpa,
            stubs,
            trampoline: trampoline_gpa,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_and_their_vectors() {
        assert_eq!(vector_of_hlt(STUBS_VA + 1), Some(0));
        assert_eq!(vector_of_hlt(STUBS_VA + 14 * STUB_BYTES + 1), Some(14));
        assert_eq!(vector_of_hlt(STUBS_VA + 2), None);
        assert_eq!(vector_of_hlt(STUBS_VA + 32 * STUB_BYTES + 1), None);
        assert_eq!(&stub(14)[..5], &[0xf4, 0x48, 0x83, 0xc4, 0x08]);
        assert_eq!(&stub(6)[..3], &[0xf4, 0x48, 0xcf]);
    }
}
