//! Clocks and sleeping. Wall-clock time is the host's; the monotonic clocks count from the
//! domain's creation (so a domain learns nothing of the host's uptime); the CPU-time clocks
//! are the task's own vCPU thread's. Sleeping is interruptible by a stop request.

use super::{Errno, Flow, SysResult};
use crate::kernel::process::Process;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use xeno_taskmgr_kit::metering::thread_cpu_ns;

pub(crate) const NANOS_PER_SECOND: u64 = 1_000_000_000;

fn realtime_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
        })
}

fn monotonic_ns(process: &Process) -> u64 {
    // One second in, as a freshly booted machine would be past its first instant.
    u64::try_from(process.boot.elapsed().as_nanos()).unwrap_or(u64::MAX) + NANOS_PER_SECOND
}

/// The process's CPU time: what its threads were charged (`kernel/cputimers.rs`), or this
/// thread's own CPU time where that is more (it includes what the thread used since its last
/// charge, at most a CPU slice). Never decreasing, as both are not.
pub(crate) fn process_cpu_ns(process: &Process) -> u64 {
    thread_cpu_ns().max(process.shared.cpu.used())
}

pub(crate) fn clock_ns(process: &Process, clock: u64) -> Result<u64, Errno> {
    match clock as u32 as i32 {
        0 | 5 | 8 | 11 => Ok(realtime_ns()), // REALTIME, _COARSE, _ALARM, TAI
        1 | 4 | 6 | 7 | 9 => Ok(monotonic_ns(process)), // MONOTONIC, _RAW, _COARSE, BOOTTIME, _ALARM
        2 | -6 => Ok(process_cpu_ns(process)),          // PROCESS_CPUTIME_ID, and by id
        3 | -2 => Ok(thread_cpu_ns()),                  // THREAD_CPUTIME_ID, and by id
        _ => Err(Errno::EINVAL),
    }
}

fn timespec(ns: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&(ns / NANOS_PER_SECOND).to_le_bytes());
    out[8..].copy_from_slice(&(ns % NANOS_PER_SECOND).to_le_bytes());
    out
}

pub(crate) fn clock_gettime(process: &mut Process, clock: u64, tp: u64) -> SysResult {
    let ns = clock_ns(process, clock)?;
    process.write_user(tp, &timespec(ns))?;
    Ok(0)
}

pub(crate) fn clock_getres(process: &mut Process, clock: u64, tp: u64) -> SysResult {
    clock_ns(process, clock)?;
    if tp != 0 {
        process.write_user(tp, &timespec(1))?;
    }
    Ok(0)
}

pub(crate) fn gettimeofday(process: &mut Process, tv: u64) -> SysResult {
    if tv != 0 {
        let ns = realtime_ns();
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&(ns / NANOS_PER_SECOND).to_le_bytes());
        out[8..].copy_from_slice(&((ns % NANOS_PER_SECOND) / 1000).to_le_bytes());
        process.write_user(tv, &out)?;
    }
    Ok(0)
}

pub(crate) fn time(process: &mut Process, tloc: u64) -> SysResult {
    let seconds = realtime_ns() / NANOS_PER_SECOND;
    if tloc != 0 {
        process.write_u64(tloc, seconds)?;
    }
    Ok(seconds)
}

pub(crate) fn times(process: &mut Process, buf: u64) -> SysResult {
    let ticks =
        thread_cpu_ns() / (NANOS_PER_SECOND / crate::loading::stack::CLOCK_TICKS_PER_SECOND);
    if buf != 0 {
        let mut out = [0u8; 32];
        out[..8].copy_from_slice(&ticks.to_le_bytes());
        process.write_user(buf, &out)?;
    }
    Ok(monotonic_ns(process) / (NANOS_PER_SECOND / crate::loading::stack::CLOCK_TICKS_PER_SECOND))
}

/// `nanosleep(req, rem)` and `clock_nanosleep(clock, flags, req, rem)`.
pub(crate) fn sleep(process: &mut Process, number: u64, a: [u64; 6]) -> Flow {
    let result = (|| -> Result<Duration, Errno> {
        let (clock, flags, request) = if number == 35 {
            (1, 0, a[0])
        } else {
            (a[0], a[1], a[2])
        };
        let raw = process.read_user(request, 16)?;
        let seconds = u64::from_le_bytes(raw[..8].try_into().unwrap_or([0; 8]));
        let nanos = u64::from_le_bytes(raw[8..].try_into().unwrap_or([0; 8]));
        if nanos >= NANOS_PER_SECOND || i64::try_from(seconds).is_err() {
            return Err(Errno::EINVAL);
        }
        let asked = seconds
            .saturating_mul(NANOS_PER_SECOND)
            .saturating_add(nanos);
        if flags & 1 != 0 {
            // TIMER_ABSTIME: until the clock reads `asked`.
            let now = clock_ns(process, clock)?;
            return Ok(Duration::from_nanos(asked.saturating_sub(now)));
        }
        clock_ns(process, clock)?;
        Ok(Duration::from_nanos(asked))
    })();
    let wait = match result {
        Ok(wait) => wait,
        Err(Errno(code)) => return Flow::Return((-i64::from(code)) as u64),
    };
    Flow::Sleep(Instant::now() + wait)
}
