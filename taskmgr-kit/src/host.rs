//! [`Host`]: the plugin interface's rules, implemented once over a [`Backend`]. The gRPC trait
//! implementation in `service.rs` only translates requests into calls on this.

use crate::backend::{Backend, DomainSettings, HostLimits};
use crate::domain::{Domain, Parts};
use crate::domains::{Destroying, DomainTable};
use crate::events::{DomainEvents, EventLimits, OutputCap};
use crate::payload::{self, Payloads};
use crate::rate::CpuLimits;
use crate::scratch::{self, PlacedFile, Scratch};
use crate::task::TaskSlot;
use crate::{Error, EventStream};
use prost::Message;
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};
use xeno_schemas::Document;
use xeno_schemas::documents::TaskDescription;
use xeno_schemas::proto::common::v1::{TaskState, Usage};
use xeno_schemas::proto::taskmanager::v1 as pb;

/// Longest domain or task id accepted: ids are chosen by the environment manager, and this
/// bounds what every map and event carries.
pub const ID_BYTES_MAX: usize = 256;
/// Longest stop or destroy reason kept (longer ones are cut at a character boundary): it is
/// repeated in every stopped task's exit.
pub const REASON_BYTES_MAX: usize = 1024;
/// Most tasks a StreamOutput request may list resume points for: more than a domain can
/// remember (running plus ended tasks kept), with room to spare.
pub const FROM_OFFSET_TASKS_MAX: usize = 16_384;
const MIB: u64 = 1024 * 1024;

/// A task manager: backend `B` behind the plugin interface. Cheap to clone (clones share
/// everything); implements [`TaskManager`](crate::TaskManager).
pub struct Host<B: Backend> {
    core: Arc<Core<B>>,
    _shutdown: Arc<Shutdown<B>>,
}

impl<B: Backend> Clone for Host<B> {
    fn clone(&self) -> Self {
        Host {
            core: Arc::clone(&self.core),
            _shutdown: Arc::clone(&self._shutdown),
        }
    }
}

struct Core<B: Backend> {
    backend: B,
    limits: HostLimits,
    domains: DomainTable<Domain<B>>,
    /// Tasks running across every domain, bounded by `limits.tasks_max`.
    running: Arc<AtomicU32>,
}

/// Stops every task when the last handle to the host goes, without blocking (which may happen
/// inside another runtime, where blocking is not allowed).
struct Shutdown<B: Backend> {
    core: Arc<Core<B>>,
}

impl<B: Backend> Drop for Shutdown<B> {
    fn drop(&mut self) {
        let domains = self.core.domains.live();
        for domain in &domains {
            domain.shut_down("the task manager shut down");
        }
        self.core.backend.shut_down();
        for domain in &domains {
            domain.scratch.remove();
        }
    }
}

/// A DeployTask the host has checked: the domain has room, the payloads match their hashes and
/// the document, and a slot among the running tasks is held. The backend makes the task run.
pub struct Deployment<B: Backend> {
    /// The domain it goes into.
    pub domain: Arc<Domain<B>>,
    /// The task's id.
    pub task_id: String,
    /// Identifies the request, for idempotent retries.
    pub fingerprint: [u8; 32],
    /// The task's description.
    pub description: TaskDescription,
    /// The payloads by hash, each checked.
    pub payloads: Payloads,
    /// Its working directory relative to the scratch directory (`None`: the top).
    pub working_dir: Option<PathBuf>,
    /// The output kept for it: the shared rule, with the host's default and ceiling.
    pub output_cap: OutputCap,
    /// Its place among the running tasks, for the backend to hold while the task runs.
    pub slot: TaskSlot,
    /// When DeployTask arrived.
    pub started: Instant,
}

impl<B: Backend> Deployment<B> {
    /// Places the task's `Files` in the session directory (on a blocking thread).
    pub async fn place_files(&self, host: &Host<B>) -> Result<(), Error> {
        let placed: Vec<PlacedFile> = self
            .description
            .files
            .iter()
            .filter_map(|file| {
                Some(PlacedFile {
                    path: file.path.clone(),
                    mode: file.mode,
                    data: self.payloads.get(&file.sha256)?.clone(),
                })
            })
            .collect();
        let root = self.domain.scratch.path().to_owned();
        let dir = self.working_dir.clone();
        host.blocking(move || scratch::place_all(&root, &placed, dir.as_deref()))
            .await
    }
}

