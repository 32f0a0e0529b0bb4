//! Memory calls on the task's own page tables: `mmap` (anonymous, and private copies of
//! files), `munmap`, `mprotect`, `brk`, `mremap`, `madvise`.

use super::{Errno, SysResult};
use crate::hypervisor::vm::layout::{PAGE_SIZE, USER_MIN, USER_SYSTEM_BASE, page_ceil};
use crate::kernel::fds::Kind;
use crate::kernel::mm::{Backing, MmError, PROT_EXEC, PROT_READ, PROT_WRITE};
use crate::kernel::process::Process;
use std::os::unix::fs::FileExt;

const MAP_SHARED: u64 = 0x01;
const MAP_PRIVATE: u64 = 0x02;
const MAP_FIXED: u64 = 0x10;
const MAP_ANONYMOUS: u64 = 0x20;
const MAP_GROWSDOWN: u64 = 0x100;
const MAP_NORESERVE: u64 = 0x4000;
const MAP_FIXED_NOREPLACE: u64 = 0x10_0000;
const MREMAP_MAYMOVE: u64 = 1;
const MREMAP_FIXED: u64 = 2;
const MADV_DONTNEED: u64 = 4;
/// Bytes of a file copied per step when mapping it.
const FILE_COPY_CHUNK: usize = 1 << 20;

impl From<MmError> for Errno {
    fn from(error: MmError) -> Errno {
        match error {
            MmError::NoMemory => Errno::ENOMEM,
            MmError::Invalid => Errno::EINVAL,
            MmError::Access => Errno::EACCES,
            MmError::Fault => Errno::EFAULT,
        }
    }
}

fn check_prot(prot: u64) -> Result<u32, Errno> {
    if prot & !u64::from(PROT_READ | PROT_WRITE | PROT_EXEC) != 0 {
        return Err(Errno::EINVAL);
    }
    Ok(prot as u32)
}

/// Where a new mapping of `len` bytes goes.
fn place(process: &Process, addr: u64, len: u64, flags: u64) -> Result<u64, Errno> {
    if flags & (MAP_FIXED | MAP_FIXED_NOREPLACE) != 0 {
        let end = addr.checked_add(len).ok_or(Errno::ENOMEM)?;
        if !addr.is_multiple_of(PAGE_SIZE) || addr < USER_MIN || end > USER_SYSTEM_BASE {
            return Err(if !addr.is_multiple_of(PAGE_SIZE) {
                Errno::EINVAL
            } else {
                Errno::ENOMEM
            });
        }
        if flags & MAP_FIXED_NOREPLACE != 0 && !process.mm.is_free(addr, end) {
            return Err(Errno::EEXIST);
        }
        return Ok(addr);
    }
    let hint = addr & !(PAGE_SIZE - 1);
    if hint >= USER_MIN
        && hint
            .checked_add(len)
            .is_some_and(|end| end <= USER_SYSTEM_BASE && process.mm.is_free(hint, end))
    {
        return Ok(hint);
    }
    process.mm.find_free(len).ok_or(Errno::ENOMEM)
}

