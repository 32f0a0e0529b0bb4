//! C programs built at test time with Debian's clang and wasi-libc: output, arguments and
//! environment, files shipped with the task, the filesystem sandbox, memory exhaustion.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;
use support::*;
use tonic::Request;
use xeno_schemas::proto::common::v1::TaskState;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::TaskManager;
use xeno_taskmgr_wasm::WasmTaskManager;

const WAIT: Duration = Duration::from_secs(30);

async fn domain_in(manager: &WasmTaskManager, id: &str, scratch: &Path, memory_mb: u64) {
    manager
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: id.into(),
            env_type: "Wasm".into(),
            limits: Some(limits(500, memory_mb)),
            scratch_dir: scratch.display().to_string(),
            ..Default::default()
        }))
        .await
        .expect("domain created");
}

#[tokio::test]
async fn c_hello_prints_exactly() {
    let Some(module) = compile_c(
        "hello",
        r#"#include <stdio.h>
int main(void) { printf("Hello from C\n"); fprintf(stderr, "to stderr\n"); return 0; }"#,
    ) else {
        return;
    };
    let manager = manager();
    create_domain(&manager, "d", limits(500, 16)).await;
    deploy(&manager, "d", "hello", &module, "", vec![])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "hello", WAIT).await;
    assert_eq!(finished.stdout_text(), "Hello from C\n");
    assert_eq!(String::from_utf8_lossy(&finished.stderr), "to stderr\n");
    assert_eq!(
        (finished.state(), finished.exit.exit_code),
        (TaskState::Exited, 0)
    );
}

#[tokio::test]
async fn arguments_and_environment_are_exactly_the_tasks() {
    let Some(module) = compile_c(
        "args",
        r#"#include <stdio.h>
extern char **environ;
int main(int argc, char **argv) {
    for (int i = 0; i < argc; i++) printf("argv[%d]=%s\n", i, argv[i]);
    for (char **e = environ; *e; e++) printf("env %s\n", *e);
    return argc;
}"#,
    ) else {
        return;
    };
    let manager = manager();
    create_domain(&manager, "d", limits(500, 16)).await;
    let rest = r#"<Argv0>prog</Argv0><Args><Arg>one</Arg><Arg>two words</Arg></Args><Env><Var name="GREETING">hello world</Var><Var name="EMPTY"></Var></Env>"#;
    deploy(&manager, "d", "args", &module, rest, vec![])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "args", WAIT).await;
    assert_eq!(
        finished.stdout_text(),
        "argv[0]=prog\nargv[1]=one\nargv[2]=two words\nenv GREETING=hello world\nenv EMPTY=\n"
    );
    assert_eq!(finished.exit.exit_code, 3);

    // Without Argv0, argv[0] is the task's name, or "task.wasm".
    let named = r#"<Name>calculator</Name>"#;
    let xml = format!(
        r#"<TaskDescription>{named}<WasmModule sha256="{}"/></TaskDescription>"#,
        sha256(&module)
    );
    let request = deploy_request("d", "named", xml, vec![module.clone()]);
    manager
        .deploy_task(Request::new(request))
        .await
        .expect("deployed");
    assert_eq!(
        wait_end(&manager, "d", "named", WAIT).await.stdout_text(),
        "argv[0]=calculator\n"
    );
    deploy(&manager, "d", "anonymous", &module, "", vec![])
        .await
        .expect("deployed");
    assert_eq!(
        wait_end(&manager, "d", "anonymous", WAIT)
            .await
            .stdout_text(),
        "argv[0]=task.wasm\n"
    );
}

