//! # xeno-taskmgr-kit: one task manager, many execution environments
//!
//! In the XenoServer Open Platform a server's environment manager hands each session to a
//! *task manager* for its execution environment (paper, section V-B, "task management
//! interfaces"). Every task manager speaks the same plugin interface,
//! `xenoserve.taskmanager.v1.TaskManager`, and every one must keep the same rules: ids are
//! bounded, CreateDomain and DestroyDomain are idempotent, DeployTask checks each payload
//! against its hash and the document, a usage report reads its tasks before its total (so the
//! total always covers them), a stop that times out still ends the task, output and lifecycle
//! events are numbered and bounded.
//!
//! This crate keeps those rules once. [`Host`] implements the interface over a [`Backend`], the
//! small trait an execution environment implements: what it runs ([`Backend::capabilities`]),
//! how a domain's resources are made ([`Backend::create_resources`]), how a checked task is
//! started ([`Backend::deploy`]) and stopped ([`Control`]), and where its memory is metered
//! from ([`Resources`]). The Wasm task manager (`xeno-taskmgr-wasm`), the Linux one
//! (`xeno-taskmgr-vm`) and the Process example plugin (`xeno-taskmgr-process`) are backends.
//! [`plugin`] is the scaffolding of a plugin binary, and the `conformance` feature adds the
//! conformance suite every task manager's tests run (`conformance::run_suite`).
//!
//! ## Example
//!
//! A backend that runs nothing (its tasks end at once) is a complete task manager:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use xeno_schemas::documents::Program;
//! use xeno_taskmgr_kit::Error;
//! use xeno_taskmgr_kit::rate::CpuLimits;
//! use xeno_taskmgr_kit::{
//!     Backend, Capabilities, Control, Deployment, DomainSettings, Host, HostLimits, Outcome,
//!     Resources,
//! };
//!
//! struct Nothing;
//! #[derive(Default)]
//! struct NoControl;
//! impl Control for NoControl {
//!     fn stop(&self, _reason: &str) {}
//!     fn abandon(&self, _timeout: Duration) -> String {
//!         "it had nothing to stop".to_owned()
//!     }
//! }
//! struct NoResources;
//! impl Resources for NoResources {
//!     fn memory(&self, _until: Instant) -> (u64, u64) {
//!         (0, 0)
//!     }
//! }
//!
//! impl Backend for Nothing {
//!     type Config = ();
//!     type StartError = std::convert::Infallible;
//!     type Resources = NoResources;
//!     type Control = NoControl;
//!     type Gate = ();
//!     const ENV_TYPE: &'static str = "Nothing";
//!     const SCRATCH_PREFIX: &'static str = "xeno-nothing-";
//!
//!     fn start((): ()) -> Result<Self, Self::StartError> {
//!         Ok(Nothing)
//!     }
//!     fn config(&self) -> &() {
//!         &()
//!     }
//!     fn limits(&self) -> HostLimits {
//!         HostLimits::default()
//!     }
//!     fn capabilities(&self) -> Capabilities {
//!         Capabilities { name: "nothing".to_owned(), ..Capabilities::default() }
//!     }
//!     fn versions(&self) -> Vec<String> {
//!         vec!["1".to_owned()]
//!     }
//!     fn memory_bytes(&self, memory_mb: u64) -> Result<u64, Error> {
//!         Ok(memory_mb << 20)
//!     }
//!     fn cpu_gate(_: CpuLimits, _: u64, _: Instant) -> Option<()> {
//!         None
//!     }
//!     async fn create_resources(
//!         &self,
//!         _: &DomainSettings,
//!         _: &xeno_schemas::proto::taskmanager::v1::DomainLimits,
//!     ) -> Result<NoResources, Error> {
//!         Ok(NoResources)
//!     }
//!     fn check_program(&self, _: &Program) -> Result<(), Error> {
//!         Ok(())
//!     }
//!     async fn deploy(_: &Host<Self>, deployment: Deployment<Self>) -> Result<(), Error> {
//!         let domain = &deployment.domain;
//!         let task = domain.new_task(&deployment.task_id, deployment.fingerprint, Instant::now());
//!         domain.register_task(&task, &deployment.output_cap)?;
//!         domain.finish_task(&task, Outcome::Exited(0));
//!         Ok(())
//!     }
//! }
//!
//! let manager: Host<Nothing> = Host::new(()).unwrap();
//! assert_eq!(manager.limits().domains_max, HostLimits::default().domains_max);
//! ```

mod backend;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
mod domain;
pub mod domains;
mod error;
pub mod events;
mod host;
pub mod metering;
pub mod payload;
pub mod plugin;
pub mod rate;
mod remote;
pub mod scratch;
mod service;
mod stream;
mod sync;
mod task;

pub use backend::{Backend, Capabilities, Control, DomainSettings, HostLimits, Outcome, Resources};
pub use domain::Domain;
pub use error::Error;
pub use host::{Deployment, FROM_OFFSET_TASKS_MAX, Host, ID_BYTES_MAX, REASON_BYTES_MAX, check_id};
pub use remote::{
    DynTaskManager, EventStream, MESSAGE_BYTES_MAX, RemoteTaskManager, TaskManager,
    TaskManagerServer, serve_unix,
};
pub use sync::lock;
pub use task::{Task, TaskSlot};
