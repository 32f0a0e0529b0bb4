//! Waiting for several descriptors at once: `poll`, `ppoll`, `select` and `pselect6`, over
//! every kind of descriptor. Files, directories and devices are always ready, output streams
//! always writable; pipes and eventfds are ready as Linux reports them. With nothing ready the
//! call waits ([`crate::kernel::wait`]) until something may be, its timeout, or a stop.

use super::Errno;
use crate::kernel::fds::Kind;
use crate::kernel::process::{Process, Waiter};
use crate::kernel::wait::{Blocked, Io, IoResult};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most descriptors in one poll (Linux's limit is the descriptor limit, which this is).
const POLL_FDS_MAX: u64 = crate::kernel::fds::FDS_MAX as u64;
/// Bits of an `fd_set`: `FD_SETSIZE`.
const FD_SETSIZE: u64 = 1024;

const POLLIN: i16 = 0x1;
const POLLOUT: i16 = 0x4;
const POLLERR: i16 = 0x8;
const POLLHUP: i16 = 0x10;
const POLLNVAL: i16 = 0x20;
const POLLRDNORM: i16 = 0x40;
const POLLWRNORM: i16 = 0x100;
/// Reported whether asked for or not.
const ALWAYS: i16 = POLLERR | POLLHUP | POLLNVAL;

/// What `fd` reports for `events`, having first queued `waiter` (if any) on whatever could
/// change that, so that no change slips between the look and the wait.
fn revents(process: &Process, fd: i32, events: i16, waiter: Option<&Arc<Waiter>>) -> i16 {
    if fd < 0 {
        return 0;
    }
    let Ok(file) = process.fds.file(fd as u64) else {
        return POLLNVAL;
    };
    file_revents(&file, events, waiter)
}

/// What the open `file` reports for `events` (see [`revents`]).
pub(super) fn file_revents(
    file: &crate::kernel::fds::OpenFile,
    events: i16,
    waiter: Option<&Arc<Waiter>>,
) -> i16 {
    let readable = POLLIN | POLLRDNORM;
    let writable = POLLOUT | POLLWRNORM;
    let found = match &file.kind {
        Kind::Device(_) | Kind::File(_) | Kind::Dir { .. } => readable | writable,
        Kind::Output(_) => writable,
        Kind::Pipe(end) => {
            if let Some(waiter) = waiter {
                end.pipe.wait(end.write, waiter);
            }
            let ready = end.pipe.readiness(end.write);
            match (end.write, ready.hung_up) {
                (false, hung_up) => {
                    (if ready.readable { readable } else { 0 }) | if hung_up { POLLHUP } else { 0 }
                }
                (true, true) => POLLERR,
                (true, false) if ready.writable => writable,
                (true, false) => 0,
            }
        }
        Kind::Timer { event, .. } => {
            if let Some(waiter) = waiter {
                event.wait(false, waiter);
            }
            if event.readiness().0 { readable } else { 0 }
        }
        Kind::Event(event) => {
            if let Some(waiter) = waiter {
                event.wait(false, waiter);
                event.wait(true, waiter);
            }
            let (can_read, can_write) = event.readiness();
            (if can_read { readable } else { 0 }) | if can_write { writable } else { 0 }
        }
        // An epoll descriptor inside a poll is never ready here.
        Kind::Epoll(_) => 0,
    };
    found & (events | ALWAYS)
}

/// The deadline of a wait for `timeout` (`None`: for ever), or the one it had before it last
/// waited; and whether it has passed.
pub(super) fn deadline(process: &Process, timeout: Option<Duration>) -> (Option<Instant>, bool) {
    if let Some(resume) = process.resume {
        return (resume.until, resume.timed_out);
    }
    match timeout {
        None => (None, false),
        Some(timeout) if timeout.is_zero() => (Some(Instant::now()), true),
        Some(timeout) => (Some(Instant::now() + timeout), false),
    }
}

/// The readiness of every `(fd, events)`; `None` when none is ready and the call should wait
/// until `until`.
fn survey(
    process: &mut Process,
    wanted: &[(i32, i16)],
    timeout: Option<Duration>,
) -> Result<Result<Vec<i16>, Blocked>, Errno> {
    let (until, timed_out) = deadline(process, timeout);
    let waiter = if timed_out { None } else { process.io_waiter() };
    let found: Vec<i16> = wanted
        .iter()
        .map(|&(fd, events)| revents(process, fd, events, waiter.as_ref()))
        .collect();
    if timed_out || waiter.is_none() || found.iter().any(|revents| *revents != 0) {
        return Ok(Ok(found));
    }
    Ok(Err(Blocked { until, progress: 0 }))
}

/// A `struct timespec` at `va` (`0`: none).
pub(super) fn timespec(process: &mut Process, va: u64) -> Result<Option<Duration>, Errno> {
    if va == 0 {
        return Ok(None);
    }
    let seconds = process.read_u64(va)? as i64;
    let nanos = process.read_u64(va + 8)? as i64;
    if seconds < 0 || !(0..1_000_000_000).contains(&nanos) {
        return Err(Errno::EINVAL);
    }
    Ok(Some(Duration::new(seconds as u64, nanos as u32)))
}

/// A `struct timeval` at `va` (`0`: none).
fn timeval(process: &mut Process, va: u64) -> Result<Option<Duration>, Errno> {
    if va == 0 {
        return Ok(None);
    }
    let seconds = process.read_u64(va)? as i64;
    let micros = process.read_u64(va + 8)? as i64;
    if seconds < 0 || !(0..1_000_000).contains(&micros) {
        return Err(Errno::EINVAL);
    }
    Ok(Some(Duration::new(seconds as u64, micros as u32 * 1000)))
}

fn poll_fds(process: &mut Process, fds: u64, count: u64, timeout: Option<Duration>) -> IoResult {
    if count > POLL_FDS_MAX {
        return Err(Errno::EINVAL);
    }
    let len = usize::try_from(count * 8).unwrap_or(0);
    let mut raw = process.read_user(fds, len)?;
    let wanted: Vec<(i32, i16)> = raw
        .chunks_exact(8)
        .map(|entry| {
            (
                i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]),
                i16::from_le_bytes([entry[4], entry[5]]),
            )
        })
        .collect();
    let found = match survey(process, &wanted, timeout)? {
        Ok(found) => found,
        Err(blocked) => return Ok(Io::Wait(blocked)),
    };
    for (entry, revents) in raw.chunks_exact_mut(8).zip(&found) {
        entry[6..8].copy_from_slice(&revents.to_le_bytes());
    }
    process.write_user(fds, &raw)?;
    Ok(Io::Done(
        found.iter().filter(|revents| **revents != 0).count() as u64,
    ))
}

