//! Accounting and budgets: tokens and cost per request, budgets per team
//! and key for calendar periods (UTC day, ISO week, month), reserved before
//! the call and settled on the real usage, alert thresholds.
//!
//! Money is counted in nano-units of `[billing].currency` (1e-9) in `u64`
//! atomics. A budget's `committed` word is settled spend plus outstanding
//! reservations; a request reserves its worst case (prompt estimate +
//! `max_tokens`, or [`DEFAULT_OUTPUT_CAP`], at the highest price among the
//! models it may be served by) with one compare-and-swap that fails when
//! the budget would be exceeded, so concurrent requests can never together
//! commit more than the budget. When the request ends the reservation is
//! replaced by the real cost. See docs/cost.md.
//!
//! With `[cluster]` a budget also has a [`BudgetShare`]: what this node
//! holds of it in leases from Redis, kept by the `sluice-cluster` thread
//! (`src/cluster/`). Reservations then compare with the node's allowance
//! instead of the whole budget, and the period turns on that thread.

use super::auth::Principal;
use super::filter::AnswerFilter;
use super::limits::{Meter, Refusal, Remaining};
use crate::api::GatewayError;
use crate::config::{Period, Price};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

/// Output tokens reserved when a request sets no `max_tokens`.
pub const DEFAULT_OUTPUT_CAP: u64 = 4096;
/// Nano-units per currency unit.
pub const NANOS: f64 = 1e9;

/// Cost settings of a snapshot: prices per model (by index), currency,
/// where alerts go.
#[derive(Debug, Default)]
pub struct Billing {
    pub currency: Box<str>,
    /// Per model index: (input, output) nano-units per token.
    pub prices: Vec<Option<(f64, f64)>>,
    pub webhook: Option<Box<str>>,
}

impl Billing {
    pub fn new(
        currency: &str,
        prices: impl Iterator<Item = Option<Price>>,
        webhook: Option<&str>,
    ) -> Self {
        Billing {
            currency: currency.into(),
            prices: prices
                .map(|p| p.map(|p| (p.input_per_mtok * 1e3, p.output_per_mtok * 1e3)))
                .collect(),
            webhook: webhook.map(Into::into),
        }
    }

    /// Whether any model has a price.
    pub fn has_prices(&self) -> bool {
        self.prices.iter().any(Option::is_some)
    }

    /// Cost in nano-units of `input` + `output` tokens of model `m`.
    pub fn cost(&self, m: usize, input: u64, output: u64) -> u64 {
        match self.prices.get(m).copied().flatten() {
            Some((pi, po)) => (input as f64 * pi + output as f64 * po).ceil() as u64,
            None => 0,
        }
    }
}

/// A team's or key's budget for the current period.
#[derive(Debug)]
pub struct Budget {
    /// Nano-units per period.
    pub amount: u64,
    pub period: Period,
    pub alert_at: Box<[f64]>,
    period_id: AtomicI64,
    /// Settled spend + outstanding reservations.
    committed: AtomicU64,
    /// Settled spend of the current period.
    spent: AtomicU64,
    /// Bit i: `alert_at[i]` fired this period.
    fired: AtomicU32,
    /// `sluice_budget_used_ratio{team}`, registered on first use.
    gauge: std::sync::OnceLock<metrics::Gauge>,
    /// With `[cluster]`: this node's lease of the budget, written by the
    /// `sluice-cluster` thread; None = the budget is this node's alone.
    pub share: Option<Box<BudgetShare>>,
}

/// What a node holds of a budget under `[cluster]`. Only the
/// `sluice-cluster` thread writes `allowance`, `others_spent` and `free`;
/// workers read them and note the reservations they saw.
#[derive(Debug)]
pub struct BudgetShare {
    /// What this node holds for the current period: leases granted (its
    /// settled spend included) minus what it gave back. The node's
    /// committed spend never passes it.
    pub allowance: AtomicU64,
    /// Settled spend of the other nodes this period, as last seen.
    pub others_spent: AtomicU64,
    /// What the cluster had not leased out at the last lease; 0 = used up
    /// (or Redis unreachable): no lease is coming this period.
    pub free: AtomicU64,
    /// The largest reservation refused for want of a lease since the
    /// thread last looked.
    wanted: AtomicU64,
    /// The largest reservation seen (a lease is at least twice it).
    largest: AtomicU64,
}

impl BudgetShare {
    fn new() -> Self {
        BudgetShare {
            allowance: AtomicU64::new(0),
            others_spent: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
            wanted: AtomicU64::new(0),
            largest: AtomicU64::new(0),
        }
    }

    /// The largest refused reservation since the last call (`sluice-cluster`).
    pub fn take_wanted(&self) -> u64 {
        self.wanted.swap(0, Relaxed)
    }

