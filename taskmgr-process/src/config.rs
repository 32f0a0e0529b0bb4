//! [`ProcessConfig`]: the plugin's configuration, plain data with documented defaults.

const MIB: u64 = 1024 * 1024;

/// How the Process task manager sizes itself. Every queue, buffer and count it keeps is bounded
/// by one of these fields; each says what it bounds and its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// Most domains held at once (GetCapabilities' `domains_max`). Default 64.
    pub domains_max: u32,
    /// Most tasks running at once across every domain: each is a process group and a waiter
    /// thread. Default 1024.
    pub tasks_max: u32,
    /// Most tasks running at once in one domain, used when the domain's `tasks_max` is 0 and
    /// as the ceiling for any domain. Default 256.
    pub tasks_per_domain_max: u32,
    /// Ended tasks a domain remembers for InspectTask, ReportUsage and output replay (their
    /// usage stays in the domain's totals). Default 1024.
    pub ended_tasks_kept: usize,
    /// Destroyed domains remembered so that a repeated DestroyDomain returns the same final
    /// usage. Default 4096.
    pub destroyed_domains_kept: usize,
    /// Largest total of payload bytes in one DeployTask. Default 256 MiB, the plugin
    /// interface's message limit.
    pub payload_bytes_max: u64,
    /// Output kept per task when neither the task nor the domain says. Default 1 MiB.
    pub task_output_bytes_default: u64,
    /// Ceiling on the output kept per task: output is held in the plugin's memory until the
    /// task is forgotten. Default 16 MiB.
    pub task_output_bytes_max: u64,
    /// Ceiling on the output kept across one domain's tasks. Default 64 MiB.
    pub domain_output_bytes_max: u64,
    /// Bytes of recent events a domain buffers for StreamOutput readers. Default 4 MiB.
    pub stream_buffer_bytes: usize,
    /// Count of recent events a domain buffers. Default 8192.
    pub stream_buffer_events: usize,
    /// StreamOutput readers one domain may have open at once. Default 64.
    pub stream_readers_max: usize,
    /// Kept for the kit's host; the duty cycle has its own bucket (see `meter.rs`). Default 100.
    pub cpu_bucket_window_ms: u64,
    /// How long StopTask and DestroyDomain wait for a SIGKILLed task to be reaped before it is
    /// recorded as stopped anyway (a process in uninterruptible sleep ignores even SIGKILL until
    /// the sleep ends). Default 5000 ms.
    pub stop_timeout_ms: u64,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            domains_max: 64,
            tasks_max: 1024,
            tasks_per_domain_max: 256,
            ended_tasks_kept: 1024,
            destroyed_domains_kept: 4096,
            payload_bytes_max: 256 * MIB,
            task_output_bytes_default: MIB,
            task_output_bytes_max: 16 * MIB,
            domain_output_bytes_max: 64 * MIB,
            stream_buffer_bytes: 4 * 1024 * 1024,
            stream_buffer_events: 8192,
            stream_readers_max: 64,
            cpu_bucket_window_ms: crate::meter::BUCKET_WINDOW_MS,
            stop_timeout_ms: 5000,
        }
    }
}
