//! Every daemon's gRPC server, served one way: its service beside health (`grpc.health.v1`,
//! serving once the service is up) and reflection over all the platform's protos, TLS when
//! configured, undecodable requests answered INVALID_ARGUMENT ([`InvalidRequests`]), on a
//! listener with Nagle's algorithm off, until the daemon's [`Servers`] stop.

mod invalid;

pub use invalid::{InvalidRequests, InvalidRequestsService, undecodable_request};

use crate::Servers;
use anyhow::Context;
use std::convert::Infallible;
use tonic::body::Body;
use tonic::codegen::http;
use tonic::server::NamedService;
use tonic::transport::{Server, ServerTlsConfig};
use tonic_health::pb::health_server::{Health, HealthServer};
use tonic_reflection::pb::v1::server_reflection_server::{
    ServerReflection, ServerReflectionServer,
};

/// Health reporting `S` as serving, and reflection, to add to a daemon's server.
async fn health_and_reflection<S: NamedService>() -> anyhow::Result<(
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

/// Serves `service` with health and reflection on `listener` (over `tls` when given) as one
/// of `servers`, "the gRPC server", until they stop.
pub async fn serve<S>(
    servers: &mut Servers,
    listener: tokio::net::TcpListener,
    tls: Option<ServerTlsConfig>,
    service: S,
) -> anyhow::Result<()>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + NamedService
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let (health, reflection) = health_and_reflection::<S>().await?;
    let mut builder = Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls).context("configuring TLS")?;
    }
    let router = builder
        .layer(InvalidRequests)
        .add_service(health)
        .add_service(reflection)
        .add_service(service);
    let stopped = servers.stopped();
    servers.spawn("the gRPC server", async move {
        Ok(router
            .serve_with_incoming_shutdown(incoming(listener), stopped)
            .await?)
    });
    Ok(())
}

/// The connections a listener accepts, ready for a gRPC server: Nagle's algorithm off, so that
/// small responses are not held back waiting for the peer's delayed acknowledgement (which shows
/// as ~40 ms tail latencies on request/response traffic).
fn incoming(
    listener: tokio::net::TcpListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(|accepted| {
        let stream = accepted?;
        stream.set_nodelay(true)?;
        Ok(stream)
    })
}
