//! Metering and the CPU duty cycle, on one thread for the whole plugin.
//!
//! Every [`TICK`] the meter re-reads `/proc/<pid>/stat` for each running task's known processes
//! (CPU time and resident memory), and every [`SCAN_EVERY_TICKS`] ticks it walks all of `/proc`
//! to find every process in each task's process group, including ones forked since the last
//! walk. From those samples it keeps each task's usage (see `group.rs`) and runs each domain's
//! duty cycle: a token bucket that refills at the domain's `cpu_msps` and drains by the CPU its
//! tasks used. When the bucket is empty the meter stops the domain's process groups with
//! SIGSTOP, and continues them with SIGCONT once it has refilled.
//!
//! Granularity: the kernel reports CPU time in clock ticks (`CLK_TCK`, 10 ms on Linux), and the
//! meter looks every 10 ms, so a domain can run up to about two ticks past its budget before it
//! is stopped, and the bucket holds [`BUCKET_WINDOW_MS`] of its rate (or its burst credit).
//! Over a second or more the rate is held to within a few percent; within 100 ms it is not
//! smooth (the group runs at full speed, then stops). A process forked between walks of `/proc`
//! goes unmetered for up to [`SCAN_EVERY_TICKS`] ticks (its CPU time is still counted once
//! found, or through its parent's rusage if it has been reaped).

use crate::control::GroupControl;
use crate::group::GroupMeter;
use crate::procfs::{self, ProcKey, ProcStat, Units};
use rustix::process::Pid;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use xeno_taskmgr_kit::lock;
use xeno_taskmgr_kit::metering::{MemoryMeter, TaskMeter};
use xeno_taskmgr_kit::rate::CpuLimits;

/// How often the meter samples and the duty cycle decides.
pub(crate) const TICK: Duration = Duration::from_millis(10);

/// Walk all of `/proc` every this many ticks (100 ms): a walk reads every process on the host,
/// far more than re-reading the ones already known.
pub(crate) const SCAN_EVERY_TICKS: u64 = 10;

/// How much CPU a domain may bank without burst credit: this many milliseconds of its rate.
pub(crate) const BUCKET_WINDOW_MS: u64 = 100;

/// A running task as the meter sees it.
pub(crate) struct Metered {
    pub(crate) pgid: Pid,
    pub(crate) meter: Arc<TaskMeter>,
    pub(crate) control: Arc<GroupControl>,
    pub(crate) group: Mutex<GroupMeter>,
}

/// What the meter keeps of one domain: its running tasks, the memory they hold together, and
/// its duty cycle.
pub(crate) struct DomainMeter {
    tasks: Mutex<HashMap<String, Arc<Metered>>>,
    memory: Mutex<MemoryMeter>,
    throttle: Mutex<Throttle>,
    /// CPU time its tasks were seen to use, microseconds (what the duty cycle drains by).
    seen_cpu_us: Mutex<u64>,
}

impl DomainMeter {
    pub(crate) fn new(rate: Option<CpuLimits>, now: Instant) -> DomainMeter {
        DomainMeter {
            tasks: Mutex::new(HashMap::new()),
            memory: Mutex::new(MemoryMeter::new(now)),
            throttle: Mutex::new(Throttle::new(rate, now)),
            seen_cpu_us: Mutex::new(0),
        }
    }

    /// Starts metering a task that runs.
    pub(crate) fn add(&self, task_id: &str, task: Arc<Metered>) {
        lock(&self.tasks).insert(task_id.to_owned(), task);
    }

    /// Stops metering a task that ended.
    pub(crate) fn remove(&self, task_id: &str) {
        lock(&self.tasks).remove(task_id);
    }

    /// Memory its tasks held together, integrated up to `until` (MB·ms), and its peak.
    pub(crate) fn memory(&self, until: Instant) -> (u64, u64) {
        lock(&self.memory).read(until)
    }

    fn running(&self) -> Vec<Arc<Metered>> {
        lock(&self.tasks).values().cloned().collect()
    }
}

/// The live domains, as the meter sees them.
pub(crate) type Domains = Mutex<Vec<Weak<DomainMeter>>>;

