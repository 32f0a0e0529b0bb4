//! A task's processes: the tree one DeployTask starts. The deployed program is the tree's
//! root (pid 2, its parent "1", the domain); `fork`, `vfork` and `clone` add children, each
//! with its own address space in the domain's VM, and every process and thread of the task
//! shares one id space, as a Linux pid namespace does.
//!
//! The tree keeps what outlives a process's threads and what other processes ask about:
//! parents, process groups and sessions, exit statuses of zombies until they are reaped, and
//! how to reach each process ([`ProcessShared`]) to signal it or kill it. As in a pid
//! namespace, orphans are adopted by the root, and when the root ends every other process of
//! the task is killed: the task's outcome is the root's, and it ends only when no process of
//! it is left.
//!
//! Locks: a process's own lock is taken before the tree's, and the tree's before any
//! [`ProcessShared`] lock; no code holds the tree's lock while it takes a process's lock, so
//! two processes acting on each other never wait for each other.

use crate::kernel::process::Waiter;
use crate::kernel::wait::WaitQueue;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use xeno_taskmgr_kit::{Outcome, lock};

/// The pid of a task's first process (1 would be init's; the domain plays that part).
pub(crate) const ROOT_PID: i32 = 2;
/// The parent the root process reports.
pub(crate) const ROOT_PARENT: i32 = 1;
/// Most processes (running or zombie) a domain may hold at once, over all its tasks: each
/// running one holds a vCPU and a host thread, and a zombie a slot here, so this bounds a
/// fork bomb or a zombie flood inside its own domain (fork then fails with EAGAIN, as at
/// RLIMIT_NPROC) while leaving room for `make -j` and a shell pipeline many times over.
pub(crate) const PROCESSES_MAX: usize = 256;
/// Largest id handed out before ids wrap (Linux's default `pid_max`).
const ID_MAX: i32 = 4_194_304;
/// `SIGCHLD`.
pub(crate) const SIGCHLD: u64 = 17;
/// `SIGKILL`.
pub(crate) const SIGKILL: u64 = 9;

/// How a process ended, as its parent's `wait` sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// `exit` or `exit_group` with this status (0 to 255).
    Exited(i32),
    /// Killed by this signal.
    Signaled(i32),
}

impl Status {
    /// The status word `wait4` stores.
    pub(crate) fn wstatus(self) -> u32 {
        match self {
            Status::Exited(code) => ((code as u32) & 0xff) << 8,
            Status::Signaled(signal) => (signal as u32) & 0x7f,
        }
    }

    /// `si_code` and `si_status` of the `siginfo` `waitid` and SIGCHLD carry.
    pub(crate) fn siginfo(self) -> (i32, i32) {
        match self {
            Status::Exited(code) => (1, code),       // CLD_EXITED
            Status::Signaled(signal) => (2, signal), // CLD_KILLED
        }
    }
}

/// A signal another process sent, not yet taken in by the target.
#[derive(Debug, Clone, Copy)]
struct Incoming {
    bits: u64,
    codes: [(i32, i32); 65],
}

impl Default for Incoming {
    fn default() -> Incoming {
        Incoming {
            bits: 0,
            codes: [(0, 0); 65],
        }
    }
}

