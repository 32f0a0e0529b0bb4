//! The embedded store: one SQLite file in the data directory, in WAL mode with full
//! synchronous commits, so that an acknowledged batch survives a crash or power loss.

use super::rows::{self, SqlValue, statement_for};
use super::{SCHEMA, Store, StoreAudit, coalesce, sql, to_i64};
use crate::core::Snapshot;
use crate::model::Effect;
use anyhow::Context;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{Connection, ToSql};
use std::collections::HashMap;
use std::path::Path;

/// A SQLite database holding the corp's state.
pub struct SqliteStore {
    connection: Connection,
    // Held for its Drop: stops the thread with the store.
    _checkpointer: Checkpointer,
}

/// How often the checkpointer copies the log back into the database.
const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);

/// Copies committed log pages back into the database file on its own thread and connection, so
/// that the writer never stops mid-batch to checkpoint (SQLite's automatic checkpoint runs
/// inside the commit that crosses the threshold: those commits were the 25 ms tail).
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> anyhow::Result<Checkpointer> {
        let connection = Connection::open(path)
            .with_context(|| format!("opening {} to checkpoint", path.display()))?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("corp-checkpoint".to_owned())
            .spawn(move || {
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_INTERVAL)
                {
                    // PASSIVE never waits for the writer; what it cannot copy now it copies on
                    // the next round.
                    if let Err(error) =
                        connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!("checkpoint failed (retrying): {error}");
                    }
                }
            })?;
        Ok(Checkpointer {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlValue::Null => ToSqlOutput::Owned(Value::Null),
            SqlValue::Int(value) => ToSqlOutput::Owned(Value::Integer(*value)),
            SqlValue::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            SqlValue::Bool(value) => ToSqlOutput::Owned(Value::Integer(i64::from(*value))),
        })
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> anyhow::Result<SqliteStore> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let connection =
            Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: every commit is fsynced, so an acknowledged charge survives power loss too.
        connection.pragma_update(None, "synchronous", "FULL")?;
        // Every batch rewrites the pages of the books it touches: keep them cached (64 MiB
        // rather than SQLite's 2 MiB).
        connection.pragma_update(None, "cache_size", -65_536)?;
        // The checkpointer thread copies most of the log back; the writer still checkpoints
        // every 32 MiB of log, because only a checkpoint that no commit races can finish and
        // let the log restart from its beginning (under steady load the background one never
        // does, and the log would grow without bound). By then little is left to copy.
        connection.pragma_update(None, "wal_autocheckpoint", 8192)?;
        connection.busy_timeout(std::time::Duration::from_secs(5))?;
        for statement in SCHEMA {
            connection
                .execute(statement, [])
                .with_context(|| format!("creating the schema: {statement}"))?;
        }
        let checkpointer = Checkpointer::start(path)?;
        Ok(SqliteStore {
            connection,
            _checkpointer: checkpointer,
        })
    }

    fn query(&self, query: &str) -> anyhow::Result<Vec<Vec<SqlValue>>> {
        let mut statement = self.connection.prepare(query)?;
        let columns = statement.column_count();
        let mut rows = statement.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut values = Vec::with_capacity(columns);
            for index in 0..columns {
                values.push(match row.get_ref(index)? {
                    ValueRef::Null => SqlValue::Null,
                    ValueRef::Integer(value) => SqlValue::Int(value),
                    ValueRef::Text(text) => SqlValue::Text(String::from_utf8(text.to_vec())?),
                    other => anyhow::bail!("unexpected stored value {other:?}"),
                });
            }
            out.push(values);
        }
        Ok(out)
    }
}

impl Store for SqliteStore {
    fn load(&mut self) -> anyhow::Result<Snapshot> {
        rows::snapshot(|query| self.query(query))
    }

    fn persist(&mut self, effects: &[Effect]) -> anyhow::Result<()> {
        let transaction = self.connection.transaction()?;
        for effect in coalesce(effects) {
            let (statement, parameters) = statement_for(effect);
            transaction
                .prepare_cached(statement)?
                .execute(rusqlite::params_from_iter(parameters.iter()))?;
        }
        transaction.commit()?;
        Ok(())
    }

    fn audit(&mut self) -> anyhow::Result<StoreAudit> {
        rows::audit(|query| self.query(query))
    }

    fn usage_records(&mut self, ids: &[u64]) -> anyhow::Result<HashMap<u64, String>> {
        let mut statement = self.connection.prepare_cached(sql::SELECT_USAGE)?;
        let mut found = HashMap::with_capacity(ids.len());
        for &id in ids {
            let mut rows = statement.query([to_i64(id)])?;
            if let Some(row) = rows.next()? {
                found.insert(id, row.get(1)?);
            }
        }
        Ok(found)
    }
}
