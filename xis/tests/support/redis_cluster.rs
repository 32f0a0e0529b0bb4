//! A throwaway Redis Cluster for tests and benchmarks: three masters and three replicas from
//! Debian's `redis-server`, on free loopback ports, in a temporary directory, owned by this
//! process so that a test can kill a master. Everything is stopped when it is dropped.
//!
//! Without `redis-server` (and `redis-cli`) on PATH, [`RedisCluster::start`] prints
//! `SKIP: redis-server unavailable` and returns `None`, unless `XENO_REQUIRE_REDIS=1`, where it
//! panics: a CI that sets it cannot skip the Redis half silently.

#![allow(dead_code, clippy::expect_used, clippy::unwrap_used)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster may take to form, or to fail over.
pub const FORM_TIMEOUT: Duration = Duration::from_secs(30);
/// `cluster-node-timeout`, ms: how long a master may be silent before its replica takes over.
pub const NODE_TIMEOUT_MS: u64 = 1000;

/// One redis-server of the cluster.
pub struct Node {
    /// Its port.
    pub port: u16,
    process: Option<Child>,
}

/// The cluster.
pub struct RedisCluster {
    /// Its nodes; the first three were created as masters.
    pub nodes: Vec<Node>,
    dir: tempfile::TempDir,
}

fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A port that is free, and whose cluster bus port (+10000) is free too.
fn free_port(taken: &[u16]) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        if port > 55_000 || taken.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return port;
        }
    }
}

/// Runs `redis-cli -p PORT args…` and returns its output.
pub fn cli(port: u16, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn spawn(dir: &Path, port: u16) -> Child {
    let node_dir = dir.join(port.to_string());
    std::fs::create_dir_all(&node_dir).expect("node dir");
    Command::new("redis-server")
        .args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--cluster-enabled", "yes"])
        .args(["--cluster-config-file", "nodes.conf"])
        .args(["--cluster-node-timeout", &NODE_TIMEOUT_MS.to_string()])
        .args(["--appendonly", "no"])
        .args(["--save", ""])
        .args(["--protected-mode", "no"])
        .args(["--dir", node_dir.to_str().expect("utf-8 path")])
        .args(["--logfile", "redis.log"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl RedisCluster {
    /// Starts a cluster, or `None` (printing SKIP) when redis-server is not installed.
    pub fn start() -> Option<RedisCluster> {
        if !installed("redis-server") || !installed("redis-cli") {
            assert!(
                std::env::var("XENO_REQUIRE_REDIS").as_deref() != Ok("1"),
                "redis-server is not on PATH and XENO_REQUIRE_REDIS=1"
            );
            xeno_tests::prerequisite::missing(
                "redis-server unavailable (apt-get install redis-server)",
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ports = Vec::new();
        for _ in 0..6 {
            ports.push(free_port(&ports));
        }
        let nodes: Vec<Node> = ports
            .iter()
            .map(|&port| Node {
                port,
                process: Some(spawn(dir.path(), port)),
            })
            .collect();
        let cluster = RedisCluster { nodes, dir };
        for node in &cluster.nodes {
            wait_until("redis-server to answer", FORM_TIMEOUT, || {
                cli(node.port, &["ping"]).trim() == "PONG"
            });
        }
        let addresses: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            created.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_healthy();
        Some(cluster)
    }

    /// Waits until every live node reports the cluster OK with all slots served.
    pub fn wait_healthy(&self) {
        for node in self.nodes.iter().filter(|node| node.process.is_some()) {
            wait_until("the cluster to be ok", FORM_TIMEOUT, || {
                let info = cli(node.port, &["cluster", "info"]);
                info.contains("cluster_state:ok") && info.contains("cluster_slots_ok:16384")
            });
        }
    }

    /// Seed URLs for clients.
    pub fn urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}", node.port))
            .collect()
    }

    /// Ports of the live masters.
    pub fn masters(&self) -> Vec<u16> {
        self.nodes
            .iter()
            .filter(|node| node.process.is_some())
            .filter(|node| cli(node.port, &["role"]).starts_with("master"))
            .map(|node| node.port)
            .collect()
    }

    /// Waits until every live master's replicas have applied all it has written, so that a
    /// master killed next loses nothing.
    pub fn wait_replicated(&self) {
        for port in self.masters() {
            wait_until("replication to catch up", FORM_TIMEOUT, || {
                let info = cli(port, &["info", "replication"]);
                let field = |name: &str| {
                    info.lines()
                        .find_map(|line| line.strip_prefix(name))
                        .map(|value| value.trim().to_owned())
                };
                let Some(offset) = field("master_repl_offset:") else {
                    return false;
                };
                let replicas: Vec<&str> = info
                    .lines()
                    .filter(|line| line.starts_with("slave") && line.contains("offset="))
                    .collect();
                !replicas.is_empty()
                    && replicas
                        .iter()
                        .all(|line| line.contains(&format!("offset={offset},")))
            });
        }
    }

    /// The master serving `key`'s slot.
    pub fn master_of(&self, key: &str) -> u16 {
        let slot: u16 = cli(self.masters()[0], &["cluster", "keyslot", key])
            .trim()
            .parse()
            .expect("slot");
        // `cluster nodes`: id addr@bus flags master ping pong epoch state slot-ranges…
        let nodes = cli(self.masters()[0], &["cluster", "nodes"]);
        for line in nodes.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
                continue;
            }
            let serves = fields[8..].iter().any(|range| {
                let (start, end) = range.split_once('-').unwrap_or((range, range));
                matches!((start.parse::<u16>(), end.parse::<u16>()), (Ok(start), Ok(end)) if (start..=end).contains(&slot))
            });
            if serves {
                let address = fields[1].split('@').next().unwrap_or_default();
                return address
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse().ok())
                    .expect("port");
            }
        }
        panic!("no master for slot {slot}: {nodes}");
    }

    /// Kills the node on `port` (SIGKILL: no goodbye to the cluster).
    pub fn kill(&mut self, port: u16) {
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port == port)
            .expect("a node of ours");
        if let Some(mut process) = node.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// The directory holding the nodes' data and logs.
    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_owned()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut process) = node.process.take() {
                let _ = process.kill();
                let _ = process.wait();
            }
        }
    }
}
