//! The semantic cache: one thread owns the embedder and, per namespace
//! (team + model), a usearch HNSW index (cosine) of the questions answered,
//! with each entry's scope (parameters, tools, earlier turns, system
//! prompt), question text and answer. Workers reach it only through a
//! bounded queue: a lookup that finds the queue full is a miss, a store
//! that finds it full is dropped, and no worker ever waits for room.
//! Concurrent requests are embedded together (dynamic batching: whatever
//! is queued when the thread wakes, up to [`MAX_BATCH`]).

use super::answer::Answer;
use super::embed::Embedder;
use super::metrics::CacheMetrics;
use super::verify::Verifier;
use super::{now_s, Namespace};
use crate::api::request::stable_hash;
use crate::config::Verify;
use futures_channel::oneshot;
use lru::LruCache;
use std::collections::HashMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most requests embedded in one model call.
pub const MAX_BATCH: usize = 8;
/// Jobs waiting for the embedding thread beyond which lookups are misses:
/// two batches, so a lookup waits for at most about three model calls
/// (a few tens of milliseconds on one core) before it is answered.
pub const QUEUE: usize = 64;
/// Nearest neighbours examined per lookup: the best few that share the
/// scope are verified in order of similarity.
const NEIGHBOURS: usize = 8;

/// A semantic lookup's answer to the worker.
pub struct Found {
    /// The cached answer and its similarity, when one passed.
    pub hit: Option<(Arc<Answer>, f32)>,
    /// The question's embedding, handed back so a store after a miss does
    /// not embed it again.
    pub vector: Option<Vec<f32>>,
}

/// The settings a lookup uses, read from the worker's snapshot so a
/// reload applies to the next request.
#[derive(Clone, Copy)]
pub struct Rules {
    pub similarity: f32,
    pub verify: Verify,
    pub ttl_s: u64,
}

pub enum Job {
    Lookup {
        ns: Namespace,
        scope: u64,
        question: String,
        rules: Rules,
        reply: oneshot::Sender<Found>,
    },
    Store {
        ns: Namespace,
        scope: u64,
        question: String,
        vector: Option<Vec<f32>>,
        answer: Arc<Answer>,
    },
    /// Every live entry, for `persist` at shutdown.
    Dump {
        reply: std::sync::mpsc::Sender<Vec<Saved>>,
    },
    /// Entries read back at start.
    Restore(Vec<Saved>),
}

/// One entry as persisted.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct Saved {
    pub team: Box<str>,
    pub model: Box<str>,
    pub scope: u64,
    pub question: String,
    pub vector: Vec<f32>,
    pub completion: String,
    pub tokens: (u64, u64),
    pub stored_at: u64,
}

/// The workers' side of the embedding thread.
pub struct SemanticCache {
    jobs: SyncSender<Job>,
}

impl SemanticCache {
    /// Starts the embedding thread with a loaded embedder.
    pub fn start(
        embedder: Embedder,
        (max_entries, max_ttl_s): (usize, u64),
        metrics: Arc<CacheMetrics>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sluice-embed".into())
            .spawn(move || {
                Thread {
                    embedder,
                    spaces: HashMap::new(),
                    verifier: Verifier::new(),
                    max_entries,
                    max_ttl_s,
                    metrics,
                    dimensions: 0,
                }
                .run(queue)
            })?;
        Ok(Self { jobs })
    }

    /// Queues a job; false when the queue is full (or the thread is gone).
    pub fn offer(&self, job: Job) -> bool {
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Hands persisted entries to the thread (at start; waits for room).
    pub fn restore(&self, entries: Vec<Saved>) {
        let _ = self.jobs.send(Job::Restore(entries));
    }

    /// Blocks until the thread has handed over every live entry.
    pub fn dump(&self) -> Vec<Saved> {
        let (reply, entries) = std::sync::mpsc::channel();
        if self.jobs.send(Job::Dump { reply }).is_err() {
            return Vec::new();
        }
        entries
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_default()
    }
}

struct Thread {
    embedder: Embedder,
    spaces: HashMap<Namespace, Space>,
    verifier: Verifier,
    max_entries: usize,
    /// The TTL the cache was opened with (sweeps); lookups apply the
    /// current snapshot's.
    max_ttl_s: u64,
    metrics: Arc<CacheMetrics>,
    dimensions: usize,
}

/// One namespace's index and entries.
struct Space {
    index: usearch::Index,
    entries: HashMap<u64, Entry>,
    /// Use order of the labels, for eviction.
    recency: LruCache<u64, ()>,
    /// (scope, hash of the question) -> label: finds the entry a repeat of
    /// the same question replaces without an index search.
    by_question: HashMap<(u64, u64), u64>,
    next_label: u64,
}

struct Entry {
    scope: u64,
    question: String,
    answer: Arc<Answer>,
}

impl Thread {
    fn run(mut self, queue: Receiver<Job>) {
        let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
        let mut last_sweep = Instant::now();
        loop {
            match queue.recv_timeout(Duration::from_secs(1)) {
                Ok(job) => batch.push(job),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.handle(&mut batch);
            }
            if last_sweep.elapsed() >= Duration::from_secs(10) {
                last_sweep = Instant::now();
                self.sweep();
            }
        }
    }

