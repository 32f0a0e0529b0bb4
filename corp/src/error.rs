//! What can go wrong in the corp, each kind mapping to one gRPC status code so that clients and
//! servers can act on it. Every message names the cause.

/// A refusal or failure, with the reason in words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorpError {
    /// The request is malformed (a document, a field).
    #[error("{0}")]
    InvalidArgument(String),
    /// The caller's certificate is missing, foreign or revoked.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this (wrong server, bad signature, restriction not met).
    #[error("{0}")]
    PermissionDenied(String),
    /// No such order or account.
    #[error("{0}")]
    NotFound(String),
    /// Already done differently (order bound elsewhere, sequence reused, key registered).
    #[error("{0}")]
    AlreadyExists(String),
    /// Not possible in the current state (insufficient funds, order expired or closed).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The corp cannot serve now (storage failure, overload); the request may be retried.
    #[error("{0}")]
    Unavailable(String),
}

impl From<CorpError> for tonic::Status {
    fn from(error: CorpError) -> Self {
        match error {
            CorpError::InvalidArgument(message) => tonic::Status::invalid_argument(message),
            CorpError::Unauthenticated(message) => tonic::Status::unauthenticated(message),
            CorpError::PermissionDenied(message) => tonic::Status::permission_denied(message),
            CorpError::NotFound(message) => tonic::Status::not_found(message),
            CorpError::AlreadyExists(message) => tonic::Status::already_exists(message),
            CorpError::FailedPrecondition(message) => tonic::Status::failed_precondition(message),
            CorpError::Unavailable(message) => tonic::Status::unavailable(message),
        }
    }
}

/// Shorthand for results of corp operations.
pub type CorpResult<T> = Result<T, CorpError>;
