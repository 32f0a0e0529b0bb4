//! The domain's file system as programs see it without an image: its own `/tmp`, made when
//! first named, and `statfs` reporting the session's disk allowance.

mod support;

use support::*;
use xeno_schemas::proto::common::v1::TaskState;
use xeno_schemas::proto::taskmanager::v1 as pb;

fn with_disk(disk_mb: u64) -> pb::DomainLimits {
    pb::DomainLimits {
        disk_mb,
        ..limits(0, 64)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statfs_reports_the_disk_allowance_and_what_the_files_leave_of_it() {
    let Some(manager) = manager() else {
        return;
    };
    let Some(busybox) = busybox() else {
        return;
    };
    let domain = create(&manager, with_disk(64), None).await;
    let script = "stat -f -c '%b %S' /; a=$(stat -f -c %a /tmp); \
        dd if=/dev/zero of=/tmp/one-mib bs=4096 count=256 2>/dev/null; \
        b=$(stat -f -c %a /tmp); echo $((a - b)); \
        rm /tmp/one-mib; c=$(stat -f -c %a .); echo $((c - a)); \
        stat -f /no/such/dir 2>&1 | head -1";
    let guest = Guest::new(&busybox, "sh", &["-c", script]);
    let done = run(&manager, &domain, "df", &guest).await;
    assert_eq!(done.state(), TaskState::Exited, "{done:?}");
    // 64 MiB in 4 KiB blocks; a 1 MiB file takes 256 of them (and a block or so of
    // directory), and gives them back when removed.
    let out = done.stdout_text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"16384 4096"), "{out}");
    let taken: i64 = lines[1].parse().expect("number");
    assert!((256..=258).contains(&taken), "{out}");
    assert_eq!(lines[2], "0", "{out}");
    assert!(lines[3].contains("No such file or directory"), "{out}");
    destroy(&manager, &domain).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_domain_has_its_own_tmp_made_when_first_used() {
    let Some(manager) = manager() else {
        return;
    };
    let Some(busybox) = busybox() else {
        return;
    };
    let first_dir = tempfile::tempdir().expect("scratch");
    let first = create(&manager, with_disk(0), Some(first_dir.path())).await;
    let second = create(&manager, with_disk(0), None).await;
    let list = Guest::new(&busybox, "sh", &["-c", "ls -a /"]);
    let done = run(&manager, &first, "list", &list).await;
    assert_eq!(
        done.stdout_text(),
        ".\n..\n",
        "no /tmp until a task names it"
    );
    let make = Guest::new(
        &busybox,
        "sh",
        &[
            "-c",
            "d=$(mktemp -d) && echo secret > $d/f && echo $d && cat /tmp/*/f",
        ],
    );
    let done = run(&manager, &first, "mktemp", &make).await;
    assert_eq!(done.state(), TaskState::Exited, "{done:?}");
    let made = done.stdout_text();
    assert!(
        made.starts_with("/tmp/tmp.") && made.ends_with("\nsecret\n"),
        "{made}"
    );
    // It is the session's own: in its scratch directory, and not in another domain's.
    assert!(first_dir.path().join("tmp").is_dir());
    let other = Guest::new(&busybox, "sh", &["-c", "ls /tmp | wc -l"]);
    let done = run(&manager, &second, "other", &other).await;
    assert_eq!(done.stdout_text().trim(), "0", "{done:?}");
    destroy(&manager, &first).await;
    destroy(&manager, &second).await;
}
