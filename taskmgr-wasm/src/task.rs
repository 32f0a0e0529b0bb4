//! The future that runs a task on the task threads: metered, paced by its domain's CPU gate,
//! stopped through its interrupt, and caught if the host code panics.

use crate::guest::{self, Launch};
use crate::metered::{Budget, Metered};
use crate::{Domain, Task};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use xeno_taskmgr_kit::{Outcome, TaskSlot};

/// Starts `launch` on the task threads. The slot (the task's place in the instance pool) is
/// held until the task's store is gone.
pub(crate) fn spawn(
    runtime: &tokio::runtime::Handle,
    domain: Arc<Domain>,
    task: Arc<Task>,
    launch: Launch,
    quantum_us: u64,
    slot: TaskSlot,
) {
    let budget = domain.cpu_gate().map(|gate| Budget {
        gate,
        key: task.key,
    });
    let deadline = launch.wall_clock.map(|(at, _)| at);
    let quantum_ns = quantum_us.saturating_mul(1000);
    // Unconstrained by tokio's cooperative budget: `Metered` bounds each poll itself, and a
    // budget running out mid-quantum would make the task's timers and channels report
    // spurious wake-ups.
    let metered = Metered::new(
        tokio::task::unconstrained(guest::run(launch)),
        Arc::clone(&task.meter),
        budget,
        Arc::clone(&task.control),
        deadline,
        quantum_ns,
    );
    let running = Arc::clone(&task);
    let handle = runtime.spawn(async move {
        let outcome = AssertUnwindSafe(metered)
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!(task = %running.id, "the task's host code panicked");
                Outcome::Failed(
                    "internal error: the task manager failed while running this task".to_owned(),
                )
            });
        // The store went with `metered` above, so the pool slot is free: give it back before
        // the task is seen to end, so that a deploy after StopTask or TaskEnded finds it.
        drop(slot);
        domain.finish_task(&running, outcome);
    });
    task.control.set_abort(handle.abort_handle());
}
