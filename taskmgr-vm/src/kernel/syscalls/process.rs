//! Calls about processes: waiting for children (`wait4`, `waitid`), parents, groups and
//! sessions, `execve`, and waiting for a signal (`rt_sigsuspend`, `pause`). `fork`, `vfork`
//! and `clone` are run by the run loop (`kernel/fork.rs`), which has the vCPU threads.

use super::{Errno, Flow, info};
use crate::hypervisor::cpu::Vcpu;
use crate::kernel::exec;
use crate::kernel::process::Process;
use crate::kernel::sigframe::UNBLOCKABLE;
use crate::kernel::threads::CloneArgs;
use crate::kernel::tree::{Found, SIGCHLD, Status, Which};
use crate::kernel::wait::{Blocked, Io, IoResult};
use xeno_taskmgr_kit::lock;

const WNOHANG: u64 = 1;
const WUNTRACED: u64 = 2;
const WEXITED: u64 = 4;
const WCONTINUED: u64 = 8;
const WNOWAIT: u64 = 0x0100_0000;
const WNOTHREAD: u64 = 0x2000_0000;
const WALL: u64 = 0x4000_0000;
const WCLONE: u64 = 0x8000_0000;
const CLONE_VM: u64 = 0x100;
const CLONE_VFORK: u64 = 0x4000;

/// `fork`: `clone(SIGCHLD)`.
pub(super) fn fork() -> Flow {
    Flow::Clone(CloneArgs {
        flags: SIGCHLD,
        stack: 0,
        parent_tid: 0,
        child_tid: 0,
        tls: 0,
    })
}

/// `vfork`: `clone(CLONE_VM | CLONE_VFORK | SIGCHLD)`.
pub(super) fn vfork() -> Flow {
    Flow::Clone(CloneArgs {
        flags: CLONE_VM | CLONE_VFORK | SIGCHLD,
        stack: 0,
        parent_tid: 0,
        child_tid: 0,
        tls: 0,
    })
}

/// `execve` and `execveat`: on success every register is the new program's.
pub(super) fn execveat(process: &mut Process, vcpu: &mut Vcpu, a: [u64; 5]) -> Flow {
    match exec::execveat(process, vcpu, a[0], a[1], a[2], a[3], a[4]) {
        Ok(None) => Flow::Restored,
        Ok(Some(blocked)) => Flow::Block(blocked),
        Err(Errno(code)) => Flow::Return((-i64::from(code)) as u64),
    }
}

/// Which children a pid argument of `wait4` names.
fn which_of(pid: i32) -> Which {
    match pid {
        -1 => Which::Any,
        0 => Which::Group(0),
        pid if pid > 0 => Which::Pid(pid),
        group => Which::Group(group.saturating_neg()),
    }
}

/// Looks for a child that ended: registers the thread for a wake-up first, so that a child
/// ending between the look and the wait is not missed.
fn look(process: &mut Process, which: Which, keep: bool, block: bool) -> Result<Found, Errno> {
    if block {
        let waiter = process.io_waiter().ok_or(Errno::EINVAL)?;
        lock(&process.shared.children).register(&waiter);
    }
    Ok(process.tree.wait(process.pid, which, keep))
}

/// `wait4(pid, wstatus, options, rusage)`.
pub(super) fn wait4(
    process: &mut Process,
    pid: u64,
    wstatus: u64,
    options: u64,
    rusage: u64,
) -> IoResult {
    if options & !(WNOHANG | WUNTRACED | WCONTINUED | WNOTHREAD | WALL | WCLONE) != 0 {
        return Err(Errno::EINVAL);
    }
    let which = which_of(pid as u32 as i32);
    match look(process, which, false, options & WNOHANG == 0)? {
        Found::None => Err(Errno::ECHILD),
        Found::Running if options & WNOHANG != 0 => Ok(Io::Done(0)),
        Found::Running => Ok(Io::Wait(Blocked {
            until: None,
            progress: 0,
        })),
        Found::Ended(child, status, cpu) => {
            process.vm.processes_ended(1);
            process.shared.cpu.add_children(cpu);
            if wstatus != 0 {
                process.write_user(wstatus, &status.wstatus().to_le_bytes())?;
            }
            if rusage != 0 {
                process.write_user(rusage, &info::rusage_bytes(cpu, 0))?;
            }
            Ok(Io::Done(child as u64))
        }
    }
}

