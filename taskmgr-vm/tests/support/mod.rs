//! Shared by the Linux task manager's tests: the manager (or a SKIP when `/dev/kvm` is not
//! there), domains, deploying static executables, waiting for their end, and building test
//! programs with musl-gcc or `as` at test time.
#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Request;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription, TaskFile};
use xeno_schemas::proto::common::v1::{OutputStream, Payload, TaskExit, TaskState, Usage};
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::TaskManager;
use xeno_taskmgr_vm::{VmConfig, VmTaskManager};

/// How long a test waits for a task to end.
pub const END_WAIT: Duration = Duration::from_secs(30);

/// Whether `/dev/kvm` can be opened; prints the SKIP line if not.
pub fn kvm_available() -> bool {
    xeno_tests::prerequisite::kvm()
}

/// The manager, or `None` (after printing SKIP) without KVM.
pub fn manager() -> Option<VmTaskManager> {
    if !kvm_available() {
        return None;
    }
    Some(VmTaskManager::new(VmConfig::default()).expect("the Linux task manager starts"))
}

/// A tool's path if installed; SKIP (or, under CI=true, a failure) otherwise.
pub fn tool(path: &str, package: &str) -> Option<PathBuf> {
    if Path::new(path).exists() {
        return Some(PathBuf::from(path));
    }
    xeno_tests::prerequisite::missing(&format!("{path} missing (install {package})"));
    None
}

/// Debian's static busybox.
pub fn busybox() -> Option<Vec<u8>> {
    let path = tool("/bin/busybox", "busybox-static")?;
    let bytes = std::fs::read(path).expect("busybox readable");
    Some(bytes)
}

pub fn payload(data: Vec<u8>) -> Payload {
    Payload {
        sha256: hex::encode(Sha256::digest(&data)),
        data,
    }
}

pub fn limits(cpu_msps: u64, memory_mb: u64) -> pb::DomainLimits {
    pb::DomainLimits {
        cpu_msps,
        memory_mb,
        output_bytes_max: 16 << 20,
        tasks_max: 8,
        ..Default::default()
    }
}

pub fn unique(name: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{name}-{}-{n}", std::process::id())
}

pub async fn create(
    manager: &VmTaskManager,
    limits: pb::DomainLimits,
    scratch: Option<&Path>,
) -> String {
    create_with(manager, limits, scratch, String::new()).await
}

/// A domain made with the session's `requirements_xml`.
async fn create_with(
    manager: &VmTaskManager,
    limits: pb::DomainLimits,
    scratch: Option<&Path>,
    requirements_xml: String,
) -> String {
    let id = unique("domain");
    manager
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: id.clone(),
            env_type: "Linux".into(),
            version: String::new(),
            limits: Some(limits),
            requirements_xml,
            scratch_dir: scratch.map(|p| p.display().to_string()).unwrap_or_default(),
        }))
        .await
        .expect("CreateDomain");
    id
}

pub async fn destroy(manager: &VmTaskManager, domain: &str) -> Usage {
    manager
        .destroy_domain(Request::new(pb::DestroyDomainRequest {
            domain_id: domain.into(),
            reason: "test finished".into(),
        }))
        .await
        .expect("DestroyDomain")
        .into_inner()
        .usage
        .expect("usage")
}

/// A task running `program` (a payload) as `argv0` with `args`, with extra files.
pub struct Guest {
    pub task: TaskDescription,
    pub payloads: Vec<Payload>,
}

impl Guest {
    pub fn new(program: &[u8], argv0: &str, args: &[&str]) -> Guest {
        let program = payload(program.to_vec());
        let mut task = TaskDescription::new(Program::Executable {
            sha256: program.sha256.clone(),
        });
        task.argv0 = Some(argv0.into());
        task.args = args.iter().map(|a| (*a).to_owned()).collect();
        Guest {
            task,
            payloads: vec![program],
        }
    }

    pub fn file(self, path: &str, data: &[u8]) -> Guest {
        self.file_with_mode(path, data, 0o644)
    }

    /// A file the task may execute (mode 0755).
    pub fn executable(self, path: &str, data: &[u8]) -> Guest {
        self.file_with_mode(path, data, 0o755)
    }

