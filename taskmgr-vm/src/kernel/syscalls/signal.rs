//! Signals, as far as a single-threaded program needs them: dispositions, the mask and the
//! pending set; a signal a task sends itself (or unblocks) is delivered as the call returns:
//! its handler runs (`sigframe.rs`), or its default action is taken (terminate, or nothing
//! for those ignored by default). Faults are delivered by `fault.rs` the same way.

use super::{Errno, Flow, SysResult};
use crate::hypervisor::cpu::Vcpu;
use crate::kernel::process::Process;
use crate::kernel::sigframe::{self, SIG_DFL, SIG_IGN};

/// Signals whose default action is to do nothing.
fn ignored_by_default(signal: u64) -> bool {
    matches!(signal, 17 | 18 | 23 | 28) // SIGCHLD, SIGCONT, SIGURG, SIGWINCH
}

/// `sa_flags`: the handler returns through `sa_restorer` (libc always sets it).
const SA_RESTORER: u64 = 0x0400_0000;
const SIGKILL: u64 = 9;
const SIGCHLD: u64 = 17;
/// `sa_flags`: children that end are reaped without a wait.
const SA_NOCLDWAIT: u64 = 2;
const SIGSTOP: u64 = 19;
/// Raised by a write to a pipe no one reads.
pub(crate) const SIGPIPE: u64 = 13;
/// Size of the kernel's sigset (64 signals).
const SIGSET_BYTES: u64 = 8;

pub(crate) fn rt_sigaction(
    process: &mut Process,
    signal: u64,
    new: u64,
    old: u64,
    size: u64,
) -> SysResult {
    if !(1..=64).contains(&signal) || size != SIGSET_BYTES {
        return Err(Errno::EINVAL);
    }
    if new != 0 && (signal == SIGKILL || signal == SIGSTOP) {
        return Err(Errno::EINVAL);
    }
    let index = signal as usize;
    let previous = process.signals.actions[index];
    if new != 0 {
        let raw = process.read_user(new, 32)?;
        let mut action = [0u64; 4];
        for (slot, bytes) in action.iter_mut().zip(raw.chunks_exact(8)) {
            *slot = u64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]));
        }
        process.signals.actions[index] = action;
        publish_dispositions(process);
    }
    if old != 0 {
        let mut out = Vec::with_capacity(32);
        for word in previous {
            out.extend_from_slice(&word.to_le_bytes());
        }
        process.write_user(old, &out)?;
    }
    Ok(0)
}

pub(crate) fn rt_sigprocmask(
    process: &mut Process,
    how: u64,
    set: u64,
    old: u64,
    size: u64,
) -> SysResult {
    if size != SIGSET_BYTES {
        return Err(Errno::EINVAL);
    }
    let previous = process.signals.mask;
    if set != 0 {
        let value = process.read_u64(set)?;
        let unblockable = (1 << (SIGKILL - 1)) | (1 << (SIGSTOP - 1));
        process.signals.mask = match how {
            0 => previous | value,
            1 => previous & !value,
            2 => value,
            _ => return Err(Errno::EINVAL),
        } & !unblockable;
    }
    if old != 0 {
        process.write_u64(old, previous)?;
    }
    Ok(0)
}

pub(crate) fn rt_sigreturn(process: &mut Process, vcpu: &mut Vcpu) -> Flow {
    if sigframe::sigreturn(process, vcpu) {
        Flow::Restored
    } else {
        Flow::Signaled(11)
    }
}

use crate::kernel::process::{SS_AUTODISARM, SS_DISABLE, SS_ONSTACK};
/// The smallest alternate stack Linux accepts (MINSIGSTKSZ).
const MINSIGSTKSZ: u64 = 2048;

