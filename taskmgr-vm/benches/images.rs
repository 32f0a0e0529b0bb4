//! Debian's own programs run from a root file system image in a paravirtual domain, against
//! the same programs run natively and under qemu-user on this machine, in one run:
//! `python3 -c pass` start-up, `gcc hello.c -o hello`, and `make -j2` of a three-file C
//! project. Each figure is the best of five whole runs (for the domain: DeployTask to
//! TaskEnded, so it includes deployment), with the system calls the VMM served.
//!
//! Like for like: the native column runs the image's own files, in a copy of the image's tree
//! entered with `chroot` (this machine's `python3` would load its own site-packages); the
//! qemu column runs the image's first program with `qemu-x86_64 -L <copy>` (what it execs
//! runs natively, as qemu-user does).
//!
//! Run: `cargo bench -p xeno-taskmgr-vm --bench images` (needs /dev/kvm and apt access to
//! build the image once, into `XENO_TEST_IMAGES_DIR` or `/var/tmp/xeno-test-images`, as the
//! tests do; qemu-user for its column). `XENO_BENCH_CASES=python` runs only the cases whose
//! title contains one of the comma-separated words (for profiling one of them).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Request;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1::{TaskState, Usage};
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::TaskManager;
use xeno_taskmgr_vm::images::{self, ImageEntry};
use xeno_taskmgr_vm::{VmConfig, VmTaskManager};

const IMAGE: &str = "debian-12-dev";
/// The test image's packages, as the tests and `.ci/run` build it.
const PACKAGES: &str = include_str!("../tests/support/test-image-packages");
const ROUNDS: usize = 5;

const HELLO_C: &str =
    "#include <stdio.h>\nint main(void) { printf(\"hello, world\\n\"); return 0; }\n";
/// Writes `HELLO_C` into the domain's `/tmp`.
const HELLO_SETUP: &str = "cd /tmp && printf '#include <stdio.h>\\nint main(void) { printf(\"hello, world\\\\n\"); return 0; }\\n' > hello.c";
/// Writes the three-file project into the working directory (the same in every column).
const PROJECT: &str = "printf 'int add(int, int);\\nint mul(int, int);\\n' > ops.h \
    && printf '#include \"ops.h\"\\nint add(int a, int b) { return a + b; }\\n' > add.c \
    && printf '#include \"ops.h\"\\nint mul(int a, int b) { return a * b; }\\n' > mul.c \
    && printf '#include <stdio.h>\\n#include \"ops.h\"\\nint main(void) { printf(\"%%d\\\\n\", add(2, mul(3, 4))); return 0; }\\n' > main.c \
    && printf 'calc: main.o add.o mul.o\\n\\tgcc -o $@ $^\\n%%.o: %%.c ops.h\\n\\tgcc -O2 -c $< -o $@\\n' > Makefile";

fn images_dir() -> PathBuf {
    std::env::var_os("XENO_TEST_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/xeno-test-images"))
}

