//! Starting a task's process and following it to its end.
//!
//! Each task has a waiter thread that forks the task and then blocks until the task's leader
//! (its first process) exits. The thread, not tokio's child handling, does the waiting because
//! the plugin needs two things tokio's `Child` does not give:
//!
//! - the leader's rusage at exit (`wait4`), the precise CPU time of the leader and of every
//!   child it reaped, where `/proc` samples are 10 ms-grained and miss short-lived processes;
//! - control over when the leader is reaped. The thread first waits with `WNOWAIT`, leaving the
//!   leader a zombie, which keeps its pid (the process group id) from being reused. It marks the
//!   task `leader_exited` under the domain lock, SIGKILLs whatever is left of the group, and only
//!   then reaps. Everything that signals a group (StopTask, the duty cycle) does so under the
//!   same lock after checking the mark, so no signal can reach a recycled group.
//!
//! The thread is also the task's parent thread for `PR_SET_PDEATHSIG`, which kills the leader if
//! the plugin dies without cleaning up: the signal fires when the thread that forked exits,
//! and this thread lives exactly as long as the leader.
//!
//! The async side ([`supervise`]) copies the pipes into the domain's events, enforces the
//! task's wall-clock limit, and ends the task once the leader is reaped and its pipes are
//! drained.

use crate::control::GroupControl;
use crate::group::exit_of;
use crate::meter::Metered;
use crate::{Domain, Task};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use std::process::{ChildStderr, ChildStdout, Command};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use xeno_schemas::proto::common::v1::OutputStream;
use xeno_taskmgr_kit::events::CHUNK_BYTES_MAX;
use xeno_taskmgr_kit::{Control, Error, Outcome, TaskSlot, lock};

/// How long the task's pipes may stay open after its leader exited and its group was killed: a
/// process that left the group (`setsid`) and kept them open cannot hold up the task's end.
pub(crate) const PIPE_DRAIN_WAIT: Duration = Duration::from_secs(1);

/// Read size from a task's pipes: one event's worth (64 KiB).
const READ_BYTES: usize = CHUNK_BYTES_MAX;

/// How many times a spawn failing with ETXTBSY is retried. Another thread forking while a
/// deploy had the executable open for writing leaves a copy of that descriptor in its child
/// until the child execs; the window is short, so a short wait and a retry get past it.
const TEXT_BUSY_RETRIES: u32 = 10;
const TEXT_BUSY_PAUSE: Duration = Duration::from_millis(10);

/// Stack size of a waiter thread: it only waits, so the default 2 MiB would be waste.
const WAITER_STACK_BYTES: usize = 64 * 1024;

/// A task's leader, just spawned.
pub(crate) struct Spawned {
    /// The leader's pid, which is also the process group id.
    pub pid: Pid,
    /// Its stdout and stderr pipes.
    pub stdout: ChildStdout,
    pub stderr: ChildStderr,
    /// Tell the waiter the task is recorded (`true`: go on and wait for it) or abandoned
    /// (`false`: kill and reap it).
    pub recorded: oneshot::Sender<bool>,
    /// The leader's exit, once reaped.
    pub exit: oneshot::Receiver<LeaderExit>,
}

/// How the leader ended.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LeaderExit {
    /// Its wait status.
    pub status: i32,
    /// User + system CPU of the leader and the children it reaped, microseconds.
    pub cpu_us: u64,
    /// Its peak resident size, bytes.
    pub peak_bytes: u64,
}