    fn file_with_mode(mut self, path: &str, data: &[u8], mode: u32) -> Guest {
        let file = payload(data.to_vec());
        self.task.files.push(TaskFile {
            path: path.into(),
            sha256: file.sha256.clone(),
            mode,
        });
        if !self.payloads.iter().any(|p| p.sha256 == file.sha256) {
            self.payloads.push(file);
        }
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Guest {
        self.task.env.push((name.into(), value.into()));
        self
    }

    pub fn request(&self, domain: &str, task: &str) -> pb::DeployTaskRequest {
        pb::DeployTaskRequest {
            domain_id: domain.into(),
            task_id: task.into(),
            task_xml: self.task.to_xml(),
            payloads: self.payloads.clone(),
        }
    }
}

/// What a task did.
#[derive(Debug)]
pub struct Finished {
    pub exit: TaskExit,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn state(&self) -> TaskState {
        self.exit.state()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

pub async fn deploy(
    manager: &VmTaskManager,
    domain: &str,
    task: &str,
    guest: &Guest,
) -> Result<(), tonic::Status> {
    manager
        .deploy_task(Request::new(guest.request(domain, task)))
        .await
        .map(|_| ())
}

/// Deploys `guest` and waits for it to end.
pub async fn run(manager: &VmTaskManager, domain: &str, task: &str, guest: &Guest) -> Finished {
    let mut events = manager
        .stream_output(Request::new(pb::StreamOutputRequest {
            domain_id: domain.into(),
            from_offset: HashMap::new(),
            follow: true,
        }))
        .await
        .expect("StreamOutput")
        .into_inner();
    deploy(manager, domain, task, guest)
        .await
        .unwrap_or_else(|status| panic!("DeployTask {task}: {status}"));
    let deadline = Instant::now() + END_WAIT;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "task {task} did not end within {END_WAIT:?}; its stdout so far: {:?}, stderr: {:?}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                )
            })
            .expect("stream open")
            .expect("event");
        match event.event {
            Some(pb::domain_event::Event::Output(chunk)) if chunk.task_id == task => {
                if chunk.stream == OutputStream::Stdout as i32 {
                    stdout.extend_from_slice(&chunk.data);
                } else if chunk.stream == OutputStream::Stderr as i32 {
                    stderr.extend_from_slice(&chunk.data);
                }
            }
            Some(pb::domain_event::Event::TaskEnded(ended)) if ended.task_id == task => {
                return Finished {
                    exit: ended.exit.expect("exit"),
                    stdout,
                    stderr,
                };
            }
            _ => {}
        }
    }
}

pub async fn usage(manager: &VmTaskManager, domain: &str) -> pb::ReportUsageResponse {
    manager
        .report_usage(Request::new(pb::ReportUsageRequest {
            domain_id: domain.into(),
        }))
        .await
        .expect("ReportUsage")
        .into_inner()
}

/// Builds a static executable from C with musl-gcc (cached per source for the test run).
pub fn musl_program(name: &str, source: &str) -> Option<Vec<u8>> {
    c_program(("/usr/bin/musl-gcc", "musl-tools"), "-static", name, source)
}

/// Builds a static-PIE executable from C with gcc and glibc.
pub fn glibc_program(name: &str, source: &str) -> Option<Vec<u8>> {
    c_program(("/usr/bin/gcc", "gcc"), "-static-pie", name, source)
}

fn c_program(
    (compiler, package): (&str, &str),
    link: &str,
    name: &str,
    source: &str,
) -> Option<Vec<u8>> {
    let gcc = tool(compiler, package)?;
    let dir = build_dir();
    let c = dir.join(format!("{name}.c"));
    let out = dir.join(name);
    std::fs::write(&c, source).expect("write source");
    let status = Command::new(gcc)
        .args([link, "-O2", "-o"])
        .arg(&out)
        .arg(&c)
        .status()
        .expect("the C compiler runs");
    assert!(status.success(), "{compiler} failed for {name}");
    Some(std::fs::read(out).expect("built program"))
}

/// Builds a static executable from x86-64 assembly (GNU as syntax, entry `_start`).
pub fn asm_program(name: &str, source: &str) -> Option<Vec<u8>> {
    let assembler = tool("/usr/bin/as", "binutils")?;
    let linker = tool("/usr/bin/ld", "binutils")?;
    let dir = build_dir();
    let s = dir.join(format!("{name}.s"));
    let o = dir.join(format!("{name}.o"));
    let out = dir.join(name);
    std::fs::write(&s, source).expect("write source");
    assert!(
        Command::new(assembler)
            .arg("-o")
            .arg(&o)
            .arg(&s)
            .status()
            .expect("as")
            .success()
    );
    assert!(
        Command::new(linker)
            .args(["-static", "-o"])
            .arg(&out)
            .arg(&o)
            .status()
            .expect("ld")
            .success()
    );
    Some(std::fs::read(out).expect("built program"))
}

