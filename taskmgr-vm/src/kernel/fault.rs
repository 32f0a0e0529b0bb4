//! Exceptions from ring 3: read from the frame the CPU pushed on the task's ring-0 stack,
//! then either resolved (a stack page backed on first touch, a fast-path copy that faulted)
//! or turned into the signal Linux would send, which ends the task as that signal's default
//! action would.

use crate::hypervisor::cpu::Vcpu;
use crate::hypervisor::fastpath;
use crate::hypervisor::vm::layout::PAGE_SIZE;
use crate::hypervisor::vm::system::{has_error_code, vector_of_hlt};
use crate::kernel::process::Process;

/// What to do after an exception.
#[derive(Debug)]
pub(crate) enum FaultAction {
    /// Let the stub return to ring 3 (the cause is gone).
    Resume,
    /// The fault was a fast-path copy that hit a bad buffer: the call is redone by the VMM.
    RedoSyscall,
    /// The task gets this signal (its handler runs, or it dies of it with this explanation).
    Signal(FaultSignal),
    /// Something that cannot happen to a well-formed domain: the task fails with this reason.
    Broken(String),
}

/// A signal raised by a fault, with what its handler (if any) is told.
#[derive(Debug)]
pub(crate) struct FaultSignal {
    pub(crate) signal: i32,
    pub(crate) detail: String,
    /// `si_code` and `si_addr`.
    pub(crate) code: i32,
    pub(crate) address: u64,
    /// The exception and the frame the CPU pushed: vector, error code, rip, rflags, rsp.
    pub(crate) vector: u64,
    pub(crate) error: u64,
    pub(crate) rip: u64,
    pub(crate) rflags: u64,
    pub(crate) rsp: u64,
}

/// The name of a signal, as reasons show it.
pub(crate) fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        16 => "SIGSTKFLT",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        26 => "SIGVTALRM",
        27 => "SIGPROF",
        29 => "SIGIO",
        30 => "SIGPWR",
        31 => "SIGSYS",
        _ => "a real-time signal",
    }
}

/// The exception frame: (error code, rip, cs, rflags, rsp).
fn frame(process: &Process, vector: u64, kernel_rsp: u64) -> Option<(u64, u64, u64, u64, u64)> {
    let offset = kernel_rsp.checked_sub(process.kstack.kstack_va)?;
    let words = if has_error_code(vector) { 6 } else { 5 };
    if offset + words * 8 > PAGE_SIZE {
        return None;
    }
    let base = process.kstack.kstack_gpa + offset;
    let word = |index: u64| process.vm.physical.ram.read_u64(base + index * 8);
    let skip = u64::from(has_error_code(vector));
    let error = if skip == 1 { word(0)? } else { 0 };
    Some((
        error,
        word(skip)?,
        word(skip + 1)?,
        word(skip + 2)?,
        word(skip + 3)?,
    ))
}

/// Handles the HLT exit of an exception stub.
pub(crate) fn handle(process: &mut Process, vcpu: &mut Vcpu) -> FaultAction {
    let regs = vcpu.regs();
    let Some(vector) = vector_of_hlt(regs.rip) else {
        return FaultAction::Broken(format!(
            "the vCPU halted outside an exception stub (rip {:#x})",
            regs.rip
        ));
    };
    let Some((error, rip, cs, rflags, rsp)) = frame(process, vector, regs.rsp) else {
        return FaultAction::Broken(format!("exception {vector} with an unreadable frame"));
    };
    // A fast-path copy that faulted (#PF on a bad address, #GP on a non-canonical one; in
    // ring 0 where `syscall` enters ring 0): the VMM serves the call instead.
    if matches!(vector, 13 | 14) && fastpath::in_copy(rip) {
        return FaultAction::RedoSyscall;
    }
    if cs & 3 != 3 {
        return FaultAction::Broken(format!(
            "exception {vector} in the domain's ring 0 at {rip:#x}"
        ));
    }
    let signal = |signal: i32, code: i32, detail: String| {
        FaultAction::Signal(FaultSignal {
            signal,
            detail,
            code,
            address: rip,
            vector,
            error,
            rip,
            rflags,
            rsp,
        })
    };
    match vector {
        14 => page_fault(process, vcpu, error, rip, rflags, rsp),
        0 => signal(8, 1, format!("divide error at {rip:#x}")),
        1 => signal(5, 2, format!("debug exception at {rip:#x}")),
        3 => signal(5, 1, format!("breakpoint at {rip:#x}")),
        4 | 5 => signal(11, 128, format!("bound or overflow trap at {rip:#x}")),
        6 => signal(4, 2, format!("illegal instruction at {rip:#x}")),
        7 => signal(11, 128, format!("FPU not available at {rip:#x}")),
        10 | 11 => signal(
            7,
            128,
            format!("segment fault (vector {vector}) at {rip:#x}"),
        ),
        12 => signal(7, 128, format!("stack segment fault at {rip:#x}")),
        13 => signal(
            11,
            128,
            format!(
                "general protection fault at {rip:#x} (a privileged instruction, port I/O or a non-canonical address)"
            ),
        ),
        16 | 19 => signal(8, 7, format!("floating point exception at {rip:#x}")),
        17 => signal(7, 1, format!("alignment check at {rip:#x}")),
        _ => FaultAction::Broken(format!("exception {vector} at {rip:#x}")),
    }
}

fn page_fault(
    process: &mut Process,
    vcpu: &mut Vcpu,
    error: u64,
    rip: u64,
    rflags: u64,
    rsp: u64,
) -> FaultAction {
    let address = match vcpu.sregs() {
        Ok(sregs) => sregs.cr2,
        Err(error) => return FaultAction::Broken(format!("cannot read CR2: {error}")),
    };
    let write = error & 2 != 0;
    let present = error & 1 != 0;
    if !present && process.mm.fault_in(&process.vm.physical, address, write) {
        process.meter_memory();
        return FaultAction::Resume;
    }
    let access = if error & 16 != 0 {
        "execute"
    } else if write {
        "write"
    } else {
        "read"
    };
    FaultAction::Signal(FaultSignal {
        signal: 11,
        detail: format!("page fault: {access} of {address:#x} at {rip:#x}"),
        // SEGV_ACCERR for a present page, SEGV_MAPERR otherwise.
        code: if present { 2 } else { 1 },
        address,
        vector: 14,
        error,
        rip,
        rflags,
        rsp,
    })
}
