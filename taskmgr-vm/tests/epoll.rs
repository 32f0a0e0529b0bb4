//! `epoll` in a Linux domain over pipes, eventfds and timerfds, with a child process writing:
//! the same program's output natively and in a domain, byte for byte.

mod support;

use support::*;
use xeno_schemas::proto::common::v1::TaskState;

const EPOLL_C: &str = r#"
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int p[2];
    pipe(p);
    int ev = eventfd(0, 0);
    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct epoll_event e = {.events = EPOLLIN, .data.u64 = 111};
    epoll_ctl(ep, EPOLL_CTL_ADD, p[0], &e);
    e.data.u64 = 222;
    epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e);
    e.events = EPOLLIN | EPOLLONESHOT;
    e.data.u64 = 333;
    epoll_ctl(ep, EPOLL_CTL_ADD, tfd, &e);
    printf("add twice: %s\n", epoll_ctl(ep, EPOLL_CTL_ADD, ev, &e) < 0 ? strerror(errno) : "?");
    int file = open("plain.txt", O_RDONLY);
    printf("a regular file: %s\n", epoll_ctl(ep, EPOLL_CTL_ADD, file, &e) < 0 ? strerror(errno) : "?");
    printf("mod of a stranger: %s\n", epoll_ctl(ep, EPOLL_CTL_MOD, 0, &e) < 0 ? strerror(errno) : "?");
    struct epoll_event got[8];
    printf("nothing ready: %d\n", epoll_wait(ep, got, 8, 0));
    /* A child writes to the pipe after 50 ms; the parent sleeps in epoll_wait till then. */
    pid_t child = fork();
    if (child == 0) {
        struct timespec t = {0, 50 * 1000 * 1000};
        nanosleep(&t, NULL);
        write(p[1], "hello", 5);
        _exit(0);
    }
    int n = epoll_wait(ep, got, 8, 5000);
    printf("woken: %d event(s), data %llu, EPOLLIN %d\n", n, (unsigned long long)got[0].data.u64, (got[0].events & EPOLLIN) != 0);
    char buf[16] = {0};
    read(p[0], buf, sizeof buf);
    waitpid(child, NULL, 0);
    uint64_t one = 1;
    write(ev, &one, 8);
    struct itimerspec soon = {{0, 0}, {0, 10 * 1000 * 1000}};
    timerfd_settime(tfd, 0, &soon, NULL);
    struct timespec t = {0, 30 * 1000 * 1000};
    nanosleep(&t, NULL);
    n = epoll_wait(ep, got, 8, 1000);
    unsigned long long sum = 0;
    for (int i = 0; i < n; i++) sum += got[i].data.u64;
    printf("eventfd and timerfd: %d events, data sum %llu\n", n, sum);
    /* The timerfd was one-shot: it is not reported again though still readable. */
    uint64_t drain;
    read(ev, &drain, 8);
    n = epoll_wait(ep, got, 8, 0);
    printf("after one shot: %d\n", n);
    /* Closing the pipe's read end removes it from the list. */
    close(p[0]);
    write(ev, &one, 8);
    n = epoll_wait(ep, got, 8, 0);
    printf("after close: %d event(s), data %llu\n", n, n > 0 ? (unsigned long long)got[0].data.u64 : 0ULL);
    printf("bad maxevents: %s\n", epoll_wait(ep, got, 0, 0) < 0 ? strerror(errno) : "?");
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn epoll_over_pipes_eventfds_and_timerfds_behaves_as_natively() {
    let (Some(manager), Some(program)) = (manager(), musl_program("epoll", EPOLL_C)) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("plain.txt"), b"text").expect("plain");
    let exe = dir.path().join("epoll");
    std::fs::write(&exe, &program).expect("write");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let (expected, code) = native(&exe, "epoll", &[], dir.path());
    assert_eq!(code, 0);
    let domain = create(&manager, limits(0, 64), None).await;
    let guest = Guest::new(&program, "epoll", &[]).file("plain.txt", b"text");
    let finished = run(&manager, &domain, "epoll", &guest).await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    assert_eq!(
        finished.stdout_text(),
        String::from_utf8_lossy(&expected),
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
