//! Memory calls on the task's own page tables: `mmap` (anonymous, and private copies of
//! files), `munmap`, `mprotect`, `brk`, `mremap`, `madvise`.

use super::{Errno, SysResult};
use crate::hypervisor::vm::layout::{PAGE_SIZE, USER_MIN, USER_SYSTEM_BASE, page_ceil};
use crate::hypervisor::vm::physical::Physical;
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
        let backing = if kind == MAP_SHARED {
            let id = physical.shared.anonymous().ok_or(Errno::ENOMEM)?;
            Backing::Shared { id, page: 0 }
        } else {
            Backing::Anonymous
        };
        let lazy = lazy && backing == Backing::Anonymous;
        process
            .mm
            .map_fixed(physical, start, start + len, prot, lazy, backing)?;
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
    if !file.readable() || (kind == MAP_SHARED && prot & PROT_WRITE != 0 && !file.writable()) {
        return Err(Errno::EACCES);
    }
    if kind == MAP_SHARED {
        // The file's shared pages, one set for every process that maps it.
        use std::os::unix::fs::MetadataExt;
        let metadata = handle.metadata().map_err(|e| Errno::from_io(&e))?;
        let host = handle.try_clone().map_err(|e| Errno::from_io(&e))?;
        let id = physical
            .shared
            .file(&std::sync::Arc::new(host), (metadata.dev(), metadata.ino()))
            .ok_or(Errno::ENOMEM)?;
        let backing = Backing::Shared {
            id,
            page: offset / PAGE_SIZE,
        };
        process
            .mm
            .map_fixed(physical, start, start + len, prot, false, backing)?;
        process.meter_memory();
        return Ok(start);
    }
    if file.from_image && prot != 0 && prot & PROT_WRITE == 0 {
        return map_image_pages(process, handle, start, len, prot, offset);
    }
    // A private copy, backed with the protection asked for and filled from the file straight
    // into its frames. They are fresh (a freed frame is discarded, which drops every
    // translation of it), so the task holds no translation of them to outlive a lower
    // protection: nothing to migrate (see `Mm::migrate`). With no access at all the pages are
    // backed readable to be filled, then parked, keeping the contents a later `mprotect`
    // shows.
    let backed = if prot == 0 { PROT_READ } else { prot };
    process.mm.map_fixed(
        physical,
        start,
        start + len,
        backed,
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
        if let Err(error) = process
            .mm
            .fill(&process.vm.physical, start + done, &chunk[..got])
        {
            let _ = process.mm.unmap(&process.vm.physical, start, start + len);
            return Err(error.into());
        }
        done += got as u64;
    }
    if prot == 0 {
        process
            .mm
            .protect(&process.vm.physical, start, start + len, 0)?;
    }
    Ok(start)
}

/// A private mapping of an image file that does not allow writing: its pages are the
/// frames every such mapping in the domain shares, read from the file by the first (see
/// `Physical::share_file_page`); pages past the file's end are zero, as in a private copy.
/// The image never changes while the domain runs, so a shared page is always what the file
/// holds.
fn map_image_pages(
    process: &mut Process,
    handle: &std::fs::File,
    start: u64,
    len: u64,
    prot: u32,
    offset: u64,
) -> SysResult {
    use std::os::unix::fs::MetadataExt;
    let metadata = handle.metadata().map_err(|e| Errno::from_io(&e))?;
    let (device, inode, size) = (metadata.dev(), metadata.ino(), metadata.len());
    let physical = &process.vm.physical;
    let mut frames = Vec::with_capacity(usize::try_from(len / PAGE_SIZE).unwrap_or(0));
    let mut at = offset;
    while at < offset.saturating_add(len) {
        let frame = if at >= size {
            physical.alloc()
        } else {
            let mut fill = |gpa: u64| fill_page(physical, handle, at, gpa);
            physical.share_file_page((device, inode, at / PAGE_SIZE), &mut fill)
        };
        let Some(frame) = frame else {
            physical.free(&mut frames);
            return Err(Errno::ENOMEM);
        };
        frames.push(frame);
        at += PAGE_SIZE;
    }
    process
        .mm
        .map_shared_frames(physical, start, start + len, prot, frames)?;
    process.meter_memory();
    Ok(start)
}

/// Reads the page of `file` at `offset` (to its end, if short) into the zeroed frame `gpa`.
fn fill_page(physical: &Physical, file: &std::fs::File, offset: u64, gpa: u64) -> bool {
    let mut page = [0u8; PAGE_SIZE as usize];
    let mut got = 0;
    while got < page.len() {
        match file.read_at(&mut page[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(read) => got += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    physical.ram.write(gpa, &page[..got])
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
        process.mm.discard(&process.vm.physical, addr, end)?;
        process.meter_memory();
    }
    Ok(0)
}

/// `msync(addr, len, flags)`: writes the file pages of shared mappings in the range back to
/// their files (at once, whatever `MS_ASYNC` or `MS_SYNC` asks).
pub(crate) fn msync(process: &mut Process, addr: u64, len: u64, flags: u64) -> SysResult {
    const MS_ASYNC: u64 = 1;
    const MS_INVALIDATE: u64 = 2;
    const MS_SYNC: u64 = 4;
    if !addr.is_multiple_of(PAGE_SIZE)
        || flags & !(MS_ASYNC | MS_INVALIDATE | MS_SYNC) != 0
        || flags & (MS_ASYNC | MS_SYNC) == (MS_ASYNC | MS_SYNC)
    {
        return Err(Errno::EINVAL);
    }
    let end = page_ceil(len)
        .and_then(|len| addr.checked_add(len))
        .filter(|end| *end <= USER_SYSTEM_BASE)
        .ok_or(Errno::ENOMEM)?;
    if len == 0 {
        return Ok(0);
    }
    let physical = &process.vm.physical;
    for (id, first, last) in process.mm.shared_in(addr, end) {
        physical.shared.sync(physical, id, first, last);
    }
    Ok(0)
}
