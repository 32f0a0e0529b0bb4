//! Running one task's Wasm: its WASI context, its store (fuel, memory limiter, fuel
//! checkpoints), instantiation and the call, raced against stop requests and its wall-clock
//! limit, and how it ended.
//!
//! Filesystem: the domain's scratch directory is preopened as `/`, read-write, and nothing
//! else is; WASI resolves every path beneath a preopen, so `..`, absolute host paths and
//! symlinks leading out all fail. With `WorkingDir`, that directory is also preopened as `.`
//! (registered before `/`, so wasi-libc, which treats both names as the root of relative
//! lookups and prefers the later one, still resolves paths from the session root), `PWD` is
//! set to its session path unless the task sets `PWD` itself, and a component's
//! `wasi:cli/environment.initial-cwd` returns it. A C program that wants to start there calls
//! `chdir(getenv("PWD"))`.

use crate::cache::Compiled;
use crate::host::{ComponentHost, HostData, ModuleHost};
use crate::interrupt::{Interrupt, StopRequest};
use crate::limiter::TaskLimiter;
use crate::output::OutputPipe;
use std::future::Future;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{CallHook, Engine, Store, Trap};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};
use xeno_taskmgr_kit::Outcome;
use xeno_taskmgr_kit::metering::TaskMeter;
use xeno_taskmgr_kit::scratch;

/// Fuel a task starts with: effectively unlimited (years of CPU time at the fastest measured
/// rate of 21 M fuel per ms), so fuel counts work without ever ending a task.
pub(crate) const FUEL_INITIAL: u64 = 1 << 62;
/// Most random bytes a guest may ask for in one call (Wasmtime allows 64 MiB by default, a
/// host allocation the guest controls).
const RANDOM_BYTES_MAX: u64 = 1 << 20;
const INSTANTIATION_FAILED: &str = "instantiation failed";

/// Everything a task needs to run.
pub(crate) struct Launch {
    pub(crate) engine: Engine,
    pub(crate) compiled: Arc<Compiled>,
    pub(crate) entry: String,
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) scratch: PathBuf,
    /// The working directory relative to the scratch directory, if the task gave one.
    pub(crate) working_dir: Option<String>,
    pub(crate) stdout: OutputPipe,
    pub(crate) stderr: OutputPipe,
    pub(crate) limiter: TaskLimiter,
    pub(crate) meter: Arc<TaskMeter>,
    pub(crate) interrupt: Arc<Interrupt>,
    /// When the wall-clock limit passes, and the limit in seconds (for the reason).
    pub(crate) wall_clock: Option<(Instant, u64)>,
    pub(crate) fuel_yield_interval: u64,
}

enum Ended<T> {
    Returned(T),
    Stopped(StopRequest),
    WallClock,
}

pub(crate) async fn run(launch: Launch) -> Outcome {
    let builder = match wasi_builder(&launch) {
        Ok(builder) => builder,
        Err(reason) => return Outcome::Failed(reason),
    };
    let compiled = Arc::clone(&launch.compiled);
    match compiled.as_ref() {
        Compiled::Module { pre, .. } => run_module(launch, builder, pre).await,
        Compiled::Component { pre } => run_component(launch, builder, pre).await,
    }
}

fn wasi_builder(launch: &Launch) -> Result<WasiCtxBuilder, String> {
    let mut builder = WasiCtxBuilder::new();
    builder
        .args(&launch.argv)
        .envs(&launch.env)
        .stdout(launch.stdout.clone())
        .stderr(launch.stderr.clone())
        // File operations run on the task's own thread, inside its metered poll, so their CPU
        // time is the task's; offloading them would hide it and cost 50-100 µs per call.
        .allow_blocking_current_thread(true)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .max_random_size(RANDOM_BYTES_MAX);
    let preopen_failed =
        |error: wasmtime::Error| format!("cannot open the scratch directory: {error:#}");
    if let Some(working_dir) = &launch.working_dir {
        // Opened beneath the session by a capability API, never by host path: a guest-made
        // symlink must not lead out (WASI reopens `/proc/self/fd/N`, this very directory).
        let dir = scratch::open_dir_beneath(&launch.scratch, std::path::Path::new(working_dir))
            .map_err(|error| format!("WorkingDir: {error}"))?;
        builder
            .preopened_dir(
                format!("/proc/self/fd/{}", dir.as_raw_fd()),
                ".",
                FsPerms::ReadWrite,
            )
            .map_err(preopen_failed)?;
        builder.initial_cwd(format!("/{working_dir}"));
    }
    builder
        .preopened_dir(&launch.scratch, "/", FsPerms::ReadWrite)
        .map_err(preopen_failed)?;
    Ok(builder)
}

fn configure<T: HostData>(store: &mut Store<T>, fuel_yield_interval: u64) -> wasmtime::Result<()> {
    store.limiter(|host| host.limiter());
    store.set_fuel(FUEL_INITIAL)?;
    store.fuel_async_yield_interval(Some(fuel_yield_interval))?;
    // Fuel is only readable while Wasm is not running: checkpoint it at every host call.
    store.call_hook(|context, hook| {
        if matches!(hook, CallHook::CallingHost)
            && let Ok(left) = context.get_fuel()
        {
            context
                .data()
                .meter()
                .checkpoint_fuel(FUEL_INITIAL.saturating_sub(left));
        }
        Ok(())
    });
    Ok(())
}

