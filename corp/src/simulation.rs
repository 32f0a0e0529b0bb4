//! A deterministic simulation of the corp's state machine: a seeded schedule of client and
//! server operations (orders, validations, charges, closes, deposits, the clock moving on),
//! interleaved as concurrent parties would, with messages duplicated and reordered, and the
//! corp crashing and restarting from its store, either after a batch was made durable or
//! before (the batch is then lost, unanswered, and its senders retry). After every step the
//! ledger's invariants are checked, and a model of what the corp acknowledged is checked
//! against it: every acknowledged charge is still there with the same answer, no order is
//! charged beyond its cap, and a settled order pays out exactly what was charged.
//!
//! The ordinary test command runs a few thousand steps over several seeds; by hand:
//!
//! ```text
//! XENO_SIM_STEPS=1000000 cargo test -p xeno-corp --lib simulation -- --nocapture   # 200 seeds
//! XENO_SIM_SEED=1234 XENO_SIM_STEPS=5000 cargo test -p xeno-corp --lib simulation  # one seed
//! ```
//!
//! A failure names its seed and step; the same seed replays the same schedule.

use crate::core::ChargeAnswer;
use crate::error::CorpError;
use crate::model::{ChargeOutcome, Settlement};
use crate::testing::{Actor, Fixture};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use xeno_schemas::Document;
use xeno_schemas::documents::PurchaseOrder;

/// Steps per seed, and seeds, in the ordinary test run.
const STEPS_DEFAULT: u64 = 600;
const SEEDS_DEFAULT: u64 = 6;
/// Longest schedule of one seed in a long run: a world's checks grow with its orders, so a
/// long run is many seeds of bounded schedules.
const STEPS_PER_SEED_MAX: u64 = 5_000;
/// Operations applied in memory before the batch is made durable (or lost to a crash), as the
/// writer batches them.
const BATCH_MAX: usize = 4;

/// What the model knows of an order.
#[derive(Debug, Clone)]
struct Order {
    document: PurchaseOrder,
    client: usize,
    /// The server it names, and the one it is bound to once a validation was acknowledged.
    server: usize,
    bound: Option<(usize, String)>,
    amount: u64,
    /// Acknowledged charges: sequence → (amount, the answer).
    charges: BTreeMap<u64, (u64, ChargeAnswer)>,
    settled: Option<Settlement>,
}

/// The corp's grace period for charges after an order's expiry, in the simulation.
const GRACE_MS: i64 = 30_000;

impl Order {
    /// The last moment its server may charge it.
    fn charges_end_ms(&self) -> i64 {
        crate::model::unix_ms(self.document.issued.expires_at) + GRACE_MS
    }

    fn charged(&self) -> u64 {
        self.charges
            .values()
            .filter(|(_, answer)| answer.outcome == ChargeOutcome::Charged)
            .map(|(amount, _)| amount)
            .sum()
    }
}

/// An operation and what acknowledging it tells the model.
#[derive(Debug, Clone)]
enum Op {
    Buy {
        client: usize,
        amount: u64,
        server: usize,
    },
    Validate {
        order: usize,
        server: usize,
    },
    Charge {
        order: usize,
        sequence: u64,
        amount: u64,
    },
    Close {
        order: usize,
        by_client: bool,
    },
    Deposit {
        client: usize,
        amount: u64,
    },
}

/// An operation's result, to record once its batch is durable.
enum Done {
    Bought(Box<PurchaseOrder>, usize, usize, u64),
    Validated(usize, usize, String),
    Charged(usize, u64, u64, ChargeAnswer),
    Closed(usize, Settlement),
    Nothing,
}

struct World {
    fixture: Fixture,
    clients: Vec<Actor>,
    servers: Vec<Actor>,
    orders: Vec<Order>,
    rng: StdRng,
    seed: u64,
    step: u64,
    sessions: u64,
    stats: Stats,
}

/// How much a check looks at (the deeper, the costlier: trails read the store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Depth {
    Step,
    Totals,
    Trails,
}

/// What a run did, to show that it did it.
#[derive(Debug, Default, Clone, Copy)]
struct Stats {
    orders: u64,
    validations: u64,
    charges: u64,
    replays: u64,
    settlements: u64,
    refusals: u64,
    lost_batches: u64,
    restarts: u64,
}

