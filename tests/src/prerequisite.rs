//! What a test needs from the machine: KVM, busybox, a toolchain, a database, a browser, root.
//! Without it a test skips, and says so where a reader sees it; under `CI=true` (which
//! `.ci/run` exports, on a machine that has everything) a missing prerequisite fails the test
//! instead, so that nothing passes there without having run.

use std::io::Write;

/// Whether this is CI's run (`CI=true`), where nothing may be skipped.
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

/// Records that `what` is missing (say how to provide it): under CI the test fails here;
/// otherwise `SKIP: {what}` goes to the process's standard error directly. The test harness
/// captures `println!` and `eprintln!` of passing tests, so a skip printed that way would never
/// be seen.
#[track_caller]
pub fn missing(what: &str) {
    assert!(
        !under_ci(),
        "{what}: under CI=true a missing prerequisite fails the test"
    );
    let _ = writeln!(std::io::stderr().lock(), "SKIP: {what}");
}

/// Whether `/dev/kvm` opens for reading and writing; [`missing`] if not.
#[track_caller]
pub fn kvm() -> bool {
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !ok {
        missing("/dev/kvm unavailable");
    }
    ok
}
