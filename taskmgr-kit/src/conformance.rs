//! # The task manager conformance suite
//!
//! The contract of the task manager plugin interface
//! (`schemas/proto/xenoserve/taskmanager/v1/taskmanager.proto`), as behaviour a user of the
//! platform relies on, checked against a running task manager. Every task manager runs it in
//! its own tests: the built-in Wasm and Linux VM managers in process, external plugins over
//! their socket. Passing it is what lets an environment manager use a task manager without
//! knowing which one it is.
//!
//! The suite drives a [`DynTaskManager`] and needs programs that behave in known ways in the
//! environment under test: print `hello`, exit with a given status, spin, and so on. The task
//! manager's test supplies them by implementing [`Guests`]. Each check (see [`Check`] for the
//! list and what each asserts) creates its own domains with unique ids, bounds every wait, and
//! destroys its domains when it ends, passed or failed. Checks run one after another; most take
//! milliseconds, the metering checks measure for a few seconds, and the whole suite takes about
//! six seconds against the Process plugin.
//!
//! ## Running it against your plugin
//!
//! 1. Write guests for your environment: a type implementing [`Guests`] whose methods return
//!    a [`Guest`] (a `TaskDescription` document and its payloads) for each behaviour. Build the
//!    documents with [`TaskDescription`](xeno_schemas::documents::TaskDescription) and
//!    [`Document::to_xml`](xeno_schemas::Document::to_xml), and name payloads by their
//!    SHA-256 in lowercase hex.
//! 2. In an integration test, start your plugin (for an external one, its binary on a socket in
//!    a temporary directory, killed when the test ends however it ends), connect with
//!    [`RemoteTaskManager::connect`](xeno_taskmgr_kit::RemoteTaskManager::connect)
//!    (or use your built-in manager directly), and run [`run_suite`]:
//!
//! ```no_run
//! use std::sync::Arc;
//! use xeno_taskmgr_kit::{DynTaskManager, RemoteTaskManager};
//! use xeno_taskmgr_kit::conformance::{self, BusyboxGuests, Guest, Guests};
//!
//! // A plugin running static Linux executables can use the ready-made busybox guests; another
//! // environment writes its own, each method returning a task with the behaviour named:
//! struct MyGuests(BusyboxGuests);
//!
//! impl Guests for MyGuests {
//!     fn env_type(&self) -> &str { "MyLinux" }
//!     fn hello(&self) -> Guest { self.0.script("printf 'hello\\n'", &[], &[]) }
//!     fn exit_code(&self, code: u8) -> Guest { self.0.exit_code(code) }
//!     fn echo_args_env(&self, args: &[&str], greeting: &str) -> Guest {
//!         self.0.echo_args_env(args, greeting)
//!     }
//!     fn stderr(&self) -> Guest { self.0.stderr() }
//!     fn spin(&self) -> Guest { self.0.spin() }
//!     fn flood(&self, lines: u32) -> Guest { self.0.flood(lines) }
//! }
//!
//! // The body of a #[tokio::test(flavor = "multi_thread")]:
//! async fn my_plugin_conforms() {
//!     // ... start the plugin on /tmp/xyz/plugin.sock ...
//!     let plugin: DynTaskManager = Arc::new(
//!         RemoteTaskManager::connect("unix:/tmp/xyz/plugin.sock").await.expect("plugin reachable"),
//!     );
//!     let busybox = std::fs::read("/bin/busybox").expect("Debian's busybox-static");
//!     let guests = MyGuests(BusyboxGuests::new("MyLinux", busybox));
//!     let report = conformance::run_suite(plugin, &guests).await.unwrap_or_else(|failed| panic!("{failed}"));
//!     println!("{report}");
//! }
//! ```
//!
//! The suite is this kit's `conformance` feature: add the kit to your crate's
//! `[dev-dependencies]` with it (`xeno-taskmgr-kit = { path = "../taskmgr-kit", features =
//! ["conformance"] }`). A complete worked example is the Process plugin's
//! test, `taskmgr-process/tests/process_plugin.rs`, with its guests written as `/bin/sh` scripts
//! in `taskmgr-process/tests/support/mod.rs`.
//!
//! A failure names the check, what it expected and what happened, with the events the stream
//! had delivered. To run one check while fixing it, use [`run_check`] with one [`Check`].
//!
//! Where the contract leaves a choice, the suite accepts either: whether stdout and stderr
//! share one offset sequence per task or have one each; whether output beyond the cap drops the
//! oldest or the newest bytes; whether StreamOutput of an unknown domain fails at the call or
//! as the stream's first item; whether a resumed task's TaskStarted is sent again; whether
//! DeployTask into a destroyed domain is FAILED_PRECONDITION or NOT_FOUND.

mod busybox;
mod checks;
mod events;
mod guests;
mod report;
mod rpc;

pub use busybox::BusyboxGuests;
pub use guests::{FLOOD_LINE, Guest, Guests, default_limits};
pub use report::{Check, CheckResult, Failure, Outcome, Report, SuiteFailed};

use crate::DynTaskManager;
use std::time::Instant;

/// Runs every check in [`Check::ALL`] against `task_manager`, each to its end whatever the
/// others did. Returns the report if none failed.
pub async fn run_suite(
    task_manager: DynTaskManager,
    guests: &dyn Guests,
) -> Result<Report, SuiteFailed> {
    let mut report = Report::default();
    for check in Check::ALL {
        let started = Instant::now();
        let outcome = run_check(&task_manager, guests, check).await;
        report.results.push(CheckResult {
            check,
            elapsed: started.elapsed(),
            outcome,
        });
    }
    if report.failures().next().is_some() {
        Err(SuiteFailed { report })
    } else {
        Ok(report)
    }
}

/// Runs one check, then destroys the domains it created.
pub async fn run_check(
    task_manager: &DynTaskManager,
    guests: &dyn Guests,
    check: Check,
) -> Result<Outcome, Failure> {
    let ctx = rpc::Ctx::new(task_manager, guests, check);
    let outcome = checks::run(&ctx, check).await;
    ctx.clean_up().await;
    outcome.map_err(|message| Failure { check, message })
}
