//! The gRPC services: thin translators from protobuf messages into operations on the corp's
//! state machine (run by the writer) and back. No business rule lives here.

use crate::ca::certificate_serial;
use crate::core::{
    AUDIT_PAGE_CHARGES_MAX, AuditPage, ClientRegistration, OrderSummary, ServerRegistration,
};
use crate::error::CorpError;
use crate::model::{ChargeOutcome, MachineSpec, OrderState, Privacy};
use crate::writer::Writer;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use xeno_schemas::documents::{Currency, Money};
use xeno_schemas::proto::common::v1 as common;
use xeno_schemas::proto::corp::v1 as pb;

/// Largest request the corp accepts: documents are at most 64 KiB; CSRs at most 16 KiB.
pub const MESSAGE_BYTES_MAX: usize = 256 * 1024;

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    crate::model::unix_ms(time::OffsetDateTime::now_utc())
}

/// The serial number of the caller's TLS client certificate.
pub fn caller_serial<T>(request: &Request<T>) -> Result<String, Status> {
    let certificates = request.peer_certs().ok_or_else(|| {
        Status::unauthenticated("a client certificate issued by this corp is required")
    })?;
    let leaf = certificates
        .first()
        .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
    certificate_serial(leaf.as_ref())
        .ok_or_else(|| Status::unauthenticated("the client certificate is unreadable"))
}

/// A protobuf amount as money, naming the field when it is wrong.
pub fn money_from(field: &str, money: Option<common::Money>) -> Result<Money, Status> {
    let money = money.ok_or_else(|| Status::invalid_argument(format!("{field} is required")))?;
    let currency: Currency = money.currency.parse().map_err(|message: String| {
        Status::invalid_argument(format!("{field}.currency: {message}"))
    })?;
    Ok(Money {
        currency,
        minor: money.amount_minor,
    })
}

/// Money as protobuf.
pub fn money_to(money: Money) -> common::Money {
    common::Money {
        currency: money.currency.to_string(),
        amount_minor: money.minor,
    }
}

fn state_to(state: OrderState) -> i32 {
    match state {
        OrderState::Issued => pb::OrderState::Issued as i32,
        OrderState::Bound => pb::OrderState::Bound as i32,
        OrderState::Closed => pb::OrderState::Closed as i32,
    }
}

fn outcome_to(outcome: ChargeOutcome) -> i32 {
    match outcome {
        ChargeOutcome::Charged => pb::ChargeOutcome::Charged as i32,
        ChargeOutcome::RefusedInsufficient => pb::ChargeOutcome::RefusedInsufficient as i32,
    }
}

fn summary_to(summary: OrderSummary) -> pb::OrderSummary {
    pb::OrderSummary {
        order_id: summary.order_id,
        state: state_to(summary.state),
        amount: Some(money_to(summary.amount)),
        charged: Some(money_to(summary.charged)),
        bound_server_id: summary.bound_server.unwrap_or_default(),
        expires_at_unix_ms: summary.expires_at_ms,
    }
}

/// The XenoCorp service.
pub struct CorpService {
    writer: Writer,
    stopping: tokio::sync::watch::Receiver<bool>,
}

impl CorpService {
    /// A service submitting to `writer`. When `stopping` turns true, charge streams stop
    /// reading, answer what they hold and end, so that a graceful shutdown is not held open by
    /// servers' long-lived streams.
    pub fn new(writer: Writer, stopping: tokio::sync::watch::Receiver<bool>) -> Self {
        CorpService { writer, stopping }
    }
}

fn status(error: CorpError) -> Status {
    error.into()
}

/// Most charges unanswered on one `StreamCharges` stream (as the protocol documents).
pub const STREAM_CHARGES_IN_FLIGHT_MAX: usize = 1024;

/// The answers on a `StreamCharges` stream.
pub type ChargeReplies = ReceiverStream<Result<pb::ChargeStreamReply, Status>>;

/// One charge, from either the unary call or a stream: parsed here, decided and made durable
/// by the writer.
async fn charge(
    writer: &Writer,
    caller: String,
    request: pb::ChargeRequest,
) -> Result<pb::ChargeResponse, Status> {
    let amount = money_from("amount", request.amount)?;
    let usage = crate::core::UsageAnnotation::parse(&request.usage_record_xml).map_err(status)?;
    let now = now_ms();
    let answer = writer
        .submit(move |corp, _, effects| {
            corp.charge(
                now,
                &caller,
                &request.order_id,
                request.sequence,
                amount,
                usage,
                effects,
            )
        })
        .await
        .map_err(status)?;
    Ok(pb::ChargeResponse {
        outcome: outcome_to(answer.outcome),
        charged_total: Some(money_to(answer.charged_total)),
        remaining: Some(money_to(answer.remaining)),
        replayed: answer.replayed,
    })
}

