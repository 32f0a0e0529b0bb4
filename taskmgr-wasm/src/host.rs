//! What each task's Wasmtime store holds: its WASI context, its memory limiter and its meter.

use crate::limiter::TaskLimiter;
use std::sync::Arc;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use xeno_taskmgr_kit::metering::TaskMeter;

/// Store data common to modules and components.
pub(crate) trait HostData: Send + 'static {
    fn limiter(&mut self) -> &mut TaskLimiter;
    fn meter(&self) -> &TaskMeter;
}

/// Store data of a core module (WASI preview 1).
pub(crate) struct ModuleHost {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: TaskLimiter,
    pub(crate) meter: Arc<TaskMeter>,
}

impl HostData for ModuleHost {
    fn limiter(&mut self) -> &mut TaskLimiter {
        &mut self.limiter
    }

    fn meter(&self) -> &TaskMeter {
        &self.meter
    }
}

/// Store data of a component (WASI preview 2).
pub(crate) struct ComponentHost {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: TaskLimiter,
    pub(crate) meter: Arc<TaskMeter>,
}

impl HostData for ComponentHost {
    fn limiter(&mut self) -> &mut TaskLimiter {
        &mut self.limiter
    }

    fn meter(&self) -> &TaskMeter {
        &self.meter
    }
}

impl WasiView for ComponentHost {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
