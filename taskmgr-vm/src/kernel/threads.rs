//! Threads: `clone` of a thread (the flags `pthread_create` uses) into a new vCPU of the
//! domain, running in the same address space, and `futex` to let them wait for each other.
//!
//! Each thread has its own vCPU, its own vCPU thread on the host, and its own kernel pages
//! (GDT, TSS and ring-0 stack, at a slot of its own in the shared page tables). They share the
//! task's [`Process`] (memory, files, signal dispositions) behind one lock, held only while
//! the VMM serves one of them. The task ends when its last thread exits, or at once for all of
//! them on `exit_group`, a fatal signal or fault, a stop, or its deadline.
//!
//! Limits: at most [`THREADS_MAX`] threads per task. With more than one thread the read fast
//! path is off (its save area is one per address space). Signal masks are per thread;
//! dispositions and pending signals are the process's. An `execve` from any thread ends the
//! others first (`kernel/exec.rs`); processes are `kernel/fork.rs`'s.

use crate::Domain;
use crate::Task;
use crate::hypervisor::cpu::{StartState, Vcpu};
use crate::hypervisor::fastpath;
use crate::hypervisor::run::{self, Outcome, RunLimits, ThreadEnd};
use crate::kernel::process::{Process, ThreadInfo, Waiter};
use crate::kernel::syscalls::{Errno, SysResult};
use crate::kernel::tree::{ProcessShared, Status};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use xeno_taskmgr_kit::TaskSlot;
use xeno_taskmgr_kit::lock;

/// Most threads one task may have at once: each is a vCPU and a host thread.
pub(crate) const THREADS_MAX: usize = 64;
/// Most futex waiters moved or woken by one call (a bound on the work one call does).
const FUTEX_BATCH_MAX: u64 = 1024;

pub(crate) const CLONE_VM: u64 = 0x100;
const CLONE_SIGHAND: u64 = 0x800;
pub(crate) const CLONE_THREAD: u64 = 0x1_0000;
pub(crate) const CLONE_SETTLS: u64 = 0x8_0000;
pub(crate) const CLONE_PARENT_SETTID: u64 = 0x10_0000;
pub(crate) const CLONE_CHILD_CLEARTID: u64 = 0x20_0000;
pub(crate) const CLONE_CHILD_SETTID: u64 = 0x100_0000;
/// RFLAGS bits a thread may start with (never IOPL).
const USER_RFLAGS_MASK: u64 = 0x25_4dd5;
/// Stack of a vCPU thread: the VMM's own frames while it emulates calls.
pub(crate) const VCPU_THREAD_STACK_BYTES: usize = 1 << 20;

/// What every process of a task shares: its domain and task records, its limits, its
/// process tree.
pub(crate) struct TaskRuntime {
    pub(crate) domain: Arc<Domain>,
    pub(crate) record: Arc<Task>,
    pub(crate) limits: RunLimits,
    /// The task's place among the manager's running tasks, held until its last process ends.
    pub(crate) _slot: TaskSlot,
}

/// What a process's threads share: the process behind its lock, and its task.
pub(crate) struct ProcessRuntime {
    pub(crate) task: Arc<TaskRuntime>,
    pub(crate) process: Mutex<Process>,
    pub(crate) shared: Arc<ProcessShared>,
}

/// `clone`'s arguments: flags, stack, parent tid pointer, child tid pointer, TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CloneArgs {
    pub(crate) flags: u64,
    pub(crate) stack: u64,
    pub(crate) parent_tid: u64,
    pub(crate) child_tid: u64,
    pub(crate) tls: u64,
}

