//! Durable storage of the corp's state: SQLite embedded by default ([`sqlite`]), PostgreSQL for
//! scale-out ([`postgres`]). Both implement [`Store`] from the same SQL, and the same
//! conformance tests run against both. A store never decides anything: it persists batches of
//! [`Effect`]s atomically and loads them back.

pub mod postgres;
pub mod rows;
pub mod sqlite;

use crate::core::Snapshot;
use crate::model::Effect;
use std::collections::HashMap;

/// What a store's own consistency check found.
#[derive(Debug, Default, Clone)]
pub struct StoreAudit {
    /// Problems; empty when the stored balances equal the sums of the stored transfers.
    pub violations: Vec<String>,
    /// Transfers stored.
    pub transfers: u64,
}

/// Durable storage for the corp.
pub trait Store: Send {
    /// Everything stored.
    fn load(&mut self) -> anyhow::Result<Snapshot>;
    /// Persists a batch atomically and durably: when this returns `Ok`, the batch survives a
    /// crash; when it returns `Err`, none of it was stored.
    fn persist(&mut self, effects: &[Effect]) -> anyhow::Result<()>;
    /// Recomputes every balance from the transfers and compares with the stored balances.
    fn audit(&mut self) -> anyhow::Result<StoreAudit>;
    /// The usage records of the charges numbered `ids`, by number (those stored).
    fn usage_records(&mut self, ids: &[u64]) -> anyhow::Result<HashMap<u64, String>>;
}

/// Opens the store a configuration names, creating its schema if needed.
pub fn open(config: &crate::config::Config) -> anyhow::Result<Box<dyn Store>> {
    if config.database == "sqlite" {
        Ok(Box::new(sqlite::SqliteStore::open(&config.sqlite_path())?))
    } else {
        Ok(Box::new(postgres::PostgresStore::connect(
            &config.database,
        )?))
    }
}

/// The tables, in SQL both SQLite and PostgreSQL accept. Amounts are integer minor units.
pub(crate) const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS accounts (
        id TEXT PRIMARY KEY, role TEXT NOT NULL, name TEXT NOT NULL, address TEXT NOT NULL,
        details TEXT NOT NULL, privacy TEXT NOT NULL, public_key TEXT NOT NULL, serials TEXT NOT NULL,
        auditor BOOLEAN NOT NULL, revoked BOOLEAN NOT NULL, registered_at_ms BIGINT NOT NULL,
        architecture TEXT, cpu_model TEXT, cpu_cores BIGINT, memory_mb BIGINT, network_mbps BIGINT,
        xis_node TEXT, endpoint TEXT)",
    "CREATE TABLE IF NOT EXISTS orders (
        order_id TEXT PRIMARY KEY, client TEXT NOT NULL, currency TEXT NOT NULL,
        amount_minor BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL, document_xml TEXT NOT NULL,
        state TEXT NOT NULL, bound_server TEXT, bound_session TEXT, validated_xml TEXT,
        limit_minor BIGINT NOT NULL, effective_expiry_ms BIGINT NOT NULL,
        spent BIGINT, returned BIGINT, payout BIGINT, commission BIGINT, closed_at_ms BIGINT,
        CHECK (limit_minor <= amount_minor))",
    // The audit trail, appended to and never updated, keyed by the corp's charge number (an
    // always-increasing key: appends touch one index page per batch). No (order, sequence)
    // index: the writer checks a charge's key against its in-memory state before storing it,
    // so keys are unique by construction (the store audit verifies it), and such an index
    // would cost every commit a random leaf page per order charged (measured: 4 KiB of log per
    // charge). Usage records are read back by charge number, for audits.
    "CREATE TABLE IF NOT EXISTS charges (
        id BIGINT PRIMARY KEY, order_id TEXT NOT NULL, sequence BIGINT NOT NULL,
        amount_minor BIGINT NOT NULL, outcome TEXT NOT NULL, usage_xml TEXT NOT NULL,
        usage_sha256 TEXT NOT NULL, charged_total_after BIGINT NOT NULL,
        remaining_after BIGINT NOT NULL, recorded_at_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS transfers (
        id BIGINT PRIMARY KEY, from_book TEXT NOT NULL, to_book TEXT NOT NULL, currency TEXT NOT NULL,
        amount BIGINT NOT NULL CHECK (amount > 0), kind TEXT NOT NULL, order_id TEXT, sequence BIGINT,
        at_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS balances (
        book TEXT PRIMARY KEY, currency TEXT NOT NULL, balance BIGINT NOT NULL,
        CHECK (balance >= 0 OR book LIKE 'funding:%'))",
    "CREATE TABLE IF NOT EXISTS revocations (serial TEXT PRIMARY KEY, at_ms BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
];

