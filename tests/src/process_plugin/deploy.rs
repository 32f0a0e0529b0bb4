//! Turning a DeployTask request into a command ready to spawn: the TaskDescription parsed, the
//! payloads checked against their SHA-256, the task's files and executable written into the
//! scratch directory, and the process's argv, environment, directory and rlimits set.

use super::domain::Limits;
use super::error::PluginError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1::Payload;

/// Open files per process (RLIMIT_NOFILE): plenty for ordinary programs, far below a host's
/// limit, so one task cannot use up the plugin's file table.
pub(crate) const OPEN_FILES_MAX: u64 = 1024;

/// Processes per user (RLIMIT_NPROC), a brake on fork bombs. Linux counts every process of the
/// real user, not of the task, and does not apply this limit to root at all: tasks run as the
/// plugin's user, so run the plugin as an unprivileged user of its own for it to mean anything.
pub(crate) const PROCESSES_MAX: u64 = 512;

/// Where Executable payloads are written, inside the scratch directory, named by their hash.
pub(crate) const EXECUTABLES_DIR: &str = ".xeno/bin";

/// A task ready to spawn.
pub(crate) struct Prepared {
    /// The command, with everything set.
    pub command: Command,
    /// Its wall-clock limit.
    pub wall_clock: Option<Duration>,
    /// Output to keep, bytes.
    pub output_bytes_max: usize,
}

/// Identifies a DeployTask request: its document and the payloads' hashes and sizes (the
/// payloads' bytes are checked against those hashes before anything runs).
pub(crate) fn request_digest(task_xml: &str, payloads: &[Payload]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((task_xml.len() as u64).to_le_bytes());
    hasher.update(task_xml.as_bytes());
    for payload in payloads {
        hasher.update((payload.sha256.len() as u64).to_le_bytes());
        hasher.update(payload.sha256.as_bytes());
        hasher.update((payload.data.len() as u64).to_le_bytes());
    }
    hasher.finalize().into()
}