#[tokio::test]
async fn files_are_placed_and_the_task_reads_and_writes_them() {
    let Some(module) = compile_c(
        "files",
        r#"#include <stdio.h>
#include <ctype.h>
int main(void) {
    FILE *in = fopen("/in/data.txt", "r");
    if (!in) { perror("open in/data.txt"); return 1; }
    FILE *out = fopen("/out.txt", "w");
    if (!out) { perror("open out.txt"); return 2; }
    int c;
    while ((c = fgetc(in)) != EOF) fputc(toupper(c), out);
    fclose(in);
    fclose(out);
    printf("copied\n");
    return 0;
}"#,
    ) else {
        return;
    };
    let scratch = tempfile::tempdir().expect("scratch");
    let manager = manager();
    domain_in(&manager, "d", scratch.path(), 16).await;
    let data = b"metered slices of machines\n".to_vec();
    let rest = format!(
        r#"<Files><File path="/in/data.txt" sha256="{}" mode="0640"/></Files>"#,
        sha256(&data)
    );
    deploy(&manager, "d", "files", &module, &rest, vec![data])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "files", WAIT).await;
    assert_eq!(
        finished.stdout_text(),
        "copied\n",
        "stderr: {}",
        String::from_utf8_lossy(&finished.stderr)
    );
    let placed = scratch.path().join("in/data.txt");
    assert_eq!(
        std::fs::metadata(&placed)
            .expect("placed")
            .permissions()
            .mode()
            & 0o7777,
        0o600,
        "a session's host files carry their owner's bits only (0640 asked)"
    );
    assert_eq!(
        std::fs::read_to_string(scratch.path().join("out.txt")).expect("written"),
        "METERED SLICES OF MACHINES\n"
    );
}

const ESCAPES: &str = r#"#include <stdio.h>
#include <errno.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
static void try_open(const char *path, int flags) {
    int fd = open(path, flags, 0644);
    if (fd >= 0) { printf("OPENED %s\n", path); close(fd); return; }
    printf("%s: %s\n", path, errno == ENOENT ? "ENOENT" : errno == EACCES ? "EACCES" : errno == EPERM ? "EPERM" : errno == ENOTCAPABLE ? "ENOTCAPABLE" : strerror(errno));
}
int main(void) {
    try_open("/etc/passwd", O_RDONLY);
    try_open("../secret.txt", O_RDONLY);
    try_open("../../../../etc/passwd", O_RDONLY);
    try_open("/../secret.txt", O_RDONLY);
    try_open("../escaped.txt", O_WRONLY | O_CREAT);
    try_open("link-abs", O_RDONLY);
    try_open("link-rel", O_RDONLY);
    try_open("link-rel", O_WRONLY | O_TRUNC);
    symlink("/etc/passwd", "mine-abs");
    symlink("../secret.txt", "mine-rel");
    try_open("mine-abs", O_RDONLY);
    try_open("mine-rel", O_RDONLY);
    try_open("inside.txt", O_WRONLY | O_CREAT);
    return 0;
}"#;

#[tokio::test]
async fn nothing_outside_the_scratch_directory_is_reachable() {
    let Some(module) = compile_c("escapes", ESCAPES) else {
        return;
    };
    // parent/secret.txt sits next to the scratch directory parent/scratch.
    let parent = tempfile::tempdir().expect("parent");
    let scratch = parent.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    std::fs::write(parent.path().join("secret.txt"), "secret").expect("secret");
    std::os::unix::fs::symlink("/etc/passwd", scratch.join("link-abs"))
        .expect("plant absolute link");
    std::os::unix::fs::symlink("../secret.txt", scratch.join("link-rel"))
        .expect("plant relative link");

    let manager = manager();
    domain_in(&manager, "d", &scratch, 16).await;
    deploy(&manager, "d", "escape", &module, "", vec![])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "escape", WAIT).await;
    let output = finished.stdout_text();
    println!("{output}");
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(lines.len(), 11, "{output}");
    for line in &lines[..10] {
        let refused = ["ENOENT", "EACCES", "EPERM", "ENOTCAPABLE"]
            .iter()
            .any(|errno| line.ends_with(errno));
        assert!(refused, "escaped the sandbox: {line}");
    }
    assert_eq!(
        lines[0], "/etc/passwd: ENOENT",
        "absolute paths resolve inside the session"
    );
    assert_eq!(lines[10], "OPENED inside.txt");

    assert_eq!(
        std::fs::read_to_string(parent.path().join("secret.txt")).expect("secret"),
        "secret"
    );
    let mut outside: Vec<String> = std::fs::read_dir(parent.path())
        .expect("list parent")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    outside.sort();
    assert_eq!(
        outside,
        ["scratch", "secret.txt"],
        "nothing was created outside the scratch directory"
    );
    assert!(scratch.join("inside.txt").exists());
}

