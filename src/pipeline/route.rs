//! Routing: which target a request goes to. A client's model name resolves
//! to a model or an experiment (whose variant is chosen by weight, sticky
//! per user or key by a stable hash); a model's targets are filtered to
//! those admitted (healthy, circuit not open, in an allowed region, not
//! already tried by this request) and one is chosen by the model's
//! balancer. Cursors, smooth-weight state, the random generator and the
//! retry budget are per worker; load and latency are the shared atomics of
//! `upstream::health`.

use crate::config::snapshot::{Experiment, ModelRoute, Snapshot};
use crate::config::{Balance, Sticky};
use crate::upstream::health::{Admission, BreakerChange, UpstreamStates};
use std::cell::{Cell, RefCell};

/// Upstreams a request has already tried (and must not try again).
#[derive(Default, Clone)]
pub struct Tried {
    items: [u32; 16],
    len: usize,
}

impl Tried {
    pub fn contains(&self, upstream: usize) -> bool {
        self.items[..self.len].contains(&(upstream as u32))
    }

    pub fn push(&mut self, upstream: usize) {
        if self.len < self.items.len() && !self.contains(upstream) {
            self.items[self.len] = upstream as u32;
            self.len += 1;
        }
    }
}

/// Where a request may go: the upstreams' regions it may reach.
#[derive(Clone, Copy, Default)]
pub struct Reach<'a> {
    /// None: every region.
    pub regions: Option<&'a [Box<str>]>,
}

impl Reach<'_> {
    fn allows(&self, region: Option<&str>) -> bool {
        match (self.regions, region) {
            (None, _) => true,
            (Some(allowed), Some(r)) => allowed.iter().any(|a| &**a == r),
            (Some(_), None) => false,
        }
    }
}

pub struct Router {
    cursors: Box<[Cell<usize>]>,
    smooth: Box<[RefCell<Box<[i64]>>]>,
    rng: Cell<u64>,
    retry_tokens: Cell<f64>,
}

/// Retry tokens a worker starts with and can save up at most.
const RETRY_TOKENS_START: f64 = 10.0;
const RETRY_TOKENS_MAX: f64 = 100.0;

impl Router {
    pub fn new(snapshot: &Snapshot, seed: u64) -> Self {
        Self {
            cursors: snapshot.models.iter().map(|_| Cell::new(0)).collect(),
            smooth: snapshot
                .models
                .iter()
                .map(|m| RefCell::new(vec![0i64; m.targets.len()].into_boxed_slice()))
                .collect(),
            rng: Cell::new(seed | 1),
            retry_tokens: Cell::new(RETRY_TOKENS_START),
        }
    }

