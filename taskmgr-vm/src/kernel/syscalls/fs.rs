//! File system calls on the session directory: opening, metadata, directories, links,
//! permissions, the working directory, and descriptor plumbing (`dup`, `fcntl`, `close`).
//! Every path is resolved by `FsContext::resolve` and then opened through cap-std beneath
//! the session root (see `kernel/files.rs`).

use super::{Errno, SysResult};
use crate::hypervisor::fastpath;
use crate::kernel::devices::{self, Device};
use crate::kernel::fds::{Fd, Kind, OpenFile};
use crate::kernel::files::{FsContext, PATH_BYTES_MAX};
use crate::kernel::process::Process;
use cap_std::fs::{
    DirBuilder, DirBuilderExt, Metadata, MetadataExt as _, OpenOptions, OpenOptionsExt,
};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use xeno_taskmgr_kit::lock;
use xeno_taskmgr_kit::scratch::host_mode;

/// `AT_FDCWD` as the 64-bit register value a program passes (-100).
pub(crate) const AT_FDCWD: u64 = (-100i64) as u64;
pub(crate) const AT_SYMLINK_NOFOLLOW: u64 = 0x100;
pub(crate) const AT_REMOVEDIR: u64 = 0x200;
const AT_EMPTY_PATH: u64 = 0x1000;

const O_ACCMODE: u32 = 3;
const O_CREAT: u32 = 0o100;
const O_EXCL: u32 = 0o200;
const O_TRUNC: u32 = 0o1000;
const O_APPEND: u32 = 0o2000;
const O_DIRECTORY: u32 = 0o200000;
const O_CLOEXEC: u32 = 0o2000000;
const O_TMPFILE: u32 = 0o20000000;
/// Flags F_SETFL may change.
const SETFL_MASK: u32 = O_APPEND | 0o4000;

const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFDIR: u32 = 0o040000;

/// The path a directory handle on `/proc` carries (no file of the session has it: `/proc` is
/// answered by `procfs.rs` before any path reaches the session).
const PROC_DIR: &str = "proc";
/// Size of `struct stat` on x86-64.
const STAT_BYTES: usize = 144;
/// Size of `struct statx`.
const STATX_BYTES: usize = 256;

/// A directory's entries as `getdents64` returns them, and how far it has read.
pub(crate) struct Listing {
    entries: Vec<crate::kernel::overlay::Entry>,
    next: usize,
}

/// The dirfd argument: programs pass a 32-bit int, so only the low half counts.
fn dirfd_of(raw: u64) -> i32 {
    raw as u32 as i32
}

/// Resolves `path_va` against `dirfd` to a path relative to the session root.
pub(crate) fn resolve_at(
    process: &mut Process,
    dirfd: u64,
    path_va: u64,
) -> Result<PathBuf, Errno> {
    let raw = process.read_cstr(path_va, PATH_BYTES_MAX)?;
    resolve_at_bytes(process, dirfd, &raw)
}

/// Resolves path bytes against `dirfd` to a path relative to the session root.
pub(crate) fn resolve_at_bytes(
    process: &Process,
    dirfd: u64,
    raw: &[u8],
) -> Result<PathBuf, Errno> {
    let resolved = resolve_lexically(process, dirfd, raw)?;
    if resolved.starts_with("tmp") {
        process.fs.root.ensure_tmp();
    }
    Ok(resolved)
}

fn resolve_lexically(process: &Process, dirfd: u64, raw: &[u8]) -> Result<PathBuf, Errno> {
    if raw.first() == Some(&b'/') {
        return FsContext::resolve(&process.fs.cwd, raw);
    }
    let dirfd = dirfd_of(dirfd);
    if dirfd == -100 {
        return FsContext::resolve(&process.fs.cwd, raw);
    }
    let file = process
        .fds
        .file(u64::try_from(dirfd).map_err(|_| Errno::EBADF)?)?;
    match &file.kind {
        Kind::Dir { path, .. } => FsContext::resolve(path, raw),
        _ => Err(Errno::ENOTDIR),
    }
}

