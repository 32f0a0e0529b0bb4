//! The corp's records: accounts, purchase orders, charges, settlements, and the effects that
//! persist changes to them.

use crate::ledger::Transfer;
use std::collections::BTreeMap;
use xeno_schemas::documents::{Currency, IssuedOrder, Money};

/// An account id: `corp-a:c-17` for clients; a server's id (the SHA-256 fingerprint of its key)
/// for servers.
pub type AccountId = String;
/// An order id: `corp-a:po-42`.
pub type OrderId = String;

/// What kind of party an account belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Buys purchase orders and runs sessions.
    Client,
    /// Hosts sessions and is paid for them.
    Server,
}

impl Role {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Server => "server",
        }
    }
}

/// How much a client's certificate reveals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privacy {
    /// The certificate names the client.
    Identified,
    /// The certificate carries only the account id.
    Pseudonymous,
}

impl Privacy {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Privacy::Identified => "identified",
            Privacy::Pseudonymous => "pseudonymous",
        }
    }
}

/// A XenoServer machine as registered.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MachineSpec {
    /// Architecture family.
    pub architecture: String,
    /// CPU model.
    pub cpu_model: String,
    /// Cores.
    pub cpu_cores: u32,
    /// Memory, MB.
    pub memory_mb: u64,
    /// Network, Mbps.
    pub network_mbps: u32,
    /// The XIS node it advertises through.
    pub xis_node: String,
    /// Where clients reach it.
    pub endpoint: String,
}

/// A registered client or server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its id.
    pub id: AccountId,
    /// Client or server.
    pub role: Role,
    /// The real name (a client's, or a server operator's).
    pub name: String,
    /// Postal address.
    pub address: String,
    /// Charging details (clients) or payout details (servers); never shown back.
    pub details: String,
    /// Privacy mode (servers are always identified).
    pub privacy: Privacy,
    /// The certified key, DER SubjectPublicKeyInfo.
    pub public_key_der: Vec<u8>,
    /// Serial numbers of its certificates, lowercase hex.
    pub serials: Vec<String>,
    /// Whether the operator granted it the auditor role.
    pub auditor: bool,
    /// Whether its credentials are revoked.
    pub revoked: bool,
    /// Registration time, Unix ms.
    pub registered_at_ms: i64,
    /// For servers: the machine.
    pub machine: Option<MachineSpec>,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Issued to its client, not yet validated.
    Issued,
    /// Validated by, and bound to, one server and session.
    Bound,
    /// Settled.
    Closed,
}

impl OrderState {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Issued => "issued",
            OrderState::Bound => "bound",
            OrderState::Closed => "closed",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<OrderState> {
        [OrderState::Issued, OrderState::Bound, OrderState::Closed]
            .into_iter()
            .find(|state| state.as_str() == name)
    }
}

/// Whether a charge moved money.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChargeOutcome {
    /// Charged.
    Charged,
    /// Refused: it would have exceeded what remained.
    RefusedInsufficient,
}

impl ChargeOutcome {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeOutcome::Charged => "charged",
            ChargeOutcome::RefusedInsufficient => "refused",
        }
    }

    /// Parses a stored name.
    pub fn from_name(name: &str) -> Option<ChargeOutcome> {
        match name {
            "charged" => Some(ChargeOutcome::Charged),
            "refused" => Some(ChargeOutcome::RefusedInsufficient),
            _ => None,
        }
    }
}

/// One charge request as answered: the audit trail's entry, as the state machine keeps it. The
/// usage record itself stays in the store (about a kilobyte each, for every charge ever made,
/// it would be most of the corp's memory); its digest is enough to tell a retry from a
/// different request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRecord {
    /// The charge's number, unique in the corp: the key its usage record is stored under.
    pub id: u64,
    /// The idempotency key within the order.
    pub sequence: u64,
    /// What was asked.
    pub amount_minor: u64,
    /// What happened.
    pub outcome: ChargeOutcome,
    /// SHA-256 of the UsageRecord annotation as sent.
    pub usage_sha256: [u8; 32],
    /// Total charged on the order after this request.
    pub charged_total_after: u64,
    /// What remained after this request.
    pub remaining_after: u64,
    /// When it was recorded, Unix ms.
    pub recorded_at_ms: i64,
}

/// How an order was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    /// Charged in total.
    pub spent: u64,
    /// Returned to the client.
    pub returned: u64,
    /// Paid to the server operator.
    pub payout: u64,
    /// Kept by the corp.
    pub commission: u64,
    /// When, Unix ms.
    pub closed_at_ms: i64,
}

