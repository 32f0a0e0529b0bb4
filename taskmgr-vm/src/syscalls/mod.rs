//! The Linux system call ABI the domain presents, emulated by the VMM against the task's own
//! resources only: its address space, the session directory, its output streams, the
//! domain's clocks. Each call reads its arguments from the registers the exit brought, and
//! every pointer among them is checked in `process.rs` before it is used.
//!
//! Supported (x86-64 numbers): see [`SUPPORTED`]. Anything else returns `ENOSYS` and is
//! counted in the task's log. Calls that only make sense with several processes or threads
//! (`fork`, `clone`, `execve`, `wait4`) fail the way a program can cope with.

pub(crate) mod fs;
mod info;
mod io;
mod mem;
pub(crate) mod signal;
mod time;

use crate::cpu::Vcpu;
use crate::process::Process;

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
    pub(crate) const ESPIPE: Errno = Errno(29);
    pub(crate) const ERANGE: Errno = Errno(34);
    pub(crate) const ENAMETOOLONG: Errno = Errno(36);
    pub(crate) const ENOSYS: Errno = Errno(38);
    pub(crate) const ENOTEMPTY: Errno = Errno(39);
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
    /// Start a thread (`clone`): needs the task's runtime, which the run loop has.
    Clone(crate::threads::CloneArgs),
    /// The task ends with a fatal signal it sent itself (`kill`, `tgkill`, `abort`).
    Signaled(i32),
    /// `rt_sigreturn` restored every register itself: leave RAX alone.
    Restored,
}

pub(crate) type SysResult = Result<u64, Errno>;

/// The system calls the domain handles, by x86-64 number and name.
pub const SUPPORTED: &[(u64, &str)] = &[
    (0, "read"),
    (1, "write"),
    (2, "open"),
    (3, "close"),
    (4, "stat"),
    (5, "fstat"),
    (6, "lstat"),
    (7, "poll"),
    (8, "lseek"),
    (9, "mmap"),
    (10, "mprotect"),
    (11, "munmap"),
    (12, "brk"),
    (13, "rt_sigaction"),
    (14, "rt_sigprocmask"),
    (15, "rt_sigreturn"),
    (16, "ioctl"),
    (17, "pread64"),
    (18, "pwrite64"),
    (19, "readv"),
    (20, "writev"),
    (21, "access"),
    (22, "pipe"),
    (24, "sched_yield"),
    (25, "mremap"),
    (28, "madvise"),
    (32, "dup"),
    (33, "dup2"),
    (35, "nanosleep"),
    (39, "getpid"),
    (40, "sendfile"),
    (56, "clone"),
    (57, "fork"),
    (58, "vfork"),
    (59, "execve"),
    (60, "exit"),
    (61, "wait4"),
    (62, "kill"),
    (63, "uname"),
    (72, "fcntl"),
    (73, "flock"),
    (74, "fsync"),
    (75, "fdatasync"),
    (76, "truncate"),
    (77, "ftruncate"),
    (79, "getcwd"),
    (80, "chdir"),
    (81, "fchdir"),
    (82, "rename"),
    (83, "mkdir"),
    (84, "rmdir"),
    (85, "creat"),
    (86, "link"),
    (87, "unlink"),
    (88, "symlink"),
    (89, "readlink"),
    (90, "chmod"),
    (91, "fchmod"),
    (92, "chown"),
    (93, "fchown"),
    (94, "lchown"),
    (95, "umask"),
    (96, "gettimeofday"),
    (97, "getrlimit"),
    (98, "getrusage"),
    (99, "sysinfo"),
    (100, "times"),
    (102, "getuid"),
    (104, "getgid"),
    (105, "setuid"),
    (106, "setgid"),
    (107, "geteuid"),
    (108, "getegid"),
    (109, "setpgid"),
    (110, "getppid"),
    (111, "getpgrp"),
    (112, "setsid"),
    (115, "getgroups"),
    (121, "getpgid"),
    (124, "getsid"),
    (131, "sigaltstack"),
    (137, "statfs"),
    (138, "fstatfs"),
    (157, "prctl"),
    (158, "arch_prctl"),
    (186, "gettid"),
    (200, "tkill"),
    (201, "time"),
    (202, "futex"),
    (204, "sched_getaffinity"),
    (217, "getdents64"),
    (218, "set_tid_address"),
    (228, "clock_gettime"),
    (229, "clock_getres"),
    (230, "clock_nanosleep"),
    (231, "exit_group"),
    (234, "tgkill"),
    (257, "openat"),
    (258, "mkdirat"),
    (260, "fchownat"),
    (262, "newfstatat"),
    (263, "unlinkat"),
    (264, "renameat"),
    (265, "linkat"),
    (266, "symlinkat"),
    (267, "readlinkat"),
    (268, "fchmodat"),
    (269, "faccessat"),
    (270, "pselect6"),
    (271, "ppoll"),
    (273, "set_robust_list"),
    (280, "utimensat"),
    (292, "dup3"),
    (293, "pipe2"),
    (302, "prlimit64"),
    (316, "renameat2"),
    (318, "getrandom"),
    (332, "statx"),
    (334, "rseq"),
    (439, "faccessat2"),
];

