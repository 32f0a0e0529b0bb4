//! How a running task is told to stop: StopTask and DestroyDomain set the reason once, which
//! both wakes the task (even while it waits for CPU budget) and ends its Wasm at the next
//! fuel yield.

use futures::task::AtomicWaker;
use std::sync::Mutex;
use std::task::Waker;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use xeno_taskmgr_kit::lock;

/// Why a task is being stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StopRequest {
    pub(crate) reason: String,
}

/// A task's stop switch, and the handle that abandons its future when it does not stop.
pub struct Interrupt {
    request: watch::Sender<Option<StopRequest>>,
    /// The task's waker while it is parked by the CPU gate, where nothing else would wake it.
    parked: AtomicWaker,
    abort: Mutex<Option<AbortHandle>>,
}

impl Default for Interrupt {
    fn default() -> Self {
        Interrupt {
            request: watch::Sender::new(None),
            parked: AtomicWaker::new(),
            abort: Mutex::new(None),
        }
    }
}

impl xeno_taskmgr_kit::Control for Interrupt {
    fn stop(&self, reason: &str) {
        Interrupt::stop(self, reason);
    }

    /// Drops the task's future (its store with it) where it stands.
    fn abandon(&self, timeout: Duration) -> String {
        if let Some(abort) = lock(&self.abort).take() {
            abort.abort();
        }
        format!("abandoned: did not stop within {timeout:?}")
    }
}

impl Interrupt {
    /// Remembers how to drop the task's future, for [`Control::abandon`](xeno_taskmgr_kit::Control::abandon).
    pub(crate) fn set_abort(&self, abort: AbortHandle) {
        *lock(&self.abort) = Some(abort);
    }

    /// Asks the task to stop; the first reason given is the one reported.
    pub(crate) fn stop(&self, reason: &str) {
        self.request.send_if_modified(|request| {
            if request.is_some() {
                return false;
            }
            *request = Some(StopRequest {
                reason: reason.to_owned(),
            });
            true
        });
        self.parked.wake();
    }

    pub(crate) fn is_set(&self) -> bool {
        self.request.borrow().is_some()
    }

    pub(crate) fn register_parked(&self, waker: &Waker) {
        self.parked.register(waker);
    }

    /// Completes when a stop is requested.
    pub(crate) async fn requested(&self) -> StopRequest {
        let mut receiver = self.request.subscribe();
        match receiver.wait_for(Option::is_some).await {
            Ok(request) => request.clone().unwrap_or_else(|| StopRequest {
                reason: "stopped".to_owned(),
            }),
            // The sender lives as long as `self`, so this cannot happen while we hold `self`.
            Err(_) => StopRequest {
                reason: "stopped".to_owned(),
            },
        }
    }
}
