//! `xeno find` against a real XIS node and resource discovery system holding a generated
//! population of signed advertisements: boolean queries over the XIS, ranked suggestions from
//! RD (cheapest, and near this machine placed by its own round trips), and clear refusals of
//! bad queries.

use std::process::Command;
use xeno_schemas::Document;
use xeno_schemas::documents::EnvironmentalRequirements;

fn xeno(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_xeno"))
        .args(args)
        .output()
        .expect("xeno runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_queries_the_xis_and_asks_resource_discovery() {
    let xis_config: xeno_xis::config::Config =
        toml::from_str("listen = \"127.0.0.1:0\"\npersist = false").expect("xis config");
    let xis = xeno_xis::daemon::start(xis_config).await.expect("xis");
    let xis_address = xis.addr.to_string();
    let population = xeno_clients::simulated::population::generate(200, 7);
    let channel = xeno_clients::xis::connect(&xis_address)
        .await
        .expect("channel");
    for server in &population {
        xeno_clients::xis::advertise_xml(channel.clone(), server.signed_xml(1))
            .await
            .expect("advertised");
    }
    let rd_config: xeno_rd::config::Config = toml::from_str(&format!(
        "listen = \"127.0.0.1:0\"\nxis = {xis_address:?}\n"
    ))
    .expect("rd config");
    let rd = xeno_rd::daemon::start(rd_config).await.expect("rd");
    rd.sync_now(true).await.expect("sync");
    let rd_address = rd.addr.to_string();

    // An exact term: as many servers as the population has running Wasm.
    let wasm = population
        .iter()
        .filter(|s| {
            s.advertisement
                .environments
                .iter()
                .any(|e| e.env_type == "Wasm")
        })
        .count();
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let xis_address = xis_address.clone();
        move || xeno(&["find", "--xis", &xis_address, "EnvType=Wasm"])
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("{wasm} servers match EnvType=Wasm")),
        "{stdout}"
    );
    assert_eq!(stdout.lines().count(), wasm + 1);

    // A root file system image: the servers whose Linux environment offers it.
    let imaged = population
        .iter()
        .filter(|s| {
            s.advertisement.environments.iter().any(|e| {
                e.images
                    .iter()
                    .any(|i| i == xeno_clients::simulated::population::DEBIAN_IMAGE)
            })
        })
        .count();
    assert!(imaged > 0);
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let xis_address = xis_address.clone();
        move || xeno(&["find", "--xis", &xis_address, "Image=debian-12-python"])
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!("{imaged} servers match Image=debian-12-python")),
        "{stdout}"
    );

    // And / or combine lookups client-side: a conjunction finds no more than either term.
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let xis_address = xis_address.clone();
        move || {
            xeno(&[
                "find",
                "--xis",
                &xis_address,
                "EnvType=Wasm EnvType=Linux | Currency=EUR",
            ])
        }
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{stderr}");
    let both = population
        .iter()
        .filter(|s| {
            let types: Vec<&str> = s
                .advertisement
                .environments
                .iter()
                .map(|e| e.env_type.as_str())
                .collect();
            let eur = s
                .advertisement
                .price_sheets
                .iter()
                .any(|sheet| sheet.currency.to_string() == "EUR");
            (types.contains(&"Wasm") && types.contains(&"Linux")) || eur
        })
        .count();
    assert!(
        stdout.starts_with(&format!("{both} servers match")),
        "expected {both}: {stdout}"
    );

    // A malformed range is refused as such (exit 1), naming the problem.
    let (code, _, stderr) = tokio::task::spawn_blocking({
        let xis_address = xis_address.clone();
        move || xeno(&["find", "--xis", &xis_address, "CPUmsps=150..100"])
    })
    .await
    .expect("join");
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("CPUmsps"), "{stderr}");

    // Resource discovery ranks the cheapest servers for the requirements, cheapest first.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("requirements.xml");
    let mut requirements = EnvironmentalRequirements::new("find test", "Wasm");
    requirements.qos.cpu_msps = Some(100);
    requirements.qos.memory_mb = Some(64);
    std::fs::write(&path, requirements.to_xml()).expect("write");
    let path_text = path.display().to_string();
    let rd_for_cheapest = rd_address.clone();
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        xeno(&[
            "find",
            "--rd",
            &rd_for_cheapest,
            "-f",
            &path_text,
            "--objective",
            "cheapest",
            "--duration",
            "3600",
            "--budget",
            "100.00 GBP",
            "--max",
            "5",
        ])
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("5 suggestions"), "{stdout}");
    let costs: Vec<f64> = lines[1..]
        .iter()
        .map(|line| {
            let after = line.split("cost ").nth(1).expect("a cost");
            after
                .split(' ')
                .next()
                .expect("amount")
                .parse()
                .expect("number")
        })
        .collect();
    assert!(
        costs.windows(2).all(|pair| pair[0] <= pair[1]),
        "cheapest first: {costs:?}"
    );

    // Near this machine: three servers really listening on loopback, advertised far from the
    // generated population in the coordinate space. `--locate-via` places this machine by
    // round trips to them (the population's endpoints do not answer), so they come first.
    let mut listeners = Vec::new();
    let mut landmarks = Vec::new();
    for (index, mut landmark) in xeno_clients::simulated::population::generate(3, 99)
        .into_iter()
        .enumerate()
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("listener");
        let offset = f64::from(u32::try_from(index).expect("small")) * 0.05;
        let coordinates = xeno_clients::vivaldi::Coordinates {
            components: vec![3000.0 + offset, 3000.0, 3000.0],
            height: 0.05,
        };
        landmark.advertisement.endpoint = listener.local_addr().expect("addr").to_string();
        landmark.advertisement.coordinates = Some(coordinates.to_advertised(0.05));
        landmark.advertisement.environments = vec![xeno_schemas::documents::Environment {
            env_type: "Wasm".to_owned(),
            versions: Vec::new(),
            images: Vec::new(),
        }];
        let load = landmark
            .advertisement
            .load
            .get_or_insert_with(Default::default);
        load.available_cpu_msps = Some(4000);
        load.available_memory_mb = Some(4096);
        xeno_clients::xis::advertise_xml(channel.clone(), landmark.signed_xml(1))
            .await
            .expect("landmark advertised");
        landmarks.push(landmark.server.id.clone());
        listeners.push(listener);
    }
    rd.sync_now(true).await.expect("sync");
    let accepting: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    drop(stream);
                }
            })
        })
        .collect();
    let (code, stdout, stderr) = tokio::task::spawn_blocking({
        let (rd_address, xis_address, path) = (
            rd.addr.to_string(),
            xis_address.clone(),
            path.display().to_string(),
        );
        move || {
            xeno(&[
                "find",
                "--rd",
                &rd_address,
                "-f",
                &path,
                "--objective",
                "near",
                "--locate-via",
                &xis_address,
                "--max",
                "3",
            ])
        }
    })
    .await
    .expect("join");
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("this machine placed by"), "{stderr}");
    let suggested: std::collections::BTreeSet<&str> = stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(1)?.split('@').next())
        .collect();
    let expected: std::collections::BTreeSet<&str> = landmarks.iter().map(String::as_str).collect();
    assert_eq!(suggested, expected, "{stdout}");
    for task in accepting {
        task.abort();
    }
    rd.shutdown().await;
    xis.shutdown().await;
}
