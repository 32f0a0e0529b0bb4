//! Errors: a refused call is the plugin interface's shared
//! [`Error`](xeno_taskmgr_kit::Error); starting the task manager has its own.

use thiserror::Error;
pub use xeno_taskmgr_kit::Error;

/// Why [`WasmTaskManager::new`](crate::WasmTaskManager::new) failed.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration does not fit together.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Wasmtime refused the engine configuration (for example, the pool does not fit in the
    /// address space).
    #[error("cannot build the Wasmtime engine: {0}")]
    Engine(String),
    /// The task threads could not be started.
    #[error("cannot start the task runtime: {0}")]
    Runtime(#[from] std::io::Error),
}