/// A generated file's contents as a host file of their own (an anonymous memory file), so
/// that reads, seeks and `fstat` work on it as on any file.
fn generated_file(data: &[u8]) -> Result<std::fs::File, Errno> {
    use std::io::{Seek, Write};
    let fd = rustix::fs::memfd_create(c"xenoserve-proc", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|errno| Errno(errno.raw_os_error()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data).map_err(|e| Errno::from_io(&e))?;
    file.rewind().map_err(|e| Errno::from_io(&e))?;
    Ok(file)
}

pub(crate) fn openat(
    process: &mut Process,
    dirfd: u64,
    path_va: u64,
    flags: u64,
    mode: u64,
) -> SysResult {
    let raw = process.read_cstr(path_va, PATH_BYTES_MAX)?;
    let flags = flags as u32;
    let cloexec = flags & O_CLOEXEC != 0;
    if let Some(device) = Device::at(&raw) {
        let file = OpenFile::new(Kind::Device(device), flags & (O_ACCMODE | SETFL_MASK));
        return process.fds.insert(Fd { file, cloexec });
    }
    if let Some(fd) = devices::descriptor_alias(&raw) {
        // Another name for an open descriptor: its open file, shared as `dup` shares it.
        let file = process.fds.file(fd).map_err(|_| Errno::ENOENT)?;
        fastpath::unwindow_all(process, &file);
        return process.fds.insert(Fd { file, cloexec });
    }
    if crate::kernel::procfs::is_dir(process, &raw) && flags & O_ACCMODE == 0 {
        // A directory of /proc: a handle on the domain's root, listed by procfs.
        let (dir, _) = process
            .fs
            .root
            .open_dir(std::path::Path::new("."))
            .map_err(|e| Errno::from_io(&e))?;
        let file = OpenFile::new(
            Kind::Dir {
                // `proc`, `proc/<pid>` or `proc/<pid>/fd`, which getdents64 lists.
                path: PathBuf::from(
                    String::from_utf8_lossy(&raw)
                        .trim_start_matches('/')
                        .trim_end_matches('/'),
                ),
                dir,
                listing: std::sync::Mutex::new(None),
            },
            flags & (O_ACCMODE | SETFL_MASK),
        );
        return process.fds.insert(Fd { file, cloexec });
    }
    if raw == devices::TTY {
        // No controlling terminal, as Linux answers a process without one.
        return Err(Errno::ENXIO);
    }
    if let Some(data) = crate::kernel::procfs::generate(process, &raw) {
        if flags & O_ACCMODE != 0 {
            return Err(Errno::EACCES);
        }
        let file = generated_file(&data)?;
        let file = OpenFile::new(Kind::File(file), flags & (O_ACCMODE | SETFL_MASK));
        return process.fds.insert(Fd { file, cloexec });
    }
    if flags & O_TMPFILE == O_TMPFILE {
        return Err(Errno::EOPNOTSUPP);
    }
    let path = resolve_at_bytes(process, dirfd, &raw)?;
    let access = flags & O_ACCMODE;
    if access == 3 {
        return Err(Errno::EINVAL);
    }
    let mut from_image = false;
    let kind = if flags & O_DIRECTORY != 0 && flags & O_CREAT == 0 {
        let (dir, path) = process
            .fs
            .root
            .open_dir(&path)
            .map_err(|e| Errno::from_io(&e))?;
        Kind::Dir {
            path,
            dir,
            listing: std::sync::Mutex::new(None),
        }
    } else {
        let mut options = OpenOptions::new();
        let writable = access != 0;
        options
            .read(access != 1)
            .write(writable || flags & O_CREAT != 0);
        if flags & O_APPEND != 0 && writable {
            options.append(true);
        }
        if flags & O_TRUNC != 0 && writable {
            options.truncate(true);
        }
        if flags & O_CREAT != 0 {
            if flags & O_EXCL != 0 {
                options.create_new(true);
            } else {
                options.create(true);
            }
            options.mode(host_mode((mode as u32) & !process.umask, false));
        }
        let (file, image) = process
            .fs
            .root
            .open_layered(
                &path,
                &options,
                writable,
                flags & O_CREAT != 0,
                flags & O_EXCL != 0,
            )
            .map_err(|e| Errno::from_io(&e))?;
        from_image = image;
        let file = file.into_std();
        let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
        if is_dir {
            if writable {
                return Err(Errno::EISDIR);
            }
            Kind::Dir {
                path: process
                    .fs
                    .root
                    .canonical(&path)
                    .map_err(|e| Errno::from_io(&e))?,
                dir: cap_std::fs::Dir::from_std_file(file),
                listing: std::sync::Mutex::new(None),
            }
        } else if flags & O_DIRECTORY != 0 {
            return Err(Errno::ENOTDIR);
        } else {
            Kind::File(file)
        }
    };
    let mut file = OpenFile::new(kind, flags & (O_ACCMODE | SETFL_MASK));
    if from_image && let Some(opened) = std::sync::Arc::get_mut(&mut file) {
        opened.from_image = true;
    }
    process.fds.insert(Fd { file, cloexec })
}

pub(crate) fn close(process: &mut Process, fd: u64) -> SysResult {
    let removed = process.fds.remove(fd)?;
    fastpath::close_window(process, fd, &removed.file);
    Ok(0)
}

/// `close_range(first, last, flags)`: closes (or, with `CLOSE_RANGE_CLOEXEC`, marks
/// close-on-exec) every open descriptor from `first` to `last`. `CLOSE_RANGE_UNSHARE` is
/// accepted: a process's table is already its own.
pub(crate) fn close_range(process: &mut Process, first: u64, last: u64, flags: u64) -> SysResult {
    const CLOSE_RANGE_UNSHARE: u64 = 2;
    const CLOSE_RANGE_CLOEXEC: u64 = 4;
    let (first, last) = (first as u32, last as u32);
    if flags & !(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC) != 0 || first > last {
        return Err(Errno::EINVAL);
    }
    let open: Vec<u64> = process
        .fds
        .all()
        .into_iter()
        .map(|(number, _)| number)
        .filter(|number| (u64::from(first)..=u64::from(last)).contains(number))
        .collect();
    for number in open {
        if flags & CLOSE_RANGE_CLOEXEC != 0 {
            process.fds.get_mut(number)?.cloexec = true;
        } else {
            close(process, number)?;
        }
    }
    Ok(0)
}

pub(crate) fn dup(process: &mut Process, old: u64, new: Option<u64>, flags: u64) -> SysResult {
    let file = process.fds.file(old)?;
    // A windowed file read through two numbers must share one offset: the host's.
    fastpath::unwindow_all(process, &file);
    let cloexec = flags as u32 & O_CLOEXEC != 0;
    match new {
        None => process.fds.insert(Fd { file, cloexec }),
        Some(new) if new == old => {
            if flags != 0 {
                return Err(Errno::EINVAL); // dup3 refuses equal descriptors; dup2 returns it
            }
            Ok(new)
        }
        Some(new) => {
            if let Ok(previous) = process.fds.get(new).cloned() {
                fastpath::close_window(process, new, &previous.file);
            }
            process.fds.put(new, Fd { file, cloexec })?;
            Ok(new)
        }
    }
}

pub(crate) fn fcntl(process: &mut Process, fd: u64, command: u64, arg: u64) -> SysResult {
    const F_DUPFD: u64 = 0;
    const F_GETFD: u64 = 1;
    const F_SETFD: u64 = 2;
    const F_GETFL: u64 = 3;
    const F_SETFL: u64 = 4;
    const F_GETLK: u64 = 5;
    const F_SETLK: u64 = 6;
    const F_SETLKW: u64 = 7;
    const F_DUPFD_CLOEXEC: u64 = 1030;
    match command {
        F_DUPFD | F_DUPFD_CLOEXEC => {
            let file = process.fds.file(fd)?;
            fastpath::unwindow_all(process, &file);
            let from = usize::try_from(arg).map_err(|_| Errno::EINVAL)?;
            process.fds.insert_from(
                from,
                Fd {
                    file,
                    cloexec: command == F_DUPFD_CLOEXEC,
                },
            )
        }
        F_GETFD => Ok(u64::from(process.fds.get(fd)?.cloexec)),
        F_SETFD => {
            process.fds.get_mut(fd)?.cloexec = arg & 1 != 0;
            Ok(0)
        }
        F_GETFL => Ok(u64::from(process.fds.get(fd)?.file.flags())),
        F_SETFL => {
            let file = process.fds.file(fd)?;
            let mut flags = lock(&file.flags);
            *flags = (*flags & !SETFL_MASK) | (arg as u32 & SETFL_MASK);
            Ok(0)
        }
        F_GETLK | F_SETLK | F_SETLKW => {
            process.fds.get(fd)?;
            Ok(0)
        }
        _ => Err(Errno::EINVAL),
    }
}

pub(crate) fn sync_like(process: &mut Process, fd: u64) -> SysResult {
    process.fds.get(fd)?;
    Ok(0)
}

/// The fields of `struct stat` the VMM reports.
struct Stat {
    dev: u64,
    ino: u64,
    nlink: u64,
    mode: u32,
    rdev: u64,
    size: u64,
    blksize: u64,
    blocks: u64,
    times: [(i64, i64); 3],
}

impl Stat {
    fn from_std(m: &std::fs::Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            mode: m.mode(),
            rdev: m.rdev(),
            size: m.size(),
            blksize: m.blksize(),
            blocks: m.blocks(),
            times: [
                (m.atime(), m.atime_nsec()),
                (m.mtime(), m.mtime_nsec()),
                (m.ctime(), m.ctime_nsec()),
            ],
        }
    }

    fn from_cap(m: &Metadata) -> Stat {
        Stat {
            dev: m.dev(),
            ino: m.ino(),
            nlink: m.nlink(),
            mode: m.mode(),
            rdev: m.rdev(),
            size: m.size(),
            blksize: m.blksize(),
            blocks: m.blocks(),
            times: [
                (m.atime(), m.atime_nsec()),
                (m.mtime(), m.mtime_nsec()),
                (m.ctime(), m.ctime_nsec()),
            ],
        }
    }

    /// A device or pipe: `(major, minor)` its device number.
    fn device(mode: u32, (major, minor): (u32, u32)) -> Stat {
        Stat {
            dev: 5,
            ino: 1,
            nlink: 1,
            mode,
            rdev: u64::from(major) << 8 | u64::from(minor),
            size: 0,
            blksize: 4096,
            blocks: 0,
            times: [(0, 0); 3],
        }
    }

    fn to_stat(&self) -> [u8; STAT_BYTES] {
        let mut out = [0u8; STAT_BYTES];
        let put = |out: &mut [u8; STAT_BYTES], at: usize, value: u64| {
            out[at..at + 8].copy_from_slice(&value.to_le_bytes());
        };
        put(&mut out, 0, self.dev);
        put(&mut out, 8, self.ino);
        put(&mut out, 16, self.nlink);
        out[24..28].copy_from_slice(&self.mode.to_le_bytes());
        // uid and gid 0: the task is the only user of its domain.
        put(&mut out, 40, self.rdev);
        put(&mut out, 48, self.size);
        put(&mut out, 56, self.blksize);
        put(&mut out, 64, self.blocks);
        for (index, (seconds, nanos)) in self.times.iter().enumerate() {
            put(&mut out, 72 + index * 16, *seconds as u64);
            put(&mut out, 80 + index * 16, *nanos as u64);
        }
        out
    }

    fn to_statx(&self) -> [u8; STATX_BYTES] {
        let mut out = [0u8; STATX_BYTES];
        out[0..4].copy_from_slice(&0x7ffu32.to_le_bytes()); // STATX_BASIC_STATS
        out[4..8].copy_from_slice(&(self.blksize as u32).to_le_bytes());
        out[16..20].copy_from_slice(&(self.nlink as u32).to_le_bytes());
        out[28..30].copy_from_slice(&(self.mode as u16).to_le_bytes());
        out[32..40].copy_from_slice(&self.ino.to_le_bytes());
        out[40..48].copy_from_slice(&self.size.to_le_bytes());
        out[48..56].copy_from_slice(&self.blocks.to_le_bytes());
        // atime, btime (= mtime), ctime, mtime.
        let slots = [
            (64, self.times[0]),
            (80, self.times[1]),
            (96, self.times[2]),
            (112, self.times[1]),
        ];
        for (at, (seconds, nanos)) in slots {
            out[at..at + 8].copy_from_slice(&(seconds as u64).to_le_bytes());
            out[at + 8..at + 12].copy_from_slice(&(nanos as u32).to_le_bytes());
        }
        out[128..132].copy_from_slice(&((self.rdev >> 8) as u32 & 0xfff).to_le_bytes());
        out[132..136].copy_from_slice(&((self.rdev & 0xff) as u32).to_le_bytes());
        out[136..140].copy_from_slice(&((self.dev >> 8) as u32 & 0xfff).to_le_bytes());
        out[140..144].copy_from_slice(&((self.dev & 0xff) as u32).to_le_bytes());
        out
    }
}

