//! The Wasm task manager's plugin interface, fed arbitrary requests (`xeno_tests::fuzz`).
#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::{Arc, OnceLock};
use xeno_taskmgr_kit::DynTaskManager;

fn manager() -> &'static DynTaskManager {
    static MANAGER: OnceLock<DynTaskManager> = OnceLock::new();
    MANAGER.get_or_init(|| {
        let manager = xeno_taskmgr_wasm::WasmTaskManager::new(xeno_taskmgr_wasm::WasmConfig {
            tasks_max: 64,
            domains_max: 64,
            ..xeno_taskmgr_wasm::WasmConfig::default()
        })
        .expect("the Wasm task manager");
        common::prepared(Arc::new(manager), "Wasm")
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    common::task_manager_case(manager(), "Wasm", data);
});
