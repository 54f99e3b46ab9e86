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
    /// None when nothing is limited.
    pub fn new(rpm: Option<u32>, tpm: Option<u64>, max_concurrent: Option<u32>) -> Option<Self> {
        (rpm.is_some() || tpm.is_some() || max_concurrent.is_some()).then(|| Meter {
            rpm,
            tpm,
            max_concurrent,
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
        let mut remaining = Remaining::default();
        if let Some(max) = self.max_concurrent {
            if self.inflight.fetch_add(1, Relaxed) >= max {
                self.inflight.fetch_sub(1, Relaxed);
                return Err(Refusal {
                    limit: "concurrency",
                    retry_after: 1,
                    remaining_requests: self.remaining_requests(minute),
                    remaining_tokens: self.remaining_tokens(minute),
                });
            }
        }
        if let Some(rpm) = self.rpm {
            match Self::add(&self.requests, minute, 1, u64::from(rpm)) {
                Ok(n) => remaining.requests = Some(u64::from(rpm) - n),
                Err(_) => {
                    self.release_concurrency();
                    return Err(Refusal {
                        limit: "requests",
                        retry_after: to_next_minute,
                        remaining_requests: Some(0),
                        remaining_tokens: self.remaining_tokens(minute),
                    });
                }
            }
        }
        if let Some(tpm) = self.tpm {
            match Self::add(&self.tokens, minute, tokens, tpm) {
                Ok(n) => remaining.tokens = Some(tpm - n),
                Err(used) => {
                    self.release_concurrency();
                    if self.rpm.is_some() {
                        Self::sub(&self.requests, minute, 1);
                    }
                    return Err(Refusal {
                        limit: "tokens",
                        retry_after: to_next_minute,
                        remaining_requests: self.remaining_requests(minute),
                        remaining_tokens: Some(tpm.saturating_sub(used)),
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
        let (m, c) = unpack(self.requests.load(Relaxed));
        Some(if m == minute {
            rpm.saturating_sub(c)
        } else {
            rpm
        })
    }

    fn remaining_tokens(&self, minute: u64) -> Option<u64> {
        let tpm = self.tpm?;
        let (m, c) = unpack(self.tokens.load(Relaxed));
        Some(if m == minute {
            tpm.saturating_sub(c)
        } else {
            tpm
        })
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
        let m = Meter::new(Some(2), None, None).unwrap();
        let t = 120_000;
        assert_eq!(m.take(t, 0).unwrap().requests, Some(1));
        assert_eq!(m.take(t + 1, 0).unwrap().requests, Some(0));
        let r = m.take(t + 30_000, 0).unwrap_err();
        assert_eq!((r.limit, r.retry_after), ("requests", 30));
        assert!(m.take(t + 60_000, 0).is_ok());
    }

    #[test]
    fn tpm_counts_estimates_and_corrects() {
        let m = Meter::new(None, Some(100), None).unwrap();
        m.take(0, 80).unwrap();
        assert_eq!(m.take(0, 30).unwrap_err().remaining_tokens, Some(20));
        m.finish(0, 80, 10);
        assert_eq!(m.take(0, 30).unwrap().tokens, Some(60));
    }

    #[test]
    fn concurrency_and_rollback() {
        let m = Meter::new(Some(10), None, Some(1)).unwrap();
        m.take(0, 0).unwrap();
        assert_eq!(m.take(0, 0).unwrap_err().limit, "concurrency");
        m.untake(0, 0);
        assert_eq!(m.inflight(), 0);
        assert_eq!(m.take(0, 0).unwrap().requests, Some(9));
    }
}
