//! The `xis` daemon as operators and tools meet it: gRPC health and reflection, the binary's configuration
//! handling (defaults shown, mistakes named before anything starts).

use std::process::Command;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_healthy() {
    let config: xeno_xis::config::Config =
        toml::from_str("listen = \"127.0.0.1:0\"\npersist = false").expect("config");
    let xis = xeno_xis::daemon::start(config).await.expect("starts");
    let channel = xeno_clients::xis::connect(&xis.addr.to_string())
        .await
        .expect("connect");
    xeno_tests::probe::assert_serving_and_reflected(channel, "xenoserve.xis.v1.Xis").await;
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
