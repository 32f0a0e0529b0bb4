//! Pipes, eventfds, poll and select, and the devices under `/dev`, between the threads of one
//! task: the same program gives the same output in a domain as natively, down to how much a
//! non-blocking pipe holds and the SIGPIPE that ends it; a thread blocked on a pipe ends when
//! its domain is destroyed.

mod support;

use std::os::unix::process::ExitStatusExt;
use support::*;
use xeno_schemas::proto::common::v1::TaskState;

const PIPES_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/select.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

#define BIG (1 << 20)

static int pipefd[2];
static int event;

/* Writes 1 MiB in 3000-byte pieces, then closes its end: the reader sees every byte, then EOF. */
static void *producer(void *arg) {
    (void)arg;
    static unsigned char buf[3000];
    size_t sent = 0;
    while (sent < BIG) {
        size_t n = BIG - sent < sizeof buf ? BIG - sent : sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)((sent + i) * 7);
        ssize_t w = write(pipefd[1], buf, n);
        if (w != (ssize_t)n) { printf("short write %zd\n", w); exit(3); }
        sent += n;
    }
    close(pipefd[1]);
    return NULL;
}

/* Waits a little, then signals the eventfd twice. */
static void *signaller(void *arg) {
    (void)arg;
    struct timespec t = {0, 20 * 1000 * 1000};
    nanosleep(&t, NULL);
    uint64_t one = 1;
    write(event, &one, 8);
    write(event, &one, 8);
    return NULL;
}

/* One large write (256 KiB, more than the pipe holds) that must complete whole. */
static void *big_writer(void *arg) {
    int fd = *(int *)arg;
    static unsigned char buf[256 * 1024];
    memset(buf, 'z', sizeof buf);
    ssize_t w = write(fd, buf, sizeof buf);
    printf("big write returned %zd\n", w);
    return NULL;
}