impl World {
    fn new(seed: u64) -> World {
        let mut fixture = Fixture::new(|config| {
            config.policy.charge_grace_seconds = (GRACE_MS / 1000) as u64;
            config.policy.order_lifetime_max_seconds = 600;
        });
        let clients: Vec<Actor> = (0..3).map(|i| fixture.client(&format!("c{i}"))).collect();
        for client in &clients {
            fixture.deposit(client, 50_000);
        }
        let servers = (0..2).map(|i| fixture.server(&format!("s{i}"))).collect();
        World {
            fixture,
            clients,
            servers,
            orders: Vec::new(),
            rng: StdRng::seed_from_u64(seed),
            seed,
            step: 0,
            sessions: 0,
            stats: Stats::default(),
        }
    }

    fn fail(&self, what: impl std::fmt::Display) -> ! {
        panic!(
            "simulation seed {} step {}: {what} (replay: XENO_SIM_SEED={} XENO_SIM_STEPS={} cargo test -p xeno-corp --lib simulation)",
            self.seed, self.step, self.seed, self.step
        )
    }

    /// A random operation, some of them duplicates or out of order.
    fn choose(&mut self) -> Op {
        let client = self.rng.random_range(0..self.clients.len());
        let pick = self.rng.random_range(0..100);
        if self.orders.is_empty() || pick < 15 {
            return Op::Buy {
                client,
                amount: self.rng.random_range(1..5_000),
                server: self.rng.random_range(0..self.servers.len()),
            };
        }
        // Mostly an order the operation makes sense for, sometimes any (to be refused).
        let any = self.rng.random_range(0..self.orders.len());
        let live = |wanted: fn(&Order) -> bool, orders: &[Order], rng: &mut StdRng| {
            let fitting: Vec<usize> = (0..orders.len()).filter(|i| wanted(&orders[*i])).collect();
            if fitting.is_empty() || rng.random_bool(0.15) {
                any
            } else {
                fitting[rng.random_range(0..fitting.len())]
            }
        };
        let order = match pick {
            15..=29 => live(
                |o| o.bound.is_none() && o.settled.is_none(),
                &self.orders,
                &mut self.rng,
            ),
            30..=79 => live(
                |o| o.bound.is_some() && o.settled.is_none(),
                &self.orders,
                &mut self.rng,
            ),
            _ => any,
        };
        match pick {
            15..=29 => Op::Validate {
                order,
                // Mostly the named server; sometimes the other (must be refused).
                server: if self.rng.random_bool(0.85) {
                    self.orders[order].server
                } else {
                    self.rng.random_range(0..self.servers.len())
                },
            },
            30..=79 => {
                let known = &self.orders[order].charges;
                let next = known.keys().max().copied().unwrap_or(0) + 1;
                // A new charge, a duplicate of an acknowledged one, or one ahead of its turn.
                let sequence = match self.rng.random_range(0..10) {
                    0..=5 => next,
                    6 | 7 if !known.is_empty() => {
                        let keys: Vec<u64> = known.keys().copied().collect();
                        keys[self.rng.random_range(0..keys.len())]
                    }
                    _ => next + self.rng.random_range(1..4),
                };
                let amount = known
                    .get(&sequence)
                    .map_or_else(|| self.rng.random_range(1..800), |(amount, _)| *amount);
                Op::Charge {
                    order,
                    sequence,
                    amount,
                }
            }
            80..=89 => Op::Close {
                order,
                by_client: self.rng.random_bool(0.3),
            },
            _ => Op::Deposit {
                client,
                amount: self.rng.random_range(1..10_000),
            },
        }
    }

