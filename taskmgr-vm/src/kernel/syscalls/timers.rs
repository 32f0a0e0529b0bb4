//! `alarm`, `getitimer`/`setitimer`, the POSIX timer calls and `timerfd` (the timers
//! themselves are `kernel/timers.rs`).

use super::time::{NANOS_PER_SECOND, clock_ns};
use super::{Errno, SysResult};
use crate::kernel::eventfd::EventFd;
use crate::kernel::fds::{Fd, Kind, OpenFile};
use crate::kernel::process::Process;
use crate::kernel::timers::{Fire, POSIX_TIMERS_MAX, Timer};
use std::sync::Arc;
use std::time::Duration;

const SIGALRM: u64 = 14;
/// `si_code` of a signal the kernel sends (alarm, setitimer).
const SI_KERNEL: i32 = 0x80;
/// `si_code` of a POSIX timer's signal.
const SI_TIMER: i32 = -2;
const TIMER_ABSTIME: u64 = 1;
const TFD_NONBLOCK: u64 = 0o4000;
const TFD_CLOEXEC: u64 = 0o2000000;

/// Clocks a timerfd may run on: REALTIME, MONOTONIC, BOOTTIME and their ALARM forms.
fn timer_clock(clock: u64) -> Result<u64, Errno> {
    match clock as u32 as i32 {
        0 | 1 | 7 | 8 | 9 => Ok(clock as u32 as u64),
        _ => Err(Errno::EINVAL),
    }
}

/// `CLOCK_PROCESS_CPUTIME_ID`, as a POSIX timer records it.
const PROCESS_CPU_CLOCK: u64 = 2;

/// Clocks a POSIX timer may run on: those of [`timer_clock`], and the process's CPU clock
/// (`CLOCK_PROCESS_CPUTIME_ID`, or `clock_getcpuclockid` of itself: pid 0 or its own).
fn posix_clock(process: &Process, clock: u64) -> Result<u64, Errno> {
    let id = clock as u32 as i32;
    if id == 2 {
        return Ok(PROCESS_CPU_CLOCK);
    }
    // A CPU clock id of a process: !pid << 3 | 2 (CPUCLOCK_SCHED of the process).
    if id < 0 && id & 7 == 2 {
        let pid = !(id >> 3);
        return if pid == 0 || pid == process.pid {
            Ok(PROCESS_CPU_CLOCK)
        } else {
            Err(Errno::EINVAL)
        };
    }
    timer_clock(clock)
}

/// A `timespec` at `va`.
fn read_timespec(process: &mut Process, va: u64) -> Result<Duration, Errno> {
    let raw = process.read_user(va, 16)?;
    let seconds = i64::from_le_bytes(raw[..8].try_into().unwrap_or([0; 8]));
    let nanos = i64::from_le_bytes(raw[8..].try_into().unwrap_or([0; 8]));
    if seconds < 0 || !(0..NANOS_PER_SECOND as i64).contains(&nanos) {
        return Err(Errno::EINVAL);
    }
    Ok(Duration::new(seconds as u64, nanos as u32))
}

fn timespec_bytes(duration: Duration) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&duration.as_secs().to_le_bytes());
    out[8..].copy_from_slice(&u64::from(duration.subsec_nanos()).to_le_bytes());
    out
}

/// An `itimerspec` (interval, value) as (value, interval), with an absolute value made
/// relative to `clock` now.
fn read_itimerspec(
    process: &mut Process,
    va: u64,
    clock: u64,
    absolute: bool,
) -> Result<(Option<Duration>, Duration), Errno> {
    let interval = read_timespec(process, va)?;
    let value = read_timespec(process, va + 16)?;
    if value.is_zero() {
        return Ok((None, interval));
    }
    let value = if absolute {
        let now = clock_ns(process, clock)?;
        let at = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX);
        // An absolute time already past expires at once.
        Duration::from_nanos(at.saturating_sub(now).max(1))
    } else {
        value
    };
    Ok((Some(value), interval))
}

fn write_itimerspec(
    process: &mut Process,
    va: u64,
    (left, interval): (Duration, Duration),
) -> Result<(), Errno> {
    if va == 0 {
        return Ok(());
    }
    let mut out = [0u8; 32];
    out[..16].copy_from_slice(&timespec_bytes(interval));
    out[16..].copy_from_slice(&timespec_bytes(left));
    process.write_user(va, &out)
}

/// The process's ITIMER_REAL (made at first use).
fn real_timer(process: &mut Process) -> Arc<Timer> {
    if let Some(timer) = &process.real_timer {
        return Arc::clone(timer);
    }
    let timer = Timer::new(Fire::Signal {
        process: Arc::downgrade(&process.shared),
        signal: SIGALRM,
        code: SI_KERNEL,
    });
    process.real_timer = Some(Arc::clone(&timer));
    timer
}

