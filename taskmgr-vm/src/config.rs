//! [`VmConfig`]: the task manager's configuration, plain data with documented defaults,
//! validated once by [`VmTaskManager::new`](crate::VmTaskManager::new).

use crate::hypervisor::vm::layout::RAM_BYTES_MAX;
use crate::images::{IMAGES_MAX, ImageEntry};
use std::path::PathBuf;

/// Where images live unless configured otherwise.
pub const DEFAULT_IMAGES_DIR: &str = "/var/lib/xenoserver/images";

const MIB: u64 = 1024 * 1024;

/// The Linux ABI version domains present by default (`uname -r`), Debian 12's kernel line.
pub const DEFAULT_VERSION: &str = "6.1.0";

/// How the task manager sizes itself. Every queue, buffer and count it keeps is bounded by
/// one of these fields; each says what it bounds, why, and its default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Most domains (sessions, so VMs) held at once, reported as `domains_max`; CreateDomain
    /// beyond it is refused with RESOURCE_EXHAUSTED. Each holds a KVM VM, its RAM mapping
    /// (reserved, resident only as used) and at least one vCPU. Default 64.
    pub domains_max: u32,
    /// Most tasks running at once across every domain: each is a vCPU thread. Default 256.
    pub tasks_max: u32,
    /// Most tasks running at once in one domain, used when the domain's `tasks_max` is 0 and
    /// as the ceiling for any domain. Default 16.
    pub tasks_per_domain_max: u32,
    /// Guest RAM of a domain whose `memory_mb` is 0, MiB. Default 256.
    pub memory_mb_default: u64,
    /// Largest guest RAM a domain may ask for, MiB; CreateDomain asking more is refused with
    /// INVALID_ARGUMENT. Default 4096.
    pub memory_mb_max: u64,
    /// The Linux ABI versions offered (`EnvKernel`); the first is the default. Each is what
    /// `uname -r` reports inside the domain. Default `["6.1.0"]`.
    pub versions: Vec<String>,
    /// Ended tasks a domain remembers for InspectTask, ReportUsage and output replay.
    /// Default 256.
    pub ended_tasks_kept: usize,
    /// Destroyed domains remembered so that a repeated DestroyDomain returns the same final
    /// usage. Default 65536.
    pub destroyed_domains_kept: usize,
    /// Largest executable accepted, bytes. Default 64 MiB.
    pub program_bytes_max: u64,
    /// Largest total of payload bytes in one DeployTask. Default 256 MiB, the plugin
    /// interface's message limit.
    pub payload_bytes_max: u64,
    /// Output kept per task when neither the task nor the domain says. Default 1 MiB.
    pub task_output_bytes_default: u64,
    /// Ceiling on the output kept per task. Default 64 MiB.
    pub task_output_bytes_max: u64,
    /// Ceiling on the output kept across one domain's tasks. Default 64 MiB.
    pub domain_output_bytes_max: u64,
    /// Bytes of recent events a domain buffers for StreamOutput readers. Default 4 MiB.
    pub stream_buffer_bytes: usize,
    /// Count of recent events a domain buffers. Default 8192.
    pub stream_buffer_events: usize,
    /// StreamOutput readers one domain may have open at once. Default 64.
    pub stream_readers_max: usize,
    /// Depth of a domain's CPU token bucket, in milliseconds of its own rate: how long a vCPU
    /// thread may be kept off the CPU by the host (other domains, other work) and still catch
    /// up with its rate rather than lose it, and so also the most an idle domain can bank
    /// (a burst of at most 5% over 10 s at the default). Default 500 (at 150 ms/s, 75 ms).
    pub cpu_bucket_window_ms: u64,
    /// Longest stretch of CPU time a task runs between two updates of its meter and checks
    /// of its budget, µs: each costs an exit (about 40 µs here), so 10 ms costs 0.4%.
    /// Default 10000.
    pub cpu_slice_us: u64,
    /// File windows (memory slots for the read fast path) a domain may hold at once; files
    /// opened beyond it are read through the VMM. Default 64.
    pub windows_per_domain_max: usize,
    /// How long StopTask and DestroyDomain wait for a task's thread to end. Default 5000 ms.
    pub stop_timeout_ms: u64,
    /// Where root file system images live (`<images_dir>/<digest>/`, as `xenoserver image
    /// build` makes them). Default `/var/lib/xenoserver/images`.
    pub images_dir: PathBuf,
    /// The images offered, by name and digest (at most [`IMAGES_MAX`]); each is opened and
    /// its manifest checked against its digest at start. Default none: domains' `/` is their
    /// scratch directory alone.
    pub images: Vec<ImageEntry>,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            domains_max: 64,
            tasks_max: 256,
            tasks_per_domain_max: 16,
            memory_mb_default: 256,
            memory_mb_max: 4096,
            versions: vec![DEFAULT_VERSION.to_owned()],
            ended_tasks_kept: 256,
            destroyed_domains_kept: 65536,
            program_bytes_max: 64 * MIB,
            payload_bytes_max: 256 * MIB,
            task_output_bytes_default: MIB,
            task_output_bytes_max: 64 * MIB,
            domain_output_bytes_max: 64 * MIB,
            stream_buffer_bytes: 4 * 1024 * 1024,
            stream_buffer_events: 8192,
            stream_readers_max: 64,
            cpu_bucket_window_ms: 500,
            cpu_slice_us: 10_000,
            windows_per_domain_max: 64,
            stop_timeout_ms: 5000,
            images_dir: PathBuf::from(DEFAULT_IMAGES_DIR),
            images: Vec::new(),
        }
    }
}

