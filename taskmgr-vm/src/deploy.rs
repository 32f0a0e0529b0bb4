//! DeployTask, the Linux part: after the kit's checks (document, payloads, capacity), the
//! task's files are placed, then a vCPU thread is started that loads the executable into a
//! fresh address space, registers and announces the task, tells DeployTask it runs, and runs
//! it to its end.

use crate::config::VmConfig;
use crate::error::Error;
use crate::hypervisor::run::RunLimits;
use crate::hypervisor::vm::layout::KernelSlot;
use crate::kernel::exec;
use crate::kernel::fds::FdTable;
use crate::kernel::files::{self, FsContext};
use crate::kernel::output::Output;
use crate::kernel::overlay::Root;
use crate::kernel::process::{Process, Signals, ThreadInfo, Threads};
use crate::kernel::threads::{self, ProcessRuntime, TaskRuntime};
use crate::kernel::tree::{ProcessShared, ROOT_PID, Tree};
use crate::loading::loader;
use crate::manager::{VmBackend, VmTaskManager};
use crate::{Domain, Task};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use xeno_schemas::documents::Program;
use xeno_taskmgr_kit::events::OutputCap;
use xeno_taskmgr_kit::scratch;
use xeno_taskmgr_kit::{Deployment, TaskSlot};

/// argv[0] when the task names neither `Argv0` nor `Name`.
const DEFAULT_ARGV0: &str = "task";

/// Everything a task's vCPU thread needs.
struct Launch {
    domain: Arc<Domain>,
    task: Arc<Task>,
    image: Bytes,
    argv: Vec<Vec<u8>>,
    envp: Vec<Vec<u8>>,
    exe_path: String,
    cwd: PathBuf,
    output_cap: OutputCap,
    limits: RunLimits,
    wall_clock_seconds: Option<u64>,
    program_bytes_max: u64,
    ready: oneshot::Sender<Result<(), Error>>,
}

pub(crate) async fn deploy(
    host: &VmTaskManager,
    deployment: Deployment<VmBackend>,
) -> Result<(), Error> {
    let config = &host.backend().config;
    let domain = &deployment.domain;
    let root = files::domain_root(&domain.resources, &domain.scratch)?;
    deployment.place_files(host).await?;
    let payloads = deployment.payloads.clone();
    let program = deployment.description.program.clone();
    let bytes_max = config.program_bytes_max;
    let image = host
        .blocking(move || match program {
            Program::Executable { sha256 } => payloads
                .get(&sha256)
                .cloned()
                .ok_or_else(|| Error::Internal("program payload vanished".to_owned())),
            Program::ExecutablePath(path) => read_executable(&root, &path, bytes_max),
            _ => Err(Error::Unsupported("not a Linux executable".to_owned())),
        })
        .await?;
    if image.len() as u64 > bytes_max {
        return Err(Error::Invalid(format!(
            "the program is {} bytes; this task manager runs programs of at most {bytes_max} bytes",
            image.len()
        )));
    }
    let task = domain.new_task(
        &deployment.task_id,
        deployment.fingerprint,
        deployment.started,
    );
    let (ready, running) = oneshot::channel();
    let launch = launch(config, &deployment, &task, image, ready);
    spawn(launch, deployment.slot)?;
    running
        .await
        .map_err(|_| Error::Internal("the task's thread ended before it started".to_owned()))?
}

fn launch(
    config: &VmConfig,
    deployment: &Deployment<VmBackend>,
    task: &Arc<Task>,
    image: Bytes,
    ready: oneshot::Sender<Result<(), Error>>,
) -> Launch {
    let description = &deployment.description;
    let domain = &deployment.domain;
    let exe_path = match &description.program {
        Program::ExecutablePath(path) => format!("/{}", path.trim_start_matches('/')),
        _ => "/proc/self/exe".to_owned(),
    };
    let argv0 = description
        .argv0
        .clone()
        .or_else(|| description.name.clone())
        .unwrap_or_else(|| match &description.program {
            Program::ExecutablePath(_) => exe_path.clone(),
            _ => DEFAULT_ARGV0.to_owned(),
        });
    let mut argv = vec![argv0.into_bytes()];
    argv.extend(description.args.iter().map(|arg| arg.clone().into_bytes()));
    let cwd = deployment.working_dir.clone().unwrap_or_default();
    let mut envp: Vec<Vec<u8>> = description
        .env
        .iter()
        .map(|(name, value)| format!("{name}={value}").into_bytes())
        .collect();
    if !description.env.iter().any(|(name, _)| name == "PWD") {
        envp.push([b"PWD=".as_slice(), &FsContext::session_path(&cwd)].concat());
    }
    Launch {
        domain: Arc::clone(domain),
        task: Arc::clone(task),
        image,
        argv,
        envp,
        exe_path,
        cwd,
        output_cap: deployment.output_cap.clone(),
        limits: RunLimits {
            gate: domain.cpu_gate(),
            slice: Duration::from_micros(config.cpu_slice_us),
            deadline: None,
        },
        wall_clock_seconds: description.wall_clock_seconds,
        program_bytes_max: config.program_bytes_max,
        ready,
    }
}

