//! The server's durable state in SQLite: sessions, their tasks, and every charge it has made or
//! still has to make. A charge is stored before it is sent, with the usage snapshot it bills, in
//! one transaction, so after a crash the server resends it under the same sequence number (the
//! corp answers a resend with its first answer) and never bills the same usage twice.

use anyhow::Context;
use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};
use std::path::Path;
use xeno_schemas::proto::common::v1::Usage;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS sessions (
        id TEXT PRIMARY KEY, owner_corp TEXT NOT NULL, owner_account TEXT NOT NULL, env_type TEXT NOT NULL,
        version TEXT NOT NULL, requirements_xml TEXT NOT NULL, order_id TEXT NOT NULL, order_corp TEXT NOT NULL,
        cpu_msps INTEGER NOT NULL, memory_mb INTEGER NOT NULL, net_kbps INTEGER NOT NULL,
        basis TEXT NOT NULL, currency TEXT NOT NULL, limit_minor INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL, ended_reason TEXT, returned_minor INTEGER, closed INTEGER NOT NULL DEFAULT 0,
        next_sequence INTEGER NOT NULL, charged_minor INTEGER NOT NULL, billed_usage BLOB NOT NULL,
        carry_fine TEXT NOT NULL, last_charge_ms INTEGER NOT NULL, started_charged INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tasks (
        session_id TEXT NOT NULL, task_id TEXT NOT NULL, name TEXT NOT NULL, program TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL, PRIMARY KEY (session_id, task_id))",
    // An order sent for validation whose session is not stored yet: if the server dies (or the
    // corp's answer is lost) in between, the order may be bound to this server with no session
    // to spend it; recovery closes it, so the client's funds come back.
    "CREATE TABLE IF NOT EXISTS validations (
        session_id TEXT PRIMARY KEY, order_id TEXT NOT NULL, order_corp TEXT NOT NULL,
        created_at_ms INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS charges (
        session_id TEXT NOT NULL, sequence INTEGER NOT NULL, amount_minor INTEGER NOT NULL, usage_xml TEXT NOT NULL,
        state TEXT NOT NULL, created_at_ms INTEGER NOT NULL, PRIMARY KEY (session_id, sequence))",
];

/// A session's fixed terms and its billing position.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRow {
    /// Id.
    pub id: String,
    /// Owner's corp.
    pub owner_corp: String,
    /// Owner's account.
    pub owner_account: String,
    /// EnvType.
    pub env_type: String,
    /// Version presented.
    pub version: String,
    /// The requirements as given.
    pub requirements_xml: String,
    /// The funding order.
    pub order_id: String,
    /// The order's corp.
    pub order_corp: String,
    /// Granted CPU.
    pub cpu_msps: u64,
    /// Granted memory.
    pub memory_mb: u64,
    /// Granted network.
    pub net_kbps: u64,
    /// `time` or `fuel`.
    pub basis: String,
    /// Currency.
    pub currency: String,
    /// The most this session may be charged (order cap and MaxSpend).
    pub limit_minor: u64,
    /// When funding or MaxDuration runs out.
    pub expires_at_ms: i64,
    /// Created.
    pub created_at_ms: i64,
    /// Set once ended.
    pub ended_reason: Option<String>,
    /// Returned to the client at settlement.
    pub returned_minor: Option<u64>,
    /// Whether the order has been closed.
    pub closed: bool,
    /// Billing position.
    pub billing: Billing,
}

/// Where billing stands: what has been billed so far, and what to charge next.
#[derive(Debug, Clone, PartialEq)]
pub struct Billing {
    /// The next charge's sequence number.
    pub next_sequence: u64,
    /// Acknowledged by the corp, in total.
    pub charged_minor: u64,
    /// Cumulative usage covered by charges made (sent or pending).
    pub billed: Usage,
    /// The fraction of a minor unit carried to the next charge, in 10^-21 major units.
    pub carry_fine: u128,
    /// When the last charge was made, Unix ms.
    pub last_charge_ms: i64,
    /// Whether the once-per-session price has been charged.
    pub started_charged: bool,
}

/// A charge made (or to be made) to the corp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRow {
    /// Sequence number.
    pub sequence: u64,
    /// Amount.
    pub amount_minor: u64,
    /// The UsageRecord.
    pub usage_xml: String,
    /// `pending`, `charged` or `refused`.
    pub state: String,
}

/// A task as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Task id.
    pub task_id: String,
    /// Name.
    pub name: String,
    /// Program kind.
    pub program: String,
}

/// The SQLite database.
pub struct Store {
    connection: Connection,
}