pub use xeno_taskmgr_kit::config::ConfigError;

/// How this configuration is named in its errors.
const NAME: &str = "VmConfig";

fn at_least(field: &'static str, value: u64, min: u64) -> Result<(), ConfigError> {
    xeno_taskmgr_kit::config::at_least(NAME, field, value, min)
}

impl VmConfig {
    /// Checks that the fields fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("domains_max", self.domains_max.into(), 1)?;
        at_least("tasks_max", self.tasks_max.into(), 1)?;
        at_least("tasks_per_domain_max", self.tasks_per_domain_max.into(), 1)?;
        // The domain's own pages (tables, descriptor tables, stacks) need a few MiB.
        at_least("memory_mb_default", self.memory_mb_default, 4)?;
        at_least("memory_mb_max", self.memory_mb_max, self.memory_mb_default)?;
        if self.memory_mb_max * MIB > RAM_BYTES_MAX {
            return Err(ConfigError {
                config: NAME,
                field: "memory_mb_max",
                problem: format!(
                    "is {}, above the {} MiB a domain's layout allows",
                    self.memory_mb_max,
                    RAM_BYTES_MAX / MIB
                ),
            });
        }
        if self.versions.is_empty() || self.versions.iter().any(|v| v.is_empty() || v.len() > 64) {
            return Err(ConfigError {
                config: NAME,
                field: "versions",
                problem: "must list at least one version of 1 to 64 bytes".to_owned(),
            });
        }
        at_least("program_bytes_max", self.program_bytes_max, 64)?;
        at_least("stream_buffer_events", self.stream_buffer_events as u64, 16)?;
        at_least(
            "stream_buffer_bytes",
            self.stream_buffer_bytes as u64,
            64 * 1024,
        )?;
        at_least("stream_readers_max", self.stream_readers_max as u64, 1)?;
        at_least("cpu_bucket_window_ms", self.cpu_bucket_window_ms, 1)?;
        at_least("cpu_slice_us", self.cpu_slice_us, 100)?;
        if self.images.len() > IMAGES_MAX {
            return Err(ConfigError {
                config: NAME,
                field: "images",
                problem: format!("lists {} images; at most {IMAGES_MAX}", self.images.len()),
            });
        }
        let mut names = std::collections::BTreeSet::new();
        if let Some(twice) = self.images.iter().find(|image| !names.insert(&image.name)) {
            return Err(ConfigError {
                config: NAME,
                field: "images",
                problem: format!("names the image {:?} twice", twice.name),
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
}
