//! The balancer: an atomically swapped picker state and the pick algorithm.
//!
//! `update` does all the expensive work (sorting, schedules, rings, Maglev
//! tables) and publishes an immutable [`State`] through `ArcSwap`; `pick`
//! only loads it, so the hot path takes no lock and allocates nothing.
//!
//! A pick first asks the strategy for its choice while ignoring availability
//! and `avoid`, and returns it if it is usable: the common case costs no
//! scan. Otherwise the slow path decides panic mode (an O(n) count of
//! available endpoints, done only there) and searches onward from the first
//! choice in a strategy-specific order: the schedule's next turns, clockwise
//! on the ring, Maglev rehashes then probes, fresh samples for the random
//! strategies. Every search ends in a full linear scan, so an acceptable
//! endpoint is always found when one exists.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::config::{BalancerConfig, ConfigError, Strategy};
use crate::hash::mix64;
use crate::maglev::Maglev;
use crate::ring::Ring;
use crate::weighted::WeightTable;
use crate::{Pick, Target, wrr};

/// Weighted draws tried by the random strategies' slow path before scanning.
const RESAMPLES: usize = 8;
/// Deterministic Maglev rehashes tried before probing neighbouring slots.
const MAGLEV_REHASHES: u64 = 4;

/// Load balancer over a live endpoint set; share it via `Arc`.
pub struct Balancer<T: Target> {
    config: BalancerConfig,
    state: ArcSwap<State<T>>,
    /// Round-robin position; shared by all threads so the schedule is
    /// followed globally, not per thread.
    cursor: AtomicUsize,
}

struct State<T> {
    /// Sorted by address, one per address.
    endpoints: Arc<[Arc<T>]>,
    weights: WeightTable,
    table: Table,
    /// Fewer available eligible endpoints than this means panic mode.
    panic_floor: usize,
}

enum Table {
    Sampled,
    Schedule(Vec<u32>),
    Ring(Ring),
    Maglev(Maglev),
}

/// The strategy's first choice and where it came from, so the slow path can
/// continue from the same place.
#[derive(Clone, Copy)]
struct Choice {
    index: u32,
    origin: Origin,
}

#[derive(Clone, Copy)]
enum Origin {
    Sampled,
    TwoChoices,
    Schedule,
    Ring(usize),
    /// The mixed key hash.
    Maglev(u64),
}

impl<T: Target> Balancer<T> {
    /// Creates an empty balancer. Invalid settings are repaired (see
    /// [`BalancerConfig::sanitized`]); use [`Balancer::try_new`] to reject them.
    pub fn new(config: BalancerConfig) -> Self {
        let config = config.sanitized();
        let state = State::build(&config, Vec::new());
        Self {
            config,
            state: ArcSwap::from_pointee(state),
            // A random start keeps a fleet of proxies, all given the same
            // endpoint list, from sending their first requests in lockstep.
            cursor: AtomicUsize::new(fastrand::usize(..)),
        }
    }

