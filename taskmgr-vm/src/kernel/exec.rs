//! `execve` and `execveat`: the process's program is replaced by another from the session
//! directory. A static ELF executable (static or static-PIE) is loaded into a fresh address
//! space, as DeployTask loads the first; a file starting `#!` runs its interpreter with the
//! script's path, as Linux does (at most [`SCRIPT_DEPTH_MAX`] interpreters deep). What
//! survives, as on Linux: the pid, parent, group and session, open descriptors not marked
//! close-on-exec (with their offsets), the working directory, the umask, the signal mask,
//! pending signals and ignored signals; handlers go back to their defaults.
//!
//! An ELF program asking for an interpreter (`PT_INTERP`, a dynamically linked program) is
//! `ENOENT` when the interpreter is not in the session, as Linux answers. In a process with
//! more than one thread, once the new program has loaded, the other threads end (each at
//! its next exit to the VMM, or cut out of its wait), as Linux ends them, and the new
//! program runs in the calling thread with the process's pid; an exec that fails leaves them
//! running.

use crate::hypervisor::cpu::Vcpu;
use crate::hypervisor::fastpath;
use crate::hypervisor::vm::layout::KernelSlot;
use crate::kernel::files::{FsContext, PATH_BYTES_MAX};
use crate::kernel::overlay::Root;
use crate::kernel::process::Process;
use crate::kernel::syscalls::{Errno, fs};
use crate::kernel::wait::Blocked;
use crate::loading::loader;
use bytes::Bytes;
use cap_std::fs::{MetadataExt, OpenOptions};
use std::io::Read;
use std::path::Path;

/// Most `#!` interpreters one exec may go through (Linux allows four levels).
pub(crate) const SCRIPT_DEPTH_MAX: usize = 4;
/// Bytes of a script's first line Linux reads for `#!` (BINPRM_BUF_SIZE).
const SHEBANG_BYTES_MAX: usize = 256;
/// Most arguments plus environment strings one exec takes: a bound on what the VMM copies
/// (Linux's limit is about MAX_ARG_STRINGS = 0x7fffffff; the stack's own size bound,
/// `ARG_MAX`-like, is checked when the new stack is built).
pub(crate) const EXEC_STRINGS_MAX: usize = 65_536;
/// Most bytes of one argument or environment string (Linux's MAX_ARG_STRLEN, 32 pages).
const EXEC_STRING_BYTES_MAX: usize = 32 * 4096;
/// `/proc/self/exe` as resolved against the session root.
const SELF_EXE: &str = "proc/self/exe";
/// `AT_EMPTY_PATH` for `execveat`.
const AT_EMPTY_PATH: u64 = 0x1000;

