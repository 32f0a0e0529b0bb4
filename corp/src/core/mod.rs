//! The corp's state machine: every operation that reads or changes accounts, orders and money.
//! It runs on one thread (the writer, see `crate::writer`), so operations are totally ordered and
//! need no locks; each either fails having changed nothing, or succeeds and appends the
//! [`Effect`]s that persist what it changed. Time comes in as an argument, so it is
//! deterministic.

use crate::ca::{
    CertificateAuthority, CertificateRequest, CertificateRole, Csr, random_serial_hex,
};
use crate::config::{Config, Policy};
use crate::error::{CorpError, CorpResult};
use crate::ledger::{Book, Ledger, Movement, TransferKind};
use crate::model::{
    Account, AccountId, ChargeOutcome, ChargeRecord, Effect, MachineSpec, Order, OrderId, OrderRow,
    OrderState, Privacy, Role, Settlement, from_unix_ms, unix_ms,
};
use crate::restrictions;
use crate::store::Store;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use time::Duration;
use xeno_schemas::Document;
use xeno_schemas::documents::common::AMOUNT_MINOR_MAX;
use xeno_schemas::documents::{
    Currency, EnvironmentalRequirements, IssuedOrder, Money, PurchaseOrder, Restrictions,
    UsageRecord, key_fingerprint,
};
use xeno_schemas::identity::Party;
use xeno_schemas::signing::verify;

mod accounts;
mod audit;
mod charges;
mod invariants;
mod orders;

pub use accounts::{AccountView, ClientRegistration, ServerRegistration};
pub use audit::{AuditPage, AuditedCharge, OrderAudit};
#[cfg(test)]
pub use charges::ChargeAnswer;
pub use charges::UsageAnnotation;
use charges::usage_records;
pub use orders::OrderSummary;
#[cfg(test)]
pub use orders::Validation;

/// Longest name, address or details field accepted at registration, in characters.
pub const FIELD_CHARS_MAX: usize = 1024;
/// Most orders listed by an account query.
pub const ACCOUNT_ORDERS_MAX: usize = 100;

/// Everything the corp knows, in memory; the store holds the durable copy.
pub struct Corp {
    corp_id: String,
    policy: Policy,
    currencies: Vec<Currency>,
    initial_credit: Money,
    ca: Arc<CertificateAuthority>,
    accounts: HashMap<AccountId, Account>,
    by_serial: HashMap<String, AccountId>,
    by_key: HashMap<String, AccountId>,
    revoked: HashSet<String>,
    orders: HashMap<OrderId, Order>,
    /// The order funding each (server, session) ever validated: one session, one order.
    funded_sessions: HashMap<(AccountId, String), OrderId>,
    ledger: Ledger,
    next_client: u64,
    next_order: u64,
    next_charge: u64,
}

/// Everything loaded from a store at start-up.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// Accounts.
    pub accounts: Vec<Account>,
    /// Orders (their rows).
    pub orders: Vec<OrderRow>,
    /// Charges, by order.
    pub charges: Vec<(OrderId, ChargeRecord)>,
    /// Balances by book key.
    pub balances: HashMap<String, (Currency, i64)>,
    /// Revoked serials.
    pub revoked: Vec<String>,
    /// Counters.
    pub counters: HashMap<String, u64>,
}

/// Counter names.
pub const COUNTER_CLIENT: &str = "next_client";
/// Counter names.
pub const COUNTER_ORDER: &str = "next_order";
/// Counter names.
pub const COUNTER_TRANSFER: &str = "next_transfer";
/// Counter names.
pub const COUNTER_CHARGE: &str = "next_charge";

/// Most charges on one page of an order's audit.
pub const AUDIT_PAGE_CHARGES_MAX: usize = 500;
/// Most usage-record bytes on one page of an order's audit (a page always holds at least one
/// charge).
pub const AUDIT_PAGE_BYTES_MAX: usize = 512 * 1024;

