//! Making the descriptors threads talk through: `pipe`/`pipe2` (see [`crate::kernel::pipe`])
//! and `eventfd`/`eventfd2` (see [`crate::kernel::eventfd`]).

use super::{Errno, SysResult};
use crate::kernel::eventfd::EventFd;
use crate::kernel::fds::{Fd, Kind, OpenFile};
use crate::kernel::process::Process;

/// `pipe2(fds, flags)`: a pipe's read end and write end at the two lowest free descriptors.
pub(crate) fn pipe(process: &mut Process, fds: u64, flags: u64) -> SysResult {
    const O_NONBLOCK: u64 = 0o4000;
    const O_CLOEXEC: u64 = 0o2000000;
    const O_DIRECT: u64 = 0o40000;
    if flags & !(O_NONBLOCK | O_CLOEXEC | O_DIRECT) != 0 {
        return Err(Errno::EINVAL);
    }
    if flags & O_DIRECT != 0 {
        // Packet mode: each write a message of its own. Not kept apart here.
        return Err(Errno::EINVAL);
    }
    process.check_user(fds, 8, true)?;
    let cloexec = flags & O_CLOEXEC != 0;
    let status = (flags & O_NONBLOCK) as u32;
    let (reader, writer) = crate::kernel::pipe::Pipe::open();
    let read_fd = process.fds.insert(Fd {
        file: OpenFile::new(Kind::Pipe(reader), status),
        cloexec,
    })?;
    let write_fd = match process.fds.insert(Fd {
        file: OpenFile::new(Kind::Pipe(writer), status | 1),
        cloexec,
    }) {
        Ok(fd) => fd,
        Err(errno) => {
            let _ = process.fds.remove(read_fd);
            return Err(errno);
        }
    };
    let mut pair = [0u8; 8];
    pair[..4].copy_from_slice(&(read_fd as u32).to_le_bytes());
    pair[4..].copy_from_slice(&(write_fd as u32).to_le_bytes());
    process.write_user(fds, &pair)?;
    Ok(0)
}

/// `eventfd2(initval, flags)`.
pub(crate) fn eventfd(process: &mut Process, initial: u64, flags: u64) -> SysResult {
    const EFD_SEMAPHORE: u64 = 1;
    const EFD_NONBLOCK: u64 = 0o4000;
    const EFD_CLOEXEC: u64 = 0o2000000;
    if flags & !(EFD_SEMAPHORE | EFD_NONBLOCK | EFD_CLOEXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    let event = EventFd::new(initial & 0xffff_ffff, flags & EFD_SEMAPHORE != 0);
    process.fds.insert(Fd {
        file: OpenFile::new(Kind::Event(event), (flags & EFD_NONBLOCK) as u32 | 2),
        cloexec: flags & EFD_CLOEXEC != 0,
    })
}
