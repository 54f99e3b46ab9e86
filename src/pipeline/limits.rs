//! Rate limits: requests per minute (`rpm`), tokens per minute (`tpm`) and
//! concurrent requests (`max_concurrent`), per team and per key, all
//! enforced together. Each limited team or key has one [`Meter`] built at
//! load time; the request path only does atomic operations on it (no lock).
//!
//! Windows are fixed UTC minutes: a counter word packs the minute index
//! (high 32 bits) with the count (low 32 bits), so moving to a new minute
//! and counting are one compare-and-swap. Tokens are taken up front as an
//! estimate (prompt estimate + `max_tokens` when given) and corrected to
//! the real count when the request ends, as OpenAI does.
//!
//! With `[cluster]` a meter also has [`MeterShares`]: this node's part of
//! each limit, leased from Redis by the `sluice-cluster` thread
//! (`src/cluster/`). The request path then compares its counts with the
//! node's allowance instead of the configured limit: still atomics only,
//! never a Redis round trip.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// The rate limits of one team or key, with their counters.
#[derive(Debug, Default)]
pub struct Meter {
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
    requests: AtomicU64,
    tokens: AtomicU64,
    inflight: AtomicU32,
    /// With `[cluster]`: this node's shares of the limits, written by the
    /// `sluice-cluster` thread; None = the limits are this node's alone.
    pub shares: Option<Box<MeterShares>>,
}

/// A node's parts of one meter's limits under `[cluster]`.
#[derive(Debug, Default)]
pub struct MeterShares {
    pub requests: WindowShare,
    pub tokens: WindowShare,
    /// This node's part of `max_concurrent` (concurrency is split between
    /// the live nodes, not leased: see docs/cost.md).
    pub concurrency: AtomicU32,
}

/// A node's allowance of one per-minute limit under `[cluster]`. Only the
/// `sluice-cluster` thread writes the allowance and what the cluster has
/// left; workers read them and note what they were refused for want of a
/// lease.
#[derive(Debug, Default)]
pub struct WindowShare {
    /// `(minute << 32) | allowed` for the minute of each parity, so that
    /// the next minute's first lease can be in place before it starts.
    allowed: [AtomicU64; 2],
    /// `(minute << 32) | what the cluster had not leased out` at the last
    /// lease for that minute, by minute parity; 0 = nothing left that
    /// minute (or Redis unreachable).
    free: [AtomicU64; 2],
    /// The largest amount refused for want of a lease since the thread
    /// last looked (the next lease covers it).
    wanted: AtomicU64,
}

impl WindowShare {
    /// This node's allowance for `minute` (0 until a lease for it arrives).
    pub fn allowed(&self, minute: u64) -> u64 {
        let (m, a) = unpack(self.allowed[(minute & 1) as usize].load(Relaxed));
        if m == minute {
            a
        } else {
            0
        }
    }

    /// Sets the allowance for `minute` (`sluice-cluster` only).
    pub fn set_allowed(&self, minute: u64, allowed: u64) {
        self.allowed[(minute & 1) as usize].store(pack(minute, allowed), Relaxed);
    }

    /// Adds a lease to the allowance for `minute` (`sluice-cluster` only).
    pub fn add_allowed(&self, minute: u64, grant: u64) {
        let _ = self.allowed[(minute & 1) as usize].fetch_update(Relaxed, Relaxed, |w| {
            let (m, a) = unpack(w);
            Some(pack(minute, if m == minute { a + grant } else { grant }))
        });
    }

    /// What the cluster had left for `minute` at the last lease.
    pub fn free(&self, minute: u64) -> Option<u64> {
        let (m, f) = unpack(self.free[(minute & 1) as usize].load(Relaxed));
        (m == minute).then_some(f)
    }

    pub fn set_free(&self, minute: u64, free: u64) {
        self.free[(minute & 1) as usize].store(pack(minute, free), Relaxed);
    }

    /// Forgets what was set for `minute` (no allowance, nothing known).
    pub fn forget(&self, minute: u64) {
        // Minute 0 (1970) is never a current minute.
        self.allowed[(minute & 1) as usize].store(0, Relaxed);
        self.free[(minute & 1) as usize].store(0, Relaxed);
    }

