//! The one table of the Linux system calls a domain answers: one row per call, with its x86-64
//! number, its name, how far it is supported and its handler. Dispatch, the documented list
//! (`docs/linux-system-calls.md`) and the capability report are all read from [`TABLE`]; a
//! number with no row is unknown: it returns `ENOSYS` and is counted for the client.

use super::{
    Errno, Flow, SysResult, epoll, fs, info, io, mem, pipes, poll, process, signal, time, timers,
};
use crate::hypervisor::cpu::Vcpu;
use crate::kernel::process::Process;
use crate::kernel::wait::{Io, IoResult};

/// How far the domain supports a system call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Support {
    /// As Linux does it.
    Full,
    /// It works, with the difference given.
    Partial(&'static str),
    /// It always fails with this errno, for the reason given, the way a program can cope with
    /// (it is not counted as unknown).
    Refused(i32, &'static str),
}

const LEVEL_TRIGGERED: &str = "events are reported level-triggered (EPOLLET is accepted; a program that reads until EAGAIN sees the same data); EPOLLONESHOT holds";
const ITIMERS: &str = "ITIMER_REAL on the wall clock; ITIMER_VIRTUAL and ITIMER_PROF \
     both count the process's CPU time, guest and VMM together (there is no separate user \
     time), checked at least every CPU slice";
const TIMER_CLOCKS: &str = "REALTIME, MONOTONIC and BOOTTIME clocks, and the process's own CPU \
     clock (its CPU time, checked at least every CPU slice); thread CPU clocks and other \
     processes' are EINVAL";

/// Runs one call: the process, the vCPU it came from and its six argument registers.
pub(crate) type Handler = fn(&mut Process, &mut Vcpu, [u64; 6]) -> Flow;

/// One system call the domain answers.
#[derive(Clone, Copy)]
pub struct Syscall {
    /// Its x86-64 number.
    pub number: u64,
    /// Its name, as in `<asm/unistd_64.h>`.
    pub name: &'static str,
    /// How far it is supported.
    pub support: Support,
    /// What runs it (`None` exactly when it is refused).
    handler: Option<Handler>,
}

impl std::fmt::Debug for Syscall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syscall")
            .field("number", &self.number)
            .field("name", &self.name)
            .field("support", &self.support)
            .finish()
    }
}

const fn full(number: u64, name: &'static str, handler: Handler) -> Syscall {
    Syscall {
        number,
        name,
        support: Support::Full,
        handler: Some(handler),
    }
}

const fn partial(number: u64, name: &'static str, note: &'static str, handler: Handler) -> Syscall {
    Syscall {
        number,
        name,
        support: Support::Partial(note),
        handler: Some(handler),
    }
}

const fn refused(number: u64, name: &'static str, errno: Errno, why: &'static str) -> Syscall {
    Syscall {
        number,
        name,
        support: Support::Refused(errno.0, why),
        handler: None,
    }
}

/// A handler's result as the value RAX gets.
fn done(result: SysResult) -> Flow {
    Flow::Return(match result {
        Ok(value) => value,
        Err(Errno(code)) => (-i64::from(code)) as u64,
    })
}

/// A result that may also wait, as the flow the run loop follows.
fn may_wait(result: IoResult) -> Flow {
    match result {
        Ok(Io::Done(value)) => Flow::Return(value),
        Ok(Io::Wait(blocked)) => Flow::Block(blocked),
        Err(Errno(code)) => Flow::Return((-i64::from(code)) as u64),
    }
}

/// One past the highest number a row may have (the index below is this long).
pub(crate) const NUMBER_END: usize = 512;

