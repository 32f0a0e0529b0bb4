//! The environment manager's core: admission, sessions, deployment, metering loops and
//! settlement, one stage per file. The gRPC service (`crate::service`) only translates to and
//! from these calls, and the core's refusals are [`ServerError`]s.
//!
//! - `admission.rs`: capacity reserved for sessions, and what is free;
//! - `create.rs`: CreateSession, from the documents to a validated order and a domain;
//! - `deploy.rs`: DeployTask and TaskStatus;
//! - `settle.rs`: each session's meter, its end, the final charge and the order's close;
//! - `recovery.rs`: resuming after a restart, orphaned validations, revocation lists.

use crate::config::Config;
use crate::error::ServerError;
use crate::identity::{ClientId, TrustedCorps};
use crate::pricing::PriceSheet;
use crate::session::{CorpLink, Session};
use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::taskmanager::v1 as tm;
use xeno_taskmgr_kit::DynTaskManager;

mod admission;
mod create;
mod deploy;
mod recovery;
mod settle;

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

    fn session_for(&self, id: &str, caller: &ClientId) -> Result<Arc<Session>, ServerError> {
        let session = self
            .sessions
            .lock()
            .map_err(|_| ServerError::internal("sessions lock"))?
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
            _ => Err(ServerError::not_found(format!("no session {id:?}"))),
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Store) -> anyhow::Result<T> + Send + 'static,
    ) -> Result<T, ServerError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || {
            let mut store = store
                .lock()
                .map_err(|_| anyhow::anyhow!("store poisoned"))?;
            work(&mut store)
        })
        .await
        .map_err(|error| ServerError::internal(error.to_string()))?
        .map_err(|error| ServerError::store(&error))
    }

    /// The session, checked for ownership (for watching).
    pub fn watchable(
        &self,
        caller: &ClientId,
        session_id: &str,
    ) -> Result<Arc<Session>, ServerError> {
        self.session_for(session_id, caller)
    }

    /// ListSessions.
    pub async fn list(&self, caller: &ClientId) -> Result<Vec<pb::SessionSummary>, ServerError> {
        let sessions: Vec<Arc<Session>> = self
            .sessions
            .lock()
            .map_err(|_| ServerError::internal("sessions lock"))?
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

    /// Stops metering (the server is stopping; sessions stay as they are for the next start).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }
}
