//! Timers in a Linux domain: `alarm`, `setitimer`, POSIX timers and `timerfd` fire while
//! their process runs, sleeps or waits, exactly as they do natively (the same program's
//! output is compared byte for byte), and an alarm nobody handles ends the process.

mod support;

use std::os::unix::process::ExitStatusExt;
use support::*;
use xeno_schemas::proto::common::v1::TaskState;

const TIMERS_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t alarms, ticks, usr1;
static void on_alarm(int s) { (void)s; alarms++; }
static volatile double sink;
/* Uses the SSE registers the interrupted loop keeps its sum in. */
static void on_tick(int s) {
    double x = s * 3.7, y = 1.0;
    for (int i = 0; i < 100; i++) { y = y * 1.0001 + x / (i + 1); x = x * 0.999; }
    sink = x + y;
    ticks++;
}
static void on_usr1(int s, siginfo_t *info, void *uc) { (void)s; (void)uc; usr1 += info->si_code == SI_TIMER; }

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    /* 1. alarm interrupts a blocking read with its handler (no SA_RESTART): EINTR. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sigaction(SIGALRM, &sa, NULL);
    int p[2];
    pipe(p);
    printf("alarm returns %u first\n", alarm(1));
    char c;
    ssize_t n = read(p[0], &c, 1);
    printf("read: %zd %s, alarms %d\n", n, n < 0 ? strerror(errno) : "", alarms);
    printf("alarm(5) then alarm(0) returns %u\n", (alarm(5), alarm(0)));

    /* 2. setitimer every 20 ms while spinning: the handler runs in the middle of user code. */
    sa.sa_handler = on_tick;
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval every = {{0, 20000}, {0, 20000}}, off = {{0, 0}, {0, 0}}, left;
    setitimer(ITIMER_REAL, &every, NULL);
    /* A floating-point loop the ticks interrupt, with no system call in it: its sum must come
       out as it does with no interruption at all. */
    double a = 0.5, b = 1.25, sum = 0.0;
    long rounds = 0;
    while (ticks < 5 && rounds < 4000000000L) {
        for (int i = 0; i < 1000; i++) { sum += a * b; a = a * 1.0000001 + 0.1; b = b * 0.9999999 + 0.2; }
        rounds++;
    }
    getitimer(ITIMER_REAL, &left);
    setitimer(ITIMER_REAL, &off, NULL);
    /* Recompute the same number of rounds without signals and compare. */
    double a2 = 0.5, b2 = 1.25, c2 = 0.0;
    for (long r = 0; r < rounds; r++)
        for (int i = 0; i < 1000; i++) { c2 += a2 * b2; a2 = a2 * 1.0000001 + 0.1; b2 = b2 * 0.9999999 + 0.2; }
    printf("ticks reached 5: %d, interval kept %ld us, sums agree: %d\n", ticks >= 5,
           (long)left.it_interval.tv_usec, sum == c2 && a == a2 && b == b2);
    printf("ITIMER_VIRTUAL: %s\n", setitimer(ITIMER_VIRTUAL, &every, NULL) == 0 ? "armed" : strerror(errno));
    setitimer(ITIMER_VIRTUAL, &off, NULL);

    /* 3. A POSIX timer sending SIGUSR1 wakes nanosleep. */
    sa.sa_handler = NULL;
    sa.sa_sigaction = on_usr1;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    timer_t timer;
    struct sigevent ev;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGUSR1;
    printf("timer_create: %d\n", timer_create(CLOCK_MONOTONIC, &ev, &timer));
    struct itimerspec once = {{0, 0}, {0, 50 * 1000 * 1000}};
    timer_settime(timer, 0, &once, NULL);
    struct timespec long_sleep = {5, 0};
    int slept = nanosleep(&long_sleep, NULL);
    printf("nanosleep: %d %s, usr1 by timer %d\n", slept, slept ? strerror(errno) : "", usr1);
    /* ppoll with a signal mask: SIGUSR1, blocked otherwise, is let in for the wait only. */
    sigset_t blocked, during;
    sigemptyset(&blocked);
    sigaddset(&blocked, SIGUSR1);
    sigprocmask(SIG_BLOCK, &blocked, NULL);
    sigemptyset(&during);
    timer_settime(timer, 0, &once, NULL);
    struct timespec two = {2, 0};
    int polled = ppoll(NULL, 0, &two, &during);
    printf("ppoll with a mask: %d %s, usr1 by timer %d\n", polled, polled ? strerror(errno) : "", usr1);
    sigset_t after;
    sigprocmask(SIG_BLOCK, NULL, &after);
    printf("SIGUSR1 blocked again after: %d\n", sigismember(&after, SIGUSR1));
    printf("ppoll with a bad sigset size: %s\n",
           syscall(SYS_ppoll, NULL, 0, &two, &during, 3) < 0 ? strerror(errno) : "?");
    sigprocmask(SIG_UNBLOCK, &blocked, NULL);
    timer_delete(timer);
    printf("timer_delete again: %s\n", timer_delete(timer) < 0 ? strerror(errno) : "?");

    /* 4. timerfd: three expirations of 10 ms, read through poll. */
    int tfd = timerfd_create(CLOCK_MONOTONIC, 0);
    struct itimerspec periodic = {{0, 10 * 1000 * 1000}, {0, 10 * 1000 * 1000}};
    timerfd_settime(tfd, 0, &periodic, NULL);
    uint64_t total = 0;
    while (total < 3) {
        struct pollfd pfd = {tfd, POLLIN, 0};
        poll(&pfd, 1, 2000);
        uint64_t count;
        if (read(tfd, &count, 8) == 8) total += count;
    }
    printf("timerfd counted at least 3: %d\n", total >= 3);
    struct itimerspec disarm = {{0, 0}, {0, 0}};
    timerfd_settime(tfd, 0, &disarm, NULL);
    int nb = timerfd_create(CLOCK_REALTIME, TFD_NONBLOCK);
    uint64_t count;
    printf("unarmed nonblocking read: %s\n", read(nb, &count, 8) < 0 ? strerror(errno) : "?");
    printf("timerfd write: %s\n", write(nb, &count, 8) < 0 ? strerror(errno) : "?");

    /* 5. An alarm nobody handles ends the process while it sleeps. */
    signal(SIGALRM, SIG_DFL);
    alarm(1);
    sleep(10);
    printf("not reached\n");
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn alarms_interval_timers_posix_timers_and_timerfds_fire_as_natively() {
    let (Some(manager), Some(program)) = (manager(), musl_program("timers", TIMERS_C)) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let exe = dir.path().join("timers");
    std::fs::write(&exe, &program).expect("write");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let output = std::process::Command::new(&exe)
        .output()
        .expect("native run");
    assert_eq!(output.status.signal(), Some(14), "natively SIGALRM ends it");
    let expected = String::from_utf8_lossy(&output.stdout).into_owned();
    let domain = create(&manager, limits(0, 64), None).await;
    let finished = run(
        &manager,
        &domain,
        "timers",
        &Guest::new(&program, "timers", &[]),
    )
    .await;
    assert_eq!(finished.stdout_text(), expected, "{:?}", finished.exit);
    assert_eq!(finished.state(), TaskState::Failed, "{:?}", finished.exit);
    assert!(
        finished.exit.reason.contains("signal 14 (SIGALRM)"),
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

/// `sigwaitinfo` and `sigtimedwait` on blocked signals: one another process sends, a
/// timeout, an `alarm`, one already pending, and a handled signal outside the set arriving
/// during a wait (its handler runs; musl then waits again, glibc would return EINTR).
const SIGWAIT_C: &str = r#"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static volatile sig_atomic_t handled;
static void on_usr2(int s) { (void)s; handled = 1; }
int main(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, 0);
    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) { usleep(100000); kill(parent, SIGUSR1); _exit(0); }
    siginfo_t info;
    int s = sigwaitinfo(&set, &info);
    printf("sent: %d from the child %d, SI_USER %d\n", s, info.si_pid == child, info.si_code == SI_USER);
    struct timespec short_wait = {0, 200000000};
    errno = 0;
    s = sigtimedwait(&set, &info, &short_wait);
    printf("timeout: %d EAGAIN %d\n", s, errno == EAGAIN);
    alarm(1);
    s = sigwaitinfo(&set, &info);
    printf("alarm: %d\n", s);
    raise(SIGUSR1);
    struct timespec no_wait = {0, 0};
    s = sigtimedwait(&set, &info, &no_wait);
    printf("pending: %d\n", s);
    struct sigaction action = {0};
    action.sa_handler = on_usr2;
    sigaction(SIGUSR2, &action, 0);
    child = fork();
    if (child == 0) {
        usleep(100000);
        kill(parent, SIGUSR2);
        usleep(100000);
        kill(parent, SIGUSR1);
        _exit(0);
    }
    s = sigwaitinfo(&set, &info);
    printf("after a handler: %d, handled %d\n", s, (int)handled);
    while (wait(0) > 0) {}
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigtimedwait_takes_blocked_signals_and_times_out_as_natively() {
    let (Some(manager), Some(program)) = (manager(), musl_program("sigwait", SIGWAIT_C)) else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let exe = dir.path().join("sigwait");
    std::fs::write(&exe, &program).expect("write");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let output = std::process::Command::new(&exe)
        .output()
        .expect("native run");
    let expected = "sent: 10 from the child 1, SI_USER 1\ntimeout: -1 EAGAIN 1\nalarm: 14\n\
                    pending: 10\nafter a handler: 10, handled 1\n";
    assert_eq!(String::from_utf8_lossy(&output.stdout), expected);
    let domain = create(&manager, limits(0, 64), None).await;
    let started = std::time::Instant::now();
    let finished = run(
        &manager,
        &domain,
        "sigwait",
        &Guest::new(&program, "sigwait", &[]),
    )
    .await;
    assert_eq!(finished.stdout_text(), expected, "{:?}", finished.exit);
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    // The waits took their time: the child's 0.1 s, the 0.2 s timeout, the 1 s alarm.
    assert!(started.elapsed() >= std::time::Duration::from_millis(1300));
    destroy(&manager, &domain).await;
}

/// `ITIMER_PROF` and `ITIMER_VIRTUAL` count the process's CPU time: they fire while it spins,
/// not while it sleeps; their interval is kept; a child of `fork` starts without them, and
/// they survive `execve`. A POSIX timer on the process's CPU clock fires as it spins too.
const CPU_TIMERS_C: &str = r#"
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static volatile int prof, virt;
static void on_prof(int s) { (void)s; prof++; }
static void on_virt(int s) { (void)s; virt++; }
static volatile int usr2s;
static void on_usr2(int s) { (void)s; usr2s++; }
int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    struct itimerval now;
    if (argc > 1) {
        getitimer(ITIMER_PROF, &now);
        printf("after exec: still armed %d\n", now.it_value.tv_sec > 0 || now.it_value.tv_usec > 0);
        return 0;
    }
    signal(SIGPROF, on_prof);
    signal(SIGVTALRM, on_virt);
    struct itimerval every = {{0, 20000}, {0, 20000}}, off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_PROF, &every, NULL);
    setitimer(ITIMER_VIRTUAL, &every, NULL);
    volatile unsigned long spin = 0;
    while (prof < 3 || virt < 3) spin++;
    printf("spinning: 3 of each %d\n", prof >= 3 && virt >= 3);
    int before = prof;
    usleep(300000);
    printf("sleeping 300 ms: at most one more %d\n", prof - before <= 1);
    getitimer(ITIMER_PROF, &now);
    printf("interval kept: %ld us\n", (long)now.it_interval.tv_usec);
    pid_t child = fork();
    if (child == 0) {
        getitimer(ITIMER_PROF, &now);
        printf("child: none %d\n", now.it_value.tv_sec == 0 && now.it_value.tv_usec == 0);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    setitimer(ITIMER_VIRTUAL, &off, NULL);
    getitimer(ITIMER_VIRTUAL, &now);
    printf("disarmed: %d\n", now.it_value.tv_sec == 0 && now.it_value.tv_usec == 0);
    printf("bad which: %s\n", setitimer(5, &every, NULL) == 0 ? "armed" : strerror(errno));
    /* A POSIX timer on the process's CPU clock: SIGUSR2 every 10 ms of CPU, while spinning. */
    struct sigaction sa = {0};
    sa.sa_handler = on_usr2;
    sigaction(SIGUSR2, &sa, NULL);
    struct sigevent ev = {0};
    ev.sigev_notify = SIGEV_SIGNAL;
    ev.sigev_signo = SIGUSR2;
    timer_t cpu;
    printf("cpu timer: %d\n", timer_create(CLOCK_PROCESS_CPUTIME_ID, &ev, &cpu));
    struct itimerspec ten = {{0, 10000000}, {0, 10000000}};
    timer_settime(cpu, 0, &ten, NULL);
    while (usr2s < 3) spin++;
    struct itimerspec got;
    timer_gettime(cpu, &got);
    printf("cpu timer fired 3 times, interval %ld ns\n", got.it_interval.tv_nsec);
    timer_delete(cpu);
    printf("thread CPU clock: %s\n", timer_create(CLOCK_THREAD_CPUTIME_ID, &ev, &cpu) == 0 ? "made" : strerror(errno));
    signal(SIGPROF, SIG_IGN);
    execl(argv[0], argv[0], "again", (char *)0);
    return 1;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn cpu_time_interval_timers_fire_as_natively() {
    let (Some(manager), Some(program)) = (manager(), musl_program("cputimers", CPU_TIMERS_C))
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let exe = dir.path().join("cputimers");
    std::fs::write(&exe, &program).expect("write");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let output = std::process::Command::new(&exe)
        .current_dir(dir.path())
        .output()
        .expect("native run");
    let expected = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        expected,
        "spinning: 3 of each 1\n\
         sleeping 300 ms: at most one more 1\n\
         interval kept: 20000 us\n\
         child: none 1\n\
         disarmed: 1\n\
         bad which: Invalid argument\n\
         cpu timer: 0\n\
         cpu timer fired 3 times, interval 10000000 ns\n\
         thread CPU clock: made\n\
         after exec: still armed 1\n"
    );
    // The one line that differs: timers on a thread's CPU clock are not kept here.
    let expected = expected.replace(
        "thread CPU clock: made",
        "thread CPU clock: Invalid argument",
    );
    let domain = create(&manager, limits(0, 64), None).await;
    let guest = Guest::new(&program, "/cputimers", &[]).executable("cputimers", &program);
    let finished = run(&manager, &domain, "cputimers", &guest).await;
    assert_eq!(finished.stdout_text(), expected, "{:?}", finished.exit);
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    destroy(&manager, &domain).await;
}

