//! Reading and writing descriptors: files of the session directory, the task's output
//! streams, its empty stdin, pipes, eventfds and devices. Pipe and eventfd calls wait as
//! Linux's do (or fail with `EAGAIN` under `O_NONBLOCK`). Each call moves at most [`IO_BYTES_MAX`]; a longer request gets a
//! short count, which every program handles (Linux does the same past 2 GiB).

use super::fs::rewind;
use super::signal::{self, SIGPIPE};
use super::{Errno, SysResult};
use crate::hypervisor::fastpath;
use crate::kernel::fds::{Kind, OpenFile};
use crate::kernel::pipe::{PipeEnd, ReadOutcome, WriteOutcome};
use crate::kernel::process::{Process, Waiter};
use crate::kernel::wait::{Blocked, Io, IoResult};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::sync::Arc;

/// Most bytes one read or write moves: bounds the VMM's buffer per call.
pub(crate) const IO_BYTES_MAX: u64 = 1 << 20;
/// Most iovecs in one readv or writev (Linux's IOV_MAX).
const IOV_MAX: u64 = 1024;

/// `O_NONBLOCK`: waits are `EAGAIN` instead.
const O_NONBLOCK: u32 = 0o4000;
/// `ioctl` request: bytes waiting to be read (a pipe's).
const FIONREAD: u64 = 0x541b;

/// The waiter a blocking call on `file` queues, or `None` when the file is non-blocking.
fn waiter_for(process: &Process, file: &OpenFile) -> Option<Arc<Waiter>> {
    if file.flags() & O_NONBLOCK != 0 {
        None
    } else {
        process.io_waiter()
    }
}

/// Wait (having queued `waiter`) with `progress` done, or `EAGAIN` without a waiter.
fn wait_or_again(waiter: Option<Arc<Waiter>>, progress: u64) -> IoResult {
    match waiter {
        Some(_) => Ok(Io::Wait(Blocked {
            until: None,
            progress,
        })),
        None => Err(Errno::EAGAIN),
    }
}

pub(crate) fn read(process: &mut Process, fd: u64, buf: u64, count: u64) -> IoResult {
    let file = process.fds.file(fd)?;
    if !file.readable() {
        return Err(Errno::EBADF);
    }
    let count = count.min(IO_BYTES_MAX);
    process.check_user(buf, count, true)?;
    let size = usize::try_from(count).unwrap_or(0);
    let data = match &file.kind {
        Kind::Device(device) => device.read(size)?,
        Kind::Output(_) => return Err(Errno::EBADF),
        Kind::Dir { .. } => return Err(Errno::EISDIR),
        Kind::Epoll(_) => return Err(Errno::EINVAL),
        Kind::Pipe(end) => {
            let waiter = waiter_for(process, &file);
            match end.pipe.read(size, waiter.as_ref()) {
                ReadOutcome::Data(data) => data,
                ReadOutcome::Empty => return wait_or_again(waiter, 0),
            }
        }
        Kind::Event(_) | Kind::Timer { .. } => {
            if count < 8 {
                return Err(Errno::EINVAL);
            }
            let event = match &file.kind {
                Kind::Timer { event, .. } => event,
                Kind::Event(event) => event,
                _ => return Err(Errno::EBADF),
            };
            let waiter = waiter_for(process, &file);
            match event.take(waiter.as_ref()) {
                Some(value) => value.to_le_bytes().to_vec(),
                None => return wait_or_again(waiter, 0),
            }
        }
        Kind::File(handle) => {
            let mut data = vec![0u8; size];
            fastpath::refresh(process, fd, &file);
            let got = match fastpath::window_position(process, fd) {
                Some(position) => {
                    let got = handle
                        .read_at(&mut data, position)
                        .map_err(|e| Errno::from_io(&e))?;
                    fastpath::set_window_position(process, fd, position + got as u64);
                    got
                }
                None => {
                    let got = (&*handle).read(&mut data).map_err(|e| Errno::from_io(&e))?;
                    fastpath::note_read(process, fd, &file);
                    got
                }
            };
            data.truncate(got);
            data
        }
    };
    process.write_user(buf, &data)?;
    Ok(Io::Done(data.len() as u64))
}

