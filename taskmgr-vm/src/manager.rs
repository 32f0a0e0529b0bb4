//! [`VmBackend`]: what the Linux task manager adds to the kit's [`Host`]: KVM, the CPU model
//! and system-call path its self-test chose, and a VM per domain. The rules every task manager
//! shares live in `xeno_taskmgr_kit`.

use crate::config::VmConfig;
use crate::error::{Error, StartError};
use crate::hypervisor::cpu::{self, signal};
use crate::hypervisor::vm::system::SyscallPath;
use crate::hypervisor::vm::{DomainVm, selftest};
use crate::images::{self, Image};
use crate::kernel::control::TaskControl;
use crate::kernel::rate::{CpuGate, CpuLimits};
use crate::kind;
use kvm_bindings::CpuId;
use kvm_ioctls::Kvm;
use std::sync::Arc;
use std::time::Instant;
use xeno_schemas::documents::Program;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::{
    Backend, Capabilities, Deployment, DomainSettings, Host, HostLimits, Resources,
};

/// The `EnvType` this task manager serves.
pub const ENV_TYPE: &str = "Linux";
const MIB: u64 = 1024 * 1024;
/// The least guest RAM a domain may have: its own pages (tables, descriptor tables, stacks)
/// need a few MiB.
const MEMORY_MB_MIN: u64 = 4;

/// The Linux task manager: the kit's host over [`VmBackend`]. Cheap to clone (clones share
/// everything); implements the plugin interface's
/// [`TaskManager`](xeno_taskmgr_kit::TaskManager) trait. [`VmTaskManager::new`] opens
/// `/dev/kvm`, runs the system call self-test (which finds how `syscall` reaches the VMM on
/// this host: see `hypervisor/vm/selftest.rs`), and is ready for domains; it is callable from inside a tokio
/// runtime (tasks run on threads of their own, one vCPU thread each).
pub type VmTaskManager = Host<VmBackend>;

/// KVM behind the kit.
pub struct VmBackend {
    pub(crate) config: VmConfig,
    pub(crate) kvm: Arc<Kvm>,
    pub(crate) cpuid: CpuId,
    /// How system calls reach the VMM on this host (found by the self-test).
    pub(crate) path: SyscallPath,
    /// The root file system images offered, opened at start.
    pub(crate) images: Vec<Arc<Image>>,
}

impl VmBackend {
    /// How system calls reach the VMM on this host, as the start-up self-test found.
    pub fn syscall_path(&self) -> SyscallPath {
        self.path
    }

    /// The image the session's requirements ask for (`EnvImage`), if any; one this task
    /// manager does not offer is refused, naming the ones it does.
    fn image_for(&self, requirements_xml: &str) -> Result<Option<Arc<Image>>, Error> {
        let Some(name) = kind::image_requested(requirements_xml)? else {
            return Ok(None);
        };
        match self.images.iter().find(|image| image.name == name) {
            Some(image) => Ok(Some(Arc::clone(image))),
            None => {
                let offered: Vec<&str> = self.images.iter().map(|i| i.name.as_str()).collect();
                Err(Error::Unsupported(format!(
                    "EnvImage {name:?} is not offered here (images: {})",
                    if offered.is_empty() {
                        "none".to_owned()
                    } else {
                        offered.join(", ")
                    }
                )))
            }
        }
    }
}

impl Resources for DomainVm {
    fn memory(&self, until: Instant) -> (u64, u64) {
        self.physical.meter(until)
    }
}

impl Backend for VmBackend {
    type Config = VmConfig;
    type StartError = StartError;
    type Resources = DomainVm;
    type Control = TaskControl;
    type Gate = CpuGate;
    const ENV_TYPE: &'static str = ENV_TYPE;
    const SCRATCH_PREFIX: &'static str = "xeno-vm-";