fn invalid(message: impl Into<String>) -> CorpError {
    CorpError::InvalidArgument(message.into())
}

fn denied(message: impl Into<String>) -> CorpError {
    CorpError::PermissionDenied(message.into())
}

fn check_field(name: &str, value: &str, required: bool) -> CorpResult<()> {
    if required && value.trim().is_empty() {
        return Err(invalid(format!("{name} is required")));
    }
    if value.chars().count() > FIELD_CHARS_MAX {
        return Err(invalid(format!(
            "{name} is longer than {FIELD_CHARS_MAX} characters"
        )));
    }
    if let Some(c) = xeno_schemas::text::unsafe_char(value) {
        return Err(invalid(format!(
            "{name} contains the character U+{:04X}, a control or bidirectional formatting character, which could disguise the text around it",
            u32::from(c)
        )));
    }
    Ok(())
}

/// `host:port`, `[v6]:port` or a URL's authority, lowercased, to compare servers' claims; None
/// if it names no host.
fn normalized_endpoint(endpoint: &str) -> Option<String> {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next()?.to_ascii_lowercase();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split_once(']').map(|(host, _)| host)?,
        None => authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(host, _)| host),
    };
    (!host.is_empty()).then_some(authority)
}

impl Corp {
    /// The corp from its configuration, CA and stored state.
    pub fn new(
        config: &Config,
        ca: Arc<CertificateAuthority>,
        snapshot: Snapshot,
    ) -> anyhow::Result<Corp> {
        let currencies = config
            .policy
            .currencies
            .iter()
            .map(|c| c.parse().map_err(anyhow::Error::msg))
            .collect::<anyhow::Result<_>>()?;
        let credit_currency: Currency = config
            .policy
            .credit_currency
            .parse()
            .map_err(anyhow::Error::msg)?;
        let mut corp = Corp {
            corp_id: config.corp_id.clone(),
            policy: config.policy.clone(),
            currencies,
            initial_credit: Money {
                currency: credit_currency,
                minor: config.initial_credit_minor()?,
            },
            ca,
            accounts: HashMap::new(),
            by_serial: HashMap::new(),
            by_key: HashMap::new(),
            revoked: snapshot.revoked.into_iter().collect(),
            orders: HashMap::new(),
            funded_sessions: HashMap::new(),
            ledger: Ledger::from_parts(
                snapshot.balances,
                snapshot
                    .counters
                    .get(COUNTER_TRANSFER)
                    .copied()
                    .unwrap_or(0),
            ),
            next_client: snapshot.counters.get(COUNTER_CLIENT).copied().unwrap_or(0),
            next_order: snapshot.counters.get(COUNTER_ORDER).copied().unwrap_or(0),
            next_charge: snapshot.counters.get(COUNTER_CHARGE).copied().unwrap_or(0),
        };
        for account in snapshot.accounts {
            corp.index_account(account);
        }
        let mut charges: HashMap<OrderId, BTreeMap<u64, ChargeRecord>> = HashMap::new();
        for (order_id, record) in snapshot.charges {
            charges
                .entry(order_id)
                .or_default()
                .insert(record.sequence, record);
        }
        for row in snapshot.orders {
            let charges = charges.remove(&row.order_id).unwrap_or_default();
            let charged_minor = charges
                .values()
                .filter(|charge| charge.outcome == ChargeOutcome::Charged)
                .map(|charge| charge.amount_minor)
                .sum();
            let document = PurchaseOrder::parse(row.document_xml.as_bytes()).map_err(|error| {
                anyhow::anyhow!("stored order {} is unreadable: {error}", row.order_id)
            })?;
            let order = Order {
                issued: document.issued,
                document_xml: row.document_xml,
                state: row.state,
                bound_server: row.bound_server,
                bound_session: row.bound_session,
                validated_xml: row.validated_xml,
                limit_minor: row.limit_minor,
                effective_expiry_ms: row.effective_expiry_ms,
                charged_minor,
                settlement: row.settlement,
                charges,
            };
            if let (Some(server), Some(session)) = (&order.bound_server, &order.bound_session) {
                corp.funded_sessions
                    .insert((server.clone(), session.clone()), row.order_id.clone());
            }
            corp.orders.insert(row.order_id, order);
        }
        Ok(corp)
    }