fn stat_of_fd(process: &Process, fd: u64) -> Result<Stat, Errno> {
    let file = process.fds.file(fd)?;
    match &file.kind {
        Kind::Device(device) => Ok(Stat::device(S_IFCHR | 0o666, device.number())),
        Kind::Output(_) | Kind::Pipe(_) => Ok(Stat::device(S_IFIFO | 0o600, (0, 0))),
        // An anonymous inode, as Linux reports an eventfd.
        Kind::Event(_) | Kind::Timer { .. } | Kind::Epoll(_) => Ok(Stat::device(0o600, (0, 0))),
        Kind::File(handle) => handle
            .metadata()
            .map(|m| Stat::from_std(&m))
            .map_err(|e| Errno::from_io(&e)),
        Kind::Dir { dir, .. } => dir
            .dir_metadata()
            .map(|m| Stat::from_cap(&m))
            .map_err(|e| Errno::from_io(&e)),
    }
}

fn stat_of_path(
    process: &mut Process,
    dirfd: u64,
    path_va: u64,
    flags: u64,
) -> Result<Stat, Errno> {
    let raw = process.read_cstr(path_va, PATH_BYTES_MAX)?;
    if raw.is_empty() && flags & AT_EMPTY_PATH != 0 {
        let dirfd = dirfd_of(dirfd);
        if dirfd == -100 {
            let metadata = process
                .fs
                .root
                .metadata(&process.fs.cwd, true)
                .map_err(|e| Errno::from_io(&e))?;
            return Ok(Stat::from_cap(&metadata));
        }
        return stat_of_fd(process, u64::try_from(dirfd).map_err(|_| Errno::EBADF)?);
    }
    if let Some(device) = Device::at(&raw) {
        return Ok(Stat::device(S_IFCHR | 0o666, device.number()));
    }
    if crate::kernel::procfs::is_dir(process, &raw) {
        return Ok(Stat::device(S_IFDIR | 0o555, (0, 0)));
    }
    if raw.starts_with(b"/proc/") && crate::kernel::procfs::generate(process, &raw).is_some() {
        return Ok(Stat::device(0o100444, (0, 0)));
    }
    let path = resolve_at_bytes(process, dirfd, &raw)?;
    process
        .fs
        .root
        .metadata(&path, flags & AT_SYMLINK_NOFOLLOW == 0)
        .map(|m| Stat::from_cap(&m))
        .map_err(|e| Errno::from_io(&e))
}