/// What other processes may touch of a process without taking its lock: signals sent to it,
/// its end, its threads to kick, the waits on it. Every lock here is a leaf.
#[derive(Debug)]
pub(crate) struct ProcessShared {
    pub(crate) pid: i32,
    incoming: Mutex<Incoming>,
    /// Signals sent to the process and not yet taken in (a copy of `incoming`'s bits, read
    /// by its waiting threads without a lock).
    incoming_bits: AtomicU64,
    /// Signals the process ignores (sent ones are dropped), kept by `rt_sigaction`.
    pub(crate) ignored: AtomicU64,
    /// Whether its children are reaped without a wait (SIGCHLD ignored, or SA_NOCLDWAIT).
    pub(crate) auto_reap: AtomicBool,
    /// Set when the process as a whole ends (exit_group, a fatal signal or fault, SIGKILL
    /// from another process, the root's end): its threads end at their next check.
    ending: AtomicBool,
    /// The signal another process killed it with, if that is how it ends.
    killed_by: AtomicI32,
    /// The host threads running its threads, to kick (the lock is held while kicking).
    os_threads: Mutex<Vec<i32>>,
    /// Its threads waiting in `wait4` or `waitid` for a child to change state.
    pub(crate) children: Mutex<WaitQueue>,
    /// A `vfork` parent waits for this: set when the child execs or ends.
    vfork_done: AtomicBool,
    vfork_waiters: Mutex<WaitQueue>,
    /// The thread that is exec'ing while the process has other threads (0: none): every
    /// other thread leaves, as Linux's exec ends them, and it waits in `exec_waiters`.
    exec_tid: AtomicI32,
    exec_waiters: Mutex<WaitQueue>,
    /// A thread renamed by its exec: its old id in the high half, the leader's in the low
    /// half (0: none), for its run loop to pick up.
    renamed: AtomicU64,
    /// Its CPU time and `ITIMER_VIRTUAL`/`ITIMER_PROF`, charged by its threads.
    pub(crate) cpu: crate::kernel::cputimers::CpuTimers,
    /// What `/proc/<pid>` shows of it to the task's other processes, published by the
    /// process itself (at its start, exec and chdir; memory as it is metered).
    published: Mutex<Published>,
}

/// A process as other processes of its task see it in `/proc/<pid>`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Published {
    pub(crate) comm: String,
    pub(crate) cmdline: Vec<u8>,
    pub(crate) environ: Vec<u8>,
    pub(crate) exe: String,
    pub(crate) cwd: Vec<u8>,
    pub(crate) vsize: u64,
    pub(crate) rss: u64,
    pub(crate) threads: usize,
    /// Its areas, as [`Mm::areas`](crate::kernel::mm::Mm::areas) lists them.
    pub(crate) maps: Vec<(u64, u64, u32, bool)>,
    /// Its descriptors and their open files: weak, so that a pipe end the process closed is
    /// not held open by what it published.
    pub(crate) fds: Vec<(u64, std::sync::Weak<crate::kernel::fds::OpenFile>)>,
}

impl ProcessShared {
    pub(crate) fn new(pid: i32) -> Arc<ProcessShared> {
        Arc::new(ProcessShared {
            pid,
            incoming: Mutex::new(Incoming::default()),
            incoming_bits: AtomicU64::new(0),
            ignored: AtomicU64::new(default_ignored()),
            auto_reap: AtomicBool::new(false),
            ending: AtomicBool::new(false),
            killed_by: AtomicI32::new(0),
            os_threads: Mutex::new(Vec::new()),
            children: Mutex::new(WaitQueue::default()),
            vfork_done: AtomicBool::new(false),
            vfork_waiters: Mutex::new(WaitQueue::default()),
            exec_tid: AtomicI32::new(0),
            exec_waiters: Mutex::new(WaitQueue::default()),
            renamed: AtomicU64::new(0),
            cpu: crate::kernel::cputimers::CpuTimers::default(),
            published: Mutex::new(Published::default()),
        })
    }

    /// Replaces what `/proc/<pid>` shows of the process.
    pub(crate) fn publish(&self, published: Published) {
        *lock(&self.published) = published;
    }

    /// Updates the memory and thread figures `/proc/<pid>` shows.
    pub(crate) fn publish_memory(&self, vsize: u64, rss: u64, threads: usize) {
        let mut published = lock(&self.published);
        published.vsize = vsize;
        published.rss = rss;
        published.threads = threads;
    }