/// `sigaltstack(new, old)` for the calling thread, whose stack pointer is `rsp`.
pub(crate) fn sigaltstack(process: &mut Process, rsp: u64, new: u64, old: u64) -> SysResult {
    let tid = process.tid;
    let current = process.altstack();
    let on_it = current.is_some_and(|stack| stack.holds(rsp));
    let wanted = if new != 0 {
        let raw = process.read_user(new, 24)?;
        let sp = u64::from_le_bytes(raw[0..8].try_into().unwrap_or([0; 8]));
        let flags = u32::from_le_bytes(raw[8..12].try_into().unwrap_or([0; 4]));
        let size = u64::from_le_bytes(raw[16..24].try_into().unwrap_or([0; 8]));
        if flags & !(SS_DISABLE | SS_ONSTACK | SS_AUTODISARM) != 0 {
            return Err(Errno::EINVAL);
        }
        if on_it {
            return Err(Errno::EPERM);
        }
        if flags & SS_DISABLE != 0 {
            Some(None)
        } else if size < MINSIGSTKSZ {
            return Err(Errno::ENOMEM);
        } else {
            Some(Some(crate::kernel::process::AltStack {
                sp,
                size,
                autodisarm: flags & SS_AUTODISARM != 0,
            }))
        }
    } else {
        None
    };
    if old != 0 {
        let mut out = [0u8; 24];
        let (sp, size, flags) = match current {
            Some(stack) => (
                stack.sp,
                stack.size,
                if on_it { SS_ONSTACK } else { 0 }
                    | if stack.autodisarm { SS_AUTODISARM } else { 0 },
            ),
            None => (0, 0, SS_DISABLE),
        };
        out[0..8].copy_from_slice(&sp.to_le_bytes());
        out[8..12].copy_from_slice(&flags.to_le_bytes());
        out[16..24].copy_from_slice(&size.to_le_bytes());
        process.write_user(old, &out)?;
    }
    if let Some(stack) = wanted
        && let Some(info) = process.threads.live.get_mut(&tid)
    {
        info.altstack = stack;
    }
    Ok(0)
}

/// `kill`, `tkill`, `tgkill`: to this process, to another process of the task, to a
/// process group, or to every other process (`kill(-1)`). A signal to this process is made
/// pending (unless ignored) and delivered as the call returns, or when it is unblocked; one
/// to another process is queued there and its threads kicked, so it is taken at once by a
/// thread running guest code and interrupts a waiting one. SIGKILL ends its target.
pub(crate) fn kill(process: &mut Process, number: u64, a: [u64; 6]) -> Flow {
    let (target, signal) = match number {
        62 | 200 => (a[0] as i32, a[1]),
        _ => (a[1] as i32, a[2]),
    };
    if signal > 64 {
        return Flow::Return((-i64::from(Errno::EINVAL.0)) as u64);
    }
    let me = process.pid;
    let targets = match number {
        62 => {
            let mut targets = process.tree.kill_targets(me, target);
            // kill(-1) reaches every process but the caller; kill of the caller's own group
            // or pid includes it.
            let includes_me = targets.iter().any(|shared| shared.pid == me);
            targets.retain(|shared| shared.pid != me);
            (targets, includes_me)
        }
        // tgkill(tgid, tid): the thread must be in that process; tkill(tid): any thread.
        _ => {
            let owner = process.tree.process_of(target);
            let tgid_ok = number != 234 || owner.as_ref().is_some_and(|o| o.pid == a[0] as i32);
            match owner {
                Some(_) if !tgid_ok => (Vec::new(), false),
                Some(owner) if owner.pid == me => (Vec::new(), true),
                Some(owner) => (vec![owner], false),
                None => (Vec::new(), false),
            }
        }
    };
    let (others, includes_me) = targets;
    if others.is_empty() && !includes_me {
        return Flow::Return((-i64::from(Errno::ESRCH.0)) as u64);
    }
    if signal == 0 {
        return Flow::Return(0);
    }
    // SI_USER for kill, SI_TKILL for tkill and tgkill.
    let code = if number == 62 { 0 } else { -6 };
    for other in &others {
        other.send(signal, code, me);
    }
    if includes_me {
        if signal == SIGKILL {
            return Flow::Signaled(SIGKILL as i32);
        }
        raise(process, signal, code);
    }
    Flow::Return(0)
}

/// Makes `signal` (1 to 64, not SIGKILL) pending with `si_code` `code`, unless the task
/// ignores it; it is delivered as the current call returns, or when it is unblocked.
pub(crate) fn raise(process: &mut Process, signal: u64, code: i32) {
    let me = process.pid;
    raise_from(process, signal, code, me);
}

/// [`raise`] for a signal `sender` sent.
pub(crate) fn raise_from(process: &mut Process, signal: u64, code: i32, sender: i32) {
    let handler = process.signals.actions[signal as usize][0];
    if handler == SIG_IGN || (handler == SIG_DFL && ignored_by_default(signal)) {
        return;
    }
    process.signals.pending |= 1 << (signal - 1);
    process.signals.codes[signal as usize] = code;
    process.signals.senders[signal as usize] = sender;
}