/// `clone` of a thread: a new vCPU thread starting at the caller's return address.
pub(crate) fn clone(
    runtime: &Arc<ProcessRuntime>,
    process: &mut Process,
    vcpu: &Vcpu,
    args: CloneArgs,
) -> SysResult {
    let thread = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND;
    if args.flags & thread != thread || process.threads.live.len() >= THREADS_MAX {
        return Err(Errno::EAGAIN);
    }
    if !process.shares_address_space() {
        // The fast path's save area is one per address space: off from now on.
        let files: Vec<_> = (0..crate::kernel::fds::FDS_MAX as u64)
            .filter_map(|fd| process.fds.file(fd).ok())
            .collect();
        for file in files {
            fastpath::unwindow_all(process, &file);
        }
    }
    let used: Vec<u64> = process
        .threads
        .live
        .values()
        .map(|info| info.slot_index)
        .collect();
    let index = (1..THREADS_MAX as u64)
        .find(|index| !used.contains(index))
        .ok_or(Errno::EAGAIN)?;
    let vm = Arc::clone(&process.vm);
    let slot = process
        .mm
        .map_kernel_slot(&vm.physical, index)
        .map_err(|_| Errno::EAGAIN)?;
    let child_vcpu = match vm.take_vcpu() {
        Ok(child) => child,
        Err(error) => {
            tracing::warn!("cannot create a vCPU for a thread: {error}");
            process.mm.unmap_kernel_slot(&vm.physical, slot);
            return Err(Errno::EAGAIN);
        }
    };
    let fs_base = if args.flags & CLONE_SETTLS != 0 {
        args.tls
    } else {
        vcpu.sregs().map(|sregs| sregs.fs.base).unwrap_or(0)
    };
    let Some(tid) = process.tree.new_thread(process.pid) else {
        process.mm.unmap_kernel_slot(&vm.physical, slot);
        vm.give_back(child_vcpu);
        return Err(Errno::EAGAIN);
    };
    let written = (args.flags & CLONE_PARENT_SETTID == 0
        || process
            .write_user(args.parent_tid, &tid.to_le_bytes())
            .is_ok())
        && (args.flags & CLONE_CHILD_SETTID == 0
            || process
                .write_user(args.child_tid, &tid.to_le_bytes())
                .is_ok());
    if !written {
        process.tree.thread_ended(tid);
        process.mm.unmap_kernel_slot(&vm.physical, slot);
        vm.give_back(child_vcpu);
        return Err(Errno::EFAULT);
    }
    let regs = child_regs(vcpu, args.stack);
    let start = StartState {
        cr3: process.mm.cr3(),
        regs,
        gdt_va: slot.gdt_va,
        fs_base,
        fpu: None,
    };
    // A new thread starts with its creator's mask.
    let mut info = ThreadInfo::new(slot, index, process.signals.mask);
    if args.flags & CLONE_CHILD_CLEARTID != 0 {
        info.clear_child_tid = args.child_tid;
    }
    process.threads.live.insert(tid, info);
    let child_runtime = Arc::clone(runtime);
    let spawned = std::thread::Builder::new()
        .name("xeno-vcpu".to_owned())
        .stack_size(VCPU_THREAD_STACK_BYTES)
        .spawn(move || thread_main(child_runtime, child_vcpu, tid, start, &|| {}));
    if let Err(error) = spawned {
        // The vCPU went with the closure; the slot is freed when the thread entry is removed.
        tracing::warn!("cannot start a thread's host thread: {error}");
        process.tree.thread_ended(tid);
        if let Some(info) = process.threads.live.remove(&tid) {
            process.mm.unmap_kernel_slot(&vm.physical, info.slot);
        }
        return Err(Errno::EAGAIN);
    }
    Ok(tid as u64)
}

/// The registers a new thread or process starts with: the caller's as its `clone` returns,
/// with 0 in RAX, on `stack` if one was given.
pub(crate) fn child_regs(vcpu: &Vcpu, stack: u64) -> kvm_bindings::kvm_regs {
    let mut regs = vcpu.regs();
    regs.rax = 0;
    regs.rip = regs.rcx;
    regs.rflags = (regs.r11 & USER_RFLAGS_MASK) | 0x2;
    if stack != 0 {
        regs.rsp = stack;
    }
    regs
}

/// A vCPU thread's whole life: runs thread `tid`, then leaves the process (and, as its
/// last thread, ends it).
pub(crate) fn thread_main(
    runtime: Arc<ProcessRuntime>,
    mut vcpu: Vcpu,
    tid: i32,
    start: StartState,
    on_enter: &dyn Fn(),
) {
    let (end, tid) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run::run(&runtime, &mut vcpu, tid, start, on_enter)
    }))
    .unwrap_or_else(|_| {
        tracing::error!(task = %runtime.task.record.id, "the VMM panicked while running this task");
        let mut process = lock(&runtime.process);
        process.end_with(
            Outcome::Failed(
                "internal error: the task manager failed while running this task".to_owned(),
            ),
            Status::Signaled(9),
        );
        drop(process);
        runtime.shared.end();
        (ThreadEnd::Task, tid)
    });
    leave(&runtime, vcpu, tid, end);
}

