//! File windows: a file of the session directory mapped read-only into the domain's
//! guest-physical space as a memory slot of its own, so that the trampoline can serve reads
//! of it without an exit (`fastpath.rs`). The host mapping is the file's page cache
//! (MAP_SHARED, PROT_READ); KVM maps it into the guest read-only. The VMM itself never reads
//! through a window (guest pointers into one are not RAM, so `EFAULT` for the VMM's copies).
//!
//! Each domain has at most `max` windows (memory slots are a bounded KVM resource and each
//! costs a slot update, about what one exit costs); files opened beyond that are simply read
//! through the VMM.

use super::layout::{PAGE_SIZE, WINDOW_GPA_BASE, WINDOW_GPA_BYTES, page_ceil};
use kvm_bindings::{KVM_MEM_READONLY, kvm_userspace_memory_region};
use kvm_ioctls::VmFd;
use std::sync::Mutex;
use vm_memory::{FileOffset, MmapRegion};
use xeno_taskmgr_kit::lock;

/// First memory slot used for windows (slot 0 is RAM).
const FIRST_SLOT: u32 = 1;

/// One open window.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) slot: u32,
    pub(crate) gpa: u64,
    /// Bytes mapped (the file's size rounded up to a page).
    pub(crate) len: u64,
    /// The host mapping KVM reads; unmapped when the window is dropped, after its slot is
    /// deleted.
    region: MmapRegion<()>,
}

#[derive(Debug)]
struct Inner {
    /// Slots in use.
    used: Vec<bool>,
    /// Free guest-physical ranges (start, length), kept sorted.
    free: Vec<(u64, u64)>,
}

/// A domain's windows.
#[derive(Debug)]
pub(crate) struct Windows {
    readonly: bool,
    inner: Mutex<Inner>,
}

impl Windows {
    pub(crate) fn new(max: usize, readonly: bool) -> Windows {
        Windows {
            readonly,
            inner: Mutex::new(Inner {
                used: vec![false; max],
                free: vec![(WINDOW_GPA_BASE, WINDOW_GPA_BYTES)],
            }),
        }
    }

    /// Maps `size` bytes of `file` into the guest, or `None` if no slot or space is left or
    /// the host refuses (the caller then reads through the VMM).
    pub(crate) fn open(&self, vm: &VmFd, file: &std::fs::File, size: u64) -> Option<Window> {
        let len = page_ceil(size)?;
        if len == 0 {
            return None;
        }
        let (slot, gpa) = {
            let mut inner = lock(&self.inner);
            let index = inner.used.iter().position(|used| !used)?;
            let at = inner.free.iter().position(|(_, free)| *free >= len)?;
            let (start, free) = inner.free[at];
            if free == len {
                inner.free.remove(at);
            } else {
                inner.free[at] = (start + len, free - len);
            }
            inner.used[index] = true;
            (FIRST_SLOT + u32::try_from(index).ok()?, start)
        };
        let mapped = file.try_clone().ok().and_then(|clone| {
            MmapRegion::build(
                Some(FileOffset::new(clone, 0)),
                usize::try_from(len).ok()?,
                libc::PROT_READ,
                libc::MAP_SHARED,
            )
            .ok()
        });
        let Some(region) = mapped else {
            self.give_back(slot, gpa, len);
            return None;
        };
        let memory = kvm_userspace_memory_region {
            slot,
            flags: if self.readonly { KVM_MEM_READONLY } else { 0 },
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the slot maps `region`, a read-only shared mapping of the file that the
        // returned Window owns; `close` deletes the slot before the Window (and so the
        // mapping) is dropped. KVM can only read it (read-only slot and read-only host pages).
        if let Err(error) = unsafe { vm.set_user_memory_region(memory) } {
            tracing::debug!("cannot add a file window: {error}");
            self.give_back(slot, gpa, len);
            return None;
        }
        Some(Window {
            slot,
            gpa,
            len,
            region,
        })
    }

    /// Deletes the window's slot, then unmaps it.
    pub(crate) fn close(&self, vm: &VmFd, window: Window) {
        let memory = kvm_userspace_memory_region {
            slot: window.slot,
            flags: 0,
            guest_phys_addr: window.gpa,
            memory_size: 0,
            userspace_addr: window.region.as_ptr() as u64,
        };
        // SAFETY: deleting a slot (size 0) this struct added; afterwards KVM no longer
        // references the mapping, which is dropped below.
        if let Err(error) = unsafe { vm.set_user_memory_region(memory) } {
            // The slot stays (and so must the mapping): leak both rather than let KVM read
            // unmapped memory.
            tracing::error!("cannot delete a file window's memory slot: {error}");
            std::mem::forget(window);
            return;
        }
        self.give_back(window.slot, window.gpa, window.len);
        drop(window);
    }

    fn give_back(&self, slot: u32, gpa: u64, len: u64) {
        let mut inner = lock(&self.inner);
        if let Some(used) = usize::try_from(slot - FIRST_SLOT)
            .ok()
            .and_then(|i| inner.used.get_mut(i))
        {
            *used = false;
        }
        let at = inner.free.partition_point(|(start, _)| *start < gpa);
        inner.free.insert(at, (gpa, len));
        // Merge neighbours.
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(inner.free.len());
        for (start, length) in inner.free.drain(..) {
            match merged.last_mut() {
                Some((previous, previous_len)) if *previous + *previous_len == start => {
                    *previous_len += length;
                }
                _ => merged.push((start, length)),
            }
        }
        inner.free = merged;
    }
}

const _: () = assert!(WINDOW_GPA_BASE.is_multiple_of(PAGE_SIZE));
