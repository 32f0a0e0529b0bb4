//! A XenoServer's RPC surface fed arbitrary messages, as a client may send them: raw bytes,
//! and requests about a live session with arbitrary documents and payloads. Every answer is
//! one the protocol documents (never INTERNAL or UNKNOWN), and the server keeps serving. The
//! same cases run unbounded under cargo-fuzz (`tests/fuzz`, target `server_rpc`).

mod platform;

use platform::*;
use proptest::prelude::*;
use prost::Message;
use xeno_clients::transport::{Peer, connect};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::server::v1 as server;

/// Cases in the ordinary test run.
const CASES: u32 = 300;

/// A request of method `method` about `session`, with arbitrary contents from `bytes`.
fn about(method: u8, session: &str, bytes: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(bytes).into_owned();
    match method % 7 {
        1 => server::CreateSessionRequest {
            requirements_xml: text.clone(),
            purchase_order_xml: text,
        }
        .encode_to_vec(),
        2 => server::DeployTaskRequest {
            session_id: session.to_owned(),
            task_xml: text,
            payloads: vec![common::Payload {
                sha256: hex::encode(bytes.get(..32).unwrap_or_default()),
                data: bytes.to_vec(),
            }],
        }
        .encode_to_vec(),
        3 => server::WatchSessionRequest {
            session_id: session.to_owned(),
            from_offset: std::iter::once((text, u64::from(bytes.len() as u32))).collect(),
            follow: false,
        }
        .encode_to_vec(),
        4 => server::TaskStatusRequest {
            session_id: session.to_owned(),
            task_id: text,
        }
        .encode_to_vec(),
        // Destroying the live session would leave the other cases nothing to meet.
        5 => server::DestroySessionRequest { session_id: text }.encode_to_vec(),
        _ => bytes.to_vec(),
    }
}

#[test]
fn arbitrary_messages_get_documented_answers() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let dir = tempfile::tempdir().expect("dir");
    let (corp, server, channel, session) = runtime.block_on(async {
        let corp = corp_in_process(dir.path(), "corp-z").await;
        let address = corp.grpc_addr.to_string();
        let ca = corp.ca_certificate_pem.clone();
        let client = register_client(&address, &ca, "Fuzz").await;
        let party = register_server(&address, &ca, "fuzzed").await;
        deposit(&corp.admin_socket, &client.id, 100 * POUND).await;
        let config = server_config(
            &dir.path().join("server"),
            "corp-z",
            &address,
            &ca,
            &party,
            "127.0.0.1:0",
            "[[task_managers]]\nenv_type = \"Wasm\"\nbuiltin = \"wasm\"\n",
        );
        let server = xeno_envmgr::daemon::start(toml::from_str(&config).expect("config"))
            .await
            .expect("server");
        let channel = connect(
            &server.grpc_addr.to_string(),
            &ca,
            Some(&client.credentials),
            &Peer::Server(server.server_id.clone()),
        )
        .await
        .expect("server");
        let order = order(&address, &ca, &client, POUND, 3600, &party.id).await;
        let session = xeno_schemas::proto::server::v1::xeno_server_client::XenoServerClient::new(
            channel.clone(),
        )
        .create_session(server::CreateSessionRequest {
            requirements_xml: requirements(100, 16),
            purchase_order_xml: xeno_schemas::Document::to_xml(&order),
        })
        .await
        .expect("a session for the cases")
        .into_inner()
        .session_id;
        (corp, server, channel, session)
    });
    let mut runner = proptest::test_runner::TestRunner::new(proptest::test_runner::Config {
        cases: CASES,
        failure_persistence: None,
        ..proptest::test_runner::Config::default()
    });
    let strategy = (
        any::<u8>(),
        any::<bool>(),
        proptest::collection::vec(any::<u8>(), 0..1024),
    );
    let result = runner.run(&strategy, |(method, structured, bytes)| {
        let body = if structured {
            about(method, &session, &bytes)
        } else {
            bytes
        };
        let outcome =
            runtime.block_on(xeno_tests::fuzz::server_case(channel.clone(), method, body));
        prop_assert!(outcome.is_ok(), "{}", outcome.err().unwrap_or_default());
        Ok(())
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
    runtime.block_on(async {
        server.shutdown().await;
        corp.shutdown().await;
    });
}