    /// The largest refused amount since the last call (`sluice-cluster`).
    pub fn take_wanted(&self) -> u64 {
        self.wanted.swap(0, Relaxed)
    }

    /// Notes a refusal of `amount` for want of a lease (`unused` was left
    /// of the allowance); true when a lease may still cover it this minute
    /// (the cluster had enough left at the last lease, or nothing is known).
    fn starved(&self, minute: u64, amount: u64, unused: u64) -> bool {
        if amount > self.wanted.load(Relaxed) {
            self.wanted.store(amount, Relaxed);
        }
        self.free(minute)
            .is_none_or(|free| free >= amount.saturating_sub(unused))
    }

    /// What the node may still admit this minute without a new lease, plus
    /// what the cluster had not leased out (for the remaining headers).
    fn remaining(&self, minute: u64, allowed: u64, count: u64, limit: u64) -> u64 {
        (allowed.saturating_sub(count) + self.free(minute).unwrap_or(0)).min(limit)
    }
}

/// Why a request was refused, and what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `requests`, `tokens` or `concurrency`.
    pub limit: &'static str,
    /// Seconds until a retry can succeed.
    pub retry_after: u64,
    pub remaining_requests: Option<u64>,
    pub remaining_tokens: Option<u64>,
    /// With `[cluster]`: the node's allowance was short while the cluster
    /// still had capacity, so a lease is on its way.
    pub lease_pending: bool,
}

/// What the limits left after a request was admitted (for the
/// `x-ratelimit-remaining-*` headers).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining {
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
}

const LOW: u64 = 0xffff_ffff;

fn pack(minute: u64, count: u64) -> u64 {
    (minute << 32) | count.min(LOW)
}

fn unpack(word: u64) -> (u64, u64) {
    (word >> 32, word & LOW)
}

impl Meter {
    /// None when nothing is limited. `clustered`: the limits are shared
    /// with other nodes through `[cluster]` (allowances start at zero
    /// until the `sluice-cluster` thread leases or falls back).
    pub fn new(
        rpm: Option<u32>,
        tpm: Option<u64>,
        max_concurrent: Option<u32>,
        clustered: bool,
    ) -> Option<Self> {
        (rpm.is_some() || tpm.is_some() || max_concurrent.is_some()).then(|| Meter {
            rpm,
            tpm,
            max_concurrent,
            shares: clustered.then(|| {
                Box::new(MeterShares {
                    concurrency: AtomicU32::new(max_concurrent.unwrap_or(0)),
                    ..MeterShares::default()
                })
            }),
            ..Meter::default()
        })
    }

    /// Adds `amount` to a windowed counter when the result stays within
    /// `limit`; returns the count after, or the count that refused.
    fn add(word: &AtomicU64, minute: u64, amount: u64, limit: u64) -> Result<u64, u64> {
        let mut current = word.load(Relaxed);
        loop {
            let (m, c) = unpack(current);
            let count = if m == minute { c } else { 0 };
            let next = count.saturating_add(amount);
            if next > limit {
                return Err(count);
            }
            match word.compare_exchange_weak(current, pack(minute, next), Relaxed, Relaxed) {
                Ok(_) => return Ok(next),
                Err(seen) => current = seen,
            }
        }
    }

    /// Removes `amount` from a counter, only if it still counts `minute`.
    fn sub(word: &AtomicU64, minute: u64, amount: u64) {
        let _ = word.fetch_update(Relaxed, Relaxed, |w| {
            let (m, c) = unpack(w);
            (m == minute).then(|| pack(m, c.saturating_sub(amount)))
        });
    }

