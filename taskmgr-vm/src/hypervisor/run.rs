//! A vCPU thread: the loop that enters the guest, serves its exits, and holds it to its
//! domain's CPU rate, until its thread exits or the task ends (exit, fault, stop, deadline).
//!
//! Per entry into the guest: a CPU-time timer on this thread is armed for the budget the
//! domain's bucket holds (at most one slice), so the host kernel kicks the thread out of
//! KVM_RUN when it is spent; the CPU time really used is charged to the bucket and the task's
//! meter at every such interruption, and at the end. System call exits are served in place and
//! go straight back into the guest: they cost no timer or clock calls.
//!
//! A task's threads share its [`Process`] behind a lock, taken only while the VMM serves one
//! of them (a system call, a fault), never while a thread runs guest code or waits (sleeps,
//! futex waits and CPU-budget waits all happen outside it).

use crate::hypervisor::cpu::signal::{self, Timer};
use crate::hypervisor::cpu::{Exit, StartState, Vcpu};
use crate::hypervisor::fastpath;
use crate::hypervisor::vm::layout::{PAGE_SIZE, SYSCALL_EXIT_GPA};
use crate::kernel::control::TaskControl;
use crate::kernel::fault::{self, FaultAction, FaultSignal, signal_name};
use crate::kernel::fork;
use crate::kernel::process::{Process, Waiter};
use crate::kernel::rate::{Admission, CpuGate};
use crate::kernel::sigframe;
use crate::kernel::syscalls::signal::At;
use crate::kernel::syscalls::{self, Errno, Flow};
use crate::kernel::threads::{self, ProcessRuntime};
use crate::kernel::tree::{ProcessShared, SIGKILL, Status};
use crate::kernel::wait::{Blocked, Resume};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use xeno_taskmgr_kit::lock;
use xeno_taskmgr_kit::metering::thread_cpu_ns;

pub(crate) use xeno_taskmgr_kit::Outcome;

/// How one thread's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ThreadEnd {
    /// The thread called `exit` with this status (the process goes on if others remain).
    Exit(i32),
    /// The process as a whole is ending; its outcome is in `Process::ending`.
    Task,
}

/// What holds a task in: its domain's CPU budget, the longest slice, its deadline.
#[derive(Clone)]
pub(crate) struct RunLimits {
    pub(crate) gate: Option<Arc<CpuGate>>,
    /// Longest CPU time between two meter updates (and budget checks).
    pub(crate) slice: Duration,
    /// The wall-clock deadline and the limit in seconds (for the reason).
    pub(crate) deadline: Option<(Instant, u64)>,
}

/// Longest one wait lasts before the thread re-checks its flags (it also wakes on a kick).
const WAIT_STEP: Duration = Duration::from_millis(100);

/// CPU time since the last charge, charged to the task (and the domain's budget).
struct Charger<'a> {
    last_ns: u64,
    meter: &'a xeno_taskmgr_kit::metering::TaskMeter,
    gate: Option<&'a CpuGate>,
    /// The thread's process: its CPU time, and the CPU-time timers that expire in it.
    process: &'a ProcessShared,
}

impl Charger<'_> {
    fn charge(&mut self) {
        let now = thread_cpu_ns();
        let used = now.saturating_sub(self.last_ns);
        self.last_ns = now;
        self.meter.add_cpu_ns(used);
        if let Some(gate) = self.gate {
            gate.charge(used, Instant::now());
        }
        for (signal, code) in self.process.cpu.charge(used) {
            self.process.send(signal, code, 0);
        }
    }
}

enum Step {
    Continue,
    Interrupted,
    /// Sleep until then (outside the lock), then return 0.
    Sleep(Instant),
    /// Wait in a futex until woken or the deadline.
    FutexWait(Option<Instant>, u64),
    /// Wait for a descriptor, then run the call again.
    Block(Blocked),
    /// A `vfork` parent waits for its child (this one) to exec or end, then returns `pid`.
    Vfork(Arc<ProcessShared>, i32),
    ThreadExit(i32),
    End(Outcome, Status),
}