    /// The largest reservation seen so far.
    pub fn largest(&self) -> u64 {
        self.largest.load(Relaxed)
    }
}

/// Raises `word` to `value` if it is larger; a plain load first because
/// the word rarely changes (no write on the request path then).
fn raise(word: &AtomicU64, value: u64) {
    if value > word.load(Relaxed) {
        word.fetch_max(value, Relaxed);
    }
}

impl Budget {
    /// `clustered`: the budget is shared with other nodes through
    /// `[cluster]` (the allowance starts at zero until the `sluice-cluster`
    /// thread leases or falls back).
    pub fn new(b: &crate::config::Budget, alert_at: &[f64], clustered: bool) -> Self {
        Budget {
            amount: (b.amount * NANOS).round() as u64,
            period: b.period,
            alert_at: alert_at.into(),
            period_id: AtomicI64::new(period_id(b.period, unix_day())),
            committed: AtomicU64::new(0),
            spent: AtomicU64::new(0),
            fired: AtomicU32::new(0),
            gauge: std::sync::OnceLock::new(),
            share: clustered.then(|| Box::new(BudgetShare::new())),
        }
    }

    /// Starts a new period when `day` is past the current one; returns the
    /// settled spend of the period that ended. Workers call it for local
    /// budgets; under `[cluster]` only the `sluice-cluster` thread does,
    /// after it has the new period's first lease.
    pub fn roll(&self, day: i64) -> Option<u64> {
        let id = period_id(self.period, day);
        let current = self.period_id.load(Relaxed);
        if id > current
            && self
                .period_id
                .compare_exchange(current, id, Relaxed, Relaxed)
                .is_ok()
        {
            let old = self.spent.swap(0, Relaxed);
            sub(&self.committed, old);
            self.fired.store(0, Relaxed);
            return Some(old);
        }
        None
    }

    /// Whether `day` lies past the current period.
    pub fn period_ended(&self, day: i64) -> bool {
        period_id(self.period, day) > self.period_id.load(Relaxed)
    }

    /// Reserves `need` nano-units, or fails when the budget (or, under
    /// `[cluster]`, this node's allowance) cannot hold it.
    pub fn reserve(&self, day: i64, need: u64) -> bool {
        let limit = match &self.share {
            None => {
                self.roll(day);
                self.amount
            }
            Some(share) => {
                raise(&share.largest, need);
                share.allowance.load(Relaxed)
            }
        };
        self.committed
            .fetch_update(Relaxed, Relaxed, |c| {
                c.checked_add(need).filter(|&n| n <= limit)
            })
            .is_ok()
    }

    /// After a refused reservation of `need`: under `[cluster]`, notes it
    /// for the next lease and tells whether one may still cover it (the
    /// cluster had enough left at the last lease).
    fn lease_pending(&self, need: u64) -> bool {
        let Some(share) = &self.share else {
            return false;
        };
        raise(&share.wanted, need);
        let unused = share
            .allowance
            .load(Relaxed)
            .saturating_sub(self.committed.load(Relaxed));
        need <= self.amount && share.free.load(Relaxed) >= need.saturating_sub(unused)
    }

    /// Settled spend + outstanding reservations of this node.
    pub fn committed(&self) -> u64 {
        self.committed.load(Relaxed)
    }

    /// Gives back a reservation unused.
    pub fn release(&self, reserved: u64) {
        sub(&self.committed, reserved);
    }

    /// Replaces a reservation by the real cost; returns the spend ratio.
    pub fn settle(&self, day: i64, reserved: u64, cost: u64) -> f64 {
        if self.share.is_none() {
            self.roll(day);
        }
        sub(&self.committed, reserved);
        self.committed.fetch_add(cost, Relaxed);
        let spent = self.spent.fetch_add(cost, Relaxed) + cost;
        self.ratio_of(spent)
    }

    /// Spend restored from the store at start.
    pub fn restore(&self, spent: u64) {
        self.spent.fetch_add(spent, Relaxed);
        self.committed.fetch_add(spent, Relaxed);
    }

    /// Spend / budget; under `[cluster]` the spend of every node (the
    /// others' as last seen).
    fn ratio_of(&self, spent: u64) -> f64 {
        let spent = match &self.share {
            None => spent,
            Some(share) => spent.saturating_add(share.others_spent.load(Relaxed)),
        };
        if self.amount == 0 {
            1.0
        } else {
            spent as f64 / self.amount as f64
        }
    }

    /// Settled spend of the current period, in nano-units.
    pub fn spent(&self) -> u64 {
        self.spent.load(Relaxed)
    }

    pub fn ratio(&self) -> f64 {
        self.ratio_of(self.spent())
    }