/// Thread `tid` leaves its process; the last one out releases the process, leaves its status
/// for its parent, and (as the task's last process) reports the task's end.
fn leave(runtime: &ProcessRuntime, vcpu: Vcpu, tid: i32, end: ThreadEnd) {
    let mut process = lock(&runtime.process);
    process.enter(tid);
    let vm = Arc::clone(&process.vm);
    let info = process.threads.live.remove(&tid);
    process.tree.thread_ended(tid);
    runtime.shared.thread_left();
    if let ThreadEnd::Exit(status) = end {
        if let Some(info) = &info
            && info.clear_child_tid != 0
            && process
                .write_user(info.clear_child_tid, &0u32.to_le_bytes())
                .is_ok()
        {
            futex_wake(&mut process, info.clear_child_tid, 1);
        }
        if process.threads.live.is_empty() {
            process.end_with(Outcome::Exited(status), Status::Exited(status));
        }
    }
    if let Some(info) = info
        && info.slot_index != 0
    {
        process.mm.unmap_kernel_slot(&vm.physical, info.slot);
    }
    vm.give_back(vcpu);
    if !process.threads.live.is_empty() {
        return;
    }
    if let Some(signal) = runtime.shared.killed_by() {
        process.end_with(
            Outcome::Failed(format!(
                "killed by signal {signal} ({})",
                crate::kernel::fault::signal_name(signal)
            )),
            Status::Signaled(signal),
        );
    }
    let outcome = process.ending.take().unwrap_or_else(|| {
        Outcome::Failed("the task's threads ended without an outcome".to_owned())
    });
    let status = process.end_status.unwrap_or(Status::Signaled(9));
    let unknown = std::mem::take(&mut process.unknown);
    process.disarm_timers();
    for fd in process.fds.drain() {
        fastpath::release(&mut process, &fd.file);
    }
    let mm = std::mem::replace(&mut process.mm, crate::kernel::mm::Mm::none());
    crate::kernel::fork::give_up_mm(&mut process, mm);
    process.meter_memory();
    let pid = process.pid;
    let tree = Arc::clone(&process.tree);
    drop(process);
    runtime.shared.release_vfork();
    let (reaped, ended) = tree.process_ended(pid, status, outcome, &unknown);
    vm.processes_ended(reaped + ended.released);
    if let Some((outcome, unknown)) = ended.task {
        let task = &runtime.task;
        if !unknown.is_empty() {
            tracing::info!(domain = %task.domain.id, task = %task.record.id, unknown_syscalls = ?unknown, "unknown system calls returned ENOSYS");
            task.record.note_unknown_calls(unknown);
        }
        task.domain.finish_task(&task.record, outcome);
    }
}

/// FUTEX_WAIT: sleeps (outside the lock) if the word at `address` still holds `expected`.
pub(crate) fn futex_wait_begin(
    process: &mut Process,
    address: u64,
    expected: u32,
) -> Result<(), Errno> {
    if !address.is_multiple_of(4) {
        return Err(Errno::EINVAL);
    }
    let mut word = [0u8; 4];
    process.read_user_into(address, &mut word)?;
    if u32::from_le_bytes(word) != expected {
        return Err(Errno::EAGAIN);
    }
    let Some(waiter) = process
        .threads
        .live
        .get(&process.tid)
        .map(|info| Arc::clone(&info.waiter))
    else {
        return Err(Errno::EINVAL);
    };
    waiter.woken.store(false, Ordering::Release);
    if let Some(gpa) = shared_futex(process, address) {
        process
            .vm
            .physical
            .shared
            .with_futex(gpa, |queue| queue.push_back(waiter));
        return Ok(());
    }
    process
        .futexes
        .entry(address)
        .or_default()
        .push_back(waiter);
    Ok(())
}

