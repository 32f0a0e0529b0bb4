//! One vCPU: created with the host's CPUID, its syscall MSRs pointed at the trampoline, and
//! put straight into 64-bit ring 3 for each task it runs (no firmware, no real mode). Its run
//! loop primitive, [`Vcpu::run`], turns KVM's exits into the few the VMM handles.
//!
//! Exits are kept cheap: the general registers come back in `kvm_run` (KVM_CAP_SYNC_REGS) and
//! go in the same way, so a system call costs exactly one KVM_RUN and no other ioctl.

pub(crate) mod signal;

use crate::hypervisor::vm::layout::{
    GDT_VA, IDT_VA, KERNEL_CS, TRAMPOLINE_VA, TSS_OFFSET, TSS_SELECTOR, USER_CS, USER_DS, VECTORS,
};
use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs, kvm_xcrs,
    kvm_xsave,
};
use kvm_ioctls::{Kvm, SyncReg, VcpuExit, VcpuFd, VmFd};
use thiserror::Error;

const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SFMASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

const CR0_PE: u64 = 1;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_OSXSAVE: u64 = 1 << 18;
const EFER_SCE: u64 = 1;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
/// x87, SSE and AVX state: what the domain lets programs use (AVX-512 is off, as the
/// notes found XCR0 reads 7 inside the domain whatever the host has).
const XCR0: u64 = 0b111;
/// RFLAGS at task start: only the reserved bit 1.
const RFLAGS_INITIAL: u64 = 0x2;

/// Why a vCPU could not be made or set up.
#[derive(Debug, Error)]
pub enum CpuError {
    /// A KVM ioctl failed.
    #[error("KVM {call} failed: {error}")]
    Kvm {
        /// The ioctl.
        call: &'static str,
        /// What KVM said.
        error: kvm_ioctls::Error,
    },
}

fn kvm(call: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> CpuError {
    move |error| CpuError::Kvm { call, error }
}

/// What stopped KVM_RUN, reduced to what the VMM acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// A store to guest-physical `gpa` with no memory behind it: the syscall exit if `gpa`
    /// is the syscall exit page.
    MmioWrite { gpa: u64 },
    /// A load from guest-physical memory with nothing behind it.
    MmioRead { gpa: u64 },
    /// `hlt` in ring 0: an exception stub.
    Hlt,
    /// A signal (a kick) interrupted the run.
    Interrupted,
    /// Triple fault.
    Shutdown,
    /// Port I/O reached the VMM (cannot happen from ring 3 with no I/O bitmap; fatal).
    PortIo { port: u16 },
    /// Anything else, with its description: fatal for the task.
    Other(&'static str),
    /// KVM_RUN failed.
    Failed(i32),
}

/// The host's CPUID as KVM supports it, given to every vCPU: KVM checks CR4 and EFER bits
/// against it (long mode, XSAVE), though the guest sees the host's CPUID in any case.
pub(crate) fn supported_cpuid(kvm_system: &Kvm) -> Result<CpuId, CpuError> {
    kvm_system
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm("KVM_GET_SUPPORTED_CPUID"))
}

/// A vCPU of a domain's VM.
#[derive(Debug)]
pub(crate) struct Vcpu {
    fd: VcpuFd,
}

/// Where a task starts.
#[derive(Debug)]
pub(crate) struct StartState {
    pub(crate) cr3: u64,
    /// Every general register, RIP, RSP and RFLAGS included.
    pub(crate) regs: kvm_regs,
    /// The thread's GDT (its TSS is in the same page).
    pub(crate) gdt_va: u64,
    /// The FS base (TLS) to start with.
    pub(crate) fs_base: u64,
    /// The FPU state to start with (a forked child's, its parent's); the initial state if
    /// `None`.
    pub(crate) fpu: Option<Box<kvm_xsave>>,
}

impl StartState {
    /// A first thread: everything zero but RIP, RSP and RFLAGS, as Linux starts a program.
    pub(crate) fn first(cr3: u64, rip: u64, rsp: u64) -> StartState {
        StartState {
            cr3,
            regs: kvm_regs {
                rip,
                rsp,
                rflags: RFLAGS_INITIAL,
                ..Default::default()
            },
            gdt_va: GDT_VA,
            fs_base: 0,
            fpu: None,
        }
    }
}

fn user_segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: 3,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

