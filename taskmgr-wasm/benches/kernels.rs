//! CPU-bound kernels under this task manager — fuel counted, CPU time metered around every poll,
//! the domain's CPU rate enforced (1000 ms/s: one core) — against the same modules under the
//! `wasmtime` CLI (wasmtime-cli 48.0.8 from crates.io, run on a precompiled module so that its
//! compile time is excluded too), in one run. Each is timed by CPU time (the task's own, as
//! billed; the CLI process's user + system time), best of three. The kernels: a sum loop, a
//! memory-heavy loop, recursive Fibonacci, and SHA-256 written in C.
//!
//! Run: `cargo bench -p xeno-taskmgr-wasm --bench kernels` with `wasmtime` on PATH
//! (`cargo install wasmtime-cli --version 48.0.8 --locked`) and Debian's clang + wasi-libc.

use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use tokio_stream::StreamExt;
use tonic::Request;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1::Payload;
use xeno_schemas::proto::taskmanager::v1::{self as pb, domain_event::Event};
use xeno_taskmgr_kit::TaskManager;
use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};

const RUNS: usize = 3;

const SUM_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func (export "_start") (local $i i64) (local $sum i64)
    (loop $add
      (local.set $i (i64.add (local.get $i) (i64.const 1)))
      (local.set $sum (i64.add (local.get $sum) (i64.xor (local.get $i) (i64.shr_u (local.get $sum) (i64.const 3)))))
      (br_if $add (i64.lt_u (local.get $i) (i64.const 1500000000))))
    (call $exit (i32.wrap_i64 (i64.and (local.get $sum) (i64.const 63))))))"#;

/// Walks a 64 MiB buffer with a large stride, reading and writing, 24 times.
const MEMORY_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1024)
  (func (export "_start") (local $pass i32) (local $at i32) (local $acc i32)
    (loop $passes
      (local.set $at (i32.const 0))
      (loop $walk
        (i32.store (local.get $at) (i32.add (i32.load (local.get $at)) (local.get $acc)))
        (local.set $acc (i32.add (local.get $acc) (i32.load (local.get $at))))
        (local.set $at (i32.add (local.get $at) (i32.const 4100)))
        (br_if $walk (i32.lt_u (local.get $at) (i32.const 67104000))))
      (local.set $at (i32.const 0))
      (loop $seq
        (i32.store (local.get $at) (i32.add (i32.load (local.get $at)) (i32.const 1)))
        (local.set $at (i32.add (local.get $at) (i32.const 4)))
        (br_if $seq (i32.lt_u (local.get $at) (i32.const 67108860))))
      (local.set $pass (i32.add (local.get $pass) (i32.const 1)))
      (br_if $passes (i32.lt_u (local.get $pass) (i32.const 24))))
    (call $exit (i32.and (local.get $acc) (i32.const 63)))))"#;

const FIB_WAT: &str = r#"(module
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  (func $fib (param $n i32) (result i32)
    (if (result i32) (i32.lt_u (local.get $n) (i32.const 2))
      (then (local.get $n))
      (else (i32.add (call $fib (i32.sub (local.get $n) (i32.const 1))) (call $fib (i32.sub (local.get $n) (i32.const 2)))))))
  (func (export "_start") (call $exit (i32.and (call $fib (i32.const 37)) (i32.const 63)))))"#;