/// `execveat(dirfd, path, argv, envp, flags)` (`execve` is `dirfd = AT_FDCWD`, flags 0).
pub(crate) fn execveat(
    process: &mut Process,
    vcpu: &mut Vcpu,
    dirfd: u64,
    path_va: u64,
    argv_va: u64,
    envp_va: u64,
    flags: u64,
) -> Result<Option<Blocked>, Errno> {
    if flags & !(AT_EMPTY_PATH | 0x100) != 0 {
        return Err(Errno::EINVAL);
    }
    let raw = process.read_cstr(path_va, PATH_BYTES_MAX)?;
    let mut argv = read_strings(process, argv_va)?;
    let envp = read_strings(process, envp_va)?;
    if raw.is_empty() && flags & AT_EMPTY_PATH != 0 {
        return Err(Errno::ENOENT);
    }
    let mut path = fs::resolve_at_bytes(process, dirfd, &raw)?;
    let mut shown = raw.clone();
    let mut depth = 0;
    let mut exe_path = None;
    let image = loop {
        let image = if path == std::path::Path::new(SELF_EXE) {
            // The program this process runs (busybox runs its applets so).
            exe_path = Some(process.exe_path.clone());
            process.image.clone()
        } else {
            read_program(&process.fs.root, &path, process.program_bytes_max)?
        };
        let Some((interpreter, argument)) = shebang(&image) else {
            break image;
        };
        depth += 1;
        if depth > SCRIPT_DEPTH_MAX {
            return Err(Errno::ELOOP);
        }
        // argv becomes: interpreter [argument] script-path original-argv[1..].
        let mut new_argv = vec![interpreter.clone()];
        new_argv.extend(argument);
        new_argv.push(shown.clone());
        new_argv.extend(argv.into_iter().skip(1));
        argv = new_argv;
        path = FsContext::resolve(&process.fs.cwd, &interpreter)?;
        shown = interpreter;
    };
    if argv.is_empty() {
        // Linux gives a program with no argv[0] an empty one.
        argv.push(Vec::new());
    }
    let exe_path = match exe_path {
        Some(exe_path) => exe_path,
        None => {
            let canonical = process
                .fs
                .root
                .canonical(&path)
                .map_err(|e| Errno::from_io(&e))?;
            String::from_utf8_lossy(&FsContext::session_path(&canonical)).into_owned()
        }
    };
    let vm = std::sync::Arc::clone(&process.vm);
    let root = std::sync::Arc::clone(&process.fs.root);
    let max = process.program_bytes_max;
    let interpreter = |name: &str| interpreter_of(&root, name, max);
    let loaded = loader::load(&vm, &image, &argv, &envp, exe_path.as_bytes(), &interpreter)
        .map_err(|error| {
            tracing::debug!("execve of {exe_path}: {error}");
            match error {
                loader::LoadError::Elf(crate::ElfError::Dynamic(_)) => Errno::ENOENT,
                loader::LoadError::NoMemory => Errno::ENOMEM,
                loader::LoadError::ArgsTooBig(_) => Errno::E2BIG,
                loader::LoadError::Elf(_) | loader::LoadError::Layout => Errno::ENOEXEC,
            }
        })?;
    if process.threads.live.len() > 1 {
        // Linux ends the process's other threads before the new program starts. They leave
        // (each at its next exit to the VMM, or from its wait), waking this thread, which
        // runs the call again once it is the last: a second load, for a rare case.
        loaded.mm.destroy(&vm.physical);
        let waiter = process.io_waiter().ok_or(Errno::EINVAL)?;
        if !process.shared.begin_exec(process.tid, &waiter) {
            // Another thread execs first, and this one is to leave.
            return Err(Errno::EAGAIN);
        }
        return Ok(Some(Blocked {
            until: None,
            progress: 0,
        }));
    }
    process.shared.end_exec(process.tid);
    // Past the point of no return: the old program is gone whatever happens now.
    for (number, fd) in process.fds.take_cloexec() {
        fastpath::close_window(process, number, &fd.file);
    }
    for (_, file) in process.fds.all() {
        fastpath::unwindow_all(process, &file);
    }
    let mut slot = KernelSlot::at(0);
    slot.kstack_gpa = loaded.mm.kstack_gpa();
    let old = std::mem::replace(&mut process.mm, loaded.mm);
    let tid = process.tid;
    if let Some(mut info) = process.threads.live.remove(&tid) {
        info.slot = slot;
        info.slot_index = 0;
        info.clear_child_tid = 0;
        // The new program starts with no alternate signal stack, as on Linux.
        info.altstack = None;
        process.threads.live.insert(process.pid, info);
    }
    if tid != process.pid {
        process.tree.rename_thread(tid, process.pid);
        process.shared.note_renamed(tid, process.pid);
    }
    process.tid = process.pid;
    process.kstack = slot;
    process.futexes.clear();
    for (_, (timer, _)) in std::mem::take(&mut process.posix_timers) {
        if let Some(timer) = timer {
            timer.disarm();
        }
    }
    process.shared.cpu.posix_clear();
    process.exe_path = exe_path;
    process.image = image;
    process.cmdline = crate::kernel::process::nul_joined(&argv);
    process.environ = crate::kernel::process::nul_joined(&envp);
    process.comm = None;
    process.published_tables = None;
    process.publish();
    crate::kernel::syscalls::signal::reset_for_exec(process);
    let started = vcpu.start(loaded.start);
    // The vCPU no longer uses the old tables: their frames can go (and with them every
    // translation KVM held of them).
    // (A `vfork` child's go back to its parent instead.)
    crate::kernel::fork::give_up_mm(process, old);
    process.meter_memory();
    process.shared.release_vfork();
    if let Err(error) = started {
        tracing::warn!("cannot restart the vCPU after execve: {error}");
        return Err(Errno::EFAULT);
    }
    Ok(None)
}