/// Statements, with `?` placeholders (rewritten to `$n` for PostgreSQL).
pub(crate) mod sql {
    pub const UPSERT_ACCOUNT: &str = "INSERT INTO accounts (id, role, name, address, details, privacy, public_key, serials,
        auditor, revoked, registered_at_ms, architecture, cpu_model, cpu_cores, memory_mb, network_mbps, xis_node, endpoint)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET serials = excluded.serials, auditor = excluded.auditor, revoked = excluded.revoked";
    pub const UPSERT_ORDER: &str = "INSERT INTO orders (order_id, client, currency, amount_minor, expires_at_ms, document_xml,
        state, bound_server, bound_session, validated_xml, limit_minor, effective_expiry_ms,
        spent, returned, payout, commission, closed_at_ms)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (order_id) DO UPDATE SET state = excluded.state, bound_server = excluded.bound_server,
        bound_session = excluded.bound_session, validated_xml = excluded.validated_xml, limit_minor = excluded.limit_minor,
        effective_expiry_ms = excluded.effective_expiry_ms, spent = excluded.spent, returned = excluded.returned, payout = excluded.payout,
        commission = excluded.commission, closed_at_ms = excluded.closed_at_ms";
    pub const INSERT_CHARGE: &str =
        "INSERT INTO charges (id, order_id, sequence, amount_minor, outcome, usage_xml, usage_sha256,
        charged_total_after, remaining_after, recorded_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    pub const INSERT_TRANSFER: &str = "INSERT INTO transfers (id, from_book, to_book, currency, amount, kind, order_id, sequence, at_ms)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
    pub const UPSERT_BALANCE: &str =
        "INSERT INTO balances (book, currency, balance) VALUES (?, ?, ?)
        ON CONFLICT (book) DO UPDATE SET balance = excluded.balance";
    pub const INSERT_REVOCATION: &str =
        "INSERT INTO revocations (serial, at_ms) VALUES (?, ?) ON CONFLICT (serial) DO NOTHING";
    pub const UPSERT_COUNTER: &str = "INSERT INTO counters (name, value) VALUES (?, ?)
        ON CONFLICT (name) DO UPDATE SET value = excluded.value";
    pub const SELECT_ACCOUNTS: &str = "SELECT id, role, name, address, details, privacy, public_key, serials, auditor, revoked,
        registered_at_ms, architecture, cpu_model, cpu_cores, memory_mb, network_mbps, xis_node, endpoint FROM accounts";
    pub const SELECT_ORDERS: &str =
        "SELECT order_id, client, currency, amount_minor, expires_at_ms, document_xml, state,
        bound_server, bound_session, validated_xml, limit_minor, effective_expiry_ms,
        spent, returned, payout, commission, closed_at_ms FROM orders";
    pub const SELECT_CHARGES: &str =
        "SELECT id, order_id, sequence, amount_minor, outcome, usage_sha256, charged_total_after,
        remaining_after, recorded_at_ms FROM charges";
    pub const SELECT_USAGE: &str = "SELECT id, usage_xml FROM charges WHERE id = ?";
    pub const SELECT_BALANCES: &str = "SELECT book, currency, balance FROM balances";
    pub const SELECT_REVOCATIONS: &str = "SELECT serial FROM revocations";
    pub const SELECT_COUNTERS: &str = "SELECT name, value FROM counters";
    /// Each book's balance recomputed from transfers, beside the stored balance.
    /// (Sums are cast back to BIGINT: PostgreSQL sums BIGINT as NUMERIC.)
    pub const AUDIT_BALANCES: &str = "SELECT b.book, b.balance,
        CAST(COALESCE(credits.total, 0) - COALESCE(debits.total, 0) AS BIGINT)
        FROM balances b
        LEFT JOIN (SELECT to_book AS book, SUM(amount) AS total FROM transfers GROUP BY to_book) credits
            ON credits.book = b.book
        LEFT JOIN (SELECT from_book AS book, SUM(amount) AS total FROM transfers GROUP BY from_book) debits
            ON debits.book = b.book";
    pub const COUNT_TRANSFERS: &str = "SELECT COUNT(*) FROM transfers";
    /// Each order's cap beside the sum of its charges (the audit trail) and the sum of its
    /// charge transfers (the ledger): the two must agree and stay within the cap.
    pub const AUDIT_ORDERS: &str = "SELECT o.order_id, o.limit_minor,
        CAST(COALESCE(charged.total, 0) AS BIGINT), CAST(COALESCE(moved.total, 0) AS BIGINT)
        FROM orders o
        LEFT JOIN (SELECT order_id, SUM(amount_minor) AS total FROM charges
            WHERE outcome = 'charged' GROUP BY order_id) charged ON charged.order_id = o.order_id
        LEFT JOIN (SELECT order_id, SUM(amount) AS total FROM transfers
            WHERE kind = 'charge' GROUP BY order_id) moved ON moved.order_id = o.order_id";
    /// Charge keys stored more than once (there must be none).
    pub const AUDIT_DUPLICATE_CHARGES: &str = "SELECT order_id, sequence, COUNT(*) FROM charges
        GROUP BY order_id, sequence HAVING COUNT(*) > 1";
}

/// Keeps only the last write to each balance and counter in a batch, so a batch of thousands
/// of charges writes each hot row once.
pub(crate) fn coalesce(effects: &[Effect]) -> Vec<&Effect> {
    let mut last_balance: HashMap<&str, usize> = HashMap::new();
    let mut last_counter: HashMap<&str, usize> = HashMap::new();
    for (index, effect) in effects.iter().enumerate() {
        match effect {
            Effect::Balance { book, .. } => {
                last_balance.insert(book, index);
            }
            Effect::Counter { name, .. } => {
                last_counter.insert(name, index);
            }
            _ => {}
        }
    }
    effects
        .iter()
        .enumerate()
        .filter(|(index, effect)| match effect {
            Effect::Balance { book, .. } => last_balance.get(book.as_str()) == Some(index),
            Effect::Counter { name, .. } => last_counter.get(name) == Some(index),
            _ => true,
        })
        .map(|(_, effect)| effect)
        .collect()
}

/// Converts a stored unsigned amount.
pub(crate) fn to_u64(value: i64, what: &str) -> anyhow::Result<u64> {
    u64::try_from(value).map_err(|_| anyhow::anyhow!("stored {what} is negative: {value}"))
}

/// Converts an amount for storage.
pub(crate) fn to_i64(value: u64) -> i64 {
    i64::try_from(value).expect("amounts are at most AMOUNT_MINOR_MAX, below 2^63")
}