    /// Applies `op` to the corp in memory (effects kept for the batch); what to record.
    fn apply(&mut self, op: &Op, effects: &mut Vec<crate::model::Effect>) -> Done {
        let now = self.fixture.now_ms;
        match op {
            Op::Buy {
                client,
                amount,
                server,
            } => {
                let buyer = &self.clients[*client];
                let result = self.fixture.corp.create_order(
                    now,
                    &buyer.serial,
                    crate::testing::gbp(*amount),
                    self.rng.random_range(30..600),
                    effects,
                );
                match result {
                    Ok((xml, _)) => {
                        let order = crate::testing::sign_for(&xml, buyer, &self.servers[*server]);
                        Done::Bought(Box::new(order), *client, *server, *amount)
                    }
                    // Not enough money: fine, nothing changes.
                    Err(CorpError::FailedPrecondition(_)) => Done::Nothing,
                    Err(error) => self.fail(format!("buying: {error}")),
                }
            }
            Op::Validate { order, server } => {
                let known = &self.orders[*order];
                // A bound order is validated again only by its own session (a duplicate); an
                // unbound one sometimes with a session another order already funds on that
                // server (which must be refused: one session, one order).
                let taken = self.orders.iter().find_map(|other| match &other.bound {
                    Some((bound_server, session)) if bound_server == server => {
                        Some(session.clone())
                    }
                    _ => None,
                });
                let (session, reused) = match (&known.bound, taken) {
                    (Some((_, session)), _) => (session.clone(), false),
                    (None, Some(taken)) if self.rng.random_bool(0.1) => (taken, true),
                    (None, _) => {
                        self.sessions += 1;
                        (format!("s-{}", self.sessions), false)
                    }
                };
                let result = self.fixture.corp.validate(
                    now,
                    &self.servers[*server].serial,
                    &known.document.to_xml(),
                    &session,
                    &crate::testing::requirements_xml(),
                    effects,
                );
                let named = *server == known.server;
                let bound = known.bound.is_some();
                match result {
                    Ok(_) if reused => self.fail("one session was funded by two orders"),
                    Err(CorpError::AlreadyExists(_)) if reused => Done::Nothing,
                    Ok(validation) if named => {
                        if validation.bound_server != self.servers[*server].id {
                            self.fail("bound to the wrong server");
                        }
                        if known.settled.is_some() {
                            self.fail("a settled order was validated");
                        }
                        if bound {
                            Done::Nothing
                        } else {
                            Done::Validated(*order, *server, session)
                        }
                    }
                    Ok(_) => self.fail("an order was validated by a server it does not name"),
                    // Expired, or closed by its client before it was used.
                    Err(CorpError::FailedPrecondition(_)) => Done::Nothing,
                    Err(CorpError::PermissionDenied(_)) if !named && !bound => Done::Nothing,
                    Err(CorpError::AlreadyExists(_)) if !named && bound => Done::Nothing,
                    Err(error) => self.fail(format!("validating: {error:?}")),
                }
            }
            Op::Charge {
                order,
                sequence,
                amount,
            } => {
                let known = self.orders[*order].clone();
                let server = known.bound.as_ref().map_or(known.server, |(s, _)| *s);
                let usage = crate::core::UsageAnnotation::parse(&crate::testing::usage_xml(
                    known.document.issued.order_id.as_str(),
                    *sequence,
                    *amount,
                ))
                .unwrap_or_else(|error| self.fail(format!("usage record: {error}")));
                let result = self.fixture.corp.charge(
                    now,
                    &self.servers[server].serial,
                    &known.document.issued.order_id,
                    *sequence,
                    crate::testing::gbp(*amount),
                    usage,
                    effects,
                );
                let bound = known.bound.is_some();
                match (result, known.charges.get(sequence)) {
                    // A duplicate gets the first answer, whatever happened since.
                    (Ok(answer), Some((_, first))) => {
                        if !answer.replayed
                            || answer.outcome != first.outcome
                            || answer.charged_total != first.charged_total
                        {
                            self.fail(format!(
                                "a duplicate charge got {answer:?}, the first {first:?}"
                            ));
                        }
                        self.stats.replays += 1;
                        Done::Nothing
                    }
                    (Ok(answer), None) => {
                        if !bound || known.settled.is_some() {
                            self.fail(format!("charged while unbound or settled: {known:?}"));
                        }
                        if answer.replayed {
                            self.fail("a new charge was answered as a replay");
                        }
                        if answer.charged_total.minor > known.amount {
                            self.fail("an order was charged beyond its amount");
                        }
                        Done::Charged(*order, *sequence, *amount, answer)
                    }
                    (Err(error), Some(_)) => self.fail(format!(
                        "an acknowledged charge was refused on replay: {error:?}"
                    )),
                    (Err(CorpError::PermissionDenied(_)), None) if !bound => Done::Nothing,
                    // Closed, or past its expiry and grace.
                    (Err(CorpError::FailedPrecondition(_)), None)
                        if bound && (known.settled.is_some() || now > known.charges_end_ms()) =>
                    {
                        Done::Nothing
                    }
                    (Err(error), None) => self.fail(format!("charging: {error:?} for {known:?}")),
                }
            }
            Op::Close { order, by_client } => {
                let known = &self.orders[*order];
                let client_closes = *by_client || known.bound.is_none();
                let caller = match &known.bound {
                    Some((server, _)) if !client_closes => &self.servers[*server],
                    _ => &self.clients[known.client],
                };
                match self.fixture.corp.close(now, &caller.serial, &known.document.issued.order_id, effects) {
                    Ok(_)
                        if client_closes
                            && known.bound.is_some()
                            && known.settled.is_none()
                            && now <= known.charges_end_ms() =>
                    {
                        self.fail("a client settled its bound order before its server's final charge could land")
                    }
                    Ok(settlement) => match known.settled {
                        Some(first) if first != settlement => {
                            self.fail("a second close settled differently")
                        }
                        Some(_) => Done::Nothing,
                        None => Done::Closed(*order, settlement),
                    },
                    // A client closing its bound order within the grace period.
                    Err(CorpError::FailedPrecondition(_))
                        if client_closes && known.bound.is_some() && known.settled.is_none() =>
                    {
                        Done::Nothing
                    }
                    Err(error) => self.fail(format!("closing: {error:?}")),
                }
            }
            Op::Deposit { client, amount } => {
                self.fixture
                    .corp
                    .deposit(
                        now,
                        &self.clients[*client].id,
                        crate::testing::gbp(*amount),
                        effects,
                    )
                    .unwrap_or_else(|error| self.fail(format!("deposit: {error}")));
                Done::Nothing
            }
        }
    }