/// The image the tests use, reused from its record or built now.
fn image() -> Option<ImageEntry> {
    let dir = images_dir();
    let record = dir.join(format!("{IMAGE}.toml"));
    let options = images::BuildOptions {
        name: IMAGE.to_owned(),
        packages: PACKAGES.trim().split(',').map(str::to_owned).collect(),
        images_dir: dir,
        recommends: false,
    };
    match images::reuse_or_build(&options, &record, &mut |step| eprintln!("image: {step}")) {
        Ok(entry) => Some(entry),
        Err(error) => {
            println!("SKIP: the image cannot be built: {error}");
            None
        }
    }
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// Runs `sh -c script` from the image in `domain`; the whole run's time, stdout, usage.
async fn in_domain(
    manager: &VmTaskManager,
    domain: &str,
    task: &str,
    path: &str,
    args: &[&str],
) -> (Duration, Vec<u8>, Usage) {
    let mut description = TaskDescription::new(Program::ExecutablePath(path.to_owned()));
    description.args = args.iter().map(|a| (*a).to_owned()).collect();
    description
        .env
        .push(("PATH".to_owned(), "/usr/bin:/bin".to_owned()));
    let mut events = manager
        .stream_output(Request::new(pb::StreamOutputRequest {
            domain_id: domain.into(),
            from_offset: HashMap::new(),
            follow: true,
        }))
        .await
        .expect("stream")
        .into_inner();
    let started = Instant::now();
    manager
        .deploy_task(Request::new(pb::DeployTaskRequest {
            domain_id: domain.into(),
            task_id: task.into(),
            task_xml: description.to_xml(),
            payloads: Vec::new(),
        }))
        .await
        .expect("deploy");
    let mut stdout = Vec::new();
    while let Some(event) = events.next().await {
        match event.expect("event").event {
            Some(pb::domain_event::Event::Output(chunk))
                if chunk.task_id == task && chunk.stream == 1 =>
            {
                stdout.extend(chunk.data);
            }
            Some(pb::domain_event::Event::TaskEnded(ended)) if ended.task_id == task => {
                let exit = ended.exit.expect("exit");
                assert_eq!(exit.state(), TaskState::Exited, "{task}: {}", exit.reason);
                assert_eq!(exit.exit_code, 0, "{task} failed");
                return (started.elapsed(), stdout, exit.usage.unwrap_or_default());
            }
            _ => {}
        }
    }
    panic!("stream ended before {task} did");
}

/// Runs a host command in `dir`; its time and stdout, or `None` if it failed.
fn host(command: &mut Command, dir: &Path) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let output = command
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let elapsed = started.elapsed();
    if !output.status.success() {
        println!(
            "  {command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        return None;
    }
    Some((elapsed, output.stdout))
}

struct Case {
    title: &'static str,
    /// The command, as `sh -c` runs it in the domain and natively.
    script: String,
    /// What qemu-x86_64 runs (program, args), if it can.
    qemu: Option<(&'static str, Vec<String>)>,
    /// Run before each round, untimed (the same in every column).
    setup: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        println!("SKIP: /dev/kvm unavailable");
        return;
    }
    let Some(entry) = image() else {
        return;
    };
    let entry_digest = entry.digest.clone();
    let manager = VmTaskManager::new(VmConfig {
        images_dir: images_dir(),
        images: vec![entry],
        ..VmConfig::default()
    })
    .expect("manager");
    let work = tempfile::tempdir().expect("dir");
    let native_root = work.path().join("root");
    let image_root = images_dir().join(&entry_digest).join("root");
    let copied = Command::new("cp")
        .arg("-a")
        .arg(&image_root)
        .arg(&native_root)
        .status()
        .is_ok_and(|status| status.success());
    if !copied {
        println!("SKIP: cannot copy the image for the native column");
        return;
    }
    let cases = [
        Case {
            title: "python3 -c pass",
            script: "python3 -c pass".to_owned(),
            qemu: Some(("/usr/bin/python3", vec!["-c".into(), "pass".into()])),
            setup: String::new(),
        },
        Case {
            title: "gcc hello.c -o hello",
            script: "gcc hello.c -o hello".to_owned(),
            qemu: Some((
                "/usr/bin/gcc",
                vec!["hello.c".into(), "-o".into(), "hello".into()],
            )),
            setup: HELLO_SETUP.to_owned(),
        },
        Case {
            title: "make -j2 (three C files and a link)",
            script: "make -s -j2".to_owned(),
            qemu: Some(("/usr/bin/make", vec!["-s".into(), "-j2".into()])),
            setup: format!("mkdir -p /tmp/calc && cd /tmp/calc && rm -f *.o calc && {PROJECT}"),
        },
    ];
    let wanted = std::env::var("XENO_BENCH_CASES").unwrap_or_default();
    let wanted: Vec<&str> = wanted.split(',').filter(|word| !word.is_empty()).collect();
    println!("Debian programs from the image {IMAGE} (best of {ROUNDS} whole runs):");
    for (index, case) in cases.iter().enumerate() {
        if !wanted.is_empty() && !wanted.iter().any(|word| case.title.contains(word)) {
            continue;
        }
        let domain = format!("images-bench-{index}");
        manager
            .create_domain(Request::new(pb::CreateDomainRequest {
                domain_id: domain.clone(),
                env_type: "Linux".into(),
                limits: Some(pb::DomainLimits {
                    memory_mb: 512,
                    output_bytes_max: 1 << 20,
                    tasks_max: 4,
                    ..Default::default()
                }),
                requirements_xml: format!(
                    "<EnvironmentalRequirements><Basic><EnvName>b</EnvName><EnvType>Linux</EnvType>\
                     <EnvImage>{IMAGE}</EnvImage></Basic></EnvironmentalRequirements>"
                ),
                ..Default::default()
            }))
            .await
            .expect("CreateDomain");
        let workdir = match index {
            1 => "/tmp",
            2 => "/tmp/calc",
            _ => "/",
        };
        let native_dir = native_root.join(workdir.trim_start_matches('/'));
        std::fs::create_dir_all(&native_dir).expect("native dir");
        std::fs::write(native_root.join("tmp/hello.c"), HELLO_C).expect("hello.c");
        let chroot = |script: &str| {
            let mut command = Command::new("/usr/sbin/chroot");
            command
                .arg(&native_root)
                .args(["/bin/sh", "-c", &format!("cd {workdir} && {script}")])
                .env_clear()
                .env("PATH", "/usr/bin:/bin");
            command
        };
        let native_setup = if index == 2 {
            format!("rm -f *.o calc && {PROJECT}")
        } else {
            String::new()
        };
        let (mut domain_best, mut native_best, mut qemu_best) =
            (Duration::MAX, Duration::MAX, None::<Duration>);
        let mut calls = 0;
        for round in 0..ROUNDS {
            if !case.setup.is_empty() {
                in_domain(
                    &manager,
                    &domain,
                    &format!("setup-{round}"),
                    "/bin/sh",
                    &["-c", &case.setup],
                )
                .await;
            }
            let script = format!("cd {workdir} && {}", case.script);
            let (time, _, usage) = in_domain(
                &manager,
                &domain,
                &format!("run-{round}"),
                "/bin/sh",
                &["-c", &script],
            )
            .await;
            if time < domain_best {
                domain_best = time;
                calls = usage.syscalls;
            }
            if !native_setup.is_empty() {
                host(&mut chroot(&native_setup), &native_dir);
            }
            if let Some((time, _)) = host(&mut chroot(&case.script), &native_dir) {
                native_best = native_best.min(time);
            }
            if let Some((program, args)) = &case.qemu
                && Path::new("/usr/bin/qemu-x86_64").exists()
            {
                if !native_setup.is_empty() {
                    host(&mut chroot(&native_setup), &native_dir);
                }
                let mut qemu = Command::new("/usr/bin/qemu-x86_64");
                qemu.arg("-L")
                    .arg(&native_root)
                    .arg(native_root.join(program.trim_start_matches('/')))
                    .args(args)
                    .env_clear()
                    .env("PATH", "/usr/bin:/bin");
                if let Some((time, _)) = host(&mut qemu, &native_dir) {
                    qemu_best = Some(qemu_best.map_or(time, |best: Duration| best.min(time)));
                }
            }
        }
        println!("  {}", case.title);
        println!("        native  {}", ms(native_best));
        println!(
            "        domain  {}  ({:.2}x native; {calls} system calls served by the VMM, with sh)",
            ms(domain_best),
            domain_best.as_secs_f64() / native_best.as_secs_f64()
        );
        match qemu_best {
            Some(q) => println!(
                "        qemu    {}  (qemu-x86_64 runs the first program; what it execs runs natively)",
                ms(q)
            ),
            None => println!("        qemu    (not available)"),
        }
        manager
            .destroy_domain(Request::new(pb::DestroyDomainRequest {
                domain_id: domain,
                reason: "bench".into(),
            }))
            .await
            .expect("destroy");
    }
}