/// Keeps what other processes see of the dispositions in step: which sent signals are
/// dropped, and whether children are reaped without a wait.
fn publish_dispositions(process: &Process) {
    let mut ignored = 0u64;
    for signal in 1..=64u64 {
        let handler = process.signals.actions[signal as usize][0];
        if handler == SIG_IGN || (handler == SIG_DFL && ignored_by_default(signal)) {
            ignored |= 1 << (signal - 1);
        }
    }
    use std::sync::atomic::Ordering;
    process.shared.ignored.store(ignored, Ordering::Release);
    let child = process.signals.actions[SIGCHLD as usize];
    process.shared.auto_reap.store(
        child[0] == SIG_IGN || child[1] & SA_NOCLDWAIT != 0,
        Ordering::Release,
    );
}

/// `execve`: handlers go back to SIG_DFL (ignored signals stay ignored); pending signals and
/// the mask are kept.
pub(crate) fn reset_for_exec(process: &mut Process) {
    for action in process.signals.actions.iter_mut() {
        if action[0] != SIG_IGN {
            *action = [SIG_DFL, 0, 0, 0];
        }
    }
    publish_dispositions(process);
}

/// `sa_flags`: a call the handler interrupts is made again.
const SA_RESTART: u64 = 0x1000_0000;
/// Calls Linux makes again after a handler with SA_RESTART: reads and writes that waited,
/// and waits for children.
const RESTARTABLE: [u64; 8] = [0, 1, 17, 18, 19, 20, 61, 247];

/// Whether the blocked call `number`, cut short by the signal about to be delivered, is to
/// be made again once its handler returns.
pub(crate) fn restarts(process: &Process, number: u64) -> bool {
    let deliverable = process.signals.pending & !(process.signals.mask & !sigframe::UNBLOCKABLE);
    if deliverable == 0 || !RESTARTABLE.contains(&number) {
        return false;
    }
    let signal = deliverable.trailing_zeros() as usize + 1;
    let action = process.signals.actions[signal];
    action[0] != SIG_DFL && action[0] != SIG_IGN && action[1] & SA_RESTART != 0
}

/// Where a pending signal is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum At {
    /// As a system call returns (the vCPU is at the trampoline's return).
    Syscall,
    /// Wherever guest code was when the vCPU was kicked out.
    Anywhere,
}

/// After a system call (or a kick): runs the lowest pending, unblocked signal's action.
/// `None` to go on, or the signal the process dies of.
pub(crate) fn deliver_pending(process: &mut Process, vcpu: &mut Vcpu, at: At) -> Option<i32> {
    let deliverable = process.signals.pending & !(process.signals.mask & !sigframe::UNBLOCKABLE);
    if deliverable == 0 {
        return None;
    }
    if at == At::Anywhere {
        use crate::hypervisor::vm::layout::{USER_SYSTEM_BASE, USER_TOP};
        let rip = vcpu.regs().rip;
        if rip >= USER_SYSTEM_BASE || rip >= USER_TOP {
            // In the trampoline (its save area is in use) or the kernel area: taken at the
            // next system call instead.
            return None;
        }
    }
    let signal = deliverable.trailing_zeros() + 1;
    process.signals.pending &= !(1 << (signal - 1));
    let signo = i32::try_from(signal).unwrap_or(i32::MAX);
    let action = process.signals.actions[signal as usize];
    match action[0] {
        SIG_IGN => None,
        SIG_DFL if ignored_by_default(u64::from(signal)) || (19..=22).contains(&signal) => None,
        SIG_DFL => Some(signo),
        _ if action[1] & SA_RESTORER == 0 => Some(11),
        _ => {
            let info = sigframe::SigInfo {
                signo,
                code: process.signals.codes[signal as usize],
                value: u64::from(process.signals.senders[signal as usize] as u32),
            };
            let delivered = match at {
                At::Syscall => sigframe::deliver_at_syscall(process, vcpu, info),
                At::Anywhere => sigframe::deliver_async(process, vcpu, info),
            };
            if delivered { None } else { Some(11) }
        }
    }
}
