//! What resource discovery refuses and why, each kind mapping to the gRPC status code the
//! `xenoserve.rd.v1.ResourceDiscovery` contract documents.

/// A refusal or failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RdError {
    /// Malformed requirements; objective missing, inconsistent or not offered by this system.
    /// INVALID_ARGUMENT.
    #[error("{0}")]
    InvalidArgument(String),
    /// The XIS cannot be reached (no successful sync recently). UNAVAILABLE.
    #[error("{0}")]
    Unavailable(String),
}

impl From<RdError> for tonic::Status {
    fn from(error: RdError) -> Self {
        match error {
            RdError::InvalidArgument(message) => tonic::Status::invalid_argument(message),
            RdError::Unavailable(message) => tonic::Status::unavailable(message),
        }
    }
}
