//! DeployTask, the Process part: after the kit's checks (document, payloads, capacity), the
//! task's files and its `Executable` payload (mode 0755, under `.xeno/bin/` named by hash) are
//! written into the session directory, and the program is spawned with the session directory
//! (or its `WorkingDir`) as working directory, only the task's `Env` as environment, `Argv0`
//! (or the program's name) as `argv[0]`, stdin from /dev/null and stdout/stderr piped, in a
//! process group of its own, with rlimits set between fork and exec: RLIMIT_AS from
//! `memory_mb`, RLIMIT_FSIZE from `disk_mb`, RLIMIT_NOFILE, RLIMIT_NPROC and RLIMIT_CORE 0.

use crate::manager::{ProcDomain, ProcessBackend, ProcessTaskManager};
use crate::meter::Metered;
use crate::supervisor::{self, Running};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_taskmgr_kit::scratch::{self, PlacedFile};
use xeno_taskmgr_kit::{Deployment, Error};

/// Open files per process (RLIMIT_NOFILE): plenty for ordinary programs, far below a host's
/// limit, so one task cannot use up the plugin's file table.
pub(crate) const OPEN_FILES_MAX: u64 = 1024;

/// Processes per user (RLIMIT_NPROC), a brake on fork bombs. Linux counts every process of the
/// real user, not of the task, and does not apply this limit to root at all: tasks run as the
/// plugin's user, so run the plugin as an unprivileged user of its own for it to mean anything.
pub(crate) const PROCESSES_MAX: u64 = 512;

/// Where Executable payloads are written, inside the scratch directory, named by their hash.
pub(crate) const EXECUTABLES_DIR: &str = ".xeno/bin";

pub(crate) async fn deploy(
    host: &ProcessTaskManager,
    deployment: Deployment<ProcessBackend>,
) -> Result<(), Error> {
    let domain = Arc::clone(&deployment.domain);
    let description = &deployment.description;
    let scratch_dir = domain.scratch.path().to_owned();
    let mut bytes = 0u64;
    for file in &description.files {
        bytes += deployment
            .payloads
            .get(&file.sha256)
            .map_or(0, |data| data.len() as u64);
    }
    let program = match &description.program {
        Program::Executable { sha256 } => {
            let data = deployment.payloads.get(sha256).cloned().ok_or_else(|| {
                Error::Internal("program payload vanished after checking".to_owned())
            })?;
            bytes += data.len() as u64;
            check_disk(&domain.resources, bytes)?;
            let relative = format!("{EXECUTABLES_DIR}/{sha256}");
            let path = scratch_dir.join(&relative);
            // Named by its hash, so one already there has the same bytes (and may be running:
            // writing it again would fail with ETXTBSY).
            if !path.is_file() {
                let root = scratch_dir.clone();
                let placed = vec![PlacedFile {
                    path: relative,
                    mode: 0o755,
                    data,
                }];
                host.blocking(move || scratch::place_all(&root, &placed, None))
                    .await?;
            }
            path
        }
        Program::ExecutablePath(path) => scratch_dir.join(scratch::relative(path)?),
        Program::WasmModule { .. } | Program::WasmComponent { .. } => {
            return Err(Error::Unsupported(not_wasm()));
        }
    };
    check_disk(&domain.resources, bytes)?;
    deployment.place_files(host).await?;
    if !program.is_file() {
        return Err(Error::Invalid(format!(
            "the program {} is not a file in the session directory",
            program
                .strip_prefix(&scratch_dir)
                .unwrap_or(&program)
                .display()
        )));
    }
    let working_dir = match &deployment.working_dir {
        Some(dir) => scratch_dir.join(dir),
        None => scratch_dir.clone(),
    };
    let command = command(&domain.resources, description, &program, &working_dir);
    let task = domain.new_task(
        &deployment.task_id,
        deployment.fingerprint,
        deployment.started,
    );
    let spawned =
        supervisor::spawn(command, Arc::clone(&task.control), &deployment.task_id).await?;
    task.control.started(spawned.pid);
    if let Err(error) = domain.register_task(&task, &deployment.output_cap) {
        let _ = spawned.recorded.send(false);
        return Err(error);
    }
    let metered = Arc::new(Metered {
        pgid: spawned.pid,
        meter: Arc::clone(&task.meter),
        control: Arc::clone(&task.control),
        group: Mutex::new(Default::default()),
    });
    domain.resources.meter.add(&task.id, Arc::clone(&metered));
    let _ = spawned.recorded.send(true);
    let _ = task.first_entry.set(std::time::Instant::now());
    tracing::debug!(task = %task.id, pid = spawned.pid.as_raw_pid(), "process started");
    tokio::spawn(supervisor::supervise(Running {
        domain,
        task,
        metered,
        stdout: spawned.stdout,
        stderr: spawned.stderr,
        exit: spawned.exit,
        wall_clock: description.wall_clock_seconds.map(Duration::from_secs),
        slot: deployment.slot,
    }));
    Ok(())
}

