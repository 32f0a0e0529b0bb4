//! The scale-out backend: the inverted file on a Redis Cluster (the paper's section III-B:
//! "each node will hold a portion of the inverted file mapping from one or more tokens on to
//! matching XenoServers", "the same part of the inverted file will be replicated over multiple
//! XIS nodes").
//!
//! Key layout, for a deployment prefix `P` (default `xis`). The part in braces is the Redis
//! Cluster hash tag, so it decides the slot and hence the master:
//!
//! | Key | Type | Holds |
//! |---|---|---|
//! | `P:{t:<token>}:n0`, `:n1` | sorted set | numeric postings of fresh (`0`) and stale (`1`) records: score = value, member = `<server id>:<value>` |
//! | `P:{t:<token>}:t0`, `:t1` | sorted set | text postings: score 0, member = `<value>\0<server id>` (lexicographic ranges) |
//! | `P:{s:<server id>}:rec` | hash | the record: `v` version, `r` received (Unix ms), `e` endpoint, `x` document; **expires after two TTLs** (the discard) |
//! | `P:{s:<server id>}:idx` | hash | what the record posted: `v`, `r`, `s` (`f` fresh / `s` stale), `t` tokens; removed by the sweep when it discards |
//! | `P:{s:<server id>}:last` | string | a discarded record's version, expiring after the replay window |
//! | `P:{aging}:0`, `:1` | sorted set | fresh and stale records by receipt time, for the sweep |
//! | `P:{aging}:lock` | string | which XIS node sweeps now (`SET NX PX`) |
//!
//! So a token's postings live on one master (one slot) and its replicas, and different tokens
//! spread over the masters. A write is a Lua script on the record's slot (the version check and
//! the record, atomically), then the changed postings, each a command on its token's slot.
//! Lookups read the posting sets (`ZCOUNT`/`ZRANGEBYSCORE`, `ZLEXCOUNT`/`ZRANGEBYLEX`) and the
//! page's records (`HMGET`), and drop entries whose record has expired: the record's expiry is
//! the authority on discarding, the sweep only reclaims the postings. Counts are as of the last
//! sweep (at most a sweep interval behind).
//!
//! Failover: the client follows the cluster's topology (MOVED, refresh on connection errors)
//! and retries, so when a master dies its promoted replica answers once the cluster has failed
//! over (`cluster-node-timeout` plus an election). With `read_from_replicas`, reads go to
//! replicas and keep answering throughout. Replication is asynchronous, as in Redis itself: an
//! advertisement acknowledged just before its master dies can be lost, and the server's next
//! refresh restores it.

use super::{
    Aging, Entry, Freshness, Kind, NewRecord, Position, PutOutcome, RecordMeta, SWEEP_BATCH_MAX,
    SetRef, StoreError, StoredRecord, SweepReport, ValueRange, number_entry, posting, text_entry,
};
use futures::future::try_join_all;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Script, cmd};
use std::collections::BTreeMap;
use std::time::Duration;
use xeno_schemas::documents::tokens::{Token, TokenValue, format_number, parse_plain_number};

/// How to reach and use the cluster.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// Seed nodes, `redis://host:port`.
    pub nodes: Vec<String>,
    /// Prefix of every key, so that several deployments (or tests) can share a cluster.
    pub key_prefix: String,
    /// Route reads to replicas.
    pub read_from_replicas: bool,
    /// Per-attempt response timeout.
    pub response_timeout: Duration,
    /// Retries per command (topology changes, failover).
    pub retries: u32,
}

/// Most passes a scan makes to fill a page when concurrent changes shift entries under it.
const SCAN_PASSES_MAX: usize = 4;

/// The sweep lock's lifetime: a crashed sweeper's lock lapses after it.
const SWEEP_LOCK_MS: u64 = 5_000;

