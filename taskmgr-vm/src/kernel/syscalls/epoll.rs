//! `epoll`: an interest list of descriptors and the events each is watched for, waited on
//! with `epoll_wait`, `epoll_pwait` and `epoll_pwait2`. Readiness is what `poll` reports for
//! the same descriptor ([`super::poll`]), so every kind of descriptor can be watched but
//! regular files, directories and the memory devices, which Linux refuses (EPERM). Reports are level-triggered;
//! `EPOLLET` is accepted and reported as level-triggered (a program that reads until EAGAIN,
//! as edge-triggered programs must, sees the same data), and `EPOLLONESHOT` disarms an entry
//! after it has been reported once.
//!
//! The list holds its files weakly: a descriptor closed (and its file gone) leaves the list,
//! as on Linux; one whose number now names another file is dropped too.

use super::poll::{deadline, file_revents, timespec, with_mask};
use super::{Errno, SysResult};
use crate::kernel::devices::Device;
use crate::kernel::fds::{Fd, Kind, OpenFile};
use crate::kernel::process::Process;
use crate::kernel::wait::{Blocked, Io, IoResult};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use xeno_taskmgr_kit::lock;

/// Most descriptors one epoll instance watches (Linux's `max_user_watches` is far higher;
/// this is the descriptor limit, which bounds what one process could name anyway).
const WATCHES_MAX: usize = crate::kernel::fds::FDS_MAX;
/// Most events one `epoll_wait` returns (Linux's EP_MAX_EVENTS).
const EVENTS_MAX: u64 = i32::MAX as u64 / 12;
const EPOLL_CLOEXEC: u64 = 0o2000000;
const EPOLLEXCLUSIVE: u32 = 1 << 28;
const EPOLLONESHOT: u32 = 1 << 30;
/// The readiness bits a watch may ask for (those of `poll`, and EPOLLRDHUP).
const READY_BITS: u32 = 0x1 | 0x2 | 0x4 | 0x8 | 0x10 | 0x40 | 0x80 | 0x100 | 0x200 | 0x2000;

/// One watched descriptor.
#[derive(Debug)]
struct Interest {
    file: Weak<OpenFile>,
    events: u32,
    data: u64,
    /// Disarmed after a report (EPOLLONESHOT), until EPOLL_CTL_MOD.
    disarmed: bool,
}

/// An epoll instance's interest list, by descriptor number.
#[derive(Debug, Default)]
pub(crate) struct Interests {
    watched: BTreeMap<i32, Interest>,
}

/// `epoll_create(size)` and `epoll_create1(flags)`.
pub(crate) fn create(process: &mut Process, flags: u64) -> SysResult {
    if flags & !EPOLL_CLOEXEC != 0 {
        return Err(Errno::EINVAL);
    }
    process.fds.insert(Fd {
        file: OpenFile::new(Kind::Epoll(Mutex::new(Interests::default())), 2),
        cloexec: flags & EPOLL_CLOEXEC != 0,
    })
}

fn instance(process: &Process, epfd: u64) -> Result<Arc<OpenFile>, Errno> {
    let file = process.fds.file(epfd)?;
    match &file.kind {
        Kind::Epoll(_) => Ok(file),
        _ => Err(Errno::EINVAL),
    }
}

