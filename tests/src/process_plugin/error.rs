//! The plugin's errors, each mapped to the status code the TaskManager contract names for it.

use tonic::{Code, Status};

/// Why a call was refused.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// NOT_FOUND: no such domain.
    #[error("no domain {0:?}")]
    DomainNotFound(String),
    /// NOT_FOUND: no such task in the domain.
    #[error("no task {task:?} in domain {domain:?}")]
    TaskNotFound {
        /// The domain.
        domain: String,
        /// The task asked for.
        task: String,
    },
    /// ALREADY_EXISTS: the id is taken by a different request.
    #[error("{0}")]
    AlreadyExists(String),
    /// INVALID_ARGUMENT: something in the request this plugin cannot run.
    #[error("{0}")]
    InvalidArgument(String),
    /// UNIMPLEMENTED: an environment, version or program kind this plugin does not run.
    #[error("{0}")]
    Unimplemented(String),
    /// RESOURCE_EXHAUSTED: the plugin's or the domain's capacity is used up.
    #[error("{0}")]
    ResourceExhausted(String),
    /// FAILED_PRECONDITION: the domain has been destroyed.
    #[error("domain {0:?} has been destroyed")]
    Destroyed(String),
    /// INTERNAL: the host failed us (a file could not be written, a process not started).
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl PluginError {
    /// An [`PluginError::Io`] saying what was being done.
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> PluginError {
        let context = context.into();
        move |source| PluginError::Io { context, source }
    }

    /// The gRPC status code the contract gives this error.
    pub fn code(&self) -> Code {
        match self {
            PluginError::DomainNotFound(_) | PluginError::TaskNotFound { .. } => Code::NotFound,
            PluginError::AlreadyExists(_) => Code::AlreadyExists,
            PluginError::InvalidArgument(_) => Code::InvalidArgument,
            PluginError::Unimplemented(_) => Code::Unimplemented,
            PluginError::ResourceExhausted(_) => Code::ResourceExhausted,
            PluginError::Destroyed(_) => Code::FailedPrecondition,
            PluginError::Io { .. } => Code::Internal,
        }
    }
}

impl From<PluginError> for Status {
    fn from(error: PluginError) -> Status {
        if let PluginError::Io { .. } = &error {
            tracing::error!(%error, "internal error");
        }
        Status::new(error.code(), error.to_string())
    }
}
