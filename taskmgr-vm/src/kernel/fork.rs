//! `fork`, `vfork` and `clone` of a process: a child process of the task with an address
//! space of its own, sharing the caller's read-only pages and holding copies of the rest
//! (see [`Mm::fork_copy`](crate::kernel::mm::Mm::fork_copy)),
//! its open files (shared, as on Linux), its signal dispositions and mask, running the
//! calling thread's registers on a vCPU and host thread of its own, returning 0.
//!
//! `vfork` (and `clone` with `CLONE_VM | CLONE_VFORK`) suspends the parent until the child
//! calls `execve` or ends, as Linux does, and the child runs on the parent's memory: the
//! parent's address space is lent to it (a [`Loan`]) and comes back at the child's exec or
//! end, with whatever the child wrote in it. That is how glibc's `posix_spawn` reports an
//! exec that failed: the child stores the error in the parent's memory before `_exit(127)`.
//! The parent's thread holds no address space meanwhile ([`Mm::none`]), which is safe
//! because it is waiting in the VMM and runs no guest code until the loan is back.
//!
//! Two cases still give the child a copy, which behaves the same for a child that only
//! execs or exits but does not show its writes to the parent: a parent with other threads
//! (they go on running on the memory a loan would take from them), and `CLONE_VM` without
//! `CLONE_VFORK` (the parent would run beside the child on one address space as a second
//! process, which the VMM's per-process records do not allow).

use crate::hypervisor::cpu::StartState;
use crate::hypervisor::cpu::Vcpu;
use crate::hypervisor::fastpath;
use crate::hypervisor::vm::layout::KernelSlot;
use crate::kernel::mm::Mm;
use crate::kernel::process::{Process, ThreadInfo, Threads};
use crate::kernel::syscalls::Errno;
use crate::kernel::threads::{
    self, CLONE_CHILD_CLEARTID, CLONE_CHILD_SETTID, CLONE_PARENT_SETTID, CLONE_SETTLS, CloneArgs,
    ProcessRuntime,
};
use crate::kernel::tree::ProcessShared;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use xeno_taskmgr_kit::lock;

const CLONE_VFORK: u64 = 0x4000;
/// `clone` flags a new process may have: the exit signal (low byte), `CLONE_VM` (the
/// parent's memory with `CLONE_VFORK`, else a copy: see above), `CLONE_FS` (a copy too: the child's `chdir` is its own), `CLONE_VFORK`, TLS and
/// the tid words. Anything else (shared descriptor tables, namespaces, ...) is EINVAL.
const PROCESS_FLAGS: u64 = 0xff
    | threads::CLONE_VM
    | 0x200 // CLONE_FS
    | CLONE_VFORK
    | CLONE_SETTLS
    | CLONE_PARENT_SETTID
    | CLONE_CHILD_CLEARTID
    | CLONE_CHILD_SETTID;

/// A `vfork` parent's address space, out with its child.
#[derive(Debug, Default)]
pub(crate) struct Loan {
    state: Mutex<LoanState>,
}

#[derive(Debug, Default)]
enum LoanState {
    /// The child runs on it.
    #[default]
    Out,
    /// The child exec'd or ended: the parent takes it back.
    Back(Mm),
    /// The parent ended first: the child frees it when it is done with it.
    Abandoned,
}

/// A process's side of a [`Loan`].
#[derive(Debug)]
pub(crate) enum MmLoan {
    /// Its address space is its `vfork` child's until the child execs or ends.
    Lent(Arc<Loan>),
    /// It runs on its `vfork` parent's address space.
    Borrowed(Arc<Loan>),
}

/// Gives up `mm`, the address space `process` no longer runs on (at its exec or its end):
/// one borrowed from a `vfork` parent goes back to it, any other is freed.
pub(crate) fn give_up_mm(process: &mut Process, mut mm: Mm) {
    let physical = &process.vm.physical;
    match process.loan.take() {
        Some(MmLoan::Borrowed(loan)) => {
            let mut state = lock(&loan.state);
            if matches!(*state, LoanState::Out) {
                *state = LoanState::Back(mm);
                return;
            }
            drop(state);
            mm.release(physical);
        }
        Some(MmLoan::Lent(loan)) => {
            // The parent ends with its memory still out: whoever holds it last frees it.
            let back = std::mem::replace(&mut *lock(&loan.state), LoanState::Abandoned);
            if let LoanState::Back(back) = back {
                back.destroy(physical);
            }
            mm.release(physical);
        }
        None => mm.release(physical),
    }
}

