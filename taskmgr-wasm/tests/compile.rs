//! Compilation is work a session pays for and is limited in. It used to be free, unbounded and
//! first come first served: two 40 MB modules compiled for 63 s while a 234-byte module from
//! another session waited 59.6 s to deploy, and a 7.5 MB module of nested blocks took the
//! server from 0.8 to 2.2 GB, held after the session was destroyed.

mod support;

use std::time::{Duration, Instant};
use support::*;
use tonic::Code;
use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};

const WAIT: Duration = Duration::from_secs(30);

/// A module of `functions` functions, each a chain of `body` additions: compiling it costs time
/// in proportion to its size.
fn many_functions(functions: usize, body: usize) -> Vec<u8> {
    let mut wat = String::from("(module (memory (export \"memory\") 1)\n");
    for index in 0..functions {
        wat.push_str(&format!(
            "(func (export \"f{index}\") (param i32) (result i32) (local.get 0)"
        ));
        for step in 0..body {
            wat.push_str(&format!(
                " (i32.add (i32.const {step})) (i32.mul (local.get 0))"
            ));
        }
        wat.push_str(")\n");
    }
    wat.push_str("(func (export \"_start\")))");
    wat::parse_str(&wat).expect("generated WAT")
}

fn manager_with(adjust: impl FnOnce(&mut WasmConfig)) -> WasmTaskManager {
    let mut config = small_config();
    adjust(&mut config);
    WasmTaskManager::new(config).expect("task manager starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compilation_past_its_cpu_limit_is_refused_and_charged() {
    let manager = manager_with(|config| config.compile_cpu_seconds_max = 1);
    create_domain(&manager, "d", limits(0, 64)).await;
    let heavy = many_functions(4000, 60);
    let started = Instant::now();
    let refused = deploy(&manager, "d", "heavy", &heavy, "", vec![]).await;
    let took = started.elapsed();
    assert_code(refused, Code::ResourceExhausted, "CPU time");
    println!("{} bytes refused after {took:?}", heavy.len());
    let usage = report(&manager, "d").await.usage.expect("usage");
    assert!(
        usage.compile_time_us >= 900_000 && usage.cpu_time_us >= usage.compile_time_us,
        "the second of compiling is the session's: {usage:?}"
    );
    // The same program a second time is compiled (and charged) again: failures are not cached.
    let again = deploy(&manager, "d", "heavy2", &heavy, "", vec![]).await;
    assert_code(again, Code::ResourceExhausted, "CPU time");
    let after = report(&manager, "d").await.usage.expect("usage");
    assert!(
        after.compile_time_us >= usage.compile_time_us + 900_000,
        "{after:?}"
    );
    // A small program still compiles, runs, and is charged its little compile time.
    deploy(&manager, "d", "hello", &hello_module("hi\n"), "", vec![])
        .await
        .expect("a small program");
    assert_eq!(
        wait_end(&manager, "d", "hello", WAIT).await.stdout_text(),
        "hi\n"
    );
}

/// With one compilation slot, two sessions' big programs used to hold a third session's small
/// one until both were compiled. Small programs have a lane of their own now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_compilations_do_not_hold_up_another_sessions_small_program() {
    let manager = manager_with(|config| config.compile_concurrency = 1);
    for domain in ["heavy-a", "heavy-b", "light"] {
        create_domain(&manager, domain, limits(0, 64)).await;
    }
    let mut heavy = Vec::new();
    for (index, domain) in ["heavy-a", "heavy-b"].into_iter().enumerate() {
        let manager = manager.clone();
        let module = many_functions(3500 + index, 60);
        assert!(module.len() as u64 > MIB, "big enough for the main lane");
        heavy.push(tokio::spawn(async move {
            deploy(&manager, domain, "big", &module, "", vec![])
                .await
                .expect("a big program deploys");
            Instant::now()
        }));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    deploy(
        &manager,
        "light",
        "small",
        &hello_module("quick\n"),
        "",
        vec![],
    )
    .await
    .expect("the small program deploys");
    let small_done = Instant::now();
    for task in heavy {
        let big_done = task.await.expect("join");
        assert!(
            small_done < big_done,
            "the small program did not wait for the big compilations"
        );
    }
    assert_eq!(
        wait_end(&manager, "light", "small", WAIT)
            .await
            .stdout_text(),
        "quick\n"
    );
}
