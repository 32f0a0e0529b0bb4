//! What metering costs: CPU-bound C kernels run three ways, each timed by the CPU time the
//! whole process used (so a busy machine does not distort the comparison), best of `RUNS`:
//!
//! - `wasmtime`: a plain engine configured as the `wasmtime run` CLI does (no fuel, no epochs,
//!   synchronous call) - the peer;
//! - `+fuel`: the same with fuel counting on, which the task manager needs to report fuel;
//! - `metered`: the task manager (fuel, yields every `fuel_yield_interval`, CPU time read
//!   around every poll, deploy and output streaming included, no rate limit).
//!
//! Prints each kernel's times beside the peer and the geometric means of the slowdowns; the
//! target is at most 1.25x against the peer.
//!
//! Run with `cargo bench -p xeno-taskmgr-wasm --bench slowdown`. Needs Debian's `clang` and
//! `wasi-libc`; prints SKIP without them. `WORKERS`, `INTERVAL` and `QUANTUM_US` in the
//! environment override the task manager's `worker_threads`, `fuel_yield_interval` and
//! `poll_quantum_us`.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;
use tokio_stream::StreamExt;
use tonic::Request;
use xeno_schemas::proto::common::v1::Payload;
use xeno_schemas::proto::taskmanager::v1::{self as pb, domain_event::Event};
use xeno_taskmgr_kit::TaskManager;
use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};

const RUNS: usize = 5;

const KERNELS: &[(&str, &str)] = &[
    (
        "primes",
        r#"#include <stdio.h>
int main(void) { int count = 0;
  for (int n = 2; n < 3000000; n++) { int prime = 1;
    for (int d = 2; d * d <= n; d++) if (n % d == 0) { prime = 0; break; }
    count += prime; }
  printf("%d\n", count); return 0; }"#,
    ),
    (
        "matmul",
        r#"#include <stdio.h>
#define N 256
static double a[N][N], b[N][N], c[N][N];
int main(void) {
  for (int i = 0; i < N; i++) for (int j = 0; j < N; j++) { a[i][j] = i + j; b[i][j] = i - j; }
  for (int r = 0; r < 6; r++)
    for (int i = 0; i < N; i++) for (int k = 0; k < N; k++) { double x = a[i][k];
      for (int j = 0; j < N; j++) c[i][j] += x * b[k][j]; }
  printf("%f\n", c[17][42]); return 0; }"#,
    ),
    (
        "sort",
        r#"#include <stdio.h>
#include <stdlib.h>
static int cmp(const void *a, const void *b) { int x = *(const int *)a, y = *(const int *)b; return (x > y) - (x < y); }
int main(void) { int n = 2000000; int *v = malloc(n * sizeof *v); unsigned s = 1;
  for (int r = 0; r < 3; r++) { for (int i = 0; i < n; i++) { s = s * 1103515245u + 12345u; v[i] = (int)(s >> 1); }
    qsort(v, n, sizeof *v, cmp); }
  printf("%d\n", v[n / 2]); return 0; }"#,
    ),
    (
        "hash",
        r#"#include <stdio.h>
#include <stdlib.h>
int main(void) { size_t n = 16 << 20; unsigned char *buf = malloc(n);
  for (size_t i = 0; i < n; i++) buf[i] = (unsigned char)(i * 31);
  unsigned long long h = 1469598103934665603ull;
  for (int r = 0; r < 12; r++) for (size_t i = 0; i < n; i++) { h ^= buf[i]; h *= 1099511628211ull; }
  printf("%llu\n", h); return 0; }"#,
    ),
    (
        "fib",
        r#"#include <stdio.h>
static int fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }
int main(void) { printf("%d\n", fib(35)); return 0; }"#,
    ),
];

fn compile(name: &str, source: &str) -> Option<Vec<u8>> {
    let dir = tempfile::tempdir().ok()?;
    let c = dir.path().join(format!("{name}.c"));
    let wasm = dir.path().join(format!("{name}.wasm"));
    std::fs::write(&c, source).ok()?;
    let status = Command::new("clang")
        .args(["--target=wasm32-wasi", "--sysroot=/usr", "-O2", "-o"])
        .arg(&wasm)
        .arg(&c)
        .status()
        .ok()?;
    status
        .success()
        .then(|| std::fs::read(&wasm).ok())
        .flatten()
}

fn process_cpu() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// The peer: Wasmtime as the CLI runs a WASI command, optionally counting fuel.
fn plain(engine: &wasmtime::Engine, module: &wasmtime::Module, fuel: bool) -> Duration {
    let mut linker = wasmtime::Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |wasi| wasi).expect("link");
    let started = process_cpu();
    let wasi = wasmtime_wasi::WasiCtxBuilder::new().build_p1();
    let mut store = wasmtime::Store::new(engine, wasi);
    if fuel {
        store.set_fuel(1 << 62).expect("fuel");
    }
    let instance = linker.instantiate(&mut store, module).expect("instantiate");
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .expect("_start");
    if let Err(error) = start.call(&mut store, ()) {
        let exit = error
            .downcast_ref::<wasmtime_wasi::I32Exit>()
            .map(|exit| exit.0);
        assert_eq!(exit, Some(0), "{error:?}");
    }
    process_cpu() - started
}

