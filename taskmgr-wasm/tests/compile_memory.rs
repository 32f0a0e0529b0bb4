//! A compilation's memory is its own process's: past its limit it is refused, and either way
//! the server's memory does not grow with it (a 7.5 MB module of nested blocks once took the
//! server from 0.8 to 2.2 GB, held after the session ended). Alone in its test binary, so that
//! no other test's allocations move the resident size it measures.

mod support;

use std::time::Duration;
use support::*;
use tonic::Code;
use xeno_taskmgr_wasm::WasmTaskManager;

const WAIT: Duration = Duration::from_secs(30);

/// A module whose one function nests `depth` blocks, each with some work: the compiler's
/// memory grows with the nesting.
fn nested_blocks(depth: usize) -> Vec<u8> {
    let mut wat = String::from(
        "(module (memory (export \"memory\") 1) (func (export \"_start\") (local i32)\n",
    );
    for _ in 0..depth {
        wat.push_str("(block (local.set 0 (i32.add (local.get 0) (i32.const 1)))\n");
    }
    for _ in 0..depth {
        wat.push(')');
    }
    wat.push_str("))");
    wat::parse_str(&wat).expect("generated WAT")
}

fn manager_with_memory_limit(bytes: u64) -> WasmTaskManager {
    let mut config = small_config();
    config.compile_memory_bytes_max = bytes;
    WasmTaskManager::new(config).expect("task manager starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compilation_past_its_memory_limit_is_refused_and_the_server_keeps_its_memory() {
    let manager = manager_with_memory_limit(64 * MIB);
    create_domain(&manager, "d", limits(0, 64)).await;
    let deep = nested_blocks(60_000);
    // Warm up first: the first deployment sets up the task manager's own structures.
    deploy(&manager, "d", "warm", &hello_module("warm\n"), "", vec![])
        .await
        .expect("a small program");
    wait_end(&manager, "d", "warm", WAIT).await;
    let before = resident_bytes();
    let refused = deploy(&manager, "d", "deep", &deep, "", vec![]).await;
    assert_code(refused, Code::ResourceExhausted, "memory");
    let growth = resident_bytes().saturating_sub(before);
    println!(
        "{} bytes of nested blocks refused; our RSS grew {growth} bytes",
        deep.len()
    );
    assert!(
        growth < 16 * MIB,
        "the compiler's memory is its own process's, not the server's: grew {growth}"
    );
}

/// This process's resident memory, from /proc.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| {
            value
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}
