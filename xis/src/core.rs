//! The XIS core: decides what is accepted and answers lookups, over either store. The gRPC
//! service only translates to and from it.
//!
//! Accepting an advertisement: size, then the document's own validation, then the signature
//! (present, by the key whose SHA-256 is the ServerId, over the canonical form), then its times
//! (not expired, not issued in the future, not believable for longer than the replay window),
//! then its tokens; only then the store, which keeps it only if its version is newer than the
//! one held (or recently discarded). Anything refused leaves the index unchanged.

use crate::cursor::{self, Cursor};
use crate::error::XisError;
use crate::store::{
    Aging, Entry, Freshness, Kind, NewRecord, Position, PutOutcome, SetRef, Store, ValueRange,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use xeno_clients::xis::{ADVERTISEMENT_BYTES_MAX, PAGE_SIZE_DEFAULT, PAGE_SIZE_MAX};
pub use xeno_clients::xis::{Advertised, Match, Values};
use xeno_schemas::documents::tokens::{
    self, RECEIVED_TOKEN, TOKEN_NAME_BYTES_MAX, TOKEN_VALUE_BYTES_MAX, Token, TokenValue,
    parse_plain_number,
};
use xeno_schemas::documents::{Document, ServerAdvertisement};

/// How far in the future an advertisement's `Issued` may be: servers' clocks drift.
pub const CLOCK_SKEW_MAX_MS: u64 = 5 * 60 * 1000;

/// Advertisements waiting to be checked beyond which new ones are refused (UNAVAILABLE, retry
/// later) rather than queued: about a second of the 100,000-server refresh rate.
pub const ADVERTISEMENTS_WAITING_MAX: usize = 4096;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    xeno_schemas::clock::now_unix_ms()
}

fn unix_ms(instant: time::OffsetDateTime) -> u64 {
    u64::try_from(instant.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The rules the core applies, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rules {
    /// Aging: TTL and replay window.
    pub aging: Aging,
    /// Longest lifetime (Expiry minus Issued) accepted, ms.
    pub lifetime_max_ms: u64,
}

/// A lookup.
#[derive(Debug, Clone, PartialEq)]
pub struct LookupQuery {
    /// The token (canonical name, alias or element path).
    pub token: String,
    /// The values wanted.
    pub values: Values,
    /// Matches per page (0: [`PAGE_SIZE_DEFAULT`]).
    pub page_size: u32,
    /// Cursor from the previous page; empty for the first.
    pub cursor: String,
    /// Include records older than one TTL.
    pub include_stale: bool,
}

/// One page of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupPage {
    /// Matches in the whole result.
    pub total_matches: u64,
    /// This page.
    pub matches: Vec<Match>,
    /// Cursor for the next page; empty when this is the last.
    pub next_cursor: String,
}

/// One server's stored advertisement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAdvertisement {
    /// The document, as signed.
    pub xml: String,
    /// How long ago the XIS received it, ms.
    pub age_ms: u64,
    /// Older than one TTL.
    pub stale: bool,
}

/// The XIS.
pub struct Xis {
    store: Store,
    rules: Rules,
    /// Parsing and signature checks run on blocking threads, at most one per core, so that a
    /// burst of advertisements shares the CPU with lookups instead of queueing ahead of them
    /// on the async workers.
    checkers: Arc<tokio::sync::Semaphore>,
    waiting: AtomicUsize,
}

/// An advertisement that passed every check, ready for the store.
struct Checked {
    record: NewRecord,
    server_id: String,
    version: u64,
}

/// The record a verified advertisement becomes (also used to replay the embedded log).
pub fn record_for(
    advertisement: &ServerAdvertisement,
    xml: &str,
    received_ms: u64,
) -> Result<NewRecord, tokens::TokenError> {
    let mut tokens = tokens::extract(advertisement)?;
    #[allow(clippy::cast_precision_loss)] // Unix ms are below 2^53.
    tokens.push(Token {
        name: RECEIVED_TOKEN.to_owned(),
        value: TokenValue::Number(received_ms as f64),
    });
    Ok(NewRecord {
        server_id: advertisement.server_id.clone(),
        version: advertisement.version,
        xml: xml.to_owned(),
        endpoint: advertisement.endpoint.clone(),
        tokens,
        received_ms,
    })
}