    fn handle(&mut self, batch: &mut Vec<Job>) {
        let started = Instant::now();
        let texts: Vec<&str> = batch
            .iter()
            .filter_map(|job| match job {
                Job::Lookup { question, .. } => Some(question.as_str()),
                Job::Store {
                    question,
                    vector: None,
                    ..
                } => Some(question.as_str()),
                _ => None,
            })
            .collect();
        let embedded = if texts.is_empty() {
            Ok(Vec::new())
        } else {
            let n = texts.len();
            let result = self.embedder.embed(&texts);
            self.metrics.embedded(n, started.elapsed());
            result
        };
        let mut vectors = match embedded {
            Ok(v) => v.into_iter(),
            Err(e) => {
                tracing::warn!(error = %e, "embedding failed; these requests skip the semantic cache");
                self.metrics.embed_failed();
                Vec::new().into_iter()
            }
        };
        for job in batch.drain(..) {
            match job {
                Job::Lookup {
                    ns,
                    scope,
                    question,
                    rules,
                    reply,
                } => {
                    let vector = vectors.next();
                    let hit = vector
                        .as_deref()
                        .and_then(|v| self.lookup(&ns, scope, &question, v, rules));
                    let _ = reply.send(Found { hit, vector });
                }
                Job::Store {
                    ns,
                    scope,
                    question,
                    vector,
                    answer,
                } => {
                    let vector = match vector {
                        Some(v) => Some(v),
                        None => vectors.next(),
                    };
                    if let Some(v) = vector {
                        self.store(ns, scope, question, &v, answer);
                    }
                }
                Job::Dump { reply } => {
                    let _ = reply.send(self.dump());
                }
                Job::Restore(entries) => self.restore(entries),
            }
        }
        self.report();
    }

    /// The best candidate of the same scope that reaches the similarity
    /// and passes the verifier.
    fn lookup(
        &mut self,
        ns: &Namespace,
        scope: u64,
        question: &str,
        vector: &[f32],
        rules: Rules,
    ) -> Option<(Arc<Answer>, f32)> {
        let space = self.spaces.get_mut(ns)?;
        let entries = &space.entries;
        let matches = space
            .index
            .filtered_search(vector, NEIGHBOURS, |label| {
                entries.get(&label).is_some_and(|e| e.scope == scope)
            })
            .ok()?;
        let now = now_s();
        for (label, distance) in matches.keys.iter().zip(&matches.distances) {
            let similarity = 1.0 - distance;
            if similarity < rules.similarity {
                break;
            }
            let Some(entry) = space.entries.get(label) else {
                continue;
            };
            if now.saturating_sub(entry.answer.stored_at) >= rules.ttl_s {
                continue;
            }
            if rules.verify == Verify::Strict {
                if let Err(reason) = self.verifier.check(question, &entry.question) {
                    self.metrics.rejected(reason);
                    continue;
                }
            }
            let answer = entry.answer.clone();
            space.recency.get(label);
            return Some((answer, similarity));
        }
        None
    }