const PUT_SCRIPT: &str = r"
local function newer(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
local stored = redis.call('HGET', KEYS[2], 'v')
if not stored then stored = redis.call('GET', KEYS[3]) end
if stored and not newer(ARGV[1], stored) then return {0, stored} end
local old = redis.call('HMGET', KEYS[2], 't', 's')
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'r', ARGV[2], 'e', ARGV[3], 'x', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('HSET', KEYS[2], 'v', ARGV[1], 'r', ARGV[2], 's', 'f', 't', ARGV[5])
redis.call('DEL', KEYS[3])
return {1, stored or '', old[1] or '', old[2] or ''}
";

const STALE_SCRIPT: &str = r"
local state = redis.call('HMGET', KEYS[1], 's', 'r', 'v', 't')
if state[1] ~= 'f' or state[2] ~= ARGV[1] then return false end
redis.call('HSET', KEYS[1], 's', 's')
return {state[3], state[4]}
";

const DISCARD_SCRIPT: &str = r"
local state = redis.call('HMGET', KEYS[1], 's', 'r', 'v', 't')
if state[1] ~= 's' or state[2] ~= ARGV[1] then return false end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[2], state[3], 'PX', ARGV[2])
return {state[3], state[4]}
";

/// The Redis Cluster store.
pub struct RedisStore {
    connection: ClusterConnection,
    prefix: String,
    aging: Aging,
    node_id: String,
    put_script: Script,
    stale_script: Script,
    discard_script: Script,
}

fn score_arg(value: f64) -> String {
    if value == f64::INFINITY {
        "+inf".to_owned()
    } else if value == f64::NEG_INFINITY {
        "-inf".to_owned()
    } else {
        format_number(value)
    }
}

fn freshness_digit(freshness: Freshness) -> char {
    match freshness {
        Freshness::Fresh => '0',
        Freshness::Stale => '1',
    }
}

/// Serialises a record's tokens for its `idx` hash: `name \t kind \t value` per line. Names
/// and values are XML tokens (no tabs or newlines survive whitespace collapsing).
fn encode_tokens(tokens: &[Token]) -> String {
    let mut out = String::new();
    for token in tokens {
        let (kind, value) = match &token.value {
            TokenValue::Number(number) => ('n', format_number(*number)),
            TokenValue::Text(text) => ('t', text.clone()),
        };
        out.push_str(&token.name);
        out.push('\t');
        out.push(kind);
        out.push('\t');
        out.push_str(&value);
        out.push('\n');
    }
    out
}

fn decode_tokens(text: &str) -> Result<Vec<Token>, StoreError> {
    text.lines()
        .map(|line| {
            let mut fields = line.splitn(3, '\t');
            let (Some(name), Some(kind), Some(value)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(StoreError::Corrupt(format!("token line {line:?}")));
            };
            let value = match kind {
                "n" => TokenValue::Number(
                    parse_plain_number(value)
                        .ok_or_else(|| StoreError::Corrupt(format!("number {value:?}")))?,
                ),
                _ => TokenValue::Text(value.to_owned()),
            };
            Ok(Token {
                name: name.to_owned(),
                value,
            })
        })
        .collect()
}

impl RedisStore {
    /// Connects to the cluster.
    pub async fn connect(options: &RedisOptions, aging: Aging) -> Result<RedisStore, StoreError> {
        let mut builder = redis::cluster::ClusterClientBuilder::new(options.nodes.clone())
            .retries(options.retries)
            .min_retry_wait(50)
            .max_retry_wait(1000)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(options.response_timeout)
            .overall_response_timeout(None);
        if options.read_from_replicas {
            builder =
                builder.read_routing_strategy(redis::cluster_read_routing::RandomReplicaStrategy);
        }
        let client = builder.build()?;
        let connection = client.get_async_connection().await?;
        Ok(RedisStore {
            connection,
            prefix: options.key_prefix.clone(),
            aging,
            node_id: format!("{}:{}", std::process::id(), rand_suffix()),
            put_script: Script::new(PUT_SCRIPT),
            stale_script: Script::new(STALE_SCRIPT),
            discard_script: Script::new(DISCARD_SCRIPT),
        })
    }

    fn set_key(&self, token: &str, kind: Kind, freshness: Freshness) -> String {
        let kind = match kind {
            Kind::Number => 'n',
            Kind::Text => 't',
        };
        format!(
            "{}:{{t:{token}}}:{kind}{}",
            self.prefix,
            freshness_digit(freshness)
        )
    }

    fn server_key(&self, server_id: &str, part: &str) -> String {
        format!("{}:{{s:{server_id}}}:{part}", self.prefix)
    }