#[tokio::test]
async fn a_planted_symlink_cannot_redirect_shipped_files() {
    let Some(module) = compile_c("noop", "int main(void) { return 0; }") else {
        return;
    };
    let parent = tempfile::tempdir().expect("parent");
    let scratch = parent.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch");
    std::fs::create_dir(parent.path().join("victim")).expect("victim dir");
    std::os::unix::fs::symlink(parent.path().join("victim"), scratch.join("dir"))
        .expect("plant dir link");
    std::os::unix::fs::symlink(parent.path().join("victim/file"), scratch.join("file"))
        .expect("plant file link");
    let manager = manager();
    domain_in(&manager, "d", &scratch, 16).await;
    let data = b"payload".to_vec();
    let hash = sha256(&data);
    // Through a symlinked directory: refused.
    let rest = format!(r#"<Files><File path="/dir/file" sha256="{hash}"/></Files>"#);
    let refused = deploy(
        &manager,
        "d",
        "through-dir",
        &module,
        &rest,
        vec![data.clone()],
    )
    .await;
    assert_code(refused, tonic::Code::InvalidArgument, "cannot write file");
    // Onto a symlinked file: the link is replaced, its target untouched.
    let rest = format!(r#"<Files><File path="/file" sha256="{hash}"/></Files>"#);
    deploy(&manager, "d", "onto-link", &module, &rest, vec![data])
        .await
        .expect("deployed");
    assert!(
        std::fs::read_dir(parent.path().join("victim"))
            .expect("victim")
            .next()
            .is_none()
    );
    assert!(
        !std::fs::symlink_metadata(scratch.join("file"))
            .expect("file")
            .file_type()
            .is_symlink()
    );
}

#[tokio::test]
async fn working_dir_is_preopened_and_named_in_pwd() {
    let Some(module) = compile_c(
        "workdir",
        r#"#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    const char *pwd = getenv("PWD");
    printf("PWD=%s\n", pwd ? pwd : "(unset)");
    if (!pwd || chdir(pwd) != 0) { perror("chdir"); return 1; }
    FILE *f = fopen("note.txt", "r");
    if (!f) { perror("note.txt"); return 2; }
    char line[64];
    if (fgets(line, sizeof line, f)) printf("%s", line);
    return 0;
}"#,
    ) else {
        return;
    };
    let scratch = tempfile::tempdir().expect("scratch");
    let manager = manager();
    domain_in(&manager, "d", scratch.path(), 16).await;
    let note = b"found it\n".to_vec();
    let rest = format!(
        r#"<WorkingDir>/work/dir</WorkingDir><Files><File path="/work/dir/note.txt" sha256="{}"/></Files>"#,
        sha256(&note)
    );
    deploy(&manager, "d", "wd", &module, &rest, vec![note])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "wd", WAIT).await;
    assert_eq!(
        finished.stdout_text(),
        "PWD=/work/dir\nfound it\n",
        "stderr: {}",
        String::from_utf8_lossy(&finished.stderr)
    );
}

#[tokio::test]
async fn a_memory_bomb_meets_the_domain_limit_inside_the_guest() {
    let Some(module) = compile_c(
        "bomb",
        r#"#include <stdio.h>
#include <stdlib.h>
#include <string.h>
static char *blocks[4096];
int main(void) {
    int mib = 0;
    while (mib < 4096) {
        char *block = malloc(1 << 20);
        if (!block) break;
        memset(block, 1, 1 << 20);
        blocks[mib++] = block;
    }
    printf("allocated %d MiB before malloc failed\n", mib);
    return 0;
}"#,
    ) else {
        return;
    };
    let manager = manager();
    create_domain(&manager, "d", limits(0, 8)).await;
    deploy(&manager, "d", "bomb", &module, "", vec![])
        .await
        .expect("deployed");
    let finished = wait_end(&manager, "d", "bomb", WAIT).await;
    assert_eq!(
        finished.state(),
        TaskState::Exited,
        "{}",
        finished.exit.reason
    );
    let text = finished.stdout_text();
    let mib: u64 = text
        .strip_prefix("allocated ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {text:?}"));
    assert!((5..=7).contains(&mib), "{text}");
    let usage = finished.exit.usage.expect("usage");
    assert!(usage.memory_peak_bytes <= 8 * MIB, "{usage:?}");
    assert!(usage.memory_peak_bytes > 6 * MIB, "{usage:?}");
    // The host is fine: the next task in the same domain runs.
    deploy(
        &manager,
        "d",
        "after",
        &hello_module("still here\n"),
        "",
        vec![],
    )
    .await
    .expect("deployed");
    assert_eq!(finished_text(&manager, "after").await, "still here\n");
}

