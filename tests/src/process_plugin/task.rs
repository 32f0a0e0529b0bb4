//! One task's record: its process group, state, output and usage, and how a wait status becomes
//! a `TaskExit`.

use super::output::OutputLog;
use super::procfs::{ProcKey, ProcStat, Units};
use rustix::process::Pid;
use std::collections::HashMap;
use std::time::Instant;
use xeno_schemas::proto::common::v1::{TaskExit, TaskState, Usage};

/// A task, from its start until its domain is destroyed.
#[derive(Debug)]
pub(crate) struct Task {
    /// The environment manager's id.
    pub id: String,
    /// SHA-256 over the DeployTask request, to tell a retry from a conflicting reuse of the id
    /// without keeping the payloads.
    pub request_digest: [u8; 32],
    /// The process group, whose leader is the task's first process (so its pid is the pgid).
    pub pgid: Pid,
    /// When it was spawned.
    pub started: Instant,
    /// How it ended, usage included; `None` while it runs.
    pub ended: Option<TaskExit>,
    /// Set under the domain lock by the waiter once the leader has exited, just before it is
    /// reaped: after that the pgid may be reused, so nothing may signal the group any more.
    pub leader_exited: bool,
    /// Why it is being stopped, once StopTask, DestroyDomain or its wall-clock limit asked.
    pub stop_reason: Option<String>,
    /// Whether the CPU duty cycle has the group stopped (SIGSTOP) right now.
    pub paused: bool,
    /// Its stdout and stderr.
    pub output: OutputLog,
    /// What it has used.
    pub meter: TaskMeter,
}

impl Task {
    /// Its state now.
    pub fn state(&self) -> TaskState {
        match &self.ended {
            Some(exit) => exit.state(),
            None => TaskState::Running,
        }
    }

    /// Whether its process group may be signalled: running, and the leader not yet reaped.
    pub fn signallable(&self) -> bool {
        self.ended.is_none() && !self.leader_exited
    }

    /// Cumulative usage since it started.
    pub fn usage(&self, now: Instant) -> Usage {
        if let Some(exit) = &self.ended
            && let Some(usage) = &exit.usage
        {
            return *usage;
        }
        Usage {
            cpu_time_us: self.meter.cpu_us,
            memory_mb_ms: self.meter.memory_mb_ms(),
            memory_peak_bytes: self.meter.peak_bytes,
            output_bytes: self.output.produced_bytes(),
            wall_time_ms: millis(now.saturating_duration_since(self.started)),
            ..Usage::default()
        }
    }
}

/// What a task's processes have used, from `/proc` samples and, at the end, the leader's rusage.
/// Every figure only ever grows.
#[derive(Debug, Default)]
pub(crate) struct TaskMeter {
    /// The group's live processes and the CPU ticks last read for each.
    members: HashMap<ProcKey, u64>,
    /// CPU ticks of members that have gone, as last read.
    gone_ticks: u64,
    /// CPU time reported, microseconds.
    pub cpu_us: u64,
    /// Resident bytes of the group at the last sample.
    pub rss_bytes: u64,
    /// Resident bytes integrated over time, byte-microseconds.
    memory_byte_us: u128,
    /// When the last sample was taken.
    last_sample: Option<Instant>,
    /// Most resident bytes at once.
    pub peak_bytes: u64,
}

impl TaskMeter {
    /// Folds in a sample, taken at `now`, of the group's processes: every member still alive
    /// (a known member missing from `members` has gone). `started` is when the task started,
    /// where the first interval begins.
    pub fn sample(&mut self, members: &[ProcStat], now: Instant, started: Instant, units: Units) {
        let mut seen: HashMap<ProcKey, u64> = HashMap::with_capacity(members.len());
        let mut rss_pages = 0;
        for stat in members {
            let before = self.members.get(&stat.key).copied().unwrap_or(0);
            seen.insert(stat.key, stat.cpu_ticks.max(before));
            rss_pages += stat.rss_pages;
        }
        for (key, ticks) in &self.members {
            if !seen.contains_key(key) {
                self.gone_ticks += ticks;
            }
        }
        self.members = seen;
        let ticks: u64 = self.gone_ticks + self.members.values().sum::<u64>();
        self.raise_cpu_us(ticks.saturating_mul(1_000_000) / units.ticks_per_second);
        // The memory held over the interval is taken as what is held at its end.
        let since = self.last_sample.unwrap_or(started);
        let elapsed_us = now.saturating_duration_since(since).as_micros();
        self.last_sample = Some(now);
        self.rss_bytes = rss_pages.saturating_mul(units.page_bytes);
        self.memory_byte_us += u128::from(self.rss_bytes) * elapsed_us;
        self.peak_bytes = self.peak_bytes.max(self.rss_bytes);
    }

