//! The Linux task manager's plugin interface, fed arbitrary requests and executables
//! (`xeno_tests::fuzz`). Needs /dev/kvm.
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::{Arc, OnceLock};
use xeno_taskmgr_kit::DynTaskManager;

fn manager() -> &'static DynTaskManager {
    static MANAGER: OnceLock<DynTaskManager> = OnceLock::new();
    MANAGER.get_or_init(|| {
        let manager = xeno_taskmgr_vm::VmTaskManager::new(xeno_taskmgr_vm::VmConfig::default())
            .expect("the Linux task manager (is /dev/kvm there?)");
        common::prepared(Arc::new(manager), "Linux")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::task_manager_case(manager(), "Linux", data);
});
