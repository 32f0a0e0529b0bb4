//! Metering and settlement: each session's meter, and a session's end with its final charge
//! and the close of its order.

use super::Server;
use crate::error::ServerError;
use crate::identity::ClientId;
use crate::session::{Metered, Session, now_ms};
use std::sync::Arc;
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::taskmanager::v1 as tm;

impl Server {
    /// Runs a session's meter until the session ends.
    pub(super) fn spawn_meter(self: &Arc<Self>, session: Arc<Session>) {
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
                        tracing::warn!(session = %session.id(), "ending the session: {status}");
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
    ) -> Result<pb::DestroySessionResponse, ServerError> {
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
                .map_err(|error| ServerError::store(&error))?;
        }
        let returned = session
            .close_order(&self.store)
            .await
            .map_err(|error| ServerError::store(&error))?;
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
    ) -> Result<pb::DestroySessionResponse, ServerError> {
        let session = self.session_for(session_id, caller)?;
        self.end_session(&session, "destroyed by its client").await
    }
}
