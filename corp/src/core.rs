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

/// What a registration produced.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The account (or server) id.
    pub account_id: AccountId,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The corp's CA certificate, PEM.
    pub ca_certificate_pem: String,
}

/// A client's registration details.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    /// Real name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Charging details.
    pub charging_details: String,
    /// Privacy mode.
    pub privacy: Privacy,
    /// CSR, PEM.
    pub csr_pem: String,
}

/// A server's registration details.
#[derive(Debug, Clone)]
pub struct ServerRegistration {
    /// Operator's name.
    pub owner_name: String,
    /// Operator's address.
    pub owner_address: String,
    /// Payout details.
    pub payout_details: String,
    /// The machine (with its endpoint).
    pub machine: MachineSpec,
    /// CSR, PEM.
    pub csr_pem: String,
}

/// The answer to a validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Order id.
    pub order_id: OrderId,
    /// Bound server.
    pub bound_server: AccountId,
    /// Effective cap.
    pub limit: Money,
    /// Charged so far.
    pub charged: Money,
    /// Effective expiry, Unix ms.
    pub expires_at_ms: i64,
    /// The client, as the server may see it.
    pub client: String,
}

/// The answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeAnswer {
    /// Charged or refused.
    pub outcome: ChargeOutcome,
    /// Total charged after the request.
    pub charged_total: Money,
    /// What remains.
    pub remaining: Money,
    /// Whether this replays an earlier identical request.
    pub replayed: bool,
}

/// An order as summarised in account and audit answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSummary {
    /// Id.
    pub order_id: OrderId,
    /// State.
    pub state: OrderState,
    /// Amount.
    pub amount: Money,
    /// Charged.
    pub charged: Money,
    /// Bound server.
    pub bound_server: Option<AccountId>,
    /// Expiry, Unix ms.
    pub expires_at_ms: i64,
}

/// An account as its owner sees it.
#[derive(Debug, Clone)]
pub struct AccountView {
    /// Id.
    pub account_id: AccountId,
    /// `client`, `server` or `auditor`.
    pub role: String,
    /// Name.
    pub name: String,
    /// Per currency: (available, reserved).
    pub balances: Vec<(Currency, u64, u64)>,
    /// Recent orders, newest first.
    pub orders: Vec<OrderSummary>,
}

/// An order's audit trail.
#[derive(Debug, Clone)]
pub struct OrderAudit {
    /// The order.
    pub order: OrderSummary,
    /// The client, as the caller may see it.
    pub client_identity: String,
    /// This page of its charges, with their usage records.
    pub charges: Vec<AuditedCharge>,
    /// When more charges follow, the sequence number to continue after; 0 after the last.
    pub next_after_sequence: u64,
    /// The document as validated (or as issued).
    pub purchase_order_xml: String,
}

/// Most charges on one page of an order's audit.
pub const AUDIT_PAGE_CHARGES_MAX: usize = 500;
/// Most usage-record bytes on one page of an order's audit (a page always holds at least one
/// charge).
pub const AUDIT_PAGE_BYTES_MAX: usize = 512 * 1024;

/// Which page of which order's audit trail.
#[derive(Debug, Clone, Copy)]
pub struct AuditPage<'a> {
    /// The order.
    pub order_id: &'a str,
    /// Charges with sequence numbers above this.
    pub after_sequence: u64,
    /// At most this many (clamped to 1..=[`AUDIT_PAGE_CHARGES_MAX`]).
    pub limit: usize,
}

/// One charge in an audit.
#[derive(Debug, Clone)]
pub struct AuditedCharge {
    /// The record.
    pub record: ChargeRecord,
    /// Its usage record, as the server sent it.
    pub usage_xml: String,
}

/// A charge's usage record, parsed and checked before it reaches the state machine (parsing is
/// the costly part of a charge; doing it on the request's own thread keeps the single writer
/// thread for what must be serial).
#[derive(Debug, Clone)]
pub struct UsageAnnotation {
    /// The document as sent.
    pub xml: Arc<str>,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Its `Order`.
    pub order_id: String,
    /// Its `Sequence`.
    pub sequence: u64,
    /// Its `Charge`.
    pub charge: Money,
}

impl UsageAnnotation {
    /// Parses a UsageRecord document.
    pub fn parse(xml: &str) -> CorpResult<UsageAnnotation> {
        let record = UsageRecord::parse(xml.as_bytes())
            .map_err(|error| invalid(format!("usage record: {error}")))?;
        Ok(UsageAnnotation {
            xml: Arc::from(xml),
            sha256: Sha256::digest(xml.as_bytes()).into(),
            order_id: record.order_id,
            sequence: record.sequence,
            charge: record.charge,
        })
    }
}

