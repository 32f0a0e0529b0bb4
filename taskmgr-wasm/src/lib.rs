//! # xeno-taskmgr-wasm: the WebAssembly task manager
//!
//! In the XenoServer Open Platform, a XenoServer's environment manager admits sessions and
//! hands each one to a *task manager* for its execution environment (paper, section V-B,
//! "task management interfaces"). This crate is the task manager for `EnvType` `Wasm`: each
//! session is a *domain*, and each task deployed into it is a WASI program (a core module,
//! WASI preview 1, or a component, WASI preview 2) run by Wasmtime 48.0.8. It implements the
//! plugin interface, the `xenoserve.taskmanager.v1.TaskManager` gRPC service, as the Rust
//! trait [`xeno_taskmgr_kit::TaskManager`], so the environment manager can hold it in
//! process (`Arc<dyn TaskManager<StreamOutputStream = EventStream>>`), and the
//! `xeno-taskmgr-wasm` binary serves the same thing on a Unix socket as an external plugin.
//!
//! What a domain enforces and meters, since clients pay for exactly what they use:
//! - **CPU**: each task's CPU time is its own thread CPU time, read around every poll of its
//!   future; `cpu_msps` is a token bucket shared by the domain's tasks, which Wasmtime's fuel
//!   yields let the scheduler apply every few hundred microseconds (see `rate.rs`). Fuel is
//!   counted beside it as a deterministic measure of work.
//! - **Memory**: `memory_mb` across the domain's tasks, through Wasmtime's resource limiter;
//!   growth past it fails inside the guest.
//! - **Output**: stdout and stderr are streamed as offset-numbered chunks and kept up to a cap
//!   per task; a flood or a slow reader costs bounded memory and never blocks a task.
//! - **Files**: only the domain's scratch directory, preopened as `/`.
//!
//! Usage (`cpu_time_us`, `fuel`, `memory_mb_ms`, `memory_peak_bytes`, `output_bytes`,
//! `wall_time_ms`) is cumulative and never decreases. Every limit the task manager keeps for
//! itself is a field of [`WasmConfig`] with its reason and default.
//!
//! ## Design
//!
//! - **Threads.** [`WasmTaskManager::new`] starts a tokio runtime of its own (one thread per
//!   CPU by default) and runs every task on it as a future, so tasks never take the threads of
//!   the caller's runtime, and the manager can be built inside one. Compilation and payload
//!   hashing use that runtime's bounded blocking pool.
//! - **Yielding: fuel only.** Fuel has to be on to count work, and Wasmtime's
//!   `fuel_async_yield_interval` turns the same counter into pre-emption: a task yields every
//!   `fuel_yield_interval` units (50-350 µs of CPU at the default). Epoch interruption is off:
//!   it would add a second check to every loop, and fuel with epochs measured up to 1.81x
//!   slower than neither. A yield that keeps its budget is resumed at once, without a trip
//!   through tokio, for up to `poll_quantum_us` (see `metered.rs`): the budget, stop and
//!   deadline checks run at every yield, the scheduler's cost only once per quantum.
//!   `benches/slowdown.rs` measures the result against plain Wasmtime.
//! - **CPU time** is the thread CPU clock (`CLOCK_THREAD_CPUTIME_ID`) read before and after
//!   every poll of a task's future: instantiation, Wasm, and the host calls made for it (WASI
//!   file operations run inline on the task's thread so that they count). Not counted:
//!   compilation (cached and shared between tasks), time spent waiting, and the scheduler's
//!   own work between polls (about 5% on top, measured with a task at 150 msps).
//! - **CPU rate.** Each poll first asks the domain's token bucket (`rate.rs`) for budget; a task
//!   whose domain has none is not polled but parked on a timer (the first in line) or in the
//!   domain's FIFO queue, and the slice it ran is charged afterwards, so the long-run rate is
//!   exact whatever the slice lengths. `cpu_msps = 0` means no rate limit (the environment
//!   manager's admission control decides). Burst: see `rate.rs`.
//! - **Memory** is each task's linear memory, charged through Wasmtime's resource limiter to
//!   the task and its domain, refused past the domain's `memory_mb` (MiB), released when the
//!   task ends; `memory_mb = 0` means the per-instance maximum. The pooling allocator holds
//!   [`WasmConfig::tasks_max`] instances, one linear memory each.
//! - **Output** goes from WASI straight into the domain's events (`events.rs`): one offset
//!   sequence per task shared by stdout and stderr, the first bytes kept up to the task's cap,
//!   recent events in a log bounded in bytes and count. `StreamOutput` replays what is kept,
//!   then the log, then (with `follow`) live events: a reader in time gets every byte, one that
//!   comes later or falls behind gets the kept head and sees the rest as a gap in offsets.
//! - **Files**: the scratch directory is preopened as `/`; see `guest.rs` for `WorkingDir`.
//! - **Stopping**: StopTask, DestroyDomain and `Limits/WallClockSeconds` end a task at its next
//!   fuel yield, even while it is parked for budget.
//! - **Not enforced**: `disk_mb` (the scratch directory has no quota) and `net_kbps` (tasks
//!   have no network at all: sockets and name lookup are denied). Fuel is read at every call
//!   from Wasm into the host and at the end, so a task that never calls the host reports its
//!   fuel when it ends.
//!
//! ## Example
//!
//! ```
//! use sha2::{Digest, Sha256};
//! use tokio_stream::StreamExt;
//! use xeno_schemas::proto::common::v1::Payload;
//! use xeno_schemas::proto::taskmanager::v1::{self as pb, domain_event::Event};
//! use xeno_taskmgr_kit::TaskManager;
//! use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let manager = WasmTaskManager::new(WasmConfig { tasks_max: 16, ..WasmConfig::default() })?;
//! manager
//!     .create_domain(tonic::Request::new(pb::CreateDomainRequest {
//!         domain_id: "session-1".into(),
//!         env_type: "Wasm".into(),
//!         limits: Some(pb::DomainLimits { cpu_msps: 100, memory_mb: 16, ..Default::default() }),
//!         ..Default::default()
//!     }))
//!     .await?;
//!
//! // A module that prints "hi\n" through WASI's fd_write.
//! let module = wat::parse_str(r#"(module
//!     (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
//!     (memory (export "memory") 1)
//!     (data (i32.const 16) "hi\n")
//!     (func (export "_start")
//!         (i32.store (i32.const 0) (i32.const 16)) (i32.store (i32.const 4) (i32.const 3))
//!         (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#)?;
//! let sha256 = hex::encode(Sha256::digest(&module));
//! let mut events = manager
//!     .stream_output(tonic::Request::new(pb::StreamOutputRequest {
//!         domain_id: "session-1".into(),
//!         follow: true,
//!         ..Default::default()
//!     }))
//!     .await?
//!     .into_inner();
//! manager
//!     .deploy_task(tonic::Request::new(pb::DeployTaskRequest {
//!         domain_id: "session-1".into(),
//!         task_id: "hello".into(),
//!         task_xml: format!(r#"<TaskDescription><WasmModule sha256="{sha256}"/></TaskDescription>"#),
//!         payloads: vec![Payload { sha256, data: module }],
//!     }))
//!     .await?;
//!
//! let mut stdout = Vec::new();
//! while let Some(event) = events.next().await {
//!     match event?.event {
//!         Some(Event::Output(chunk)) => stdout.extend(chunk.data),
//!         Some(Event::TaskEnded(ended)) => {
//!             assert_eq!(ended.exit.expect("exit").reason, "exit 0");
//!             break;
//!         }
//!         _ => {}
//!     }
//! }
//! assert_eq!(stdout, b"hi\n");
//!
//! let usage = manager
//!     .destroy_domain(tonic::Request::new(pb::DestroyDomainRequest {
//!         domain_id: "session-1".into(),
//!         reason: "session over".into(),
//!     }))
//!     .await?
//!     .into_inner()
//!     .usage
//!     .expect("usage");
//! assert!(usage.fuel > 0 && usage.output_bytes == 3);
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

mod cache;
mod compile_queue;
mod compiler;
mod config;
mod deploy;
mod engine;
mod error;
mod guest;
mod host;
mod interrupt;
mod limiter;
mod manager;
mod metered;
mod output;
mod rate;
mod sleep;
mod task;

pub use cache::CacheStats;
pub use config::{ConfigError, WASM32_MEMORY_MB_MAX, WasmConfig};
pub use error::{Error, StartError};
pub use manager::{ENV_TYPE, VERSION, WasmBackend, WasmTaskManager};

/// A domain of this task manager.
pub(crate) type Domain = xeno_taskmgr_kit::Domain<WasmBackend>;
/// A task of this task manager.
pub(crate) type Task = xeno_taskmgr_kit::Task<WasmBackend>;