/// Starts the meter thread. It ends once the domains list is dropped.
pub(crate) fn start(domains: Weak<Domains>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("xeno-meter".into())
        .spawn(move || run(&domains))
        .map(|_| ())
}

fn run(domains: &Weak<Domains>) {
    let units = Units::host();
    let mut next = Instant::now();
    for tick in 0u64.. {
        next += TICK;
        let now = Instant::now();
        match next.checked_duration_since(now) {
            Some(wait) => std::thread::sleep(wait),
            // Running late (a loaded host): skip the missed ticks rather than rush through them.
            None => next = now,
        }
        let Some(domains) = domains.upgrade() else {
            return;
        };
        let live: Vec<Arc<DomainMeter>> = {
            let mut list = lock(&domains);
            list.retain(|domain| domain.strong_count() > 0);
            list.iter().filter_map(Weak::upgrade).collect()
        };
        drop(domains);
        let scan = (tick % SCAN_EVERY_TICKS == 0).then(|| {
            let groups: HashSet<i32> = live
                .iter()
                .flat_map(|domain| domain.running())
                .map(|task| task.pgid.as_raw_pid())
                .collect();
            procfs::scan_groups(&groups)
        });
        for domain in &live {
            tick_domain(domain, scan.as_ref(), units);
        }
    }
}

/// One tick of one domain: sample its running tasks, then stop or continue them.
fn tick_domain(domain: &DomainMeter, scan: Option<&HashMap<i32, Vec<ProcStat>>>, units: Units) {
    let running = domain.running();
    let mut resident = 0u64;
    let mut gained_us = 0u64;
    for task in &running {
        let known: Vec<ProcKey> = lock(&task.group).member_pids().collect();
        let members = read_group(task.pgid.as_raw_pid(), &known, scan);
        let before = task.meter.cpu_ns();
        let mut group = lock(&task.group);
        group.sample(&members, &task.meter, units);
        resident = resident.saturating_add(group.rss_bytes);
        gained_us = gained_us.saturating_add(task.meter.cpu_ns().saturating_sub(before) / 1000);
    }
    let now = Instant::now();
    lock(&domain.memory).set(resident, now);
    let seen = {
        let mut seen = lock(&domain.seen_cpu_us);
        *seen = seen.saturating_add(gained_us);
        *seen
    };
    let pause = lock(&domain.throttle).advance(now, seen);
    for task in &running {
        task.control.pause(pause);
    }
}

/// The processes of group `pgid`: from the walk of `/proc` when there is one, otherwise the
/// known members re-read (and the leader, for a task not yet seen by a walk).
fn read_group(
    pgid: i32,
    known: &[ProcKey],
    scan: Option<&HashMap<i32, Vec<ProcStat>>>,
) -> Vec<ProcStat> {
    if let Some(scan) = scan {
        return scan.get(&pgid).cloned().unwrap_or_default();
    }
    let still_ours = |stat: &ProcStat| stat.pgrp == pgid;
    let mut members: Vec<ProcStat> = known
        .iter()
        .filter_map(|key| {
            procfs::read_stat(key.pid).filter(|stat| stat.key == *key && still_ours(stat))
        })
        .collect();
    if !members.iter().any(|stat| stat.key.pid == pgid)
        && let Some(leader) = procfs::read_stat(pgid).filter(still_ours)
    {
        members.push(leader);
    }
    members
}

/// A domain's CPU token bucket (two, with burst credit: one at the sustained rate holding the
/// burst, one at the peak rate).
#[derive(Debug)]
pub(crate) struct Throttle {
    rate: Option<CpuLimits>,
    /// Credit at the sustained rate, CPU microseconds (negative: overspent).
    sustained_us: i64,
    /// Credit at the peak rate, when there is burst credit.
    peak_us: i64,
    /// The domain's cumulative CPU at the last tick.
    last_cpu_us: u64,
    /// When the last tick was.
    last_tick: Instant,
}