pub(crate) fn fstat(process: &mut Process, fd: u64, buf: u64) -> SysResult {
    let stat = stat_of_fd(process, fd)?;
    process.write_user(buf, &stat.to_stat())?;
    Ok(0)
}

pub(crate) fn fstatat(
    process: &mut Process,
    dirfd: u64,
    path_va: u64,
    buf: u64,
    flags: u64,
) -> SysResult {
    let stat = stat_of_path(process, dirfd, path_va, flags)?;
    process.write_user(buf, &stat.to_stat())?;
    Ok(0)
}

pub(crate) fn statx(
    process: &mut Process,
    dirfd: u64,
    path_va: u64,
    flags: u64,
    _mask: u64,
    buf: u64,
) -> SysResult {
    let stat = stat_of_path(process, dirfd, path_va, flags)?;
    process.write_user(buf, &stat.to_statx())?;
    Ok(0)
}

pub(crate) fn faccessat(process: &mut Process, dirfd: u64, path_va: u64, mode: u64) -> SysResult {
    let stat = stat_of_path(process, dirfd, path_va, 0)?;
    // The task is its domain's only user and owns everything; execute needs some x bit.
    if mode & 1 != 0 && stat.mode & 0o111 == 0 && stat.mode & S_IFDIR == 0 {
        return Err(Errno::EACCES);
    }
    Ok(0)
}

