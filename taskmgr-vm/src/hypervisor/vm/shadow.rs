//! Making KVM forget its shadow page tables, so that frames that held page tables can be
//! used again (`frames.rs` explains why they wait in quarantine until then).
//!
//! KVM keeps a shadow of every guest page table it has walked and trusts it as long as the
//! guest does not write the table; the VMM writes tables from the host, unseen. The only
//! complete forgetting a VMM can ask for is the removal of the memory slot: KVM then drops
//! every shadow page of it. So a flush pauses the domain: every vCPU thread holds
//! [`Shadow::enter`]'s shared guard while it is inside KVM_RUN; the flush kicks them all
//! out, takes the guard alone, removes the RAM slot and puts it back, and lets them go on.
//! They rebuild their translations from their page tables, the truth, as they run.

use kvm_bindings::kvm_userspace_memory_region;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, RwLock, RwLockReadGuard};
use xeno_taskmgr_kit::lock;

/// `KVM_SET_USER_MEMORY_REGION`: `_IOW(KVMIO, 0x46, struct kvm_userspace_memory_region)`.
const KVM_SET_USER_MEMORY_REGION: libc::c_ulong = 0x4020_ae46;

/// A domain's means to flush KVM's shadow page tables.
#[derive(Debug)]
pub(crate) struct Shadow {
    /// The VM (a duplicate of its descriptor, so it lives as long as this does).
    vm: OwnedFd,
    /// The RAM's memory slot, as registered.
    region: kvm_userspace_memory_region,
    /// Shared by vCPU threads inside KVM_RUN, taken alone by a flush.
    running: RwLock<()>,
    /// Host threads running the domain's vCPUs, to kick out of KVM_RUN.
    threads: Mutex<Vec<i32>>,
}

impl Shadow {
    /// For the VM `vm` whose RAM is `region`.
    pub(crate) fn new(
        vm: &kvm_ioctls::VmFd,
        region: kvm_userspace_memory_region,
    ) -> std::io::Result<Shadow> {
        // SAFETY: `vm` is an open VM descriptor, borrowed only for the duplication.
        let vm =
            unsafe { std::os::fd::BorrowedFd::borrow_raw(vm.as_raw_fd()) }.try_clone_to_owned()?;
        Ok(Shadow {
            vm,
            region,
            running: RwLock::new(()),
            threads: Mutex::new(Vec::new()),
        })
    }

    /// Held while a vCPU is inside KVM_RUN.
    pub(crate) fn enter(&self) -> RwLockReadGuard<'_, ()> {
        self.running
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A host thread starts running vCPUs of the domain.
    pub(crate) fn register(&self, os_tid: i32) {
        lock(&self.threads).push(os_tid);
    }

    /// It stops.
    pub(crate) fn deregister(&self, os_tid: i32) {
        lock(&self.threads).retain(|tid| *tid != os_tid);
    }

    /// Makes KVM drop every shadow page table of the RAM. Whether it did.
    pub(crate) fn flush(&self) -> bool {
        for tid in lock(&self.threads).iter() {
            crate::hypervisor::cpu::signal::kick(*tid);
        }
        // Waits for every vCPU inside KVM_RUN to leave (the kick makes them); none enters
        // again until the guard is dropped, the lock preferring a waiting writer.
        let _alone = self
            .running
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let removed = kvm_userspace_memory_region {
            memory_size: 0,
            ..self.region
        };
        // SAFETY: KVM_SET_USER_MEMORY_REGION reads one kvm_userspace_memory_region from the
        // pointer, valid for the call. The slot is registered again with the host mapping it
        // had, which the domain's RAM owns and unmaps only after this struct (and so the VM
        // descriptor it holds) is dropped: `Physical` declares its `shadow` before its `ram`.
        // No vCPU runs meanwhile, so none sees the slot missing.
        let done = unsafe {
            libc::ioctl(self.vm.as_raw_fd(), KVM_SET_USER_MEMORY_REGION, &removed) == 0
                && libc::ioctl(
                    self.vm.as_raw_fd(),
                    KVM_SET_USER_MEMORY_REGION,
                    &self.region,
                ) == 0
        };
        if !done {
            tracing::error!(
                "cannot re-register the domain's RAM: {}",
                std::io::Error::last_os_error()
            );
        }
        done
    }
}
