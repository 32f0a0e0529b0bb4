//! Accounts: clients and servers registering (with their certificates), the auditor role,
//! revocation, deposits, and what an account sees of itself.

use super::*;

/// What a registration produced.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The account (or server) id.
    pub account_id: AccountId,
    /// The certificate, PEM.
    pub certificate_pem: String,
    /// The corp's CA certificate, PEM.
    pub ca_certificate_pem: String,
}

/// A client's registration details.
#[derive(Debug, Clone)]
pub struct ClientRegistration {
    /// Real name.
    pub name: String,
    /// Address.
    pub address: String,
    /// Charging details.
    pub charging_details: String,
    /// Privacy mode.
    pub privacy: Privacy,
    /// CSR, PEM.
    pub csr_pem: String,
}

/// A server's registration details.
#[derive(Debug, Clone)]
pub struct ServerRegistration {
    /// Operator's name.
    pub owner_name: String,
    /// Operator's address.
    pub owner_address: String,
    /// Payout details.
    pub payout_details: String,
    /// The machine (with its endpoint).
    pub machine: MachineSpec,
    /// CSR, PEM.
    pub csr_pem: String,
}

/// An account as its owner sees it.
#[derive(Debug, Clone)]
pub struct AccountView {
    /// Id.
    pub account_id: AccountId,
    /// `client`, `server` or `auditor`.
    pub role: String,
    /// Name.
    pub name: String,
    /// Per currency: (available, reserved).
    pub balances: Vec<(Currency, u64, u64)>,
    /// Recent orders, newest first.
    pub orders: Vec<OrderSummary>,
}

