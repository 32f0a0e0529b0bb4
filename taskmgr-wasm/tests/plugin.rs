//! The `xeno-taskmgr-wasm` binary as an external plugin: served on a Unix socket, reached
//! through the environment manager's remote adapter, stopped by SIGTERM.

mod support;

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::{hello_module, sha256};
use tokio_stream::StreamExt;
use tonic::Request;
use xeno_schemas::proto::common::v1::Payload;
use xeno_schemas::proto::taskmanager::v1::{self as pb, domain_event::Event};
use xeno_taskmgr_kit::{RemoteTaskManager, TaskManager};

#[tokio::test]
async fn the_binary_serves_the_plugin_interface_until_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("wasm.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_xeno-taskmgr-wasm"))
        .arg("--socket")
        .arg(&socket)
        .args(["--tasks-max", "16"])
        .stdout(Stdio::null())
        .spawn()
        .expect("plugin starts");
    let started = Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the plugin never listened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let plugin = RemoteTaskManager::connect(&format!("unix:{}", socket.display()))
        .await
        .expect("connects");
    let capabilities = plugin
        .get_capabilities(Request::new(pb::GetCapabilitiesRequest {}))
        .await
        .expect("capabilities")
        .into_inner();
    assert_eq!(capabilities.env_types, ["Wasm"]);

    plugin
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: "remote".into(),
            env_type: "Wasm".into(),
            limits: Some(support::limits(100, 16)),
            ..Default::default()
        }))
        .await
        .expect("domain");
    let module = hello_module("over the socket\n");
    let hash = sha256(&module);
    plugin
        .deploy_task(Request::new(pb::DeployTaskRequest {
            domain_id: "remote".into(),
            task_id: "hello".into(),
            task_xml: support::module_xml(&hash, ""),
            payloads: vec![Payload {
                sha256: hash,
                data: module,
            }],
        }))
        .await
        .expect("deployed");
    let mut events = plugin
        .stream_output(Request::new(pb::StreamOutputRequest {
            domain_id: "remote".into(),
            from_offset: HashMap::new(),
            follow: true,
        }))
        .await
        .expect("stream")
        .into_inner();
    let mut stdout = Vec::new();
    loop {
        let event = tokio::time::timeout(Duration::from_secs(20), events.next())
            .await
            .expect("event in time")
            .expect("stream open")
            .expect("event");
        match event.event {
            Some(Event::Output(chunk)) => stdout.extend(chunk.data),
            Some(Event::TaskEnded(ended)) => {
                assert_eq!(ended.exit.expect("exit").reason, "exit 0");
                break;
            }
            _ => {}
        }
    }
    assert_eq!(stdout, b"over the socket\n");
    let usage = plugin
        .destroy_domain(Request::new(pb::DestroyDomainRequest {
            domain_id: "remote".into(),
            reason: "done".into(),
        }))
        .await
        .expect("destroyed")
        .into_inner()
        .usage
        .expect("usage");
    assert_eq!(usage.output_bytes, 16);

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the plugin ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        status.success(),
        "the plugin exits cleanly on SIGTERM: {status}"
    );
}
