//! The PII/safety guard (issue 3). Goals:
//! - scanner throughput on 1 MiB of ordinary English prose without findings:
//!   at least 1 GiB/s per core;
//! - text dense with findings (one every ~200 bytes): measured, no goal;
//! - the added time of the request-side guard on a typical 4 KiB chat
//!   request with a few findings (mask): under 20 microseconds.
//!
//! Run: `cargo bench --bench guard -- --warm-up-time 1 --measurement-time 3`
//! (`GUARD_BENCH_PER_ENTITY=1` adds prose throughput per entity and of all
//! entity patterns in one database, the layout before the split;
//! `GUARD_BENCH_CPU=1` first prints the main figures in thread CPU time,
//! best of many runs, which a machine busy with other work disturbs less
//! than criterion's wall-clock times; `GUARD_BENCH_LAYOUT=1` prints each
//! entity pattern's prose throughput alone and in a growing database).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::config::{parse_str, snapshot::Snapshot};
use sluice::pipeline::guard::scanner::{Finding, Hits, Scanner, ScannerSpec};
use sluice::pipeline::guard::{Guard, GuardWorker};
use std::hint::black_box;

/// Every built-in entity.
const ALL: &[&str] = sluice::config::BUILTIN_PII_ENTITIES;

/// `loadtest/compare.sh`'s `[pii]` section: mask, every entity,
/// `scan_responses`, no `[safety]`.
const SMALL: &str = r#"
[server]
listen = "127.0.0.1:0"

[[upstreams]]
name = "a"
url = "http://127.0.0.1:1"

[[models]]
name = "bench-model"
targets = [{ upstream = "a" }]

[pii]
default_policy = "all"

[pii.policies.all]
action = "mask"
entities = ["email", "phone", "iban", "credit_card", "bsn", "ssn", "ipv4", "ipv6", "secret"]
scan_responses = true
"#;

/// The reference configuration's data-protection sections: SMALL's mask
/// over every built-in entity, with prompt-injection blocking and one deny
/// pattern.
fn full_config() -> String {
    format!(
        "{SMALL}\n[safety]\nprompt_injection = \"block\"\ndeny_patterns = [\"(?i)build (a|an) (bomb|explosive)\"]\n"
    )
}

/// The snapshot of `config` and a worker's guard state for it.
fn guard_snapshot(config: &str) -> (Snapshot, GuardWorker) {
    let cfg = parse_str(config, std::path::Path::new(".")).expect("config");
    let snapshot = Snapshot::build(&cfg, config).expect("snapshot");
    let gw = GuardWorker::new(snapshot.guard.as_deref());
    (snapshot, gw)
}

/// Ordinary prose: numbers, dates, times and prices, but nothing personal.
const SENTENCES: &[&str] = &[
    "The committee met on Tuesday to review the draft of the annual report.",
    "Most of the discussion concerned the budget for the coming year, which rose by 4 percent.",
    "She walked along the river until the path turned towards the old mill.",
    "In 1998 the library moved into a larger building near the station.",
    "He could not remember where he had left the keys, so he searched the kitchen twice.",
    "The recipe asks for two cups of flour, a pinch of salt and three eggs.",
    "Our team shipped the new release after a long week of testing and review.",
    "Rain is expected in the afternoon, with temperatures around 14 degrees.",
    "The museum opens at 10:30 and closes at 17:00 on weekdays.",
    "Few people noticed that the clock in the tower had stopped at a quarter past nine.",
    "Please read chapter 7 before the seminar and bring your notes.",
    "The bridge was built in the nineteenth century and restored after the war.",
    "A good summary keeps the main argument and leaves out the examples.",
    "They agreed to meet again in March, once the figures were final.",
    "The garden was full of roses, tulips and a single crooked apple tree.",
    "Tickets cost 12 euros for adults and half that for children under 12.",
    "Language models answer questions, write drafts and translate short texts.",
    "The train to the coast leaves every hour from platform 3.",
    "After the meeting, everyone went back to their desks without a word.",
    "The report concludes that the project can be finished by the end of the quarter.",
];

/// Findings for the dense text, one every ~200 bytes, in turn.
const DENSE: &[&str] = &[
    "anna.devries@example.org",
    "NL91 ABNA 0417 1643 00",
    "+31 20 123 4567",
    "4111 1111 1111 1111",
    "192.168.10.20",
    "06-12345678",
    "DE89370400440532013000",
    "j.smith@mail.example.com",
];

