//! The ledger's invariants, checked over the whole state, and its counts.

use super::*;

impl Corp {
    /// Checks the invariants that can be checked in memory: conservation, no negative book, no
    /// order charged beyond its cap, holds and spent books matching each order's state.
    pub fn violations(&self) -> Vec<String> {
        let mut violations = self.ledger.violations();
        for order in self.orders.values() {
            let id = order.id();
            let hold = self.ledger.balance(&Book::Hold(id.to_owned()));
            let spent = self.ledger.balance(&Book::Spent(id.to_owned()));
            if order.charged_minor > order.limit_minor
                || order.limit_minor > order.issued.amount.minor
            {
                violations.push(format!(
                    "order {id} charged {} over its cap {}",
                    order.charged_minor, order.limit_minor
                ));
            }
            let charged: u64 = order
                .charges
                .values()
                .filter(|c| c.outcome == ChargeOutcome::Charged)
                .map(|c| c.amount_minor)
                .sum();
            if charged != order.charged_minor {
                violations.push(format!(
                    "order {id}: charges sum to {charged} but {} is recorded",
                    order.charged_minor
                ));
            }
            let expected = if order.state == OrderState::Closed {
                (0, 0)
            } else {
                (
                    i64::try_from(order.issued.amount.minor - order.charged_minor).unwrap_or(-1),
                    i64::try_from(order.charged_minor).unwrap_or(-1),
                )
            };
            if (hold, spent) != expected {
                violations.push(format!(
                    "order {id} ({}) holds {hold} and has spent {spent}; expected {expected:?}",
                    order.state.as_str()
                ));
            }
        }
        violations
    }

    /// Counts for reports: (accounts, orders, charges).
    pub fn counts(&self) -> (u64, u64, u64) {
        let charges: usize = self.orders.values().map(|order| order.charges.len()).sum();
        (
            self.accounts.len() as u64,
            self.orders.len() as u64,
            charges as u64,
        )
    }
}