/// `epoll_ctl(epfd, op, fd, event)`.
pub(crate) fn ctl(process: &mut Process, epfd: u64, op: u64, fd: u64, event: u64) -> SysResult {
    let epoll = instance(process, epfd)?;
    let target = process.fds.file(fd)?;
    if fd == epfd {
        return Err(Errno::EINVAL);
    }
    // Linux refuses what has no poll method: regular files, directories, and the memory
    // devices (null, zero, full; the random devices have one).
    if matches!(
        target.kind,
        Kind::File(_) | Kind::Dir { .. } | Kind::Device(Device::Null | Device::Zero | Device::Full)
    ) {
        return Err(Errno::EPERM);
    }
    let (events, data) = if op == 2 {
        (0, 0)
    } else {
        let raw = process.read_user(event, 12)?;
        (
            u32::from_le_bytes(raw[0..4].try_into().unwrap_or([0; 4])),
            u64::from_le_bytes(raw[4..12].try_into().unwrap_or([0; 8])),
        )
    };
    let Kind::Epoll(interests) = &epoll.kind else {
        return Err(Errno::EINVAL);
    };
    let mut interests = lock(interests);
    let fd = fd as i32;
    match op {
        1 => {
            if interests.watched.contains_key(&fd) {
                return Err(Errno::EEXIST);
            }
            if interests.watched.len() >= WATCHES_MAX {
                return Err(Errno::ENOSPC);
            }
            interests.watched.insert(
                fd,
                Interest {
                    file: Arc::downgrade(&target),
                    events,
                    data,
                    disarmed: false,
                },
            );
        }
        2 => {
            interests.watched.remove(&fd).ok_or(Errno::ENOENT)?;
        }
        3 => {
            let interest = interests.watched.get_mut(&fd).ok_or(Errno::ENOENT)?;
            if events & EPOLLEXCLUSIVE != 0 {
                return Err(Errno::EINVAL);
            }
            interest.events = events;
            interest.data = data;
            interest.disarmed = false;
        }
        _ => return Err(Errno::EINVAL),
    }
    Ok(0)
}

/// `epoll_wait(epfd, events, maxevents, timeout_ms)`.
pub(crate) fn wait(process: &mut Process, a: [u64; 6]) -> IoResult {
    let timeout = u64::try_from(a[3] as i32).ok().map(Duration::from_millis);
    wait_for(process, a[0], a[1], a[2], timeout)
}

/// `epoll_pwait(epfd, events, maxevents, timeout_ms, sigmask, size)`.
pub(crate) fn pwait(process: &mut Process, a: [u64; 6]) -> IoResult {
    let timeout = u64::try_from(a[3] as i32).ok().map(Duration::from_millis);
    with_mask(process, a[4], a[5], |process| {
        wait_for(process, a[0], a[1], a[2], timeout)
    })
}

/// `epoll_pwait2(epfd, events, maxevents, timeout_timespec, sigmask, size)`.
pub(crate) fn pwait2(process: &mut Process, a: [u64; 6]) -> IoResult {
    let timeout = timespec(process, a[3])?;
    with_mask(process, a[4], a[5], |process| {
        wait_for(process, a[0], a[1], a[2], timeout)
    })
}

fn wait_for(
    process: &mut Process,
    epfd: u64,
    out: u64,
    max: u64,
    timeout: Option<Duration>,
) -> IoResult {
    let max = max as i32;
    if max <= 0 || max as u64 > EVENTS_MAX {
        return Err(Errno::EINVAL);
    }
    let epoll = instance(process, epfd)?;
    process.check_user(out, max as u64 * 12, true)?;
    let (until, timed_out) = deadline(process, timeout);
    let waiter = if timed_out { None } else { process.io_waiter() };
    let Kind::Epoll(interests) = &epoll.kind else {
        return Err(Errno::EINVAL);
    };
    let mut ready = Vec::new();
    {
        let mut interests = lock(interests);
        let mut gone = Vec::new();
        for (fd, interest) in interests.watched.iter_mut() {
            let current = process.fds.file(*fd as u64).ok();
            let Some(file) = interest.file.upgrade() else {
                gone.push(*fd);
                continue;
            };
            if !current.is_some_and(|current| Arc::ptr_eq(&current, &file)) {
                gone.push(*fd);
                continue;
            }
            if interest.disarmed {
                continue;
            }
            let asked = (interest.events & READY_BITS) as i16;
            let found = file_revents(&file, asked, waiter.as_ref()) as u16 as u32;
            if found != 0 && (ready.len() as i32) < max {
                ready.push((found, interest.data));
                if interest.events & EPOLLONESHOT != 0 {
                    interest.disarmed = true;
                }
            }
        }
        for fd in gone {
            interests.watched.remove(&fd);
        }
    }
    if ready.is_empty() && !timed_out && waiter.is_some() {
        return Ok(Io::Wait(Blocked { until, progress: 0 }));
    }
    let mut bytes = Vec::with_capacity(ready.len() * 12);
    for (events, data) in &ready {
        bytes.extend_from_slice(&events.to_le_bytes());
        bytes.extend_from_slice(&data.to_le_bytes());
    }
    process.write_user(out, &bytes)?;
    Ok(Io::Done(ready.len() as u64))
}