impl Vcpu {
    /// Creates vCPU `id` of `vm`, with `cpuid` and the syscall MSRs.
    pub(crate) fn new(vm: &VmFd, id: u64, cpuid: &CpuId) -> Result<Vcpu, CpuError> {
        let mut fd = vm.create_vcpu(id).map_err(kvm("KVM_CREATE_VCPU"))?;
        fd.set_cpuid2(cpuid).map_err(kvm("KVM_SET_CPUID2"))?;
        // STAR: syscall CS 0x08 / SS 0x10; sysret CS 0x28|3 / SS 0x20|3 (base 0x18).
        let star = (u64::from(KERNEL_CS) << 32) | (0x18u64 << 48);
        let entries = [
            (MSR_STAR, star),
            (MSR_LSTAR, TRAMPOLINE_VA),
            (MSR_CSTAR, TRAMPOLINE_VA),
            // No flags masked: the trampoline changes none, so the caller's survive.
            (MSR_SFMASK, 0),
            (MSR_KERNEL_GS_BASE, 0),
        ]
        .map(|(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        });
        let msrs = Msrs::from_entries(&entries).map_err(|_| CpuError::Kvm {
            call: "KVM_SET_MSRS",
            error: kvm_ioctls::Error::new(libc::E2BIG),
        })?;
        let written = fd.set_msrs(&msrs).map_err(kvm("KVM_SET_MSRS"))?;
        if written != entries.len() {
            return Err(CpuError::Kvm {
                call: "KVM_SET_MSRS",
                error: kvm_ioctls::Error::new(libc::EINVAL),
            });
        }
        let mut xcrs = kvm_xcrs {
            nr_xcrs: 1,
            ..Default::default()
        };
        xcrs.xcrs[0].value = XCR0;
        // Not fatal: some hosts fix XCR0 themselves (the notes found it reads 7 regardless).
        if let Err(error) = fd.set_xcrs(&xcrs) {
            tracing::debug!("KVM_SET_XCRS: {error}");
        }
        set_signal_mask_empty(&fd)?;
        fd.set_sync_valid_reg(SyncReg::Register);
        Ok(Vcpu { fd })
    }

