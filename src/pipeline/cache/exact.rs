//! The exact cache: canonical request hash -> answer, per namespace,
//! bounded by entries (least recently used first) and age. Shared by every
//! worker, so it is split into shards, each behind its own mutex held for
//! one map operation (tens of nanoseconds): the one lock on the request
//! path that is meant, because a hit must be visible to every core.

use super::answer::Answer;
use super::Namespace;
use lru::LruCache;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

/// Most shards; fewer when the bound is small, so that small bounds are
/// exact (one shard: one true LRU).
const MAX_SHARDS: usize = 16;

pub struct ExactCache {
    shards: Box<[Mutex<Shard>]>,
    /// Entries per namespace in one shard (the namespace bound / shards).
    per_shard: NonZeroUsize,
    ttl_s: u64,
    /// Entries held, kept by `put` and expiry (for the gauge, without
    /// locking every shard).
    count: std::sync::atomic::AtomicUsize,
}

#[derive(Default)]
struct Shard {
    namespaces: HashMap<Namespace, LruCache<[u8; 32], Arc<Answer>>>,
}

impl ExactCache {
    pub fn new(max_entries: usize, ttl_s: u64) -> Self {
        let shards = max_entries.clamp(1, MAX_SHARDS);
        let per_shard =
            NonZeroUsize::new(max_entries.div_ceil(shards).max(1)).unwrap_or(NonZeroUsize::MIN);
        Self {
            shards: (0..shards).map(|_| Mutex::new(Shard::default())).collect(),
            per_shard,
            ttl_s,
            count: Default::default(),
        }
    }

    fn shard(&self, key: &[u8; 32]) -> std::sync::MutexGuard<'_, Shard> {
        let i = key[0] as usize % self.shards.len();
        // A poisoned shard only means a panic elsewhere mid-insert; the map
        // itself is consistent (LruCache operations do not unwind midway).
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, ns: &Namespace, key: &[u8; 32], now: u64) -> Option<Arc<Answer>> {
        let mut shard = self.shard(key);
        let entries = shard.namespaces.get_mut(ns)?;
        let answer = entries.get(key)?.clone();
        if now.saturating_sub(answer.stored_at) >= self.ttl_s {
            entries.pop(key);
            self.count.fetch_sub(1, Relaxed);
            return None;
        }
        Some(answer)
    }

    /// Stores an answer; returns the number of entries now held.
    pub fn put(&self, ns: &Namespace, key: [u8; 32], answer: Arc<Answer>) -> usize {
        let per_shard = self.per_shard;
        let mut shard = self.shard(&key);
        let pushed_out = shard
            .namespaces
            .entry(ns.clone())
            .or_insert_with(|| LruCache::new(per_shard))
            .push(key, answer);
        // None: one more; Some: the same key replaced, or another evicted.
        if pushed_out.is_none() {
            return self.count.fetch_add(1, Relaxed) + 1;
        }
        self.count.load(Relaxed)
    }

    /// Entries held (all namespaces).
    pub fn entry_count(&self) -> usize {
        self.count.load(Relaxed)
    }

    /// Every live entry, oldest use first (for `persist`).
    pub fn entries(&self, now: u64) -> Vec<(Namespace, [u8; 32], Arc<Answer>)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (ns, entries) in &shard.namespaces {
                for (key, answer) in entries.iter().rev() {
                    if now.saturating_sub(answer.stored_at) < self.ttl_s {
                        out.push((ns.clone(), *key, answer.clone()));
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(at: u64) -> Arc<Answer> {
        Arc::new(Answer {
            completion: b"{}".to_vec().into(),
            tokens: (1, 1),
            stored_at: at,
        })
    }

    fn ns(team: &str) -> Namespace {
        Namespace {
            team: team.into(),
            model: "m".into(),
        }
    }

    #[test]
    fn namespaces_never_share_entries() {
        let cache = ExactCache::new(100, 60);
        cache.put(&ns("a"), [1; 32], answer(0));
        assert!(cache.get(&ns("a"), &[1; 32], 1).is_some());
        assert!(cache.get(&ns("b"), &[1; 32], 1).is_none());
    }

    #[test]
    fn entries_expire_and_the_least_recently_used_go_first() {
        let cache = ExactCache::new(MAX_SHARDS * 2, 60);
        cache.put(&ns("a"), [0; 32], answer(0));
        assert!(cache.get(&ns("a"), &[0; 32], 60).is_none(), "expired");
        // Same shard (first byte), room for two.
        let k = |b: u8| {
            let mut k = [b; 32];
            k[0] = 0;
            k
        };
        cache.put(&ns("a"), k(1), answer(100));
        cache.put(&ns("a"), k(2), answer(100));
        assert!(cache.get(&ns("a"), &k(1), 100).is_some());
        cache.put(&ns("a"), k(3), answer(100));
        assert!(cache.get(&ns("a"), &k(2), 100).is_none(), "evicted");
        assert!(cache.get(&ns("a"), &k(1), 100).is_some());
        assert_eq!(cache.entry_count(), 2);
        assert_eq!(cache.entries(100).len(), 2);
    }
}
