//! Root file system images: Debian's own programs run from an image by path, with the
//! session's scratch directory layered over it.

mod support;

use support::*;
use xeno_schemas::proto::common::v1::TaskState;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python3_runs_from_the_image() {
    let Some(manager) = image_manager() else {
        return;
    };
    let domain = create_with_image(&manager, limits(0, 256)).await;
    let guest = Guest::at_path("/usr/bin/python3", &["-c", "print('hello from', 1+1)"]);
    let done = run(&manager, &domain, "py", &guest).await;
    eprintln!("stderr: {}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(done.state(), TaskState::Exited, "{done:?}");
    assert_eq!(done.stdout_text(), "hello from 2\n");
    destroy(&manager, &domain).await;
}
