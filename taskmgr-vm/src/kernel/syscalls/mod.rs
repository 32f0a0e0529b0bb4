//! The Linux system call ABI the domain presents, emulated by the VMM against the task's own
//! resources only: its address space, the session directory, its output streams, the
//! domain's clocks. Each call reads its arguments from the registers the exit brought, and
//! every pointer among them is checked in `process.rs` before it is used.
//!
//! Which calls, and how far: the one table in [`table`], from which dispatch, the documented
//! list (`docs/linux-system-calls.md`) and the capability report are derived. Anything else
//! returns `ENOSYS` and is counted for the client. Calls that only make sense with several
//! processes (`fork`, `execve`, `wait4`) are refused the way a program can cope with.

pub(crate) mod epoll;
pub(crate) mod fs;
mod info;
mod io;
mod mem;
mod pipes;
mod poll;
mod process;
pub(crate) mod signal;
pub(crate) mod table;
mod time;
mod timers;

use crate::hypervisor::cpu::Vcpu;
use crate::kernel::process::Process;

/// An errno value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Errno(pub(crate) i32);

#[allow(missing_docs)]
impl Errno {
    pub(crate) const EPERM: Errno = Errno(1);
    pub(crate) const ENOENT: Errno = Errno(2);
    pub(crate) const ESRCH: Errno = Errno(3);
    pub(crate) const EINTR: Errno = Errno(4);
    pub(crate) const EIO: Errno = Errno(5);
    pub(crate) const ENXIO: Errno = Errno(6);
    pub(crate) const E2BIG: Errno = Errno(7);
    pub(crate) const ENOEXEC: Errno = Errno(8);
    pub(crate) const EBADF: Errno = Errno(9);
    pub(crate) const ECHILD: Errno = Errno(10);
    pub(crate) const EAGAIN: Errno = Errno(11);
    pub(crate) const ENOMEM: Errno = Errno(12);
    pub(crate) const EACCES: Errno = Errno(13);
    pub(crate) const EFAULT: Errno = Errno(14);
    pub(crate) const EEXIST: Errno = Errno(17);
    pub(crate) const ENODEV: Errno = Errno(19);
    pub(crate) const ENOTDIR: Errno = Errno(20);
    pub(crate) const EISDIR: Errno = Errno(21);
    pub(crate) const EINVAL: Errno = Errno(22);
    pub(crate) const EMFILE: Errno = Errno(24);
    pub(crate) const ENOTTY: Errno = Errno(25);
    pub(crate) const ENOSPC: Errno = Errno(28);
    pub(crate) const ESPIPE: Errno = Errno(29);
    pub(crate) const EPIPE: Errno = Errno(32);
    pub(crate) const ERANGE: Errno = Errno(34);
    pub(crate) const ENAMETOOLONG: Errno = Errno(36);
    pub(crate) const ENOSYS: Errno = Errno(38);
    pub(crate) const ENOTEMPTY: Errno = Errno(39);
    pub(crate) const ELOOP: Errno = Errno(40);
    pub(crate) const EOPNOTSUPP: Errno = Errno(95);
    pub(crate) const ETIMEDOUT: Errno = Errno(110);

    /// The errno for a host I/O error.
    pub(crate) fn from_io(error: &std::io::Error) -> Errno {
        if let Some(code) = error.raw_os_error() {
            return Errno(code);
        }
        use std::io::ErrorKind;
        match error.kind() {
            ErrorKind::NotFound => Errno::ENOENT,
            ErrorKind::PermissionDenied => Errno::EACCES,
            ErrorKind::AlreadyExists => Errno::EEXIST,
            ErrorKind::InvalidInput => Errno::EINVAL,
            ErrorKind::NotADirectory => Errno::ENOTDIR,
            ErrorKind::IsADirectory => Errno::EISDIR,
            ErrorKind::DirectoryNotEmpty => Errno::ENOTEMPTY,
            _ => Errno::EIO,
        }
    }
}

/// What a system call did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Return this value in RAX and go on.
    Return(u64),
    /// The task ends: `exit_group` (or the last thread's `exit`) with this status.
    Exit(i32),
    /// This thread ends (`exit`); the task goes on while it has others.
    ExitThread(i32),
    /// Sleep until then, then return 0 (`nanosleep`), outside the process lock.
    Sleep(std::time::Instant),
    /// Wait on the futex at this address (already queued) until woken or the deadline.
    FutexWait(Option<std::time::Instant>, u64),
    /// Not ready (its waiter is queued on what it waits for): wait outside the lock until
    /// woken, the deadline or a stop, then run the same call again ([`crate::kernel::wait`]).
    Block(crate::kernel::wait::Blocked),
    /// Start a thread (`clone`): needs the task's runtime, which the run loop has.
    Clone(crate::kernel::threads::CloneArgs),
    /// The task ends with a fatal signal it sent itself (`kill`, `tgkill`, `abort`).
    Signaled(i32),
    /// `rt_sigreturn` restored every register itself: leave RAX alone.
    Restored,
}

pub(crate) type SysResult = Result<u64, Errno>;

const EXECVE: u64 = 59;
const EXECVEAT: u64 = 322;

/// Handles the system call in `regs` for `process`: the row of [`table::TABLE`] for its
/// number, or `ENOSYS` counted as unknown.
pub(crate) fn dispatch(process: &mut Process, vcpu: &mut Vcpu) -> Flow {
    let regs = vcpu.regs();
    let number = regs.rax;
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
    if process.resume.is_none() {
        // A call run again after a wait was counted when the task made it.
        process.meter.add_syscall();
    }
    if number != EXECVE && number != EXECVEAT {
        // A thread that was exec'ing and makes another call gave up (its exec was cut short
        // by a signal): the process's threads may stay.
        process.shared.end_exec(process.tid);
    }
    let flow = table::run(process, vcpu, number, args);
    process.publish_tables();
    flow
}

/// `futex`: WAIT, WAKE, REQUEUE, CMP_REQUEUE and the BITSET forms (bitsets treated as all).
pub(super) fn futex(process: &mut Process, a: [u64; 6]) -> Flow {
    use crate::kernel::threads;
    let [address, op, value, timeout, address2, value3] = a;
    let result = match op & 0x7f {
        0 | 9 => {
            let absolute = op & 0x7f == 9;
            if op & 0x7f == 9 && value3 as u32 == 0 {
                Err(Errno::EINVAL)
            } else {
                threads::futex_deadline(process, timeout, absolute)
                    .and_then(|deadline| {
                        threads::futex_wait_begin(process, address, value as u32).map(|()| deadline)
                    })
                    .map(|deadline| return_flow_wait(deadline, address))
            }
        }
        1 | 10 => Ok(Flow::Return(threads::futex_wake(
            process,
            address,
            value & 0x7fff_ffff,
        ))),
        3 => Ok(Flow::Return(threads::futex_requeue(
            process, address, address2, value, timeout,
        ))),
        4 => {
            let mut word = [0u8; 4];
            match process.read_user_into(address, &mut word) {
                Err(errno) => Err(errno),
                Ok(()) if u32::from_le_bytes(word) != value3 as u32 => Err(Errno::EAGAIN),
                Ok(()) => Ok(Flow::Return(threads::futex_requeue(
                    process, address, address2, value, timeout,
                ))),
            }
        }
        _ => Err(Errno::ENOSYS),
    };
    match result {
        Ok(flow) => flow,
        Err(Errno(code)) => Flow::Return((-i64::from(code)) as u64),
    }
}

fn return_flow_wait(deadline: Option<std::time::Instant>, address: u64) -> Flow {
    Flow::FutexWait(deadline, address)
}