pub(crate) fn getcwd(process: &mut Process, buf: u64, size: u64) -> SysResult {
    let mut path = FsContext::session_path(&process.fs.cwd);
    path.push(0);
    if (path.len() as u64) > size {
        return Err(Errno::ERANGE);
    }
    process.write_user(buf, &path)?;
    Ok(path.len() as u64)
}

fn set_cwd(process: &mut Process, path: PathBuf) -> SysResult {
    let metadata = process
        .fs
        .root
        .metadata(&path, true)
        .map_err(|e| Errno::from_io(&e))?;
    if !metadata.is_dir() {
        return Err(Errno::ENOTDIR);
    }
    process.fs.cwd = process
        .fs
        .root
        .canonical(&path)
        .map_err(|e| Errno::from_io(&e))?;
    process.publish();
    Ok(0)
}

pub(crate) fn chdir(process: &mut Process, path_va: u64) -> SysResult {
    let path = resolve_at(process, AT_FDCWD, path_va)?;
    set_cwd(process, path)
}

pub(crate) fn fchdir(process: &mut Process, fd: u64) -> SysResult {
    let file = process.fds.file(fd)?;
    match &file.kind {
        Kind::Dir { path, .. } => set_cwd(process, path.clone()),
        _ => Err(Errno::ENOTDIR),
    }
}

