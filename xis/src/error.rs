//! What the XIS refuses and why, each kind mapping to the gRPC status code the
//! `xenoserve.xis.v1.Xis` contract documents. Every message names the cause.

use crate::store::StoreError;

/// A refusal or failure.
#[derive(Debug, thiserror::Error)]
pub enum XisError {
    /// Malformed, oversized or expired advertisement; malformed lookup (range, cursor, page
    /// size). INVALID_ARGUMENT.
    #[error("{0}")]
    InvalidArgument(String),
    /// Missing or bad signature, or a key that does not match the ServerId. UNAUTHENTICATED.
    #[error("{0}")]
    Unauthenticated(String),
    /// The advertisement's version is not newer than the one stored. FAILED_PRECONDITION.
    #[error("version {offered} is not newer than the stored version {stored}")]
    NotNewer {
        /// The version offered.
        offered: u64,
        /// The version stored (or last discarded).
        stored: u64,
    },
    /// No such server (unknown, or discarded after aging). NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// Too many advertisements are waiting to be checked. UNAVAILABLE: retry later.
    #[error("the XIS is overloaded ({0} advertisements waiting); retry later")]
    Overloaded(usize),
    /// The store failed. UNAVAILABLE: the request may be retried.
    #[error("the XIS store is unavailable: {0}")]
    Unavailable(#[from] StoreError),
}

impl From<XisError> for tonic::Status {
    fn from(error: XisError) -> Self {
        let message = error.to_string();
        match error {
            XisError::InvalidArgument(_) => tonic::Status::invalid_argument(message),
            XisError::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            XisError::NotNewer { .. } => tonic::Status::failed_precondition(message),
            XisError::NotFound(_) => tonic::Status::not_found(message),
            XisError::Overloaded(_) | XisError::Unavailable(_) => {
                tonic::Status::unavailable(message)
            }
        }
    }
}