/// Deterministic pseudo-random sentence order (no two 1 KiB blocks alike).
fn prose(len: usize, mut rng: u64, mut extra: impl FnMut(&mut String)) -> String {
    let mut s = String::with_capacity(len + 256);
    while s.len() < len {
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(SENTENCES[(rng >> 33) as usize % SENTENCES.len()]);
        s.push(' ');
        extra(&mut s);
    }
    s.truncate(len);
    s
}

fn dense(len: usize) -> (String, usize) {
    let mut next = 200;
    let mut n = 0;
    let text = prose(len, 7, |s| {
        if s.len() >= next {
            s.push_str("Contact ");
            s.push_str(DENSE[n % DENSE.len()]);
            s.push_str(" today. ");
            n += 1;
            next = s.len() + 200;
        }
    });
    (text, n)
}

fn scanner(entities: &[&str], injection: bool, deny: &[String]) -> (Scanner, hyperscan::Scratch) {
    let entities: Vec<String> = entities.iter().map(|s| s.to_string()).collect();
    let s = Scanner::compile(&ScannerSpec {
        entities: &entities,
        custom: &[],
        injection,
        deny,
    })
    .expect("compile");
    let mut scratch = None;
    s.fit_scratch(&mut scratch).expect("scratch");
    (s, scratch.expect("scratch"))
}

/// All entity patterns of `entities` in one Hyperscan database, compiled
/// as the scanner did before it split them (docs/pii.md, "Database
/// layout"): the baseline of the split.
fn one_database(entities: &[&str]) -> (hyperscan::BlockDatabase, hyperscan::Scratch) {
    use hyperscan::prelude::*;
    use hyperscan::CompileFlags;
    let mut patterns = Vec::new();
    for name in entities {
        for bp in sluice::pipeline::guard::entities::builtin(name)
            .expect("built in")
            .patterns
        {
            let mut flags = CompileFlags::SOM_LEFTMOST;
            if bp.caseless {
                flags |= CompileFlags::CASELESS;
            }
            let mut p = Pattern::with_flags(bp.expression, flags).expect("pattern");
            p.id = Some(patterns.len());
            patterns.push(p);
        }
    }
    let db: BlockDatabase = Patterns(patterns).build().expect("compile");
    let scratch = db.alloc_scratch().expect("scratch");
    (db, scratch)
}

/// `GUARD_BENCH_LAYOUT=1`: where the one-database layout loses its speed
/// (docs/pii.md, "Database layout"), in thread CPU time on the prose: each
/// entity pattern alone, then a database growing by one pattern at a time
/// (in `BUILTINS` order), then the groups the scanner uses. Also prints
/// what Hyperscan compiled the database for (`hs_database_info`).
fn layout_summary(_: &mut Criterion) {
    use hyperscan::prelude::*;
    use hyperscan::CompileFlags;
    use sluice::pipeline::guard::entities::{Placement, BUILTINS};
    if std::env::var_os("GUARD_BENCH_LAYOUT").is_none() {
        return;
    }
    let text = prose(1 << 20, 1, |_| {});
    let all: Vec<(String, Pattern, Placement)> = BUILTINS
        .iter()
        .flat_map(|b| {
            b.patterns.iter().enumerate().map(move |(i, bp)| {
                let mut flags = CompileFlags::SOM_LEFTMOST;
                if bp.caseless {
                    flags |= CompileFlags::CASELESS;
                }
                let p = Pattern::with_flags(bp.expression, flags).expect("pattern");
                (format!("{}#{i}", b.name), p, bp.placement)
            })
        })
        .collect();
    let measure = |patterns: Vec<Pattern>| {
        let mut patterns = patterns;
        for (i, p) in patterns.iter_mut().enumerate() {
            p.id = Some(i);
        }
        let db: BlockDatabase = Patterns(patterns).build().expect("compile");
        let scratch = db.alloc_scratch().expect("scratch");
        let t = best_cpu(15, || {
            let _ = db.scan(text.as_bytes(), &scratch, |_, _, _, _| Matching::Continue);
        });
        (1.0 / t / 1024.0, db.info().unwrap_or_default())
    };
    eprintln!("prose 1 MiB, thread CPU time, GiB/s:");
    for (name, p, _) in &all {
        eprintln!("  alone   {name:14} {:6.2}", measure(vec![p.clone()]).0);
    }
    for k in 1..=all.len() {
        let set = all[..k].iter().map(|(_, p, _)| p.clone()).collect();
        eprintln!("  growing +{:13} {:6.2}", all[k - 1].0, measure(set).0);
    }
    for placement in [Placement::Anchored, Placement::Numeric] {
        let set = all
            .iter()
            .filter(|(_, _, pl)| *pl == placement)
            .map(|(_, p, _)| p.clone())
            .collect();
        eprintln!(
            "  {placement:?} patterns in one database, whole text: {:6.2}",
            measure(set).0
        );
    }
    let (speed, info) = measure(all.iter().map(|(_, p, _)| p.clone()).collect());
    eprintln!("  all in one database: {speed:6.2} ({info})");
}

