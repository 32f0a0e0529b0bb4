//! A domain: its limits, scratch directory, tasks and usage, and how it is stopped and
//! destroyed.

use super::error::PluginError;
use super::meter::Throttle;
use super::task::{Task, millis};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use xeno_schemas::proto::common::v1::{TaskExit, TaskState, Usage};
use xeno_schemas::proto::taskmanager::v1::{CreateDomainRequest, DomainLimits};

/// Output kept per task when the domain's `output_bytes_max` is 0 (not set).
pub(crate) const OUTPUT_BYTES_DEFAULT: usize = 1024 * 1024;

/// The most output this plugin keeps per task whatever it is asked: output is held in the
/// plugin's memory until the domain is destroyed.
pub(crate) const OUTPUT_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Tasks a domain records over its life (running or ended, kept for InspectTask and replay
/// until the domain is destroyed), so a session deploying in a loop cannot grow the plugin's
/// memory without bound.
pub(crate) const TASKS_RECORDED_MAX: usize = 1024;

/// How long DestroyDomain waits for SIGKILLed tasks to be reaped before it reports them failed
/// anyway (a process in uninterruptible sleep ignores even SIGKILL until the sleep ends).
pub(crate) const DESTROY_WAIT: Duration = Duration::from_secs(10);

/// A domain's limits as this plugin applies them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// CPU rate, or `None` when `cpu_msps` is 0 (not set).
    pub cpu: Option<CpuRate>,
    /// Address space per process (RLIMIT_AS), or `None` when `memory_mb` is 0.
    pub memory_bytes: Option<u64>,
    /// Output kept per task.
    pub output_bytes_max: usize,
    /// Largest file a task may write (RLIMIT_FSIZE) and most bytes of files one deploy may
    /// bring, or `None` when `disk_mb` is 0.
    pub disk_bytes: Option<u64>,
    /// Most tasks running at once (0: no limit of the domain's own).
    pub tasks_max: u32,
}

/// The CPU rate a domain is held to, in CPU milliseconds per second of real time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CpuRate {
    /// Sustained rate.
    pub msps: u64,
    /// Peak rate while burst credit lasts (0 or not above `msps`: no burst).
    pub peak_msps: u64,
    /// Burst credit, CPU milliseconds.
    pub burst_ms: u64,
}

impl Limits {
    /// The limits a CreateDomain request asks for.
    pub fn from_request(limits: &DomainLimits) -> Limits {
        const MIB: u64 = 1024 * 1024;
        let output = match usize::try_from(limits.output_bytes_max) {
            Ok(0) => OUTPUT_BYTES_DEFAULT,
            Ok(bytes) => bytes.min(OUTPUT_BYTES_MAX),
            Err(_) => OUTPUT_BYTES_MAX,
        };
        Limits {
            cpu: (limits.cpu_msps > 0).then_some(CpuRate {
                msps: limits.cpu_msps,
                peak_msps: limits.cpu_peak_msps,
                burst_ms: limits.cpu_burst_ms,
            }),
            memory_bytes: (limits.memory_mb > 0).then(|| limits.memory_mb.saturating_mul(MIB)),
            output_bytes_max: output,
            disk_bytes: (limits.disk_mb > 0).then(|| limits.disk_mb.saturating_mul(MIB)),
            tasks_max: limits.tasks_max,
        }
    }
}

/// Where a domain is in its life.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    /// Accepting tasks.
    Live,
    /// DestroyDomain is stopping its tasks.
    Destroying,
    /// Destroyed, with its final usage.
    Destroyed {
        /// Why.
        reason: String,
        /// Final cumulative usage.
        usage: Usage,
    },
}