    /// Updates the areas `/proc/<pid>/maps` shows, and the descriptors of `/proc/<pid>/fd`.
    pub(crate) fn publish_tables(
        &self,
        maps: Option<Vec<(u64, u64, u32, bool)>>,
        fds: Option<Vec<(u64, std::sync::Weak<crate::kernel::fds::OpenFile>)>>,
    ) {
        let mut published = lock(&self.published);
        if let Some(maps) = maps {
            published.maps = maps;
        }
        if let Some(fds) = fds {
            published.fds = fds;
        }
    }

    /// What `/proc/<pid>` shows of the process.
    pub(crate) fn published(&self) -> Published {
        lock(&self.published).clone()
    }

    /// A host thread starts running one of the process's threads.
    pub(crate) fn register(&self, os_tid: i32) {
        lock(&self.os_threads).push(os_tid);
    }

    /// It stops.
    pub(crate) fn deregister(&self, os_tid: i32) {
        lock(&self.os_threads).retain(|tid| *tid != os_tid);
    }

    fn kick_all(&self) {
        for tid in lock(&self.os_threads).iter() {
            crate::hypervisor::cpu::signal::kick(*tid);
        }
    }

    /// The process ends as a whole: every thread of it is told.
    pub(crate) fn end(&self) {
        self.ending.store(true, Ordering::Release);
        self.kick_all();
    }

    pub(crate) fn is_ending(&self) -> bool {
        self.ending.load(Ordering::Acquire)
    }