    pub fn try_new(config: BalancerConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self::new(config))
    }

    /// Replaces the endpoint set. The picker tables are built here, on the
    /// caller's thread, and swapped in atomically; concurrent picks see
    /// either the old or the new set.
    ///
    /// Endpoints are sorted by address (so tables do not depend on discovery
    /// order) and duplicates of an address are dropped, keeping the first.
    /// `weight()` is read only here.
    pub fn update(&self, endpoints: Vec<Arc<T>>) {
        let state = State::build(&self.config, endpoints);
        self.state.store(Arc::new(state));
    }

    /// The current endpoint set, sorted by address.
    pub fn endpoints(&self) -> Arc<[Arc<T>]> {
        Arc::clone(&self.state.load().endpoints)
    }

    pub fn len(&self) -> usize {
        self.state.load().endpoints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn strategy(&self) -> Strategy {
        self.config.strategy
    }

    /// The effective (sanitized) configuration.
    pub fn config(&self) -> &BalancerConfig {
        &self.config
    }

    /// Picks an endpoint; `None` only when the set is empty.
    pub fn pick(&self, ctx: &Pick<'_>) -> Option<Arc<T>> {
        let state = self.state.load();
        if state.endpoints.is_empty() {
            return None;
        }
        let choice = self.first_choice(&state, ctx);
        let endpoint = &state.endpoints[choice.index as usize];
        let index = if endpoint.available() && !ctx.avoids(endpoint.addr()) {
            choice.index
        } else {
            self.fallback(&state, ctx, choice)
        };
        Some(Arc::clone(&state.endpoints[index as usize]))
    }

    fn first_choice(&self, state: &State<T>, ctx: &Pick<'_>) -> Choice {
        let weights = &state.weights;
        let sampled = || Choice {
            index: weights.sample(),
            origin: Origin::Sampled,
        };
        match &state.table {
            Table::Schedule(schedule) => {
                let pos = self.cursor.fetch_add(1, Ordering::Relaxed) % schedule.len();
                Choice {
                    index: schedule[pos],
                    origin: Origin::Schedule,
                }
            }
            Table::Ring(ring) => match ctx.hash {
                Some(hash) => {
                    let (pos, index) = ring.lookup(mix64(hash));
                    Choice {
                        index,
                        origin: Origin::Ring(pos),
                    }
                }
                None => sampled(),
            },
            Table::Maglev(maglev) => match ctx.hash {
                Some(hash) => {
                    let key = mix64(hash);
                    Choice {
                        index: maglev.owner(maglev.slot(key)),
                        origin: Origin::Maglev(key),
                    }
                }
                None => sampled(),
            },
            Table::Sampled if self.is_two_choices() => {
                let a = weights.sample();
                let index = match weights.sample_other(a) {
                    Some(b) if self.less_loaded(state, b, a) => b,
                    _ => a,
                };
                Choice {
                    index,
                    origin: Origin::TwoChoices,
                }
            }
            Table::Sampled => sampled(),
        }
    }

    fn is_two_choices(&self) -> bool {
        matches!(
            self.config.strategy,
            Strategy::LeastRequest | Strategy::PeakEwma
        )
    }

    /// Whether `x` carries strictly less load per unit of weight than `y`;
    /// ties keep the first draw, so idle endpoints are chosen by weight.
    fn less_loaded(&self, state: &State<T>, x: u32, y: u32) -> bool {
        let (wx, wy) = (state.weights.weight_of(x), state.weights.weight_of(y));
        let (ex, ey) = (&state.endpoints[x as usize], &state.endpoints[y as usize]);
        if self.config.strategy == Strategy::LeastRequest {
            // in_flight_x / wx < in_flight_y / wy, without division.
            let lx = u128::from(ex.load().in_flight()) * u128::from(wy);
            let ly = u128::from(ey.load().in_flight()) * u128::from(wx);
            lx < ly
        } else {
            let now = Instant::now();
            let (cx, cy) = (ex.load().cost_at(|| now), ey.load().cost_at(|| now));
            cx * (wy as f64) < cy * (wx as f64)
        }
    }

    #[cold]
    fn fallback(&self, state: &State<T>, ctx: &Pick<'_>, first: Choice) -> u32 {
        let panic = state.in_panic();
        let endpoints = &state.endpoints;
        let usable = |i: u32| panic || endpoints[i as usize].available();
        let preferred = |i: u32| usable(i) && !ctx.avoids(endpoints[i as usize].addr());
        if let Some(index) = self.search(state, first, &preferred) {
            return index;
        }
        // Every usable endpoint is to be avoided: a repeat beats no answer.
        if usable(first.index) {
            return first.index;
        }
        // Only `None` if availability changed under us; any answer will do.
        self.search(state, first, &usable).unwrap_or(first.index)
    }

    fn search(&self, state: &State<T>, first: Choice, accept: &dyn Fn(u32) -> bool) -> Option<u32> {
        if accept(first.index) {
            return Some(first.index);
        }
        let weights = &state.weights;
        let n = weights.len();
        let found =
            match (first.origin, &state.table) {
                // Skipped turns consume the shared cursor: the picks then follow
                // the schedule restricted to acceptable endpoints, keeping their
                // relative weights exact instead of handing each skipped turn to
                // whichever endpoint happens to follow it.
                (Origin::Schedule, Table::Schedule(schedule)) => (1..walk_limit(schedule.len(), n))
                    .map(|_| schedule[self.cursor.fetch_add(1, Ordering::Relaxed) % schedule.len()])
                    .find(|&i| accept(i)),
                (Origin::Ring(pos), Table::Ring(ring)) => (1..walk_limit(ring.len(), n))
                    .map(|step| ring.owner_after(pos, step))
                    .find(|&i| accept(i)),
                (Origin::Maglev(key), Table::Maglev(maglev)) => (1..=MAGLEV_REHASHES)
                    .map(|attempt| maglev.owner(maglev.slot(Maglev::rehash(key, attempt))))
                    .chain({
                        let base = maglev.slot(key);
                        (1..walk_limit(maglev.len(), n)).map(move |step| maglev.owner(base + step))
                    })
                    .find(|&i| accept(i)),
                (Origin::TwoChoices, _) => weights.sample_where(RESAMPLES, accept).map(|a| {
                    match weights.sample_where(RESAMPLES, &|i| i != a && accept(i)) {
                        Some(b) if self.less_loaded(state, b, a) => b,
                        _ => a,
                    }
                }),
                _ => weights.sample_where(RESAMPLES, accept),
            };
        if found.is_some() {
            return found;
        }
        // The bounded walks ran out: scan everything. Hash strategies start
        // next to the first choice so the outcome stays a function of the
        // key; random ones start anywhere so no endpoint soaks up the rest.
        let start = match first.origin {
            Origin::Sampled | Origin::TwoChoices => fastrand::usize(..n),
            _ => weights.position(first.index) + 1,
        };
        let eligible = weights.eligible();
        (0..n)
            .map(|k| eligible[(start + k) % n])
            .find(|&i| accept(i))
    }
}

