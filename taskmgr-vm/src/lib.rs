//! # xeno-taskmgr-vm: paravirtual Linux domains on KVM
//!
//! In the XenoServer Open Platform, a XenoServer's environment manager admits sessions and
//! hands each to the *task manager* of its execution environment (paper, section V-B). This
//! crate is the task manager for `EnvType` `Linux`. As the paper's XenoServer boots a fresh,
//! isolated, resource-guaranteed domain for each session and ships binaries into it, its
//! guests paravirtualized and reaching the machine only through the hypervisor (sections
//! II-A.3, V-A), each session here is a KVM virtual machine run by our own virtual machine
//! monitor, and each task deployed into it is an unmodified static Linux executable (static
//! or static-PIE, musl or glibc) running in ring 3 of that VM. The domain's only kernel is
//! the VMM: in the spirit of Xen's paravirtualized guests and of gVisor's KVM platform, the
//! VMM writes the page tables, descriptor tables and initial stack itself, and implements the
//! Linux system call ABI against the session's own resources.
//!
//! It implements the plugin interface, the `xenoserve.taskmanager.v1.TaskManager` gRPC
//! service, as the Rust trait [`xeno_taskmgr_kit::TaskManager`], so the environment
//! manager can hold it in process, and the `xeno-taskmgr-vm` binary serves the same thing on
//! a Unix socket as an external plugin.
//!
//! ## Public API
//!
//! - [`VmTaskManager::new`]`(`[`VmConfig`]`)`: opens `/dev/kvm`, runs the system call
//!   self-test, and returns a manager implementing `TaskManager<StreamOutputStream =
//!   EventStream>`. Constructible inside a tokio runtime.
//! - [`VmConfig`]: every bound the manager keeps, with its default and reason.
//! - [`images`]: root file system images built from Debian's packages (`xenoserver image
//!   build`), content-addressed by their manifest; a session asking for one (`EnvImage`) gets
//!   it as a read-only `/` under its scratch directory (`kernel/overlay.rs`), and a task may
//!   run a program from it by path (`ExecutablePath`). See `docs/images.md`.
//! - [`ENV_TYPE`] (`"Linux"`), [`DEFAULT_VERSION`], [`DomainKind`], [`SyscallPath`].
//!
//! ## The domain
//!
//! - **Boot** (`hypervisor/vm/`, `hypervisor/cpu/`). No firmware and no real mode: CreateDomain creates the VM,
//!   maps `MemoryMB` of RAM as its only memory slot (at guest-physical 0), writes an IDT with
//!   one stub per exception (`hlt; [add rsp, 8]; iretq`) and the syscall trampoline, and makes
//!   one vCPU. For each task the VMM writes four-level page tables, a GDT and TSS and a ring-0
//!   stack (all in the domain's RAM, none of it mapped for ring 3), loads the static ELF
//!   (`loading/elf.rs`, `loading/loader.rs`), builds Linux's initial stack (argc, argv, envp,
//!   auxv: `loading/stack.rs`), and sets the vCPU's registers straight into 64-bit ring 3 at the entry point.
//! - **System calls** (`hypervisor/vm/system.rs`, `hypervisor/fastpath.rs`,
//!   `hypervisor/run.rs`, `kernel/syscalls/`). `syscall` jumps
//!   to the trampoline page (MSR_LSTAR), whose store to a guest-physical address without
//!   memory ends KVM_RUN with an MMIO exit; the VMM reads the call from the registers synced
//!   into `kvm_run` (KVM_CAP_SYNC_REGS), emulates it, writes RAX back the same way and
//!   re-enters: one exit and no other ioctl per call. On hosts where `syscall` stays in ring 3
//!   (KVM without hardware virtualization, such as the PVM module) the trampoline returns with
//!   `jmp rcx`; where it enters ring 0, with `sysretq`. The start-up self-test
//!   (`hypervisor/vm/selftest.rs`) finds which ([`SyscallPath`]) and checks the round trip.
//! - **The read fast path** (`hypervisor/fastpath.rs`, `hypervisor/vm/windows.rs`). A regular file opened read-only
//!   and read often (after `WINDOW_AFTER_READS` reads through the VMM: a window is dear to
//!   make and to drop) gets a *window*: the file mapped read-only into the domain as a memory slot of its own and
//!   into the task read-only; `read` and `pread64` on it are served by the trampoline in
//!   ring 3 with no exit (measured ~550-810 k calls/s against ~30 k/s with an exit each).
//!   Everything on the guest side is untrusted: the VMM decides what is windowed from its own
//!   records and only reads a position back; a copy that faults is redone by the VMM.
//! - **Exceptions** (`kernel/fault.rs`) go through the IDT to their stub's `hlt`; the VMM reads the
//!   frame from the task's ring-0 stack, backs a stack page on first touch, redoes a faulted
//!   fast-path copy, runs the task's handler for the signal Linux would send, or ends the task
//!   with it ("killed by signal 11 (SIGSEGV): page fault: write of 0x8 at 0x401136").
//! - **Memory** (`kernel/mm.rs`, `kernel/paging.rs`, `hypervisor/vm/frames.rs`,
//!   `hypervisor/vm/shadow.rs`). The domain's RAM is shared by its processes through one frame
//!   allocator, so `MemoryMB` bounds the domain as a whole. Pages are backed when mapped (the
//!   stack grows on demand), so exhaustion is `ENOMEM` from the call that asked. The VMM writes
//!   page tables from the host, which KVM's shadow MMU does not see, so three rules hold: a
//!   page freed from a live address space is discarded (MADV_DONTNEED: zero on reuse, every
//!   translation of it invalidated by KVM's MMU notifier); a page whose access is lowered moves
//!   to a fresh frame; and a frame that held a page table waits in quarantine until a batched
//!   flush has made KVM drop every shadow table (the domain pauses, its RAM slot is
//!   re-registered), so no process ever walks another's stale translations. The VMM checks
//!   every guest pointer against the process's own page tables with ring-3 permissions and
//!   reads or writes only inside the RAM mapping, through vm-memory's bounds-checked accessors.
//! - **CPU** (`kernel/rate.rs`, `hypervisor/run.rs`, `hypervisor/cpu/signal.rs`). `cpu_msps` is a token bucket per domain,
//!   enforced by the VMM itself without cgroups: before entering the guest a vCPU thread arms
//!   a timer on its own CPU-time clock for the budget the bucket holds (at most one slice), so
//!   the host kernel kicks it out of KVM_RUN with a real-time signal when it is spent; the
//!   thread's CPU time (guest time included) is charged exactly, so the long-run rate is exact
//!   (150 ms/s measured at 150.3 over 10 s). Stop and destroy use the same kick.
//! - **Tasks, processes and address spaces** (`deploy.rs`, `kernel/tree.rs`,
//!   `kernel/fork.rs`, `kernel/exec.rs`). A task is the process tree one DeployTask starts, in
//!   a pid namespace of its own (its first process is pid 2; its parent, "1", is the domain).
//!   Each process has an address space of its own (fresh page tables in the session's VM) and
//!   its threads run on vCPUs of the domain's pool, each on a host thread. `fork`, `vfork` and
//!   `clone` of a process share the parent's read-only pages (program text, read-only data,
//!   RELRO: one frame, held by both, until either side changes or discards its page and gets
//!   a copy of its own) and copy its writable pages into fresh frames at once (a
//!   write-protected parent page would stay writable through KVM's shadow translations, and
//!   each copy-on-write fault would be a 55 µs exit against about 1 µs to copy); `execve` loads a static or dynamically linked ELF
//!   program (its `PT_INTERP` loader read from the session) or a `#!` script; `wait4` and
//!   `waitid` reap zombies; signals go between processes (`kill`, `tkill`, `tgkill`, and
//!   SIGCHLD), taken at once by running code and cutting waits short (SA_RESTART honoured).
//!   Orphans go to the first process; when it ends, the rest of the tree is killed and the task
//!   ends once no process is left. At most 256 processes (running
//!   or zombie; `PROCESSES_MAX` in `kernel/tree.rs`) per domain bound a fork bomb there. Measured against a fresh VM per task, a task
//!   in the session's VM starts in 4.0-4.7 ms p50 (whole `busybox echo hello`) against
//!   5.0-5.4 ms for create-VM-and-run.
//! - **Files** (`kernel/files.rs`, `kernel/syscalls/fs.rs`). The session's scratch directory is `/`: every
//!   path is resolved lexically (`..` stops at the root) and then opened through cap-std
//!   beneath the directory, which refuses any way out (absolute or escaping symlinks).
//! - **Output** (`kernel/output.rs` into the kit's events): as the Wasm manager's, one offset
//!   sequence per task, kept up to its cap; live readers get everything, replays what was kept.
//! - **Usage**: `cpu_time_us` (vCPU thread CPU time), `memory_mb_ms` and `memory_peak_bytes`
//!   (frames of the domain's RAM in use), `syscalls` (calls served by the VMM; fast-path reads
//!   are not counted, their CPU time is), `output_bytes`, `wall_time_ms`; cumulative, never
//!   decreasing, reported like the Wasm manager's.
//!
//! ## What is not supported (yet)
//!
//! - Processes: `clone(CLONE_VM)` without `CLONE_VFORK` or `CLONE_THREAD`, and `vfork` from a
//!   process with several threads, give the child a copy of the parent's memory, not the
//!   parent's own (`vfork` otherwise lends the child the parent's address space, as Linux
//!   does); children never stop or continue (job control). Threads:
//!   at most 64 per process, and the read fast path is off once a process has a second
//!   thread. Pipes follow Linux's 16-page queue (atomic writes up to `PIPE_BUF`, `EPIPE` and
//!   `SIGPIPE`); eventfds, timerfds and `poll`, `ppoll`, `select` and `pselect6` work over every
//!   kind of descriptor, and so does `epoll` (level-triggered). A blocked call waits outside
//!   the process lock and ends when the task is stopped, destroyed or past its wall-clock
//!   limit, or for a signal (`kernel/wait.rs`). `/dev` has `null`, `zero`, `full`, `random` and `urandom`;
//!   `/dev/stdin`, `/dev/stdout`, `/dev/stderr`, `/dev/fd/N` and `/proc/self/fd/N` open the
//!   descriptor they name (sharing its open file, as `dup` does, where Linux would reopen a
//!   regular file with its own offset), and `/dev/tty` is `ENXIO`: there is no controlling
//!   terminal. `/proc` (`kernel/procfs.rs`) has the process's own `stat`, `status`, `cmdline`,
//!   `environ`, `maps`, `exe`, `cwd` and `fd/`, and `cpuinfo`, `meminfo`, `uptime`, `loadavg`,
//!   `stat`, `filesystems` and `mounts` with the domain's figures; the task's other processes
//!   have `stat`, `status`, `cmdline`, `environ`, `comm`, `maps`, `exe`, `cwd` and `fd/`
//!   (what each published after its last call that changed them), and listing `/proc` shows
//!   them (`ps` works); `/proc/<pid>` and `/proc/<pid>/fd` list too (`lsof` works). A
//!   descriptor links to its file's session path, `/dev/…`, `pipe:[1]` or `anon_inode:[…]`.
//! - Timers: `alarm`, `setitimer` (ITIMER_REAL), POSIX timers and `timerfd` on the wall and
//!   monotonic clocks (`kernel/timers.rs`); `setitimer`'s ITIMER_VIRTUAL and ITIMER_PROF in
//!   the process's CPU time (`kernel/cputimers.rs`: both count guest and VMM time alike),
//!   and POSIX timers on the process's CPU clock; thread CPU clocks and timerfds on CPU
//!   clocks are `EINVAL`.
//! - Signals: dispositions are a process's, masks each thread's; handlers run
//!   (`kernel/sigframe.rs`) with masks, `SA_NODEFER`, `SA_RESETHAND`, `SA_RESTART` and
//!   `rt_sigreturn`, alternate signal stacks (SA_ONSTACK) and the FPU state in the frame;
//!   `rt_sigsuspend`, and `rt_sigtimedwait` taking blocked signals of its set. A
//!   signal another process sends reaches the process as a whole (any thread that does not
//!   block it, and only a waiting thread's own wait is cut short).
//! - Kernel images ([`DomainKind::KernelImage`]) are refused with UNIMPLEMENTED.
//! - `disk_mb` is what `statfs` reports as the size of `/` (with the session's files taken
//!   from it), not a quota: writes beyond it are not refused. `net_kbps` is not enforced:
//!   there is no network at all. Each domain has its own `/tmp`, in its scratch directory
//!   (made when a task first names it), or the image's under the scratch directory.
//! - The system calls are the rows of [`SYSCALLS`] (full, partial with a note, or refused
//!   with an errno), listed in `docs/linux-system-calls.md` and in the capability report;
//!   anything else returns `ENOSYS` and is counted, per call, in the task's end
//!   (`TaskExit.unknown_calls`, shown by `xeno status`).

