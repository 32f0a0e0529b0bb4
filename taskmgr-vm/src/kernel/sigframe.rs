//! Running signal handlers, as Linux does on x86-64: the VMM pushes an `rt_sigframe` (return
//! address = the handler's `sa_restorer`, a `ucontext` holding the interrupted registers and
//! signal mask, a `siginfo`) on the task's stack below its red zone, and starts the handler
//! with `(signo, &info, &uc)`; `rt_sigreturn` reads the context back.
//!
//! Signals are delivered at two points: when a system call returns (a signal the task sent
//! itself, or one it has just unblocked), at a fault (SIGSEGV, SIGILL, SIGFPE, ... with a
//! handler installed), and wherever guest code was when another process's signal (or a
//! timer's) kicked its vCPU out. The frame holds the FPU, SSE and AVX state as Linux lays it
//! out (an XSAVE area with its `fpx_sw_bytes` magic, `uc_mcontext.fpregs` pointing at it),
//! and `rt_sigreturn` puts it back, so a handler cannot disturb the floating-point registers
//! of the code it interrupted. A handler installed with SA_ONSTACK runs on the thread's
//! alternate stack (`sigaltstack`), as a stack-overflow handler must.
//!
//! Everything read back from the frame is untrusted: RFLAGS keeps only the flags ring 3 may
//! set, and a return address outside the user half ends the task with SIGSEGV.

use crate::hypervisor::cpu::Vcpu;
use crate::hypervisor::vm::layout::{PAGE_SIZE, USER_CS, USER_DS, USER_TOP};
use crate::hypervisor::vm::system::SyscallPath;
use crate::kernel::process::Process;
use kvm_bindings::kvm_regs;

/// `sa_flags` bits.
const SA_SIGINFO: u64 = 4;
const SA_RESTORER: u64 = 0x0400_0000;
const SA_NODEFER: u64 = 0x4000_0000;
const SA_ONSTACK: u64 = 0x0800_0000;
use crate::kernel::process::{SS_AUTODISARM, SS_DISABLE, SS_ONSTACK};
const SA_RESETHAND: u64 = 0x8000_0000;
/// The handlers that mean "default" and "ignore".
pub(crate) const SIG_DFL: u64 = 0;
pub(crate) const SIG_IGN: u64 = 1;
/// Bytes below RSP a program may use without moving it.
const RED_ZONE: u64 = 128;
/// Layout of the frame: pretcode, ucontext (flags, link, stack, mcontext, sigmask), siginfo.
const UC: u64 = 8;
const MCONTEXT: u64 = UC + 40;
const SIGMASK: u64 = UC + 296;
const SIGINFO: u64 = UC + 304;
const FRAME_BYTES: u64 = SIGINFO + 128;
/// RFLAGS bits a task may have restored (arithmetic flags, TF, DF, AC, ID): never IOPL.
const USER_RFLAGS_MASK: u64 = 0x25_4dd5;
/// The XSAVE area a frame holds: legacy x87/SSE (512 bytes), the XSAVE header (64), AVX
/// (256): the features the domain enables (XCR0 = 7).
const XSTATE_BYTES: u64 = 832;
/// XCR0 of every vCPU: x87, SSE, AVX.
const XFEATURES: u64 = 7;
/// `fpx_sw_bytes.magic1` and the magic after the area (`FP_XSTATE_MAGIC1`, `_MAGIC2`).
const FP_XSTATE_MAGIC1: u32 = 0x4650_5853;
const FP_XSTATE_MAGIC2: u32 = 0x4650_5845;
/// Where `fpregs` is in the mcontext (after 18 registers, the selectors and 4 words).
const MCONTEXT_FPREGS: u64 = 184;
/// MXCSR bits a restore may set (the rest make XRSTOR fault).
const MXCSR_MASK: u32 = 0xffff;

/// SIGKILL and SIGSTOP can be neither blocked nor handled.
pub(crate) const UNBLOCKABLE: u64 = (1 << 8) | (1 << 18);

/// Why and where a signal comes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SigInfo {
    pub(crate) signo: i32,
    /// `si_code`.
    pub(crate) code: i32,
    /// The faulting address (`si_addr`) or, for `kill`, the sender's pid in the low half.
    pub(crate) value: u64,
}

/// The registers a signal interrupts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interrupted {
    pub(crate) regs: kvm_regs,
    pub(crate) trapno: u64,
    pub(crate) err: u64,
    pub(crate) cr2: u64,
}

/// Where a fault happened, from the frame the CPU pushed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FaultFrame {
    pub(crate) vector: u64,
    pub(crate) error: u64,
    pub(crate) rip: u64,
    pub(crate) rflags: u64,
    pub(crate) rsp: u64,
}

