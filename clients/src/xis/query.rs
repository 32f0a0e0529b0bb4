//! Boolean searches, which the paper leaves to clients ("perform boolean searches by making
//! several lookup requests on different tokens and combining the results"): a small query
//! language, the and/or combination of lookup results, and [`find`] running a query against an
//! XIS.
//!
//! Syntax: terms separated by spaces must all hold; `|` separates alternatives. A term is
//! `token=value` (exact), `token=min..max` (range; either end may be empty; the paper's
//! `100-150` form is accepted for non-negative numbers) or `token` alone (any value).
//!
//! ```
//! use xeno_clients::xis::query::{Query, and, or, Found};
//! let query = Query::parse("EnvType=Wasm CPUmsps=100..150 | Country=GB").unwrap();
//! assert_eq!(query.to_string(), "(EnvType=Wasm AND CPUmsps=100..150) OR Country=GB");
//! let a = vec![Found::new("s1", "h1:1"), Found::new("s2", "h2:1")];
//! let b = vec![Found::new("s2", "h2:1"), Found::new("s3", "h3:1")];
//! assert_eq!(and(a.clone(), b.clone()).len(), 1);
//! assert_eq!(or(a, b).len(), 3);
//! ```

use crate::xis::{self as client, ClientError, Match, Values};
use std::collections::BTreeMap;
use tonic::transport::Channel;
use xeno_schemas::documents::tokens::{format_number, parse_plain_number};
use xeno_schemas::proto::xis::v1 as pb;

/// Most terms in one query: each is a lookup (and up to `limit` matches held in memory).
pub const QUERY_TERMS_MAX: usize = 16;

/// A boolean query over lookups.
#[derive(Debug, Clone, PartialEq)]
pub enum Query {
    /// One lookup.
    Term {
        /// The token.
        token: String,
        /// The values.
        values: Values,
    },
    /// All must hold.
    And(Vec<Query>),
    /// Any may hold.
    Or(Vec<Query>),
}

/// Why a query text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// Nothing to look up.
    #[error("the query is empty")]
    Empty,
    /// Too many terms.
    #[error("the query has {0} terms; at most {QUERY_TERMS_MAX} are allowed")]
    TooManyTerms(usize),
    /// A term is malformed.
    #[error("term {term:?}: {reason}")]
    BadTerm {
        /// The term.
        term: String,
        /// Why.
        reason: String,
    },
}

fn parse_term(term: &str) -> Result<Query, QueryError> {
    let bad = |reason: &str| QueryError::BadTerm {
        term: term.to_owned(),
        reason: reason.to_owned(),
    };
    let Some((token, value)) = term.split_once('=') else {
        return Ok(Query::Term {
            token: term.to_owned(),
            values: Values::Any,
        });
    };
    if token.is_empty() {
        return Err(bad("no token before '='"));
    }
    let bound = |text: &str| -> Result<Option<f64>, QueryError> {
        if text.is_empty() {
            Ok(None)
        } else {
            parse_plain_number(text)
                .map(Some)
                .ok_or_else(|| bad("range bounds must be numbers"))
        }
    };
    let values = if let Some((min, max)) = value.split_once("..") {
        Values::Range {
            min: bound(min)?,
            max: bound(max)?,
        }
    } else if let Some((min, max)) = value.split_once('-')
        && !min.is_empty()
        && parse_plain_number(min).is_some()
        && parse_plain_number(max).is_some()
    {
        Values::Range {
            min: bound(min)?,
            max: bound(max)?,
        }
    } else {
        Values::Exact(value.to_owned())
    };
    Ok(Query::Term {
        token: token.to_owned(),
        values,
    })
}

impl Query {
    /// Parses the query language above.
    pub fn parse(text: &str) -> Result<Query, QueryError> {
        let mut alternatives = Vec::new();
        let mut terms_total = 0;
        for alternative in text.split('|') {
            let terms = alternative
                .split_whitespace()
                .map(parse_term)
                .collect::<Result<Vec<_>, _>>()?;
            terms_total += terms.len();
            match terms.len() {
                0 => return Err(QueryError::Empty),
                1 => alternatives.extend(terms),
                _ => alternatives.push(Query::And(terms)),
            }
        }
        if terms_total > QUERY_TERMS_MAX {
            return Err(QueryError::TooManyTerms(terms_total));
        }
        Ok(match alternatives.len() {
            0 => return Err(QueryError::Empty),
            1 => alternatives.remove(0),
            _ => Query::Or(alternatives),
        })
    }

    fn terms(&self) -> usize {
        match self {
            Query::Term { .. } => 1,
            Query::And(parts) | Query::Or(parts) => parts.iter().map(Query::terms).sum(),
        }
    }
}

impl std::fmt::Display for Query {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |f: &mut std::fmt::Formatter<'_>, parts: &[Query], word: &str| {
            for (index, part) in parts.iter().enumerate() {
                if index > 0 {
                    write!(f, " {word} ")?;
                }
                match part {
                    Query::Term { .. } => write!(f, "{part}")?,
                    _ => write!(f, "({part})")?,
                }
            }
            Ok(())
        };
        match self {
            Query::Term { token, values } => match values {
                Values::Any => write!(f, "{token}"),
                Values::Exact(value) => write!(f, "{token}={value}"),
                Values::Range { min, max } => write!(
                    f,
                    "{token}={}..{}",
                    min.map(format_number).unwrap_or_default(),
                    max.map(format_number).unwrap_or_default()
                ),
            },
            Query::And(parts) => join(f, parts, "AND"),
            Query::Or(parts) => join(f, parts, "OR"),
        }
    }
}

