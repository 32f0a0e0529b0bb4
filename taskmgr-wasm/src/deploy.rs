//! DeployTask: from a request to a running task. Checks come first (document, payloads,
//! capacity), then compilation (cached), then the task's files, then the task is registered,
//! announced and spawned.

use crate::cache::{Compiled, ProgramKind};
use crate::domain::Domain;
use crate::error::Error;
use crate::guest::Launch;
use crate::limiter::TaskLimiter;
use crate::manager::{Core, check_id};
use crate::output::OutputPipe;
use crate::task::{self, Task};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmtime::ExternType;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1::OutputStream;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_schemas::taskmanager::events::OutputCap;
use xeno_schemas::taskmanager::payload;
use xeno_schemas::taskmanager::scratch::{self as files, PlacedFile};

/// argv[0] when the task names neither `Argv0` nor `Name`.
const DEFAULT_ARGV0: &str = "task.wasm";

impl Core {
    pub(crate) async fn deploy_task(&self, request: pb::DeployTaskRequest) -> Result<(), Error> {
        let domain = self.domain(&request.domain_id)?;
        check_id("task_id", &request.task_id)?;
        let description = TaskDescription::parse(request.task_xml.as_bytes())
            .map_err(|errors| Error::Invalid(format!("TaskDescription: {errors}")))?;
        let (kind, program_hash, entry) = program_of(&description)?;
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
        let program = payloads
            .get(&program_hash)
            .cloned()
            .ok_or_else(|| Error::Internal("program payload vanished after checking".to_owned()))?;
        if program.len() as u64 > self.config.program_bytes_max {
            return Err(Error::Invalid(format!(
                "the program is {} bytes; this task manager runs programs of at most {} bytes",
                program.len(),
                self.config.program_bytes_max
            )));
        }
        domain.check_room()?;
        let permit = Arc::clone(&self.task_slots)
            .try_acquire_owned()
            .map_err(|_| {
                Error::Exhausted(format!(
                    "this task manager already runs its maximum of {} tasks",
                    self.config.tasks_max
                ))
            })?;
        let compiled = self
            .cache
            .get_or_compile(
                &self.runtime,
                &self.tasks,
                &domain,
                kind,
                &program_hash,
                program,
            )
            .await?;
        check_entry(&compiled, &entry)?;
        let working_dir = description
            .working_dir
            .as_deref()
            .map(files::relative)
            .transpose()?;
        let working_dir = working_dir.filter(|dir| !dir.as_os_str().is_empty());
        let placed = files_of(&description, &payloads);
        let scratch = domain.scratch.path().to_owned();
        let dir = working_dir.clone();
        self.blocking(move || files::place_all(&scratch, &placed, dir.as_deref()))
            .await?;

        let output_cap = self.output_cap(&domain, description.output_bytes);
        let task = domain.register_task(&request.task_id, fingerprint, &output_cap)?;
        let launch = self.launch(&domain, &task, &description, compiled, entry, working_dir);
        task::spawn(
            &self.tasks,
            Arc::clone(&domain),
            task,
            launch,
            self.config.poll_quantum_us,
            permit,
        );
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
        domain: &Domain,
        task: &Task,
        description: &TaskDescription,
        compiled: Arc<Compiled>,
        entry: String,
        working_dir: Option<PathBuf>,
    ) -> Launch {
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
            engine: self.runtime.engine.clone(),
            compiled,
            entry,
            argv,
            env,
            scratch: domain.scratch.path().to_owned(),
            working_dir,
            stdout: pipe(OutputStream::Stdout),
            stderr: pipe(OutputStream::Stderr),
            limiter: TaskLimiter::new(
                Arc::clone(&domain.memory),
                Arc::clone(&task.meter),
                self.config.instance_memory_bytes_max(),
                self.config.table_elements_max,
            ),
            meter: Arc::clone(&task.meter),
            interrupt: Arc::clone(&task.interrupt),
            wall_clock: description
                .wall_clock_seconds
                .map(|seconds| (Instant::now() + Duration::from_secs(seconds), seconds)),
            fuel_yield_interval: self.config.fuel_yield_interval,
        }
    }
}

/// What the task runs: its kind, its payload's hash, and (for modules) the entry point.
fn program_of(description: &TaskDescription) -> Result<(ProgramKind, String, String), Error> {
    match &description.program {
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

/// The task's `Files` with their bytes (every hash was checked against the payloads).
fn files_of(description: &TaskDescription, payloads: &payload::Payloads) -> Vec<PlacedFile> {
    description
        .files
        .iter()
        .filter_map(|file| {
            Some(PlacedFile {
                path: file.path.clone(),
                mode: file.mode,
                data: payloads.get(&file.sha256)?.clone(),
            })
        })
        .collect()
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
