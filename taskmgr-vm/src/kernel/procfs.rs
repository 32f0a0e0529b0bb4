//! The files of `/proc` programs read, generated when opened from the domain's own figures
//! (its memory, its CPU, its processes), never the host's: `self` (and the process's own
//! pid) with `stat`, `status`, `cmdline`, `environ`, `maps` and `mounts`, and `cpuinfo`,
//! `meminfo`, `uptime`, `loadavg`, `stat`, `filesystems` and `mounts`. `/proc/self/exe` and
//! `/proc/self/cwd` are links (`readlink`), `/proc/self/fd/N` names a descriptor
//! (`devices.rs`) and reads as a link to what it has open. `/proc/<pid>` of the task's other
//! processes (running or zombie) has `stat`, `status`, `cmdline`, `environ`, `comm`, `maps`,
//! the `exe` and `cwd` links and `fd/`, from what each process publishes of itself
//! (`tree::Published`: its areas and descriptors after every call that changed them).
//! `/proc` lists the task's processes, `self` and the domain's files (what `ps` reads);
//! `/proc/<pid>` lists its files, and `/proc/<pid>/fd` its descriptors (what `lsof` reads).

use crate::hypervisor::vm::layout::PAGE_SIZE;
use crate::kernel::fds::{Kind, OpenFile};
use crate::kernel::files::FsContext;
use crate::kernel::overlay::Root;
use crate::kernel::process::Process;
use crate::kernel::tree::Published;
use std::fmt::Write;

/// The mounts a domain shows: its session directory as `/`, and `/proc`.
const MOUNTS: &str =
    "xenoserve / xenoserve rw,relatime 0 0\nproc /proc proc rw,nosuid,nodev,noexec,relatime 0 0\n";
/// The file systems a domain knows.
const FILESYSTEMS: &str = "nodev\tproc\n\txenoserve\n";

/// The path under `/proc/self/` (or `/proc/<own pid>/`) that `raw` names, if it does.
fn own(process: &Process, raw: &[u8]) -> Option<Vec<u8>> {
    let rest = raw.strip_prefix(b"/proc/")?;
    let (first, tail) = match rest.iter().position(|byte| *byte == b'/') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &b""[..]),
    };
    let pid = process.pid.to_string();
    (first == b"self" || first == pid.as_bytes() || first == b"thread-self").then(|| tail.to_vec())
}

/// Another process of the task that `raw` names under `/proc/<pid>/`: what it published,
/// whether it is a zombie, and the rest of the path.
fn other(process: &Process, raw: &[u8]) -> Option<(i32, Published, bool, Vec<u8>)> {
    let rest = raw.strip_prefix(b"/proc/")?;
    let (first, tail) = match rest.iter().position(|byte| *byte == b'/') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &b""[..]),
    };
    let pid: i32 = std::str::from_utf8(first).ok()?.parse().ok()?;
    if pid == process.pid || first.first() == Some(&b'0') {
        return None;
    }
    let (shared, zombie) = process.tree.lookup(pid)?;
    Some((pid, shared.published(), zombie, tail.to_vec()))
}

/// The link `raw` names under `/proc/self` or `/proc/<pid>`, if it is one (`exe`, `cwd`,
/// `root`).
pub(crate) fn link(process: &Process, raw: &[u8]) -> Option<Vec<u8>> {
    if let Some((_, published, zombie, tail)) = other(process, raw) {
        return match tail.as_slice() {
            _ if zombie => None,
            b"exe" => Some(published.exe.into_bytes()),
            b"cwd" => Some(published.cwd),
            b"root" => Some(b"/".to_vec()),
            tail => {
                let number = fd_number(tail)?;
                let (_, file) = published.fds.iter().find(|(fd, _)| *fd == number)?;
                let file = file.upgrade()?;
                Some(fd_link(&process.fs.root, &file))
            }
        };
    }
    match own(process, raw)?.as_slice() {
        b"exe" => Some(process.exe_path.as_bytes().to_vec()),
        b"cwd" => Some(FsContext::session_path(&process.fs.cwd)),
        b"root" => Some(b"/".to_vec()),
        tail => {
            let file = process.fds.file(fd_number(tail)?).ok()?;
            Some(fd_link(&process.fs.root, &file))
        }
    }
}

