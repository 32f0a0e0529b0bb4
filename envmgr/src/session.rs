//! One session: its terms, its live state, and its billing. The meter collects cumulative usage
//! from the task manager, prices what has not been billed yet, and charges the corp: every
//! charge is stored (with the usage snapshot it covers) before it is sent and resent under the
//! same sequence number until the corp answers, so usage is never billed twice and, because
//! task managers report cumulative counters, never lost either.

use crate::pricing::{self, Basis, PriceSheet};
use crate::store::{Billing, ChargeRow, SessionRow, Store, TaskRow};
use std::sync::{Arc, Mutex as StdMutex};
use tokio::sync::{Mutex, broadcast, watch};
use tonic::transport::Channel;
use xeno_clients::charging::Charger;
use xeno_schemas::Document;
use xeno_schemas::documents::{Money, TaskActivity, TaskState, UsageRecord};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as corp;
use xeno_schemas::proto::corp::v1::xeno_corp_client::XenoCorpClient;
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::taskmanager::v1 as tm;
use xeno_taskmgr_kit::DynTaskManager;

/// Most session events buffered for slow watchers; beyond it a watcher skips ahead.
pub const EVENTS_BUFFERED_MAX: usize = 1024;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    i64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
        .unwrap_or(i64::MAX)
}

/// An activity annotation: its text and the tasks it lists.
pub type Activity = (String, Vec<TaskActivity>);

/// What the meter decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metered {
    /// Nothing to do until the next period.
    Continue,
    /// The session must end, for this reason.
    End(String),
}

/// Mutable state of a session.
pub struct Live {
    /// Billing position (persisted).
    pub billing: Billing,
    /// The latest cumulative usage seen.
    pub metered: common::Usage,
    /// Set once ended.
    pub ended: Option<String>,
    /// Whether the order has been closed.
    pub closed: bool,
    /// Returned at settlement.
    pub returned_minor: Option<u64>,
}

/// One corp this server works with: the client for orders and settlement, and the charger
/// that carries every session's charges to it over one stream (a server with hundreds of
/// sessions makes one connection's worth of charging work, not hundreds of calls).
#[derive(Clone)]
pub struct CorpLink {
    /// Validation, settlement and trust calls.
    pub client: XenoCorpClient<Channel>,
    /// Charges.
    pub charger: Charger,
}

impl CorpLink {
    /// A link over `client`'s connection (spawns the charger's task on the current runtime).
    pub fn new(client: XenoCorpClient<Channel>) -> CorpLink {
        CorpLink {
            charger: Charger::new(client.clone()),
            client,
        }
    }
}

/// A session on this server.
pub struct Session {
    /// Its fixed terms (as stored at creation).
    pub row: SessionRow,
    /// Billing basis.
    pub basis: Basis,
    /// The task manager that runs it.
    pub task_manager: DynTaskManager,
    /// Its corp.
    pub corp: CorpLink,
    /// Live state; held across the corp calls of one metering step.
    pub live: Mutex<Live>,
    /// Its tasks (kept apart from `live` so deploying never waits on a charge).
    pub tasks: StdMutex<Vec<TaskRow>>,
    /// Task ids handed out so far (`t-1` … `t-N`): taken before a deploy is awaited, so
    /// concurrent deploys never share one.
    task_ids_issued: StdMutex<usize>,
    /// Session events for watchers (charges, the end).
    pub events: broadcast::Sender<pb::SessionEvent>,
    /// The end reason once ended.
    pub ended: watch::Sender<Option<String>>,
}

impl Session {
    /// A session from its stored row.
    pub fn new(
        row: SessionRow,
        task_manager: DynTaskManager,
        corp: CorpLink,
        tasks: Vec<TaskRow>,
    ) -> Session {
        let basis = if row.basis == "fuel" {
            Basis::Fuel
        } else {
            Basis::Time
        };
        let (events, _) = broadcast::channel(EVENTS_BUFFERED_MAX);
        let (ended, _) = watch::channel(row.ended_reason.clone());
        Session {
            basis,
            task_manager,
            corp,
            live: Mutex::new(Live {
                metered: row.billing.billed,
                billing: row.billing.clone(),
                ended: row.ended_reason.clone(),
                closed: row.closed,
                returned_minor: row.returned_minor,
            }),
            task_ids_issued: StdMutex::new(
                tasks
                    .iter()
                    .filter_map(|task| task.task_id.strip_prefix("t-")?.parse::<usize>().ok())
                    .max()
                    .unwrap_or(0)
                    .max(tasks.len()),
            ),
            tasks: StdMutex::new(tasks),
            events,
            ended,
            row,
        }
    }