/// Runs thread `tid` of the process on `vcpu` from `start` on the calling thread, until it
/// exits or the process ends.
pub(crate) fn run(
    runtime: &Arc<ProcessRuntime>,
    vcpu: &mut Vcpu,
    tid: i32,
    start: StartState,
    on_enter: &dyn Fn(),
) -> (ThreadEnd, i32) {
    signal::block_in_this_thread();
    let os_tid = signal::this_thread();
    let control = Arc::clone(&runtime.task.record.control);
    let waiters = {
        let process = lock(&runtime.process);
        process
            .threads
            .live
            .get(&tid)
            .map(|info| (Arc::clone(&info.waiter), Arc::clone(&info.io_waiter)))
    };
    let waiters = waiters.unwrap_or_default();
    for waiter in [&waiters.0, &waiters.1] {
        waiter.os_tid.store(os_tid, Ordering::Release);
    }
    control.register(os_tid);
    runtime.shared.register(os_tid);
    let shadow = runtime.task.domain.resources.physical.shadow();
    if let Some(shadow) = shadow {
        shadow.register(os_tid);
    }
    let (end, tid) = run_registered(
        runtime, vcpu, tid, start, &control, os_tid, &waiters, on_enter,
    );
    if let Some(shadow) = shadow {
        shadow.deregister(os_tid);
    }
    runtime.shared.deregister(os_tid);
    control.deregister(os_tid);
    // A kick sent just before the thread was deregistered must not linger for its next use.
    signal::wait(Duration::ZERO);
    (end, tid)
}

/// Records how the process ends (the first decision wins) and tells its other threads.
fn end_process(runtime: &ProcessRuntime, outcome: Outcome, status: Status) -> ThreadEnd {
    lock(&runtime.process).end_with(outcome, status);
    runtime.shared.end();
    ThreadEnd::Task
}

/// The end of a process killed by `signal`.
fn killed(signal: i32, detail: Option<&str>) -> Step {
    let name = signal_name(signal);
    let outcome = Outcome::Failed(match detail {
        Some(detail) => format!("killed by signal {signal} ({name}): {detail}"),
        None => format!("killed by signal {signal} ({name})"),
    });
    Step::End(outcome, Status::Signaled(signal))
}

/// Why a wait ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cut {
    /// The task is stopping, the process ending, or past the wall-clock limit.
    Stop,
    /// A signal this thread takes arrived.
    Signal,
}

/// What a waiting thread watches besides what it waits for.
struct Watch<'a> {
    control: &'a TaskControl,
    limits: &'a RunLimits,
    shared: &'a ProcessShared,
    /// The waiting thread.
    tid: i32,
    /// The thread's signal mask during the wait.
    mask: u64,
}

impl Watch<'_> {
    fn cut(&self) -> Option<Cut> {
        if self.control.is_stopping()
            || self.shared.is_ending()
            || self.shared.must_leave(self.tid)
            || past_deadline(self.limits)
        {
            return Some(Cut::Stop);
        }
        let unblockable = crate::kernel::sigframe::UNBLOCKABLE;
        (self.shared.incoming() & !(self.mask & !unblockable) != 0).then_some(Cut::Signal)
    }
}

