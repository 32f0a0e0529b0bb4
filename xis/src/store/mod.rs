//! Where the inverted file lives. Two backends behind one interface, held to one conformance
//! suite (`xis/tests/conformance.rs`):
//!
//! - [`memory::MemoryStore`], the embedded default: ordered maps per token in this process,
//!   persisted to an append-only log in the data directory so that a restart keeps what it had.
//! - [`redis::RedisStore`], the scale-out backend on Redis Cluster: the paper's distributed
//!   design (section III-B) made real. The inverted file is partitioned by token across the
//!   cluster's masters (one sorted set per token and freshness) and replicated to their
//!   replicas; records are discarded by key expiry.
//!
//! Both keep the same posting sets. For each token and each freshness (fresh, or stale: older
//! than one TTL), a *numeric* set ordered by (value, member) with member
//! `<server id>:<value>`, and a *text* set ordered by member `<value>\0<server id>`. A record
//! going stale has its postings moved from the fresh sets to the stale ones; a record discarded
//! loses them, leaving a tombstone of its last version so that an old advertisement cannot be
//! replayed while it could still be believed.

pub mod counted;
pub mod log;
pub mod memory;
pub mod redis;

use xeno_schemas::documents::tokens::{Token, TokenValue, format_number};

/// Why a store could not do what was asked. The XIS answers UNAVAILABLE.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The Redis Cluster failed or could not be reached.
    #[error("redis cluster: {0}")]
    Redis(#[from] ::redis::RedisError),
    /// The embedded store's log could not be written or read.
    #[error("embedded store log {path}: {source}")]
    Log {
        /// The log file.
        path: std::path::PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The stored data is not what this version writes (a bug, or someone else's keys).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Whether postings belong to records younger than one TTL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Freshness {
    /// Received less than one TTL ago.
    Fresh,
    /// Received between one and two TTLs ago.
    Stale,
}

/// Which of a token's two posting sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Numeric values, ordered by value.
    Number,
    /// Text values, ordered by value.
    Text,
}

/// One posting set: a token's numeric or text postings of one freshness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SetRef<'a> {
    /// The canonical token name.
    pub token: &'a str,
    /// Numeric or text.
    pub kind: Kind,
    /// Fresh or stale.
    pub freshness: Freshness,
}

/// Which values of a set a lookup wants.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueRange {
    /// Numbers within `[min, max]` (infinite bounds for open ends).
    Number {
        /// Lowest value, inclusive.
        min: f64,
        /// Highest value, inclusive.
        max: f64,
    },
    /// Texts equal to this.
    Text(String),
    /// Every text.
    AnyText,
}

/// Where a scan resumes: just after this entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Position {
    /// After this numeric entry. `tie_offset` counts the entries of the same value already
    /// returned in this set, for backends that can only skip within a run of equal values.
    Number {
        /// Its value.
        value: f64,
        /// Its member.
        member: String,
        /// Entries with exactly `value` already returned.
        tie_offset: u64,
    },
    /// After this text entry (its member).
    Text(String),
}

/// An entry of a posting set.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The member as stored.
    pub member: String,
    /// The server.
    pub server_id: String,
    /// The value (numbers in their shortest form).
    pub value: String,
    /// The number, for numeric entries.
    pub number: Option<f64>,
}

/// The numeric set member for a server's value.
pub fn number_member(server_id: &str, value: f64) -> String {
    format!("{server_id}:{}", format_number(value))
}

/// The text set member for a server's value.
pub fn text_member(server_id: &str, value: &str) -> String {
    format!("{value}\0{server_id}")
}

/// Reads an entry back from a numeric member and its value.
pub fn number_entry(member: String, value: f64) -> Result<Entry, StoreError> {
    let (server_id, _) = member
        .split_once(':')
        .ok_or_else(|| StoreError::Corrupt(format!("numeric member {member:?}")))?;
    Ok(Entry {
        server_id: server_id.to_owned(),
        value: format_number(value),
        number: Some(value),
        member,
    })
}

/// Reads an entry back from a text member.
pub fn text_entry(member: String) -> Result<Entry, StoreError> {
    let (value, server_id) = member
        .rsplit_once('\0')
        .ok_or_else(|| StoreError::Corrupt(format!("text member {member:?}")))?;
    Ok(Entry {
        server_id: server_id.to_owned(),
        value: value.to_owned(),
        number: None,
        member,
    })
}

/// The posting set a token belongs in, and its member.
pub fn posting(server_id: &str, token: &Token) -> (Kind, String) {
    match &token.value {
        TokenValue::Number(value) => (Kind::Number, number_member(server_id, *value)),
        TokenValue::Text(text) => (Kind::Text, text_member(server_id, text)),
    }
}

/// What a store keeps about one server's record besides the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMeta {
    /// The advertisement's version.
    pub version: u64,
    /// When this XIS accepted it, Unix ms.
    pub received_ms: u64,
    /// The server's endpoint.
    pub endpoint: String,
}

/// A record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Its metadata.
    pub meta: RecordMeta,
    /// The signed advertisement, as received.
    pub xml: String,
}

