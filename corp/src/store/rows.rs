//! The mapping between records and rows, shared by both backends: each effect becomes one
//! statement with [`SqlValue`] parameters, and each stored row (as values) becomes a record.

use super::{sql, to_i64, to_u64};
use crate::model::{
    Account, ChargeOutcome, ChargeRecord, Effect, MachineSpec, OrderRow, OrderState, Privacy, Role,
    Settlement,
};
use anyhow::{Context, anyhow};
use xeno_schemas::documents::Currency;

/// A column value, independent of the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// A boolean.
    Bool(bool),
}

impl From<&str> for SqlValue {
    fn from(value: &str) -> Self {
        SqlValue::Text(value.to_owned())
    }
}

impl From<&String> for SqlValue {
    fn from(value: &String) -> Self {
        SqlValue::Text(value.clone())
    }
}

impl From<i64> for SqlValue {
    fn from(value: i64) -> Self {
        SqlValue::Int(value)
    }
}

impl From<bool> for SqlValue {
    fn from(value: bool) -> Self {
        SqlValue::Bool(value)
    }
}

impl<T: Into<SqlValue>> From<Option<T>> for SqlValue {
    fn from(value: Option<T>) -> Self {
        value.map_or(SqlValue::Null, Into::into)
    }
}

/// The statement and parameters that persist one effect.
pub fn statement_for(effect: &Effect) -> (&'static str, Vec<SqlValue>) {
    match effect {
        Effect::Account(account) => {
            let machine = account.machine.as_ref();
            (
                sql::UPSERT_ACCOUNT,
                vec![
                    (&account.id).into(),
                    account.role.as_str().into(),
                    (&account.name).into(),
                    (&account.address).into(),
                    (&account.details).into(),
                    account.privacy.as_str().into(),
                    SqlValue::Text(hex::encode(&account.public_key_der)),
                    SqlValue::Text(account.serials.join(",")),
                    account.auditor.into(),
                    account.revoked.into(),
                    account.registered_at_ms.into(),
                    machine.map(|m| &m.architecture).into(),
                    machine.map(|m| &m.cpu_model).into(),
                    machine.map(|m| i64::from(m.cpu_cores)).into(),
                    machine.map(|m| to_i64(m.memory_mb)).into(),
                    machine.map(|m| i64::from(m.network_mbps)).into(),
                    machine.map(|m| &m.xis_node).into(),
                    machine.map(|m| &m.endpoint).into(),
                ],
            )
        }
        Effect::Order(order) => {
            let settlement = order.settlement.as_ref();
            (
                sql::UPSERT_ORDER,
                vec![
                    (&order.order_id).into(),
                    (&order.client).into(),
                    order.currency.as_str().into(),
                    to_i64(order.amount_minor).into(),
                    order.expires_at_ms.into(),
                    (&order.document_xml).into(),
                    order.state.as_str().into(),
                    order.bound_server.as_ref().into(),
                    order.bound_session.as_ref().into(),
                    order.validated_xml.as_ref().into(),
                    to_i64(order.limit_minor).into(),
                    order.effective_expiry_ms.into(),
                    settlement.map(|s| to_i64(s.spent)).into(),
                    settlement.map(|s| to_i64(s.returned)).into(),
                    settlement.map(|s| to_i64(s.payout)).into(),
                    settlement.map(|s| to_i64(s.commission)).into(),
                    settlement.map(|s| s.closed_at_ms).into(),
                ],
            )
        }
        Effect::Charge {
            order_id,
            record,
            usage_xml,
        } => (
            sql::INSERT_CHARGE,
            vec![
                to_i64(record.id).into(),
                order_id.into(),
                to_i64(record.sequence).into(),
                to_i64(record.amount_minor).into(),
                record.outcome.as_str().into(),
                SqlValue::Text(usage_xml.to_string()),
                SqlValue::Text(hex::encode(record.usage_sha256)),
                to_i64(record.charged_total_after).into(),
                to_i64(record.remaining_after).into(),
                record.recorded_at_ms.into(),
            ],
        ),
        Effect::Transfer(transfer) => (
            sql::INSERT_TRANSFER,
            vec![
                to_i64(transfer.id).into(),
                (&transfer.from).into(),
                (&transfer.to).into(),
                transfer.currency.as_str().into(),
                to_i64(transfer.amount).into(),
                transfer.kind.as_str().into(),
                transfer.order_id.as_ref().into(),
                transfer.sequence.map(to_i64).into(),
                transfer.at_ms.into(),
            ],
        ),
        Effect::Balance {
            book,
            currency,
            balance,
        } => (
            sql::UPSERT_BALANCE,
            vec![book.into(), currency.as_str().into(), (*balance).into()],
        ),
        Effect::Revocation { serial, at_ms } => {
            (sql::INSERT_REVOCATION, vec![serial.into(), (*at_ms).into()])
        }
        Effect::Counter { name, value } => (
            sql::UPSERT_COUNTER,
            vec![(*name).into(), to_i64(*value).into()],
        ),
    }
}