/// A domain: one session's tasks.
#[derive(Debug)]
pub(crate) struct Domain {
    /// The environment manager's id.
    pub id: String,
    /// The request that created it, to answer a retry.
    pub request: CreateDomainRequest,
    /// The version it presents (the host's kernel release).
    pub version: String,
    /// Its limits.
    pub limits: Limits,
    /// Its scratch directory, where its tasks start.
    pub scratch: PathBuf,
    /// The scratch directory when the plugin made it (removed on destroy); `None` when the
    /// environment manager gave one, which it owns and removes.
    owned_scratch: Mutex<Option<tempfile::TempDir>>,
    /// When it was created.
    pub created: Instant,
    state: Mutex<DomainState>,
    /// Bumped after every change a StreamOutput watcher may want (output, task start or end,
    /// destruction). Sending never waits, so producers are never held up by watchers.
    changed: watch::Sender<u64>,
    /// Held by DeployTask and DestroyDomain, so a deploy never races the domain's destruction
    /// and retries of one task id are answered in order.
    pub deploy_lock: tokio::sync::Mutex<()>,
}

/// What changes in a domain, behind its lock.
#[derive(Debug)]
pub(crate) struct DomainState {
    /// Its tasks, in the order they started.
    pub tasks: Vec<Task>,
    index: HashMap<String, usize>,
    /// Live, being destroyed, or destroyed.
    pub phase: Phase,
    /// The CPU duty cycle's state.
    pub throttle: Throttle,
    /// Most resident bytes its tasks held at once.
    pub peak_bytes: u64,
}

impl DomainState {
    /// The task with this id.
    pub fn task(&self, id: &str) -> Option<&Task> {
        self.index.get(id).map(|&i| &self.tasks[i])
    }

    /// The task with this id, to change.
    pub fn task_mut(&mut self, id: &str) -> Option<&mut Task> {
        self.index.get(id).map(|&i| &mut self.tasks[i])
    }

    /// Records a new task.
    pub fn add_task(&mut self, task: Task) {
        self.index.insert(task.id.clone(), self.tasks.len());
        self.tasks.push(task);
    }

    /// Tasks still running.
    pub fn running(&self) -> usize {
        self.tasks
            .iter()
            .filter(|task| task.ended.is_none())
            .count()
    }

    /// The domain's cumulative usage: its tasks' usage added up (ended ones included), its
    /// peak memory, and the wall time since `created`.
    pub fn usage(&self, created: Instant, now: Instant) -> Usage {
        if let Phase::Destroyed { usage, .. } = &self.phase {
            return *usage;
        }
        let mut total = Usage {
            memory_peak_bytes: self.peak_bytes,
            wall_time_ms: millis(now.saturating_duration_since(created)),
            ..Usage::default()
        };
        for task in &self.tasks {
            let usage = task.usage(now);
            total.cpu_time_us = total.cpu_time_us.saturating_add(usage.cpu_time_us);
            total.memory_mb_ms = total.memory_mb_ms.saturating_add(usage.memory_mb_ms);
            total.output_bytes = total.output_bytes.saturating_add(usage.output_bytes);
            // A task too short-lived for a sample still has its rusage peak.
            total.memory_peak_bytes = total.memory_peak_bytes.max(usage.memory_peak_bytes);
        }
        total
    }
}

