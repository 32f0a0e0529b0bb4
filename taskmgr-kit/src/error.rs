//! Why a task manager refused a call, each reason mapped to the gRPC code the plugin interface
//! documents for it: one vocabulary for every task manager, so the environment manager sees
//! the same codes whichever it talks to.

use thiserror::Error;
use tonic::{Code, Status};

/// Why a call to the task manager was refused.
#[derive(Debug, Error)]
pub enum Error {
    /// No domain has this id (NOT_FOUND).
    #[error("no domain {0:?}")]
    DomainNotFound(String),
    /// The domain has no task with this id (NOT_FOUND).
    #[error("domain {domain:?} has no task {task:?}")]
    TaskNotFound {
        /// The domain asked about.
        domain: String,
        /// The task asked about.
        task: String,
    },
    /// A domain with this id exists and the request differs from the one that made it
    /// (ALREADY_EXISTS).
    #[error("domain {0:?} already exists with different settings")]
    DomainExists(String),
    /// A task with this id exists and the request differs from the one that made it
    /// (ALREADY_EXISTS).
    #[error("task {task:?} already exists in domain {domain:?} with a different description")]
    TaskExists {
        /// The domain.
        domain: String,
        /// The task.
        task: String,
    },
    /// The domain was destroyed (FAILED_PRECONDITION).
    #[error("domain {0:?} was destroyed")]
    DomainDestroyed(String),
    /// Something in the request this plugin cannot run, with the reason (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// A program kind, environment type or version this plugin does not run (UNIMPLEMENTED).
    #[error("{0}")]
    Unsupported(String),
    /// The plugin's own capacity is used up (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    Exhausted(String),
    /// A fault of the host or a bug in the plugin (INTERNAL).
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The gRPC code the plugin interface assigns to this error.
    pub fn code(&self) -> Code {
        match self {
            Error::DomainNotFound(_) | Error::TaskNotFound { .. } => Code::NotFound,
            Error::DomainExists(_) | Error::TaskExists { .. } => Code::AlreadyExists,
            Error::DomainDestroyed(_) => Code::FailedPrecondition,
            Error::Invalid(_) => Code::InvalidArgument,
            Error::Unsupported(_) => Code::Unimplemented,
            Error::Exhausted(_) => Code::ResourceExhausted,
            Error::Internal(_) => Code::Internal,
        }
    }
}

impl From<Error> for Status {
    fn from(error: Error) -> Status {
        Status::new(error.code(), error.to_string())
    }
}

impl From<crate::payload::PayloadError> for Error {
    fn from(error: crate::payload::PayloadError) -> Self {
        Error::Invalid(error.0)
    }
}
