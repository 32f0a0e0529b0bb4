//! Processes in a Linux domain: fork, vfork, execve, wait, process groups and signals
//! between processes, run by C programs and by Debian's busybox shell. Each program's
//! output is compared byte for byte with the same binary run natively; hostile trees (fork
//! bombs, zombie floods, exec loops, a tree left running) stay inside their own domain.

mod support;

use std::time::Instant;
use support::*;
use xeno_schemas::proto::common::v1::TaskState;

/// Exercises fork, exec, wait and signals between processes; prints what it saw.
const PROCESSES_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t got_usr1, got_chld;
static void on_usr1(int s) { (void)s; got_usr1++; }
static void on_chld(int s) { (void)s; got_chld++; }

static void show(const char *what, int status) {
    if (WIFEXITED(status)) printf("%s: exited %d\n", what, WEXITSTATUS(status));
    else if (WIFSIGNALED(status)) printf("%s: killed by %d\n", what, WTERMSIG(status));
    else printf("%s: status %#x\n", what, status);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1 && strcmp(argv[1], "child") == 0) {
        printf("exec'd child: argv[2]=%s env X=%s ppid-is-parent=%d\n", argv[2], getenv("X"),
               getppid() == atoi(argv[3]));
        /* fd 5 was left open across exec, fd 6 was close-on-exec. */
        printf("fd 5 %s, fd 6 %s\n", fcntl(5, F_GETFD) >= 0 ? "open" : "closed",
               fcntl(6, F_GETFD) >= 0 ? "open" : "closed");
        return 7;
    }
    /* 1. fork: separate memory, the child's exit status. */
    int shared = 1;
    pid_t pid = fork();
    if (pid == 0) { shared = 2; _exit(shared * 10 + 3); }
    int status;
    pid_t got = waitpid(pid, &status, 0);
    printf("fork: waited the right child %d, parent's copy %d\n", got == pid, shared);
    show("child", status);

    /* 2. A pipe from child to parent, and back. */
    int up[2], down[2];
    pipe(up); pipe(down);
    pid = fork();
    if (pid == 0) {
        close(up[0]); close(down[1]);
        char buf[64] = {0};
        ssize_t n = read(down[0], buf, sizeof buf - 1);
        dprintf(up[1], "child heard %zd bytes: %s", n, buf);
        _exit(0);
    }
    close(up[1]); close(down[0]);
    write(down[1], "ping\n", 5);
    close(down[1]);
    char buf[128] = {0};
    ssize_t total = 0, n;
    while ((n = read(up[0], buf + total, sizeof buf - 1 - total)) > 0) total += n;
    printf("parent heard: %s", buf);
    waitpid(pid, &status, 0);
    show("pipe child", status);

    /* 3. exec, with an argument, the environment, descriptors kept and closed. */
    int keep = open("/dev/null", O_RDONLY);
    dup2(keep, 5);
    int drop = open("/dev/null", O_RDONLY | O_CLOEXEC);
    dup2(drop, 6);
    fcntl(6, F_SETFD, FD_CLOEXEC);
    char parent[16];
    snprintf(parent, sizeof parent, "%d", getpid());
    pid = fork();
    if (pid == 0) {
        char *args[] = {argv[0], "child", "hello", parent, NULL};
        char *env[] = {"X=42", NULL};
        execve("bin/procs", args, env);
        printf("execve failed: %s\n", strerror(errno));
        _exit(127);
    }
    waitpid(pid, &status, 0);
    show("exec child", status);

    /* 4. exec errors. */
    char *none[] = {"x", NULL};
    printf("exec of a missing file: %s\n", execve("/no/such", none, none) < 0 ? strerror(errno) : "?");
    printf("exec of a plain file: %s\n", execve("data.txt", none, none) < 0 ? strerror(errno) : "?");

    /* 5. vfork: the parent waits until the child execs. */
    pid = vfork();
    if (pid == 0) {
        char *args[] = {argv[0], "child", "vforked", parent, NULL};
        char *env[] = {"X=vf", NULL};
        execve("bin/procs", args, env);
        _exit(127);
    }
    waitpid(pid, &status, 0);
    show("vfork child", status);

    /* 6. Signals between processes: a handler in the child, SIGCHLD in the parent. */
    signal(SIGCHLD, on_chld);
    int ready[2];
    pipe(ready);
    pid = fork();
    if (pid == 0) {
        signal(SIGUSR1, on_usr1);
        write(ready[1], "r", 1);
        while (!got_usr1) pause();
        _exit(got_usr1);
    }
    char r;
    read(ready[0], &r, 1);
    kill(pid, SIGUSR1);
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
    show("signalled child", status);
    printf("SIGCHLD seen: %d\n", got_chld > 0);

    /* 7. A child killed by a signal, and one spinning until SIGKILL. */
    pid = fork();
    if (pid == 0) { raise(SIGTERM); _exit(0); }
    waitpid(pid, &status, 0);
    show("terminated child", status);
    pid = fork();
    if (pid == 0) { for (;;) {} }
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    show("spinning child", status);

    /* 8. Groups and sessions, WNOHANG, ECHILD. */
    pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        printf("child leads its group: %d, session leader: %d\n", getpgid(0) == getpid(),
               setsid() == getpid() && getsid(0) == getpid());
        _exit(0);
    }
    waitpid(pid, &status, 0);
    printf("WNOHANG with none left: %d, then %s\n", waitpid(-1, &status, WNOHANG),
           waitpid(-1, &status, 0) < 0 ? strerror(errno) : "?");
    /* 9. waitid, and an orphan adopted and reaped. */
    pid = fork();
    if (pid == 0) _exit(5);
    siginfo_t info;
    memset(&info, 0, sizeof info);
    waitid(P_PID, pid, &info, WEXITED);
    printf("waitid: pid right %d, code %d, status %d\n", info.si_pid == pid, info.si_code,
           info.si_status);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn fork_exec_wait_and_signals_behave_as_natively() {
    let (Some(manager), Some(program)) = (manager(), musl_program("procs", PROCESSES_C)) else {
        return;
    };
    // Natively: in a directory laid out as the session will be.
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join("bin")).expect("bin");
    let exe = dir.path().join("bin/procs");
    std::fs::write(&exe, &program).expect("write");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::write(dir.path().join("data.txt"), b"text").expect("data");
    let native_stdout = native_in_root(&exe, dir.path());
    let domain = create(&manager, limits(0, 128), None).await;
    let guest = Guest::new(&program, "/bin/procs", &[])
        .executable("bin/procs", &program)
        .file("data.txt", b"text");
    let finished = run(&manager, &domain, "procs", &guest).await;
    assert_eq!(finished.stdout_text(), native_stdout, "{:?}", finished.exit);
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    assert!(
        finished.exit.unknown_calls.is_empty(),
        "{:?}",
        finished.exit.unknown_calls
    );
    destroy(&manager, &domain).await;
}

