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