/// The descriptor number `fd/N` names.
fn fd_number(tail: &[u8]) -> Option<u64> {
    let digits = tail.strip_prefix(b"fd/")?;
    if digits.is_empty() || digits.len() > 4 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// What `/proc/<pid>/fd/N` links to, as Linux names it: a file's path in the session, a
/// device's path, `pipe:[ino]` (the inode `fstat` reports), or `anon_inode:[…]`.
pub(crate) fn fd_link(root: &Root, file: &OpenFile) -> Vec<u8> {
    let anon = |what: &str| format!("anon_inode:[{what}]").into_bytes();
    match &file.kind {
        Kind::Device(device) => device.path().to_vec(),
        Kind::Pipe(_) | Kind::Output(_) => b"pipe:[1]".to_vec(),
        Kind::Event(_) => anon("eventfd"),
        Kind::Timer { .. } => anon("timerfd"),
        Kind::Epoll(_) => anon("eventpoll"),
        Kind::Dir { path, .. } => FsContext::session_path(path),
        Kind::File(handle) => {
            use std::os::fd::AsRawFd;
            // The host names the file by its host path; the part inside a layer is its
            // session path. A generated file (of /proc) lies in neither.
            std::fs::read_link(format!("/proc/self/fd/{}", handle.as_raw_fd()))
                .ok()
                .and_then(|host| root.session_path_of(&host))
                .unwrap_or_else(|| anon("file"))
        }
    }
}

/// `/proc/<pid>/…` of another process of the task: what it published (a zombie's
/// `cmdline`, `environ` and `maps` are empty, as on Linux).
fn generate_other(process: &Process, raw: &[u8]) -> Option<Vec<u8>> {
    let (pid, published, zombie, tail) = other(process, raw)?;
    let name = published.comm.clone();
    let state = if zombie { 'Z' } else { 'S' };
    let parent = process.tree.parent(pid);
    let (pgid, sid) = process.tree.group_of(pid).unwrap_or((pid, pid));
    Some(match tail.as_slice() {
        b"cmdline" | b"environ" | b"maps" if zombie => Vec::new(),
        b"maps" => maps_text(&published.maps).into_bytes(),
        b"cmdline" => published.cmdline,
        b"environ" => published.environ,
        b"comm" => format!("{name}\n").into_bytes(),
        b"stat" => format!(
            "{pid} ({name}) {state} {parent} {pgid} {sid} 0 -1 4194304 0 0 0 0 0 0 0 0 20 0 {} 0 0 {} {} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
            published.threads.max(1),
            published.vsize,
            published.rss / PAGE_SIZE,
        )
        .into_bytes(),
        b"status" => format!(
            "Name:\t{name}\nState:\t{state} ({})\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t{parent}\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nVmSize:\t{:8} kB\nVmRSS:\t{:8} kB\nThreads:\t{}\n",
            if zombie { "zombie" } else { "sleeping" },
            published.vsize / 1024,
            published.rss / 1024,
            published.threads.max(1),
        )
        .into_bytes(),
        _ => return None,
    })
}

/// The contents of the generated file `raw` names, or `None` if it names none.
pub(crate) fn generate(process: &Process, raw: &[u8]) -> Option<Vec<u8>> {
    if let Some(data) = generate_other(process, raw) {
        return Some(data);
    }
    if let Some(tail) = own(process, raw) {
        return match tail.as_slice() {
            b"stat" => Some(stat(process).into_bytes()),
            b"status" => Some(status(process).into_bytes()),
            b"cmdline" => Some(process.cmdline.clone()),
            b"environ" => Some(process.environ.clone()),
            b"maps" => Some(maps_text(&process.mm.areas()).into_bytes()),
            b"mounts" => Some(MOUNTS.as_bytes().to_vec()),
            b"comm" => Some(format!("{}\n", comm(process)).into_bytes()),
            _ => None,
        };
    }
    let now = process.boot.elapsed();
    let uptime = now.as_secs_f64() + 1.0;
    Some(match raw {
        b"/proc/cpuinfo" => cpuinfo().into_bytes(),
        b"/proc/meminfo" => meminfo(process).into_bytes(),
        b"/proc/uptime" => format!("{uptime:.2} {uptime:.2}\n").into_bytes(),
        b"/proc/loadavg" => {
            let (running, total) = process.tree.counts();
            format!(
                "0.00 0.00 0.00 {running}/{total} {}\n",
                process.tree.last_id()
            )
            .into_bytes()
        }
        b"/proc/stat" => {
            let (running, total) = process.tree.counts();
            let ticks = (now.as_millis() / 10) as u64;
            let btime = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs())
                .saturating_sub(now.as_secs() + 1);
            format!(
                "cpu  {ticks} 0 0 0 0 0 0 0 0 0\ncpu0 {ticks} 0 0 0 0 0 0 0 0 0\nbtime {btime}\nprocesses {total}\nprocs_running {running}\nprocs_blocked 0\n"
            )
            .into_bytes()
        }
        b"/proc/filesystems" => FILESYSTEMS.as_bytes().to_vec(),
        b"/proc/mounts" => MOUNTS.as_bytes().to_vec(),
        _ => return None,
    })
}