#[allow(clippy::too_many_arguments)]
fn run_registered(
    runtime: &Arc<ProcessRuntime>,
    vcpu: &mut Vcpu,
    mut tid: i32,
    start: StartState,
    control: &TaskControl,
    os_tid: i32,
    (waiter, io_waiter): &(Arc<Waiter>, Arc<Waiter>),
    on_enter: &dyn Fn(),
) -> (ThreadEnd, i32) {
    let limits = &runtime.task.limits;
    let shared = &runtime.shared;
    let mut charger = Charger {
        last_ns: thread_cpu_ns(),
        meter: &runtime.task.record.meter,
        gate: limits.gate.as_deref(),
        process: shared,
    };
    let timers = Timer::new(libc::CLOCK_THREAD_CPUTIME_ID, os_tid).and_then(|cpu| {
        let wall = match limits.deadline {
            Some((at, _)) => {
                let wall = Timer::new(libc::CLOCK_MONOTONIC, os_tid)?;
                wall.arm(
                    at.saturating_duration_since(Instant::now())
                        .max(Duration::from_nanos(1)),
                );
                Some(wall)
            }
            None => None,
        };
        Ok((cpu, wall))
    });
    let (cpu_timer, _wall_timer) = match timers {
        Ok(timers) => timers,
        Err(error) => {
            let end = end_process(
                runtime,
                Outcome::Failed(format!(
                    "internal error: cannot create the task's timers: {error}"
                )),
                Status::Signaled(SIGKILL as i32),
            );
            return (end, tid);
        }
    };
    if let Err(error) = vcpu.start(start) {
        let end = end_process(
            runtime,
            Outcome::Failed(format!("internal error: cannot start the vCPU: {error}")),
            Status::Signaled(SIGKILL as i32),
        );
        return (end, tid);
    }
    on_enter();
    let end = loop {
        if shared.is_ending() || shared.must_leave(tid) {
            // The process ends, or another thread of it execs (which ends this one).
            break ThreadEnd::Task;
        }
        if let Some(outcome) = admit(limits, control, &cpu_timer, shared) {
            break end_process(runtime, outcome, Status::Signaled(SIGKILL as i32));
        }
        let mut next = None;
        let ended = loop {
            let current = match next.take() {
                Some(resumed) => resumed,
                None => step(runtime, vcpu, tid),
            };
            // An exec from a thread other than the leader gave it the leader's id.
            tid = shared.renamed(tid);
            let watch = |mask| Watch {
                control,
                limits,
                shared,
                tid,
                mask,
            };
            match current {
                Step::Continue => {}
                Step::Interrupted => {
                    if shared.incoming() != 0 {
                        next = Some(take_signals(runtime, vcpu, tid, At::Anywhere));
                        continue;
                    }
                    break None;
                }
                Step::Sleep(until) => {
                    let mask = wait_mask(runtime, tid);
                    let cut = sleep_until(&watch(mask), until);
                    vcpu.regs_mut().rax = match cut {
                        None => 0,
                        Some(_) => (-i64::from(Errno::EINTR.0)) as u64,
                    };
                    next = after_wait(runtime, vcpu, tid, cut);
                    if next.is_none() {
                        break None;
                    }
                }
                Step::FutexWait(until, address) => {
                    let mask = wait_mask(runtime, tid);
                    let cut = futex_wait(runtime, vcpu, tid, &watch(mask), waiter, until, address);
                    next = after_wait(runtime, vcpu, tid, cut);
                    if next.is_none() {
                        break None;
                    }
                }
                Step::Block(blocked) => {
                    let mask = wait_mask(runtime, tid);
                    match block_wait(&watch(mask), io_waiter, blocked) {
                        Ok(timed_out) => {
                            next = Some(resume(runtime, vcpu, tid, blocked, timed_out));
                        }
                        Err(Cut::Signal) if waits_for_signals(runtime, tid) => {
                            // rt_sigtimedwait: the call itself takes the signal.
                            next = Some(resume(runtime, vcpu, tid, blocked, false));
                        }
                        Err(cut) => {
                            let mut process = lock(&runtime.process);
                            process.enter(tid);
                            interrupt_call(&mut process, vcpu, blocked.progress, cut);
                            drop(process);
                            next = after_wait(runtime, vcpu, tid, Some(cut));
                            if next.is_none() {
                                break None;
                            }
                        }
                    }
                }
                Step::Vfork(child, pid) => {
                    let mask = wait_mask(runtime, tid);
                    let watch = watch(mask);
                    loop {
                        io_waiter.woken.store(false, Ordering::Release);
                        if child.vfork_released(io_waiter) || watch.cut() == Some(Cut::Stop) {
                            break;
                        }
                        signal::wait(WAIT_STEP);
                    }
                    crate::kernel::fork::take_back_mm(&mut lock(&runtime.process));
                    vcpu.regs_mut().rax = pid as u64;
                    break None;
                }
                Step::ThreadExit(status) => break Some(ThreadEnd::Exit(status)),
                Step::End(outcome, status) => break Some(end_process(runtime, outcome, status)),
            }
        };
        signal::wait(Duration::ZERO);
        charger.charge();
        if let Some(end) = ended {
            break end;
        }
    };
    charger.charge();
    (end, tid)
}