    fn start(config: VmConfig) -> Result<Self, StartError> {
        config.validate()?;
        let kvm = Kvm::new()
            .map_err(|error| StartError::Kvm(format!("cannot open /dev/kvm: {error}")))?;
        for (cap, name) in [
            (kvm_ioctls::Cap::SyncRegs, "KVM_CAP_SYNC_REGS"),
            (kvm_ioctls::Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(StartError::Kvm(format!("{name} is missing")));
            }
        }
        let cpuid =
            cpu::supported_cpuid(&kvm).map_err(|error| StartError::Kvm(error.to_string()))?;
        signal::install();
        let path = selftest::run(&kvm, &cpuid).map_err(StartError::SelfTest)?;
        tracing::info!(?path, "system call path chosen by the self-test");
        let mut images = Vec::new();
        for entry in &config.images {
            let image = images::open(&config.images_dir, entry)?;
            tracing::info!(
                name = %image.name,
                digest = %image.digest,
                entries = image.entries,
                bytes = image.bytes,
                "root file system image offered"
            );
            images.push(Arc::new(image));
        }
        Ok(VmBackend {
            config,
            kvm: Arc::new(kvm),
            cpuid,
            path,
            images,
        })
    }

    fn config(&self) -> &VmConfig {
        &self.config
    }

    fn limits(&self) -> HostLimits {
        xeno_taskmgr_kit::host_limits!(self.config)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: env!("CARGO_PKG_NAME").to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            program_kinds: vec!["Executable".to_owned(), "ExecutablePath".to_owned()],
            reports_fuel: false,
            system_calls: crate::kernel::syscalls::table::capability_rows(),
            images: self
                .images
                .iter()
                .map(|image| pb::Image {
                    name: image.name.clone(),
                    digest: image.digest.clone(),
                    bytes: image.bytes,
                })
                .collect(),
            processes_max: crate::kernel::tree::PROCESSES_MAX as u32,
        }
    }

    fn versions(&self) -> Vec<String> {
        self.config.versions.clone()
    }

    fn memory_bytes(&self, memory_mb: u64) -> Result<u64, Error> {
        let config = &self.config;
        let memory_mb = if memory_mb == 0 {
            config.memory_mb_default
        } else {
            memory_mb
        };
        if memory_mb > config.memory_mb_max || memory_mb < MEMORY_MB_MIN {
            return Err(Error::Invalid(format!(
                "memory_mb {memory_mb} is outside what a domain may have here ({MEMORY_MB_MIN} to {} MB)",
                config.memory_mb_max
            )));
        }
        Ok(memory_mb * MIB)
    }

    fn check_domain(&self, request: &pb::CreateDomainRequest) -> Result<(), Error> {
        kind::check_supported(kind::requested(&request.requirements_xml)?)?;
        self.image_for(&request.requirements_xml).map(|_| ())
    }

    fn cpu_gate(limits: CpuLimits, window_ms: u64, now: Instant) -> Option<CpuGate> {
        CpuGate::new(limits, window_ms, now)
    }

    async fn create_resources(
        &self,
        settings: &DomainSettings,
        limits: &pb::DomainLimits,
    ) -> Result<DomainVm, Error> {
        // Built on a blocking thread: creating a VM and its first vCPU takes a millisecond or
        // two of ioctls.
        let kvm = Arc::clone(&self.kvm);
        let cpuid = self.cpuid.clone();
        let path = self.path;
        let windows = self.config.windows_per_domain_max;
        let memory_bytes = settings.memory_bytes;
        let image = self.image_for(&settings.requirements_xml)?;
        let disk_bytes = limits.disk_mb.saturating_mul(MIB);
        tokio::task::spawn_blocking(move || {
            let mut vm = DomainVm::new(&kvm, memory_bytes, cpuid, path, windows, image).map_err(
                |error| Error::Exhausted(format!("cannot create the domain's VM: {error}")),
            )?;
            vm.disk_bytes = disk_bytes;
            Ok(vm)
        })
        .await
        .map_err(|error| Error::Internal(format!("blocking work failed: {error}")))?
    }

    fn check_program(&self, program: &Program) -> Result<(), Error> {
        match program {
            Program::Executable { .. } | Program::ExecutablePath(_) => Ok(()),
            Program::WasmModule { .. } | Program::WasmComponent { .. } => Err(Error::Unsupported(
                "this task manager runs Linux executables (Executable, ExecutablePath), not Wasm"
                    .to_owned(),
            )),
        }
    }

    async fn deploy(host: &Host<Self>, deployment: Deployment<Self>) -> Result<(), Error> {
        crate::deploy::deploy(host, deployment).await
    }
}