/// Whether `signo` has a handler the task can run now (installed, not ignored, not blocked).
pub(crate) fn handled(process: &Process, signo: i32) -> bool {
    let Ok(index) = usize::try_from(signo) else {
        return false;
    };
    let Some(action) = process.signals.actions.get(index) else {
        return false;
    };
    let bit = 1u64 << (index - 1);
    action[0] != SIG_DFL
        && action[0] != SIG_IGN
        && process.signals.mask & bit == 0
        && action[1] & SA_RESTORER != 0
}

fn mcontext(interrupted: &Interrupted, mask: u64) -> Vec<u8> {
    let r = &interrupted.regs;
    let words = [
        r.r8, r.r9, r.r10, r.r11, r.r12, r.r13, r.r14, r.r15, r.rdi, r.rsi, r.rbp, r.rbx, r.rdx,
        r.rax, r.rcx, r.rsp, r.rip, r.rflags,
    ];
    let mut out = Vec::with_capacity(256);
    for word in words {
        out.extend_from_slice(&word.to_le_bytes());
    }
    // cs, gs, fs, ss (16 bits each).
    for selector in [USER_CS, 0, 0, USER_DS] {
        out.extend_from_slice(&selector.to_le_bytes());
    }
    for word in [
        interrupted.err,
        interrupted.trapno,
        mask,
        interrupted.cr2,
        0,
    ] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    out.resize(256, 0);
    out
}

/// The vCPU's FPU state as the XSAVE area a frame holds, with Linux's software bytes, and
/// the magic word that follows it.
fn xstate_bytes(vcpu: &Vcpu) -> Option<Vec<u8>> {
    let xsave = vcpu.fpu().ok()?;
    let mut bytes: Vec<u8> = xsave
        .region
        .iter()
        .flat_map(|word| word.to_le_bytes())
        .take(XSTATE_BYTES as usize)
        .collect();
    // fpx_sw_bytes in the legacy area's software-reserved bytes (464..512).
    bytes[464..468].copy_from_slice(&FP_XSTATE_MAGIC1.to_le_bytes());
    bytes[468..472].copy_from_slice(&((XSTATE_BYTES + 4) as u32).to_le_bytes());
    bytes[472..480].copy_from_slice(&XFEATURES.to_le_bytes());
    bytes[480..484].copy_from_slice(&(XSTATE_BYTES as u32).to_le_bytes());
    bytes.extend_from_slice(&FP_XSTATE_MAGIC2.to_le_bytes());
    Some(bytes)
}

/// Builds the frame for `info` on the interrupted stack, with the vCPU's FPU state below
/// it, and returns its address, updating the mask; `None` if the stack cannot take it.
fn push_frame(
    process: &mut Process,
    vcpu: &Vcpu,
    info: SigInfo,
    interrupted: &Interrupted,
) -> Option<u64> {
    let index = usize::try_from(info.signo).ok()?;
    let action = *process.signals.actions.get(index)?;
    let (flags, restorer, action_mask) = (action[1], action[2], action[3]);
    let xstate = xstate_bytes(vcpu)?;
    // On the thread's alternate stack if the handler asks for it (SA_ONSTACK) and the thread
    // is not on it already; else below the interrupted stack's red zone.
    let tid = process.tid;
    let altstack = process
        .threads
        .live
        .get(&tid)
        .and_then(|info| info.altstack);
    let rsp = interrupted.regs.rsp;
    let (top, uc_stack) = match altstack {
        Some(stack) if flags & SA_ONSTACK != 0 && !stack.holds(rsp) => {
            if stack.autodisarm
                && let Some(info) = process.threads.live.get_mut(&tid)
            {
                info.altstack = None;
            }
            let flags = if stack.autodisarm { SS_AUTODISARM } else { 0 };
            (
                stack.sp.checked_add(stack.size)?,
                (stack.sp, flags, stack.size),
            )
        }
        Some(stack) => (
            rsp.checked_sub(RED_ZONE)?,
            (
                stack.sp,
                if stack.holds(rsp) { SS_ONSTACK } else { 0 },
                stack.size,
            ),
        ),
        None => (rsp.checked_sub(RED_ZONE)?, (0, SS_DISABLE, 0)),
    };
    // The XSAVE area, 64-byte aligned; the frame under it.
    let fpstate = top.checked_sub(xstate.len() as u64)? & !63;
    process.write_user(fpstate, &xstate).ok()?;
    let sp = fpstate.checked_sub(FRAME_BYTES)?;
    // At the handler's first instruction RSP + 8 is 16-byte aligned, as after a call.
    let frame = ((sp + 8) & !15) - 8;
    // After `rt_sigsuspend` the handler returns to the mask from before the call.
    let saved = process.signals.restore_mask.unwrap_or(process.signals.mask);
    let mut bytes = Vec::with_capacity(FRAME_BYTES as usize);
    bytes.extend_from_slice(&restorer.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 16]); // uc_flags, uc_link
    let (stack_sp, stack_flags, stack_size) = uc_stack;
    bytes.extend_from_slice(&stack_sp.to_le_bytes());
    bytes.extend_from_slice(&stack_flags.to_le_bytes());
    bytes.extend_from_slice(&[0u8; 4]);
    bytes.extend_from_slice(&stack_size.to_le_bytes());
    let mut context = mcontext(interrupted, saved);
    let at = MCONTEXT_FPREGS as usize;
    context[at..at + 8].copy_from_slice(&fpstate.to_le_bytes());
    bytes.extend_from_slice(&context);
    bytes.extend_from_slice(&saved.to_le_bytes());
    let mut siginfo = [0u8; 128];
    siginfo[0..4].copy_from_slice(&info.signo.to_le_bytes());
    siginfo[8..12].copy_from_slice(&info.code.to_le_bytes());
    siginfo[16..24].copy_from_slice(&info.value.to_le_bytes());
    bytes.extend_from_slice(&siginfo);
    debug_assert_eq!(bytes.len() as u64, FRAME_BYTES);
    process.write_user(frame, &bytes).ok()?;
    process.signals.restore_mask = None;
    let bit = 1u64 << (index - 1);
    let mut mask = process.signals.mask | action_mask;
    if flags & SA_NODEFER == 0 {
        mask |= bit;
    }
    process.signals.mask = mask & !UNBLOCKABLE;
    if flags & SA_RESETHAND != 0 {
        process.signals.actions[index] = [SIG_DFL, 0, 0, 0];
    }
    let _ = flags & SA_SIGINFO; // handlers get (signo, &info, &uc) either way, as on Linux
    Some(frame)
}

