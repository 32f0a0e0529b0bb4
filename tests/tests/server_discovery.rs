//! A XenoServer configured with an XIS advertises itself there on start (with what its
//! operator configured under `[advertisement]`), signed and findable by
//! token, refreshes the record with increasing versions, and comes to advertise network
//! coordinates measured against its peers.

mod support;

use std::time::{Duration, Instant};
use support::Platform;

async fn wait_for<T, F>(what: &str, mut probe: impl FnMut() -> F) -> T
where
    F: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_advertise_refresh_and_gain_coordinates() {
    let xis_config: xeno_xis::config::Config =
        toml::from_str("listen = \"127.0.0.1:0\"\npersist = false").expect("xis config");
    let xis = xeno_xis::daemon::start(xis_config).await.expect("xis");
    let settings = format!(
        "[xis]\naddress = \"{}\"\nrefresh_interval_ms = 1000\nprobe_interval_ms = 100\n",
        xis.addr
    );
    // The first server's operator says where it is, what it has and how it is connected.
    let described = format!(
        "{settings}[advertisement]\ncountry = \"GB\"\ncity = \"Cambridge\"\nlatitude = 52.2053\n\
         longitude = 0.1218\ntokens = {{ gpu = \"a100\" }}\n\
         [[advertisement.paths]]\ntoward = \"client-net\"\nhops = [\"edge-1\", \"core-7\"]\n"
    );
    let first = Platform::start(&described).await;
    let second = Platform::start(&settings).await;
    let ids = [
        first.server().server_id.clone(),
        second.server().server_id.clone(),
    ];
    let channel = xeno_clients::xis::connect(&xis.addr.to_string())
        .await
        .expect("xis channel");

    // Both are found by the environment type they run.
    let found = wait_for("both advertisements", || {
        let channel = channel.clone();
        async move {
            let matches = xeno_clients::xis::lookup_all(
                channel,
                "EnvType",
                xeno_clients::xis::exact("Wasm"),
                false,
                100,
            )
            .await
            .expect("lookup");
            (matches.len() == 2).then_some(matches)
        }
    })
    .await;
    for id in &ids {
        assert!(found.iter().any(|m| &m.server_id == id), "{id} not found");
    }

    // What the XIS holds is signed by the server it names, and says where to reach it.
    let (advertisement, _) = xeno_clients::xis::get_advertisement(channel.clone(), &ids[0])
        .await
        .expect("a verified advertisement");
    assert_eq!(advertisement.endpoint, first.server().grpc_addr.to_string());
    assert_eq!(advertisement.corps, vec!["corp-e".to_owned()]);
    let location = advertisement.location.as_ref().expect("location");
    assert_eq!(location.country.as_deref(), Some("GB"));
    assert_eq!(location.longitude.map(|d| d.to_f64()), Some(0.1218));
    assert_eq!(advertisement.paths[0].toward, "client-net");
    assert_eq!(advertisement.paths[0].hops, ["edge-1", "core-7"]);
    let load = advertisement.load.as_ref().expect("load");
    assert!(load.load_average.is_some() && load.cpu_utilisation_percent.is_some());
    // What the operator configured is looked up like anything else, and only this server has it.
    for (token, value) in [("Country", "GB"), ("gpu", "a100")] {
        let matches = xeno_clients::xis::lookup_all(
            channel.clone(),
            token,
            xeno_clients::xis::exact(value),
            false,
            100,
        )
        .await
        .expect("lookup");
        let found: Vec<&str> = matches.iter().map(|m| m.server_id.as_str()).collect();
        assert_eq!(found, [ids[0].as_str()], "{token}={value}");
    }

    // It is refreshed with a higher version, and in time carries coordinates measured against
    // the other server.
    let first_version = advertisement.version;
    let refreshed = wait_for("a refresh with measured coordinates", || {
        let channel = channel.clone();
        let id = ids[0].clone();
        async move {
            let (advertisement, _) = xeno_clients::xis::get_advertisement(channel, &id)
                .await
                .expect("advertisement");
            // A node starts at the origin with error 1 (no confidence); every round trip
            // measured against the other server moves it off the origin and changes the
            // error. (How far the error falls depends on how steady loopback round trips are
            // on a loaded machine, so that is not asserted.)
            let measured = advertisement.coordinates.as_ref().is_some_and(|c| {
                c.components.iter().any(|x| x.to_f64() != 0.0)
                    && c.error.as_ref().is_some_and(|error| error.to_f64() != 1.0)
            });
            (advertisement.version > first_version && measured).then_some(advertisement)
        }
    })
    .await;
    let coordinates = refreshed.coordinates.expect("coordinates");
    assert_eq!(coordinates.components.len(), 3);
    let error = coordinates.error.expect("error estimate").to_f64();
    assert!(
        error.is_finite() && error != 1.0,
        "measured: the error estimate moved from where a node that measured nothing starts"
    );

    let mut first = first;
    let mut second = second;
    for platform in [&mut first, &mut second] {
        if let Some(server) = platform.server.take() {
            server.shutdown().await;
        }
    }
    xis.shutdown().await;
}