async fn finished_text(manager: &WasmTaskManager, task: &str) -> String {
    wait_end(manager, "d", task, WAIT).await.stdout_text()
}

/// A guest planted `work -> ../../…/<host directory>` (relative targets were allowed, and are:
/// following them out is what must fail), then a second task named `work` as its WorkingDir:
/// the working directory was opened by host path and the guest read and wrote outside its
/// session. It also creates files and directories, which must be private on the host.
#[tokio::test]
async fn a_guest_made_link_never_leads_a_working_directory_out_of_the_session() {
    let Some(planter) = compile_c(
        "planter",
        r#"#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    if (symlink(argv[1], "/work") != 0) { perror("symlink"); return 1; }
    FILE *f = fopen("/mine.txt", "w");
    if (!f) { perror("mine.txt"); return 2; }
    fputs("x", f);
    fclose(f);
    if (mkdir("/made", 0777) != 0) { perror("mkdir"); return 3; }
    printf("planted\n");
    return 0;
}"#,
    ) else {
        return;
    };
    let Some(reader) = compile_c(
        "reader",
        r#"#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(void) {
    FILE *f = fopen("secret.txt", "r");
    if (f) { char line[64]; if (fgets(line, sizeof line, f)) printf("read: %s", line); }
    FILE *g = fopen("planted.txt", "w");
    if (g) printf("wrote beside it\n");
    return 0;
}"#,
    ) else {
        return;
    };
    let outside = tempfile::tempdir().expect("outside");
    std::fs::write(outside.path().join("secret.txt"), "server key\n").expect("secret");
    let scratch = tempfile::tempdir().expect("scratch");
    let manager = manager();
    domain_in(&manager, "d", scratch.path(), 16).await;
    let climb = "../".repeat(40)
        + outside
            .path()
            .to_str()
            .expect("utf-8")
            .trim_start_matches('/');
    let rest = format!("<Args><Arg>{climb}</Arg></Args>");
    deploy(&manager, "d", "plant", &planter, &rest, vec![])
        .await
        .expect("deployed");
    let planted = wait_end(&manager, "d", "plant", WAIT).await;
    assert_eq!(
        planted.stdout_text(),
        "planted\n",
        "stderr: {}",
        String::from_utf8_lossy(&planted.stderr)
    );
    let mode = |path: &str| {
        std::fs::metadata(scratch.path().join(path))
            .expect("host file")
            .permissions()
            .mode()
            & 0o7777
    };
    assert_eq!(mode("mine.txt"), 0o600, "files a task creates are private");
    assert_eq!(mode("made"), 0o700, "directories too");

    let rest = "<WorkingDir>/work</WorkingDir>";
    let outcome = deploy(&manager, "d", "read", &reader, rest, vec![]).await;
    if outcome.is_ok() {
        let finished = wait_end(&manager, "d", "read", WAIT).await;
        assert_eq!(finished.state(), TaskState::Failed, "{:?}", finished.exit);
        assert!(
            finished.exit.reason.contains("WorkingDir"),
            "{}",
            finished.exit.reason
        );
        assert!(
            !finished.stdout_text().contains("read:"),
            "the secret stays out of reach"
        );
    }
    assert!(
        !outside.path().join("planted.txt").exists(),
        "nothing was created outside the session"
    );
}
