//! Hostile guests: wild pointers handed to system calls, port I/O and privileged
//! instructions, jumps into the domain's kernel pages, stdout floods, system call storms, fork
//! bombs, garbage executables. Each ends or is throttled inside its own domain: the VMM
//! answers with errors or ends the task, never panics, and a domain running beside it keeps
//! working and gets the right answer.

mod support;

use std::time::{Duration, Instant};
use support::*;
use xeno_schemas::proto::common::v1::TaskState;

const WILD_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
static const unsigned long wild[] = {
    0, 1, 0xfff, 0xffffffffffffffffUL, 0xffffff8000000000UL, 0xffffff8000001000UL,
    0xffffff8000004000UL, 0x7ffff0000000UL, 0x7ffff0001000UL, 0x7ffff0002000UL,
    0x800000000000UL, 0x7fffffffffffUL, 0xf00000000UL, 0x1000000000UL, 0x10000,
};
static const long calls[][4] = {
    /* number, which argument is the pointer (1-based), length argument, other */
    {SYS_read, 2, 4096, 0}, {SYS_write, 2, 4096, 1}, {SYS_open, 1, 0, 0},
    {SYS_stat, 1, 0, 0}, {SYS_stat, 2, 0, 0}, {SYS_fstat, 2, 0, 1}, {SYS_lstat, 2, 0, 0},
    {SYS_clock_gettime, 2, 0, 0}, {SYS_uname, 1, 0, 0}, {SYS_getrandom, 1, 4096, 0},
    {SYS_readv, 2, 2, 0}, {SYS_writev, 2, 3, 1}, {SYS_getcwd, 1, 200, 0},
    {SYS_readlink, 1, 100, 0}, {SYS_readlink, 2, 100, 0}, {SYS_rt_sigaction, 2, 8, 2},
    {SYS_rt_sigaction, 3, 8, 2}, {SYS_rt_sigprocmask, 2, 8, 0}, {SYS_poll, 1, 1, 0},
    {SYS_getdents64, 2, 4096, 3}, {SYS_pread64, 2, 4096, 3}, {SYS_gettimeofday, 1, 0, 0},
    {SYS_sysinfo, 1, 0, 0}, {SYS_getrlimit, 2, 0, 3}, {SYS_prlimit64, 3, 0, 0},
    {SYS_arch_prctl, 2, 0, 0x1003}, {SYS_newfstatat, 2, 0, -100}, {SYS_openat, 2, 0, -100},
    {SYS_statx, 2, 0, -100}, {SYS_mkdir, 1, 0, 0}, {SYS_unlink, 1, 0, 0}, {SYS_chdir, 1, 0, 0},
    {SYS_rename, 1, 0, 0}, {SYS_symlink, 1, 0, 0}, {SYS_sched_getaffinity, 3, 8, 0},
    {SYS_pipe, 1, 0, 0}, {SYS_times, 1, 0, 0}, {SYS_getrusage, 2, 0, 0}, {SYS_time, 1, 0, 0},
    {SYS_prctl, 2, 0, 16}, {SYS_ppoll, 1, 1, 0}, {SYS_mmap, 1, 4096, 0}, {SYS_munmap, 1, 4096, 0},
    {SYS_mprotect, 1, 4096, 0}, {SYS_mremap, 1, 4096, 0}, {SYS_madvise, 1, 4096, 0},
};
int main(void) {
    int fd = open(".", 0);
    long succeeded = 0, calls_made = 0;
    /* The trampoline page is the guest's but not writable: reading into it must fail. (First:
       the wild calls below may scribble over the task's own fast-path table.) */
    long into_trampoline = syscall(SYS_read, fd, 0x7ffff0000000UL, 16);
    for (unsigned c = 0; c < sizeof calls / sizeof calls[0]; c++) {
        for (unsigned w = 0; w < sizeof wild / sizeof wild[0]; w++) {
            long a[6] = {0, 0, 0, 0, 0, 0};
            long n = calls[c][0], at = calls[c][1] - 1;
            if (n == SYS_write || n == SYS_writev || n == SYS_fstat) a[0] = 1;
            if (n == SYS_getdents64 || n == SYS_pread64) a[0] = fd;
            if (n == SYS_rt_sigaction) { a[0] = 2; a[3] = 8; }
            if (n == SYS_newfstatat || n == SYS_openat || n == SYS_statx) a[0] = -100;
            if (n == SYS_arch_prctl) a[0] = 0x1003;
            if (n == SYS_prctl) a[0] = 16;
            if (n == SYS_getrlimit) a[0] = 3;
            if (n == SYS_mmap) { a[1] = 4096; a[2] = 3; a[3] = 0x32; a[4] = -1; }
            if (n == SYS_munmap || n == SYS_mprotect || n == SYS_madvise) { a[1] = 4096; a[2] = 7; }
            if (n == SYS_mremap) { a[1] = 4096; a[2] = 8192; a[3] = 1; }
            if (at + 1 < 6 && calls[c][2] && n != SYS_mmap && n != SYS_munmap && n != SYS_mprotect && n != SYS_mremap && n != SYS_madvise && n != SYS_rt_sigaction)
                a[at + 1] = calls[c][2];
            a[at] = wild[w];
            long r = syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
            calls_made++;
            if (r >= 0) succeeded++;
        }
    }
    printf("survived %ld calls (%ld succeeded); read into the trampoline: %ld\n", calls_made, succeeded, into_trampoline);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn wild_pointers_in_every_call_get_errors_not_harm() {
    let (Some(manager), Some(program)) = (manager(), musl_program("wild", WILD_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 32), None).await;
    let finished = run(
        &manager,
        &domain,
        "wild",
        &Guest::new(&program, "wild", &[]),
    )
    .await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    // Writes from the (readable) trampoline page come out as its bytes; the summary is last.
    let text = finished.stdout_text();
    let summary = text.rsplit("survived ").next().unwrap_or_default();
    assert!(text.contains("survived "), "no summary in the output");
    assert!(
        summary.ends_with("read into the trampoline: -1\n"),
        "{summary}"
    );
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn reaching_for_the_domains_kernel_pages_is_a_segfault() {
    let Some(manager) = manager() else { return };
    let domain = create(&manager, limits(0, 32), None).await;
    let cases = [
        (
            "write_idt",
            "int main(void) { *(volatile long *)0xffffff8000000000UL = 0; return 0; }",
        ),
        (
            "read_kstack",
            "int main(void) { return *(volatile long *)0xffffff8000004000UL; }",
        ),
        (
            "jump_stubs",
            "int main(void) { ((void (*)(void))0xffffff8000001000UL)(); return 0; }",
        ),
        (
            "write_trampoline",
            "int main(void) { *(volatile char *)0x7ffff0000000UL = 0x90; return 0; }",
        ),
        (
            "int80",
            "int main(void) { __asm__ volatile (\"int $0x80\"); return 0; }",
        ),
        (
            "in_port",
            "int main(void) { unsigned char v; __asm__ volatile (\"inb $0x60, %0\" : \"=a\"(v)); return v; }",
        ),
        (
            "cli",
            "int main(void) { __asm__ volatile (\"cli\"); return 0; }",
        ),
        (
            "lgdt",
            "int main(void) { char d[10] = {0}; __asm__ volatile (\"lgdt %0\" :: \"m\"(d)); return 0; }",
        ),
        (
            "wrmsr",
            "int main(void) { __asm__ volatile (\"wrmsr\" :: \"c\"(0xc0000082), \"a\"(0), \"d\"(0)); return 0; }",
        ),
    ];
    for (name, source) in cases {
        let Some(program) = musl_program(name, source) else {
            return;
        };
        let finished = run(&manager, &domain, name, &Guest::new(&program, name, &[])).await;
        assert_eq!(
            finished.state(),
            TaskState::Failed,
            "{name}: {:?}",
            finished.exit
        );
        // `int $0x80` is #GP on hardware and #UD where ring 0 is emulated: either way a fault.
        let expected = if name == "int80" {
            "killed by signal"
        } else {
            "killed by signal 11 (SIGSEGV)"
        };
        assert!(
            finished.exit.reason.starts_with(expected),
            "{name}: {}",
            finished.exit.reason
        );
    }
    destroy(&manager, &domain).await;
}

/// A domain beside the hostile one: sha256sum of known data must come out right.
async fn witness(manager: &xeno_taskmgr_vm::VmTaskManager) {
    let Some(busybox) = busybox() else { return };
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i * 31 % 251) as u8).collect();
    let expected = {
        use sha2::{Digest, Sha256};
        format!("{}  data\n", hex::encode(Sha256::digest(&data)))
    };
    let domain = create(manager, limits(0, 32), None).await;
    let guest = Guest::new(&busybox, "sha256sum", &["data"]).file("data", &data);
    let finished = run(manager, &domain, "witness", &guest).await;
    assert_eq!(finished.stdout_text(), expected, "{:?}", finished.exit);
    destroy(manager, &domain).await;
}