pub(crate) fn mkdirat(process: &mut Process, dirfd: u64, path_va: u64, mode: u64) -> SysResult {
    let path = resolve_at(process, dirfd, path_va)?;
    let mut builder = DirBuilder::new();
    builder.mode(host_mode((mode as u32) & !process.umask, true));
    process
        .fs
        .root
        .create_dir_with(&path, &builder)
        .map_err(|e| Errno::from_io(&e))?;
    Ok(0)
}

pub(crate) fn unlinkat(process: &mut Process, dirfd: u64, path_va: u64, flags: u64) -> SysResult {
    let path = resolve_at(process, dirfd, path_va)?;
    process
        .fs
        .root
        .remove(&path, flags & AT_REMOVEDIR != 0)
        .map_err(|e| Errno::from_io(&e))?;
    Ok(0)
}

pub(crate) fn renameat(
    process: &mut Process,
    old_dirfd: u64,
    old_va: u64,
    new_dirfd: u64,
    new_va: u64,
) -> SysResult {
    let from = resolve_at(process, old_dirfd, old_va)?;
    let to = resolve_at(process, new_dirfd, new_va)?;
    process
        .fs
        .root
        .rename(&from, &to)
        .map_err(|e| Errno::from_io(&e))?;
    Ok(0)
}

pub(crate) fn linkat(
    process: &mut Process,
    old_dirfd: u64,
    old_va: u64,
    new_dirfd: u64,
    new_va: u64,
) -> SysResult {
    let from = resolve_at(process, old_dirfd, old_va)?;
    let to = resolve_at(process, new_dirfd, new_va)?;
    process
        .fs
        .root
        .hard_link(&from, &to)
        .map_err(|e| Errno::from_io(&e))?;
    Ok(0)
}

