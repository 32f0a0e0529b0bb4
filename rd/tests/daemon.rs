//! The `xeno-rd` daemon as operators and tools meet it: gRPC health and reflection, the binary's
//! configuration handling.

use std::process::Command;
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_healthy() {
    let config: xeno_rd::config::Config =
        toml::from_str("listen = \"127.0.0.1:0\"").expect("config");
    let rd = xeno_rd::daemon::start(config).await.expect("starts");
    let channel = xeno_clients::xis::connect(&rd.addr.to_string())
        .await
        .expect("connect");
    xeno_tests::probe::assert_serving_and_reflected(channel, "xenoserve.rd.v1.ResourceDiscovery")
        .await;
    rd.shutdown().await;
}

#[test]
fn the_binary_shows_its_defaults_and_names_bad_settings() {
    let shown = Command::new(env!("CARGO_BIN_EXE_xeno-rd"))
        .arg("--show-config")
        .output()
        .expect("runs");
    assert!(shown.status.success());
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        text.contains("xis = \"127.0.0.1:7300\"") && text.contains("[ranking]"),
        "{text}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rd.toml");
    std::fs::write(&path, "[ranking]\nload_weight = -1.0\n").expect("write");
    let refused = Command::new(env!("CARGO_BIN_EXE_xeno-rd"))
        .arg("--config")
        .arg(&path)
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(error.contains("ranking.load_weight"), "{error}");
}