    /// Signal `signal` from process `sender` with `si_code` `code`: SIGKILL ends it; an
    /// ignored signal is dropped; any other is queued and its threads kicked so that a
    /// running one takes it at once and a waiting one can be interrupted.
    pub(crate) fn send(&self, signal: u64, code: i32, sender: i32) {
        if !(1..=64).contains(&signal) {
            return;
        }
        if signal == SIGKILL {
            let _ = self.killed_by.compare_exchange(
                0,
                SIGKILL as i32,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            self.end();
            return;
        }
        let bit = 1u64 << (signal - 1);
        if self.ignored.load(Ordering::Acquire) & bit != 0 {
            return;
        }
        {
            let mut incoming = lock(&self.incoming);
            incoming.bits |= bit;
            incoming.codes[signal as usize] = (code, sender);
            self.incoming_bits.store(incoming.bits, Ordering::Release);
        }
        self.kick_all();
    }

    /// Signals sent and not yet taken in, without a lock.
    pub(crate) fn incoming(&self) -> u64 {
        self.incoming_bits.load(Ordering::Acquire)
    }

    /// Takes in what was sent: (bits, `si_code` and sender of each).
    pub(crate) fn take_incoming(&self) -> (u64, [(i32, i32); 65]) {
        let mut incoming = lock(&self.incoming);
        let taken = std::mem::take(&mut *incoming);
        self.incoming_bits.store(0, Ordering::Release);
        (taken.bits, taken.codes)
    }

    /// The signal another process killed this one with.
    pub(crate) fn killed_by(&self) -> Option<i32> {
        match self.killed_by.load(Ordering::Acquire) {
            0 => None,
            signal => Some(signal),
        }
    }

    /// Thread `tid` execs while the process has other threads: each of them is told to leave
    /// ([`must_leave`](Self::must_leave)) and `waiter` is woken as each does. False when
    /// another thread of the process is exec'ing already (it goes first; this one leaves).
    pub(crate) fn begin_exec(&self, tid: i32, waiter: &Arc<Waiter>) -> bool {
        let mut waiters = lock(&self.exec_waiters);
        match self
            .exec_tid
            .compare_exchange(0, tid, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {}
            Err(current) if current == tid => {}
            Err(_) => return false,
        }
        waiters.register(waiter);
        drop(waiters);
        self.kick_all();
        true
    }

    /// Thread `tid` is no longer exec'ing (it did, or it gave up: it made another call).
    pub(crate) fn end_exec(&self, tid: i32) {
        let _ = self
            .exec_tid
            .compare_exchange(tid, 0, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Whether thread `tid` must leave its process: another thread of it is exec'ing.
    pub(crate) fn must_leave(&self, tid: i32) -> bool {
        let execing = self.exec_tid.load(Ordering::Acquire);
        execing != 0 && execing != tid
    }

    /// Thread `tid` took the id `pid` of the leader in an exec.
    pub(crate) fn note_renamed(&self, tid: i32, pid: i32) {
        let packed = (u64::from(tid as u32) << 32) | u64::from(pid as u32);
        self.renamed.store(packed, Ordering::Release);
    }

    /// The id thread `tid` has now: the leader's if its exec renamed it.
    pub(crate) fn renamed(&self, tid: i32) -> i32 {
        let packed = self.renamed.load(Ordering::Acquire);
        if packed == 0 || (packed >> 32) as u32 != tid as u32 {
            return tid;
        }
        let _ = self
            .renamed
            .compare_exchange(packed, 0, Ordering::AcqRel, Ordering::Acquire);
        packed as u32 as i32
    }

    /// A thread of the process left: an exec'ing thread looks again.
    pub(crate) fn thread_left(&self) {
        lock(&self.exec_waiters).wake_all();
    }

    /// The child of a `vfork` has exec'd or ended: its parent goes on.
    pub(crate) fn release_vfork(&self) {
        self.vfork_done.store(true, Ordering::Release);
        lock(&self.vfork_waiters).wake_all();
    }

    /// Whether the parent of a `vfork` may go on; registers `waiter` if not.
    pub(crate) fn vfork_released(&self, waiter: &Arc<Waiter>) -> bool {
        let mut waiters = lock(&self.vfork_waiters);
        if self.vfork_done.load(Ordering::Acquire) {
            return true;
        }
        waiters.register(waiter);
        false
    }
}

/// Signals ignored by default (SIGCHLD, SIGCONT, SIGURG, SIGWINCH): dropped when sent to a
/// process that left them at SIG_DFL.
pub(crate) fn default_ignored() -> u64 {
    [17u64, 18, 23, 28]
        .iter()
        .fold(0, |bits, signal| bits | (1 << (signal - 1)))
}

/// One process of the tree.
#[derive(Debug)]
struct Entry {
    parent: i32,
    pgid: i32,
    sid: i32,
    /// The signal its parent gets when it ends (SIGCHLD, or what `clone` asked for).
    exit_signal: u64,
    shared: Arc<ProcessShared>,
    /// Set once it has ended (a zombie until reaped).
    status: Option<Status>,
}

#[derive(Debug)]
struct Inner {
    next_id: i32,
    processes: BTreeMap<i32, Entry>,
    /// Every live thread id of the task and the process it belongs to.
    threads: BTreeMap<i32, i32>,
    /// Processes whose threads have not all ended.
    running: usize,
    /// The root's outcome, once it has ended.
    root_end: Option<Outcome>,
    /// Unknown system calls of the task's ended processes, by number.
    unknown: BTreeMap<u64, u64>,
}

/// Which children a `wait` is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Which {
    Any,
    Pid(i32),
    Group(i32),
}

/// What a `wait` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// A child that has ended (reaped unless asked not to), and the CPU time, ns, it and
    /// the children it reaped used.
    Ended(i32, Status, u64),
    /// Matching children, none ended yet.
    Running,
    /// No child matches (ECHILD).
    None,
}

/// What follows from a process's end, for its last thread to do outside the tree's lock.
#[derive(Debug, Default)]
pub(crate) struct Ended {
    /// The task is over: its outcome and its unknown calls.
    pub(crate) task: Option<(Outcome, BTreeMap<u64, u64>)>,
    /// Zombies removed with the task (to take off the domain's process count).
    pub(crate) released: usize,
}

/// The task's process tree.
#[derive(Debug)]
pub(crate) struct Tree {
    inner: Mutex<Inner>,
    /// Bytes of pages the task's processes own together, for its memory meter.
    memory: AtomicU64,
}

impl Tree {
    /// A tree of one process, the root, with thread `ROOT_PID`.
    pub(crate) fn new(root: Arc<ProcessShared>) -> Tree {
        let mut processes = BTreeMap::new();
        processes.insert(
            ROOT_PID,
            Entry {
                parent: ROOT_PARENT,
                pgid: ROOT_PID,
                sid: ROOT_PID,
                exit_signal: SIGCHLD,
                shared: root,
                status: None,
            },
        );
        Tree {
            inner: Mutex::new(Inner {
                next_id: ROOT_PID + 1,
                processes,
                threads: BTreeMap::from([(ROOT_PID, ROOT_PID)]),
                running: 1,
                root_end: None,
                unknown: BTreeMap::new(),
            }),
            memory: AtomicU64::new(0),
        }
    }

