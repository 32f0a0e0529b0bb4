//! Charges: a server's charge against an order bound to it, idempotent per sequence, never
//! above the order, each with the usage record that justifies it.

use super::*;

/// The answer to a charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeAnswer {
    /// Charged or refused.
    pub outcome: ChargeOutcome,
    /// Total charged after the request.
    pub charged_total: Money,
    /// What remains.
    pub remaining: Money,
    /// Whether this replays an earlier identical request.
    pub replayed: bool,
}

/// A charge's usage record, parsed and checked before it reaches the state machine (parsing is
/// the costly part of a charge; doing it on the request's own thread keeps the single writer
/// thread for what must be serial).
#[derive(Debug, Clone)]
pub struct UsageAnnotation {
    /// The document as sent.
    pub xml: Arc<str>,
    /// Its SHA-256.
    pub sha256: [u8; 32],
    /// Its `Order`.
    pub order_id: String,
    /// Its `Sequence`.
    pub sequence: u64,
    /// Its `Charge`.
    pub charge: Money,
}

impl UsageAnnotation {
    /// Parses a UsageRecord document.
    pub fn parse(xml: &str) -> CorpResult<UsageAnnotation> {
        let record = UsageRecord::parse(xml.as_bytes())
            .map_err(|error| invalid(format!("usage record: {error}")))?;
        Ok(UsageAnnotation {
            xml: Arc::from(xml),
            sha256: Sha256::digest(xml.as_bytes()).into(),
            order_id: record.order_id,
            sequence: record.sequence,
            charge: record.charge,
        })
    }
}

/// The usage records of `charges`, from the batch in progress or else from the store.
pub(super) fn usage_records<'a>(
    store: &mut dyn Store,
    pending: &[Effect],
    charges: impl Iterator<Item = &'a ChargeRecord>,
) -> CorpResult<Vec<AuditedCharge>> {
    let charges: Vec<&ChargeRecord> = charges.collect();
    let mut found: HashMap<u64, String> = pending
        .iter()
        .filter_map(|effect| match effect {
            Effect::Charge {
                record, usage_xml, ..
            } => Some((record.id, usage_xml.to_string())),
            _ => None,
        })
        .collect();
    let stored: Vec<u64> = charges
        .iter()
        .map(|charge| charge.id)
        .filter(|id| !found.contains_key(id))
        .collect();
    if !stored.is_empty() {
        found.extend(store.usage_records(&stored).map_err(|error| {
            CorpError::Unavailable(format!("cannot read the audit trail: {error:#}"))
        })?);
    }
    charges
        .into_iter()
        .map(|record| {
            let usage_xml = found.remove(&record.id).ok_or_else(|| {
                CorpError::Unavailable(format!(
                    "the usage record of charge {} is missing from the store",
                    record.id
                ))
            })?;
            Ok(AuditedCharge {
                record: record.clone(),
                usage_xml,
            })
        })
        .collect()
}

impl Corp {
    /// Charges against an order, idempotently by (order, sequence).
    #[allow(clippy::too_many_arguments)]
    pub fn charge(
        &mut self,
        now_ms: i64,
        caller: &str,
        order_id: &str,
        sequence: u64,
        amount: Money,
        usage: UsageAnnotation,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<ChargeAnswer> {
        let server_id = self
            .caller_with_role(caller, Role::Server, "charge purchase orders")?
            .id
            .clone();
        let order = self.order(order_id)?;
        if order.bound_server.as_deref() != Some(server_id.as_str()) {
            return Err(denied(match order.state {
                OrderState::Issued => {
                    "the order has not been validated, so nobody may charge it yet"
                }
                _ => "only the server the order is bound to may charge it",
            }));
        }
        if sequence == 0 {
            return Err(invalid("charge sequence numbers start at 1"));
        }
        if let Some(previous) = order.charges.get(&sequence) {
            return if previous.amount_minor == amount.minor
                && previous.usage_sha256 == usage.sha256
                && amount.currency == order.currency()
            {
                Ok(ChargeAnswer {
                    outcome: previous.outcome,
                    charged_total: order.money(previous.charged_total_after),
                    remaining: order.money(previous.remaining_after),
                    replayed: true,
                })
            } else {
                Err(CorpError::AlreadyExists(format!(
                    "charge sequence {sequence} was already used with a different amount or usage record"
                )))
            };
        }
        if order.state == OrderState::Closed {
            return Err(CorpError::FailedPrecondition(
                "the order is closed".to_owned(),
            ));
        }
        if now_ms > self.charges_end_ms(order) {
            return Err(CorpError::FailedPrecondition(
                "the order has expired".to_owned(),
            ));
        }
        if amount.currency != order.currency() {
            return Err(invalid(format!(
                "the order is in {}, not {}",
                order.currency(),
                amount.currency
            )));
        }
        if usage.order_id != order_id || usage.sequence != sequence || usage.charge != amount {
            return Err(invalid(format!(
                "the usage record (order {}, sequence {}, charge {}) does not match the request (order {order_id}, sequence {sequence}, charge {amount})",
                usage.order_id, usage.sequence, usage.charge
            )));
        }
        let remaining = order.remaining_minor();
        let outcome = if amount.minor > remaining {
            ChargeOutcome::RefusedInsufficient
        } else {
            ChargeOutcome::Charged
        };
        let charged_after = order.charged_minor
            + if outcome == ChargeOutcome::Charged {
                amount.minor
            } else {
                0
            };
        let entry = ChargeRecord {
            sequence,
            amount_minor: amount.minor,
            outcome,
            id: self.next_charge + 1,
            usage_sha256: usage.sha256,
            charged_total_after: charged_after,
            remaining_after: order.limit_minor - charged_after,
            recorded_at_ms: now_ms,
        };
        if outcome == ChargeOutcome::Charged {
            self.transfer(
                &Book::Hold(order_id.to_owned()),
                &Book::Spent(order_id.to_owned()),
                amount,
                TransferKind::Charge,
                Some(order_id),
                Some(sequence),
                now_ms,
                effects,
            );
        }
        let order = self
            .orders
            .get_mut(order_id)
            .ok_or_else(|| CorpError::NotFound(order_id.to_owned()))?;
        order.charged_minor = charged_after;
        assert!(
            order.charged_minor <= order.limit_minor,
            "charges exceeded order {order_id}"
        );
        order.charges.insert(sequence, entry.clone());
        self.next_charge = entry.id;
        effects.push(Effect::Charge {
            order_id: order_id.to_owned(),
            record: entry.clone(),
            usage_xml: usage.xml,
        });
        effects.push(Effect::Counter {
            name: COUNTER_CHARGE,
            value: self.next_charge,
        });
        Ok(ChargeAnswer {
            outcome,
            charged_total: order.money(entry.charged_total_after),
            remaining: order.money(entry.remaining_after),
            replayed: false,
        })
    }

    /// The last moment the order's bound server may charge it: its expiry plus the grace
    /// period for charges of usage before the expiry.
    pub(super) fn charges_end_ms(&self, order: &Order) -> i64 {
        let grace_ms = i64::try_from(self.policy.charge_grace_seconds.saturating_mul(1000))
            .unwrap_or(i64::MAX);
        order.effective_expiry_ms.saturating_add(grace_ms)
    }
}
