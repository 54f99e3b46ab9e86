//! The `sluice-cluster` thread: every tick it looks at each shared limit
//! of this node (atomics the workers update), and in one Redis pipeline
//! tops up allowances that run low, pushes settled spend, and learns the
//! other nodes' spend; it turns budget periods, splits `max_concurrent`
//! between the live nodes, deduplicates budget alerts, and while Redis is
//! unreachable runs every limit on the node's fallback share. At shutdown
//! it gives back what the node holds unused.

use super::lease::{self, ask, lease_size};
use super::link::{integers, Link};
use super::{keys, ClusterSettings, Message};
use crate::pipeline::account::{unix_day, BudgetAlert, Controls};
use crate::pipeline::limits::{now_ms, Meter, WindowShare};
use crate::runtime::Shared;
use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the thread looks at the limits when nothing wakes it.
pub const TICK: Duration = Duration::from_millis(10);
/// Settled spend is pushed at most this often per budget...
const PUSH_EVERY: Duration = Duration::from_millis(200);
/// ...and every budget hears the other nodes' spend at least this often.
const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// Heartbeat period, and how long a silent node still counts as alive.
const HEARTBEAT_EVERY: Duration = Duration::from_millis(500);
const NODE_TTL_MS: u64 = 3_000;
/// In the last this many ms of a minute, a window in use gets its first
/// lease of the next minute, so that minute starts without a wait.
const PRELEASE_MS: u64 = 2_000;
/// A node that has not reserved against a budget for this long gives
/// back what it holds of it unused (its next request waits for a lease).
const IDLE_RETURN: Duration = Duration::from_secs(10);
/// Rate windows live in Redis this long (two minutes: the current one and
/// a late node's).
const WINDOW_TTL_MS: u64 = 120_000;

/// Which limit of a meter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Window {
    Requests,
    Tokens,
}

impl Window {
    fn name(self) -> &'static str {
        match self {
            Window::Requests => "requests",
            Window::Tokens => "tokens",
        }
    }

    fn of(self, meter: &Meter) -> Option<(u64, &WindowShare)> {
        let shares = meter.shares.as_deref()?;
        match self {
            Window::Requests => Some((u64::from(meter.rpm?), &shares.requests)),
            Window::Tokens => Some((meter.tpm?, &shares.tokens)),
        }
    }

    fn count(self, meter: &Meter, minute: u64) -> u64 {
        match self {
            Window::Requests => meter.requests_in(minute),
            Window::Tokens => meter.tokens_in(minute),
        }
    }
}

/// The thread's own books of one team's or key's controls.
struct Tracked {
    controls: Arc<Controls>,
    /// The node's usage of the budget that Redis has (this period).
    pushed: u64,
    synced: Option<Instant>,
    /// First day of the budget period the thread is leasing for.
    period_start: i64,
    /// The budget's committed spend at the last round, and when it last
    /// changed (no top-ups for a budget nobody uses on this node).
    committed: u64,
    active: Option<Instant>,
    /// Exchange with Redis at the next round whatever the need (new
    /// controls, Redis back after an outage).
    resync: bool,
}

/// One call of the lease script and what its answer is for.
struct Call {
    tracked: usize,
    target: Target,
    key: String,
    used: u64,
    ask: u64,
    back: u64,
    limit: u64,
    ttl_ms: u64,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    Budget,
    Window(Window, u64),
}

pub struct Syncer {
    settings: ClusterSettings,
    /// One per process, so a restarted node is told from a second node
    /// with the same id.
    instance: String,
    link: Link,
    shared: Arc<Shared>,
    tracked: Vec<Tracked>,
    index: HashMap<(&'static str, Arc<str>), usize>,
    registry_seen: Option<u64>,
    next_heartbeat: Instant,
    /// Live nodes and this node's rank among them (for `max_concurrent`).
    live: u32,
    rank: u32,
    conflicts: u32,
}

impl Syncer {
    pub fn new(settings: ClusterSettings, link: Link, shared: Arc<Shared>) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Syncer {
            instance: format!("{}-{nanos}", std::process::id()),
            settings,
            link,
            shared,
            tracked: Vec::new(),
            index: HashMap::new(),
            registry_seen: None,
            next_heartbeat: Instant::now(),
            live: 1,
            rank: 0,
            conflicts: 0,
        }
    }