/// Runs `plain` on a thread of its own: WASI's synchronous bindings start their own runtime,
/// which cannot run on this one's thread.
fn plain_off_thread(engine: &wasmtime::Engine, module: &wasmtime::Module, fuel: bool) -> Duration {
    let (engine, module) = (engine.clone(), module.clone());
    std::thread::spawn(move || plain(&engine, &module, fuel))
        .join()
        .expect("peer runs")
}

async fn metered(manager: &WasmTaskManager, task: &str, module: &[u8]) -> Duration {
    let hash = hex::encode(Sha256::digest(module));
    let mut events = manager
        .stream_output(Request::new(pb::StreamOutputRequest {
            domain_id: "bench".into(),
            from_offset: HashMap::new(),
            follow: true,
        }))
        .await
        .expect("stream")
        .into_inner();
    let started = process_cpu();
    manager
        .deploy_task(Request::new(pb::DeployTaskRequest {
            domain_id: "bench".into(),
            task_id: task.into(),
            task_xml: format!(
                r#"<TaskDescription><WasmModule sha256="{hash}"/></TaskDescription>"#
            ),
            payloads: vec![Payload {
                sha256: hash,
                data: module.to_vec(),
            }],
        }))
        .await
        .expect("deploy");
    while let Some(event) = events.next().await {
        if let Some(Event::TaskEnded(ended)) = event.expect("event").event
            && ended.task_id == task
        {
            assert_eq!(ended.exit.expect("exit").reason, "exit 0");
            return process_cpu() - started;
        }
    }
    panic!("stream ended before the task");
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if Command::new("clang").arg("--version").output().is_err() {
        println!("SKIP: clang is not installed");
        return;
    }
    let engine = wasmtime::Engine::default();
    let mut fuel_config = wasmtime::Config::new();
    fuel_config.consume_fuel(true);
    let fuel_engine = wasmtime::Engine::new(&fuel_config).expect("fuel engine");
    let manager = WasmTaskManager::new(WasmConfig {
        tasks_max: 8,
        worker_threads: std::env::var("WORKERS")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(0),
        poll_quantum_us: std::env::var("QUANTUM_US")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(WasmConfig::default().poll_quantum_us),
        fuel_yield_interval: std::env::var("INTERVAL")
            .ok()
            .and_then(|w| w.parse().ok())
            .unwrap_or(1_000_000),
        ..WasmConfig::default()
    })
    .expect("manager");
    manager
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: "bench".into(),
            env_type: "Wasm".into(),
            limits: Some(pb::DomainLimits {
                memory_mb: 512,
                ..Default::default()
            }),
            ..Default::default()
        }))
        .await
        .expect("domain");
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>7} {:>8}",
        "kernel", "wasmtime", "+fuel", "metered", "+fuel", "metered"
    );
    let (mut fuel_logs, mut metered_logs) = (0.0, 0.0);
    let mut count = 0;
    for (name, source) in KERNELS {
        let Some(wasm) = compile(name, source) else {
            println!("SKIP: {name} does not build (clang with wasi-libc needed)");
            continue;
        };
        let module = wasmtime::Module::new(&engine, &wasm).expect("compile");
        let fuel_module = wasmtime::Module::new(&fuel_engine, &wasm).expect("compile");
        let (mut peer, mut fuel, mut ours) = (Duration::MAX, Duration::MAX, Duration::MAX);
        // Interleaved, so that a change in the machine's load affects all three alike.
        for run in 0..RUNS {
            peer = peer.min(plain_off_thread(&engine, &module, false));
            fuel = fuel.min(plain_off_thread(&fuel_engine, &fuel_module, true));
            ours = ours.min(metered(&manager, &format!("{name}-{run}"), &wasm).await);
        }
        let ms = |time: Duration| time.as_secs_f64() * 1e3;
        let (fuel_ratio, ours_ratio) = (ms(fuel) / ms(peer), ms(ours) / ms(peer));
        fuel_logs += fuel_ratio.ln();
        metered_logs += ours_ratio.ln();
        count += 1;
        println!(
            "{name:<8} {:>8.1}ms {:>8.1}ms {:>8.1}ms {fuel_ratio:>6.3}x {ours_ratio:>7.3}x",
            ms(peer),
            ms(fuel),
            ms(ours)
        );
    }
    if count > 0 {
        let mean = |logs: f64| (logs / f64::from(count)).exp();
        println!(
            "geometric mean slowdown against wasmtime: fuel alone {:.3}x, metered {:.3}x (target 1.25x)",
            mean(fuel_logs),
            mean(metered_logs)
        );
    }
}
