//! A task as the VMM's kernel sees it: its address space, open files, working directory,
//! signal dispositions and identity, and the copies between its memory and the VMM that every
//! system call goes through.
//!
//! Every guest pointer is checked here: a user address is translated through the task's own
//! page tables with ring-3 permissions, page by page, and then read or written through
//! vm-memory inside the domain's RAM. An address that is not mapped (or not writable, for a
//! write) is `EFAULT`; nothing a task passes can reach memory outside its own pages.

use crate::hypervisor::vm::DomainVm;
use crate::hypervisor::vm::layout::KernelSlot;
use crate::hypervisor::vm::layout::{PAGE_SIZE, page_floor};
use crate::kernel::fds::FdTable;
use crate::kernel::files::FsContext;
use crate::kernel::mm::Mm;
use crate::kernel::output::Output;
use crate::kernel::syscalls::Errno;
use crate::kernel::tree::{ProcessShared, Status, Tree};
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32};
use std::time::Instant;
use xeno_taskmgr_kit::Outcome;
use xeno_taskmgr_kit::metering::TaskMeter;

/// Most distinct unknown system call numbers a task's log keeps counts for.
const UNKNOWN_SYSCALLS_KEPT: usize = 64;

/// Signal dispositions (one table for the task), the current thread's mask, and the signals
/// pending for the task.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    /// `struct sigaction` as the task set it (handler, flags, restorer, mask), by signal.
    pub(crate) actions: [[u64; 4]; 65],
    pub(crate) mask: u64,
    /// Signals sent and not yet delivered (one bit per signal, bit 0 for signal 1).
    pub(crate) pending: u64,
    /// `si_code` of each pending signal (SI_USER from `kill`, SI_TKILL from `tkill`).
    pub(crate) codes: [i32; 65],
    /// The process that sent each pending signal (`si_pid`).
    pub(crate) senders: [i32; 65],
    /// The mask to put back once a handler has run for the current thread's `rt_sigsuspend`
    /// (its frame saves this one, not the temporary mask).
    pub(crate) restore_mask: Option<u64>,
    /// The signals an `rt_sigtimedwait` is waiting for: blocked as they usually are, they
    /// still end its wait, and are taken by the call instead of delivered.
    pub(crate) waiting_for: u64,
}

impl Signals {
    /// Default dispositions, nothing blocked or pending.
    pub(crate) fn new() -> Signals {
        Signals {
            actions: [[0; 4]; 65],
            mask: 0,
            pending: 0,
            codes: [0; 65],
            senders: [0; 65],
            restore_mask: None,
            waiting_for: 0,
        }
    }
}

/// A process's kernel-side state.
pub(crate) struct Process {
    pub(crate) vm: Arc<DomainVm>,
    pub(crate) mm: Mm,
    /// Its address space lent to a `vfork` child, or its parent's it runs on.
    pub(crate) loan: Option<crate::kernel::fork::MmLoan>,
    pub(crate) fds: FdTable,
    pub(crate) fs: FsContext,
    pub(crate) signals: Signals,
    pub(crate) output: Output,
    pub(crate) meter: Arc<TaskMeter>,
    /// The absolute session path `readlink("/proc/self/exe")` returns.
    pub(crate) exe_path: String,
    /// The program it runs, which `execve("/proc/self/exe")` runs again (a deployed program
    /// need not be a file of the session).
    pub(crate) image: bytes::Bytes,
    /// Its arguments and environment as `/proc/self/cmdline` and `environ` show them (each
    /// string followed by a NUL).
    pub(crate) cmdline: Vec<u8>,
    pub(crate) environ: Vec<u8>,
    /// The name `prctl(PR_SET_NAME)` gave it (15 bytes at most), until its next exec; without
    /// one its `comm` is its program's name.
    pub(crate) comm: Option<Vec<u8>>,
    /// What `uname` reports as the release: the domain's version.
    pub(crate) release: String,
    /// Process id the task sees (its own namespace: 1 is not used, as init would be).
    pub(crate) pid: i32,
    pub(crate) umask: u32,
    /// When the domain started: its monotonic clock counts from here.
    pub(crate) boot: Instant,
    /// Unknown system calls by number, for the log when the task ends.
    pub(crate) unknown: BTreeMap<u64, u64>,
    /// The task's threads.
    pub(crate) threads: Threads,
    /// The thread on whose behalf the VMM is running now (set by [`Process::enter`]).
    pub(crate) tid: i32,
    /// That thread's kernel pages (its exception frames are on its ring-0 stack).
    pub(crate) kstack: KernelSlot,
    /// Threads waiting in `futex`, by address, first come first woken.
    pub(crate) futexes: BTreeMap<u64, VecDeque<Arc<Waiter>>>,
    /// How the task ends, once decided (the first decision wins).
    pub(crate) ending: Option<Outcome>,
    /// For the call being run again after a wait: its deadline and what it had done (set
    /// only while that call runs).
    pub(crate) resume: Option<crate::kernel::wait::Resume>,
    /// How the process ends, for its parent's `wait` (set with `ending`).
    pub(crate) end_status: Option<Status>,
    /// The task's process tree.
    pub(crate) tree: Arc<Tree>,
    /// What other processes reach of this one (signals, its end).
    pub(crate) shared: Arc<ProcessShared>,
    /// Bytes of pages last reported to the task's memory meter for this process.
    pub(crate) metered: u64,
    /// Most bytes `execve` reads of a program (the task manager's `program_bytes_max`).
    pub(crate) program_bytes_max: u64,
    /// The generations of its address space and descriptor table last published for
    /// `/proc/<pid>/maps` and `fd/` (`None`: never).
    pub(crate) published_tables: Option<(u64, u64)>,
    /// ITIMER_REAL (`alarm`, `setitimer`), made at first use; it survives `execve`.
    pub(crate) real_timer: Option<Arc<crate::kernel::timers::Timer>>,
    /// POSIX timers by id, with their clock; deleted by `execve`.
    pub(crate) posix_timers: BTreeMap<i32, (Option<Arc<crate::kernel::timers::Timer>>, u64)>,
}

