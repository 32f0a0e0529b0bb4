//! `xeno find` against a real XIS node and resource discovery system holding a generated
//! population of signed advertisements: boolean queries over the XIS, ranked suggestions from
//! RD, and clear refusals of bad queries.

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
    let population = xeno_rd::population::generate(200, 7);
    let channel = xeno_xis::client::connect(&xis_address)
        .await
        .expect("channel");
    for server in &population {
        xeno_xis::client::advertise_xml(channel.clone(), server.signed_xml(1))
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
    let (code, stdout, stderr) = tokio::task::spawn_blocking(move || {
        xeno(&[
            "find",
            "--rd",
            &rd_address,
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
    rd.shutdown().await;
    xis.shutdown().await;
}