//! ## Example
//!
//! ```no_run
//! use xeno_schemas::proto::taskmanager::v1 as pb;
//! use xeno_taskmgr_kit::TaskManager;
//! use xeno_taskmgr_vm::{VmConfig, VmTaskManager};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> anyhow::Result<()> {
//! let manager = VmTaskManager::new(VmConfig::default())?;
//! manager
//!     .create_domain(tonic::Request::new(pb::CreateDomainRequest {
//!         domain_id: "session-1".into(),
//!         env_type: "Linux".into(),
//!         limits: Some(pb::DomainLimits { cpu_msps: 150, memory_mb: 64, ..Default::default() }),
//!         ..Default::default()
//!     }))
//!     .await?;
//! // Deploy a TaskDescription naming an <Executable sha256="..."/> with the static binary as
//! // its payload, then follow StreamOutput; see tests/busybox.rs.
//! # Ok(()) }
//! ```

#![deny(missing_docs)]

// The plugin face: configuration, the backend the kit hosts, DeployTask, errors.
mod config;
mod deploy;
mod error;
mod kind;
mod manager;
// The guest kernel: processes, memory, files, threads, signals, system calls.
mod kernel;
// The hypervisor side: the VM, vCPUs, the run loop and the fast path.
mod hypervisor;
// Program loading: ELF, the loader, the initial stack.
mod loading;
// Root file system images: building them from Debian's packages, their manifests.
pub mod images;

pub use config::{ConfigError, DEFAULT_IMAGES_DIR, DEFAULT_VERSION, VmConfig};
pub use error::{Error, StartError};
pub use hypervisor::cpu::CpuError;
pub use kind::{DomainKind, KERNEL_IMAGE_ELEMENT};
pub use loading::elf::ElfError;
pub use loading::loader::LoadError;
pub use manager::{ENV_TYPE, VmBackend, VmTaskManager};

/// A domain of this task manager.
pub(crate) type Domain = xeno_taskmgr_kit::Domain<VmBackend>;
/// A task of this task manager.
pub(crate) type Task = xeno_taskmgr_kit::Task<VmBackend>;
pub use hypervisor::vm::VmError;
pub use hypervisor::vm::system::SyscallPath;
pub use kernel::syscalls::table::{Support as SyscallSupport, Syscall, TABLE as SYSCALLS};
