//! Budgets and rate limits shared by several sluice nodes through Redis or
//! Valkey (`[cluster]`). Owns the `sluice-cluster` thread and everything it
//! writes: the node's shares of each limit ([`crate::pipeline::account::BudgetShare`],
//! [`crate::pipeline::limits::MeterShares`]), leased from Redis in slices
//! (`lease_fraction` of a limit) with Lua scripts, so that workers only
//! compare atomics and never wait on Redis for a request. See
//! docs/cost.md (Cluster) for the design and its bounds.
//!
//! `lease.rs` the arithmetic (lease sizes, top-ups, fallback shares);
//! `link.rs` the Redis connection; `sync.rs` the thread; `lease.lua` and
//! `heartbeat.lua` the scripts Redis runs.

pub mod lease;
mod link;
mod sync;

use crate::pipeline::account::BudgetAlert;
use crate::runtime::Shared;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClusterError {
    #[error("cluster.redis {url}: {reason}")]
    Url { url: String, reason: String },
    #[error("cannot start the sluice-cluster thread: {0}")]
    Thread(String),
}

/// `[cluster]`, typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// `redis://`, `valkey://` or `unix://` URL.
    pub redis: Box<str>,
    /// This node's name in Redis (leases are held per node id).
    pub node_id: Box<str>,
    pub lease_fraction: f64,
    pub fallback_share: f64,
}

impl ClusterSettings {
    /// From the validated section; the node id defaults to the host name.
    pub fn from_config(c: &crate::config::ClusterConfig) -> Result<Self, ClusterError> {
        redis::Client::open(c.redis.as_str()).map_err(|e| ClusterError::Url {
            url: redact(&c.redis),
            reason: e.to_string(),
        })?;
        Ok(ClusterSettings {
            redis: c.redis.as_str().into(),
            node_id: c.node_id.clone().unwrap_or_else(host_name).into(),
            lease_fraction: c.lease_fraction,
            fallback_share: c.fallback_share,
        })
    }

    /// The Redis URL without its password, for logs.
    pub fn redis_display(&self) -> String {
        redact(&self.redis)
    }
}

/// `scheme://user:password@host` -> `scheme://user:***@host`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
        None => url.to_owned(),
    }
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match (rc, std::str::from_utf8(&buf[..end])) {
        (0, Ok(name)) if !name.is_empty() => name.to_owned(),
        _ => "sluice".to_owned(),
    }
}

/// Whether this process shares its limits through `[cluster]`: set once at
/// start, before the first snapshot is built (`[cluster]` needs a restart
/// to change), read when cost controls are created.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns on shared limits for every cost control created from now on.
pub fn enable() {
    ENABLED.store(true, Relaxed);
}

pub fn enabled() -> bool {
    ENABLED.load(Relaxed)
}

/// What workers and the main thread tell the `sluice-cluster` thread.
pub(crate) enum Message {
    /// A request waits for a lease: look now rather than at the next tick.
    Wake,
    /// A budget threshold crossed on this node: fire it unless another node did.
    Alert(BudgetAlert),
    /// Give back what the node holds and end.
    Stop,
}

const INBOX: usize = 1024;
static INBOX_TX: OnceLock<SyncSender<Message>> = OnceLock::new();
/// At most one wake-up waits in the inbox.
static WAKE_PENDING: AtomicBool = AtomicBool::new(false);

/// Asks the `sluice-cluster` thread to look at the allowances now (a
/// request is waiting for a lease). At most one futex wake per tick.
pub fn wake() {
    if !WAKE_PENDING.swap(true, Relaxed) {
        if let Some(tx) = INBOX_TX.get() {
            let _ = tx.try_send(Message::Wake);
        }
    }
}

/// Hands a crossed budget threshold to the `sluice-cluster` thread, which
/// fires it once for the cluster; fired here when the thread cannot take it.
pub fn offer_alert(alert: BudgetAlert) {
    let Some(tx) = INBOX_TX.get() else {
        return alert.fire();
    };
    match tx.try_send(Message::Alert(alert)) {
        Ok(()) => {}
        Err(
            TrySendError::Full(Message::Alert(a)) | TrySendError::Disconnected(Message::Alert(a)),
        ) => a.fire(),
        Err(_) => {}
    }
}

/// The running `sluice-cluster` thread.
pub struct Cluster {
    tx: SyncSender<Message>,
    thread: Option<JoinHandle<()>>,
}

impl Cluster {
    /// Connects to Redis and takes the first leases (or, with Redis
    /// unreachable, the fallback shares) for every cost control registered
    /// so far, then starts the thread. Call after spend was restored from
    /// the store and before the workers serve.
    pub fn start(settings: &ClusterSettings, shared: Arc<Shared>) -> Result<Cluster, ClusterError> {
        let link = link::Link::new(&settings.redis).map_err(|e| ClusterError::Url {
            url: settings.redis_display(),
            reason: e.to_string(),
        })?;
        crate::metrics::cluster_redis_up(false);
        let mut syncer = sync::Syncer::new(settings.clone(), link, shared);
        syncer.first_round();
        let (tx, rx) = sync_channel(INBOX);
        let _ = INBOX_TX.set(tx.clone());
        let thread = std::thread::Builder::new()
            .name("sluice-cluster".into())
            .spawn(move || syncer.run(rx))
            .map_err(|e| ClusterError::Thread(e.to_string()))?;
        Ok(Cluster {
            tx,
            thread: Some(thread),
        })
    }

    /// Gives back what the node holds unused (after the workers drained)
    /// and stops the thread.
    pub fn shutdown(mut self) {
        let _ = self.tx.send(Message::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Redis key names. Names come last, so no team or key name can make one
/// key look like another.
mod keys {
    use crate::config::Period;
    use crate::pipeline::account::{Budget, BudgetAlert, Controls};

    pub const NODES: &str = "sluice:nodes";

    fn date(day: i64) -> String {
        let (y, m, d) = crate::pipeline::auth::civil_from_days(day);
        format!("{y:04}-{m:02}-{d:02}")
    }

    /// The budget of `c` for the period starting on `start`.
    pub fn budget(b: &Budget, start: i64, c: &Controls) -> String {
        format!(
            "sluice:budget:{}:{}:{}:{}",
            b.period_name(),
            date(start),
            c.scope,
            c.name
        )
    }

    /// `requests` or `tokens` of `c` in `minute` (minutes since 1970).
    pub fn window(limit: &str, minute: u64, c: &Controls) -> String {
        format!("sluice:{limit}:{minute}:{}:{}", c.scope, c.name)
    }

    pub fn alert(a: &BudgetAlert) -> String {
        format!(
            "sluice:alert:{}:{}:{}:{}:{}",
            a.period_name(),
            date(a.period_start),
            a.threshold,
            a.scope,
            a.name
        )
    }

    /// A budget's keys outlive its period by two days.
    pub fn budget_ttl_ms(p: Period) -> u64 {
        let days = match p {
            Period::Day => 1,
            Period::Week => 7,
            Period::Month => 31,
        };
        (days + 2) * 86_400_000
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("redis://app:secret@db:6379/2"),
            "redis://app:***@db:6379/2"
        );
        assert_eq!(
            super::redact("redis://127.0.0.1:6379"),
            "redis://127.0.0.1:6379"
        );
    }
}
