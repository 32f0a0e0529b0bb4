//! A task's process group as `/proc` shows it: the CPU time and resident memory of every
//! member, folded into the task's meter so that every figure only ever grows; and how the
//! leader's wait status reads as a task's end.

use crate::procfs::{ProcKey, ProcStat, Units};
use std::collections::HashMap;
use xeno_taskmgr_kit::Outcome;
use xeno_taskmgr_kit::metering::TaskMeter;

/// What the samples of one task's group have shown so far.
#[derive(Debug, Default)]
pub(crate) struct GroupMeter {
    /// The group's live processes and the CPU ticks last read for each.
    members: HashMap<ProcKey, u64>,
    /// CPU ticks of members that have gone, as last read.
    gone_ticks: u64,
    /// CPU time already added to the task's meter, microseconds.
    reported_us: u64,
    /// Resident bytes of the group at the last sample.
    pub(crate) rss_bytes: u64,
}

impl GroupMeter {
    /// Folds in a sample of the group's processes: every member still alive (a known member
    /// missing from `members` has gone). CPU time the group gained goes into `meter`, and its
    /// resident size is what `meter` holds from now.
    pub(crate) fn sample(&mut self, members: &[ProcStat], meter: &TaskMeter, units: Units) {
        let mut seen: HashMap<ProcKey, u64> = HashMap::with_capacity(members.len());
        let mut rss_pages = 0u64;
        for stat in members {
            let before = self.members.get(&stat.key).copied().unwrap_or(0);
            seen.insert(stat.key, stat.cpu_ticks.max(before));
            rss_pages = rss_pages.saturating_add(stat.rss_pages);
        }
        for (key, ticks) in &self.members {
            if !seen.contains_key(key) {
                self.gone_ticks += ticks;
            }
        }
        self.members = seen;
        let ticks: u64 = self.gone_ticks + self.members.values().sum::<u64>();
        self.raise_cpu_us(
            ticks.saturating_mul(1_000_000) / units.ticks_per_second,
            meter,
        );
        self.rss_bytes = rss_pages.saturating_mul(units.page_bytes);
        meter.set_memory(self.rss_bytes);
    }

    /// The keys of the members last seen, to re-read between scans.
    pub(crate) fn member_pids(&self) -> impl Iterator<Item = ProcKey> + '_ {
        self.members.keys().copied()
    }

    /// Raises the task's CPU time to `cpu_us` if that is higher (a sample can trail the
    /// rusage taken at exit, and the rusage can trail samples of members the leader never
    /// reaped).
    pub(crate) fn raise_cpu_us(&mut self, cpu_us: u64, meter: &TaskMeter) {
        if cpu_us > self.reported_us {
            meter.add_cpu_ns((cpu_us - self.reported_us).saturating_mul(1000));
            self.reported_us = cpu_us;
        }
    }
}

/// How the leader's wait status reads as the task's end. A kill the plugin sent (`stop_reason`)
/// is a stop; any other signal is a failure.
pub(crate) fn exit_of(wait_status: i32, stop_reason: Option<&str>) -> Outcome {
    if libc::WIFEXITED(wait_status) {
        let code = libc::WEXITSTATUS(wait_status);
        return Outcome::Exited(code);
    }
    if libc::WIFSIGNALED(wait_status) {
        let signal = libc::WTERMSIG(wait_status);
        if let Some(reason) = stop_reason {
            return Outcome::Stopped(reason.to_owned());
        }
        let core = if libc::WCOREDUMP(wait_status) {
            " (core dumped)"
        } else {
            ""
        };
        return Outcome::Failed(format!(
            "killed by signal {signal} ({}){core}",
            signal_name(signal)
        ));
    }
    Outcome::Failed(format!(
        "ended with unexpected wait status {wait_status:#x}"
    ))
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
    use std::time::Instant;

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
        assert_eq!(exit_of(3 << 8, None), Outcome::Exited(3));
        assert_eq!(
            exit_of(libc::SIGSEGV, None),
            Outcome::Failed("killed by signal 11 (SIGSEGV)".into())
        );
        assert_eq!(
            exit_of(libc::SIGKILL, Some("stopped by the client")),
            Outcome::Stopped("stopped by the client".into())
        );
        // Exiting by itself before the kill landed is an exit, not a stop.
        assert_eq!(
            exit_of(0, Some("stopped by the client")),
            Outcome::Exited(0)
        );
    }

    const UNITS: Units = Units {
        ticks_per_second: 100,
        page_bytes: 4096,
    };

    #[test]
    fn cpu_never_decreases_when_members_go() {
        let start = Instant::now();
        let mut meter = GroupMeter::default();
        let task = TaskMeter::new(start);
        meter.sample(&[stat(10, 100, 5), stat(11, 50, 5)], &task, UNITS);
        assert_eq!(task.cpu_ns(), 1_500_000_000);
        assert_eq!(meter.rss_bytes, 10 * 4096);
        // Member 11 has gone: its last reading stays counted.
        meter.sample(&[stat(10, 120, 5)], &task, UNITS);
        assert_eq!(task.cpu_ns(), 1_700_000_000);
        // A lower figure (the leader's rusage trailing samples) adds nothing.
        meter.raise_cpu_us(1_000, &task);
        assert_eq!(task.cpu_ns(), 1_700_000_000);
        meter.raise_cpu_us(1_800_000, &task);
        assert_eq!(task.cpu_ns(), 1_800_000_000);
        assert_eq!(task.usage(start).memory_peak_bytes, 10 * 4096);
    }
}
