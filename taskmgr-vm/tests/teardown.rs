//! A tree of processes goes with its domain: destroying it ends every process, and no host
//! thread of it is left. Alone in its test binary, so that the count of vCPU threads is this
//! test's own.

mod support;

use std::time::{Duration, Instant};
use support::*;

const SLEEPERS_C: &str = r#"
#include <stdio.h>
#include <unistd.h>
int main(void) {
    for (int i = 0; i < 8; i++) if (fork() == 0) { for (;;) pause(); }
    printf("sleepers started\n");
    fflush(stdout);
    for (;;) pause();
}
"#;

/// Host threads of this test process running vCPUs.
fn vcpu_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks
                .filter_map(|task| task.ok())
                .filter(|task| {
                    std::fs::read_to_string(task.path().join("comm"))
                        .is_ok_and(|name| name.trim() == "xeno-vcpu")
                })
                .count()
        })
        .unwrap_or(0)
}

async fn wait_for(what: impl Fn() -> bool) -> bool {
    let started = Instant::now();
    while !what() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    what()
}

#[tokio::test(flavor = "multi_thread")]
async fn destroying_a_domain_ends_its_whole_process_tree() {
    let (Some(manager), Some(program)) = (manager(), musl_program("sleepers", SLEEPERS_C)) else {
        return;
    };
    let domain = create(&manager, limits(0, 64), None).await;
    deploy(
        &manager,
        &domain,
        "sleepers",
        &Guest::new(&program, "sleepers", &[]),
    )
    .await
    .expect("deploy");
    assert!(wait_for(|| vcpu_threads() >= 9).await, "nine processes run");
    destroy(&manager, &domain).await;
    assert!(
        wait_for(|| vcpu_threads() == 0).await,
        "{} vCPU threads of the destroyed domain are left",
        vcpu_threads()
    );
}