/// Checks an advertisement's signature: present, by the key its ServerId names, over its
/// canonical form.
pub fn check_signature(advertisement: &ServerAdvertisement) -> Result<(), XisError> {
    advertisement
        .check_self_certified()
        .map_err(XisError::Unauthenticated)
}

/// Every check of an advertisement, in order; the record to store if all pass.
fn check(xml: &str, rules: Rules) -> Result<Checked, XisError> {
    let advertisement = ServerAdvertisement::parse(xml.as_bytes())
        .map_err(|errors| XisError::InvalidArgument(errors.to_string()))?;
    check_signature(&advertisement)?;
    let now = now_ms();
    let issued = unix_ms(advertisement.issued_at);
    let expires = unix_ms(advertisement.expires_at);
    if expires <= now {
        return Err(XisError::InvalidArgument(format!(
            "Expiry: the advertisement expired {} ms ago",
            now - expires
        )));
    }
    if issued > now + CLOCK_SKEW_MAX_MS {
        return Err(XisError::InvalidArgument(format!(
            "Issued: {} ms in the future (at most {CLOCK_SKEW_MAX_MS} ms of clock skew is accepted)",
            issued - now
        )));
    }
    if expires - issued > rules.lifetime_max_ms {
        return Err(XisError::InvalidArgument(format!(
            "Expiry: a lifetime of {} ms exceeds this XIS's limit of {} ms",
            expires - issued,
            rules.lifetime_max_ms
        )));
    }
    let record = record_for(&advertisement, xml, now)
        .map_err(|error| XisError::InvalidArgument(error.to_string()))?;
    Ok(Checked {
        record,
        server_id: advertisement.server_id,
        version: advertisement.version,
    })
}

