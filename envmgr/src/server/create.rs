//! CreateSession: the requirements and the purchase order checked, capacity admitted, the
//! order validated with its corp, and only then a domain made and the session stored.

use super::{Manager, Server};
use crate::error::ServerError;
use crate::identity::ClientId;
use crate::pricing::{self};
use crate::session::{CorpLink, Session, now_ms};
use crate::store::{Billing, SessionRow};
use std::sync::Arc;
use xeno_schemas::Document;
use xeno_schemas::documents::{EnvVersion, EnvironmentalRequirements, PurchaseOrder};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as corp;
use xeno_schemas::proto::server::v1 as pb;
use xeno_schemas::proto::taskmanager::v1 as tm;

impl Server {
    /// Creates a session: requirements, admission, the order's validation with its corp, and
    /// only then a domain.
    pub async fn create_session(
        self: &Arc<Self>,
        caller: &ClientId,
        requirements_xml: &str,
        order_xml: &str,
    ) -> Result<pb::CreateSessionResponse, ServerError> {
        let requirements = EnvironmentalRequirements::parse(requirements_xml.as_bytes())
            .map_err(|errors| ServerError::invalid(format!("requirements: {errors}")))?;
        let order = PurchaseOrder::parse(order_xml.as_bytes())
            .map_err(|errors| ServerError::invalid(format!("purchase order: {errors}")))?;
        let basis = pricing::basis_from(&requirements.extensions).map_err(ServerError::invalid)?;
        let manager = self.managers.get(&requirements.env_type).ok_or_else(|| {
            let offered: Vec<&str> = self.managers.keys().map(String::as_str).collect();
            ServerError::unsupported(format!(
                "this server does not run {} environments (it runs {})",
                requirements.env_type,
                offered.join(", ")
            ))
        })?;
        let version = match &requirements.version {
            Some(EnvVersion::Kernel(v) | EnvVersion::Runtime(v)) => {
                if !manager.capabilities.versions.contains(v) {
                    return Err(ServerError::unsupported(format!(
                        "{} {v} is not offered here (offered: {})",
                        requirements.env_type,
                        manager.capabilities.versions.join(", ")
                    )));
                }
                v.clone()
            }
            None => String::new(),
        };
        if let Some(image) = &requirements.image {
            let offered: Vec<&str> = manager
                .capabilities
                .images
                .iter()
                .map(|image| image.name.as_str())
                .collect();
            if !offered.contains(&image.as_str()) {
                return Err(ServerError::unsupported(format!(
                    "{} image {image} is not offered here (images: {})",
                    requirements.env_type,
                    if offered.is_empty() {
                        "none".to_owned()
                    } else {
                        offered.join(", ")
                    }
                )));
            }
        }
        if requirements.ip_addresses.unwrap_or(0) > 0 {
            return Err(ServerError::unsupported(
                "this server cannot give sessions globally routable IP addresses",
            ));
        }
        let corp = self.corps.get(&order.issued.corp).ok_or_else(|| {
            ServerError::denied(format!(
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
            return Err(ServerError::denied(
                "the purchase order belongs to another client",
            ));
        }
        if order.issued.amount.currency != self.prices.currency {
            return Err(ServerError::precondition(format!(
                "this server charges in {}, the order is in {}",
                self.prices.currency, order.issued.amount.currency
            )));
        }
        if let Some(max_spend) = requirements.max_spend
            && max_spend.currency != self.prices.currency
        {
            return Err(ServerError::invalid(format!(
                "Constraints/MaxSpend is in {}, this server charges in {}",
                max_spend.currency, self.prices.currency
            )));
        }
        let defaults = &self.config.defaults;
        let cpu_msps = requirements.qos.cpu_msps.unwrap_or(defaults.cpu_msps);
        let memory_mb = requirements.qos.memory_mb.unwrap_or(defaults.memory_mb);
        let net_kbps = requirements.net_kbps.unwrap_or(defaults.net_kbps);
        if cpu_msps == 0 || memory_mb == 0 {
            return Err(ServerError::invalid(
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
    pub(super) async fn open_session(
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
    ) -> Result<pb::CreateSessionResponse, ServerError> {
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
    pub(super) async fn open_validated(
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
    ) -> Result<pb::CreateSessionResponse, ServerError> {
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
                tonic::Code::Unavailable => ServerError::unavailable(format!(
                    "the corp cannot be reached: {}",
                    status.message()
                )),
                code => ServerError::refused(
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
                ServerError::internal(format!("creating the session directory: {error}"))
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
                return Err(ServerError::refused(
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
            .map_err(|_| ServerError::internal("sessions lock"))?
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
}