/// The files `/proc` lists besides the processes.
const PROC_FILES: [&str; 7] = [
    "cpuinfo",
    "meminfo",
    "uptime",
    "loadavg",
    "stat",
    "filesystems",
    "mounts",
];

/// Whether `raw` names a directory of `/proc`: `/proc` itself, `self`, or a process of the
/// task (so that `stat` and `opendir` of them work, as `ps` needs).
pub(crate) fn is_dir(process: &Process, raw: &[u8]) -> bool {
    let trimmed = raw.strip_suffix(b"/").unwrap_or(raw);
    if trimmed == b"/proc" {
        return true;
    }
    let Some(name) = trimmed.strip_prefix(b"/proc/") else {
        return false;
    };
    let name = name.strip_suffix(b"/fd").unwrap_or(name);
    process_dir(process, name).is_some()
}

/// The process a directory name under `/proc` names (`self`, `thread-self` or a pid of the
/// task), if it names one.
fn process_dir(process: &Process, name: &[u8]) -> Option<i32> {
    if name == b"self" || name == b"thread-self" {
        return Some(process.pid);
    }
    if name.first() == Some(&b'0') {
        return None;
    }
    std::str::from_utf8(name)
        .ok()
        .and_then(|text| text.parse::<i32>().ok())
        .filter(|pid| *pid == process.pid || process.tree.lookup(*pid).is_some())
}

/// The files of `/proc/<pid>`, with their `d_type`.
const PROCESS_FILES: [(&str, u8); 11] = [
    ("cmdline", 8),
    ("comm", 8),
    ("cwd", 10),
    ("environ", 8),
    ("exe", 10),
    ("fd", 4),
    ("maps", 8),
    ("mounts", 8),
    ("root", 10),
    ("stat", 8),
    ("status", 8),
];

/// The entries of the `/proc` directory `path` (relative to the root: `proc`,
/// `proc/<pid>` or `proc/<pid>/fd`), or `None` if it names none.
pub(crate) fn listing_of(
    process: &Process,
    path: &std::path::Path,
) -> Option<Vec<crate::kernel::overlay::Entry>> {
    use std::os::unix::ffi::OsStrExt;
    let raw = path.as_os_str().as_bytes();
    if raw == b"proc" {
        return Some(listing(process));
    }
    let name = raw.strip_prefix(b"proc/")?;
    let (name, fds) = match name.strip_suffix(b"/fd") {
        Some(name) => (name, true),
        None => (name, false),
    };
    let pid = process_dir(process, name)?;
    let mut entries = vec![(b".".to_vec(), 1, 4), (b"..".to_vec(), 1, 4)];
    if !fds {
        for (index, (file, kind)) in PROCESS_FILES.iter().enumerate() {
            entries.push((file.as_bytes().to_vec(), 100 + index as u64, *kind));
        }
        return Some(entries);
    }
    let numbers: Vec<u64> = if pid == process.pid {
        process.fds.all().iter().map(|(fd, _)| *fd).collect()
    } else {
        let (shared, zombie) = process.tree.lookup(pid)?;
        if zombie {
            Vec::new()
        } else {
            shared.published().fds.iter().map(|(fd, _)| *fd).collect()
        }
    };
    for fd in numbers {
        entries.push((fd.to_string().into_bytes(), 200 + fd, 10));
    }
    Some(entries)
}

/// The entries of `/proc` as `getdents64` lists them: the task's processes, `self`, and the
/// domain's files.
pub(crate) fn listing(process: &Process) -> Vec<crate::kernel::overlay::Entry> {
    let mut entries = vec![
        (b".".to_vec(), 1, 4),
        (b"..".to_vec(), 1, 4),
        (b"self".to_vec(), 2, 10),
        (b"thread-self".to_vec(), 3, 10),
    ];
    for pid in process.tree.pids() {
        entries.push((pid.to_string().into_bytes(), 1000 + pid as u64, 4));
    }
    for (index, name) in PROC_FILES.iter().enumerate() {
        entries.push((name.as_bytes().to_vec(), 10 + index as u64, 8));
    }
    entries
}

