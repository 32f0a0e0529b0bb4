//! Helpers shared by the integration tests: a task manager with a small pool, a domain, task
//! documents, guests in WAT or C, and reading a task's output and exit from StreamOutput.

#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::{Code, Request};
use xeno_schemas::proto::common::v1::{OutputStream, Payload, TaskExit, TaskState, Usage};
use xeno_schemas::proto::taskmanager::v1::{self as pb, domain_event::Event};
use xeno_taskmgr_kit::{EventStream, TaskManager};
use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};

pub const MIB: u64 = 1024 * 1024;

/// A configuration small enough that many test managers fit in one process.
pub fn small_config() -> WasmConfig {
    WasmConfig {
        tasks_max: 64,
        domains_max: 16,
        ..WasmConfig::default()
    }
}

pub fn manager() -> WasmTaskManager {
    WasmTaskManager::new(small_config()).expect("task manager starts")
}

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

pub fn limits(cpu_msps: u64, memory_mb: u64) -> pb::DomainLimits {
    pb::DomainLimits {
        cpu_msps,
        memory_mb,
        ..Default::default()
    }
}

pub async fn create_domain(manager: &WasmTaskManager, id: &str, limits: pb::DomainLimits) {
    manager
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: id.into(),
            env_type: "Wasm".into(),
            limits: Some(limits),
            ..Default::default()
        }))
        .await
        .expect("domain created");
}

/// A TaskDescription running a module with the given hash, plus `rest` (elements after the
/// program, in schema order).
pub fn module_xml(sha256: &str, rest: &str) -> String {
    format!(r#"<TaskDescription><WasmModule sha256="{sha256}"/>{rest}</TaskDescription>"#)
}

pub fn deploy_request(
    domain: &str,
    task: &str,
    xml: String,
    payloads: Vec<Vec<u8>>,
) -> pb::DeployTaskRequest {
    pb::DeployTaskRequest {
        domain_id: domain.into(),
        task_id: task.into(),
        task_xml: xml,
        payloads: payloads
            .into_iter()
            .map(|data| Payload {
                sha256: sha256(&data),
                data,
            })
            .collect(),
    }
}

/// Deploys `module` with `rest` in its description (and `files` as extra payloads).
pub async fn deploy(
    manager: &WasmTaskManager,
    domain: &str,
    task: &str,
    module: &[u8],
    rest: &str,
    files: Vec<Vec<u8>>,
) -> Result<(), tonic::Status> {
    let mut payloads = vec![module.to_vec()];
    payloads.extend(files);
    let request = deploy_request(domain, task, module_xml(&sha256(module), rest), payloads);
    manager.deploy_task(Request::new(request)).await.map(|_| ())
}

/// Follows the domain's events live, from `from` (the start of what is kept by default).
pub async fn stream(
    manager: &WasmTaskManager,
    domain: &str,
    from: HashMap<String, u64>,
) -> EventStream {
    manager
        .stream_output(Request::new(pb::StreamOutputRequest {
            domain_id: domain.into(),
            from_offset: from,
            follow: true,
        }))
        .await
        .expect("stream opens")
        .into_inner()
}

/// What a task wrote and how it ended.
#[derive(Debug, Default)]
pub struct Finished {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub exit: TaskExit,
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn state(&self) -> TaskState {
        self.exit.state()
    }
}

/// Reads the domain's events (from the start of what is kept) until `task` ends.
pub async fn wait_end(
    manager: &WasmTaskManager,
    domain: &str,
    task: &str,
    timeout: Duration,
) -> Finished {
    let mut events = stream(manager, domain, HashMap::new()).await;
    let mut result = Finished::default();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .unwrap_or_else(|_| panic!("task {task} did not end within {timeout:?}"))
            .expect("stream continues")
            .expect("event");
        match event.event {
            Some(Event::Output(chunk)) if chunk.task_id == task => {
                if chunk.stream() == OutputStream::Stderr {
                    result.stderr.extend(chunk.data);
                } else {
                    result.stdout.extend(chunk.data);
                }
            }
            Some(Event::TaskEnded(ended)) if ended.task_id == task => {
                result.exit = ended.exit.expect("exit");
                return result;
            }
            _ => {}
        }
    }
}

pub async fn report(manager: &WasmTaskManager, domain: &str) -> pb::ReportUsageResponse {
    manager
        .report_usage(Request::new(pb::ReportUsageRequest {
            domain_id: domain.into(),
        }))
        .await
        .expect("usage")
        .into_inner()
}