    fn store(
        &mut self,
        ns: Namespace,
        scope: u64,
        question: String,
        vector: &[f32],
        answer: Arc<Answer>,
    ) {
        if self.dimensions == 0 {
            self.dimensions = vector.len();
        }
        if vector.len() != self.dimensions {
            return;
        }
        let space = match self.spaces.entry(ns) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => match Space::new(self.dimensions) {
                Some(space) => v.insert(space),
                None => return,
            },
        };
        // The same question again (a repeat after expiry): replace it.
        let asked = (scope, stable_hash(question.as_bytes()));
        if let Some(&label) = space.by_question.get(&asked) {
            if space
                .entries
                .get(&label)
                .is_some_and(|e| e.question == question)
            {
                space.remove(label);
            }
        }
        while space.entries.len() >= self.max_entries {
            match space.recency.pop_lru() {
                Some((label, ())) => space.remove(label),
                None => break,
            }
        }
        let label = space.next_label;
        space.next_label += 1;
        if space.index.size() + 1 > space.index.capacity() {
            let grown = (space.index.capacity() * 2).max(1024);
            if space.index.reserve(grown).is_err() {
                return;
            }
        }
        if space.index.add(label, vector).is_ok() {
            space.entries.insert(
                label,
                Entry {
                    scope,
                    question,
                    answer,
                },
            );
            space.recency.put(label, ());
            space.by_question.insert(asked, label);
        }
    }

    fn dump(&self) -> Vec<Saved> {
        let mut out = Vec::new();
        for (ns, space) in &self.spaces {
            for (label, ()) in space.recency.iter().rev() {
                let Some(entry) = space.entries.get(label) else {
                    continue;
                };
                let mut vector = vec![0f32; self.dimensions];
                if space.index.get(*label, &mut vector).is_err() {
                    continue;
                }
                out.push(Saved {
                    team: ns.team.as_ref().into(),
                    model: ns.model.as_ref().into(),
                    scope: entry.scope,
                    question: entry.question.clone(),
                    vector,
                    completion: String::from_utf8_lossy(&entry.answer.completion).into_owned(),
                    tokens: entry.answer.tokens,
                    stored_at: entry.answer.stored_at,
                });
            }
        }
        out
    }

    fn restore(&mut self, entries: Vec<Saved>) {
        for saved in entries {
            let answer = Arc::new(Answer {
                completion: saved.completion.into_bytes().into(),
                tokens: saved.tokens,
                stored_at: saved.stored_at,
            });
            let ns = Namespace {
                team: saved.team.into(),
                model: saved.model.into(),
            };
            self.store(ns, saved.scope, saved.question, &saved.vector, answer);
        }
    }

    /// Drops entries past the longest TTL a lookup may use, so an idle
    /// namespace does not hold dead answers until it is full.
    fn sweep(&mut self) {
        let now = now_s();
        let ttl = self.max_ttl_s;
        for space in self.spaces.values_mut() {
            let dead: Vec<u64> = space
                .entries
                .iter()
                .filter(|(_, e)| now.saturating_sub(e.answer.stored_at) >= ttl)
                .map(|(&label, _)| label)
                .collect();
            for label in dead {
                space.remove(label);
            }
        }
        self.report();
    }

    fn report(&self) {
        let entries = self.spaces.values().map(|s| s.entries.len()).sum::<usize>();
        self.metrics.semantic_entries(entries);
    }
}

/// An empty HNSW index as the cache uses it: cosine, vectors stored as
/// f16 (half the memory of f32; similarity error around 1e-3), usearch's
/// default connectivity and expansion.
pub fn new_index(dimensions: usize) -> Option<usearch::Index> {
    index_with(dimensions, usearch::ScalarKind::F16, 0)
}

/// An empty cosine index storing vectors as `quantization`, with
/// `connectivity` links per node (0: usearch's default); the bench
/// compares them.
pub fn index_with(
    dimensions: usize,
    quantization: usearch::ScalarKind,
    connectivity: usize,
) -> Option<usearch::Index> {
    let options = usearch::IndexOptions {
        dimensions,
        metric: usearch::MetricKind::Cos,
        quantization,
        connectivity,
        ..Default::default()
    };
    usearch::Index::new(&options).ok()
}

impl Space {
    fn new(dimensions: usize) -> Option<Self> {
        let index = new_index(dimensions)?;
        index.reserve(1024).ok()?;
        Some(Self {
            index,
            entries: HashMap::new(),
            recency: LruCache::unbounded(),
            by_question: HashMap::new(),
            next_label: 0,
        })
    }

    fn remove(&mut self, label: u64) {
        let _ = self.index.remove(label);
        self.recency.pop(&label);
        if let Some(entry) = self.entries.remove(&label) {
            let asked = (entry.scope, stable_hash(entry.question.as_bytes()));
            // Only when it still names this entry (a hash collision may
            // have pointed it at a newer one).
            if self.by_question.get(&asked) == Some(&label) {
                self.by_question.remove(&asked);
            }
        }
    }
}