    /// A new thread id of process `pid` (`None` when the id space is full).
    pub(crate) fn new_thread(&self, pid: i32) -> Option<i32> {
        let mut inner = lock(&self.inner);
        let id = inner.free_id()?;
        inner.threads.insert(id, pid);
        Some(id)
    }

    /// The id of a new process, which is also the id of its first thread.
    pub(crate) fn new_process_id(&self) -> Option<i32> {
        let mut inner = lock(&self.inner);
        let id = inner.free_id()?;
        inner.threads.insert(id, id);
        Some(id)
    }

    /// Thread `tid` has ended.
    pub(crate) fn thread_ended(&self, tid: i32) {
        lock(&self.inner).threads.remove(&tid);
    }

    /// Thread `tid` takes the id of its process's leader (`execve` from another thread).
    pub(crate) fn rename_thread(&self, tid: i32, pid: i32) {
        let mut inner = lock(&self.inner);
        inner.threads.remove(&tid);
        inner.threads.insert(pid, pid);
    }

    /// Process `pid` of the task, running or a zombie (`true`), for `/proc/<pid>`.
    pub(crate) fn lookup(&self, pid: i32) -> Option<(Arc<ProcessShared>, bool)> {
        let inner = lock(&self.inner);
        inner
            .processes
            .get(&pid)
            .map(|entry| (Arc::clone(&entry.shared), entry.status.is_some()))
    }

    /// The process thread `tid` belongs to.
    pub(crate) fn process_of(&self, tid: i32) -> Option<Arc<ProcessShared>> {
        let inner = lock(&self.inner);
        let pid = inner.threads.get(&tid)?;
        inner
            .processes
            .get(pid)
            .filter(|entry| entry.status.is_none())
            .map(|entry| Arc::clone(&entry.shared))
    }

    /// Adds a child of `parent` (its id is `shared.pid`, taken with [`Tree::new_thread`]),
    /// in its parent's group and session.
    pub(crate) fn add_child(&self, parent: i32, exit_signal: u64, shared: Arc<ProcessShared>) {
        let mut inner = lock(&self.inner);
        let (pgid, sid) = inner
            .processes
            .get(&parent)
            .map_or((ROOT_PID, ROOT_PID), |entry| (entry.pgid, entry.sid));
        if inner.root_end.is_some() {
            // The root ended while this child was being made: it goes with the rest.
            shared.send(SIGKILL, 0, ROOT_PARENT);
        }
        inner.processes.insert(
            shared.pid,
            Entry {
                parent,
                pgid,
                sid,
                exit_signal,
                shared,
                status: None,
            },
        );
        inner.running += 1;
    }

    /// Takes back a child that never ran (its start failed after [`Tree::add_child`]).
    pub(crate) fn remove_unstarted(&self, pid: i32) {
        let mut inner = lock(&self.inner);
        if inner.processes.remove(&pid).is_some() {
            inner.running -= 1;
        }
        inner.threads.remove(&pid);
    }