/// Spawns `command` on a new waiter thread; returns once it is running (or failed to start).
pub(crate) async fn spawn(
    mut command: Command,
    control: Arc<GroupControl>,
    task_id: &str,
) -> Result<Spawned, Error> {
    let (started_tx, started_rx) = oneshot::channel();
    let (recorded_tx, recorded_rx) = oneshot::channel::<bool>();
    let (exit_tx, exit_rx) = oneshot::channel();
    let name = format!("xeno-wait-{}", task_id.chars().take(16).collect::<String>());
    std::thread::Builder::new()
        .name(name)
        .stack_size(WAITER_STACK_BYTES)
        .spawn(move || {
            let mut child = match spawn_retrying(&mut command) {
                Ok(child) => child,
                Err(error) => {
                    let _ = started_tx.send(Err(error));
                    return;
                }
            };
            let pid = Pid::from_child(&child);
            let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
                let _ = started_tx.send(Err(std::io::Error::other(
                    "stdout and stderr were not piped",
                )));
                kill_and_reap(pid);
                return;
            };
            if started_tx.send(Ok((pid, stdout, stderr))).is_err()
                || !recorded_rx.blocking_recv().unwrap_or(false)
            {
                kill_and_reap(pid);
                return;
            }
            wait_for_exit(pid);
            control.leader_exited();
            let _ = exit_tx.send(reap(pid));
        })
        .map_err(|error| Error::Exhausted(format!("cannot start a waiter thread: {error}")))?;
    let (pid, stdout, stderr) = started_rx
        .await
        .map_err(|_| Error::Internal("the task's waiter thread died".to_owned()))?
        .map_err(refused_program)?;
    Ok(Spawned {
        pid,
        stdout,
        stderr,
        recorded: recorded_tx,
        exit: exit_rx,
    })
}

/// Why exec refused the program. Most reasons are the program's (not executable, not a format
/// the kernel runs, a missing interpreter, too big for the memory limit): INVALID_ARGUMENT, as
/// the contract has it for something the plugin cannot run. Anything else is the host's.
fn refused_program(error: std::io::Error) -> Error {
    match error.raw_os_error() {
        Some(libc::ENOEXEC | libc::ENOENT | libc::EACCES | libc::ETXTBSY | libc::E2BIG) => {
            Error::Invalid(format!("the program cannot be executed: {error}"))
        }
        Some(libc::ENOMEM) => Error::Invalid(format!(
            "the program cannot start within the domain's memory limit: {error}"
        )),
        _ => Error::Internal(format!("starting the task: {error}")),
    }
}

fn spawn_retrying(command: &mut Command) -> std::io::Result<std::process::Child> {
    let mut attempt = 0;
    loop {
        match command.spawn() {
            Err(error)
                if error.raw_os_error() == Some(libc::ETXTBSY) && attempt < TEXT_BUSY_RETRIES =>
            {
                attempt += 1;
                std::thread::sleep(TEXT_BUSY_PAUSE);
            }
            result => return result,
        }
    }
}

/// Blocks until the leader has exited, leaving it unreaped.
fn wait_for_exit(pid: Pid) {
    loop {
        match rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
        ) {
            Err(rustix::io::Errno::INTR) => continue,
            Ok(Some(_)) => return,
            // Ok(None) is only possible with NOHANG; an error means it is not ours to wait for,
            // which reap() will report.
            Ok(None) | Err(_) => return,
        }
    }
}

/// Reaps the leader, with its rusage.
fn reap(pid: Pid) -> LeaderExit {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is a plain C struct of integers, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `status` and `usage` are live, exclusively borrowed locals the kernel writes
        // into; the pid is this process's own child, which only this thread waits for.
        let reaped = unsafe { libc::wait4(pid.as_raw_pid(), &mut status, 0, &mut usage) };
        if reaped == pid.as_raw_pid() {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            tracing::error!(pid = pid.as_raw_pid(), %error, "wait4 failed");
            // Reported as a kill by SIGKILL, the likeliest way a process we cannot wait for went.
            return LeaderExit {
                status: libc::SIGKILL,
                cpu_us: 0,
                peak_bytes: 0,
            };
        }
    }
    let micros = |time: libc::timeval| {
        u64::try_from(time.tv_sec).unwrap_or(0) * 1_000_000
            + u64::try_from(time.tv_usec).unwrap_or(0)
    };
    LeaderExit {
        status,
        cpu_us: micros(usage.ru_utime) + micros(usage.ru_stime),
        // ru_maxrss is in KiB on Linux.
        peak_bytes: u64::try_from(usage.ru_maxrss).unwrap_or(0) * 1024,
    }
}

