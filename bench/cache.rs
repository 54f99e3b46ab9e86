//! The response cache (docs/cache.md): an exact hit served (request key,
//! lookup, replay into the response bytes; goal under 50 µs added at
//! p50), HNSW search among 100,000 entries (goal under 200 µs), and
//! embeddings per second with batching on one core (the local
//! all-MiniLM-L6-v2 from `make models`; skipped with a note when absent).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use sluice::config::parse_str;
use sluice::config::snapshot::{CacheSettings, EmbedderSettings, Snapshot};
use sluice::pipeline::cache::{self, Cache, Consulted, Namespace};
use std::future::Future;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};

/// The exact cache with the defaults of `[cache]`.
fn settings() -> CacheSettings {
    let config = "[server]\nlisten = \"127.0.0.1:0\"\n\n[[upstreams]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\n\n[[models]]\nname = \"m1\"\ntargets = [{ upstream = \"a\" }]\n\n[cache]\nsemantic = false\n";
    let cfg = parse_str(config, std::path::Path::new(".")).unwrap();
    Snapshot::build(&cfg, config).unwrap().cache.unwrap()
}

/// Polls a future that never waits (an exact lookup) to its end.
fn ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("an exact lookup never waits"),
    }
}

fn chat_body() -> Vec<u8> {
    let history: Vec<serde_json::Value> = (0..6)
        .map(|i| {
            serde_json::json!({"role": if i % 2 == 0 { "user" } else { "assistant" },
                "content": format!("Turn {i}: how do I configure the retry budget and the circuit breaker of an upstream pool?")})
        })
        .collect();
    let mut messages = vec![
        serde_json::json!({"role": "system", "content": "You are a helpful assistant for the sluice gateway."}),
    ];
    messages.extend(history);
    messages
        .push(serde_json::json!({"role": "user", "content": "And how do I reset my password?"}));
    serde_json::to_vec(&serde_json::json!({"model": "m1", "temperature": 0, "messages": messages}))
        .unwrap()
}

fn exact_hit(c: &mut Criterion) {
    let settings = settings();
    let cache = Cache::open(&settings).unwrap();
    let ns = Namespace {
        team: "support".into(),
        model: "m1".into(),
    };
    let body = chat_body();
    // Store an answer the way a miss does.
    let Consulted::Miss(pending) = ready(cache.consult(&settings, ns.clone(), &body)) else {
        panic!("first lookup misses");
    };
    let answer = br#"{"id":"x","object":"chat.completion","created":1,"model":"m1","choices":[{"index":0,"message":{"role":"assistant","content":"Open Settings, choose Security, then Reset password. You will get an email with a link that is valid for one hour; follow it and choose a new password of at least twelve characters."},"finish_reason":"stop"}],"usage":{"prompt_tokens":180,"completion_tokens":48,"total_tokens":228}}"#.to_vec();
    {
        let mut recorder = cache::answer::Recorder::into(pending.recording.clone());
        recorder.body(&mut answer.clone()).unwrap();
    }
    cache.store(&settings, pending, (180, 48));
    let mut out = Vec::with_capacity(4096);
    let mut group = c.benchmark_group("cache");
    group.throughput(Throughput::Bytes(body.len() as u64));
    for stream in [false, true] {
        let name = if stream {
            "exact_hit_sse"
        } else {
            "exact_hit_json"
        };
        group.bench_function(name, |b| {
            b.iter(|| {
                let Consulted::Hit(hit) =
                    ready(cache.consult(&settings, ns.clone(), black_box(&body)))
                else {
                    panic!("hit expected");
                };
                out.clear();
                cache::hit_response(&mut out, &hit, stream, b"0123456789abcdef", true, b"");
                black_box(out.len())
            })
        });
    }
    group.finish();
}