/// The key of a futex in shared memory: its guest-physical address, the same in every
/// process that maps the page (`None` for the process's own memory, keyed by address).
fn shared_futex(process: &Process, address: u64) -> Option<u64> {
    process.mm.shared_at(address)?;
    process.mm.translate(&process.vm.physical, address, false)
}

fn wake_one(waiter: &Waiter) {
    waiter.woken.store(true, Ordering::Release);
    let os_tid = waiter.os_tid.load(Ordering::Acquire);
    if os_tid != 0 {
        crate::hypervisor::cpu::signal::kick(os_tid);
    }
}

/// Removes `waiter` from the queue at `address` (its wait timed out or was interrupted).
pub(crate) fn futex_forget(process: &mut Process, address: u64, waiter: &Waiter) {
    if let Some(gpa) = shared_futex(process, address) {
        process.vm.physical.shared.with_futex(gpa, |queue| {
            queue.retain(|queued| !std::ptr::eq(Arc::as_ptr(queued), waiter));
        });
        return;
    }
    if let Some(queue) = process.futexes.get_mut(&address) {
        queue.retain(|queued| !std::ptr::eq(Arc::as_ptr(queued), waiter));
        if queue.is_empty() {
            process.futexes.remove(&address);
        }
    }
}

/// FUTEX_WAKE: wakes up to `count` waiters at `address`; how many were woken.
pub(crate) fn futex_wake(process: &mut Process, address: u64, count: u64) -> u64 {
    if let Some(gpa) = shared_futex(process, address) {
        return process.vm.physical.shared.with_futex(gpa, |queue| {
            let mut woken = 0;
            while woken < count.min(FUTEX_BATCH_MAX) {
                let Some(waiter) = queue.pop_front() else {
                    break;
                };
                wake_one(&waiter);
                woken += 1;
            }
            woken
        });
    }
    let mut woken = 0;
    while woken < count.min(FUTEX_BATCH_MAX) {
        let Some(queue) = process.futexes.get_mut(&address) else {
            break;
        };
        let Some(waiter) = queue.pop_front() else {
            process.futexes.remove(&address);
            break;
        };
        wake_one(&waiter);
        woken += 1;
    }
    if process
        .futexes
        .get(&address)
        .is_some_and(|queue| queue.is_empty())
    {
        process.futexes.remove(&address);
    }
    woken
}

/// FUTEX_REQUEUE: wakes `wake` waiters at `from` and moves up to `moved` others to `to`.
pub(crate) fn futex_requeue(
    process: &mut Process,
    from: u64,
    to: u64,
    wake: u64,
    moved: u64,
) -> u64 {
    let woken = futex_wake(process, from, wake);
    let mut requeued = 0;
    while requeued < moved.min(FUTEX_BATCH_MAX) {
        let Some(waiter) = process
            .futexes
            .get_mut(&from)
            .and_then(|queue| queue.pop_front())
        else {
            break;
        };
        process.futexes.entry(to).or_default().push_back(waiter);
        requeued += 1;
    }
    if process
        .futexes
        .get(&from)
        .is_some_and(|queue| queue.is_empty())
    {
        process.futexes.remove(&from);
    }
    woken + requeued
}

/// The deadline of a futex wait from its timeout argument.
pub(crate) fn futex_deadline(
    process: &mut Process,
    timeout: u64,
    absolute: bool,
) -> Result<Option<Instant>, Errno> {
    if timeout == 0 {
        return Ok(None);
    }
    let raw = process.read_user(timeout, 16)?;
    let seconds = u64::from_le_bytes(raw[..8].try_into().unwrap_or([0; 8]));
    let nanos = u64::from_le_bytes(raw[8..].try_into().unwrap_or([0; 8]));
    if nanos >= 1_000_000_000 || i64::try_from(seconds).is_err() {
        return Err(Errno::EINVAL);
    }
    let asked = std::time::Duration::new(seconds, nanos as u32);
    let now = Instant::now();
    if absolute {
        // Against the domain's monotonic clock, which starts at 1 s when the domain is made.
        let clock = process.boot.elapsed() + std::time::Duration::from_secs(1);
        return Ok(Some(now + asked.saturating_sub(clock)));
    }
    Ok(Some(now + asked))
}
