//! A domain: one session's isolation unit. It owns the session's scratch directory, CPU
//! budget, events and the backend's resources for it (a VM, a memory allowance), its tasks,
//! and its usage since creation.

use crate::Error;
use crate::backend::{Backend, DomainSettings, Outcome, Resources};
use crate::events::{DomainEvents, OutputCap};
use crate::metering::{EndedTotals, Monotonic, duration_ms};
use crate::scratch::Scratch;
use crate::sync::lock;
use crate::task::Task;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use xeno_schemas::proto::common::v1::Usage;
use xeno_schemas::proto::taskmanager::v1::{TaskEnded, TaskUsage};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Live,
    Destroying,
    Destroyed,
}

struct DomainState<B: Backend> {
    phase: Phase,
    tasks: HashMap<String, Arc<Task<B>>>,
    /// Ended tasks, oldest first, for forgetting the oldest beyond `ended_tasks_kept`.
    ended_order: VecDeque<String>,
    running: u32,
    ended: EndedTotals,
    /// CPU time the host spent for the domain outside its tasks (compilations), ns.
    host_cpu_ns: u64,
    next_key: u64,
    reported: Monotonic,
}

/// A domain of backend `B`.
pub struct Domain<B: Backend> {
    /// Its id, chosen by the environment manager.
    pub id: String,
    /// Identifies the CreateDomain request, for idempotent retries.
    pub fingerprint: [u8; 32],
    /// Its limits.
    pub settings: DomainSettings,
    /// Its directory on the host: the session's files.
    pub scratch: Scratch,
    /// What the backend holds for it.
    pub resources: Arc<B::Resources>,
    /// Its tasks' output and lifecycle events, for StreamOutput.
    pub events: Arc<DomainEvents>,
    /// Serialises deploys in this domain, so a retried DeployTask sees the first.
    pub(crate) deploy_lock: tokio::sync::Mutex<()>,
    cpu: Option<Arc<B::Gate>>,
    created: Instant,
    destroyed_at: OnceLock<Instant>,
    state: Mutex<DomainState<B>>,
    final_usage: watch::Sender<Option<Usage>>,
}

/// What a new domain is made of; every part made by CreateDomain.
pub(crate) struct Parts<B: Backend> {
    pub(crate) id: String,
    pub(crate) fingerprint: [u8; 32],
    pub(crate) settings: DomainSettings,
    pub(crate) scratch: Scratch,
    pub(crate) resources: B::Resources,
    pub(crate) cpu: Option<B::Gate>,
    pub(crate) events: DomainEvents,
    pub(crate) now: Instant,
}

impl<B: Backend> Domain<B> {
    pub(crate) fn new(parts: Parts<B>) -> Self {
        Domain {
            id: parts.id,
            fingerprint: parts.fingerprint,
            settings: parts.settings,
            scratch: parts.scratch,
            resources: Arc::new(parts.resources),
            events: Arc::new(parts.events),
            deploy_lock: tokio::sync::Mutex::new(()),
            cpu: parts.cpu.map(Arc::new),
            created: parts.now,
            destroyed_at: OnceLock::new(),
            state: Mutex::new(DomainState {
                phase: Phase::Live,
                tasks: HashMap::new(),
                ended_order: VecDeque::new(),
                running: 0,
                ended: EndedTotals::default(),
                host_cpu_ns: 0,
                next_key: 0,
                reported: Monotonic::default(),
            }),
            final_usage: watch::Sender::new(None),
        }
    }

    /// When the domain was created: its monotonic clock counts from here.
    pub fn created(&self) -> Instant {
        self.created
    }

    /// Its CPU budget, if it has a rate.
    pub fn cpu_gate(&self) -> Option<Arc<B::Gate>> {
        self.cpu.clone()
    }

    /// The task `task_id`, or NOT_FOUND.
    pub fn task(&self, task_id: &str) -> Result<Arc<Task<B>>, Error> {
        lock(&self.state)
            .tasks
            .get(task_id)
            .cloned()
            .ok_or_else(|| Error::TaskNotFound {
                domain: self.id.clone(),
                task: task_id.to_owned(),
            })
    }

    /// The task `task_id`, if the domain remembers it.
    pub fn find_task(&self, task_id: &str) -> Option<Arc<Task<B>>> {
        lock(&self.state).tasks.get(task_id).cloned()
    }

    /// Refuses a new task if the domain is not live or is full.
    pub fn check_room(&self) -> Result<(), Error> {
        let state = lock(&self.state);
        self.check_room_locked(&state)
    }

    fn check_room_locked(&self, state: &DomainState<B>) -> Result<(), Error> {
        if state.phase != Phase::Live {
            return Err(Error::DomainDestroyed(self.id.clone()));
        }
        if state.running >= self.settings.tasks_max {
            return Err(Error::Exhausted(format!(
                "domain {:?} already runs its maximum of {} tasks",
                self.id, self.settings.tasks_max
            )));
        }
        Ok(())
    }

    /// A new task, not yet registered; its meter counts from `now`.
    pub fn new_task(&self, task_id: &str, fingerprint: [u8; 32], now: Instant) -> Arc<Task<B>> {
        let key = {
            let mut state = lock(&self.state);
            state.next_key += 1;
            state.next_key
        };
        Arc::new(Task::new(task_id.to_owned(), key, fingerprint, now))
    }