    /// Takes the next task id, unless `most` have been handed out already.
    pub fn reserve_task_id(&self, most: usize) -> Result<String, &'static str> {
        let mut issued = self
            .task_ids_issued
            .lock()
            .map_err(|_| "the session's task ids are unavailable")?;
        if *issued >= most {
            return Err("this session has deployed too many tasks");
        }
        *issued += 1;
        Ok(format!("t-{issued}"))
    }

    /// Gives back `task_id` after a refused deploy, if no later id was taken since (a deploy
    /// racing it keeps its own, and this one stays unused).
    pub fn release_task_id(&self, task_id: &str) {
        if let Ok(mut issued) = self.task_ids_issued.lock()
            && task_id == format!("t-{issued}")
        {
            *issued -= 1;
        }
    }

    /// The session id (also its domain id at the task manager).
    pub fn id(&self) -> &str {
        &self.row.id
    }

    fn money(&self, minor: u64) -> common::Money {
        common::Money {
            currency: self.row.currency.clone(),
            amount_minor: minor,
        }
    }

    fn emit(&self, event: pb::session_event::Event) {
        let _ = self.events.send(pb::SessionEvent { event: Some(event) });
    }

    /// The session's cumulative usage now, from its task manager.
    pub async fn usage(&self) -> Result<common::Usage, tonic::Status> {
        let report = self
            .task_manager
            .report_usage(tonic::Request::new(tm::ReportUsageRequest {
                domain_id: self.id().to_owned(),
            }))
            .await?;
        Ok(report.into_inner().usage.unwrap_or_default())
    }

    /// The activity annotation for the final charge, taken just before the domain is destroyed
    /// (afterwards the task manager no longer answers for its tasks): tasks still running are
    /// recorded as stopped, which the destruction makes them.
    pub async fn final_activity(&self) -> Activity {
        let (text, mut tasks) = self.activity().await;
        for task in &mut tasks {
            if matches!(task.state, TaskState::Running | TaskState::Pending) {
                task.state = TaskState::Stopped;
            }
        }
        (
            text.replace("(running)", "(stopped)")
                .replace("(pending)", "(stopped)"),
            tasks,
        )
    }

    /// The activity annotation: what the session's tasks were doing.
    async fn activity(&self) -> Activity {
        let tasks = self
            .tasks
            .lock()
            .map(|tasks| tasks.clone())
            .unwrap_or_default();
        let mut activities = Vec::new();
        let mut words = Vec::new();
        for task in tasks
            .iter()
            .rev()
            .take(xeno_schemas::documents::usage::TASKS_MAX as usize)
            .rev()
        {
            let inspected = self
                .task_manager
                .inspect_task(tonic::Request::new(tm::InspectTaskRequest {
                    domain_id: self.id().to_owned(),
                    task_id: task.task_id.clone(),
                }))
                .await
                .map(tonic::Response::into_inner);
            let state = match inspected
                .as_ref()
                .map(|i| common::TaskState::try_from(i.state))
            {
                Ok(Ok(common::TaskState::Running)) => TaskState::Running,
                Ok(Ok(common::TaskState::Pending)) => TaskState::Pending,
                Ok(Ok(common::TaskState::Exited)) => TaskState::Exited,
                Ok(Ok(common::TaskState::Failed)) => TaskState::Failed,
                _ => TaskState::Stopped,
            };
            words.push(format!(
                "{} {} ({})",
                task.task_id,
                task.name,
                state.as_str()
            ));
            activities.push(TaskActivity {
                id: task.task_id.clone(),
                state,
                program: task.program.clone(),
            });
        }
        let text = if words.is_empty() {
            "no tasks".to_owned()
        } else {
            format!("{} task(s): {}", tasks.len(), words.join(", "))
        };
        // The annotation is bounded like every text field of the usage record.
        (text.chars().take(1000).collect(), activities)
    }

    /// One metering step: take `usage` (cumulative), resend pending charges, and charge for
    /// unbilled usage if a charge is due (`force`: always, as at the end). Returns whether the
    /// session must end.
    pub async fn meter(
        &self,
        store: &Arc<StdMutex<Store>>,
        prices: &PriceSheet,
        usage: common::Usage,
        charge_interval_ms: i64,
        final_activity: Option<Activity>,
    ) -> anyhow::Result<Metered> {
        let force = final_activity.is_some();
        let mut live = self.live.lock().await;
        live.metered = usage;
        if let Some(end) = self.flush_pending(store, &mut live).await? {
            return Ok(end);
        }
        let now = now_ms();
        let unbilled = pricing::delta(&live.billing.billed, &live.metered);
        let start = if live.billing.started_charged {
            0
        } else {
            prices.session_start_fine()
        };
        let (minor, carry) = pricing::split_minor(
            live.billing.carry_fine + start + prices.cost_fine(&unbilled, self.basis),
        );
        let remaining = self
            .row
            .limit_minor
            .saturating_sub(live.billing.charged_minor);
        let exhausted = minor >= remaining;
        let due = force || exhausted || now - live.billing.last_charge_ms >= charge_interval_ms;
        if !due {
            return Ok(Metered::Continue);
        }
        let amount = minor.min(remaining);
        let (activity, tasks) = match final_activity {
            Some(activity) => activity,
            None => self.activity().await,
        };
        let sequence = live.billing.next_sequence;
        let record = UsageRecord {
            order_id: self.row.order_id.clone(),
            session_id: self.id().to_owned(),
            sequence,
            period_start: instant(live.billing.last_charge_ms),
            period_end: instant(now.max(live.billing.last_charge_ms)),
            cpu_ms: unbilled.cpu_time_us / 1000,
            memory_mb_ms: unbilled.memory_mb_ms,
            network_bytes_in: Some(unbilled.net_rx_bytes),
            network_bytes_out: Some(unbilled.net_tx_bytes),
            fuel: Some(unbilled.fuel),
            syscalls: (unbilled.syscalls > 0).then_some(unbilled.syscalls),
            output_bytes: Some(unbilled.output_bytes),
            charge: Money {
                currency: self.row.currency.parse().map_err(anyhow::Error::msg)?,
                minor: amount,
            },
            activity: Some(activity),
            tasks,
            extensions: Vec::new(),
        };
        let charge = ChargeRow {
            sequence,
            amount_minor: amount,
            usage_xml: record.to_xml(),
            state: "pending".to_owned(),
        };
        let billing = Billing {
            next_sequence: sequence + 1,
            charged_minor: live.billing.charged_minor,
            billed: live.metered,
            // What could not be charged because the budget ran out is forgone, not carried.
            carry_fine: if amount < minor { 0 } else { carry },
            last_charge_ms: now,
            started_charged: true,
        };
        {
            let store = Arc::clone(store);
            let (id, charge, billing) = (self.id().to_owned(), charge.clone(), billing.clone());
            tokio::task::spawn_blocking(move || {
                store
                    .lock()
                    .map_err(|_| anyhow::anyhow!("store poisoned"))?
                    .record_charge(&id, &charge, &billing, now)
            })
            .await??;
        }
        live.billing = billing;
        if let Some(end) = self.flush_pending(store, &mut live).await? {
            return Ok(end);
        }
        if exhausted && !force {
            return Ok(Metered::End("funds exhausted".to_owned()));
        }
        Ok(Metered::Continue)
    }

    /// Sends every pending charge, in order. Stops at the first the corp cannot be reached for
    /// (it stays pending). Returns a reason to end the session if the corp refuses one.
    async fn flush_pending(
        &self,
        store: &Arc<StdMutex<Store>>,
        live: &mut Live,
    ) -> anyhow::Result<Option<Metered>> {
        let pending = {
            let store = Arc::clone(store);
            let id = self.id().to_owned();
            tokio::task::spawn_blocking(move || {
                store
                    .lock()
                    .map_err(|_| anyhow::anyhow!("store poisoned"))?
                    .pending_charges(&id)
            })
            .await??
        };
        for charge in pending {
            let request = corp::ChargeRequest {
                order_id: self.row.order_id.clone(),
                sequence: charge.sequence,
                amount: Some(self.money(charge.amount_minor)),
                usage_record_xml: charge.usage_xml.clone(),
            };
            let answer = self.corp.charger.charge(request).await;
            let (state, end) = match answer {
                Ok(response) => {
                    let total = response
                        .charged_total
                        .map_or(live.billing.charged_minor, |m| m.amount_minor);
                    let remaining = response.remaining.map_or(0, |m| m.amount_minor);
                    if response.outcome == corp::ChargeOutcome::Charged as i32 {
                        live.billing.charged_minor = total;
                        self.emit(pb::session_event::Event::Charge(pb::ChargeMade {
                            sequence: charge.sequence,
                            amount: Some(self.money(charge.amount_minor)),
                            charged_total: Some(self.money(total)),
                            remaining: Some(self.money(remaining)),
                        }));
                        ("charged", None)
                    } else {
                        // The corp's view of what remains is authoritative: stop.
                        live.billing.charged_minor = total;
                        ("refused", Some(Metered::End("funds exhausted".to_owned())))
                    }
                }
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Unknown
                            | tonic::Code::DeadlineExceeded
                            | tonic::Code::Cancelled
                    ) =>
                {
                    tracing::warn!(session = %self.id(), sequence = charge.sequence, "charge not delivered, will retry: {}", status.message());
                    return Ok(None);
                }
                Err(status) => {
                    tracing::warn!(session = %self.id(), sequence = charge.sequence, "charge refused by the corp: {}", status.message());
                    (
                        "refused",
                        Some(Metered::End(format!(
                            "the corp refused a charge: {}",
                            status.message()
                        ))),
                    )
                }
            };
            let charged = live.billing.charged_minor;
            let store = Arc::clone(store);
            let id = self.id().to_owned();
            tokio::task::spawn_blocking(move || {
                store
                    .lock()
                    .map_err(|_| anyhow::anyhow!("store poisoned"))?
                    .settle_charge(&id, charge.sequence, state, charged)
            })
            .await??;
            if end.is_some() {
                return Ok(end);
            }
        }
        Ok(None)
    }

    /// Closes the order with the corp (once), returning what went back to the client.
    pub async fn close_order(&self, store: &Arc<StdMutex<Store>>) -> anyhow::Result<u64> {
        let mut live = self.live.lock().await;
        if let Some(returned) = live.returned_minor.filter(|_| live.closed) {
            return Ok(returned);
        }
        if self.flush_pending(store, &mut live).await?.is_none() {
            let pending = {
                let store = Arc::clone(store);
                let id = self.id().to_owned();
                tokio::task::spawn_blocking(move || {
                    store
                        .lock()
                        .map_err(|_| anyhow::anyhow!("store poisoned"))?
                        .pending_charges(&id)
                })
                .await??
            };
            anyhow::ensure!(
                pending.is_empty(),
                "charges are still pending; the order is closed once the corp has them"
            );
        }
        let settlement = self
            .corp
            .client
            .clone()
            .close_purchase_order(corp::ClosePurchaseOrderRequest {
                order_id: self.row.order_id.clone(),
            })
            .await
            .map_err(|status| anyhow::anyhow!("closing the order: {}", status.message()))?
            .into_inner();
        let returned = settlement.returned.map_or(0, |m| m.amount_minor);
        live.closed = true;
        live.returned_minor = Some(returned);
        let store = Arc::clone(store);
        let id = self.id().to_owned();
        tokio::task::spawn_blocking(move || {
            store
                .lock()
                .map_err(|_| anyhow::anyhow!("store poisoned"))?
                .close_session(&id, returned)
        })
        .await??;
        Ok(returned)
    }

    /// Announces the end to watchers.
    pub fn announce_end(&self, reason: &str, charged_minor: u64) {
        self.ended.send_replace(Some(reason.to_owned()));
        self.emit(pb::session_event::Event::SessionEnded(pb::SessionEnded {
            reason: reason.to_owned(),
            charged_total: Some(self.money(charged_minor)),
        }));
    }
}

/// The instant of Unix milliseconds.
pub fn instant(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}
