//! DeployTask: from a request to a running task. Checks come first (document, payloads,
//! capacity), then the task's files are placed, then a vCPU thread is started that loads the
//! executable into a fresh address space, registers and announces the task, tells DeployTask
//! it runs, and runs it to its end.

use crate::domain::Domain;
use crate::error::Error;
use crate::fds::FdTable;
use crate::files::{self, FsContext};
use crate::loader;
use crate::manager::{Core, check_id};
use crate::output::Output;
use crate::process::{Process, Signals, ThreadInfo, Threads, Waiter};
use crate::run::RunLimits;
use crate::task::{Task, TaskSlot};
use crate::threads::{self, TaskRuntime};
use crate::vm::layout::KernelSlot;
use bytes::Bytes;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_schemas::taskmanager::events::OutputCap;
use xeno_schemas::taskmanager::payload;
use xeno_schemas::taskmanager::scratch::{self, PlacedFile};

/// argv[0] when the task names neither `Argv0` nor `Name`.
const DEFAULT_ARGV0: &str = "task";
/// The process id tasks see.
const TASK_PID: i32 = 2;

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
    ready: oneshot::Sender<Result<(), Error>>,
}

impl Core {
    pub(crate) async fn deploy_task(&self, request: pb::DeployTaskRequest) -> Result<(), Error> {
        let started = Instant::now();
        let domain = self.domain(&request.domain_id)?;
        check_id("task_id", &request.task_id)?;
        let description = TaskDescription::parse(request.task_xml.as_bytes())
            .map_err(|errors| Error::Invalid(format!("TaskDescription: {errors}")))?;
        if matches!(
            description.program,
            Program::WasmModule { .. } | Program::WasmComponent { .. }
        ) {
            return Err(Error::Unsupported(
                "this task manager runs Linux executables (Executable, ExecutablePath), not Wasm"
                    .to_owned(),
            ));
        }
        let payloads_max = self.config.payload_bytes_max;
        let payloads = request.payloads;
        let payloads = self
            .blocking(move || Ok(payload::verify(payloads, payloads_max)?))
            .await?;
        let fingerprint = payload::fingerprint(&request.task_xml, &payloads);

        let _deploying = domain.deploy_lock.lock().await;
        if let Some(existing) = domain.find_task(&request.task_id) {
            if existing.fingerprint == fingerprint {
                return Ok(());
            }
            return Err(Error::TaskExists {
                domain: request.domain_id,
                task: request.task_id,
            });
        }
        payload::check_named(&description.payload_hashes(), &payloads)?;
        domain.check_room()?;
        let slot = TaskSlot::take(&self.running, self.config.tasks_max)?;
        let working_dir = description
            .working_dir
            .as_deref()
            .map(scratch::relative)
            .transpose()?
            .filter(|dir| !dir.as_os_str().is_empty());
        let placed: Vec<PlacedFile> = description
            .files
            .iter()
            .filter_map(|file| {
                Some(PlacedFile {
                    path: file.path.clone(),
                    mode: file.mode,
                    data: payloads.get(&file.sha256)?.clone(),
                })
            })
            .collect();
        let root = files::scratch_dir(&domain.scratch)?;
        let scratch_path = domain.scratch.path().to_owned();
        let dir = working_dir.clone();
        let program = description.program.clone();
        let bytes_max = self.config.program_bytes_max;
        let image = self
            .blocking(move || {
                scratch::place_all(&scratch_path, &placed, dir.as_deref())?;
                match program {
                    Program::Executable { sha256 } => payloads
                        .get(&sha256)
                        .cloned()
                        .ok_or_else(|| Error::Internal("program payload vanished".to_owned())),
                    Program::ExecutablePath(path) => read_executable(&root, &path, bytes_max),
                    _ => Err(Error::Unsupported("not a Linux executable".to_owned())),
                }
            })
            .await?;
        if image.len() as u64 > bytes_max {
            return Err(Error::Invalid(format!(
                "the program is {} bytes; this task manager runs programs of at most {bytes_max} bytes",
                image.len()
            )));
        }
        let task = Arc::new(Task::new(request.task_id.clone(), fingerprint, started));
        let (ready, running) = oneshot::channel();
        let launch = self.launch(&domain, &task, &description, image, working_dir, ready);
        spawn(launch, slot)?;
        running.await.map_err(|_| {
            Error::Internal("the task's thread ended before it started".to_owned())
        })??;
        tracing::info!(domain = %request.domain_id, task = %request.task_id, "task started");
        Ok(())
    }