    /// Puts the vCPU at a task's first instruction in 64-bit ring 3, with a fresh FPU state.
    pub(crate) fn start(&mut self, start: StartState) -> Result<(), CpuError> {
        let mut sregs: kvm_sregs = self.fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))?;
        sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
        sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT | CR4_OSXSAVE;
        sregs.cr3 = start.cr3;
        sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NXE;
        sregs.cs = user_segment(USER_CS, true);
        let data = user_segment(USER_DS, false);
        sregs.ss = data;
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.fs.base = start.fs_base;
        sregs.gs = data;
        sregs.tr = kvm_segment {
            base: start.gdt_va + TSS_OFFSET,
            limit: 0x67,
            selector: TSS_SELECTOR,
            type_: 0xb,
            present: 1,
            ..Default::default()
        };
        sregs.ldt = kvm_segment {
            unusable: 1,
            ..Default::default()
        };
        sregs.gdt.base = start.gdt_va;
        sregs.gdt.limit = 8 * 8 - 1;
        sregs.idt.base = IDT_VA;
        sregs.idt.limit = u16::try_from(VECTORS * 16 - 1).unwrap_or(u16::MAX);
        self.fd.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))?;
        match &start.fpu {
            Some(fpu) => self.set_fpu(fpu)?,
            None => self.reset_fpu()?,
        }
        self.fd.set_regs(&start.regs).map_err(kvm("KVM_SET_REGS"))?;
        // A reused vCPU may still have its previous task's registers marked dirty in the
        // synced area (a result written for a call after which the task ended, so no KVM_RUN
        // consumed them); the next run would apply them over the ones just set. Put the start
        // registers there too, so whatever the flag says, the task starts where it should.
        *self.regs_mut() = start.regs;
        Ok(())
    }

    /// x87 and SSE in their initial state (FCW 0x37f, MXCSR 0x1f80), AVX state cleared, so
    /// nothing of the vCPU's previous task survives into the next.
    fn reset_fpu(&mut self) -> Result<(), CpuError> {
        let mut xsave = kvm_xsave::default();
        xsave.region[0] = 0x037f; // FCW (low 16 bits); FSW 0
        xsave.region[6] = 0x1f80; // MXCSR
        xsave.region[7] = 0xffff; // MXCSR_MASK (ignored on restore)
        xsave.region[128] = 0b11; // XSTATE_BV: x87 and SSE given, AVX in its initial state
        // SAFETY: a fully initialised 4 KiB legacy xsave area; this VM enabled no dynamic
        // (AMX) state, so KVM reads no more than the struct holds.
        unsafe { self.fd.set_xsave(&xsave) }.map_err(kvm("KVM_SET_XSAVE"))
    }

    /// Runs the guest until the next exit.
    pub(crate) fn run(&mut self) -> Exit {
        match self.fd.run() {
            Ok(VcpuExit::MmioWrite(gpa, _)) => Exit::MmioWrite { gpa },
            Ok(VcpuExit::MmioRead(gpa, data)) => {
                data.fill(0);
                Exit::MmioRead { gpa }
            }
            Ok(VcpuExit::Hlt) => Exit::Hlt,
            Ok(VcpuExit::Shutdown) => Exit::Shutdown,
            Ok(VcpuExit::Intr) => Exit::Interrupted,
            Ok(VcpuExit::IoOut(port, _)) => Exit::PortIo { port },
            Ok(VcpuExit::IoIn(port, data)) => {
                data.fill(0xff);
                Exit::PortIo { port }
            }
            Ok(VcpuExit::FailEntry(..)) => Exit::Other("VM entry failed"),
            Ok(VcpuExit::InternalError) => Exit::Other("KVM internal error (emulation failed)"),
            Ok(VcpuExit::MemoryFault { .. }) => Exit::Other("memory fault"),
            Ok(VcpuExit::Exception) => Exit::Other("exception exit"),
            Ok(_) => Exit::Other("unexpected exit"),
            Err(error) if error.errno() == libc::EINTR || error.errno() == libc::EAGAIN => {
                Exit::Interrupted
            }
            Err(error) => Exit::Failed(error.errno()),
        }
    }

    /// The general registers as of the last exit.
    pub(crate) fn regs(&self) -> kvm_regs {
        self.fd.sync_regs().regs
    }

    /// The general registers, to change before the next run (they are written back then).
    pub(crate) fn regs_mut(&mut self) -> &mut kvm_regs {
        self.fd.set_sync_dirty_reg(SyncReg::Register);
        &mut self.fd.sync_regs_mut().regs
    }

    /// Reads the registers with an ioctl into the synced copy (which a failed KVM_RUN may not
    /// have refreshed), so that `regs` and `regs_mut` see them as they are.
    pub(crate) fn reload_regs(&mut self) -> Result<(), CpuError> {
        let regs = self.fd.get_regs().map_err(kvm("KVM_GET_REGS"))?;
        *self.regs_mut() = regs;
        Ok(())
    }

    /// The system registers (an ioctl: only for exceptions and FS base changes).
    pub(crate) fn sregs(&self) -> Result<kvm_sregs, CpuError> {
        self.fd.get_sregs().map_err(kvm("KVM_GET_SREGS"))
    }

    /// The FPU, SSE and AVX state (for a forked child to start with its parent's).
    pub(crate) fn fpu(&self) -> Result<kvm_xsave, CpuError> {
        self.fd.get_xsave().map_err(kvm("KVM_GET_XSAVE"))
    }

    /// Sets the FPU state from another vCPU of the same VM.
    pub(crate) fn set_fpu(&mut self, xsave: &kvm_xsave) -> Result<(), CpuError> {
        // SAFETY: `xsave` came from KVM_GET_XSAVE on a vCPU of this VM, so it is a complete
        // area of the size and features this VM uses.
        unsafe { self.fd.set_xsave(xsave) }.map_err(kvm("KVM_SET_XSAVE"))
    }

    /// Sets the FS base (`arch_prctl(ARCH_SET_FS)`): two ioctls.
    pub(crate) fn set_fs_base(&mut self, base: u64) -> Result<(), CpuError> {
        let mut sregs = self.sregs()?;
        sregs.fs.base = base;
        self.fd.set_sregs(&sregs).map_err(kvm("KVM_SET_SREGS"))
    }
}

/// KVM_SET_SIGNAL_MASK with an empty set: inside KVM_RUN every signal is unblocked, so a
/// pending kick ends the run at once even though the thread blocks it the rest of the time.
fn set_signal_mask_empty(fd: &VcpuFd) -> Result<(), CpuError> {
    use std::os::fd::AsRawFd;
    /// `_IOW(KVMIO, 0x8b, struct kvm_signal_mask)`: the header is one u32 (`len`).
    const KVM_SET_SIGNAL_MASK: libc::c_ulong = 0x4004_ae8b;
    #[repr(C)]
    struct SignalMask {
        len: u32,
        sigset: u64,
    }
    let mask = SignalMask { len: 8, sigset: 0 };
    // SAFETY: the ioctl reads a kvm_signal_mask header followed by `len` (8) bytes of sigset,
    // exactly what `mask` holds, from a valid vCPU fd.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), KVM_SET_SIGNAL_MASK, &mask) };
    if result != 0 {
        return Err(CpuError::Kvm {
            call: "KVM_SET_SIGNAL_MASK",
            error: kvm_ioctls::Error::last(),
        });
    }
    Ok(())
}
