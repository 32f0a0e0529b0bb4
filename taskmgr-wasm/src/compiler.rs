//! Compiling a program in a child process, so that compilation is work a session pays for and
//! is limited in, like running.
//!
//! Cranelift cannot be interrupted or bounded from inside: a 40 MB module of 50,000 functions
//! compiled for 63 s, and a 7.5 MB module of nested blocks took the server from 0.8 to 2.2 GB
//! (kept after the session ended, in the allocator). So each compilation runs in a child: this
//! very executable, re-executed through `/proc/self/exe` with [`COMPILER_ENV`] set, which a
//! constructor in this module notices before `main` (so it works in every binary that links
//! the task manager, test harnesses included). The child builds an engine configured like the
//! task manager's, reads the program's kind and bytes from stdin, writes the precompiled
//! artifact to stdout and exits. It runs under `RLIMIT_CPU` and `RLIMIT_DATA`, is killed at a
//! wall-clock deadline and when the task manager dies, and its CPU time (from `wait4`) is the
//! session's. Its memory returns to the system when it exits; the parent keeps only the
//! artifact.
//!
//! Starting a child costs about 10 ms (loading this executable, building its engine), against
//! 1-2 ms to compile a small program, so [`Compilers`] keeps a few children started and
//! waiting for work: a compilation takes one, and a replacement is started behind it.

use crate::cache::ProgramKind;
use crate::config::WasmConfig;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set in a child's environment to make it a compiler, to the engine settings
/// ([`EngineSettings::to_env`]). The program comes on stdin: `m` (a module) or `c` (a
/// component), then its bytes.
const COMPILER_ENV: &str = "XENO_WASM_COMPILER";
/// Most bytes of error text read back from a failed compilation.
const ERROR_BYTES_MAX: u64 = 16 * 1024;
/// Wall-clock time a compilation may take, as a multiple of its CPU limit: a child that is
/// mostly waiting for a CPU is slow, not runaway.
const WALL_PER_CPU: u32 = 3;

/// What a compiled artifact depends on in the engine: the child's engine must be configured
/// like the task manager's, or the artifact will not load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EngineSettings {
    pub(crate) wasm_stack_bytes: usize,
    pub(crate) fiber_stack_bytes: usize,
    pub(crate) memory_reservation_bytes: u64,
    pub(crate) memory_guard_bytes: u64,
}

impl EngineSettings {
    pub(crate) fn of(config: &WasmConfig) -> EngineSettings {
        EngineSettings {
            wasm_stack_bytes: config.wasm_stack_bytes,
            fiber_stack_bytes: config.fiber_stack_bytes,
            memory_reservation_bytes: config.memory_reservation_bytes,
            memory_guard_bytes: config.memory_guard_bytes,
        }
    }

    /// Every setting an artifact depends on (the allocation strategy is not one of them).
    pub(crate) fn wasmtime_config(&self) -> wasmtime::Config {
        let mut config = wasmtime::Config::new();
        config
            .consume_fuel(true)
            .epoch_interruption(false)
            .wasm_component_model(true)
            .max_wasm_stack(self.wasm_stack_bytes)
            .async_stack_size(self.fiber_stack_bytes)
            .memory_reservation(self.memory_reservation_bytes)
            .memory_guard_size(self.memory_guard_bytes);
        config
    }

    fn to_env(self) -> String {
        format!(
            "{},{},{},{}",
            self.wasm_stack_bytes,
            self.fiber_stack_bytes,
            self.memory_reservation_bytes,
            self.memory_guard_bytes
        )
    }

    fn from_env(value: &str) -> Option<EngineSettings> {
        let mut parts = value.split(',');
        let settings = EngineSettings {
            wasm_stack_bytes: parts.next()?.parse().ok()?,
            fiber_stack_bytes: parts.next()?.parse().ok()?,
            memory_reservation_bytes: parts.next()?.parse().ok()?,
            memory_guard_bytes: parts.next()?.parse().ok()?,
        };
        parts.next().is_none().then_some(settings)
    }
}

/// What one compilation may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CompileLimits {
    pub(crate) cpu: Duration,
    pub(crate) memory_bytes: u64,
    /// Largest artifact read back (the cache could not hold more).
    pub(crate) artifact_bytes_max: u64,
}