    fn aging_key(&self, part: &str) -> String {
        format!("{}:{{aging}}:{part}", self.prefix)
    }

    async fn run<T: redis::FromRedisValue>(&self, command: Cmd) -> Result<T, StoreError> {
        let mut connection = self.connection.clone();
        Ok(command.query_async(&mut connection).await?)
    }

    /// The commands that add or remove `tokens` of `server_id` in the sets of `freshness`,
    /// grouped by set.
    fn posting_commands(
        &self,
        server_id: &str,
        tokens: &[&Token],
        freshness: Freshness,
        add: bool,
    ) -> Vec<Cmd> {
        let mut by_set: BTreeMap<String, Vec<(f64, String)>> = BTreeMap::new();
        for token in tokens {
            let (kind, member) = posting(server_id, token);
            let score = match token.value {
                TokenValue::Number(number) => number,
                TokenValue::Text(_) => 0.0,
            };
            by_set
                .entry(self.set_key(&token.name, kind, freshness))
                .or_default()
                .push((score, member));
        }
        by_set
            .into_iter()
            .map(|(key, members)| {
                let mut command = cmd(if add { "ZADD" } else { "ZREM" });
                command.arg(key);
                for (score, member) in members {
                    if add {
                        command.arg(score_arg(score));
                    }
                    command.arg(member);
                }
                command
            })
            .collect()
    }

    async fn run_all(&self, commands: Vec<Cmd>) -> Result<(), StoreError> {
        try_join_all(
            commands
                .into_iter()
                .map(|command| self.run::<redis::Value>(command)),
        )
        .await?;
        Ok(())
    }

    /// Puts a server's current tokens in the fresh sets and its aging entry in the fresh queue
    /// (after a write, or to repair a race with the sweep).
    async fn place_fresh(
        &self,
        server_id: &str,
        tokens: &[Token],
        received_ms: u64,
        also_remove_stale: &[Token],
    ) -> Result<(), StoreError> {
        let all: Vec<&Token> = tokens.iter().collect();
        let mut commands = self.posting_commands(server_id, &all, Freshness::Fresh, true);
        let stale: Vec<&Token> = tokens.iter().chain(also_remove_stale).collect();
        commands.extend(self.posting_commands(server_id, &stale, Freshness::Stale, false));
        commands.push(
            cmd("ZADD")
                .arg(self.aging_key("0"))
                .arg(received_ms)
                .arg(server_id)
                .clone(),
        );
        commands.push(cmd("ZREM").arg(self.aging_key("1")).arg(server_id).clone());
        self.run_all(commands).await
    }

    /// See [`super::Store::put`].
    pub async fn put(&self, record: NewRecord) -> Result<PutOutcome, StoreError> {
        let encoded = encode_tokens(&record.tokens);
        let mut connection = self.connection.clone();
        let reply: Vec<String> = self
            .put_script
            .key(self.server_key(&record.server_id, "rec"))
            .key(self.server_key(&record.server_id, "idx"))
            .key(self.server_key(&record.server_id, "last"))
            .arg(record.version)
            .arg(record.received_ms)
            .arg(&record.endpoint)
            .arg(&record.xml)
            .arg(&encoded)
            .arg(2 * self.aging.ttl_ms)
            .invoke_async(&mut connection)
            .await?;
        let parse_version = |text: &str| {
            text.parse::<u64>()
                .map_err(|_| StoreError::Corrupt(format!("version {text:?}")))
        };
        match reply.as_slice() {
            [flag, stored] if flag == "0" => Ok(PutOutcome::NotNewer {
                stored: parse_version(stored)?,
            }),
            [flag, previous, old_tokens, old_state] if flag == "1" => {
                let old = decode_tokens(old_tokens)?;
                let mut commands = Vec::new();
                match old_state.as_str() {
                    "f" => {
                        // Only what changed: most of an update is the same as the last one.
                        let gone: Vec<&Token> =
                            old.iter().filter(|t| !record.tokens.contains(t)).collect();
                        let new: Vec<&Token> =
                            record.tokens.iter().filter(|t| !old.contains(t)).collect();
                        commands.extend(self.posting_commands(
                            &record.server_id,
                            &gone,
                            Freshness::Fresh,
                            false,
                        ));
                        commands.extend(self.posting_commands(
                            &record.server_id,
                            &new,
                            Freshness::Fresh,
                            true,
                        ));
                    }
                    _ => {
                        let old: Vec<&Token> = old.iter().collect();
                        let new: Vec<&Token> = record.tokens.iter().collect();
                        commands.extend(self.posting_commands(
                            &record.server_id,
                            &old,
                            Freshness::Stale,
                            false,
                        ));
                        commands.extend(self.posting_commands(
                            &record.server_id,
                            &new,
                            Freshness::Fresh,
                            true,
                        ));
                        commands.push(
                            cmd("ZREM")
                                .arg(self.aging_key("1"))
                                .arg(&record.server_id)
                                .clone(),
                        );
                    }
                }
                commands.push(
                    cmd("ZADD")
                        .arg(self.aging_key("0"))
                        .arg(record.received_ms)
                        .arg(&record.server_id)
                        .clone(),
                );
                self.run_all(commands).await?;
                Ok(PutOutcome::Stored {
                    previous: if previous.is_empty() {
                        None
                    } else {
                        Some(parse_version(previous)?)
                    },
                })
            }
            other => Err(StoreError::Corrupt(format!(
                "put script answered {other:?}"
            ))),
        }
    }