int main(void) {
    /* Blocking pipe between two threads. */
    if (pipe(pipefd) != 0) { perror("pipe"); return 1; }
    pthread_t t;
    pthread_create(&t, NULL, producer, NULL);
    static unsigned char got[65536];
    size_t total = 0; int bad = 0; ssize_t r;
    while ((r = read(pipefd[0], got, sizeof got)) > 0) {
        for (ssize_t i = 0; i < r; i++)
            if (got[i] != (unsigned char)((total + i) * 7)) bad++;
        total += r;
    }
    pthread_join(t, NULL);
    printf("read %zu bytes, %d wrong, last read %zd\n", total, bad, r);
    close(pipefd[0]);

    /* A write larger than the pipe, drained by the main thread. */
    int p2[2];
    pipe(p2);
    pthread_create(&t, NULL, big_writer, &p2[1]);
    size_t drained = 0;
    while (drained < 256 * 1024) {
        r = read(p2[0], got, sizeof got);
        if (r <= 0) break;
        drained += r;
    }
    pthread_join(t, NULL);
    printf("drained %zu\n", drained);

    /* Non-blocking: empty read is EAGAIN; filling stops at 65536 with EAGAIN. */
    int nb[2];
    pipe2(nb, O_NONBLOCK | O_CLOEXEC);
    printf("cloexec %d nonblock %d\n", fcntl(nb[0], F_GETFD) & FD_CLOEXEC, (fcntl(nb[1], F_GETFL) & O_NONBLOCK) != 0);
    r = read(nb[0], got, 10);
    printf("empty read %zd errno %s\n", r, errno == EAGAIN ? "EAGAIN" : strerror(errno));
    size_t filled = 0;
    memset(got, 'a', sizeof got);
    for (;;) {
        r = write(nb[1], got, 1000);
        if (r < 0) break;
        filled += r;
    }
    printf("filled %zu then %s\n", filled, errno == EAGAIN ? "EAGAIN" : strerror(errno));
    int queued = 0;
    ioctl(nb[0], FIONREAD, &queued);
    printf("FIONREAD %d\n", queued);
    struct pollfd pf[2] = {{nb[0], POLLIN, 0}, {nb[1], POLLOUT, 0}};
    int n = poll(pf, 2, 0);
    printf("poll full: %d in=%d out=%d\n", n, pf[0].revents, pf[1].revents);

    /* Closing the read end: the writer gets EPIPE, and SIGPIPE once it is not ignored. */
    signal(SIGPIPE, SIG_IGN);
    close(nb[0]);
    r = write(nb[1], "x", 1);
    printf("write to closed pipe %zd %s\n", r, errno == EPIPE ? "EPIPE" : strerror(errno));
    pf[0].fd = nb[1]; pf[0].events = POLLOUT;
    poll(pf, 1, 0);
    printf("poll broken writer: err=%d\n", (pf[0].revents & POLLERR) != 0);
    close(nb[1]);

    /* Poll with a timeout and nothing ready: 0 after roughly the timeout. */
    int idle[2];
    pipe(idle);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    pf[0].fd = idle[0]; pf[0].events = POLLIN;
    n = poll(pf, 1, 50);
    clock_gettime(CLOCK_MONOTONIC, &b);
    long ms = (b.tv_sec - a.tv_sec) * 1000 + (b.tv_nsec - a.tv_nsec) / 1000000;
    printf("poll idle: %d, waited enough %d\n", n, ms >= 45);
    /* select: the write end is writable, the read end is not readable. */
    fd_set rs, ws;
    FD_ZERO(&rs); FD_ZERO(&ws);
    FD_SET(idle[0], &rs); FD_SET(idle[1], &ws);
    struct timeval tv = {0, 10000};
    n = select(idle[1] + 1, &rs, &ws, NULL, &tv);
    printf("select: %d r=%d w=%d\n", n, FD_ISSET(idle[0], &rs) != 0, FD_ISSET(idle[1], &ws) != 0);
    close(idle[1]);
    n = poll(pf, 1, -1);
    printf("poll after writer closed: %d hup=%d\n", n, (pf[0].revents & POLLHUP) != 0);

    /* eventfd: poll wakes when another thread signals; semaphore counts one at a time. */
    event = eventfd(0, 0);
    pthread_create(&t, NULL, signaller, NULL);
    pf[0].fd = event; pf[0].events = POLLIN;
    n = poll(pf, 1, 5000);
    pthread_join(t, NULL);
    uint64_t value = 0;
    read(event, &value, 8);
    printf("eventfd poll %d value %llu\n", n, (unsigned long long)value);
    int sem = eventfd(3, EFD_SEMAPHORE | EFD_NONBLOCK);
    for (int i = 0; i < 4; i++) {
        r = read(sem, &value, 8);
        printf("sem read %zd %llu%s\n", r, (unsigned long long)value, r < 0 && errno == EAGAIN ? " EAGAIN" : "");
        value = 0;
    }
    r = read(sem, &value, 4);
    printf("short eventfd read %s\n", r < 0 && errno == EINVAL ? "EINVAL" : "?");

    /* Devices. */
    int z = open("/dev/zero", O_RDONLY);
    memset(got, 1, 16);
    r = read(z, got, 16);
    int zeros = 0; for (int i = 0; i < 16; i++) zeros += got[i] == 0;
    printf("zero %zd bytes, %d zeros\n", r, zeros);
    int f = open("/dev/full", O_WRONLY);
    r = write(f, "x", 1);
    printf("full %zd %s\n", r, errno == ENOSPC ? "ENOSPC" : strerror(errno));
    int u = open("/dev/urandom", O_RDONLY);
    unsigned char r1[16], r2[16];
    read(u, r1, 16); read(u, r2, 16);
    printf("urandom differs %d\n", memcmp(r1, r2, 16) != 0);
    struct stat st;
    stat("/dev/zero", &st);
    printf("zero is chr %d rdev %u:%u\n", S_ISCHR(st.st_mode), major(st.st_rdev), minor(st.st_rdev));
    fstat(p2[0], &st);
    printf("pipe is fifo %d\n", S_ISFIFO(st.st_mode));

    /* Finally, SIGPIPE's default action ends the program. */
    signal(SIGPIPE, SIG_DFL);
    int last[2];
    pipe(last);
    close(last[0]);
    fflush(stdout);
    write(last[1], "x", 1);
    printf("not reached\n");
    return 0;
}
"#;

