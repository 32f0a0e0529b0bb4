//! [`WasmConfig`]: the task manager's configuration, plain data with documented defaults,
//! validated once by [`WasmTaskManager::new`](crate::WasmTaskManager::new).

const MIB: u64 = 1024 * 1024;

/// Linear memory a 32-bit Wasm memory can address at most: the ceiling of
/// [`WasmConfig::instance_memory_mb_max`].
pub const WASM32_MEMORY_MB_MAX: u64 = 4096;

/// How the task manager sizes itself. Every queue, buffer, cache and count it keeps is bounded
/// by one of these fields; each says what it bounds, why, and its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmConfig {
    /// Most domains (sessions) held at once, reported as `domains_max` by GetCapabilities;
    /// CreateDomain beyond it is refused with RESOURCE_EXHAUSTED. Default 256.
    pub domains_max: u32,
    /// Most tasks running at once across every domain. This sizes Wasmtime's pooling allocator
    /// (one linear memory slot, one fiber stack and one component instance per task), so it is
    /// also the bound on address space: each slot reserves
    /// `memory_reservation_bytes + memory_guard_bytes` of virtual memory (about 8 TiB of the
    /// 128 TiB x86-64 user address space at the defaults, none of it resident until used).
    /// DeployTask beyond it is refused with RESOURCE_EXHAUSTED. Default 2048.
    pub tasks_max: u32,
    /// Most tasks running at once in one domain, used when the domain's `tasks_max` is 0 and as
    /// the ceiling for any domain, so one session cannot take the whole pool. Default 256.
    pub tasks_per_domain_max: u32,
    /// Ended tasks a domain remembers for InspectTask, ReportUsage and output replay; older ones
    /// are forgotten (their usage stays in the domain's totals). Default 256.
    pub ended_tasks_kept: usize,
    /// Destroyed domains remembered so that a repeated DestroyDomain returns the same final
    /// usage; the oldest are forgotten beyond this. Each costs about 200 bytes. Default 65536.
    pub destroyed_domains_kept: usize,
    /// Compiled programs kept in the cache, least recently used evicted first. Default 128.
    pub module_cache_entries: usize,
    /// Bytes of compiled code the cache may hold across its entries. Default 512 MiB.
    pub module_cache_bytes: u64,
    /// Largest program (module or component) accepted, bytes: compiling costs time and memory
    /// roughly in proportion to size. Default 64 MiB.
    pub program_bytes_max: u64,
    /// Largest total of payload bytes in one DeployTask. Default 256 MiB, the plugin
    /// interface's message limit.
    pub payload_bytes_max: u64,
    /// Output kept per task when neither the task (`Limits/OutputBytes`) nor the domain
    /// (`output_bytes_max`) says. Default 1 MiB.
    pub task_output_bytes_default: u64,
    /// Ceiling on the output kept per task, whatever the task or domain asks: the documents
    /// allow up to 1 GiB, more than this host should hold for one task. Default 64 MiB.
    pub task_output_bytes_max: u64,
    /// Ceiling on the output kept across one domain's tasks, running and ended; beyond it the
    /// oldest ended tasks' kept output is released first, then new output is counted and
    /// dropped. Default 64 MiB.
    pub domain_output_bytes_max: u64,
    /// Bytes of recent events (output chunks, task starts and ends) a domain buffers for
    /// StreamOutput readers that fall behind; a reader further behind than this resynchronises
    /// from the kept output and sees the lost bytes as a gap in offsets. Default 4 MiB.
    pub stream_buffer_bytes: usize,
    /// Count of recent events a domain buffers, for the same purpose (small writes make many
    /// small events). Default 8192.
    pub stream_buffer_events: usize,
    /// StreamOutput readers one domain may have open at once; each holds its own position and
    /// catch-up buffer. Default 64.
    pub stream_readers_max: usize,
    /// Largest linear memory one instance may have, MiB. A domain whose `memory_mb` is larger
    /// is refused at CreateDomain: one task could never use it, so the session would be sold
    /// memory it cannot have. At most [`WASM32_MEMORY_MB_MAX`]. Default 4096.
    pub instance_memory_mb_max: u64,
    /// Virtual address space reserved per linear memory slot, bytes. 4 GiB (with the guard
    /// below) lets Cranelift drop bounds checks from 32-bit memory accesses, which is worth
    /// 10-20% on memory-heavy code; smaller values save address space and add bounds checks.
    /// Default 4 GiB.
    pub memory_reservation_bytes: u64,
    /// Unmapped guard after each linear memory slot, bytes. Default 32 MiB (Wasmtime's).
    pub memory_guard_bytes: u64,
    /// Most elements in one Wasm table. Default 20000 (Wasmtime's).
    pub table_elements_max: usize,
    /// Fuel a task runs between yields. Each yield is a chance to stop the task, charge its
    /// CPU time and pause it when its domain's CPU budget is spent; fuel per CPU millisecond
    /// ranges from about 3 M to 21 M, so the default yields every 50-350 µs. A yield costs a
    /// fiber switch and two clock reads (the trip through the scheduler happens only once per
    /// `poll_quantum_us`). Default 1,000,000.
    pub fuel_yield_interval: u64,
    /// CPU time a task may run before giving its thread back to the scheduler, microseconds,
    /// as long as it keeps its budget and others are not waiting in its domain. Fuel yields
    /// inside a quantum cost a check, not a trip through tokio (see `metered.rs`); other tasks
    /// on the same thread wait at most this long per task ahead of them, like an operating
    /// system's time slice. Each trip through tokio may move the task to another thread, which
    /// cost a memory-heavy kernel 17% at 2 ms and nothing measurable at 10 ms. Default 10000.
    pub poll_quantum_us: u64,
    /// Depth of a domain's CPU token bucket, in milliseconds of its own rate: how much unused
    /// CPU time an idle domain may bank (when no burst is configured). Default 20.
    pub cpu_bucket_window_ms: u64,
    /// Threads that run Wasm tasks; 0 means one per CPU. Default 0.
    pub worker_threads: usize,
    /// Programs compiled at once across domains, each in its own child process; 0 means one
    /// per CPU. A domain compiles one program at a time, and domains take turns (round-robin),
    /// so one session's compilations cannot hold another's up for more than one compilation
    /// per slot. Default 0.
    pub compile_concurrency: usize,
    /// Programs up to this size, bytes, compile in a lane of their own (one at a time, apart
    /// from the `compile_concurrency` slots), so that a small program never waits behind big
    /// compilations. Small programs compile in milliseconds. Default 1 MiB.
    pub compile_small_bytes_max: u64,
    /// CPU time one compilation may take, seconds; past it the compiler child is killed and
    /// DeployTask fails with RESOURCE_EXHAUSTED. The time used, within the limit or not, is the
    /// session's CPU time (`Usage.compile_time_us`). Wall-clock time is bounded at three times
    /// this. Default 20.
    pub compile_cpu_seconds_max: u64,
    /// Memory one compilation may use (the compiler child's `RLIMIT_DATA`), bytes. Cranelift
    /// needs up to about 200 times a module's size for pathological code (deeply nested
    /// blocks); the memory is the child's and returns when it exits. Default 1 GiB.
    pub compile_memory_bytes_max: u64,
    /// Stack for Wasm frames, bytes; deeper recursion traps ("call stack exhausted").
    /// Default 512 KiB (Wasmtime's).
    pub wasm_stack_bytes: usize,
    /// Stack of each task's fiber, holding the Wasm stack and host calls. Must exceed
    /// `wasm_stack_bytes`. Default 2 MiB.
    pub fiber_stack_bytes: usize,
    /// How long StopTask and DestroyDomain wait for a task to unwind before abandoning its
    /// future; tasks yield every `fuel_yield_interval`, so this is only reached if a host call
    /// hangs. Default 5000 ms.
    pub stop_timeout_ms: u64,
}

