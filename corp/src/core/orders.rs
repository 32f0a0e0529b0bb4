//! Purchase orders: issuing one against a client's funds, a server's validation (which binds
//! the order to it and narrows it), and closing it, which settles what was charged.

use super::*;

/// The answer to a validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// Order id.
    pub order_id: OrderId,
    /// Bound server.
    pub bound_server: AccountId,
    /// Effective cap.
    pub limit: Money,
    /// Charged so far.
    pub charged: Money,
    /// Effective expiry, Unix ms.
    pub expires_at_ms: i64,
    /// The client, as the server may see it.
    pub client: String,
}

/// An order as summarised in account and audit answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderSummary {
    /// Id.
    pub order_id: OrderId,
    /// State.
    pub state: OrderState,
    /// Amount.
    pub amount: Money,
    /// Charged.
    pub charged: Money,
    /// Bound server.
    pub bound_server: Option<AccountId>,
    /// Expiry, Unix ms.
    pub expires_at_ms: i64,
}

impl Corp {
    /// Issues a purchase order: ring-fences `amount` of the client's available balance and returns
    /// the corp-signed document, with the available balance left.
    pub fn create_order(
        &mut self,
        now_ms: i64,
        caller: &str,
        amount: Money,
        lifetime_seconds: u64,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<(String, Money)> {
        let client = self
            .caller_with_role(caller, Role::Client, "buy purchase orders")?
            .id
            .clone();
        self.check_money(&amount)?;
        if amount.minor == 0 {
            return Err(invalid("the order amount must be positive"));
        }
        let lifetime = match lifetime_seconds {
            0 => self.policy.order_lifetime_default_seconds,
            asked if asked > self.policy.order_lifetime_max_seconds => {
                return Err(invalid(format!(
                    "lifetime {asked} s is over this corp's maximum of {} s",
                    self.policy.order_lifetime_max_seconds
                )));
            }
            asked => asked,
        };
        let available_book = Book::Available(client.clone(), amount.currency);
        let available = u64::try_from(self.ledger.balance(&available_book)).unwrap_or(0);
        if available < amount.minor {
            return Err(CorpError::FailedPrecondition(format!(
                "insufficient available balance: {} available, {} asked",
                Money {
                    currency: amount.currency,
                    minor: available
                },
                amount
            )));
        }
        let order_id = format!("{}:po-{}", self.corp_id, self.next_order + 1);
        let issued_at = from_unix_ms(now_ms);
        let issued = IssuedOrder {
            order_id: order_id.clone(),
            corp: self.corp_id.clone(),
            client: client.clone(),
            amount,
            issued_at,
            expires_at: issued_at + Duration::seconds(i64::try_from(lifetime).unwrap_or(i64::MAX)),
            restrictions: Restrictions {
                must_validate: self.policy.must_validate.then_some(true),
                env_types: (!self.policy.env_types.is_empty())
                    .then(|| self.policy.env_types.clone()),
                ..Restrictions::default()
            },
        };
        let corp_signature = self
            .ca
            .signing_key()
            .sign(&PurchaseOrder::corp_signed_bytes(&issued))
            .map_err(|error| CorpError::Unavailable(format!("cannot sign the order: {error}")))?;
        let document = PurchaseOrder {
            issued,
            corp_signature,
            client_restrictions: None,
            client_signature: None,
        };
        let order = Order {
            effective_expiry_ms: unix_ms(document.issued.expires_at),
            issued: document.issued.clone(),
            document_xml: document.to_xml(),
            state: OrderState::Issued,
            bound_server: None,
            bound_session: None,
            validated_xml: None,
            limit_minor: amount.minor,
            charged_minor: 0,
            settlement: None,
            charges: BTreeMap::new(),
        };
        self.next_order += 1;
        effects.push(Effect::Counter {
            name: COUNTER_ORDER,
            value: self.next_order,
        });
        effects.push(Effect::Order(OrderRow::of(&order)));
        let xml = order.document_xml.clone();
        self.orders.insert(order_id.clone(), order);
        self.transfer(
            &available_book,
            &Book::Hold(order_id.clone()),
            amount,
            TransferKind::Reserve,
            Some(&order_id),
            None,
            now_ms,
            effects,
        );
        Ok((
            xml,
            Money {
                currency: amount.currency,
                minor: available - amount.minor,
            },
        ))
    }

    /// Validates an order for the calling server and session, binding it to them (once).
    pub fn validate(
        &mut self,
        now_ms: i64,
        caller: &str,
        order_xml: &str,
        session_id: &str,
        requirements_xml: &str,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Validation> {
        let server_id = self
            .caller_with_role(caller, Role::Server, "validate purchase orders")?
            .id
            .clone();
        if !(xeno_schemas::documents::common::OBJECT_ID.matches)(session_id) {
            return Err(invalid(
                "session_id must be an id (letters, digits, '_', '.', ':' or '-')",
            ));
        }
        let document = PurchaseOrder::parse(order_xml.as_bytes())
            .map_err(|error| invalid(format!("purchase order: {error}")))?;
        let requirements = EnvironmentalRequirements::parse(requirements_xml.as_bytes())
            .map_err(|error| invalid(format!("requirements: {error}")))?;
        if document.issued.corp != self.corp_id {
            return Err(denied(format!(
                "the order was issued by {}, not {}",
                document.issued.corp, self.corp_id
            )));
        }
        if document.corp_signature.public_key != self.ca.signing_key().public_key_der()
            || verify(
                &document.corp_signature,
                &PurchaseOrder::corp_signed_bytes(&document.issued),
            )
            .is_err()
        {
            return Err(denied("the corp's signature on the order does not verify"));
        }
        let order = self.order(&document.issued.order_id)?;
        if order.issued != document.issued {
            return Err(denied("the order does not match the one this corp issued"));
        }
        let client = self
            .accounts
            .get(&order.issued.client)
            .ok_or_else(|| CorpError::NotFound("the order's client is unknown".to_owned()))?;
        let client_signature = document
            .client_signature
            .as_ref()
            .ok_or_else(|| denied("the order is not signed by its client"))?;
        if client_signature.public_key != client.public_key_der
            || verify(client_signature, &document.client_signed_bytes()).is_err()
        {
            return Err(denied(
                "the client's signature on the order does not verify",
            ));
        }
        if client.revoked {
            return Err(denied("the order's client has had its credentials revoked"));
        }
        let client_restrictions = document.client_restrictions.clone().unwrap_or_default();
        // The order's own amount and expiry bound the client as much as the corp's restrictions.
        let mut corp_bounds = order.issued.restrictions.clone();
        let amount = order.issued.amount;
        corp_bounds.max_amount = Some(corp_bounds.max_amount.map_or(amount, |cap| Money {
            minor: cap.minor.min(amount.minor),
            ..cap
        }));
        corp_bounds.not_after = Some(corp_bounds.not_after.map_or(order.issued.expires_at, |at| {
            at.min(order.issued.expires_at)
        }));
        if let Some(widened) = restrictions::widening(&corp_bounds, &client_restrictions) {
            return Err(denied(format!(
                "the client's restrictions widen the corp's: {widened}"
            )));
        }
        let mut limit = order.issued.amount.minor;
        let mut expiry = unix_ms(order.issued.expires_at);
        for restrictions in [&order.issued.restrictions, &client_restrictions] {
            if let Some(cap) = restrictions.max_amount {
                limit = limit.min(cap.minor);
            }
            if let Some(not_after) = restrictions.not_after {
                expiry = expiry.min(unix_ms(not_after));
            }
        }
        if now_ms >= expiry {
            return Err(CorpError::FailedPrecondition(format!(
                "the order expired at {}",
                xeno_schemas::schema::types::format_date_time(from_unix_ms(expiry))
            )));
        }
        let client_view = self.client_identity_for_server(client);
        match order.state {
            OrderState::Closed => {
                return Err(CorpError::FailedPrecondition(
                    "the order is closed".to_owned(),
                ));
            }
            OrderState::Bound => {
                return if order.bound_server.as_deref() == Some(server_id.as_str())
                    && order.bound_session.as_deref() == Some(session_id)
                {
                    Ok(self.validation(order, client_view))
                } else if order.bound_server.as_deref() == Some(server_id.as_str()) {
                    Err(CorpError::AlreadyExists(
                        "the order already funds another session on this server".to_owned(),
                    ))
                } else {
                    Err(CorpError::AlreadyExists(
                        "the order is already bound to another server".to_owned(),
                    ))
                };
            }
            OrderState::Issued => {}
        }
        let session_key = (server_id.clone(), session_id.to_owned());
        if let Some(funding) = self.funded_sessions.get(&session_key) {
            return Err(CorpError::AlreadyExists(format!(
                "session {session_id} on this server is already funded by order {funding}"
            )));
        }
        for (restrictions, whose) in [
            (&order.issued.restrictions, "corp"),
            (&client_restrictions, "client"),
        ] {
            if let Some(unmet) = restrictions::unmet(restrictions, whose, &server_id, &requirements)
            {
                return Err(denied(unmet));
            }
        }
        let order_id = document.issued.order_id.clone();
        let order = self
            .orders
            .get_mut(&order_id)
            .ok_or_else(|| CorpError::NotFound(order_id.clone()))?;
        order.state = OrderState::Bound;
        self.funded_sessions.insert(session_key, order_id.clone());
        order.bound_server = Some(server_id);
        order.bound_session = Some(session_id.to_owned());
        order.validated_xml = Some(document.to_xml());
        order.limit_minor = limit;
        order.effective_expiry_ms = expiry;
        effects.push(Effect::Order(OrderRow::of(order)));
        let order = &self.orders[&order_id];
        Ok(self.validation(order, client_view))
    }

    pub(super) fn client_identity_for_server(&self, client: &Account) -> String {
        client.id.clone()
    }

    pub(super) fn validation(&self, order: &Order, client: String) -> Validation {
        Validation {
            order_id: order.id().to_owned(),
            bound_server: order.bound_server.clone().unwrap_or_default(),
            limit: order.money(order.limit_minor),
            charged: order.money(order.charged_minor),
            expires_at_ms: order.effective_expiry_ms,
            client,
        }
    }

    /// Settles an order.
    pub fn close(
        &mut self,
        now_ms: i64,
        caller: &str,
        order_id: &str,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Settlement> {
        let caller_id = self.caller(caller)?.id.clone();
        let order = self.order(order_id)?;
        let is_server = order.bound_server.as_deref() == Some(caller_id.as_str());
        let is_client = order.issued.client == caller_id;
        if !(is_server || is_client) {
            return Err(denied(
                "only the order's bound server, or its client, may close it",
            ));
        }
        if let Some(settlement) = order.settlement {
            return Ok(settlement);
        }
        // A bound order's server may charge for usage up to the expiry until the grace period
        // ends: its client may not settle before then, or the last interval would go unpaid.
        let charges_end_ms = self.charges_end_ms(order);
        if is_client && !is_server && order.state == OrderState::Bound && now_ms <= charges_end_ms {
            return Err(CorpError::FailedPrecondition(format!(
                "the order is bound to server {}, which may still make its final charge until {}; it closes the order itself, or its client may close it after then",
                order.bound_server.as_deref().unwrap_or_default(),
                xeno_schemas::schema::types::format_date_time(from_unix_ms(charges_end_ms))
            )));
        }
        let currency = order.currency();
        let spent = order.charged_minor;
        let commission =
            u64::try_from(u128::from(spent) * u128::from(self.policy.commission_ppm) / 1_000_000)
                .unwrap_or(spent);
        let payout = spent - commission;
        let hold = Book::Hold(order_id.to_owned());
        let returned = u64::try_from(self.ledger.balance(&hold)).unwrap_or(0);
        let client = order.issued.client.clone();
        let server = order.bound_server.clone();
        let spent_book = Book::Spent(order_id.to_owned());
        let money = |minor| Money { currency, minor };
        if let Some(server) = server {
            self.transfer(
                &spent_book,
                &Book::Payout(server, currency),
                money(payout),
                TransferKind::Payout,
                Some(order_id),
                None,
                now_ms,
                effects,
            );
        }
        self.transfer(
            &spent_book,
            &Book::Commission(currency),
            money(commission),
            TransferKind::Commission,
            Some(order_id),
            None,
            now_ms,
            effects,
        );
        self.transfer(
            &hold,
            &Book::Available(client, currency),
            money(returned),
            TransferKind::Release,
            Some(order_id),
            None,
            now_ms,
            effects,
        );
        assert_eq!(
            self.ledger.balance(&spent_book),
            0,
            "settlement left money in {}",
            spent_book.key()
        );
        assert_eq!(
            self.ledger.balance(&hold),
            0,
            "settlement left money in {}",
            hold.key()
        );
        let settlement = Settlement {
            spent,
            returned,
            payout,
            commission,
            closed_at_ms: now_ms,
        };
        let order = self
            .orders
            .get_mut(order_id)
            .ok_or_else(|| CorpError::NotFound(order_id.to_owned()))?;
        order.state = OrderState::Closed;
        order.settlement = Some(settlement);
        effects.push(Effect::Order(OrderRow::of(order)));
        Ok(settlement)
    }

    pub(super) fn summary(order: &Order) -> OrderSummary {
        OrderSummary {
            order_id: order.id().to_owned(),
            state: order.state,
            amount: order.issued.amount,
            charged: order.money(order.charged_minor),
            bound_server: order.bound_server.clone(),
            expires_at_ms: order.effective_expiry_ms,
        }
    }
}
