//! [`VmTaskManager`]: the core that decides. The gRPC trait implementation in `service.rs`
//! only translates requests into calls on this.

use crate::config::VmConfig;
use crate::cpu::{self, signal};
use crate::domain::{Domain, DomainSettings};
use crate::error::{Error, StartError};
use crate::kind;
use crate::rate::{CpuGate, CpuLimits};
use crate::vm::system::SyscallPath;
use crate::vm::{DomainVm, selftest};
use kvm_bindings::CpuId;
use kvm_ioctls::Kvm;
use prost::Message;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};
use xeno_schemas::proto::common::v1::{TaskState, Usage};
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_schemas::taskmanager::EventStream;
use xeno_schemas::taskmanager::domains::{Destroying, DomainTable};
use xeno_schemas::taskmanager::events::{DomainEvents, EventLimits};
use xeno_schemas::taskmanager::scratch::Scratch;

/// The `EnvType` this task manager serves.
pub const ENV_TYPE: &str = "Linux";
/// Longest domain or task id accepted: ids are chosen by the environment manager, and this
/// bounds what every map and event carries.
const ID_BYTES_MAX: usize = 256;
/// Longest stop or destroy reason kept (longer ones are cut at a character boundary): it is
/// repeated in every stopped task's exit.
const REASON_BYTES_MAX: usize = 1024;
/// Most tasks a StreamOutput request may list resume points for.
const FROM_OFFSET_TASKS_MAX: usize = 16_384;
const MIB: u64 = 1024 * 1024;

pub(crate) struct Core {
    pub(crate) config: VmConfig,
    pub(crate) kvm: Arc<Kvm>,
    pub(crate) cpuid: CpuId,
    /// How system calls reach the VMM on this host (found by the self-test).
    pub(crate) path: SyscallPath,
    domains: DomainTable<Domain>,
    /// vCPU threads running, bounded by `tasks_max`.
    pub(crate) running: Arc<AtomicU32>,
}

/// The Linux task manager. Cheap to clone (clones share everything); implements the plugin
/// interface's [`TaskManager`](xeno_schemas::taskmanager::TaskManager) trait.
#[derive(Clone)]
pub struct VmTaskManager {
    pub(crate) core: Arc<Core>,
    _shutdown: Arc<Shutdown>,
}

/// Stops every task when the last handle to the manager goes.
struct Shutdown {
    core: Arc<Core>,
}

impl Drop for Shutdown {
    fn drop(&mut self) {
        let domains = self.core.live_domains();
        for domain in &domains {
            domain.shut_down("the task manager shut down");
        }
        for domain in &domains {
            domain.scratch.remove();
        }
    }
}

pub(crate) fn check_id(what: &str, id: &str) -> Result<(), Error> {
    if id.is_empty() || id.len() > ID_BYTES_MAX {
        return Err(Error::Invalid(format!(
            "{what} must be 1 to {ID_BYTES_MAX} bytes, got {}",
            id.len()
        )));
    }
    Ok(())
}

