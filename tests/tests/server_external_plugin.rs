//! A task manager plugin in its own process, registered in the server's configuration by the
//! EnvType it serves: the example `Process` plugin (from the `xeno-tests` crate) runs a native
//! program for a session, metered and charged like any other.

mod support;

use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;
use support::*;
use xeno_schemas::Document;
use xeno_schemas::documents::{EnvironmentalRequirements, Program, TaskDescription};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::server::v1 as pb;

struct Plugin(Child);

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let binary = dir.join(name);
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .status()
            .expect("cargo build");
        assert!(status.success(), "building {name}");
    }
    binary
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_plugin_serves_its_env_type() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("process.sock");
    let _plugin = Plugin(
        Command::new(binary("xeno-taskmgr-process", "xeno-process-plugin"))
            .arg("--socket")
            .arg(&socket)
            .spawn()
            .expect("plugin"),
    );
    for _ in 0..200 {
        if socket.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let extra = format!(
        "[metering]\nperiod_ms = 100\ncharge_interval_ms = 300\n[[task_managers]]\nenv_type = \"Wasm\"\nbuiltin = \"wasm\"\n[[task_managers]]\nenv_type = \"Process\"\naddress = \"unix:{}\"\n",
        socket.display()
    );
    let mut platform = Platform::start(&extra).await;
    let server_id = platform.server().server_id.clone();
    let mut server = platform.client.server(&platform).await;
    let status = server
        .query_xeno_server_status(pb::QueryStatusRequest {})
        .await
        .expect("status")
        .into_inner();
    let types: Vec<&str> = status
        .environments
        .iter()
        .map(|e| e.env_type.as_str())
        .collect();
    assert!(
        types.contains(&"Process") && types.contains(&"Wasm"),
        "{types:?}"
    );

    let order = platform.client.order(POUND, &server_id).await;
    let mut requirements = EnvironmentalRequirements::new("native", "Process");
    requirements.qos.cpu_msps = Some(200);
    requirements.qos.memory_mb = Some(256);
    let session = server
        .create_session(pb::CreateSessionRequest {
            requirements_xml: requirements.to_xml(),
            purchase_order_xml: order.to_xml(),
        })
        .await
        .expect("a Process session")
        .into_inner();
    let shell = std::fs::read("/bin/sh").expect("/bin/sh");
    let sha256 = hex::encode(Sha256::digest(&shell));
    let mut task = TaskDescription::new(Program::Executable {
        sha256: sha256.clone(),
    });
    task.argv0 = Some("sh".to_owned());
    task.args = vec![
        "-c".to_owned(),
        "echo native hello; i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done".to_owned(),
    ];
    server
        .deploy_task(pb::DeployTaskRequest {
            session_id: session.session_id.clone(),
            task_xml: task.to_xml(),
            payloads: vec![common::Payload {
                sha256,
                data: shell,
            }],
        })
        .await
        .expect("deploy");
    let events = collect_events(&mut server, &session.session_id, true, |e| {
        matches!(e.event, Some(pb::session_event::Event::TaskEnded(_)))
    })
    .await;
    assert_eq!(stdout_of(&events), "native hello\n");
    let destroyed = server
        .destroy_session(pb::DestroySessionRequest {
            session_id: session.session_id.clone(),
        })
        .await
        .expect("destroy")
        .into_inner();
    assert!(destroyed.usage.expect("usage").cpu_time_us > 0);
    let audit = platform.client.audit(&order.issued.order_id).await;
    assert!(
        !audit.charges.is_empty(),
        "the plugin's session was charged"
    );
    platform.invariants().await;
}