/// Handles the system call in `regs` for `process`.
pub(crate) fn dispatch(process: &mut Process, vcpu: &mut Vcpu) -> Flow {
    let regs = vcpu.regs();
    let number = regs.rax;
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9];
    process.meter.add_syscall();
    let result = match number {
        60 => return Flow::ExitThread(args[0] as i32),
        231 => return Flow::Exit(args[0] as i32),
        56 => return clone_flow(args),
        202 => return futex(process, args),
        15 => return signal::rt_sigreturn(process, vcpu),
        62 | 200 | 234 => return signal::kill(process, number, args),
        35 | 230 => return time::sleep(process, number, args),
        0..=22 | 24 | 25 | 28 | 32..=33 | 40 => dispatch_low(process, vcpu, number, args),
        _ => dispatch_high(process, vcpu, number, args),
    };
    Flow::Return(match result {
        Ok(value) => value,
        Err(Errno(code)) => (-i64::from(code)) as u64,
    })
}

fn dispatch_low(process: &mut Process, vcpu: &mut Vcpu, number: u64, a: [u64; 6]) -> SysResult {
    match number {
        0 => io::read(process, a[0], a[1], a[2]),
        1 => io::write(process, a[0], a[1], a[2]),
        2 => fs::openat(process, fs::AT_FDCWD, a[0], a[1], a[2]),
        3 => fs::close(process, a[0]),
        4 => fs::fstatat(process, fs::AT_FDCWD, a[0], a[1], 0),
        5 => fs::fstat(process, a[0], a[1]),
        6 => fs::fstatat(process, fs::AT_FDCWD, a[0], a[1], fs::AT_SYMLINK_NOFOLLOW),
        7 => io::poll(process, a[0], a[1]),
        8 => io::lseek(process, a[0], a[1], a[2]),
        9 => mem::mmap(process, a),
        10 => mem::mprotect(process, a[0], a[1], a[2]),
        11 => mem::munmap(process, a[0], a[1]),
        12 => mem::brk(process, a[0]),
        13 => signal::rt_sigaction(process, a[0], a[1], a[2], a[3]),
        14 => signal::rt_sigprocmask(process, a[0], a[1], a[2], a[3]),
        16 => io::ioctl(process, a[0], a[1], a[2]),
        17 => io::pread(process, a[0], a[1], a[2], a[3]),
        18 => io::pwrite(process, a[0], a[1], a[2], a[3]),
        19 => io::readv(process, a[0], a[1], a[2]),
        20 => io::writev(process, a[0], a[1], a[2]),
        21 => fs::faccessat(process, fs::AT_FDCWD, a[0], a[1]),
        22 => io::pipe(process, a[0], 0),
        24 => Ok(0),
        25 => mem::mremap(process, a),
        28 => mem::madvise(process, a[0], a[1], a[2]),
        32 => fs::dup(process, a[0], None, 0),
        33 => fs::dup(process, a[0], Some(a[1]), 0),
        40 => Err(Errno::ENOSYS), // sendfile: callers fall back to read and write
        _ => {
            let _ = vcpu;
            unknown(process, number)
        }
    }
}

