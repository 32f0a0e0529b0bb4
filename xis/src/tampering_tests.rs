//! What a reader does when the XIS itself is not honest: records planted in its store or
//! forged into its log, past the checks Advertise makes. These reach into the store, so they
//! live inside the crate.

use crate::config::{Backend, Config};
use crate::daemon::{RunningXis, start as start_xis};
use tonic::transport::Channel;
use xeno_clients::simulated::SimulatedServer;
use xeno_clients::xis as client;
use xeno_schemas::clock::now_unix_ms as now_ms;
use xeno_schemas::documents::{Document, ServerAdvertisement};
use xeno_schemas::proto::xis::v1 as pb;

fn memory_config(ttl_seconds: u64) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("a socket address"),
        backend: Backend::Memory,
        persist: false,
        ttl_seconds,
        sweep_interval_ms: 100,
        ..Config::default()
    }
}

async fn start(config: Config) -> (RunningXis, Channel) {
    let xis = start_xis(config).await.expect("xis starts");
    let channel = client::connect(&xis.addr.to_string())
        .await
        .expect("connect");
    (xis, channel)
}

async fn advertise(channel: &Channel, xml: String) -> Result<pb::AdvertiseResponse, tonic::Status> {
    pb::xis_client::XisClient::new(channel.clone())
        .advertise(pb::AdvertiseRequest {
            advertisement_xml: xml,
        })
        .await
        .map(tonic::Response::into_inner)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_refuse_what_a_dishonest_xis_serves() {
    let (xis, channel) = start(memory_config(90)).await;
    let honest = SimulatedServer::generate();
    let other = SimulatedServer::generate();
    advertise(&channel, honest.signed_xml(1, |_| {}))
        .await
        .expect("advertise");
    client::get_advertisement(channel.clone(), &honest.id)
        .await
        .expect("the honest record verifies");

    // Written straight into the store, past the checks the XIS makes on Advertise.
    let plant = |advertisement: &ServerAdvertisement, xml: &str, as_id: &str| {
        let mut record = crate::core::record_for(advertisement, xml, now_ms()).expect("record");
        record.server_id = as_id.to_owned();
        record
    };
    let signed =
        ServerAdvertisement::parse(honest.signed_xml(2, |_| {}).as_bytes()).expect("parse");
    let mut altered = signed.clone();
    altered.endpoint = "attacker.example.net:7443".to_owned();
    let altered_xml = altered.to_canonical();
    xis.core
        .store()
        .put(plant(&altered, &altered_xml, &honest.id))
        .await
        .expect("planted");
    let error = client::get_advertisement(channel.clone(), &honest.id)
        .await
        .expect_err("an altered record");
    assert!(
        matches!(error, client::ClientError::Forged { .. })
            && error.to_string().contains("signature"),
        "{error}"
    );

    // The honest server's genuine record, served as another server's.
    let genuine_xml = signed.to_canonical();
    xis.core
        .store()
        .put(plant(&signed, &genuine_xml, &other.id))
        .await
        .expect("planted");
    let error = client::get_advertisement(channel.clone(), &other.id)
        .await
        .expect_err("a record under another name");
    assert!(error.to_string().contains(&honest.id), "{error}");
    xis.shutdown().await;
}

/// The embedded log used to be replayed without checking signatures: a record forged into the
/// data directory was served, and hid the genuine server it named.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_record_in_the_log_is_not_served_after_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = Config {
        persist: true,
        data_dir: dir.path().to_owned(),
        ..memory_config(90)
    };
    let genuine = SimulatedServer::generate();
    let (xis, channel) = start(config.clone()).await;
    advertise(&channel, genuine.signed_xml(1, |_| {}))
        .await
        .expect("genuine advertisement");
    xis.shutdown().await;

    // Mallory writes a record for the genuine server (a higher version, her own endpoint),
    // signed with her key, and one with the genuine key's signature over other content.
    let mallory = SimulatedServer::generate();
    let mut forged = mallory.advertisement(9);
    forged.server_id = genuine.id.clone();
    forged.endpoint = "mallory.example:7443".to_owned();
    forged.signature = Some(mallory.key.sign(&forged.signed_bytes()).expect("signing"));
    let mut tampered = genuine.advertisement(10);
    tampered.signature = Some(genuine.key.sign(&tampered.signed_bytes()).expect("signing"));
    tampered.endpoint = "mallory.example:7443".to_owned();
    let mut bytes = Vec::new();
    for advertisement in [&forged, &tampered] {
        crate::store::log::encode(now_ms(), &advertisement.to_xml(), &mut bytes);
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(crate::store::log::log_path(dir.path()))
        .expect("log")
        .write_all(&bytes)
        .expect("append");

    let (xis, channel) = start(config).await;
    let (advertisement, _): (ServerAdvertisement, _) =
        client::get_advertisement(channel.clone(), &genuine.id)
            .await
            .expect("the genuine record");
    assert_eq!(
        (advertisement.version, advertisement.endpoint.as_str()),
        (1, genuine.advertisement(1).endpoint.as_str()),
        "the forged records were skipped"
    );
    xis.shutdown().await;
}