    /// The keys of the members last seen, to re-read between scans.
    pub fn member_pids(&self) -> impl Iterator<Item = ProcKey> + '_ {
        self.members.keys().copied()
    }

    /// Raises the CPU figure to `cpu_us` if that is higher (a sample can trail the rusage taken
    /// at exit, and the rusage can trail samples of members the leader never reaped).
    pub fn raise_cpu_us(&mut self, cpu_us: u64) {
        self.cpu_us = self.cpu_us.max(cpu_us);
    }

    /// Folds in the leader's peak resident size from its rusage.
    pub fn raise_peak_bytes(&mut self, bytes: u64) {
        self.peak_bytes = self.peak_bytes.max(bytes);
    }

    /// Memory integrated over time in the contract's unit, megabyte-milliseconds.
    pub fn memory_mb_ms(&self) -> u64 {
        u64::try_from(self.memory_byte_us / (1024 * 1024 * 1000)).unwrap_or(u64::MAX)
    }
}

/// Whole milliseconds of a duration.
pub(crate) fn millis(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// How the leader's wait status reads as a task exit: state, exit code and reason.
pub(crate) fn exit_of(wait_status: i32, stop_reason: Option<&str>) -> (TaskState, i32, String) {
    if libc::WIFEXITED(wait_status) {
        let code = libc::WEXITSTATUS(wait_status);
        return (TaskState::Exited, code, format!("exit {code}"));
    }
    if libc::WIFSIGNALED(wait_status) {
        let signal = libc::WTERMSIG(wait_status);
        if let Some(reason) = stop_reason {
            return (TaskState::Stopped, 0, reason.to_owned());
        }
        let core = if libc::WCOREDUMP(wait_status) {
            " (core dumped)"
        } else {
            ""
        };
        return (
            TaskState::Failed,
            0,
            format!("killed by signal {signal} ({}){core}", signal_name(signal)),
        );
    }
    (
        TaskState::Failed,
        0,
        format!("ended with unexpected wait status {wait_status:#x}"),
    )
}

/// The usual name of a signal number.
fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "unnamed signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: i32, cpu_ticks: u64, rss_pages: u64) -> ProcStat {
        ProcStat {
            key: ProcKey {
                pid,
                start_ticks: 1,
            },
            pgrp: 10,
            cpu_ticks,
            rss_pages,
        }
    }

    #[test]
    fn exits_signals_and_stops() {
        assert_eq!(
            exit_of(3 << 8, None),
            (TaskState::Exited, 3, "exit 3".into())
        );
        assert_eq!(
            exit_of(libc::SIGSEGV, None),
            (TaskState::Failed, 0, "killed by signal 11 (SIGSEGV)".into())
        );
        assert_eq!(
            exit_of(libc::SIGKILL, Some("stopped by the client")),
            (TaskState::Stopped, 0, "stopped by the client".into())
        );
        // Exiting by itself before the kill landed is an exit, not a stop.
        assert_eq!(
            exit_of(0, Some("stopped by the client")),
            (TaskState::Exited, 0, "exit 0".into())
        );
    }

    const UNITS: Units = Units {
        ticks_per_second: 100,
        page_bytes: 4096,
    };

    #[test]
    fn cpu_never_decreases_when_members_go() {
        let start = Instant::now();
        let at = |ms: u64| start + std::time::Duration::from_millis(ms);
        let mut meter = TaskMeter::default();
        meter.sample(&[stat(10, 100, 5), stat(11, 50, 5)], at(10), start, UNITS);
        assert_eq!(meter.cpu_us, 1_500_000);
        assert_eq!(meter.rss_bytes, 10 * 4096);
        // Member 11 has gone: its last reading stays counted.
        meter.sample(&[stat(10, 120, 5)], at(20), start, UNITS);
        assert_eq!(meter.cpu_us, 1_700_000);
        assert_eq!(meter.peak_bytes, 10 * 4096);
        meter.raise_cpu_us(1_000);
        assert_eq!(meter.cpu_us, 1_700_000);
    }

    #[test]
    fn memory_is_integrated_over_time() {
        let start = Instant::now();
        let mut meter = TaskMeter::default();
        // 256 pages of 4 KiB = 1 MiB held for 1000 ms, then 2 MiB for 500 ms.
        meter.sample(
            &[stat(10, 0, 256)],
            start + std::time::Duration::from_millis(1000),
            start,
            UNITS,
        );
        assert_eq!(meter.memory_mb_ms(), 1000);
        meter.sample(
            &[stat(10, 0, 512)],
            start + std::time::Duration::from_millis(1500),
            start,
            UNITS,
        );
        assert_eq!(meter.memory_mb_ms(), 2000);
    }
}
