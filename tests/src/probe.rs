//! What an operator's tools and load balancers ask a daemon, for the daemons' own tests: is the
//! service serving (gRPC health), and which services does it list (gRPC reflection).

use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

/// Whether `service` reports SERVING over gRPC health.
pub async fn serving(channel: Channel, service: &str) -> Result<bool, tonic::Status> {
    let status = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await?
        .into_inner()
        .status;
    Ok(status == ServingStatus::Serving as i32)
}

/// The services the daemon lists over gRPC reflection.
pub async fn reflected_services(channel: Channel) -> Result<Vec<String>, tonic::Status> {
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    match answers
        .message()
        .await?
        .and_then(|answer| answer.message_response)
    {
        Some(MessageResponse::ListServicesResponse(list)) => Ok(list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect()),
        other => Err(tonic::Status::internal(format!(
            "unexpected reflection answer {other:?}"
        ))),
    }
}

/// Asserts that the daemon behind `channel` reports `service` healthy and lists it over
/// reflection.
pub async fn assert_serving_and_reflected(channel: Channel, service: &str) {
    assert!(
        serving(channel.clone(), service).await.expect("health"),
        "{service} is not SERVING"
    );
    let services = reflected_services(channel).await.expect("reflection");
    assert!(services.iter().any(|name| name == service), "{services:?}");
}
