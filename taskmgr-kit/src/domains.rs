//! A task manager's table of domains: the live ones, bounded by `domains_max`, and the final
//! usage of destroyed ones, remembered (up to a bound, oldest forgotten first) so that a repeated
//! DestroyDomain returns the same usage and a reused id is refused as destroyed. The rules for
//! ids are the interface's: CreateDomain is idempotent for an identical request (same
//! fingerprint) and refused for a different one.

use crate::Error;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use xeno_schemas::proto::common::v1::Usage;

/// What a domain must tell the table about itself.
pub trait TableDomain {
    /// The hash of the CreateDomain request that made it.
    fn fingerprint(&self) -> [u8; 32];
}

enum Entry<D> {
    Live(Arc<D>),
    Destroyed(Usage),
}

struct Entries<D> {
    entries: HashMap<String, Entry<D>>,
    /// Destroyed domains, oldest first, for forgetting beyond `destroyed_kept`.
    destroyed_order: VecDeque<String>,
    live: u32,
}

/// What DestroyDomain finds.
pub enum Destroying<D> {
    /// A live domain to tear down, then [`DomainTable::destroyed`].
    Live(Arc<D>),
    /// Destroyed already: its final usage.
    Done(Usage),
}

/// The table; cheap operations under one lock.
pub struct DomainTable<D> {
    domains_max: u32,
    destroyed_kept: usize,
    state: Mutex<Entries<D>>,
}

impl<D: TableDomain> DomainTable<D> {
    /// An empty table holding at most `domains_max` live domains and remembering the last
    /// `destroyed_kept` destroyed ones.
    pub fn new(domains_max: u32, destroyed_kept: usize) -> Self {
        DomainTable {
            domains_max,
            destroyed_kept,
            state: Mutex::new(Entries {
                entries: HashMap::new(),
                destroyed_order: VecDeque::new(),
                live: 0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Entries<D>> {
        // Every critical section leaves the table consistent before anything that can panic.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn full(&self) -> Error {
        Error::Exhausted(format!(
            "this task manager already holds its maximum of {} domains",
            self.domains_max
        ))
    }

    /// The live domains.
    pub fn live(&self) -> Vec<Arc<D>> {
        self.lock()
            .entries
            .values()
            .filter_map(|entry| match entry {
                Entry::Live(domain) => Some(Arc::clone(domain)),
                Entry::Destroyed(_) => None,
            })
            .collect()
    }

    /// The live domain `id`, or why there is none.
    pub fn get(&self, id: &str) -> Result<Arc<D>, Error> {
        match self.lock().entries.get(id) {
            Some(Entry::Live(domain)) => Ok(Arc::clone(domain)),
            Some(Entry::Destroyed(_)) => Err(Error::DomainDestroyed(id.to_owned())),
            None => Err(Error::DomainNotFound(id.to_owned())),
        }
    }

    /// Before building a domain: `Some(Ok)` if an identical one exists (the call is a repeat),
    /// `Some(Err)` if the id is taken, `None` if it is free.
    pub fn existing(&self, id: &str, fingerprint: [u8; 32]) -> Option<Result<(), Error>> {
        match self.lock().entries.get(id) {
            Some(Entry::Live(domain)) if domain.fingerprint() == fingerprint => Some(Ok(())),
            Some(Entry::Live(_)) => Some(Err(Error::DomainExists(id.to_owned()))),
            Some(Entry::Destroyed(_)) => Some(Err(Error::DomainDestroyed(id.to_owned()))),
            None => None,
        }
    }

    /// Whether one more domain fits.
    pub fn room(&self) -> Result<(), Error> {
        if self.lock().live >= self.domains_max {
            return Err(self.full());
        }
        Ok(())
    }

    /// Adds a built domain, checking again (another CreateDomain may have run meanwhile).
    /// `Ok(true)`: added; `Ok(false)`: an identical domain got there first, so `domain` is
    /// not used and the caller releases what it built.
    pub fn insert(&self, id: &str, domain: Arc<D>) -> Result<bool, Error> {
        let mut state = self.lock();
        match state.entries.get(id) {
            Some(Entry::Live(existing)) if existing.fingerprint() == domain.fingerprint() => {
                Ok(false)
            }
            Some(Entry::Live(_)) => Err(Error::DomainExists(id.to_owned())),
            Some(Entry::Destroyed(_)) => Err(Error::DomainDestroyed(id.to_owned())),
            None if state.live >= self.domains_max => Err(self.full()),
            None => {
                state.live += 1;
                state.entries.insert(id.to_owned(), Entry::Live(domain));
                Ok(true)
            }
        }
    }

    /// What DestroyDomain of `id` has to do.
    pub fn destroying(&self, id: &str) -> Result<Destroying<D>, Error> {
        match self.lock().entries.get(id) {
            Some(Entry::Live(domain)) => Ok(Destroying::Live(Arc::clone(domain))),
            Some(Entry::Destroyed(usage)) => Ok(Destroying::Done(*usage)),
            None => Err(Error::DomainNotFound(id.to_owned())),
        }
    }

    /// Records that `domain` (live under `id`) was torn down with this final usage. Returns
    /// false if another DestroyDomain recorded it first.
    pub fn destroyed(&self, id: &str, domain: &Arc<D>, usage: Usage) -> bool {
        let mut state = self.lock();
        let current =
            matches!(state.entries.get(id), Some(Entry::Live(live)) if Arc::ptr_eq(live, domain));
        if !current {
            return false;
        }
        state.entries.insert(id.to_owned(), Entry::Destroyed(usage));
        state.live = state.live.saturating_sub(1);
        state.destroyed_order.push_back(id.to_owned());
        while state.destroyed_order.len() > self.destroyed_kept {
            if let Some(old) = state.destroyed_order.pop_front() {
                state.entries.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake([u8; 32]);

    impl TableDomain for Fake {
        fn fingerprint(&self) -> [u8; 32] {
            self.0
        }
    }

    #[test]
    fn ids_are_idempotent_bounded_and_remembered_after_destruction() {
        let table = DomainTable::new(1, 1);
        assert!(table.existing("a", [1; 32]).is_none());
        assert!(table.room().is_ok());
        let a = Arc::new(Fake([1; 32]));
        assert!(table.insert("a", Arc::clone(&a)).expect("added"));
        assert!(matches!(table.existing("a", [1; 32]), Some(Ok(()))));
        assert!(matches!(
            table.existing("a", [2; 32]),
            Some(Err(Error::DomainExists(_)))
        ));
        assert!(matches!(table.room(), Err(Error::Exhausted(_))));
        assert!(matches!(
            table.insert("b", Arc::new(Fake([3; 32]))),
            Err(Error::Exhausted(_))
        ));
        let usage = Usage {
            cpu_time_us: 7,
            ..Usage::default()
        };
        assert!(table.destroyed("a", &a, usage));
        assert!(!table.destroyed("a", &a, usage), "recorded once");
        assert!(matches!(table.destroying("a"), Ok(Destroying::Done(u)) if u.cpu_time_us == 7));
        assert!(matches!(table.get("a"), Err(Error::DomainDestroyed(_))));
        // Room again; and beyond `destroyed_kept` the oldest destroyed id is forgotten.
        let b = Arc::new(Fake([3; 32]));
        assert!(table.insert("b", Arc::clone(&b)).expect("room"));
        assert!(table.destroyed("b", &b, usage));
        assert!(matches!(table.get("a"), Err(Error::DomainNotFound(_))));
        assert!(table.live().is_empty());
    }
}