/// A purchase order and everything that happened to it.
#[derive(Debug, Clone)]
pub struct Order {
    /// The order as issued (the parsed `Issued` part).
    pub issued: IssuedOrder,
    /// The signed document as issued to the client.
    pub document_xml: String,
    /// Where it is in its life.
    pub state: OrderState,
    /// The server it is bound to.
    pub bound_server: Option<AccountId>,
    /// The session it funds.
    pub bound_session: Option<String>,
    /// The document as the server presented it (with the client's restrictions).
    pub validated_xml: Option<String>,
    /// The effective cap: the amount, or a lower `MaxAmount` restriction (set at validation).
    pub limit_minor: u64,
    /// The effective expiry, Unix ms (the earliest of the order's and any `NotAfter`).
    pub effective_expiry_ms: i64,
    /// Charged so far.
    pub charged_minor: u64,
    /// Set once closed.
    pub settlement: Option<Settlement>,
    /// Every charge request, by sequence number.
    pub charges: BTreeMap<u64, ChargeRecord>,
}

impl Order {
    /// The order's id.
    pub fn id(&self) -> &str {
        &self.issued.order_id
    }

    /// The order's currency.
    pub fn currency(&self) -> Currency {
        self.issued.amount.currency
    }

    /// An amount in the order's currency.
    pub fn money(&self, minor: u64) -> Money {
        Money {
            currency: self.currency(),
            minor,
        }
    }

    /// What may still be charged.
    pub fn remaining_minor(&self) -> u64 {
        self.limit_minor.saturating_sub(self.charged_minor)
    }
}

/// One change to persist. A batch of effects is written in one transaction; applying them to an
/// empty store in order rebuilds the corp's state.
#[derive(Debug, Clone)]
pub enum Effect {
    /// Insert or replace an account.
    Account(Account),
    /// Insert or replace an order's own row (not its charges, nor its charged total, which is
    /// the sum of its charges: a charge writes nothing to the order's row).
    Order(OrderRow),
    /// Insert a charge record.
    Charge {
        /// The order.
        order_id: OrderId,
        /// The record.
        record: ChargeRecord,
        /// Its usage record, to store.
        usage_xml: std::sync::Arc<str>,
    },
    /// Insert a transfer.
    Transfer(Transfer),
    /// Set a ledger book's balance.
    Balance {
        /// The book's key.
        book: String,
        /// Its currency.
        currency: Currency,
        /// The new balance.
        balance: i64,
    },
    /// Record a revoked certificate serial.
    Revocation {
        /// Lowercase hex serial.
        serial: String,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// Set a counter (next ids).
    Counter {
        /// Its name.
        name: &'static str,
        /// Its value.
        value: u64,
    },
}

/// An order's persisted fields, without its charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRow {
    /// Id.
    pub order_id: OrderId,
    /// Client account.
    pub client: AccountId,
    /// Currency.
    pub currency: Currency,
    /// Amount, minor units.
    pub amount_minor: u64,
    /// Expiry as issued, Unix ms.
    pub expires_at_ms: i64,
    /// The signed document as issued.
    pub document_xml: String,
    /// State.
    pub state: OrderState,
    /// Bound server.
    pub bound_server: Option<String>,
    /// Bound session.
    pub bound_session: Option<String>,
    /// The validated document.
    pub validated_xml: Option<String>,
    /// Effective cap.
    pub limit_minor: u64,
    /// Effective expiry.
    pub effective_expiry_ms: i64,
    /// Settlement.
    pub settlement: Option<Settlement>,
}

impl OrderRow {
    /// The row for `order`.
    pub fn of(order: &Order) -> OrderRow {
        OrderRow {
            order_id: order.issued.order_id.clone(),
            client: order.issued.client.clone(),
            currency: order.currency(),
            amount_minor: order.issued.amount.minor,
            expires_at_ms: unix_ms(order.issued.expires_at),
            document_xml: order.document_xml.clone(),
            state: order.state,
            bound_server: order.bound_server.clone(),
            bound_session: order.bound_session.clone(),
            validated_xml: order.validated_xml.clone(),
            limit_minor: order.limit_minor,
            effective_expiry_ms: order.effective_expiry_ms,
            settlement: order.settlement,
        }
    }
}

/// Unix milliseconds of an instant.
pub fn unix_ms(at: time::OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The instant of Unix milliseconds.
pub fn from_unix_ms(ms: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}