fn build_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("build dir"))
        .path()
}

/// Runs a program natively with `args` in `dir`, feeding nothing on stdin.
pub fn native(program: &Path, argv0: &str, args: &[&str], dir: &Path) -> (Vec<u8>, i32) {
    use std::os::unix::process::CommandExt;
    let output = Command::new(program)
        .arg0(argv0)
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("native run");
    (output.stdout, output.status.code().unwrap_or(-1))
}

/// The Debian image the image tests run programs from.
pub const TEST_IMAGE: &str = "debian-12-dev";
/// The packages it is built from (with their dependencies), comma-separated: one list for
/// the tests, the images bench and `.ci/run`.
pub const TEST_IMAGE_PACKAGES: &str = include_str!("test-image-packages");

/// Where test images live: `XENO_TEST_IMAGES_DIR`, or a directory kept between runs (an
/// image is about 330 MB and takes ten seconds or so to build).
pub fn test_images_dir() -> PathBuf {
    std::env::var_os("XENO_TEST_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/xeno-test-images"))
}

/// The test image's configuration entry: the one `.ci/run` built (`<dir>/<name>.toml`, as
/// `xenoserver image build` prints it), or one built now. `None` (after SKIP, or a failure
/// under CI) where apt cannot fetch Debian's packages.
pub fn test_image() -> Option<xeno_taskmgr_vm::images::ImageEntry> {
    use xeno_taskmgr_vm::images;
    static ENTRY: OnceLock<Option<images::ImageEntry>> = OnceLock::new();
    ENTRY
        .get_or_init(|| {
            let dir = test_images_dir();
            std::fs::create_dir_all(&dir).expect("test images directory");
            // One builder at a time across test binaries.
            let lock = std::fs::File::create(dir.join(".lock")).expect("lock file");
            rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
            let record = dir.join(format!("{TEST_IMAGE}.toml"));
            let options = images::BuildOptions {
                name: TEST_IMAGE.to_owned(),
                packages: TEST_IMAGE_PACKAGES
                    .trim()
                    .split(',')
                    .map(str::to_owned)
                    .collect(),
                images_dir: dir.clone(),
                recommends: false,
            };
            match images::reuse_or_build(&options, &record, &mut |step| {
                eprintln!("test image: {step}")
            }) {
                Ok(entry) => Some(entry),
                Err(error) => {
                    xeno_tests::prerequisite::missing(&format!(
                        "the test image cannot be built ({error})"
                    ));
                    None
                }
            }
        })
        .clone()
}

/// A manager offering the test image, or `None` (after SKIP) without KVM or the image.
pub fn image_manager() -> Option<VmTaskManager> {
    if !kvm_available() {
        return None;
    }
    let entry = test_image()?;
    let config = VmConfig {
        images_dir: test_images_dir(),
        images: vec![entry],
        ..VmConfig::default()
    };
    Some(VmTaskManager::new(config).expect("the Linux task manager starts with the image"))
}

/// Requirements asking for `image`.
pub fn requirements_with_image(image: &str) -> String {
    format!(
        "<EnvironmentalRequirements><Basic><EnvName>t</EnvName><EnvType>Linux</EnvType>\
         <EnvImage>{image}</EnvImage></Basic></EnvironmentalRequirements>"
    )
}

/// A domain whose `/` is the test image under its scratch directory.
pub async fn create_with_image(manager: &VmTaskManager, limits: pb::DomainLimits) -> String {
    create_with(manager, limits, None, requirements_with_image(TEST_IMAGE)).await
}

impl Guest {
    /// A task running a program already in the domain (from its image) by path.
    pub fn at_path(path: &str, args: &[&str]) -> Guest {
        let mut task = TaskDescription::new(Program::ExecutablePath(path.to_owned()));
        task.args = args.iter().map(|a| (*a).to_owned()).collect();
        Guest {
            task,
            payloads: Vec::new(),
        }
    }
}