    /// See [`super::Store::get`].
    pub async fn get(&self, server_id: &str) -> Result<Option<StoredRecord>, StoreError> {
        let fields: Vec<Option<String>> = self
            .run(
                cmd("HMGET")
                    .arg(self.server_key(server_id, "rec"))
                    .arg(&["v", "r", "e", "x"])
                    .clone(),
            )
            .await?;
        match fields.as_slice() {
            [Some(version), Some(received), Some(endpoint), Some(xml)] => Ok(Some(StoredRecord {
                meta: meta(version, received, endpoint)?,
                xml: xml.clone(),
            })),
            _ => Ok(None),
        }
    }

    /// See [`super::Store::metas`].
    pub async fn metas(
        &self,
        server_ids: &[String],
    ) -> Result<Vec<Option<RecordMeta>>, StoreError> {
        let replies = try_join_all(server_ids.iter().map(|id| {
            self.run::<Vec<Option<String>>>(
                cmd("HMGET")
                    .arg(self.server_key(id, "rec"))
                    .arg(&["v", "r", "e"])
                    .clone(),
            )
        }))
        .await?;
        replies
            .into_iter()
            .map(|fields| match fields.as_slice() {
                [Some(version), Some(received), Some(endpoint)] => {
                    meta(version, received, endpoint).map(Some)
                }
                _ => Ok(None),
            })
            .collect()
    }

    /// See [`super::Store::count`].
    pub async fn count(&self, set: SetRef<'_>, range: &ValueRange) -> Result<u64, StoreError> {
        let key = self.set_key(set.token, set.kind, set.freshness);
        match (set.kind, range) {
            (Kind::Number, ValueRange::Number { min, max }) => {
                self.run(
                    cmd("ZCOUNT")
                        .arg(key)
                        .arg(score_arg(*min))
                        .arg(score_arg(*max))
                        .clone(),
                )
                .await
            }
            (Kind::Text, ValueRange::AnyText) => self.run(cmd("ZCARD").arg(key).clone()).await,
            (Kind::Text, ValueRange::Text(value)) => {
                self.run(
                    cmd("ZLEXCOUNT")
                        .arg(key)
                        .arg(format!("[{value}\0").into_bytes())
                        .arg(format!("({value}\u{1}").into_bytes())
                        .clone(),
                )
                .await
            }
            _ => Ok(0),
        }
    }