    /// Admits one request estimated at `tokens` at `now_ms` (Unix ms), or
    /// refuses it; nothing is counted when it is refused.
    pub fn take(&self, now_ms: u64, tokens: u64) -> Result<Remaining, Refusal> {
        let minute = now_ms / 60_000;
        let to_next_minute = (60_000 - now_ms % 60_000).div_ceil(1000).max(1);
        let shares = self.shares.as_deref();
        let mut remaining = Remaining::default();
        if let Some(max) = self.max_concurrent {
            let cap = shares.map_or(max, |s| s.concurrency.load(Relaxed));
            if self.inflight.fetch_add(1, Relaxed) >= cap {
                self.inflight.fetch_sub(1, Relaxed);
                return Err(Refusal {
                    limit: "concurrency",
                    retry_after: 1,
                    remaining_requests: self.remaining_requests(minute),
                    remaining_tokens: self.remaining_tokens(minute),
                    lease_pending: false,
                });
            }
        }
        if let Some(rpm) = self.rpm {
            let rpm = u64::from(rpm);
            let limit = shares.map_or(rpm, |s| s.requests.allowed(minute));
            match Self::add(&self.requests, minute, 1, limit) {
                Ok(n) => {
                    remaining.requests = Some(match shares {
                        None => rpm - n,
                        Some(s) => s.requests.remaining(minute, limit, n, rpm),
                    })
                }
                Err(count) => {
                    self.release_concurrency();
                    let pending = shares.is_some_and(|s| {
                        s.requests.starved(minute, 1, limit.saturating_sub(count))
                    });
                    return Err(Refusal {
                        limit: "requests",
                        retry_after: if pending { 1 } else { to_next_minute },
                        remaining_requests: Some(match shares {
                            None => 0,
                            Some(s) => s.requests.remaining(minute, limit, count, rpm),
                        }),
                        remaining_tokens: self.remaining_tokens(minute),
                        lease_pending: pending,
                    });
                }
            }
        }
        if let Some(tpm) = self.tpm {
            let limit = shares.map_or(tpm, |s| s.tokens.allowed(minute));
            match Self::add(&self.tokens, minute, tokens, limit) {
                Ok(n) => {
                    remaining.tokens = Some(match shares {
                        None => tpm - n,
                        Some(s) => s.tokens.remaining(minute, limit, n, tpm),
                    })
                }
                Err(used) => {
                    self.release_concurrency();
                    if self.rpm.is_some() {
                        Self::sub(&self.requests, minute, 1);
                    }
                    let pending = shares.is_some_and(|s| {
                        // More than the whole limit can never be leased.
                        tokens <= tpm
                            && s.tokens.starved(minute, tokens, limit.saturating_sub(used))
                    });
                    return Err(Refusal {
                        limit: "tokens",
                        retry_after: if pending { 1 } else { to_next_minute },
                        remaining_requests: self.remaining_requests(minute),
                        remaining_tokens: Some(match shares {
                            None => tpm.saturating_sub(used),
                            Some(s) => s.tokens.remaining(minute, limit, used, tpm),
                        }),
                        lease_pending: pending,
                    });
                }
            }
        }
        Ok(remaining)
    }

    /// Undoes [`Meter::take`] for a request that was refused by another
    /// meter (or by its budget) after this one admitted it.
    pub fn untake(&self, now_ms: u64, tokens: u64) {
        let minute = now_ms / 60_000;
        self.release_concurrency();
        if self.rpm.is_some() {
            Self::sub(&self.requests, minute, 1);
        }
        if self.tpm.is_some() {
            Self::sub(&self.tokens, minute, tokens);
        }
    }

    /// The request admitted at `taken_ms` with `estimate` tokens ended
    /// having used `actual` tokens: frees its concurrency slot and
    /// corrects the token window (if it is still the same minute).
    pub fn finish(&self, taken_ms: u64, estimate: u64, actual: u64) {
        self.release_concurrency();
        if self.tpm.is_some() {
            let minute = taken_ms / 60_000;
            if actual >= estimate {
                let extra = actual - estimate;
                let _ = self.tokens.fetch_update(Relaxed, Relaxed, |w| {
                    let (m, c) = unpack(w);
                    (m == minute).then(|| pack(m, c.saturating_add(extra)))
                });
            } else {
                Self::sub(&self.tokens, minute, estimate - actual);
            }
        }
    }

    fn release_concurrency(&self) {
        if self.max_concurrent.is_some() {
            self.inflight.fetch_sub(1, Relaxed);
        }
    }

    fn remaining_requests(&self, minute: u64) -> Option<u64> {
        let rpm = u64::from(self.rpm?);
        let count = self.requests_in(minute);
        Some(match self.shares.as_deref() {
            None => rpm.saturating_sub(count),
            Some(s) => s
                .requests
                .remaining(minute, s.requests.allowed(minute), count, rpm),
        })
    }