/// `waitid(idtype, id, infop, options, rusage)`.
pub(super) fn waitid(process: &mut Process, a: [u64; 6]) -> IoResult {
    let [idtype, id, infop, options, rusage, _] = a;
    if options & !(WNOHANG | WUNTRACED | WEXITED | WCONTINUED | WNOWAIT | WNOTHREAD | WALL | WCLONE)
        != 0
        || options & (WUNTRACED | WEXITED | WCONTINUED) == 0
    {
        return Err(Errno::EINVAL);
    }
    let which = match idtype {
        0 => Which::Any,
        1 if id as u32 as i32 > 0 => Which::Pid(id as u32 as i32),
        2 => Which::Group(id as u32 as i32),
        _ => return Err(Errno::EINVAL),
    };
    let keep = options & WNOWAIT != 0;
    let found = if options & WEXITED == 0 {
        // Children never stop or continue here: there is nothing to report but their
        // existence.
        match process.tree.wait(process.pid, which, true) {
            Found::None => Found::None,
            _ => Found::Running,
        }
    } else {
        look(process, which, keep, options & WNOHANG == 0)?
    };
    match found {
        Found::None => Err(Errno::ECHILD),
        Found::Running if options & WNOHANG != 0 => {
            if infop != 0 {
                process.write_user(infop, &[0u8; 128])?;
            }
            Ok(Io::Done(0))
        }
        Found::Running => Ok(Io::Wait(Blocked {
            until: None,
            progress: 0,
        })),
        Found::Ended(child, status, cpu) => {
            if !keep {
                process.vm.processes_ended(1);
                process.shared.cpu.add_children(cpu);
            }
            if infop != 0 {
                process.write_user(infop, &siginfo(child, status))?;
            }
            if rusage != 0 {
                process.write_user(rusage, &info::rusage_bytes(cpu, 0))?;
            }
            Ok(Io::Done(0))
        }
    }
}

/// The `siginfo_t` of a child's end (SIGCHLD, its code, pid, uid 0, status).
fn siginfo(pid: i32, status: Status) -> [u8; 128] {
    let (code, value) = status.siginfo();
    let mut info = [0u8; 128];
    info[0..4].copy_from_slice(&(SIGCHLD as i32).to_le_bytes());
    info[8..12].copy_from_slice(&code.to_le_bytes());
    info[16..20].copy_from_slice(&pid.to_le_bytes());
    info[24..28].copy_from_slice(&value.to_le_bytes());
    info
}

/// `getpgid(pid)` (`getpgrp` is `getpgid(0)`) and `getsid(pid)`: of this process or
/// another of the task.
pub(super) fn group(process: &Process, pid: u64, session: bool) -> Result<u64, Errno> {
    let pid = match pid as u32 as i32 {
        0 => process.pid,
        pid => pid,
    };
    let (pgid, sid) = process.tree.group_of(pid).ok_or(Errno::ESRCH)?;
    Ok(if session { sid } else { pgid } as u64)
}

/// `setpgid(pid, pgid)`.
pub(super) fn setpgid(process: &Process, pid: u64, pgid: u64) -> Result<u64, Errno> {
    let pid = match pid as u32 as i32 {
        0 => process.pid,
        pid if pid < 0 => return Err(Errno::EINVAL),
        pid => pid,
    };
    let pgid = match pgid as u32 as i32 {
        0 => pid,
        pgid if pgid < 0 => return Err(Errno::EINVAL),
        pgid => pgid,
    };
    process
        .tree
        .set_group(process.pid, pid, pgid)
        .map(|()| 0)
        .map_err(Errno)
}

