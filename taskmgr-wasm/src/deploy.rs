//! DeployTask, the Wasm part: after the kit's checks (document, payloads, capacity), the
//! program is compiled (cached), the task's files are placed, and the task is registered,
//! announced and spawned.

use crate::Domain;
use crate::Task;
use crate::cache::{Compiled, ProgramKind};
use crate::error::Error;
use crate::guest::Launch;
use crate::limiter::TaskLimiter;
use crate::manager::{WasmBackend, WasmTaskManager};
use crate::output::OutputPipe;
use crate::task;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::ExternType;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1::OutputStream;
use xeno_taskmgr_kit::Deployment;

/// argv[0] when the task names neither `Argv0` nor `Name`.
const DEFAULT_ARGV0: &str = "task.wasm";

pub(crate) async fn deploy(
    host: &WasmTaskManager,
    deployment: Deployment<WasmBackend>,
) -> Result<(), Error> {
    let backend = host.backend();
    let config = &backend.config;
    let description = &deployment.description;
    let (kind, program_hash, entry) = program_of(&description.program)?;
    let program = deployment
        .payloads
        .get(&program_hash)
        .cloned()
        .ok_or_else(|| Error::Internal("program payload vanished after checking".to_owned()))?;
    if program.len() as u64 > config.program_bytes_max {
        return Err(Error::Invalid(format!(
            "the program is {} bytes; this task manager runs programs of at most {} bytes",
            program.len(),
            config.program_bytes_max
        )));
    }
    let domain = &deployment.domain;
    let compiled = backend
        .cache
        .get_or_compile(
            &backend.runtime,
            &backend.tasks,
            domain,
            kind,
            &program_hash,
            program,
        )
        .await?;
    check_entry(&compiled, &entry)?;
    deployment.place_files(host).await?;
    let task = domain.new_task(&deployment.task_id, deployment.fingerprint, Instant::now());
    domain.register_task(&task, &deployment.output_cap)?;
    let launch = launch(
        backend,
        domain,
        &task,
        description,
        compiled,
        entry,
        deployment.working_dir.clone(),
    );
    task::spawn(
        &backend.tasks,
        Arc::clone(domain),
        task,
        launch,
        config.poll_quantum_us,
        deployment.slot,
    );
    Ok(())
}

fn launch(
    backend: &WasmBackend,
    domain: &Domain,
    task: &Task,
    description: &TaskDescription,
    compiled: Arc<Compiled>,
    entry: String,
    working_dir: Option<PathBuf>,
) -> Launch {
    let config = &backend.config;
    let argv0 = description
        .argv0
        .clone()
        .or_else(|| description.name.clone())
        .unwrap_or_else(|| DEFAULT_ARGV0.to_owned());
    let mut argv = vec![argv0];
    argv.extend(description.args.iter().cloned());
    let working_dir = working_dir.map(|dir| dir.to_string_lossy().into_owned());
    let mut env = description.env.clone();
    if let Some(dir) = &working_dir
        && !env.iter().any(|(name, _)| name == "PWD")
    {
        env.push(("PWD".to_owned(), format!("/{dir}")));
    }
    let task_id: Arc<str> = Arc::from(task.id.as_str());
    let pipe = |stream| {
        OutputPipe::new(
            Arc::clone(&task_id),
            stream,
            Arc::clone(&domain.events),
            Arc::clone(&task.meter),
        )
    };
    Launch {
        engine: backend.runtime.engine.clone(),
        compiled,
        entry,
        argv,
        env,
        scratch: domain.scratch.path().to_owned(),
        working_dir,
        stdout: pipe(OutputStream::Stdout),
        stderr: pipe(OutputStream::Stderr),
        limiter: TaskLimiter::new(
            Arc::clone(&domain.resources),
            Arc::clone(&task.meter),
            config.instance_memory_bytes_max(),
            config.table_elements_max,
        ),
        meter: Arc::clone(&task.meter),
        interrupt: Arc::clone(&task.control),
        wall_clock: description
            .wall_clock_seconds
            .map(|seconds| (Instant::now() + Duration::from_secs(seconds), seconds)),
        fuel_yield_interval: config.fuel_yield_interval,
    }
}

/// What the task runs: its kind, its payload's hash, and (for modules) the entry point.
pub(crate) fn program_of(program: &Program) -> Result<(ProgramKind, String, String), Error> {
    match program {
        Program::WasmModule { sha256, entry } => Ok((
            ProgramKind::Module,
            sha256.clone(),
            entry.clone().unwrap_or_else(|| "_start".to_owned()),
        )),
        Program::WasmComponent { sha256 } => {
            Ok((ProgramKind::Component, sha256.clone(), String::new()))
        }
        Program::Executable { .. } | Program::ExecutablePath(_) => Err(Error::Unsupported(
            "this task manager runs WasmModule and WasmComponent programs, not Linux executables"
                .to_owned(),
        )),
    }
}

/// A module's entry point must be an exported function taking and returning nothing.
fn check_entry(compiled: &Compiled, entry: &str) -> Result<(), Error> {
    let Compiled::Module { module, .. } = compiled else {
        return Ok(());
    };
    match module.get_export(entry) {
        Some(ExternType::Func(function))
            if function.params().len() == 0 && function.results().len() == 0 =>
        {
            Ok(())
        }
        Some(ExternType::Func(_)) => Err(Error::Invalid(format!(
            "entry point {entry:?} must take no parameters and return nothing"
        ))),
        _ => Err(Error::Invalid(format!(
            "the module exports no function {entry:?}"
        ))),
    }
}
