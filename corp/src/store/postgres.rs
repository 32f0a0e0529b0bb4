//! The scale-out store: PostgreSQL, selected by a `postgres://` URL. Same schema and statements
//! as SQLite; each batch is one transaction, committed with PostgreSQL's default synchronous
//! commit, so an acknowledged batch is on disk.

use super::rows::{self, SqlValue, statement_for};
use super::{SCHEMA, Store, StoreAudit, coalesce, to_i64, to_u64};
use crate::core::Snapshot;
use crate::model::Effect;
use anyhow::Context;
use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls};
use std::collections::HashMap;
use std::error::Error;

/// A PostgreSQL database holding the corp's state.
pub struct PostgresStore {
    client: Client,
    statements: HashMap<&'static str, postgres::Statement>,
}

impl ToSql for SqlValue {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        match self {
            SqlValue::Null => Ok(IsNull::Yes),
            SqlValue::Int(value) => value.to_sql(ty, out),
            SqlValue::Text(text) => text.to_sql(ty, out),
            SqlValue::Bool(value) => value.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(*ty, Type::INT8 | Type::TEXT | Type::VARCHAR | Type::BOOL)
    }

    to_sql_checked!();
}

/// `?` placeholders to PostgreSQL's `$1`, `$2`, ...
fn numbered(statement: &str) -> String {
    let mut out = String::with_capacity(statement.len() + 16);
    let mut index = 0;
    for c in statement.chars() {
        if c == '?' {
            index += 1;
            out.push_str(&format!("${index}"));
        } else {
            out.push(c);
        }
    }
    out
}

impl PostgresStore {
    /// Connects to `url` and creates the schema if needed.
    pub fn connect(url: &str) -> anyhow::Result<PostgresStore> {
        let mut client =
            Client::connect(url, NoTls).with_context(|| format!("connecting to {url}"))?;
        for statement in SCHEMA {
            client
                .batch_execute(statement)
                .with_context(|| format!("creating the schema: {statement}"))?;
        }
        Ok(PostgresStore {
            client,
            statements: HashMap::new(),
        })
    }

    fn query(&mut self, query: &str) -> anyhow::Result<Vec<Vec<SqlValue>>> {
        let rows = self.client.query(query, &[])?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (index, column) in row.columns().iter().enumerate() {
                let value = match *column.type_() {
                    Type::INT8 => row.try_get::<_, Option<i64>>(index)?.map(SqlValue::Int),
                    Type::INT4 => row
                        .try_get::<_, Option<i32>>(index)?
                        .map(|v| SqlValue::Int(i64::from(v))),
                    Type::TEXT | Type::VARCHAR => {
                        row.try_get::<_, Option<String>>(index)?.map(SqlValue::Text)
                    }
                    Type::BOOL => row.try_get::<_, Option<bool>>(index)?.map(SqlValue::Bool),
                    ref other => anyhow::bail!("unexpected column type {other} in {query}"),
                };
                values.push(value.unwrap_or(SqlValue::Null));
            }
            out.push(values);
        }
        Ok(out)
    }
}

impl Store for PostgresStore {
    fn load(&mut self) -> anyhow::Result<Snapshot> {
        rows::snapshot(|query| self.query(query))
    }

    fn persist(&mut self, effects: &[Effect]) -> anyhow::Result<()> {
        let mut bulk = Bulk::default();
        let mut singles = Vec::new();
        for effect in coalesce(effects) {
            if !bulk.take(effect) {
                singles.push(effect);
            }
        }
        for effect in &singles {
            let (statement, _) = statement_for(effect);
            if !self.statements.contains_key(statement) {
                let prepared = self.client.prepare(&numbered(statement))?;
                self.statements.insert(statement, prepared);
            }
        }
        let mut transaction = self.client.transaction()?;
        for effect in singles {
            let (statement, parameters) = statement_for(effect);
            let prepared = &self.statements[statement];
            let parameters: Vec<&(dyn ToSql + Sync)> = parameters
                .iter()
                .map(|p| p as &(dyn ToSql + Sync))
                .collect();
            transaction.execute(prepared, &parameters)?;
        }
        bulk.write(&mut transaction)?;
        transaction.commit()?;
        Ok(())
    }

    fn audit(&mut self) -> anyhow::Result<StoreAudit> {
        rows::audit(|query| self.query(query))
    }

    fn usage_records(&mut self, ids: &[u64]) -> anyhow::Result<HashMap<u64, String>> {
        let ids: Vec<i64> = ids.iter().copied().map(to_i64).collect();
        let mut found = HashMap::with_capacity(ids.len());
        for row in self.client.query(
            "SELECT id, usage_xml FROM charges WHERE id = ANY($1)",
            &[&ids],
        )? {
            found.insert(
                to_u64(row.try_get::<_, i64>(0)?, "charge number")?,
                row.try_get(1)?,
            );
        }
        Ok(found)
    }
}

