//! A task's stdout and stderr as the domain sees them: every write goes straight into the
//! domain's events (kept up to the task's cap, offered to readers, counted for usage) and
//! always succeeds, so a guest can neither block nor crash the host by writing. A flood costs
//! the guest one exit per write and bounded memory here.

use std::sync::Arc;
use xeno_schemas::proto::common::v1::OutputStream;
use xeno_taskmgr_kit::events::DomainEvents;
use xeno_taskmgr_kit::metering::TaskMeter;

/// Where a task's output goes.
#[derive(Clone)]
pub(crate) struct Output {
    task_id: Arc<str>,
    events: Arc<DomainEvents>,
    meter: Arc<TaskMeter>,
}

impl Output {
    pub(crate) fn new(task_id: Arc<str>, events: Arc<DomainEvents>, meter: Arc<TaskMeter>) -> Self {
        Output {
            task_id,
            events,
            meter,
        }
    }

    /// Records `data` written to `stream`.
    pub(crate) fn write(&self, stream: OutputStream, data: &[u8]) {
        self.meter.add_output_bytes(data.len() as u64);
        self.events.output(&self.task_id, stream, data);
    }
}