    /// The first round, before the workers serve: connects (once), then
    /// leases or falls back. Logs which.
    pub fn first_round(&mut self) {
        match self.link.connect() {
            Ok(_) => {
                tracing::info!(node = %self.settings.node_id, redis = %self.settings.redis_display(), "cluster: connected to Redis; budgets and rate limits are shared");
                crate::metrics::cluster_redis_up(true);
            }
            Err(e) => self.went_down(&e),
        }
        self.round(false);
    }

    /// Runs until told to stop, then gives back what the node holds.
    pub fn run(mut self, inbox: Receiver<Message>) {
        loop {
            let mut alerts = Vec::new();
            let mut stop = false;
            match inbox.recv_timeout(TICK) {
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => stop = true,
                Ok(Message::Alert(a)) => alerts.push(a),
                Ok(Message::Wake) | Err(RecvTimeoutError::Timeout) => {}
            }
            while let Ok(m) = inbox.try_recv() {
                match m {
                    Message::Stop => stop = true,
                    Message::Alert(a) => alerts.push(a),
                    Message::Wake => {}
                }
            }
            super::WAKE_PENDING.store(false, Relaxed);
            if stop {
                break;
            }
            self.reconnect();
            self.round(false);
            for a in alerts {
                self.alert(a);
            }
        }
        self.round(true);
        if self.link.is_up() {
            self.heartbeat(true);
            tracing::info!(node = %self.settings.node_id, "cluster: unused leases given back");
        }
    }