pub async fn task_usage(manager: &WasmTaskManager, domain: &str, task: &str) -> Usage {
    manager
        .inspect_task(Request::new(pb::InspectTaskRequest {
            domain_id: domain.into(),
            task_id: task.into(),
        }))
        .await
        .expect("inspect")
        .into_inner()
        .usage
        .expect("usage")
}

pub async fn stop(manager: &WasmTaskManager, domain: &str, task: &str, reason: &str) {
    manager
        .stop_task(Request::new(pb::StopTaskRequest {
            domain_id: domain.into(),
            task_id: task.into(),
            reason: reason.into(),
        }))
        .await
        .expect("stop");
}

pub async fn destroy(manager: &WasmTaskManager, domain: &str) -> Usage {
    manager
        .destroy_domain(Request::new(pb::DestroyDomainRequest {
            domain_id: domain.into(),
            reason: "test over".into(),
        }))
        .await
        .expect("destroy")
        .into_inner()
        .usage
        .expect("usage")
}

pub fn assert_code<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: Code,
    message_part: &str,
) {
    match result {
        Ok(value) => panic!("expected {code:?} containing {message_part:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "{}", status.message());
            assert!(
                status.message().contains(message_part),
                "{:?} does not contain {message_part:?}",
                status.message()
            );
        }
    }
}

pub fn wat(source: &str) -> Vec<u8> {
    wat::parse_str(source).expect("valid WAT")
}

/// A WASI module that writes `text` to stdout and returns from `_start`.
pub fn hello_module(text: &str) -> Vec<u8> {
    let escaped: String = text.bytes().map(|b| format!("\\{b:02x}")).collect();
    wat(&format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 1)
            (data (i32.const 64) "{escaped}")
            (func (export "_start")
                (i32.store (i32.const 0) (i32.const 64))
                (i32.store (i32.const 4) (i32.const {len}))
                (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#,
        len = text.len()
    ))
}

/// A module that spins forever without calling the host.
pub fn spin_module() -> Vec<u8> {
    wat(r#"(module
        (memory (export "memory") 1)
        (func (export "_start") (loop $spin (br $spin))))"#)
}

/// Where Debian's wasi-libc lives, if installed, and whether clang is there.
fn wasi_sysroot() -> Result<PathBuf, String> {
    if Command::new("clang").arg("--version").output().is_err() {
        return Err("clang is not installed".into());
    }
    let builtins = Command::new("clang")
        .args(["--target=wasm32-wasi", "-print-libgcc-file-name"])
        .output()
        .map_err(|error| format!("clang: {error}"))?;
    let builtins = PathBuf::from(String::from_utf8_lossy(&builtins.stdout).trim());
    if !builtins.exists() {
        return Err(format!(
            "{} is missing (Debian package libclang-rt-dev-wasm32)",
            builtins.display()
        ));
    }
    for sysroot in ["/usr/share/wasi-sysroot", "/usr"] {
        let candidates = [
            Path::new(sysroot).join("lib/wasm32-wasi/libc.a"),
            Path::new(sysroot).join("lib/wasm32-wasip1/libc.a"),
        ];
        if candidates.iter().any(|path| path.exists()) {
            return Ok(PathBuf::from(sysroot));
        }
    }
    Err("wasi-libc is not installed (Debian package wasi-libc)".into())
}

/// Compiles C `source` to a WASI module with Debian's clang and wasi-libc, or `None` (after
/// printing SKIP) if they are missing. Under `CI=true` a missing toolchain fails the test.
pub fn compile_c(name: &str, source: &str) -> Option<Vec<u8>> {
    let sysroot = match wasi_sysroot() {
        Ok(sysroot) => sysroot,
        Err(why) => {
            xeno_tests::prerequisite::missing(&format!("{name}: {why}"));
            return None;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let c_file = dir.path().join(format!("{name}.c"));
    let wasm_file = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&c_file, source).expect("write C source");
    let output = Command::new("clang")
        .arg("--target=wasm32-wasi")
        .arg(format!("--sysroot={}", sysroot.display()))
        .args(["-O2", "-o"])
        .arg(&wasm_file)
        .arg(&c_file)
        .output()
        .expect("clang runs");
    assert!(
        output.status.success(),
        "clang failed for {name}:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    Some(std::fs::read(&wasm_file).expect("read wasm"))
}
