//! Static programs built at test time (C with Debian's musl-gcc, glibc static-PIE with gcc,
//! assembly with `as`) in domains: exit statuses, arguments and environment, files confined to
//! the session directory, the memory limit, faults reported with their signal, several tasks
//! in one session each in its own address space.

mod support;

use support::*;
use xeno_schemas::proto::common::v1::TaskState;
use xeno_taskmgr_kit::TaskManager;

const HELLO_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    printf("argc=%d", argc);
    for (int i = 0; i < argc; i++) printf(" [%s]", argv[i]);
    const char *greeting = getenv("GREETING");
    printf("\ngreeting=%s\n", greeting ? greeting : "(none)");
    return argc > 2 ? atoi(argv[2]) : 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn musl_program_sees_its_arguments_environment_and_exit_status() {
    let (Some(manager), Some(program)) = (manager(), musl_program("hello", HELLO_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 32), None).await;
    for status in ["0", "1", "42", "255"] {
        let guest = Guest::new(&program, "hello", &["x y", status]).env("GREETING", "bonjour");
        let finished = run(&manager, &domain, &format!("hello-{status}"), &guest).await;
        assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
        assert_eq!(finished.exit.exit_code.to_string(), status);
        assert_eq!(
            finished.stdout_text(),
            format!("argc=3 [hello] [x y] [{status}]\ngreeting=bonjour\n")
        );
    }
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn glibc_static_pie_runs() {
    let (Some(manager), Some(program)) = (manager(), glibc_program("pie", HELLO_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 32), None).await;
    let guest = Guest::new(&program, "pie", &["a", "7"]);
    let finished = run(&manager, &domain, "pie", &guest).await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    assert_eq!(finished.exit.exit_code, 7);
    assert_eq!(
        finished.stdout_text(),
        "argc=3 [pie] [a] [7]\ngreeting=(none)\n"
    );
    // glibc asks for rseq at start; the domain refuses it as a kernel without it does, which
    // is not an unknown call.
    assert_eq!(finished.exit.unknown_calls, [], "{:?}", finished.exit);
    destroy(&manager, &domain).await;
}

const UNKNOWN_CALLS_C: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    for (int i = 0; i < 3; i++) {
        long r = syscall(41, 2, 1, 0); /* socket: no network yet */
        printf("socket=%ld errno=%d\n", r, errno);
    }
    long r = syscall(500);
    printf("500=%ld errno=%d\n", r, errno);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn unknown_system_calls_are_counted_in_the_tasks_end() {
    let (Some(manager), Some(program)) = (manager(), musl_program("unknown", UNKNOWN_CALLS_C))
    else {
        return;
    };
    let domain = create(&manager, limits(0, 32), None).await;
    let finished = run(
        &manager,
        &domain,
        "unknown",
        &Guest::new(&program, "unknown", &[]),
    )
    .await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    assert_eq!(
        finished.stdout_text(),
        "socket=-1 errno=38\n".repeat(3) + "500=-1 errno=38\n"
    );
    let counted: Vec<(u32, u64)> = finished
        .exit
        .unknown_calls
        .iter()
        .map(|call| (call.number, call.count))
        .collect();
    assert_eq!(counted, [(41, 3), (500, 1)]);
    destroy(&manager, &domain).await;
}

const FILES_C: &str = r#"
#include <sys/stat.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static void try_open(const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd >= 0) { printf("%s: opened\n", path); close(fd); }
    else printf("%s: %s\n", path, errno == ENOENT ? "ENOENT" : errno == EACCES ? "EACCES" : errno == ELOOP ? "ELOOP" : errno == EPERM ? "EPERM" : strerror(errno));
}
int main(void) {
    try_open("/etc/passwd");
    try_open("../etc/passwd");
    try_open("../../../../../../etc/passwd");
    try_open("/proc/1/maps");
    symlink("/etc/passwd", "escape");
    try_open("escape");
    symlink("../../../../etc/passwd", "escape2");
    try_open("escape2");
    int fd = open("created.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    write(fd, "inside\n", 7);
    close(fd);
    try_open("created.txt");
    try_open("/created.txt");
    mkdir("d", 0755);
    chdir("d");
    try_open("../created.txt");
    char cwd[64];
    printf("cwd=%s\n", getcwd(cwd, sizeof cwd));
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn files_stay_inside_the_session_directory() {
    let (Some(manager), Some(program)) = (manager(), musl_program("files", FILES_C)) else {
        return;
    };
    let scratch = tempfile::tempdir().expect("scratch");
    let domain = create(&manager, limits(0, 32), Some(scratch.path())).await;
    let finished = run(
        &manager,
        &domain,
        "files",
        &Guest::new(&program, "files", &[]),
    )
    .await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    let text = finished.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    for (line, path) in lines.iter().zip([
        "/etc/passwd",
        "../etc/passwd",
        "../../../../../../etc/passwd",
        "/proc/1/maps",
        "escape",
        "escape2",
    ]) {
        assert!(
            *line == format!("{path}: ENOENT")
                || *line == format!("{path}: EACCES")
                || line.ends_with("ELOOP")
                || line.ends_with("EPERM"),
            "{path} must not open: {line}"
        );
    }
    assert_eq!(
        &lines[6..],
        [
            "created.txt: opened",
            "/created.txt: opened",
            "../created.txt: opened",
            "cwd=/d"
        ]
    );
    assert_eq!(
        std::fs::read(scratch.path().join("created.txt")).expect("file in the scratch dir"),
        b"inside\n"
    );
    destroy(&manager, &domain).await;
}

const HUNGRY_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
int main(void) {
    int mib = 0;
    for (;;) {
        char *p = malloc(1 << 20);
        if (!p) break;
        memset(p, 1, 1 << 20);
        mib++;
    }
    printf("allocated %d MiB\n", mib);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn memory_is_limited_to_the_domains_ram() {
    let (Some(manager), Some(program)) = (manager(), musl_program("hungry", HUNGRY_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 32), None).await;
    let finished = run(
        &manager,
        &domain,
        "hungry",
        &Guest::new(&program, "hungry", &[]),
    )
    .await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    let text = finished.stdout_text();
    let mib: u64 = text
        .trim()
        .strip_prefix("allocated ")
        .and_then(|rest| rest.strip_suffix(" MiB"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output {text:?}"));
    assert!(
        (20..32).contains(&mib),
        "allocated {mib} MiB in a 32 MiB domain"
    );
    let usage = destroy(&manager, &domain).await;
    assert!(usage.memory_peak_bytes <= 32 << 20, "{usage:?}");
    assert!(usage.memory_peak_bytes >= mib << 20, "{usage:?}");
    assert!(usage.memory_mb_ms > 0, "{usage:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn faults_end_the_task_with_their_signal() {
    let Some(manager) = manager() else { return };
    let cases = [
        (
            "segv",
            "int main(void) { *(volatile int *)8 = 1; return 0; }",
            "killed by signal 11 (SIGSEGV)",
        ),
        (
            "ill",
            "int main(void) { __asm__ volatile (\"ud2\"); return 0; }",
            "killed by signal 4 (SIGILL)",
        ),
        (
            "div",
            "int main(int c, char **v) { volatile int z = c - 1; return 5 / z; }",
            "killed by signal 8 (SIGFPE)",
        ),
        (
            "abort",
            "#include <stdlib.h>\nint main(void) { abort(); }",
            "killed by signal 6 (SIGABRT)",
        ),
        (
            "out",
            "int main(void) { __asm__ volatile (\"outb %al, $0x80\"); return 0; }",
            "killed by signal 11 (SIGSEGV)",
        ),
        (
            "hlt",
            "int main(void) { __asm__ volatile (\"hlt\"); return 0; }",
            "killed by signal 11 (SIGSEGV)",
        ),
        (
            "stack",
            "int f(int n) { volatile char b[4096]; b[0] = n; return f(n + 1) + b[0]; } int main(void) { return f(0); }",
            "killed by signal 11 (SIGSEGV)",
        ),
    ];
    let domain = create(&manager, limits(0, 64), None).await;
    for (name, source, reason) in cases {
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
        assert!(
            finished.exit.reason.starts_with(reason),
            "{name}: {}",
            finished.exit.reason
        );
    }
    // The domain is still good for more tasks.
    let Some(program) = musl_program("hello", HELLO_C) else {
        return;
    };
    let finished = run(
        &manager,
        &domain,
        "after",
        &Guest::new(&program, "hello", &[]),
    )
    .await;
    assert_eq!(finished.state(), TaskState::Exited);
    destroy(&manager, &domain).await;
}

const SPIN_C: &str = "int main(void) { for (;;) { __asm__ volatile (\"\"); } }";

#[tokio::test(flavor = "multi_thread")]
async fn destroy_while_running_stops_the_task_and_frees_the_domain() {
    let (Some(manager), Some(program)) = (manager(), musl_program("spin", SPIN_C)) else {
        return;
    };
    let domain = create(&manager, limits(300, 32), None).await;
    for task in ["a", "b"] {
        deploy(&manager, &domain, task, &Guest::new(&program, "spin", &[]))
            .await
            .expect("deploy");
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let usage = destroy(&manager, &domain).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(1),
        "destroy took {:?}",
        started.elapsed()
    );
    assert!(usage.cpu_time_us > 0);
    let inspect = manager
        .inspect_task(tonic::Request::new(
            xeno_schemas::proto::taskmanager::v1::InspectTaskRequest {
                domain_id: domain.clone(),
                task_id: "a".into(),
            },
        ))
        .await;
    assert!(inspect.is_err(), "the domain is gone");
    let again = destroy(&manager, &domain).await;
    assert_eq!(
        again, usage,
        "a repeated destroy returns the same final usage"
    );
}

const ADDRESS_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
static int global = 1;
int main(int argc, char **argv) {
    global += atoi(argv[1]);
    printf("global=%d at %p\n", global, (void *)&global);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn tasks_of_one_session_have_their_own_address_spaces() {
    let (Some(manager), Some(program)) = (manager(), musl_program("address", ADDRESS_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 64), None).await;
    let mut outputs = Vec::new();
    for n in 1..=3 {
        let guest = Guest::new(&program, "address", &[&n.to_string()]);
        let finished = run(&manager, &domain, &format!("t{n}"), &guest).await;
        outputs.push(finished.stdout_text());
    }
    // Same address, separate copies: each task starts from the executable's own data.
    for (n, output) in outputs.iter().enumerate() {
        assert!(
            output.starts_with(&format!("global={} at ", n + 2)),
            "{output}"
        );
    }
    let address = |s: &str| s.split(" at ").nth(1).map(str::to_owned);
    assert_eq!(address(&outputs[0]), address(&outputs[2]));
    destroy(&manager, &domain).await;
}

const READS_C: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
static unsigned char buf[8192];
static unsigned sum(const unsigned char *p, long n) { unsigned s = 0; for (long i = 0; i < n; i++) s = s * 31 + p[i]; return s; }
int main(void) {
    int fd = open("big.bin", O_RDONLY);
    unsigned total = 0; long bytes = 0, n;
    while ((n = read(fd, buf, 4096)) > 0) { total = total * 7 + sum(buf, n); bytes += n; }
    printf("read %ld bytes, sum %u, then %ld\n", bytes, total, (long)read(fd, buf, 10));
    printf("lseek %ld\n", (long)lseek(fd, 100, SEEK_SET));
    n = read(fd, buf, 3);
    printf("after lseek: %ld [%u %u %u]\n", n, buf[0], buf[1], buf[2]);
    errno = 0;
    n = read(fd, (void *)8, 100);
    printf("bad buffer: %ld %s\n", n, errno == EFAULT ? "EFAULT" : "other");
    n = read(fd, buf, 2);
    printf("position kept: %ld [%u %u]\n", n, buf[0], buf[1]);
    n = pread(fd, buf, 4, 1000);
    printf("pread: %ld [%u %u %u %u]\n", n, buf[0], buf[1], buf[2], buf[3]);
    errno = 0;
    n = pread(fd, buf, 4, -1);
    printf("pread negative: %ld %s\n", n, errno == EINVAL ? "EINVAL" : "other");
    int copy = dup(fd);
    n = read(copy, buf, 1);
    printf("dup reads on: %ld [%u] at %ld\n", n, buf[0], (long)lseek(fd, 0, SEEK_CUR));
    close(copy);
    close(fd);
    printf("closed: %ld\n", (long)read(fd, buf, 1));
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn reads_through_the_fast_path_behave_like_linux() {
    let (Some(manager), Some(program)) = (manager(), musl_program("reads", READS_C)) else {
        return;
    };
    let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 131 % 253) as u8).collect();
    let native_dir = tempfile::tempdir().expect("dir");
    std::fs::write(native_dir.path().join("big.bin"), &data).expect("write");
    let program_path = native_dir.path().join("reads");
    std::fs::write(&program_path, &program).expect("program");
    std::fs::set_permissions(
        &program_path,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let (expected, _) = native(&program_path, "reads", &[], native_dir.path());
    let domain = create(&manager, limits(0, 64), None).await;
    let guest = Guest::new(&program, "reads", &[]).file("big.bin", &data);
    let finished = run(&manager, &domain, "reads", &guest).await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    assert_eq!(finished.stdout_text(), String::from_utf8_lossy(&expected));
    let syscalls = finished.exit.usage.expect("usage").syscalls;
    assert!(
        syscalls < 100,
        "the 245 reads of 4 KiB should not exit to the VMM: {syscalls} calls served"
    );
    destroy(&manager, &domain).await;
}

const PROTECT_C: &str = r#"
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
int main(int argc, char **argv) {
    char *p = mmap(0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    /* A neighbour right after it, so that growing it has to move it. */
    mmap(p + 8192, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
    p[0] = 1; p[4096] = 2;
    char *q = mremap(p, 8192, 1 << 20, MREMAP_MAYMOVE);
    printf("moved %d, kept %d %d\n", q != p, q[0], q[4096]);
    mprotect(q, 4096, PROT_READ);
    printf("read-only now\n");
    fflush(stdout);
    if (argv[1][0] == 'w') q[0] = 3;
    else if (argv[1][0] == 'o') p[0] = 4;
    else { munmap(q, 1 << 20); printf("unmapped\n"); fflush(stdout); q[4096] = 5; }
    printf("wrote anyway\n");
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn lowered_protections_and_moved_mappings_take_effect_at_once() {
    let (Some(manager), Some(program)) = (manager(), musl_program("protect", PROTECT_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 32), None).await;
    for (mode, expected) in [
        ("write-read-only", "moved 1, kept 1 2\nread-only now\n"),
        ("old-address", "moved 1, kept 1 2\nread-only now\n"),
        ("unmapped", "moved 1, kept 1 2\nread-only now\nunmapped\n"),
    ] {
        let finished = run(
            &manager,
            &domain,
            mode,
            &Guest::new(&program, "protect", &[mode]),
        )
        .await;
        assert_eq!(finished.stdout_text(), expected, "{mode}");
        assert!(
            finished
                .exit
                .reason
                .starts_with("killed by signal 11 (SIGSEGV)"),
            "{mode}: {}",
            finished.exit.reason
        );
    }
    destroy(&manager, &domain).await;
}

const MOVED_C: &str = r#"
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>
#define PAGE 4096
static sigjmp_buf env;
static void on_segv(int sig) { siglongjmp(env, 1); }
/* Whether writing a byte at `at` faults. */
static int write_faults(volatile char *at) {
    if (sigsetjmp(env, 1)) return 1;
    *at = 9;
    return 0;
}
/* `len` bytes read-write, followed by a read-only page of their own (so that growing them
   has to move them). */
static char *blocked(size_t len) {
    char *p = mmap(0, len + PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mprotect(p + len, PAGE, PROT_READ);
    return p;
}
int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    signal(SIGSEGV, on_segv);
    /* 1. The grown part of a moved mapping is part of it, for every call after. */
    for (int round = 0; round < 50; round++) {
        size_t small = 2 * PAGE, big = (16 + round) * PAGE;
        char *p = blocked(small);
        memset(p, 'a', small);
        char *q = mremap(p, small, big, MREMAP_MAYMOVE);
        if (q == MAP_FAILED || q == p) { printf("round %d: not moved\n", round); return 1; }
        memset(q + small, 'b', big - small);
        int r = mprotect(q, big, PROT_READ);
        int w = mprotect(q, big, PROT_READ | PROT_WRITE);
        /* Fresh memory over the grown part reads as zero, not as what was there. */
        char *fresh = mmap(q + small, big - small, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
        int zero = fresh == q + small;
        for (size_t i = 0; zero && i < big - small; i += 512) zero = fresh[i] == 0;
        int kept = q[0] == 'a' && q[small - 1] == 'a';
        int gone = munmap(q, big);
        if (round < 2 || r || w || !zero || !kept || gone)
            printf("round %d: mprotect %d %d, fresh reads zero %d, kept %d, munmap %d\n",
                   round, r, w, zero, kept, gone);
        munmap(p + small, PAGE);
    }
    /* 2. A moved mapping keeps its access, and a parked page its contents; a range over
       mappings of different access is refused. */
    char *none = blocked(2 * PAGE);
    memset(none, 'y', 2 * PAGE);
    mprotect(none, 2 * PAGE, PROT_NONE);
    char *moved = mremap(none, 2 * PAGE, 5 * PAGE, MREMAP_MAYMOVE);
    printf("parked: moved %d\n", moved != MAP_FAILED && moved != none);
    int faults[3] = {write_faults(moved), write_faults(moved + 4 * PAGE), write_faults(none)};
    printf("write faults: moved %d, grown %d, old place %d\n", faults[0], faults[1], faults[2]);
    mprotect(moved, 5 * PAGE, PROT_READ);
    printf("kept %c, grown reads %d\n", moved[PAGE + 7], moved[4 * PAGE]);
    char *ro = blocked(PAGE);
    ro[0] = 'z';
    mprotect(ro, PAGE, PROT_READ);
    char *moved_ro = mremap(ro, PAGE, 3 * PAGE, MREMAP_MAYMOVE);
    int ro_faults[2] = {write_faults(moved_ro), write_faults(moved_ro + 2 * PAGE)};
    printf("read-only: kept %c, write faults %d %d\n", moved_ro[0], ro_faults[0], ro_faults[1]);
    char *mixed = blocked(2 * PAGE);
    mprotect(mixed + PAGE, PAGE, PROT_READ);
    errno = 0;
    char *refused = mremap(mixed, 2 * PAGE, 4 * PAGE, MREMAP_MAYMOVE);
    printf("mixed: failed %d, errno %d, first page still writable %d\n",
           refused == MAP_FAILED, errno, !write_faults(mixed));
    return 0;
}
"#;

/// `mremap` moving a mapping to grow it: the grown part belongs to the mapping (mprotect
/// and munmap cover it, fresh memory mapped over it reads zero), the mapping keeps its
/// access and its parked pages, the old place is gone, and a range over mappings of
/// different access is refused as Linux does. (The grown part once had page-table entries but no
/// area: memory mapped over it later kept reading its old frames, through translations KVM
/// never dropped.)
#[tokio::test(flavor = "multi_thread")]
async fn a_moved_mapping_keeps_its_grown_part_and_its_access() {
    let (Some(manager), Some(program)) = (manager(), musl_program("moved", MOVED_C)) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("moved");
    std::fs::write(&path, &program).expect("program");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (expected, code) = native(&path, "moved", &[], dir.path());
    assert_eq!(code, 0, "native: {}", String::from_utf8_lossy(&expected));
    let domain = create(&manager, limits(0, 32), None).await;
    let finished = run(
        &manager,
        &domain,
        "moved",
        &Guest::new(&program, "moved", &[]),
    )
    .await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    assert_eq!(finished.stdout_text(), String::from_utf8_lossy(&expected));
    destroy(&manager, &domain).await;
}

const SIGNALS_C: &str = r#"
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static sigjmp_buf env;
static char *page;
static void on_usr(int sig, siginfo_t *info, void *uc) { printf("handler %d code %d\n", sig, info->si_code); }
static void on_segv_jump(int sig, siginfo_t *info, void *uc) { printf("segv at %p\n", info->si_addr); fflush(stdout); siglongjmp(env, 1); }
static void on_segv_fix(int sig, siginfo_t *info, void *uc) { mprotect(page, 4096, PROT_READ | PROT_WRITE); }
int main(void) {
    setvbuf(stdout, 0, _IONBF, 0);
    struct sigaction sa; memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_usr; sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, 0); sigaction(SIGUSR2, &sa, 0);
    long canary = 0x1234567890L;
    raise(SIGUSR1);
    printf("after raise, canary %lx\n", canary);
    sigset_t set; sigemptyset(&set); sigaddset(&set, SIGUSR2);
    sigprocmask(SIG_BLOCK, &set, 0);
    raise(SIGUSR2);
    printf("blocked\n");
    sigprocmask(SIG_UNBLOCK, &set, 0);
    printf("unblocked\n");
    sa.sa_sigaction = on_segv_jump; sigaction(SIGSEGV, &sa, 0);
    if (sigsetjmp(env, 1) == 0) { *(volatile int *)8 = 1; printf("not reached\n"); }
    else printf("recovered\n");
    page = mmap(0, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    sa.sa_sigaction = on_segv_fix; sigaction(SIGSEGV, &sa, 0);
    page[5] = 42;
    printf("fixed: %d\n", page[5]);
    signal(SIGTERM, SIG_IGN);
    raise(SIGTERM);
    printf("ignored\n");
    signal(SIGTERM, SIG_DFL);
    raise(SIGTERM);
    printf("not reached\n");
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn signal_handlers_run_and_return() {
    let (Some(manager), Some(program)) = (manager(), musl_program("signals", SIGNALS_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 32), None).await;
    let finished = run(
        &manager,
        &domain,
        "signals",
        &Guest::new(&program, "signals", &[]),
    )
    .await;
    assert_eq!(
        finished.stdout_text(),
        "handler 10 code -6\nafter raise, canary 1234567890\nblocked\nhandler 12 code -6\nunblocked\n\
         segv at 0x8\nrecovered\nfixed: 42\nignored\n"
    );
    assert_eq!(finished.exit.reason, "killed by signal 15 (SIGTERM)");
    destroy(&manager, &domain).await;
}

const THREADS_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#define THREADS 4
#define ROUNDS 20000
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t turn = PTHREAD_COND_INITIALIZER;
static long counter;
static int started;
static void *work(void *arg) {
    long id = (long)arg;
    pthread_mutex_lock(&lock);
    started++;
    pthread_cond_broadcast(&turn);
    while (started < THREADS) pthread_cond_wait(&turn, &lock);
    pthread_mutex_unlock(&lock);
    for (int i = 0; i < ROUNDS; i++) {
        pthread_mutex_lock(&lock);
        counter++;
        pthread_mutex_unlock(&lock);
    }
    return (void *)(id * 10);
}
int main(void) {
    pthread_t threads[THREADS];
    for (long i = 0; i < THREADS; i++)
        if (pthread_create(&threads[i], 0, work, (void *)i) != 0) { puts("create failed"); return 1; }
    long sum = 0;
    for (int i = 0; i < THREADS; i++) {
        void *result;
        pthread_join(threads[i], &result);
        sum += (long)result;
    }
    printf("counter=%ld sum=%ld\n", counter, sum);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn pthreads_share_memory_and_wait_on_futexes() {
    let (Some(manager), Some(program)) = (manager(), musl_program("threads", THREADS_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 64), None).await;
    let finished = run(
        &manager,
        &domain,
        "threads",
        &Guest::new(&program, "threads", &[]),
    )
    .await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    assert_eq!(finished.exit.exit_code, 0);
    assert_eq!(finished.stdout_text(), "counter=80000 sum=60\n");
    destroy(&manager, &domain).await;
}