/// A verified advertisement to store.
#[derive(Debug, Clone)]
pub struct NewRecord {
    /// The server.
    pub server_id: String,
    /// Its version.
    pub version: u64,
    /// The document as received.
    pub xml: String,
    /// The endpoint.
    pub endpoint: String,
    /// Its tokens (including `Received`).
    pub tokens: Vec<Token>,
    /// When accepted, Unix ms.
    pub received_ms: u64,
}

/// The result of storing a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// Stored, replacing this version if there was one.
    Stored {
        /// The version replaced.
        previous: Option<u64>,
    },
    /// Refused: the store holds (or recently discarded) this version, which is not older.
    NotNewer {
        /// The version stored.
        stored: u64,
    },
}

/// The aging rules a store applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aging {
    /// A record without an update for this long is stale; for twice this long, discarded.
    pub ttl_ms: u64,
    /// How long a discarded record's version is remembered, to refuse replays: the longest
    /// lifetime (Expiry minus Issued) the XIS accepts.
    pub replay_window_ms: u64,
}

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Records that went stale.
    pub staled: u64,
    /// Records discarded.
    pub discarded: u64,
}

/// Most records one sweep step handles, so that a sweep after a long pause cannot hold the
/// index (or a Redis node) for long; the next step continues.
pub const SWEEP_BATCH_MAX: usize = 1024;

/// A backend. An enum rather than a trait object: two backends, and async methods.
pub enum Store {
    /// The embedded index.
    Memory(memory::MemoryStore),
    /// Redis Cluster.
    Redis(redis::RedisStore),
}

impl Store {
    /// Stores `record` unless a version at least as new is held (or was recently discarded).
    pub async fn put(&self, record: NewRecord) -> Result<PutOutcome, StoreError> {
        match self {
            Store::Memory(store) => store.put(record).await,
            Store::Redis(store) => store.put(record).await,
        }
    }

    /// One server's record.
    pub async fn get(&self, server_id: &str) -> Result<Option<StoredRecord>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.get(server_id)),
            Store::Redis(store) => store.get(server_id).await,
        }
    }

    /// How many entries of `set` lie in `range`.
    pub async fn count(&self, set: SetRef<'_>, range: &ValueRange) -> Result<u64, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.count(set, range)),
            Store::Redis(store) => store.count(set, range).await,
        }
    }

    /// Up to `limit` entries of `set` in `range`, in order, after `after`.
    pub async fn scan(
        &self,
        set: SetRef<'_>,
        range: &ValueRange,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.scan(set, range, after, limit)),
            Store::Redis(store) => store.scan(set, range, after, limit).await,
        }
    }

    /// The metadata of each server's record (`None` when absent or discarded).
    pub async fn metas(
        &self,
        server_ids: &[String],
    ) -> Result<Vec<Option<RecordMeta>>, StoreError> {
        match self {
            Store::Memory(store) => Ok(store.metas(server_ids)),
            Store::Redis(store) => store.metas(server_ids).await,
        }
    }

    /// Ages records: marks stale those older than one TTL, discards those older than two.
    pub async fn sweep(&self, now_ms: u64) -> Result<SweepReport, StoreError> {
        match self {
            Store::Memory(store) => store.sweep(now_ms),
            Store::Redis(store) => store.sweep(now_ms).await,
        }
    }

    /// Flushes what the backend buffers (the embedded log) so that a restart keeps it.
    pub async fn flush(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(store) => store.flush().await,
            Store::Redis(_) => Ok(()),
        }
    }

    /// Whether lookups see exact counts (the embedded store sweeps before each lookup), or
    /// counts as of the last sweep (Redis).
    pub fn sweeps_before_lookup(&self) -> bool {
        matches!(self, Store::Memory(_))
    }
}

/// A total order on floats for ordered maps: `-0.0` equals `0.0`; NaN never reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct F64Key(u64);

impl F64Key {
    /// The key of `value`.
    pub fn new(value: f64) -> F64Key {
        let value = if value == 0.0 { 0.0 } else { value };
        let bits = value.to_bits();
        F64Key(if bits >> 63 == 1 {
            !bits
        } else {
            bits | (1 << 63)
        })
    }

    /// The value back.
    pub fn value(self) -> f64 {
        let bits = if self.0 >> 63 == 1 {
            self.0 & !(1 << 63)
        } else {
            !self.0
        };
        f64::from_bits(bits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_keys_order_like_floats() {
        let values = [f64::NEG_INFINITY, -5.5, -0.0, 0.0, 1e-9, 3.0, f64::INFINITY];
        for pair in values.windows(2) {
            assert!(F64Key::new(pair[0]) <= F64Key::new(pair[1]), "{pair:?}");
            assert_eq!(F64Key::new(pair[1]).value(), pair[1]);
        }
        assert_eq!(F64Key::new(-0.0), F64Key::new(0.0));
    }

    #[test]
    fn members_read_back() {
        let entry = number_entry(number_member("ab", 750.5), 750.5).expect("number");
        assert_eq!(
            (entry.server_id.as_str(), entry.value.as_str()),
            ("ab", "750.5")
        );
        let entry = text_entry(text_member("ab", "Wasm")).expect("text");
        assert_eq!(
            (entry.server_id.as_str(), entry.value.as_str()),
            ("ab", "Wasm")
        );
    }
}
