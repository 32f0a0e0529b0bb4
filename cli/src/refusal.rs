//! Telling "the platform said no" (exit status 1) from "something went wrong before it could
//! answer" (exit status 2), so scripts can rely on exit codes.

use tonic::Code;

/// The operation was attempted and refused: an invalid document, a denied request.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// A gRPC status as an error: refusals for answers about the request itself, plain errors for
/// transport and server trouble.
pub fn from_status(what: &str, status: tonic::Status) -> anyhow::Error {
    let message = format!("{what}: {} ({:?})", status.message(), status.code());
    match status.code() {
        Code::InvalidArgument
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::FailedPrecondition
        | Code::Unauthenticated
        | Code::ResourceExhausted
        | Code::OutOfRange
        | Code::Unimplemented => anyhow::Error::new(Refused(message)),
        _ => anyhow::anyhow!(message),
    }
}