/// Typed access to one row's values.
pub struct Values<'a>(pub &'a [SqlValue]);

impl Values<'_> {
    fn get(&self, index: usize) -> anyhow::Result<&SqlValue> {
        self.0
            .get(index)
            .ok_or_else(|| anyhow!("stored row has no column {index}"))
    }

    /// Text column.
    pub fn text(&self, index: usize) -> anyhow::Result<String> {
        match self.get(index)? {
            SqlValue::Text(text) => Ok(text.clone()),
            other => Err(anyhow!("column {index} should be text, is {other:?}")),
        }
    }

    /// Nullable text column.
    pub fn optional_text(&self, index: usize) -> anyhow::Result<Option<String>> {
        match self.get(index)? {
            SqlValue::Null => Ok(None),
            _ => self.text(index).map(Some),
        }
    }

    /// Integer column.
    pub fn int(&self, index: usize) -> anyhow::Result<i64> {
        match self.get(index)? {
            SqlValue::Int(value) => Ok(*value),
            other => Err(anyhow!("column {index} should be an integer, is {other:?}")),
        }
    }

    /// Nullable integer column.
    pub fn optional_int(&self, index: usize) -> anyhow::Result<Option<i64>> {
        match self.get(index)? {
            SqlValue::Null => Ok(None),
            _ => self.int(index).map(Some),
        }
    }

    /// Unsigned amount column.
    pub fn amount(&self, index: usize) -> anyhow::Result<u64> {
        to_u64(self.int(index)?, "amount")
    }

    /// Boolean column (SQLite stores integers).
    pub fn boolean(&self, index: usize) -> anyhow::Result<bool> {
        match self.get(index)? {
            SqlValue::Bool(value) => Ok(*value),
            SqlValue::Int(value) => Ok(*value != 0),
            other => Err(anyhow!("column {index} should be a boolean, is {other:?}")),
        }
    }

    /// Currency column.
    pub fn currency(&self, index: usize) -> anyhow::Result<Currency> {
        self.text(index)?.parse().map_err(anyhow::Error::msg)
    }
}

