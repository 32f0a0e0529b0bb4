//! The Wasmtime engine every task shares, and the WASI linkers: built once, from the
//! configuration, when the task manager starts.

use crate::compiler::{CompileLimits, Compilers, EngineSettings};
use crate::config::WasmConfig;
use crate::error::StartError;
use crate::host::{ComponentHost, ModuleHost};
use wasmtime::{Engine, InstanceAllocationStrategy, Linker, PoolingAllocationConfig};

/// Core instances one task may create: a component built from a C or Rust program holds its
/// main module, the WASI adapter and a few glue modules.
const CORE_INSTANCES_PER_TASK: u32 = 8;
/// Tables one task may create, for the same glue modules.
const TABLES_PER_TASK: u32 = 4;

pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    /// The compiler children, configured like `engine`.
    pub(crate) compilers: Compilers,
    pub(crate) module_linker: Linker<ModuleHost>,
    pub(crate) component_linker: wasmtime::component::Linker<ComponentHost>,
}

fn engine_error(error: impl std::fmt::Display) -> StartError {
    StartError::Engine(error.to_string())
}

fn pooling(config: &WasmConfig) -> PoolingAllocationConfig {
    let tasks = config.tasks_max;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(tasks)
        .total_core_instances(tasks.saturating_mul(CORE_INSTANCES_PER_TASK))
        .max_core_instances_per_component(CORE_INSTANCES_PER_TASK)
        // One linear memory per task: each slot reserves `memory_reservation_bytes` of address
        // space, the dominant cost of the pool.
        .total_memories(tasks)
        .max_memories_per_module(1)
        .max_memories_per_component(1)
        .total_tables(tasks.saturating_mul(TABLES_PER_TASK))
        .max_tables_per_component(TABLES_PER_TASK)
        .table_elements(config.table_elements_max)
        .total_stacks(tasks)
        .max_memory_size(usize::try_from(config.instance_memory_bytes_max()).unwrap_or(usize::MAX));
    pool
}

/// The engine and linkers, and `warm_compilers` compiler children started ahead of need.
pub(crate) fn build(config: &WasmConfig, warm_compilers: usize) -> Result<Runtime, StartError> {
    let settings = EngineSettings::of(config);
    let mut wasmtime = settings.wasmtime_config();
    wasmtime.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(config)));
    let engine = Engine::new(&wasmtime).map_err(engine_error)?;

    let mut module_linker = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut module_linker, |host: &mut ModuleHost| {
        &mut host.wasi
    })
    .map_err(engine_error)?;
    // A relative sleep must not block the task's thread (see `sleep.rs`).
    module_linker.allow_shadowing(true);
    module_linker
        .func_wrap_async(
            "wasi_snapshot_preview1",
            "poll_oneoff",
            |mut caller: wasmtime::Caller<'_, ModuleHost>,
             (subscriptions, events, count, nevents): (i32, i32, i32, i32)| {
                Box::new(async move {
                    crate::sleep::poll_oneoff(&mut caller, subscriptions, events, count, nevents)
                        .await
                })
            },
        )
        .map_err(engine_error)?;
    module_linker.allow_shadowing(false);
    let mut component_linker = wasmtime::component::Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut component_linker).map_err(engine_error)?;
    Ok(Runtime {
        engine,
        compilers: Compilers::new(
            settings,
            CompileLimits {
                cpu: std::time::Duration::from_secs(config.compile_cpu_seconds_max),
                memory_bytes: config.compile_memory_bytes_max,
                artifact_bytes_max: config.module_cache_bytes,
            },
            warm_compilers,
        ),
        module_linker,
        component_linker,
    })
}