/// `poll(fds, nfds, timeout_ms)`: a negative timeout waits for ever.
pub(crate) fn poll(process: &mut Process, fds: u64, count: u64, timeout_ms: u64) -> IoResult {
    let timeout_ms = timeout_ms as i32;
    let timeout = u64::try_from(timeout_ms).ok().map(Duration::from_millis);
    poll_fds(process, fds, count, timeout)
}

/// `ppoll(fds, nfds, timeout, sigmask, size)`.
pub(crate) fn ppoll(process: &mut Process, a: [u64; 6]) -> IoResult {
    let [fds, count, timeout, sigmask, size, _] = a;
    let timeout = timespec(process, timeout)?;
    with_mask(process, sigmask, size, |process| {
        poll_fds(process, fds, count, timeout)
    })
}

/// Runs a wait with the signal mask at `sigmask` (if not null) in place of the thread's, as
/// `ppoll` and `pselect6` do: the mask holds while the call waits, and goes back when it
/// returns (after a signal, when its handler returns: the frame saves the thread's own).
pub(super) fn with_mask(
    process: &mut Process,
    sigmask: u64,
    size: u64,
    call: impl FnOnce(&mut Process) -> IoResult,
) -> IoResult {
    if sigmask != 0 && process.signals.restore_mask.is_none() {
        if size != 8 {
            return Err(Errno::EINVAL);
        }
        let mask = process.read_u64(sigmask)?;
        process.signals.restore_mask = Some(process.signals.mask);
        process.signals.mask = mask & !crate::kernel::sigframe::UNBLOCKABLE;
    }
    let result = call(process);
    if !matches!(result, Ok(Io::Wait(_)))
        && let Some(mask) = process.signals.restore_mask.take()
    {
        process.signals.mask = mask;
    }
    result
}