/// The current thread's signal mask, and any signal already pending for it, before a wait:
/// a pending deliverable signal cuts the wait at once (its bit is reported as sent).
fn wait_mask(runtime: &ProcessRuntime, tid: i32) -> u64 {
    let mut process = lock(&runtime.process);
    process.enter(tid);
    // An `rt_sigtimedwait` is ended by the signals it waits for, blocked or not.
    let mask = process.signals.mask & !process.signals.waiting_for;
    let deliverable = process.signals.pending & !mask;
    if deliverable != 0 {
        // Hand it back through the incoming set so that the wait sees it and ends.
        let signal = u64::from(deliverable.trailing_zeros() + 1);
        let (code, sender) = (
            process.signals.codes[signal as usize],
            process.signals.senders[signal as usize],
        );
        process.signals.pending &= !(1 << (signal - 1));
        drop(process);
        runtime.shared.send(signal, code, sender);
    }
    mask
}

/// After a wait that a signal cut short, takes the signal (the call's result is set). A wait
/// that was not cut, or a stop, needs nothing more.
fn after_wait(
    runtime: &Arc<ProcessRuntime>,
    vcpu: &mut Vcpu,
    tid: i32,
    cut: Option<Cut>,
) -> Option<Step> {
    // The vCPU is at the return of the call that waited.
    (cut == Some(Cut::Signal)).then(|| take_signals(runtime, vcpu, tid, At::Syscall))
}

/// Takes in signals other processes sent and runs the first deliverable one's action.
fn take_signals(runtime: &Arc<ProcessRuntime>, vcpu: &mut Vcpu, tid: i32, at: At) -> Step {
    let mut process = lock(&runtime.process);
    process.enter(tid);
    let step = match syscalls::signal::deliver_pending(&mut process, vcpu, at) {
        None => Step::Continue,
        Some(signal) => killed(signal, None),
    };
    if let Some(mask) = process.signals.restore_mask.take() {
        // rt_sigsuspend ended without running a handler: its own mask goes back.
        process.signals.mask = mask;
    }
    step
}

/// A blocked call a signal (or a stop) cut short: it returns what it had done, restarts
/// (the signal's handler asked for SA_RESTART and the call is one Linux restarts), or
/// fails with EINTR.
/// Whether the thread's blocked call is an `rt_sigtimedwait`, which takes its signals itself.
fn waits_for_signals(runtime: &ProcessRuntime, tid: i32) -> bool {
    let mut process = lock(&runtime.process);
    process.enter(tid);
    process.signals.waiting_for != 0
}

fn interrupt_call(process: &mut Process, vcpu: &mut Vcpu, progress: u64, cut: Cut) {
    if progress > 0 {
        vcpu.regs_mut().rax = progress;
        return;
    }
    let number = vcpu.regs().rax;
    if cut == Cut::Signal && syscalls::signal::restarts(process, number) {
        // Back to the `syscall` instruction (two bytes) with the call's number: after the
        // handler returns, the call is made again.
        let regs = vcpu.regs_mut();
        regs.rcx = regs.rcx.wrapping_sub(2);
        return;
    }
    vcpu.regs_mut().rax = (-i64::from(Errno::EINTR.0)) as u64;
}

/// Waits until the task may enter the guest and arms the CPU timer; or says why it ends.
fn admit(
    limits: &RunLimits,
    control: &TaskControl,
    cpu_timer: &Timer,
    process: &ProcessShared,
) -> Option<Outcome> {
    loop {
        if control.is_stopping() {
            return Some(Outcome::Stopped(control.reason()));
        }
        if let Some((at, seconds)) = limits.deadline
            && Instant::now() >= at
        {
            return Some(Outcome::Failed(format!(
                "wall-clock limit of {seconds} s reached"
            )));
        }
        let budget = match &limits.gate {
            None => limits.slice,
            Some(gate) => match gate.admit(Instant::now(), limits.slice) {
                Admission::Run(budget) => budget,
                Admission::Wait(wait) => {
                    signal::wait(wait);
                    continue;
                }
            },
        };
        // Out of the guest in time for a CPU-time timer of the process (each of its threads
        // is kicked when it alone has used what is left: the process's time is charged
        // from all of them, so the timer is late by at most what the others used).
        let budget = process.cpu.left().map_or(budget, |left| budget.min(left));
        cpu_timer.arm(budget.max(Duration::from_micros(1)));
        return None;
    }
}

