//! Turns at compiling, fair across sessions: at most `slots` compilations at once, at most one
//! per domain, and domains served round-robin, so a session that queues a hundred large
//! programs delays another session's one small program by at most one compilation per slot.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use xeno_taskmgr_kit::lock;

#[derive(Default)]
struct State {
    running: usize,
    /// Domains compiling now.
    busy: std::collections::HashSet<String>,
    /// Each domain's waiting turns, in arrival order.
    waiting: HashMap<String, VecDeque<oneshot::Sender<()>>>,
    /// Domains with waiting turns, in the order they are served.
    rotation: VecDeque<String>,
}

pub(crate) struct CompileQueue {
    slots: usize,
    state: Mutex<State>,
}

/// A turn at compiling; the next one is granted when it is dropped.
pub(crate) struct Turn {
    queue: Arc<CompileQueue>,
    domain: String,
}

impl CompileQueue {
    pub(crate) fn new(slots: usize) -> Arc<CompileQueue> {
        Arc::new(CompileQueue {
            slots: slots.max(1),
            state: Mutex::new(State::default()),
        })
    }

    /// Waits for `domain`'s turn.
    pub(crate) async fn turn(self: &Arc<Self>, domain: &str) -> Turn {
        let waiting = {
            let mut state = lock(&self.state);
            if state.running < self.slots
                && !state.busy.contains(domain)
                && state.rotation.is_empty()
            {
                state.running += 1;
                state.busy.insert(domain.to_owned());
                None
            } else {
                let (granted, wait) = oneshot::channel();
                let turns = state.waiting.entry(domain.to_owned()).or_default();
                let first = turns.is_empty();
                turns.push_back(granted);
                if first {
                    state.rotation.push_back(domain.to_owned());
                }
                self.grant(&mut state);
                Some(wait)
            }
        };
        if let Some(wait) = waiting {
            // The sender is only dropped after sending (or with the queue, which outlives us).
            let _ = wait.await;
        }
        Turn {
            queue: Arc::clone(self),
            domain: domain.to_owned(),
        }
    }

    /// Grants free slots to the next domains in the rotation that are not compiling.
    fn grant(&self, state: &mut State) {
        let mut passed = 0;
        while state.running < self.slots && passed < state.rotation.len() {
            let Some(domain) = state.rotation.pop_front() else {
                break;
            };
            if state.busy.contains(&domain) {
                state.rotation.push_back(domain);
                passed += 1;
                continue;
            }
            let Some(turns) = state.waiting.get_mut(&domain) else {
                continue;
            };
            let Some(granted) = turns.pop_front() else {
                state.waiting.remove(&domain);
                continue;
            };
            if turns.is_empty() {
                state.waiting.remove(&domain);
            } else {
                state.rotation.push_back(domain.clone());
            }
            // A waiter that gave up (its deploy was cancelled) cannot take the turn: pass it on.
            if granted.send(()).is_ok() {
                state.running += 1;
                state.busy.insert(domain);
            }
            passed = 0;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut state = lock(&self.queue.state);
        state.running = state.running.saturating_sub(1);
        state.busy.remove(&self.domain);
        self.queue.grant(&mut state);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// One slot; domain A queues three compilations before B queues one: B's comes second.
    #[tokio::test]
    async fn domains_take_turns() {
        let queue = CompileQueue::new(1);
        let first = queue.turn("a").await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        for (name, domain) in [("a2", "a"), ("a3", "a"), ("a4", "a"), ("b1", "b")] {
            let queue = Arc::clone(&queue);
            let order = Arc::clone(&order);
            waiting.push(tokio::spawn(async move {
                let _turn = queue.turn(domain).await;
                lock(&order).push(name);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        drop(first);
        for task in waiting {
            task.await.expect("join");
        }
        assert_eq!(*lock(&order), ["a2", "b1", "a3", "a4"]);
    }

    /// Two slots, one domain: it still compiles one program at a time.
    #[tokio::test]
    async fn one_compilation_per_domain() {
        let queue = CompileQueue::new(2);
        let _first = queue.turn("a").await;
        let second = tokio::time::timeout(Duration::from_millis(50), queue.turn("a")).await;
        assert!(second.is_err(), "a second turn for the same domain waits");
        let other = tokio::time::timeout(Duration::from_millis(50), queue.turn("b")).await;
        assert!(other.is_ok(), "another domain uses the free slot");
    }
}