/// A compiled program, not yet loaded, and what compiling it cost.
pub(crate) struct Artifact {
    pub(crate) bytes: Vec<u8>,
    pub(crate) cpu: Duration,
}

/// Why a compilation gave nothing.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CompileError {
    /// The program is not valid Wasm of its kind (the compiler's words).
    #[error("{0}")]
    Invalid(String),
    /// The compilation went past a limit; the CPU time used is still the session's.
    #[error("{reason}")]
    Limit { reason: String, cpu: Duration },
    /// The child could not be run or answered nonsense.
    #[error("the compiler process: {0}")]
    Internal(String),
}

/// Started compiler children, waiting for work, and the thread that starts more.
pub(crate) struct Compilers {
    settings: EngineSettings,
    limits: CompileLimits,
    ready: std::sync::Arc<std::sync::Mutex<Vec<Child>>>,
    /// Asks the starter thread to top the ready children up.
    refill: std::sync::Mutex<std::sync::mpsc::Sender<()>>,
}

impl Compilers {
    /// Keeps `warm` children ready. Children are started by one long-lived thread: a child's
    /// death signal follows the thread that started it.
    pub(crate) fn new(settings: EngineSettings, limits: CompileLimits, warm: usize) -> Compilers {
        let ready = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (refill, wanted) = std::sync::mpsc::channel::<()>();
        let pool = std::sync::Arc::clone(&ready);
        let started = std::thread::Builder::new()
            .name("wasm-compilers".to_owned())
            .spawn(move || {
                while wanted.recv().is_ok() {
                    while xeno_taskmgr_kit::lock(&pool).len() < warm {
                        match start(settings, limits) {
                            Ok(child) => xeno_taskmgr_kit::lock(&pool).push(child),
                            Err(error) => {
                                tracing::warn!(%error, "cannot start a compiler child");
                                break;
                            }
                        }
                    }
                }
            });
        if let Err(error) = started {
            tracing::warn!(%error, "no thread to start compiler children ahead of time");
        }
        let _ = refill.send(());
        Compilers {
            settings,
            limits,
            ready,
            refill: std::sync::Mutex::new(refill),
        }
    }

    /// Compiles `wasm` in a child process under the limits. Blocking.
    pub(crate) fn compile(&self, kind: ProgramKind, wasm: &[u8]) -> Result<Artifact, CompileError> {
        let waiting = xeno_taskmgr_kit::lock(&self.ready).pop();
        let _ = xeno_taskmgr_kit::lock(&self.refill).send(());
        let child = match waiting {
            Some(child) => child,
            None => start(self.settings, self.limits)
                .map_err(|error| CompileError::Internal(format!("cannot start: {error}")))?,
        };
        run(child, kind, wasm, self.limits)
    }
}

