//! The manager's public surface: capabilities, versions (EnvKernel as `uname -r`), the
//! refusal of kernel images, and the `xeno-taskmgr-vm` binary serving it all as an external
//! plugin on a Unix socket.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::*;
use tonic::{Code, Request};
use xeno_schemas::proto::common::v1::TaskState;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::{DynTaskManager, RemoteTaskManager, TaskManager};
use xeno_taskmgr_vm::{DEFAULT_VERSION, SYSCALLS, VmConfig, VmTaskManager};

#[tokio::test(flavor = "multi_thread")]
async fn capabilities_versions_and_uname() {
    let Some(manager) = manager() else { return };
    let caps = manager
        .get_capabilities(Request::new(pb::GetCapabilitiesRequest {}))
        .await
        .expect("capabilities")
        .into_inner();
    assert_eq!(caps.env_types, ["Linux"]);
    assert_eq!(caps.versions, [DEFAULT_VERSION]);
    assert_eq!(caps.program_kinds, ["Executable", "ExecutablePath"]);
    assert!(!caps.reports_fuel);
    assert_eq!(
        caps.system_calls.len(),
        SYSCALLS.len(),
        "the report is the table"
    );
    let rseq = caps
        .system_calls
        .iter()
        .find(|call| call.name == "rseq")
        .expect("rseq is listed");
    assert_eq!((rseq.number, rseq.support.as_str()), (334, "refused"));
    assert!(rseq.note.starts_with("ENOSYS: "), "{rseq:?}");
    let read = &caps.system_calls[0];
    assert_eq!(
        (read.number, read.name.as_str(), read.support.as_str()),
        (0, "read", "full")
    );

    // A manager offering two ABI versions presents the one asked for.
    let two = VmTaskManager::new(VmConfig {
        versions: vec!["6.1.0".into(), "2.4.18".into()],
        ..VmConfig::default()
    })
    .expect("manager");
    let Some(busybox) = busybox() else { return };
    let response = two
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: "old".into(),
            env_type: "Linux".into(),
            version: "2.4.18".into(),
            limits: Some(limits(0, 32)),
            ..Default::default()
        }))
        .await
        .expect("create")
        .into_inner();
    assert_eq!(response.version, "2.4.18");
    let finished = run(
        &two,
        "old",
        "uname",
        &Guest::new(&busybox, "uname", &["-r"]),
    )
    .await;
    assert_eq!(finished.stdout_text(), "2.4.18\n");
    let refused = two
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: "new".into(),
            env_type: "Linux".into(),
            version: "7.0".into(),
            ..Default::default()
        }))
        .await;
    assert_eq!(refused.expect_err("refused").code(), Code::Unimplemented);
}

#[tokio::test(flavor = "multi_thread")]
async fn kernel_images_are_refused_with_a_reason() {
    let Some(manager) = manager() else { return };
    let requirements = "<EnvironmentalRequirements><Basic><EnvName>k</EnvName><EnvType>Linux</EnvType></Basic>\
        <Extensions><KernelImage xmlns=\"urn:example:linux\" sha256=\"00\"/></Extensions></EnvironmentalRequirements>";
    let refused = manager
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: "image".into(),
            env_type: "Linux".into(),
            requirements_xml: requirements.into(),
            ..Default::default()
        }))
        .await
        .expect_err("refused");
    assert_eq!(refused.code(), Code::Unimplemented);
    assert!(
        refused.message().contains("kernel images"),
        "{}",
        refused.message()
    );
}

/// A child process killed (and reaped) when dropped, also while a failed test unwinds.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary on a socket, killed when dropped.
struct Served {
    _child: KillOnDrop,
    _dir: tempfile::TempDir,
    client: DynTaskManager,
}

async fn serve() -> Served {
    let dir = tempfile::tempdir().expect("dir");
    let socket = dir.path().join("vm.sock");
    let child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_xeno-taskmgr-vm"))
            .arg("--socket")
            .arg(&socket)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .spawn()
            .expect("plugin starts"),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let address = format!("unix:{}", socket.display());
    loop {
        if socket.exists()
            && let Ok(client) = RemoteTaskManager::connect(&address).await
        {
            return Served {
                _child: child,
                _dir: dir,
                client: Arc::new(client),
            };
        }
        assert!(
            Instant::now() < deadline,
            "the plugin did not serve {address}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_serves_the_plugin_interface() {
    if !kvm_available() {
        return;
    }
    let Some(busybox) = busybox() else { return };
    let served = serve().await;
    let client = &served.client;
    let caps = client
        .get_capabilities(Request::new(pb::GetCapabilitiesRequest {}))
        .await
        .expect("capabilities")
        .into_inner();
    assert_eq!(caps.env_types, ["Linux"]);
    client
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: "remote".into(),
            env_type: "Linux".into(),
            limits: Some(limits(200, 32)),
            ..Default::default()
        }))
        .await
        .expect("create");
    let guest = Guest::new(&busybox, "echo", &["over", "the", "socket"]);
    client
        .deploy_task(Request::new(guest.request("remote", "echo")))
        .await
        .expect("deploy");
    let deadline = Instant::now() + END_WAIT;
    let exit = loop {
        let inspected = client
            .inspect_task(Request::new(pb::InspectTaskRequest {
                domain_id: "remote".into(),
                task_id: "echo".into(),
            }))
            .await
            .expect("inspect")
            .into_inner();
        if let Some(exit) = inspected.exit {
            break exit;
        }
        assert!(Instant::now() < deadline, "the task did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.state(), TaskState::Exited);
    let usage = client
        .destroy_domain(Request::new(pb::DestroyDomainRequest {
            domain_id: "remote".into(),
            reason: "done".into(),
        }))
        .await
        .expect("destroy")
        .into_inner()
        .usage
        .expect("usage");
    assert_eq!(usage.output_bytes, "over the socket\n".len() as u64);
}