/// The caller's reason, at most [`REASON_BYTES_MAX`] bytes, or `default` if it gave none.
fn reason_or<'a>(reason: &'a str, default: &'a str) -> &'a str {
    if reason.is_empty() {
        return default;
    }
    let mut end = reason.len().min(REASON_BYTES_MAX);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

impl VmTaskManager {
    /// Opens `/dev/kvm`, runs the system call self-test (which finds how `syscall` reaches
    /// the VMM on this host: see `selftest.rs`), and is ready for domains. Callable from inside
    /// a tokio runtime: tasks run on threads of their own (one vCPU thread each).
    pub fn new(config: VmConfig) -> Result<VmTaskManager, StartError> {
        config.validate()?;
        // What tasks create on the host is private to the server's user.
        xeno_schemas::taskmanager::scratch::restrict_umask();
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
        let core = Arc::new(Core {
            domains: DomainTable::new(config.domains_max, config.destroyed_domains_kept),
            config,
            kvm: Arc::new(kvm),
            cpuid,
            path,
            running: Arc::new(AtomicU32::new(0)),
        });
        Ok(VmTaskManager {
            _shutdown: Arc::new(Shutdown {
                core: Arc::clone(&core),
            }),
            core,
        })
    }

    /// The configuration this manager runs with.
    pub fn config(&self) -> &VmConfig {
        &self.core.config
    }

    /// How system calls reach the VMM on this host, as the start-up self-test found.
    pub fn syscall_path(&self) -> SyscallPath {
        self.core.path
    }

    /// Time from DeployTask to the task's first guest instruction, once it has run (for
    /// benchmarks and logs).
    pub fn start_latency(&self, domain_id: &str, task_id: &str) -> Option<Duration> {
        self.core
            .domain(domain_id)
            .ok()?
            .find_task(task_id)?
            .start_latency()
    }
}

impl Core {
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        tokio::task::spawn_blocking(work)
            .await
            .map_err(|error| Error::Internal(format!("blocking work failed: {error}")))?
    }

    fn live_domains(&self) -> Vec<Arc<Domain>> {
        self.domains.live()
    }

    pub(crate) fn capabilities(&self) -> pb::GetCapabilitiesResponse {
        pb::GetCapabilitiesResponse {
            name: env!("CARGO_PKG_NAME").to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            env_types: vec![ENV_TYPE.to_owned()],
            versions: self.config.versions.clone(),
            program_kinds: vec!["Executable".to_owned(), "ExecutablePath".to_owned()],
            domains_max: self.config.domains_max,
            reports_fuel: false,
            tasks_per_domain_max: self.config.tasks_per_domain_max,
            system_calls: crate::syscalls::table::capability_rows(),
        }
    }

    /// The live domain `id`, or why there is none.
    pub(crate) fn domain(&self, id: &str) -> Result<Arc<Domain>, Error> {
        self.domains.get(id)
    }

    fn settings(&self, limits: &pb::DomainLimits, version: &str) -> Result<DomainSettings, Error> {
        let config = &self.config;
        let memory_mb = if limits.memory_mb == 0 {
            config.memory_mb_default
        } else {
            limits.memory_mb
        };
        if memory_mb > config.memory_mb_max || memory_mb < 4 {
            return Err(Error::Invalid(format!(
                "memory_mb {memory_mb} is outside what a domain may have here (4 to {} MB)",
                config.memory_mb_max
            )));
        }
        let tasks_max = if limits.tasks_max == 0 {
            config.tasks_per_domain_max
        } else {
            limits.tasks_max
        };
        if tasks_max > config.tasks_per_domain_max {
            return Err(Error::Invalid(format!(
                "tasks_max {tasks_max} exceeds this task manager's per-domain maximum of {}",
                config.tasks_per_domain_max
            )));
        }
        let task_output_bytes = (limits.output_bytes_max > 0).then_some(limits.output_bytes_max);
        Ok(DomainSettings {
            memory_bytes: memory_mb * MIB,
            version: version.to_owned(),
            task_output_bytes,
            tasks_max,
            ended_tasks_kept: config.ended_tasks_kept,
        })
    }

    pub(crate) async fn create_domain(
        &self,
        request: pb::CreateDomainRequest,
    ) -> Result<pb::CreateDomainResponse, Error> {
        check_id("domain_id", &request.domain_id)?;
        let fingerprint: [u8; 32] = Sha256::digest(request.encode_to_vec()).into();
        let version = if request.version.is_empty() {
            self.config.versions[0].clone()
        } else {
            request.version.clone()
        };
        let answer = || pb::CreateDomainResponse {
            version: version.clone(),
        };
        if let Some(repeat) = self.domains.existing(&request.domain_id, fingerprint) {
            return repeat.map(|()| answer());
        }
        if request.env_type != ENV_TYPE {
            return Err(Error::Unsupported(format!(
                "EnvType {:?} is not served here; this task manager serves {ENV_TYPE:?}",
                request.env_type
            )));
        }
        if !self.config.versions.contains(&version) {
            return Err(Error::Unsupported(format!(
                "Linux ABI version {version:?} is not offered; this task manager offers {:?}",
                self.config.versions
            )));
        }
        kind::check_supported(kind::requested(&request.requirements_xml)?)?;
        let limits = request.limits.unwrap_or_default();
        let settings = self.settings(&limits, &version)?;
        self.domains.room()?;
        let scratch_dir = request.scratch_dir.clone();
        let scratch = self
            .blocking(move || Scratch::open(&scratch_dir, "xeno-vm-"))
            .await?;
        let vm = match self.make_vm(settings.memory_bytes).await {
            Ok(vm) => vm,
            Err(error) => {
                scratch.remove();
                return Err(error);
            }
        };
        let now = Instant::now();
        let cpu = CpuGate::new(
            CpuLimits {
                msps: limits.cpu_msps,
                peak_msps: limits.cpu_peak_msps,
                burst_ms: limits.cpu_burst_ms,
            },
            self.config.cpu_bucket_window_ms,
            now,
        );
        let events = DomainEvents::new(EventLimits {
            log_bytes_max: self.config.stream_buffer_bytes,
            log_events_max: self.config.stream_buffer_events,
            kept_bytes_max: self.config.domain_output_bytes_max,
            readers_max: self.config.stream_readers_max,
        });
        let domain = Arc::new(Domain::new(
            request.domain_id.clone(),
            fingerprint,
            settings.clone(),
            scratch,
            vm,
            cpu,
            events,
            now,
        ));
        // Checked again: another CreateDomain may have run while the directory was made.
        let added = self.domains.insert(&request.domain_id, Arc::clone(&domain));
        if matches!(added, Ok(true)) {
            tracing::info!(domain = %request.domain_id, cpu_msps = limits.cpu_msps, memory_mb = settings.memory_bytes / MIB, "domain created");
            return Ok(answer());
        }
        domain.scratch.remove();
        added.map(|_| answer())
    }

    async fn make_vm(&self, memory_bytes: u64) -> Result<DomainVm, Error> {
        // Built on a blocking thread: creating a VM and its first vCPU takes a millisecond or
        // two of ioctls.
        let kvm = Arc::clone(&self.kvm);
        let cpuid = self.cpuid.clone();
        let path = self.path;
        let windows = self.config.windows_per_domain_max;
        self.blocking(move || {
            DomainVm::new(&kvm, memory_bytes, cpuid, path, windows).map_err(|error| {
                Error::Exhausted(format!("cannot create the domain's VM: {error}"))
            })
        })
        .await
    }

    pub(crate) fn stream_output(
        &self,
        request: pb::StreamOutputRequest,
    ) -> Result<EventStream, Error> {
        let domain = self.domain(&request.domain_id)?;
        if request.from_offset.len() > FROM_OFFSET_TASKS_MAX {
            return Err(Error::Invalid(format!(
                "from_offset lists {} tasks; at most {FROM_OFFSET_TASKS_MAX}",
                request.from_offset.len()
            )));
        }
        domain
            .events
            .open_stream(request.from_offset, request.follow)
            .ok_or_else(|| {
                Error::Exhausted(format!(
                    "domain {:?} already has its maximum of {} output readers",
                    request.domain_id, self.config.stream_readers_max
                ))
            })
    }

    pub(crate) fn report_usage(
        &self,
        request: pb::ReportUsageRequest,
    ) -> Result<pb::ReportUsageResponse, Error> {
        let (usage, tasks) = self.domain(&request.domain_id)?.report();
        Ok(pb::ReportUsageResponse {
            usage: Some(usage),
            tasks,
        })
    }

    pub(crate) async fn stop_task(&self, request: pb::StopTaskRequest) -> Result<(), Error> {
        let domain = self.domain(&request.domain_id)?;
        let task = domain.task(&request.task_id)?;
        if task.exit().is_some() {
            return Ok(());
        }
        let reason = reason_or(&request.reason, "stopped");
        task.stop(&domain, reason, self.stop_timeout()).await;
        Ok(())
    }

    fn stop_timeout(&self) -> Duration {
        Duration::from_millis(self.config.stop_timeout_ms)
    }

    pub(crate) async fn destroy_domain(
        &self,
        request: pb::DestroyDomainRequest,
    ) -> Result<Usage, Error> {
        let domain = match self.domains.destroying(&request.domain_id)? {
            Destroying::Live(domain) => domain,
            Destroying::Done(usage) => return Ok(usage),
        };
        let reason = reason_or(&request.reason, "domain destroyed");
        let usage = domain.destroy(reason, self.stop_timeout()).await;
        let scratch_owner = Arc::clone(&domain);
        self.blocking(move || {
            scratch_owner.scratch.remove();
            Ok(())
        })
        .await?;
        if self.domains.destroyed(&request.domain_id, &domain, usage) {
            tracing::info!(domain = %request.domain_id, cpu_time_us = usage.cpu_time_us, "domain destroyed");
        }
        Ok(usage)
    }

    pub(crate) fn inspect_task(
        &self,
        request: pb::InspectTaskRequest,
    ) -> Result<pb::InspectTaskResponse, Error> {
        let domain = self.domain(&request.domain_id)?;
        let task = domain.task(&request.task_id)?;
        let state: TaskState = task.state();
        let (output_dropped_bytes, output_dropped_reason) = domain.events.dropped(&task.id);
        Ok(pb::InspectTaskResponse {
            state: state.into(),
            exit: task.exit().cloned(),
            usage: Some(task.usage(Instant::now())),
            output_dropped_bytes,
            output_dropped_reason,
        })
    }
}