/// Whether the task's wall-clock limit has passed: a blocked thread stops waiting then, and
/// [`admit`] ends the task.
fn past_deadline(limits: &RunLimits) -> bool {
    limits.deadline.is_some_and(|(at, _)| Instant::now() >= at)
}

fn sleep_until(watch: &Watch<'_>, until: Instant) -> Option<Cut> {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        if let Some(cut) = watch.cut() {
            return Some(cut);
        }
        signal::wait(left.min(WAIT_STEP));
    }
}

fn futex_wait(
    runtime: &ProcessRuntime,
    vcpu: &mut Vcpu,
    tid: i32,
    watch: &Watch<'_>,
    waiter: &Waiter,
    until: Option<Instant>,
    address: u64,
) -> Option<Cut> {
    loop {
        if waiter.woken.load(Ordering::Acquire) {
            vcpu.regs_mut().rax = 0;
            return None;
        }
        let timed_out = until.is_some_and(|until| Instant::now() >= until);
        let cut = watch.cut();
        if timed_out || cut.is_some() {
            let mut process = lock(&runtime.process);
            process.enter(tid);
            threads::futex_forget(&mut process, address, waiter);
            let result = if waiter.woken.load(Ordering::Acquire) {
                0
            } else if timed_out {
                (-i64::from(Errno::ETIMEDOUT.0)) as u64
            } else {
                (-i64::from(Errno::EINTR.0)) as u64
            };
            vcpu.regs_mut().rax = result;
            return if result == 0 || timed_out { None } else { cut };
        }
        let left = until.map_or(WAIT_STEP, |until| {
            until
                .saturating_duration_since(Instant::now())
                .min(WAIT_STEP)
        });
        signal::wait(left);
    }
}

/// Sleeps until the thread's I/O waiter is woken or `blocked`'s deadline passes: whether it
/// timed out, or why the wait was cut short.
fn block_wait(watch: &Watch<'_>, waiter: &Waiter, blocked: Blocked) -> Result<bool, Cut> {
    loop {
        if let Some(cut) = watch.cut() {
            return Err(cut);
        }
        if waiter.woken.load(Ordering::Acquire) {
            return Ok(false);
        }
        let now = Instant::now();
        if blocked.until.is_some_and(|until| now >= until) {
            return Ok(true);
        }
        let left = blocked.until.map_or(WAIT_STEP, |until| {
            until.saturating_duration_since(now).min(WAIT_STEP)
        });
        signal::wait(left);
    }
}

/// Runs a call that waited again, telling it its deadline and what it had done.
fn resume(
    runtime: &Arc<ProcessRuntime>,
    vcpu: &mut Vcpu,
    tid: i32,
    blocked: Blocked,
    timed_out: bool,
) -> Step {
    let mut process = lock(&runtime.process);
    process.enter(tid);
    process.resume = Some(Resume {
        until: blocked.until,
        timed_out,
        progress: blocked.progress,
    });
    let step = syscall(runtime, &mut process, vcpu);
    process.resume = None;
    step
}