/// A thread's place in `futex` waits: set when woken, and its vCPU thread to kick.
#[derive(Debug, Default)]
pub(crate) struct Waiter {
    pub(crate) woken: AtomicBool,
    pub(crate) os_tid: AtomicI32,
}

/// One thread of a task.
#[derive(Debug)]
pub(crate) struct ThreadInfo {
    pub(crate) slot: KernelSlot,
    pub(crate) slot_index: u64,
    /// `set_tid_address` / CLONE_CHILD_CLEARTID: zeroed and woken when the thread exits.
    pub(crate) clear_child_tid: u64,
    pub(crate) waiter: Arc<Waiter>,
    /// Its place in the queues of pipes and eventfds it blocks on ([`crate::kernel::wait`]):
    /// apart from `waiter`, so that a stale wake-up from one never ends a futex wait.
    pub(crate) io_waiter: Arc<Waiter>,
    /// Its signal mask while another thread is current (the current thread's is
    /// `Signals::mask`).
    pub(crate) mask: u64,
    /// Likewise its `Signals::restore_mask`.
    pub(crate) restore_mask: Option<u64>,
    /// Its alternate signal stack (`sigaltstack`), if it has one.
    pub(crate) altstack: Option<AltStack>,
}

/// `ss_flags` of a `stack_t` (`sigaltstack`, `uc_stack`).
pub(crate) const SS_ONSTACK: u32 = 1;
pub(crate) const SS_DISABLE: u32 = 2;
pub(crate) const SS_AUTODISARM: u32 = 1 << 31;

/// An alternate signal stack: `[sp, sp + size)`, and whether it is disarmed while in use
/// (SS_AUTODISARM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AltStack {
    pub(crate) sp: u64,
    pub(crate) size: u64,
    pub(crate) autodisarm: bool,
}

impl AltStack {
    /// Whether `rsp` is on it.
    pub(crate) fn holds(&self, rsp: u64) -> bool {
        rsp > self.sp && rsp <= self.sp.saturating_add(self.size)
    }
}

impl ThreadInfo {
    /// A thread at kernel slot `slot_index` (its pages at `slot`), starting with `mask`.
    pub(crate) fn new(slot: KernelSlot, slot_index: u64, mask: u64) -> ThreadInfo {
        ThreadInfo {
            slot,
            slot_index,
            clear_child_tid: 0,
            waiter: Arc::new(Waiter::default()),
            io_waiter: Arc::new(Waiter::default()),
            mask,
            restore_mask: None,
            altstack: None,
        }
    }
}

/// A process's threads, by thread id (ids come from the task's [`Tree`]).
#[derive(Debug, Default)]
pub(crate) struct Threads {
    pub(crate) live: BTreeMap<i32, ThreadInfo>,
}

/// Strings each followed by a NUL, as `/proc/<pid>/cmdline` shows them.
pub(crate) fn nul_joined(strings: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for string in strings {
        out.extend_from_slice(string);
        out.push(0);
    }
    out
}