/// `setsid`.
pub(super) fn setsid(process: &Process) -> Result<u64, Errno> {
    process
        .tree
        .new_session(process.pid)
        .map(|sid| sid as u64)
        .map_err(Errno)
}

/// `rt_sigsuspend(mask, size)`: waits with `mask` until a signal is delivered, then fails
/// with EINTR; the handler's frame holds the mask from before the call. `pause` is the same
/// with the current mask (`mask_va` 0).
pub(super) fn sigsuspend(process: &mut Process, mask_va: u64, size: u64) -> IoResult {
    if process.resume.is_some() {
        // Woken for nothing: only a signal ends this wait.
        return Ok(Io::Wait(Blocked {
            until: None,
            progress: 0,
        }));
    }
    if mask_va != 0 {
        if size != 8 {
            return Err(Errno::EINVAL);
        }
        let mask = process.read_u64(mask_va)?;
        process.signals.restore_mask = Some(process.signals.mask);
        process.signals.mask = mask & !UNBLOCKABLE;
    }
    let _ = process.io_waiter();
    Ok(Io::Wait(Blocked {
        until: None,
        progress: 0,
    }))
}

/// `rt_sigtimedwait(set, info, timeout, size)`: takes the lowest pending signal of `set`
/// (filling `info`) and returns its number, waiting for one until `timeout` (`EAGAIN` then)
/// or until a signal outside `set` is delivered (`EINTR`).
pub(super) fn sigtimedwait(
    process: &mut Process,
    set_va: u64,
    info_va: u64,
    timeout_va: u64,
    size: u64,
) -> IoResult {
    if size != 8 {
        return Err(Errno::EINVAL);
    }
    let set = process.read_u64(set_va)? & !UNBLOCKABLE;
    let resumed = process.resume;
    let until = match resumed {
        Some(resume) => resume.until,
        None if timeout_va == 0 => None,
        None => {
            let raw = process.read_user(timeout_va, 16)?;
            let seconds = i64::from_le_bytes(raw[..8].try_into().unwrap_or([0; 8]));
            let nanos = i64::from_le_bytes(raw[8..].try_into().unwrap_or([0; 8]));
            if seconds < 0 || !(0..1_000_000_000).contains(&nanos) {
                return Err(Errno::EINVAL);
            }
            Some(std::time::Instant::now() + std::time::Duration::new(seconds as u64, nanos as u32))
        }
    };
    process.take_incoming();
    let ready = process.signals.pending & set;
    if ready != 0 {
        process.signals.waiting_for = 0;
        let signal = ready.trailing_zeros() as usize + 1;
        process.signals.pending &= !(1 << (signal - 1));
        if info_va != 0 {
            let mut info = [0u8; 128];
            info[0..4].copy_from_slice(&(signal as i32).to_le_bytes());
            info[8..12].copy_from_slice(&process.signals.codes[signal].to_le_bytes());
            info[16..20].copy_from_slice(&process.signals.senders[signal].to_le_bytes());
            process.write_user(info_va, &info)?;
        }
        return Ok(Io::Done(signal as u64));
    }
    let timed_out = resumed.is_some_and(|resume| resume.timed_out)
        || until.is_some_and(|until| until <= std::time::Instant::now());
    let interrupted = process.signals.pending & !(process.signals.mask & !UNBLOCKABLE) != 0;
    if timed_out || interrupted {
        process.signals.waiting_for = 0;
        return Err(if interrupted {
            Errno::EINTR
        } else {
            Errno::EAGAIN
        });
    }
    process.signals.waiting_for = set;
    let _ = process.io_waiter();
    Ok(Io::Wait(Blocked { until, progress: 0 }))
}