/// Writes `data` to `fd`, of which the first `progress` bytes were written before this call
/// last waited (only a pipe write waits part way).
fn write_data(process: &mut Process, fd: u64, data: &[u8], progress: u64) -> IoResult {
    let file = process.fds.file(fd)?;
    if !file.writable() {
        return Err(Errno::EBADF);
    }
    let written = match &file.kind {
        Kind::Device(device) => device.write(data.len())? as u64,
        Kind::Output(stream) => {
            process.output.write(*stream, data);
            data.len() as u64
        }
        Kind::Dir { .. } => return Err(Errno::EISDIR),
        Kind::Timer { .. } | Kind::Epoll(_) => return Err(Errno::EINVAL),
        Kind::Event(event) => {
            let value = data
                .get(..8)
                .and_then(|bytes| bytes.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or(Errno::EINVAL)?;
            if value == u64::MAX {
                return Err(Errno::EINVAL);
            }
            let waiter = waiter_for(process, &file);
            if !event.add(value, waiter.as_ref()) {
                return wait_or_again(waiter, 0);
            }
            8
        }
        Kind::Pipe(end) => return write_pipe(process, &file, end, data, progress),
        Kind::File(handle) => (&*handle)
            .write(data)
            .map(|n| n as u64)
            .map_err(|e| Errno::from_io(&e))?,
    };
    Ok(Io::Done(written))
}

/// A pipe write: all of `data` (from `progress` on), waiting for room as often as need be;
/// `EPIPE` and `SIGPIPE` once no reader is left.
fn write_pipe(
    process: &mut Process,
    file: &OpenFile,
    end: &PipeEnd,
    data: &[u8],
    mut progress: u64,
) -> IoResult {
    if !end.write {
        return Err(Errno::EBADF);
    }
    let waiter = waiter_for(process, file);
    loop {
        let rest = data
            .get(usize::try_from(progress).unwrap_or(usize::MAX)..)
            .unwrap_or(&[]);
        if rest.is_empty() {
            return Ok(Io::Done(progress));
        }
        match end.pipe.write(rest, waiter.as_ref()) {
            WriteOutcome::Wrote(count) => progress += count as u64,
            WriteOutcome::Full if waiter.is_none() && progress > 0 => {
                return Ok(Io::Done(progress));
            }
            WriteOutcome::Full => return wait_or_again(waiter, progress),
            WriteOutcome::Broken => {
                signal::raise(process, SIGPIPE, 0);
                return if progress > 0 {
                    Ok(Io::Done(progress))
                } else {
                    Err(Errno::EPIPE)
                };
            }
        }
    }
}

/// What the call being run again had written before it waited.
fn progress(process: &Process) -> u64 {
    process.resume.map_or(0, |resume| resume.progress)
}

pub(crate) fn write(process: &mut Process, fd: u64, buf: u64, count: u64) -> IoResult {
    process.fds.get(fd)?;
    let data = process.read_user(buf, usize::try_from(count.min(IO_BYTES_MAX)).unwrap_or(0))?;
    let progress = progress(process);
    write_data(process, fd, &data, progress)
}

pub(crate) fn pread(
    process: &mut Process,
    fd: u64,
    buf: u64,
    count: u64,
    offset: u64,
) -> SysResult {
    let file = process.fds.file(fd)?;
    if i64::try_from(offset).is_err() {
        return Err(Errno::EINVAL);
    }
    let Kind::File(handle) = &file.kind else {
        return Err(Errno::ESPIPE);
    };
    if !file.readable() {
        return Err(Errno::EBADF);
    }
    fastpath::refresh(process, fd, &file);
    let count = count.min(IO_BYTES_MAX);
    process.check_user(buf, count, true)?;
    let mut data = vec![0u8; usize::try_from(count).unwrap_or(0)];
    let got = handle
        .read_at(&mut data, offset)
        .map_err(|e| Errno::from_io(&e))?;
    process.write_user(buf, &data[..got])?;
    if fastpath::window_position(process, fd).is_none() {
        fastpath::note_read(process, fd, &file);
    }
    Ok(got as u64)
}

pub(crate) fn pwrite(
    process: &mut Process,
    fd: u64,
    buf: u64,
    count: u64,
    offset: u64,
) -> SysResult {
    let file = process.fds.file(fd)?;
    if i64::try_from(offset).is_err() {
        return Err(Errno::EINVAL);
    }
    let Kind::File(handle) = &file.kind else {
        return Err(Errno::ESPIPE);
    };
    if !file.writable() {
        return Err(Errno::EBADF);
    }
    let data = process.read_user(buf, usize::try_from(count.min(IO_BYTES_MAX)).unwrap_or(0))?;
    handle
        .write_at(&data, offset)
        .map(|n| n as u64)
        .map_err(|e| Errno::from_io(&e))
}

/// The (base, length) pairs of an iovec array.
fn iovecs(process: &mut Process, iov: u64, count: u64) -> Result<Vec<(u64, u64)>, Errno> {
    if count > IOV_MAX {
        return Err(Errno::EINVAL);
    }
    let raw = process.read_user(iov, usize::try_from(count * 16).unwrap_or(0))?;
    Ok(raw
        .chunks_exact(16)
        .map(|pair| {
            let word =
                |at: usize| u64::from_le_bytes(pair[at..at + 8].try_into().unwrap_or([0; 8]));
            (word(0), word(8))
        })
        .collect())
}

pub(crate) fn readv(process: &mut Process, fd: u64, iov: u64, count: u64) -> IoResult {
    let vectors = iovecs(process, iov, count)?;
    let mut total = 0u64;
    for (base, len) in vectors {
        if len == 0 {
            continue;
        }
        let got = match read(process, fd, base, len.min(IO_BYTES_MAX - total))? {
            Io::Done(got) => got,
            // Only the first buffer waits; after data, the call returns what it has.
            Io::Wait(blocked) if total == 0 => return Ok(Io::Wait(blocked)),
            Io::Wait(_) => break,
        };
        total += got;
        if got < len || total >= IO_BYTES_MAX {
            break;
        }
    }
    Ok(Io::Done(total))
}

pub(crate) fn writev(process: &mut Process, fd: u64, iov: u64, count: u64) -> IoResult {
    process.fds.get(fd)?;
    let vectors = iovecs(process, iov, count)?;
    // Gathered into one write, so that one writev is one chunk of output.
    let mut data = Vec::new();
    for (base, len) in vectors {
        let room = IO_BYTES_MAX - data.len() as u64;
        if room == 0 {
            break;
        }
        let take = usize::try_from(len.min(room)).unwrap_or(0);
        data.extend_from_slice(&process.read_user(base, take)?);
    }
    let progress = progress(process);
    write_data(process, fd, &data, progress)
}

pub(crate) fn lseek(process: &mut Process, fd: u64, offset: u64, whence: u64) -> SysResult {
    let file = process.fds.file(fd)?;
    let offset = offset as i64;
    match &file.kind {
        Kind::File(handle) => {
            if let Some(position) = fastpath::window_position(process, fd) {
                let size = handle.metadata().map_err(|e| Errno::from_io(&e))?.len();
                let base = match whence {
                    0 => 0,
                    1 => position as i64,
                    2 => size as i64,
                    _ => return Err(Errno::EINVAL),
                };
                let target = base
                    .checked_add(offset)
                    .filter(|t| *t >= 0)
                    .ok_or(Errno::EINVAL)?;
                fastpath::set_window_position(process, fd, target as u64);
                return Ok(target as u64);
            }
            let from = match whence {
                0 => SeekFrom::Start(u64::try_from(offset).map_err(|_| Errno::EINVAL)?),
                1 => SeekFrom::Current(offset),
                2 => SeekFrom::End(offset),
                _ => return Err(Errno::EINVAL),
            };
            (&*handle).seek(from).map_err(|e| Errno::from_io(&e))
        }
        Kind::Dir { listing, .. } => {
            if whence == 0 && offset == 0 {
                rewind(listing);
                Ok(0)
            } else {
                Err(Errno::EINVAL)
            }
        }
        Kind::Device(_) => Ok(0),
        Kind::Output(_) | Kind::Pipe(_) | Kind::Event(_) | Kind::Timer { .. } | Kind::Epoll(_) => {
            Err(Errno::ESPIPE)
        }
    }
}

pub(crate) fn ioctl(process: &mut Process, fd: u64, request: u64, arg: u64) -> SysResult {
    let file = process.fds.file(fd)?;
    if let (Kind::Pipe(end), FIONREAD) = (&file.kind, request) {
        let queued = u32::try_from(end.pipe.queued()).unwrap_or(u32::MAX);
        process.write_user(arg, &queued.to_le_bytes())?;
        return Ok(0);
    }
    // No descriptor is a terminal (TCGETS, TIOCGWINSZ, ...): programs then treat their
    // output as a pipe, which it is.
    Err(Errno::ENOTTY)
}
