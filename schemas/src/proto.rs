//! The platform's gRPC services, generated from `schemas/proto/` (see each `.proto` file for
//! the documented contract of every call and error). Packages are versioned: `v1` modules
//! here.
#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// Messages shared by every service (money, usage, output, payloads).
pub mod common {
    pub mod v1 {
        tonic::include_proto!("xenoserve.common.v1");
    }
}

/// The XenoCorp service.
pub mod corp {
    pub mod v1 {
        tonic::include_proto!("xenoserve.corp.v1");
    }
}

/// The XenoServer service (the environment manager).
pub mod server {
    pub mod v1 {
        tonic::include_proto!("xenoserve.server.v1");
    }
}

/// The task manager plugin interface.
pub mod taskmanager {
    pub mod v1 {
        tonic::include_proto!("xenoserve.taskmanager.v1");
    }
}

/// The XenoServer Information Service.
pub mod xis {
    pub mod v1 {
        tonic::include_proto!("xenoserve.xis.v1");
    }
}

/// Resource discovery.
pub mod rd {
    pub mod v1 {
        tonic::include_proto!("xenoserve.rd.v1");
    }
}

/// The encoded `FileDescriptorSet` of every service, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/xenoserve_descriptor.bin"));