    /// The thresholds crossed at `ratio` that had not fired yet this
    /// period (each is returned once per period).
    pub fn newly_crossed(&self, ratio: f64) -> Vec<f64> {
        let mut out = Vec::new();
        for (i, &t) in self.alert_at.iter().enumerate().take(32) {
            if ratio + 1e-12 >= t {
                let bit = 1u32 << i;
                if self.fired.fetch_or(bit, Relaxed) & bit == 0 {
                    out.push(t);
                }
            }
        }
        out
    }

    /// `day`, `week` or `month`.
    pub fn period_name(&self) -> &'static str {
        period_name(self.period)
    }

    /// First day (days since 1970-01-01) of the period containing `day`.
    pub fn period_start(&self, day: i64) -> i64 {
        period_start(self.period, day)
    }
}

fn sub(word: &AtomicU64, amount: u64) {
    let _ = word.fetch_update(Relaxed, Relaxed, |c| Some(c.saturating_sub(amount)));
}

/// Days since 1970-01-01, UTC.
pub fn unix_day() -> i64 {
    super::auth::unix_now().div_euclid(86_400)
}

/// A number that grows by one with each period.
pub fn period_id(period: Period, day: i64) -> i64 {
    match period {
        Period::Day => day,
        // 1970-01-01 was a Thursday; weeks start on Monday (ISO).
        Period::Week => (day + 3).div_euclid(7),
        Period::Month => {
            let (y, m, _) = super::auth::civil_from_days(day);
            y * 12 + m - 1
        }
    }
}

pub fn period_start(period: Period, day: i64) -> i64 {
    match period {
        Period::Day => day,
        Period::Week => day - (day + 3).rem_euclid(7),
        Period::Month => {
            let (y, m, _) = super::auth::civil_from_days(day);
            super::auth::days_from_civil(y, m, 1)
        }
    }
}

fn period_name(p: Period) -> &'static str {
    match p {
        Period::Day => "day",
        Period::Week => "week",
        Period::Month => "month",
    }
}

/// The cost controls of one team or key: rate limits and budget.
/// Registered process-wide by scope and name, so that a configuration
/// reload or a rebuilt key table keeps the counters: the same `Arc` is
/// handed out again while the limits are unchanged; changed limits get new
/// counters that carry over the period's settled spend and fired alerts.
#[derive(Debug)]
pub struct Controls {
    /// `team` or `key`.
    pub scope: &'static str,
    /// The team name or key id.
    pub name: Arc<str>,
    pub team: Arc<str>,
    pub limits: Option<Meter>,
    pub budget: Option<Budget>,
}

type Registry =
    std::sync::Mutex<std::collections::HashMap<(&'static str, Box<str>), Arc<Controls>>>;

fn registry() -> &'static Registry {
    static REGISTRY: std::sync::OnceLock<Registry> = std::sync::OnceLock::new();
    REGISTRY.get_or_init(Default::default)
}

/// Grows by one whenever the registry hands out new controls, so the
/// `sluice-cluster` thread lists them again only after a change.
static REGISTRY_CHANGES: AtomicU64 = AtomicU64::new(0);

impl Controls {
    pub fn team(t: &crate::config::TeamConfig) -> Option<Arc<Self>> {
        Self::get(
            "team",
            &t.name,
            &t.name,
            (t.rpm, t.tpm, t.max_concurrent),
            t.budget.as_ref(),
            &t.alert_at,
        )
    }

    /// The registered controls of `scope`/`name`, or new ones when there
    /// are none or their limits changed; None when nothing is limited.
    /// Admin and load time only (takes a lock).
    pub fn get(
        scope: &'static str,
        name: &str,
        team: &str,
        (rpm, tpm, max_concurrent): (Option<u32>, Option<u64>, Option<u32>),
        budget: Option<&crate::config::Budget>,
        alert_at: &[f64],
    ) -> Option<Arc<Self>> {
        let clustered = crate::cluster::enabled();
        let limits = Meter::new(rpm, tpm, max_concurrent, clustered);
        let budget = budget.map(|b| Budget::new(b, alert_at, clustered));
        if limits.is_none() && budget.is_none() {
            return None;
        }
        let mut map = registry()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let slot = (scope, Box::from(name));
        if let Some(old) = map.get(&slot) {
            let same_limits = match (&old.limits, &limits) {
                (Some(a), Some(b)) => {
                    (a.rpm, a.tpm, a.max_concurrent) == (b.rpm, b.tpm, b.max_concurrent)
                }
                (None, None) => true,
                _ => false,
            };
            let same_budget = match (&old.budget, &budget) {
                (Some(a), Some(b)) => {
                    (a.amount, a.period, &a.alert_at) == (b.amount, b.period, &b.alert_at)
                }
                (None, None) => true,
                _ => false,
            };
            if same_limits && same_budget && *old.team == *team {
                return Some(old.clone());
            }
            if let (Some(a), Some(b)) = (&old.budget, &budget) {
                if a.period == b.period {
                    b.restore(a.spent());
                    b.fired.store(a.fired.load(Relaxed), Relaxed);
                    // The node keeps what it holds of the shared budget.
                    if let (Some(sa), Some(sb)) = (&a.share, &b.share) {
                        for (from, to) in [
                            (&sa.allowance, &sb.allowance),
                            (&sa.others_spent, &sb.others_spent),
                            (&sa.free, &sb.free),
                        ] {
                            to.store(from.load(Relaxed), Relaxed);
                        }
                    }
                }
            }
        }
        let controls = Arc::new(Controls {
            scope,
            name: name.into(),
            team: team.into(),
            limits,
            budget,
        });
        map.insert(slot, controls.clone());
        REGISTRY_CHANGES.fetch_add(1, Relaxed);
        Some(controls)
    }

