//! # The Process task manager: an example external plugin
//!
//! This is the task manager plugin an outside author would read first. It serves the
//! `xenoserve.taskmanager.v1.TaskManager` service (the contract is in
//! `schemas/proto/xenoserve/taskmanager/v1/taskmanager.proto`) for the `EnvType` `Process`:
//! each task is a native executable run as an ordinary host process under rlimits. The binary
//! `xeno-process-plugin` (`src/bin/xeno-process-plugin.rs`, a page long) serves it on a Unix
//! socket with [`serve_unix`](xeno_taskmgr_kit::serve_unix), and an environment manager
//! reaches it with [`RemoteTaskManager`](xeno_taskmgr_kit::RemoteTaskManager):
//!
//! ```sh
//! xeno-process-plugin --socket /run/xeno/process.sock
//! ```
//!
//! ## Not an isolation boundary
//!
//! Tasks run as the plugin's own user, see the host's whole filesystem, network and process
//! table, and can do whatever that user can. The rlimits bound a careless program, not a hostile
//! one: RLIMIT_AS is per process, RLIMIT_NPROC counts every process of the user (and is ignored
//! for root), RLIMIT_FSIZE bounds each file rather than the total, and nothing limits the
//! network. Use it for trusted programs, for development and as an example of the plugin API;
//! untrusted code belongs in the Wasm and Linux VM task managers, whose domains are isolated.
//!
//! ## How each call is implemented
//!
//! - **GetCapabilities**: env type `Process`; one version, the host's kernel release (what the
//!   programs run against); program kinds `Executable` and `ExecutablePath`; no fuel.
//! - **CreateDomain**: checks the env type and version, then records the domain with its
//!   limits. Its scratch directory is the one the environment manager gave, or a temporary
//!   directory the plugin removes on destroy. A repeated identical request returns the first
//!   answer; a different one with the same id gets ALREADY_EXISTS.
//! - **DeployTask** (modules `deploy` and `supervisor`): parses the TaskDescription, checks
//!   every payload against its SHA-256, writes the task's `Files` and its `Executable` payload
//!   (mode 0755, under `.xeno/bin/` named by hash) into the scratch directory, and spawns the
//!   program with the scratch directory (or its `WorkingDir`) as working directory, only the
//!   task's `Env` as environment, `Argv0` (or the program's name) as `argv[0]`, stdin from
//!   /dev/null and stdout/stderr piped, in a process group of its own, with rlimits set between
//!   fork and exec: RLIMIT_AS from `memory_mb`, RLIMIT_FSIZE from `disk_mb`, RLIMIT_NOFILE,
//!   RLIMIT_NPROC and RLIMIT_CORE 0. It returns once the process is running.
//! - **StreamOutput** (module `stream`): each task's stdout and stderr go into a bounded log (the
//!   domain's `output_bytes_max`, the oldest bytes dropped first, offsets counting on through
//!   dropped bytes). A watcher pulls from the logs from its resume offsets, then sleeps until
//!   the domain changes, so replay and live following are the same loop and no task ever waits
//!   for a watcher. With `follow` false it ends once it has caught up; with `follow` true it
//!   ends after `DomainDestroyed`.
//! - **ReportUsage** and **InspectTask**: the usage the `meter` module keeps. CPU time comes from
//!   `/proc/<pid>/stat` (utime + stime) of every process in the task's group while it runs, and
//!   from the leader's `wait4` rusage at exit, whichever is larger; memory is the group's
//!   resident size sampled every 10 ms and integrated over time; output bytes count everything
//!   the task wrote, kept or dropped; wall time runs from creation (domain) or start (task).
//!   Every figure only ever grows.
//! - **CPU rate**: the `meter` module holds each domain to its `cpu_msps` with a duty cycle: when
//!   the domain has spent its budget its process groups are stopped with SIGSTOP, and
//!   continued with SIGCONT once the budget refills (10 ms ticks; see the module for the
//!   granularity).
//! - **StopTask**: SIGKILLs the task's process group and waits (boundedly) for it to be reaped;
//!   the task ends STOPPED with the given reason. A task's `WallClockSeconds` stops it the same
//!   way.
//! - **DestroyDomain**: SIGKILLs every task's group, waits for them, freezes the usage, removes
//!   a scratch directory it made, and keeps the final usage so that destroying again returns
//!   the same. Afterwards DeployTask, ReportUsage, StopTask and InspectTask get
//!   FAILED_PRECONDITION and StreamOutput sends just DomainDestroyed.
//!
//! A task ends EXITED with its exit code when its leader exits, FAILED ("killed by signal 11
//! (SIGSEGV)") when a signal the plugin did not send kills it, and STOPPED when the plugin
//! killed it. When the leader ends, whatever is left of its process group is killed. If the
//! plugin itself dies, the kernel kills each task's leader (`PR_SET_PDEATHSIG`); on SIGTERM it
//! destroys every domain before exiting.
//!
//! ## Where things are
//!
//! - this file: the [`TaskManager`] implementation, one method per call, and the map of domains;
//! - `domain`: a domain's limits, tasks and usage, stopping tasks and destroying it;
//! - `task`: a task's record, its usage meter, and how a wait status reads as an exit;
//! - `deploy`: from a DeployTask request to a command ready to spawn (payloads, files, rlimits);
//! - `supervisor`: the waiter thread per task, reading its pipes, recording its end;
//! - `output`: the bounded per-task output log (stdout and stderr share one offset sequence);
//! - `stream`: StreamOutput's watchers;
//! - `meter` and `procfs`: sampling `/proc`, and the CPU duty cycle;
//! - `error`: the errors and their gRPC status codes.

