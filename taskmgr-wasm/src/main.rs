//! `xeno-taskmgr-wasm`: the Wasm task manager as an external plugin, serving the
//! `xenoserve.taskmanager.v1.TaskManager` interface on a Unix socket until SIGTERM or Ctrl-C.

use clap::Parser;
use std::path::PathBuf;
use xeno_taskmgr_wasm::{WasmConfig, WasmTaskManager};

/// Serves the Wasm task manager on a Unix socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The Unix socket to listen on (replaced if it exists).
    #[arg(long)]
    socket: PathBuf,
    /// Most domains held at once.
    #[arg(long, default_value_t = WasmConfig::default().domains_max)]
    domains_max: u32,
    /// Most tasks running at once across all domains (sizes the instance pool).
    #[arg(long, default_value_t = WasmConfig::default().tasks_max)]
    tasks_max: u32,
    /// Threads running tasks (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    worker_threads: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    xeno_taskmgr_kit::plugin::init_tracing();
    let args = Args::parse();
    let config = WasmConfig {
        domains_max: args.domains_max,
        tasks_max: args.tasks_max,
        worker_threads: args.worker_threads,
        ..WasmConfig::default()
    };
    let manager = WasmTaskManager::new(config)?;
    xeno_taskmgr_kit::plugin::serve(manager, &args.socket).await
}
