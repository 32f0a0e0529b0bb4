//! [`ProcessBackend`]: what the Process task manager adds to the kit's [`Host`]: the host's
//! kernel as the version, a domain's rlimits, and the meter thread that samples `/proc` and
//! runs each domain's CPU duty cycle.

use crate::config::ProcessConfig;
use crate::control::GroupControl;
use crate::meter::{self, DomainMeter, Domains};
use std::sync::Arc;
use std::time::Instant;
use xeno_schemas::documents::Program;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::rate::CpuLimits;
use xeno_taskmgr_kit::{
    Backend, Capabilities, Deployment, DomainSettings, Error, Host, HostLimits, Resources, lock,
};

/// The `EnvType` this plugin serves.
pub const ENV_TYPE: &str = "Process";
const MIB: u64 = 1024 * 1024;

/// The Process task manager: the kit's host over [`ProcessBackend`]. Cheap to clone (clones
/// share everything).
pub type ProcessTaskManager = Host<ProcessBackend>;

/// Host processes behind the kit.
pub struct ProcessBackend {
    config: ProcessConfig,
    /// The version every domain presents: the kernel release.
    kernel_release: String,
    /// Every domain's meter; the meter thread holds a weak reference and ends with it.
    meters: Arc<Domains>,
}

/// What a domain holds of the plugin's: its rlimits and its meter.
pub struct ProcDomain {
    /// Address space per process (RLIMIT_AS), or `None` when `memory_mb` is 0.
    pub(crate) memory_bytes: Option<u64>,
    /// Largest file a task may write (RLIMIT_FSIZE) and most bytes of files one deploy may
    /// bring, or `None` when `disk_mb` is 0.
    pub(crate) disk_bytes: Option<u64>,
    pub(crate) meter: Arc<DomainMeter>,
}

impl Resources for ProcDomain {
    fn memory(&self, until: Instant) -> (u64, u64) {
        self.meter.memory(until)
    }
}

impl Backend for ProcessBackend {
    type Config = ProcessConfig;
    type StartError = std::io::Error;
    type Resources = ProcDomain;
    type Control = GroupControl;
    // The duty cycle runs on the meter thread, not in the tasks: see `meter.rs`.
    type Gate = ();
    const ENV_TYPE: &'static str = ENV_TYPE;
    const SCRATCH_PREFIX: &'static str = "xeno-process-";

    fn start(config: ProcessConfig) -> std::io::Result<Self> {
        let kernel_release = rustix::system::uname()
            .release()
            .to_string_lossy()
            .into_owned();
        let meters: Arc<Domains> = Arc::default();
        meter::start(Arc::downgrade(&meters))?;
        Ok(ProcessBackend {
            config,
            kernel_release,
            meters,
        })
    }

    fn config(&self) -> &ProcessConfig {
        &self.config
    }

    fn limits(&self) -> HostLimits {
        xeno_taskmgr_kit::host_limits!(self.config)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "xeno-process-plugin".to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            program_kinds: vec!["Executable".to_owned(), "ExecutablePath".to_owned()],
            reports_fuel: false,
            // Tasks are host processes: the host kernel answers their system calls.
            system_calls: Vec::new(),
            ..Capabilities::default()
        }
    }

    fn versions(&self) -> Vec<String> {
        vec![self.kernel_release.clone()]
    }

    /// Any size: it becomes each process's RLIMIT_AS (0: none).
    fn memory_bytes(&self, memory_mb: u64) -> Result<u64, Error> {
        Ok(memory_mb.saturating_mul(MIB))
    }

    fn cpu_gate(_: CpuLimits, _: u64, _: Instant) -> Option<()> {
        None
    }

    async fn create_resources(
        &self,
        settings: &DomainSettings,
        limits: &pb::DomainLimits,
    ) -> Result<ProcDomain, Error> {
        let rate = (limits.cpu_msps > 0).then_some(CpuLimits {
            msps: limits.cpu_msps,
            peak_msps: limits.cpu_peak_msps,
            burst_ms: limits.cpu_burst_ms,
        });
        let meter = Arc::new(DomainMeter::new(rate, Instant::now()));
        lock(&self.meters).push(Arc::downgrade(&meter));
        Ok(ProcDomain {
            memory_bytes: (settings.memory_bytes > 0).then_some(settings.memory_bytes),
            disk_bytes: (limits.disk_mb > 0).then(|| limits.disk_mb.saturating_mul(MIB)),
            meter,
        })
    }

    fn check_program(&self, program: &Program) -> Result<(), Error> {
        match program {
            Program::Executable { .. } | Program::ExecutablePath(_) => Ok(()),
            Program::WasmModule { .. } | Program::WasmComponent { .. } => {
                Err(Error::Unsupported(crate::deploy::not_wasm()))
            }
        }
    }

    async fn deploy(host: &Host<Self>, deployment: Deployment<Self>) -> Result<(), Error> {
        crate::deploy::deploy(host, deployment).await
    }
}
