//! Arbitrary system call sequences against one Linux domain: the input is records of a call
//! number and six arguments (8 bytes each), made by the guest of `taskmgr-vm/tests/fuzz.rs`
//! in a fresh task per input. The VMM must never fail ("internal error"), and nothing outside
//! the session directory may change. Needs /dev/kvm and musl-gcc.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Request;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription, TaskFile};
use xeno_schemas::proto::common::v1::Payload;
use xeno_schemas::proto::taskmanager::v1::{self as pb, domain_event::Event};
use xeno_taskmgr_kit::TaskManager;

const GUEST_C: &str = include_str!("../../../taskmgr-vm/tests/support/fuzz_guest.c");
/// Calls that end the task, sleep, or wait for a signal no one sends (tested on their own):
/// rt_sigreturn, pause, nanosleep, exit, kill, rt_sigsuspend, tkill, clock_nanosleep,
/// exit_group, tgkill. The same list as `taskmgr-vm/tests/fuzz.rs`.
const EXCLUDED: &[u64] = &[15, 34, 35, 60, 62, 130, 200, 230, 231, 234];

struct World {
    manager: xeno_taskmgr_vm::VmTaskManager,
    guest: Vec<u8>,
    _dir: tempfile::TempDir,
    outside: std::path::PathBuf,
}

fn payload(data: Vec<u8>) -> Payload {
    use sha2::{Digest, Sha256};
    Payload {
        sha256: hex::encode(Sha256::digest(&data)),
        data,
    }
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let dir = tempfile::tempdir().expect("dir");
        let source = dir.path().join("guest.c");
        std::fs::write(&source, GUEST_C).expect("source");
        let binary = dir.path().join("guest");
        let status = std::process::Command::new("musl-gcc")
            .args(["-static", "-O1", "-o"])
            .arg(&binary)
            .arg(&source)
            .status()
            .expect("musl-gcc (apt-get install musl-tools)");
        assert!(status.success(), "compiling the guest");
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, b"untouched").expect("outside");
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).expect("scratch");
        let manager = xeno_taskmgr_vm::VmTaskManager::new(xeno_taskmgr_vm::VmConfig::default())
            .expect("the Linux task manager (is /dev/kvm there?)");
        common::runtime().block_on(async {
            manager
                .create_domain(Request::new(pb::CreateDomainRequest {
                    domain_id: "fuzzed".to_owned(),
                    env_type: "Linux".to_owned(),
                    limits: Some(pb::DomainLimits {
                        memory_mb: 64,
                        output_bytes_max: 1 << 20,
                        tasks_max: 4,
                        ..Default::default()
                    }),
                    scratch_dir: scratch.display().to_string(),
                    ..Default::default()
                }))
                .await
                .expect("the fuzzed domain");
        });
        World {
            manager,
            guest: std::fs::read(&binary).expect("guest"),
            _dir: dir,
            outside,
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    static CASE: AtomicU64 = AtomicU64::new(0);
    let world = world();
    let mut cases = Vec::new();
    for record in data.chunks_exact(56) {
        let number = u64::from_le_bytes(record[..8].try_into().expect("8 bytes")) % 512;
        if EXCLUDED.contains(&number) {
            continue;
        }
        cases.extend_from_slice(&number.to_le_bytes());
        cases.extend_from_slice(&record[8..]);
    }
    let program = payload(world.guest.clone());
    let cases = payload(cases);
    let noise = payload(vec![0x5a; 65536]);
    let mut task = TaskDescription::new(Program::Executable {
        sha256: program.sha256.clone(),
    });
    for (path, file) in [("cases.bin", &cases), ("noise.bin", &noise)] {
        task.files.push(TaskFile {
            path: path.to_owned(),
            sha256: file.sha256.clone(),
            mode: 0o644,
        });
    }
    // A sequence may wait for ever as Linux would (a ppoll of nothing, say): the wall-clock
    // limit ends it, which is then one more state the limit is tested in.
    task.wall_clock_seconds = Some(10);
    let task_id = format!("case-{}", CASE.fetch_add(1, Ordering::Relaxed));
    let reason = common::runtime().block_on(async {
        let mut events = world
            .manager
            .stream_output(Request::new(pb::StreamOutputRequest {
                domain_id: "fuzzed".to_owned(),
                from_offset: Default::default(),
                follow: true,
            }))
            .await
            .expect("stream")
            .into_inner();
        let mut payloads = vec![program, cases];
        if noise.sha256 != payloads[1].sha256 {
            payloads.push(noise);
        }
        world
            .manager
            .deploy_task(Request::new(pb::DeployTaskRequest {
                domain_id: "fuzzed".to_owned(),
                task_id: task_id.clone(),
                task_xml: task.to_xml(),
                payloads,
            }))
            .await
            .expect("deploy");
        loop {
            let event = tokio::time::timeout(Duration::from_secs(60), events.next())
                .await
                .expect("the task ends")
                .expect("stream open")
                .expect("event");
            if let Some(Event::TaskEnded(ended)) = event.event
                && ended.task_id == task_id
            {
                return ended.exit.map(|exit| exit.reason).unwrap_or_default();
            }
        }
    });
    assert!(!reason.contains("internal error"), "the VMM failed: {reason}");
    assert_eq!(
        std::fs::read(&world.outside).expect("outside"),
        b"untouched",
        "a call reached outside the session"
    );
});