const SHA256_C: &str = r#"
#include <stdint.h>
#include <stdio.h>
#include <string.h>
static const uint32_t K[64] = {
0x428a2f98,0x71374491,0xb5c0fbcf,0xe9b5dba5,0x3956c25b,0x59f111f1,0x923f82a4,0xab1c5ed5,0xd807aa98,0x12835b01,0x243185be,0x550c7dc3,0x72be5d74,0x80deb1fe,0x9bdc06a7,0xc19bf174,
0xe49b69c1,0xefbe4786,0x0fc19dc6,0x240ca1cc,0x2de92c6f,0x4a7484aa,0x5cb0a9dc,0x76f988da,0x983e5152,0xa831c66d,0xb00327c8,0xbf597fc7,0xc6e00bf3,0xd5a79147,0x06ca6351,0x14292967,
0x27b70a85,0x2e1b2138,0x4d2c6dfc,0x53380d13,0x650a7354,0x766a0abb,0x81c2c92e,0x92722c85,0xa2bfe8a1,0xa81a664b,0xc24b8b70,0xc76c51a3,0xd192e819,0xd6990624,0xf40e3585,0x106aa070,
0x19a4c116,0x1e376c08,0x2748774c,0x34b0bcb5,0x391c0cb3,0x4ed8aa4a,0x5b9cca4f,0x682e6ff3,0x748f82ee,0x78a5636f,0x84c87814,0x8cc70208,0x90befffa,0xa4506ceb,0xbef9a3f7,0xc67178f2};
#define R(x,n) (((x)>>(n))|((x)<<(32-(n))))
static void block(uint32_t h[8], const uint8_t *p) {
  uint32_t w[64];
  for (int i = 0; i < 16; i++) w[i] = (uint32_t)p[4*i]<<24 | (uint32_t)p[4*i+1]<<16 | (uint32_t)p[4*i+2]<<8 | p[4*i+3];
  for (int i = 16; i < 64; i++) { uint32_t s0 = R(w[i-15],7)^R(w[i-15],18)^(w[i-15]>>3), s1 = R(w[i-2],17)^R(w[i-2],19)^(w[i-2]>>10); w[i] = w[i-16]+s0+w[i-7]+s1; }
  uint32_t a=h[0],b=h[1],c=h[2],d=h[3],e=h[4],f=h[5],g=h[6],k=h[7];
  for (int i = 0; i < 64; i++) { uint32_t t1 = k+(R(e,6)^R(e,11)^R(e,25))+((e&f)^(~e&g))+K[i]+w[i], t2 = (R(a,2)^R(a,13)^R(a,22))+((a&b)^(a&c)^(b&c)); k=g; g=f; f=e; e=d+t1; d=c; c=b; b=a; a=t1+t2; }
  h[0]+=a; h[1]+=b; h[2]+=c; h[3]+=d; h[4]+=e; h[5]+=f; h[6]+=g; h[7]+=k;
}
int main(void) {
  static uint8_t buffer[1 << 20];
  for (size_t i = 0; i < sizeof buffer; i++) buffer[i] = (uint8_t)(i * 31 + 7);
  uint32_t h[8] = {0x6a09e667,0xbb67ae85,0x3c6ef372,0xa54ff53a,0x510e527f,0x9b05688c,0x1f83d9ab,0x5be0cd19};
  for (int round = 0; round < 160; round++)
    for (size_t at = 0; at < sizeof buffer; at += 64) block(h, buffer + at);
  printf("%08x%08x\n", h[0], h[1]);
  return 0;
}
"#;

fn compile_c(source: &str, dir: &Path) -> Option<Vec<u8>> {
    let c = dir.join("sha256.c");
    let wasm = dir.join("sha256.wasm");
    std::fs::write(&c, source).ok()?;
    for sysroot in ["/usr/share/wasi-sysroot", "/usr"] {
        let status = Command::new("clang")
            .args([
                "--target=wasm32-wasi",
                &format!("--sysroot={sysroot}"),
                "-O2",
                "-o",
            ])
            .arg(&wasm)
            .arg(&c)
            .status()
            .ok()?;
        if status.success() {
            return std::fs::read(&wasm).ok();
        }
    }
    None
}