    /// See [`super::Store::scan`]. Numeric pages resume within a run of equal values by offset
    /// (Redis cannot start a score range at a member), dropping anything at or before the
    /// cursor in case entries before it went away meanwhile.
    pub async fn scan(
        &self,
        set: SetRef<'_>,
        range: &ValueRange,
        after: Option<&Position>,
        limit: usize,
    ) -> Result<Vec<Entry>, StoreError> {
        let key = self.set_key(set.token, set.kind, set.freshness);
        match (set.kind, range) {
            (Kind::Number, ValueRange::Number { min, max }) => {
                let (start, mut offset, cursor) = match after {
                    Some(Position::Number {
                        value,
                        member,
                        tie_offset,
                    }) if *value >= *min => (*value, *tie_offset, Some((*value, member.clone()))),
                    _ => (*min, 0, None),
                };
                let mut entries = Vec::with_capacity(limit);
                for _ in 0..SCAN_PASSES_MAX {
                    let want = limit - entries.len();
                    let raw: Vec<(String, f64)> = self
                        .run(
                            cmd("ZRANGEBYSCORE")
                                .arg(&key)
                                .arg(score_arg(start))
                                .arg(score_arg(*max))
                                .arg("WITHSCORES")
                                .arg("LIMIT")
                                .arg(offset)
                                .arg(want)
                                .clone(),
                        )
                        .await?;
                    let fetched = raw.len();
                    offset += fetched as u64;
                    for (member, score) in raw {
                        let beyond = match &cursor {
                            Some((value, last)) => {
                                score > *value || (score == *value && member > *last)
                            }
                            None => true,
                        };
                        if beyond {
                            entries.push(number_entry(member, score)?);
                        }
                    }
                    if fetched < want || entries.len() >= limit {
                        break;
                    }
                }
                Ok(entries)
            }
            (Kind::Text, ValueRange::Text(_) | ValueRange::AnyText) => {
                let (lower, upper) = match range {
                    ValueRange::Text(value) => (
                        format!("[{value}\0").into_bytes(),
                        format!("({value}\u{1}").into_bytes(),
                    ),
                    _ => (b"-".to_vec(), b"+".to_vec()),
                };
                let lower = match after {
                    Some(Position::Text(member)) => {
                        let resume = format!("({member}").into_bytes();
                        if resume[1..] >= lower[1..] || lower == b"-" {
                            resume
                        } else {
                            lower
                        }
                    }
                    _ => lower,
                };
                let members: Vec<String> = self
                    .run(
                        cmd("ZRANGEBYLEX")
                            .arg(key)
                            .arg(lower)
                            .arg(upper)
                            .arg("LIMIT")
                            .arg(0)
                            .arg(limit)
                            .clone(),
                    )
                    .await?;
                members.into_iter().map(text_entry).collect()
            }
            _ => Ok(Vec::new()),
        }
    }