/// A `vfork` parent goes on: its address space comes back from the child, if the child has
/// exec'd or ended (a parent stopped while waiting may find it still out; it ends then).
pub(crate) fn take_back_mm(process: &mut Process) {
    let Some(MmLoan::Lent(loan)) = &process.loan else {
        return;
    };
    let mut state = lock(&loan.state);
    let mm = match std::mem::take(&mut *state) {
        LoanState::Back(mm) => mm,
        other => {
            *state = other;
            return;
        }
    };
    drop(state);
    process.mm = mm;
    process.loan = None;
    process.meter_memory();
}

/// Undoes a loan made for a child that could not be started: `mm` goes back to `process`.
fn unlend(process: &mut Process, mm: Mm) {
    process.mm = mm;
    process.loan = None;
}

/// A child made: its pid, and (for `vfork`) the child to wait for.
#[derive(Debug)]
pub(crate) struct Forked {
    pub(crate) pid: i32,
    pub(crate) vfork: Option<Arc<ProcessShared>>,
}

/// `fork` (57), `vfork` (58) and `clone` (56) without `CLONE_THREAD`, as `args`.
pub(crate) fn fork(
    runtime: &Arc<ProcessRuntime>,
    process: &mut Process,
    vcpu: &Vcpu,
    args: CloneArgs,
) -> Result<Forked, Errno> {
    if args.flags & !PROCESS_FLAGS != 0 {
        return Err(Errno::EINVAL);
    }
    let vm = Arc::clone(&process.vm);
    if !vm.add_process() {
        return Err(Errno::EAGAIN);
    }
    let made = make_child(runtime, process, vcpu, args);
    if made.is_err() {
        vm.processes_ended(1);
    }
    made
}