/// The hot rows of a batch (charges, transfers, balances, counters), written
/// with one `unnest` statement per table instead of one round trip per row: a batch of a
/// thousand charges costs five statements.
#[derive(Default)]
struct Bulk {
    charge_ids: Vec<i64>,
    charge_orders: Vec<String>,
    charge_sequences: Vec<i64>,
    charge_amounts: Vec<i64>,
    charge_outcomes: Vec<String>,
    charge_usages: Vec<String>,
    charge_digests: Vec<String>,
    charge_totals: Vec<i64>,
    charge_remaining: Vec<i64>,
    charge_times: Vec<i64>,
    transfer_ids: Vec<i64>,
    transfer_from: Vec<String>,
    transfer_to: Vec<String>,
    transfer_currencies: Vec<String>,
    transfer_amounts: Vec<i64>,
    transfer_kinds: Vec<String>,
    transfer_orders: Vec<Option<String>>,
    transfer_sequences: Vec<Option<i64>>,
    transfer_times: Vec<i64>,
    balance_books: Vec<String>,
    balance_currencies: Vec<String>,
    balance_values: Vec<i64>,
    counter_names: Vec<String>,
    counter_values: Vec<i64>,
}

impl Bulk {
    /// Takes `effect` into a bulk statement if it is one of the hot kinds.
    fn take(&mut self, effect: &Effect) -> bool {
        match effect {
            Effect::Charge {
                order_id,
                record,
                usage_xml,
            } => {
                self.charge_ids.push(to_i64(record.id));
                self.charge_orders.push(order_id.clone());
                self.charge_sequences.push(to_i64(record.sequence));
                self.charge_amounts.push(to_i64(record.amount_minor));
                self.charge_outcomes
                    .push(record.outcome.as_str().to_owned());
                self.charge_usages.push(usage_xml.to_string());
                self.charge_digests.push(hex::encode(record.usage_sha256));
                self.charge_totals.push(to_i64(record.charged_total_after));
                self.charge_remaining.push(to_i64(record.remaining_after));
                self.charge_times.push(record.recorded_at_ms);
            }
            Effect::Transfer(transfer) => {
                self.transfer_ids.push(to_i64(transfer.id));
                self.transfer_from.push(transfer.from.clone());
                self.transfer_to.push(transfer.to.clone());
                self.transfer_currencies.push(transfer.currency.to_string());
                self.transfer_amounts.push(to_i64(transfer.amount));
                self.transfer_kinds.push(transfer.kind.as_str().to_owned());
                self.transfer_orders.push(transfer.order_id.clone());
                self.transfer_sequences.push(transfer.sequence.map(to_i64));
                self.transfer_times.push(transfer.at_ms);
            }
            Effect::Balance {
                book,
                currency,
                balance,
            } => {
                self.balance_books.push(book.clone());
                self.balance_currencies.push(currency.to_string());
                self.balance_values.push(*balance);
            }
            Effect::Counter { name, value } => {
                self.counter_names.push((*name).to_owned());
                self.counter_values.push(to_i64(*value));
            }
            _ => return false,
        }
        true
    }

    fn write(&self, transaction: &mut postgres::Transaction<'_>) -> anyhow::Result<()> {
        if !self.charge_orders.is_empty() {
            transaction.execute(
                "INSERT INTO charges (id, order_id, sequence, amount_minor, outcome, usage_xml, usage_sha256, charged_total_after, remaining_after, recorded_at_ms)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[])",
                &[&self.charge_ids, &self.charge_orders, &self.charge_sequences, &self.charge_amounts, &self.charge_outcomes, &self.charge_usages, &self.charge_digests, &self.charge_totals, &self.charge_remaining, &self.charge_times],
            )?;
        }
        if !self.transfer_ids.is_empty() {
            transaction.execute(
                "INSERT INTO transfers (id, from_book, to_book, currency, amount, kind, order_id, sequence, at_ms)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[], $7::text[], $8::bigint[], $9::bigint[])",
                &[&self.transfer_ids, &self.transfer_from, &self.transfer_to, &self.transfer_currencies, &self.transfer_amounts, &self.transfer_kinds, &self.transfer_orders, &self.transfer_sequences, &self.transfer_times],
            )?;
        }
        if !self.balance_books.is_empty() {
            transaction.execute(
                "INSERT INTO balances (book, currency, balance) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])
                 ON CONFLICT (book) DO UPDATE SET balance = excluded.balance",
                &[&self.balance_books, &self.balance_currencies, &self.balance_values],
            )?;
        }
        if !self.counter_names.is_empty() {
            transaction.execute(
                "INSERT INTO counters (name, value) SELECT * FROM unnest($1::text[], $2::bigint[])
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&self.counter_names, &self.counter_values],
            )?;
        }
        Ok(())
    }
}
