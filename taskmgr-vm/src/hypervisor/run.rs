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
use crate::kernel::process::{Process, Waiter};
use crate::kernel::rate::{Admission, CpuGate};
use crate::kernel::sigframe;
use crate::kernel::syscalls::{self, Errno, Flow};
use crate::kernel::threads::{self, TaskRuntime};
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
    /// The thread called `exit` with this status (the task goes on if others remain).
    Exit(i32),
    /// The task as a whole is ending; its outcome is in `Process::ending`.
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
    ThreadExit(i32),
    End(Outcome),
}

/// Runs thread `tid` of the task on `vcpu` from `start` on the calling thread, until it
/// exits or the task ends.
pub(crate) fn run(
    runtime: &Arc<TaskRuntime>,
    vcpu: &mut Vcpu,
    tid: i32,
    start: StartState,
    on_enter: &dyn Fn(),
) -> ThreadEnd {
    signal::block_in_this_thread();
    let os_tid = signal::this_thread();
    let control = Arc::clone(&runtime.task.control);
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
    let end = run_registered(
        runtime, vcpu, tid, start, &control, os_tid, &waiters, on_enter,
    );
    control.deregister(os_tid);
    // A kick sent just before the thread was deregistered must not linger for its next use.
    signal::wait(Duration::ZERO);
    end
}

/// Records how the task ends (the first decision wins) and tells its other threads.
fn end_task(runtime: &TaskRuntime, outcome: Outcome) -> ThreadEnd {
    {
        let mut process = lock(&runtime.process);
        if process.ending.is_none() {
            process.ending = Some(outcome);
        }
    }
    runtime.task.control.end_group();
    ThreadEnd::Task
}

#[allow(clippy::too_many_arguments)]
fn run_registered(
    runtime: &Arc<TaskRuntime>,
    vcpu: &mut Vcpu,
    tid: i32,
    start: StartState,
    control: &TaskControl,
    os_tid: i32,
    (waiter, io_waiter): &(Arc<Waiter>, Arc<Waiter>),
    on_enter: &dyn Fn(),
) -> ThreadEnd {
    let limits = &runtime.limits;
    let mut charger = Charger {
        last_ns: thread_cpu_ns(),
        meter: &runtime.task.meter,
        gate: limits.gate.as_deref(),
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
            return end_task(
                runtime,
                Outcome::Failed(format!(
                    "internal error: cannot create the task's timers: {error}"
                )),
            );
        }
    };
    if let Err(error) = vcpu.start(start) {
        return end_task(
            runtime,
            Outcome::Failed(format!("internal error: cannot start the vCPU: {error}")),
        );
    }
    on_enter();
    let end = loop {
        if control.is_ending() {
            break ThreadEnd::Task;
        }
        if let Some(outcome) = admit(limits, control, &cpu_timer) {
            break end_task(runtime, outcome);
        }
        let mut next = None;
        let ended = loop {
            let current = match next.take() {
                Some(resumed) => resumed,
                None => step(runtime, vcpu, tid),
            };
            match current {
                Step::Continue => {}
                Step::Interrupted => break None,
                Step::Sleep(until) => {
                    sleep_until(control, limits, until);
                    vcpu.regs_mut().rax = 0;
                    break None;
                }
                Step::FutexWait(until, address) => {
                    futex_wait(runtime, vcpu, tid, control, waiter, until, address);
                    break None;
                }
                Step::Block(blocked) => match block_wait(control, limits, io_waiter, blocked) {
                    Some(timed_out) => next = Some(resume(runtime, vcpu, tid, blocked, timed_out)),
                    None => {
                        // The task is ending: the call ends with what it did, or EINTR.
                        vcpu.regs_mut().rax = if blocked.progress > 0 {
                            blocked.progress
                        } else {
                            (-i64::from(Errno::EINTR.0)) as u64
                        };
                        break None;
                    }
                },
                Step::ThreadExit(status) => break Some(ThreadEnd::Exit(status)),
                Step::End(outcome) => break Some(end_task(runtime, outcome)),
            }
        };
        signal::wait(Duration::ZERO);
        charger.charge();
        if let Some(end) = ended {
            break end;
        }
    };
    charger.charge();
    end
}

/// Waits until the task may enter the guest and arms the CPU timer; or says why it ends.
fn admit(limits: &RunLimits, control: &TaskControl, cpu_timer: &Timer) -> Option<Outcome> {
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
        cpu_timer.arm(budget.max(Duration::from_micros(1)));
        return None;
    }
}

/// Whether the task's wall-clock limit has passed: a blocked thread stops waiting then, and
/// [`admit`] ends the task.
fn past_deadline(limits: &RunLimits) -> bool {
    limits.deadline.is_some_and(|(at, _)| Instant::now() >= at)
}

