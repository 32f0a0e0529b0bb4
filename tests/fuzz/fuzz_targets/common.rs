//! What the targets share: one runtime for the whole fuzzing process, and a task manager with
//! the domains the cases meet. (Each target uses part of it.)
#![allow(dead_code)]

use std::sync::OnceLock;
use tonic::Request;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::DynTaskManager;

pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| tokio::runtime::Runtime::new().expect("runtime"))
}

/// `manager`, with its domain `d-0` created (the one the cases never destroy).
pub fn prepared(manager: DynTaskManager, env_type: &str) -> DynTaskManager {
    runtime().block_on(async {
        manager
            .create_domain(Request::new(pb::CreateDomainRequest {
                domain_id: "d-0".to_owned(),
                env_type: env_type.to_owned(),
                limits: Some(pb::DomainLimits {
                    cpu_msps: 200,
                    memory_mb: 16,
                    output_bytes_max: 4096,
                    tasks_max: 4,
                    ..Default::default()
                }),
                ..Default::default()
            }))
            .await
            .expect("the domain the cases meet");
    });
    manager
}

/// Runs one task manager case; a broken promise is a crash.
pub fn task_manager_case(manager: &DynTaskManager, env_type: &str, data: &[u8]) {
    let Some((&method, bytes)) = data.split_first() else {
        return;
    };
    if let Err(broken) =
        runtime().block_on(xeno_tests::fuzz::task_manager_case(manager, env_type, method, bytes))
    {
        panic!("{broken}");
    }
}