#[tonic::async_trait]
impl pb::xeno_corp_server::XenoCorp for CorpService {
    async fn register_client(
        &self,
        request: Request<pb::RegisterClientRequest>,
    ) -> Result<Response<pb::RegisterClientResponse>, Status> {
        let request = request.into_inner();
        let privacy = match pb::PrivacyMode::try_from(request.privacy) {
            Ok(pb::PrivacyMode::Pseudonymous) => Privacy::Pseudonymous,
            Ok(pb::PrivacyMode::Identified | pb::PrivacyMode::Unspecified) => Privacy::Identified,
            Err(_) => {
                return Err(Status::invalid_argument(format!(
                    "privacy: unknown mode {}",
                    request.privacy
                )));
            }
        };
        let registration = ClientRegistration {
            name: request.name,
            address: request.address,
            charging_details: request.charging_details,
            privacy,
            csr_pem: request.csr_pem,
        };
        let now = now_ms();
        let registered = self
            .writer
            .submit(move |corp, _, effects| corp.register_client(now, registration, effects))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RegisterClientResponse {
            account_id: registered.account_id,
            certificate_pem: registered.certificate_pem,
            ca_certificate_pem: registered.ca_certificate_pem,
        }))
    }

    async fn register_server(
        &self,
        request: Request<pb::RegisterServerRequest>,
    ) -> Result<Response<pb::RegisterServerResponse>, Status> {
        let request = request.into_inner();
        let machine = request.machine.unwrap_or_default();
        let registration = ServerRegistration {
            owner_name: request.owner_name,
            owner_address: request.owner_address,
            payout_details: request.payout_details,
            machine: MachineSpec {
                architecture: machine.architecture,
                cpu_model: machine.cpu_model,
                cpu_cores: machine.cpu_cores,
                memory_mb: machine.memory_mb,
                network_mbps: machine.network_mbps,
                xis_node: machine.xis_node,
                endpoint: request.endpoint,
            },
            csr_pem: request.csr_pem,
        };
        let now = now_ms();
        let (registered, corp_id) = self
            .writer
            .submit(move |corp, _, effects| {
                let registered = corp.register_server(now, registration, effects)?;
                Ok((registered, corp.corp_id().to_owned()))
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RegisterServerResponse {
            server_id: registered.account_id,
            certificate_pem: registered.certificate_pem,
            ca_certificate_pem: registered.ca_certificate_pem,
            corp_id,
        }))
    }

    async fn create_purchase_order(
        &self,
        request: Request<pb::CreatePurchaseOrderRequest>,
    ) -> Result<Response<pb::CreatePurchaseOrderResponse>, Status> {
        let caller = caller_serial(&request)?;
        let request = request.into_inner();
        let amount = money_from("amount", request.amount)?;
        let now = now_ms();
        let (xml, available) = self
            .writer
            .submit(move |corp, _, effects| {
                corp.create_order(now, &caller, amount, request.lifetime_seconds, effects)
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::CreatePurchaseOrderResponse {
            purchase_order_xml: xml,
            available: Some(money_to(available)),
        }))
    }

    async fn validate_purchase_order(
        &self,
        request: Request<pb::ValidatePurchaseOrderRequest>,
    ) -> Result<Response<pb::ValidatePurchaseOrderResponse>, Status> {
        let caller = caller_serial(&request)?;
        let request = request.into_inner();
        let now = now_ms();
        let validation = self
            .writer
            .submit(move |corp, _, effects| {
                corp.validate(
                    now,
                    &caller,
                    &request.purchase_order_xml,
                    &request.session_id,
                    &request.requirements_xml,
                    effects,
                )
            })
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ValidatePurchaseOrderResponse {
            order_id: validation.order_id,
            bound_server_id: validation.bound_server,
            limit: Some(money_to(validation.limit)),
            charged: Some(money_to(validation.charged)),
            expires_at_unix_ms: validation.expires_at_ms,
            client: validation.client,
            corp_time_unix_ms: now_ms(),
        }))
    }

    async fn charge_from_purchase_order(
        &self,
        request: Request<pb::ChargeRequest>,
    ) -> Result<Response<pb::ChargeResponse>, Status> {
        let caller = caller_serial(&request)?;
        charge(&self.writer, caller, request.into_inner())
            .await
            .map(Response::new)
    }

    type StreamChargesStream = ChargeReplies;

    async fn stream_charges(
        &self,
        request: Request<tonic::Streaming<pb::ChargeRequest>>,
    ) -> Result<Response<ChargeReplies>, Status> {
        let caller = caller_serial(&request)?;
        let mut incoming = request.into_inner();
        let writer = self.writer.clone();
        let mut stopping = self.stopping.clone();
        let (replies, answers) = tokio::sync::mpsc::channel(STREAM_CHARGES_IN_FLIGHT_MAX);
        tokio::spawn(async move {
            let mut pending = FuturesUnordered::new();
            let mut reading = !*stopping.borrow_and_update();
            // Set when the server sent a message that could not be decoded: the stream ends
            // with INVALID_ARGUMENT once what is in flight is answered.
            let mut refused: Option<Status> = None;
            while reading || !pending.is_empty() {
                tokio::select! {
                    message = incoming.message(),
                        if reading && pending.len() < STREAM_CHARGES_IN_FLIGHT_MAX =>
                    {
                        match message {
                            Ok(Some(request)) => {
                                let writer = writer.clone();
                                let caller = caller.clone();
                                pending.push(async move {
                                    let order_id = request.order_id.clone();
                                    let sequence = request.sequence;
                                    let result = match charge(&writer, caller, request).await {
                                        Ok(answer) => pb::charge_stream_reply::Result::Answer(answer),
                                        Err(status) => {
                                            pb::charge_stream_reply::Result::Refusal(pb::ChargeRefusal {
                                                code: status.code() as i32,
                                                message: status.message().to_owned(),
                                            })
                                        }
                                    };
                                    pb::ChargeStreamReply {
                                        order_id,
                                        sequence,
                                        result: Some(result),
                                    }
                                });
                            }
                            // The server finished sending (or its stream broke): answer what is
                            // in flight, then end.
                            Ok(None) => reading = false,
                            Err(status) => {
                                reading = false;
                                refused = xeno_daemon::grpc::undecodable_request(&status);
                            }
                        }
                    }
                    // The only change is to "stopping" (or the daemon dropping the signal).
                    _ = stopping.changed(), if reading => reading = false,
                    Some(reply) = pending.next(), if !pending.is_empty() => {
                        if replies.send(Ok(reply)).await.is_err() {
                            // Nobody is listening; charges in flight still commit, unanswered,
                            // and a retry of them replays.
                            return;
                        }
                    }
                }
            }
            if let Some(status) = refused {
                let _ = replies.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(answers)))
    }

    async fn close_purchase_order(
        &self,
        request: Request<pb::ClosePurchaseOrderRequest>,
    ) -> Result<Response<pb::ClosePurchaseOrderResponse>, Status> {
        let caller = caller_serial(&request)?;
        let order_id = request.into_inner().order_id;
        let now = now_ms();
        let (settlement, currency) = self
            .writer
            .submit(move |corp, _, effects| {
                let settlement = corp.close(now, &caller, &order_id, effects)?;
                let currency = corp.order_currency(&order_id)?;
                Ok((settlement, currency))
            })
            .await
            .map_err(status)?;
        let money = |minor| Some(money_to(Money { currency, minor }));
        Ok(Response::new(pb::ClosePurchaseOrderResponse {
            spent: money(settlement.spent),
            returned: money(settlement.returned),
            payout: money(settlement.payout),
            commission: money(settlement.commission),
        }))
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let caller = caller_serial(&request)?;
        let view = self
            .writer
            .submit(move |corp, _, _| corp.account(&caller))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetAccountResponse {
            account_id: view.account_id,
            role: view.role,
            balances: view
                .balances
                .into_iter()
                .map(|(currency, available, reserved)| pb::Balance {
                    available: Some(money_to(Money {
                        currency,
                        minor: available,
                    })),
                    reserved: Some(money_to(Money {
                        currency,
                        minor: reserved,
                    })),
                })
                .collect(),
            orders: view.orders.into_iter().map(summary_to).collect(),
        }))
    }

    async fn audit_order(
        &self,
        request: Request<pb::AuditOrderRequest>,
    ) -> Result<Response<pb::AuditOrderResponse>, Status> {
        let caller = caller_serial(&request)?;
        let request = request.into_inner();
        let limit = match usize::try_from(request.limit) {
            Ok(0) | Err(_) => AUDIT_PAGE_CHARGES_MAX,
            Ok(limit) => limit,
        };
        let audit = self
            .writer
            .submit(move |corp, store, pending| {
                let page = AuditPage {
                    order_id: &request.order_id,
                    after_sequence: request.after_sequence,
                    limit,
                };
                corp.audit_order(store, pending, &caller, page)
            })
            .await
            .map_err(status)?;
        let currency = audit.order.amount.currency;
        Ok(Response::new(pb::AuditOrderResponse {
            order: Some(summary_to(audit.order)),
            client_identity: audit.client_identity,
            charges: audit
                .charges
                .into_iter()
                .map(|charge| pb::ChargeEntry {
                    sequence: charge.record.sequence,
                    amount: Some(money_to(Money {
                        currency,
                        minor: charge.record.amount_minor,
                    })),
                    outcome: outcome_to(charge.record.outcome),
                    usage_record_xml: charge.usage_xml,
                    recorded_at_unix_ms: charge.record.recorded_at_ms,
                })
                .collect(),
            purchase_order_xml: audit.purchase_order_xml,
            next_after_sequence: audit.next_after_sequence,
        }))
    }

    async fn audit_server(
        &self,
        request: Request<pb::AuditServerRequest>,
    ) -> Result<Response<pb::AuditServerResponse>, Status> {
        let caller = caller_serial(&request)?;
        let server_id = request.into_inner().server_id;
        let orders = self
            .writer
            .submit(move |corp, _, _| corp.audit_server(&caller, &server_id))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::AuditServerResponse {
            orders: orders.into_iter().map(summary_to).collect(),
        }))
    }

    async fn get_trust_info(
        &self,
        _request: Request<pb::GetTrustInfoRequest>,
    ) -> Result<Response<pb::GetTrustInfoResponse>, Status> {
        let (corp_id, (ca, revoked)) = self
            .writer
            .submit(|corp, _, _| Ok((corp.corp_id().to_owned(), corp.trust_info())))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GetTrustInfoResponse {
            corp_id,
            ca_certificate_pem: ca,
            revoked_serials: revoked,
        }))
    }
}

