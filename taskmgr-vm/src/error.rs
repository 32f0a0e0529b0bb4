//! Errors: a refused call is the plugin interface's shared
//! [`Error`](xeno_taskmgr_kit::Error); starting the task manager has its own.

use thiserror::Error;
pub use xeno_taskmgr_kit::Error;

/// Why [`VmTaskManager::new`](crate::VmTaskManager::new) failed.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration does not fit together.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// `/dev/kvm` could not be opened or lacks what domains need.
    #[error("KVM is not usable here: {0}")]
    Kvm(String),
    /// The start-up self-test found no way for system calls to reach the VMM.
    #[error("the system call self-test failed: {0}")]
    SelfTest(String),
    /// A configured root file system image cannot be offered.
    #[error(transparent)]
    Image(#[from] crate::images::ImageError),
}