    /// A number that changes whenever new controls were registered.
    pub fn registry_changes() -> u64 {
        REGISTRY_CHANGES.load(Relaxed)
    }

    /// Every registered team's and key's controls (for restoring spend and
    /// for the `sluice-cluster` thread).
    pub fn registered() -> Vec<Arc<Controls>> {
        registry()
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// A request's hold on its principal's limits and budgets, from the limits
/// step until it is settled. Dropping it unsettled gives everything back
/// (the request was refused or failed before an answer).
pub struct Admission<'a> {
    held: Vec<&'a Controls>,
    taken_ms: u64,
    tokens: u64,
    reserved: u64,
    day: i64,
    settled: bool,
    pub remaining: Remaining,
}

/// What a request may cost at most: its token estimate and its worst-case
/// cost.
#[derive(Debug, Clone, Copy)]
pub struct Worst {
    /// Prompt estimate + `max_tokens` (for tokens per minute).
    pub tokens: u64,
    /// Prompt estimate + `max_tokens` or the default cap, at the highest
    /// price of the models that may answer.
    pub cost: u64,
    /// Output tokens reserved (`max_tokens` or the default cap).
    pub output: u64,
}

/// Estimated prompt tokens of a request body: generous (a token per 3
/// bytes of JSON, plus a little) so that the reservation is a worst case.
pub fn prompt_estimate(body: &[u8]) -> u64 {
    body.len() as u64 / 3 + 8
}

/// Prompt tokens charged when the upstream reports no usage: one per 4
/// bytes of the request body as forwarded (the usual English average).
pub fn estimated_prompt_tokens(body: &[u8]) -> u64 {
    (body.len() as u64).div_ceil(4)
}

/// `max_completion_tokens` or `max_tokens` of a request body.
/// One pass over the members (the first of each name counts, as
/// `member_range` would find it); `max_completion_tokens` wins.
pub fn max_tokens(body: &[u8]) -> Option<u64> {
    let (mut completion, mut max) = (None, None);
    crate::api::json::for_each_member(body, |raw_key, range| {
        match crate::api::json::key_name(raw_key).as_deref() {
            Some("max_completion_tokens") if completion.is_none() => completion = Some(range),
            Some("max_tokens") if max.is_none() => max = Some(range),
            _ => {}
        }
        completion.is_none() || max.is_none()
    });
    let number =
        |r: std::ops::Range<usize>| std::str::from_utf8(&body[r]).ok()?.trim().parse().ok();
    completion.and_then(number).or_else(|| max.and_then(number))
}

pub fn worst(billing: &Billing, body: &[u8], models: impl Iterator<Item = usize>) -> Worst {
    let prompt = prompt_estimate(body);
    let max = max_tokens(body);
    let output = max.unwrap_or(DEFAULT_OUTPUT_CAP);
    let cost = models
        .map(|m| billing.cost(m, prompt, output))
        .max()
        .unwrap_or(0);
    Worst {
        tokens: prompt + max.unwrap_or(0),
        cost,
        output,
    }
}

/// A refusal of the limits step.
#[derive(Debug)]
pub struct Refused {
    pub error: GatewayError,
    /// `team` or `key`.
    pub scope: &'static str,
    /// `requests`, `tokens`, `concurrency` or `budget`.
    pub limit: &'static str,
    /// Under `[cluster]`: the node's allowance was short while the cluster
    /// had capacity left; a lease is on its way (see [`admit_or_wait`]).
    pub lease_pending: bool,
}

/// How long a request refused for want of a lease waits for it, at most,
/// and how often it looks again.
pub const LEASE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);
const LEASE_POLL: std::time::Duration = std::time::Duration::from_millis(1);