/// Seconds of this thread's CPU time.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Best (smallest) CPU time of `runs` calls of `f`, in seconds.
fn best_cpu(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = cpu_seconds();
            f();
            cpu_seconds() - t
        })
        .fold(f64::MAX, f64::min)
}

/// `GUARD_BENCH_CPU=1`: the main figures in thread CPU time (not run by
/// default).
fn cpu_summary(_: &mut Criterion) {
    if std::env::var_os("GUARD_BENCH_CPU").is_none() {
        return;
    }
    const MIB: usize = 1 << 20;
    let text = prose(MIB, 1, |_| {});
    let (dense_text, _) = dense(MIB);
    let deny = ["(?i)build (a|an) (bomb|explosive)".to_string()];
    let mut hits = Hits::default();
    let mut out: Vec<Finding> = Vec::new();
    eprintln!("thread CPU time, best of runs:");
    let (db, scratch) = one_database(ALL);
    let one = best_cpu(40, || {
        let _ = db.scan(text.as_bytes(), &scratch, |_, _, _, _| {
            hyperscan::Matching::Continue
        });
    });
    eprintln!(
        "  prose 1 MiB, one database of all entity patterns: {:7.0} us = {:5.2} GiB/s",
        one * 1e6,
        1.0 / one / 1024.0
    );
    for (name, injection, deny) in [
        ("entities", false, &[][..]),
        ("entities+safety", true, &deny[..]),
    ] {
        let (s, scratch) = scanner(ALL, injection, deny);
        let p = best_cpu(40, || {
            s.findings(&scratch, black_box(text.as_bytes()), &mut hits, &mut out)
        });
        let d = best_cpu(10, || {
            s.findings(
                &scratch,
                black_box(dense_text.as_bytes()),
                &mut hits,
                &mut out,
            )
        });
        eprintln!(
            "  {name:15}: prose 1 MiB {:7.0} us = {:5.2} GiB/s; dense 1 MiB {:7.0} us = {:4.0} MiB/s",
            p * 1e6,
            1.0 / p / 1024.0,
            d * 1e6,
            1.0 / d
        );
    }
    let (snapshot, gw) = guard_snapshot(&full_config());
    let guard = snapshot.guard.as_deref().expect("guard configured");
    const N: usize = 5_000;
    for (name, with_findings) in [("chat_4KiB_3_findings", true), ("chat_4KiB_clean", false)] {
        let body = chat_request(with_findings);
        let t = best_cpu(9, || {
            for _ in 0..N {
                let i = guard
                    .inspect_request(&gw, None, black_box(&body))
                    .expect("allowed");
                black_box(i.body.map(|b| b.len()));
            }
        });
        eprintln!("  request/{name}: {:.2} us", t / N as f64 * 1e6);
    }
    let (small, gw) = guard_snapshot(SMALL);
    let snapshot_guard = small.guard.as_deref().expect("guard configured");
    let r = best_cpu(9, || {
        for _ in 0..N {
            small_request(snapshot_guard, &gw, false);
        }
    });
    let ra = best_cpu(9, || {
        for _ in 0..N {
            small_request(snapshot_guard, &gw, true);
        }
    });
    eprintln!(
        "  small/request_229B_1_finding: {:.0} ns; small/request_and_answer_283B: {:.0} ns",
        r / N as f64 * 1e9,
        ra / N as f64 * 1e9
    );
}