const FLOOD_C: &str = r#"
#include <string.h>
#include <unistd.h>
int main(void) {
    static char block[65536];
    memset(block, 'x', sizeof block);
    for (;;) write(1, block, sizeof block);
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_stdout_flood_is_capped_and_ended_by_its_limit() {
    let (Some(manager), Some(program)) = (manager(), musl_program("flood", FLOOD_C)) else {
        return;
    };
    let mut domain_limits = limits(500, 32);
    domain_limits.output_bytes_max = 1 << 20;
    let domain = create(&manager, domain_limits, None).await;
    let mut guest = Guest::new(&program, "flood", &[]);
    guest.task.wall_clock_seconds = Some(2);
    deploy(&manager, &domain, "flood", &guest)
        .await
        .expect("deploy");
    witness(&manager).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        let report = usage(&manager, &domain).await;
        if let Some(task) = report.tasks.iter().find(|t| t.task_id == "flood")
            && task.state != TaskState::Running as i32
        {
            break task.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the flood was not ended by its wall-clock limit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(exit.state, TaskState::Failed as i32);
    let usage = destroy(&manager, &domain).await;
    println!("flood wrote {} bytes in 2 s", usage.output_bytes);
    assert!(usage.output_bytes > 4 << 20, "{usage:?}");
}

/// System calls the storm makes: each is an exit to the VMM (about 90 µs of CPU in a debug
/// build, 35 µs in a release one), so at the storm's 300 ms/s this is about 10 s of a debug
/// run, long enough to measure the rate and well inside the test's 30 s wait.
const STORM_CALLS: u64 = 35_000;

fn storm_c() -> String {
    format!(
        r#"
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {{
    long sum = 0;
    for (int i = 0; i < {STORM_CALLS}; i++) sum += syscall(SYS_getppid);
    printf("%ld\n", sum);
    return 0;
}}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_syscall_storm_is_served_counted_and_rate_limited() {
    let (Some(manager), Some(program)) = (manager(), musl_program("storm", &storm_c())) else {
        return;
    };
    let domain = create(&manager, limits(300, 32), None).await;
    let started = Instant::now();
    let storm = Guest::new(&program, "storm", &[]);
    let (finished, ()) = tokio::join!(run(&manager, &domain, "storm", &storm), witness(&manager));
    let elapsed = started.elapsed();
    // getppid is 1 for the task, so the sum is the count of calls answered.
    assert_eq!(finished.stdout_text(), format!("{STORM_CALLS}\n"));
    let usage = finished.exit.usage.expect("usage");
    assert!(usage.syscalls >= STORM_CALLS, "{usage:?}");
    let msps = usage.cpu_time_us as f64 / 1000.0 / elapsed.as_secs_f64();
    println!(
        "storm: {} calls, {} us of CPU in {elapsed:?} ({msps:.0} ms/s)",
        usage.syscalls, usage.cpu_time_us
    );
    assert!(
        msps < 300.0 * 1.2,
        "the storm exceeded its domain's CPU rate: {msps:.0} ms/s"
    );
    destroy(&manager, &domain).await;
}

/// A fork bomb: every process forks for ever; a process that cannot fork waits. The first
/// one reports how its fork failed and returns, which ends the task and every process in it.
const FORK_BOMB_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
    pid_t root = getpid();
    for (;;) {
        pid_t pid = fork();
        if (pid < 0) {
            if (getpid() == root) {
                printf("fork failed: %s\n", errno == EAGAIN ? "EAGAIN" : errno == ENOMEM ? "ENOMEM" : "other");
                return 0;
            }
            pause();
        }
    }
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_bomb_is_held_to_its_domain_and_leaves_nothing_behind() {
    let (Some(manager), Some(program)) = (manager(), musl_program("forkbomb", FORK_BOMB_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 256), None).await;
    for round in 0..2 {
        let finished = run(
            &manager,
            &domain,
            &format!("bomb-{round}"),
            &Guest::new(&program, "bomb", &[]),
        )
        .await;
        // The domain's process maximum (or its memory) stopped it; the first process saw
        // the failure and its end took the whole tree with it, so the next round can fork
        // as many again.
        assert_eq!(
            finished.stdout_text(),
            "fork failed: EAGAIN\n",
            "round {round}: {:?}",
            finished.exit
        );
        assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    }
    let usage = destroy(&manager, &domain).await;
    assert!(usage.memory_peak_bytes <= 256 << 20, "{usage:?}");
    // Another session is untouched.
    let other = create(&manager, limits(0, 32), None).await;
    let Some(busybox) = busybox() else { return };
    let finished = run(
        &manager,
        &other,
        "echo",
        &Guest::new(&busybox, "sh", &["-c", "echo fine | cat"]),
    )
    .await;
    assert_eq!(finished.stdout_text(), "fine\n");
    destroy(&manager, &other).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn garbage_and_dynamic_executables_are_refused() {
    let Some(manager) = manager() else { return };
    let domain = create(&manager, limits(0, 32), None).await;
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    let refused = deploy(
        &manager,
        &domain,
        "garbage",
        &Guest::new(&garbage, "x", &[]),
    )
    .await;
    assert_eq!(
        refused.expect_err("refused").code(),
        tonic::Code::InvalidArgument
    );
    let mut truncated = std::fs::read("/bin/busybox").unwrap_or_default();
    if !truncated.is_empty() {
        truncated.truncate(200);
        let refused = deploy(
            &manager,
            &domain,
            "truncated",
            &Guest::new(&truncated, "x", &[]),
        )
        .await;
        assert_eq!(
            refused.expect_err("refused").code(),
            tonic::Code::InvalidArgument
        );
    }
    if let Ok(dynamic) = std::fs::read("/bin/true") {
        let refused = deploy(
            &manager,
            &domain,
            "dynamic",
            &Guest::new(&dynamic, "true", &[]),
        )
        .await;
        let status = refused.expect_err("refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert!(
            status.message().contains("dynamically linked"),
            "{}",
            status.message()
        );
    }
    destroy(&manager, &domain).await;
}

const MODES_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(void) {
    int a = chmod("prog", 04755);
    int b = chmod("/", 0777);
    int fd = open("created", O_CREAT | O_WRONLY, 06777);
    int c = mkdir("dir", 03777);
    int d = fchmod(fd, 04777);
    struct stat st;
    stat("prog", &st);
    printf("%d %d %d %d %d prog %o\n", a, b, fd >= 0, c, d, st.st_mode & 07777);
    return 0;
}
"#;

/// With the server running as root, a guest's `chmod 4755` used to make a setuid-root file on
/// the host, and `chmod 0777 /` a world-writable scratch directory.
#[tokio::test(flavor = "multi_thread")]
async fn guest_modes_never_reach_the_host_as_setuid_or_for_other_users() {
    let (Some(manager), Some(busybox), Some(program)) =
        (manager(), busybox(), musl_program("modes", MODES_C))
    else {
        return;
    };
    let scratch = tempfile::tempdir().expect("scratch");
    let domain = create(&manager, limits(0, 64), Some(scratch.path())).await;
    let guest = Guest::new(&busybox, "chmod", &["4755", "prog"]).file("prog", b"#!x\n");
    let finished = run(&manager, &domain, "busybox-chmod", &guest).await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    let finished = run(
        &manager,
        &domain,
        "calls",
        &Guest::new(&program, "modes", &[]),
    )
    .await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    assert!(
        finished.stdout_text().starts_with("0 0 1 0 0 prog 700"),
        "every call succeeds, and the guest sees the bits its file really has: {}",
        finished.stdout_text()
    );
    use std::os::unix::fs::MetadataExt;
    let mode = |path: &std::path::Path| std::fs::metadata(path).expect("host file").mode() & 0o7777;
    assert_eq!(
        mode(scratch.path()),
        0o700,
        "the scratch directory stays private"
    );
    for (path, expected) in [("prog", 0o700), ("created", 0o700), ("dir", 0o700)] {
        assert_eq!(
            mode(&scratch.path().join(path)),
            expected,
            "{path}: no setuid, setgid or sticky bit, nothing for other host users"
        );
    }
    destroy(&manager, &domain).await;
}

const BLOCKING_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static void *forever(void *arg) { for (;;) pause(); return arg; }
int main(int argc, char **argv) {
    const char *how = argv[1];
    struct timespec long_time = {100, 0};
    if (!strcmp(how, "nanosleep")) nanosleep(&long_time, 0);
    if (!strcmp(how, "clock_nanosleep")) clock_nanosleep(CLOCK_MONOTONIC, 0, &long_time, 0);
    if (!strcmp(how, "futex")) { int word = 0; syscall(SYS_futex, &word, 0, 0, 0, 0, 0); }
    if (!strcmp(how, "join")) { pthread_t t; pthread_create(&t, 0, forever, 0); pthread_join(t, 0); }
    printf("woke up\n");
    return 0;
}
"#;

/// The wall-clock limit used to be checked only when a vCPU was admitted, so a task blocked in
/// a sleep or a futex outlived its limit by as long as it liked (90 s seen).
#[tokio::test(flavor = "multi_thread")]
async fn the_wall_clock_limit_ends_tasks_that_sleep_or_wait() {
    let (Some(manager), Some(program), Some(busybox)) =
        (manager(), musl_program("blocking", BLOCKING_C), busybox())
    else {
        return;
    };
    let domain = create(&manager, limits(0, 64), None).await;
    let mut guests: Vec<(String, Guest)> = ["nanosleep", "clock_nanosleep", "futex", "join"]
        .into_iter()
        .map(|how| (how.to_owned(), Guest::new(&program, "blocking", &[how])))
        .collect();
    guests.push((
        "busybox-sleep".to_owned(),
        Guest::new(&busybox, "sleep", &["100"]),
    ));
    let started = Instant::now();
    let mut runs = Vec::new();
    for (name, mut guest) in guests {
        guest.task.wall_clock_seconds = Some(2);
        let manager = manager.clone();
        let domain = domain.clone();
        runs.push(tokio::spawn(async move {
            let finished = run(&manager, &domain, &name, &guest).await;
            (name, finished, started.elapsed())
        }));
    }
    for handle in runs {
        let (name, finished, elapsed) = handle.await.expect("join");
        assert_eq!(
            finished.state(),
            TaskState::Failed,
            "{name}: {:?}",
            finished.exit
        );
        assert!(
            finished.exit.reason.contains("wall-clock limit of 2 s"),
            "{name}: {}",
            finished.exit.reason
        );
        assert!(
            !finished.stdout_text().contains("woke up"),
            "{name} must not run on past its limit"
        );
        println!("{name} ended after {elapsed:?}");
        assert!(
            elapsed < Duration::from_secs(10),
            "{name} ended {elapsed:?} after deploy, with a 2 s limit"
        );
    }
    destroy(&manager, &domain).await;
}

const RESIZE_C: &str = r#"
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static char buf[200000];
int main(void) {
    int reader = open("data", O_RDONLY);
    /* Read often enough for a window (the read fast path), then truncated. */
    long first = 0;
    for (int i = 0; i < 10; i++) first += read(reader, buf, 100);
    /* Truncated through another descriptor: the reader sees the end of the file. */
    int writer = open("data", O_WRONLY | O_TRUNC);
    long after_truncate = read(reader, buf, 1000);
    long pread_after = pread(reader, buf, 10, 0);
    /* It grows again: the reader sees the new bytes from where it is. */
    memset(buf, 'n', 150000);
    write(writer, buf, 150000);
    long after_growth = read(reader, buf, 200000);
    long at_end = read(reader, buf, 10);
    write(writer, "tail", 4);
    long past_old_end = read(reader, buf, 10);
    printf("%ld %ld %ld %ld %ld %ld\n", first, after_truncate, pread_after, after_growth,
           at_end, past_old_end);
    return 0;
}
"#;

/// A windowed file (read by the fast path) truncated through another descriptor used to kill
/// the reading task (`KVM_RUN failed with errno 14`), and a read past the end it had when it
/// was opened returned 0 after the file grew. Linux gives 0 at the new end, then the new data.
#[tokio::test(flavor = "multi_thread")]
async fn a_file_resized_through_another_descriptor_reads_as_on_linux() {
    let (Some(manager), Some(program)) = (manager(), musl_program("resize", RESIZE_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 64), None).await;
    let guest = Guest::new(&program, "resize", &[]).file("data", &vec![b'o'; 256 * 1024]);
    let finished = run(&manager, &domain, "resize", &guest).await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    // After the truncation the reader is at 1000, past the new end (0): reads give 0. The
    // file then holds 150,000 bytes, of which the reader has 149,000 still to read; then 4 more.
    assert_eq!(
        finished.stdout_text(),
        "1000 0 0 149000 0 4\n",
        "as Linux does"
    );
    destroy(&manager, &domain).await;
}

/// A stack overflow caught by a SIGSEGV handler on an alternate stack (what Rust's runtime
/// and many others install): the handler runs there and sees it is on it.
const ALTSTACK_C: &str = r#"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
static void on_segv(int s, siginfo_t *info, void *uc) {
    (void)s; (void)info; (void)uc;
    stack_t now;
    sigaltstack(NULL, &now);
    const char *m = (now.ss_flags & SS_ONSTACK) ? "caught on the alternate stack\n" : "not on it\n";
    write(1, m, strlen(m));
    _exit(3);
}
static int recurse(int n) { volatile char buf[1024]; buf[0] = (char)n; return recurse(n + 1) + buf[0]; }
int main(void) {
    stack_t ss = {malloc(65536), 0, 65536};
    printf("too small: %d\n", sigaltstack(&(stack_t){malloc(100), 0, 100}, NULL));
    sigaltstack(&ss, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigaction(SIGSEGV, &sa, NULL);
    stack_t old;
    sigaltstack(NULL, &old);
    printf("alternate stack of %zu bytes, flags %d\n", old.ss_size, old.ss_flags);
    fflush(stdout);
    return recurse(0);
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_stack_overflow_is_caught_on_an_alternate_stack_as_natively() {
    let (Some(manager), Some(program)) = (manager(), musl_program("altstack", ALTSTACK_C)) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let exe = dir.path().join("altstack");
    std::fs::write(&exe, &program).expect("write");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (expected, code) = native(&exe, "altstack", &[], dir.path());
    assert_eq!(code, 3);
    let domain = create(&manager, limits(0, 64), None).await;
    let finished = run(
        &manager,
        &domain,
        "alt",
        &Guest::new(&program, "altstack", &[]),
    )
    .await;
    assert_eq!(finished.stdout, expected, "{:?}", finished.exit);
    assert_eq!(finished.exit.exit_code, 3, "{:?}", finished.exit);
    destroy(&manager, &domain).await;
}
