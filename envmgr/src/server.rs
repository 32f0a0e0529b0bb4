//! The environment manager's core: admission, sessions, deployment, metering loops and
//! settlement. The gRPC service (`crate::service`) only translates to and from these calls.

use crate::config::Config;
use crate::identity::{ClientId, TrustedCorps};
use crate::pricing::{self, PriceSheet};
use crate::session::{CorpLink, Metered, Session, now_ms};
use crate::store::{Billing, SessionRow, Store, TaskRow};
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use tonic::Status;
use xeno_schemas::Document;
use xeno_schemas::documents::{
    EnvVersion, EnvironmentalRequirements, Program, PurchaseOrder, TaskDescription,
};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as corp;
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::taskmanager::v1 as tm;
use xeno_taskmgr_kit::{DynTaskManager, payload};

/// A task manager and what it said it runs.
pub struct Manager {
    /// The manager.
    pub handle: DynTaskManager,
    /// Its capabilities.
    pub capabilities: tm::GetCapabilitiesResponse,
}

/// Resources promised to live sessions.
#[derive(Debug, Default, Clone, Copy)]
struct Reserved {
    cpu_msps: u64,
    memory_mb: u64,
    net_kbps: u64,
    sessions: u32,
}

/// The environment manager.
pub struct Server {
    /// Configuration.
    pub config: Config,
    /// Price sheet.
    pub prices: PriceSheet,
    /// Client identities.
    pub trusted: TrustedCorps,
    corps: HashMap<String, CorpLink>,
    /// Task managers by EnvType.
    pub managers: HashMap<String, Manager>,
    store: Arc<StdMutex<Store>>,
    sessions: StdMutex<HashMap<String, Arc<Session>>>,
    reserved: StdMutex<Reserved>,
    /// Set when the server stops: meters stop with it (a restarted server resumes them).
    stopping: tokio::sync::watch::Sender<bool>,
    /// Sessions being created now: their pending validations are not orphans.
    creating: StdMutex<std::collections::HashSet<String>>,
}

fn status_of(error: &anyhow::Error) -> Status {
    Status::unavailable(format!("{error:#}"))
}

impl Server {
    /// A server from its parts; sessions are loaded by [`Server::recover`].
    pub fn new(
        config: Config,
        trusted: TrustedCorps,
        corps: HashMap<String, CorpLink>,
        managers: HashMap<String, Manager>,
        store: Store,
    ) -> anyhow::Result<Server> {
        Ok(Server {
            prices: PriceSheet::from_config(&config.pricing)?,
            config,
            trusted,
            corps,
            managers,
            store: Arc::new(StdMutex::new(store)),
            sessions: StdMutex::new(HashMap::new()),
            reserved: StdMutex::new(Reserved::default()),
            stopping: tokio::sync::watch::channel(false).0,
            creating: StdMutex::new(std::collections::HashSet::new()),
        })
    }