fn bench_scanner(c: &mut Criterion) {
    const MIB: usize = 1 << 20;
    let text = prose(MIB, 1, |_| {});
    let (dense_text, planted) = dense(MIB);
    let deny = ["(?i)build (a|an) (bomb|explosive)".to_string()];
    let mut hits = Hits::default();
    let mut out: Vec<Finding> = Vec::new();

    let mut g = c.benchmark_group("scan");
    g.throughput(Throughput::Bytes(MIB as u64));
    for (name, injection, deny) in [
        ("entities", false, &[][..]),
        ("entities+safety", true, &deny[..]),
    ] {
        let (s, scratch) = scanner(ALL, injection, deny);
        s.findings(&scratch, text.as_bytes(), &mut hits, &mut out);
        assert!(out.is_empty(), "the prose has findings: {:?}", &out[..]);
        assert!(!hits.deny && hits.injection == 0, "the prose hits safety");
        eprintln!(
            "prose ({name}): {} raw candidates, none valid",
            hits.candidates.len()
        );
        g.bench_function(format!("prose_1MiB/{name}"), |b| {
            b.iter(|| {
                s.findings(&scratch, black_box(text.as_bytes()), &mut hits, &mut out);
                black_box(out.len())
            })
        });
        s.findings(&scratch, dense_text.as_bytes(), &mut hits, &mut out);
        assert_eq!(out.len(), planted, "dense text: every planted value found");
        eprintln!(
            "dense ({name}): {} raw candidates, {planted} findings",
            hits.candidates.len()
        );
        g.bench_function(format!("dense_1MiB/{name}"), |b| {
            b.iter(|| {
                s.findings(
                    &scratch,
                    black_box(dense_text.as_bytes()),
                    &mut hits,
                    &mut out,
                );
                black_box(out.len())
            })
        });
    }
    g.finish();

    // Where the prose time goes: one entity per database. Off by default
    // (keeps `cargo bench` short): GUARD_BENCH_PER_ENTITY=1 turns it on.
    if std::env::var_os("GUARD_BENCH_PER_ENTITY").is_some() {
        let mut g = c.benchmark_group("scan_entity");
        g.throughput(Throughput::Bytes(MIB as u64));
        let (db, scratch) = one_database(ALL);
        g.bench_function("prose_1MiB/one_database", |b| {
            b.iter(|| {
                let _ = db.scan(black_box(text.as_bytes()), &scratch, |_, _, _, _| {
                    hyperscan::Matching::Continue
                });
            })
        });
        for entity in ALL {
            let (s, scratch) = scanner(&[entity], false, &[]);
            s.findings(&scratch, text.as_bytes(), &mut hits, &mut out);
            eprintln!("prose ({entity}): {} raw candidates", hits.candidates.len());
            g.bench_function(format!("prose_1MiB/{entity}"), |b| {
                b.iter(|| {
                    s.findings(&scratch, black_box(text.as_bytes()), &mut hits, &mut out);
                    black_box(out.len())
                })
            });
        }
        g.finish();
    }
}

/// A ~4 KiB chat request: a system prompt, a few turns, three findings
/// (an email, a phone number, an IBAN).
fn chat_request(with_findings: bool) -> Vec<u8> {
    let para = |seed: u64, len: usize| prose(len, seed, |_| {});
    let (email, phone, iban) = if with_findings {
        (
            "anna.devries@example.org",
            "+31 20 123 4567",
            "NL91 ABNA 0417 1643 00",
        )
    } else {
        ("the usual address", "the front desk", "the usual account")
    };
    let messages = serde_json::json!([
        {"role": "system", "content": format!("You are a helpful assistant for a travel agency. {}", para(11, 700))},
        {"role": "user", "content": format!("{} Please write to {email} when the booking is confirmed.", para(12, 800))},
        {"role": "assistant", "content": para(13, 900)},
        {"role": "user", "content": format!("{} You can also call me on {phone}.\nThe deposit comes from {iban}. {}", para(14, 600), para(15, 700))},
    ]);
    let body = serde_json::json!({
        "model": "llama-3.1-8b",
        "messages": messages,
        "temperature": 0.2,
        "max_tokens": 512,
    });
    serde_json::to_vec(&body).expect("json")
}

fn bench_request(c: &mut Criterion) {
    let (snapshot, gw) = guard_snapshot(&full_config());
    let guard = snapshot.guard.as_deref().expect("guard configured");
    let mut g = c.benchmark_group("request");
    for (name, with_findings) in [("chat_4KiB_3_findings", true), ("chat_4KiB_clean", false)] {
        let body = chat_request(with_findings);
        assert!(
            (3800..4400).contains(&body.len()),
            "body is {} bytes",
            body.len()
        );
        let inspection = guard.inspect_request(&gw, None, &body).expect("allowed");
        let masked = inspection.body.as_deref().map(String::from_utf8_lossy);
        if with_findings {
            let masked = masked.expect("masked body");
            for label in ["[EMAIL]", "[PHONE]", "[IBAN]"] {
                assert!(masked.contains(label), "{label} missing");
            }
        } else {
            assert!(masked.is_none(), "the clean body was rewritten");
        }
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let i = guard
                    .inspect_request(&gw, None, black_box(&body))
                    .expect("allowed");
                black_box(i.body.map(|b| b.len()))
            })
        });
    }
    g.finish();
}

