//! A XenoServer's RPC surface, fed arbitrary messages over mutual TLS (`xeno_tests::fuzz`):
//! a corp and a server run in this process for the whole fuzzing run.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;
use xeno_clients::transport::{Credentials, Peer, connect};

struct World {
    channel: tonic::transport::Channel,
    _dir: tempfile::TempDir,
    _corp: xeno_corp::daemon::RunningCorp,
    _server: xeno_envmgr::daemon::RunningServer,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| common::runtime().block_on(start()))
}

async fn start() -> World {
    use xeno_schemas::proto::corp::v1 as corp;
    let dir = tempfile::tempdir().expect("dir");
    let corp = xeno_corp::daemon::start(xeno_corp::config::Config {
        corp_id: "corp-z".to_owned(),
        data_dir: dir.path().join("corp"),
        listen: "127.0.0.1:0".parse().expect("address"),
        web_listen: None,
        ..xeno_corp::config::Config::default()
    })
    .await
    .expect("corp");
    let address = corp.grpc_addr.to_string();
    let ca = corp.ca_certificate_pem.clone();
    let mut anonymous = corp::xeno_corp_client::XenoCorpClient::new(
        connect(&address, &ca, None, &Peer::Corp(None)).await.expect("corp"),
    );
    let (client_key, client_csr) = xeno_clients::identity::key_and_csr("fuzz").expect("csr");
    let client = anonymous
        .register_client(corp::RegisterClientRequest {
            name: "Fuzz".to_owned(),
            address: "1 Fuzz Row".to_owned(),
            charging_details: "card".to_owned(),
            privacy: corp::PrivacyMode::Identified as i32,
            csr_pem: client_csr,
        })
        .await
        .expect("client")
        .into_inner();
    let (server_key, server_csr) = xeno_clients::identity::key_and_csr("server").expect("csr");
    let server = anonymous
        .register_server(corp::RegisterServerRequest {
            owner_name: "Fuzz Hosting".to_owned(),
            owner_address: "2 Fuzz Row".to_owned(),
            payout_details: "bank".to_owned(),
            machine: Some(corp::MachineSpec {
                architecture: "x86_64".to_owned(),
                cpu_cores: 2,
                memory_mb: 4096,
                ..Default::default()
            }),
            csr_pem: server_csr,
            endpoint: "fuzz.test:7443".to_owned(),
        })
        .await
        .expect("server")
        .into_inner();
    let server_dir = dir.path().join("server");
    std::fs::create_dir_all(&server_dir).expect("dir");
    let write = |name: &str, text: &str| {
        let path = server_dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[[corps]]\nid = \"corp-z\"\naddress = \"{address}\"\nca = {:?}\ncertificate = {:?}\nkey = {:?}\n[[task_managers]]\nenv_type = \"Wasm\"\nbuiltin = \"wasm\"\n",
        server_dir.join("state"),
        write("ca.pem", &ca),
        write("cert.pem", &server.certificate_pem),
        write("key.pem", &server_key),
    );
    let running = xeno_envmgr::daemon::start(toml::from_str(&config).expect("config"))
        .await
        .expect("server");
    let credentials = Credentials {
        certificate_pem: client.certificate_pem,
        key_pem: client_key,
    };
    let channel = connect(
        &running.grpc_addr.to_string(),
        &ca,
        Some(&credentials),
        &Peer::Server(running.server_id.clone()),
    )
    .await
    .expect("the server");
    World {
        channel,
        _dir: dir,
        _corp: corp,
        _server: running,
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&method, bytes)) = data.split_first() else {
        return;
    };
    let world = world();
    if let Err(broken) = common::runtime().block_on(xeno_tests::fuzz::server_case(
        world.channel.clone(),
        method,
        bytes.to_vec(),
    )) {
        panic!("{broken}");
    }
});