    fn reconnect(&mut self) {
        if self.link.is_up() {
            return;
        }
        match self.link.connect() {
            Ok(true) => {
                tracing::info!(node = %self.settings.node_id, redis = %self.settings.redis_display(), "cluster: Redis reachable again; leaving the fallback shares, leases resume");
                crate::metrics::cluster_redis_up(true);
                let next = now_ms() / 60_000 + 1;
                for t in &mut self.tracked {
                    t.resync = true;
                    // The next minute's fallback share must not outlive the
                    // outage: that minute is leased like any other.
                    if let Some(meter) = &t.controls.limits {
                        for w in [Window::Requests, Window::Tokens] {
                            if let Some((_, ws)) = w.of(meter) {
                                ws.forget(next);
                            }
                        }
                    }
                }
                self.next_heartbeat = Instant::now();
            }
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, "cluster: Redis still unreachable"),
        }
    }

    /// Redis failed: every limit runs on the node's fallback share from now.
    fn went_down(&mut self, e: &redis::RedisError) {
        crate::metrics::cluster_redis_error();
        crate::metrics::cluster_redis_up(false);
        tracing::warn!(node = %self.settings.node_id, error = %e, fallback_share = self.settings.fallback_share, "cluster: Redis unreachable; each limit now runs on this node's fallback share until it is back");
        let share = self.settings.fallback_share;
        let minute = now_ms() / 60_000;
        for t in &self.tracked {
            if let Some(b) = &t.controls.budget {
                if let Some(s) = &b.share {
                    let free = match s.free.load(Relaxed) {
                        u64::MAX => b.amount,
                        f => f,
                    };
                    s.allowance.store(
                        lease::fallback(s.allowance.load(Relaxed), free, share),
                        Relaxed,
                    );
                    s.free.store(0, Relaxed);
                }
            }
            if let Some(meter) = &t.controls.limits {
                for w in [Window::Requests, Window::Tokens] {
                    let Some((limit, ws)) = w.of(meter) else {
                        continue;
                    };
                    for m in [minute, minute + 1] {
                        let free = ws.free(m).unwrap_or(limit);
                        ws.set_allowed(m, lease::fallback(ws.allowed(m), free, share));
                        ws.set_free(m, 0);
                    }
                }
            }
        }
        self.set_concurrency();
    }

    /// Follows the registry: new controls are tracked, replaced ones
    /// (changed limits) keep the books of their name.
    fn refresh(&mut self) {
        let changes = Controls::registry_changes();
        if self.registry_seen == Some(changes) {
            return;
        }
        self.registry_seen = Some(changes);
        let day = unix_day();
        for c in Controls::registered() {
            let shared = c.budget.as_ref().is_some_and(|b| b.share.is_some())
                || c.limits.as_ref().is_some_and(|m| m.shares.is_some());
            if !shared {
                continue;
            }
            let slot = (c.scope, c.name.clone());
            match self.index.get(&slot) {
                Some(&i) if Arc::ptr_eq(&self.tracked[i].controls, &c) => {}
                Some(&i) => {
                    // Changed limits; a budget of another period (or a new
                    // one) has other keys in Redis.
                    let t = &mut self.tracked[i];
                    let period = |c: &Controls| c.budget.as_ref().map(|b| b.period);
                    if period(&t.controls) != period(&c) {
                        t.pushed = 0;
                        t.synced = None;
                    }
                    t.period_start = c.budget.as_ref().map_or(0, |b| b.period_start(day));
                    t.controls = c;
                    t.resync = true;
                }
                None => {
                    let period_start = c.budget.as_ref().map_or(0, |b| b.period_start(day));
                    self.index.insert(slot, self.tracked.len());
                    self.tracked.push(Tracked {
                        controls: c,
                        pushed: 0,
                        synced: None,
                        period_start,
                        committed: 0,
                        active: None,
                        resync: true,
                    });
                }
            }
        }
        self.set_concurrency();
    }

    /// One round: budget periods, then leases (or the fallback shares).
    fn round(&mut self, draining: bool) {
        self.refresh();
        let day = unix_day();
        for i in 0..self.tracked.len() {
            let ended = self.tracked[i]
                .controls
                .budget
                .as_ref()
                .is_some_and(|b| b.share.is_some() && b.period_ended(day));
            if ended {
                self.turn_period(i, day);
            }
        }
        if self.link.is_up() {
            self.lease_round(draining);
        } else {
            self.fallback_round();
        }
        if self.link.is_up() && !draining && Instant::now() >= self.next_heartbeat {
            self.heartbeat(false);
        }
    }

    /// Builds the calls this round needs, runs them in one pipeline and
    /// applies the answers.
    fn lease_round(&mut self, draining: bool) {
        let now = Instant::now();
        let now_ms = now_ms();
        let minute = now_ms / 60_000;
        let fraction = self.settings.lease_fraction;
        let node = &self.settings.node_id;
        let mut calls = Vec::new();
        for (i, t) in self.tracked.iter_mut().enumerate() {
            if let Some((b, s)) = t
                .controls
                .budget
                .as_ref()
                .and_then(|b| Some((b, b.share.as_deref()?)))
            {
                let wanted = s.take_wanted();
                let committed = b.committed();
                if committed != t.committed || wanted > 0 {
                    t.committed = committed;
                    t.active = Some(now);
                }
                let idle = t
                    .active
                    .is_none_or(|at| now.duration_since(at) >= IDLE_RETURN);
                let unused = s.allowance.load(Relaxed).saturating_sub(committed);
                let lease = lease_size(b.amount, fraction, s.largest().saturating_mul(2));
                let want = if draining || idle {
                    0
                } else {
                    ask(unused, lease, wanted)
                };
                // What goes back leaves the allowance first, so that no
                // worker reserves it meanwhile.
                let back = if (draining || idle) && unused > 0 {
                    s.allowance.fetch_sub(unused, Relaxed);
                    unused
                } else {
                    0
                };
                let spent = b.spent();
                let due = t.resync
                    || back > 0
                    || want > 0
                    || (draining && spent != t.pushed)
                    || t.synced.is_none_or(|at| {
                        let since = now.duration_since(at);
                        (spent != t.pushed && since >= PUSH_EVERY) || since >= REFRESH_EVERY
                    });
                if due {
                    calls.push(Call {
                        tracked: i,
                        target: Target::Budget,
                        key: keys::budget(b, t.period_start, &t.controls),
                        used: spent,
                        ask: want,
                        back,
                        limit: b.amount,
                        ttl_ms: keys::budget_ttl_ms(b.period),
                    });
                }
            }
            let Some(meter) = &t.controls.limits else {
                continue;
            };
            for w in [Window::Requests, Window::Tokens] {
                let Some((limit, ws)) = w.of(meter) else {
                    continue;
                };
                let count = w.count(meter, minute);
                let allowed = ws.allowed(minute);
                let wanted = ws.take_wanted();
                let lease = lease_size(limit, fraction, 1);
                // Only a window in use this minute is topped up.
                let want = if draining || (count == 0 && wanted == 0) {
                    0
                } else {
                    ask(allowed.saturating_sub(count), lease, wanted)
                };
                let holds = allowed > 0 || count > 0;
                if want > 0 || (t.resync && holds) || (draining && holds) {
                    calls.push(Call {
                        tracked: i,
                        target: Target::Window(w, minute),
                        key: keys::window(w.name(), minute, &t.controls),
                        used: count,
                        ask: want,
                        back: if draining { u64::MAX } else { 0 },
                        limit,
                        ttl_ms: WINDOW_TTL_MS,
                    });
                }
                let next = minute + 1;
                let next_allowed = ws.allowed(next);
                let prelease = !draining
                    && count > 0
                    && now_ms % 60_000 >= 60_000 - PRELEASE_MS
                    && next_allowed == 0;
                if prelease || (draining && next_allowed > 0) {
                    calls.push(Call {
                        tracked: i,
                        target: Target::Window(w, next),
                        key: keys::window(w.name(), next, &t.controls),
                        used: 0,
                        ask: if draining { 0 } else { lease },
                        back: if draining { u64::MAX } else { 0 },
                        limit,
                        ttl_ms: WINDOW_TTL_MS,
                    });
                }
            }
        }
        if calls.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for c in &calls {
            pipe.invoke_script(
                self.link
                    .scripts
                    .lease
                    .key(&c.key)
                    .arg(&**node)
                    .arg(c.used)
                    .arg(c.ask)
                    .arg(c.back)
                    .arg(c.limit)
                    .arg(c.ttl_ms),
            );
        }
        let answers = match self.link.run(&pipe) {
            Ok(a) => a,
            Err(e) => {
                self.went_down(&e);
                return;
            }
        };
        for (c, answer) in calls.iter().zip(&answers) {
            match integers(answer).as_deref() {
                Some(&[grant, held, used, leased, mine]) => {
                    let n = |v: i64| v.max(0) as u64;
                    self.apply(c, n(grant), n(held), n(used), n(leased), n(mine), now);
                }
                _ => {
                    tracing::error!(key = %c.key, ?answer, "cluster: unexpected answer of the lease script")
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply(
        &mut self,
        c: &Call,
        grant: u64,
        held: u64,
        used: u64,
        leased: u64,
        mine: u64,
        now: Instant,
    ) {
        if c.ask > 0 {
            let limit = match c.target {
                Target::Budget => "budget",
                Target::Window(w, _) => w.name(),
            };
            let outcome = if grant >= c.ask {
                "granted"
            } else if grant > 0 {
                "short"
            } else {
                "refused"
            };
            crate::metrics::cluster_lease(limit, outcome);
        }
        let free = c.limit.saturating_sub(leased);
        let t = &mut self.tracked[c.tracked];
        t.resync = false;
        match c.target {
            Target::Budget => {
                let Some(b) = t.controls.budget.as_ref() else {
                    return;
                };
                let Some(s) = b.share.as_deref() else { return };
                // Redis knows more spend of this node than the node: it was
                // restarted (without a store, or the store lost the end).
                let spent = b.spent();
                if mine > spent {
                    b.restore(mine - spent);
                }
                s.allowance.store(held, Relaxed);
                s.others_spent.store(used.saturating_sub(mine), Relaxed);
                s.free.store(free, Relaxed);
                t.pushed = mine;
                t.synced = Some(now);
                let controls = t.controls.clone();
                self.budget_seen(&controls);
            }
            Target::Window(w, minute) => {
                if let Some((_, ws)) = t.controls.limits.as_ref().and_then(|m| w.of(m)) {
                    ws.set_allowed(minute, held);
                    ws.set_free(minute, free);
                }
            }
        }
    }

    /// After the budget heard the cluster's spend: the ratio gauge, and
    /// alert thresholds crossed by other nodes' spend.
    fn budget_seen(&mut self, c: &Arc<Controls>) {
        let Some(b) = &c.budget else { return };
        let ratio = b.ratio();
        if c.scope == "team" {
            crate::metrics::budget_used_ratio(&c.team, ratio);
        }
        let crossed = b.newly_crossed(ratio);
        if crossed.is_empty() {
            return;
        }
        let snapshot = self.shared.snapshot();
        for threshold in crossed {
            self.alert(BudgetAlert::new(&snapshot.billing, c, b, threshold, ratio));
        }
    }

    /// While Redis is unreachable: every new minute of a window gets the
    /// node's fallback share, with nothing left to lease.
    fn fallback_round(&mut self) {
        let minute = now_ms() / 60_000;
        let share = self.settings.fallback_share;
        for t in &self.tracked {
            if let Some(b) = &t.controls.budget {
                if let Some(s) = &b.share {
                    if t.resync && s.free.load(Relaxed) == u64::MAX {
                        // Tracked first during the outage: nothing is known.
                        s.allowance
                            .store(lease::fallback(0, b.amount, share), Relaxed);
                        s.free.store(0, Relaxed);
                    }
                }
            }
            let Some(meter) = &t.controls.limits else {
                continue;
            };
            for w in [Window::Requests, Window::Tokens] {
                let Some((limit, ws)) = w.of(meter) else {
                    continue;
                };
                for m in [minute, minute + 1] {
                    if ws.free(m).is_none() {
                        ws.set_allowed(m, lease::fallback(0, limit, share));
                        ws.set_free(m, 0);
                    }
                }
            }
        }
    }

    /// A budget's period ended: the new period's first lease is taken
    /// before the node's books turn (so no request waits at the turn), then
    /// the old period gets the last spend and everything unused back.
    fn turn_period(&mut self, i: usize, day: i64) {
        let t = &self.tracked[i];
        let controls = t.controls.clone();
        let Some(b) = controls.budget.as_ref() else {
            return;
        };
        let Some(s) = b.share.as_deref() else { return };
        let old_start = t.period_start;
        let new_start = b.period_start(day);
        let node = self.settings.node_id.clone();
        if self.link.is_up() {
            let lease = lease_size(
                b.amount,
                self.settings.lease_fraction,
                s.largest().saturating_mul(2),
            );
            let new_key = keys::budget(b, new_start, &controls);
            match self.exchange(
                &new_key,
                &node,
                0,
                lease,
                0,
                b.amount,
                keys::budget_ttl_ms(b.period),
            ) {
                Ok([_, held, used, leased, mine]) => {
                    s.allowance.store(held, Relaxed);
                    s.others_spent.store(used.saturating_sub(mine), Relaxed);
                    s.free.store(b.amount.saturating_sub(leased), Relaxed);
                }
                Err(e) => self.went_down(&e),
            }
        }
        if !self.link.is_up() {
            s.allowance.store(
                lease::fallback(0, b.amount, self.settings.fallback_share),
                Relaxed,
            );
            s.free.store(0, Relaxed);
        }
        let old_spent = b.roll(day).unwrap_or(0);
        let t = &mut self.tracked[i];
        t.period_start = new_start;
        t.pushed = 0;
        t.synced = None;
        tracing::info!(scope = controls.scope, name = %controls.name, period = b.period_name(), "cluster: budget period turned");
        if self.link.is_up() {
            let old_key = keys::budget(b, old_start, &controls);
            if let Err(e) = self.exchange(
                &old_key,
                &node,
                old_spent,
                0,
                u64::MAX,
                b.amount,
                keys::budget_ttl_ms(b.period),
            ) {
                self.went_down(&e);
            }
        }
    }

    /// One lease script call on its own.
    #[allow(clippy::too_many_arguments)]
    fn exchange(
        &mut self,
        key: &str,
        node: &str,
        used: u64,
        ask: u64,
        back: u64,
        limit: u64,
        ttl_ms: u64,
    ) -> redis::RedisResult<[u64; 5]> {
        let mut pipe = redis::pipe();
        pipe.invoke_script(
            self.link
                .scripts
                .lease
                .key(key)
                .arg(node)
                .arg(used)
                .arg(ask)
                .arg(back)
                .arg(limit)
                .arg(ttl_ms),
        );
        let answers = self.link.run(&pipe)?;
        match answers.first().and_then(integers).as_deref() {
            Some(&[a, b, c, d, e]) => Ok([a, b, c, d, e].map(|v| v.max(0) as u64)),
            _ => Err(redis::RedisError::from((
                redis::ErrorKind::Parse,
                "unexpected answer of the lease script",
            ))),
        }
    }

    /// Says this node is alive (or leaving) and learns the live nodes.
    fn heartbeat(&mut self, leaving: bool) {
        self.next_heartbeat = Instant::now() + HEARTBEAT_EVERY;
        let mut pipe = redis::pipe();
        pipe.invoke_script(
            self.link
                .scripts
                .heartbeat
                .key(keys::NODES)
                .arg(&*self.settings.node_id)
                .arg(&self.instance)
                .arg(NODE_TTL_MS)
                .arg(if leaving { "1" } else { "0" }),
        );
        let answer = match self.link.run(&pipe) {
            Ok(a) => a,
            Err(e) => {
                if !leaving {
                    self.went_down(&e);
                }
                return;
            }
        };
        if leaving {
            return;
        }
        if let Some(&[live, rank, conflict]) = answer.first().and_then(integers).as_deref() {
            // A restarted node may see its own last heartbeat once; a
            // second node with the same id shows up every time.
            self.conflicts = if conflict == 1 { self.conflicts + 1 } else { 0 };
            if self.conflicts == 2 {
                tracing::error!(node = %self.settings.node_id, "cluster: another running sluice uses the same node_id; each node needs its own (leases are held per node_id)");
            }
            let (live, rank) = (live.max(1) as u32, rank.max(0) as u32);
            if (live, rank) != (self.live, self.rank) {
                tracing::info!(
                    live_nodes = live,
                    rank,
                    "cluster: live nodes changed; max_concurrent is split between them"
                );
                self.live = live;
                self.rank = rank;
                self.set_concurrency();
            }
            crate::metrics::cluster_nodes(live);
        }
    }

    /// Each meter's part of its `max_concurrent`: split between the live
    /// nodes, or the fallback share while Redis is unreachable.
    fn set_concurrency(&self) {
        for t in &self.tracked {
            let Some(meter) = &t.controls.limits else {
                continue;
            };
            let (Some(max), Some(shares)) = (meter.max_concurrent, meter.shares.as_deref()) else {
                continue;
            };
            let part = if self.link.is_up() {
                lease::concurrency_split(max, self.live, self.rank)
            } else {
                lease::concurrency_fallback(max, self.settings.fallback_share)
            };
            shares.concurrency.store(part, Relaxed);
        }
    }

    /// Fires a budget alert unless another node already did this period.
    fn alert(&mut self, a: BudgetAlert) {
        if self.link.is_up() {
            match self
                .link
                .set_once(&keys::alert(&a), keys::budget_ttl_ms(a.period))
            {
                Ok(true) => a.fire(),
                Ok(false) => {
                    tracing::debug!(scope = a.scope, name = %a.name, threshold = a.threshold, "cluster: budget alert already sent by another node")
                }
                Err(e) => {
                    self.went_down(&e);
                    tracing::warn!(scope = a.scope, name = %a.name, "cluster: Redis unreachable; budget alert sent without checking the other nodes");
                    a.fire();
                }
            }
        } else {
            tracing::warn!(scope = a.scope, name = %a.name, "cluster: Redis unreachable; budget alert sent without checking the other nodes");
            a.fire();
        }
    }
}
