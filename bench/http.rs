//! The core's per-request parsing work, without sockets: the request head
//! (httparse, framing checks), the body view (simd-json: model, stream,
//! user, tools), the top-level member walk used for `upstream_model`
//! splicing and `usage`, and SSE event splitting of a streamed answer.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use sluice::api::json::member_range;
use sluice::api::request::ParseScratch;
use sluice::config::snapshot::ModelRef;
use sluice::http::{head, sse};
use std::hint::black_box;

const HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway.internal\r\nUser-Agent: OpenAI/Python 1.55.0\r\nAccept: application/json\r\nContent-Type: application/json\r\nAuthorization: Bearer sk-support-bot-0001\r\nX-Request-Id: 4bf92f3577b34da6a3ce929d0e0e4736\r\nContent-Length: 229\r\n\r\n";

const BODY: &[u8] = br#"{"model":"llama-3.1-8b","messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the quarterly report in three short bullet points, please."}],"max_tokens":128,"temperature":0,"stream":false}"#;

const ANSWER: &[u8] = br#"{"id":"chatcmpl-1","object":"chat.completion","created":1700000000,"model":"meta-llama/Llama-3.1-8B-Instruct","choices":[{"index":0,"message":{"role":"assistant","content":"- Revenue grew 12%.\n- Costs fell.\n- Outlook stable."},"finish_reason":"stop"}],"usage":{"prompt_tokens":48,"completion_tokens":19,"total_tokens":67}}"#;

fn stream() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..64 {
        out.extend_from_slice(
            format!("data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"token {i} \"}}}}]}}\n\n").as_bytes(),
        );
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

fn bench(c: &mut Criterion) {
    c.bench_function("request_head/parse", |b| {
        b.iter(|| black_box(head::parse_request(black_box(HEAD)).unwrap()))
    });
    let mut scratch = ParseScratch::default();
    c.bench_function("request_body/view", |b| {
        b.iter(|| {
            black_box(
                scratch
                    .facts(black_box(BODY), |m| {
                        (m == "llama-3.1-8b").then_some(ModelRef::Model(0))
                    })
                    .unwrap(),
            )
        })
    });
    c.bench_function("json/model_member", |b| {
        b.iter(|| black_box(member_range(black_box(BODY), "model")))
    });
    c.bench_function("json/usage_member", |b| {
        b.iter(|| black_box(member_range(black_box(ANSWER), "usage")))
    });
    let events = stream();
    let mut group = c.benchmark_group("sse");
    group.throughput(Throughput::Bytes(events.len() as u64));
    group.bench_function("split_64_events", |b| {
        b.iter(|| black_box(sse::complete_events_len(black_box(&events))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
