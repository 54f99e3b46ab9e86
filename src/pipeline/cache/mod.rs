//! The response cache (pipeline step 7): repeated and near-repeated
//! questions answered without touching a model, never across tenants and
//! never with the answer to a question that only looks like the one asked.
//!
//! - `key`: what a request is (exact key, semantic scope, the question).
//! - `exact`: canonical request hash -> answer, shared by the workers.
//! - `semantic`: the embedding thread, its queue and the HNSW indexes.
//! - `verify`: the meaning-bearing-token check a semantic candidate passes.
//! - `answer`: recording answers as sent, replaying them (JSON or SSE).
//! - `embed`: the embedder (local ONNX model or a model server).
//! - `eval`: `sluice cache eval`, precision and recall on labelled pairs.
//!
//! Everything is namespaced by team and model: a lookup only ever sees
//! entries stored for the same team and model. The cache outlives reloads
//! (it is opened once, in `Shared`); its rules (similarity, TTL,
//! temperature, verify) are read from each request's snapshot.

pub mod answer;
pub mod embed;
pub mod eval;
pub mod exact;
pub mod key;
mod metrics;
pub mod semantic;
pub mod verify;

use crate::config::snapshot::CacheSettings;
use answer::{Answer, Recording};
use key::RequestKey;
use semantic::{Found, Job, Rules, SemanticCache};
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CacheError {
    #[error("embedding model: {0}")]
    Model(String),
    #[error("embedding failed: {0}")]
    Embed(String),
    #[error("cache persistence: {0}")]
    Persist(String),
}

/// Whose answers an entry may serve: one team's requests for one model.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Namespace {
    pub team: Arc<str>,
    pub model: Arc<str>,
}

/// What the cache did for a request (metric label and response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit = 0,
    SemanticHit = 1,
    Miss = 2,
    Bypass = 3,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::SemanticHit => "semantic_hit",
            Outcome::Miss => "miss",
            Outcome::Bypass => "bypass",
        }
    }

    /// The `x-sluice-cache` header line.
    pub fn header(self) -> &'static [u8] {
        match self {
            Outcome::Hit => b"x-sluice-cache: hit\r\n",
            Outcome::SemanticHit => b"x-sluice-cache: semantic-hit\r\n",
            Outcome::Miss => b"x-sluice-cache: miss\r\n",
            Outcome::Bypass => b"x-sluice-cache: bypass\r\n",
        }
    }
}

/// Unix time in seconds (entry ages), from the clock the key expiry uses.
pub fn now_s() -> u64 {
    crate::pipeline::auth::unix_now().max(0) as u64
}

/// The process's cache: opened once at start, kept across reloads.
pub struct Cache {
    exact: exact::ExactCache,
    semantic: Option<SemanticCache>,
    metrics: Arc<metrics::CacheMetrics>,
    persist: Option<std::path::PathBuf>,
    /// The settings it was opened with (the embedder and bounds need a
    /// restart to change; a reload that changes them is logged).
    pub opened_with: CacheSettings,
}

/// A request answered from the cache.
pub struct Hit {
    pub answer: Arc<Answer>,
    pub outcome: Outcome,
    /// Cosine similarity of a semantic hit.
    pub similarity: Option<f32>,
    /// The client asked for a usage event in its stream.
    pub include_usage: bool,
}

/// A cacheable request that missed: what is needed to store its answer.
pub struct Pending {
    ns: Namespace,
    key: RequestKey,
    vector: Option<Vec<f32>>,
    /// Fed by the last answer filter.
    pub recording: Rc<RefCell<Recording>>,
}

pub enum Consulted {
    Hit(Hit),
    Miss(Pending),
    Bypass,
}