/// The descriptors set in the `fd_set` at `va` among the first `nfds`.
fn fd_set(process: &mut Process, va: u64, nfds: u64) -> Result<Vec<bool>, Errno> {
    let mut set = vec![false; usize::try_from(nfds).unwrap_or(0)];
    if va == 0 {
        return Ok(set);
    }
    let bytes = process.read_user(va, usize::try_from(nfds.div_ceil(64) * 8).unwrap_or(0))?;
    for (fd, member) in set.iter_mut().enumerate() {
        *member = bytes[fd / 8] & (1 << (fd % 8)) != 0;
    }
    Ok(set)
}

/// Writes `set` back over the `fd_set` at `va`.
fn put_fd_set(process: &mut Process, va: u64, set: &[bool]) -> Result<(), Errno> {
    if va == 0 {
        return Ok(());
    }
    let mut bytes = vec![0u8; set.len().div_ceil(64) * 8];
    for (fd, member) in set.iter().enumerate() {
        if *member {
            bytes[fd / 8] |= 1 << (fd % 8);
        }
    }
    process.write_user(va, &bytes)
}

fn select_fds(
    process: &mut Process,
    nfds: u64,
    sets: [u64; 3],
    timeout: Option<Duration>,
) -> IoResult {
    if nfds > FD_SETSIZE {
        return Err(Errno::EINVAL);
    }
    let [read_va, write_va, except_va] = sets;
    let mut reads = fd_set(process, read_va, nfds)?;
    let mut writes = fd_set(process, write_va, nfds)?;
    let mut excepts = fd_set(process, except_va, nfds)?;
    let mut wanted = Vec::new();
    for fd in 0..reads.len() {
        let events = (if reads[fd] { POLLIN } else { 0 }) | if writes[fd] { POLLOUT } else { 0 };
        if events != 0 || excepts[fd] {
            if process.fds.get(fd as u64).is_err() {
                return Err(Errno::EBADF);
            }
            wanted.push((fd as i32, events));
        }
    }
    let found = match survey(process, &wanted, timeout)? {
        Ok(found) => found,
        Err(blocked) => return Ok(Io::Wait(blocked)),
    };
    let mut count = 0u64;
    for set in [&mut reads, &mut writes, &mut excepts] {
        set.iter_mut().for_each(|member| *member = false);
    }
    for (&(fd, events), revents) in wanted.iter().zip(&found) {
        let fd = fd as usize;
        if events & POLLIN != 0 && revents & (POLLIN | POLLHUP | POLLERR) != 0 {
            reads[fd] = true;
            count += 1;
        }
        if events & POLLOUT != 0 && revents & (POLLOUT | POLLERR) != 0 {
            writes[fd] = true;
            count += 1;
        }
    }
    put_fd_set(process, read_va, &reads)?;
    put_fd_set(process, write_va, &writes)?;
    put_fd_set(process, except_va, &excepts)?;
    Ok(Io::Done(count))
}

/// `select(nfds, readfds, writefds, exceptfds, timeout)`, the timeout a `struct timeval`.
pub(crate) fn select(process: &mut Process, a: [u64; 6]) -> IoResult {
    let timeout = timeval(process, a[4])?;
    select_fds(process, a[0], [a[1], a[2], a[3]], timeout)
}

/// `pselect6(nfds, readfds, writefds, exceptfds, timeout, sigmask)`, the timeout a
/// `struct timespec`.
pub(crate) fn pselect(process: &mut Process, a: [u64; 6]) -> IoResult {
    let timeout = timespec(process, a[4])?;
    // The sixth argument points at { const sigset_t *ss; size_t ss_len; }.
    let (sigmask, size) = if a[5] == 0 {
        (0, 8)
    } else {
        let raw = process.read_user(a[5], 16)?;
        (
            u64::from_le_bytes(raw[..8].try_into().unwrap_or([0; 8])),
            u64::from_le_bytes(raw[8..].try_into().unwrap_or([0; 8])),
        )
    };
    with_mask(process, sigmask, size, |process| {
        select_fds(process, a[0], [a[1], a[2], a[3]], timeout)
    })
}
