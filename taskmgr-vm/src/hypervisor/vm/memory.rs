//! A domain's guest RAM: one anonymous host mapping, registered with KVM as memory slot 0 at
//! guest-physical 0. Every access the VMM makes goes through vm-memory's bounds-checked
//! `Bytes` interface, so no guest-controlled address can reach host memory outside the
//! mapping: an address past the end is an error, never a read or a write.

use super::layout::PAGE_SIZE;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// A domain's RAM.
pub(crate) struct GuestRam {
    memory: GuestMemoryMmap<()>,
    bytes: u64,
}

impl std::fmt::Debug for GuestRam {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestRam")
            .field("bytes", &self.bytes)
            .finish()
    }
}

impl GuestRam {
    /// Maps `bytes` of zeroed RAM (reserved lazily by the host: untouched pages cost nothing).
    pub(crate) fn new(bytes: u64) -> std::io::Result<GuestRam> {
        let size = usize::try_from(bytes).map_err(|_| std::io::ErrorKind::InvalidInput)?;
        let memory = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size)])
            .map_err(std::io::Error::other)?;
        Ok(GuestRam { memory, bytes })
    }

    /// RAM size in bytes.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The host address of guest-physical 0, for registering the memory slot.
    pub(crate) fn host_base(&self) -> u64 {
        self.memory
            .iter()
            .next()
            .map_or(0, |region| region.as_ptr() as u64)
    }

    /// Copies the page at `from` to the page at `to` (both page-aligned, inside RAM) in one
    /// bounds-checked volatile copy; false if either is outside.
    pub(crate) fn copy_page(&self, from: u64, to: u64) -> bool {
        let len = PAGE_SIZE as usize;
        let (Ok(source), Ok(target)) = (
            self.memory.get_slice(GuestAddress(from), len),
            self.memory.get_slice(GuestAddress(to), len),
        ) else {
            return false;
        };
        source.copy_to_volatile_slice(target);
        true
    }

    /// Reads the little-endian u64 at `gpa`, or `None` outside RAM.
    pub(crate) fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.memory.read_obj::<u64>(GuestAddress(gpa)).ok()
    }

    /// Writes a u64 at `gpa`; false outside RAM.
    pub(crate) fn write_u64(&self, gpa: u64, value: u64) -> bool {
        self.memory.write_obj(value, GuestAddress(gpa)).is_ok()
    }

    /// Fills `buf` from `gpa`; false (and nothing promised about `buf`) if any of it is outside.
    pub(crate) fn read(&self, gpa: u64, buf: &mut [u8]) -> bool {
        self.memory.read_slice(buf, GuestAddress(gpa)).is_ok()
    }

    /// Writes `data` at `gpa`; false (writing nothing) if any of it is outside RAM.
    pub(crate) fn write(&self, gpa: u64, data: &[u8]) -> bool {
        let end = gpa.checked_add(data.len() as u64);
        if end.is_none_or(|end| end > self.bytes) {
            return false;
        }
        self.memory.write_slice(data, GuestAddress(gpa)).is_ok()
    }

    /// Makes KVM drop every translation it holds of the pages `[gpa, gpa + len)`, keeping
    /// their contents: the host mapping is made read-only and writable again, and KVM,
    /// told of each change of the host's page tables, zaps its shadow entries for them (a
    /// vCPU that reaches them again faults them back in from the guest's tables). False if
    /// the range is not page-aligned inside RAM or the host refused.
    pub(crate) fn invalidate(&self, gpa: u64, len: u64) -> bool {
        let inside = gpa.checked_add(len).is_some_and(|end| {
            end <= self.bytes && gpa.is_multiple_of(PAGE_SIZE) && len.is_multiple_of(PAGE_SIZE)
        });
        let (true, Ok(host), Ok(len)) = (
            inside,
            self.memory.get_host_address(GuestAddress(gpa)),
            usize::try_from(len),
        ) else {
            return false;
        };
        // SAFETY: `[host, host + len)` lies inside the RAM mapping this struct owns (checked
        // above). Between the two calls the pages are read-only to the host: the caller
        // passes only pages that nothing writes meanwhile (copy-on-write frames, read-only in
        // every guest table that maps them and never written by the VMM, while a hold keeps
        // any address space from making them writable), so no write can fault.
        unsafe {
            libc::mprotect(host.cast(), len, libc::PROT_READ) == 0
                && libc::mprotect(host.cast(), len, libc::PROT_READ | libc::PROT_WRITE) == 0
        }
    }

    /// Gives the pages `[gpa, gpa + len)` back to the host: they read as zero afterwards and
    /// hold no host memory until touched again. Page-aligned ranges inside RAM only.
    pub(crate) fn discard(&self, gpa: u64, len: u64) {
        let inside = gpa.checked_add(len).is_some_and(|end| {
            end <= self.bytes && gpa.is_multiple_of(PAGE_SIZE) && len.is_multiple_of(PAGE_SIZE)
        });
        assert!(inside, "discard of {len:#x} bytes at {gpa:#x} outside RAM");
        let Ok(host) = self.memory.get_host_address(GuestAddress(gpa)) else {
            return;
        };
        let Ok(len) = usize::try_from(len) else {
            return;
        };
        // SAFETY: `[host, host + len)` lies inside the RAM mapping this struct owns (checked
        // above); MADV_DONTNEED on a private anonymous mapping only replaces its contents with
        // zero pages, which is what freeing these guest frames means. No Rust reference into
        // guest RAM exists (all access is by copy through vm-memory).
        let result = unsafe { libc::madvise(host.cast(), len, libc::MADV_DONTNEED) };
        if result != 0 {
            // Cannot happen for a valid anonymous range; zero by hand so the invariant holds.
            tracing::warn!(
                "madvise(MADV_DONTNEED) failed: {}",
                std::io::Error::last_os_error()
            );
            let zeros = [0u8; PAGE_SIZE as usize];
            let mut at = gpa;
            while at < gpa + len as u64 {
                self.write(at, &zeros);
                at += PAGE_SIZE;
            }
        }
    }
}
