//! Why the environment manager refused a call: the core's typed errors, each mapped to the gRPC
//! code the XenoServer interface documents for it, in one place ([`From<ServerError> for
//! Status`](ServerError)).

use tonic::{Code, Status};

/// Why a call to the XenoServer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// A document or a request field is malformed or out of range (INVALID_ARGUMENT).
    #[error("{0}")]
    Invalid(String),
    /// Something this server does not offer: an EnvType, a version, a pricing basis
    /// (UNIMPLEMENTED).
    #[error("{0}")]
    Unsupported(String),
    /// The caller may not do this: an order for another server, another client's order
    /// (PERMISSION_DENIED).
    #[error("{0}")]
    Denied(String),
    /// No such session or task for this caller (NOT_FOUND). Another client's session looks
    /// exactly like none.
    #[error("{0}")]
    NotFound(String),
    /// The session or the order is not in a state that allows this (FAILED_PRECONDITION).
    #[error("{0}")]
    Precondition(String),
    /// The server's capacity, or a session's, is used up (RESOURCE_EXHAUSTED).
    #[error("{0}")]
    Exhausted(String),
    /// The corp or the server's store cannot be reached now; the call may be retried
    /// (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// The corp or a task manager refused, with its own code, passed on as it is.
    #[error("{message}")]
    Refused {
        /// The code it answered with.
        code: Code,
        /// Its message.
        message: String,
    },
    /// A fault of this server (INTERNAL).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ServerError {
    /// INVALID_ARGUMENT with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        ServerError::Invalid(message.into())
    }
    /// UNIMPLEMENTED with `message`.
    pub fn unsupported(message: impl Into<String>) -> Self {
        ServerError::Unsupported(message.into())
    }
    /// PERMISSION_DENIED with `message`.
    pub fn denied(message: impl Into<String>) -> Self {
        ServerError::Denied(message.into())
    }
    /// NOT_FOUND with `message`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ServerError::NotFound(message.into())
    }
    /// FAILED_PRECONDITION with `message`.
    pub fn precondition(message: impl Into<String>) -> Self {
        ServerError::Precondition(message.into())
    }
    /// RESOURCE_EXHAUSTED with `message`.
    pub fn exhausted(message: impl Into<String>) -> Self {
        ServerError::Exhausted(message.into())
    }
    /// UNAVAILABLE with `message`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        ServerError::Unavailable(message.into())
    }
    /// INTERNAL with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        ServerError::Internal(message.into())
    }
    /// Another service's refusal, passed on with its code.
    pub fn refused(code: Code, message: impl Into<String>) -> Self {
        ServerError::Refused {
            code,
            message: message.into(),
        }
    }
    /// The store could not do its work (a full or failing disk): UNAVAILABLE, since nothing
    /// was changed and the call may be retried.
    pub fn store(error: &anyhow::Error) -> Self {
        ServerError::Unavailable(format!("{error:#}"))
    }

    /// The gRPC code the interface assigns.
    pub fn code(&self) -> Code {
        match self {
            ServerError::Invalid(_) => Code::InvalidArgument,
            ServerError::Unsupported(_) => Code::Unimplemented,
            ServerError::Denied(_) => Code::PermissionDenied,
            ServerError::NotFound(_) => Code::NotFound,
            ServerError::Precondition(_) => Code::FailedPrecondition,
            ServerError::Exhausted(_) => Code::ResourceExhausted,
            ServerError::Unavailable(_) => Code::Unavailable,
            ServerError::Refused { code, .. } => *code,
            ServerError::Internal(_) => Code::Internal,
        }
    }
}

impl From<ServerError> for Status {
    fn from(error: ServerError) -> Status {
        let message = match &error {
            // The message a client sees is the cause itself, not "internal error: …".
            ServerError::Internal(message) => message.clone(),
            other => other.to_string(),
        };
        Status::new(error.code(), message)
    }
}

impl From<Status> for ServerError {
    /// A task manager's or the corp's answer, passed on with its code.
    fn from(status: Status) -> ServerError {
        ServerError::refused(status.code(), status.message())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_its_documented_code_and_keeps_its_message() {
        for (error, code) in [
            (ServerError::invalid("a"), Code::InvalidArgument),
            (ServerError::unsupported("a"), Code::Unimplemented),
            (ServerError::denied("a"), Code::PermissionDenied),
            (ServerError::not_found("a"), Code::NotFound),
            (ServerError::precondition("a"), Code::FailedPrecondition),
            (ServerError::exhausted("a"), Code::ResourceExhausted),
            (ServerError::unavailable("a"), Code::Unavailable),
            (ServerError::internal("a"), Code::Internal),
            (ServerError::refused(Code::Aborted, "a"), Code::Aborted),
        ] {
            let status = Status::from(error);
            assert_eq!((status.code(), status.message()), (code, "a"));
        }
    }

    #[test]
    fn a_refusal_passed_on_keeps_its_code() {
        let error = ServerError::from(Status::already_exists("task \"t-1\" exists"));
        assert_eq!(error.code(), Code::AlreadyExists);
        assert_eq!(Status::from(error).message(), "task \"t-1\" exists");
    }
}