/// The limits step as the pipeline runs it: [`admit`], and under
/// `[cluster]`, when the node's allowance was short but a lease is coming,
/// waits for it (at most [`LEASE_WAIT`], without blocking the worker) and
/// tries again. Refusals are counted here, once.
pub async fn admit_or_wait(
    principal: &Principal,
    worst: Worst,
) -> Result<Admission<'_>, GatewayError> {
    // The clock is read only once a request waits.
    let mut deadline = None;
    loop {
        let refused = match admit(principal, worst) {
            Ok(a) => return Ok(a),
            Err(r) => r,
        };
        if refused.lease_pending {
            let now = std::time::Instant::now();
            if now < *deadline.get_or_insert(now + LEASE_WAIT) {
                crate::cluster::wake();
                monoio::time::sleep(LEASE_POLL).await;
                continue;
            }
        }
        crate::metrics::limit_refused(refused.scope, refused.limit);
        return Err(refused.error);
    }
}

/// The limits step: takes the rate limits and reserves the budgets of the
/// principal's team and key, all or nothing. Nothing is counted in the
/// refusal metrics here (see [`admit_or_wait`]).
pub fn admit<'a>(principal: &'a Principal, worst: Worst) -> Result<Admission<'a>, Refused> {
    let mut held: Vec<&'a Controls> = Vec::with_capacity(2);
    held.extend(principal.team.controls.as_deref());
    held.extend(principal.key.as_ref().and_then(|k| k.controls.as_deref()));
    let mut admission = Admission {
        held: Vec::with_capacity(held.len()),
        taken_ms: super::limits::now_ms(),
        tokens: worst.tokens,
        reserved: worst.cost,
        day: unix_day(),
        settled: false,
        remaining: Remaining::default(),
    };
    if held.is_empty() {
        return Ok(admission);
    }
    for c in held {
        if let Some(meter) = &c.limits {
            match meter.take(admission.taken_ms, admission.tokens) {
                Ok(r) => {
                    admission.remaining.requests =
                        min_opt(admission.remaining.requests, r.requests);
                    admission.remaining.tokens = min_opt(admission.remaining.tokens, r.tokens);
                }
                Err(refusal) => {
                    // Dropping `admission` gives back what earlier ones took.
                    return Err(Refused {
                        scope: c.scope,
                        limit: refusal.limit,
                        lease_pending: refusal.lease_pending,
                        error: rate_limited(c, refusal),
                    });
                }
            }
        }
        if let Some(budget) = &c.budget {
            if !budget.reserve(admission.day, admission.reserved) {
                if let Some(meter) = &c.limits {
                    meter.untake(admission.taken_ms, admission.tokens);
                }
                return Err(Refused {
                    scope: c.scope,
                    limit: "budget",
                    lease_pending: budget.lease_pending(admission.reserved),
                    error: GatewayError::InsufficientQuota(format!(
                        "The {} {:?} has used its {} budget.",
                        c.scope,
                        &*c.name,
                        period_name(budget.period)
                    )),
                });
            }
        }
        admission.held.push(c);
    }
    Ok(admission)
}

fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn rate_limited(c: &Controls, r: Refusal) -> GatewayError {
    let what = match r.limit {
        "requests" => "requests per minute",
        "tokens" => "tokens per minute",
        _ => "concurrent requests",
    };
    GatewayError::RateLimited {
        message: format!(
            "Rate limit reached for the {} {:?}: {what}. Retry after {} s.",
            c.scope, &*c.name, r.retry_after
        ),
        retry_after: r.retry_after,
        remaining_requests: r.remaining_requests,
        remaining_tokens: r.remaining_tokens,
    }
}

impl Admission<'_> {
    /// Whether anything is held (the request has limits or budgets).
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// `x-ratelimit-remaining-requests` / `-tokens` header lines for a
    /// successful answer (empty when no rpm or tpm applies).
    pub fn remaining_headers(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(r) = self.remaining.requests {
            crate::http::response::header(
                &mut out,
                b"x-ratelimit-remaining-requests",
                r.to_string().as_bytes(),
            );
        }
        if let Some(t) = self.remaining.tokens {
            crate::http::response::header(
                &mut out,
                b"x-ratelimit-remaining-tokens",
                t.to_string().as_bytes(),
            );
        }
        out
    }

    /// Whether a budget was reserved.
    pub fn has_budget(&self) -> bool {
        self.held.iter().any(|c| c.budget.is_some())
    }

    /// Settles on the real usage: frees concurrency slots, corrects token
    /// windows, replaces reservations by `cost`, fires alert thresholds.
    pub fn settle(mut self, billing: &Billing, tokens: u64, cost: u64) {
        self.settled = true;
        for c in &self.held {
            if let Some(meter) = &c.limits {
                meter.finish(self.taken_ms, self.tokens, tokens);
            }
            if let Some(budget) = &c.budget {
                let ratio = budget.settle(self.day, self.reserved, cost);
                if c.scope == "team" {
                    budget
                        .gauge
                        .get_or_init(|| crate::metrics::budget_used_ratio_gauge(&c.team))
                        .set(ratio);
                }
                for threshold in budget.newly_crossed(ratio) {
                    alert(billing, c, budget, threshold, ratio);
                }
            }
        }
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        for c in &self.held {
            if let Some(meter) = &c.limits {
                meter.finish(self.taken_ms, self.tokens, 0);
            }
            if let Some(budget) = &c.budget {
                budget.release(self.reserved);
            }
        }
    }
}

