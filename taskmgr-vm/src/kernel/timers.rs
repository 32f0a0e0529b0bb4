//! Timers a process arms: `alarm` and `setitimer(ITIMER_REAL)` (SIGALRM), POSIX timers
//! (`timer_create`: a signal of the process's choosing), and `timerfd` (a descriptor whose
//! reads count expirations). All of them are served by one host thread that sleeps until
//! the earliest deadline of every domain's timers; it holds them weakly, so a timer whose
//! process or descriptor is gone simply stops.
//!
//! A timer fires whatever its process is doing: the signal is sent as another process's
//! would be ([`ProcessShared::send`]), so it interrupts a running vCPU or a wait, and a
//! timerfd's count wakes its readers and pollers.

use crate::kernel::eventfd::EventFd;
use crate::kernel::tree::ProcessShared;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Arc, Condvar, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};
use xeno_taskmgr_kit::lock;

/// Most POSIX timers one process may hold (Linux bounds them by RLIMIT_SIGPENDING; this
/// bounds the VMM's bookkeeping for a process that creates them in a loop).
pub(crate) const POSIX_TIMERS_MAX: usize = 256;
/// Shortest interval a periodic timer may have: a 1 ns interval would have the timer thread
/// fire without pause (Linux's hrtimers have a comparable floor for user timers).
const INTERVAL_MIN: Duration = Duration::from_micros(100);

/// What a timer does when it expires.
#[derive(Debug)]
pub(crate) enum Fire {
    /// Sends `signal` with `si_code` `code` to the process.
    Signal {
        process: Weak<ProcessShared>,
        signal: u64,
        code: i32,
    },
    /// Adds the expirations to a timerfd's count.
    Count(Weak<EventFd>),
    /// Nothing (SIGEV_NONE): the timer is only read.
    Nothing,
}

#[derive(Debug)]
struct State {
    deadline: Option<Instant>,
    interval: Duration,
    /// Bumped at every arm and disarm: entries of the service's heap for an older one are
    /// ignored.
    generation: u64,
    /// Expirations that could not be signalled since the last one that was (POSIX timers).
    overrun: u64,
}

/// One timer.
#[derive(Debug)]
pub(crate) struct Timer {
    fire: Fire,
    state: Mutex<State>,
}

impl Timer {
    pub(crate) fn new(fire: Fire) -> Arc<Timer> {
        Arc::new(Timer {
            fire,
            state: Mutex::new(State {
                deadline: None,
                interval: Duration::ZERO,
                generation: 0,
                overrun: 0,
            }),
        })
    }

    /// Arms the timer to expire after `value` (disarms it if `None`), then every `interval`
    /// (once if zero). Returns what was left of the previous setting and its interval.
    pub(crate) fn set(
        self: &Arc<Self>,
        value: Option<Duration>,
        interval: Duration,
    ) -> (Duration, Duration) {
        let now = Instant::now();
        let (old, deadline, generation) = {
            let mut state = lock(&self.state);
            let old = (
                state
                    .deadline
                    .map_or(Duration::ZERO, |at| at.saturating_duration_since(now)),
                state.interval,
            );
            state.generation += 1;
            state.overrun = 0;
            state.deadline = value.map(|value| now + value);
            state.interval = if interval.is_zero() {
                Duration::ZERO
            } else {
                interval.max(INTERVAL_MIN)
            };
            (old, state.deadline, state.generation)
        };
        if let Some(deadline) = deadline {
            service().schedule(deadline, self, generation);
        }
        old
    }

    /// (time left, interval); zero left when disarmed.
    pub(crate) fn get(&self) -> (Duration, Duration) {
        let state = lock(&self.state);
        let left = state.deadline.map_or(Duration::ZERO, |at| {
            at.saturating_duration_since(Instant::now())
        });
        (left, state.interval)
    }

    /// Expirations missed since the last signal (`timer_getoverrun`).
    pub(crate) fn overrun(&self) -> u64 {
        lock(&self.state).overrun
    }

    /// Stops it for good (its process deleted it, ended, or exec'd).
    pub(crate) fn disarm(&self) {
        let mut state = lock(&self.state);
        state.generation += 1;
        state.deadline = None;
    }