/// The process's CPU clock and `getrusage(RUSAGE_SELF)` count all its threads: two threads
/// that each spin for 100 ms of their own CPU make at least 190 ms of the process's. A child
/// that spins for 100 ms is reported so by `wait4` and `RUSAGE_CHILDREN`.
const PROCESS_CLOCK_C: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
static long ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return t.tv_sec * 1000000000L + t.tv_nsec;
}
static void *spin(void *arg) {
    (void)arg;
    volatile unsigned long n = 0;
    while (ns(CLOCK_THREAD_CPUTIME_ID) < 100000000L) n++;
    return 0;
}
int main(void) {
    long before = ns(CLOCK_PROCESS_CPUTIME_ID);
    pthread_t a, b;
    pthread_create(&a, 0, spin, 0);
    pthread_create(&b, 0, spin, 0);
    pthread_join(a, 0);
    pthread_join(b, 0);
    long after = ns(CLOCK_PROCESS_CPUTIME_ID);
    printf("process CPU clock counts both threads: %d\n", after - before >= 190000000L);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    long us = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000L
        + usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
    printf("getrusage too: %d\n", us >= 190000);
    pid_t child = fork();
    if (child == 0) {
        spin(0);
        _exit(0);
    }
    struct rusage of_child;
    wait4(child, NULL, 0, &of_child);
    long child_us = of_child.ru_utime.tv_sec * 1000000L + of_child.ru_utime.tv_usec
        + of_child.ru_stime.tv_sec * 1000000L + of_child.ru_stime.tv_usec;
    printf("wait4 reports the child's 100 ms: %d\n", child_us >= 95000);
    getrusage(RUSAGE_CHILDREN, &usage);
    us = (usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) * 1000000L
        + usage.ru_utime.tv_usec + usage.ru_stime.tv_usec;
    printf("RUSAGE_CHILDREN too: %d\n", us >= 95000);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn cpu_clocks_and_rusage_count_every_thread_and_reaped_child() {
    let (Some(manager), Some(program)) = (manager(), musl_program("procclock", PROCESS_CLOCK_C))
    else {
        return;
    };
    let expected = "process CPU clock counts both threads: 1\ngetrusage too: 1\n\
                    wait4 reports the child's 100 ms: 1\nRUSAGE_CHILDREN too: 1\n";
    let dir = tempfile::tempdir().expect("dir");
    let exe = dir.path().join("procclock");
    std::fs::write(&exe, &program).expect("write");
    std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let native = std::process::Command::new(&exe).output().expect("native");
    assert_eq!(String::from_utf8_lossy(&native.stdout), expected);
    let domain = create(&manager, limits(0, 64), None).await;
    let guest = Guest::new(&program, "procclock", &[]);
    let finished = run(&manager, &domain, "procclock", &guest).await;
    assert_eq!(finished.stdout_text(), expected, "{:?}", finished.exit);
    destroy(&manager, &domain).await;
}