/// Why WebAssembly is refused.
pub(crate) fn not_wasm() -> String {
    "the Process task manager runs native executables (Executable, ExecutablePath), not \
     WebAssembly"
        .to_owned()
}

/// The command that runs the task.
fn command(
    domain: &ProcDomain,
    description: &TaskDescription,
    program: &Path,
    working_dir: &Path,
) -> Command {
    let argv0 = description
        .argv0
        .clone()
        .unwrap_or_else(|| default_argv0(description, program));
    let mut command = Command::new(program);
    command
        .arg0(argv0)
        .args(&description.args)
        .env_clear()
        .envs(description.env.iter().map(|(name, value)| (name, value)))
        .current_dir(working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the task and everything it forks can be signalled at once.
        .process_group(0);
    let rlimits = Rlimits::for_domain(domain);
    let plugin = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. It makes only raw system calls through rustix (setrlimit, prctl,
    // getppid) and builds errors from errno values, without allocating or taking locks.
    unsafe {
        command.pre_exec(move || rlimits.apply(plugin));
    }
    command
}

fn check_disk(domain: &ProcDomain, bytes: u64) -> Result<(), Error> {
    match domain.disk_bytes {
        Some(max) if bytes > max => Err(Error::Invalid(format!(
            "the task's files are {bytes} bytes, more than the domain's disk limit of {max}"
        ))),
        _ => Ok(()),
    }
}

/// `argv[0]` when the task names none: the executable's file name, or the task's name for an
/// Executable payload (whose file is named by its hash).
fn default_argv0(task: &TaskDescription, program: &Path) -> String {
    match (&task.program, &task.name) {
        (Program::Executable { .. }, Some(name)) => name.clone(),
        (Program::Executable { .. }, None) => "task".to_owned(),
        _ => program
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_else(|| "task".to_owned()),
    }
}

/// The rlimits a task's processes get.
#[derive(Debug, Clone, Copy)]
struct Rlimits {
    /// RLIMIT_AS, from the domain's memory_mb. Per process: a task of several processes can
    /// hold more than this altogether.
    address_space: Option<u64>,
    /// RLIMIT_FSIZE, from the domain's disk_mb: the largest file a task may write (not the
    /// total it may write).
    file_size: Option<u64>,
    /// RLIMIT_NOFILE.
    open_files: u64,
    /// RLIMIT_NPROC.
    processes: u64,
}

impl Rlimits {
    /// The limits for a domain's tasks, each within the plugin's own hard limit: the task
    /// inherits the plugin's limits, and only a privileged process may raise a hard limit.
    fn for_domain(domain: &ProcDomain) -> Rlimits {
        use rustix::process::Resource;
        let within_hard = |resource: Resource, value: u64| {
            rustix::process::getrlimit(resource)
                .maximum
                .map_or(value, |hard| hard.min(value))
        };
        Rlimits {
            address_space: domain
                .memory_bytes
                .map(|bytes| within_hard(Resource::As, bytes)),
            file_size: domain
                .disk_bytes
                .map(|bytes| within_hard(Resource::Fsize, bytes)),
            open_files: within_hard(Resource::Nofile, OPEN_FILES_MAX),
            processes: within_hard(Resource::Nproc, PROCESSES_MAX),
        }
    }

    /// Applies the limits in the child between fork and exec. Only raw system calls: see the
    /// SAFETY comment at `pre_exec`.
    fn apply(self, plugin: rustix::process::Pid) -> std::io::Result<()> {
        use rustix::process::{Resource, Rlimit, setrlimit};
        let exactly = |value: u64| Rlimit {
            current: Some(value),
            maximum: Some(value),
        };
        if let Some(bytes) = self.address_space {
            setrlimit(Resource::As, exactly(bytes))?;
        }
        if let Some(bytes) = self.file_size {
            setrlimit(Resource::Fsize, exactly(bytes))?;
        }
        setrlimit(Resource::Nofile, exactly(self.open_files))?;
        setrlimit(Resource::Nproc, exactly(self.processes))?;
        setrlimit(Resource::Core, exactly(0))?;
        // If the plugin dies, the kernel kills the task's leader (see `supervisor.rs`).
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        // The plugin may have died between fork and the call above; then nobody would.
        if rustix::process::getppid() != Some(plugin) {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    }
}
