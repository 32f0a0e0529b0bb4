//! What a task manager's test supplies to the suite: the programs ("guests") that behave the
//! way each check needs, written for the task manager's own environment.

use xeno_schemas::proto::common::v1::Payload;
use xeno_schemas::proto::taskmanager::v1::DomainLimits;

/// One task to deploy: its TaskDescription document and the payloads it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guest {
    /// The `TaskDescription` XML, as DeployTask carries it.
    pub task_xml: String,
    /// The payloads the document names (program, files), each with its SHA-256.
    pub payloads: Vec<Payload>,
}

/// The line [`Guests::flood`] writes, over and over: 63 `x` and a newline.
pub const FLOOD_LINE: &[u8; 64] =
    b"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\n";

/// The environment under test and its guests. Implement it once per task manager; every method
/// returns a fresh task, so the suite may deploy each as often as it needs.
pub trait Guests: Sync {
    /// The `EnvType` to create domains with (one the task manager lists in its capabilities).
    fn env_type(&self) -> &str;

    /// The version to ask for in CreateDomain; empty for the task manager's default.
    fn version(&self) -> &str {
        ""
    }

    /// The limits of the suite's domains. Checks that are about a limit change only that one.
    /// They must allow at least 4 tasks at once, and memory enough for the guests.
    fn limits(&self) -> DomainLimits {
        default_limits()
    }

    /// Writes exactly `hello\n` to stdout and exits with status 0.
    fn hello(&self) -> Guest;

    /// Exits with status `code` (writing nothing).
    fn exit_code(&self, code: u8) -> Guest;

    /// Writes its arguments after `argv[0]`, joined by single spaces, as one line to stdout, then
    /// the value of the environment variable `XENO_GREETING` as a second line, and exits 0. The
    /// arguments and the variable must travel in the document's `Args` and `Env` (the suite
    /// checks), so that the check tests the task manager's handling of them; a guest that needs
    /// arguments of its own (such as `-c SCRIPT` for a shell) puts them before these.
    fn echo_args_env(&self, args: &[&str], greeting: &str) -> Guest;

    /// Writes exactly `oops\n` to stderr, nothing to stdout, and exits 0.
    fn stderr(&self) -> Guest;

    /// Uses CPU for ever, writing nothing.
    fn spin(&self) -> Guest;

    /// Writes [`FLOOD_LINE`] to stdout `lines` times, then exits 0.
    fn flood(&self, lines: u32) -> Guest;

    /// Writes a file `out.txt` containing `done` (a trailing newline is allowed) in its
    /// working directory, which must be the domain's scratch directory, and exits 0. `None`
    /// skips the check: only a task manager that runs on the environment manager's host and
    /// uses the `scratch_dir` it is given can pass it.
    fn write_file(&self) -> Option<Guest> {
        None
    }
}

/// The suite's default domain limits: one core, 256 MiB, 1 MiB of output per task, 64 MiB of
/// scratch disk, no network, 8 tasks.
pub fn default_limits() -> DomainLimits {
    DomainLimits {
        cpu_msps: 1000,
        cpu_peak_msps: 0,
        cpu_burst_ms: 0,
        memory_mb: 256,
        output_bytes_max: 1024 * 1024,
        disk_mb: 64,
        net_kbps: 0,
        tasks_max: 8,
    }
}