impl Throttle {
    /// A full bucket for `rate` (`None`: no limit).
    pub fn new(rate: Option<CpuLimits>, now: Instant) -> Throttle {
        let (sustained_us, peak_us) = rate.map_or((0, 0), |rate| {
            let (sustained, peak) = capacities(rate);
            (sustained, peak.unwrap_or(0))
        });
        Throttle {
            rate,
            sustained_us,
            peak_us,
            last_cpu_us: 0,
            last_tick: now,
        }
    }

    /// Advances to `now`, given the domain's cumulative CPU time; returns whether the domain
    /// must be stopped until the next tick.
    pub fn advance(&mut self, now: Instant, cpu_us: u64) -> bool {
        let elapsed_us = i64::try_from(now.saturating_duration_since(self.last_tick).as_micros())
            .unwrap_or(i64::MAX);
        let consumed = i64::try_from(cpu_us.saturating_sub(self.last_cpu_us)).unwrap_or(i64::MAX);
        self.last_tick = now;
        self.last_cpu_us = self.last_cpu_us.max(cpu_us);
        let Some(rate) = self.rate else {
            return false;
        };
        let (sustained_cap, peak_cap) = capacities(rate);
        self.sustained_us = self
            .sustained_us
            .saturating_add(refill(rate.msps, elapsed_us))
            .min(sustained_cap)
            .saturating_sub(consumed);
        let mut pause = self.sustained_us < 0;
        if let Some(peak_cap) = peak_cap {
            self.peak_us = self
                .peak_us
                .saturating_add(refill(rate.peak_msps, elapsed_us))
                .min(peak_cap)
                .saturating_sub(consumed);
            pause |= self.peak_us < 0;
        }
        pause
    }
}

/// CPU microseconds earned at `msps` over `elapsed_us` of real time.
fn refill(msps: u64, elapsed_us: i64) -> i64 {
    let earned = i128::from(msps) * i128::from(elapsed_us) / 1000;
    i64::try_from(earned).unwrap_or(i64::MAX)
}

/// The buckets' depths, microseconds: the sustained one holds the burst credit or
/// [`BUCKET_WINDOW_MS`] of the rate; the peak one exists only with burst credit above the rate.
fn capacities(rate: CpuLimits) -> (i64, Option<i64>) {
    let window = refill(rate.msps, (BUCKET_WINDOW_MS * 1000) as i64);
    let burst = i64::try_from(rate.burst_ms.saturating_mul(1000)).unwrap_or(i64::MAX);
    let peak = (rate.burst_ms > 0 && rate.peak_msps > rate.msps)
        .then(|| refill(rate.peak_msps, (BUCKET_WINDOW_MS * 1000) as i64));
    (window.max(burst), peak)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates a task that uses all the CPU it is allowed for `seconds`, and returns the
    /// CPU it got.
    fn simulate(rate: CpuLimits, seconds: u64) -> u64 {
        let start = Instant::now();
        let mut throttle = Throttle::new(Some(rate), start);
        let mut cpu_us = 0;
        let mut paused = false;
        for tick in 1..=(seconds * 100) {
            if !paused {
                cpu_us += 10_000;
            }
            paused = throttle.advance(start + TICK * tick as u32, cpu_us);
        }
        cpu_us
    }

    #[test]
    fn holds_the_sustained_rate() {
        let cpu = simulate(CpuLimits::steady(200), 10);
        assert!((1_950_000..=2_050_000).contains(&cpu), "{cpu}");
    }

    #[test]
    fn burst_credit_runs_at_the_peak_rate_then_settles() {
        let burst = CpuLimits {
            msps: 100,
            peak_msps: 500,
            burst_ms: 1000,
        };
        // One second: roughly the peak rate (500 ms), bounded by the burst credit.
        let first = simulate(burst, 1);
        assert!((450_000..=650_000).contains(&first), "{first}");
        // Ten seconds: the 1 s of burst plus 100 msps after it.
        let long = simulate(burst, 10);
        assert!((1_900_000..=2_200_000).contains(&long), "{long}");
    }

    #[test]
    fn no_rate_never_pauses() {
        let start = Instant::now();
        let mut throttle = Throttle::new(None, start);
        assert!(!throttle.advance(start + Duration::from_secs(1), 10_000_000));
    }
}