fn record_final_fuel<T: HostData>(store: &Store<T>, meter: &TaskMeter) {
    if let Ok(left) = store.get_fuel() {
        meter.checkpoint_fuel(FUEL_INITIAL.saturating_sub(left));
    }
}

/// Runs `work` until it returns, a stop is requested or the wall-clock limit passes; the work
/// is dropped (unwinding its Wasm) in the latter two cases.
async fn race<T>(
    work: impl Future<Output = T>,
    interrupt: &Interrupt,
    wall_clock: Option<(Instant, u64)>,
) -> Ended<T> {
    let deadline = async move {
        match wall_clock {
            Some((at, _)) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        biased;
        stop = interrupt.requested() => Ended::Stopped(stop),
        () = deadline => Ended::WallClock,
        returned = work => Ended::Returned(returned),
    }
}

fn ended_outcome(ended: Ended<Outcome>, wall_clock: Option<(Instant, u64)>) -> Outcome {
    match ended {
        Ended::Returned(outcome) => outcome,
        Ended::Stopped(stop) => Outcome::Stopped(stop.reason),
        Ended::WallClock => Outcome::Failed(format!(
            "wall-clock limit of {} s reached",
            wall_clock.map_or(0, |(_, seconds)| seconds)
        )),
    }
}

async fn run_module(
    launch: Launch,
    mut builder: WasiCtxBuilder,
    pre: &wasmtime::InstancePre<ModuleHost>,
) -> Outcome {
    let host = ModuleHost {
        wasi: builder.build_p1(),
        limiter: launch.limiter,
        meter: Arc::clone(&launch.meter),
    };
    let mut store = Store::new(&launch.engine, host);
    if let Err(error) = configure(&mut store, launch.fuel_yield_interval) {
        return Outcome::Failed(format!("cannot set up the store: {error:#}"));
    }
    let entry = launch.entry;
    let work = async {
        let instance = match pre.instantiate_async(&mut store).await {
            Ok(instance) => instance,
            Err(error) => return failure(INSTANTIATION_FAILED, error),
        };
        if entry != "_start"
            && let Ok(initialize) = instance.get_typed_func::<(), ()>(&mut store, "_initialize")
            && let Err(error) = initialize.call_async(&mut store, ()).await
        {
            return failure("_initialize failed", error);
        }
        let function = match instance.get_typed_func::<(), ()>(&mut store, &entry) {
            Ok(function) => function,
            Err(error) => return Outcome::Failed(format!("entry point {entry:?}: {error:#}")),
        };
        match function.call_async(&mut store, ()).await {
            Ok(()) => Outcome::Exited(0),
            Err(error) => failure("error", error),
        }
    };
    let ended = race(work, &launch.interrupt, launch.wall_clock).await;
    record_final_fuel(&store, &launch.meter);
    explain(ended_outcome(ended, launch.wall_clock), &mut store)
}

async fn run_component(
    launch: Launch,
    mut builder: WasiCtxBuilder,
    pre: &wasmtime_wasi::p2::bindings::CommandPre<ComponentHost>,
) -> Outcome {
    let host = ComponentHost {
        wasi: builder.build(),
        table: ResourceTable::new(),
        limiter: launch.limiter,
        meter: Arc::clone(&launch.meter),
    };
    let mut store = Store::new(&launch.engine, host);
    if let Err(error) = configure(&mut store, launch.fuel_yield_interval) {
        return Outcome::Failed(format!("cannot set up the store: {error:#}"));
    }
    let work = async {
        let command = match pre.instantiate_async(&mut store).await {
            Ok(command) => command,
            Err(error) => return failure(INSTANTIATION_FAILED, error),
        };
        match command.wasi_cli_run().call_run(&mut store).await {
            Ok(Ok(())) => Outcome::Exited(0),
            // wasi:cli/run returning its error case is the component's "exit 1".
            Ok(Err(())) => Outcome::Exited(1),
            Err(error) => failure("error", error),
        }
    };
    let ended = race(work, &launch.interrupt, launch.wall_clock).await;
    record_final_fuel(&store, &launch.meter);
    explain(ended_outcome(ended, launch.wall_clock), &mut store)
}

/// Adds the memory limiter's reason to a failed instantiation ("memory minimum size of 64
/// pages exceeds memory limits" alone does not say which limit).
fn explain<T: HostData>(outcome: Outcome, store: &mut Store<T>) -> Outcome {
    match outcome {
        Outcome::Failed(reason) if reason.starts_with(INSTANTIATION_FAILED) => {
            match store.data_mut().limiter().refusal() {
                Some(refusal) => Outcome::Failed(format!("{reason} ({refusal})")),
                None => Outcome::Failed(reason),
            }
        }
        other => other,
    }
}

/// Maps an error out of Wasm: an exit call, a trap, or a host-side failure.
fn failure(context: &str, error: wasmtime::Error) -> Outcome {
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Outcome::Exited(exit.0);
    }
    if let Some(trap) = error.downcast_ref::<Trap>() {
        let message = trap.to_string();
        let message = message.strip_prefix("wasm trap: ").unwrap_or(&message);
        return Outcome::Failed(format!("trap: {message}"));
    }
    Outcome::Failed(format!("{context}: {error:#}"))
}
