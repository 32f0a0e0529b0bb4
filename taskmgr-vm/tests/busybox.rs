//! Debian's own static busybox, unmodified, in a paravirtual domain: each applet's output must
//! be exactly what the same applet prints natively on the same input, with the same exit
//! status.

mod support;

use std::path::Path;
use support::*;
use xeno_schemas::proto::common::v1::TaskState;

/// Input files every applet test gets, in the session directory and the native directory.
fn inputs() -> Vec<(&'static str, Vec<u8>)> {
    let mut lines = String::new();
    for i in 0..2000u32 {
        lines.push_str(&format!("line {} {}\n", (i * 7919) % 2003, i * i));
    }
    let mut binary = Vec::new();
    let mut x = 0x1234_5678u32;
    for _ in 0..300_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        binary.push((x >> 24) as u8);
    }
    vec![
        ("words.txt", lines.into_bytes()),
        ("data.bin", binary),
        ("small.txt", b"zebra\napple\nmango\n".to_vec()),
        ("sub/inner.txt", b"inside\n".to_vec()),
    ]
}

/// Runs `applet args` natively and in a domain; both must agree on stdout and exit status.
async fn same_as_native(applet: &str, args: &[&str]) {
    let (Some(manager), Some(busybox)) = (manager(), busybox()) else {
        return;
    };
    let native_dir = tempfile::tempdir().expect("dir");
    let mut guest = Guest::new(&busybox, applet, args);
    for (path, data) in inputs() {
        let host = native_dir.path().join(path);
        std::fs::create_dir_all(host.parent().expect("parent")).expect("mkdir");
        std::fs::write(&host, &data).expect("write");
        guest = guest.file(path, &data);
    }
    let (expected, expected_status) =
        native(Path::new("/bin/busybox"), applet, args, native_dir.path());
    let domain = create(&manager, limits(0, 128), None).await;
    let finished = run(&manager, &domain, applet, &guest).await;
    assert_eq!(
        finished.state(),
        TaskState::Exited,
        "{applet}: {:?}",
        finished.exit
    );
    assert_eq!(
        finished.exit.exit_code, expected_status,
        "{applet} {args:?}: exit status"
    );
    assert!(
        finished.stdout == expected,
        "{applet} {args:?}: stdout differs from native\n  domain: {:?}\n  native: {:?}\n  stderr: {}",
        String::from_utf8_lossy(&finished.stdout[..finished.stdout.len().min(400)]),
        String::from_utf8_lossy(&expected[..expected.len().min(400)]),
        String::from_utf8_lossy(&finished.stderr),
    );
    let usage = destroy(&manager, &domain).await;
    assert!(usage.syscalls > 0 && usage.cpu_time_us > 0, "{usage:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn echo() {
    same_as_native("echo", &["hello", "from", "a", "domain"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cat() {
    same_as_native("cat", &["words.txt", "small.txt"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sha256sum() {
    same_as_native("sha256sum", &["data.bin", "words.txt"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn gzip() {
    same_as_native("gzip", &["-c", "-9", "words.txt"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sort() {
    same_as_native("sort", &["-n", "-k2", "words.txt"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn wc() {
    same_as_native("wc", &["words.txt", "data.bin", "small.txt"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ls() {
    same_as_native("ls", &["-1", ".", "sub"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_file_fails_like_native() {
    same_as_native("cat", &["no-such-file"]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sh_runs_builtins() {
    same_as_native(
        "sh",
        &[
            "-c",
            "i=0; while [ $i -lt 5 ]; do echo \"n=$i\"; i=$((i+1)); done; exit 3",
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sh_traps_a_signal() {
    same_as_native(
        "sh",
        &["-c", "trap 'echo caught' USR1; kill -USR1 $$; echo after"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn more_applets() {
    for (applet, args) in [
        ("head", &["-n", "3", "words.txt"][..]),
        ("tail", &["-c", "100", "words.txt"][..]),
        ("md5sum", &["data.bin"][..]),
        ("seq", &["1", "3", "20"][..]),
        ("find", &[".", "-name", "*.txt"][..]),
        ("od", &["-A", "x", "-t", "x1", "-N", "64", "data.bin"][..]),
        ("uniq", &["-c", "small.txt"][..]),
        ("cut", &["-d", " ", "-f", "2", "words.txt"][..]),
        ("stat", &["-c", "%s %n", "data.bin"][..]),
        ("du", &["-k", "data.bin"][..]),
    ] {
        same_as_native(applet, args).await;
    }
}