/// A budget threshold that was crossed: logged, counted and posted to
/// the webhook once per threshold and period (under `[cluster]` once for
/// the whole cluster: the `sluice-cluster` thread fires it only when no
/// other node did).
#[derive(Debug)]
pub struct BudgetAlert {
    pub scope: &'static str,
    pub name: Arc<str>,
    pub team: Arc<str>,
    pub threshold: f64,
    pub period: Period,
    /// First day of the period (days since 1970-01-01).
    pub period_start: i64,
    pub webhook: Option<Box<str>>,
    /// The webhook's JSON document.
    pub payload: serde_json::Value,
}

impl BudgetAlert {
    pub fn new(
        billing: &Billing,
        c: &Controls,
        budget: &Budget,
        threshold: f64,
        ratio: f64,
    ) -> Self {
        let spent = ratio * budget.amount as f64 / NANOS;
        let amount = budget.amount as f64 / NANOS;
        let start = budget.period_start(unix_day());
        let (y, m, d) = super::auth::civil_from_days(start);
        BudgetAlert {
            scope: c.scope,
            name: c.name.clone(),
            team: c.team.clone(),
            threshold,
            period: budget.period,
            period_start: start,
            webhook: billing.webhook.clone(),
            payload: serde_json::json!({
                "type": "budget_threshold",
                "scope": c.scope,
                "team": &*c.team,
                "key": (c.scope == "key").then(|| &*c.name),
                "threshold": threshold,
                "used_ratio": ratio,
                "spent": spent,
                "budget": amount,
                "currency": &*billing.currency,
                "period": period_name(budget.period),
                "period_start": format!("{y:04}-{m:02}-{d:02}"),
                "at": crate::alerts::now_rfc3339_millis(),
            }),
        }
    }

    pub fn period_name(&self) -> &'static str {
        period_name(self.period)
    }

    /// Logs, counts and posts the alert.
    pub fn fire(&self) {
        let p = &self.payload;
        tracing::warn!(scope = self.scope, name = %self.name, team = %self.team, threshold = self.threshold, ratio = %p["used_ratio"], spent = %p["spent"], budget = %p["budget"], currency = %p["currency"], "budget threshold crossed");
        crate::metrics::budget_alert(&self.team, self.threshold);
        if let Some(url) = &self.webhook {
            crate::alerts::send(url, self.payload.clone());
        }
    }
}

fn alert(billing: &Billing, c: &Controls, budget: &Budget, threshold: f64, ratio: f64) {
    let alert = BudgetAlert::new(billing, c, budget, threshold, ratio);
    if budget.share.is_some() {
        crate::cluster::offer_alert(alert);
    } else {
        alert.fire();
    }
}

/// Restores the spend of the current period of every budget from the
/// store (rows of `(day, team, key, cost nano-units)` since the earliest
/// period start asked for).
pub fn restore(access: &super::auth::Access, store: &crate::store::Store) {
    let day = unix_day();
    let _ = access;
    let all = Controls::registered();
    let budgets: Vec<&Controls> = all
        .iter()
        .map(|c| &**c)
        .filter(|c| c.budget.is_some())
        .collect();
    let Some(from) = budgets
        .iter()
        .filter_map(|c| c.budget.as_ref().map(|b| b.period_start(day)))
        .min()
    else {
        return;
    };
    let rows = match store.spend_since(from) {
        Ok(rows) => rows,
        Err(e) => {
            tracing::error!(error = %e, "store: spend of the current period not restored");
            return;
        }
    };
    for c in budgets {
        let Some(b) = &c.budget else { continue };
        let start = b.period_start(day);
        let spent: u64 = rows
            .iter()
            .filter(|(d, team, key, _)| {
                *d >= start
                    && match c.scope {
                        "team" => **team == *c.name,
                        _ => **key == *c.name,
                    }
            })
            .map(|r| r.3)
            .sum();
        if spent > 0 {
            b.restore(spent);
            let _ = b.newly_crossed(b.ratio());
            tracing::info!(scope = c.scope, name = %c.name, spent = spent as f64 / NANOS, "budget spend of this period restored");
        }
        if c.scope == "team" {
            crate::metrics::budget_used_ratio(&c.team, b.ratio());
        }
    }
}