/// CPU time (user + system) of every child this process has waited for.
fn children_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a complete `rusage` into the pointer it is given, which points to
    // a zeroed, properly aligned `rusage` we own; RUSAGE_CHILDREN is a valid `who`.
    let usage = unsafe {
        assert_eq!(
            libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr()),
            0
        );
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::new(t.tv_sec as u64, 0) + Duration::from_micros(t.tv_usec as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time of `wasmtime run` on the precompiled module.
fn peer(wasmtime: &Path, cwasm: &Path) -> Duration {
    let before = children_cpu();
    let status = Command::new(wasmtime)
        .args(["run", "--allow-precompiled"])
        .arg(cwasm)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("wasmtime run");
    assert!(status.code().is_some(), "wasmtime was killed");
    children_cpu() - before
}

/// The task's own CPU time under the task manager, as billed.
async fn ours(
    manager: &WasmTaskManager,
    wasm: &[u8],
    run: usize,
    dir: &Path,
) -> (Duration, Duration) {
    let domain = format!("kernel-{run}-{}", hex::encode(&Sha256::digest(wasm)[..4]));
    let scratch = dir.join(&domain);
    std::fs::create_dir_all(&scratch).expect("scratch");
    manager
        .create_domain(Request::new(pb::CreateDomainRequest {
            domain_id: domain.clone(),
            env_type: "Wasm".into(),
            version: String::new(),
            limits: Some(pb::DomainLimits {
                cpu_msps: 1000,
                memory_mb: 256,
                output_bytes_max: 1 << 16,
                tasks_max: 1,
                ..Default::default()
            }),
            requirements_xml: String::new(),
            scratch_dir: scratch.to_string_lossy().into_owned(),
        }))
        .await
        .expect("domain");
    let sha256 = hex::encode(Sha256::digest(wasm));
    let task_xml = TaskDescription::new(Program::WasmModule {
        sha256: sha256.clone(),
        entry: None,
    })
    .to_xml();
    let mut events = manager
        .stream_output(Request::new(pb::StreamOutputRequest {
            domain_id: domain.clone(),
            from_offset: Default::default(),
            follow: true,
        }))
        .await
        .expect("stream")
        .into_inner();
    let started = Instant::now();
    manager
        .deploy_task(Request::new(pb::DeployTaskRequest {
            domain_id: domain.clone(),
            task_id: "k".into(),
            task_xml,
            payloads: vec![Payload {
                sha256,
                data: wasm.to_vec(),
            }],
        }))
        .await
        .expect("deploy");
    while let Some(Ok(event)) = events.next().await {
        if let Some(Event::TaskEnded(ended)) = event.event {
            let usage = ended.exit.and_then(|exit| exit.usage).unwrap_or_default();
            let wall = started.elapsed();
            let _ = manager
                .destroy_domain(Request::new(pb::DestroyDomainRequest {
                    domain_id: domain,
                    reason: "done".into(),
                }))
                .await;
            return (Duration::from_micros(usage.cpu_time_us), wall);
        }
    }
    panic!("the task never ended");
}

fn main() {
    let wasmtime = std::env::var_os("WASMTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("wasmtime"));
    if Command::new(&wasmtime).arg("--version").output().is_err() {
        println!(
            "SKIP: the wasmtime CLI is not installed (cargo install wasmtime-cli --version 48.0.8 --locked)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut kernels: Vec<(&str, Vec<u8>)> = vec![
        ("sum loop", wat::parse_str(SUM_WAT).expect("wat")),
        (
            "memory-heavy loop",
            wat::parse_str(MEMORY_WAT).expect("wat"),
        ),
        ("recursive fib(37)", wat::parse_str(FIB_WAT).expect("wat")),
    ];
    match compile_c(SHA256_C, dir.path()) {
        Some(wasm) => kernels.push(("SHA-256 (C)", wasm)),
        None => println!("SKIP: SHA-256 (C): clang or wasi-libc missing"),
    }
    let version = Command::new(&wasmtime)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let manager = runtime.block_on(async {
        WasmTaskManager::new(WasmConfig {
            tasks_max: 16,
            domains_max: 64,
            ..WasmConfig::default()
        })
        .expect("manager")
    });
    println!(
        "CPU-bound kernels: this task manager (fuel + CPU metering + 1000 ms/s rate) vs {version}, CPU time, best of {RUNS}"
    );
    println!(
        "{:<20} {:>12} {:>12} {:>8}",
        "kernel", "wasmtime s", "ours s", "ratio"
    );
    let mut log_sum = 0.0;
    for (name, wasm) in &kernels {
        let module = dir
            .path()
            .join(format!("{}.wasm", name.replace([' ', '(', ')'], "_")));
        let cwasm = module.with_extension("cwasm");
        std::fs::write(&module, wasm).expect("write");
        let compiled = Command::new(&wasmtime)
            .arg("compile")
            .arg(&module)
            .arg("-o")
            .arg(&cwasm)
            .status()
            .expect("wasmtime compile");
        assert!(compiled.success());
        let theirs = (0..RUNS)
            .map(|_| peer(&wasmtime, &cwasm))
            .min()
            .expect("runs");
        let mine = (0..RUNS)
            .map(|run| runtime.block_on(ours(&manager, wasm, run, dir.path())).0)
            .min()
            .expect("runs");
        let ratio = mine.as_secs_f64() / theirs.as_secs_f64();
        log_sum += ratio.ln();
        println!(
            "{name:<20} {:>12.3} {:>12.3} {:>7.2}x",
            theirs.as_secs_f64(),
            mine.as_secs_f64(),
            ratio
        );
    }
    println!(
        "geometric mean ratio: {:.3}x (target at most 1.25x)",
        (log_sum / kernels.len() as f64).exp()
    );
}