/// Checks the request and writes its files; returns the command to spawn. Blocking: run it off
/// the async threads.
pub(crate) fn prepare(
    limits: &Limits,
    scratch: &Path,
    task_xml: &str,
    payloads: &[Payload],
) -> Result<Prepared, PluginError> {
    let task = TaskDescription::parse(task_xml.as_bytes())
        .map_err(|error| PluginError::InvalidArgument(format!("TaskDescription: {error}")))?;
    let payloads = verified_payloads(payloads)?;
    let needed = |hash: &str| {
        payloads.get(hash).copied().ok_or_else(|| {
            PluginError::InvalidArgument(format!("payload {hash} named by the task was not sent"))
        })
    };
    let mut bytes_written = 0u64;
    let program = match &task.program {
        Program::Executable { sha256 } => {
            let data = needed(sha256)?;
            bytes_written += data.len() as u64;
            check_disk(limits, bytes_written)?;
            let path = scratch.join(EXECUTABLES_DIR).join(sha256);
            // Named by its hash, so one already there has the same bytes.
            if !path.is_file() {
                write_file(&path, data, 0o755)?;
            }
            path
        }
        Program::ExecutablePath(relative) => scratch.join(relative.trim_start_matches('/')),
        Program::WasmModule { .. } | Program::WasmComponent { .. } => {
            return Err(PluginError::Unimplemented(
                "the Process task manager runs native executables (Executable, ExecutablePath), \
                 not WebAssembly"
                    .into(),
            ));
        }
    };
    for file in &task.files {
        let data = needed(&file.sha256)?;
        bytes_written += data.len() as u64;
        check_disk(limits, bytes_written)?;
        write_file(
            &scratch.join(file.path.trim_start_matches('/')),
            data,
            file.mode,
        )?;
    }
    if !program.is_file() {
        return Err(PluginError::InvalidArgument(format!(
            "the program {} is not a file in the session directory",
            program.strip_prefix(scratch).unwrap_or(&program).display()
        )));
    }
    let working_dir = match &task.working_dir {
        Some(dir) => scratch.join(dir.trim_start_matches('/')),
        None => scratch.to_owned(),
    };
    std::fs::create_dir_all(&working_dir)
        .map_err(PluginError::io("creating the working directory"))?;

    let argv0 = task
        .argv0
        .clone()
        .unwrap_or_else(|| default_argv0(&task, &program));
    let mut command = Command::new(&program);
    command
        .arg0(argv0)
        .args(&task.args)
        .env_clear()
        .envs(task.env.iter().map(|(name, value)| (name, value)))
        .current_dir(&working_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so the task and everything it forks can be signalled at once.
        .process_group(0);
    let rlimits = Rlimits::for_domain(limits);
    let plugin = rustix::process::getpid();
    // SAFETY: the closure runs in the forked child before exec, where only async-signal-safe
    // calls are allowed. It makes only raw system calls through rustix (setrlimit, prctl,
    // getppid) and builds errors from errno values, without allocating or taking locks.
    unsafe {
        command.pre_exec(move || rlimits.apply(plugin));
    }
    let output_bytes_max = match task
        .output_bytes
        .and_then(|bytes| usize::try_from(bytes).ok())
    {
        Some(bytes) => bytes.min(limits.output_bytes_max),
        None => limits.output_bytes_max,
    };
    Ok(Prepared {
        command,
        wall_clock: task.wall_clock_seconds.map(Duration::from_secs),
        output_bytes_max,
    })
}

/// The payloads by hash, each checked against the hash it claims.
fn verified_payloads(payloads: &[Payload]) -> Result<HashMap<&str, &[u8]>, PluginError> {
    let mut by_hash = HashMap::with_capacity(payloads.len());
    for payload in payloads {
        let actual = hex::encode(Sha256::digest(&payload.data));
        if actual != payload.sha256 {
            return Err(PluginError::InvalidArgument(format!(
                "payload {} has bytes whose SHA-256 is {actual}",
                payload.sha256
            )));
        }
        by_hash.insert(payload.sha256.as_str(), payload.data.as_slice());
    }
    Ok(by_hash)
}

fn check_disk(limits: &Limits, bytes: u64) -> Result<(), PluginError> {
    match limits.disk_bytes {
        Some(max) if bytes > max => Err(PluginError::InvalidArgument(format!(
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

/// Writes a file whole under a temporary name and renames it into place, so a task never sees
/// it half-written and an existing file (or link) at the path is replaced, not written through.
fn write_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PluginError> {
    let shown = path.display().to_string();
    let parent = path
        .parent()
        .map(Path::to_owned)
        .unwrap_or_else(|| PathBuf::from("."));
    std::fs::create_dir_all(&parent).map_err(PluginError::io(format!(
        "creating the directory of {shown}"
    )))?;
    let mut temporary = tempfile::Builder::new()
        .prefix(".xeno-partial-")
        .permissions(std::fs::Permissions::from_mode(mode & 0o7777))
        .tempfile_in(&parent)
        .map_err(PluginError::io(format!("creating {shown}")))?;
    temporary
        .write_all(data)
        .map_err(PluginError::io(format!("writing {shown}")))?;
    // The umask may have narrowed the mode asked for at creation.
    temporary
        .as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(PluginError::io(format!("setting the mode of {shown}")))?;
    temporary
        .persist(path)
        .map_err(|error| PluginError::io(format!("renaming into {shown}"))(error.error))?;
    Ok(())
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
    fn for_domain(limits: &Limits) -> Rlimits {
        use rustix::process::Resource;
        let within_hard = |resource: Resource, value: u64| {
            rustix::process::getrlimit(resource)
                .maximum
                .map_or(value, |hard| hard.min(value))
        };
        Rlimits {
            address_space: limits
                .memory_bytes
                .map(|bytes| within_hard(Resource::As, bytes)),
            file_size: limits
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
        // If the plugin dies, the kernel kills the task's leader (see the supervisor module).
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        // The plugin may have died between fork and the call above; then nobody would.
        if rustix::process::getppid() != Some(plugin) {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_payload_whose_bytes_do_not_match_its_hash() {
        let payload = Payload {
            sha256: hex::encode(Sha256::digest(b"right")),
            data: b"wrong".to_vec(),
        };
        let error = verified_payloads(&[payload]).expect_err("mismatch refused");
        assert_eq!(error.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn digest_tells_requests_apart() {
        let payload = Payload {
            sha256: "ab".into(),
            data: vec![1, 2],
        };
        let one = request_digest("<a/>", std::slice::from_ref(&payload));
        assert_eq!(one, request_digest("<a/>", std::slice::from_ref(&payload)));
        assert_ne!(one, request_digest("<b/>", &[payload]));
        assert_ne!(one, request_digest("<a/>", &[]));
    }

    #[test]
    fn writes_files_with_their_mode_replacing_links() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").expect("target written");
        let link = dir.path().join("sub/file");
        std::fs::create_dir_all(dir.path().join("sub")).expect("sub created");
        std::os::unix::fs::symlink(&target, &link).expect("link created");
        write_file(&link, b"new", 0o640).expect("file written");
        assert_eq!(
            std::fs::read(&target).expect("target read"),
            b"keep",
            "not written through the link"
        );
        assert_eq!(std::fs::read(&link).expect("file read"), b"new");
        let mode = std::fs::metadata(&link)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
    }
}