/// The usage records of `charges`, from the batch in progress or else from the store.
fn usage_records<'a>(
    store: &mut dyn Store,
    pending: &[Effect],
    charges: impl Iterator<Item = &'a ChargeRecord>,
) -> CorpResult<Vec<AuditedCharge>> {
    let charges: Vec<&ChargeRecord> = charges.collect();
    let mut found: HashMap<u64, String> = pending
        .iter()
        .filter_map(|effect| match effect {
            Effect::Charge {
                record, usage_xml, ..
            } => Some((record.id, usage_xml.to_string())),
            _ => None,
        })
        .collect();
    let stored: Vec<u64> = charges
        .iter()
        .map(|charge| charge.id)
        .filter(|id| !found.contains_key(id))
        .collect();
    if !stored.is_empty() {
        found.extend(store.usage_records(&stored).map_err(|error| {
            CorpError::Unavailable(format!("cannot read the audit trail: {error:#}"))
        })?);
    }
    charges
        .into_iter()
        .map(|record| {
            let usage_xml = found.remove(&record.id).ok_or_else(|| {
                CorpError::Unavailable(format!(
                    "the usage record of charge {} is missing from the store",
                    record.id
                ))
            })?;
            Ok(AuditedCharge {
                record: record.clone(),
                usage_xml,
            })
        })
        .collect()
}

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

    /// Opens a client account and certifies its key.
    pub fn register_client(
        &mut self,
        now_ms: i64,
        registration: ClientRegistration,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Registered> {
        check_field("name", &registration.name, true)?;
        check_field("address", &registration.address, true)?;
        check_field("charging details", &registration.charging_details, true)?;
        let csr = Csr::parse(&registration.csr_pem).map_err(invalid)?;
        if self
            .by_key
            .contains_key(&key_fingerprint(csr.public_key_der()))
        {
            return Err(CorpError::AlreadyExists(
                "this key is already registered".to_owned(),
            ));
        }
        let account_id = format!("{}:c-{}", self.corp_id, self.next_client + 1);
        let serial = random_serial_hex();
        let common_name = match registration.privacy {
            Privacy::Identified => registration.name.trim().to_owned(),
            Privacy::Pseudonymous => account_id.clone(),
        };
        let issued = self
            .ca
            .issue(
                &csr,
                &CertificateRequest {
                    common_name: &common_name,
                    uris: vec![Party::client(&self.corp_id, &account_id).uri()],
                    hosts: Vec::new(),
                    role: CertificateRole::Client,
                    serial_hex: &serial,
                    lifetime: self.certificate_lifetime(),
                },
            )
            .map_err(invalid)?;
        self.next_client += 1;
        effects.push(Effect::Counter {
            name: COUNTER_CLIENT,
            value: self.next_client,
        });
        self.add_account(
            Account {
                id: account_id.clone(),
                role: Role::Client,
                name: registration.name.trim().to_owned(),
                address: registration.address,
                details: registration.charging_details,
                privacy: registration.privacy,
                public_key_der: issued.public_key_der,
                serials: vec![serial],
                auditor: false,
                revoked: false,
                registered_at_ms: now_ms,
                machine: None,
            },
            effects,
        );
        let credit = self.initial_credit;
        let funding = Book::Funding(credit.currency);
        let available = Book::Available(account_id.clone(), credit.currency);
        self.transfer(
            &funding,
            &available,
            credit,
            TransferKind::Credit,
            None,
            None,
            now_ms,
            effects,
        );
        Ok(Registered {
            account_id,
            certificate_pem: issued.certificate_pem,
            ca_certificate_pem: self.ca.certificate_pem().to_owned(),
        })
    }

    /// Registers a XenoServer and certifies its key; its id is the key's fingerprint.
    pub fn register_server(
        &mut self,
        now_ms: i64,
        registration: ServerRegistration,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Registered> {
        check_field("owner name", &registration.owner_name, true)?;
        check_field("owner address", &registration.owner_address, true)?;
        check_field("payout details", &registration.payout_details, true)?;
        let machine = &registration.machine;
        check_field("architecture", &machine.architecture, true)?;
        check_field("CPU model", &machine.cpu_model, false)?;
        check_field("XIS node", &machine.xis_node, false)?;
        check_field("endpoint", &machine.endpoint, true)?;
        if machine.cpu_cores == 0 || machine.memory_mb == 0 {
            return Err(invalid(
                "the machine must have at least one core and some memory",
            ));
        }
        let endpoint = normalized_endpoint(&machine.endpoint)
            .ok_or_else(|| invalid(format!("endpoint {:?} is not host:port", machine.endpoint)))?;
        let csr = Csr::parse(&registration.csr_pem).map_err(invalid)?;
        let server_id = key_fingerprint(csr.public_key_der());
        if self.by_key.contains_key(&server_id) {
            return Err(CorpError::AlreadyExists(format!(
                "server {server_id} is already registered"
            )));
        }
        if let Some(holder) = self.accounts.values().find(|account| {
            !account.revoked
                && account.machine.as_ref().is_some_and(|machine| {
                    normalized_endpoint(&machine.endpoint).as_deref() == Some(endpoint.as_str())
                })
        }) {
            return Err(CorpError::AlreadyExists(format!(
                "endpoint {} is already claimed by server {}",
                machine.endpoint, holder.id
            )));
        }
        let serial = random_serial_hex();
        let issued = self
            .ca
            .issue(
                &csr,
                &CertificateRequest {
                    common_name: &server_id,
                    uris: vec![Party::server(&self.corp_id, &server_id).uri()],
                    // No host names: a server is authenticated by its id, and a certificate
                    // naming hosts could pass for the corp's endpoint or another server's.
                    hosts: Vec::new(),
                    role: CertificateRole::Server,
                    serial_hex: &serial,
                    lifetime: self.certificate_lifetime(),
                },
            )
            .map_err(invalid)?;
        self.add_account(
            Account {
                id: server_id.clone(),
                role: Role::Server,
                name: registration.owner_name.trim().to_owned(),
                address: registration.owner_address,
                details: registration.payout_details,
                privacy: Privacy::Identified,
                public_key_der: issued.public_key_der,
                serials: vec![serial],
                auditor: false,
                revoked: false,
                registered_at_ms: now_ms,
                machine: Some(registration.machine),
            },
            effects,
        );
        Ok(Registered {
            account_id: server_id,
            certificate_pem: issued.certificate_pem,
            ca_certificate_pem: self.ca.certificate_pem().to_owned(),
        })
    }

    /// Issues a purchase order: ring-fences `amount` of the client's available balance and returns
    /// the corp-signed document, with the available balance left.
    pub fn create_order(
        &mut self,
        now_ms: i64,
        caller: &str,
        amount: Money,
        lifetime_seconds: u64,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<(String, Money)> {
        let client = self
            .caller_with_role(caller, Role::Client, "buy purchase orders")?
            .id
            .clone();
        self.check_money(&amount)?;
        if amount.minor == 0 {
            return Err(invalid("the order amount must be positive"));
        }
        let lifetime = match lifetime_seconds {
            0 => self.policy.order_lifetime_default_seconds,
            asked if asked > self.policy.order_lifetime_max_seconds => {
                return Err(invalid(format!(
                    "lifetime {asked} s is over this corp's maximum of {} s",
                    self.policy.order_lifetime_max_seconds
                )));
            }
            asked => asked,
        };
        let available_book = Book::Available(client.clone(), amount.currency);
        let available = u64::try_from(self.ledger.balance(&available_book)).unwrap_or(0);
        if available < amount.minor {
            return Err(CorpError::FailedPrecondition(format!(
                "insufficient available balance: {} available, {} asked",
                Money {
                    currency: amount.currency,
                    minor: available
                },
                amount
            )));
        }
        let order_id = format!("{}:po-{}", self.corp_id, self.next_order + 1);
        let issued_at = from_unix_ms(now_ms);
        let issued = IssuedOrder {
            order_id: order_id.clone(),
            corp: self.corp_id.clone(),
            client: client.clone(),
            amount,
            issued_at,
            expires_at: issued_at + Duration::seconds(i64::try_from(lifetime).unwrap_or(i64::MAX)),
            restrictions: Restrictions {
                must_validate: self.policy.must_validate.then_some(true),
                env_types: (!self.policy.env_types.is_empty())
                    .then(|| self.policy.env_types.clone()),
                ..Restrictions::default()
            },
        };
        let corp_signature = self
            .ca
            .signing_key()
            .sign(&PurchaseOrder::corp_signed_bytes(&issued))
            .map_err(|error| CorpError::Unavailable(format!("cannot sign the order: {error}")))?;
        let document = PurchaseOrder {
            issued,
            corp_signature,
            client_restrictions: None,
            client_signature: None,
        };
        let order = Order {
            effective_expiry_ms: unix_ms(document.issued.expires_at),
            issued: document.issued.clone(),
            document_xml: document.to_xml(),
            state: OrderState::Issued,
            bound_server: None,
            bound_session: None,
            validated_xml: None,
            limit_minor: amount.minor,
            charged_minor: 0,
            settlement: None,
            charges: BTreeMap::new(),
        };
        self.next_order += 1;
        effects.push(Effect::Counter {
            name: COUNTER_ORDER,
            value: self.next_order,
        });
        effects.push(Effect::Order(OrderRow::of(&order)));
        let xml = order.document_xml.clone();
        self.orders.insert(order_id.clone(), order);
        self.transfer(
            &available_book,
            &Book::Hold(order_id.clone()),
            amount,
            TransferKind::Reserve,
            Some(&order_id),
            None,
            now_ms,
            effects,
        );
        Ok((
            xml,
            Money {
                currency: amount.currency,
                minor: available - amount.minor,
            },
        ))
    }

    /// Validates an order for the calling server and session, binding it to them (once).
    pub fn validate(
        &mut self,
        now_ms: i64,
        caller: &str,
        order_xml: &str,
        session_id: &str,
        requirements_xml: &str,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Validation> {
        let server_id = self
            .caller_with_role(caller, Role::Server, "validate purchase orders")?
            .id
            .clone();
        if !(xeno_schemas::documents::common::OBJECT_ID.matches)(session_id) {
            return Err(invalid(
                "session_id must be an id (letters, digits, '_', '.', ':' or '-')",
            ));
        }
        let document = PurchaseOrder::parse(order_xml.as_bytes())
            .map_err(|error| invalid(format!("purchase order: {error}")))?;
        let requirements = EnvironmentalRequirements::parse(requirements_xml.as_bytes())
            .map_err(|error| invalid(format!("requirements: {error}")))?;
        if document.issued.corp != self.corp_id {
            return Err(denied(format!(
                "the order was issued by {}, not {}",
                document.issued.corp, self.corp_id
            )));
        }
        if document.corp_signature.public_key != self.ca.signing_key().public_key_der()
            || verify(
                &document.corp_signature,
                &PurchaseOrder::corp_signed_bytes(&document.issued),
            )
            .is_err()
        {
            return Err(denied("the corp's signature on the order does not verify"));
        }
        let order = self.order(&document.issued.order_id)?;
        if order.issued != document.issued {
            return Err(denied("the order does not match the one this corp issued"));
        }
        let client = self
            .accounts
            .get(&order.issued.client)
            .ok_or_else(|| CorpError::NotFound("the order's client is unknown".to_owned()))?;
        let client_signature = document
            .client_signature
            .as_ref()
            .ok_or_else(|| denied("the order is not signed by its client"))?;
        if client_signature.public_key != client.public_key_der
            || verify(client_signature, &document.client_signed_bytes()).is_err()
        {
            return Err(denied(
                "the client's signature on the order does not verify",
            ));
        }
        if client.revoked {
            return Err(denied("the order's client has had its credentials revoked"));
        }
        let client_restrictions = document.client_restrictions.clone().unwrap_or_default();
        // The order's own amount and expiry bound the client as much as the corp's restrictions.
        let mut corp_bounds = order.issued.restrictions.clone();
        let amount = order.issued.amount;
        corp_bounds.max_amount = Some(corp_bounds.max_amount.map_or(amount, |cap| Money {
            minor: cap.minor.min(amount.minor),
            ..cap
        }));
        corp_bounds.not_after = Some(corp_bounds.not_after.map_or(order.issued.expires_at, |at| {
            at.min(order.issued.expires_at)
        }));
        if let Some(widened) = restrictions::widening(&corp_bounds, &client_restrictions) {
            return Err(denied(format!(
                "the client's restrictions widen the corp's: {widened}"
            )));
        }
        let mut limit = order.issued.amount.minor;
        let mut expiry = unix_ms(order.issued.expires_at);
        for restrictions in [&order.issued.restrictions, &client_restrictions] {
            if let Some(cap) = restrictions.max_amount {
                limit = limit.min(cap.minor);
            }
            if let Some(not_after) = restrictions.not_after {
                expiry = expiry.min(unix_ms(not_after));
            }
        }
        if now_ms >= expiry {
            return Err(CorpError::FailedPrecondition(format!(
                "the order expired at {}",
                xeno_schemas::schema::types::format_date_time(from_unix_ms(expiry))
            )));
        }
        let client_view = self.client_identity_for_server(client);
        match order.state {
            OrderState::Closed => {
                return Err(CorpError::FailedPrecondition(
                    "the order is closed".to_owned(),
                ));
            }
            OrderState::Bound => {
                return if order.bound_server.as_deref() == Some(server_id.as_str())
                    && order.bound_session.as_deref() == Some(session_id)
                {
                    Ok(self.validation(order, client_view))
                } else if order.bound_server.as_deref() == Some(server_id.as_str()) {
                    Err(CorpError::AlreadyExists(
                        "the order already funds another session on this server".to_owned(),
                    ))
                } else {
                    Err(CorpError::AlreadyExists(
                        "the order is already bound to another server".to_owned(),
                    ))
                };
            }
            OrderState::Issued => {}
        }
        let session_key = (server_id.clone(), session_id.to_owned());
        if let Some(funding) = self.funded_sessions.get(&session_key) {
            return Err(CorpError::AlreadyExists(format!(
                "session {session_id} on this server is already funded by order {funding}"
            )));
        }
        for (restrictions, whose) in [
            (&order.issued.restrictions, "corp"),
            (&client_restrictions, "client"),
        ] {
            if let Some(unmet) = restrictions::unmet(restrictions, whose, &server_id, &requirements)
            {
                return Err(denied(unmet));
            }
        }
        let order_id = document.issued.order_id.clone();
        let order = self
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| CorpError::NotFound(order_id.clone()))?;
        order.state = OrderState::Bound;
        self.funded_sessions.insert(session_key, order_id.clone());
        order.bound_server = Some(server_id);
        order.bound_session = Some(session_id.to_owned());
        order.validated_xml = Some(document.to_xml());
        order.limit_minor = limit;
        order.effective_expiry_ms = expiry;
        effects.push(Effect::Order(OrderRow::of(order)));
        let order = &self.orders[&order_id];
        Ok(self.validation(order, client_view))
    }

    fn client_identity_for_server(&self, client: &Account) -> String {
        client.id.clone()
    }

    fn validation(&self, order: &Order, client: String) -> Validation {
        Validation {
            order_id: order.id().to_owned(),
            bound_server: order.bound_server.clone().unwrap_or_default(),
            limit: order.money(order.limit_minor),
            charged: order.money(order.charged_minor),
            expires_at_ms: order.effective_expiry_ms,
            client,
        }
    }

    /// Charges against an order, idempotently by (order, sequence).
    #[allow(clippy::too_many_arguments)]
    pub fn charge(
        &mut self,
        now_ms: i64,
        caller: &str,
        order_id: &str,
        sequence: u64,
        amount: Money,
        usage: UsageAnnotation,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<ChargeAnswer> {
        let server_id = self
            .caller_with_role(caller, Role::Server, "charge purchase orders")?
            .id
            .clone();
        let order = self.order(order_id)?;
        if order.bound_server.as_deref() != Some(server_id.as_str()) {
            return Err(denied(match order.state {
                OrderState::Issued => {
                    "the order has not been validated, so nobody may charge it yet"
                }
                _ => "only the server the order is bound to may charge it",
            }));
        }
        if sequence == 0 {
            return Err(invalid("charge sequence numbers start at 1"));
        }
        if let Some(previous) = order.charges.get(&sequence) {
            return if previous.amount_minor == amount.minor
                && previous.usage_sha256 == usage.sha256
                && amount.currency == order.currency()
            {
                Ok(ChargeAnswer {
                    outcome: previous.outcome,
                    charged_total: order.money(previous.charged_total_after),
                    remaining: order.money(previous.remaining_after),
                    replayed: true,
                })
            } else {
                Err(CorpError::AlreadyExists(format!(
                    "charge sequence {sequence} was already used with a different amount or usage record"
                )))
            };
        }
        if order.state == OrderState::Closed {
            return Err(CorpError::FailedPrecondition(
                "the order is closed".to_owned(),
            ));
        }
        if now_ms > self.charges_end_ms(order) {
            return Err(CorpError::FailedPrecondition(
                "the order has expired".to_owned(),
            ));
        }
        if amount.currency != order.currency() {
            return Err(invalid(format!(
                "the order is in {}, not {}",
                order.currency(),
                amount.currency
            )));
        }
        if usage.order_id != order_id || usage.sequence != sequence || usage.charge != amount {
            return Err(invalid(format!(
                "the usage record (order {}, sequence {}, charge {}) does not match the request (order {order_id}, sequence {sequence}, charge {amount})",
                usage.order_id, usage.sequence, usage.charge
            )));
        }
        let remaining = order.remaining_minor();
        let outcome = if amount.minor > remaining {
            ChargeOutcome::RefusedInsufficient
        } else {
            ChargeOutcome::Charged
        };
        let charged_after = order.charged_minor
            + if outcome == ChargeOutcome::Charged {
                amount.minor
            } else {
                0
            };
        let entry = ChargeRecord {
            sequence,
            amount_minor: amount.minor,
            outcome,
            id: self.next_charge + 1,
            usage_sha256: usage.sha256,
            charged_total_after: charged_after,
            remaining_after: order.limit_minor - charged_after,
            recorded_at_ms: now_ms,
        };
        if outcome == ChargeOutcome::Charged {
            self.transfer(
                &Book::Hold(order_id.to_owned()),
                &Book::Spent(order_id.to_owned()),
                amount,
                TransferKind::Charge,
                Some(order_id),
                Some(sequence),
                now_ms,
                effects,
            );
        }
        let order = self
            .orders
            .get_mut(order_id)
            .ok_or_else(|| CorpError::NotFound(order_id.to_owned()))?;
        order.charged_minor = charged_after;
        assert!(
            order.charged_minor <= order.limit_minor,
            "charges exceeded order {order_id}"
        );
        order.charges.insert(sequence, entry.clone());
        self.next_charge = entry.id;
        effects.push(Effect::Charge {
            order_id: order_id.to_owned(),
            record: entry.clone(),
            usage_xml: usage.xml,
        });
        effects.push(Effect::Counter {
            name: COUNTER_CHARGE,
            value: self.next_charge,
        });
        Ok(ChargeAnswer {
            outcome,
            charged_total: order.money(entry.charged_total_after),
            remaining: order.money(entry.remaining_after),
            replayed: false,
        })
    }

    /// The last moment the order's bound server may charge it: its expiry plus the grace
    /// period for charges of usage before the expiry.
    fn charges_end_ms(&self, order: &Order) -> i64 {
        let grace_ms = i64::try_from(self.policy.charge_grace_seconds.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        order.effective_expiry_ms.saturating_add(grace_ms)
    }

    /// Settles an order.
    pub fn close(
        &mut self,
        now_ms: i64,
        caller: &str,
        order_id: &str,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Settlement> {
        let caller_id = self.caller(caller)?.id.clone();
        let order = self.order(order_id)?;
        let is_server = order.bound_server.as_deref() == Some(caller_id.as_str());
        let is_client = order.issued.client == caller_id;
        if !(is_server || is_client) {
            return Err(denied(
                "only the order's bound server, or its client, may close it",
            ));
        }
        if let Some(settlement) = order.settlement {
            return Ok(settlement);
        }
        // A bound order's server may charge for usage up to the expiry until the grace period
        // ends: its client may not settle before then, or the last interval would go unpaid.
        let charges_end_ms = self.charges_end_ms(order);
        if is_client && !is_server && order.state == OrderState::Bound && now_ms <= charges_end_ms {
            return Err(CorpError::FailedPrecondition(format!(
                "the order is bound to server {}, which may still make its final charge until {}; it closes the order itself, or its client may close it after then",
                order.bound_server.as_deref().unwrap_or_default(),
                xeno_schemas::schema::types::format_date_time(from_unix_ms(charges_end_ms))
            )));
        }
        let currency = order.currency();
        let spent = order.charged_minor;
        let commission =
            u64::try_from(u128::from(spent) * u128::from(self.policy.commission_ppm) / 1_000_000)
                .unwrap_or(spent);
        let payout = spent - commission;
        let hold = Book::Hold(order_id.to_owned());
        let returned = u64::try_from(self.ledger.balance(&hold)).unwrap_or(0);
        let client = order.issued.client.clone();
        let server = order.bound_server.clone();
        let spent_book = Book::Spent(order_id.to_owned());
        let money = |minor| Money { currency, minor };
        if let Some(server) = server {
            self.transfer(
                &spent_book,
                &Book::Payout(server, currency),
                money(payout),
                TransferKind::Payout,
                Some(order_id),
                None,
                now_ms,
                effects,
            );
        }
        self.transfer(
            &spent_book,
            &Book::Commission(currency),
            money(commission),
            TransferKind::Commission,
            Some(order_id),
            None,
            now_ms,
            effects,
        );
        self.transfer(
            &hold,
            &Book::Available(client, currency),
            money(returned),
            TransferKind::Release,
            Some(order_id),
            None,
            now_ms,
            effects,
        );
        assert_eq!(
            self.ledger.balance(&spent_book),
            0,
            "settlement left money in {}",
            spent_book.key()
        );
        assert_eq!(
            self.ledger.balance(&hold),
            0,
            "settlement left money in {}",
            hold.key()
        );
        let settlement = Settlement {
            spent,
            returned,
            payout,
            commission,
            closed_at_ms: now_ms,
        };
        let order = self
            .orders
            .get_mut(order_id)
            .ok_or_else(|| CorpError::NotFound(order_id.to_owned()))?;
        order.state = OrderState::Closed;
        order.settlement = Some(settlement);
        effects.push(Effect::Order(OrderRow::of(order)));
        Ok(settlement)
    }

    fn summary(order: &Order) -> OrderSummary {
        OrderSummary {
            order_id: order.id().to_owned(),
            state: order.state,
            amount: order.issued.amount,
            charged: order.money(order.charged_minor),
            bound_server: order.bound_server.clone(),
            expires_at_ms: order.effective_expiry_ms,
        }
    }

    /// The caller's account.
    pub fn account(&self, caller: &str) -> CorpResult<AccountView> {
        let account = self.caller(caller)?;
        self.account_view(&account.id)
    }

    /// An account as its owner sees it (also for the web account page).
    pub fn account_view(&self, account_id: &str) -> CorpResult<AccountView> {
        let account = self
            .accounts
            .get(account_id)
            .ok_or_else(|| CorpError::NotFound(format!("no account {account_id}")))?;
        if account.revoked {
            return Err(CorpError::Unauthenticated(
                "this account's credentials have been revoked".to_owned(),
            ));
        }
        let mut orders: Vec<&Order> = self
            .orders
            .values()
            .filter(|order| {
                order.issued.client == account.id
                    || order.bound_server.as_deref() == Some(account.id.as_str())
            })
            .collect();
        orders.sort_by(|a, b| {
            b.issued
                .issued_at
                .cmp(&a.issued.issued_at)
                .then_with(|| b.id().cmp(a.id()))
        });
        let mut balances: Vec<(Currency, u64, u64)> = Vec::new();
        for currency in &self.currencies {
            let available = match account.role {
                Role::Client => self
                    .ledger
                    .balance(&Book::Available(account.id.clone(), *currency)),
                Role::Server => self
                    .ledger
                    .balance(&Book::Payout(account.id.clone(), *currency)),
            };
            let reserved: i64 = orders
                .iter()
                .filter(|order| order.issued.client == account.id && order.currency() == *currency)
                .map(|order| {
                    // Committed to open orders: unspent holds and charges awaiting settlement.
                    let id = order.id().to_owned();
                    self.ledger.balance(&Book::Hold(id.clone()))
                        + self.ledger.balance(&Book::Spent(id))
                })
                .sum();
            if available != 0 || reserved != 0 {
                balances.push((
                    *currency,
                    u64::try_from(available).unwrap_or(0),
                    u64::try_from(reserved).unwrap_or(0),
                ));
            }
        }
        let role = if account.auditor {
            "auditor"
        } else {
            account.role.as_str()
        };
        Ok(AccountView {
            account_id: account.id.clone(),
            role: role.to_owned(),
            name: account.name.clone(),
            balances,
            orders: orders
                .into_iter()
                .take(ACCOUNT_ORDERS_MAX)
                .map(Self::summary)
                .collect(),
        })
    }

    /// An order's audit trail, for its client, its server, or an auditor (the caller named by
    /// its certificate serial). Usage records are read from `store`, or from `pending` (the
    /// effects of the writer's current batch) for charges not stored yet.
    pub fn audit_order(
        &self,
        store: &mut dyn Store,
        pending: &[Effect],
        caller: &str,
        page: AuditPage<'_>,
    ) -> CorpResult<OrderAudit> {
        let account_id = self.caller(caller)?.id.clone();
        self.audit_order_for(store, pending, &account_id, page)
    }

    /// An order's audit trail as the account `account_id` may see it.
    pub fn audit_order_for(
        &self,
        store: &mut dyn Store,
        pending: &[Effect],
        account_id: &str,
        page: AuditPage<'_>,
    ) -> CorpResult<OrderAudit> {
        let order_id = page.order_id;
        let account = self
            .accounts
            .get(account_id)
            .ok_or_else(|| CorpError::NotFound(format!("no account {account_id}")))?;
        if account.revoked {
            return Err(CorpError::Unauthenticated(
                "this account's credentials have been revoked".to_owned(),
            ));
        }
        let order = self.order(order_id)?;
        let is_client = order.issued.client == account.id;
        let is_server = order.bound_server.as_deref() == Some(account.id.as_str());
        if !(account.auditor || is_client || is_server) {
            return Err(denied(
                "only the order's client, its server, or an auditor may audit it",
            ));
        }
        let client = self
            .accounts
            .get(&order.issued.client)
            .ok_or_else(|| CorpError::NotFound("unknown client".to_owned()))?;
        let client_identity =
            if account.auditor || is_client || client.privacy == Privacy::Identified {
                format!(
                    "{} ({}), {}",
                    client.name,
                    client.id,
                    client.address.replace('\n', ", ")
                )
            } else {
                client.id.clone()
            };
        let limit = page.limit.clamp(1, AUDIT_PAGE_CHARGES_MAX);
        let mut listed = order
            .charges
            .range(page.after_sequence.saturating_add(1)..)
            .map(|(_, charge)| charge);
        let mut charges = usage_records(store, pending, listed.by_ref().take(limit))?;
        // Keep the page's size bounded whatever the records weigh (each is at most 64 KiB).
        let mut bytes = 0;
        let fits = charges
            .iter()
            .take_while(|charge| {
                bytes += charge.usage_xml.len();
                bytes <= AUDIT_PAGE_BYTES_MAX
            })
            .count()
            .max(1);
        let truncated = fits < charges.len();
        charges.truncate(fits);
        let more = truncated || listed.next().is_some();
        let next_after_sequence = match charges.last() {
            Some(last) if more => last.record.sequence,
            _ => 0,
        };
        Ok(OrderAudit {
            order: Self::summary(order),
            client_identity,
            charges,
            next_after_sequence,
            purchase_order_xml: order
                .validated_xml
                .clone()
                .unwrap_or_else(|| order.document_xml.clone()),
        })
    }

    /// Every order a server charged, for that server or an auditor.
    pub fn audit_server(&self, caller: &str, server_id: &str) -> CorpResult<Vec<OrderSummary>> {
        let account = self.caller(caller)?;
        if !(account.auditor || account.id == server_id) {
            return Err(denied(
                "only the server itself or an auditor may audit a server",
            ));
        }
        let mut orders: Vec<OrderSummary> = self
            .orders
            .values()
            .filter(|order| order.bound_server.as_deref() == Some(server_id))
            .map(Self::summary)
            .collect();
        orders.sort_by(|a, b| a.order_id.cmp(&b.order_id));
        Ok(orders)
    }

    /// The CA certificate and revoked serials.
    pub fn trust_info(&self) -> (String, Vec<String>) {
        let mut revoked: Vec<String> = self.revoked.iter().cloned().collect();
        revoked.sort();
        (self.ca.certificate_pem().to_owned(), revoked)
    }

    /// Operator: grants the auditor role.
    pub fn grant_auditor(&mut self, account_id: &str, effects: &mut Vec<Effect>) -> CorpResult<()> {
        let account = self
            .accounts
            .get_mut(account_id)
            .ok_or_else(|| CorpError::NotFound(format!("no account {account_id}")))?;
        if !account.auditor {
            account.auditor = true;
            effects.push(Effect::Account(account.clone()));
        }
        Ok(())
    }

    /// Operator: revokes an account's certificates.
    pub fn revoke(
        &mut self,
        now_ms: i64,
        account_id: &str,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Vec<String>> {
        let account = self
            .accounts
            .get_mut(account_id)
            .ok_or_else(|| CorpError::NotFound(format!("no account {account_id}")))?;
        account.revoked = true;
        effects.push(Effect::Account(account.clone()));
        let serials = account.serials.clone();
        for serial in &serials {
            if self.revoked.insert(serial.clone()) {
                effects.push(Effect::Revocation {
                    serial: serial.clone(),
                    at_ms: now_ms,
                });
            }
        }
        Ok(serials)
    }

    /// Operator: credits a client with money received from outside.
    pub fn deposit(
        &mut self,
        now_ms: i64,
        account_id: &str,
        amount: Money,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Money> {
        let account = self
            .accounts
            .get(account_id)
            .ok_or_else(|| CorpError::NotFound(format!("no account {account_id}")))?;
        if account.role != Role::Client {
            return Err(invalid("deposits go to client accounts"));
        }
        self.check_money(&amount)?;
        if amount.minor == 0 {
            return Err(invalid("the deposit must be positive"));
        }
        let available = Book::Available(account_id.to_owned(), amount.currency);
        self.transfer(
            &Book::Funding(amount.currency),
            &available,
            amount,
            TransferKind::Deposit,
            None,
            None,
            now_ms,
            effects,
        );
        Ok(Money {
            currency: amount.currency,
            minor: u64::try_from(self.ledger.balance(&available)).unwrap_or(0),
        })
    }

    /// Checks the invariants that can be checked in memory: conservation, no negative book, no
    /// order charged beyond its cap, holds and spent books matching each order's state.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = self.ledger.violations();
        for order in self.orders.values() {
            let id = order.id();
            let hold = self.ledger.balance(&Book::Hold(id.to_owned()));
            let spent = self.ledger.balance(&Book::Spent(id.to_owned()));
            if order.charged_minor > order.limit_minor
                || order.limit_minor > order.issued.amount.minor
            {
                violations.push(format!(
                    "order {id} charged {} over its cap {}",
                    order.charged_minor, order.limit_minor
                ));
            }
            let charged: u64 = order
                .charges
                .values()
                .filter(|c| c.outcome == ChargeOutcome::Charged)
                .map(|c| c.amount_minor)
                .sum();
            if charged != order.charged_minor {
                violations.push(format!(
                    "order {id}: charges sum to {charged} but {} is recorded",
                    order.charged_minor
                ));
            }
            let expected = if order.state == OrderState::Closed {
                (0, 0)
            } else {
                (
                    i64::try_from(order.issued.amount.minor - order.charged_minor).unwrap_or(-1),
                    i64::try_from(order.charged_minor).unwrap_or(-1),
                )
            };
            if (hold, spent) != expected {
                violations.push(format!(
                    "order {id} ({}) holds {hold} and has spent {spent}; expected {expected:?}",
                    order.state.as_str()
                ));
            }
        }
        violations
    }

    /// Counts for reports: (accounts, orders, charges).
    pub fn counts(&self) -> (u64, u64, u64) {
        let charges: usize = self.orders.values().map(|order| order.charges.len()).sum();
        (
            self.accounts.len() as u64,
            self.orders.len() as u64,
            charges as u64,
        )
    }

    /// An order's currency.
    pub fn order_currency(&self, order_id: &str) -> CorpResult<Currency> {
        Ok(self.order(order_id)?.currency())
    }

    /// The account id holding the certificate with this serial (for the web pages).
    pub fn account_for_serial(&self, serial: &str) -> CorpResult<AccountId> {
        self.caller(serial).map(|account| account.id.clone())
    }
}

#[cfg(test)]
#[path = "core_tests.rs"]
mod tests;