/// One entry into the guest and the handling of its exit.
fn step(runtime: &Arc<ProcessRuntime>, vcpu: &mut Vcpu, tid: i32) -> Step {
    let exit = {
        // A flush of KVM's shadow page tables waits for no vCPU to be inside KVM_RUN.
        let _inside = runtime
            .task
            .domain
            .resources
            .physical
            .shadow()
            .map(|s| s.enter());
        vcpu.run()
    };
    match exit {
        Exit::MmioWrite { gpa } if gpa & !(PAGE_SIZE - 1) == SYSCALL_EXIT_GPA => {
            let mut process = lock(&runtime.process);
            process.enter(tid);
            syscall(runtime, &mut process, vcpu)
        }
        Exit::Interrupted => Step::Interrupted,
        Exit::Hlt => {
            let mut process = lock(&runtime.process);
            process.enter(tid);
            match fault::handle(&mut process, vcpu) {
                FaultAction::Resume => Step::Continue,
                FaultAction::RedoSyscall => {
                    fastpath::abandon_copy(&mut process, vcpu);
                    syscall(runtime, &mut process, vcpu)
                }
                FaultAction::Signal(fault) => fault_signal(&mut process, vcpu, fault),
                FaultAction::Broken(reason) => {
                    Step::End(Outcome::Failed(reason), Status::Signaled(SIGKILL as i32))
                }
            }
        }
        Exit::Shutdown => Step::End(
            Outcome::Failed("triple fault: the domain shut down".to_owned()),
            Status::Signaled(SIGKILL as i32),
        ),
        Exit::PortIo { port } => killed(11, Some(&format!("port I/O to {port:#x}"))),
        Exit::MmioWrite { gpa } | Exit::MmioRead { gpa } => killed(
            7,
            Some(&format!(
                "access to guest-physical {gpa:#x}, which has no memory"
            )),
        ),
        Exit::Other(what) => Step::End(
            Outcome::Failed(format!("vCPU stopped: {what}")),
            Status::Signaled(SIGKILL as i32),
        ),
        Exit::Failed(libc::EFAULT) => {
            let mut process = lock(&runtime.process);
            process.enter(tid);
            if fastpath::abandon_faulted_copy(&mut process, vcpu) {
                syscall(runtime, &mut process, vcpu)
            } else {
                killed(7, Some("access to a file mapping past the file's end"))
            }
        }
        Exit::Failed(errno) => Step::End(
            Outcome::Failed(format!("vCPU stopped: KVM_RUN failed with errno {errno}")),
            Status::Signaled(SIGKILL as i32),
        ),
    }
}

/// Runs the process's handler for a fault's signal, or ends the process with it.
fn fault_signal(process: &mut Process, vcpu: &mut Vcpu, fault: FaultSignal) -> Step {
    if sigframe::handled(process, fault.signal) {
        let info = sigframe::SigInfo {
            signo: fault.signal,
            code: fault.code,
            value: fault.address,
        };
        let frame = sigframe::FaultFrame {
            vector: fault.vector,
            error: fault.error,
            rip: fault.rip,
            rflags: fault.rflags,
            rsp: fault.rsp,
        };
        if sigframe::deliver_at_fault(process, vcpu, info, &frame) {
            return Step::Continue;
        }
    }
    killed(fault.signal, Some(&fault.detail))
}

fn syscall(runtime: &Arc<ProcessRuntime>, process: &mut Process, vcpu: &mut Vcpu) -> Step {
    let mut at = At::Syscall;
    let step = match syscalls::dispatch(process, vcpu) {
        Flow::Return(value) => {
            vcpu.regs_mut().rax = value;
            Step::Continue
        }
        Flow::Restored => {
            // rt_sigreturn and execve set every register: the vCPU is at user code.
            at = At::Anywhere;
            Step::Continue
        }
        Flow::Exit(status) => Step::End(
            Outcome::Exited(status & 0xff),
            Status::Exited(status & 0xff),
        ),
        Flow::ExitThread(status) => Step::ThreadExit(status & 0xff),
        Flow::Signaled(signal) => killed(signal, None),
        Flow::Sleep(until) => Step::Sleep(until),
        Flow::FutexWait(until, address) => Step::FutexWait(until, address),
        Flow::Block(blocked) => Step::Block(blocked),
        Flow::Clone(args) if args.flags & threads::CLONE_THREAD != 0 => {
            let result = threads::clone(runtime, process, vcpu, args);
            vcpu.regs_mut().rax = match result {
                Ok(tid) => tid,
                Err(Errno(code)) => (-i64::from(code)) as u64,
            };
            Step::Continue
        }
        Flow::Clone(args) => match fork::fork(runtime, process, vcpu, args) {
            Ok(fork::Forked {
                pid,
                vfork: Some(child),
            }) => Step::Vfork(child, pid),
            Ok(fork::Forked { pid, vfork: None }) => {
                vcpu.regs_mut().rax = pid as u64;
                Step::Continue
            }
            Err(Errno(code)) => {
                vcpu.regs_mut().rax = (-i64::from(code)) as u64;
                Step::Continue
            }
        },
    };
    if !matches!(step, Step::Continue) || process.signals.pending == 0 {
        return step;
    }
    match syscalls::signal::deliver_pending(process, vcpu, at) {
        None => Step::Continue,
        Some(signal) => killed(signal, None),
    }
}