impl Drop for Compilers {
    fn drop(&mut self) {
        for mut child in xeno_taskmgr_kit::lock(&self.ready).drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Starts a compiler child under `limits`; it waits for its program on stdin.
fn start(settings: EngineSettings, limits: CompileLimits) -> std::io::Result<Child> {
    let cpu_seconds = limits.cpu.as_secs().max(1);
    let memory_bytes = limits.memory_bytes;
    let mut command = Command::new("/proc/self/exe");
    // Nothing of the server's environment reaches the child but what makes it a compiler.
    command
        .arg0("xeno-wasm-compiler")
        .env_clear()
        .env(COMPILER_ENV, settings.to_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure only makes system calls that are
    // async-signal-safe (prctl, setrlimit) on values computed before the fork.
    unsafe {
        command.pre_exec(move || {
            // Dies with the task manager rather than compiling on for nobody.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let cpu = libc::rlimit {
                rlim_cur: cpu_seconds,
                rlim_max: cpu_seconds + 1,
            };
            let data = libc::rlimit {
                rlim_cur: memory_bytes,
                rlim_max: memory_bytes,
            };
            // A compiler killed at its limit leaves no core file behind.
            let no_core = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_CPU, &cpu) != 0
                || libc::setrlimit(libc::RLIMIT_DATA, &data) != 0
                || libc::setrlimit(libc::RLIMIT_CORE, &no_core) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Gives `child` its program and collects the artifact, the CPU time and the verdict.
fn run(
    mut child: Child,
    kind: ProgramKind,
    wasm: &[u8],
    limits: CompileLimits,
) -> Result<Artifact, CompileError> {
    let internal =
        |what: &str, error: std::io::Error| CompileError::Internal(format!("{what}: {error}"));
    let started = Instant::now();
    let pid = child.id();
    let deadline = limits.cpu * WALL_PER_CPU;
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let alive = std::sync::Arc::new(std::sync::Mutex::new(true));
    let watchdog = Watchdog::start(pid, deadline, std::sync::Arc::clone(&alive));
    let mut input = Vec::with_capacity(wasm.len() + 1);
    input.push(match kind {
        ProgramKind::Module => b'm',
        ProgramKind::Component => b'c',
    });
    input.extend_from_slice(wasm);
    let writer = std::thread::spawn(move || {
        // A child that dies early (or rejects the program before reading it all) closes its
        // stdin: the write then fails, and the exit status says why. The write must fail with
        // EPIPE, not kill us with SIGPIPE, whatever the embedding program does with that signal
        // (Rust programs ignore it; a C host or a fuzzing harness may not).
        block_sigpipe_in_this_thread();
        if let Some(mut stdin) = stdin {
            let _ = stdin.write_all(&input);
        }
    });
    let error_reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(stderr) = stderr {
            let _ = stderr.take(ERROR_BYTES_MAX).read_to_string(&mut text);
        }
        text
    });
    let mut bytes = Vec::new();
    let read = match stdout {
        Some(stdout) => stdout
            .take(limits.artifact_bytes_max + 1)
            .read_to_end(&mut bytes)
            .map(|_| ()),
        None => Ok(()),
    };
    if bytes.len() as u64 > limits.artifact_bytes_max {
        let _ = child.kill();
    }
    let (status, cpu) = wait_with_usage(pid, &alive).map_err(|error| internal("waiting", error))?;
    // The child is reaped: forget the handle without waiting again.
    drop(child);
    let timed_out = watchdog.stop();
    let _ = writer.join();
    let message = error_reader.join().unwrap_or_default();
    read.map_err(|error| internal("reading the artifact", error))?;
    tracing::debug!(
        ?kind,
        wasm_bytes = wasm.len(),
        artifact_bytes = bytes.len(),
        cpu_ms = cpu.as_millis(),
        wall_ms = started.elapsed().as_millis(),
        "compiled in a child"
    );
    if timed_out {
        return Err(CompileError::Limit {
            reason: format!(
                "compilation took longer than {} s (the limit is {} s of CPU time)",
                deadline.as_secs(),
                limits.cpu.as_secs()
            ),
            cpu,
        });
    }
    if bytes.len() as u64 > limits.artifact_bytes_max {
        return Err(CompileError::Limit {
            reason: format!(
                "the compiled program is over {} bytes, more than this task manager keeps",
                limits.artifact_bytes_max
            ),
            cpu,
        });
    }
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(Artifact { bytes, cpu }),
        (Some(1), _) => Err(CompileError::Invalid(message.trim().to_owned())),
        // SIGXCPU at the soft CPU limit, SIGKILL at the hard one.
        (_, Some(libc::SIGXCPU)) | (_, Some(libc::SIGKILL)) if cpu >= limits.cpu / 2 => {
            Err(CompileError::Limit {
                reason: format!(
                    "compilation needed more than {} s of CPU time, this task manager's limit per program",
                    limits.cpu.as_secs()
                ),
                cpu,
            })
        }
        // Rust aborts when an allocation fails: the data limit was reached.
        (_, Some(libc::SIGABRT)) => Err(CompileError::Limit {
            reason: format!(
                "compilation needed more than {} bytes of memory, this task manager's limit per program",
                limits.memory_bytes
            ),
            cpu,
        }),
        _ => Err(CompileError::Internal(format!(
            "ended with {status}: {}",
            message.trim()
        ))),
    }
}

/// Blocks SIGPIPE for the calling thread: a write to a closed pipe then returns EPIPE. The
/// signal a write raises is the writing thread's own, so this affects nobody else.
fn block_sigpipe_in_this_thread() {
    // SAFETY: an empty set is a valid value for sigemptyset to initialise, and both calls only
    // read and write the set and this thread's signal mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for child `pid`, returning its status and the CPU time (user and system) it used.
/// The child is reaped only with `alive` held and cleared, so that the watchdog never signals
/// a pid that may have been reused.
fn wait_with_usage(
    pid: u32,
    alive: &std::sync::Mutex<bool>,
) -> std::io::Result<(std::process::ExitStatus, Duration)> {
    let pid = libc::pid_t::try_from(pid).map_err(std::io::Error::other)?;
    loop {
        // SAFETY: an all-zero siginfo is a valid value to be overwritten.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid for writes; WNOWAIT leaves the child a zombie, so its pid
        // stays ours until the wait4 below.
        let waited = unsafe {
            libc::waitid(
                libc::P_PID,
                libc::id_t::try_from(pid).unwrap_or(0),
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if waited == 0 {
            break;
        }
        let error = std::io::Error::last_os_error();
        if error.kind() != std::io::ErrorKind::Interrupted {
            return Err(error);
        }
    }
    let mut alive = alive
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *alive = false;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are valid for writes; `pid` is our own exited child, not
    // yet reaped (std's handle never waited for it), so this returns at once.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    drop(alive);
    if reaped != pid {
        return Err(std::io::Error::last_os_error());
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Ok((
        std::process::ExitStatus::from_raw(status),
        time(usage.ru_utime) + time(usage.ru_stime),
    ))
}

/// Kills the child when the wall-clock deadline passes first.
struct Watchdog {
    done: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    fn start(
        pid: u32,
        deadline: Duration,
        alive: std::sync::Arc<std::sync::Mutex<bool>>,
    ) -> Watchdog {
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || match finished.recv_timeout(deadline) {
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let alive = alive
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if *alive && let Ok(pid) = libc::pid_t::try_from(pid) {
                    // SAFETY: a plain kill of our own child, which `alive` says is not reaped
                    // (the waiter reaps it only holding and clearing the flag): the pid is
                    // still the child's.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                *alive
            }
            _ => false,
        });
        Watchdog { done, thread }
    }

    /// Whether it had to kill the child.
    fn stop(self) -> bool {
        let _ = self.done.send(());
        self.thread.join().unwrap_or(false)
    }
}

/// The child's side: builds its engine, then compiles stdin and writes the artifact to stdout.
fn compiler_main(setting: &str) -> i32 {
    let Some(settings) = EngineSettings::from_env(setting) else {
        eprintln!("bad {COMPILER_ENV} value {setting:?}");
        return 2;
    };
    // Built while waiting for work, so that a compilation does not wait for it.
    let engine = match wasmtime::Engine::new(&settings.wasmtime_config()) {
        Ok(engine) => engine,
        Err(error) => {
            eprintln!("cannot build the engine: {error:#}");
            return 2;
        }
    };
    let mut input = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("reading the program: {error}");
        return 2;
    }
    let compiled = match input.split_first() {
        Some((b'm', wasm)) => engine
            .precompile_module(wasm)
            .map_err(|error| format!("invalid WebAssembly module: {error:#}")),
        Some((b'c', wasm)) => engine
            .precompile_component(wasm)
            .map_err(|error| format!("invalid WebAssembly component: {error:#}")),
        // Started ahead of time and never given work (the task manager stopped).
        None => return 0,
        Some(_) => {
            eprintln!("the program's kind is neither m nor c");
            return 2;
        }
    };
    match compiled {
        Ok(artifact) => match std::io::stdout().write_all(&artifact) {
            Ok(()) => 0,
            Err(error) => {
                eprintln!("writing the artifact: {error}");
                2
            }
        },
        Err(message) => {
            eprintln!("{message}");
            1
        }
    }
}

/// Runs before `main` in every process that links this crate: a compiler child compiles and
/// exits here; any other process goes on to its own `main`, having read one variable.
extern "C" fn compiler_entry() {
    if let Some(setting) = std::env::var_os(COMPILER_ENV) {
        let code = compiler_main(&setting.to_string_lossy());
        std::process::exit(code);
    }
}

// The constructor that makes a re-executed binary a compiler (see the module documentation).
// It is in this module, which every compilation uses, so the linker keeps it.
#[used]
#[unsafe(link_section = ".init_array")]
static COMPILER_ENTRY: extern "C" fn() = compiler_entry;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_survive_the_environment() {
        let settings = EngineSettings::of(&WasmConfig::default());
        assert_eq!(EngineSettings::from_env(&settings.to_env()), Some(settings));
        assert_eq!(EngineSettings::from_env("1,2,3"), None);
        assert_eq!(EngineSettings::from_env("1,2,3,4,5"), None);
    }
}