/// compare.sh's request (229 bytes, one email) and the upstream's answer
/// (283 bytes).
const SMALL_BODY: &[u8] = br#"{"model":"bench-model","messages":[{"role":"user","content":"Tell anna@example.org, briefly, why a gateway placed in front of a language model should add as little latency as possible to each request it forwards upstream, ok?"}]}"#;
const SMALL_ANSWER: &[u8] = br#"{"id":"chatcmpl-nginx","object":"chat.completion","created":1700000000,"model":"bench-model","choices":[{"index":0,"message":{"role":"assistant","content":"Hello from the fixed upstream."},"finish_reason":"stop"}],"usage":{"prompt_tokens":12,"completion_tokens":7,"total_tokens":19}}"#;

/// The guard's share of one compare.sh request: the request side, and
/// with `answer` the answer filter too.
fn small_request(guard: &Guard, gw: &GuardWorker, answer: bool) {
    let i = guard
        .inspect_request(gw, None, black_box(SMALL_BODY))
        .expect("allowed");
    black_box(i.body.map(|b| b.len()));
    let filter = i.filter.expect("answers are scanned");
    if answer {
        let mut a = SMALL_ANSWER.to_vec();
        let mut filter = filter;
        filter.body(&mut a).expect("answer passes");
        black_box(a.len());
    }
}

/// What one small chat request costs the guard, request side and answer
/// side (the case of `loadtest/compare.sh`).
fn bench_small(c: &mut Criterion) {
    let (snapshot, gw) = guard_snapshot(SMALL);
    let guard = snapshot.guard.as_deref().expect("guard configured");
    let inspection = guard
        .inspect_request(&gw, None, SMALL_BODY)
        .expect("allowed");
    let masked = String::from_utf8(inspection.body.expect("masked")).expect("utf-8");
    assert!(masked.contains("Tell [EMAIL], briefly"), "{masked}");
    let mut answer = SMALL_ANSWER.to_vec();
    inspection
        .filter
        .expect("answers are scanned")
        .body(&mut answer)
        .expect("answer passes");
    assert_eq!(answer, SMALL_ANSWER);
    let mut g = c.benchmark_group("small");
    g.bench_function("request_229B_1_finding", |b| {
        b.iter(|| small_request(guard, &gw, false))
    });
    g.bench_function("request_and_answer_283B", |b| {
        b.iter(|| small_request(guard, &gw, true))
    });
    // The same answer streamed: 20 events of a few words each (one email
    // split over two events), fed one event at a time as they arrive.
    let events = small_stream();
    let mut out = Vec::new();
    small_stream_through(guard, &gw, &events, &mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.contains("[EMAIL]") && !text.contains("example.org"),
        "{text}"
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    g.bench_function("stream_20_events", |b| {
        b.iter(|| {
            out.clear();
            small_stream_through(guard, &gw, black_box(&events), &mut out);
            black_box(out.len())
        })
    });
    g.finish();
}

/// 20 chat-completion chunks and `[DONE]`, one SSE event each.
fn small_stream() -> Vec<Vec<u8>> {
    let words = [
        "Sure, ",
        "I ",
        "will ",
        "write ",
        "to ",
        "anna.de",
        "vries@example.org ",
        "today ",
        "and ",
        "keep ",
        "the ",
        "answer ",
        "short, ",
        "as ",
        "a ",
        "gateway ",
        "should ",
        "add ",
        "little ",
        "latency.",
    ];
    let mut events: Vec<Vec<u8>> = words
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let finish = if i + 1 == words.len() {
                "\"stop\""
            } else {
                "null"
            };
            format!(
                "data: {{\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-model\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{w}\"}},\"finish_reason\":{finish}}}]}}\n\n"
            )
            .into_bytes()
        })
        .collect();
    events.push(b"data: [DONE]\n\n".to_vec());
    events
}

/// The request side once, then the answer filter over `events`.
fn small_stream_through(guard: &Guard, gw: &GuardWorker, events: &[Vec<u8>], out: &mut Vec<u8>) {
    let i = guard
        .inspect_request(gw, None, black_box(SMALL_BODY))
        .expect("allowed");
    let mut filter = i.filter.expect("answers are scanned");
    for e in events {
        filter.events(e, out).expect("passes");
    }
    filter.finish(out).expect("passes");
}

criterion_group!(
    benches,
    layout_summary,
    cpu_summary,
    bench_scanner,
    bench_request,
    bench_small
);
criterion_main!(benches);