impl Cache {
    /// Opens the cache: loads the embedder (seconds for a local model, so
    /// before the workers start) and what `persist` saved.
    pub fn open(settings: &CacheSettings) -> Result<Arc<Self>, CacheError> {
        let metrics = Arc::new(metrics::CacheMetrics::new());
        let semantic = match (&settings.embedder, settings.semantic) {
            (Some(e), true) => {
                let embedder = embed::Embedder::load(e)?;
                let started = SemanticCache::start(
                    embedder,
                    (settings.max_entries, settings.ttl_s),
                    metrics.clone(),
                )
                .map_err(|e| CacheError::Model(format!("embedding thread: {e}")))?;
                Some(started)
            }
            _ => None,
        };
        let cache = Arc::new(Self {
            exact: exact::ExactCache::new(settings.max_entries, settings.ttl_s),
            semantic,
            metrics,
            persist: settings.persist.clone(),
            opened_with: settings.clone(),
        });
        if let Some(dir) = &cache.persist {
            let restored = cache.restore(dir)?;
            tracing::info!(dir = %dir.display(), entries = restored, "cache restored");
        }
        Ok(cache)
    }

    /// Counts a request that may not use the cache.
    pub fn bypass(&self) -> Consulted {
        self.metrics.result(Outcome::Bypass);
        Consulted::Bypass
    }

    /// Checks the cache for a request (the body as it would be forwarded).
    pub async fn consult(&self, settings: &CacheSettings, ns: Namespace, body: &[u8]) -> Consulted {
        let Ok(key) = key::request_key(body, settings.max_temperature) else {
            return self.bypass();
        };
        let now = now_s();
        if settings.exact {
            if let Some(answer) = self.exact.get(&ns, &key.exact, now) {
                return self.hit(answer, Outcome::Hit, None, key.include_usage);
            }
        }
        let mut vector = None;
        if let (Some(semantic), true, Some(question)) =
            (&self.semantic, settings.semantic, &key.question)
        {
            let (reply, found) = futures_channel::oneshot::channel();
            let job = Job::Lookup {
                ns: ns.clone(),
                scope: key.scope,
                question: question.clone(),
                rules: Rules {
                    similarity: settings.similarity,
                    verify: settings.verify,
                    ttl_s: settings.ttl_s,
                },
                reply,
            };
            if semantic.offer(job) {
                if let Ok(Found { hit, vector: v }) = found.await {
                    if let Some((answer, similarity)) = hit {
                        return self.hit(
                            answer,
                            Outcome::SemanticHit,
                            Some(similarity),
                            key.include_usage,
                        );
                    }
                    vector = v;
                }
            } else {
                self.metrics.queue_full(false);
            }
        }
        self.metrics.result(Outcome::Miss);
        Consulted::Miss(Pending {
            ns,
            key,
            vector,
            recording: Rc::default(),
        })
    }

    fn hit(
        &self,
        answer: Arc<Answer>,
        outcome: Outcome,
        similarity: Option<f32>,
        include_usage: bool,
    ) -> Consulted {
        self.metrics.result(outcome);
        self.metrics.saved(answer.tokens.0 + answer.tokens.1);
        Consulted::Hit(Hit {
            answer,
            outcome,
            similarity,
            include_usage,
        })
    }

    /// Keeps a missed request's answer, when it was complete.
    pub fn store(&self, settings: &CacheSettings, pending: Pending, tokens: (u64, u64)) {
        let Some(completion) = pending.recording.borrow_mut().take_completion() else {
            return;
        };
        let answer = Arc::new(Answer {
            completion: completion.into(),
            tokens,
            stored_at: now_s(),
        });
        if settings.exact {
            self.exact
                .put(&pending.ns, pending.key.exact, answer.clone());
            self.metrics.stored(false);
        }
        if let (Some(semantic), true, Some(question)) =
            (&self.semantic, settings.semantic, pending.key.question)
        {
            let job = Job::Store {
                ns: pending.ns,
                scope: pending.key.scope,
                question,
                vector: pending.vector,
                answer,
            };
            if semantic.offer(job) {
                self.metrics.stored(true);
            } else {
                self.metrics.queue_full(true);
            }
        }
    }