/// Reads an executable from the domain's `/` (`ExecutablePath`): the session directory, or
/// the image beneath it.
fn read_executable(root: &Root, path: &str, bytes_max: u64) -> Result<Bytes, Error> {
    let relative = scratch::relative(path)?;
    exec::read_program(root, &relative, bytes_max).map_err(|errno| {
        Error::Invalid(format!(
            "ExecutablePath {path:?}: {}",
            std::io::Error::from_raw_os_error(errno.0)
        ))
    })
}

fn spawn(launch: Launch, slot: TaskSlot) -> Result<(), Error> {
    std::thread::Builder::new()
        .name("xeno-vcpu".to_owned())
        .stack_size(threads::VCPU_THREAD_STACK_BYTES)
        .spawn(move || vcpu_thread(launch, slot))
        .map(|_| ())
        .map_err(|error| Error::Exhausted(format!("cannot start a vCPU thread: {error}")))
}

/// The body of a task's first thread: loads the task, registers it, and runs it.
fn vcpu_thread(launch: Launch, slot: TaskSlot) {
    let Launch {
        domain,
        task,
        image,
        argv,
        envp,
        exe_path,
        cwd,
        output_cap,
        mut limits,
        wall_clock_seconds,
        program_bytes_max,
        ready,
    } = launch;
    let vm = Arc::clone(&domain.resources);
    let prepared = (|| {
        let root = files::domain_root(&vm, &domain.scratch)?;
        let interpreter = |name: &str| exec::interpreter_of(&root, name, program_bytes_max);
        let loaded = loader::load(&vm, &image, &argv, &envp, exe_path.as_bytes(), &interpreter)
            .map_err(|error| Error::Invalid(format!("cannot load the executable: {error}")))?;
        let vcpu = match vm.take_vcpu() {
            Ok(vcpu) => vcpu,
            Err(error) => {
                loaded.mm.destroy(&vm.physical);
                return Err(Error::Exhausted(format!("cannot create a vCPU: {error}")));
            }
        };
        if !vm.add_process() {
            loaded.mm.destroy(&vm.physical);
            vm.give_back(vcpu);
            return Err(Error::Exhausted(format!(
                "the domain holds {} processes, its most",
                crate::kernel::tree::PROCESSES_MAX
            )));
        }
        if let Err(error) = domain.register_task(&task, &output_cap) {
            vm.processes_ended(1);
            loaded.mm.destroy(&vm.physical);
            vm.give_back(vcpu);
            return Err(error);
        }
        Ok((loaded, vcpu, root))
    })();
    let (loaded, vcpu, root) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => {
            let _ = ready.send(Err(error));
            return;
        }
    };
    let mut first_slot = KernelSlot::at(0);
    first_slot.kstack_gpa = loaded.mm.kstack_gpa();
    let mut live = BTreeMap::new();
    live.insert(ROOT_PID, ThreadInfo::new(first_slot, 0, 0));
    let shared = ProcessShared::new(ROOT_PID);
    let tree = Arc::new(Tree::new(Arc::clone(&shared)));
    let mut process = Process {
        vm: Arc::clone(&vm),
        mm: loaded.mm,
        loan: None,
        fds: FdTable::standard(),
        fs: FsContext { root, cwd },
        signals: Signals::new(),
        output: Output::new(
            Arc::from(task.id.as_str()),
            Arc::clone(&domain.events),
            Arc::clone(&task.meter),
        ),
        meter: Arc::clone(&task.meter),
        exe_path,
        image,
        cmdline: crate::kernel::process::nul_joined(&argv),
        environ: crate::kernel::process::nul_joined(&envp),
        comm: None,
        release: domain.settings.version.clone(),
        pid: ROOT_PID,
        umask: 0o022,
        boot: domain.created(),
        unknown: BTreeMap::new(),
        threads: Threads { live },
        tid: ROOT_PID,
        kstack: first_slot,
        futexes: BTreeMap::new(),
        ending: None,
        resume: None,
        end_status: None,
        tree,
        shared: Arc::clone(&shared),
        metered: 0,
        program_bytes_max,
        published_tables: None,
        real_timer: None,
        posix_timers: BTreeMap::new(),
    };
    process.publish();
    process.meter_memory();
    limits.deadline =
        wall_clock_seconds.map(|seconds| (Instant::now() + Duration::from_secs(seconds), seconds));
    let runtime = Arc::new(ProcessRuntime {
        task: Arc::new(TaskRuntime {
            domain,
            record: Arc::clone(&task),
            limits,
            _slot: slot,
        }),
        process: Mutex::new(process),
        shared,
    });
    let _ = ready.send(Ok(()));
    let first_entry = &task.first_entry;
    threads::thread_main(runtime, vcpu, ROOT_PID, loaded.start, &|| {
        let _ = first_entry.set(Instant::now());
    });
}
