//! The `xis` daemon as operators and tools meet it: gRPC health and reflection, the binary's configuration
//! handling (defaults shown, mistakes named before anything starts).

use std::process::Command;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The services the daemon lists over gRPC reflection.
async fn reflected_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => list
            .service
            .into_iter()
            .map(|service| service.name)
            .collect(),
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_healthy() {
    let config: xeno_xis::config::Config =
        toml::from_str("listen = \"127.0.0.1:0\"\npersist = false").expect("config");
    let xis = xeno_xis::daemon::start(config).await.expect("starts");
    let channel = xeno_clients::xis::connect(&xis.addr.to_string())
        .await
        .expect("connect");
    let status = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: "xenoserve.xis.v1.Xis".to_owned(),
        })
        .await
        .expect("health")
        .into_inner()
        .status;
    assert_eq!(status, ServingStatus::Serving as i32);
    let services = reflected_services(channel).await;
    assert!(
        services.iter().any(|name| name == "xenoserve.xis.v1.Xis"),
        "{services:?}"
    );
    xis.shutdown().await;
}

#[test]
fn the_binary_shows_its_defaults_and_names_bad_settings() {
    let shown = Command::new(env!("CARGO_BIN_EXE_xis"))
        .arg("--show-config")
        .output()
        .expect("runs");
    assert!(shown.status.success());
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("ttl_seconds = 90") && text.contains("listen = \"127.0.0.1:7300\""),
        "{text}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("xis.toml");
    std::fs::write(&path, "backend = \"redis\"\n").expect("write");
    let refused = Command::new(env!("CARGO_BIN_EXE_xis"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("redis.nodes"), "{error}");
}