mod deploy;
mod domain;
mod error;
mod meter;
mod output;
mod procfs;
mod stream;
mod supervisor;
mod task;

pub use error::PluginError;

use domain::{Domain, Phase};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use task::{Task, TaskMeter};
use tonic::{Request, Response, Status};
use xeno_schemas::proto::common::v1::{OutputStream, Usage};
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::{EventStream, TaskManager};

/// The `EnvType` this plugin serves.
pub const ENV_TYPE: &str = "Process";

/// Domains held at once unless configured otherwise.
pub const DOMAINS_MAX_DEFAULT: u32 = 64;

/// Destroyed domains remembered (with their final usage, so destroying again answers the same)
/// before the oldest are forgotten and their ids become NOT_FOUND.
pub const DESTROYED_REMEMBERED_MAX: usize = 4096;

/// How long StopTask waits for the task to be reaped before returning anyway (the task still
/// ends STOPPED, later).
pub const STOP_WAIT: Duration = Duration::from_secs(5);

/// The plugin's configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most domains at once (GetCapabilities' `domains_max`).
    pub domains_max: u32,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            domains_max: DOMAINS_MAX_DEFAULT,
        }
    }
}

/// The Process task manager. Cheap to clone: clones share the same domains.
#[derive(Clone)]
pub struct ProcessTaskManager {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    /// The version every domain presents: the kernel release.
    kernel_release: String,
    /// Live domains (and ones being destroyed). The meter thread holds a weak reference.
    live: Arc<meter::Domains>,
    /// Destroyed domains' final usage and reason, oldest first.
    destroyed: Mutex<Destroyed>,
}

#[derive(Default)]
struct Destroyed {
    by_id: HashMap<String, (Usage, String)>,
    order: VecDeque<String>,
}

