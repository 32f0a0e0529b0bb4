//! `/proc` in a Linux domain reports the domain's figures, never the host's: its memory, one
//! CPU, its own processes and the process's own maps, arguments and links.

mod support;

use support::*;
use xeno_schemas::proto::common::v1::TaskState;

const PROC_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int grep_count(const char *path, const char *needle) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    int n = 0;
    while (fgets(line, sizeof line, f)) if (strstr(line, needle)) n++;
    fclose(f);
    return n;
}

static long field(const char *path, const char *name) {
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char line[512];
    long value = -1;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, name, strlen(name)) == 0) value = atol(line + strlen(name));
    fclose(f);
    return value;
}

int main(int argc, char **argv) {
    (void)argc;
    setvbuf(stdout, NULL, _IONBF, 0);
    /* maps: the stack, and a 1 MiB mapping this program makes, with its address. */
    char *big = malloc(1 << 20);
    memset(big, 1, 1 << 20);
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    int stack = 0, found = 0;
    unsigned long start, end;
    while (fgets(line, sizeof line, maps)) {
        if (strstr(line, "[stack]")) stack = 1;
        if (sscanf(line, "%lx-%lx", &start, &end) == 2 && (unsigned long)big >= start && (unsigned long)big < end && strstr(line, "rw-p"))
            found = 1;
    }
    fclose(maps);
    printf("maps: stack %d, the 1 MiB buffer in a rw-p area %d\n", stack, found);
    char cmdline[256] = {0};
    FILE *c = fopen("/proc/self/cmdline", "r");
    size_t n = fread(cmdline, 1, sizeof cmdline, c);
    fclose(c);
    printf("cmdline: %zu bytes, %s then %s\n", n, cmdline, cmdline + strlen(cmdline) + 1);
    printf("status: PPid %ld, Pid is getpid %d\n", field("/proc/self/status", "PPid:"), field("/proc/self/status", "Pid:") == getpid());
    long total = field("/proc/meminfo", "MemTotal:");
    printf("meminfo: MemTotal %ld MiB\n", total / 1024);
    printf("cpuinfo: %d processor\n", grep_count("/proc/cpuinfo", "processor"));
    double up = 0;
    FILE *u = fopen("/proc/uptime", "r");
    fscanf(u, "%lf", &up);
    fclose(u);
    printf("uptime under a minute: %d\n", up > 0 && up < 60);
    char cwd[64] = {0};
    readlink("/proc/self/cwd", cwd, sizeof cwd - 1);
    printf("cwd %s, mounts %d\n", cwd, grep_count("/proc/mounts", " / "));
    printf("writing refused: %d\n", fopen("/proc/self/status", "w") == NULL);
    pid_t child = fork();
    if (child == 0) {
        printf("child: PPid is its parent %d\n", field("/proc/self/status", "PPid:") == getppid());
        fflush(stdout);
        _exit(0);
    }
    waitpid(child, NULL, 0);
    (void)argv;
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread")]
async fn proc_reports_the_domain_and_the_process_not_the_host() {
    let (Some(manager), Some(program)) = (manager(), musl_program("procfs", PROC_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 96), None).await;
    let finished = run(
        &manager,
        &domain,
        "proc",
        &Guest::new(&program, "procfs", &["arg"]),
    )
    .await;
    assert_eq!(finished.state(), TaskState::Exited, "{:?}", finished.exit);
    assert_eq!(
        finished.stdout_text(),
        "maps: stack 1, the 1 MiB buffer in a rw-p area 1\n\
         cmdline: 11 bytes, procfs then arg\n\
         status: PPid 1, Pid is getpid 1\n\
         meminfo: MemTotal 96 MiB\n\
         cpuinfo: 1 processor\n\
         uptime under a minute: 1\n\
         cwd /, mounts 1\n\
         writing refused: 1\n\
         child: PPid is its parent 1\n"
    );
    destroy(&manager, &domain).await;
}

/// `/proc/<pid>` of another process of the task: a child that changed directory and exec'd
/// busybox `sleep`, then the same child as a zombie, then gone once reaped.
const OTHER_C: &str = r#"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
static void show(const char *path) {
    char buf[512];
    int fd = open(path, O_RDONLY);
    if (fd < 0) { printf("%s: cannot open\n", path); return; }
    int n = read(fd, buf, sizeof buf - 1);
    close(fd);
    buf[n < 0 ? 0 : n] = 0;
    for (int i = 0; i < n; i++) if (buf[i] == 0) buf[i] = ' ';
    printf("%s: %s", path, buf);
    if (n == 0 || buf[n - 1] != '\n') printf("\n");
}
int main(void) {
    mkdir("sub", 0755);
    pid_t child = fork();
    if (child == 0) {
        chdir("sub");
        execl("/bb", "sleep", "30", (char *)0);
        _exit(99);
    }
    usleep(300000);
    char path[64], link[128];
    snprintf(path, sizeof path, "/proc/%d/cmdline", child);
    show(path);
    snprintf(path, sizeof path, "/proc/%d/comm", child);
    show(path);
    snprintf(path, sizeof path, "/proc/%d/exe", child);
    int n = readlink(path, link, sizeof link - 1);
    link[n < 0 ? 0 : n] = 0;
    printf("exe: %s\n", link);
    snprintf(path, sizeof path, "/proc/%d/cwd", child);
    n = readlink(path, link, sizeof link - 1);
    link[n < 0 ? 0 : n] = 0;
    printf("cwd: %s\n", link);
    snprintf(path, sizeof path, "/proc/%d/stat", child);
    char stat[512];
    int fd = open(path, O_RDONLY);
    n = read(fd, stat, sizeof stat - 1);
    close(fd);
    stat[n < 0 ? 0 : n] = 0;
    int pid, ppid; char name[32], state;
    sscanf(stat, "%d %31s %c %d", &pid, name, &state, &ppid);
    printf("stat: %d %s %c parent is me %d\n", pid == child, name, state, ppid == getpid());
    kill(child, SIGKILL);
    usleep(300000);
    fd = open(path, O_RDONLY);
    n = read(fd, stat, sizeof stat - 1);
    close(fd);
    stat[n < 0 ? 0 : n] = 0;
    sscanf(stat, "%d %31s %c", &pid, name, &state);
    printf("killed: %c\n", state);
    waitpid(child, 0, 0);
    printf("reaped: %s\n", open(path, O_RDONLY) < 0 ? "gone" : "still there");
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_shows_the_tasks_other_processes() {
    let Some(manager) = manager() else {
        return;
    };
    let (Some(program), Some(busybox)) = (musl_program("proc_other", OTHER_C), busybox()) else {
        return;
    };
    let domain = create(&manager, limits(0, 64), None).await;
    let guest = Guest::new(&program, "other", &[]).executable("bb", &busybox);
    let done = run(&manager, &domain, "other", &guest).await;
    let out = done.stdout_text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 7, "{out}");
    assert!(lines[0].ends_with("/cmdline: sleep 30 "), "{out}");
    assert!(lines[1].ends_with("/comm: sleep"), "{out}");
    assert_eq!(
        lines[2..],
        [
            "exe: /bb",
            "cwd: /sub",
            "stat: 1 (sleep) S parent is me 1",
            "killed: Z",
            "reaped: gone"
        ][..],
        "{out}"
    );
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ps_lists_the_tasks_processes_and_nothing_of_the_host() {
    let Some(manager) = manager() else {
        return;
    };
    let Some(busybox) = busybox() else {
        return;
    };
    let domain = create(&manager, limits(0, 64), None).await;
    let script = "sleep 5 & ls /proc | tr '\\n' ' '; echo; ps; kill $!; wait";
    let guest = Guest::new(&busybox, "sh", &["-c", script]);
    let done = run(&manager, &domain, "ps", &guest).await;
    let out = done.stdout_text();
    let mut lines = out.lines();
    let listing = lines.next().unwrap_or_default();
    for name in ["2", "3", "self", "cpuinfo", "meminfo", "uptime"] {
        assert!(listing.split(' ').any(|entry| entry == name), "{out}");
    }
    let table: Vec<&str> = lines.collect();
    assert!(table[0].contains("PID"), "{out}");
    // The shell, its background sleep and ps itself (a forked shell that named itself `ps`,
    // which ps shows in braces, as natively): the task's three processes, no more.
    assert_eq!(table.len(), 4, "{out}");
    assert!(table[1].ends_with(&format!("sh -c {script}")), "{out}");
    assert!(table[2].ends_with(" sleep 5"), "{out}");
    assert!(
        table[3].ends_with(&format!("{{ps}} sh -c {script}")),
        "{out}"
    );
    destroy(&manager, &domain).await;
}

/// `/proc/<pid>/fd` and `maps` of another process, and `/proc/self/fd`: a child opens a file,
/// a device and pipes at chosen numbers and maps three pages, then waits; its parent lists
/// and reads them. The parent waits for end of file on a pipe the child closes last, so the
/// child's table is final when the parent looks.
const FDS_C: &str = r#"
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
static void list(const char *path, const char *title) {
    DIR *dir = opendir(path);
    if (!dir) { printf("%s: cannot open\n", title); return; }
    printf("%s:", title);
    struct dirent *entry;
    while ((entry = readdir(dir))) if (entry->d_name[0] != '.') printf(" %s", entry->d_name);
    closedir(dir);
    printf("\n");
}
static void link_of(const char *path, const char *title) {
    char target[256];
    int n = readlink(path, target, sizeof target - 1);
    target[n < 0 ? 0 : n] = 0;
    printf("%s -> %s\n", title, n < 0 ? "(none)" : target);
}
int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int p[2], q[2];
    pipe(p);
    pipe(q);
    pid_t child = fork();
    if (child == 0) {
        close(p[0]);
        close(q[1]);
        int f = open("data.txt", O_CREAT | O_RDWR, 0644);
        dup2(f, 7);
        close(f);
        open("/dev/zero", O_RDONLY);
        char *m = mmap(0, 3 * 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        dprintf(p[1], "%lx", (unsigned long)m);
        close(p[1]);
        char byte;
        read(q[0], &byte, 1);
        _exit(0);
    }
    close(p[1]);
    close(q[0]);
    char address[32] = {0};
    int got = 0, n;
    while ((n = read(p[0], address + got, sizeof address - 1 - got)) > 0) got += n;
    usleep(100000);
    char path[64], title[16];
    snprintf(path, sizeof path, "/proc/%d/fd", child);
    list(path, "fds");
    int numbers[] = {0, 3, 5, 7};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/proc/%d/fd/%d", child, numbers[i]);
        snprintf(title, sizeof title, "%d", numbers[i]);
        link_of(path, title);
    }
    unsigned long start = strtoul(address, 0, 16), from, to;
    snprintf(path, sizeof path, "/proc/%d/maps", child);
    FILE *maps = fopen(path, "r");
    char line[256], perms[8];
    int found = 0;
    while (maps && fgets(line, sizeof line, maps))
        if (sscanf(line, "%lx-%lx %7s", &from, &to, perms) == 3 && from == start)
            found = to - from == 3 * 4096 && strcmp(perms, "r--p") == 0;
    if (maps) fclose(maps);
    printf("maps: the child's 3 pages r--p %d\n", found);
    list("/proc/self/fd", "self fds");
    link_of("/proc/self/fd/6", "self 6");
    link_of("/proc/self/fd/9", "self 9");
    DIR *self = opendir("/proc/self");
    int has_maps = 0, has_fd = 0;
    struct dirent *entry;
    while (self && (entry = readdir(self))) {
        has_maps |= strcmp(entry->d_name, "maps") == 0;
        has_fd |= strcmp(entry->d_name, "fd") == 0;
    }
    if (self) closedir(self);
    printf("self has maps %d fd %d\n", has_maps, has_fd);
    write(q[1], "x", 1);
    int status;
    waitpid(child, &status, 0);
    printf("child exited %d\n", WEXITSTATUS(status));
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proc_shows_another_processs_descriptors_and_maps() {
    let (Some(manager), Some(program)) = (manager(), musl_program("proc_fds", FDS_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 64), None).await;
    let done = run(&manager, &domain, "fds", &Guest::new(&program, "fds", &[])).await;
    assert_eq!(done.state(), TaskState::Exited, "{:?}", done.exit);
    assert_eq!(
        done.stdout_text(),
        "fds: 0 1 2 3 5 7\n\
         0 -> /dev/null\n\
         3 -> /dev/zero\n\
         5 -> pipe:[1]\n\
         7 -> /data.txt\n\
         maps: the child's 3 pages r--p 1\n\
         self fds: 0 1 2 3 4 6\n\
         self 6 -> pipe:[1]\n\
         self 9 -> (none)\n\
         self has maps 1 fd 1\n\
         child exited 0\n"
    );
    destroy(&manager, &domain).await;
}
