//! # xeno-taskmgr-process: the Process task manager, an example plugin
//!
//! This is the task manager plugin an outside author reads first: a backend of the
//! task-manager kit ([`xeno_taskmgr_kit::Backend`]) in a few hundred lines, served as an
//! external plugin by the `xeno-process-plugin` binary (`src/main.rs`, a page long) on a Unix
//! socket, and reached by an environment manager through
//! [`RemoteTaskManager`](xeno_taskmgr_kit::RemoteTaskManager):
//!
//! ```sh
//! xeno-process-plugin --socket /run/xeno/process.sock
//! ```
//!
//! It serves the `EnvType` `Process`: each task is a native executable run as an ordinary host
//! process under rlimits. Everything the plugin interface asks of every task manager (ids,
//! idempotence, payload checks, output streams, usage reports, stops, destruction) is the
//! kit's; this crate says how a process is started, metered and stopped.
//!
//! ## Not an isolation boundary
//!
//! Tasks run as the plugin's own user, see the host's whole filesystem, network and process
//! table, and can do whatever that user can. The rlimits bound a careless program, not a hostile
//! one: RLIMIT_AS is per process, RLIMIT_NPROC counts every process of the user (and is ignored
//! for root), RLIMIT_FSIZE bounds each file rather than the total, and nothing limits the
//! network. Use it for trusted programs, for development and as an example of the plugin API;
//! untrusted code belongs in the Wasm and Linux task managers, whose domains are isolated.
//!
//! ## What it does
//!
//! - **GetCapabilities**: env type `Process`; one version, the host's kernel release (what the
//!   programs run against); program kinds `Executable` and `ExecutablePath`; no fuel.
//! - **DeployTask** (`deploy.rs`, `supervisor.rs`): writes the task's `Files` and its
//!   `Executable` payload into the session directory and spawns the program in a process group
//!   of its own under rlimits (RLIMIT_AS from `memory_mb`, RLIMIT_FSIZE from `disk_mb`,
//!   RLIMIT_NOFILE, RLIMIT_NPROC, RLIMIT_CORE 0); `disk_mb` also bounds the bytes of files one
//!   deploy brings. It returns once the process runs. Its stdout and stderr go to the domain's
//!   events.
//! - **Usage** (`meter.rs`, `group.rs`, `procfs.rs`): CPU time from `/proc/<pid>/stat` of every
//!   process in the task's group while it runs, and from the leader's `wait4` rusage at exit,
//!   whichever is larger; memory is the group's resident size sampled every 10 ms.
//! - **CPU rate** (`meter.rs`): a duty cycle holds each domain to its `cpu_msps`: when the
//!   domain has spent its budget its process groups are stopped with SIGSTOP, and continued
//!   with SIGCONT once the budget refills.
//! - **Stopping** (`control.rs`): StopTask, DestroyDomain and `WallClockSeconds` SIGKILL the
//!   task's process group; the task ends STOPPED with the reason.
//!
//! A task ends EXITED with its exit code when its leader exits, FAILED ("killed by signal 11
//! (SIGSEGV)") when a signal the plugin did not send kills it, and STOPPED when the plugin
//! killed it. When the leader ends, whatever is left of its process group is killed. If the
//! plugin itself dies, the kernel kills each task's leader (`PR_SET_PDEATHSIG`); on SIGTERM it
//! destroys every domain before exiting.
//!
//! ## Example
//!
//! ```
//! use xeno_schemas::proto::taskmanager::v1 as pb;
//! use xeno_taskmgr_kit::TaskManager;
//! use xeno_taskmgr_process::{ProcessConfig, ProcessTaskManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let manager = ProcessTaskManager::new(ProcessConfig::default())?;
//! let capabilities = manager
//!     .get_capabilities(tonic::Request::new(pb::GetCapabilitiesRequest {}))
//!     .await?
//!     .into_inner();
//! assert_eq!(capabilities.env_types, ["Process"]);
//! # Ok(()) }
//! ```

mod config;
mod control;
mod deploy;
mod group;
mod manager;
mod meter;
mod procfs;
mod supervisor;

pub use config::ProcessConfig;
pub use manager::{ENV_TYPE, ProcessBackend, ProcessTaskManager};

/// A domain of this task manager.
pub(crate) type Domain = xeno_taskmgr_kit::Domain<ProcessBackend>;
/// A task of this task manager.
pub(crate) type Task = xeno_taskmgr_kit::Task<ProcessBackend>;
