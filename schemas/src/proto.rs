//! gRPC services (filled in below).