/// A NULL-terminated array of string pointers (`argv`, `envp`); a null array is empty.
fn read_strings(process: &mut Process, mut va: u64) -> Result<Vec<Vec<u8>>, Errno> {
    let mut strings = Vec::new();
    if va == 0 {
        return Ok(strings);
    }
    loop {
        let pointer = process.read_u64(va)?;
        if pointer == 0 {
            return Ok(strings);
        }
        if strings.len() >= EXEC_STRINGS_MAX {
            return Err(Errno::E2BIG);
        }
        let string = process
            .read_cstr(pointer, EXEC_STRING_BYTES_MAX)
            .map_err(|errno| {
                if errno == Errno::ENAMETOOLONG {
                    Errno::E2BIG
                } else {
                    errno
                }
            })?;
        strings.push(string);
        va = va.checked_add(8).ok_or(Errno::EFAULT)?;
    }
}

/// The dynamic loader a program names (an absolute path in the session), as the loader asks
/// for it.
pub(crate) fn interpreter_of(root: &Root, name: &str, max: u64) -> Option<Bytes> {
    let path = FsContext::resolve(std::path::Path::new(""), name.as_bytes()).ok()?;
    read_program(root, &path, max).ok()
}

/// The program at `path` (relative to the session root): a regular file with an execute bit,
/// at most `max` bytes.
pub(crate) fn read_program(root: &Root, path: &Path, max: u64) -> Result<Bytes, Errno> {
    let metadata = root.metadata(path, true).map_err(|e| Errno::from_io(&e))?;
    if !metadata.is_file() || metadata.mode() & 0o111 == 0 {
        return Err(Errno::EACCES);
    }
    let file = root
        .open_with(path, OpenOptions::new().read(true), false, false, false)
        .map_err(|e| Errno::from_io(&e))?;
    let mut image = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut image)
        .map_err(|e| Errno::from_io(&e))?;
    if image.len() as u64 > max {
        return Err(Errno::ENOMEM);
    }
    Ok(Bytes::from(image))
}

/// A `#!` line's interpreter and its one optional argument (the rest of the line, trimmed),
/// as Linux splits it.
fn shebang(image: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let rest = image.strip_prefix(b"#!")?;
    let line = &rest[..rest.len().min(SHEBANG_BYTES_MAX - 2)];
    let line = match line.iter().position(|byte| *byte == b'\n') {
        Some(end) => &line[..end],
        None => line,
    };
    let blank = |byte: &u8| *byte == b' ' || *byte == b'\t';
    let start = line.iter().position(|byte| !blank(byte))?;
    let line = &line[start..];
    let end = line
        .iter()
        .rposition(|byte| !blank(byte))
        .map_or(0, |at| at + 1);
    let line = &line[..end];
    let split = line.iter().position(blank);
    let (interpreter, argument) = match split {
        Some(at) => {
            let argument = &line[at..];
            let first = argument.iter().position(|byte| !blank(byte))?;
            (&line[..at], Some(argument[first..].to_vec()))
        }
        None => (line, None),
    };
    (!interpreter.is_empty()).then(|| (interpreter.to_vec(), argument))
}

#[cfg(test)]
mod tests {
    use super::shebang;

    #[test]
    fn shebang_lines_split_as_linux_splits_them() {
        assert_eq!(
            shebang(b"#!/bin/sh\necho"),
            Some((b"/bin/sh".to_vec(), None))
        );
        assert_eq!(
            shebang(b"#! /usr/bin/env  python3 -u \n"),
            Some((b"/usr/bin/env".to_vec(), Some(b"python3 -u".to_vec())))
        );
        assert_eq!(shebang(b"#!\n"), None);
        assert_eq!(shebang(b"\x7fELF"), None);
    }
}