    /// Adds a running task and announces it (TaskStarted) before it can write anything.
    pub fn register_task(&self, task: &Arc<Task<B>>, output_cap: &OutputCap) -> Result<(), Error> {
        let mut state = lock(&self.state);
        self.check_room_locked(&state)?;
        if state.tasks.contains_key(&task.id) {
            return Err(Error::TaskExists {
                domain: self.id.clone(),
                task: task.id.clone(),
            });
        }
        state.tasks.insert(task.id.clone(), Arc::clone(task));
        state.running += 1;
        self.events.task_started(&task.id, output_cap);
        Ok(())
    }

    /// Records a task's end (the first call wins), moves its counters into the domain's
    /// totals and announces it (TaskEnded), all under one lock so that no usage report sees
    /// the task counted twice or not at all.
    pub fn finish_task(&self, task: &Arc<Task<B>>, outcome: Outcome) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let Some(exit) = task.record_exit(outcome, now) else {
            return;
        };
        state.running = state.running.saturating_sub(1);
        state.ended.add(&task.meter);
        state.ended_order.push_back(task.id.clone());
        while state.ended_order.len() > self.settings.ended_tasks_kept {
            if let Some(old) = state.ended_order.pop_front() {
                state.tasks.remove(&old);
                self.events.forget(&old);
            }
        }
        tracing::debug!(domain = %self.id, task = %task.id, reason = %exit.reason, "task ended");
        self.events.task_ended(TaskEnded {
            task_id: task.id.clone(),
            exit: Some(exit),
        });
        drop(state);
        task.mark_done();
    }

    /// Charges CPU time the host spent for the domain outside its tasks (a compilation): it is
    /// the session's CPU time, billed as such and reported as `compile_time_us`. It does not
    /// draw on the domain's CPU rate (such work is not paced, and a session at 1 ms/s would
    /// otherwise wait seconds after each): the work's own limit bounds it instead.
    pub fn charge_compilation(&self, cpu: Duration) {
        let ns = u64::try_from(cpu.as_nanos()).unwrap_or(u64::MAX);
        let mut state = lock(&self.state);
        state.host_cpu_ns = state.host_cpu_ns.saturating_add(ns);
    }

    fn usage_locked(&self, state: &mut DomainState<B>, now: Instant) -> Usage {
        let until = self.destroyed_at.get().copied().unwrap_or(now);
        let mut totals = state.ended;
        for task in state.tasks.values().filter(|task| task.exit().is_none()) {
            totals.add(&task.meter);
        }
        let (memory_mb_ms, memory_peak_bytes) = self.resources.memory(until);
        let compile_us = state.host_cpu_ns / 1000;
        let usage = Usage {
            cpu_time_us: totals.cpu_time_us() + compile_us,
            compile_time_us: compile_us,
            memory_mb_ms,
            memory_peak_bytes,
            fuel: totals.fuel,
            syscalls: totals.syscalls,
            output_bytes: totals.output_bytes,
            wall_time_ms: duration_ms(self.created, until),
            ..Usage::default()
        };
        state.reported.apply(usage)
    }

    /// The domain's cumulative usage and each remembered task's.
    pub fn report(&self) -> (Usage, Vec<TaskUsage>) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        // Tasks first: a running task's counters grow while we read, so the domain's total,
        // read after, always includes what each task reports.
        let mut tasks: Vec<TaskUsage> = state
            .tasks
            .values()
            .map(|task| TaskUsage {
                task_id: task.id.clone(),
                state: task.state().into(),
                usage: Some(task.usage(now)),
            })
            .collect();
        tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        let usage = self.usage_locked(&mut state, now);
        (usage, tasks)
    }

    /// Asks every task to stop and tells readers the domain is gone, without waiting: for the
    /// task manager's own shutdown, when its threads are about to stop.
    pub(crate) fn shut_down(&self, reason: &str) {
        let tasks: Vec<Arc<Task<B>>> = lock(&self.state).tasks.values().cloned().collect();
        for task in tasks {
            crate::backend::Control::stop(&*task.control, reason);
        }
        self.events.destroyed(reason);
    }

    /// Stops every task, then freezes and returns the final usage. Concurrent and repeated
    /// calls all return the same usage.
    pub(crate) async fn destroy(&self, reason: &str, stop_timeout: Duration) -> Usage {
        let mut final_usage = self.final_usage.subscribe();
        let running: Option<Vec<Arc<Task<B>>>> = {
            let mut state = lock(&self.state);
            if state.phase == Phase::Live {
                state.phase = Phase::Destroying;
                Some(
                    state
                        .tasks
                        .values()
                        .filter(|task| task.exit().is_none())
                        .cloned()
                        .collect(),
                )
            } else {
                None
            }
        };
        let Some(running) = running else {
            // Another call is destroying (or destroyed) the domain: share its answer.
            return match final_usage.wait_for(Option::is_some).await {
                Ok(usage) => usage.unwrap_or_default(),
                Err(_) => Usage::default(),
            };
        };
        let stops = running
            .iter()
            .map(|task| task.stop(self, reason, stop_timeout));
        futures::future::join_all(stops).await;
        let usage = {
            let mut state = lock(&self.state);
            state.phase = Phase::Destroyed;
            let now = Instant::now();
            let _ = self.destroyed_at.set(now);
            self.usage_locked(&mut state, now)
        };
        self.events.destroyed(reason);
        self.final_usage.send_replace(Some(usage));
        usage
    }
}

impl<B: Backend> crate::domains::TableDomain for Domain<B> {
    fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}