/// `alarm(seconds)`: the seconds left of the previous alarm (rounded as Linux rounds).
pub(crate) fn alarm(process: &mut Process, seconds: u64) -> SysResult {
    let seconds = seconds as u32;
    let value = (seconds > 0).then(|| Duration::from_secs(u64::from(seconds)));
    let (left, _) = real_timer(process).set(value, Duration::ZERO);
    if left.is_zero() {
        return Ok(0);
    }
    // Rounded to the nearest second, and never 0 while one was pending.
    let rounded = (left + Duration::from_millis(500)).as_secs().max(1);
    Ok(rounded)
}

fn timeval_pair(process: &mut Process, va: u64) -> Result<(Duration, Duration), Errno> {
    let raw = process.read_user(va, 32)?;
    let word = |at: usize| i64::from_le_bytes(raw[at..at + 8].try_into().unwrap_or([0; 8]));
    let to_duration = |seconds: i64, micros: i64| {
        if seconds < 0 || !(0..1_000_000).contains(&micros) {
            Err(Errno::EINVAL)
        } else {
            Ok(Duration::new(seconds as u64, micros as u32 * 1000))
        }
    };
    Ok((
        to_duration(word(0), word(8))?,
        to_duration(word(16), word(24))?,
    ))
}

fn write_itimerval(
    process: &mut Process,
    va: u64,
    (left, interval): (Duration, Duration),
) -> Result<(), Errno> {
    if va == 0 {
        return Ok(());
    }
    let mut out = [0u8; 32];
    for (at, value) in [(0, interval), (16, left)] {
        out[at..at + 8].copy_from_slice(&value.as_secs().to_le_bytes());
        let mut micros = u64::from(value.subsec_micros());
        if at == 16 && !value.is_zero() && value.as_secs() == 0 && micros == 0 {
            // A pending timer never reads as 0 µs left.
            micros = 1;
        }
        out[at + 8..at + 16].copy_from_slice(&micros.to_le_bytes());
    }
    process.write_user(va, &out)
}

/// `getitimer(which, value)`: ITIMER_REAL, ITIMER_VIRTUAL or ITIMER_PROF.
pub(crate) fn getitimer(process: &mut Process, which: u64, value: u64) -> SysResult {
    let current = match which {
        0 => real_timer(process).get(),
        _ => process.shared.cpu.get(which).ok_or(Errno::EINVAL)?,
    };
    write_itimerval(process, value, current)?;
    Ok(0)
}

/// `setitimer(which, new, old)`: ITIMER_REAL (wall clock), ITIMER_VIRTUAL and ITIMER_PROF
/// (the process's CPU time, `kernel/cputimers.rs`).
pub(crate) fn setitimer(process: &mut Process, which: u64, new: u64, old: u64) -> SysResult {
    if which > 2 {
        return Err(Errno::EINVAL);
    }
    let (interval, value) = if new == 0 {
        (Duration::ZERO, Duration::ZERO)
    } else {
        timeval_pair(process, new)?
    };
    let previous = if which == 0 {
        real_timer(process).set((!value.is_zero()).then_some(value), interval)
    } else {
        process
            .shared
            .cpu
            .set(which, value, interval)
            .ok_or(Errno::EINVAL)?
    };
    write_itimerval(process, old, previous)?;
    Ok(0)
}

/// `timer_create(clock, sevp, timerid)`.
pub(crate) fn timer_create(process: &mut Process, clock: u64, sevp: u64, id_va: u64) -> SysResult {
    let clock = posix_clock(process, clock)?;
    if process.posix_timers.len() >= POSIX_TIMERS_MAX {
        return Err(Errno::EAGAIN);
    }
    let (signal, notify) = if sevp == 0 {
        (SIGALRM, 0)
    } else {
        let raw = process.read_user(sevp, 16)?;
        let signo = i32::from_le_bytes(raw[8..12].try_into().unwrap_or([0; 4]));
        let notify = i32::from_le_bytes(raw[12..16].try_into().unwrap_or([0; 4]));
        (u64::try_from(signo).unwrap_or(0), notify)
    };
    let fire = match notify {
        // SIGEV_SIGNAL, and SIGEV_THREAD_ID (to the process: a signal reaches it as a whole).
        0 | 4 if (1..=64).contains(&signal) => Fire::Signal {
            process: Arc::downgrade(&process.shared),
            signal,
            code: SI_TIMER,
        },
        1 => Fire::Nothing, // SIGEV_NONE
        _ => return Err(Errno::EINVAL),
    };
    let id = (0..)
        .find(|id| !process.posix_timers.contains_key(id))
        .ok_or(Errno::EAGAIN)?;
    process.write_user(id_va, &id.to_le_bytes())?;
    if clock == PROCESS_CPU_CLOCK {
        // Counted in the process's CPU time by its threads (`kernel/cputimers.rs`).
        let signal = match fire {
            Fire::Signal { signal, .. } => signal,
            _ => 0,
        };
        process.shared.cpu.posix_create(id, signal);
        process.posix_timers.insert(id, (None, clock));
    } else {
        process
            .posix_timers
            .insert(id, (Some(Timer::new(fire)), clock));
    }
    Ok(0)
}