impl Process {
    /// The VMM now acts for thread `tid` (its id and kernel pages become current).
    pub(crate) fn enter(&mut self, tid: i32) {
        if self.tid != tid {
            // Signal masks are per thread: the one in `signals` is the current thread's.
            if let Some(previous) = self.threads.live.get_mut(&self.tid) {
                previous.mask = self.signals.mask;
                previous.restore_mask = self.signals.restore_mask;
            }
            if let Some(info) = self.threads.live.get(&tid) {
                self.signals.mask = info.mask;
                self.signals.restore_mask = info.restore_mask;
            }
        }
        self.tid = tid;
        if let Some(info) = self.threads.live.get(&tid) {
            self.kstack = info.slot;
        }
        self.take_incoming();
    }

    /// Makes the signals other processes sent pending here (unless ignored meanwhile).
    pub(crate) fn take_incoming(&mut self) {
        if self.shared.incoming() == 0 {
            return;
        }
        let (bits, codes) = self.shared.take_incoming();
        for signal in 1..=64u64 {
            if bits & (1 << (signal - 1)) != 0 {
                let (code, sender) = codes[signal as usize];
                crate::kernel::syscalls::signal::raise_from(self, signal, code, sender);
            }
        }
    }

    /// The current thread's alternate signal stack, if it has one.
    pub(crate) fn altstack(&self) -> Option<AltStack> {
        self.threads
            .live
            .get(&self.tid)
            .and_then(|info| info.altstack)
    }

    /// Stops every timer of the process (it ends).
    pub(crate) fn disarm_timers(&mut self) {
        if let Some(timer) = self.real_timer.take() {
            timer.disarm();
        }
        for (_, (timer, _)) in std::mem::take(&mut self.posix_timers) {
            let Some(timer) = timer else { continue };
            timer.disarm();
        }
    }

    /// Records how the process ends; the first decision wins.
    pub(crate) fn end_with(&mut self, outcome: Outcome, status: Status) {
        if self.ending.is_none() {
            self.ending = Some(outcome);
            self.end_status = Some(status);
        }
    }

    /// The current thread's I/O waiter, reset for a new wait: what a blocking call queues
    /// on the objects it waits for.
    pub(crate) fn io_waiter(&self) -> Option<Arc<Waiter>> {
        let waiter = Arc::clone(&self.threads.live.get(&self.tid)?.io_waiter);
        waiter
            .woken
            .store(false, std::sync::atomic::Ordering::Release);
        Some(waiter)
    }

    /// Whether another thread, or a `vfork` parent, runs on this address space (the read
    /// fast path is then off: its save area and table are one per address space).
    pub(crate) fn shares_address_space(&self) -> bool {
        self.threads.live.len() > 1 || self.loan.is_some()
    }

    /// Records an unknown system call (bounded).
    pub(crate) fn note_unknown(&mut self, number: u64) {
        if let Some(count) = self.unknown.get_mut(&number) {
            *count += 1;
        } else if self.unknown.len() < UNKNOWN_SYSCALLS_KEPT {
            self.unknown.insert(number, 1);
        }
    }

    /// Updates the task's memory meter from this process's address space (the task's
    /// figure is the sum over its processes).
    pub(crate) fn meter_memory(&mut self) {
        // A `vfork` child's pages are its parent's, counted there.
        let borrowed = matches!(self.loan, Some(crate::kernel::fork::MmLoan::Borrowed(_)));
        let now = if borrowed { 0 } else { self.mm.bytes_charged() };
        let total = self.tree.memory_changed(self.metered, now);
        self.metered = now;
        self.meter.set_memory(total);
        self.shared.publish_memory(
            self.mm.mapped_bytes(),
            self.mm.bytes_owned(),
            self.threads.live.len(),
        );
    }

    /// Publishes what the task's other processes see of this one in `/proc/<pid>` (after
    /// its start, an exec, a chdir).
    pub(crate) fn publish(&self) {
        self.shared.publish(crate::kernel::tree::Published {
            comm: crate::kernel::procfs::comm(self),
            cmdline: self.cmdline.clone(),
            environ: self.environ.clone(),
            exe: self.exe_path.clone(),
            cwd: crate::kernel::files::FsContext::session_path(&self.fs.cwd),
            vsize: self.mm.mapped_bytes(),
            rss: self.mm.bytes_owned(),
            threads: self.threads.live.len(),
            maps: self.mm.areas(),
            fds: self.published_fds(),
        });
    }

    fn published_fds(&self) -> Vec<(u64, std::sync::Weak<crate::kernel::fds::OpenFile>)> {
        self.fds
            .all()
            .iter()
            .map(|(number, file)| (*number, Arc::downgrade(file)))
            .collect()
    }

