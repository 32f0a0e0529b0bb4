//! The wrapper around every task's future that measures and rations its CPU time.
//!
//! A task's Wasm yields every `fuel_yield_interval` units of fuel; each of those *slices* is
//! one poll of its future. Around every slice the wrapper reads the thread's CPU clock and
//! charges the difference to the task and to its domain's CPU budget; before every slice it
//! asks the budget whether the task may run, and if not, parks the task on a timer (or behind
//! the domain's other waiting tasks) instead of polling it. A stop request or a passed
//! wall-clock deadline lets the task run regardless, so it can unwind promptly.
//!
//! Handing the task back to tokio at every slice would cost more than the slice is worth:
//! tokio's work-stealing scheduler wakes an idle thread for every rescheduled task, which
//! measured 20-25% of the task's CPU time at 1 M fuel per slice on two cores, and may move
//! the task to another core. So while a task only yields (it woke itself during the poll) and
//! keeps its budget, the wrapper polls it again at once, for up to `poll_quantum_us` of CPU
//! time, before giving the thread back. The budget, stop and deadline checks still happen at
//! every slice.

use crate::interrupt::Interrupt;
use crate::rate::{Admission, CpuGate};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;
use tokio::time::Sleep;
use xeno_taskmgr_kit::lock;
use xeno_taskmgr_kit::metering::{TaskMeter, thread_cpu_ns};

/// A task's place in its domain's CPU budget.
pub(crate) struct Budget {
    pub(crate) gate: Arc<CpuGate>,
    pub(crate) key: u64,
}

const IDLE: u8 = 0;
const POLLING: u8 = 1;
const POLLING_WOKEN: u8 = 2;

/// The waker the task's own future sees. A wake during the wrapper's poll (a fuel yield, or
/// anything else ready at once) is only recorded, for the wrapper to act on; any other wake
/// goes to tokio.
struct YieldDetector {
    state: AtomicU8,
    scheduler: Mutex<Option<Waker>>,
}

impl YieldDetector {
    fn begin_poll(&self, scheduler: &Waker) {
        let mut current = lock(&self.scheduler);
        if !current
            .as_ref()
            .is_some_and(|waker| waker.will_wake(scheduler))
        {
            *current = Some(scheduler.clone());
        }
        drop(current);
        self.state.store(POLLING, Ordering::Release);
    }

    /// Ends a poll; whether the future was woken during it.
    fn end_poll(&self) -> bool {
        self.state.swap(IDLE, Ordering::AcqRel) == POLLING_WOKEN
    }
}

impl Wake for YieldDetector {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let recorded = self
            .state
            .compare_exchange(POLLING, POLLING_WOKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !recorded && let Some(waker) = lock(&self.scheduler).as_ref() {
            waker.wake_by_ref();
        }
    }
}

pub(crate) struct Metered<F> {
    inner: Pin<Box<F>>,
    meter: Arc<TaskMeter>,
    budget: Option<Budget>,
    interrupt: Arc<Interrupt>,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    detector: Arc<YieldDetector>,
    waker: Waker,
    quantum_ns: u64,
}

impl<F: Future> Metered<F> {
    pub(crate) fn new(
        inner: F,
        meter: Arc<TaskMeter>,
        budget: Option<Budget>,
        interrupt: Arc<Interrupt>,
        deadline: Option<Instant>,
        quantum_ns: u64,
    ) -> Self {
        let detector = Arc::new(YieldDetector {
            state: AtomicU8::new(IDLE),
            scheduler: Mutex::new(None),
        });
        Metered {
            inner: Box::pin(inner),
            meter,
            budget,
            interrupt,
            deadline,
            timer: None,
            waker: Waker::from(Arc::clone(&detector)),
            detector,
            quantum_ns,
        }
    }

    /// Sleeps until `at` (or the deadline, if sooner); `Ready` if that time has come.
    fn park_until(&mut self, at: Option<Instant>, cx: &mut Context<'_>) -> Poll<()> {
        let wake_at = match (at, self.deadline) {
            (Some(at), Some(deadline)) => at.min(deadline),
            (Some(at), None) => at,
            (None, Some(deadline)) => deadline,
            (None, None) => return Poll::Pending,
        };
        let wake_at = tokio::time::Instant::from_std(wake_at);
        match &mut self.timer {
            Some(timer) if timer.deadline() == wake_at => {}
            Some(timer) => timer.as_mut().reset(wake_at),
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(wake_at))),
        }
        match &mut self.timer {
            Some(timer) => timer.as_mut().poll(cx),
            None => Poll::Pending,
        }
    }

    fn must_unwind(&self, now: Instant) -> bool {
        self.interrupt.is_set() || self.deadline.is_some_and(|deadline| now >= deadline)
    }

    /// Whether the task may run a slice now; otherwise it is parked and will be woken.
    fn admitted(&mut self, cx: &mut Context<'_>) -> bool {
        let now = Instant::now();
        let Some(budget) = &self.budget else {
            return true;
        };
        if self.must_unwind(now) {
            budget.gate.leave(budget.key);
            return true;
        }
        let wait_until = match budget.gate.admit(budget.key, cx.waker(), now) {
            Admission::Run => return true,
            Admission::WaitUntil(at) => Some(at),
            Admission::Queued => None,
        };
        self.interrupt.register_parked(cx.waker());
        if self.interrupt.is_set() || self.park_until(wait_until, cx).is_ready() {
            // Something changed while we parked: poll again rather than miss it.
            cx.waker().wake_by_ref();
        }
        false
    }
}

impl<F: Future> Future for Metered<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        let quantum_start = thread_cpu_ns();
        let mut before = quantum_start;
        loop {
            if !this.admitted(cx) {
                return Poll::Pending;
            }
            this.detector.begin_poll(cx.waker());
            let result = this
                .inner
                .as_mut()
                .poll(&mut Context::from_waker(&this.waker));
            let yielded = this.detector.end_poll();
            let after = thread_cpu_ns();
            let used = after.saturating_sub(before);
            before = after;
            this.meter.add_cpu_ns(used);
            if let Some(budget) = &this.budget {
                budget.gate.charge(used, Instant::now());
            }
            if result.is_ready() {
                return result;
            }
            if !yielded {
                // Waiting for something else (a timer, a host operation): it will wake us.
                return Poll::Pending;
            }
            let quantum_spent = after.saturating_sub(quantum_start) >= this.quantum_ns;
            if quantum_spent || this.must_unwind(Instant::now()) {
                // Give the thread back; tokio polls us again after the other ready tasks (and
                // with a fresh cooperative budget, which a stop request's branch needs).
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
        }
    }
}

impl<F> Drop for Metered<F> {
    fn drop(&mut self) {
        if let Some(budget) = &self.budget {
            budget.gate.leave(budget.key);
        }
    }
}