/// Bound on strategy-ordered walks before the linear scan takes over; long
/// enough to pass over a few unavailable endpoints' runs of entries, short
/// enough that a mostly-down set does not cost a full table per pick.
fn walk_limit(table_len: usize, endpoints: usize) -> usize {
    table_len.min(256 + 16 * endpoints)
}

impl<T: Target> State<T> {
    fn build(config: &BalancerConfig, mut endpoints: Vec<Arc<T>>) -> Self {
        endpoints.sort_by_key(|e| e.addr());
        endpoints.dedup_by_key(|e| e.addr());
        let raw: Vec<u32> = endpoints.iter().map(|e| e.weight()).collect();
        let weights = WeightTable::new(&raw);
        let nodes: Vec<(u32, SocketAddr, u64)> = weights
            .eligible()
            .iter()
            .zip(weights.weights())
            .map(|(&i, &w)| (i, endpoints[i as usize].addr(), w))
            .collect();
        let table = if nodes.is_empty() {
            Table::Sampled
        } else {
            match config.strategy {
                Strategy::RoundRobin => {
                    let positions = wrr::schedule(weights.weights());
                    let eligible = weights.eligible();
                    Table::Schedule(positions.iter().map(|&p| eligible[p as usize]).collect())
                }
                Strategy::RingHash => Table::Ring(Ring::build(&nodes, config.ring_min_size)),
                Strategy::Maglev => Table::Maglev(Maglev::build(&nodes, config.maglev_table_size)),
                Strategy::Random | Strategy::LeastRequest | Strategy::PeakEwma => Table::Sampled,
            }
        };
        // Available < threshold * n, for integer counts, is available <
        // ceil(threshold * n); the epsilon absorbs float error (0.7 * 10).
        let floor = (config.panic_threshold * weights.len() as f64 - 1e-9).ceil();
        Self {
            endpoints: endpoints.into(),
            weights,
            table,
            panic_floor: (floor as usize).max(1),
        }
    }

    /// Panic mode: too few eligible endpoints are available (or none at all,
    /// whatever the threshold, since a pick never fails on a non-empty set).
    fn in_panic(&self) -> bool {
        let mut available = 0;
        for &i in self.weights.eligible() {
            if self.endpoints[i as usize].available() {
                available += 1;
                if available >= self.panic_floor {
                    return false;
                }
            }
        }
        true
    }
}

impl Pick<'_> {
    fn avoids(&self, addr: SocketAddr) -> bool {
        !self.avoid.is_empty() && self.avoid.contains(&addr)
    }
}

impl<T: Target> fmt::Debug for Balancer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("strategy", &self.config.strategy)
            .field("endpoints", &self.len())
            .finish_non_exhaustive()
    }
}
