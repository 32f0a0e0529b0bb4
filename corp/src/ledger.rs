//! Double-entry bookkeeping. Every movement of money is a [`Transfer`] from one book to
//! another, in integer minor units; balances are kept per book. Only the corp's funding book
//! (money that came from outside: deposits and credit lines) may go negative, so the sum of all
//! balances in a currency is always zero.

use crate::model::{AccountId, Effect, OrderId};
use std::collections::HashMap;
use xeno_schemas::documents::Currency;

/// A ledger book: one balance.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Book {
    /// The corp's funding: money that entered from outside. Goes negative.
    Funding(Currency),
    /// A client's spendable balance.
    Available(AccountId, Currency),
    /// An order's ring-fenced, unspent amount.
    Hold(OrderId),
    /// An order's charged amount, awaiting settlement.
    Spent(OrderId),
    /// A server operator's earnings.
    Payout(AccountId, Currency),
    /// The corp's commission.
    Commission(Currency),
}

impl Book {
    /// The key books are stored under.
    pub fn key(&self) -> String {
        match self {
            Book::Funding(currency) => format!("funding:{currency}"),
            Book::Available(account, currency) => format!("available:{account}:{currency}"),
            Book::Hold(order) => format!("hold:{order}"),
            Book::Spent(order) => format!("spent:{order}"),
            Book::Payout(account, currency) => format!("payout:{account}:{currency}"),
            Book::Commission(currency) => format!("commission:{currency}"),
        }
    }
}

/// Why money moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferKind {
    /// An operator deposit into a client account.
    Deposit,
    /// A credit line granted at registration.
    Credit,
    /// Ring-fencing an order.
    Reserve,
    /// A charge against an order.
    Charge,
    /// Returning an order's unspent remainder.
    Release,
    /// Paying a server operator at settlement.
    Payout,
    /// The corp's commission at settlement.
    Commission,
}

impl TransferKind {
    /// The name stored.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferKind::Deposit => "deposit",
            TransferKind::Credit => "credit",
            TransferKind::Reserve => "reserve",
            TransferKind::Charge => "charge",
            TransferKind::Release => "release",
            TransferKind::Payout => "payout",
            TransferKind::Commission => "commission",
        }
    }
}

/// One movement of money.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    /// Sequential id.
    pub id: u64,
    /// The book debited.
    pub from: String,
    /// The book credited.
    pub to: String,
    /// Currency.
    pub currency: Currency,
    /// Amount, minor units, positive.
    pub amount: u64,
    /// Why.
    pub kind: TransferKind,
    /// The order concerned.
    pub order_id: Option<OrderId>,
    /// The charge's sequence number, for charges.
    pub sequence: Option<u64>,
    /// When, Unix ms.
    pub at_ms: i64,
}

/// All balances, and the next transfer id.
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    balances: HashMap<String, (Currency, i64)>,
    next_transfer: u64,
}

/// A transfer to make.
#[derive(Debug)]
pub struct Movement<'a> {
    /// From.
    pub from: &'a Book,
    /// To.
    pub to: &'a Book,
    /// Currency.
    pub currency: Currency,
    /// Amount; zero moves nothing and records nothing.
    pub amount: u64,
    /// Why.
    pub kind: TransferKind,
    /// The order concerned.
    pub order_id: Option<&'a str>,
    /// The charge's sequence number.
    pub sequence: Option<u64>,
}

impl Ledger {
    /// A ledger rebuilt from stored balances.
    pub fn from_parts(balances: HashMap<String, (Currency, i64)>, next_transfer: u64) -> Self {
        Ledger {
            balances,
            next_transfer,
        }
    }

    /// A book's balance (zero if it never moved).
    pub fn balance(&self, book: &Book) -> i64 {
        self.balance_of(&book.key())
    }

    fn balance_of(&self, key: &str) -> i64 {
        self.balances.get(key).map_or(0, |(_, balance)| *balance)
    }

    /// Next transfer id.
    pub fn next_transfer(&self) -> u64 {
        self.next_transfer
    }

