//! Reading processes from `/proc`: the CPU time, resident memory and process group of each.
//!
//! Only `/proc/<pid>/stat` is read. Its fields are documented in proc_pid_stat(5); the command
//! name (field 2) is in parentheses and may itself contain spaces and parentheses, so the fields
//! are counted from the last `)`.

use std::collections::{HashMap, HashSet};

/// One process, as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// Which process: its pid and start time together, since a pid is reused once its process
    /// has been reaped and a start time alone is not unique.
    pub key: ProcKey,
    /// Its process group.
    pub pgrp: i32,
    /// Its own user + system CPU time in clock ticks (children it reaped are not included: they
    /// are counted as processes of their own while they live).
    pub cpu_ticks: u64,
    /// Resident pages (0 for a zombie).
    pub rss_pages: u64,
}

/// A process's identity: pid plus start time (clock ticks after boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ProcKey {
    /// The pid.
    pub pid: i32,
    /// When it started.
    pub start_ticks: u64,
}

/// Parses the text of `/proc/<pid>/stat`.
pub(crate) fn parse_stat(pid: i32, text: &str) -> Option<ProcStat> {
    let after_comm = &text[text.rfind(')')? + 1..];
    // Fields from 3 (state) on, so field N is at index N - 3.
    let fields: Vec<&str> = after_comm.split_ascii_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let pgrp = fields.get(5 - 3)?.parse().ok()?;
    Some(ProcStat {
        key: ProcKey {
            pid,
            start_ticks: field(22)?,
        },
        pgrp,
        cpu_ticks: field(14)?.checked_add(field(15)?)?,
        rss_pages: field(24)?,
    })
}

/// Reads one process; `None` if it is gone (or unreadable, which for our own children means the
/// same).
pub(crate) fn read_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(pid, &text)
}

/// Every process in any of `groups`, by group. Walks all of `/proc`, so callers do it rarely
/// (see the meter's scan interval).
pub(crate) fn scan_groups(groups: &HashSet<i32>) -> HashMap<i32, Vec<ProcStat>> {
    let mut found: HashMap<i32, Vec<ProcStat>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        if let Some(stat) = read_stat(pid)
            && groups.contains(&stat.pgrp)
        {
            found.entry(stat.pgrp).or_default().push(stat);
        }
    }
    found
}

/// The units `/proc` counts in.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Units {
    /// Clock ticks per second (`CLK_TCK`), the unit of CPU times.
    pub ticks_per_second: u64,
    /// Bytes per page, the unit of resident sizes.
    pub page_bytes: u64,
}

impl Units {
    /// This host's.
    pub fn host() -> Units {
        Units {
            ticks_per_second: rustix::param::clock_ticks_per_second().max(1),
            page_bytes: u64::try_from(rustix::param::page_size()).unwrap_or(4096),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_stat_line_whose_name_has_spaces_and_parentheses() {
        let text = "4242 (a (b) c) R 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    150 25 7 3 20 0 1 0 987654 10000000 321 18446744073709551615";
        let stat = parse_stat(4242, text).expect("valid stat line");
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.cpu_ticks, 175, "utime + stime only");
        assert_eq!(stat.key.start_ticks, 987654);
        assert_eq!(stat.rss_pages, 321);
    }

    #[test]
    fn refuses_truncated_lines() {
        assert_eq!(parse_stat(1, "1 (x) R 0 1"), None);
        assert_eq!(parse_stat(1, "garbage"), None);
    }

    #[test]
    fn reads_itself() {
        let own = read_stat(std::process::id() as i32).expect("own stat");
        assert_eq!(own.key.pid, std::process::id() as i32);
        assert!(own.rss_pages > 0);
    }
}