/// A server a query found, with the values that matched, by token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The server.
    pub server_id: String,
    /// Its endpoint.
    pub endpoint: String,
    /// Its advertisement's version (the newest seen across the lookups).
    pub version: u64,
    /// The age of its record, ms (the oldest seen).
    pub age_ms: u64,
    /// Whether any lookup saw it stale.
    pub stale: bool,
    /// Matched values, by token.
    pub values: BTreeMap<String, Vec<String>>,
}

impl Found {
    /// A server with no values yet.
    pub fn new(server_id: &str, endpoint: &str) -> Found {
        Found {
            server_id: server_id.to_owned(),
            endpoint: endpoint.to_owned(),
            version: 0,
            age_ms: 0,
            stale: false,
            values: BTreeMap::new(),
        }
    }

    fn merge(&mut self, other: Found) {
        self.version = self.version.max(other.version);
        self.age_ms = self.age_ms.max(other.age_ms);
        self.stale |= other.stale;
        for (token, values) in other.values {
            let mine = self.values.entry(token).or_default();
            for value in values {
                if !mine.contains(&value) {
                    mine.push(value);
                }
            }
        }
    }
}

/// One lookup's matches as found servers (a server with several values appears once).
pub fn from_matches(token: &str, matches: Vec<Match>) -> Vec<Found> {
    let mut by_server: BTreeMap<String, Found> = BTreeMap::new();
    for found in matches {
        let entry = by_server
            .entry(found.server_id.clone())
            .or_insert_with(|| Found::new(&found.server_id, &found.endpoint));
        entry.merge(Found {
            server_id: found.server_id,
            endpoint: found.endpoint,
            version: found.version,
            age_ms: found.age_ms,
            stale: found.stale,
            values: BTreeMap::from([(token.to_owned(), vec![found.value])]),
        });
    }
    by_server.into_values().collect()
}

/// Servers in both, values merged; ordered by server id.
pub fn and(left: Vec<Found>, right: Vec<Found>) -> Vec<Found> {
    let mut right: BTreeMap<String, Found> = right
        .into_iter()
        .map(|found| (found.server_id.clone(), found))
        .collect();
    let mut out: Vec<Found> = left
        .into_iter()
        .filter_map(|mut found| {
            let other = right.remove(&found.server_id)?;
            found.merge(other);
            Some(found)
        })
        .collect();
    out.sort_by(|a, b| a.server_id.cmp(&b.server_id));
    out
}

/// Servers in either, values merged; ordered by server id.
pub fn or(left: Vec<Found>, right: Vec<Found>) -> Vec<Found> {
    let mut all: BTreeMap<String, Found> = BTreeMap::new();
    for found in left.into_iter().chain(right) {
        match all.get_mut(&found.server_id) {
            Some(existing) => existing.merge(found),
            None => {
                all.insert(found.server_id.clone(), found);
            }
        }
    }
    all.into_values().collect()
}

fn values_to_proto(values: &Values) -> Option<pb::lookup_request::Values> {
    match values {
        Values::Any => None,
        Values::Exact(value) => client::exact(value.clone()),
        Values::Range { min, max } => client::range(*min, *max),
    }
}

/// Runs `query` against the XIS on `channel`: one lookup per term (each at most `limit`
/// matches), combined.
pub async fn find(
    channel: Channel,
    query: &Query,
    include_stale: bool,
    limit: usize,
) -> Result<Vec<Found>, ClientError> {
    if query.terms() > QUERY_TERMS_MAX {
        return Err(ClientError::Status(tonic::Status::invalid_argument(
            format!("the query has more than {QUERY_TERMS_MAX} terms"),
        )));
    }
    Box::pin(evaluate(channel, query, include_stale, limit)).await
}

async fn evaluate(
    channel: Channel,
    query: &Query,
    include_stale: bool,
    limit: usize,
) -> Result<Vec<Found>, ClientError> {
    match query {
        Query::Term { token, values } => {
            let matches = client::lookup_all(
                channel,
                token,
                values_to_proto(values),
                include_stale,
                limit,
            )
            .await?;
            Ok(from_matches(token, matches))
        }
        Query::And(parts) | Query::Or(parts) => {
            let results = futures::future::try_join_all(
                parts
                    .iter()
                    .map(|part| Box::pin(evaluate(channel.clone(), part, include_stale, limit))),
            )
            .await?;
            let combine = if matches!(query, Query::And(_)) {
                and
            } else {
                or
            };
            Ok(results.into_iter().reduce(combine).unwrap_or_default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_papers_example_parses_as_a_range() {
        assert_eq!(
            Query::parse("CPUmsps=100-150").expect("parses"),
            Query::Term {
                token: "CPUmsps".to_owned(),
                values: Values::Range {
                    min: Some(100.0),
                    max: Some(150.0)
                }
            }
        );
        assert_eq!(
            Query::parse("Version@Linux=2.4-rc1").expect("parses"),
            Query::Term {
                token: "Version@Linux".to_owned(),
                values: Values::Exact("2.4-rc1".to_owned())
            }
        );
        assert!(matches!(
            Query::parse("CPUmsps=a..b"),
            Err(QueryError::BadTerm { .. })
        ));
        assert_eq!(Query::parse(" | "), Err(QueryError::Empty));
    }
}