    /// Moves money, recording the transfer and both new balances as effects.
    ///
    /// # Panics
    /// If the move would overdraw a book other than funding: callers check first, so this is a
    /// bug, and money bugs stop the corp rather than corrupt the ledger.
    pub fn transfer(&mut self, movement: Movement<'_>, at_ms: i64, effects: &mut Vec<Effect>) {
        if movement.amount == 0 {
            return;
        }
        let amount =
            i64::try_from(movement.amount).expect("amounts fit in i64 (AMOUNT_MINOR_MAX < 2^63)");
        let from_key = movement.from.key();
        let to_key = movement.to.key();
        assert_ne!(
            from_key, to_key,
            "a transfer must move money between two books"
        );
        let from_balance = self.balance_of(&from_key) - amount;
        assert!(
            from_balance >= 0 || matches!(movement.from, Book::Funding(_)),
            "transfer of {amount} would overdraw {from_key}"
        );
        let to_balance = self
            .balance_of(&to_key)
            .checked_add(amount)
            .expect("balance overflow");
        self.balances
            .insert(from_key.clone(), (movement.currency, from_balance));
        self.balances
            .insert(to_key.clone(), (movement.currency, to_balance));
        self.next_transfer += 1;
        effects.push(Effect::Transfer(Transfer {
            id: self.next_transfer,
            from: from_key.clone(),
            to: to_key.clone(),
            currency: movement.currency,
            amount: movement.amount,
            kind: movement.kind,
            order_id: movement.order_id.map(str::to_owned),
            sequence: movement.sequence,
            at_ms,
        }));
        effects.push(Effect::Balance {
            book: from_key,
            currency: movement.currency,
            balance: from_balance,
        });
        effects.push(Effect::Balance {
            book: to_key,
            currency: movement.currency,
            balance: to_balance,
        });
    }

    /// Checks that money is conserved per currency and that only funding books are negative.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = Vec::new();
        let mut sums: HashMap<Currency, i128> = HashMap::new();
        for (key, (currency, balance)) in &self.balances {
            *sums.entry(*currency).or_default() += i128::from(*balance);
            if *balance < 0 && !key.starts_with("funding:") {
                violations.push(format!("book {key} is negative: {balance}"));
            }
        }
        for (currency, sum) in sums {
            if sum != 0 {
                violations.push(format!(
                    "{currency} is not conserved: balances sum to {sum}"
                ));
            }
        }
        violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transfers_conserve_money() {
        let gbp: Currency = "GBP".parse().expect("currency");
        let mut ledger = Ledger::default();
        let mut effects = Vec::new();
        let funding = Book::Funding(gbp);
        let alice = Book::Available("c-1".into(), gbp);
        let hold = Book::Hold("po-1".into());
        let movement = |from, to, amount| Movement {
            from,
            to,
            currency: gbp,
            amount,
            kind: TransferKind::Deposit,
            order_id: None,
            sequence: None,
        };
        ledger.transfer(movement(&funding, &alice, 100), 0, &mut effects);
        ledger.transfer(movement(&alice, &hold, 60), 0, &mut effects);
        assert_eq!(ledger.balance(&funding), -100);
        assert_eq!(ledger.balance(&alice), 40);
        assert_eq!(ledger.balance(&hold), 60);
        assert!(ledger.violations().is_empty());
        assert_eq!(
            effects
                .iter()
                .filter(|e| matches!(e, Effect::Transfer(_)))
                .count(),
            2
        );
    }

    #[test]
    #[should_panic(expected = "would overdraw")]
    fn overdrawing_is_a_bug() {
        let gbp: Currency = "GBP".parse().expect("currency");
        let mut ledger = Ledger::default();
        let alice = Book::Available("c-1".into(), gbp);
        let hold = Book::Hold("po-1".into());
        let movement = Movement {
            from: &alice,
            to: &hold,
            currency: gbp,
            amount: 1,
            kind: TransferKind::Reserve,
            order_id: None,
            sequence: None,
        };
        ledger.transfer(movement, 0, &mut Vec::new());
    }
}
