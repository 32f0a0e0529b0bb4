//! The `xenoserver` configuration file (TOML): where it listens, the corps it works with and its
//! credentials at each, its capacity, the defaults a session gets, its price sheet, metering, and
//! which task manager serves each environment type. Every field has a documented default except
//! the corps, which the operator must name. Validated once, by [`Config::validate`].

pub use crate::pricing::{Basis, PriceSheet, split_minor};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The gRPC (mutual TLS) listen address. Default `127.0.0.1:7443`.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Where clients reach this server (advertised); defaults to the listen address.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Where state lives: the session database and session scratch directories. Default
    /// `./xenoserver-data`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The corps this server is registered with. At least one.
    pub corps: Vec<CorpConfig>,
    /// What this server can give its sessions.
    #[serde(default)]
    pub capacity: Capacity,
    /// What a session gets for resources its requirements leave out.
    #[serde(default)]
    pub defaults: SessionDefaults,
    /// The price sheet.
    #[serde(default)]
    pub pricing: Pricing,
    /// Metering and charging periods.
    #[serde(default)]
    pub metering: Metering,
    /// Task managers by environment type. Default: the built-in Wasm task manager for `Wasm`.
    #[serde(default = "default_task_managers")]
    pub task_managers: Vec<TaskManagerConfig>,
    /// Limits on what clients may send.
    #[serde(default)]
    pub limits: Limits,
    /// Sizing of the built-in Wasm task manager, when one is configured.
    #[serde(default)]
    pub wasm: WasmSettings,
    /// Sizing of the built-in Linux (KVM) task manager, when one is configured.
    #[serde(default)]
    pub linux: LinuxSettings,
    /// Advertising in the XIS and measuring network coordinates (off unless an address is
    /// given).
    #[serde(default)]
    pub xis: crate::discovery::XisSettings,
    /// What the advertisement says beyond what the server measures: location, network
    /// paths, extension tokens.
    #[serde(default)]
    pub advertisement: crate::advertisement::AdvertisedSettings,
}

/// Sizing of the built-in Linux task manager: paravirtual domains on KVM.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinuxSettings {
    /// Most Linux tasks running at once; each is a vCPU thread. Default 256.
    pub tasks_max: u32,
    /// Most Linux sessions at once; each is a KVM virtual machine. Default 64.
    pub domains_max: u32,
    /// The Linux ABI versions offered as `EnvKernel` (what `uname -r` reports inside a
    /// domain); the first is the default. Default `["6.1.0"]`.
    pub versions: Vec<String>,
    /// Where root file system images live (`xenoserver image build` puts them there).
    /// Default `/var/lib/xenoserver/images`.
    pub images_dir: std::path::PathBuf,
    /// The images offered as `EnvImage` and advertised as `Image`, each
    /// `[[linux.images]]` with `name` and `digest` (as `xenoserver image build` prints
    /// them). Default none.
    pub images: Vec<ImageSetting>,
}

/// One `[[linux.images]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSetting {
    /// The name sessions ask for.
    pub name: String,
    /// `sha256-` and the SHA-256 of the image's manifest.
    pub digest: String,
}

impl Default for LinuxSettings {
    fn default() -> Self {
        LinuxSettings {
            tasks_max: 256,
            domains_max: 64,
            versions: vec!["6.1.0".to_owned()],
            images_dir: std::path::PathBuf::from(xeno_taskmgr_vm::DEFAULT_IMAGES_DIR),
            images: Vec::new(),
        }
    }
}

/// Sizing of the built-in Wasm task manager.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WasmSettings {
    /// Most Wasm tasks running at once. Each reserves about 4 GiB of virtual address space
    /// (none of it resident), so this also bounds address space. Default 2048.
    pub tasks_max: u32,
    /// Most Wasm sessions at once. Default 256.
    pub domains_max: u32,
}

impl Default for WasmSettings {
    fn default() -> Self {
        WasmSettings {
            tasks_max: 2048,
            domains_max: 256,
        }
    }
}

/// One corp this server is registered with, and the credentials it issued to this server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpConfig {
    /// The corp's id (`corp-a`).
    pub id: String,
    /// Its gRPC address, host:port.
    pub address: String,
    /// Its CA certificate (PEM file): clients of this corp are trusted through it.
    pub ca: PathBuf,
    /// The certificate this corp issued to this server (PEM file).
    pub certificate: PathBuf,
    /// This server's private key (PEM file, PKCS#8).
    pub key: PathBuf,
}

/// Capacity across all sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Capacity {
    /// CPU milliseconds per second across all cores. Default 1000 × the machine's cores.
    pub cpu_msps: u64,
    /// Memory for sessions, MB. Default 4096.
    pub memory_mb: u64,
    /// Network bandwidth for sessions, kbps. Default 1,000,000 (1 Gbps).
    pub net_kbps: u64,
    /// Most live sessions. Default 1000.
    pub sessions_max: u32,
}

/// Resources for a session whose requirements leave them out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionDefaults {
    /// Default 100.
    pub cpu_msps: u64,
    /// Default 64.
    pub memory_mb: u64,
    /// Default 0 (no network).
    pub net_kbps: u64,
    /// Output kept per task, bytes: a task asking for more (`Limits/OutputBytes`) keeps this
    /// much, and its watchers and `TaskStatus` are told how much was not kept and why.
    /// Default 1 MiB.
    pub output_bytes_max: u64,
    /// Most tasks per session at once. Default 64.
    pub tasks_max: u32,
}