impl Xis {
    /// A core over `store`.
    pub fn new(store: Store, rules: Rules) -> Xis {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Xis {
            store,
            rules,
            checkers: Arc::new(tokio::sync::Semaphore::new(cores)),
            waiting: AtomicUsize::new(0),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The rules.
    pub fn rules(&self) -> Rules {
        self.rules
    }

    /// Publishes or replaces a server's advertisement (the paper's "advertise" and "update").
    pub async fn advertise(&self, xml: String) -> Result<Advertised, XisError> {
        if xml.len() > ADVERTISEMENT_BYTES_MAX {
            return Err(XisError::InvalidArgument(format!(
                "the advertisement is {} bytes; the limit is {ADVERTISEMENT_BYTES_MAX}",
                xml.len()
            )));
        }
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= ADVERTISEMENTS_WAITING_MAX {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(XisError::Overloaded(ADVERTISEMENTS_WAITING_MAX));
        }
        let checked = self.check_off_the_workers(xml).await;
        self.waiting.fetch_sub(1, Ordering::AcqRel);
        let checked = checked?;
        let tokens = u32::try_from(checked.record.tokens.len()).unwrap_or(u32::MAX);
        match self.store.put(checked.record).await? {
            PutOutcome::Stored { .. } => Ok(Advertised {
                server_id: checked.server_id,
                version: checked.version,
                tokens,
            }),
            PutOutcome::NotNewer { stored } => Err(XisError::NotNewer {
                offered: checked.version,
                stored,
            }),
        }
    }

    async fn check_off_the_workers(&self, xml: String) -> Result<Checked, XisError> {
        let _permit = Arc::clone(&self.checkers)
            .acquire_owned()
            .await
            .map_err(|_| XisError::Overloaded(0))?;
        let rules = self.rules;
        tokio::task::spawn_blocking(move || check(&xml, rules))
            .await
            .map_err(|_| XisError::Overloaded(0))?
    }

    /// One server's advertisement.
    pub async fn get(&self, server_id: &str) -> Result<StoredAdvertisement, XisError> {
        if server_id.len() != 64
            || !server_id
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(XisError::InvalidArgument(format!(
                "server_id {server_id:?} is not a key fingerprint (64 lowercase hex digits)"
            )));
        }
        let now = now_ms();
        let not_found = || {
            XisError::NotFound(format!(
                "no advertisement for {server_id} (unknown, or discarded after aging)"
            ))
        };
        let record = self.store.get(server_id).await?.ok_or_else(not_found)?;
        let age_ms = now.saturating_sub(record.meta.received_ms);
        if age_ms >= 2 * self.rules.aging.ttl_ms {
            return Err(not_found());
        }
        Ok(StoredAdvertisement {
            xml: record.xml,
            age_ms,
            stale: age_ms >= self.rules.aging.ttl_ms,
        })
    }

    /// Ages records (the daemon calls this periodically).
    pub async fn sweep(&self) -> Result<crate::store::SweepReport, XisError> {
        Ok(self.store.sweep(now_ms()).await?)
    }

    /// The inverted-file lookup (the paper's "lookup XenoServer").
    pub async fn lookup(&self, query: &LookupQuery) -> Result<LookupPage, XisError> {
        let plan = Plan::new(query)?;
        let page_size = match query.page_size {
            0 => PAGE_SIZE_DEFAULT,
            size if size <= PAGE_SIZE_MAX => size,
            size => {
                return Err(XisError::InvalidArgument(format!(
                    "page_size {size} is over the limit of {PAGE_SIZE_MAX}"
                )));
            }
        } as usize;
        let start = if query.cursor.is_empty() {
            Cursor {
                phase: 0,
                after: None,
            }
        } else {
            let cursor = cursor::decode(&plan.fingerprint, &query.cursor)
                .map_err(|error| XisError::InvalidArgument(error.to_string()))?;
            if cursor.phase >= plan.sets.len() {
                return Err(XisError::InvalidArgument("cursor is malformed".to_owned()));
            }
            cursor
        };
        let now = now_ms();
        if self.store.sweeps_before_lookup() {
            self.store.sweep(now).await?;
        }
        let counts = futures::future::try_join_all(
            plan.sets
                .iter()
                .map(|(set, range)| self.store.count(plan.set_ref(*set), range)),
        )
        .await?;
        let total_matches = counts.iter().sum();
        let (entries, next) = self.page(&plan, &counts, start, page_size).await?;
        let ids: Vec<String> = entries.iter().map(|(_, e)| e.server_id.clone()).collect();
        let metas = self.store.metas(&ids).await?;
        let ttl = self.rules.aging.ttl_ms;
        let matches = entries
            .into_iter()
            .zip(metas)
            .filter_map(|((freshness, entry), meta)| {
                let meta = meta?;
                let age_ms = now.saturating_sub(meta.received_ms);
                let stale = freshness == Freshness::Stale || age_ms >= ttl;
                // The record's expiry (Redis) or a sweep not yet run may leave postings behind.
                if age_ms >= 2 * ttl || (stale && !query.include_stale) {
                    return None;
                }
                Some(Match {
                    server_id: entry.server_id,
                    value: entry.value,
                    version: meta.version,
                    age_ms,
                    stale,
                    endpoint: meta.endpoint,
                })
            })
            .collect();
        Ok(LookupPage {
            total_matches,
            matches,
            next_cursor: next
                .map(|cursor| cursor::encode(&plan.fingerprint, &cursor))
                .unwrap_or_default(),
        })
    }

    /// Collects one page starting at `start`, and the cursor after it.
    async fn page(
        &self,
        plan: &Plan,
        counts: &[u64],
        start: Cursor,
        page_size: usize,
    ) -> Result<(Vec<(Freshness, Entry)>, Option<Cursor>), XisError> {
        let mut entries: Vec<(Freshness, Entry)> = Vec::with_capacity(page_size);
        let mut after = start.after;
        for phase in start.phase..plan.sets.len() {
            let remaining = page_size - entries.len();
            if remaining == 0 {
                // The page is full at a phase boundary: continue where something remains.
                let next = (phase..plan.sets.len()).find(|p| counts[*p] > 0);
                return Ok((entries, next.map(|phase| Cursor { phase, after: None })));
            }
            let (set, range) = &plan.sets[phase];
            let scanned = self
                .store
                .scan(plan.set_ref(*set), range, after.as_ref(), remaining + 1)
                .await?;
            let more = scanned.len() > remaining;
            let taken: Vec<Entry> = scanned.into_iter().take(remaining).collect();
            if more {
                let position = position_after(after.as_ref(), &taken);
                entries.extend(taken.into_iter().map(|entry| (set.freshness, entry)));
                return Ok((
                    entries,
                    position.map(|after| Cursor {
                        phase,
                        after: Some(after),
                    }),
                ));
            }
            entries.extend(taken.into_iter().map(|entry| (set.freshness, entry)));
            after = None;
        }
        Ok((entries, None))
    }
}

/// The position after the last of `taken`, counting equal values for backends that resume by
/// offset within a run of them.
fn position_after(previous: Option<&Position>, taken: &[Entry]) -> Option<Position> {
    let last = taken.last()?;
    Some(match last.number {
        Some(value) => {
            let mut tie_offset = taken
                .iter()
                .rev()
                .take_while(|entry| entry.number == Some(value))
                .count() as u64;
            if tie_offset == taken.len() as u64
                && let Some(Position::Number {
                    value: previous_value,
                    tie_offset: previous_ties,
                    ..
                }) = previous
                && *previous_value == value
            {
                tie_offset += previous_ties;
            }
            Position::Number {
                value,
                member: last.member.clone(),
                tie_offset,
            }
        }
        None => Position::Text(last.member.clone()),
    })
}

/// A posting set of a plan: kind and freshness (the token is the plan's).
#[derive(Debug, Clone, Copy)]
struct PlanSet {
    kind: Kind,
    freshness: Freshness,
}

/// What a lookup reads, in order.
struct Plan {
    token: String,
    sets: Vec<(PlanSet, ValueRange)>,
    fingerprint: String,
}

impl Plan {
    fn new(query: &LookupQuery) -> Result<Plan, XisError> {
        if query.token.is_empty() || query.token.len() > TOKEN_NAME_BYTES_MAX {
            return Err(XisError::InvalidArgument(format!(
                "token must be 1 to {TOKEN_NAME_BYTES_MAX} bytes"
            )));
        }
        let token = tokens::resolve_token(&query.token).to_owned();
        let (ranges, values_text) = match &query.values {
            Values::Range { min, max } => {
                let low = min.unwrap_or(f64::NEG_INFINITY);
                let high = max.unwrap_or(f64::INFINITY);
                if low.is_nan() || high.is_nan() {
                    return Err(XisError::InvalidArgument(
                        "range: bounds must be numbers".to_owned(),
                    ));
                }
                if low > high {
                    return Err(XisError::InvalidArgument(format!(
                        "range: min {low} is greater than max {high}"
                    )));
                }
                (
                    vec![(
                        Kind::Number,
                        ValueRange::Number {
                            min: low,
                            max: high,
                        },
                    )],
                    format!("range:{:016x}:{:016x}", low.to_bits(), high.to_bits()),
                )
            }
            Values::Exact(value) => {
                if value.len() > TOKEN_VALUE_BYTES_MAX {
                    return Err(XisError::InvalidArgument(format!(
                        "exact: values are at most {TOKEN_VALUE_BYTES_MAX} bytes"
                    )));
                }
                let mut ranges = Vec::new();
                if let Some(number) = parse_plain_number(value) {
                    ranges.push((
                        Kind::Number,
                        ValueRange::Number {
                            min: number,
                            max: number,
                        },
                    ));
                }
                ranges.push((Kind::Text, ValueRange::Text(value.clone())));
                (ranges, format!("exact:{value}"))
            }
            Values::Any => (
                vec![
                    (
                        Kind::Number,
                        ValueRange::Number {
                            min: f64::NEG_INFINITY,
                            max: f64::INFINITY,
                        },
                    ),
                    (Kind::Text, ValueRange::AnyText),
                ],
                "any".to_owned(),
            ),
        };
        let mut freshness = vec![Freshness::Fresh];
        if query.include_stale {
            freshness.push(Freshness::Stale);
        }
        let sets = freshness
            .into_iter()
            .flat_map(|freshness| {
                ranges.iter().map(move |(kind, range)| {
                    (
                        PlanSet {
                            kind: *kind,
                            freshness,
                        },
                        range.clone(),
                    )
                })
            })
            .collect();
        let fingerprint = cursor::fingerprint(&token, &values_text, query.include_stale);
        Ok(Plan {
            token,
            sets,
            fingerprint,
        })
    }

    fn set_ref(&self, set: PlanSet) -> SetRef<'_> {
        SetRef {
            token: &self.token,
            kind: set.kind,
            freshness: set.freshness,
        }
    }
}