/// Checks an id chosen by the environment manager.
pub fn check_id(what: &str, id: &str) -> Result<(), Error> {
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

impl<B: Backend> Host<B> {
    /// Starts the backend and is ready for domains.
    pub fn new(config: B::Config) -> Result<Host<B>, B::StartError> {
        // What tasks create on the host is private to the server's user.
        scratch::restrict_umask();
        let backend = B::start(config)?;
        let limits = backend.limits();
        let core = Arc::new(Core {
            domains: DomainTable::new(limits.domains_max, limits.destroyed_domains_kept),
            running: Arc::new(AtomicU32::new(0)),
            limits,
            backend,
        });
        Ok(Host {
            _shutdown: Arc::new(Shutdown {
                core: Arc::clone(&core),
            }),
            core,
        })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.core.backend
    }

    /// The configuration the backend runs with.
    pub fn config(&self) -> &B::Config {
        self.core.backend.config()
    }

    /// The limits the host keeps.
    pub fn limits(&self) -> &HostLimits {
        &self.core.limits
    }

    /// Time from DeployTask to the task's first instruction, once it has run (for benchmarks
    /// and logs).
    pub fn start_latency(&self, domain_id: &str, task_id: &str) -> Option<Duration> {
        self.domain(domain_id)
            .ok()?
            .find_task(task_id)?
            .start_latency()
    }

    /// Runs `work` on a blocking thread of the backend's runtime (or the caller's).
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let joined = match self.core.backend.blocking_runtime() {
            Some(runtime) => runtime.spawn_blocking(work).await,
            None => tokio::task::spawn_blocking(work).await,
        };
        joined.map_err(|error| Error::Internal(format!("blocking work failed: {error}")))?
    }

    /// The live domain `id`, or why there is none.
    pub fn domain(&self, id: &str) -> Result<Arc<Domain<B>>, Error> {
        self.core.domains.get(id)
    }

    fn stop_timeout(&self) -> Duration {
        self.core.limits.stop_timeout
    }

    pub(crate) fn capabilities(&self) -> pb::GetCapabilitiesResponse {
        let own = self.core.backend.capabilities();
        pb::GetCapabilitiesResponse {
            name: own.name,
            version: own.version,
            env_types: vec![B::ENV_TYPE.to_owned()],
            versions: self.core.backend.versions(),
            program_kinds: own.program_kinds,
            domains_max: self.core.limits.domains_max,
            reports_fuel: own.reports_fuel,
            tasks_per_domain_max: self.core.limits.tasks_per_domain_max,
            system_calls: own.system_calls,
            images: own.images,
            processes_max: own.processes_max,
        }
    }

    fn settings(
        &self,
        limits: &pb::DomainLimits,
        version: String,
    ) -> Result<DomainSettings, Error> {
        let host = &self.core.limits;
        let memory_bytes = self.core.backend.memory_bytes(limits.memory_mb)?;
        let tasks_max = if limits.tasks_max == 0 {
            host.tasks_per_domain_max
        } else {
            limits.tasks_max
        };
        if tasks_max > host.tasks_per_domain_max {
            return Err(Error::Invalid(format!(
                "tasks_max {tasks_max} exceeds this task manager's per-domain maximum of {}",
                host.tasks_per_domain_max
            )));
        }
        let task_output_bytes = (limits.output_bytes_max > 0).then_some(limits.output_bytes_max);
        Ok(DomainSettings {
            memory_bytes,
            version,
            task_output_bytes,
            tasks_max,
            ended_tasks_kept: host.ended_tasks_kept,
            requirements_xml: String::new(),
        })
    }

    pub(crate) async fn create_domain(
        &self,
        request: pb::CreateDomainRequest,
    ) -> Result<pb::CreateDomainResponse, Error> {
        check_id("domain_id", &request.domain_id)?;
        let fingerprint: [u8; 32] = Sha256::digest(request.encode_to_vec()).into();
        let versions = self.core.backend.versions();
        let version = if request.version.is_empty() {
            versions.first().cloned().unwrap_or_default()
        } else {
            request.version.clone()
        };
        let answer = || pb::CreateDomainResponse {
            version: version.clone(),
        };
        if let Some(repeat) = self.core.domains.existing(&request.domain_id, fingerprint) {
            return repeat.map(|()| answer());
        }
        if request.env_type != B::ENV_TYPE {
            return Err(Error::Unsupported(format!(
                "EnvType {:?} is not served here; this task manager serves {:?}",
                request.env_type,
                B::ENV_TYPE
            )));
        }
        if !versions.contains(&version) {
            return Err(Error::Unsupported(format!(
                "{} version {version:?} is not offered; this task manager offers {versions:?}",
                B::ENV_TYPE
            )));
        }
        self.core.backend.check_domain(&request)?;
        let limits = request.limits.unwrap_or_default();
        let mut settings = self.settings(&limits, version.clone())?;
        settings.requirements_xml = request.requirements_xml.clone();
        self.core.domains.room()?;
        let scratch_dir = request.scratch_dir.clone();
        let scratch = self
            .blocking(move || Scratch::open(&scratch_dir, B::SCRATCH_PREFIX))
            .await?;
        let resources = match self.core.backend.create_resources(&settings, &limits).await {
            Ok(resources) => resources,
            Err(error) => {
                scratch.remove();
                return Err(error);
            }
        };
        let now = Instant::now();
        let host = &self.core.limits;
        let cpu = B::cpu_gate(
            CpuLimits {
                msps: limits.cpu_msps,
                peak_msps: limits.cpu_peak_msps,
                burst_ms: limits.cpu_burst_ms,
            },
            host.cpu_bucket_window_ms,
            now,
        );
        let events = DomainEvents::new(EventLimits {
            log_bytes_max: host.stream_buffer_bytes,
            log_events_max: host.stream_buffer_events,
            kept_bytes_max: host.domain_output_bytes_max,
            readers_max: host.stream_readers_max,
        });
        let memory_mb = settings.memory_bytes / MIB;
        let domain = Arc::new(Domain::new(Parts {
            id: request.domain_id.clone(),
            fingerprint,
            settings,
            scratch,
            resources,
            cpu,
            events,
            now,
        }));
        // Checked again: another CreateDomain may have run while the directory was made.
        let added = self
            .core
            .domains
            .insert(&request.domain_id, Arc::clone(&domain));
        if matches!(added, Ok(true)) {
            tracing::info!(domain = %request.domain_id, env_type = B::ENV_TYPE, cpu_msps = limits.cpu_msps, memory_mb, "domain created");
            return Ok(answer());
        }
        domain.scratch.remove();
        added.map(|_| answer())
    }

    pub(crate) async fn deploy_task(&self, request: pb::DeployTaskRequest) -> Result<(), Error> {
        let started = Instant::now();
        let domain = self.domain(&request.domain_id)?;
        check_id("task_id", &request.task_id)?;
        let description = TaskDescription::parse(request.task_xml.as_bytes())
            .map_err(|errors| Error::Invalid(format!("TaskDescription: {errors}")))?;
        self.core.backend.check_program(&description.program)?;
        let payloads_max = self.core.limits.payload_bytes_max;
        let payloads = request.payloads;
        let payloads = self
            .blocking(move || Ok(payload::verify(payloads, payloads_max)?))
            .await?;
        let fingerprint = payload::fingerprint(&request.task_xml, &payloads);

        let _deploying = domain.deploy_lock.lock().await;
        if let Some(existing) = domain.find_task(&request.task_id) {
            if existing.fingerprint == fingerprint {
                return Ok(());
            }
            return Err(Error::TaskExists {
                domain: request.domain_id,
                task: request.task_id,
            });
        }
        payload::check_named(&description.payload_hashes(), &payloads)?;
        domain.check_room()?;
        let slot = TaskSlot::take(&self.core.running, self.core.limits.tasks_max)?;
        let working_dir = description
            .working_dir
            .as_deref()
            .map(scratch::relative)
            .transpose()?
            .filter(|dir| !dir.as_os_str().is_empty());
        let limits = &self.core.limits;
        let output_cap = OutputCap::choose(
            description.output_bytes,
            domain.settings.task_output_bytes,
            limits.task_output_bytes_default,
            limits.task_output_bytes_max,
        );
        B::deploy(
            self,
            Deployment {
                domain: Arc::clone(&domain),
                task_id: request.task_id.clone(),
                fingerprint,
                description,
                payloads,
                working_dir,
                output_cap,
                slot,
                started,
            },
        )
        .await?;
        tracing::info!(domain = %request.domain_id, task = %request.task_id, "task started");
        Ok(())
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
                    request.domain_id, self.core.limits.stream_readers_max
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

    pub(crate) async fn destroy_domain(
        &self,
        request: pb::DestroyDomainRequest,
    ) -> Result<Usage, Error> {
        let domain = match self.core.domains.destroying(&request.domain_id)? {
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
        if self
            .core
            .domains
            .destroyed(&request.domain_id, &domain, usage)
        {
            tracing::info!(domain = %request.domain_id, cpu_time_us = usage.cpu_time_us, "domain destroyed");
        }
        Ok(usage)
    }

    /// Destroys every live domain (each task stopped, its end announced, the domain's readers
    /// told), for a plugin's clean exit: no task outlives it.
    pub async fn destroy_all(&self, reason: &str) {
        let destroys = self.core.domains.live().into_iter().map(|domain| {
            self.destroy_domain(pb::DestroyDomainRequest {
                domain_id: domain.id.clone(),
                reason: reason.to_owned(),
            })
        });
        for result in futures::future::join_all(destroys).await {
            if let Err(error) = result {
                tracing::warn!(%error, "destroying a domain at shutdown failed");
            }
        }
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