/// Kills and reaps a leader that was never recorded as a task.
fn kill_and_reap(pid: Pid) {
    let _ = rustix::process::kill_process_group(pid, Signal::KILL);
    reap(pid);
}

/// Copies one of the task's pipes into the domain's events until the pipe closes.
fn read_output(
    domain: Arc<Domain>,
    task: Arc<Task>,
    stream: OutputStream,
    mut pipe: impl AsyncRead + Unpin + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; READ_BYTES];
        loop {
            let read = match pipe.read(&mut buffer).await {
                Ok(0) => return,
                Ok(read) => read,
                Err(error) => {
                    tracing::warn!(task = %task.id, %error, "reading task output failed");
                    return;
                }
            };
            task.meter.add_output_bytes(read as u64);
            domain.events.output(&task.id, stream, &buffer[..read]);
        }
    })
}

/// A task whose leader runs, registered with its domain.
pub(crate) struct Running {
    pub(crate) domain: Arc<Domain>,
    pub(crate) task: Arc<Task>,
    pub(crate) metered: Arc<Metered>,
    pub(crate) stdout: ChildStdout,
    pub(crate) stderr: ChildStderr,
    pub(crate) exit: oneshot::Receiver<LeaderExit>,
    pub(crate) wall_clock: Option<Duration>,
    /// Its place among the running tasks, held until it has ended.
    pub(crate) slot: TaskSlot,
}

/// Follows a running task to its end: copies its output, enforces its wall-clock limit, waits
/// for the leader's exit and the last of its output, and ends the task.
pub(crate) async fn supervise(running: Running) {
    let Running {
        domain,
        task,
        metered,
        stdout,
        stderr,
        mut exit,
        wall_clock,
        slot,
    } = running;
    let readers = match (
        tokio::process::ChildStdout::from_std(stdout),
        tokio::process::ChildStderr::from_std(stderr),
    ) {
        (Ok(stdout), Ok(stderr)) => [
            read_output(
                Arc::clone(&domain),
                Arc::clone(&task),
                OutputStream::Stdout,
                stdout,
            ),
            read_output(
                Arc::clone(&domain),
                Arc::clone(&task),
                OutputStream::Stderr,
                stderr,
            ),
        ],
        _ => {
            task.control
                .stop("the plugin could not watch the task's output");
            [tokio::spawn(async {}), tokio::spawn(async {})]
        }
    };
    let exited = match wall_clock {
        None => (&mut exit).await,
        Some(limit) => tokio::select! {
            exited = &mut exit => exited,
            () = tokio::time::sleep(limit) => {
                task.control.stop(&format!("wall-clock limit of {} s reached", limit.as_secs()));
                exit.await
            }
        },
    };
    for reader in readers {
        let abort = reader.abort_handle();
        if tokio::time::timeout(PIPE_DRAIN_WAIT, reader).await.is_err() {
            tracing::warn!(
                task = %task.id,
                "output pipe still open after the task ended; dropping it"
            );
            abort.abort();
        }
    }
    let outcome = match exited {
        Ok(exit) => {
            lock(&metered.group).raise_cpu_us(exit.cpu_us, &task.meter);
            // Its peak as the kernel saw it, which samples 10 ms apart can miss; what it held
            // over time stays what the samples saw, and nothing is held once it has gone.
            task.meter.raise_memory_peak(exit.peak_bytes);
            task.meter.set_memory(0);
            exit_of(exit.status, task.control.stop_reason().as_deref())
        }
        Err(_) => Outcome::Failed("the plugin lost track of the task's process".to_owned()),
    };
    domain.resources.meter.remove(&task.id);
    drop(slot);
    domain.finish_task(&task, outcome);
}