/// Runs `exe` natively in `root` (laid out as the session), as `/bin/procs`.
fn native_in_root(exe: &std::path::Path, root: &std::path::Path) -> String {
    let (stdout, _) = native(exe, "/bin/procs", &[], root);
    String::from_utf8_lossy(&stdout).into_owned()
}

/// A shell script of the kinds real ones are made of: command substitution, `&&` and `||`,
/// subshells, a background job and `wait`, `trap` on EXIT, `timeout`, `xargs -P2`, a
/// compressed archive made and unpacked through a pipe, `find | xargs sha256sum`.
const SCRIPT: &str = r#"set -e
echo "start $(echo nested $(echo deeper))"
x=$( (echo sub; echo shell) | wc -l)
echo "lines: $x"
true && echo and-ok
false || echo or-ok
( cd /tmp 2>/dev/null || cd /; echo "in subshell" )
trap 'echo trapped exit' EXIT
sleep 0.2 &
bg=$!
echo "background started"
wait $bg
echo "waited: $?"
set +e
timeout 1 sleep 5
echo "timeout: $?"
seq 1 20 | xargs -P2 -n5 echo | sort
mkdir -p tree/a/b
echo one > tree/a/x.txt
echo two > tree/a/b/y.txt
tar czf archive.tgz tree
rm -r tree
gzip -dc archive.tgz | tar x
find tree -type f | sort | xargs sha256sum
f() { echo "function $1"; return 3; }
f arg; echo "returned $?"
for i in 1 2 3; do printf '%s,' $i; done; echo
case foo in f*) echo matched;; esac
sh -c 'exit 9'; echo "sh -c: $?"
exec sh -c 'echo exec replaced the shell; exit 4'
echo not reached
"#;