/// A POSIX timer of the process: on a wall clock (the timer and its clock), or on the
/// process's CPU clock (its id, in `ProcessShared::cpu`).
enum Posix {
    Wall(Arc<Timer>, u64),
    Cpu(i32),
}

fn posix_timer(process: &Process, id: u64) -> Result<Posix, Errno> {
    let id = id as u32 as i32;
    match process.posix_timers.get(&id) {
        Some((Some(timer), clock)) => Ok(Posix::Wall(Arc::clone(timer), *clock)),
        Some((None, _)) => Ok(Posix::Cpu(id)),
        None => Err(Errno::EINVAL),
    }
}

/// `timer_settime(id, flags, new, old)`.
pub(crate) fn timer_settime(
    process: &mut Process,
    id: u64,
    flags: u64,
    new: u64,
    old: u64,
) -> SysResult {
    let absolute = flags & TIMER_ABSTIME != 0;
    let previous = match posix_timer(process, id)? {
        Posix::Wall(timer, clock) => {
            let (value, interval) = read_itimerspec(process, new, clock, absolute)?;
            timer.set(value, interval)
        }
        Posix::Cpu(id) => {
            let (value, interval) = read_itimerspec(process, new, PROCESS_CPU_CLOCK, false)?;
            let value = match value {
                // An absolute time on the process's CPU clock: what is left of it now.
                Some(at) if absolute => {
                    let used = Duration::from_nanos(process.shared.cpu.used());
                    Some(at.saturating_sub(used).max(Duration::from_nanos(1)))
                }
                value => value,
            };
            process
                .shared
                .cpu
                .posix_set(id, value, interval)
                .ok_or(Errno::EINVAL)?
        }
    };
    write_itimerspec(process, old, previous)?;
    Ok(0)
}

/// `timer_gettime(id, value)`.
pub(crate) fn timer_gettime(process: &mut Process, id: u64, value: u64) -> SysResult {
    let current = match posix_timer(process, id)? {
        Posix::Wall(timer, _) => timer.get(),
        Posix::Cpu(id) => process.shared.cpu.posix_get(id).ok_or(Errno::EINVAL)?,
    };
    if value == 0 {
        return Err(Errno::EFAULT);
    }
    write_itimerspec(process, value, current)?;
    Ok(0)
}

/// `timer_getoverrun(id)`.
pub(crate) fn timer_getoverrun(process: &mut Process, id: u64) -> SysResult {
    let overrun = match posix_timer(process, id)? {
        Posix::Wall(timer, _) => timer.overrun(),
        Posix::Cpu(id) => process.shared.cpu.posix_overrun(id).ok_or(Errno::EINVAL)?,
    };
    Ok(overrun.min(i32::MAX as u64))
}

/// `timer_delete(id)`.
pub(crate) fn timer_delete(process: &mut Process, id: u64) -> SysResult {
    let id = id as u32 as i32;
    match process.posix_timers.remove(&id).ok_or(Errno::EINVAL)? {
        (Some(timer), _) => timer.disarm(),
        (None, _) => process.shared.cpu.posix_delete(id),
    }
    Ok(0)
}

/// `timerfd_create(clock, flags)`.
pub(crate) fn timerfd_create(process: &mut Process, clock: u64, flags: u64) -> SysResult {
    let clock = timer_clock(clock)?;
    if flags & !(TFD_NONBLOCK | TFD_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let event = Arc::new(EventFd::new(0, false));
    let timer = Timer::new(Fire::Count(Arc::downgrade(&event)));
    process.fds.insert(Fd {
        file: OpenFile::new(
            Kind::Timer {
                event,
                timer,
                clock,
            },
            // Read-write, as Linux opens it (a write is then EINVAL, not EBADF).
            (flags & TFD_NONBLOCK) as u32 | 2,
        ),
        cloexec: flags & TFD_CLOEXEC != 0,
    })
}

fn timerfd(process: &Process, fd: u64) -> Result<(Arc<Timer>, u64), Errno> {
    let file = process.fds.file(fd)?;
    match &file.kind {
        Kind::Timer { timer, clock, .. } => Ok((Arc::clone(timer), *clock)),
        _ => Err(Errno::EINVAL),
    }
}

/// `timerfd_settime(fd, flags, new, old)`.
pub(crate) fn timerfd_settime(
    process: &mut Process,
    fd: u64,
    flags: u64,
    new: u64,
    old: u64,
) -> SysResult {
    let (timer, clock) = timerfd(process, fd)?;
    if flags & !3 != 0 {
        return Err(Errno::EINVAL);
    }
    let (value, interval) = read_itimerspec(process, new, clock, flags & TIMER_ABSTIME != 0)?;
    let previous = timer.set(value, interval);
    write_itimerspec(process, old, previous)?;
    Ok(0)
}

/// `timerfd_gettime(fd, value)`.
pub(crate) fn timerfd_gettime(process: &mut Process, fd: u64, value: u64) -> SysResult {
    let (timer, _) = timerfd(process, fd)?;
    write_itimerspec(process, value, timer.get())?;
    Ok(0)
}