    /// See [`super::Store::sweep`]. One XIS node sweeps at a time (a lock key); the others
    /// skip.
    pub async fn sweep(&self, now_ms: u64) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        let locked: Option<String> = self
            .run(
                cmd("SET")
                    .arg(self.aging_key("lock"))
                    .arg(&self.node_id)
                    .arg("NX")
                    .arg("PX")
                    .arg(SWEEP_LOCK_MS)
                    .clone(),
            )
            .await?;
        if locked.is_none() {
            return Ok(report);
        }
        let result = self.sweep_locked(now_ms, &mut report).await;
        // Release only our own lock (it may have lapsed and been taken by another node).
        let holder: Option<String> = self
            .run(cmd("GET").arg(self.aging_key("lock")).clone())
            .await?;
        if holder.as_deref() == Some(self.node_id.as_str()) {
            self.run::<redis::Value>(cmd("DEL").arg(self.aging_key("lock")).clone())
                .await?;
        }
        result.map(|()| report)
    }

    async fn sweep_locked(&self, now_ms: u64, report: &mut SweepReport) -> Result<(), StoreError> {
        loop {
            let due = self
                .due("0", now_ms.saturating_sub(self.aging.ttl_ms))
                .await?;
            if due.is_empty() {
                break;
            }
            let batch = due.len();
            try_join_all(
                due.into_iter()
                    .map(|(id, received)| self.mark_stale(id, received)),
            )
            .await?;
            report.staled += batch as u64;
            if batch < SWEEP_BATCH_MAX {
                break;
            }
        }
        loop {
            let due = self
                .due("1", now_ms.saturating_sub(2 * self.aging.ttl_ms))
                .await?;
            if due.is_empty() {
                break;
            }
            let batch = due.len();
            try_join_all(
                due.into_iter()
                    .map(|(id, received)| self.discard(id, received)),
            )
            .await?;
            report.discarded += batch as u64;
            if batch < SWEEP_BATCH_MAX {
                break;
            }
        }
        Ok(())
    }

    async fn due(&self, queue: &str, cutoff_ms: u64) -> Result<Vec<(String, u64)>, StoreError> {
        self.run(
            cmd("ZRANGEBYSCORE")
                .arg(self.aging_key(queue))
                .arg("-inf")
                .arg(format!("({cutoff_ms}"))
                .arg("WITHSCORES")
                .arg("LIMIT")
                .arg(0)
                .arg(SWEEP_BATCH_MAX)
                .clone(),
        )
        .await
    }

    async fn mark_stale(&self, server_id: String, received_ms: u64) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let marked: Option<(String, String)> = self
            .stale_script
            .key(self.server_key(&server_id, "idx"))
            .arg(received_ms)
            .invoke_async(&mut connection)
            .await?;
        let Some((version, tokens)) = marked else {
            // Refreshed meanwhile (or gone): its aging entry is someone else's to move.
            let current: Option<u64> = self
                .run(
                    cmd("HGET")
                        .arg(self.server_key(&server_id, "idx"))
                        .arg("r")
                        .clone(),
                )
                .await?;
            if current.is_none() {
                self.run::<redis::Value>(
                    cmd("ZREM").arg(self.aging_key("0")).arg(&server_id).clone(),
                )
                .await?;
            }
            return Ok(());
        };
        let tokens = decode_tokens(&tokens)?;
        let all: Vec<&Token> = tokens.iter().collect();
        let mut commands = self.posting_commands(&server_id, &all, Freshness::Fresh, false);
        commands.extend(self.posting_commands(&server_id, &all, Freshness::Stale, true));
        commands.push(cmd("ZREM").arg(self.aging_key("0")).arg(&server_id).clone());
        commands.push(
            cmd("ZADD")
                .arg(self.aging_key("1"))
                .arg(received_ms)
                .arg(&server_id)
                .clone(),
        );
        self.run_all(commands).await?;
        // A write that raced with the move may have had its fresh postings moved too: put them
        // back where they belong.
        let now: Vec<Option<String>> = self
            .run(
                cmd("HMGET")
                    .arg(self.server_key(&server_id, "idx"))
                    .arg(&["v", "r", "t", "s"])
                    .clone(),
            )
            .await?;
        if let [
            Some(current),
            Some(received),
            Some(current_tokens),
            Some(state),
        ] = now.as_slice()
            && (current != &version || state == "f")
        {
            let received = received
                .parse()
                .map_err(|_| StoreError::Corrupt(format!("received {received:?}")))?;
            self.place_fresh(
                &server_id,
                &decode_tokens(current_tokens)?,
                received,
                &tokens,
            )
            .await?;
        }
        Ok(())
    }

    async fn discard(&self, server_id: String, received_ms: u64) -> Result<(), StoreError> {
        let mut connection = self.connection.clone();
        let discarded: Option<(String, String)> = self
            .discard_script
            .key(self.server_key(&server_id, "idx"))
            .key(self.server_key(&server_id, "last"))
            .arg(received_ms)
            .arg(self.aging.replay_window_ms)
            .invoke_async(&mut connection)
            .await?;
        let mut commands = Vec::new();
        if let Some((_, tokens)) = discarded {
            let tokens = decode_tokens(&tokens)?;
            let all: Vec<&Token> = tokens.iter().collect();
            commands.extend(self.posting_commands(&server_id, &all, Freshness::Stale, false));
        }
        commands.push(cmd("ZREM").arg(self.aging_key("1")).arg(&server_id).clone());
        self.run_all(commands).await
    }
}

fn meta(version: &str, received: &str, endpoint: &str) -> Result<RecordMeta, StoreError> {
    Ok(RecordMeta {
        version: version
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("version {version:?}")))?,
        received_ms: received
            .parse()
            .map_err(|_| StoreError::Corrupt(format!("received {received:?}")))?,
        endpoint: endpoint.to_owned(),
    })
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    hasher.finish()
}