pub(crate) fn symlinkat(
    process: &mut Process,
    target_va: u64,
    dirfd: u64,
    link_va: u64,
) -> SysResult {
    let target = process.read_cstr(target_va, PATH_BYTES_MAX)?;
    if target.is_empty() {
        return Err(Errno::ENOENT);
    }
    let link = resolve_at(process, dirfd, link_va)?;
    process
        .fs
        .root
        .symlink_contents(std::ffi::OsStr::from_bytes(&target), &link)
        .map_err(|e| Errno::from_io(&e))?;
    Ok(0)
}

pub(crate) fn readlinkat(
    process: &mut Process,
    dirfd: u64,
    path_va: u64,
    buf: u64,
    size: u64,
) -> SysResult {
    let raw = process.read_cstr(path_va, PATH_BYTES_MAX)?;
    let target = if let Some(target) = crate::kernel::procfs::link(process, &raw) {
        target
    } else {
        let path = resolve_at_bytes(process, dirfd, &raw)?;
        let target = process
            .fs
            .root
            .read_link_contents(&path)
            .map_err(|e| Errno::from_io(&e))?;
        target.as_os_str().as_bytes().to_vec()
    };
    if size == 0 || i64::try_from(size).is_err() {
        return Err(Errno::EINVAL);
    }
    let len = target
        .len()
        .min(usize::try_from(size).unwrap_or(usize::MAX));
    process.write_user(buf, &target[..len])?;
    Ok(len as u64)
}

pub(crate) fn fchmodat(process: &mut Process, dirfd: u64, path_va: u64, mode: u64) -> SysResult {
    let path = resolve_at(process, dirfd, path_va)?;
    let root = &process.fs.root;
    let is_dir = root
        .metadata(&path, true)
        .map_err(|e| Errno::from_io(&e))?
        .is_dir();
    root.set_mode(&path, host_mode(mode as u32, is_dir))
        .map_err(|e| Errno::from_io(&e))?;
    Ok(0)
}

pub(crate) fn fchmod(process: &mut Process, fd: u64, mode: u64) -> SysResult {
    let file = process.fds.file(fd)?;
    match &file.kind {
        Kind::File(handle) => {
            use std::os::unix::fs::PermissionsExt as _;
            handle
                .set_permissions(std::fs::Permissions::from_mode(host_mode(
                    mode as u32,
                    false,
                )))
                .map_err(|e| Errno::from_io(&e))?;
            Ok(0)
        }
        _ => Ok(0),
    }
}

pub(crate) fn truncate(process: &mut Process, path_va: u64, length: u64) -> SysResult {
    let path = resolve_at(process, AT_FDCWD, path_va)?;
    if i64::try_from(length).is_err() {
        return Err(Errno::EINVAL);
    }
    let mut options = OpenOptions::new();
    options.write(true);
    let file = process
        .fs
        .root
        .open_with(&path, &options, true, false, false)
        .map_err(|e| Errno::from_io(&e))?;
    file.set_len(length).map_err(|e| Errno::from_io(&e))?;
    Ok(0)
}

pub(crate) fn ftruncate(process: &mut Process, fd: u64, length: u64) -> SysResult {
    let file = process.fds.file(fd)?;
    if i64::try_from(length).is_err() || !file.writable() {
        return Err(Errno::EINVAL);
    }
    match &file.kind {
        Kind::File(handle) => handle
            .set_len(length)
            .map_err(|e| Errno::from_io(&e))
            .map(|()| 0),
        _ => Err(Errno::EINVAL),
    }
}

pub(crate) fn utimensat(
    process: &mut Process,
    dirfd: u64,
    path_va: u64,
    _times: u64,
    flags: u64,
) -> SysResult {
    // Times are accepted and not changed: nothing in a domain depends on them.
    if path_va == 0 {
        process.fds.get(dirfd)?;
        return Ok(0);
    }
    stat_of_path(process, dirfd, path_va, flags)?;
    Ok(0)
}