    fn remaining_tokens(&self, minute: u64) -> Option<u64> {
        let tpm = self.tpm?;
        let count = self.tokens_in(minute);
        Some(match self.shares.as_deref() {
            None => tpm.saturating_sub(count),
            Some(s) => s
                .tokens
                .remaining(minute, s.tokens.allowed(minute), count, tpm),
        })
    }

    /// Requests counted in `minute` (0 when the window is another minute).
    pub fn requests_in(&self, minute: u64) -> u64 {
        let (m, c) = unpack(self.requests.load(Relaxed));
        if m == minute {
            c
        } else {
            0
        }
    }

    /// Tokens counted in `minute`.
    pub fn tokens_in(&self, minute: u64) -> u64 {
        let (m, c) = unpack(self.tokens.load(Relaxed));
        if m == minute {
            c
        } else {
            0
        }
    }

    /// Requests in flight (for tests and reports).
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Relaxed)
    }
}

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpm_window_resets_each_minute() {
        let m = Meter::new(Some(2), None, None, false).unwrap();
        let t = 120_000;
        assert_eq!(m.take(t, 0).unwrap().requests, Some(1));
        assert_eq!(m.take(t + 1, 0).unwrap().requests, Some(0));
        let r = m.take(t + 30_000, 0).unwrap_err();
        assert_eq!((r.limit, r.retry_after), ("requests", 30));
        assert!(m.take(t + 60_000, 0).is_ok());
    }

    #[test]
    fn tpm_counts_estimates_and_corrects() {
        let m = Meter::new(None, Some(100), None, false).unwrap();
        m.take(0, 80).unwrap();
        assert_eq!(m.take(0, 30).unwrap_err().remaining_tokens, Some(20));
        m.finish(0, 80, 10);
        assert_eq!(m.take(0, 30).unwrap().tokens, Some(60));
    }

    #[test]
    fn clustered_meter_admits_within_the_node_allowance() {
        let m = Meter::new(Some(100), Some(1000), Some(4), true).unwrap();
        let s = m.shares.as_deref().unwrap();
        let (t, minute) = (120_000, 2);
        let r = m.take(t, 10).unwrap_err();
        assert_eq!(
            (r.limit, r.retry_after, r.lease_pending),
            ("requests", 1, true)
        );
        assert_eq!(m.inflight(), 0, "a refusal gives its concurrency slot back");
        s.requests.set_allowed(minute, 2);
        s.requests.set_free(minute, 50);
        s.tokens.set_allowed(minute, 15);
        s.tokens.set_free(minute, 100);
        // Remaining: what the node may still admit + what the cluster had left.
        assert_eq!(m.take(t, 10).unwrap().requests, Some(51));
        let r = m.take(t, 10).unwrap_err();
        assert_eq!((r.limit, r.lease_pending), ("tokens", true));
        assert_eq!(s.tokens.take_wanted(), 10);
        s.tokens.set_free(minute, 0);
        let r = m.take(t, 10).unwrap_err();
        assert!(!r.lease_pending, "nothing left to lease this minute");
        assert_eq!(r.retry_after, 60);
        // The next minute's slot is apart from this one's.
        s.requests.set_allowed(minute + 1, 7);
        assert_eq!(s.requests.allowed(minute), 2);
        assert_eq!(s.requests.allowed(minute + 1), 7);
        s.requests.forget(minute + 1);
        assert_eq!(s.requests.allowed(minute + 1), 0);
        assert_eq!(s.requests.free(minute + 1), None);
        // Concurrency follows the node's part.
        s.concurrency.store(1, Relaxed);
        assert_eq!(m.take(t, 0).unwrap_err().limit, "concurrency");
    }

    #[test]
    fn concurrency_and_rollback() {
        let m = Meter::new(Some(10), None, Some(1), false).unwrap();
        m.take(0, 0).unwrap();
        assert_eq!(m.take(0, 0).unwrap_err().limit, "concurrency");
        m.untake(0, 0);
        assert_eq!(m.inflight(), 0);
        assert_eq!(m.take(0, 0).unwrap().requests, Some(9));
    }
}