/// Runs busybox `args` natively in a directory holding `files`, with only PWD in its
/// environment (as a task gets): (stdout, exit status).
fn native_busybox(args: &[&str], files: &[(&str, &[u8])]) -> (String, i32) {
    let dir = tempfile::tempdir().expect("dir");
    for (path, data) in files {
        std::fs::write(dir.path().join(path), data).expect("write");
    }
    let output = std::process::Command::new("/bin/busybox")
        .args(args)
        .current_dir(dir.path())
        .env_clear()
        .env("PWD", dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("native busybox");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        output.status.code().unwrap_or(-1),
    )
}

/// Runs busybox `args` in a fresh domain holding `files`: (stdout, exit status, the end).
async fn domain_busybox(
    manager: &xeno_taskmgr_vm::VmTaskManager,
    busybox: &[u8],
    args: &[&str],
    files: &[(&str, &[u8])],
) -> (String, i32, xeno_schemas::proto::common::v1::TaskExit) {
    let mut guest = Guest::new(busybox, args[0], &args[1..]);
    for (path, data) in files {
        guest = guest.file(path, data);
    }
    // busybox `tar z` runs `gzip` from PATH (natively, Debian's own /bin/gzip): here it is
    // busybox again, as a file of the session.
    guest = guest.executable("bin/gzip", busybox);
    let domain = create(manager, limits(0, 256), None).await;
    let started = Instant::now();
    let finished = run(manager, &domain, "sh", &guest).await;
    eprintln!(
        "{args:?} took {:?} in the domain; stderr: {}",
        started.elapsed(),
        String::from_utf8_lossy(&finished.stderr)
    );
    destroy(manager, &domain).await;
    let code = finished.exit.exit_code;
    (finished.stdout_text(), code, finished.exit)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busybox_pipeline_sorts_as_natively() {
    let (Some(manager), Some(busybox)) = (manager(), busybox()) else {
        return;
    };
    let args = ["sh", "-c", "seq 1 100000 | sort -rn | head -3"];
    let (expected, expected_code) = native_busybox(&args, &[]);
    assert_eq!(expected, "100000\n99999\n99998\n");
    let (stdout, code, exit) = domain_busybox(&manager, &busybox, &args, &[]).await;
    assert_eq!(stdout, expected, "{exit:?}");
    assert_eq!(code, expected_code, "{exit:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_shell_script_runs_as_natively() {
    let (Some(manager), Some(busybox)) = (manager(), busybox()) else {
        return;
    };
    let files: &[(&str, &[u8])] = &[("script.sh", SCRIPT.as_bytes())];
    let args = ["sh", "script.sh"];
    let (expected, expected_code) = native_busybox(&args, files);
    assert!(expected.contains("exec replaced the shell"), "{expected}");
    assert_eq!(expected_code, 4);
    let (stdout, code, exit) = domain_busybox(&manager, &busybox, &args, files).await;
    assert_eq!(stdout, expected, "{exit:?}");
    assert_eq!(code, expected_code, "{exit:?}");
    assert!(exit.unknown_calls.is_empty(), "{:?}", exit.unknown_calls);
}

/// Forks and reaps children one after another, each filling and checking memory of its own
/// and exec-ing nothing: their page tables are freed and reused many times over (through
/// KVM's shadow-table flush), and no child ever sees another's data.
const CHURN_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#define BYTES (192 * 1024)
int main(int argc, char **argv) {
    int CHILDREN = atoi(argv[1]);
    int bad = 0, failed_forks = 0;
    /* The parent's own memory must come through every flush and reuse untouched. */
    unsigned char *mine = malloc(1 << 20);
    memset(mine, 0xA5, 1 << 20);
    for (int i = 0; i < CHILDREN; i++) {
        pid_t pid = fork();
        if (pid < 0) { failed_forks++; continue; }
        if (pid == 0) {
            unsigned char *p = malloc(BYTES);
            /* Fresh memory reads as zero: nothing of an earlier process shows through. */
            for (int j = 0; j < BYTES; j += 64) if (p[j] != 0) _exit(2);
            unsigned char mark = (unsigned char)(getpid() * 31);
            memset(p, mark, BYTES);
            for (int j = 0; j < BYTES; j += 512) if (p[j] != mark) _exit(1);
            _exit(0);
        }
        int status;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) bad++;
    }
    for (int j = 0; j < (1 << 20); j += 256) if (mine[j] != 0xA5) bad += 1000;
    printf("%d children, %d bad, %d forks failed\n", CHILDREN, bad, failed_forks);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn many_short_lived_processes_reuse_memory_safely() {
    let (Some(manager), Some(program)) = (manager(), musl_program("churn", CHURN_C)) else {
        return;
    };
    // A small domain: the freed page tables must be flushed and reused, or forks run out.
    let domain = create(&manager, limits(0, 16), None).await;
    let started = Instant::now();
    let count = std::env::var("XENO_CHURN").unwrap_or_else(|_| "1500".into());
    let finished = run(
        &manager,
        &domain,
        "churn",
        &Guest::new(&program, "churn", &[&count]),
    )
    .await;
    eprintln!("{count} fork + exit + wait took {:?}", started.elapsed());
    assert_eq!(
        finished.stdout_text(),
        format!("{count} children, 0 bad, 0 forks failed\n"),
        "{:?}",
        finished.exit
    );
    destroy(&manager, &domain).await;
}

/// Hostile process trees: a zombie flood, exec of a corrupt program and of one whose
/// interpreter is missing, an exec loop; and (`tests/teardown.rs`) a tree of sleeping
/// processes destroyed with its domain.
const HOSTILE_TREE_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 2 && strcmp(argv[1], "loop") == 0) {
        /* exec'd again and again: each exec replaces the last, nothing accumulates. */
        int left = atoi(argv[2]);
        if (left == 0) { printf("exec loop done\n"); return 0; }
        char next[16];
        snprintf(next, sizeof next, "%d", left - 1);
        execl("bin/tree", "bin/tree", "loop", next, (char *)NULL);
        return 1;
    }
    /* A zombie flood: children that exit and are never waited for, until fork refuses. */
    int made = 0;
    for (;;) {
        pid_t pid = fork();
        if (pid < 0) { printf("zombies: fork failed with %s after some\n", errno == EAGAIN ? "EAGAIN" : strerror(errno)); break; }
        if (pid == 0) _exit(0);
        made++;
    }
    /* Reaping them all gives every slot back. */
    int reaped = 0;
    while (wait(NULL) > 0) reaped++;
    printf("reaped all: %d\n", reaped == made);
    pid_t again = fork();
    if (again == 0) _exit(0);
    printf("fork works again: %d\n", again > 0 && waitpid(again, NULL, 0) == again);
    /* A corrupt program and a missing interpreter. */
    char *none[] = {"x", NULL};
    execve("corrupt", none, none);
    printf("corrupt ELF: %s\n", strerror(errno));
    execve("dynamic", none, none);
    printf("no interpreter: %s\n", strerror(errno));
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn hostile_trees_stay_in_their_domain_and_leave_nothing_behind() {
    let (Some(manager), Some(program)) = (manager(), musl_program("tree", HOSTILE_TREE_C)) else {
        return;
    };
    let mut corrupt = program.clone();
    corrupt.truncate(300);
    let dynamic = std::fs::read("/bin/true").unwrap_or_default();
    let domain = create(&manager, limits(0, 128), None).await;
    let guest = |args: &[&str]| {
        Guest::new(&program, "bin/tree", args)
            .executable("bin/tree", &program)
            .executable("corrupt", &corrupt)
            .executable("dynamic", &dynamic)
    };
    let finished = run(&manager, &domain, "zombies", &guest(&[])).await;
    assert_eq!(
        finished.stdout_text(),
        "zombies: fork failed with EAGAIN after some\nreaped all: 1\nfork works again: 1\n\
         corrupt ELF: Exec format error\nno interpreter: No such file or directory\n",
        "{:?}",
        finished.exit
    );
    let before = usage(&manager, &domain).await;
    let finished = run(&manager, &domain, "loop", &guest(&["loop", "300"])).await;
    assert_eq!(
        finished.stdout_text(),
        "exec loop done\n",
        "{:?}",
        finished.exit
    );
    let after = usage(&manager, &domain).await;
    // 300 execs in one process: the memory it holds at the end is one program's, not 300.
    let peak = after.usage.as_ref().map_or(0, |u| u.memory_peak_bytes);
    assert!(peak < 64 << 20, "peak {peak} bytes; before: {before:?}");
    destroy(&manager, &domain).await;
}

/// `MAP_SHARED` memory: a file mapped by a parent and its child (and once more, through its
/// own descriptor, by the child), anonymous shared memory across fork, `msync` reaching the
/// file, and a private mapping staying private.
const SHARED_MAPPINGS_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
int main(void) {
    int fd = open("shared.bin", O_RDWR | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || ftruncate(fd, 8192) != 0) return 1;
    char *p = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    int *anon = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED || anon == MAP_FAILED) return 2;
    strcpy(p, "parent wrote");
    pid_t child = fork();
    if (child == 0) {
        printf("child sees: %s\n", p);
        fflush(stdout);
        strcpy(p, "child wrote");
        anon[0] = 42;
        int fd2 = open("shared.bin", O_RDWR);
        char *q = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd2, 0);
        if (q == MAP_FAILED) _exit(3);
        strcpy(q + 4096, "second page");
        munmap(q, 8192);
        _exit(0);
    }
    int status;
    waitpid(child, &status, 0);
    printf("%s|%s|%d|%d\n", p, p + 4096, anon[0], WEXITSTATUS(status));
    if (msync(p, 8192, MS_SYNC) != 0) return 4;
    char buf[32] = {0};
    pread(fd, buf, 11, 0);
    printf("file: %s\n", buf);
    char *private = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (fork() == 0) { private[0] = 'X'; _exit(0); }
    wait(0);
    printf("private: %c\n", private[0]);
    munmap(p, 8192);
    memset(buf, 0, sizeof buf);
    pread(fd, buf, 11, 4096);
    printf("after munmap: %s\n", buf);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_mappings_are_shared_between_processes_and_reach_the_file() {
    let Some(manager) = manager() else {
        return;
    };
    let Some(program) = musl_program("shared_mappings", SHARED_MAPPINGS_C) else {
        return;
    };
    let native_out = native_prog(&program, &[]);
    let expected = "child sees: parent wrote\nchild wrote|second page|42|0\nfile: child wrote\n\
                    private: c\nafter munmap: second page\n";
    assert_eq!(native_out, expected);
    let domain = create(&manager, limits(0, 64), None).await;
    let done = run(
        &manager,
        &domain,
        "shared",
        &Guest::new(&program, "prog", &[]),
    )
    .await;
    assert_eq!(done.stdout_text(), expected, "{done:?}");
    destroy(&manager, &domain).await;
}