pub(crate) fn mmap(process: &mut Process, a: [u64; 6]) -> SysResult {
    let [addr, len, prot, flags, fd, offset] = a;
    let prot = check_prot(prot)?;
    let kind = flags & 3;
    if len == 0 || !(kind == MAP_SHARED || kind == MAP_PRIVATE || kind == 3) {
        return Err(Errno::EINVAL);
    }
    let len = page_ceil(len)
        .filter(|len| *len < USER_SYSTEM_BASE)
        .ok_or(Errno::ENOMEM)?;
    let start = place(process, addr, len, flags)?;
    let lazy = flags & (MAP_NORESERVE | MAP_GROWSDOWN) != 0;
    let physical = &process.vm.physical;
    if flags & MAP_ANONYMOUS != 0 {
        process
            .mm
            .map_fixed(physical, start, start + len, prot, lazy, Backing::Anonymous)?;
        process.meter_memory();
        return Ok(start);
    }
    if !offset.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    let file = process.fds.file(fd)?;
    let Kind::File(handle) = &file.kind else {
        return Err(match file.kind {
            Kind::Dir { .. } => Errno::ENODEV,
            _ => Errno::EACCES,
        });
    };
    if !file.readable() || (kind != MAP_PRIVATE && prot & PROT_WRITE != 0) {
        // Shared writable mappings would need writes to reach the file: not supported.
        return Err(Errno::EACCES);
    }
    // A private copy: map writable, fill from the file, then set the protection asked for.
    process.mm.map_fixed(
        physical,
        start,
        start + len,
        PROT_READ | PROT_WRITE,
        false,
        Backing::Anonymous,
    )?;
    process.meter_memory();
    let mut chunk = vec![0u8; FILE_COPY_CHUNK];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(FILE_COPY_CHUNK as u64)).unwrap_or(0);
        let got = match handle.read_at(&mut chunk[..want], offset + done) {
            Ok(got) => got,
            Err(error) => {
                let _ = process.mm.unmap(&process.vm.physical, start, start + len);
                return Err(Errno::from_io(&error));
            }
        };
        if got == 0 {
            break;
        }
        process.write_user(start + done, &chunk[..got])?;
        done += got as u64;
    }
    process
        .mm
        .protect(&process.vm.physical, start, start + len, prot)?;
    Ok(start)
}

pub(crate) fn munmap(process: &mut Process, addr: u64, len: u64) -> SysResult {
    if !addr.is_multiple_of(PAGE_SIZE) || len == 0 {
        return Err(Errno::EINVAL);
    }
    let end = page_ceil(len)
        .and_then(|len| addr.checked_add(len))
        .filter(|end| *end <= USER_SYSTEM_BASE)
        .ok_or(Errno::EINVAL)?;
    process.mm.unmap(&process.vm.physical, addr, end)?;
    process.meter_memory();
    Ok(0)
}

pub(crate) fn mprotect(process: &mut Process, addr: u64, len: u64, prot: u64) -> SysResult {
    let prot = check_prot(prot)?;
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    let end = page_ceil(len)
        .and_then(|len| addr.checked_add(len))
        .ok_or(Errno::ENOMEM)?;
    if end > USER_SYSTEM_BASE {
        return Err(Errno::ENOMEM);
    }
    if end == addr {
        return Ok(0);
    }
    process.mm.protect(&process.vm.physical, addr, end, prot)?;
    process.meter_memory();
    Ok(0)
}

pub(crate) fn brk(process: &mut Process, addr: u64) -> SysResult {
    let result = process.mm.brk(&process.vm.physical, addr);
    process.meter_memory();
    Ok(result)
}

pub(crate) fn mremap(process: &mut Process, a: [u64; 6]) -> SysResult {
    let [old, old_len, new_len, flags, _new_addr, _] = a;
    if !old.is_multiple_of(PAGE_SIZE)
        || new_len == 0
        || flags & !(MREMAP_MAYMOVE | MREMAP_FIXED) != 0
    {
        return Err(Errno::EINVAL);
    }
    if flags & MREMAP_FIXED != 0 {
        return Err(Errno::EINVAL);
    }
    let old_len = page_ceil(old_len).ok_or(Errno::EINVAL)?;
    let new_len = page_ceil(new_len)
        .filter(|len| *len < USER_SYSTEM_BASE)
        .ok_or(Errno::ENOMEM)?;
    let moved = process.mm.remap(
        &process.vm.physical,
        old,
        old_len,
        new_len,
        flags & MREMAP_MAYMOVE != 0,
    )?;
    process.meter_memory();
    Ok(moved)
}

pub(crate) fn madvise(process: &mut Process, addr: u64, len: u64, advice: u64) -> SysResult {
    if !addr.is_multiple_of(PAGE_SIZE) {
        return Err(Errno::EINVAL);
    }
    if advice == MADV_DONTNEED {
        let end = page_ceil(len)
            .and_then(|len| addr.checked_add(len))
            .filter(|end| *end <= USER_SYSTEM_BASE)
            .ok_or(Errno::EINVAL)?;
        process.mm.discard(&process.vm.physical, addr, end);
    }
    Ok(0)
}