/// Whether a waiting thread must stop waiting: the task is stopping or ending, or its
/// wall-clock limit has passed.
fn must_stop_waiting(control: &TaskControl, limits: &RunLimits) -> bool {
    control.is_stopping() || control.is_ending() || past_deadline(limits)
}

fn sleep_until(control: &TaskControl, limits: &RunLimits, until: Instant) {
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() || must_stop_waiting(control, limits) {
            return;
        }
        signal::wait(left.min(WAIT_STEP));
    }
}

fn futex_wait(
    runtime: &TaskRuntime,
    vcpu: &mut Vcpu,
    tid: i32,
    control: &TaskControl,
    waiter: &Waiter,
    until: Option<Instant>,
    address: u64,
) {
    loop {
        if waiter.woken.load(Ordering::Acquire) {
            vcpu.regs_mut().rax = 0;
            return;
        }
        let timed_out = until.is_some_and(|until| Instant::now() >= until);
        if timed_out || must_stop_waiting(control, &runtime.limits) {
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
            return;
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
/// timed out, or `None` when the task must stop instead.
fn block_wait(
    control: &TaskControl,
    limits: &RunLimits,
    waiter: &Waiter,
    blocked: Blocked,
) -> Option<bool> {
    loop {
        if must_stop_waiting(control, limits) {
            return None;
        }
        if waiter.woken.load(Ordering::Acquire) {
            return Some(false);
        }
        let now = Instant::now();
        if blocked.until.is_some_and(|until| now >= until) {
            return Some(true);
        }
        let left = blocked.until.map_or(WAIT_STEP, |until| {
            until.saturating_duration_since(now).min(WAIT_STEP)
        });
        signal::wait(left);
    }
}

/// Runs a call that waited again, telling it its deadline and what it had done.
fn resume(
    runtime: &Arc<TaskRuntime>,
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
fn step(runtime: &Arc<TaskRuntime>, vcpu: &mut Vcpu, tid: i32) -> Step {
    match vcpu.run() {
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
                FaultAction::Broken(reason) => Step::End(Outcome::Failed(reason)),
            }
        }
        Exit::Shutdown => Step::End(Outcome::Failed(
            "triple fault: the domain shut down".to_owned(),
        )),
        Exit::PortIo { port } => Step::End(Outcome::Failed(format!("port I/O to {port:#x}"))),
        Exit::MmioWrite { gpa } | Exit::MmioRead { gpa } => Step::End(Outcome::Failed(format!(
            "killed by signal 7 (SIGBUS): access to guest-physical {gpa:#x}, which has no memory"
        ))),
        Exit::Other(what) => Step::End(Outcome::Failed(format!("vCPU stopped: {what}"))),
        Exit::Failed(libc::EFAULT) => {
            let mut process = lock(&runtime.process);
            process.enter(tid);
            if fastpath::abandon_faulted_copy(&mut process, vcpu) {
                syscall(runtime, &mut process, vcpu)
            } else {
                Step::End(Outcome::Failed(
                    "killed by signal 7 (SIGBUS): access to a file mapping past the file's end"
                        .to_owned(),
                ))
            }
        }
        Exit::Failed(errno) => Step::End(Outcome::Failed(format!(
            "vCPU stopped: KVM_RUN failed with errno {errno}"
        ))),
    }
}

/// Runs the task's handler for a fault's signal, or ends the task with it.
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
    Step::End(Outcome::Failed(format!(
        "killed by signal {} ({}): {}",
        fault.signal,
        signal_name(fault.signal),
        fault.detail
    )))
}

fn syscall(runtime: &Arc<TaskRuntime>, process: &mut Process, vcpu: &mut Vcpu) -> Step {
    let step = match syscalls::dispatch(process, vcpu) {
        Flow::Return(value) => {
            vcpu.regs_mut().rax = value;
            Step::Continue
        }
        Flow::Restored => Step::Continue,
        Flow::Exit(status) => Step::End(Outcome::Exited(status & 0xff)),
        Flow::ExitThread(status) => Step::ThreadExit(status & 0xff),
        Flow::Signaled(signal) => Step::End(Outcome::Failed(format!(
            "killed by signal {signal} ({})",
            signal_name(signal)
        ))),
        Flow::Sleep(until) => Step::Sleep(until),
        Flow::FutexWait(until, address) => Step::FutexWait(until, address),
        Flow::Block(blocked) => Step::Block(blocked),
        Flow::Clone(args) => {
            let result = threads::clone(runtime, process, vcpu, args);
            vcpu.regs_mut().rax = match result {
                Ok(tid) => tid,
                Err(Errno(code)) => (-i64::from(code)) as u64,
            };
            Step::Continue
        }
    };
    if !matches!(step, Step::Continue) || process.signals.pending == 0 {
        return step;
    }
    match syscalls::signal::deliver_pending(process, vcpu) {
        None => Step::Continue,
        Some(signal) => Step::End(Outcome::Failed(format!(
            "killed by signal {signal} ({})",
            signal_name(signal)
        ))),
    }
}
