//! `xeno-process-plugin`: the example `Process` task manager plugin, serving the TaskManager
//! service on a Unix socket until SIGTERM or Ctrl-C, then destroying every domain so that no
//! task outlives it. See the crate documentation for what it does and does not promise.
//!
//! ```sh
//! RUST_LOG=info xeno-process-plugin --socket /run/xeno/process.sock
//! ```

use clap::Parser;
use std::path::PathBuf;
use xeno_taskmgr_process::{ProcessConfig, ProcessTaskManager};

/// The Process task manager plugin: native executables under rlimits (not an isolation boundary).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Unix socket to serve the TaskManager service on (replaced if it exists).
    #[arg(long)]
    socket: PathBuf,
    /// Most domains at once.
    #[arg(long, default_value_t = ProcessConfig::default().domains_max)]
    domains_max: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    xeno_taskmgr_kit::plugin::init_tracing();
    let args = Args::parse();
    let manager = ProcessTaskManager::new(ProcessConfig {
        domains_max: args.domains_max,
        ..ProcessConfig::default()
    })?;
    xeno_taskmgr_kit::plugin::serve(manager, &args.socket).await
}