/// Starts the handler for `info` as the return of the system call being served (the vCPU is
/// at the trampoline's return). `regs` are the registers the task will see as interrupted.
pub(crate) fn deliver_at_syscall(process: &mut Process, vcpu: &mut Vcpu, info: SigInfo) -> bool {
    let mut regs = vcpu.regs();
    // The task resumes at its return address with the syscall's flags, as `sysret` leaves it.
    regs.rip = regs.rcx;
    regs.rflags = (regs.r11 & USER_RFLAGS_MASK) | 0x2;
    let interrupted = Interrupted {
        regs,
        trapno: 0,
        err: 0,
        cr2: 0,
    };
    let handler = process.signals.actions[info.signo as usize][0];
    let Some(frame) = push_frame(process, vcpu, info, &interrupted) else {
        return false;
    };
    let path = process.vm.path;
    let info_at = frame + SIGINFO;
    let uc_at = frame + UC;
    let out = vcpu.regs_mut();
    out.rsp = frame;
    out.rdi = info.signo as u64;
    out.rsi = info_at;
    out.rdx = uc_at;
    out.rax = 0;
    // The trampoline's next instruction returns to RCX (`jmp rcx` or `sysretq`).
    out.rcx = handler;
    out.r11 = interrupted.regs.rflags & !0x100; // TF off in the handler
    if path == SyscallPath::Ring3Trampoline {
        out.rip = handler;
        out.rflags = out.r11;
    }
    true
}

/// Starts the handler for `info` at an arbitrary point of guest code (a signal another
/// process sent, taken when the vCPU was kicked out of the guest): every register is the
/// task's own and is saved as it is. Not while the vCPU is in the trampoline or the kernel
/// area (the caller keeps the signal pending then).
pub(crate) fn deliver_async(process: &mut Process, vcpu: &mut Vcpu, info: SigInfo) -> bool {
    let regs = vcpu.regs();
    let interrupted = Interrupted {
        regs,
        trapno: 0,
        err: 0,
        cr2: 0,
    };
    let handler = process.signals.actions[info.signo as usize][0];
    let Some(frame) = push_frame(process, vcpu, info, &interrupted) else {
        return false;
    };
    let out = vcpu.regs_mut();
    out.rsp = frame;
    out.rdi = info.signo as u64;
    out.rsi = frame + SIGINFO;
    out.rdx = frame + UC;
    out.rax = 0;
    out.rip = handler;
    out.rflags = (regs.rflags & USER_RFLAGS_MASK & !0x100) | 0x2;
    true
}

