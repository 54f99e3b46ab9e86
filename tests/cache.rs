//! The response cache over real sockets: exact and semantic hits, the
//! verifier refusing near-misses, tenant isolation, the temperature and
//! bypass rules, streamed replay, TTL and eviction, a full embedding
//! queue, and persistence across a restart. The semantic tests use the
//! real all-MiniLM-L6-v2 model and ONNX Runtime (`make models`).

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

/// `[cache]` with the local embedder from var/models and `extra` lines.
fn semantic_section(extra: &str) -> String {
    let models = repo_path("var/models");
    assert!(
        models.join("all-minilm-l6-v2/model.onnx").exists(),
        "the embedding model is missing: run `make models`"
    );
    format!(
        "[cache]\n{extra}\n[cache.embedder]\nkind = \"local\"\nmodel_dir = {:?}\nonnxruntime = {:?}\n",
        models.join("all-minilm-l6-v2").display().to_string(),
        models.join("onnxruntime/libonnxruntime.so").display().to_string(),
    )
}

fn ask_body(question: &str, stream: bool, extra: Value) -> Vec<u8> {
    let mut body = json!({
        "model": "m1",
        "temperature": 0,
        "stream": stream,
        "messages": [{"role": "user", "content": question}],
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    body.to_string().into_bytes()
}

/// Asks a question (non-streamed) with the mock answering `answer`.
fn ask(gw: &Gateway, question: &str, answer: &str, headers: &[(&str, &str)]) -> Response {
    let mut all = vec![("x-mock-content", answer)];
    all.extend_from_slice(headers);
    gw.request(&post(
        "/v1/chat/completions",
        &ask_body(question, false, json!({})),
        &all,
    ))
}

fn content(resp: &Response) -> String {
    resp.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn cache_of(resp: &Response) -> &str {
    resp.header("x-sluice-cache").unwrap_or("none")
}

#[test]
fn exact_hits_are_answered_without_the_model_and_replayed_as_streams() {
    let mock = Mock::start();
    let gw = Gateway::start(&Config::single(&mock.url()).section("[cache]\nsemantic = false"));
    let first = ask(&gw, "Say hello", "Hello from the model", &[]);
    assert_eq!(first.status, 200);
    assert_eq!(cache_of(&first), "miss");
    assert_eq!(mock.requests(), 1);
    // The model would answer differently now; the cache answers as before.
    let second = ask(&gw, "Say hello", "a different answer", &[]);
    assert_eq!(second.status, 200, "{}", second.text());
    assert_eq!(cache_of(&second), "hit");
    assert_eq!(content(&second), "Hello from the model");
    assert_eq!(mock.requests(), 1, "a hit never reaches the model");
    assert_ne!(
        second.json()["id"],
        first.json()["id"],
        "a hit gets its own id"
    );
    assert_eq!(second.json()["usage"], first.json()["usage"]);
    assert!(second.header("x-sluice-upstream").is_none());
    // The same question as a stream (with usage asked for): SSE replay.
    let body = ask_body(
        "Say hello",
        true,
        json!({"stream_options": {"include_usage": true}}),
    );
    let mut conn = gw.connect();
    conn.send(&post("/v1/chat/completions", &body, &[]));
    let (head, mut events) = conn.sse();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("x-sluice-cache"), Some("hit"));
    assert_eq!(head.header("content-type"), Some("text/event-stream"));
    let mut text = String::new();
    let mut usage = None;
    let mut done = false;
    while let Some(data) = events.next_event() {
        if data == "[DONE]" {
            done = true;
            break;
        }
        let event: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(event["object"], "chat.completion.chunk");
        if let Some(piece) = event["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
        if !event["usage"].is_null() {
            usage = Some(event["usage"].clone());
        }
    }
    assert!(done, "the replay ends with [DONE]");
    assert_eq!(text, "Hello from the model");
    assert_eq!(usage, Some(first.json()["usage"].clone()));
    assert_eq!(mock.requests(), 1);
    assert_eq!(
        gw.metric("sluice_cache_requests_total", &[("result", "hit")]),
        Some(2.0)
    );
    let saved = gw
        .metric("sluice_cache_saved_tokens_total", &[])
        .unwrap_or(0.0);
    assert!(saved > 0.0, "saved tokens are counted");
}

#[test]
fn a_streamed_answer_is_cached_and_served_to_a_plain_request() {
    let mock = Mock::start();
    let gw = Gateway::start(&Config::single(&mock.url()).section("[cache]\nsemantic = false"));
    let body = ask_body("Count to five", true, json!({}));
    let mut conn = gw.connect();
    conn.send(&post(
        "/v1/chat/completions",
        &body,
        &[
            ("x-mock-content", "one two three four five"),
            ("x-mock-chunks", "3"),
        ],
    ));
    let (head, mut events) = conn.sse();
    assert_eq!(head.header("x-sluice-cache"), Some("miss"));
    let mut seen = 0;
    while let Some(data) = events.next_event() {
        seen += 1;
        if data == "[DONE]" {
            break;
        }
    }
    assert!(seen >= 3);
    drop(conn);
    let resp = ask(&gw, "Count to five", "something else", &[]);
    assert_eq!(cache_of(&resp), "hit", "{}", resp.text());
    assert_eq!(content(&resp), "one two three four five");
    assert_eq!(resp.json()["choices"][0]["finish_reason"], "stop");
    assert_eq!(mock.requests(), 1);
}

#[test]
fn temperature_bypass_header_and_failed_answers_are_never_cached() {
    let mock = Mock::start();
    let gw = Gateway::start(
        &Config::single(&mock.url()).section("[cache]\nsemantic = false\nmax_temperature = 0.2"),
    );
    // Sampled above max_temperature: never served from or kept in cache.
    let hot = ask_body("Write a poem", false, json!({"temperature": 0.9}));
    for _ in 0..2 {
        let resp = gw.request(&post("/v1/chat/completions", &hot, &[]));
        assert_eq!(resp.header("x-sluice-cache"), Some("bypass"));
    }
    // No temperature means the model's default (1.0): not cached either.
    let unset = json!({"model": "m1", "messages": [{"role": "user", "content": "Write a poem"}]});
    let resp = gw.request(&post(
        "/v1/chat/completions",
        unset.to_string().as_bytes(),
        &[],
    ));
    assert_eq!(resp.header("x-sluice-cache"), Some("bypass"));
    assert_eq!(mock.requests(), 3);
    // x-sluice-cache: bypass skips lookup and store.
    for _ in 0..2 {
        let resp = ask(&gw, "Say hi", "hi", &[("x-sluice-cache", "bypass")]);
        assert_eq!(cache_of(&resp), "bypass");
    }
    assert_eq!(mock.requests(), 5);
    assert_eq!(cache_of(&ask(&gw, "Say hi", "hi", &[])), "miss");
    assert_eq!(mock.requests(), 6);
    // An upstream error is not cached: the next request goes upstream.
    let failing = [("x-mock-mode", "error"), ("x-mock-status", "400")];
    let resp = ask(&gw, "Break", "x", &failing);
    assert_eq!(resp.status, 400);
    let resp = ask(&gw, "Break", "fixed now", &[]);
    assert_eq!((resp.status, cache_of(&resp)), (200, "miss"));
    assert_eq!(
        gw.metric("sluice_cache_requests_total", &[("result", "bypass")]),
        Some(5.0)
    );
}

#[test]
fn teams_never_see_each_others_answers_and_need_cache_on() {
    let mock = Mock::start();
    let key = |secret: &str| {
        hex::encode(ring::digest::digest(
            &ring::digest::SHA256,
            secret.as_bytes(),
        ))
    };
    let cfg = Config::single(&mock.url()).section(&format!(
        "[cache]\nsemantic = false\n\n[auth]\n\n\
         [[teams]]\nname = \"a\"\nallowed_models = [\"*\"]\ncache = true\n\n\
         [[teams]]\nname = \"b\"\nallowed_models = [\"*\"]\ncache = true\n\n\
         [[teams]]\nname = \"nocache\"\nallowed_models = [\"*\"]\n\n\
         [[keys]]\nid = \"ka\"\nteam = \"a\"\nsha256 = \"{}\"\n\n\
         [[keys]]\nid = \"ka2\"\nteam = \"a\"\nsha256 = \"{}\"\n\n\
         [[keys]]\nid = \"kb\"\nteam = \"b\"\nsha256 = \"{}\"\n\n\
         [[keys]]\nid = \"kn\"\nteam = \"nocache\"\nsha256 = \"{}\"\n",
        key("sk-a"),
        key("sk-a2"),
        key("sk-b"),
        key("sk-n")
    ));
    let gw = Gateway::start(&cfg);
    let bearer = |k: &str| format!("Bearer {k}");
    let a = ask(
        &gw,
        "Our secret plan?",
        "team a's answer",
        &[("authorization", &bearer("sk-a"))],
    );
    assert_eq!((a.status, cache_of(&a)), (200, "miss"), "{}", a.text());
    // Another key of the same team shares the team's cache.
    let a2 = ask(
        &gw,
        "Our secret plan?",
        "x",
        &[("authorization", &bearer("sk-a2"))],
    );
    assert_eq!(cache_of(&a2), "hit");
    // Team b asks the very same thing: it must not get team a's answer.
    let b = ask(
        &gw,
        "Our secret plan?",
        "team b's answer",
        &[("authorization", &bearer("sk-b"))],
    );
    assert_eq!(cache_of(&b), "miss");
    assert_eq!(content(&b), "team b's answer");
    // A team without `cache = true` bypasses.
    for _ in 0..2 {
        let n = ask(
            &gw,
            "Our secret plan?",
            "n",
            &[("authorization", &bearer("sk-n"))],
        );
        assert_eq!(cache_of(&n), "bypass");
    }
    assert_eq!(mock.requests(), 4);
}

#[test]
fn entries_expire_after_ttl_and_the_least_recently_used_go_first() {
    let mock = Mock::start();
    let gw = Gateway::start(
        &Config::single(&mock.url())
            .section("[cache]\nsemantic = false\nttl_s = 1\nmax_entries = 2"),
    );
    assert_eq!(cache_of(&ask(&gw, "q1", "a1", &[])), "miss");
    assert_eq!(cache_of(&ask(&gw, "q1", "a1", &[])), "hit");
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(cache_of(&ask(&gw, "q1", "a1", &[])), "miss", "expired");
    // Bound 2 (one shard per entry... two shards of one): q1 is pushed out
    // of its shard by later questions landing in it.
    let mut evicted = false;
    for i in 0..12 {
        ask(&gw, &format!("other question {i}"), "x", &[]);
        if cache_of(&ask(&gw, "q1", "a1", &[])) == "miss" {
            evicted = true;
            break;
        }
    }
    assert!(evicted, "q1 was never evicted by a full cache");
}

#[test]
fn a_bound_of_one_keeps_exactly_the_last_answer() {
    let mock = Mock::start();
    let gw = Gateway::start(
        &Config::single(&mock.url()).section("[cache]\nsemantic = false\nmax_entries = 1"),
    );
    assert_eq!(cache_of(&ask(&gw, "q1", "a1", &[])), "miss");
    assert_eq!(cache_of(&ask(&gw, "q2", "a2", &[])), "miss");
    assert_eq!(cache_of(&ask(&gw, "q2", "a2", &[])), "hit");
    assert_eq!(
        cache_of(&ask(&gw, "q1", "a1", &[])),
        "miss",
        "q1 was evicted"
    );
}

#[test]
fn paraphrases_hit_unrelated_questions_miss_and_near_misses_are_refused() {
    let mock = Mock::start();
    let gw = Gateway::start(&Config::single(&mock.url()).section(&semantic_section("")));
    let first = ask(
        &gw,
        "How do I reset my password?",
        "Settings, then Reset.",
        &[],
    );
    assert_eq!(cache_of(&first), "miss");
    wait_for_semantic_entries(&gw, 1);
    let para = ask(&gw, "How can I reset my password", "wrong", &[]);
    assert_eq!(cache_of(&para), "semantic-hit", "{}", para.text());
    assert_eq!(content(&para), "Settings, then Reset.");
    let similarity: f64 = para
        .header("x-sluice-cache-similarity")
        .and_then(|s| s.parse().ok())
        .expect("a semantic hit names its similarity");
    assert!((0.92..=1.0).contains(&similarity), "{similarity}");
    let unrelated = ask(&gw, "How do I bake sourdough bread?", "Flour.", &[]);
    assert_eq!(cache_of(&unrelated), "miss");
    // The first question, the probe of wait_for_semantic_entries, this one.
    assert_eq!(mock.requests(), 3);
    // Near-misses: similar enough for the embedder, refused by the verifier.
    let pairs = [
        ("Convert 5 km to miles", "Convert 5 miles to km"),
        (
            "Is the shop open on Saturday?",
            "Is the shop open on Sunday?",
        ),
        ("Rows where email IS NULL", "Rows where email IS NOT NULL"),
        (
            "What does git reset --soft do?",
            "What does git reset --hard do?",
        ),
        (
            "Sort the list in ascending order",
            "Sort the list in descending order",
        ),
    ];
    for (stored, _) in pairs {
        ask(&gw, stored, "first answer", &[]);
    }
    wait_for_semantic_entries(&gw, 7);
    for (stored, asked) in pairs {
        let resp = ask(&gw, asked, "its own answer", &[]);
        assert_eq!(
            cache_of(&resp),
            "miss",
            "{asked:?} must not get the answer to {stored:?}"
        );
        assert_eq!(content(&resp), "its own answer");
    }
    let rejected: f64 = gw
        .metrics()
        .lines()
        .filter(|l| l.starts_with("sluice_cache_verifier_rejections_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(rejected >= 1.0, "the verifier refused candidates");
}

#[test]
fn with_verify_off_a_near_miss_is_served_which_is_why_strict_is_the_default() {
    let mock = Mock::start();
    let gw = Gateway::start(
        &Config::single(&mock.url())
            .section(&semantic_section("verify = \"off\"\nsimilarity = 0.9")),
    );
    ask(&gw, "Convert 5 km to miles", "3.1 miles", &[]);
    wait_for_semantic_entries(&gw, 1);
    let resp = ask(&gw, "Convert 5 miles to km", "8 km", &[]);
    assert_eq!(cache_of(&resp), "semantic-hit", "{}", resp.text());
    assert_eq!(content(&resp), "3.1 miles", "the wrong answer, served");
}

#[test]
fn a_full_embedding_queue_means_no_semantic_lookup_not_waiting() {
    // The embedder is a model server that takes 1.5 s per call, so the
    // queue fills; requests beyond it go straight to the model.
    let slow = sluice::mock::spawn(
        "127.0.0.1:0".parse().unwrap(),
        sluice::mock::MockDefaults {
            first_delay_ms: 1500,
            ..Default::default()
        },
    )
    .expect("slow mock")
    .0;
    let mock = Mock::start();
    let cfg = Config::single(&mock.url())
        .upstream("slow-embedder", &format!("http://{slow}"))
        .model("embed-slow", None, &["slow-embedder"])
        .section("[cache]\n\n[cache.embedder]\nkind = \"upstream\"\nmodel = \"embed-slow\"\n");
    let gw = Gateway::start(&cfg);
    let total = 120;
    let mut conns: Vec<Conn> = (0..total)
        .map(|i| {
            let mut c = gw.connect();
            c.send(&post(
                "/v1/chat/completions",
                &ask_body(&format!("question number {i}"), false, json!({})),
                &[],
            ));
            c
        })
        .collect();
    for c in &mut conns {
        let resp = c.read_response();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("x-sluice-cache"), Some("miss"));
    }
    // More lookups than the queue holds: the rest were misses at once.
    let full = gw
        .metric("sluice_cache_embed_queue_full_total", &[("op", "lookup")])
        .unwrap_or(0.0);
    assert!(full >= 1.0, "some lookups found the queue full: {full}");
    assert_eq!(
        mock.requests(),
        total as u64,
        "every request was answered by the model"
    );
}

#[test]
fn the_cache_survives_a_restart_with_persist() {
    let mock = Mock::start();
    let dir = temp_path("cache-persist", "d");
    let section = semantic_section(&format!("persist = {:?}", dir.display().to_string()));
    let cfg = Config::single(&mock.url()).section(&section);
    let mut gw = Gateway::start(&cfg);
    assert_eq!(
        cache_of(&ask(&gw, "How do I reset my password?", "Settings.", &[])),
        "miss"
    );
    wait_for_semantic_entries(&gw, 1);
    gw.signal(libc::SIGTERM);
    assert!(gw
        .wait_exit(Duration::from_secs(20))
        .is_some_and(|s| s.success()));
    assert!(dir.join("exact.jsonl").exists() && dir.join("semantic.jsonl").exists());
    let gw = Gateway::start(&cfg);
    let exact = ask(&gw, "How do I reset my password?", "other", &[]);
    assert_eq!(cache_of(&exact), "hit");
    assert_eq!(content(&exact), "Settings.");
    // The restored entries were queued before any lookup.
    let para = ask(&gw, "How can I reset my password", "other", &[]);
    assert_eq!(cache_of(&para), "semantic-hit");
    // The first question and the probe; nothing since the restart.
    assert_eq!(mock.requests(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_refuses_bad_cache_settings() {
    let dir = temp_path("cache-config", "d");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("sluice.toml");
    for (section, wanted) in [
        ("[cache]\nsimilarity = 1.5", "cache.similarity"),
        ("[cache]\nsemantic = true", "cache.semantic"),
        ("[cache]\nttl_s = 0", "cache.ttl_s"),
        (
            "[cache]\n[cache.embedder]\nkind = \"local\"",
            "cache.embedder.model_dir",
        ),
        (
            "[cache]\n[cache.embedder]\nkind = \"upstream\"\nmodel = \"nope\"",
            "cache.embedder.model",
        ),
        ("[cache]\nverify = \"lenient\"", "lenient"),
    ] {
        let text = Config::single("http://127.0.0.1:9")
            .section(section)
            .render(
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            );
        std::fs::write(&file, text).unwrap();
        let (status, out, err) = run_sluice(&["check-config", file.to_str().unwrap()], &[]);
        assert!(!status.success(), "{section} was accepted: {out}");
        assert!(err.contains(wanted), "{section}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stores reach the index through the embedding thread, which handles
/// its queue in order: once `n` stores were queued, one more lookup (a
/// question never asked before) returns only after they are indexed.
fn wait_for_semantic_entries(gw: &Gateway, n: usize) {
    wait_until("semantic stores queued", Duration::from_secs(10), || {
        gw.metric("sluice_cache_stores_total", &[("kind", "semantic")])
            .unwrap_or(0.0)
            >= n as f64
    });
    // A lookup queued behind the stores returns after they are indexed.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let probe = ask_body(&format!("zz probe {nanos}"), false, json!({}));
    let _ = gw.request(&post(
        "/v1/chat/completions",
        &probe,
        &[("x-mock-content", "probe")],
    ));
}
