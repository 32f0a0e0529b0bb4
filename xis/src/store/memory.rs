//! The embedded backend: the inverted file as ordered maps in this process.
//!
//! For each token, two posting sets per freshness: numbers as (value, member) pairs in a
//! [`CountedSet`], which counts a range without walking it, texts grouped by value in a
//! `BTreeMap<value, BTreeSet<server id>>`. An exact lookup is one map probe (its count the
//! group's size); a numeric range is counted from two ranks; a page resumes exactly after its
//! last entry. Records age through two queues ordered by receipt time; the
//! XIS sweeps before every lookup, so counts are exact. With a data directory, every accepted
//! advertisement is appended to [`super::log`] and replayed on restart; records discarded
//! less than a replay window ago come back as tombstones, so replays stay refused.

use super::counted::CountedSet;
use super::log::{self, LogWriter};
use super::{
    Aging, Entry, F64Key, Freshness, Kind, NewRecord, Position, PutOutcome, RecordMeta,
    SWEEP_BATCH_MAX, SetRef, StoreError, StoredRecord, SweepReport, ValueRange, number_entry,
    posting,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use tokio::sync::{mpsc, oneshot};

/// Most log writes waiting for the log thread; advertisers wait beyond it (backpressure rather
/// than unbounded memory). About a second of the benchmark's update rate.
pub const LOG_QUEUE_MAX: usize = 4096;

/// A text value and the servers carrying it.
type TextGroup<'a> = (&'a Box<str>, &'a BTreeSet<Box<str>>);

/// One posting set, grouped by value.
#[derive(Default)]
struct PostingSet {
    /// (value, member): counted, because a price range may span 100,000 distinct values.
    numbers: CountedSet<(F64Key, Box<str>)>,
    texts: BTreeMap<Box<str>, BTreeSet<Box<str>>>,
    text_total: usize,
}

impl PostingSet {
    fn insert(&mut self, posting: &RecordPosting) {
        match posting.kind {
            Kind::Number => {
                self.numbers
                    .insert((F64Key::new(posting.number), posting.member.clone()));
            }
            Kind::Text => {
                if let Some((value, server)) = posting.member.rsplit_once('\0')
                    && self
                        .texts
                        .entry(value.into())
                        .or_default()
                        .insert(server.into())
                {
                    self.text_total += 1;
                }
            }
        }
    }

    fn remove(&mut self, posting: &RecordPosting) {
        match posting.kind {
            Kind::Number => {
                let value = F64Key::new(posting.number);
                self.numbers
                    .remove_by(|(key, member)| (*key, &**member).cmp(&(value, &*posting.member)));
            }
            Kind::Text => {
                let Some((value, server)) = posting.member.rsplit_once('\0') else {
                    return;
                };
                if let Some(servers) = self.texts.get_mut(value) {
                    if servers.remove(server) {
                        self.text_total -= 1;
                    }
                    if servers.is_empty() {
                        self.texts.remove(value);
                    }
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.numbers.is_empty() && self.texts.is_empty()
    }

    fn count(&self, kind: Kind, range: &ValueRange) -> u64 {
        match (kind, range) {
            (Kind::Number, ValueRange::Number { min, max }) => {
                let (min, max) = (F64Key::new(*min), F64Key::new(*max));
                let below_max = self.numbers.rank(|(key, _)| *key <= max);
                let below_min = self.numbers.rank(|(key, _)| *key < min);
                below_max.saturating_sub(below_min) as u64
            }
            (Kind::Text, ValueRange::AnyText) => self.text_total as u64,
            (Kind::Text, ValueRange::Text(value)) => {
                self.texts.get(value.as_str()).map_or(0, |s| s.len() as u64)
            }
            _ => 0,
        }
    }

    fn scan(
        &self,
        kind: Kind,
        range: &ValueRange,
        after: Option<&Position>,
        limit: usize,
    ) -> Vec<Entry> {
        let mut entries = Vec::with_capacity(limit.min(1024));
        match (kind, range) {
            (Kind::Number, ValueRange::Number { min, max }) => {
                let (min, max) = (F64Key::new(*min), F64Key::new(*max));
                let start = match after {
                    Some(Position::Number { value, member, .. }) if F64Key::new(*value) >= min => {
                        let value = F64Key::new(*value);
                        self.numbers
                            .rank(|(key, other)| (*key, &**other) <= (value, member.as_str()))
                    }
                    _ => self.numbers.rank(|(key, _)| *key < min),
                };
                for (key, member) in self.numbers.iter_from(start) {
                    if *key > max || entries.len() == limit {
                        break;
                    }
                    if let Ok(entry) = number_entry(member.to_string(), key.value()) {
                        entries.push(entry);
                    }
                }
            }
            (Kind::Text, ValueRange::Text(_) | ValueRange::AnyText) => {
                let resume = match after {
                    Some(Position::Text(member)) => member.rsplit_once('\0'),
                    _ => None,
                };
                let groups: Box<dyn Iterator<Item = TextGroup<'_>>> = match range {
                    ValueRange::Text(value) => {
                        Box::new(self.texts.get_key_value(value.as_str()).into_iter())
                    }
                    _ => match resume {
                        Some((value, _)) => Box::new(
                            self.texts
                                .range::<str, _>((Bound::Included(value), Bound::Unbounded)),
                        ),
                        None => Box::new(self.texts.iter()),
                    },
                };
                for (value, servers) in groups {
                    let lower = match resume {
                        Some((at, server)) if at == &**value => Bound::Excluded(server),
                        Some((at, _)) if at > &**value => continue,
                        _ => Bound::Unbounded,
                    };
                    for server in servers.range::<str, _>((lower, Bound::Unbounded)) {
                        if entries.len() == limit {
                            return entries;
                        }
                        entries.push(Entry {
                            member: super::text_member(server, value),
                            server_id: server.to_string(),
                            value: value.to_string(),
                            number: None,
                        });
                    }
                }
            }
            _ => {}
        }
        entries
    }
}

/// A posting of one record: token, set, member, and value for numbers.
#[derive(Debug, Clone, PartialEq)]
struct RecordPosting {
    token: Box<str>,
    kind: Kind,
    member: Box<str>,
    number: f64,
}

struct Record {
    version: u64,
    received_ms: u64,
    endpoint: String,
    xml: Arc<str>,
    postings: Vec<RecordPosting>,
    freshness: Freshness,
}

#[derive(Default)]
struct Index {
    records: HashMap<String, Record>,
    sets: HashMap<Box<str>, [PostingSet; 2]>,
    /// (received, server) of fresh records, then of stale ones.
    aging: [BTreeSet<(u64, String)>; 2],
    /// Discarded servers' last records, until replays of them can no longer be believed.
    tombstones: HashMap<String, Tombstone>,
    tombstone_expiry: BTreeSet<(u64, String)>,
    live_bytes: u64,
}

/// What is kept of a discarded record: its version, to refuse replays of it or anything older
/// until `until_ms`; and the record itself, so that log compaction keeps it and a restart
/// rebuilds the tombstone from it.
struct Tombstone {
    version: u64,
    until_ms: u64,
    received_ms: u64,
    xml: Arc<str>,
}

fn slot(freshness: Freshness) -> usize {
    match freshness {
        Freshness::Fresh => 0,
        Freshness::Stale => 1,
    }
}

impl Index {
    fn add_postings(&mut self, postings: &[RecordPosting], freshness: Freshness) {
        for posting in postings {
            let sets = self.sets.entry(posting.token.clone()).or_default();
            sets[slot(freshness)].insert(posting);
        }
    }

    fn remove_postings<'a>(
        &mut self,
        postings: impl Iterator<Item = &'a RecordPosting>,
        freshness: Freshness,
    ) {
        for posting in postings {
            let Some(sets) = self.sets.get_mut(&posting.token) else {
                continue;
            };
            sets[slot(freshness)].remove(posting);
            if sets.iter().all(PostingSet::is_empty) {
                self.sets.remove(&posting.token);
            }
        }
    }

    fn put(&mut self, record: NewRecord) -> (PutOutcome, Option<Arc<str>>) {
        let stored = self
            .records
            .get(&record.server_id)
            .map(|old| old.version)
            .or_else(|| {
                self.tombstones
                    .get(&record.server_id)
                    .map(|tombstone| tombstone.version)
            });
        if let Some(stored) = stored
            && stored >= record.version
        {
            return (PutOutcome::NotNewer { stored }, None);
        }
        let postings: Vec<RecordPosting> = record
            .tokens
            .iter()
            .map(|token| {
                let (kind, member) = posting(&record.server_id, token);
                let number = match token.value {
                    xeno_schemas::documents::tokens::TokenValue::Number(number) => number,
                    xeno_schemas::documents::tokens::TokenValue::Text(_) => 0.0,
                };
                RecordPosting {
                    token: token.name.as_str().into(),
                    kind,
                    member: member.into(),
                    number,
                }
            })
            .collect();
        let mut previous = None;
        if let Some(old) = self.records.remove(&record.server_id) {
            previous = Some(old.version);
            self.live_bytes -= old.xml.len() as u64;
            self.aging[slot(old.freshness)].remove(&(old.received_ms, record.server_id.clone()));
            match old.freshness {
                // Only what changed moves: most of an update is the same as the last one.
                Freshness::Fresh => {
                    let gone = old.postings.iter().filter(|p| !postings.contains(p));
                    self.remove_postings(gone, Freshness::Fresh);
                    let new: Vec<RecordPosting> = postings
                        .iter()
                        .filter(|p| !old.postings.contains(p))
                        .cloned()
                        .collect();
                    self.add_postings(&new, Freshness::Fresh);
                }
                Freshness::Stale => {
                    self.remove_postings(old.postings.iter(), Freshness::Stale);
                    self.add_postings(&postings, Freshness::Fresh);
                }
            }
        } else {
            self.tombstones.remove(&record.server_id);
            self.add_postings(&postings, Freshness::Fresh);
        }
        let xml: Arc<str> = record.xml.into();
        self.live_bytes += xml.len() as u64;
        self.aging[0].insert((record.received_ms, record.server_id.clone()));
        self.records.insert(
            record.server_id,
            Record {
                version: record.version,
                received_ms: record.received_ms,
                endpoint: record.endpoint,
                xml: Arc::clone(&xml),
                postings,
                freshness: Freshness::Fresh,
            },
        );
        (PutOutcome::Stored { previous }, Some(xml))
    }

    /// Leaves a tombstone for a discarded record, replacing an older one.
    fn bury(
        &mut self,
        server_id: String,
        version: u64,
        until_ms: u64,
        received_ms: u64,
        xml: Arc<str>,
    ) {
        if self
            .tombstones
            .get(&server_id)
            .is_some_and(|old| old.version >= version)
        {
            return;
        }
        self.tombstone_expiry.insert((until_ms, server_id.clone()));
        self.tombstones.insert(
            server_id,
            Tombstone {
                version,
                until_ms,
                received_ms,
                xml,
            },
        );
    }

    /// The first due entry of an aging queue.
    fn due(&self, freshness: Freshness, cutoff_ms: u64) -> Option<(u64, String)> {
        self.aging[slot(freshness)]
            .first()
            .filter(|(received, _)| *received < cutoff_ms)
            .cloned()
    }

    fn sweep_batch(&mut self, now_ms: u64, aging: Aging, report: &mut SweepReport) -> bool {
        let mut handled = 0;
        while handled < SWEEP_BATCH_MAX {
            if let Some((until, server_id)) = self.tombstone_expiry.first().cloned()
                && until < now_ms
            {
                self.tombstone_expiry.pop_first();
                if self
                    .tombstones
                    .get(&server_id)
                    .is_some_and(|tombstone| tombstone.until_ms == until)
                {
                    self.tombstones.remove(&server_id);
                }
                handled += 1;
            } else if let Some(entry) =
                self.due(Freshness::Fresh, now_ms.saturating_sub(aging.ttl_ms))
            {
                self.aging[0].remove(&entry);
                self.aging[1].insert(entry.clone());
                if let Some(mut record) = self.records.remove(&entry.1) {
                    self.remove_postings(record.postings.iter(), Freshness::Fresh);
                    self.add_postings(&record.postings, Freshness::Stale);
                    record.freshness = Freshness::Stale;
                    self.records.insert(entry.1, record);
                }
                report.staled += 1;
                handled += 1;
            } else if let Some(entry) =
                self.due(Freshness::Stale, now_ms.saturating_sub(2 * aging.ttl_ms))
            {
                self.aging[1].remove(&entry);
                if let Some(record) = self.records.remove(&entry.1) {
                    self.remove_postings(record.postings.iter(), Freshness::Stale);
                    self.live_bytes -= record.xml.len() as u64;
                    let until = now_ms + aging.replay_window_ms;
                    self.bury(
                        entry.1,
                        record.version,
                        until,
                        record.received_ms,
                        record.xml,
                    );
                }
                report.discarded += 1;
                handled += 1;
            } else {
                return false;
            }
        }
        true
    }

    fn is_due(&self, now_ms: u64, aging: Aging) -> bool {
        self.due(Freshness::Fresh, now_ms.saturating_sub(aging.ttl_ms))
            .is_some()
            || self
                .due(Freshness::Stale, now_ms.saturating_sub(2 * aging.ttl_ms))
                .is_some()
            || self
                .tombstone_expiry
                .first()
                .is_some_and(|(until, _)| *until < now_ms)
    }
}

enum LogCommand {
    Append(u64, Arc<str>),
    Tick,
    Flush(oneshot::Sender<Result<(), String>>),
}

/// The embedded store.
pub struct MemoryStore {
    index: Arc<RwLock<Index>>,
    aging: Aging,
    log: Option<mpsc::Sender<LogCommand>>,
}

impl MemoryStore {
    /// A store without persistence (tests, benchmarks, `xeno dev`).
    pub fn in_memory(aging: Aging) -> MemoryStore {
        MemoryStore {
            index: Arc::default(),
            aging,
            log: None,
        }
    }

    /// A store persisted in `data_dir`: replays its log (records older than two TTLs at
    /// `now_ms` are left out) and appends to it from now on. `reindex` turns a logged document
    /// back into a record, or says why it must not be (unreadable, or its signature does not
    /// verify); such records are skipped.
    /// Must be called within a Tokio runtime.
    pub fn open(
        data_dir: &Path,
        aging: Aging,
        now_ms: u64,
        reindex: impl Fn(&str, u64) -> Result<NewRecord, String>,
    ) -> Result<MemoryStore, StoreError> {
        let path = log::log_path(data_dir);
        let mut index = Index::default();
        let mut replayed = 0u64;
        let mut skipped = 0u64;
        for (received_ms, xml) in log::read_all(&path)? {
            let discarded_at = received_ms + 2 * aging.ttl_ms;
            if discarded_at < now_ms && discarded_at + aging.replay_window_ms < now_ms {
                continue;
            }
            let record = match reindex(&xml, received_ms) {
                Ok(record) => record,
                Err(reason) => {
                    skipped += 1;
                    tracing::warn!(%reason, "skipping a record in the XIS log");
                    continue;
                }
            };
            if discarded_at < now_ms {
                // Discarded while the XIS was down (or before): replays of it are still refused,
                // exactly as if the XIS had stayed up.
                // (A server with a live record has nothing older in the log: entries are in
                // the order received, and compaction keeps one per server.)
                if !index.records.contains_key(&record.server_id) {
                    index.bury(
                        record.server_id,
                        record.version,
                        discarded_at + aging.replay_window_ms,
                        received_ms,
                        record.xml.into(),
                    );
                }
                continue;
            }
            index.put(record);
            replayed += 1;
        }
        tracing::info!(records = index.records.len(), replayed, skipped, path = %path.display(), "XIS log replayed");
        let index = Arc::new(RwLock::new(index));
        let writer = LogWriter::open(&path)?;
        let (sender, receiver) = mpsc::channel(LOG_QUEUE_MAX);
        let thread_index = Arc::clone(&index);
        std::thread::Builder::new()
            .name("xis-log".to_owned())
            .spawn(move || log_thread(writer, receiver, &thread_index))
            .map_err(|source| StoreError::Log {
                path: path.clone(),
                source,
            })?;
        let ticker = sender.downgrade();
        tokio::spawn(async move {
            let mut interval = tokio::time::interval(log::SYNC_INTERVAL);
            loop {
                interval.tick().await;
                let Some(sender) = ticker.upgrade() else {
                    return;
                };
                if sender.send(LogCommand::Tick).await.is_err() {
                    return;
                }
            }
        });
        Ok(MemoryStore {
            index,
            aging,
            log: Some(sender),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // A panic while holding the lock is a bug that already crashed a request; the index
        // itself is updated in steps that keep it consistent, so keep serving.
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// See [`super::Store::put`].
    pub async fn put(&self, record: NewRecord) -> Result<PutOutcome, StoreError> {
        let received_ms = record.received_ms;
        let (outcome, xml) = self.write().put(record);
        if let (Some(log), Some(xml)) = (&self.log, xml) {
            log.send(LogCommand::Append(received_ms, xml))
                .await
                .map_err(|_| StoreError::Log {
                    path: "xis.log".into(),
                    source: std::io::Error::other("the log thread has stopped"),
                })?;
        }
        Ok(outcome)
    }

    /// See [`super::Store::get`].
    pub fn get(&self, server_id: &str) -> Option<StoredRecord> {
        self.read()
            .records
            .get(server_id)
            .map(|record| StoredRecord {
                meta: RecordMeta {
                    version: record.version,
                    received_ms: record.received_ms,
                    endpoint: record.endpoint.clone(),
                },
                xml: record.xml.to_string(),
            })
    }

    /// See [`super::Store::metas`].
    pub fn metas(&self, server_ids: &[String]) -> Vec<Option<RecordMeta>> {
        let index = self.read();
        server_ids
            .iter()
            .map(|id| {
                index.records.get(id).map(|record| RecordMeta {
                    version: record.version,
                    received_ms: record.received_ms,
                    endpoint: record.endpoint.clone(),
                })
            })
            .collect()
    }

    /// See [`super::Store::count`].
    pub fn count(&self, set: SetRef<'_>, range: &ValueRange) -> u64 {
        let index = self.read();
        index
            .sets
            .get(set.token)
            .map_or(0, |sets| sets[slot(set.freshness)].count(set.kind, range))
    }

    /// See [`super::Store::scan`].
    pub fn scan(
        &self,
        set: SetRef<'_>,
        range: &ValueRange,
        after: Option<&Position>,
        limit: usize,
    ) -> Vec<Entry> {
        let index = self.read();
        index.sets.get(set.token).map_or_else(Vec::new, |sets| {
            sets[slot(set.freshness)].scan(set.kind, range, after, limit)
        })
    }

    /// See [`super::Store::sweep`]. Cheap when nothing is due (a read lock and two peeks).
    pub fn sweep(&self, now_ms: u64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        if !self.read().is_due(now_ms, self.aging) {
            return Ok(report);
        }
        // One batch per write lock, so lookups and updates interleave with a long sweep.
        while self.write().sweep_batch(now_ms, self.aging, &mut report) {}
        Ok(report)
    }

    /// Writes and syncs everything logged so far.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let Some(log) = &self.log else {
            return Ok(());
        };
        let (reply, done) = oneshot::channel();
        let stopped = || StoreError::Log {
            path: "xis.log".into(),
            source: std::io::Error::other("the log thread has stopped"),
        };
        log.send(LogCommand::Flush(reply))
            .await
            .map_err(|_| stopped())?;
        done.await
            .map_err(|_| stopped())?
            .map_err(|message| StoreError::Log {
                path: "xis.log".into(),
                source: std::io::Error::other(message),
            })
    }

    /// How many records are held (fresh and stale).
    pub fn len(&self) -> usize {
        self.read().records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn log_thread(
    mut writer: LogWriter,
    mut receiver: mpsc::Receiver<LogCommand>,
    index: &RwLock<Index>,
) {
    let mut encoded = Vec::with_capacity(64 * 1024);
    let mut failed: Option<String> = None;
    while let Some(command) = receiver.blocking_recv() {
        let result = match command {
            LogCommand::Append(received_ms, xml) => {
                encoded.clear();
                log::encode(received_ms, &xml, &mut encoded);
                let appended = writer.append(&encoded);
                // Write out when the queue is drained, so a burst becomes one write.
                if receiver.is_empty() {
                    appended.and_then(|()| writer.flush(false))
                } else {
                    appended
                }
            }
            LogCommand::Tick => writer.flush(false).and_then(|()| {
                let (live, wants) = {
                    let index = index
                        .read()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    (index.live_bytes, writer.wants_compaction(index.live_bytes))
                };
                if wants {
                    let records: Vec<(u64, Arc<str>)> = {
                        let index = index
                            .read()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        // Tombstones' records too: a restart rebuilds them from the log.
                        index
                            .records
                            .values()
                            .map(|record| (record.received_ms, Arc::clone(&record.xml)))
                            .chain(index.tombstones.values().map(|tombstone| {
                                (tombstone.received_ms, Arc::clone(&tombstone.xml))
                            }))
                            .collect()
                    };
                    tracing::info!(
                        live_bytes = live,
                        records = records.len(),
                        "compacting the XIS log"
                    );
                    writer.compact(&records)
                } else {
                    Ok(())
                }
            }),
            LogCommand::Flush(reply) => {
                let result = writer.flush(true);
                let answer = match (&failed, &result) {
                    (Some(message), _) => Err(message.clone()),
                    (None, Err(error)) => Err(error.to_string()),
                    (None, Ok(())) => Ok(()),
                };
                let _ = reply.send(answer);
                result
            }
        };
        if let Err(error) = result {
            tracing::error!(%error, "XIS log write failed; records are served but may not survive a restart");
            failed = Some(error.to_string());
        }
    }
    if let Err(error) = writer.flush(true) {
        tracing::error!(%error, "final XIS log sync failed");
    }
}