fn dispatch_high(process: &mut Process, vcpu: &mut Vcpu, number: u64, a: [u64; 6]) -> SysResult {
    match number {
        39 => Ok(process.pid as u64),
        186 => Ok(process.tid as u64),
        57 | 58 => Err(Errno::EAGAIN), // no second process (address space)
        59 => Err(Errno::EACCES),      // execve: one program per task
        61 => Err(Errno::ECHILD),
        63 => info::uname(process, a[0]),
        72 => fs::fcntl(process, a[0], a[1], a[2]),
        73..=75 => fs::sync_like(process, a[0]),
        76 => fs::truncate(process, a[0], a[1]),
        77 => fs::ftruncate(process, a[0], a[1]),
        79 => fs::getcwd(process, a[0], a[1]),
        80 => fs::chdir(process, a[0]),
        81 => fs::fchdir(process, a[0]),
        82 => fs::renameat(process, fs::AT_FDCWD, a[0], fs::AT_FDCWD, a[1]),
        83 => fs::mkdirat(process, fs::AT_FDCWD, a[0], a[1]),
        84 => fs::unlinkat(process, fs::AT_FDCWD, a[0], fs::AT_REMOVEDIR),
        85 => fs::openat(process, fs::AT_FDCWD, a[0], 0o1101, a[1]),
        86 => fs::linkat(process, fs::AT_FDCWD, a[0], fs::AT_FDCWD, a[1]),
        87 => fs::unlinkat(process, fs::AT_FDCWD, a[0], 0),
        88 => fs::symlinkat(process, a[0], fs::AT_FDCWD, a[1]),
        89 => fs::readlinkat(process, fs::AT_FDCWD, a[0], a[1], a[2]),
        90 => fs::fchmodat(process, fs::AT_FDCWD, a[0], a[1]),
        91 => fs::fchmod(process, a[0], a[1]),
        92 | 93 | 94 | 260 => Ok(0), // ownership: one user in a domain
        95 => {
            let old = process.umask;
            process.umask = (a[0] as u32) & 0o777;
            Ok(u64::from(old))
        }
        96 => time::gettimeofday(process, a[0]),
        97 => info::getrlimit(process, a[0], a[1]),
        98 => info::getrusage(process, a[0], a[1]),
        99 => info::sysinfo(process, a[0]),
        100 => time::times(process, a[0]),
        102 | 104 | 107 | 108 => Ok(0), // the domain's only user is root
        105 | 106 => {
            if a[0] == 0 {
                Ok(0)
            } else {
                Err(Errno::EPERM)
            }
        }
        109 => Ok(0),
        110 => Ok(1),
        111 | 121 | 124 | 112 => Ok(process.pid as u64),
        115 => Ok(0),
        131 => signal::sigaltstack(process, a[0], a[1]),
        137 => fs::statfs(process, a[1]),
        138 => fs::statfs(process, a[1]),
        157 => info::prctl(process, a[0], a[1]),
        158 => info::arch_prctl(process, vcpu, a[0], a[1]),
        201 => time::time(process, a[0]),
        204 => info::sched_getaffinity(process, a[1], a[2]),
        217 => fs::getdents64(process, a[0], a[1], a[2]),
        218 => {
            let tid = process.tid;
            if let Some(info) = process.threads.live.get_mut(&tid) {
                info.clear_child_tid = a[0];
            }
            Ok(tid as u64)
        }
        228 => time::clock_gettime(process, a[0], a[1]),
        229 => time::clock_getres(process, a[0], a[1]),
        257 => fs::openat(process, a[0], a[1], a[2], a[3]),
        258 => fs::mkdirat(process, a[0], a[1], a[2]),
        262 => fs::fstatat(process, a[0], a[1], a[2], a[3]),
        263 => fs::unlinkat(process, a[0], a[1], a[2]),
        264 | 316 => fs::renameat(process, a[0], a[1], a[2], a[3]),
        265 => fs::linkat(process, a[0], a[1], a[2], a[3]),
        266 => fs::symlinkat(process, a[0], a[1], a[2]),
        267 => fs::readlinkat(process, a[0], a[1], a[2], a[3]),
        268 => fs::fchmodat(process, a[0], a[1], a[2]),
        269 | 439 => fs::faccessat(process, a[0], a[1], a[2]),
        270 => io::pselect(process, a[0]),
        271 => io::ppoll(process, a[0], a[1]),
        273 => Ok(0),
        280 => fs::utimensat(process, a[0], a[1], a[2], a[3]),
        292 => fs::dup(process, a[0], Some(a[1]), a[2]),
        293 => io::pipe(process, a[0], a[1]),
        302 => info::prlimit(process, a[0], a[1], a[2], a[3]),
        318 => info::getrandom(process, a[0], a[1], a[2]),
        332 => fs::statx(process, a[0], a[1], a[2], a[3], a[4]),
        _ => unknown(process, number),
    }
}

fn clone_flow(a: [u64; 6]) -> Flow {
    // x86-64 argument order: flags, stack, parent_tid, child_tid, tls.
    Flow::Clone(crate::threads::CloneArgs {
        flags: a[0],
        stack: a[1],
        parent_tid: a[2],
        child_tid: a[3],
        tls: a[4],
    })
}

/// `futex`: WAIT, WAKE, REQUEUE, CMP_REQUEUE and the BITSET forms (bitsets treated as all).
fn futex(process: &mut Process, a: [u64; 6]) -> Flow {
    use crate::threads;
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

fn unknown(process: &mut Process, number: u64) -> SysResult {
    process.note_unknown(number);
    Err(Errno::ENOSYS)
}