/// Runs `program` natively; its stdout and the signal that ended it, if one did.
fn native_run(name: &str, program: &[u8]) -> (String, Option<i32>) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    std::fs::write(&path, program).expect("write program");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let output = std::process::Command::new(&path)
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("native run");
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        output.status.signal(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn pipes_eventfds_poll_and_devices_behave_as_natively() {
    let (Some(manager), Some(program)) = (manager(), musl_program("pipes", PIPES_C)) else {
        return;
    };
    let (native_stdout, native_signal) = native_run("pipes", &program);
    assert_eq!(
        native_signal,
        Some(13),
        "natively, SIGPIPE ends it: {native_stdout}"
    );
    let domain = create(&manager, limits(0, 64), None).await;
    let finished = run(
        &manager,
        &domain,
        "pipes",
        &Guest::new(&program, "pipes", &[]),
    )
    .await;
    assert_eq!(finished.stdout_text(), native_stdout);
    assert_eq!(finished.state(), TaskState::Failed, "{:?}", finished.exit);
    assert!(
        finished.exit.reason.contains("signal 13 (SIGPIPE)"),
        "{:?}",
        finished.exit
    );
    assert!(
        finished.exit.unknown_calls.is_empty(),
        "{:?}",
        finished.exit.unknown_calls
    );
    destroy(&manager, &domain).await;
}

/// Reads a pipe whose writer it holds itself: it waits for ever, as on Linux.
const BLOCKED_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(void) {
    int fds[2];
    pipe(fds);
    printf("waiting\n");
    fflush(stdout);
    char c;
    read(fds[0], &c, 1);
    printf("not reached\n");
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_thread_blocked_on_a_pipe_ends_with_its_domain_and_its_wall_clock_limit() {
    let (Some(manager), Some(program)) = (manager(), musl_program("blocked", BLOCKED_C)) else {
        return;
    };
    // Destroyed while it waits.
    let domain = create(&manager, limits(0, 32), None).await;
    deploy(
        &manager,
        &domain,
        "reader",
        &Guest::new(&program, "blocked", &[]),
    )
    .await
    .expect("deploy");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let usage = destroy(&manager, &domain).await;
    assert!(usage.syscalls > 0, "{usage:?}");

    // Its wall-clock limit ends the wait.
    let domain = create(&manager, limits(0, 32), None).await;
    let mut guest = Guest::new(&program, "blocked", &[]);
    guest.task.wall_clock_seconds = Some(1);
    let finished = run(&manager, &domain, "reader", &guest).await;
    assert_eq!(finished.stdout_text(), "waiting\n");
    assert_eq!(finished.state(), TaskState::Failed, "{:?}", finished.exit);
    assert!(
        finished.exit.reason.contains("wall-clock limit"),
        "{:?}",
        finished.exit
    );
    destroy(&manager, &domain).await;
}

const ALIASES_C: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
int main(void) {
    int out = open("/dev/stdout", O_WRONLY);
    write(out, "via /dev/stdout\n", 16);
    int err = open("/dev/fd/2", O_WRONLY);
    write(err, "via /dev/fd/2\n", 14);
    int p[2];
    pipe(p);
    char name[32];
    snprintf(name, sizeof name, "/proc/self/fd/%d", p[1]);
    int w = open(name, O_WRONLY);
    write(w, "through the pipe\n", 17);
    char buf[64] = {0};
    read(p[0], buf, sizeof buf - 1);
    printf("%s", buf);
    char c;
    int in = open("/dev/stdin", O_RDONLY);
    printf("stdin read %zd\n", read(in, &c, 1));
    printf("closed fd: %s\n", open("/dev/fd/99", O_RDONLY) < 0 && errno == ENOENT ? "ENOENT" : "?");
    printf("tty: %s\n", open("/dev/tty", O_RDWR) < 0 && errno == ENXIO ? "ENXIO" : "?");
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn descriptors_have_their_dev_and_proc_names_and_there_is_no_terminal() {
    let (Some(manager), Some(program)) = (manager(), musl_program("aliases", ALIASES_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 32), None).await;
    let finished = run(
        &manager,
        &domain,
        "aliases",
        &Guest::new(&program, "aliases", &[]),
    )
    .await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    assert_eq!(
        finished.stdout_text(),
        "via /dev/stdout\nthrough the pipe\nstdin read 0\nclosed fd: ENOENT\ntty: ENXIO\n"
    );
    assert_eq!(String::from_utf8_lossy(&finished.stderr), "via /dev/fd/2\n");
    destroy(&manager, &domain).await;
}