impl Default for WasmConfig {
    fn default() -> Self {
        WasmConfig {
            domains_max: 256,
            tasks_max: 2048,
            tasks_per_domain_max: 256,
            ended_tasks_kept: 256,
            destroyed_domains_kept: 65536,
            module_cache_entries: 128,
            module_cache_bytes: 512 * MIB,
            program_bytes_max: 64 * MIB,
            payload_bytes_max: 256 * MIB,
            task_output_bytes_default: MIB,
            task_output_bytes_max: 64 * MIB,
            domain_output_bytes_max: 64 * MIB,
            stream_buffer_bytes: 4 * 1024 * 1024,
            stream_buffer_events: 8192,
            stream_readers_max: 64,
            instance_memory_mb_max: WASM32_MEMORY_MB_MAX,
            memory_reservation_bytes: 4096 * MIB,
            memory_guard_bytes: 32 * MIB,
            table_elements_max: 20_000,
            fuel_yield_interval: 1_000_000,
            poll_quantum_us: 10_000,
            cpu_bucket_window_ms: 20,
            worker_threads: 0,
            compile_concurrency: 0,
            compile_small_bytes_max: MIB,
            compile_cpu_seconds_max: 20,
            compile_memory_bytes_max: 1024 * MIB,
            wasm_stack_bytes: 512 * 1024,
            fiber_stack_bytes: 2 * 1024 * 1024,
            stop_timeout_ms: 5000,
        }
    }
}

