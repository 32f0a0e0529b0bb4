//! Dynamically linked programs in a Linux domain: the VMM maps the dynamic loader the
//! program's `PT_INTERP` names, from the session, and the loader maps the program's
//! libraries itself through `openat` and `mmap`, as on Linux. The program is Debian's gcc
//! output, linked against the host's own glibc, shipped with it; its output must be what it
//! prints natively.

mod support;

use std::path::{Path, PathBuf};
use support::*;
use xeno_schemas::proto::common::v1::TaskState;

const DYNAMIC_C: &str = r#"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static int compare(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

int main(int argc, char **argv) {
    char *words[] = {"pear", "apple", "fig", "kiwi"};
    qsort(words, 4, sizeof *words, compare);
    printf("%s %s %s %s\n", words[0], words[1], words[2], words[3]);
    printf("sqrt(2) = %.6f, %s\n", sqrt(2.0), getenv("GREETING") ? getenv("GREETING") : "(none)");
    char *copy = strdup(argv[0]);
    printf("argv[0] %s, %zu bytes\n", copy, strlen(copy));
    free(copy);
    fflush(stdout);
    if (argc > 1) return atoi(argv[1]);
    /* The dynamically linked program runs itself again, through fork and execve. */
    pid_t pid = fork();
    if (pid == 0) {
        execl(argv[0], argv[0], "3", (char *)NULL);
        _exit(127);
    }
    int status;
    waitpid(pid, &status, 0);
    printf("child exited %d\n", WEXITSTATUS(status));
    return 0;
}
"#;

/// The real file behind `path` on the host (the loader's path is a symbolic link).
fn host_file(path: &str) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dynamically_linked_program_runs_with_its_loader_and_libraries() {
    let Some(manager) = manager() else { return };
    let Some(gcc) = tool("/usr/bin/gcc", "gcc") else {
        return;
    };
    let dir = tempfile::tempdir().expect("dir");
    let source = dir.path().join("dynamic.c");
    std::fs::write(&source, DYNAMIC_C).expect("source");
    let out = dir.path().join("dynamic");
    let built = std::process::Command::new(gcc)
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&source)
        .arg("-lm")
        .status()
        .expect("gcc runs");
    assert!(built.success(), "gcc builds a dynamic program");
    let program = std::fs::read(&out).expect("built");
    let (Some(loader), Some(libc), Some(libm)) = (
        host_file("/lib64/ld-linux-x86-64.so.2"),
        host_file("/lib/x86_64-linux-gnu/libc.so.6"),
        host_file("/lib/x86_64-linux-gnu/libm.so.6"),
    ) else {
        xeno_tests::prerequisite::missing("the host's glibc loader and libraries");
        return;
    };
    let read = |path: &Path| std::fs::read(path).expect("readable");
    // Natively, from a directory of its own, as the session will hold it.
    let native_dir = tempfile::tempdir().expect("native");
    std::fs::create_dir(native_dir.path().join("bin")).expect("bin");
    let native_exe = native_dir.path().join("bin/dynamic");
    std::fs::copy(&out, &native_exe).expect("copy");
    let output = std::process::Command::new("bin/dynamic")
        .current_dir(native_dir.path())
        .env_clear()
        .output()
        .expect("native run");
    let expected = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(expected.contains("child exited 3"), "{expected}");

    let domain = create(&manager, limits(0, 128), None).await;
    let guest = Guest::new(&program, "bin/dynamic", &[])
        .executable("bin/dynamic", &program)
        .executable("lib64/ld-linux-x86-64.so.2", &read(&loader))
        .file("lib/x86_64-linux-gnu/libc.so.6", &read(&libc))
        .file("lib/x86_64-linux-gnu/libm.so.6", &read(&libm));
    let finished = run(&manager, &domain, "dynamic", &guest).await;
    assert_eq!(
        finished.state(),
        TaskState::Exited,
        "{:?} {}",
        finished.exit,
        String::from_utf8_lossy(&finished.stderr)
    );
    assert_eq!(
        finished.stdout_text(),
        expected,
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    assert_eq!(finished.exit.unknown_calls, [], "{:?}", finished.exit);
    destroy(&manager, &domain).await;
}