    /// Publishes its areas and descriptors again if either changed since they last were
    /// (after every system call: a comparison of two counters when nothing changed).
    pub(crate) fn publish_tables(&mut self) {
        let now = (self.mm.generation(), self.fds.generation());
        let before = self.published_tables.replace(now);
        if before == Some(now) {
            return;
        }
        let changed =
            |pick: fn((u64, u64)) -> u64| before.is_none_or(|then| pick(then) != pick(now));
        let maps = changed(|g| g.0).then(|| self.mm.areas());
        let fds = changed(|g| g.1).then(|| self.published_fds());
        self.shared.publish_tables(maps, fds);
    }

    /// Guest-physical address of user `va` with the access asked for, backing a lazily
    /// mapped page (the stack) first if need be.
    fn user_gpa(&mut self, va: u64, write: bool) -> Result<u64, Errno> {
        let vm = Arc::clone(&self.vm);
        let physical = &vm.physical;
        if let Some(gpa) = self.mm.translate(physical, va, write) {
            return Ok(gpa);
        }
        if self.mm.fault_in(physical, va, write) {
            self.meter_memory();
            if let Some(gpa) = self.mm.translate(physical, va, write) {
                return Ok(gpa);
            }
        }
        Err(Errno::EFAULT)
    }

    /// Checks that all of `[va, va + len)` is accessible (writable if `write`), backing lazy
    /// pages, so that a call can fail with EFAULT before it has any effect.
    pub(crate) fn check_user(&mut self, va: u64, len: u64, write: bool) -> Result<(), Errno> {
        if len == 0 {
            return Ok(());
        }
        let end = va.checked_add(len).ok_or(Errno::EFAULT)?;
        let mut page = page_floor(va);
        while page < end {
            self.user_gpa(page, write)?;
            page += PAGE_SIZE;
        }
        Ok(())
    }

    /// Copies `len` bytes from user memory at `va`.
    pub(crate) fn read_user(&mut self, va: u64, len: usize) -> Result<Vec<u8>, Errno> {
        let mut data = vec![0u8; len];
        self.read_user_into(va, &mut data)?;
        Ok(data)
    }

    /// Fills `buf` from user memory at `va`.
    pub(crate) fn read_user_into(&mut self, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let mut done = 0usize;
        while done < buf.len() {
            let at = va.checked_add(done as u64).ok_or(Errno::EFAULT)?;
            let in_page = (PAGE_SIZE - (at % PAGE_SIZE)) as usize;
            let chunk = in_page.min(buf.len() - done);
            let gpa = self.user_gpa(at, false)?;
            if !self.vm.physical.ram.read(gpa, &mut buf[done..done + chunk]) {
                return Err(Errno::EFAULT);
            }
            done += chunk;
        }
        Ok(())
    }

    /// Copies `data` to user memory at `va`.
    pub(crate) fn write_user(&mut self, va: u64, data: &[u8]) -> Result<(), Errno> {
        let mut done = 0usize;
        while done < data.len() {
            let at = va.checked_add(done as u64).ok_or(Errno::EFAULT)?;
            let in_page = (PAGE_SIZE - (at % PAGE_SIZE)) as usize;
            let chunk = in_page.min(data.len() - done);
            let gpa = self.user_gpa(at, true)?;
            if !self.vm.physical.ram.write(gpa, &data[done..done + chunk]) {
                return Err(Errno::EFAULT);
            }
            done += chunk;
        }
        Ok(())
    }

    pub(crate) fn read_u64(&mut self, va: u64) -> Result<u64, Errno> {
        let mut bytes = [0u8; 8];
        self.read_user_into(va, &mut bytes)?;
        Ok(u64::from_le_bytes(bytes))
    }

    pub(crate) fn write_u64(&mut self, va: u64, value: u64) -> Result<(), Errno> {
        self.write_user(va, &value.to_le_bytes())
    }

    /// A NUL-terminated string at `va`, at most `max` bytes before the NUL
    /// (ENAMETOOLONG beyond).
    pub(crate) fn read_cstr(&mut self, va: u64, max: usize) -> Result<Vec<u8>, Errno> {
        let mut out = Vec::new();
        let mut at = va;
        loop {
            let in_page = (PAGE_SIZE - (at % PAGE_SIZE)) as usize;
            let mut chunk = vec![0u8; in_page];
            self.read_user_into(at, &mut chunk)?;
            if let Some(nul) = chunk.iter().position(|byte| *byte == 0) {
                out.extend_from_slice(&chunk[..nul]);
                break;
            }
            out.extend_from_slice(&chunk);
            if out.len() > max {
                return Err(Errno::ENAMETOOLONG);
            }
            at = at.checked_add(in_page as u64).ok_or(Errno::EFAULT)?;
        }
        if out.len() > max {
            return Err(Errno::ENAMETOOLONG);
        }
        Ok(out)
    }
}
