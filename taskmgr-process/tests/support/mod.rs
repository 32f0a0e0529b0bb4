//! Shared by the Process plugin's tests: the plugin binary as a child process that cannot
//! outlive its test, and guests written as `/bin/sh` scripts.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use xeno_taskmgr_kit::conformance::BusyboxGuests;
use xeno_taskmgr_kit::{DynTaskManager, RemoteTaskManager};

/// How long the plugin may take to start serving.
const START_WAIT: Duration = Duration::from_secs(20);

/// How long the plugin gets to shut down cleanly on SIGTERM before it is SIGKILLed.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// The `xeno-process-plugin` binary serving on a socket in a temporary directory. Dropping it
/// (also while a failed test unwinds) stops the plugin, which destroys its domains.
pub struct Plugin {
    child: Child,
    /// The socket's directory, removed on drop.
    _dir: tempfile::TempDir,
    /// The plugin, through the adapter the environment manager uses.
    pub client: DynTaskManager,
}

impl Plugin {
    /// Starts the plugin and connects to it.
    pub async fn start() -> Plugin {
        let dir = tempfile::Builder::new()
            .prefix("xeno-process-plugin-test-")
            .tempdir()
            .expect("temporary directory for the socket");
        let socket = dir.path().join("process.sock");
        let mut command = Command::new(env!("CARGO_BIN_EXE_xeno-process-plugin"));
        command
            .arg("--socket")
            .arg(&socket)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null());
        // SAFETY: runs in the forked child before exec and makes a single raw system call
        // (prctl) through rustix, which is async-signal-safe and does not allocate.
        unsafe {
            // If this test process dies without running Drop (killed), the plugin gets SIGTERM
            // and shuts down, destroying its domains.
            command.pre_exec(|| {
                rustix::process::set_parent_process_death_signal(Some(
                    rustix::process::Signal::TERM,
                ))
                .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().expect("xeno-process-plugin starts");
        let client = connect(&socket).await;
        Plugin {
            child,
            _dir: dir,
            client,
        }
    }

    /// The plugin's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM; returns whether the plugin exited successfully within `limit`.
    pub fn terminate(&mut self, limit: Duration) -> bool {
        let pid = rustix::process::Pid::from_child(&self.child);
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

async fn connect(socket: &std::path::Path) -> DynTaskManager {
    let deadline = Instant::now() + START_WAIT;
    let address = format!("unix:{}", socket.display());
    loop {
        if socket.exists()
            && let Ok(client) = RemoteTaskManager::connect(&address).await
        {
            return Arc::new(client);
        }
        assert!(
            Instant::now() < deadline,
            "the plugin did not serve {address} within {START_WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if self.terminate(STOP_WAIT) || matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        eprintln!("xeno-process-plugin ignored SIGTERM for {STOP_WAIT:?}; killing it");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Guests as `/bin/sh -c SCRIPT` with the host's shell itself sent as an Executable payload.
pub fn shell_guests() -> BusyboxGuests {
    BusyboxGuests::new(
        "Process",
        std::fs::read("/bin/sh").expect("/bin/sh readable"),
    )
}

/// Live (non-zombie) processes in process group `pgid`.
pub fn live_group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(after) = stat.rfind(')').map(|end| &stat[end + 1..]) else {
                return false;
            };
            let fields: Vec<&str> = after.split_whitespace().collect();
            // Fields 3 (state) and 5 (pgrp), counted from 1.
            fields.first() != Some(&"Z") && fields.get(2) == Some(&pgid.to_string().as_str())
        })
        .collect()
}

/// The host's kernel release.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("kernel release readable")
        .trim()
        .to_owned()
}

/// A scratch directory for a domain, removed on drop.
pub fn scratch() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("xeno-process-scratch-")
        .tempdir()
        .expect("scratch directory");
    let path = dir.path().to_owned();
    (dir, path)
}