/// An `accounts` row.
pub fn account(row: &Values<'_>) -> anyhow::Result<Account> {
    let role = match row.text(1)?.as_str() {
        "client" => Role::Client,
        "server" => Role::Server,
        other => return Err(anyhow!("unknown stored role {other:?}")),
    };
    let privacy = match row.text(5)?.as_str() {
        "identified" => Privacy::Identified,
        "pseudonymous" => Privacy::Pseudonymous,
        other => return Err(anyhow!("unknown stored privacy {other:?}")),
    };
    let machine = match row.optional_text(11)? {
        Some(architecture) => Some(MachineSpec {
            architecture,
            cpu_model: row.optional_text(12)?.unwrap_or_default(),
            cpu_cores: u32::try_from(row.optional_int(13)?.unwrap_or(0))?,
            memory_mb: to_u64(row.optional_int(14)?.unwrap_or(0), "memory")?,
            network_mbps: u32::try_from(row.optional_int(15)?.unwrap_or(0))?,
            xis_node: row.optional_text(16)?.unwrap_or_default(),
            endpoint: row.optional_text(17)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Account {
        id: row.text(0)?,
        role,
        name: row.text(2)?,
        address: row.text(3)?,
        details: row.text(4)?,
        privacy,
        public_key_der: hex::decode(row.text(6)?).context("stored public key")?,
        serials: row
            .text(7)?
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        auditor: row.boolean(8)?,
        revoked: row.boolean(9)?,
        registered_at_ms: row.int(10)?,
        machine,
    })
}

/// An `orders` row.
pub fn order(row: &Values<'_>) -> anyhow::Result<OrderRow> {
    let state = row.text(6)?;
    let settlement = match row.optional_int(12)? {
        Some(spent) => Some(Settlement {
            spent: to_u64(spent, "spent")?,
            returned: row.amount(13)?,
            payout: row.amount(14)?,
            commission: row.amount(15)?,
            closed_at_ms: row.int(16)?,
        }),
        None => None,
    };
    Ok(OrderRow {
        order_id: row.text(0)?,
        client: row.text(1)?,
        currency: row.currency(2)?,
        amount_minor: row.amount(3)?,
        expires_at_ms: row.int(4)?,
        document_xml: row.text(5)?,
        state: OrderState::from_name(&state)
            .ok_or_else(|| anyhow!("unknown stored order state {state:?}"))?,
        bound_server: row.optional_text(7)?,
        bound_session: row.optional_text(8)?,
        validated_xml: row.optional_text(9)?,
        limit_minor: row.amount(10)?,
        effective_expiry_ms: row.int(11)?,
        settlement,
    })
}

/// A `charges` row, as `SELECT_CHARGES` reads it (without the usage record).
pub fn charge(row: &Values<'_>) -> anyhow::Result<(String, ChargeRecord)> {
    let outcome = row.text(4)?;
    let digest = hex::decode(row.text(5)?).context("stored usage digest")?;
    Ok((
        row.text(1)?,
        ChargeRecord {
            id: row.amount(0)?,
            sequence: row.amount(2)?,
            amount_minor: row.amount(3)?,
            outcome: ChargeOutcome::from_name(&outcome)
                .ok_or_else(|| anyhow!("unknown stored outcome {outcome:?}"))?,
            usage_sha256: digest
                .try_into()
                .map_err(|_| anyhow!("stored usage digest is not 32 bytes"))?,
            charged_total_after: row.amount(6)?,
            remaining_after: row.amount(7)?,
            recorded_at_ms: row.int(8)?,
        },
    ))
}

/// Builds a snapshot from the rows of each `SELECT_*` query, and checks the audit queries.
pub fn snapshot(
    mut query: impl FnMut(&str) -> anyhow::Result<Vec<Vec<SqlValue>>>,
) -> anyhow::Result<crate::core::Snapshot> {
    let mut snapshot = crate::core::Snapshot::default();
    for row in query(sql::SELECT_ACCOUNTS)? {
        snapshot.accounts.push(account(&Values(&row))?);
    }
    for row in query(sql::SELECT_ORDERS)? {
        snapshot.orders.push(order(&Values(&row))?);
    }
    for row in query(sql::SELECT_CHARGES)? {
        snapshot.charges.push(charge(&Values(&row))?);
    }
    for row in query(sql::SELECT_BALANCES)? {
        let row = Values(&row);
        snapshot
            .balances
            .insert(row.text(0)?, (row.currency(1)?, row.int(2)?));
    }
    for row in query(sql::SELECT_REVOCATIONS)? {
        snapshot.revoked.push(Values(&row).text(0)?);
    }
    for row in query(sql::SELECT_COUNTERS)? {
        let row = Values(&row);
        snapshot.counters.insert(row.text(0)?, row.amount(1)?);
    }
    Ok(snapshot)
}

/// Runs the audit queries through `query`.
pub fn audit(
    mut query: impl FnMut(&str) -> anyhow::Result<Vec<Vec<SqlValue>>>,
) -> anyhow::Result<super::StoreAudit> {
    let mut violations = Vec::new();
    for row in query(sql::AUDIT_BALANCES)? {
        let row = Values(&row);
        let (book, stored, computed) = (row.text(0)?, row.int(1)?, row.int(2)?);
        if stored != computed {
            violations.push(format!(
                "stored balance of {book} is {stored} but its transfers sum to {computed}"
            ));
        }
    }
    for row in query(sql::AUDIT_ORDERS)? {
        let row = Values(&row);
        let (order, limit, charged, moved) = (row.text(0)?, row.int(1)?, row.int(2)?, row.int(3)?);
        if charged != moved {
            violations.push(format!(
                "stored order {order}: its charges sum to {charged} but its charge transfers move {moved}"
            ));
        }
        if charged > limit {
            violations.push(format!(
                "stored order {order}: its charges sum to {charged}, over its cap {limit}"
            ));
        }
    }
    for row in query(sql::AUDIT_DUPLICATE_CHARGES)? {
        let row = Values(&row);
        violations.push(format!(
            "charge {} of order {} is stored {} times",
            row.int(1)?,
            row.text(0)?,
            row.int(2)?
        ));
    }
    let transfers = query(sql::COUNT_TRANSFERS)?;
    let count = transfers
        .first()
        .map(|row| Values(row).int(0))
        .transpose()?
        .unwrap_or(0);
    Ok(super::StoreAudit {
        violations,
        transfers: to_u64(count, "transfer count")?,
    })
}