fn make_child(
    runtime: &Arc<ProcessRuntime>,
    process: &mut Process,
    vcpu: &Vcpu,
    args: CloneArgs,
) -> Result<Forked, Errno> {
    let vm = Arc::clone(&process.vm);
    // The fast path's windows belong to one address space, and its read positions would no
    // longer be shared with the child: every file goes back through the VMM first.
    for (_, file) in process.fds.all() {
        fastpath::unwindow_all(process, &file);
    }
    let fpu = vcpu.fpu();
    let sregs = vcpu.sregs();
    let (Ok(fpu), Ok(sregs)) = (fpu, sregs) else {
        return Err(Errno::EAGAIN);
    };
    let Some(pid) = process.tree.new_process_id() else {
        return Err(Errno::EAGAIN);
    };
    let child_vcpu = match vm.take_vcpu() {
        Ok(child) => child,
        Err(error) => {
            tracing::warn!("cannot create a vCPU for a process: {error}");
            process.tree.thread_ended(pid);
            return Err(Errno::EAGAIN);
        }
    };
    let vfork = threads::CLONE_VM | CLONE_VFORK;
    let lend =
        args.flags & vfork == vfork && process.threads.live.len() == 1 && process.loan.is_none();
    let (mm, loan) = if lend {
        let loan = Arc::new(Loan::default());
        process.loan = Some(MmLoan::Lent(Arc::clone(&loan)));
        let mm = std::mem::replace(&mut process.mm, Mm::none());
        (mm, Some(MmLoan::Borrowed(loan)))
    } else {
        match process.mm.fork_copy(&vm.physical, &vm.shared) {
            Ok(mm) => (mm, None),
            Err(_) => {
                process.tree.thread_ended(pid);
                vm.give_back(child_vcpu);
                return Err(Errno::ENOMEM);
            }
        }
    };
    let mut slot = KernelSlot::at(0);
    slot.kstack_gpa = mm.kstack_gpa();
    let mut info = ThreadInfo::new(slot, 0, process.signals.mask);
    // The child keeps the calling thread's alternate signal stack (at the same address).
    info.altstack = process
        .threads
        .live
        .get(&process.tid)
        .and_then(|caller| caller.altstack);
    if args.flags & CLONE_CHILD_CLEARTID != 0 {
        info.clear_child_tid = args.child_tid;
    }
    let shared = ProcessShared::new(pid);
    let mut child = Process {
        vm: Arc::clone(&vm),
        mm,
        loan,
        fds: process.fds.fork_copy(),
        fs: process.fs.clone(),
        signals: process.signals.clone(),
        output: process.output.clone(),
        meter: Arc::clone(&process.meter),
        exe_path: process.exe_path.clone(),
        image: process.image.clone(),
        cmdline: process.cmdline.clone(),
        environ: process.environ.clone(),
        comm: process.comm.clone(),
        release: process.release.clone(),
        pid,
        umask: process.umask,
        boot: process.boot,
        unknown: BTreeMap::new(),
        threads: Threads {
            live: BTreeMap::from([(pid, info)]),
        },
        tid: pid,
        kstack: slot,
        futexes: BTreeMap::new(),
        ending: None,
        resume: None,
        end_status: None,
        tree: Arc::clone(&process.tree),
        shared: Arc::clone(&shared),
        metered: 0,
        real_timer: None,
        posix_timers: BTreeMap::new(),
        program_bytes_max: process.program_bytes_max,
        published_tables: None,
    };
    // Pending signals are the parent's alone; the mask and dispositions are inherited.
    child.signals.pending = 0;
    child.publish();
    child.signals.restore_mask = None;
    shared.ignored.store(
        process
            .shared
            .ignored
            .load(std::sync::atomic::Ordering::Acquire),
        std::sync::atomic::Ordering::Release,
    );
    shared.auto_reap.store(
        process
            .shared
            .auto_reap
            .load(std::sync::atomic::Ordering::Acquire),
        std::sync::atomic::Ordering::Release,
    );
    let tid_bytes = pid.to_le_bytes();
    let written = (args.flags & CLONE_CHILD_SETTID == 0
        || child.write_user(args.child_tid, &tid_bytes).is_ok())
        && (args.flags & CLONE_PARENT_SETTID == 0
            || process.write_user(args.parent_tid, &tid_bytes).is_ok());
    if !written {
        process.tree.thread_ended(pid);
        let mm = std::mem::replace(&mut child.mm, Mm::none());
        if lend {
            unlend(process, mm);
        } else {
            mm.destroy(&vm.physical);
        }
        vm.give_back(child_vcpu);
        return Err(Errno::EFAULT);
    }
    child.meter_memory();
    let regs = threads::child_regs(vcpu, args.stack);
    let start = StartState {
        cr3: child.mm.cr3(),
        regs,
        gdt_va: slot.gdt_va,
        fs_base: if args.flags & CLONE_SETTLS != 0 {
            args.tls
        } else {
            sregs.fs.base
        },
        fpu: Some(Box::new(fpu)),
    };
    let exit_signal = args.flags & 0xff;
    process
        .tree
        .add_child(process.pid, exit_signal, Arc::clone(&shared));
    let child_runtime = Arc::new(ProcessRuntime {
        task: Arc::clone(&runtime.task),
        process: Mutex::new(child),
        shared: Arc::clone(&shared),
    });
    let spawned = std::thread::Builder::new()
        .name("xeno-vcpu".to_owned())
        .stack_size(threads::VCPU_THREAD_STACK_BYTES)
        .spawn({
            let child_runtime = Arc::clone(&child_runtime);
            move || threads::thread_main(child_runtime, child_vcpu, pid, start, &|| {})
        });
    if let Err(error) = spawned {
        // The vCPU went with the closure; the child's memory is given back here.
        tracing::warn!("cannot start a process's host thread: {error}");
        process.tree.remove_unstarted(pid);
        let mut child = lock(&child_runtime.process);
        let mm = std::mem::replace(&mut child.mm, Mm::none());
        child.loan = None;
        child.meter_memory();
        drop(child);
        if lend {
            unlend(process, mm);
        } else {
            mm.destroy(&vm.physical);
        }
        return Err(Errno::EAGAIN);
    }
    Ok(Forked {
        pid,
        vfork: (args.flags & CLONE_VFORK != 0).then_some(shared),
    })
}