    fn record(&mut self, done: Done) {
        let stats = &mut self.stats;
        match &done {
            Done::Bought(..) => stats.orders += 1,
            Done::Validated(..) => stats.validations += 1,
            Done::Charged(..) => stats.charges += 1,
            Done::Closed(..) => stats.settlements += 1,
            Done::Nothing => stats.refusals += 1,
        }
        match done {
            Done::Bought(document, client, server, amount) => self.orders.push(Order {
                document: *document,
                client,
                server,
                bound: None,
                amount,
                charges: BTreeMap::new(),
                settled: None,
            }),
            Done::Validated(order, server, session) => {
                self.orders[order].bound = Some((server, session));
            }
            Done::Charged(order, sequence, amount, answer) => {
                self.orders[order]
                    .charges
                    .insert(sequence, (amount, answer));
            }
            Done::Closed(order, settlement) => self.orders[order].settled = Some(settlement),
            Done::Nothing => {}
        }
    }

    /// The model against the corp: invariants and the model's own arithmetic at every step;
    /// with `depth` [`Depth::Totals`], each bound order's charged total and state as the corp
    /// holds them; with [`Depth::Trails`], also every acknowledged charge in the audit trails
    /// and the store's own audit.
    fn check(&mut self, depth: Depth) {
        let violations = self.fixture.corp.violations();
        if !violations.is_empty() {
            self.fail(format!("ledger violations: {violations:?}"));
        }
        for (index, order) in self.orders.iter().enumerate() {
            if order.charged() > order.amount {
                self.fail(format!("order {index} charged beyond its amount"));
            }
            if let Some(settlement) = order.settled
                && (settlement.spent != order.charged()
                    || settlement.payout + settlement.commission != settlement.spent
                    || settlement.spent + settlement.returned != order.amount)
            {
                self.fail(format!(
                    "order {index} settled {settlement:?} after {} charged of {}",
                    order.charged(),
                    order.amount
                ));
            }
        }
        if depth >= Depth::Totals {
            self.check_totals();
        }
        if depth >= Depth::Trails {
            let audit = self
                .fixture
                .store
                .audit()
                .unwrap_or_else(|error| self.fail(format!("store audit: {error}")));
            if !audit.violations.is_empty() {
                self.fail(format!("store audit: {:?}", audit.violations));
            }
            self.check_trails();
        }
    }

    /// Each bound order's charged total and settlement, as the corp holds them in memory.
    fn check_totals(&mut self) {
        let mut held = BTreeMap::new();
        for server in &self.servers {
            let orders = self
                .fixture
                .corp
                .audit_server(&server.serial, &server.id)
                .unwrap_or_else(|error| self.fail(format!("audit server: {error}")));
            for order in orders {
                held.insert(order.order_id.clone(), order);
            }
        }
        for order in self.orders.iter().filter(|order| order.bound.is_some()) {
            let id = &order.document.issued.order_id;
            let Some(summary) = held.get(id) else {
                self.fail(format!("bound order {id} is not bound at the corp"));
            };
            let closed = summary.state == crate::model::OrderState::Closed;
            if summary.charged.minor != order.charged() || closed != order.settled.is_some() {
                self.fail(format!(
                    "order {id}: the corp holds {summary:?}, the model {} charged, settled {:?}",
                    order.charged(),
                    order.settled
                ));
            }
        }
    }