    fn index_account(&mut self, account: Account) {
        for serial in &account.serials {
            self.by_serial.insert(serial.clone(), account.id.clone());
        }
        self.by_key
            .insert(key_fingerprint(&account.public_key_der), account.id.clone());
        self.accounts.insert(account.id.clone(), account);
    }

    fn certificate_lifetime(&self) -> Duration {
        Duration::days(i64::try_from(self.policy.certificate_lifetime_days).unwrap_or(365))
    }

    /// This corp's id.
    pub fn corp_id(&self) -> &str {
        &self.corp_id
    }

    /// The account holding the certificate with this serial, if it is valid.
    fn caller(&self, serial: &str) -> CorpResult<&Account> {
        if self.revoked.contains(serial) {
            return Err(CorpError::Unauthenticated(
                "this certificate has been revoked".to_owned(),
            ));
        }
        let account = self
            .by_serial
            .get(serial)
            .and_then(|id| self.accounts.get(id))
            .ok_or_else(|| {
                CorpError::Unauthenticated(
                    "this certificate was not issued to an account of this corp".to_owned(),
                )
            })?;
        if account.revoked {
            return Err(CorpError::Unauthenticated(
                "this account's credentials have been revoked".to_owned(),
            ));
        }
        Ok(account)
    }

    fn caller_with_role(&self, serial: &str, role: Role, what: &str) -> CorpResult<&Account> {
        let account = self.caller(serial)?;
        if account.role != role {
            return Err(denied(format!(
                "only {} accounts may {what}",
                role.as_str()
            )));
        }
        Ok(account)
    }

    fn order(&self, order_id: &str) -> CorpResult<&Order> {
        self.orders.get(order_id).ok_or_else(|| {
            CorpError::NotFound(format!("no order {order_id:?} at {}", self.corp_id))
        })
    }

    fn check_money(&self, amount: &Money) -> CorpResult<()> {
        if !self.currencies.contains(&amount.currency) {
            let accepted: Vec<String> = self.currencies.iter().map(ToString::to_string).collect();
            return Err(invalid(format!(
                "currency {} is not accepted here (accepted: {})",
                amount.currency,
                accepted.join(", ")
            )));
        }
        if amount.minor > AMOUNT_MINOR_MAX {
            return Err(invalid(
                "amount is above the largest amount a document can carry",
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn transfer(
        &mut self,
        from: &Book,
        to: &Book,
        money: Money,
        kind: TransferKind,
        order: Option<&str>,
        sequence: Option<u64>,
        now_ms: i64,
        effects: &mut Vec<Effect>,
    ) {
        let movement = Movement {
            from,
            to,
            currency: money.currency,
            amount: money.minor,
            kind,
            order_id: order,
            sequence,
        };
        self.ledger.transfer(movement, now_ms, effects);
        effects.push(Effect::Counter {
            name: COUNTER_TRANSFER,
            value: self.ledger.next_transfer(),
        });
    }

    fn add_account(&mut self, account: Account, effects: &mut Vec<Effect>) {
        effects.push(Effect::Account(account.clone()));
        self.index_account(account);
    }

    /// The CA certificate and revoked serials.
    pub fn trust_info(&self) -> (String, Vec<String>) {
        let mut revoked: Vec<String> = self.revoked.iter().cloned().collect();
        revoked.sort();
        (self.ca.certificate_pem().to_owned(), revoked)
    }

    /// An order's currency.
    pub fn order_currency(&self, order_id: &str) -> CorpResult<Currency> {
        Ok(self.order(order_id)?.currency())
    }
}

#[cfg(test)]
mod tests;
