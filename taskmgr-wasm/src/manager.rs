//! [`WasmBackend`]: what the Wasm task manager adds to the kit's [`Host`]: its engine, its
//! compiled-program cache and the threads tasks run on. The rules every task manager shares
//! live in `xeno_taskmgr_kit`.

use crate::cache::{CacheStats, ModuleCache};
use crate::config::WasmConfig;
use crate::engine::{self, Runtime};
use crate::error::{Error, StartError};
use crate::interrupt::Interrupt;
use crate::limiter::DomainMemory;
use crate::rate::{CpuGate, CpuLimits};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;
use xeno_schemas::documents::Program;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::{
    Backend, Capabilities, Deployment, DomainSettings, Host, HostLimits, Resources, lock,
};

/// The `EnvType` this task manager serves.
pub const ENV_TYPE: &str = "Wasm";
/// The runtime version domains present: the Wasmtime release that runs them.
pub const VERSION: &str = "48.0.8";
const MIB: u64 = 1024 * 1024;

/// The Wasm task manager: the kit's host over [`WasmBackend`]. Cheap to clone (clones share
/// everything); implements the plugin interface's
/// [`TaskManager`](xeno_taskmgr_kit::TaskManager) trait. [`WasmTaskManager::new`]
/// builds the engine and starts the task threads; it is callable from inside a tokio runtime
/// (the task threads are a runtime of their own, so tasks never compete with the caller's
/// request handling for its threads).
pub type WasmTaskManager = Host<WasmBackend>;

/// Wasmtime behind the kit: the engine, the compiled-program cache and the task threads.
pub struct WasmBackend {
    pub(crate) config: WasmConfig,
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) cache: ModuleCache,
    /// The task threads' runtime, shut down without blocking when the host goes.
    threads: Mutex<Option<tokio::runtime::Runtime>>,
    /// The task threads' runtime.
    pub(crate) tasks: tokio::runtime::Handle,
}

impl WasmBackend {
    /// The compiled-program cache's counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }
}

impl Resources for DomainMemory {
    fn memory(&self, until: Instant) -> (u64, u64) {
        self.read(until)
    }
}

impl Backend for WasmBackend {
    type Config = WasmConfig;
    type StartError = StartError;
    type Resources = DomainMemory;
    type Control = Interrupt;
    type Gate = CpuGate;
    const ENV_TYPE: &'static str = ENV_TYPE;
    const SCRATCH_PREFIX: &'static str = "xeno-wasm-";

    fn start(config: WasmConfig) -> Result<Self, StartError> {
        config.validate()?;
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        let workers = if config.worker_threads == 0 {
            cpus
        } else {
            config.worker_threads
        };
        let threads = tokio::runtime::Builder::new_multi_thread()
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
        Ok(WasmBackend {
            // A child ready for each compilation slot and for the small programs' lane.
            runtime: Arc::new(engine::build(&config, compile_concurrency + 1)?),
            cache: ModuleCache::new(
                config.module_cache_entries,
                config.module_cache_bytes,
                compile_concurrency,
                config.compile_small_bytes_max,
            ),
            tasks: threads.handle().clone(),
            threads: Mutex::new(Some(threads)),
            config,
        })
    }

    fn config(&self) -> &WasmConfig {
        &self.config
    }

    fn limits(&self) -> HostLimits {
        xeno_taskmgr_kit::host_limits!(self.config)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: env!("CARGO_PKG_NAME").to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            program_kinds: vec!["WasmModule".to_owned(), "WasmComponent".to_owned()],
            reports_fuel: true,
            // WASI is an interface of imports, not numbered system calls.
            system_calls: Vec::new(),
            ..Capabilities::default()
        }
    }

    fn versions(&self) -> Vec<String> {
        vec![VERSION.to_owned()]
    }

    fn memory_bytes(&self, memory_mb: u64) -> Result<u64, Error> {
        let max = self.config.instance_memory_mb_max;
        let memory_mb = if memory_mb == 0 { max } else { memory_mb };
        if memory_mb > max {
            return Err(Error::Invalid(format!(
                "memory_mb {memory_mb} exceeds the largest memory one Wasm instance may have here ({max} MB)"
            )));
        }
        Ok(memory_mb * MIB)
    }

    fn cpu_gate(limits: CpuLimits, window_ms: u64, now: Instant) -> Option<CpuGate> {
        CpuGate::new(limits, window_ms, now)
    }

    async fn create_resources(
        &self,
        settings: &DomainSettings,
        _limits: &pb::DomainLimits,
    ) -> Result<DomainMemory, Error> {
        Ok(DomainMemory::new(settings.memory_bytes, Instant::now()))
    }

    fn check_program(&self, program: &Program) -> Result<(), Error> {
        crate::deploy::program_of(program).map(|_| ())
    }

    async fn deploy(host: &Host<Self>, deployment: Deployment<Self>) -> Result<(), Error> {
        crate::deploy::deploy(host, deployment).await
    }

    fn blocking_runtime(&self) -> Option<&tokio::runtime::Handle> {
        Some(&self.tasks)
    }

    fn shut_down(&self) {
        if let Some(threads) = lock(&self.threads).take() {
            threads.shutdown_background();
        }
    }
}