    /// Saves every live entry under `persist` (at shutdown).
    pub fn save(&self) -> Result<usize, CacheError> {
        let Some(dir) = &self.persist else {
            return Ok(0);
        };
        let fail = |e: std::io::Error| CacheError::Persist(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(fail)?;
        let now = now_s();
        let exact: Vec<SavedExact> = self
            .exact
            .entries(now)
            .into_iter()
            .map(|(ns, key, answer)| SavedExact {
                team: ns.team.as_ref().into(),
                model: ns.model.as_ref().into(),
                key: hex::encode(key),
                completion: String::from_utf8_lossy(&answer.completion).into_owned(),
                tokens: answer.tokens,
                stored_at: answer.stored_at,
            })
            .collect();
        let semantic = self
            .semantic
            .as_ref()
            .map(SemanticCache::dump)
            .unwrap_or_default();
        let count = exact.len() + semantic.len();
        write_lines(&dir.join("exact.jsonl"), &exact).map_err(fail)?;
        write_lines(&dir.join("semantic.jsonl"), &semantic).map_err(fail)?;
        Ok(count)
    }

    fn restore(&self, dir: &Path) -> Result<usize, CacheError> {
        let now = now_s();
        let ttl = self.opened_with.ttl_s;
        let live = |stored_at: u64| now.saturating_sub(stored_at) < ttl;
        let exact: Vec<SavedExact> = read_lines(&dir.join("exact.jsonl"))?;
        let mut restored = 0;
        for e in exact.into_iter().filter(|e| live(e.stored_at)) {
            let mut key = [0u8; 32];
            if hex::decode_to_slice(&e.key, &mut key).is_err() {
                continue;
            }
            let ns = Namespace {
                team: e.team.into(),
                model: e.model.into(),
            };
            let answer = Arc::new(Answer {
                completion: e.completion.into_bytes().into(),
                tokens: e.tokens,
                stored_at: e.stored_at,
            });
            self.exact.put(&ns, key, answer);
            restored += 1;
        }
        self.metrics.exact_entries(self.exact.entry_count());
        if let Some(semantic) = &self.semantic {
            let entries: Vec<semantic::Saved> = read_lines(&dir.join("semantic.jsonl"))?;
            let entries: Vec<_> = entries.into_iter().filter(|e| live(e.stored_at)).collect();
            restored += entries.len();
            semantic.restore(entries);
        }
        Ok(restored)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedExact {
    team: Box<str>,
    model: Box<str>,
    key: String,
    completion: String,
    tokens: (u64, u64),
    stored_at: u64,
}

/// Writes one JSON line per item to a temporary file, then renames it
/// over `path`, so a crash mid-save leaves the previous file.
fn write_lines<T: serde::Serialize>(path: &Path, items: &[T]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("jsonl.tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.write_all(b"\n")?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads what [`write_lines`] wrote; a missing file is empty, an
/// unreadable line is skipped (and counted in the log).
fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, CacheError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(CacheError::Persist(format!("{}: {e}", path.display()))),
    };
    let mut bad = 0usize;
    let items = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let parsed = serde_json::from_str(l).ok();
            bad += usize::from(parsed.is_none());
            parsed
        })
        .collect();
    if bad > 0 {
        tracing::warn!(file = %path.display(), lines = bad, "unreadable cache lines skipped");
    }
    Ok(items)
}

/// The response to a hit: head (with the cache headers and the caller's
/// extra header lines) and the replayed body, JSON or a chunked SSE stream.
pub fn hit_response(
    out: &mut Vec<u8>,
    hit: &Hit,
    stream: bool,
    request_id: &[u8],
    keep_alive: bool,
    extra_headers: &[u8],
) {
    use crate::http::response;
    let how = answer::Replay {
        stream,
        include_usage: hit.include_usage,
    };
    let id = format!(
        "chatcmpl-{}",
        hex::encode(&request_id[..request_id.len().min(16)])
    );
    let body = answer::replay(&hit.answer, &how, now_s(), &id);
    response::status_line(out, 200);
    let content_type: &[u8] = if stream {
        b"text/event-stream"
    } else {
        b"application/json"
    };
    response::header(out, b"content-type", content_type);
    out.extend_from_slice(hit.outcome.header());
    if let Some(s) = hit.similarity {
        response::header(
            out,
            b"x-sluice-cache-similarity",
            format!("{s:.4}").as_bytes(),
        );
    }
    out.extend_from_slice(extra_headers);
    if stream {
        out.extend_from_slice(b"cache-control: no-cache\r\n");
        response::common_headers(out, request_id, keep_alive, None);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\r\n0\r\n\r\n");
    } else {
        response::common_headers(out, request_id, keep_alive, Some(body.len()));
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
    }
}
