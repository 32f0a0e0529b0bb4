//! The audit trail: an order's charges with their usage records, by page, for its client, its
//! server or an auditor; a server's orders.

use super::*;

/// An order's audit trail.
#[derive(Debug, Clone)]
pub struct OrderAudit {
    /// The order.
    pub order: OrderSummary,
    /// The client, as the caller may see it.
    pub client_identity: String,
    /// This page of its charges, with their usage records.
    pub charges: Vec<AuditedCharge>,
    /// When more charges follow, the sequence number to continue after; 0 after the last.
    pub next_after_sequence: u64,
    /// The document as validated (or as issued).
    pub purchase_order_xml: String,
}

/// Which page of which order's audit trail.
#[derive(Debug, Clone, Copy)]
pub struct AuditPage<'a> {
    /// The order.
    pub order_id: &'a str,
    /// Charges with sequence numbers above this.
    pub after_sequence: u64,
    /// At most this many (clamped to 1..=[`AUDIT_PAGE_CHARGES_MAX`]).
    pub limit: usize,
}

/// One charge in an audit.
#[derive(Debug, Clone)]
pub struct AuditedCharge {
    /// The record.
    pub record: ChargeRecord,
    /// Its usage record, as the server sent it.
    pub usage_xml: String,
}

impl Corp {
    /// An order's audit trail, for its client, its server, or an auditor (the caller named by
    /// its certificate serial). Usage records are read from `store`, or from `pending` (the
    /// effects of the writer's current batch) for charges not stored yet.
    pub fn audit_order(
        &self,
        store: &mut dyn Store,
        pending: &[Effect],
        caller: &str,
        page: AuditPage<'_>,
    ) -> CorpResult<OrderAudit> {
        let account_id = self.caller(caller)?.id.clone();
        self.audit_order_for(store, pending, &account_id, page)
    }

    /// An order's audit trail as the account `account_id` may see it.
    pub fn audit_order_for(
        &self,
        store: &mut dyn Store,
        pending: &[Effect],
        account_id: &str,
        page: AuditPage<'_>,
    ) -> CorpResult<OrderAudit> {
        let order_id = page.order_id;
        let account = self
            .accounts
            .get(account_id)
            .ok_or_else(|| CorpError::NotFound(format!("no account {account_id}")))?;
        if account.revoked {
            return Err(CorpError::Unauthenticated(
                "this account's credentials have been revoked".to_owned(),
            ));
        }
        let order = self.order(order_id)?;
        let is_client = order.issued.client == account.id;
        let is_server = order.bound_server.as_deref() == Some(account.id.as_str());
        if !(account.auditor || is_client || is_server) {
            return Err(denied(
                "only the order's client, its server, or an auditor may audit it",
            ));
        }
        let client = self
            .accounts
            .get(&order.issued.client)
            .ok_or_else(|| CorpError::NotFound("unknown client".to_owned()))?;
        let client_identity =
            if account.auditor || is_client || client.privacy == Privacy::Identified {
                format!(
                    "{} ({}), {}",
                    client.name,
                    client.id,
                    client.address.replace('\n', ", ")
                )
            } else {
                client.id.clone()
            };
        let limit = page.limit.clamp(1, AUDIT_PAGE_CHARGES_MAX);
        let mut listed = order
            .charges
            .range(page.after_sequence.saturating_add(1)..)
            .map(|(_, charge)| charge);
        let mut charges = usage_records(store, pending, listed.by_ref().take(limit))?;
        // Keep the page's size bounded whatever the records weigh (each is at most 64 KiB).
        let mut bytes = 0;
        let fits = charges
            .iter()
            .take_while(|charge| {
                bytes += charge.usage_xml.len();
                bytes <= AUDIT_PAGE_BYTES_MAX
            })
            .count()
            .max(1);
        let truncated = fits < charges.len();
        charges.truncate(fits);
        let more = truncated || listed.next().is_some();
        let next_after_sequence = match charges.last() {
            Some(last) if more => last.record.sequence,
            _ => 0,
        };
        Ok(OrderAudit {
            order: Self::summary(order),
            client_identity,
            charges,
            next_after_sequence,
            purchase_order_xml: order
                .validated_xml
                .clone()
                .unwrap_or_else(|| order.document_xml.clone()),
        })
    }

    /// Every order a server charged, for that server or an auditor.
    pub fn audit_server(&self, caller: &str, server_id: &str) -> CorpResult<Vec<OrderSummary>> {
        let account = self.caller(caller)?;
        if !(account.auditor || account.id == server_id) {
            return Err(denied(
                "only the server itself or an auditor may audit a server",
            ));
        }
        let mut orders: Vec<OrderSummary> = self
            .orders
            .values()
            .filter(|order| order.bound_server.as_deref() == Some(server_id))
            .map(Self::summary)
            .collect();
        orders.sort_by(|a, b| a.order_id.cmp(&b.order_id));
        Ok(orders)
    }
}
