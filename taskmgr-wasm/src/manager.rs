//! [`WasmTaskManager`]: the core that decides. The gRPC trait implementation in `service.rs`
//! only translates requests into calls on this.

use crate::cache::{CacheStats, ModuleCache};
use crate::config::WasmConfig;
use crate::domain::{Domain, DomainSettings};
use crate::engine::{self, Runtime};
use crate::error::{Error, StartError};
use crate::rate::{CpuGate, CpuLimits};
use prost::Message;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use xeno_schemas::proto::common::v1::{TaskState, Usage};
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_schemas::taskmanager::EventStream;
use xeno_schemas::taskmanager::domains::{Destroying, DomainTable};
use xeno_schemas::taskmanager::events::{DomainEvents, EventLimits};
use xeno_schemas::taskmanager::scratch::Scratch;

/// The `EnvType` this task manager serves.
pub const ENV_TYPE: &str = "Wasm";
/// The runtime version domains present: the Wasmtime release that runs them.
pub const VERSION: &str = "48.0.8";
/// Longest domain or task id accepted: ids are chosen by the environment manager, and this
/// bounds what every map and event carries.
const ID_BYTES_MAX: usize = 256;
/// Longest stop or destroy reason kept (longer ones are cut at a character boundary): it is
/// repeated in every stopped task's exit.
const REASON_BYTES_MAX: usize = 1024;
/// Most tasks a StreamOutput request may list resume points for: more than a domain can
/// remember (running plus ended tasks kept), with room to spare.
const FROM_OFFSET_TASKS_MAX: usize = 16_384;
const MIB: u64 = 1024 * 1024;

pub(crate) struct Core {
    pub(crate) config: WasmConfig,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) cache: ModuleCache,
    domains: DomainTable<Domain>,
    /// One permit per task slot in the instance pool.
    pub(crate) task_slots: Arc<Semaphore>,
    /// The task threads' runtime.
    pub(crate) tasks: tokio::runtime::Handle,
}

/// The Wasm task manager. Cheap to clone (clones share everything); implements the plugin
/// interface's [`TaskManager`](xeno_schemas::taskmanager::TaskManager) trait.
#[derive(Clone)]
pub struct WasmTaskManager {
    pub(crate) core: Arc<Core>,
    _threads: Arc<Threads>,
}

/// The task threads, shut down without blocking when the last handle to the manager goes
/// (which may happen inside another runtime, where blocking is not allowed).
struct Threads {
    runtime: Option<tokio::runtime::Runtime>,
    core: Arc<Core>,
}

impl Drop for Threads {
    fn drop(&mut self) {
        let domains = self.core.live_domains();
        for domain in &domains {
            domain.shut_down("the task manager shut down");
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
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

impl WasmTaskManager {
    /// Builds the engine and starts the task threads. Callable from inside a tokio runtime
    /// (the task threads are a runtime of their own, so tasks never compete with the caller's
    /// request handling for its threads).
    pub fn new(config: WasmConfig) -> Result<WasmTaskManager, StartError> {
        config.validate()?;
        // What tasks create on the host is private to the server's user.
        xeno_schemas::taskmanager::scratch::restrict_umask();
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = if config.worker_threads == 0 {
            cpus
        } else {
            config.worker_threads
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("xeno-wasm-task")
            // Compilation and blocking host work only; tasks' own file I/O runs inline.
            .max_blocking_threads(cpus.max(2) * 2)
            .enable_all()
            .build()?;
        let compile_concurrency = if config.compile_concurrency == 0 {
            cpus
        } else {
            config.compile_concurrency
        };
        let core = Arc::new(Core {
            domains: DomainTable::new(config.domains_max, config.destroyed_domains_kept),
            // A child ready for each compilation slot and for the small programs' lane.
            runtime: Arc::new(engine::build(&config, compile_concurrency + 1)?),
            cache: ModuleCache::new(
                config.module_cache_entries,
                config.module_cache_bytes,
                compile_concurrency,
                config.compile_small_bytes_max,
            ),
            task_slots: Arc::new(Semaphore::new(config.tasks_max as usize)),
            tasks: runtime.handle().clone(),
            config,
        });
        let threads = Threads {
            runtime: Some(runtime),
            core: Arc::clone(&core),
        };
        Ok(WasmTaskManager {
            core,
            _threads: Arc::new(threads),
        })
    }

    /// The compiled-program cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.core.cache.stats()
    }

    /// The configuration this manager runs with.
    pub fn config(&self) -> &WasmConfig {
        &self.core.config
    }
}

impl Core {
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        self.tasks
            .spawn_blocking(work)
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
            versions: vec![VERSION.to_owned()],
            program_kinds: vec!["WasmModule".to_owned(), "WasmComponent".to_owned()],
            domains_max: self.config.domains_max,
            reports_fuel: true,
            tasks_per_domain_max: self.config.tasks_per_domain_max,
            // WASI is an interface of imports, not numbered system calls.
            system_calls: Vec::new(),
        }
    }

    /// The live domain `id`, or why there is none.
    pub(crate) fn domain(&self, id: &str) -> Result<Arc<Domain>, Error> {
        self.domains.get(id)
    }

    fn settings(&self, limits: &pb::DomainLimits) -> Result<DomainSettings, Error> {
        let config = &self.config;
        let memory_mb = if limits.memory_mb == 0 {
            config.instance_memory_mb_max
        } else {
            limits.memory_mb
        };
        if memory_mb > config.instance_memory_mb_max {
            return Err(Error::Invalid(format!(
                "memory_mb {memory_mb} exceeds the largest memory one Wasm instance may have here ({} MB)",
                config.instance_memory_mb_max
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
        let answer = || pb::CreateDomainResponse {
            version: VERSION.to_owned(),
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
        if !request.version.is_empty() && request.version != VERSION {
            return Err(Error::Unsupported(format!(
                "version {:?} is not offered; this task manager offers {VERSION:?}",
                request.version
            )));
        }
        let limits = request.limits.unwrap_or_default();
        let settings = self.settings(&limits)?;
        self.domains.room()?;
        let scratch_dir = request.scratch_dir.clone();
        let scratch = self
            .blocking(move || Scratch::open(&scratch_dir, "xeno-wasm-"))
            .await?;
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
            settings,
            scratch,
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