impl Corp {
    /// Opens a client account and certifies its key.
    pub fn register_client(
        &mut self,
        now_ms: i64,
        registration: ClientRegistration,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Registered> {
        check_field("name", &registration.name, true)?;
        check_field("address", &registration.address, true)?;
        check_field("charging details", &registration.charging_details, true)?;
        let csr = Csr::parse(&registration.csr_pem).map_err(invalid)?;
        if self
            .by_key
            .contains_key(&key_fingerprint(csr.public_key_der()))
        {
            return Err(CorpError::AlreadyExists(
                "this key is already registered".to_owned(),
            ));
        }
        let account_id = format!("{}:c-{}", self.corp_id, self.next_client + 1);
        let serial = random_serial_hex();
        let common_name = match registration.privacy {
            Privacy::Identified => registration.name.trim().to_owned(),
            Privacy::Pseudonymous => account_id.clone(),
        };
        let issued = self
            .ca
            .issue(
                &csr,
                &CertificateRequest {
                    common_name: &common_name,
                    uris: vec![Party::client(&self.corp_id, &account_id).uri()],
                    hosts: Vec::new(),
                    role: CertificateRole::Client,
                    serial_hex: &serial,
                    lifetime: self.certificate_lifetime(),
                },
            )
            .map_err(invalid)?;
        self.next_client += 1;
        effects.push(Effect::Counter {
            name: COUNTER_CLIENT,
            value: self.next_client,
        });
        self.add_account(
            Account {
                id: account_id.clone(),
                role: Role::Client,
                name: registration.name.trim().to_owned(),
                address: registration.address,
                details: registration.charging_details,
                privacy: registration.privacy,
                public_key_der: issued.public_key_der,
                serials: vec![serial],
                auditor: false,
                revoked: false,
                registered_at_ms: now_ms,
                machine: None,
            },
            effects,
        );
        let credit = self.initial_credit;
        let funding = Book::Funding(credit.currency);
        let available = Book::Available(account_id.clone(), credit.currency);
        self.transfer(
            &funding,
            &available,
            credit,
            TransferKind::Credit,
            None,
            None,
            now_ms,
            effects,
        );
        Ok(Registered {
            account_id,
            certificate_pem: issued.certificate_pem,
            ca_certificate_pem: self.ca.certificate_pem().to_owned(),
        })
    }

    /// Registers a XenoServer and certifies its key; its id is the key's fingerprint.
    pub fn register_server(
        &mut self,
        now_ms: i64,
        registration: ServerRegistration,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Registered> {
        check_field("owner name", &registration.owner_name, true)?;
        check_field("owner address", &registration.owner_address, true)?;
        check_field("payout details", &registration.payout_details, true)?;
        let machine = &registration.machine;
        check_field("architecture", &machine.architecture, true)?;
        check_field("CPU model", &machine.cpu_model, false)?;
        check_field("XIS node", &machine.xis_node, false)?;
        check_field("endpoint", &machine.endpoint, true)?;
        if machine.cpu_cores == 0 || machine.memory_mb == 0 {
            return Err(invalid(
                "the machine must have at least one core and some memory",
            ));
        }
        let endpoint = normalized_endpoint(&machine.endpoint)
            .ok_or_else(|| invalid(format!("endpoint {:?} is not host:port", machine.endpoint)))?;
        let csr = Csr::parse(&registration.csr_pem).map_err(invalid)?;
        let server_id = key_fingerprint(csr.public_key_der());
        if self.by_key.contains_key(&server_id) {
            return Err(CorpError::AlreadyExists(format!(
                "server {server_id} is already registered"
            )));
        }
        if let Some(holder) = self.accounts.values().find(|account| {
            !account.revoked
                && account.machine.as_ref().is_some_and(|machine| {
                    normalized_endpoint(&machine.endpoint).as_deref() == Some(endpoint.as_str())
                })
        }) {
            return Err(CorpError::AlreadyExists(format!(
                "endpoint {} is already claimed by server {}",
                machine.endpoint, holder.id
            )));
        }
        let serial = random_serial_hex();
        let issued = self
            .ca
            .issue(
                &csr,
                &CertificateRequest {
                    common_name: &server_id,
                    uris: vec![Party::server(&self.corp_id, &server_id).uri()],
                    // No host names: a server is authenticated by its id, and a certificate
                    // naming hosts could pass for the corp's endpoint or another server's.
                    hosts: Vec::new(),
                    role: CertificateRole::Server,
                    serial_hex: &serial,
                    lifetime: self.certificate_lifetime(),
                },
            )
            .map_err(invalid)?;
        self.add_account(
            Account {
                id: server_id.clone(),
                role: Role::Server,
                name: registration.owner_name.trim().to_owned(),
                address: registration.owner_address,
                details: registration.payout_details,
                privacy: Privacy::Identified,
                public_key_der: issued.public_key_der,
                serials: vec![serial],
                auditor: false,
                revoked: false,
                registered_at_ms: now_ms,
                machine: Some(registration.machine),
            },
            effects,
        );
        Ok(Registered {
            account_id: server_id,
            certificate_pem: issued.certificate_pem,
            ca_certificate_pem: self.ca.certificate_pem().to_owned(),
        })
    }

    /// The caller's account.
    pub fn account(&self, caller: &str) -> CorpResult<AccountView> {
        let account = self.caller(caller)?;
        self.account_view(&account.id)
    }

    /// An account as its owner sees it (also for the web account page).
    pub fn account_view(&self, account_id: &str) -> CorpResult<AccountView> {
        let account = self
            .accounts
            .get(account_id)
            .ok_or_else(|| CorpError::NotFound(format!("no account {account_id}")))?;
        if account.revoked {
            return Err(CorpError::Unauthenticated(
                "this account's credentials have been revoked".to_owned(),
            ));
        }
        let mut orders: Vec<&Order> = self
            .orders
            .values()
            .filter(|order| {
                order.issued.client == account.id
                    || order.bound_server.as_deref() == Some(account.id.as_str())
            })
            .collect();
        orders.sort_by(|a, b| {
            b.issued
                .issued_at
                .cmp(&a.issued.issued_at)
                .then_with(|| b.id().cmp(a.id()))
        });
        let mut balances: Vec<(Currency, u64, u64)> = Vec::new();
        for currency in &self.currencies {
            let available = match account.role {
                Role::Client => self
                    .ledger
                    .balance(&Book::Available(account.id.clone(), *currency)),
                Role::Server => self
                    .ledger
                    .balance(&Book::Payout(account.id.clone(), *currency)),
            };
            let reserved: i64 = orders
                .iter()
                .filter(|order| order.issued.client == account.id && order.currency() == *currency)
                .map(|order| {
                    // Committed to open orders: unspent holds and charges awaiting settlement.
                    let id = order.id().to_owned();
                    self.ledger.balance(&Book::Hold(id.clone()))
                        + self.ledger.balance(&Book::Spent(id))
                })
                .sum();
            if available != 0 || reserved != 0 {
                balances.push((
                    *currency,
                    u64::try_from(available).unwrap_or(0),
                    u64::try_from(reserved).unwrap_or(0),
                ));
            }
        }
        let role = if account.auditor {
            "auditor"
        } else {
            account.role.as_str()
        };
        Ok(AccountView {
            account_id: account.id.clone(),
            role: role.to_owned(),
            name: account.name.clone(),
            balances,
            orders: orders
                .into_iter()
                .take(ACCOUNT_ORDERS_MAX)
                .map(Self::summary)
                .collect(),
        })
    }

    /// Operator: grants the auditor role.
    pub fn grant_auditor(&mut self, account_id: &str, effects: &mut Vec<Effect>) -> CorpResult<()> {
        let account = self
            .accounts
            .get_mut(account_id)
            .ok_or_else(|| CorpError::NotFound(format!("no account {account_id}")))?;
        if !account.auditor {
            account.auditor = true;
            effects.push(Effect::Account(account.clone()));
        }
        Ok(())
    }

    /// Operator: revokes an account's certificates.
    pub fn revoke(
        &mut self,
        now_ms: i64,
        account_id: &str,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Vec<String>> {
        let account = self
            .accounts
            .get_mut(account_id)
            .ok_or_else(|| CorpError::NotFound(format!("no account {account_id}")))?;
        account.revoked = true;
        effects.push(Effect::Account(account.clone()));
        let serials = account.serials.clone();
        for serial in &serials {
            if self.revoked.insert(serial.clone()) {
                effects.push(Effect::Revocation {
                    serial: serial.clone(),
                    at_ms: now_ms,
                });
            }
        }
        Ok(serials)
    }

    /// Operator: credits a client with money received from outside.
    pub fn deposit(
        &mut self,
        now_ms: i64,
        account_id: &str,
        amount: Money,
        effects: &mut Vec<Effect>,
    ) -> CorpResult<Money> {
        let account = self
            .accounts
            .get(account_id)
            .ok_or_else(|| CorpError::NotFound(format!("no account {account_id}")))?;
        if account.role != Role::Client {
            return Err(invalid("deposits go to client accounts"));
        }
        self.check_money(&amount)?;
        if amount.minor == 0 {
            return Err(invalid("the deposit must be positive"));
        }
        let available = Book::Available(account_id.to_owned(), amount.currency);
        self.transfer(
            &Book::Funding(amount.currency),
            &available,
            amount,
            TransferKind::Deposit,
            None,
            None,
            now_ms,
            effects,
        );
        Ok(Money {
            currency: amount.currency,
            minor: u64::try_from(self.ledger.balance(&available)).unwrap_or(0),
        })
    }
}