fn amount(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn stored(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating) the database in `data_dir`.
    pub fn open(data_dir: &Path) -> anyhow::Result<Store> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let path = data_dir.join("sessions.sqlite");
        let connection =
            Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "FULL")?;
        for statement in SCHEMA {
            connection.execute(statement, [])?;
        }
        Ok(Store { connection })
    }

    /// Records that `order_id` (of `order_corp`) is about to be validated for `session_id`.
    pub fn begin_validation(
        &mut self,
        session_id: &str,
        order_id: &str,
        order_corp: &str,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        self.connection.execute(
            "INSERT INTO validations (session_id, order_id, order_corp, created_at_ms) VALUES (?1, ?2, ?3, ?4)",
            params![session_id, order_id, order_corp, now_ms],
        )?;
        Ok(())
    }

    /// Forgets a validation whose order needs nothing more from this server.
    pub fn forget_validation(&mut self, session_id: &str) -> anyhow::Result<()> {
        self.connection.execute(
            "DELETE FROM validations WHERE session_id = ?1",
            params![session_id],
        )?;
        Ok(())
    }

    /// Validations whose sessions were never stored: (session, order, corp).
    pub fn pending_validations(&self) -> anyhow::Result<Vec<(String, String, String)>> {
        let mut statement = self.connection.prepare(
            "SELECT session_id, order_id, order_corp FROM validations ORDER BY created_at_ms",
        )?;
        let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records a new session (its validation is then done with).
    pub fn insert_session(&mut self, session: &SessionRow) -> anyhow::Result<()> {
        let b = &session.billing;
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "DELETE FROM validations WHERE session_id = ?1",
            params![session.id],
        )?;
        transaction.execute(
            "INSERT INTO sessions (id, owner_corp, owner_account, env_type, version, requirements_xml, order_id, order_corp,
                cpu_msps, memory_mb, net_kbps, basis, currency, limit_minor, expires_at_ms, created_at_ms, ended_reason,
                returned_minor, closed, next_sequence, charged_minor, billed_usage, carry_fine, last_charge_ms, started_charged)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, NULL, NULL, 0, ?17, ?18, ?19, ?20, ?21, ?22)",
            params![
                session.id,
                session.owner_corp,
                session.owner_account,
                session.env_type,
                session.version,
                session.requirements_xml,
                session.order_id,
                session.order_corp,
                stored(session.cpu_msps),
                stored(session.memory_mb),
                stored(session.net_kbps),
                session.basis,
                session.currency,
                stored(session.limit_minor),
                session.expires_at_ms,
                session.created_at_ms,
                stored(b.next_sequence),
                stored(b.charged_minor),
                b.billed.encode_to_vec(),
                b.carry_fine.to_string(),
                b.last_charge_ms,
                b.started_charged,
            ],
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// Records a charge about to be sent together with the billing position after it, atomically.
    pub fn record_charge(
        &mut self,
        session_id: &str,
        charge: &ChargeRow,
        billing: &Billing,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "INSERT INTO charges (session_id, sequence, amount_minor, usage_xml, state, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![session_id, stored(charge.sequence), stored(charge.amount_minor), charge.usage_xml, charge.state, now_ms],
        )?;
        Self::update_billing(&transaction, session_id, billing)?;
        transaction.commit()?;
        Ok(())
    }

    fn update_billing(
        connection: &Connection,
        session_id: &str,
        billing: &Billing,
    ) -> anyhow::Result<()> {
        connection.execute(
            "UPDATE sessions SET next_sequence = ?2, charged_minor = ?3, billed_usage = ?4, carry_fine = ?5,
                last_charge_ms = ?6, started_charged = ?7 WHERE id = ?1",
            params![
                session_id,
                stored(billing.next_sequence),
                stored(billing.charged_minor),
                billing.billed.encode_to_vec(),
                billing.carry_fine.to_string(),
                billing.last_charge_ms,
                billing.started_charged,
            ],
        )?;
        Ok(())
    }

    /// Records the corp's answer to a charge.
    pub fn settle_charge(
        &mut self,
        session_id: &str,
        sequence: u64,
        state: &str,
        charged_minor: u64,
    ) -> anyhow::Result<()> {
        let transaction = self.connection.transaction()?;
        transaction.execute(
            "UPDATE charges SET state = ?3 WHERE session_id = ?1 AND sequence = ?2",
            params![session_id, stored(sequence), state],
        )?;
        transaction.execute(
            "UPDATE sessions SET charged_minor = ?2 WHERE id = ?1",
            params![session_id, stored(charged_minor)],
        )?;
        transaction.commit()?;
        Ok(())
    }

    /// Marks a session ended.
    pub fn end_session(&mut self, session_id: &str, reason: &str) -> anyhow::Result<()> {
        self.connection.execute(
            "UPDATE sessions SET ended_reason = COALESCE(ended_reason, ?2) WHERE id = ?1",
            params![session_id, reason],
        )?;
        Ok(())
    }

    /// Marks a session's order closed.
    pub fn close_session(&mut self, session_id: &str, returned_minor: u64) -> anyhow::Result<()> {
        self.connection.execute(
            "UPDATE sessions SET closed = 1, returned_minor = ?2 WHERE id = ?1",
            params![session_id, stored(returned_minor)],
        )?;
        Ok(())
    }

    /// Records a task.
    pub fn insert_task(
        &mut self,
        session_id: &str,
        task: &TaskRow,
        now_ms: i64,
    ) -> anyhow::Result<()> {
        self.connection.execute(
            "INSERT INTO tasks (session_id, task_id, name, program, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![session_id, task.task_id, task.name, task.program, now_ms],
        )?;
        Ok(())
    }

    /// Every session, newest last.
    pub fn sessions(&self) -> anyhow::Result<Vec<SessionRow>> {
        let mut statement = self.connection.prepare(
            "SELECT id, owner_corp, owner_account, env_type, version, requirements_xml, order_id, order_corp, cpu_msps,
                memory_mb, net_kbps, basis, currency, limit_minor, expires_at_ms, created_at_ms, ended_reason, returned_minor,
                closed, next_sequence, charged_minor, billed_usage, carry_fine, last_charge_ms, started_charged
             FROM sessions ORDER BY created_at_ms",
        )?;
        let rows = statement.query_map([], |row| {
            let billed: Vec<u8> = row.get(21)?;
            let carry: String = row.get(22)?;
            Ok(SessionRow {
                id: row.get(0)?,
                owner_corp: row.get(1)?,
                owner_account: row.get(2)?,
                env_type: row.get(3)?,
                version: row.get(4)?,
                requirements_xml: row.get(5)?,
                order_id: row.get(6)?,
                order_corp: row.get(7)?,
                cpu_msps: amount(row.get(8)?),
                memory_mb: amount(row.get(9)?),
                net_kbps: amount(row.get(10)?),
                basis: row.get(11)?,
                currency: row.get(12)?,
                limit_minor: amount(row.get(13)?),
                expires_at_ms: row.get(14)?,
                created_at_ms: row.get(15)?,
                ended_reason: row.get(16)?,
                returned_minor: row.get::<_, Option<i64>>(17)?.map(amount),
                closed: row.get(18)?,
                billing: Billing {
                    next_sequence: amount(row.get(19)?),
                    charged_minor: amount(row.get(20)?),
                    billed: Usage::decode(billed.as_slice()).unwrap_or_default(),
                    carry_fine: carry.parse().unwrap_or(0),
                    last_charge_ms: row.get(23)?,
                    started_charged: row.get(24)?,
                },
            })
        })?;
        rows.collect::<Result<_, _>>().context("reading sessions")
    }

    /// A session's tasks in deployment order.
    pub fn tasks(&self, session_id: &str) -> anyhow::Result<Vec<TaskRow>> {
        let mut statement = self.connection.prepare("SELECT task_id, name, program FROM tasks WHERE session_id = ?1 ORDER BY created_at_ms, task_id")?;
        let rows = statement.query_map([session_id], |row| {
            Ok(TaskRow {
                task_id: row.get(0)?,
                name: row.get(1)?,
                program: row.get(2)?,
            })
        })?;
        rows.collect::<Result<_, _>>().context("reading tasks")
    }

    /// A session's charges not yet answered by the corp, in sequence order.
    pub fn pending_charges(&self, session_id: &str) -> anyhow::Result<Vec<ChargeRow>> {
        let mut statement = self.connection.prepare(
            "SELECT sequence, amount_minor, usage_xml, state FROM charges WHERE session_id = ?1 AND state = 'pending' ORDER BY sequence",
        )?;
        let rows = statement.query_map([session_id], |row| {
            Ok(ChargeRow {
                sequence: amount(row.get(0)?),
                amount_minor: amount(row.get(1)?),
                usage_xml: row.get(2)?,
                state: row.get(3)?,
            })
        })?;
        rows.collect::<Result<_, _>>().context("reading charges")
    }

    /// Sum of acknowledged charges (for checks).
    pub fn charged_sum(&self, session_id: &str) -> anyhow::Result<u64> {
        let sum: Option<i64> = self
            .connection
            .query_row(
                "SELECT SUM(amount_minor) FROM charges WHERE session_id = ?1 AND state = 'charged'",
                [session_id],
                |row| row.get(0),
            )
            .optional()?
            .flatten();
        Ok(sum.map_or(0, amount))
    }
}
