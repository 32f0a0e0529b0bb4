//! `xeno-taskmgr-vm`: the Linux task manager (paravirtual domains on KVM) as an external plugin, serving the
//! `xenoserve.taskmanager.v1.TaskManager` interface on a Unix socket until SIGTERM or Ctrl-C.

use clap::Parser;
use std::path::PathBuf;
use xeno_taskmgr_vm::{VmConfig, VmTaskManager};

/// Serves the Linux task manager on a Unix socket.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The Unix socket to listen on (replaced if it exists).
    #[arg(long)]
    socket: PathBuf,
    /// Most domains (VMs) held at once.
    #[arg(long, default_value_t = VmConfig::default().domains_max)]
    domains_max: u32,
    /// Most tasks running at once across all domains (one vCPU thread each).
    #[arg(long, default_value_t = VmConfig::default().tasks_max)]
    tasks_max: u32,
    /// Largest guest RAM a domain may ask for, MiB.
    #[arg(long, default_value_t = VmConfig::default().memory_mb_max)]
    memory_mb_max: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    xeno_taskmgr_kit::plugin::init_tracing();
    let args = Args::parse();
    let config = VmConfig {
        domains_max: args.domains_max,
        tasks_max: args.tasks_max,
        memory_mb_max: args.memory_mb_max,
        ..VmConfig::default()
    };
    let manager = VmTaskManager::new(config)?;
    xeno_taskmgr_kit::plugin::serve(manager, &args.socket).await
}
