//! Keeping the catalogue current from the XIS, with nothing but its lookups: the XIS indexes
//! each record's receipt time as the token `Received`, so "what changed since I last looked"
//! is the range lookup `Received >= t`, answered in receipt order. Records whose version is new
//! to us are fetched with `GetAdvertisement` and their signatures checked; a full pass (the
//! same lookup from the start) also drops servers the XIS no longer has.

use crate::catalogue::{Catalogue, ServerView};
use futures::StreamExt;
use std::collections::HashSet;
use std::sync::Arc;
use tonic::transport::Channel;
use xeno_clients::xis::PAGE_SIZE_MAX;
use xeno_clients::xis::{self as client, ClientError};
use xeno_schemas::clock::now_unix_ms as now_ms;
use xeno_schemas::documents::tokens::RECEIVED_TOKEN;
use xeno_schemas::proto::xis::v1 as pb;

/// Most advertisements fetched at once: enough to hide round trips, few enough not to crowd
/// the XIS.
pub const FETCH_CONCURRENCY_MAX: usize = 32;
/// Most lookup pages one sync walks (100,000 entries per 100 pages of 1,000): ten million
/// servers, a bound against a runaway walk.
pub const SYNC_PAGES_MAX: usize = 10_000;

/// What one sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Matches the lookups returned.
    pub seen: usize,
    /// Advertisements fetched (new or changed).
    pub fetched: usize,
    /// Servers dropped (gone from the XIS, or failing verification).
    pub dropped: usize,
}

/// Syncs `catalogue` from the XIS on `channel`. `overlap_ms` re-reads that much before the
/// newest receipt time already seen (records received out of order across XIS nodes).
pub async fn sync_once(
    channel: &Channel,
    catalogue: &Catalogue,
    full: bool,
    overlap_ms: u64,
) -> Result<SyncReport, ClientError> {
    #[allow(clippy::cast_precision_loss)]
    let since = if full {
        None
    } else {
        catalogue
            .newest_received()
            .map(|newest| newest - overlap_ms as f64)
    };
    let mut report = SyncReport::default();
    let mut cursor = String::new();
    let mut newest: Option<f64> = None;
    let mut seen: HashSet<String> = HashSet::new();
    let mut to_fetch: Vec<String> = Vec::new();
    let mut refreshed: Vec<(String, u64)> = Vec::new();
    let now = now_ms();
    for _ in 0..SYNC_PAGES_MAX {
        let page = client::lookup(
            channel.clone(),
            pb::LookupRequest {
                token: RECEIVED_TOKEN.to_owned(),
                values: client::range(since, None),
                page_size: PAGE_SIZE_MAX,
                cursor: cursor.clone(),
                include_stale: true,
            },
        )
        .await?;
        for found in page.matches {
            report.seen += 1;
            if let Ok(received) = found.value.parse::<f64>() {
                newest = Some(newest.map_or(received, |n: f64| n.max(received)));
            }
            let received_ms = now.saturating_sub(found.age_ms);
            if catalogue.version_of(&found.server_id) == Some(found.version) {
                refreshed.push((found.server_id.clone(), received_ms));
            } else {
                to_fetch.push(found.server_id.clone());
            }
            seen.insert(found.server_id);
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    to_fetch.sort();
    to_fetch.dedup();
    let fetched: Vec<(String, Result<ServerView, ClientError>)> =
        futures::stream::iter(to_fetch.into_iter().map(|server_id| {
            let channel = channel.clone();
            async move {
                let result = client::get_advertisement(channel, &server_id).await.map(
                    |(advertisement, stored)| {
                        let received_ms = now_ms().saturating_sub(stored.age_ms);
                        ServerView::new(
                            advertisement,
                            Arc::from(stored.advertisement_xml),
                            received_ms,
                        )
                    },
                );
                (server_id, result)
            }
        }))
        .buffer_unordered(FETCH_CONCURRENCY_MAX)
        .collect()
        .await;
    let mut views = Vec::new();
    let mut removed = Vec::new();
    for (server_id, result) in fetched {
        match result {
            Ok(view) => views.push(view),
            Err(ClientError::Status(status)) if status.code() == tonic::Code::NotFound => {
                removed.push(server_id);
            }
            Err(error @ ClientError::Forged { .. }) => {
                tracing::warn!(%error, "dropping an advertisement that does not verify");
                removed.push(server_id);
            }
            // Transient: the version still differs, so the next sync tries again.
            Err(error) => tracing::warn!(%error, %server_id, "fetching an advertisement"),
        }
    }
    report.fetched = views.len();
    report.dropped = removed.len();
    catalogue.apply(
        views,
        &refreshed,
        &removed,
        full.then_some(&seen),
        newest,
        now_ms(),
    );
    Ok(report)
}
