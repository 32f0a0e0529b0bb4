//! The environment manager's advertiser: advertises at once, refreshes with higher versions,
//! survives a restart (versions from the clock) and a stored version from the future.

mod support;

use std::sync::Arc;
use std::time::Duration;
use support::{memory_config, wait_for};
use xeno_clients::simulated::SimulatedServer;
use xeno_clients::xis as client;
use xeno_clients::xis::advertiser::{Advertiser, AdvertiserConfig, AdvertiserError, Status};

fn spawn(address: &str, server: &Arc<SimulatedServer>) -> Advertiser {
    let server = Arc::clone(server);
    Advertiser::spawn(
        AdvertiserConfig {
            xis: address.to_owned(),
            refresh_interval_ms: 1000,
        },
        move |version| {
            Ok::<_, std::convert::Infallible>(server.sign(server.advertisement(version)))
        },
    )
    .expect("spawn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertises_refreshes_and_keeps_going_forward() {
    let xis = xeno_xis::daemon::start(memory_config(90))
        .await
        .expect("xis");
    let address = xis.addr.to_string();
    let channel = client::connect(&address).await.expect("connect");
    let server = Arc::new(SimulatedServer::generate());

    let advertiser = spawn(&address, &server);
    let first = advertiser.wait_first().await.expect("first advertisement");
    assert_eq!(first.server_id, server.id);
    let (stored, answer) = client::get_advertisement(channel.clone(), &server.id)
        .await
        .expect("stored");
    assert_eq!(stored.version, first.version);
    assert!(!answer.stale);
    wait_for("a refresh", Duration::from_secs(5), || async {
        matches!(advertiser.status(), Status::Advertised(ref now) if now.version > first.version)
    })
    .await;
    advertiser.stop().await;

    // A restarted environment manager remembers nothing and still goes forward.
    let restarted = spawn(&address, &server);
    let again = restarted.wait_first().await.expect("after a restart");
    assert!(again.version > first.version);
    restarted.stop().await;

    // The XIS holds a version from the future (a clock stepped back): jump past it.
    let future_version = xeno_schemas::clock::now_unix_ms() + 10_000_000;
    client::advertise(
        channel.clone(),
        &server.sign(server.advertisement(future_version)),
    )
    .await
    .expect("future version");
    let jumped = spawn(&address, &server);
    let past = jumped.wait_first().await.expect("jumped past");
    assert_eq!(past.version, future_version + 1);
    jumped.stop().await;
    xis.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_settings_and_an_unreachable_xis_are_reported() {
    let server = Arc::new(SimulatedServer::generate());
    let refused = Advertiser::spawn(
        AdvertiserConfig {
            refresh_interval_ms: 10,
            ..AdvertiserConfig::default()
        },
        |_| Ok::<_, std::convert::Infallible>(SimulatedServer::generate().advertisement(1)),
    );
    assert!(matches!(refused, Err(AdvertiserError::Config(_))));
    // Nothing listens on port 1.
    let unreachable = spawn("127.0.0.1:1", &server);
    let error = unreachable.wait_first().await.expect_err("unreachable");
    assert!(matches!(error, AdvertiserError::Failed(_)), "{error}");
    unreachable.stop().await;
}
