//! Brute-force protection: authentication failures are counted per client
//! address (the TCP peer). Within a window of [`WINDOW`]:
//!
//! - the first [`FREE_FAILURES`] failures are answered at once;
//! - each further one gets its 401 delayed by [`DELAY_STEP`] per failure
//!   over the free ones, at most [`MAX_DELAY`] (the connection's task
//!   sleeps; nothing else on the worker waits);
//! - at [`BLOCK_AFTER`] failures the address is refused for [`BLOCK_FOR`]:
//!   every request from it, with valid credentials or not, gets 429
//!   `too_many_auth_failures` with `Retry-After`, before its credentials
//!   are looked at.
//!
//! Counted in `sluice_auth_throttled_total{action="delayed"|"refused"}`;
//! the start of a block is logged (warn) with the address.
//!
//! The request path stays lock-free while no address failed recently: one
//! atomic load ([`AuthThrottle::quiet_until`]) tells that the table holds
//! nothing current. Otherwise the address's shard (one of 64 mutexes) is
//! locked for one lookup. All addresses behind one proxy share a count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const WINDOW: Duration = Duration::from_secs(60);
pub const FREE_FAILURES: u32 = 10;
pub const DELAY_STEP: Duration = Duration::from_millis(50);
pub const MAX_DELAY: Duration = Duration::from_millis(500);
pub const BLOCK_AFTER: u32 = 20;
pub const BLOCK_FOR: Duration = Duration::from_secs(300);

const SHARDS: usize = 64;
/// A shard drops stale entries when it grows past this.
const SWEEP_ABOVE: usize = 4096;

struct Entry {
    window_start: Instant,
    failures: u32,
    blocked_until: Option<Instant>,
}

/// What a failure leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Penalty {
    None,
    /// Answer the 401 after this long.
    Delay(Duration),
    /// This failure started a block.
    Blocked,
}

/// Failure counts per client address, shared by every worker.
pub struct AuthThrottle {
    origin: Instant,
    /// Milliseconds since `origin` until which the table may hold a
    /// current entry; past it every entry is stale and lookups are skipped.
    quiet_until: AtomicU64,
    shards: Box<[Mutex<HashMap<IpAddr, Entry>>]>,
}

impl Default for AuthThrottle {
    fn default() -> Self {
        AuthThrottle {
            origin: Instant::now(),
            quiet_until: AtomicU64::new(0),
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl AuthThrottle {
    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.origin).as_millis() as u64
    }

    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Entry>> {
        let h = match ip {
            IpAddr::V4(a) => crate::api::request::stable_hash(&a.octets()),
            IpAddr::V6(a) => crate::api::request::stable_hash(&a.octets()),
        };
        self.shards[(h as usize) % self.shards.len()]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How long `ip` is still refused, if it is.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if self.ms(now) >= self.quiet_until.load(Ordering::Relaxed) {
            return None;
        }
        let shard = self.shard(ip);
        let until = shard.get(&ip)?.blocked_until?;
        (until > now).then(|| until - now)
    }

    /// Counts one authentication failure of `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant) -> Penalty {
        let mut shard = self.shard(ip);
        if shard.len() > SWEEP_ABOVE {
            shard.retain(|_, e| {
                now.saturating_duration_since(e.window_start) < WINDOW
                    || e.blocked_until.is_some_and(|u| u > now)
            });
        }
        let e = shard.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            blocked_until: None,
        });
        if now.saturating_duration_since(e.window_start) >= WINDOW
            && e.blocked_until.is_none_or(|u| u <= now)
        {
            e.window_start = now;
            e.failures = 0;
            e.blocked_until = None;
        }
        e.failures += 1;
        let mut hot = e.window_start + WINDOW;
        let penalty = if e.failures >= BLOCK_AFTER && e.blocked_until.is_none() {
            let until = now + BLOCK_FOR;
            e.blocked_until = Some(until);
            hot = hot.max(until);
            Penalty::Blocked
        } else if e.failures > FREE_FAILURES {
            let over = e.failures - FREE_FAILURES;
            Penalty::Delay((DELAY_STEP * over).min(MAX_DELAY))
        } else {
            Penalty::None
        };
        if let Some(u) = e.blocked_until {
            hot = hot.max(u);
        }
        drop(shard);
        self.quiet_until.fetch_max(self.ms(hot), Ordering::Relaxed);
        penalty
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slows_down_then_blocks_then_forgives() {
        let t = AuthThrottle::default();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let t0 = Instant::now();
        assert_eq!(t.blocked(ip, t0), None);
        for _ in 0..FREE_FAILURES {
            assert_eq!(t.failed(ip, t0), Penalty::None);
        }
        assert_eq!(t.failed(ip, t0), Penalty::Delay(DELAY_STEP));
        for _ in FREE_FAILURES + 2..BLOCK_AFTER {
            assert!(matches!(t.failed(ip, t0), Penalty::Delay(d) if d <= MAX_DELAY));
        }
        assert_eq!(t.blocked(ip, t0), None);
        assert_eq!(t.failed(ip, t0), Penalty::Blocked);
        assert_eq!(t.blocked(ip, t0), Some(BLOCK_FOR));
        assert_eq!(t.blocked(other, t0), None);
        let later = t0 + BLOCK_FOR + Duration::from_secs(1);
        assert_eq!(t.blocked(ip, later), None);
        assert_eq!(t.failed(ip, later), Penalty::None, "a new window starts");
    }

    #[test]
    fn failures_spread_out_are_not_punished() {
        let t = AuthThrottle::default();
        let ip: IpAddr = "::1".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..100u32 {
            let now = t0 + WINDOW * i / FREE_FAILURES;
            assert_eq!(t.failed(ip, now), Penalty::None, "failure {i}");
        }
    }
}