/// Unit prices, in major units of `currency` (decimal strings, up to 12 decimals).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Pricing {
    /// Default `GBP`.
    pub currency: String,
    /// Per CPU-second. Default `0.00002`.
    pub cpu_second: String,
    /// Per megabyte-second of memory. Default `0.00000001`.
    pub memory_mb_second: String,
    /// Per gigabyte (10^9 bytes) of network traffic. Default `0.05`.
    pub network_gb: String,
    /// Per million units of Wasm fuel. Default `0.0000015`.
    pub million_fuel: String,
    /// Once per session. Default `0`.
    pub session_start: String,
}

/// Metering and charging.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metering {
    /// How often usage is collected from task managers, ms. Default 1000.
    pub period_ms: u64,
    /// Longest time between charges to the corp, ms. Default 10,000.
    pub charge_interval_ms: u64,
    /// How often each corp's list of revoked certificates is fetched, ms. Default 30,000.
    pub revocation_refresh_ms: u64,
    /// How often the server retries closing orders it validated for sessions that were never
    /// made (it died in between, or the corp's answer was lost), ms: until closed, such an
    /// order's funds stay held. Default 5,000.
    pub orphan_retry_ms: u64,
}

/// Where the task manager for one environment type runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskManagerConfig {
    /// The EnvType it serves.
    pub env_type: String,
    /// A built-in task manager: `wasm`, or `linux` (paravirtual domains on KVM; needs
    /// `/dev/kvm`).
    #[serde(default)]
    pub builtin: Option<String>,
    /// An external plugin: `unix:/path/to/socket` or `http://host:port`.
    #[serde(default)]
    pub address: Option<String>,
}

/// Limits on requests.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Most bytes of payloads in one DeployTask. Default 64 MiB.
    pub payload_bytes_max: u64,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("xenoserver-data")
}

fn default_task_managers() -> Vec<TaskManagerConfig> {
    vec![TaskManagerConfig {
        env_type: "Wasm".to_owned(),
        builtin: Some("wasm".to_owned()),
        address: None,
    }]
}

impl Default for Capacity {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        Capacity {
            cpu_msps: 1000 * cores as u64,
            memory_mb: 4096,
            net_kbps: 1_000_000,
            sessions_max: 1000,
        }
    }
}

impl Default for SessionDefaults {
    fn default() -> Self {
        SessionDefaults {
            cpu_msps: 100,
            memory_mb: 64,
            net_kbps: 0,
            output_bytes_max: 1 << 20,
            tasks_max: 64,
        }
    }
}

impl Default for Pricing {
    fn default() -> Self {
        Pricing {
            currency: "GBP".to_owned(),
            cpu_second: "0.00002".to_owned(),
            memory_mb_second: "0.00000001".to_owned(),
            network_gb: "0.05".to_owned(),
            million_fuel: "0.0000015".to_owned(),
            session_start: "0".to_owned(),
        }
    }
}

impl Default for Metering {
    fn default() -> Self {
        Metering {
            period_ms: 1000,
            charge_interval_ms: 10_000,
            revocation_refresh_ms: 30_000,
            orphan_retry_ms: 5_000,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            payload_bytes_max: 64 << 20,
        }
    }
}

impl Config {
    /// Reads and validates a configuration file; relative paths in it are taken from the file's
    /// directory.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Config> {
        use anyhow::Context;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        if let Some(base) = path.parent() {
            config.resolve_paths(base);
        }
        config
            .validate()
            .with_context(|| format!("checking {}", path.display()))?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &std::path::Path) {
        let resolve = |path: &mut PathBuf| {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        };
        resolve(&mut self.data_dir);
        for corp in &mut self.corps {
            resolve(&mut corp.ca);
            resolve(&mut corp.certificate);
            resolve(&mut corp.key);
        }
    }

    /// Checks every field once.
    pub fn validate(&self) -> anyhow::Result<()> {
        use anyhow::ensure;
        ensure!(
            !self.corps.is_empty(),
            "corps: name at least one corp this server is registered with"
        );
        for corp in &self.corps {
            ensure!(
                (xeno_schemas::documents::common::IDENTIFIER.matches)(&corp.id),
                "corps: {:?} is not a corp id",
                corp.id
            );
        }
        ensure!(
            self.capacity.cpu_msps > 0 && self.capacity.memory_mb > 0,
            "capacity: cpu_msps and memory_mb must be positive"
        );
        ensure!(
            self.defaults.cpu_msps > 0 && self.defaults.memory_mb > 0,
            "defaults: cpu_msps and memory_mb must be positive"
        );
        ensure!(
            self.metering.period_ms >= 10,
            "metering.period_ms must be at least 10"
        );
        ensure!(
            self.metering.charge_interval_ms >= self.metering.period_ms,
            "metering.charge_interval_ms must be at least period_ms"
        );
        ensure!(
            self.metering.revocation_refresh_ms >= 100,
            "metering.revocation_refresh_ms must be at least 100"
        );
        anyhow::ensure!(
            self.metering.orphan_retry_ms >= 100,
            "metering.orphan_retry_ms must be at least 100"
        );
        crate::pricing::PriceSheet::from_config(&self.pricing)?;
        self.xis.validate()?;
        self.advertisement.validate()?;
        ensure!(
            !self.linux.versions.is_empty(),
            "linux.versions must name at least one Linux ABI version"
        );
        for manager in &self.task_managers {
            ensure!(
                manager.builtin.is_some() != manager.address.is_some(),
                "task_managers: {} needs exactly one of `builtin` or `address`",
                manager.env_type
            );
            if let Some(builtin) = &manager.builtin {
                ensure!(
                    builtin == "wasm" || builtin == "linux",
                    "task_managers: unknown built-in {builtin:?} (known: wasm, linux)"
                );
            }
        }
        Ok(())
    }

    /// The endpoint clients use.
    pub fn endpoint(&self) -> String {
        self.endpoint
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }
}