/// `statfs(path, buf)` (`path_va` non-zero) and `fstatfs(fd, buf)`: the domain's `/` as one
/// file system. With a disk allowance (`disk_mb`) its size is the allowance and its free
/// space what the session's files leave of it; without one, the free space of the file system
/// holding the scratch directory.
pub(crate) fn statfs(process: &mut Process, path_va: u64, fd: u64, buf: u64) -> SysResult {
    const BLOCK: u64 = 4096;
    const EXT4_SUPER_MAGIC: u64 = 0xef53;
    const OVERLAYFS_SUPER_MAGIC: u64 = 0x794c_7630;
    if path_va != 0 {
        let raw = process.read_cstr(path_va, PATH_BYTES_MAX)?;
        if Device::at(&raw).is_none() && crate::kernel::procfs::generate(process, &raw).is_none() {
            let path = resolve_at_bytes(process, AT_FDCWD, &raw)?;
            process
                .fs
                .root
                .metadata(&path, true)
                .map_err(|e| Errno::from_io(&e))?;
        }
    } else {
        process.fds.get(fd)?;
    }
    let root = &process.fs.root;
    let (blocks, free, kind) = {
        let used = root.upper_bytes().div_ceil(BLOCK);
        let kind = if root.has_image() {
            OVERLAYFS_SUPER_MAGIC
        } else {
            EXT4_SUPER_MAGIC
        };
        if process.vm.disk_bytes > 0 {
            let blocks = process.vm.disk_bytes / BLOCK;
            (blocks, blocks.saturating_sub(used), kind)
        } else {
            let host = root.host_statvfs().map_err(|e| Errno::from_io(&e))?;
            let free = host.f_bavail * host.f_frsize / BLOCK;
            (used + free, free, kind)
        }
    };
    let mut out = [0u8; 120];
    let fields: [(usize, u64); 9] = [
        (0, kind),
        (8, BLOCK),
        (16, blocks),
        (24, free),
        (32, free),
        (40, 1 << 20),
        (48, 1 << 20),
        (64, 255),
        (72, BLOCK),
    ];
    for (at, value) in fields {
        out[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }
    process.write_user(buf, &out)?;
    Ok(0)
}

pub(crate) fn getdents64(process: &mut Process, fd: u64, buf: u64, size: u64) -> SysResult {
    let file = process.fds.file(fd)?;
    let Kind::Dir { path, listing, .. } = &file.kind else {
        return Err(Errno::ENOTDIR);
    };
    let size = usize::try_from(size.min(1 << 20)).unwrap_or(0);
    process.check_user(buf, size as u64, true)?;
    let mut out = Vec::new();
    {
        let mut held = lock(listing);
        if held.is_none() {
            let proc = path
                .starts_with(PROC_DIR)
                .then(|| crate::kernel::procfs::listing_of(process, path))
                .flatten();
            let entries = match proc {
                Some(entries) => entries,
                None => process.fs.root.list(path).map_err(|e| Errno::from_io(&e))?,
            };
            *held = Some(Listing { entries, next: 0 });
        }
        let Some(listing) = held.as_mut() else {
            return Err(Errno::EIO);
        };
        while let Some((name, ino, kind)) = listing.entries.get(listing.next) {
            let reclen = (19 + name.len() + 1).div_ceil(8) * 8;
            if out.len() + reclen > size {
                if out.is_empty() {
                    return Err(Errno::EINVAL);
                }
                break;
            }
            let next = listing.next as u64 + 1;
            out.extend_from_slice(&ino.to_le_bytes());
            out.extend_from_slice(&next.to_le_bytes());
            out.extend_from_slice(&(reclen as u16).to_le_bytes());
            out.push(*kind);
            out.extend_from_slice(name);
            out.resize(out.len() + reclen - 19 - name.len(), 0);
            listing.next += 1;
        }
    }
    process.write_user(buf, &out)?;
    Ok(out.len() as u64)
}

/// Rewinds a directory listing (`lseek(fd, 0, SEEK_SET)`).
pub(crate) fn rewind(listing: &std::sync::Mutex<Option<Listing>>) {
    *lock(listing) = None;
}
