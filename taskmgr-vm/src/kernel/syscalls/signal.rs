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

pub(crate) fn sigaltstack(process: &mut Process, new: u64, old: u64) -> SysResult {
    if new != 0 {
        process.read_user(new, 24)?;
    }
    if old != 0 {
        // SS_DISABLE: no alternate stack.
        let mut out = [0u8; 24];
        out[8..12].copy_from_slice(&2u32.to_le_bytes());
        process.write_user(old, &out)?;
    }
    Ok(0)
}

/// `kill`, `tkill`, `tgkill`: only the task itself can be a target. The signal is made
/// pending (unless ignored) and delivered as the call returns, or when it is unblocked.
pub(crate) fn kill(process: &mut Process, number: u64, a: [u64; 6]) -> Flow {
    let (target, signal) = match number {
        62 | 200 => (a[0] as i32, a[1]),
        _ => (a[1] as i32, a[2]),
    };
    let me = process.pid;
    let targets_self = target == me
        || (number == 62 && (target == 0 || target == -1 || target == -me))
        || (number != 62 && process.threads.live.contains_key(&target));
    if !targets_self {
        return Flow::Return((-i64::from(Errno::ESRCH.0)) as u64);
    }
    if signal > 64 {
        return Flow::Return((-i64::from(Errno::EINVAL.0)) as u64);
    }
    if signal == 0 {
        return Flow::Return(0);
    }
    if signal == SIGKILL {
        return Flow::Signaled(SIGKILL as i32);
    }
    // SI_USER for kill, SI_TKILL for tkill and tgkill.
    raise(process, signal, if number == 62 { 0 } else { -6 });
    Flow::Return(0)
}

/// Makes `signal` (1 to 64, not SIGKILL) pending with `si_code` `code`, unless the task
/// ignores it; it is delivered as the current call returns, or when it is unblocked.
pub(crate) fn raise(process: &mut Process, signal: u64, code: i32) {
    let handler = process.signals.actions[signal as usize][0];
    if handler == SIG_IGN || (handler == SIG_DFL && ignored_by_default(signal)) {
        return;
    }
    process.signals.pending |= 1 << (signal - 1);
    process.signals.codes[signal as usize] = code;
}

/// After a system call: runs the lowest pending, unblocked signal's action. `None` to go on,
/// or the signal the task dies of.
pub(crate) fn deliver_pending(process: &mut Process, vcpu: &mut Vcpu) -> Option<i32> {
    let deliverable = process.signals.pending & !(process.signals.mask & !sigframe::UNBLOCKABLE);
    if deliverable == 0 {
        return None;
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
                value: u64::from(process.pid as u32),
            };
            if sigframe::deliver_at_syscall(process, vcpu, info) {
                None
            } else {
                Some(11)
            }
        }
    }
}
