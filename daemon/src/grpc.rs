//! What every daemon's gRPC server offers beside its own service: health (`grpc.health.v1`,
//! serving once the service is up) and reflection over all the platform's protos.

use anyhow::Context;
use tonic::server::NamedService;
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_reflection::pb::v1::server_reflection_server::{
    ServerReflection, ServerReflectionServer,
};

/// Health reporting `S` as serving, and reflection, to add to a daemon's server.
pub async fn health_and_reflection<S: NamedService>() -> anyhow::Result<(
    HealthServer<impl Health>,
    ServerReflectionServer<impl ServerReflection>,
)> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<S>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(xeno_schemas::proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    Ok((health_service, reflection))
}