    /// Every acknowledged charge is in its order's audit trail, as acknowledged.
    fn check_trails(&mut self) {
        for order in &self.orders {
            let owner = self.clients[order.client].id.clone();
            let trail = self
                .fixture
                .corp
                .audit_order_for(
                    &mut *self.fixture.store,
                    &[],
                    &owner,
                    crate::core::AuditPage {
                        order_id: &order.document.issued.order_id,
                        after_sequence: 0,
                        limit: crate::core::AUDIT_PAGE_CHARGES_MAX,
                    },
                )
                .unwrap_or_else(|error| self.fail(format!("audit: {error}")));
            let recorded: BTreeMap<u64, (u64, ChargeOutcome)> = trail
                .charges
                .iter()
                .map(|charge| {
                    (
                        charge.record.sequence,
                        (charge.record.amount_minor, charge.record.outcome),
                    )
                })
                .collect();
            let acknowledged: BTreeMap<u64, (u64, ChargeOutcome)> = order
                .charges
                .iter()
                .map(|(sequence, (amount, answer))| (*sequence, (*amount, answer.outcome)))
                .collect();
            if recorded != acknowledged {
                self.fail(format!(
                    "order {}: the trail holds {recorded:?}, the servers were told {acknowledged:?}",
                    order.document.issued.order_id
                ));
            }
        }
    }

    /// One step: a batch of operations, then durable or lost, sometimes a restart, sometimes
    /// the clock moving on.
    fn step(&mut self) {
        self.step += 1;
        // What the model knew when the batch began: a crash before the batch is durable
        // takes the corp, and so the model, back there.
        let committed = (self.orders.clone(), self.sessions);
        let mut effects = Vec::new();
        for _ in 0..self.rng.random_range(1..=BATCH_MAX) {
            let op = self.choose();
            let before = effects.len();
            let result = self.apply(&op, &mut effects);
            if matches!(result, Done::Nothing)
                && effects.len() > before
                && !matches!(op, Op::Deposit { .. })
            {
                // A refusal or a replay changes nothing.
                self.fail(format!(
                    "{op:?} was refused or replayed but emitted effects"
                ));
            }
            self.record(result);
        }
        if self.rng.random_bool(0.03) {
            // A crash before the batch was durable: nothing of it happened, nobody was
            // answered; the senders will retry.
            (self.orders, self.sessions) = committed;
            self.stats.lost_batches += 1;
            self.fixture.restart();
            self.check(Depth::Totals);
            return;
        }
        self.fixture
            .store
            .persist(&effects)
            .unwrap_or_else(|error| self.fail(format!("persist: {error}")));
        if self.rng.random_bool(0.03) {
            // A crash after it: everything acknowledged must come back.
            self.stats.restarts += 1;
            self.fixture.restart();
            self.check(Depth::Totals);
        }
        if self.rng.random_bool(0.1) {
            self.fixture.now_ms += self.rng.random_range(1_000..120_000);
        }
        self.check(if self.step.is_multiple_of(500) {
            Depth::Trails
        } else if self.step.is_multiple_of(50) {
            Depth::Totals
        } else {
            Depth::Step
        });
    }
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

#[test]
fn the_corp_keeps_its_books_through_a_seeded_storm_of_operations_and_crashes() {
    let steps = env_u64("XENO_SIM_STEPS").unwrap_or(STEPS_DEFAULT * SEEDS_DEFAULT);
    let base = env_u64("XENO_SIM_BASE_SEED").unwrap_or(1);
    let (seeds, per_seed): (Vec<u64>, u64) = match env_u64("XENO_SIM_SEED") {
        Some(seed) => (vec![seed], steps.min(STEPS_PER_SEED_MAX)),
        None if steps <= STEPS_DEFAULT * SEEDS_DEFAULT => (
            (base..base + SEEDS_DEFAULT).collect(),
            (steps / SEEDS_DEFAULT).max(1),
        ),
        None => (
            (base..base + steps.div_ceil(STEPS_PER_SEED_MAX)).collect(),
            STEPS_PER_SEED_MAX,
        ),
    };
    let mut total = Stats::default();
    for seed in &seeds {
        let mut world = World::new(*seed);
        for _ in 0..per_seed {
            world.step();
        }
        world.fixture.restart();
        world.check(Depth::Trails);
        let s = world.stats;
        total = Stats {
            orders: total.orders + s.orders,
            validations: total.validations + s.validations,
            charges: total.charges + s.charges,
            replays: total.replays + s.replays,
            settlements: total.settlements + s.settlements,
            refusals: total.refusals + s.refusals,
            lost_batches: total.lost_batches + s.lost_batches,
            restarts: total.restarts + s.restarts,
        };
    }
    println!(
        "simulated {} steps over seeds {seeds:?}: {total:?}",
        per_seed * seeds.len() as u64
    );
    assert!(
        total.charges > 0 && total.settlements > 0 && total.lost_batches > 0 && total.replays > 0,
        "the schedule exercised too little: {total:?}"
    );
}