/// `execve` from a thread of a process with others: one spinning, one blocked in a pipe
/// read, the main thread waiting in `pthread_join`. A failed exec leaves them all running;
/// the next ends them, and the new program runs with the process's pid.
const THREADED_EXEC_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static int fds[2];
static volatile unsigned long spins;
static void *spinner(void *arg) { (void)arg; for (;;) spins++; return 0; }
static void *blocker(void *arg) { (void)arg; char c; read(fds[0], &c, 1); return 0; }
static void *execer(void *arg) {
    char pid[16];
    snprintf(pid, sizeof pid, "%d", getpid());
    usleep(50000);
    execl("bin/missing", "missing", (char *)0);
    unsigned long before = spins;
    usleep(50000);
    printf("a failed exec leaves the threads running: %d\n", spins > before);
    fflush(stdout);
    execl("bin/mt", "mt", pid, (char *)arg, (char *)0);
    printf("exec failed\n");
    return 0;
}
int main(int argc, char **argv) {
    if (argc == 3) {
        printf("the new program: pid kept %d, ran from %s\n", atoi(argv[1]) == getpid(), argv[2]);
        return 0;
    }
    pipe(fds);
    pthread_t a, b, c;
    pthread_create(&a, 0, spinner, 0);
    pthread_create(&b, 0, blocker, 0);
    pthread_create(&c, 0, execer, "a thread");
    pthread_join(c, 0);
    printf("not reached\n");
    return 1;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_from_a_thread_ends_the_others_as_natively() {
    let (Some(manager), Some(program)) = (manager(), musl_program("mt", THREADED_EXEC_C)) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    std::fs::create_dir(dir.path().join("bin")).expect("bin");
    let exe = dir.path().join("bin/mt");
    std::fs::write(&exe, &program).expect("write");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (native_stdout, native_code) = native(&exe, "/bin/mt", &[], dir.path());
    let native_stdout = String::from_utf8_lossy(&native_stdout).into_owned();
    assert_eq!(
        (native_stdout.as_str(), native_code),
        (
            "a failed exec leaves the threads running: 1\n\
             the new program: pid kept 1, ran from a thread\n",
            0
        )
    );
    let domain = create(&manager, limits(0, 64), None).await;
    let guest = Guest::new(&program, "/bin/mt", &[]).executable("bin/mt", &program);
    // Had the spinner outlived the exec, the task would not end when the new program does.
    let finished = run(&manager, &domain, "mt", &guest).await;
    assert_eq!(finished.stdout_text(), native_stdout, "{:?}", finished.exit);
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    destroy(&manager, &domain).await;
}

/// Pages that are read-only at fork are shared, not copied: a change of protection, a
/// discard or an unmap on one side leaves the other's alone (each child touches the page
/// first, so a translation that outlived the change would show), a write to one is SIGSEGV
/// as natively, and a process with a large read-only mapping forks in a domain that could
/// not hold copies of it.
const SHARED_READ_ONLY_C: &str = r#"
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096L
static const char text[] = "read-only data of the program";

static void show(const char *what, pid_t pid) {
    int status;
    if (waitpid(pid, &status, 0) != pid) { printf("%s: waitpid failed\n", what); return; }
    if (WIFEXITED(status)) printf("%s: exited %d\n", what, WEXITSTATUS(status));
    else printf("%s: killed by %d\n", what, WTERMSIG(status));
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char *p = mmap(0, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (int i = 0; i < 4; i++) memset(p + i * PAGE, 'a' + i, PAGE);
    mprotect(p, 4 * PAGE, PROT_READ);
    pid_t pid = fork();
    if (pid == 0) {
        printf("child before: %c%c%c%c %s\n", p[0], p[PAGE], p[2 * PAGE], p[3 * PAGE], text);
        mprotect(p, PAGE, PROT_READ | PROT_WRITE);
        p[0] = 'X';
        mprotect(p + PAGE, PAGE, PROT_READ | PROT_WRITE);
        int fd = open("data.txt", O_RDONLY);
        ssize_t got = read(fd, p + PAGE, 4);
        close(fd);
        madvise(p + 2 * PAGE, PAGE, MADV_DONTNEED);
        munmap(p + 3 * PAGE, PAGE);
        char *q = mmap(p + 3 * PAGE, PAGE, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        printf("child after: %c %zd:%.4s %d %d\n", p[0], got, p + PAGE, p[2 * PAGE],
               q == p + 3 * PAGE ? q[0] : -1);
        _exit(0);
    }
    show("child", pid);
    printf("parent: %c%c%c%c\n", p[0], p[PAGE], p[2 * PAGE], p[3 * PAGE]);
    mprotect(p, 4 * PAGE, PROT_READ | PROT_WRITE);
    p[3 * PAGE] = 'Z';
    printf("parent writes its own: %c\n", p[3 * PAGE]);

    /* A write to a shared read-only page is SIGSEGV, and the parent's page is unchanged. */
    mprotect(p, PAGE, PROT_READ);
    pid = fork();
    if (pid == 0) { p[0] = 'Y'; _exit(0); }
    show("writer", pid);
    printf("parent's page: %c\n", p[0]);

    /* 24 MiB read-only in a 40 MiB domain: two children that each hold it. */
    long big = 24L << 20;
    char *b = mmap(0, big, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    for (long at = 0; at < big; at += PAGE) b[at] = (char)(at / PAGE);
    mprotect(b, big, PROT_READ);
    pid_t kids[2];
    int ready[2], go[2];
    pipe(ready);
    pipe(go);
    for (int k = 0; k < 2; k++) {
        kids[k] = fork();
        if (kids[k] < 0) { printf("fork %d failed\n", k); return 1; }
        if (kids[k] == 0) {
            long sum = 0;
            for (long at = 0; at < big; at += PAGE) sum += b[at];
            write(ready[1], "r", 1);
            char c;
            read(go[0], &c, 1);
            _exit(sum % 251);
        }
    }
    char c;
    read(ready[0], &c, 1);
    read(ready[0], &c, 1);
    write(go[1], "gg", 2);
    show("big child 1", kids[0]);
    show("big child 2", kids[1]);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fork_shares_read_only_pages_and_each_side_changes_only_its_own() {
    let (Some(manager), Some(program)) = (manager(), musl_program("cow", SHARED_READ_ONLY_C))
    else {
        return;
    };
    let native_out = native_prog(&program, &[("data.txt", b"text")]);
    assert!(
        native_out.contains("child after: X 4:text 0 0\n")
            && native_out.contains("parent: abcd\n")
            && native_out.contains("writer: killed by 11\n"),
        "{native_out}"
    );
    let domain = create(&manager, limits(0, 40), None).await;
    let done = run(
        &manager,
        &domain,
        "cow",
        &Guest::new(&program, "prog", &[]).file("data.txt", b"text"),
    )
    .await;
    assert_eq!(done.stdout_text(), native_out, "{done:?}");
    assert_eq!(done.state(), TaskState::Exited, "{done:?}");
    destroy(&manager, &domain).await;
}

/// A page of shared memory that another process still maps, once unmapped or made
/// inaccessible here, is gone here at once: fresh memory mapped in its place reads as zero,
/// and a read of it with no access is SIGSEGV, as natively.
const SHARED_UNMAP_C: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    char *s = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(s, 'S', 4096);
    int go[2];
    pipe(go);
    pid_t holder = fork();
    if (holder == 0) { char c; read(go[0], &c, 1); _exit(s[0] == 'S' ? 0 : 1); }
    pid_t pid = fork();
    if (pid == 0) {
        volatile char seen = s[0];
        mprotect(s, 4096, PROT_NONE);
        seen = s[0];
        _exit(seen);
    }
    int status;
    waitpid(pid, &status, 0);
    printf("no access: %s %d\n", WIFSIGNALED(status) ? "killed by" : "exited",
           WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
    printf("before: %c\n", s[0]);
    munmap(s, 4096);
    char *fresh = mmap(s, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED,
                       -1, 0);
    printf("fresh memory in its place: %d\n", fresh == s ? fresh[0] : -1);
    write(go[1], "g", 1);
    waitpid(holder, &status, 0);
    printf("the other process kept it: %d\n", WIFEXITED(status) && WEXITSTATUS(status) == 0);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_memory_unmapped_here_is_gone_here_while_another_process_maps_it() {
    let (Some(manager), Some(program)) = (manager(), musl_program("shunmap", SHARED_UNMAP_C))
    else {
        return;
    };
    let native_out = native_prog(&program, &[]);
    let expected = "no access: killed by 11\nbefore: S\nfresh memory in its place: 0\n\
                    the other process kept it: 1\n";
    assert_eq!(native_out, expected);
    let domain = create(&manager, limits(0, 32), None).await;
    let done = run(
        &manager,
        &domain,
        "shunmap",
        &Guest::new(&program, "prog", &[]),
    )
    .await;
    assert_eq!(done.stdout_text(), expected, "{done:?}");
    destroy(&manager, &domain).await;
}

/// `vfork` and `posix_spawn` with glibc, whose `posix_spawn` learns of a failed exec from
/// what its child wrote in the parent's memory.
const VFORK_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
extern char **environ;
static volatile int written, exec_errno;
static char *volatile mapped;

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc > 1 && strcmp(argv[1], "hang") == 0) {
        /* The task ends (its wall-clock limit) while the child holds the parent's memory. */
        if (vfork() == 0) for (;;) pause();
        return 0;
    }
    if (argc > 1) return atoi(argv[1]);
    pid_t pid;
    int status;
    char *missing[] = {"missing", NULL};
    int err = posix_spawn(&pid, "/no/such/program", NULL, NULL, missing, environ);
    printf("spawn of a missing program: %s\n", err ? strerror(err) : "started");
    if (err == 0) {
        waitpid(pid, &status, 0);
        printf("  which exited %d\n", WEXITSTATUS(status));
    }
    char *self[] = {"prog", "9", NULL};
    err = posix_spawn(&pid, "./prog", NULL, NULL, self, environ);
    printf("spawn of itself: %s\n", err ? strerror(err) : "started");
    if (err == 0 && waitpid(pid, &status, 0) == pid) printf("  which exited %d\n", WEXITSTATUS(status));
    err = posix_spawnp(&pid, "no-such-command-anywhere", NULL, NULL, missing, environ);
    printf("spawnp of a missing command: %s\n", err ? strerror(err) : "started");

    pid = vfork();
    if (pid == 0) { written = 42; _exit(0); }
    waitpid(pid, &status, 0);
    printf("the vfork child wrote: %d\n", written);
    pid = vfork();
    if (pid == 0) {
        char *a[] = {"x", NULL};
        execve("/no/such", a, environ);
        exec_errno = errno;
        _exit(127);
    }
    waitpid(pid, &status, 0);
    printf("its failed exec: %s, exit %d\n", strerror(exec_errno), WEXITSTATUS(status));
    pid = vfork();
    if (pid == 0) {
        char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != MAP_FAILED) { strcpy(p, "mapped by the child"); mapped = p; }
        _exit(0);
    }
    waitpid(pid, &status, 0);
    printf("memory it mapped: %s\n", mapped ? mapped : "(none)");
    pid = vfork();
    if (pid == 0) {
        char *a[] = {"prog", "3", NULL};
        execve("./prog", a, environ);
        _exit(127);
    }
    waitpid(pid, &status, 0);
    printf("an exec'd child exited %d; the parent's memory is as it was: %d\n",
           WEXITSTATUS(status), written == 42 && strcmp(mapped, "mapped by the child") == 0);
    int sum = 0;
    for (int i = 0; i < 300; i++) {
        pid = vfork();
        if (pid == 0) _exit(i & 7);
        if (waitpid(pid, &status, 0) == pid) sum += WEXITSTATUS(status);
    }
    printf("300 vforks: %d\n", sum);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vfork_child_runs_on_its_parents_memory_so_posix_spawn_reports_exec_errors() {
    let (Some(manager), Some(program)) = (manager(), glibc_program("vfork", VFORK_C)) else {
        return;
    };
    let native_out = native_prog(&program, &[]);
    let expected = "spawn of a missing program: No such file or directory\n\
                    spawn of itself: started\n  which exited 9\n\
                    spawnp of a missing command: No such file or directory\n\
                    the vfork child wrote: 42\n\
                    its failed exec: No such file or directory, exit 127\n\
                    memory it mapped: mapped by the child\n\
                    an exec'd child exited 3; the parent's memory is as it was: 1\n\
                    300 vforks: 1042\n";
    assert_eq!(native_out, expected);
    let domain = create(&manager, limits(0, 32), None).await;
    let guest = Guest::new(&program, "prog", &[]).executable("prog", &program);
    let done = run(&manager, &domain, "vfork", &guest).await;
    assert_eq!(done.stdout_text(), expected, "{done:?}");
    assert_eq!(done.state(), TaskState::Exited, "{done:?}");
    // A task ended while its vfork child holds the parent's memory: both go, the memory
    // with the last of them, and the domain goes on.
    let mut hang = Guest::new(&program, "prog", &["hang"]);
    hang.task.wall_clock_seconds = Some(1);
    let hung = run(&manager, &domain, "vfork-hang", &hang).await;
    assert!(
        hung.exit.reason.contains("wall-clock limit"),
        "{:?}",
        hung.exit
    );
    let again = run(&manager, &domain, "vfork-again", &guest).await;
    assert_eq!(again.stdout_text(), expected, "{again:?}");
    destroy(&manager, &domain).await;
}

/// The stdout of `program` run natively as `prog` in a fresh directory holding `files`.
fn native_prog(program: &[u8], files: &[(&str, &[u8])]) -> String {
    let work = tempfile::tempdir().expect("dir");
    let exe = work.path().join("prog");
    std::fs::write(&exe, program).expect("program");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    for (name, bytes) in files {
        std::fs::write(work.path().join(name), bytes).expect("file");
    }
    let (stdout, _) = native(&exe, "prog", &[], work.path());
    String::from_utf8_lossy(&stdout).into_owned()
}