    fn session_for(&self, id: &str, caller: &ClientId) -> Result<Arc<Session>, Status> {
        let session = self
            .sessions
            .lock()
            .map_err(|_| Status::internal("sessions lock"))?
            .get(id)
            .cloned();
        match session {
            Some(session)
                if session.row.owner_corp == caller.corp
                    && session.row.owner_account == caller.account =>
            {
                Ok(session)
            }
            // Another client's session looks exactly like no session at all.
            _ => Err(Status::not_found(format!("no session {id:?}"))),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Store) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, Status> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let mut store = store
                .lock()
                .map_err(|_| anyhow::anyhow!("store poisoned"))?;
            work(&mut store)
        })
        .await
        .map_err(|error| Status::internal(error.to_string()))?
        .map_err(|error| status_of(&error))
    }

    /// Reserves resources for a session, or names the one that is short.
    fn admit(&self, cpu_msps: u64, memory_mb: u64, net_kbps: u64) -> Result<(), Status> {
        let mut reserved = self
            .reserved
            .lock()
            .map_err(|_| Status::internal("capacity lock"))?;
        let capacity = &self.config.capacity;
        let checks = [
            (
                "CPU",
                "CPUmsps",
                cpu_msps,
                capacity.cpu_msps.saturating_sub(reserved.cpu_msps),
            ),
            (
                "memory",
                "MB",
                memory_mb,
                capacity.memory_mb.saturating_sub(reserved.memory_mb),
            ),
            (
                "network",
                "kbps",
                net_kbps,
                capacity.net_kbps.saturating_sub(reserved.net_kbps),
            ),
        ];
        for (resource, unit, asked, free) in checks {
            if asked > free {
                return Err(Status::resource_exhausted(format!(
                    "not enough {resource}: {asked} {unit} asked, {free} {unit} free"
                )));
            }
        }
        if reserved.sessions >= capacity.sessions_max {
            return Err(Status::resource_exhausted(format!(
                "not enough sessions: all {} are in use",
                capacity.sessions_max
            )));
        }
        reserved.cpu_msps += cpu_msps;
        reserved.memory_mb += memory_mb;
        reserved.net_kbps += net_kbps;
        reserved.sessions += 1;
        Ok(())
    }

    fn release(&self, cpu_msps: u64, memory_mb: u64, net_kbps: u64) {
        if let Ok(mut reserved) = self.reserved.lock() {
            reserved.cpu_msps = reserved.cpu_msps.saturating_sub(cpu_msps);
            reserved.memory_mb = reserved.memory_mb.saturating_sub(memory_mb);
            reserved.net_kbps = reserved.net_kbps.saturating_sub(net_kbps);
            reserved.sessions = reserved.sessions.saturating_sub(1);
        }
    }

    /// Free capacity: (cpu_msps, memory_mb, net_kbps, live sessions).
    pub fn free(&self) -> (u64, u64, u64, u32) {
        let reserved = self.reserved.lock().map(|r| *r).unwrap_or_default();
        let capacity = &self.config.capacity;
        (
            capacity.cpu_msps.saturating_sub(reserved.cpu_msps),
            capacity.memory_mb.saturating_sub(reserved.memory_mb),
            capacity.net_kbps.saturating_sub(reserved.net_kbps),
            reserved.sessions,
        )
    }

    /// Sessions per environment type.
    pub fn sessions_of_type(&self, env_type: &str) -> u32 {
        self.sessions
            .lock()
            .map(|sessions| {
                sessions
                    .values()
                    .filter(|s| s.row.env_type == env_type && s.ended.borrow().is_none())
                    .count() as u32
            })
            .unwrap_or(0)
    }

    /// Creates a session: requirements, admission, the order's validation with its corp, and
    /// only then a domain.
    pub async fn create_session(
        self: &Arc<Self>,
        caller: &ClientId,
        requirements_xml: &str,
        order_xml: &str,
    ) -> Result<pb::CreateSessionResponse, Status> {
        let requirements = EnvironmentalRequirements::parse(requirements_xml.as_bytes())
            .map_err(|errors| Status::invalid_argument(format!("requirements: {errors}")))?;
        let order = PurchaseOrder::parse(order_xml.as_bytes())
            .map_err(|errors| Status::invalid_argument(format!("purchase order: {errors}")))?;
        let basis =
            pricing::basis_from(&requirements.extensions).map_err(Status::invalid_argument)?;
        let manager = self.managers.get(&requirements.env_type).ok_or_else(|| {
            let offered: Vec<&str> = self.managers.keys().map(String::as_str).collect();
            Status::unimplemented(format!(
                "this server does not run {} environments (it runs {})",
                requirements.env_type,
                offered.join(", ")
            ))
        })?;
        let version = match &requirements.version {
            Some(EnvVersion::Kernel(v) | EnvVersion::Runtime(v)) => {
                if !manager.capabilities.versions.contains(v) {
                    return Err(Status::unimplemented(format!(
                        "{} {v} is not offered here (offered: {})",
                        requirements.env_type,
                        manager.capabilities.versions.join(", ")
                    )));
                }
                v.clone()
            }
            None => String::new(),
        };
        if requirements.ip_addresses.unwrap_or(0) > 0 {
            return Err(Status::unimplemented(
                "this server cannot give sessions globally routable IP addresses",
            ));
        }
        let corp = self.corps.get(&order.issued.corp).ok_or_else(|| {
            Status::permission_denied(format!(
                "this server does not accept orders from {}; it works with {}",
                order.issued.corp,
                self.config
                    .corps
                    .iter()
                    .map(|c| c.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        if order.issued.corp != caller.corp || order.issued.client != caller.account {
            return Err(Status::permission_denied(
                "the purchase order belongs to another client",
            ));
        }
        if order.issued.amount.currency != self.prices.currency {
            return Err(Status::failed_precondition(format!(
                "this server charges in {}, the order is in {}",
                self.prices.currency, order.issued.amount.currency
            )));
        }
        if let Some(max_spend) = requirements.max_spend
            && max_spend.currency != self.prices.currency
        {
            return Err(Status::invalid_argument(format!(
                "Constraints/MaxSpend is in {}, this server charges in {}",
                max_spend.currency, self.prices.currency
            )));
        }
        let defaults = &self.config.defaults;
        let cpu_msps = requirements.qos.cpu_msps.unwrap_or(defaults.cpu_msps);
        let memory_mb = requirements.qos.memory_mb.unwrap_or(defaults.memory_mb);
        let net_kbps = requirements.net_kbps.unwrap_or(defaults.net_kbps);
        if cpu_msps == 0 || memory_mb == 0 {
            return Err(Status::invalid_argument(
                "QoS: CPUmsps and MemoryMB must be positive",
            ));
        }
        self.admit(cpu_msps, memory_mb, net_kbps)?;
        let session_id = format!("s-{}", hex::encode(rand::random::<[u8; 8]>()));
        let created = self
            .open_session(
                &session_id,
                caller,
                &requirements,
                requirements_xml,
                &order,
                corp,
                manager,
                version,
                basis,
                (cpu_msps, memory_mb, net_kbps),
            )
            .await;
        if created.is_err() {
            self.release(cpu_msps, memory_mb, net_kbps);
        }
        created
    }

    #[allow(clippy::too_many_arguments)]
    async fn open_session(
        self: &Arc<Self>,
        session_id: &str,
        caller: &ClientId,
        requirements: &EnvironmentalRequirements,
        requirements_xml: &str,
        order: &PurchaseOrder,
        corp: &CorpLink,
        manager: &Manager,
        version: String,
        basis: pricing::Basis,
        (cpu_msps, memory_mb, net_kbps): (u64, u64, u64),
    ) -> Result<pb::CreateSessionResponse, Status> {
        // Recorded first, so that an order bound to us whose session never gets stored (we die,
        // or the corp's answer is lost) is closed later and its funds go back.
        let (id, order_id, order_corp) = (
            session_id.to_owned(),
            order.issued.order_id.clone(),
            order.issued.corp.clone(),
        );
        if let Ok(mut creating) = self.creating.lock() {
            creating.insert(session_id.to_owned());
        }
        let recorded = self
            .blocking(move |store| store.begin_validation(&id, &order_id, &order_corp, now_ms()))
            .await;
        let created = match recorded {
            Ok(()) => {
                self.open_validated(
                    session_id,
                    caller,
                    requirements,
                    requirements_xml,
                    order,
                    corp,
                    manager,
                    version,
                    basis,
                    (cpu_msps, memory_mb, net_kbps),
                )
                .await
            }
            Err(status) => Err(status),
        };
        if let Ok(mut creating) = self.creating.lock() {
            creating.remove(session_id);
        }
        created
    }

    #[allow(clippy::too_many_arguments)]
    async fn open_validated(
        self: &Arc<Self>,
        session_id: &str,
        caller: &ClientId,
        requirements: &EnvironmentalRequirements,
        requirements_xml: &str,
        order: &PurchaseOrder,
        corp: &CorpLink,
        manager: &Manager,
        version: String,
        basis: pricing::Basis,
        (cpu_msps, memory_mb, net_kbps): (u64, u64, u64),
    ) -> Result<pb::CreateSessionResponse, Status> {
        let asked_at_ms = now_ms();
        let validated = corp
            .client
            .clone()
            .validate_purchase_order(corp::ValidatePurchaseOrderRequest {
                purchase_order_xml: order.to_xml(),
                session_id: session_id.to_owned(),
                requirements_xml: requirements_xml.to_owned(),
            })
            .await;
        if let Err(status) = &validated
            && status.code() != tonic::Code::Unavailable
        {
            // Refused: nothing is bound, nothing to close.
            let id = session_id.to_owned();
            self.blocking(move |store| store.forget_validation(&id))
                .await?;
        }
        let validation = validated
            .map_err(|status| match status.code() {
                // The order may or may not be bound now: the pending validation stays, and the
                // orphan closer settles it if it is.
                tonic::Code::Unavailable => {
                    Status::unavailable(format!("the corp cannot be reached: {}", status.message()))
                }
                code => Status::new(
                    if code == tonic::Code::InvalidArgument {
                        tonic::Code::InvalidArgument
                    } else {
                        tonic::Code::PermissionDenied
                    },
                    format!("the corp refused the order: {}", status.message()),
                ),
            })?
            .into_inner();
        let order_limit = validation.limit.map_or(0, |m| m.amount_minor);
        let limit_minor = requirements
            .max_spend
            .map_or(order_limit, |cap| cap.minor.min(order_limit));
        let created_at_ms = now_ms();
        let duration_end = requirements
            .max_duration_seconds
            .map_or(i64::MAX, |seconds| {
                created_at_ms
                    .saturating_add(i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX))
            });
        // The corp's expiry is on the corp's clock: moved onto ours, so that a server whose
        // clock is off still ends the session when the corp stops honouring charges for it.
        let skew_ms = match validation.corp_time_unix_ms {
            0 => 0,
            corp_time => corp_time - (asked_at_ms + created_at_ms) / 2,
        };
        let expires_at_ms = validation
            .expires_at_unix_ms
            .saturating_sub(skew_ms)
            .min(duration_end);
        let scratch = self.config.data_dir.join("sessions").join(session_id);
        std::fs::create_dir_all(&scratch)
            .and_then(|()| xeno_taskmgr_kit::scratch::make_private(&scratch))
            .map_err(|error| {
                Status::internal(format!("creating the session directory: {error}"))
            })?;
        let limits = tm::DomainLimits {
            cpu_msps,
            cpu_peak_msps: requirements.qos.cpu_peak_msps.unwrap_or(0),
            cpu_burst_ms: requirements.qos.cpu_burst_ms.unwrap_or(0),
            memory_mb,
            output_bytes_max: self.config.defaults.output_bytes_max,
            disk_mb: requirements.qos.disk_mb.unwrap_or(0),
            net_kbps,
            tasks_max: match manager.capabilities.tasks_per_domain_max {
                0 => self.config.defaults.tasks_max,
                most => self.config.defaults.tasks_max.min(most),
            },
        };
        let domain = manager
            .handle
            .create_domain(tonic::Request::new(tm::CreateDomainRequest {
                domain_id: session_id.to_owned(),
                env_type: requirements.env_type.clone(),
                version: version.clone(),
                limits: Some(limits),
                requirements_xml: requirements_xml.to_owned(),
                scratch_dir: scratch.to_string_lossy().into_owned(),
            }))
            .await;
        let version = match domain {
            Ok(response) => response.into_inner().version,
            Err(status) => {
                // Nothing was spent: close the order so the client's funds come back at once
                // (or, if the corp cannot be reached now, later: the validation stays pending).
                self.close_orphan(corp, session_id, &order.issued.order_id)
                    .await;
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(Status::new(
                    status.code(),
                    format!(
                        "the task manager could not create the domain: {}",
                        status.message()
                    ),
                ));
            }
        };
        let row = SessionRow {
            id: session_id.to_owned(),
            owner_corp: caller.corp.clone(),
            owner_account: caller.account.clone(),
            env_type: requirements.env_type.clone(),
            version: version.clone(),
            requirements_xml: requirements_xml.to_owned(),
            order_id: order.issued.order_id.clone(),
            order_corp: order.issued.corp.clone(),
            cpu_msps,
            memory_mb,
            net_kbps,
            basis: basis.as_str().to_owned(),
            currency: self.prices.currency.to_string(),
            limit_minor,
            expires_at_ms,
            created_at_ms,
            ended_reason: None,
            returned_minor: None,
            closed: false,
            billing: Billing {
                next_sequence: 1,
                charged_minor: 0,
                billed: common::Usage::default(),
                carry_fine: 0,
                last_charge_ms: created_at_ms,
                started_charged: false,
            },
        };
        let stored = row.clone();
        self.blocking(move |store| store.insert_session(&stored))
            .await?;
        let session = Arc::new(Session::new(
            row,
            Arc::clone(&manager.handle),
            corp.clone(),
            Vec::new(),
        ));
        self.sessions
            .lock()
            .map_err(|_| Status::internal("sessions lock"))?
            .insert(session_id.to_owned(), Arc::clone(&session));
        self.spawn_meter(session);
        tracing::info!(session = session_id, client = %caller, env_type = %requirements.env_type, cpu_msps, memory_mb, "session created");
        Ok(pb::CreateSessionResponse {
            session_id: session_id.to_owned(),
            env_type: requirements.env_type.clone(),
            cpu_msps,
            memory_mb,
            net_kbps,
            version,
            expires_at_unix_ms: expires_at_ms,
        })
    }

    /// Closes an order bound to us for a session that was never made (nothing was charged),
    /// and forgets its pending validation once the corp has settled it (or says it was never
    /// bound to us). Whether it worked: an unreachable corp leaves it for the next try.
    async fn close_orphan(&self, corp: &CorpLink, session_id: &str, order_id: &str) -> bool {
        let closed = corp
            .client
            .clone()
            .close_purchase_order(corp::ClosePurchaseOrderRequest {
                order_id: order_id.to_owned(),
            })
            .await;
        let done = match &closed {
            Ok(_) => true,
            // Never validated (the corp did not bind it to us), or unknown: nothing to settle.
            Err(status) => matches!(
                status.code(),
                tonic::Code::PermissionDenied | tonic::Code::NotFound
            ),
        };
        if done {
            let id = session_id.to_owned();
            if let Err(status) = self
                .blocking(move |store| store.forget_validation(&id))
                .await
            {
                tracing::warn!(
                    session = session_id,
                    "forgetting a settled validation: {}",
                    status.message()
                );
            }
            tracing::info!(
                session = session_id,
                order = order_id,
                "closed an order whose session was never made"
            );
        }
        done
    }

    /// Closes, until none is left, the orders of validations whose sessions were never stored
    /// (the server died between validating and storing, or the corp's answer was lost).
    pub fn spawn_orphan_closer(self: &Arc<Self>, period: std::time::Duration) {
        let server = Arc::clone(self);
        tokio::spawn(async move {
            let mut stopping = server.stopping.subscribe();
            loop {
                let pending = server
                    .blocking(|store| store.pending_validations())
                    .await
                    .unwrap_or_default();
                for (session_id, order_id, order_corp) in pending {
                    let in_flight = server
                        .creating
                        .lock()
                        .is_ok_and(|creating| creating.contains(&session_id));
                    if in_flight {
                        continue;
                    }
                    if let Some(corp) = server.corps.get(&order_corp) {
                        server.close_orphan(corp, &session_id, &order_id).await;
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    _ = stopping.changed() => break,
                }
            }
        });
    }

    /// Runs a session's meter until the session ends.
    fn spawn_meter(self: &Arc<Self>, session: Arc<Session>) {
        let server = Arc::clone(self);
        tokio::spawn(async move {
            let period = std::time::Duration::from_millis(server.config.metering.period_ms);
            let mut ended = session.ended.subscribe();
            let mut stopping = server.stopping.subscribe();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    _ = ended.changed() => break,
                    _ = stopping.changed() => break,
                }
                if session.ended.borrow().is_some() {
                    break;
                }
                let reason = match session.usage().await {
                    Err(status) if status.code() == tonic::Code::NotFound => {
                        Some("the session's domain is gone: its task manager no longer has it (restarted, or the server was)".to_owned())
                    }
                    Err(status) => {
                        tracing::warn!(session = %session.id(), "usage report failed: {}", status.message());
                        None
                    }
                    Ok(usage) => {
                        let interval = i64::try_from(server.config.metering.charge_interval_ms)
                            .unwrap_or(i64::MAX);
                        match session
                            .meter(&server.store, &server.prices, usage, interval, None)
                            .await
                        {
                            Ok(Metered::End(reason)) => Some(reason),
                            Ok(Metered::Continue) => None,
                            Err(error) => {
                                tracing::warn!(session = %session.id(), "metering failed: {error:#}");
                                None
                            }
                        }
                    }
                };
                let reason = reason.or_else(|| {
                    (now_ms() >= session.row.expires_at_ms)
                        .then(|| "the session's funding or time ran out".to_owned())
                });
                if let Some(reason) = reason {
                    if let Err(status) = server.end_session(&session, &reason).await {
                        tracing::warn!(session = %session.id(), "ending the session: {}", status.message());
                    }
                    break;
                }
            }
        });
    }

    /// Ends a session: stops its tasks, makes the final charge and closes its order. Ending an
    /// ended session returns its summary again.
    pub async fn end_session(
        &self,
        session: &Arc<Session>,
        reason: &str,
    ) -> Result<pb::DestroySessionResponse, Status> {
        let first = {
            let mut live = session.live.lock().await;
            let first = live.ended.is_none();
            if first {
                live.ended = Some(reason.to_owned());
            }
            first
        };
        let reason = session
            .live
            .lock()
            .await
            .ended
            .clone()
            .unwrap_or_else(|| reason.to_owned());
        let activity = if first {
            Some(session.final_activity().await)
        } else {
            None
        };
        let final_usage = session
            .task_manager
            .destroy_domain(tonic::Request::new(tm::DestroyDomainRequest {
                domain_id: session.id().to_owned(),
                reason: reason.clone(),
            }))
            .await
            .map(|response| response.into_inner().usage.unwrap_or_default());
        let usage = match final_usage {
            Ok(usage) => usage,
            // The domain is already gone: bill what was last seen.
            Err(_) => session.live.lock().await.metered,
        };
        if first {
            let id = session.id().to_owned();
            let ended = reason.clone();
            self.blocking(move |store| store.end_session(&id, &ended))
                .await?;
            let row = &session.row;
            self.release(row.cpu_msps, row.memory_mb, row.net_kbps);
            let _ =
                std::fs::remove_dir_all(self.config.data_dir.join("sessions").join(session.id()));
        }
        if let Some(activity) = activity {
            session
                .meter(&self.store, &self.prices, usage, 0, Some(activity))
                .await
                .map_err(|error| status_of(&error))?;
        }
        let returned = session
            .close_order(&self.store)
            .await
            .map_err(|error| status_of(&error))?;
        let charged = session.live.lock().await.billing.charged_minor;
        if first {
            session.announce_end(&reason, charged);
            tracing::info!(session = %session.id(), reason = %reason, charged, returned, "session ended");
        }
        let money = |minor| {
            Some(common::Money {
                currency: session.row.currency.clone(),
                amount_minor: minor,
            })
        };
        Ok(pb::DestroySessionResponse {
            reason,
            charged_total: money(charged),
            returned: money(returned),
            usage: Some(usage),
        })
    }

    /// DestroySession.
    pub async fn destroy(
        &self,
        caller: &ClientId,
        session_id: &str,
    ) -> Result<pb::DestroySessionResponse, Status> {
        let session = self.session_for(session_id, caller)?;
        self.end_session(&session, "destroyed by its client").await
    }

    /// DeployTask.
    pub async fn deploy(
        &self,
        caller: &ClientId,
        session_id: &str,
        task_xml: &str,
        payloads: Vec<common::Payload>,
    ) -> Result<String, Status> {
        let session = self.session_for(session_id, caller)?;
        if let Some(reason) = session.ended.borrow().clone() {
            return Err(Status::failed_precondition(format!(
                "the session has ended: {reason}"
            )));
        }
        let total: u64 = payloads.iter().map(|p| p.data.len() as u64).sum();
        if total > self.config.limits.payload_bytes_max {
            return Err(Status::resource_exhausted(format!(
                "payloads total {total} bytes; this server takes at most {}",
                self.config.limits.payload_bytes_max
            )));
        }
        let task = TaskDescription::parse(task_xml.as_bytes())
            .map_err(|errors| Status::invalid_argument(format!("task: {errors}")))?;
        // Hashing up to `payload_bytes_max` takes a while: off the async workers.
        let limit = self.config.limits.payload_bytes_max;
        let named: Vec<String> = task
            .payload_hashes()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let payloads = tokio::task::spawn_blocking(move || {
            let verified = payload::verify(payloads, limit)?;
            let named: Vec<&str> = named.iter().map(String::as_str).collect();
            payload::check_named(&named, &verified)?;
            Ok::<_, payload::PayloadError>(
                verified
                    .into_iter()
                    .map(|(sha256, data)| common::Payload {
                        sha256,
                        data: Vec::from(data),
                    })
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .map_err(|_| Status::internal("payload check"))?
        .map_err(|error| Status::invalid_argument(error.to_string()))?;
        // The id is taken under the lock before the task manager is asked, so deploys racing
        // into one session get distinct ids.
        let task_id = session
            .reserve_task_id(self.config.defaults.tasks_max as usize * 16)
            .map_err(Status::resource_exhausted)?;
        let program = match &task.program {
            Program::WasmModule { .. } => "WasmModule",
            Program::WasmComponent { .. } => "WasmComponent",
            Program::Executable { .. } => "Executable",
            Program::ExecutablePath(_) => "ExecutablePath",
        };
        let deployed = session
            .task_manager
            .deploy_task(tonic::Request::new(tm::DeployTaskRequest {
                domain_id: session_id.to_owned(),
                task_id: task_id.clone(),
                task_xml: task_xml.to_owned(),
                payloads,
            }))
            .await;
        if let Err(status) = deployed {
            // A refused task leaves its id for the next deploy, unless the task manager
            // already holds a task by that id (one deployed before a crash this server did not
            // record): that id is spent.
            if status.code() != tonic::Code::AlreadyExists {
                session.release_task_id(&task_id);
            }
            return Err(status);
        }
        let row = TaskRow {
            task_id: task_id.clone(),
            name: task.name.clone().unwrap_or_else(|| task_id.clone()),
            program: program.to_owned(),
        };
        session
            .tasks
            .lock()
            .map_err(|_| Status::internal("tasks lock"))?
            .push(row.clone());
        let id = session_id.to_owned();
        self.blocking(move |store| store.insert_task(&id, &row, now_ms()))
            .await?;
        Ok(task_id)
    }

    /// TaskStatus.
    pub async fn task_status(
        &self,
        caller: &ClientId,
        session_id: &str,
        task_id: &str,
    ) -> Result<pb::TaskStatusResponse, Status> {
        let session = self.session_for(session_id, caller)?;
        let inspected = session
            .task_manager
            .inspect_task(tonic::Request::new(tm::InspectTaskRequest {
                domain_id: session_id.to_owned(),
                task_id: task_id.to_owned(),
            }))
            .await?
            .into_inner();
        Ok(pb::TaskStatusResponse {
            task_id: task_id.to_owned(),
            state: inspected.state,
            exit: inspected.exit,
            usage: inspected.usage,
            output_dropped_bytes: inspected.output_dropped_bytes,
            output_dropped_reason: inspected.output_dropped_reason,
        })
    }

    /// The session, checked for ownership (for watching).
    pub fn watchable(&self, caller: &ClientId, session_id: &str) -> Result<Arc<Session>, Status> {
        self.session_for(session_id, caller)
    }

    /// ListSessions.
    pub async fn list(&self, caller: &ClientId) -> Result<Vec<pb::SessionSummary>, Status> {
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .map_err(|_| Status::internal("sessions lock"))?
            .values()
            .filter(|s| s.row.owner_corp == caller.corp && s.row.owner_account == caller.account)
            .cloned()
            .collect();
        let mut summaries = Vec::new();
        for session in sessions {
            let live = session.live.lock().await;
            summaries.push(pb::SessionSummary {
                session_id: session.id().to_owned(),
                env_type: session.row.env_type.clone(),
                state: live
                    .ended
                    .as_ref()
                    .map_or_else(|| "running".to_owned(), |reason| format!("ended: {reason}")),
                tasks: session.tasks.lock().map(|t| t.len() as u32).unwrap_or(0),
                charged_total: Some(common::Money {
                    currency: session.row.currency.clone(),
                    amount_minor: live.billing.charged_minor,
                }),
                created_at_unix_ms: session.row.created_at_ms,
                order_id: session.row.order_id.clone(),
                corp: session.row.order_corp.clone(),
            });
        }
        summaries.sort_by_key(|s| s.created_at_unix_ms);
        Ok(summaries)
    }

    /// Loads stored sessions after a start: live ones whose domains still exist resume metering
    /// (nothing is lost: task managers report cumulative usage); the others are ended and
    /// settled; pending charges are resent.
    pub async fn recover(self: &Arc<Self>) -> anyhow::Result<()> {
        let rows = {
            let store = Arc::clone(&self.store);
            tokio::task::spawn_blocking(move || {
                store
                    .lock()
                    .map_err(|_| anyhow::anyhow!("store poisoned"))?
                    .sessions()
            })
            .await??
        };
        for row in rows {
            if row.ended_reason.is_some() && row.closed {
                continue;
            }
            let (Some(manager), Some(corp)) = (
                self.managers.get(&row.env_type),
                self.corps.get(&row.order_corp),
            ) else {
                tracing::warn!(session = %row.id, "cannot recover: no task manager for {} or no corp {}", row.env_type, row.order_corp);
                continue;
            };
            let tasks = {
                let store = Arc::clone(&self.store);
                let id = row.id.clone();
                tokio::task::spawn_blocking(move || {
                    store
                        .lock()
                        .map_err(|_| anyhow::anyhow!("store poisoned"))?
                        .tasks(&id)
                })
                .await??
            };
            let live = row.ended_reason.is_none();
            let (cpu, memory, net) = (row.cpu_msps, row.memory_mb, row.net_kbps);
            let session = Arc::new(Session::new(
                row,
                Arc::clone(&manager.handle),
                corp.clone(),
                tasks,
            ));
            self.sessions
                .lock()
                .map_err(|_| anyhow::anyhow!("sessions lock"))?
                .insert(session.id().to_owned(), Arc::clone(&session));
            if live {
                if let Ok(mut reserved) = self.reserved.lock() {
                    reserved.cpu_msps += cpu;
                    reserved.memory_mb += memory;
                    reserved.net_kbps += net;
                    reserved.sessions += 1;
                }
                tracing::info!(session = %session.id(), "resuming a session after restart");
                self.spawn_meter(session);
            } else {
                // Ended but not settled: finish the settlement.
                let reason = session.row.ended_reason.clone().unwrap_or_default();
                if let Err(status) = self.end_session(&session, &reason).await {
                    tracing::warn!(session = %session.id(), "settling after restart: {}", status.message());
                }
            }
        }
        Ok(())
    }

    /// Keeps each corp's revocation list fresh, so a client whose certificate its corp revoked
    /// is refused here too (within `period`).
    pub fn spawn_revocation_refresh(self: &Arc<Self>, period: std::time::Duration) {
        let server = Arc::clone(self);
        tokio::spawn(async move {
            let mut stopping = server.stopping.subscribe();
            loop {
                for (corp_id, corp) in &server.corps {
                    match corp
                        .client
                        .clone()
                        .get_trust_info(corp::GetTrustInfoRequest {})
                        .await
                    {
                        Ok(info) => server
                            .trusted
                            .set_revoked(corp_id, info.into_inner().revoked_serials),
                        Err(status) => {
                            tracing::warn!(corp = %corp_id, "cannot refresh revocations: {}", status.message())
                        }
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    _ = stopping.changed() => break,
                }
            }
        });
    }

    /// Stops metering (the server is stopping; sessions stay as they are for the next start).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}