/// The process's name as `comm` holds it: what `PR_SET_NAME` gave it, or the last part of
/// argv[0], 15 bytes at most.
pub(crate) fn comm(process: &Process) -> String {
    match &process.comm {
        Some(name) => String::from_utf8_lossy(name).into_owned(),
        None => comm_of(&process.cmdline),
    }
}

fn comm_of(cmdline: &[u8]) -> String {
    let first = cmdline.split(|byte| *byte == 0).next().unwrap_or(b"");
    let name = first.rsplit(|byte| *byte == b'/').next().unwrap_or(first);
    String::from_utf8_lossy(&name[..name.len().min(15)]).into_owned()
}

fn stat(process: &Process) -> String {
    let parent = process.tree.parent(process.pid);
    let (pgid, sid) = process
        .tree
        .group_of(process.pid)
        .unwrap_or((process.pid, process.pid));
    let ticks = process.meter.cpu_ns() / 10_000_000;
    let vsize = process.mm.mapped_bytes();
    let rss = process.mm.bytes_owned() / PAGE_SIZE;
    format!(
        "{} ({}) R {parent} {pgid} {sid} 0 -1 4194304 0 0 0 0 {ticks} 0 0 0 20 0 {} 0 0 {vsize} {rss} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n",
        process.pid,
        comm(process),
        process.threads.live.len(),
    )
}

fn status(process: &Process) -> String {
    let parent = process.tree.parent(process.pid);
    let rss_kib = process.mm.bytes_owned() / 1024;
    let vm_kib = process.mm.mapped_bytes() / 1024;
    let mut out = String::new();
    let _ = write!(
        out,
        "Name:\t{}\nUmask:\t{:04o}\nState:\tR (running)\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\nPPid:\t{parent}\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t{}\nGroups:\t\nVmSize:\t{vm_kib:8} kB\nVmRSS:\t{rss_kib:8} kB\nThreads:\t{}\nSigBlk:\t{:016x}\nSigCgt:\t{:016x}\nCpus_allowed:\t1\nCpus_allowed_list:\t0\n",
        comm(process),
        process.umask,
        crate::kernel::fds::FDS_MAX,
        process.threads.live.len(),
        process.signals.mask,
        process
            .signals
            .actions
            .iter()
            .enumerate()
            .skip(1)
            .filter(|(_, action)| action[0] > 1)
            .fold(0u64, |bits, (signal, _)| bits | 1 << (signal - 1)),
        pid = process.pid,
    );
    out
}

/// `maps` of a process with these areas.
fn maps_text(areas: &[(u64, u64, u32, bool)]) -> String {
    let mut out = String::new();
    for &(start, end, prot, stack) in areas {
        let r = if prot & crate::kernel::mm::PROT_READ != 0 {
            'r'
        } else {
            '-'
        };
        let w = if prot & crate::kernel::mm::PROT_WRITE != 0 {
            'w'
        } else {
            '-'
        };
        let x = if prot & crate::kernel::mm::PROT_EXEC != 0 {
            'x'
        } else {
            '-'
        };
        let name = if stack { "[stack]" } else { "" };
        let _ = writeln!(
            out,
            "{start:08x}-{end:08x} {r}{w}{x}p 00000000 00:00 0 {name}"
        );
    }
    out
}

/// One CPU: what the domain's processes run on, each at the domain's CPU rate.
fn cpuinfo() -> String {
    let leaf = std::arch::x86_64::__cpuid(1);
    let family = (leaf.eax >> 8) & 0xf;
    let model = (leaf.eax >> 4) & 0xf;
    format!(
        "processor\t: 0\nvendor_id\t: XenoServe\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: XenoServe paravirtual CPU\nphysical id\t: 0\nsiblings\t: 1\ncore id\t\t: 0\ncpu cores\t: 1\nflags\t\t: fpu sse sse2 avx\n\n"
    )
}

fn meminfo(process: &Process) -> String {
    let physical = &process.vm.physical;
    let total = physical.ram.bytes() / 1024;
    let free = physical.free_frames() * PAGE_SIZE / 1024;
    format!(
        "MemTotal:       {total:8} kB\nMemFree:        {free:8} kB\nMemAvailable:   {free:8} kB\nBuffers:               0 kB\nCached:                0 kB\nSwapTotal:             0 kB\nSwapFree:              0 kB\n"
    )
}
