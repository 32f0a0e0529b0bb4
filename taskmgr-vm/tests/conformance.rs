//! The task manager conformance suite (`xeno_taskmgr_kit::conformance`) against the Linux task
//! manager in process, with guests that are Debian's static busybox running `sh -c SCRIPT`
//! (shell builtins only: a domain has one process).

mod support;

use std::sync::Arc;
use std::time::Instant;
use support::{busybox, manager};
use xeno_taskmgr_kit::DynTaskManager;
use xeno_taskmgr_kit::conformance::{self, BusyboxGuests};

#[tokio::test(flavor = "multi_thread")]
async fn passes_the_conformance_suite() {
    let (Some(manager), Some(busybox)) = (manager(), busybox()) else {
        return;
    };
    let guests = BusyboxGuests::new("Linux", busybox);
    let manager: DynTaskManager = Arc::new(manager);
    let started = Instant::now();
    match conformance::run_suite(manager, &guests).await {
        Ok(report) => println!("{report}\nsuite took {:?}", started.elapsed()),
        Err(failed) => panic!("{failed}"),
    }
}
