//! What an execution environment gives the kit: the [`Backend`] trait, the [`Control`] a
//! running task is stopped through, the per-domain [`Resources`], and the limits the host
//! keeps for it ([`HostLimits`]).

use crate::Error;
use crate::host::{Deployment, Host};
use crate::rate::CpuLimits;
use std::future::Future;
use std::time::{Duration, Instant};
use xeno_schemas::documents::Program;
use xeno_schemas::proto::taskmanager::v1 as pb;

/// One execution environment behind the plugin interface (Wasm under Wasmtime, Linux domains on
/// KVM, host processes). The [`Host`] does everything the interface asks of every task manager
/// (id checks, idempotent create and destroy, payload checks, the usage-report ordering, stop
/// time-outs, event bookkeeping); a backend says what it runs and how.
pub trait Backend: Send + Sync + Sized + 'static {
    /// What the backend is built from (its own configuration type, with documented defaults).
    type Config: Send + Sync + 'static;
    /// Why the backend could not start.
    type StartError: Send + 'static;
    /// What each domain holds of the backend's (a VM, a memory allowance, nothing).
    type Resources: Resources;
    /// How a running task is asked to stop.
    type Control: Control;
    /// A domain's CPU rate as the backend's tasks wait on it (a token bucket over
    /// [`CpuBudget`](crate::rate::CpuBudget)).
    type Gate: Send + Sync + 'static;

    /// The `EnvType` served, as the requirements document names it.
    const ENV_TYPE: &'static str;
    /// The prefix of the scratch directories the backend makes for domains.
    const SCRATCH_PREFIX: &'static str;

    /// Builds the backend (opens devices, builds engines, starts threads). Called once by
    /// [`Host::new`], from inside a tokio runtime or not.
    fn start(config: Self::Config) -> Result<Self, Self::StartError>;

    /// The configuration it runs with.
    fn config(&self) -> &Self::Config;

    /// The limits the host keeps on its behalf, read once when the host starts.
    fn limits(&self) -> HostLimits;

    /// What it runs: the parts of GetCapabilities only the backend knows.
    fn capabilities(&self) -> Capabilities;

    /// The versions of its environment offered (`EnvKernel`); the first is the default.
    fn versions(&self) -> Vec<String>;

    /// The bytes of memory a domain asking for `memory_mb` (0: the default) gets, or why it
    /// cannot have them here.
    fn memory_bytes(&self, memory_mb: u64) -> Result<u64, Error>;

    /// Backend-specific checks of a CreateDomain request, after the host's own (EnvType,
    /// version, limits) and before anything is made. The default accepts.
    fn check_domain(&self, request: &pb::CreateDomainRequest) -> Result<(), Error> {
        let _ = request;
        Ok(())
    }

    /// The CPU gate for a domain with `limits`, or `None` when it has no rate.
    fn cpu_gate(limits: CpuLimits, window_ms: u64, now: Instant) -> Option<Self::Gate>;

    /// Makes a new domain's resources, for its resolved `settings` and the `limits` it asked
    /// for (the ones the host does not resolve, such as `disk_mb`, are the backend's to apply).
    fn create_resources(
        &self,
        settings: &DomainSettings,
        limits: &pb::DomainLimits,
    ) -> impl Future<Output = Result<Self::Resources, Error>> + Send;

    /// Whether it runs `program` at all; refused with UNIMPLEMENTED before any payload is
    /// hashed.
    fn check_program(&self, program: &Program) -> Result<(), Error>;

    /// Starts a task the host has checked, with its slot among the manager's running tasks;
    /// returns once the task runs (or why it cannot). The backend registers the task with its
    /// domain ([`Domain::register_task`](crate::Domain::register_task)) before the task can
    /// write anything, and ends it with [`Domain::finish_task`](crate::Domain::finish_task).
    fn deploy(
        host: &Host<Self>,
        deployment: Deployment<Self>,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// Where the host's blocking work (scratch directories, payload hashing) runs; the
    /// default is the caller's runtime's blocking pool.
    fn blocking_runtime(&self) -> Option<&tokio::runtime::Handle> {
        None
    }

    /// Called once when the last handle to the host goes, after every task was asked to stop
    /// and before the domains' scratch directories are removed. Must not block.
    fn shut_down(&self) {}
}

/// A domain's share of a backend: what the domain's memory is metered from.
pub trait Resources: Send + Sync + 'static {
    /// Memory integrated over time until `until` (MiB·ms) and its peak (bytes).
    fn memory(&self, until: Instant) -> (u64, u64);
}

/// How a running task is asked to stop.
pub trait Control: Default + Send + Sync + 'static {
    /// Asks the task to stop soon, with the reason its end will carry.
    fn stop(&self, reason: &str);

    /// Called when the task did not end within `timeout` of [`Control::stop`]; does what the
    /// backend can to reclaim it and returns what the task's end says happened.
    fn abandon(&self, timeout: Duration) -> String;
}