    /// (processes running, processes in all, zombies included), for `/proc/loadavg`.
    pub(crate) fn counts(&self) -> (usize, usize) {
        let inner = lock(&self.inner);
        (inner.running, inner.processes.len())
    }

    /// Every process of the task, running or zombie, for listing `/proc`.
    pub(crate) fn pids(&self) -> Vec<i32> {
        lock(&self.inner).processes.keys().copied().collect()
    }

    /// The newest id handed out, for `/proc/loadavg`.
    pub(crate) fn last_id(&self) -> i32 {
        lock(&self.inner).next_id - 1
    }

    /// The parent of `pid` as `getppid` reports it.
    pub(crate) fn parent(&self, pid: i32) -> i32 {
        lock(&self.inner)
            .processes
            .get(&pid)
            .map_or(ROOT_PARENT, |entry| entry.parent)
    }

    /// (process group, session) of `pid`, if it is a process of the task.
    pub(crate) fn group_of(&self, pid: i32) -> Option<(i32, i32)> {
        lock(&self.inner)
            .processes
            .get(&pid)
            .map(|entry| (entry.pgid, entry.sid))
    }

    /// `setpgid(pid, pgid)` asked by `caller` (0s already replaced by the caller's ids), with
    /// Linux's rules: the target is the caller or its child, in the caller's session, not a
    /// session leader; the group is its own id or an existing group of the session.
    pub(crate) fn set_group(&self, caller: i32, pid: i32, pgid: i32) -> Result<(), i32> {
        let mut inner = lock(&self.inner);
        let caller_sid = inner.processes.get(&caller).map(|e| e.sid).ok_or(3)?;
        let target = inner.processes.get(&pid).ok_or(3)?; // ESRCH
        if pid != caller && target.parent != caller {
            return Err(3);
        }
        if target.sid != caller_sid {
            return Err(1); // EPERM
        }
        if target.sid == pid {
            return Err(1);
        }
        if pgid != pid
            && !inner
                .processes
                .values()
                .any(|entry| entry.pgid == pgid && entry.sid == caller_sid)
        {
            return Err(1);
        }
        if let Some(entry) = inner.processes.get_mut(&pid) {
            entry.pgid = pgid;
        }
        Ok(())
    }

    /// `setsid` by `pid`: a new session and group led by it, unless it leads a group already.
    pub(crate) fn new_session(&self, pid: i32) -> Result<i32, i32> {
        let mut inner = lock(&self.inner);
        if inner.processes.values().any(|entry| entry.pgid == pid) {
            return Err(1); // EPERM: already a group leader
        }
        let entry = inner.processes.get_mut(&pid).ok_or(3)?;
        entry.pgid = pid;
        entry.sid = pid;
        Ok(pid)
    }

    /// The running processes a `kill(target)` from `caller` reaches: a pid, the caller's
    /// group (0), every process but the caller (-1), or a group (-pgid). Empty if none.
    pub(crate) fn kill_targets(&self, caller: i32, target: i32) -> Vec<Arc<ProcessShared>> {
        let inner = lock(&self.inner);
        let caller_group = inner.processes.get(&caller).map_or(0, |entry| entry.pgid);
        inner
            .processes
            .iter()
            .filter(|(pid, entry)| match target {
                t if t > 0 => **pid == t,
                0 => entry.pgid == caller_group,
                -1 => **pid != caller,
                t => entry.pgid == -t,
            })
            .filter(|(_, entry)| entry.status.is_none() || target > 0)
            .map(|(_, entry)| Arc::clone(&entry.shared))
            .collect()
    }

