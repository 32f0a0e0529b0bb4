//! Reading and writing descriptors: files of the session directory, the task's output
//! streams, its empty stdin. Each call moves at most [`IO_BYTES_MAX`]; a longer request gets a
//! short count, which every program handles (Linux does the same past 2 GiB).

use super::fs::rewind;
use super::{Errno, SysResult};
use crate::hypervisor::fastpath;
use crate::kernel::fds::Kind;
use crate::kernel::process::Process;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;

/// Most bytes one read or write moves: bounds the VMM's buffer per call.
pub(crate) const IO_BYTES_MAX: u64 = 1 << 20;
/// Most iovecs in one readv or writev (Linux's IOV_MAX).
const IOV_MAX: u64 = 1024;
/// Most descriptors in one poll.
const POLL_FDS_MAX: u64 = 1024;

pub(crate) fn read(process: &mut Process, fd: u64, buf: u64, count: u64) -> SysResult {
    let file = process.fds.file(fd)?;
    if !file.readable() {
        return Err(Errno::EBADF);
    }
    let count = count.min(IO_BYTES_MAX);
    process.check_user(buf, count, true)?;
    let mut data = vec![0u8; usize::try_from(count).unwrap_or(0)];
    let got = match &file.kind {
        Kind::Null => 0,
        Kind::Output(_) => return Err(Errno::EBADF),
        Kind::Dir { .. } => return Err(Errno::EISDIR),
        Kind::File(handle) => {
            fastpath::refresh(process, fd, &file);
            match fastpath::window_position(process, fd) {
                Some(position) => {
                    let got = handle
                        .read_at(&mut data, position)
                        .map_err(|e| Errno::from_io(&e))?;
                    fastpath::set_window_position(process, fd, position + got as u64);
                    got
                }
                None => (&*handle).read(&mut data).map_err(|e| Errno::from_io(&e))?,
            }
        }
    };
    process.write_user(buf, &data[..got])?;
    Ok(got as u64)
}

fn write_data(process: &mut Process, fd: u64, data: &[u8]) -> SysResult {
    let file = process.fds.file(fd)?;
    if !file.writable() {
        return Err(Errno::EBADF);
    }
    match &file.kind {
        Kind::Null => Ok(data.len() as u64),
        Kind::Output(stream) => {
            process.output.write(*stream, data);
            Ok(data.len() as u64)
        }
        Kind::Dir { .. } => Err(Errno::EISDIR),
        Kind::File(handle) => (&*handle)
            .write(data)
            .map(|n| n as u64)
            .map_err(|e| Errno::from_io(&e)),
    }
}

pub(crate) fn write(process: &mut Process, fd: u64, buf: u64, count: u64) -> SysResult {
    process.fds.get(fd)?;
    let data = process.read_user(buf, usize::try_from(count.min(IO_BYTES_MAX)).unwrap_or(0))?;
    write_data(process, fd, &data)
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

pub(crate) fn readv(process: &mut Process, fd: u64, iov: u64, count: u64) -> SysResult {
    let vectors = iovecs(process, iov, count)?;
    let mut total = 0u64;
    for (base, len) in vectors {
        if len == 0 {
            continue;
        }
        let got = read(process, fd, base, len.min(IO_BYTES_MAX - total))?;
        total += got;
        if got < len || total >= IO_BYTES_MAX {
            break;
        }
    }
    Ok(total)
}

pub(crate) fn writev(process: &mut Process, fd: u64, iov: u64, count: u64) -> SysResult {
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
    write_data(process, fd, &data)
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
        Kind::Null => Ok(0),
        Kind::Output(_) => Err(Errno::ESPIPE),
    }
}

pub(crate) fn ioctl(process: &mut Process, fd: u64, _request: u64, _arg: u64) -> SysResult {
    // No descriptor is a terminal (TCGETS, TIOCGWINSZ, ...): programs then treat their
    // output as a pipe, which it is.
    process.fds.get(fd)?;
    Err(Errno::ENOTTY)
}

/// Every valid descriptor is ready for what it asks (files and output never block).
fn poll_fds(process: &mut Process, fds: u64, count: u64) -> SysResult {
    if count > POLL_FDS_MAX {
        return Err(Errno::EINVAL);
    }
    let len = usize::try_from(count * 8).unwrap_or(0);
    let mut raw = process.read_user(fds, len)?;
    let mut ready = 0;
    for entry in raw.chunks_exact_mut(8) {
        let fd = i32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]);
        let events = i16::from_le_bytes([entry[4], entry[5]]);
        let revents: i16 = if fd < 0 {
            0
        } else if process.fds.get(fd as u64).is_err() {
            0x20 // POLLNVAL
        } else {
            events & (0x1 | 0x4) // POLLIN | POLLOUT
        };
        if revents != 0 {
            ready += 1;
        }
        entry[6..8].copy_from_slice(&revents.to_le_bytes());
    }
    process.write_user(fds, &raw)?;
    Ok(ready)
}

pub(crate) fn poll(process: &mut Process, fds: u64, count: u64) -> SysResult {
    poll_fds(process, fds, count)
}

pub(crate) fn ppoll(process: &mut Process, fds: u64, count: u64) -> SysResult {
    poll_fds(process, fds, count)
}

pub(crate) fn pselect(_process: &mut Process, nfds: u64) -> SysResult {
    if nfds > 1024 {
        return Err(Errno::EINVAL);
    }
    // Without waiting on anything real, report a timeout: nothing becomes ready later.
    Ok(0)
}
