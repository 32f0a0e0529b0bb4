//! The kick: how the VMM takes a vCPU thread out of KVM_RUN without guest interrupts.
//!
//! One real-time signal, blocked in every vCPU thread except while it is inside KVM_RUN (the
//! vCPU's KVM signal mask is empty), so a kick that arrives while the VMM is emulating a call
//! stays pending and makes the next KVM_RUN return at once: no kick is ever lost. Three things
//! send it: the thread's CPU-time timer (its CPU budget slice is spent), its wall-clock timer
//! (the task's deadline), and other threads (stop, destroy). The vCPU thread consumes it with
//! `sigtimedwait`, which is also how it sleeps (budget waits, `nanosleep`): a kick wakes it.

use std::io;
use std::sync::Once;
use std::time::Duration;

/// Offset of the kick signal from SIGRTMIN (glibc reserves the first few real-time signals
/// below the SIGRTMIN it reports; this leaves room for other users above it).
const KICK_OFFSET: i32 = 6;

/// The kick signal's number.
pub(crate) fn kick_signal() -> i32 {
    libc::SIGRTMIN() + KICK_OFFSET
}

extern "C" fn ignore(_: libc::c_int) {}

fn kick_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and modify a local sigset_t; the signal number
    // is a valid real-time signal.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, kick_signal());
        set
    }
}

/// Installs a no-op handler for the kick (once per process), so a kick that is ever delivered
/// rather than consumed does nothing.
pub(crate) fn install() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        // SAFETY: installs a handler that does nothing (async-signal-safe) for a real-time
        // signal this crate owns; no SA_RESTART, so a blocking call it interrupts returns.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(kick_signal(), &action, std::ptr::null_mut());
        }
    });
}

/// Blocks the kick in the calling thread (a vCPU thread, for its whole life).
pub(crate) fn block_in_this_thread() {
    let set = kick_set();
    // SAFETY: changes only the calling thread's signal mask.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits up to `timeout` for a kick; consumes it and returns true if one came. A zero timeout
/// just consumes a pending kick.
pub(crate) fn wait(timeout: Duration) -> bool {
    let set = kick_set();
    let spec = libc::timespec {
        tv_sec: libc::time_t::try_from(timeout.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos()),
    };
    // SAFETY: sigtimedwait reads a valid set and timeout and writes nothing (null info).
    let result = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &spec) };
    // EAGAIN (timed out) or EINTR (another signal): callers re-check their clocks and flags.
    result >= 0
}

/// The calling thread's kernel thread id.
pub(crate) fn this_thread() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// Sends the kick to thread `tid` of this process. The caller guarantees the thread is alive
/// (the task's control lock is held while its thread runs).
pub(crate) fn kick(tid: i32) {
    // SAFETY: tgkill sends a signal to one thread of our own process; the thread blocks the
    // kick or has the no-op handler installed, so delivery cannot harm it.
    unsafe {
        libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, kick_signal());
    }
}

/// A one-shot POSIX timer that kicks one thread: on its own CPU-time clock (the budget slice)
/// or on the monotonic clock (the wall-clock deadline).
pub(crate) struct Timer {
    id: libc::timer_t,
}

// SAFETY: a timer id is a plain kernel handle, usable from any thread.
unsafe impl Send for Timer {}

impl Timer {
    /// A timer on `clock` that kicks thread `tid`.
    pub(crate) fn new(clock: libc::clockid_t, tid: i32) -> io::Result<Timer> {
        // SAFETY: sigevent is plain data; SIGEV_THREAD_ID with a thread of this process.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = kick_signal();
        event.sigev_notify_thread_id = tid;
        let mut id: libc::timer_t = std::ptr::null_mut();
        // SAFETY: valid pointers to a local sigevent and timer id.
        if unsafe { libc::timer_create(clock, &mut event, &mut id) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Timer { id })
    }

    /// Fires once after `after` on the timer's clock (zero disarms).
    pub(crate) fn arm(&self, after: Duration) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(after.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(after.subsec_nanos()),
            },
        };
        // SAFETY: the timer id is live (owned by self); the spec is a valid local.
        unsafe {
            libc::timer_settime(self.id, 0, &spec, std::ptr::null_mut());
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        // SAFETY: deletes the timer this struct created, exactly once.
        unsafe {
            libc::timer_delete(self.id);
        }
    }
}