    /// Expires now if `generation` is still current: fires, and rearms a periodic timer
    /// (counting the periods that passed meanwhile). The next deadline, if any.
    fn expire(&self, generation: u64, now: Instant) -> Option<Instant> {
        let (count, next) = {
            let mut state = lock(&self.state);
            let deadline = state.deadline?;
            if state.generation != generation || deadline > now {
                return None;
            }
            if state.interval.is_zero() {
                state.deadline = None;
                (1, None)
            } else {
                let behind = now.duration_since(deadline).as_nanos() / state.interval.as_nanos();
                let periods = u64::try_from(behind).unwrap_or(u64::MAX).saturating_add(1);
                let step = state
                    .interval
                    .checked_mul(u32::try_from(periods).unwrap_or(u32::MAX))
                    .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
                let next = deadline + step;
                state.deadline = Some(next);
                state.overrun = periods - 1;
                (periods, Some(next))
            }
        };
        match &self.fire {
            Fire::Signal {
                process,
                signal,
                code,
            } => {
                if let Some(process) = process.upgrade() {
                    process.send(*signal, *code, 0);
                }
            }
            Fire::Count(event) => {
                if let Some(event) = event.upgrade() {
                    event.add(count, None);
                }
            }
            Fire::Nothing => {}
        }
        next
    }
}

/// The timer thread's queue: (deadline, order, timer, generation), earliest first.
struct Service {
    queue: Mutex<BinaryHeap<Reverse<Entry>>>,
    changed: Condvar,
}

struct Entry {
    deadline: Instant,
    order: u64,
    timer: Weak<Timer>,
    generation: u64,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.deadline, self.order) == (other.deadline, other.order)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.deadline, self.order).cmp(&(other.deadline, other.order))
    }
}

fn service() -> &'static Service {
    static SERVICE: OnceLock<&'static Service> = OnceLock::new();
    SERVICE.get_or_init(|| {
        let service: &'static Service = Box::leak(Box::new(Service {
            queue: Mutex::new(BinaryHeap::new()),
            changed: Condvar::new(),
        }));
        let spawned = std::thread::Builder::new()
            .name("xeno-timers".to_owned())
            .spawn(move || service.run());
        if let Err(error) = spawned {
            tracing::error!("cannot start the timer thread: {error}; guest timers will not fire");
        }
        service
    })
}

impl Service {
    fn schedule(&self, deadline: Instant, timer: &Arc<Timer>, generation: u64) {
        static ORDER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let order = ORDER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&self.queue).push(Reverse(Entry {
            deadline,
            order,
            timer: Arc::downgrade(timer),
            generation,
        }));
        self.changed.notify_one();
    }

    fn run(&self) {
        let mut queue = lock(&self.queue);
        loop {
            let now = Instant::now();
            let wait = match queue.peek() {
                None => Duration::from_secs(3600),
                Some(Reverse(first)) if first.deadline > now => first.deadline - now,
                Some(_) => {
                    let Some(Reverse(entry)) = queue.pop() else {
                        continue;
                    };
                    drop(queue);
                    if let Some(timer) = entry.timer.upgrade()
                        && let Some(next) = timer.expire(entry.generation, now)
                    {
                        self.schedule(next, &timer, entry.generation);
                    }
                    queue = lock(&self.queue);
                    continue;
                }
            };
            queue = match self.changed.wait_timeout(queue, wait) {
                Ok((queue, _)) => queue,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_periodic_timer_counts_its_expirations_and_stops_when_disarmed() {
        let event = Arc::new(EventFd::new(0, false));
        let timer = Timer::new(Fire::Count(Arc::downgrade(&event)));
        timer.set(Some(Duration::from_millis(5)), Duration::from_millis(5));
        std::thread::sleep(Duration::from_millis(60));
        timer.disarm();
        let counted = event.take(None).unwrap_or(0);
        assert!(
            (5..=13).contains(&counted),
            "{counted} expirations in 60 ms"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(event.take(None), None, "nothing after disarming");
        let once = Timer::new(Fire::Nothing);
        once.set(Some(Duration::from_secs(10)), Duration::ZERO);
        let (left, interval) = once.get();
        assert!(left > Duration::from_secs(9) && interval.is_zero());
    }
}
