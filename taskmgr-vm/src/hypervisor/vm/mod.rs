//! A domain's virtual machine: one KVM VM per session, its RAM (memory slot 0), the shared
//! kernel pages, the file windows, and a pool of vCPUs that its tasks run on, each task in
//! its own address space (its own page tables: see `kernel/mm.rs`).

pub(crate) mod frames;
pub(crate) mod layout;
pub(crate) mod memory;
pub(crate) mod physical;
pub(crate) mod selftest;
pub(crate) mod shadow;
pub(crate) mod system;
pub(crate) mod windows;

use crate::hypervisor::cpu::{CpuError, Vcpu};
use crate::images::Image;
use crate::kernel::overlay::Root;
use kvm_bindings::{CpuId, kvm_userspace_memory_region};
use kvm_ioctls::{Kvm, VmFd};
use memory::GuestRam;
use physical::Physical;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use system::{SharedPages, SyscallPath};
use thiserror::Error;
use windows::Windows;
use xeno_taskmgr_kit::lock;

/// Memory slot of the RAM.
const RAM_SLOT: u32 = 0;

/// Why a domain's VM could not be made.
#[derive(Debug, Error)]
pub enum VmError {
    /// A KVM ioctl failed.
    #[error("KVM {call} failed: {error}")]
    Kvm {
        /// The ioctl.
        call: &'static str,
        /// What KVM said.
        error: kvm_ioctls::Error,
    },
    /// The host could not map the guest's RAM.
    #[error("cannot map {bytes} bytes of guest RAM: {error}")]
    Ram {
        /// RAM asked for.
        bytes: u64,
        /// Why not.
        error: std::io::Error,
    },
    /// The RAM is too small for the domain's own structures.
    #[error("guest RAM too small for the domain's kernel pages")]
    TooSmall,
    /// Making a vCPU failed.
    #[error(transparent)]
    Cpu(#[from] CpuError),
}

/// A domain's VM.
/// Fields drop in order: vCPUs and windows first, then the VM, then the RAM it maps.
pub struct DomainVm {
    /// vCPUs not running a task, reused by the next (creating one costs about a millisecond).
    idle: Mutex<Vec<Vcpu>>,
    pub(crate) windows: Windows,
    vm: VmFd,
    pub(crate) physical: Physical,
    pub(crate) shared: SharedPages,
    /// How `syscall` reaches the VMM on this host.
    pub(crate) path: SyscallPath,
    cpuid: CpuId,
    next_vcpu_id: Mutex<u64>,
    /// Processes of all the domain's tasks, running or zombie (at most
    /// [`crate::kernel::tree::PROCESSES_MAX`]).
    processes: std::sync::atomic::AtomicUsize,
    /// The root file system image the domain's `/` starts from, if it asked for one.
    pub(crate) image: Option<Arc<Image>>,
    /// The domain's `/` (scratch directory, over the image if any), made by its first task
    /// and shared by all: what the image's files a task deletes stays deleted for the next.
    pub(crate) root: std::sync::OnceLock<Arc<Root>>,
    /// The session's disk allowance (`disk_mb`), bytes; 0 when it asked for none. `statfs`
    /// reports it.
    pub(crate) disk_bytes: u64,
}

impl std::fmt::Debug for DomainVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainVm")
            .field("ram", &self.physical.ram)
            .finish()
    }
}

impl DomainVm {
    /// A VM with `ram_bytes` of RAM and one idle vCPU.
    pub(crate) fn new(
        kvm: &Kvm,
        ram_bytes: u64,
        cpuid: CpuId,
        path: SyscallPath,
        windows_max: usize,
        image: Option<Arc<Image>>,
    ) -> Result<DomainVm, VmError> {
        let vm = kvm.create_vm().map_err(|error| VmError::Kvm {
            call: "KVM_CREATE_VM",
            error,
        })?;
        let ram = GuestRam::new(ram_bytes).map_err(|error| VmError::Ram {
            bytes: ram_bytes,
            error,
        })?;
        let region = kvm_userspace_memory_region {
            slot: RAM_SLOT,
            flags: 0,
            guest_phys_addr: 0,
            memory_size: ram.bytes(),
            userspace_addr: ram.host_base(),
        };
        // SAFETY: the region is the RAM mapping `ram` owns, which lives as long as the VM
        // (both are fields of the DomainVm, and the VM fd is closed before the mapping is
        // unmapped: fields drop in declaration order, `vm` first).
        unsafe { vm.set_user_memory_region(region) }.map_err(|error| VmError::Kvm {
            call: "KVM_SET_USER_MEMORY_REGION",
            error,
        })?;
        let readonly = vm.check_extension(kvm_ioctls::Cap::ReadonlyMem);
        let physical = Physical::new(ram, Instant::now());
        let shadow = shadow::Shadow::new(&vm, region).map_err(|error| VmError::Kvm {
            call: "dup of the VM descriptor",
            error: kvm_ioctls::Error::new(error.raw_os_error().unwrap_or(libc::EBADF)),
        })?;
        physical.attach(shadow);
        let shared = SharedPages::build(&physical, path).ok_or(VmError::TooSmall)?;
        let domain_vm = DomainVm {
            vm,
            physical,
            shared,
            path,
            cpuid,
            idle: Mutex::new(Vec::new()),
            next_vcpu_id: Mutex::new(0),
            processes: std::sync::atomic::AtomicUsize::new(0),
            windows: Windows::new(windows_max, readonly),
            image,
            root: std::sync::OnceLock::new(),
            disk_bytes: 0,
        };
        let first = domain_vm.new_vcpu()?;
        lock(&domain_vm.idle).push(first);
        Ok(domain_vm)
    }

    fn new_vcpu(&self) -> Result<Vcpu, CpuError> {
        let id = {
            let mut next = lock(&self.next_vcpu_id);
            let id = *next;
            *next += 1;
            id
        };
        Vcpu::new(&self.vm, id, &self.cpuid)
    }

    /// An idle vCPU, or a new one.
    pub(crate) fn take_vcpu(&self) -> Result<Vcpu, CpuError> {
        if let Some(vcpu) = lock(&self.idle).pop() {
            return Ok(vcpu);
        }
        self.new_vcpu()
    }

    /// Returns a vCPU whose task has ended.
    pub(crate) fn give_back(&self, vcpu: Vcpu) {
        lock(&self.idle).push(vcpu);
    }

    /// Counts a new process of the domain, unless it holds
    /// [`PROCESSES_MAX`](crate::kernel::tree::PROCESSES_MAX) already.
    pub(crate) fn add_process(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.processes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |count| {
                (count < crate::kernel::tree::PROCESSES_MAX).then_some(count + 1)
            })
            .is_ok()
    }

    /// `count` processes of the domain are gone (reaped, or their task ended).
    pub(crate) fn processes_ended(&self, count: usize) {
        use std::sync::atomic::Ordering;
        let _ = self
            .processes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(count))
            });
    }

    pub(crate) fn vm_fd(&self) -> &VmFd {
        &self.vm
    }
}
