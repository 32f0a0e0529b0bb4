//! Peers are authenticated by role and identity, never by host name: a registered server cannot
//! pass for the corp, nor for another server, whatever endpoint it registered.

mod support;

use support::{Backend, TestCorp};
use tonic::Code;
use tonic::transport::{Certificate, ClientTlsConfig, Identity, Server, ServerTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use xeno_clients::transport::{Peer, connect};
use xeno_schemas::proto::corp::v1 as pb;

/// Registers a server claiming `endpoint`; (server id, certificate PEM, key PEM).
async fn register_at(
    corp: &TestCorp,
    endpoint: &str,
) -> Result<(String, String, String), tonic::Status> {
    let (key_pem, csr_pem) = xeno_clients::identity::key_and_csr("mallory").expect("csr");
    corp.anonymous()
        .await
        .register_server(pb::RegisterServerRequest {
            owner_name: "Mallory Hosting".to_owned(),
            owner_address: "3 Middle Street".to_owned(),
            payout_details: "bank".to_owned(),
            machine: Some(pb::MachineSpec {
                architecture: "x86_64".to_owned(),
                cpu_cores: 1,
                memory_mb: 1024,
                ..Default::default()
            }),
            csr_pem,
            endpoint: endpoint.to_owned(),
        })
        .await
        .map(|response| {
            let response = response.into_inner();
            (response.server_id, response.certificate_pem, key_pem)
        })
}

/// A TLS gRPC endpoint on loopback presenting `certificate` (only health, which is enough to
/// tell whether a client would talk to it). Returns its port.
async fn impostor(certificate: &str, key: &str) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let (_, health) = tonic_health::server::health_reporter();
    let router = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(certificate, key)))
        .expect("tls")
        .add_service(health);
    tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await;
    });
    port
}

#[tokio::test]
async fn a_registered_server_cannot_pass_for_the_corp_or_another_server() {
    let mut corp = TestCorp::start(&Backend::Sqlite).await;
    let ca = corp.ca_pem();
    // Mallory registers with an endpoint on the corp's own names.
    let (mallory, certificate, key) = register_at(&corp, "localhost:17100")
        .await
        .expect("registered");
    let port = impostor(&certificate, &key).await;
    let address = format!("localhost:{port}");

    // A client dialling "the corp" at Mallory's address refuses it: it is not the corp.
    let error = connect(&address, &ca, None, &Peer::Corp(None))
        .await
        .expect_err("a server posing as the corp");
    assert!(
        error.to_string().contains("not a corp"),
        "the refusal says why: {error}"
    );
    // Nor is Mallory's certificate valid for any name, so even a client that checks only the
    // CA and the host name (tonic's own TLS) refuses it.
    let by_name = tonic::transport::Channel::from_shared(format!("https://localhost:{port}"))
        .expect("uri")
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&ca))
                .domain_name("localhost"),
        )
        .expect("tls")
        .connect()
        .await;
    assert!(
        by_name.is_err(),
        "a server certificate must name no host (it would pass for the corp's localhost)"
    );

    // Another server chosen by its id is not Mallory either.
    let (victim, _, _) = register_at(&corp, "victim.example:7443")
        .await
        .expect("second server");
    let error = connect(&address, &ca, None, &Peer::Server(victim.clone()))
        .await
        .expect_err("Mallory posing as the victim");
    assert!(
        error
            .to_string()
            .contains(&format!("the peer is server {mallory}, not {victim}")),
        "{error}"
    );
    // Mallory as herself is fine: identity, not refusal of everything.
    let channel = connect(&address, &ca, None, &Peer::Server(mallory.clone()))
        .await
        .expect("the server a client chose, by its id");
    let health = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .expect("health");
    assert_eq!(health.into_inner().status, 1, "SERVING");

    // The real corp is a corp, and not a server.
    connect(&corp.address(), &ca, None, &Peer::corp("corp-t"))
        .await
        .expect("the corp proves its role");
    let error = connect(&corp.address(), &ca, None, &Peer::corp("corp-other"))
        .await
        .expect_err("the wrong corp id");
    assert!(error.to_string().contains("not corp-other"), "{error}");
    let error = connect(&corp.address(), &ca, None, &Peer::AnyServer)
        .await
        .expect_err("the corp is no server");
    assert!(error.to_string().contains("not a server"), "{error}");

    // A second claim on an endpoint, however spelt, is refused.
    let refused = register_at(&corp, "LocalHost:17100")
        .await
        .expect_err("an endpoint already claimed");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    assert!(refused.message().contains(&mallory), "{refused:?}");
    corp.assert_invariants().await;
    corp.stop().await;
}