    /// Output kept for a task: the shared rule, with this manager's default and ceiling.
    fn output_cap(&self, domain: &Domain, asked: Option<u64>) -> OutputCap {
        OutputCap::choose(
            asked,
            domain.settings.task_output_bytes,
            self.config.task_output_bytes_default,
            self.config.task_output_bytes_max,
        )
    }

    fn launch(
        &self,
        domain: &Arc<Domain>,
        task: &Arc<Task>,
        description: &TaskDescription,
        image: Bytes,
        working_dir: Option<PathBuf>,
        ready: oneshot::Sender<Result<(), Error>>,
    ) -> Launch {
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
        let cwd = working_dir.unwrap_or_default();
        let mut envp: Vec<Vec<u8>> = description
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}").into_bytes())
            .collect();
        if !description.env.iter().any(|(name, _)| name == "PWD") {
            envp.push([b"PWD=".as_slice(), &FsContext::session_path(&cwd)].concat());
        }
        let output_cap = self.output_cap(domain, description.output_bytes);
        Launch {
            domain: Arc::clone(domain),
            task: Arc::clone(task),
            image,
            argv,
            envp,
            exe_path,
            cwd,
            output_cap,
            limits: RunLimits {
                gate: domain.cpu_gate(),
                slice: Duration::from_micros(self.config.cpu_slice_us),
                deadline: None,
            },
            wall_clock_seconds: description.wall_clock_seconds,
            ready,
        }
    }
}

/// Reads an executable from the session directory (`ExecutablePath`).
fn read_executable(root: &cap_std::fs::Dir, path: &str, bytes_max: u64) -> Result<Bytes, Error> {
    let relative = scratch::relative(path)?;
    let file = root
        .open(&relative)
        .map_err(|error| Error::Invalid(format!("ExecutablePath {path:?}: {error}")))?;
    let mut image = Vec::new();
    file.take(bytes_max + 1)
        .read_to_end(&mut image)
        .map_err(|error| Error::Invalid(format!("ExecutablePath {path:?}: {error}")))?;
    Ok(Bytes::from(image))
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
        ready,
    } = launch;
    let vm = Arc::clone(&domain.vm);
    let prepared = (|| {
        let loaded = loader::load(&vm, &image, &argv, &envp, exe_path.as_bytes())
            .map_err(|error| Error::Invalid(format!("cannot load the executable: {error}")))?;
        let vcpu = match vm.take_vcpu() {
            Ok(vcpu) => vcpu,
            Err(error) => {
                loaded.mm.destroy(&vm.physical);
                return Err(Error::Exhausted(format!("cannot create a vCPU: {error}")));
            }
        };
        let root = match files::scratch_dir(&domain.scratch) {
            Ok(root) => root,
            Err(error) => {
                loaded.mm.destroy(&vm.physical);
                vm.give_back(vcpu);
                return Err(error);
            }
        };
        if let Err(error) = domain.register_task(&task, &output_cap) {
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
    live.insert(
        TASK_PID,
        ThreadInfo {
            slot: first_slot,
            slot_index: 0,
            clear_child_tid: 0,
            waiter: Arc::new(Waiter::default()),
        },
    );
    let process = Process {
        vm: Arc::clone(&vm),
        mm: loaded.mm,
        fds: FdTable::standard(),
        fs: FsContext {
            root: Arc::new(root),
            cwd,
        },
        signals: Signals {
            actions: [[0; 4]; 65],
            mask: 0,
            pending: 0,
            codes: [0; 65],
        },
        output: Output::new(
            Arc::from(task.id.as_str()),
            Arc::clone(&domain.events),
            Arc::clone(&task.meter),
        ),
        meter: Arc::clone(&task.meter),
        exe_path,
        release: domain.settings.version.clone(),
        pid: TASK_PID,
        umask: 0o022,
        boot: domain.created(),
        unknown: BTreeMap::new(),
        threads: Threads {
            live,
            next_tid: TASK_PID + 1,
        },
        tid: TASK_PID,
        kstack: first_slot,
        futexes: BTreeMap::new(),
        ending: None,
    };
    process.meter_memory();
    limits.deadline =
        wall_clock_seconds.map(|seconds| (Instant::now() + Duration::from_secs(seconds), seconds));
    let runtime = Arc::new(TaskRuntime {
        domain,
        task: Arc::clone(&task),
        process: Mutex::new(process),
        limits,
        _slot: slot,
    });
    let _ = ready.send(Ok(()));
    let first_entry = &task.first_entry;
    threads::thread_main(runtime, vcpu, TASK_PID, loaded.start, &|| {
        let _ = first_entry.set(Instant::now());
    });
}
