//! After a restart and in the background: stored sessions resumed or settled, orders of
//! validations whose sessions were never stored closed, corps' revocation lists refreshed.

use super::Server;
use crate::session::{CorpLink, Session};
use std::sync::Arc;
use xeno_schemas::proto::corp::v1 as corp;

impl Server {
    /// Closes an order bound to us for a session that was never made (nothing was charged),
    /// and forgets its pending validation once the corp has settled it (or says it was never
    /// bound to us). Whether it worked: an unreachable corp leaves it for the next try.
    pub(super) async fn close_orphan(
        &self,
        corp: &CorpLink,
        session_id: &str,
        order_id: &str,
    ) -> bool {
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
                    "forgetting a settled validation: {status}"
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
                    tracing::warn!(session = %session.id(), "settling after restart: {status}");
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
}