/// How a task ended, as the backend saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It exited by itself with this status.
    Exited(i32),
    /// It failed (a trap, a fault, a limit), with the reason.
    Failed(String),
    /// It was stopped, with the reason.
    Stopped(String),
}

/// The parts of GetCapabilities the backend fills.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// The plugin's name (its crate, as a rule).
    pub name: String,
    /// The plugin's version.
    pub version: String,
    /// The `Program` kinds it runs.
    pub program_kinds: Vec<String>,
    /// Whether its usage reports count fuel.
    pub reports_fuel: bool,
    /// The system calls it serves, where that is how programs reach it.
    pub system_calls: Vec<pb::SystemCall>,
    /// The root file system images it offers.
    pub images: Vec<pb::Image>,
    /// Most processes one domain holds (0: no process model of its own).
    pub processes_max: u32,
}

/// The limits the host keeps for a backend, taken from the backend's configuration (each field
/// is documented there). The defaults are the ones the task managers share.
#[derive(Debug, Clone)]
pub struct HostLimits {
    /// Most domains held at once.
    pub domains_max: u32,
    /// Destroyed domains remembered for repeated DestroyDomain calls.
    pub destroyed_domains_kept: usize,
    /// Most tasks running at once across every domain.
    pub tasks_max: u32,
    /// Most tasks running at once in one domain (the default and the ceiling).
    pub tasks_per_domain_max: u32,
    /// Ended tasks a domain remembers.
    pub ended_tasks_kept: usize,
    /// Largest total of payload bytes in one DeployTask.
    pub payload_bytes_max: u64,
    /// Output kept per task when neither the task nor the domain says.
    pub task_output_bytes_default: u64,
    /// Ceiling on the output kept per task.
    pub task_output_bytes_max: u64,
    /// Ceiling on the output kept across one domain's tasks.
    pub domain_output_bytes_max: u64,
    /// Bytes of recent events a domain buffers for readers.
    pub stream_buffer_bytes: usize,
    /// Count of recent events a domain buffers.
    pub stream_buffer_events: usize,
    /// Readers one domain may have open at once.
    pub stream_readers_max: usize,
    /// Depth of a domain's CPU token bucket, ms of its own rate.
    pub cpu_bucket_window_ms: u64,
    /// How long StopTask and DestroyDomain wait for a task to end.
    pub stop_timeout: Duration,
}

/// A domain's limits, resolved against the host's.
#[derive(Debug, Clone)]
pub struct DomainSettings {
    /// Its memory allowance, bytes.
    pub memory_bytes: u64,
    /// The version of the environment it presents.
    pub version: String,
    /// The domain's `output_bytes_max` (per task), if it set one.
    pub task_output_bytes: Option<u64>,
    /// Most tasks it runs at once.
    pub tasks_max: u32,
    /// Ended tasks it remembers.
    pub ended_tasks_kept: usize,
    /// The session's `EnvironmentalRequirements` document (empty when none was given), for
    /// what only the backend reads (an image, extensions).
    pub requirements_xml: String,
}

const MIB: u64 = 1024 * 1024;

impl Default for HostLimits {
    fn default() -> Self {
        HostLimits {
            domains_max: 64,
            destroyed_domains_kept: 65536,
            tasks_max: 256,
            tasks_per_domain_max: 16,
            ended_tasks_kept: 256,
            payload_bytes_max: 256 * MIB,
            task_output_bytes_default: MIB,
            task_output_bytes_max: 64 * MIB,
            domain_output_bytes_max: 64 * MIB,
            stream_buffer_bytes: 4 * 1024 * 1024,
            stream_buffer_events: 8192,
            stream_readers_max: 64,
            cpu_bucket_window_ms: 500,
            stop_timeout: Duration::from_secs(5),
        }
    }
}

/// The [`HostLimits`] of a backend configuration that has a field of the same name for each
/// (and `stop_timeout_ms` in milliseconds), as the built-in task managers' configurations do:
/// a backend's [`Backend::limits`] is then `host_limits!(self.config)`.
#[macro_export]
macro_rules! host_limits {
    ($config:expr) => {{
        let config = &$config;
        $crate::HostLimits {
            domains_max: config.domains_max,
            destroyed_domains_kept: config.destroyed_domains_kept,
            tasks_max: config.tasks_max,
            tasks_per_domain_max: config.tasks_per_domain_max,
            ended_tasks_kept: config.ended_tasks_kept,
            payload_bytes_max: config.payload_bytes_max,
            task_output_bytes_default: config.task_output_bytes_default,
            task_output_bytes_max: config.task_output_bytes_max,
            domain_output_bytes_max: config.domain_output_bytes_max,
            stream_buffer_bytes: config.stream_buffer_bytes,
            stream_buffer_events: config.stream_buffer_events,
            stream_readers_max: config.stream_readers_max,
            cpu_bucket_window_ms: config.cpu_bucket_window_ms,
            stop_timeout: ::std::time::Duration::from_millis(config.stop_timeout_ms),
        }
    }};
}