impl Domain {
    /// A new live domain.
    pub fn new(
        request: CreateDomainRequest,
        version: String,
        scratch: PathBuf,
        owned_scratch: Option<tempfile::TempDir>,
    ) -> Domain {
        let limits = Limits::from_request(&request.limits.unwrap_or_default());
        let now = Instant::now();
        Domain {
            id: request.domain_id.clone(),
            request,
            version,
            limits,
            scratch,
            owned_scratch: Mutex::new(owned_scratch),
            created: now,
            state: Mutex::new(DomainState {
                tasks: Vec::new(),
                index: HashMap::new(),
                phase: Phase::Live,
                throttle: Throttle::new(limits.cpu, now),
                peak_bytes: 0,
            }),
            changed: watch::Sender::new(0),
            deploy_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Its state. A panic elsewhere while the lock was held leaves the state as consistent as
    /// each single update is, so a poisoned lock is used rather than spreading the panic.
    pub fn lock(&self) -> MutexGuard<'_, DomainState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells watchers something changed.
    pub fn notify(&self) {
        self.changed
            .send_modify(|version| *version = version.wrapping_add(1));
    }

    /// A receiver of change notifications.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Asks a running task to stop: records why and SIGKILLs its process group. The waiter
    /// reports it STOPPED with that reason once the leader is reaped. Does nothing to a task
    /// that has ended or whose leader has already exited.
    pub fn request_stop(state: &mut DomainState, task_id: &str, reason: &str) {
        let Some(task) = state.task_mut(task_id) else {
            return;
        };
        if !task.signallable() {
            return;
        }
        task.stop_reason.get_or_insert_with(|| reason.to_owned());
        // The leader is not reaped (`signallable`), so the pgid is still this task's.
        if let Err(error) =
            rustix::process::kill_process_group(task.pgid, rustix::process::Signal::KILL)
        {
            tracing::warn!(task = task_id, %error, "SIGKILL of the task's process group failed");
        }
    }

    /// Waits until `done` holds for the state, or `limit` passes; returns whether it held.
    pub async fn wait_for(&self, limit: Duration, done: impl Fn(&DomainState) -> bool) -> bool {
        let mut changes = self.subscribe();
        let wait = async {
            loop {
                changes.borrow_and_update();
                if done(&self.lock()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok() && done(&self.lock())
    }

    /// Destroys the domain: SIGKILLs every task, waits for them to be reaped, freezes the usage
    /// and removes a scratch directory the plugin made. Returns the final usage; destroying
    /// again returns the same.
    pub async fn destroy(&self, reason: &str) -> Usage {
        let _deploys = self.deploy_lock.lock().await;
        let reason = if reason.is_empty() {
            "domain destroyed".to_owned()
        } else {
            reason.to_owned()
        };
        {
            let mut state = self.lock();
            if let Phase::Destroyed { usage, .. } = &state.phase {
                return *usage;
            }
            state.phase = Phase::Destroying;
            let ids: Vec<String> = state.tasks.iter().map(|task| task.id.clone()).collect();
            for id in ids {
                Domain::request_stop(&mut state, &id, &reason);
            }
        }
        if !self
            .wait_for(DESTROY_WAIT, |state| state.running() == 0)
            .await
        {
            tracing::error!(domain = %self.id, "tasks survived SIGKILL; reporting them failed");
        }
        let usage = {
            let mut state = self.lock();
            let now = Instant::now();
            for task in state.tasks.iter_mut().filter(|task| task.ended.is_none()) {
                let usage = task.usage(now);
                task.ended = Some(TaskExit {
                    state: TaskState::Failed.into(),
                    exit_code: 0,
                    reason: format!("did not die within {DESTROY_WAIT:?} of SIGKILL"),
                    usage: Some(usage),
                    unknown_calls: Vec::new(),
                });
            }
            let usage = state.usage(self.created, now);
            state.phase = Phase::Destroyed {
                reason: reason.clone(),
                usage,
            };
            usage
        };
        self.notify();
        let owned = self
            .owned_scratch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(dir) = owned {
            let path = dir.path().to_owned();
            let removed = tokio::task::spawn_blocking(move || dir.close()).await;
            if !matches!(removed, Ok(Ok(()))) {
                tracing::warn!(path = %path.display(), "could not remove the scratch directory");
            }
        }
        tracing::info!(domain = %self.id, %reason, cpu_us = usage.cpu_time_us, "domain destroyed");
        usage
    }

    /// The NOT_FOUND error for a task this domain does not have.
    pub fn missing_task(&self, task: &str) -> PluginError {
        PluginError::TaskNotFound {
            domain: self.id.clone(),
            task: task.to_owned(),
        }
    }
}
