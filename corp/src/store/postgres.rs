//! The scale-out store: PostgreSQL, selected by a `postgres://` URL. Same schema and statements
//! as SQLite; each batch is one transaction, committed with PostgreSQL's default synchronous
//! commit, so an acknowledged batch is on disk.

use super::rows::{self, SqlValue, statement_for};
use super::{SCHEMA, Store, StoreAudit, coalesce};
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
        for effect in effects {
            let (statement, _) = statement_for(effect);
            if !self.statements.contains_key(statement) {
                let prepared = self.client.prepare(&numbered(statement))?;
                self.statements.insert(statement, prepared);
            }
        }
        let mut transaction = self.client.transaction()?;
        for effect in coalesce(effects) {
            let (statement, parameters) = statement_for(effect);
            let prepared = &self.statements[statement];
            let parameters: Vec<&(dyn ToSql + Sync)> = parameters
                .iter()
                .map(|p| p as &(dyn ToSql + Sync))
                .collect();
            transaction.execute(prepared, &parameters)?;
        }
        transaction.commit()?;
        Ok(())
    }

    fn audit(&mut self) -> anyhow::Result<StoreAudit> {
        rows::audit(|query| self.query(query))
    }
}