pub use xeno_taskmgr_kit::config::ConfigError;

/// How this configuration is named in its errors.
const NAME: &str = "WasmConfig";

fn at_least(field: &'static str, value: u64, min: u64) -> Result<(), ConfigError> {
    xeno_taskmgr_kit::config::at_least(NAME, field, value, min)
}

impl WasmConfig {
    /// Checks that the fields fit together; [`WasmTaskManager::new`](crate::WasmTaskManager::new)
    /// calls this first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("domains_max", self.domains_max.into(), 1)?;
        at_least("tasks_max", self.tasks_max.into(), 1)?;
        at_least("tasks_per_domain_max", self.tasks_per_domain_max.into(), 1)?;
        at_least("module_cache_entries", self.module_cache_entries as u64, 1)?;
        at_least("program_bytes_max", self.program_bytes_max, 8)?;
        at_least("stream_buffer_events", self.stream_buffer_events as u64, 16)?;
        at_least(
            "stream_buffer_bytes",
            self.stream_buffer_bytes as u64,
            64 * 1024,
        )?;
        at_least("stream_readers_max", self.stream_readers_max as u64, 1)?;
        at_least("fuel_yield_interval", self.fuel_yield_interval, 1000)?;
        at_least("cpu_bucket_window_ms", self.cpu_bucket_window_ms, 1)?;
        at_least("poll_quantum_us", self.poll_quantum_us, 1)?;
        at_least("compile_cpu_seconds_max", self.compile_cpu_seconds_max, 1)?;
        at_least(
            "compile_memory_bytes_max",
            self.compile_memory_bytes_max,
            64 * MIB,
        )?;
        at_least("instance_memory_mb_max", self.instance_memory_mb_max, 1)?;
        if self.instance_memory_mb_max > WASM32_MEMORY_MB_MAX {
            return Err(ConfigError {
                config: NAME,
                field: "instance_memory_mb_max",
                problem: format!(
                    "is {}, but 32-bit Wasm memories stop at {WASM32_MEMORY_MB_MAX}",
                    self.instance_memory_mb_max
                ),
            });
        }
        if self.fiber_stack_bytes <= self.wasm_stack_bytes {
            return Err(ConfigError {
                config: NAME,
                field: "fiber_stack_bytes",
                problem: format!(
                    "is {}, must exceed wasm_stack_bytes ({}) to leave room for host calls",
                    self.fiber_stack_bytes, self.wasm_stack_bytes
                ),
            });
        }
        if self.task_output_bytes_default > self.task_output_bytes_max {
            return Err(ConfigError {
                config: NAME,
                field: "task_output_bytes_default",
                problem: format!(
                    "is {}, above task_output_bytes_max ({})",
                    self.task_output_bytes_default, self.task_output_bytes_max
                ),
            });
        }
        Ok(())
    }

    pub(crate) fn instance_memory_bytes_max(&self) -> u64 {
        self.instance_memory_mb_max * MIB
    }
}