impl ProcessTaskManager {
    /// A task manager with no domains yet; starts its meter thread.
    pub fn new(config: Config) -> std::io::Result<ProcessTaskManager> {
        // What tasks create on the host is private to the server's user.
        xeno_taskmgr_kit::scratch::restrict_umask();
        let kernel_release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let live: Arc<meter::Domains> = Arc::default();
        meter::start(Arc::downgrade(&live))?;
        Ok(ProcessTaskManager {
            inner: Arc::new(Inner {
                config,
                kernel_release,
                live,
                destroyed: Mutex::default(),
            }),
        })
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, Arc<Domain>>> {
        self.inner
            .live
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn destroyed(&self) -> MutexGuard<'_, Destroyed> {
        self.inner
            .destroyed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A live domain, or why there is none.
    fn domain(&self, id: &str) -> Result<Arc<Domain>, PluginError> {
        if let Some(domain) = self.live().get(id) {
            return Ok(domain.clone());
        }
        if self.destroyed().by_id.contains_key(id) {
            return Err(PluginError::Destroyed(id.to_owned()));
        }
        Err(PluginError::DomainNotFound(id.to_owned()))
    }

    /// A domain that accepts calls: live, not being destroyed.
    fn usable_domain(&self, id: &str) -> Result<Arc<Domain>, PluginError> {
        let domain = self.domain(id)?;
        match domain.lock().phase {
            Phase::Live => Ok(domain.clone()),
            Phase::Destroying | Phase::Destroyed { .. } => {
                Err(PluginError::Destroyed(id.to_owned()))
            }
        }
    }

    /// GetCapabilities.
    pub fn capabilities(&self) -> pb::GetCapabilitiesResponse {
        pb::GetCapabilitiesResponse {
            name: "xeno-process-plugin".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            env_types: vec![ENV_TYPE.into()],
            versions: vec![self.inner.kernel_release.clone()],
            program_kinds: vec!["Executable".into(), "ExecutablePath".into()],
            domains_max: self.inner.config.domains_max,
            reports_fuel: false,
            tasks_per_domain_max: 0,
            // Tasks are host processes: the host kernel answers their system calls.
            system_calls: Vec::new(),
        }
    }

    /// CreateDomain.
    pub fn create(
        &self,
        request: pb::CreateDomainRequest,
    ) -> Result<pb::CreateDomainResponse, PluginError> {
        if request.env_type != ENV_TYPE {
            return Err(PluginError::Unimplemented(format!(
                "this plugin serves EnvType {ENV_TYPE}, not {:?}",
                request.env_type
            )));
        }
        if !request.version.is_empty() && request.version != self.inner.kernel_release {
            return Err(PluginError::Unimplemented(format!(
                "version {:?} is not offered: this host runs kernel {}",
                request.version, self.inner.kernel_release
            )));
        }
        if request.domain_id.is_empty() {
            return Err(PluginError::InvalidArgument("empty domain_id".into()));
        }
        if self.destroyed().by_id.contains_key(&request.domain_id) {
            return Err(PluginError::Destroyed(request.domain_id));
        }
        let mut live = self.live();
        if let Some(existing) = live.get(&request.domain_id) {
            return if existing.request == request {
                Ok(pb::CreateDomainResponse {
                    version: existing.version.clone(),
                })
            } else {
                Err(PluginError::AlreadyExists(format!(
                    "domain {:?} exists with a different request",
                    request.domain_id
                )))
            };
        }
        if live.len() >= self.inner.config.domains_max as usize {
            return Err(PluginError::ResourceExhausted(format!(
                "this plugin holds at most {} domains",
                self.inner.config.domains_max
            )));
        }
        let (scratch, owned) = if request.scratch_dir.is_empty() {
            let dir = tempfile::Builder::new()
                .prefix("xeno-process-")
                .tempdir()
                .map_err(PluginError::io("creating a scratch directory"))?;
            (dir.path().to_owned(), Some(dir))
        } else {
            let path = PathBuf::from(&request.scratch_dir);
            if !path.is_dir() {
                return Err(PluginError::InvalidArgument(format!(
                    "scratch_dir {} is not a directory",
                    path.display()
                )));
            }
            (path, None)
        };
        let version = self.inner.kernel_release.clone();
        let domain = Domain::new(request, version.clone(), scratch, owned);
        tracing::info!(
            domain = %domain.id,
            scratch = %domain.scratch.display(),
            limits = ?domain.limits,
            "domain created"
        );
        live.insert(domain.id.clone(), Arc::new(domain));
        Ok(pb::CreateDomainResponse { version })
    }

    /// DeployTask.
    pub async fn deploy(&self, request: pb::DeployTaskRequest) -> Result<(), PluginError> {
        let domain = self.usable_domain(&request.domain_id)?;
        let _deploys = domain.deploy_lock.lock().await;
        let digest = deploy::request_digest(&request.task_xml, &request.payloads);
        {
            let state = domain.lock();
            if !matches!(state.phase, Phase::Live) {
                return Err(PluginError::Destroyed(domain.id.clone()));
            }
            if let Some(task) = state.task(&request.task_id) {
                return if task.request_digest == digest {
                    Ok(())
                } else {
                    Err(PluginError::AlreadyExists(format!(
                        "task {:?} exists with a different request",
                        request.task_id
                    )))
                };
            }
            if request.task_id.is_empty() {
                return Err(PluginError::InvalidArgument("empty task_id".into()));
            }
            let tasks_max = domain.limits.tasks_max as usize;
            if tasks_max > 0 && state.running() >= tasks_max {
                return Err(PluginError::ResourceExhausted(format!(
                    "the domain already runs its limit of {tasks_max} tasks"
                )));
            }
            if state.tasks.len() >= domain::TASKS_RECORDED_MAX {
                return Err(PluginError::ResourceExhausted(format!(
                    "the domain has run {} tasks, the most one domain records",
                    domain::TASKS_RECORDED_MAX
                )));
            }
        }
        let (limits, scratch) = (domain.limits, domain.scratch.clone());
        let (task_xml, payloads) = (request.task_xml, request.payloads);
        let prepared = tokio::task::spawn_blocking(move || {
            deploy::prepare(&limits, &scratch, &task_xml, &payloads)
        })
        .await
        .map_err(|error| PluginError::io("preparing the task")(std::io::Error::other(error)))??;
        let spawned =
            supervisor::spawn(prepared.command, domain.clone(), request.task_id.clone()).await?;
        let stdout = tokio::process::ChildStdout::from_std(spawned.stdout);
        let stderr = tokio::process::ChildStderr::from_std(spawned.stderr);
        let (Ok(stdout), Ok(stderr)) = (stdout, stderr) else {
            let _ = spawned.recorded.send(false);
            return Err(PluginError::io("watching the task's output")(
                std::io::Error::other("could not register its pipes"),
            ));
        };
        domain.lock().add_task(Task {
            id: request.task_id.clone(),
            request_digest: digest,
            pgid: spawned.pid,
            started: Instant::now(),
            ended: None,
            leader_exited: false,
            stop_reason: None,
            paused: false,
            output: output::OutputLog::new(prepared.output_bytes_max),
            meter: TaskMeter::default(),
        });
        domain.notify();
        let _ = spawned.recorded.send(true);
        let readers = [
            supervisor::read_output(
                domain.clone(),
                request.task_id.clone(),
                OutputStream::Stdout,
                stdout,
            ),
            supervisor::read_output(
                domain.clone(),
                request.task_id.clone(),
                OutputStream::Stderr,
                stderr,
            ),
        ];
        tracing::info!(
            domain = %domain.id,
            task = %request.task_id,
            pid = spawned.pid.as_raw_pid(),
            "task started"
        );
        tokio::spawn(supervisor::supervise(
            domain.clone(),
            request.task_id,
            spawned.exit,
            readers,
            prepared.wall_clock,
        ));
        Ok(())
    }

    /// StreamOutput.
    pub fn watch(&self, request: pb::StreamOutputRequest) -> Result<EventStream, PluginError> {
        match self.domain(&request.domain_id) {
            Ok(domain) => Ok(stream::open(domain, request.from_offset, request.follow)),
            Err(PluginError::Destroyed(id)) => {
                let reason = self
                    .destroyed()
                    .by_id
                    .get(&id)
                    .map(|(_, reason)| reason.clone());
                Ok(stream::destroyed_only(&reason.unwrap_or_default()))
            }
            Err(error) => Err(error),
        }
    }

    /// ReportUsage.
    pub fn usage(
        &self,
        request: pb::ReportUsageRequest,
    ) -> Result<pb::ReportUsageResponse, PluginError> {
        let domain = self.domain(&request.domain_id)?;
        let now = Instant::now();
        let state = domain.lock();
        Ok(pb::ReportUsageResponse {
            usage: Some(state.usage(domain.created, now)),
            tasks: state
                .tasks
                .iter()
                .map(|task| pb::TaskUsage {
                    task_id: task.id.clone(),
                    state: task.state().into(),
                    usage: Some(task.usage(now)),
                })
                .collect(),
        })
    }

    /// StopTask.
    pub async fn stop(&self, request: pb::StopTaskRequest) -> Result<(), PluginError> {
        let domain = self.usable_domain(&request.domain_id)?;
        {
            let mut state = domain.lock();
            if state.task(&request.task_id).is_none() {
                return Err(domain.missing_task(&request.task_id));
            }
            let reason = if request.reason.is_empty() {
                "stopped"
            } else {
                request.reason.as_str()
            };
            Domain::request_stop(&mut state, &request.task_id, reason);
        }
        let ended = |state: &domain::DomainState| {
            state
                .task(&request.task_id)
                .is_none_or(|task| task.ended.is_some())
        };
        if !domain.wait_for(STOP_WAIT, ended).await {
            tracing::warn!(
                task = %request.task_id,
                "task not reaped within {STOP_WAIT:?} of SIGKILL"
            );
        }
        Ok(())
    }

    /// DestroyDomain.
    pub async fn destroy(&self, request: pb::DestroyDomainRequest) -> Result<Usage, PluginError> {
        if let Some((usage, _)) = self.destroyed().by_id.get(&request.domain_id) {
            return Ok(*usage);
        }
        let domain = self.domain(&request.domain_id)?;
        let usage = domain.destroy(&request.reason).await;
        let reason = match &domain.lock().phase {
            Phase::Destroyed { reason, .. } => reason.clone(),
            Phase::Live | Phase::Destroying => request.reason.clone(),
        };
        // Remembered before it leaves the live map, so there is no moment it is unknown.
        let mut destroyed = self.destroyed();
        if destroyed
            .by_id
            .insert(domain.id.clone(), (usage, reason))
            .is_none()
        {
            destroyed.order.push_back(domain.id.clone());
        }
        while destroyed.order.len() > DESTROYED_REMEMBERED_MAX {
            if let Some(oldest) = destroyed.order.pop_front() {
                destroyed.by_id.remove(&oldest);
            }
        }
        drop(destroyed);
        self.live().remove(&domain.id);
        Ok(usage)
    }

    /// InspectTask.
    pub fn inspect(
        &self,
        request: pb::InspectTaskRequest,
    ) -> Result<pb::InspectTaskResponse, PluginError> {
        let domain = self.domain(&request.domain_id)?;
        let state = domain.lock();
        let task = state
            .task(&request.task_id)
            .ok_or_else(|| domain.missing_task(&request.task_id))?;
        Ok(pb::InspectTaskResponse {
            state: task.state().into(),
            exit: task.ended.clone(),
            usage: Some(task.usage(Instant::now())),
            ..Default::default()
        })
    }

    /// Destroys every domain, for a clean exit: no task outlives the plugin.
    pub async fn shutdown(&self) {
        let ids: Vec<String> = self.live().keys().cloned().collect();
        for domain_id in ids {
            let request = pb::DestroyDomainRequest {
                domain_id,
                reason: "the Process task manager is shutting down".into(),
            };
            let _ = self.destroy(request).await;
        }
    }
}

#[tonic::async_trait]
impl TaskManager for ProcessTaskManager {
    type StreamOutputStream = EventStream;

    async fn get_capabilities(
        &self,
        _request: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::GetCapabilitiesResponse>, Status> {
        Ok(Response::new(self.capabilities()))
    }

    async fn create_domain(
        &self,
        request: Request<pb::CreateDomainRequest>,
    ) -> Result<Response<pb::CreateDomainResponse>, Status> {
        Ok(Response::new(self.create(request.into_inner())?))
    }

    async fn deploy_task(
        &self,
        request: Request<pb::DeployTaskRequest>,
    ) -> Result<Response<pb::DeployTaskResponse>, Status> {
        self.deploy(request.into_inner()).await?;
        Ok(Response::new(pb::DeployTaskResponse {}))
    }

    async fn stream_output(
        &self,
        request: Request<pb::StreamOutputRequest>,
    ) -> Result<Response<Self::StreamOutputStream>, Status> {
        Ok(Response::new(self.watch(request.into_inner())?))
    }

    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        Ok(Response::new(self.usage(request.into_inner())?))
    }

    async fn stop_task(
        &self,
        request: Request<pb::StopTaskRequest>,
    ) -> Result<Response<pb::StopTaskResponse>, Status> {
        self.stop(request.into_inner()).await?;
        Ok(Response::new(pb::StopTaskResponse {}))
    }

    async fn destroy_domain(
        &self,
        request: Request<pb::DestroyDomainRequest>,
    ) -> Result<Response<pb::DestroyDomainResponse>, Status> {
        let usage = self.destroy(request.into_inner()).await?;
        Ok(Response::new(pb::DestroyDomainResponse {
            usage: Some(usage),
        }))
    }

    async fn inspect_task(
        &self,
        request: Request<pb::InspectTaskRequest>,
    ) -> Result<Response<pb::InspectTaskResponse>, Status> {
        Ok(Response::new(self.inspect(request.into_inner())?))
    }
}