/// Every system call the domain answers, by number.
pub const TABLE: &[Syscall] = &[
    full(0, "read", |p, _, a| may_wait(io::read(p, a[0], a[1], a[2]))),
    full(1, "write", |p, _, a| {
        may_wait(io::write(p, a[0], a[1], a[2]))
    }),
    full(2, "open", |p, _, a| {
        done(fs::openat(p, fs::AT_FDCWD, a[0], a[1], a[2]))
    }),
    full(3, "close", |p, _, a| done(fs::close(p, a[0]))),
    full(4, "stat", |p, _, a| {
        done(fs::fstatat(p, fs::AT_FDCWD, a[0], a[1], 0))
    }),
    full(5, "fstat", |p, _, a| done(fs::fstat(p, a[0], a[1]))),
    full(6, "lstat", |p, _, a| {
        done(fs::fstatat(
            p,
            fs::AT_FDCWD,
            a[0],
            a[1],
            fs::AT_SYMLINK_NOFOLLOW,
        ))
    }),
    full(7, "poll", |p, _, a| {
        may_wait(poll::poll(p, a[0], a[1], a[2]))
    }),
    full(8, "lseek", |p, _, a| done(io::lseek(p, a[0], a[1], a[2]))),
    full(9, "mmap", |p, _, a| done(mem::mmap(p, a))),
    full(10, "mprotect", |p, _, a| {
        done(mem::mprotect(p, a[0], a[1], a[2]))
    }),
    full(11, "munmap", |p, _, a| done(mem::munmap(p, a[0], a[1]))),
    full(12, "brk", |p, _, a| done(mem::brk(p, a[0]))),
    full(13, "rt_sigaction", |p, _, a| {
        done(signal::rt_sigaction(p, a[0], a[1], a[2], a[3]))
    }),
    full(14, "rt_sigprocmask", |p, _, a| {
        done(signal::rt_sigprocmask(p, a[0], a[1], a[2], a[3]))
    }),
    full(15, "rt_sigreturn", |p, v, _| signal::rt_sigreturn(p, v)),
    partial(
        16,
        "ioctl",
        "no descriptor is a terminal: ENOTTY on a valid one (programs then treat output as a pipe)",
        |p, _, a| done(io::ioctl(p, a[0], a[1], a[2])),
    ),
    full(17, "pread64", |p, _, a| {
        done(io::pread(p, a[0], a[1], a[2], a[3]))
    }),
    full(18, "pwrite64", |p, _, a| {
        done(io::pwrite(p, a[0], a[1], a[2], a[3]))
    }),
    full(19, "readv", |p, _, a| {
        may_wait(io::readv(p, a[0], a[1], a[2]))
    }),
    full(20, "writev", |p, _, a| {
        may_wait(io::writev(p, a[0], a[1], a[2]))
    }),
    full(21, "access", |p, _, a| {
        done(fs::faccessat(p, fs::AT_FDCWD, a[0], a[1]))
    }),
    full(22, "pipe", |p, _, a| done(pipes::pipe(p, a[0], 0))),
    partial(
        23,
        "select",
        "the timeout is not updated with the time left",
        |p, _, a| may_wait(poll::select(p, a)),
    ),
    full(24, "sched_yield", |_, _, _| done(Ok(0))),
    partial(
        25,
        "mremap",
        "MREMAP_FIXED is refused (EINVAL)",
        |p, _, a| done(mem::mremap(p, a)),
    ),
    partial(
        26,
        "msync",
        "writes the pages back at once whatever the flags; reads and writes of the file through \
         descriptors see them after msync or munmap",
        |p, _, a| done(mem::msync(p, a[0], a[1], a[2])),
    ),
    partial(
        28,
        "madvise",
        "MADV_DONTNEED discards the pages; other advice is accepted and ignored",
        |p, _, a| done(mem::madvise(p, a[0], a[1], a[2])),
    ),
    full(32, "dup", |p, _, a| done(fs::dup(p, a[0], None, 0))),
    full(33, "dup2", |p, _, a| done(fs::dup(p, a[0], Some(a[1]), 0))),
    partial(
        34,
        "pause",
        "ends only for a signal another process sends",
        |p, _, _| may_wait(process::sigsuspend(p, 0, 0)),
    ),
    full(35, "nanosleep", |p, _, a| time::sleep(p, 35, a)),
    partial(36, "getitimer", ITIMERS, |p, _, a| {
        done(timers::getitimer(p, a[0], a[1]))
    }),
    full(37, "alarm", |p, _, a| done(timers::alarm(p, a[0]))),
    partial(38, "setitimer", ITIMERS, |p, _, a| {
        done(timers::setitimer(p, a[0], a[1], a[2]))
    }),
    full(39, "getpid", |p, _, _| done(Ok(p.pid as u64))),
    refused(
        40,
        "sendfile",
        Errno::ENOSYS,
        "as a kernel without it: callers fall back to read and write",
    ),
    partial(
        56,
        "clone",
        "threads (CLONE_VM | CLONE_THREAD | CLONE_SIGHAND) and processes; CLONE_VM with \
         CLONE_VFORK runs the child on the parent's memory (as vfork); CLONE_VM without \
         either gives the child a copy of the memory, not the parent's own; shared \
         descriptor tables and namespaces are EINVAL",
        |_, _, a| clone_flow(a),
    ),
    full(57, "fork", |_, _, _| process::fork()),
    partial(
        58,
        "vfork",
        "the parent waits for the child's execve or exit, and the child runs on the parent's \
         memory (what it writes there the parent sees, as glibc's posix_spawn needs); from a \
         process with several threads the child runs on a copy",
        |_, _, _| process::vfork(),
    ),
    partial(
        59,
        "execve",
        "static and dynamically linked ELF programs and #! scripts; a dynamically linked \
         program whose interpreter is not in the session is ENOENT; the process's other \
         threads end first",
        |p, v, a| process::execveat(p, v, [fs::AT_FDCWD, a[0], a[1], a[2], 0]),
    ),
    full(60, "exit", |_, _, a| Flow::ExitThread(a[0] as i32)),
    partial(
        61,
        "wait4",
        "children never stop or continue (WUNTRACED and WCONTINUED report nothing); rusage \
         is zero",
        |p, _, a| may_wait(process::wait4(p, a[0], a[1], a[2], a[3])),
    ),
    full(62, "kill", |p, _, a| signal::kill(p, 62, a)),
    full(63, "uname", |p, _, a| done(info::uname(p, a[0]))),
    full(72, "fcntl", |p, _, a| done(fs::fcntl(p, a[0], a[1], a[2]))),
    partial(
        73,
        "flock",
        "one process holds the files: every lock is granted",
        |p, _, a| done(fs::sync_like(p, a[0])),
    ),
    partial(
        74,
        "fsync",
        "checks the descriptor; the session directory is scratch space",
        |p, _, a| done(fs::sync_like(p, a[0])),
    ),
    partial(
        75,
        "fdatasync",
        "checks the descriptor; the session directory is scratch space",
        |p, _, a| done(fs::sync_like(p, a[0])),
    ),
    full(76, "truncate", |p, _, a| done(fs::truncate(p, a[0], a[1]))),
    full(77, "ftruncate", |p, _, a| {
        done(fs::ftruncate(p, a[0], a[1]))
    }),
    full(79, "getcwd", |p, _, a| done(fs::getcwd(p, a[0], a[1]))),
    full(80, "chdir", |p, _, a| done(fs::chdir(p, a[0]))),
    full(81, "fchdir", |p, _, a| done(fs::fchdir(p, a[0]))),
    full(82, "rename", |p, _, a| {
        done(fs::renameat(p, fs::AT_FDCWD, a[0], fs::AT_FDCWD, a[1]))
    }),
    full(83, "mkdir", |p, _, a| {
        done(fs::mkdirat(p, fs::AT_FDCWD, a[0], a[1]))
    }),
    full(84, "rmdir", |p, _, a| {
        done(fs::unlinkat(p, fs::AT_FDCWD, a[0], fs::AT_REMOVEDIR))
    }),
    full(85, "creat", |p, _, a| {
        // O_CREAT | O_WRONLY | O_TRUNC, as Linux defines creat.
        done(fs::openat(p, fs::AT_FDCWD, a[0], 0o1101, a[1]))
    }),
    full(86, "link", |p, _, a| {
        done(fs::linkat(p, fs::AT_FDCWD, a[0], fs::AT_FDCWD, a[1]))
    }),
    full(87, "unlink", |p, _, a| {
        done(fs::unlinkat(p, fs::AT_FDCWD, a[0], 0))
    }),
    full(88, "symlink", |p, _, a| {
        done(fs::symlinkat(p, a[0], fs::AT_FDCWD, a[1]))
    }),
    full(89, "readlink", |p, _, a| {
        done(fs::readlinkat(p, fs::AT_FDCWD, a[0], a[1], a[2]))
    }),
    partial(90, "chmod", HOST_MODES, |p, _, a| {
        done(fs::fchmodat(p, fs::AT_FDCWD, a[0], a[1]))
    }),
    partial(91, "fchmod", HOST_MODES, |p, _, a| {
        done(fs::fchmod(p, a[0], a[1]))
    }),
    partial(92, "chown", OWNERSHIP, |_, _, _| done(Ok(0))),
    partial(93, "fchown", OWNERSHIP, |_, _, _| done(Ok(0))),
    partial(94, "lchown", OWNERSHIP, |_, _, _| done(Ok(0))),
    full(95, "umask", |p, _, a| {
        let old = p.umask;
        p.umask = (a[0] as u32) & 0o777;
        done(Ok(u64::from(old)))
    }),
    full(96, "gettimeofday", |p, _, a| {
        done(time::gettimeofday(p, a[0]))
    }),
    partial(
        97,
        "getrlimit",
        "the domain's own limits: the stack's and the descriptors'; others unlimited",
        |p, _, a| done(info::getrlimit(p, a[0], a[1])),
    ),
    partial(
        98,
        "getrusage",
        "RUSAGE_SELF (the process's CPU time), RUSAGE_THREAD and RUSAGE_CHILDREN (of the \
         children reaped), all as user time, with the resident size (none for children)",
        |p, _, a| done(info::getrusage(p, a[0], a[1])),
    ),
    full(99, "sysinfo", |p, _, a| done(info::sysinfo(p, a[0]))),
    full(100, "times", |p, _, a| done(time::times(p, a[0]))),
    partial(102, "getuid", ROOT_ONLY, |_, _, _| done(Ok(0))),
    partial(104, "getgid", ROOT_ONLY, |_, _, _| done(Ok(0))),
    partial(105, "setuid", SET_ROOT_ONLY, |_, _, a| {
        done(if a[0] == 0 { Ok(0) } else { Err(Errno::EPERM) })
    }),
    partial(106, "setgid", SET_ROOT_ONLY, |_, _, a| {
        done(if a[0] == 0 { Ok(0) } else { Err(Errno::EPERM) })
    }),
    partial(107, "geteuid", ROOT_ONLY, |_, _, _| done(Ok(0))),
    partial(108, "getegid", ROOT_ONLY, |_, _, _| done(Ok(0))),
    full(109, "setpgid", |p, _, a| {
        done(process::setpgid(p, a[0], a[1]))
    }),
    partial(
        110,
        "getppid",
        "1 for the task's first process: the domain is its parent",
        |p, _, _| done(Ok(p.tree.parent(p.pid) as u64)),
    ),
    full(111, "getpgrp", |p, _, _| done(process::group(p, 0, false))),
    full(112, "setsid", |p, _, _| done(process::setsid(p))),
    partial(113, "setreuid", SET_ROOT_ONLY, |_, _, a| {
        done(info::set_ids(&a[..2]))
    }),
    partial(114, "setregid", SET_ROOT_ONLY, |_, _, a| {
        done(info::set_ids(&a[..2]))
    }),
    partial(115, "getgroups", "no supplementary groups", |_, _, _| {
        done(Ok(0))
    }),
    partial(
        116,
        "setgroups",
        "an empty list only; any group EPERM",
        |_, _, a| done(if a[0] == 0 { Ok(0) } else { Err(Errno::EPERM) }),
    ),
    partial(117, "setresuid", SET_ROOT_ONLY, |_, _, a| {
        done(info::set_ids(&a[..3]))
    }),
    partial(118, "getresuid", ROOT_ONLY, |p, _, a| {
        done(info::get_ids(p, &a[..3]))
    }),
    partial(119, "setresgid", SET_ROOT_ONLY, |_, _, a| {
        done(info::set_ids(&a[..3]))
    }),
    partial(120, "getresgid", ROOT_ONLY, |p, _, a| {
        done(info::get_ids(p, &a[..3]))
    }),
    full(121, "getpgid", |p, _, a| {
        done(process::group(p, a[0], false))
    }),
    full(124, "getsid", |p, _, a| done(process::group(p, a[0], true))),
    partial(
        128,
        "rt_sigtimedwait",
        "the set waited for is the process's (not each thread's) while a thread waits",
        |p, _, a| may_wait(process::sigtimedwait(p, a[0], a[1], a[2], a[3])),
    ),
    partial(
        130,
        "rt_sigsuspend",
        "ends only for a signal another process sends or a handler a fault runs",
        |p, _, a| may_wait(process::sigsuspend(p, a[0], a[1])),
    ),
    full(131, "sigaltstack", |p, v, a| {
        done(signal::sigaltstack(p, v.regs().rsp, a[0], a[1]))
    }),
    partial(137, "statfs", DISK_ALLOWANCE, |p, _, a| {
        done(fs::statfs(p, a[0], 0, a[1]))
    }),
    partial(138, "fstatfs", DISK_ALLOWANCE, |p, _, a| {
        done(fs::statfs(p, 0, a[0], a[1]))
    }),
    partial(
        157,
        "prctl",
        "PR_GET_NAME and PR_SET_NAME; other options EINVAL",
        |p, _, a| done(info::prctl(p, a[0], a[1])),
    ),
    partial(
        158,
        "arch_prctl",
        "ARCH_SET_FS and ARCH_GET_FS; the GS forms EINVAL",
        |p, v, a| done(info::arch_prctl(p, v, a[0], a[1])),
    ),
    full(186, "gettid", |p, _, _| done(Ok(p.tid as u64))),
    refused(188, "setxattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(189, "lsetxattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(190, "fsetxattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(191, "getxattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(192, "lgetxattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(193, "fgetxattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(194, "listxattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(195, "llistxattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(196, "flistxattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(197, "removexattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(198, "lremovexattr", Errno::EOPNOTSUPP, NO_XATTRS),
    refused(199, "fremovexattr", Errno::EOPNOTSUPP, NO_XATTRS),
    partial(
        200,
        "tkill",
        "a thread of another process gets the signal as its process",
        |p, _, a| signal::kill(p, 200, a),
    ),
    full(201, "time", |p, _, a| done(time::time(p, a[0]))),
    partial(
        202,
        "futex",
        "WAIT, WAKE, REQUEUE, CMP_REQUEUE and the BITSET forms (a bitset counts as all); others ENOSYS",
        |p, _, a| super::futex(p, a),
    ),
    full(204, "sched_getaffinity", |p, _, a| {
        done(info::sched_getaffinity(p, a[1], a[2]))
    }),
    full(213, "epoll_create", |p, _, a| {
        done(if a[0] as i32 <= 0 {
            Err(Errno::EINVAL)
        } else {
            epoll::create(p, 0)
        })
    }),
    full(217, "getdents64", |p, _, a| {
        done(fs::getdents64(p, a[0], a[1], a[2]))
    }),
    full(218, "set_tid_address", |p, _, a| {
        let tid = p.tid;
        if let Some(info) = p.threads.live.get_mut(&tid) {
            info.clear_child_tid = a[0];
        }
        done(Ok(tid as u64))
    }),
    partial(
        221,
        "fadvise64",
        "advice is accepted and changes nothing (the host's page cache serves reads)",
        |p, _, a| done(fs::sync_like(p, a[0])),
    ),
    partial(222, "timer_create", TIMER_CLOCKS, |p, _, a| {
        done(timers::timer_create(p, a[0], a[1], a[2]))
    }),
    full(223, "timer_settime", |p, _, a| {
        done(timers::timer_settime(p, a[0], a[1], a[2], a[3]))
    }),
    full(224, "timer_gettime", |p, _, a| {
        done(timers::timer_gettime(p, a[0], a[1]))
    }),
    full(225, "timer_getoverrun", |p, _, a| {
        done(timers::timer_getoverrun(p, a[0]))
    }),
    full(226, "timer_delete", |p, _, a| {
        done(timers::timer_delete(p, a[0]))
    }),
    full(228, "clock_gettime", |p, _, a| {
        done(time::clock_gettime(p, a[0], a[1]))
    }),
    full(229, "clock_getres", |p, _, a| {
        done(time::clock_getres(p, a[0], a[1]))
    }),
    full(230, "clock_nanosleep", |p, _, a| time::sleep(p, 230, a)),
    full(231, "exit_group", |_, _, a| Flow::Exit(a[0] as i32)),
    partial(232, "epoll_wait", LEVEL_TRIGGERED, |p, _, a| {
        may_wait(epoll::wait(p, a))
    }),
    full(233, "epoll_ctl", |p, _, a| {
        done(epoll::ctl(p, a[0], a[1], a[2], a[3]))
    }),
    partial(
        234,
        "tgkill",
        "a thread of another process gets the signal as its process",
        |p, _, a| signal::kill(p, 234, a),
    ),
    partial(
        247,
        "waitid",
        "children never stop or continue; rusage is zero",
        |p, _, a| may_wait(process::waitid(p, a)),
    ),
    full(257, "openat", |p, _, a| {
        done(fs::openat(p, a[0], a[1], a[2], a[3]))
    }),
    full(258, "mkdirat", |p, _, a| {
        done(fs::mkdirat(p, a[0], a[1], a[2]))
    }),
    partial(260, "fchownat", OWNERSHIP, |_, _, _| done(Ok(0))),
    full(262, "newfstatat", |p, _, a| {
        done(fs::fstatat(p, a[0], a[1], a[2], a[3]))
    }),
    full(263, "unlinkat", |p, _, a| {
        done(fs::unlinkat(p, a[0], a[1], a[2]))
    }),
    full(264, "renameat", |p, _, a| {
        done(fs::renameat(p, a[0], a[1], a[2], a[3]))
    }),
    full(265, "linkat", |p, _, a| {
        done(fs::linkat(p, a[0], a[1], a[2], a[3]))
    }),
    full(266, "symlinkat", |p, _, a| {
        done(fs::symlinkat(p, a[0], a[1], a[2]))
    }),
    full(267, "readlinkat", |p, _, a| {
        done(fs::readlinkat(p, a[0], a[1], a[2], a[3]))
    }),
    partial(268, "fchmodat", HOST_MODES, |p, _, a| {
        done(fs::fchmodat(p, a[0], a[1], a[2]))
    }),
    full(269, "faccessat", |p, _, a| {
        done(fs::faccessat(p, a[0], a[1], a[2]))
    }),
    partial(270, "pselect6", "the timeout is not updated", |p, _, a| {
        may_wait(poll::pselect(p, a))
    }),
    partial(271, "ppoll", "the timeout is not updated", |p, _, a| {
        may_wait(poll::ppoll(p, a))
    }),
    partial(
        273,
        "set_robust_list",
        "accepted; a thread holding a robust mutex as it dies does not release it",
        |_, _, _| done(Ok(0)),
    ),
    full(280, "utimensat", |p, _, a| {
        done(fs::utimensat(p, a[0], a[1], a[2], a[3]))
    }),
    partial(281, "epoll_pwait", LEVEL_TRIGGERED, |p, _, a| {
        may_wait(epoll::pwait(p, a))
    }),
    partial(283, "timerfd_create", TIMER_CLOCKS, |p, _, a| {
        done(timers::timerfd_create(p, a[0], a[1]))
    }),
    full(284, "eventfd", |p, _, a| done(pipes::eventfd(p, a[0], 0))),
    full(286, "timerfd_settime", |p, _, a| {
        done(timers::timerfd_settime(p, a[0], a[1], a[2], a[3]))
    }),
    full(287, "timerfd_gettime", |p, _, a| {
        done(timers::timerfd_gettime(p, a[0], a[1]))
    }),
    full(290, "eventfd2", |p, _, a| {
        done(pipes::eventfd(p, a[0], a[1]))
    }),
    full(291, "epoll_create1", |p, _, a| done(epoll::create(p, a[0]))),
    full(292, "dup3", |p, _, a| {
        done(fs::dup(p, a[0], Some(a[1]), a[2]))
    }),
    full(293, "pipe2", |p, _, a| done(pipes::pipe(p, a[0], a[1]))),
    partial(
        302,
        "prlimit64",
        "the task itself only; a new limit is accepted in name, the domain's own limits hold",
        |p, _, a| done(info::prlimit(p, a[0], a[1], a[2], a[3])),
    ),
    full(316, "renameat2", |p, _, a| {
        done(fs::renameat(p, a[0], a[1], a[2], a[3]))
    }),
    full(318, "getrandom", |p, _, a| {
        done(info::getrandom(p, a[0], a[1], a[2]))
    }),
    partial(
        322,
        "execveat",
        "as execve; AT_EMPTY_PATH (exec of a descriptor) is ENOENT",
        |p, v, a| process::execveat(p, v, [a[0], a[1], a[2], a[3], a[4]]),
    ),
    full(332, "statx", |p, _, a| {
        done(fs::statx(p, a[0], a[1], a[2], a[3], a[4]))
    }),
    refused(
        334,
        "rseq",
        Errno::ENOSYS,
        "as a kernel built without restartable sequences: glibc stops asking",
    ),
    refused(
        435,
        "clone3",
        Errno::ENOSYS,
        "as a kernel without it: C libraries fall back to clone",
    ),
    full(436, "close_range", |p, _, a| {
        done(fs::close_range(p, a[0], a[1], a[2]))
    }),
    full(439, "faccessat2", |p, _, a| {
        done(fs::faccessat(p, a[0], a[1], a[2]))
    }),
    partial(441, "epoll_pwait2", LEVEL_TRIGGERED, |p, _, a| {
        may_wait(epoll::pwait2(p, a))
    }),
];

const HOST_MODES: &str =
    "the guest sees its modes; host files never get setuid, setgid, sticky or other users' bits";
const OWNERSHIP: &str = "the domain has one user: accepted, and nothing changes";
const DISK_ALLOWANCE: &str = "the domain's / as one file system: its size the session's disk \
    allowance (DiskMB) and its free space what the session's files leave of it (without an \
    allowance, the scratch directory's file system's free space)";
const NO_XATTRS: &str = "the domain's file system has no extended attributes";
const ROOT_ONLY: &str = "0: the domain's only user is root";
const SET_ROOT_ONLY: &str = "to 0 only; any other id EPERM";

/// Each number's row in [`TABLE`] (`u16::MAX`: none). Built at compile time, which also
/// refuses a table out of order, with a number twice, or past [`NUMBER_END`].
const INDEX: [u16; NUMBER_END] = index();

const fn index() -> [u16; NUMBER_END] {
    let mut index = [u16::MAX; NUMBER_END];
    let mut row = 0;
    while row < TABLE.len() {
        let number = TABLE[row].number as usize;
        assert!(number < NUMBER_END, "a system call number past NUMBER_END");
        assert!(
            row == 0 || TABLE[row - 1].number < TABLE[row].number,
            "the table is in order of number, each once"
        );
        index[number] = row as u16;
        row += 1;
    }
    index
}

/// The row for `number`, if the domain answers it.
pub fn lookup(number: u64) -> Option<&'static Syscall> {
    let slot = *INDEX.get(usize::try_from(number).ok()?)?;
    TABLE.get(usize::from(slot))
}

/// Runs the call in `number` for `process`: its handler, its refusal, or `ENOSYS` counted as
/// unknown.
pub(crate) fn run(process: &mut Process, vcpu: &mut Vcpu, number: u64, args: [u64; 6]) -> Flow {
    match lookup(number) {
        Some(Syscall {
            handler: Some(handler),
            ..
        }) => handler(process, vcpu, args),
        Some(Syscall {
            support: Support::Refused(errno, _),
            ..
        }) => done(Err(Errno(*errno))),
        _ => {
            process.note_unknown(number);
            done(Err(Errno::ENOSYS))
        }
    }
}

/// The documented list, in Markdown: what `docs/linux-system-calls.md` holds.
#[cfg(test)]
fn markdown() -> String {
    let mut out = String::from(
        "# System calls of a Linux domain\n\n\
         Generated from `taskmgr-vm/src/syscalls/table.rs` by `cargo test -p xeno-taskmgr-vm \
         --lib syscalls` with `XENO_WRITE_DOCS=1`; the test fails when this file and the table \
         differ. The capability report (`GetCapabilities`) carries the same rows. Any other \
         number returns `ENOSYS`, and the count of each such call a task made is in its end \
         event and in `xeno status`.\n\n\
         | Number | Name | Support | Note |\n|---|---|---|---|\n",
    );
    for call in TABLE {
        let (support, note) = support_words(call.support);
        out.push_str(&format!(
            "| {} | `{}` | {support} | {note} |\n",
            call.number, call.name
        ));
    }
    let counts = counts();
    out.push_str(&format!(
        "\n{} calls: {} full, {} partial, {} refused.\n",
        TABLE.len(),
        counts.0,
        counts.1,
        counts.2
    ));
    out
}

/// The table as the capability report carries it.
pub(crate) fn capability_rows() -> Vec<xeno_schemas::proto::taskmanager::v1::SystemCall> {
    TABLE
        .iter()
        .map(|call| {
            let (support, note) = support_words(call.support);
            xeno_schemas::proto::taskmanager::v1::SystemCall {
                number: call.number as u32,
                name: call.name.to_owned(),
                support,
                note,
            }
        })
        .collect()
}

/// The support level and note in words, as the document and the capability report give them.
fn support_words(support: Support) -> (String, String) {
    match support {
        Support::Full => ("full".to_owned(), String::new()),
        Support::Partial(note) => ("partial".to_owned(), note.to_owned()),
        Support::Refused(errno, why) => (
            "refused".to_owned(),
            format!("{}: {why}", errno_name(errno)),
        ),
    }
}

/// How many rows are full, partial and refused.
#[cfg(test)]
fn counts() -> (usize, usize, usize) {
    TABLE
        .iter()
        .fold((0, 0, 0), |(f, p, r), call| match call.support {
            Support::Full => (f + 1, p, r),
            Support::Partial(_) => (f, p + 1, r),
            Support::Refused(..) => (f, p, r + 1),
        })
}

/// The symbolic name of the errnos the table refuses with.
pub fn errno_name(errno: i32) -> &'static str {
    match Errno(errno) {
        Errno::EAGAIN => "EAGAIN",
        Errno::EACCES => "EACCES",
        Errno::ECHILD => "ECHILD",
        Errno::EMFILE => "EMFILE",
        Errno::ENOSYS => "ENOSYS",
        _ => "errno",
    }
}

fn clone_flow(a: [u64; 6]) -> Flow {
    // x86-64 argument order: flags, stack, parent_tid, child_tid, tls.
    Flow::Clone(crate::kernel::threads::CloneArgs {
        flags: a[0],
        stack: a[1],
        parent_tid: a[2],
        child_tid: a[3],
        tls: a[4],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_found_by_its_number_and_nothing_else_is() {
        for call in TABLE {
            let found = lookup(call.number).expect("its row");
            assert_eq!(found.name, call.name);
            assert_eq!(
                found.handler.is_none(),
                matches!(found.support, Support::Refused(..)),
                "{}: a handler exactly when not refused",
                call.name
            );
        }
        let answered = (0..NUMBER_END as u64 + 10)
            .filter(|n| lookup(*n).is_some())
            .count();
        assert_eq!(answered, TABLE.len());
        assert!(lookup(u64::MAX).is_none());
        assert!(
            lookup(41).is_none(),
            "socket is unknown until networking lands"
        );
    }

    #[test]
    fn calls_that_only_fail_are_refused_not_supported() {
        for name in ["sendfile", "rseq"] {
            let call = TABLE.iter().find(|call| call.name == name).expect(name);
            assert!(
                matches!(call.support, Support::Refused(..)),
                "{name} is refused"
            );
        }
        let rseq = lookup(334).expect("rseq");
        assert_eq!(
            rseq.support,
            Support::Refused(
                Errno::ENOSYS.0,
                "as a kernel built without restartable sequences: glibc stops asking"
            )
        );
    }

    #[test]
    fn the_documented_list_is_the_table() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/linux-system-calls.md");
        let generated = markdown();
        if std::env::var_os("XENO_WRITE_DOCS").is_some() {
            std::fs::write(&path, &generated).expect("write the document");
        }
        let written = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            written == generated,
            "docs/linux-system-calls.md differs from the table: rerun with XENO_WRITE_DOCS=1"
        );
    }
}