// ---------------------------------------------------------------- streams

/// Adds `"stream_options":{"include_usage":true}` to a streamed request so
/// that the upstream reports usage; returns the new body and whether the
/// client asked for usage itself (then nothing changes).
pub fn with_stream_usage(body: &[u8]) -> Option<Vec<u8>> {
    use crate::api::json;
    match json::member_range(body, "stream_options") {
        Some(range) => {
            let value = &body[range.clone()];
            if memchr::memmem::find(value, b"\"include_usage\"").is_some()
                && memchr::memmem::find(value, b"true").is_some()
            {
                return None;
            }
            let mut out = Vec::with_capacity(body.len() + 32);
            json::splice(&mut out, body, range, br#"{"include_usage":true}"#);
            Some(out)
        }
        None => {
            let open = memchr::memchr(b'{', body)?;
            let mut out = Vec::with_capacity(body.len() + 48);
            out.extend_from_slice(&body[..=open]);
            out.extend_from_slice(br#""stream_options":{"include_usage":true},"#);
            out.extend_from_slice(&body[open + 1..]);
            Some(out)
        }
    }
}

/// What the pipeline and its [`UsageFilter`] share about one answer.
#[derive(Debug, Default)]
pub struct Tally {
    /// Bytes of model text seen.
    pub text_bytes: Cell<u64>,
    /// A stream is stopped when its text passes this many bytes (4 per
    /// reserved output token); 0 = no limit.
    pub cap_bytes: Cell<u64>,
}

/// Answer filter of accounted requests: counts the answer's text (for the
/// estimate when the upstream reports no usage), stops a stream that
/// passes its reservation with a final error event and, when sluice asked
/// for stream usage on the client's behalf, drops the usage-only event.
pub struct UsageFilter {
    pub strip_usage: bool,
    pub tally: Rc<Tally>,
}

impl UsageFilter {
    /// Adds the bytes of the model text in `json` (the string values of
    /// `content`, `text` and `reasoning_content` members, as encoded),
    /// found by a byte scan: no parse, no allocation.
    fn count(&self, json: &[u8]) {
        let n = text_bytes(json);
        self.tally
            .text_bytes
            .set(self.tally.text_bytes.get() + n as u64);
    }
}

/// Bytes of the string values of `"content"`, `"text"` and
/// `"reasoning_content"` members anywhere in `json`.
pub fn text_bytes(json: &[u8]) -> usize {
    let mut n = 0;
    for key in [
        &b"\"content\""[..],
        &b"\"text\""[..],
        &b"\"reasoning_content\""[..],
    ] {
        for at in memchr::memmem::find_iter(json, key) {
            let mut i = at + key.len();
            while json.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
                i += 1;
            }
            if json.get(i) != Some(&b':') {
                continue;
            }
            i += 1;
            while json.get(i).is_some_and(|b| b.is_ascii_whitespace()) {
                i += 1;
            }
            if json.get(i) != Some(&b'"') {
                continue;
            }
            let start = i + 1;
            let mut j = start;
            while j < json.len() {
                match json[j] {
                    b'\\' => j += 2,
                    b'"' => break,
                    _ => j += 1,
                }
            }
            n += j.min(json.len()) - start;
        }
    }
    n
}

impl AnswerFilter for UsageFilter {
    fn body(&mut self, body: &mut Vec<u8>) -> Result<(), GatewayError> {
        // Text is counted only for the estimate, when usage is missing.
        if memchr::memmem::find(body, b"\"usage\"").is_none() {
            self.count(body);
        }
        Ok(())
    }

    fn events(&mut self, events: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        for event in crate::http::sse::events(events) {
            let mut drop_it = false;
            for data in crate::http::sse::data_lines(event) {
                self.count(data);
                // Only the (one) usage event is parsed.
                if self.strip_usage && memchr::memmem::find(data, b"\"usage\"").is_some() {
                    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
                        drop_it |= v.get("usage").is_some_and(|u| !u.is_null())
                            && v.get("choices")
                                .and_then(|c| c.as_array())
                                .is_some_and(|c| c.is_empty());
                    }
                }
            }
            if !drop_it {
                out.extend_from_slice(event);
            }
            let cap = self.tally.cap_bytes.get();
            if cap > 0 && self.tally.text_bytes.get() > cap {
                return Err(GatewayError::InsufficientQuota(
                    "The answer reached the output reserved for it within the budget; it was stopped."
                        .into(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn periods() {
        // 2026-11-25 is a Wednesday.
        let day = super::super::auth::days_from_civil(2026, 11, 25);
        assert_eq!(period_start(Period::Week, day), day - 2);
        assert_eq!(
            period_start(Period::Month, day),
            super::super::auth::days_from_civil(2026, 11, 1)
        );
        assert_eq!(
            period_id(Period::Week, day - 2),
            period_id(Period::Week, day + 4)
        );
        assert_ne!(
            period_id(Period::Week, day - 3),
            period_id(Period::Week, day - 2)
        );
    }

    #[test]
    fn reservations_cannot_overshoot() {
        let b = Budget::new(
            &crate::config::Budget {
                amount: 1.0,
                period: Period::Day,
            },
            &[0.5],
            false,
        );
        let day = unix_day();
        let need = (0.3 * NANOS) as u64;
        assert!(b.reserve(day, need) && b.reserve(day, need) && b.reserve(day, need));
        assert!(!b.reserve(day, need));
        let ratio = b.settle(day, need, need / 3);
        assert!(ratio > 0.09 && ratio < 0.11);
        assert!(b.newly_crossed(ratio).is_empty());
        assert!(b.reserve(day, need));
        assert_eq!(b.newly_crossed(0.6), vec![0.5]);
        assert!(b.newly_crossed(0.7).is_empty());
    }

    #[test]
    fn clustered_budget_reserves_within_the_node_allowance() {
        let b = Budget::new(
            &crate::config::Budget {
                amount: 1.0,
                period: Period::Day,
            },
            &[],
            true,
        );
        let day = unix_day();
        let need = (0.3 * NANOS) as u64;
        assert!(!b.reserve(day, need), "no lease yet");
        assert!(b.lease_pending(need), "a lease may still come");
        let s = b.share.as_deref().unwrap();
        assert_eq!(s.take_wanted(), need);
        assert_eq!(s.largest(), need);
        s.allowance.store(2 * need, Relaxed);
        s.free.store(need / 2, Relaxed);
        assert!(b.reserve(day, need) && b.reserve(day, need));
        assert!(!b.reserve(day, need));
        assert!(
            !b.lease_pending(need),
            "the cluster has less left than the reservation needs"
        );
        s.free.store(need, Relaxed);
        assert!(b.lease_pending(need));
        // The ratio counts the other nodes' spend.
        s.others_spent.store((0.5 * NANOS) as u64, Relaxed);
        let ratio = b.settle(day, need, need);
        assert!((ratio - 0.8).abs() < 1e-9, "{ratio}");
    }

    #[test]
    fn stream_usage_is_requested() {
        let out = with_stream_usage(br#"{"model":"m","stream":true}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert!(with_stream_usage(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
        )
        .is_none());
        let out = with_stream_usage(br#"{"stream_options":{},"model":"m"}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(max_tokens(br#"{"max_tokens": 12}"#), Some(12));
        assert_eq!(
            max_tokens(br#"{"max_tokens": 12, "max_completion_tokens": 7}"#),
            Some(7)
        );
        assert_eq!(
            max_tokens(br#"{"max_completion_tokens": null, "max_tokens": 12}"#),
            Some(12)
        );
        assert_eq!(max_tokens(br#"{"messages": []}"#), None);
    }

    #[test]
    fn text_bytes_of_answers() {
        assert_eq!(
            text_bytes(br#"{"choices":[{"delta":{"content":"ab\"c"}}]}"#),
            5
        );
        assert_eq!(text_bytes(br#"{"choices": [{"text": "hey", "x": 1}]}"#), 3);
        assert_eq!(
            text_bytes(br#"{"delta":{"content":null,"role":"assistant"}}"#),
            0
        );
        assert_eq!(
            text_bytes(br#"{"message":{"content":"a","reasoning_content":"bc"}}"#),
            3
        );
    }

    #[test]
    fn usage_filter_strips_counts_and_stops() {
        let tally = Rc::new(Tally::default());
        let mut f = UsageFilter {
            strip_usage: true,
            tally: tally.clone(),
        };
        let mut out = Vec::new();
        let events = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello there\"}}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2}}\n\n\
data: [DONE]\n\n";
        f.events(events, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("Hello there") && text.contains("[DONE]"));
        assert!(!text.contains("usage"), "{text}");
        assert_eq!(tally.text_bytes.get(), 11);
        tally.cap_bytes.set(12);
        let mut out = Vec::new();
        let more = b"data: {\"choices\":[{\"delta\":{\"content\":\"!!\"}}]}\n\n";
        assert!(f.events(more, &mut out).is_err());
        assert!(
            !out.is_empty(),
            "the event that passed the cap is still sent"
        );
    }
}
