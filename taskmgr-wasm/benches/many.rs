//! A thousand concurrent tasks on this machine: host memory per task, and how fairly the CPU is
//! shared between them. 1,000 domains each run one CPU-bound task; every domain's rate is
//! unlimited, so the only thing dividing the cores is the task manager's scheduling. Prints the
//! resident memory per task, each task's CPU over a 10 s window, and Jain's fairness index
//! (1.0 = perfectly even).
//!
//! Run: `cargo bench -p xeno-taskmgr-wasm --bench many` (TASKS=1000, SECONDS=10).

use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};
use tonic::Request;
use xeno_schemas::Document;
use xeno_schemas::documents::{Program, TaskDescription};
use xeno_schemas::proto::common::v1::Payload;
use xeno_schemas::proto::taskmanager::v1 as pb;
use xeno_taskmgr_kit::TaskManager;
use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let tasks = env_number("TASKS", 1000);
    let seconds = env_number("SECONDS", 10) as u64;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let manager = WasmTaskManager::new(WasmConfig {
            domains_max: u32::try_from(tasks).unwrap_or(u32::MAX),
            tasks_max: u32::try_from(tasks).unwrap_or(u32::MAX),
            ..WasmConfig::default()
        })
        .expect("task manager");
        let spin = wat::parse_str(r#"(module (memory (export "memory") 1) (func (export "_start") (loop $spin (br $spin))))"#).expect("wat");
        let sha256 = hex::encode(Sha256::digest(&spin));
        let task_xml = TaskDescription::new(Program::WasmModule { sha256: sha256.clone(), entry: None }).to_xml();
        let dir = tempfile::tempdir().expect("tempdir");
        let before = resident_kib();
        let started = Instant::now();
        for index in 0..tasks {
            let domain = format!("d{index}");
            let scratch = dir.path().join(&domain);
            std::fs::create_dir_all(&scratch).expect("scratch");
            manager
                .create_domain(Request::new(pb::CreateDomainRequest {
                    domain_id: domain.clone(),
                    env_type: "Wasm".into(),
                    version: String::new(),
                    limits: Some(pb::DomainLimits { cpu_msps: 0, memory_mb: 1, output_bytes_max: 4096, tasks_max: 1, ..Default::default() }),
                    requirements_xml: String::new(),
                    scratch_dir: scratch.to_string_lossy().into_owned(),
                }))
                .await
                .expect("domain");
            manager
                .deploy_task(Request::new(pb::DeployTaskRequest {
                    domain_id: domain,
                    task_id: "t".into(),
                    task_xml: task_xml.clone(),
                    payloads: vec![Payload { sha256: sha256.clone(), data: spin.clone() }],
                }))
                .await
                .expect("deploy");
        }
        let deployed_in = started.elapsed();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = resident_kib();
        async fn usage(manager: &WasmTaskManager, index: usize) -> u64 {
            let request = Request::new(pb::ReportUsageRequest { domain_id: format!("d{index}") });
            manager.report_usage(request).await.expect("usage").into_inner().usage.unwrap_or_default().cpu_time_us
        }
        let mut first = Vec::with_capacity(tasks);
        for index in 0..tasks {
            first.push(usage(&manager, index).await);
        }
        let window = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let mut shares = Vec::with_capacity(tasks);
        for (index, before) in first.iter().enumerate() {
            shares.push((usage(&manager, index).await - before) as f64 / 1000.0);
        }
        let elapsed = window.elapsed().as_secs_f64();
        let sum: f64 = shares.iter().sum();
        let squares: f64 = shares.iter().map(|s| s * s).sum();
        let jain = sum * sum / (shares.len() as f64 * squares);
        let mut sorted = shares.clone();
        sorted.sort_by(f64::total_cmp);
        println!("{tasks} concurrent CPU-bound Wasm tasks (one per domain, no rate limit), {seconds} s window");
        println!("  deployed in {:.2} s", deployed_in.as_secs_f64());
        println!("  resident memory: {} MiB before, {} MiB with the tasks: {:.1} KiB per task", before / 1024, after / 1024, (after.saturating_sub(before)) as f64 / tasks as f64);
        println!("  CPU used by the tasks: {:.0} ms/s in total (the machine has 2 cores)", sum / elapsed);
        println!(
            "  per task over the window: min {:.1} ms, median {:.1} ms, max {:.1} ms; Jain fairness {:.4}",
            sorted[0],
            sorted[sorted.len() / 2],
            sorted[sorted.len() - 1],
            jain
        );
    });
}