    /// A `wait` by `parent` for `which`: an ended child (removed unless `keep`), or whether
    /// matching children exist.
    pub(crate) fn wait(&self, parent: i32, which: Which, keep: bool) -> Found {
        let mut inner = lock(&self.inner);
        let parent_group = inner.processes.get(&parent).map_or(0, |entry| entry.pgid);
        let mut any = false;
        let mut ended = None;
        for (pid, entry) in &inner.processes {
            let matches = entry.parent == parent
                && match which {
                    Which::Any => true,
                    Which::Pid(wanted) => *pid == wanted,
                    Which::Group(0) => entry.pgid == parent_group,
                    Which::Group(group) => entry.pgid == group,
                };
            if !matches {
                continue;
            }
            any = true;
            if let Some(status) = entry.status {
                ended = Some((*pid, status, entry.shared.cpu.total()));
                break;
            }
        }
        match ended {
            Some((pid, status, cpu)) => {
                if !keep {
                    inner.processes.remove(&pid);
                }
                Found::Ended(pid, status, cpu)
            }
            None if any => Found::Running,
            None => Found::None,
        }
    }

    /// Process `pid`'s threads have all ended, with `status` (and, for the root, `outcome`):
    /// it becomes a zombie for its parent (or is reaped at once if the parent asked for
    /// that), its children go to the root, its parent is signalled and woken. The root's end
    /// kills every other process; the last process to end ends the task. Returns whether a
    /// zombie was reaped here (for the domain's count) and, at the task's end, its outcome.
    pub(crate) fn process_ended(
        &self,
        pid: i32,
        status: Status,
        outcome: Outcome,
        unknown: &BTreeMap<u64, u64>,
    ) -> (usize, Ended) {
        let mut inner = lock(&self.inner);
        for (number, count) in unknown {
            if inner.unknown.len() < 64 || inner.unknown.contains_key(number) {
                *inner.unknown.entry(*number).or_insert(0) += count;
            }
        }
        inner.running = inner.running.saturating_sub(1);
        let mut reaped = 0;
        let (parent, exit_signal) = match inner.processes.get_mut(&pid) {
            Some(entry) => {
                entry.status = Some(status);
                (entry.parent, entry.exit_signal)
            }
            None => (ROOT_PARENT, 0),
        };
        // Orphans go to the root (the tree's init); at the root's own end they go with it.
        let mut adopted_zombie = false;
        if pid != ROOT_PID {
            for entry in inner.processes.values_mut() {
                if entry.parent == pid {
                    entry.parent = ROOT_PID;
                    adopted_zombie |= entry.status.is_some();
                }
            }
        }
        let parent_shared = inner
            .processes
            .get(&parent)
            .filter(|entry| entry.status.is_none())
            .map(|entry| Arc::clone(&entry.shared));
        if let Some(parent_shared) = &parent_shared {
            if parent_shared.auto_reap.load(Ordering::Acquire) {
                inner.processes.remove(&pid);
                reaped += 1;
            } else if exit_signal != 0 {
                let (code, _) = status.siginfo();
                parent_shared.send(exit_signal, code, pid);
            }
            lock(&parent_shared.children).wake_all();
        }
        if adopted_zombie
            && let Some(root) = inner.processes.get(&ROOT_PID)
            && root.status.is_none()
        {
            lock(&root.shared.children).wake_all();
        }
        if pid == ROOT_PID {
            inner.root_end = Some(outcome);
            for (other, entry) in &inner.processes {
                if *other != ROOT_PID && entry.status.is_none() {
                    entry.shared.send(SIGKILL, 0, ROOT_PARENT);
                }
            }
        }
        let mut ended = Ended::default();
        if inner.running == 0
            && let Some(outcome) = inner.root_end.take()
        {
            ended.released = inner.processes.len();
            inner.processes.clear();
            inner.threads.clear();
            ended.task = Some((outcome, std::mem::take(&mut inner.unknown)));
        }
        (reaped, ended)
    }