/// Starts the handler for a fault: the vCPU is at the exception stub, whose `iretq` will
/// return to the handler instead of the faulting instruction.
pub(crate) fn deliver_at_fault(
    process: &mut Process,
    vcpu: &mut Vcpu,
    info: SigInfo,
    fault: &FaultFrame,
) -> bool {
    let (trapno, frame_rflags) = (fault.vector, fault.rflags);
    let kernel_rsp = vcpu.regs().rsp;
    let mut regs = vcpu.regs();
    regs.rip = fault.rip;
    regs.rsp = fault.rsp;
    regs.rflags = fault.rflags;
    let interrupted = Interrupted {
        regs,
        trapno,
        err: fault.error,
        cr2: if trapno == 14 { info.value } else { 0 },
    };
    let handler = process.signals.actions[info.signo as usize][0];
    let Some(frame) = push_frame(process, vcpu, info, &interrupted) else {
        return false;
    };
    let error_words = u64::from(crate::hypervisor::vm::system::has_error_code(trapno));
    let Some(offset) = kernel_rsp
        .checked_sub(process.kstack.kstack_va)
        .filter(|offset| offset + (error_words + 5) * 8 <= PAGE_SIZE)
    else {
        return false;
    };
    let iret = process.kstack.kstack_gpa + offset + error_words * 8;
    let ram = &process.vm.physical.ram;
    let written = ram.write_u64(iret, handler)
        && ram.write_u64(iret + 8, u64::from(USER_CS))
        && ram.write_u64(iret + 16, (frame_rflags & USER_RFLAGS_MASK & !0x100) | 0x2)
        && ram.write_u64(iret + 24, frame)
        && ram.write_u64(iret + 32, u64::from(USER_DS));
    if !written {
        return false;
    }
    let out = vcpu.regs_mut();
    out.rdi = info.signo as u64;
    out.rsi = frame + SIGINFO;
    out.rdx = frame + UC;
    out.rax = 0;
    true
}

/// `rt_sigreturn`: restores the context of the frame below RSP. False if it is unreadable
/// or returns outside the user half (the task then dies of SIGSEGV, as on Linux).
pub(crate) fn sigreturn(process: &mut Process, vcpu: &mut Vcpu) -> bool {
    let regs = vcpu.regs();
    // The handler's `ret` popped pretcode: RSP is at the ucontext.
    let Some(uc) = regs.rsp.checked_sub(8).map(|frame| frame + UC) else {
        return false;
    };
    let Ok(raw) = process.read_user(uc + 40, 256) else {
        return false;
    };
    let Ok(mask) = process.read_u64(uc + 296) else {
        return false;
    };
    let word = |index: usize| {
        u64::from_le_bytes(raw[index * 8..index * 8 + 8].try_into().unwrap_or([0; 8]))
    };
    let rip = word(16);
    if rip >= USER_TOP {
        return false;
    }
    let fpstate = u64::from_le_bytes(
        raw[MCONTEXT_FPREGS as usize..MCONTEXT_FPREGS as usize + 8]
            .try_into()
            .unwrap_or([0; 8]),
    );
    if fpstate != 0 && !restore_fpu(process, vcpu, fpstate) {
        return false;
    }
    process.signals.mask = mask & !UNBLOCKABLE;
    let rflags = (word(17) & USER_RFLAGS_MASK) | 0x2;
    let path = process.vm.path;
    let out = vcpu.regs_mut();
    [
        out.r8, out.r9, out.r10, out.r11, out.r12, out.r13, out.r14, out.r15, out.rdi, out.rsi,
        out.rbp, out.rbx, out.rdx, out.rax, out.rcx, out.rsp,
    ] = std::array::from_fn(word);
    if path == SyscallPath::Ring3Trampoline {
        out.rip = rip;
        out.rflags = rflags;
    } else {
        // Through `sysretq`: RCX and R11 carry the return (their saved values are lost).
        out.rcx = rip;
        out.r11 = rflags;
    }
    true
}

/// Puts back the FPU state of the frame's XSAVE area at `va` (untrusted: only the features
/// the domain enables, and only valid MXCSR bits). False if it cannot be read or restored
/// (the process then dies of SIGSEGV, as on Linux).
fn restore_fpu(process: &mut Process, vcpu: &mut Vcpu, va: u64) -> bool {
    let Ok(bytes) = process.read_user(va, XSTATE_BYTES as usize) else {
        return false;
    };
    let Ok(mut xsave) = vcpu.fpu() else {
        return false;
    };
    for (index, chunk) in bytes.chunks_exact(4).enumerate() {
        xsave.region[index] = u32::from_le_bytes(chunk.try_into().unwrap_or([0; 4]));
    }
    // MXCSR (word 6) and MXCSR_MASK (word 7); the XSAVE header: XSTATE_BV (word 128) within
    // the enabled features, XCOMP_BV (words 130-131) zero (the standard format).
    xsave.region[6] &= MXCSR_MASK;
    xsave.region[128] &= XFEATURES as u32;
    xsave.region[129] = 0;
    xsave.region[130] = 0;
    xsave.region[131] = 0;
    vcpu.set_fpu(&xsave).is_ok()
}

const _: () = assert!(FRAME_BYTES == 440 && MCONTEXT == 48 && SIGMASK == 304);