/// A deterministic pseudo-random unit vector.
fn vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn hnsw_search(c: &mut Criterion) {
    // `CACHE_BENCH_QUANT=all` also measures the other storage kinds and
    // bf16's search expansions; `graph` only the connectivity sweep.
    let mode = std::env::var("CACHE_BENCH_QUANT").unwrap_or_default();
    let kinds: &[(&str, usearch::ScalarKind)] = if mode == "graph" {
        &[]
    } else if mode == "all" {
        &[
            ("f16", usearch::ScalarKind::F16),
            ("bf16", usearch::ScalarKind::BF16),
            ("f32", usearch::ScalarKind::F32),
            ("i8", usearch::ScalarKind::I8),
        ]
    } else {
        &[("f16", usearch::ScalarKind::F16)]
    };
    // The cache filters candidates by scope with a map lookup per label.
    let scopes: std::collections::HashMap<u64, u64> = (0..ENTRIES).map(|l| (l, l % 4)).collect();
    let queries: Vec<Vec<f32>> = (0..64).map(|i| vector(ENTRIES + i, DIMS)).collect();
    let mut group = c.benchmark_group("cache");
    for &(name, kind) in kinds {
        let index = cache::semantic::index_with(DIMS, kind, 0).unwrap();
        index.reserve(ENTRIES as usize).unwrap();
        for label in 0..ENTRIES {
            index.add(label, &vector(label, DIMS)).unwrap();
        }
        eprintln!(
            "cache/hnsw {name}: kernel {}, connectivity {}, expansion {}",
            index.hardware_acceleration(),
            index.connectivity(),
            index.expansion_search()
        );
        let mut i = 0;
        group.bench_function(BenchmarkId::new("hnsw_search_100k_top8", name), |b| {
            b.iter(|| {
                i = (i + 1) % queries.len();
                black_box(index.search(&queries[i], 8).unwrap().keys.len())
            })
        });
        // As the cache searches: only entries of the request's scope (here a
        // quarter of the index, so the graph walk must look further).
        group.bench_function(
            BenchmarkId::new("hnsw_search_100k_top8_scope_quarter", name),
            |b| {
                b.iter(|| {
                    i = (i + 1) % queries.len();
                    let m = index
                        .filtered_search(&queries[i], 8, |label| scopes.get(&label) == Some(&1))
                        .unwrap();
                    black_box(m.keys.len())
                })
            },
        );
    }
    if mode == "all" {
        let sweep = [("bf16_c16", usearch::ScalarKind::BF16, 16)];
        graph_sweep(&mut group, &queries, &sweep, &[16, 32, 64]);
    }
    if mode == "graph" {
        let sweep = [
            ("f16_c16", usearch::ScalarKind::F16, 16),
            ("f16_c32", usearch::ScalarKind::F16, 32),
        ];
        graph_sweep(&mut group, &queries, &sweep, &[64, 128]);
    }
    group.finish();
}

/// Graph settings (storage, connectivity) at several search expansions:
/// time per search, and how often a near-duplicate of a stored entry
/// (what a cache hit looks like) still finds that entry first.
fn graph_sweep(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    queries: &[Vec<f32>],
    settings: &[(&str, usearch::ScalarKind, usize)],
    expansions: &[usize],
) {
    for &(name, quantization, connectivity) in settings {
        let index = cache::semantic::index_with(DIMS, quantization, connectivity).unwrap();
        index.reserve(ENTRIES as usize).unwrap();
        for label in 0..ENTRIES {
            index.add(label, &vector(label, DIMS)).unwrap();
        }
        sweep_expansions(group, queries, &index, name, expansions);
    }
}

const ENTRIES: u64 = 100_000;
const DIMS: usize = 384;

fn sweep_expansions(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    queries: &[Vec<f32>],
    index: &usearch::Index,
    name: &str,
    expansions: &[usize],
) {
    let near: Vec<(u64, Vec<f32>)> = (0..500u64)
        .map(|k| {
            let label = k * 197 % ENTRIES;
            let noise = vector(ENTRIES * 7 + k, DIMS);
            let mut v: Vec<f32> = vector(label, DIMS)
                .iter()
                .zip(&noise)
                .map(|(a, b)| a + 0.3 * b)
                .collect();
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            v.iter_mut().for_each(|x| *x /= norm);
            (label, v)
        })
        .collect();
    for &expansion in expansions {
        index.change_expansion_search(expansion);
        let found = near
            .iter()
            .filter(|(label, v)| index.search(v, 1).unwrap().keys.first() == Some(label))
            .count();
        eprintln!(
            "cache/hnsw {name} expansion {expansion}: near-duplicate (similarity ~0.96) found first {found}/{}",
            near.len()
        );
        let mut i = 0;
        group.bench_function(
            BenchmarkId::new(format!("hnsw_search_100k_top8_{name}_expansion"), expansion),
            |b| {
                b.iter(|| {
                    i = (i + 1) % queries.len();
                    black_box(index.search(&queries[i], 8).unwrap().keys.len())
                })
            },
        );
    }
}

fn embeddings(c: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("var/models");
    if !dir.join("all-minilm-l6-v2/model.onnx").exists() {
        eprintln!("cache/embed: skipped, run `make models` first");
        return;
    }
    let settings = EmbedderSettings::Local {
        model_dir: dir.join("all-minilm-l6-v2"),
        onnxruntime: dir.join("onnxruntime/libonnxruntime.so"),
    };
    let mut embedder = cache::embed::Embedder::load(&settings).unwrap();
    let questions = [
        "How do I reset my password?",
        "What is the capital of France?",
        "Convert 5 km to miles",
        "Which rows have a NULL email address in the customers table?",
        "Hoe vraag ik een nieuw wachtwoord aan?",
        "Is the shop open on Saturday afternoon?",
        "Explain the difference between git reset --soft and --hard",
        "Sort the list of invoices by date in ascending order",
    ];
    let mut group = c.benchmark_group("cache/embed");
    group.sample_size(10);
    for batch in [1usize, 8, 32] {
        let texts: Vec<&str> = questions.iter().copied().cycle().take(batch).collect();
        group.throughput(Throughput::Elements(batch as u64));
        group.bench_with_input(BenchmarkId::new("batch", batch), &texts, |b, texts| {
            b.iter(|| black_box(embedder.embed(texts).unwrap().len()))
        });
    }
    group.finish();
}

criterion_group!(benches, exact_hit, hnsw_search, embeddings);
criterion_main!(benches);