    /// Records that a process's pages changed from `before` to `after` bytes; the task's
    /// total.
    pub(crate) fn memory_changed(&self, before: u64, after: u64) -> u64 {
        if after >= before {
            self.memory.fetch_add(after - before, Ordering::AcqRel) + (after - before)
        } else {
            self.memory.fetch_sub(before - after, Ordering::AcqRel) - (before - after)
        }
    }
}

impl Inner {
    /// An id no live process or thread has.
    fn free_id(&mut self) -> Option<i32> {
        for _ in 0..ID_MAX {
            let id = self.next_id;
            self.next_id = if id >= ID_MAX { ROOT_PID + 1 } else { id + 1 };
            if !self.threads.contains_key(&id) && !self.processes.contains_key(&id) {
                return Some(id);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn child(tree: &Tree, parent: i32) -> i32 {
        let pid = tree.new_process_id().expect("id");
        tree.add_child(parent, SIGCHLD, ProcessShared::new(pid));
        pid
    }

    #[test]
    fn a_child_is_a_zombie_until_reaped_and_orphans_go_to_the_root() {
        let tree = Tree::new(ProcessShared::new(ROOT_PID));
        let a = child(&tree, ROOT_PID);
        let b = child(&tree, a);
        assert_eq!(tree.parent(b), a);
        assert_eq!(tree.wait(ROOT_PID, Which::Any, false), Found::Running);
        assert_eq!(tree.wait(b, Which::Any, false), Found::None);
        let none = BTreeMap::new();
        let (reaped, ended) = tree.process_ended(a, Status::Exited(3), Outcome::Exited(3), &none);
        assert_eq!((reaped, ended.task.is_none()), (0, true));
        assert_eq!(tree.parent(b), ROOT_PID, "adopted by the root");
        assert_eq!(
            tree.wait(ROOT_PID, Which::Pid(a), true),
            Found::Ended(a, Status::Exited(3), 0)
        );
        assert_eq!(
            tree.wait(ROOT_PID, Which::Pid(a), false),
            Found::Ended(a, Status::Exited(3), 0)
        );
        assert_eq!(tree.wait(ROOT_PID, Which::Pid(a), false), Found::None);
        assert_eq!(Status::Exited(3).wstatus(), 0x300);
        assert_eq!(Status::Signaled(9).wstatus(), 9);
    }

    #[test]
    fn the_task_ends_with_its_last_process_and_the_roots_outcome() {
        let tree = Tree::new(ProcessShared::new(ROOT_PID));
        let a = child(&tree, ROOT_PID);
        let none = BTreeMap::new();
        let (_, ended) = tree.process_ended(ROOT_PID, Status::Exited(0), Outcome::Exited(0), &none);
        assert!(ended.task.is_none(), "a child still runs");
        let (_, ended) = tree.process_ended(
            a,
            Status::Signaled(9),
            Outcome::Failed("killed".into()),
            &none,
        );
        let (outcome, _) = ended.task.expect("the task ended");
        assert_eq!(outcome, Outcome::Exited(0));
        assert_eq!(ended.released, 2);
    }

    #[test]
    fn groups_and_sessions_follow_linux_rules() {
        let tree = Tree::new(ProcessShared::new(ROOT_PID));
        let a = child(&tree, ROOT_PID);
        assert_eq!(tree.group_of(a), Some((ROOT_PID, ROOT_PID)));
        tree.set_group(ROOT_PID, a, a).expect("own group");
        assert_eq!(tree.group_of(a), Some((a, ROOT_PID)));
        assert_eq!(tree.new_session(a), Err(1), "a group leader cannot");
        assert_eq!(tree.set_group(a, ROOT_PID, a), Err(3), "not its child");
        let b = child(&tree, ROOT_PID);
        assert_eq!(tree.new_session(b), Ok(b));
        assert_eq!(
            tree.set_group(ROOT_PID, b, ROOT_PID),
            Err(1),
            "other session"
        );
        assert_eq!(tree.kill_targets(ROOT_PID, -a).len(), 1);
        assert_eq!(tree.kill_targets(ROOT_PID, -1).len(), 2);
    }
}