/// The operator's service (served on the admin Unix socket only).
pub struct AdminService {
    writer: Writer,
}

impl AdminService {
    /// A service submitting to `writer`.
    pub fn new(writer: Writer) -> Self {
        AdminService { writer }
    }
}

#[tonic::async_trait]
impl pb::corp_admin_server::CorpAdmin for AdminService {
    async fn grant_auditor(
        &self,
        request: Request<pb::GrantAuditorRequest>,
    ) -> Result<Response<pb::GrantAuditorResponse>, Status> {
        let account_id = request.into_inner().account_id;
        self.writer
            .submit(move |corp, _, effects| corp.grant_auditor(&account_id, effects))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::GrantAuditorResponse {}))
    }

    async fn revoke(
        &self,
        request: Request<pb::RevokeRequest>,
    ) -> Result<Response<pb::RevokeResponse>, Status> {
        let account_id = request.into_inner().account_id;
        let now = now_ms();
        let serials = self
            .writer
            .submit(move |corp, _, effects| corp.revoke(now, &account_id, effects))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::RevokeResponse {
            revoked_serials: serials,
        }))
    }

    async fn deposit(
        &self,
        request: Request<pb::DepositRequest>,
    ) -> Result<Response<pb::DepositResponse>, Status> {
        let request = request.into_inner();
        let amount = money_from("amount", request.amount)?;
        let now = now_ms();
        let available = self
            .writer
            .submit(move |corp, _, effects| corp.deposit(now, &request.account_id, amount, effects))
            .await
            .map_err(status)?;
        Ok(Response::new(pb::DepositResponse {
            available: Some(money_to(available)),
        }))
    }

    async fn check_invariants(
        &self,
        _request: Request<pb::CheckInvariantsRequest>,
    ) -> Result<Response<pb::CheckInvariantsResponse>, Status> {
        let response = self
            .writer
            .submit(|corp, store, _| {
                let mut violations = corp.violations();
                let audit = store.audit().map_err(|error| {
                    CorpError::Unavailable(format!("cannot audit the store: {error:#}"))
                })?;
                violations.extend(audit.violations);
                let (accounts, orders, charges) = corp.counts();
                Ok(pb::CheckInvariantsResponse {
                    violations,
                    accounts,
                    orders,
                    charges,
                    transfers: audit.transfers,
                })
            })
            .await
            .map_err(status)?;
        Ok(Response::new(response))
    }
}