    /// xorshift64*: cheap, per worker, good enough for balancing.
    pub fn random(&self) -> u64 {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// The model an experiment sends this request to.
    pub fn variant(&self, experiment: &Experiment, user: Option<u64>, key: Option<u64>) -> usize {
        let sticky = match experiment.sticky {
            Sticky::User => user.or(key),
            Sticky::Key => key,
            Sticky::None => None,
        };
        let name = crate::api::request::stable_hash(experiment.name.as_bytes());
        let draw = match sticky {
            Some(h) => mix(h ^ name),
            None => self.random(),
        } % u64::from(experiment.total_weight.max(1));
        let mut acc = 0u64;
        for &(model, weight) in experiment.variants.iter() {
            acc += u64::from(weight);
            if draw < acc {
                return model;
            }
        }
        experiment.variants.last().map_or(0, |v| v.0)
    }

    /// Every request earns a fraction of a retry; a retry spends a whole
    /// one. Returns whether a retry may be sent now.
    pub fn earn_retry(&self, fraction: f64) {
        self.retry_tokens
            .set((self.retry_tokens.get() + fraction).min(RETRY_TOKENS_MAX));
    }

    pub fn can_retry(&self) -> bool {
        self.retry_tokens.get() >= 1.0
    }

    pub fn spend_retry(&self) {
        self.retry_tokens.set(self.retry_tokens.get() - 1.0);
    }

    /// Chooses a target of `model` and takes its admission (a breaker
    /// probe is taken here). Returns the upstream index, or None when no
    /// target is left.
    pub fn pick(
        &self,
        snapshot: &Snapshot,
        states: &UpstreamStates,
        model: usize,
        tried: &mut Tried,
        reach: Reach<'_>,
    ) -> Option<usize> {
        let cooldown = snapshot.resilience.breaker_cooldown;
        loop {
            let position = self.choose(snapshot, states, model, tried, reach)?;
            let upstream = snapshot.models[model].targets[position];
            let (admission, change) = states.get(upstream).admit(cooldown);
            if let Some(change) = change {
                breaker_changed(snapshot, upstream, change);
            }
            if admission != Admission::No {
                return Some(upstream);
            }
            // Another worker took the probe meanwhile.
            tried.push(upstream);
        }
    }

    /// Whether `model` has a target left that `pick` could choose.
    pub fn has_target(
        &self,
        snapshot: &Snapshot,
        states: &UpstreamStates,
        model: usize,
        tried: &Tried,
        reach: Reach<'_>,
    ) -> bool {
        let route = &snapshot.models[model];
        (0..route.targets.len()).any(|i| eligible(snapshot, states, route, i, tried, reach))
    }

    fn choose(
        &self,
        snapshot: &Snapshot,
        states: &UpstreamStates,
        model: usize,
        tried: &Tried,
        reach: Reach<'_>,
    ) -> Option<usize> {
        let route = &snapshot.models[model];
        let n = route.targets.len();
        let ok = |i: usize| eligible(snapshot, states, route, i, tried, reach);
        let cursor = &self.cursors[model];
        let start = cursor.get();
        cursor.set(start.wrapping_add(1));
        let rotated = (0..n).map(|k| (start + k) % n).filter(|&i| ok(i));
        match route.balance {
            Balance::RoundRobin => rotated.into_iter().next(),
            Balance::LeastOutstanding => {
                rotated.min_by_key(|&i| states.get(route.targets[i]).load())
            }
            Balance::Weighted => {
                // Smooth weighted round robin (nginx's): over the eligible
                // targets, each gains its weight, the richest is chosen and
                // pays the total.
                let mut current = self.smooth[model].borrow_mut();
                let mut total = 0i64;
                let mut best: Option<usize> = None;
                for i in (0..n).filter(|&i| ok(i)) {
                    current[i] += i64::from(route.weights[i]);
                    total += i64::from(route.weights[i]);
                    if best.is_none_or(|b| current[i] > current[b]) {
                        best = Some(i);
                    }
                }
                let best = best?;
                current[best] -= total;
                Some(best)
            }
            Balance::LatencyEwma => {
                // Power of two choices on decayed time to first byte; an
                // unmeasured target (0) is tried first.
                let count = (0..n).filter(|&i| ok(i)).count();
                if count == 0 {
                    return None;
                }
                let nth = |k: usize| (0..n).filter(|&i| ok(i)).nth(k);
                let a = nth((self.random() % count as u64) as usize)?;
                if count == 1 {
                    return Some(a);
                }
                let mut b = nth((self.random() % (count as u64 - 1)) as usize)?;
                if b == a {
                    b = nth(count - 1)?;
                }
                let cost = |i: usize| {
                    let s = states.get(route.targets[i]);
                    (
                        s.ttfb_us(),
                        s.inflight.load(std::sync::atomic::Ordering::Relaxed),
                    )
                };
                Some(if cost(b) < cost(a) { b } else { a })
            }
        }
    }
}

fn eligible(
    snapshot: &Snapshot,
    states: &UpstreamStates,
    route: &ModelRoute,
    position: usize,
    tried: &Tried,
    reach: Reach<'_>,
) -> bool {
    let upstream = route.targets[position];
    let state = states.get(upstream);
    !tried.contains(upstream)
        && state.is_healthy()
        && state.may_admit(snapshot.resilience.breaker_cooldown)
        && reach.allows(snapshot.upstreams[upstream].region.as_deref())
}

/// Logs, counts and announces a breaker's state change.
pub fn breaker_changed(snapshot: &Snapshot, upstream: usize, change: BreakerChange) {
    let name = &snapshot.upstreams[upstream].name;
    match change {
        BreakerChange::Opened => {
            tracing::warn!(upstream = %name, "circuit opened: upstream out of rotation")
        }
        BreakerChange::Probing => {
            tracing::info!(upstream = %name, "circuit half-open: sending one probe")
        }
        BreakerChange::Closed => {
            tracing::info!(upstream = %name, "circuit closed: upstream back in rotation")
        }
    }
    crate::metrics::breaker_transition(name, change.as_str());
    crate::metrics::upstream_healthy(name, change != BreakerChange::Opened);
    if let Some(webhook) = &snapshot.alert_webhook {
        crate::alerts::send(
            webhook,
            serde_json::json!({
                "kind": "circuit",
                "upstream": &**name,
                "state": change.as_str(),
                "at": crate::alerts::now_rfc3339(),
            }),
        );
    }
}

/// SplitMix64's finaliser: spreads a hash's bits before the modulo.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
