//! The cache's metric handles, registered once when the cache opens so
//! workers and the embedding thread only increment atomics.

use super::verify::Rejection;
use super::Outcome;
use crate::metrics as names;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use std::time::Duration;

pub struct CacheMetrics {
    results: [Counter; 4],
    saved_tokens: Counter,
    rejections: Vec<(Rejection, Counter)>,
    exact_entries: Gauge,
    semantic_entries: Gauge,
    stores: [Counter; 2],
    queue_full: [Counter; 2],
    batch: Histogram,
    embed_seconds: Histogram,
    embed_failures: Counter,
}

impl CacheMetrics {
    pub fn new() -> Self {
        let result = |r: Outcome| counter!(names::CACHE_REQUESTS_TOTAL, "result" => r.label());
        let kind = |name: &'static str, k: &'static str| counter!(name, "kind" => k);
        Self {
            results: [
                result(Outcome::Hit),
                result(Outcome::SemanticHit),
                result(Outcome::Miss),
                result(Outcome::Bypass),
            ],
            saved_tokens: counter!(names::CACHE_SAVED_TOKENS_TOTAL),
            rejections: Rejection::ALL
                .iter()
                .map(|&r| {
                    (
                        r,
                        counter!(names::CACHE_VERIFIER_REJECTIONS_TOTAL, "reason" => r.as_str()),
                    )
                })
                .collect(),
            exact_entries: gauge!(names::CACHE_ENTRIES, "kind" => "exact"),
            semantic_entries: gauge!(names::CACHE_ENTRIES, "kind" => "semantic"),
            stores: [
                kind(names::CACHE_STORES_TOTAL, "exact"),
                kind(names::CACHE_STORES_TOTAL, "semantic"),
            ],
            queue_full: [
                counter!(names::CACHE_QUEUE_FULL_TOTAL, "op" => "lookup"),
                counter!(names::CACHE_QUEUE_FULL_TOTAL, "op" => "store"),
            ],
            batch: histogram!(names::CACHE_EMBED_BATCH),
            embed_seconds: histogram!(names::CACHE_EMBED_SECONDS),
            embed_failures: counter!(names::CACHE_EMBED_FAILURES_TOTAL),
        }
    }

    pub fn result(&self, outcome: Outcome) {
        self.results[outcome as usize].increment(1);
    }

    pub fn saved(&self, tokens: u64) {
        self.saved_tokens.increment(tokens);
    }

    pub fn rejected(&self, reason: Rejection) {
        if let Some((_, c)) = self.rejections.iter().find(|(r, _)| *r == reason) {
            c.increment(1);
        }
    }

    pub fn exact_entries(&self, n: usize) {
        self.exact_entries.set(n as f64);
    }

    pub fn semantic_entries(&self, n: usize) {
        self.semantic_entries.set(n as f64);
    }

    pub fn stored(&self, semantic: bool) {
        self.stores[usize::from(semantic)].increment(1);
    }

    pub fn queue_full(&self, store: bool) {
        self.queue_full[usize::from(store)].increment(1);
    }

    pub fn embedded(&self, texts: usize, took: Duration) {
        self.batch.record(texts as f64);
        self.embed_seconds.record(took.as_secs_f64());
    }

    pub fn embed_failed(&self) {
        self.embed_failures.increment(1);
    }
}
