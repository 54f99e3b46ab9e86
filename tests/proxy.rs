//! Proxying through a real `sluice serve` process to the in-process mock
//! model server: plain answers, streams, keep-alive, cancellation, the
//! forwarded request, and upstream failures.

mod common;

use common::*;
use serde_json::{json, Value};
use std::time::Duration;

fn setup() -> (Mock, Gateway) {
    let mock = Mock::start();
    let gw = Gateway::start(&Config::single(&mock.url()));
    (mock, gw)
}

fn assert_proxied_headers(resp: &Response) {
    assert_eq!(
        resp.header("x-sluice-upstream"),
        Some(UPSTREAM),
        "x-sluice-upstream in {:?}",
        resp.headers
    );
    assert!(
        resp.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "content-type in {:?}",
        resp.headers
    );
}

fn assert_generated_request_id(id: Option<&str>) -> String {
    let id = id.expect("a generated x-request-id header");
    assert!(
        !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()),
        "generated x-request-id {id:?} is not a sane token"
    );
    id.to_string()
}

// ---------------------------------------------------------------- 1. plain answers

#[test]
fn chat_completion_plain_answer_and_request_ids() {
    let (_mock, gw) = setup();
    let resp = gw.request(&chat("m1", false, &[("x-request-id", "req-abc-123")]));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_proxied_headers(&resp);
    assert_eq!(resp.header("x-request-id"), Some("req-abc-123"));
    let v = resp.json();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "m1");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["choices"][0]["message"]["content"], MOCK_CONTENT);
    assert!(
        v["usage"]["total_tokens"].as_u64().is_some_and(|t| t > 0),
        "{v}"
    );

    // Without one, sluice makes a request id, different per request.
    let a = gw.request(&chat("m1", false, &[]));
    let b = gw.request(&chat("m1", false, &[]));
    assert_eq!(a.status, 200);
    assert_eq!(b.status, 200);
    let ida = assert_generated_request_id(a.header("x-request-id"));
    let idb = assert_generated_request_id(b.header("x-request-id"));
    assert_ne!(ida, idb, "two requests got the same generated x-request-id");
    assert_ne!(
        ida, "mock",
        "the upstream's x-request-id leaked to the client"
    );
}

#[test]
fn completion_plain_answer() {
    let (_mock, gw) = setup();
    let resp = gw.request(&post(
        "/v1/completions",
        completion_body("m1", false).as_bytes(),
        &[("x-request-id", "cmpl-7")],
    ));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_proxied_headers(&resp);
    assert_eq!(resp.header("x-request-id"), Some("cmpl-7"));
    let v = resp.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"], MOCK_CONTENT);
}

#[test]
fn embeddings_plain_answer() {
    let (_mock, gw) = setup();
    let body = json!({"model": "embed-small", "input": ["alpha", "beta"]}).to_string();
    let resp = gw.request(&post("/v1/embeddings", body.as_bytes(), &[]));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_proxied_headers(&resp);
    assert_generated_request_id(resp.header("x-request-id"));
    let v = resp.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["model"], "embed-small");
    let data = v["data"].as_array().expect("data array");
    assert_eq!(data.len(), 2);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding");
        assert_eq!(d["index"], i);
        assert_eq!(d["embedding"].as_array().map(Vec::len), Some(8));
    }
}

#[test]
fn request_id_is_forwarded_upstream() {
    let (_mock, gw) = setup();
    let resp = gw.request(&chat(
        "m1",
        false,
        &[("x-mock-mode", "echo"), ("x-request-id", "trace-42")],
    ));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let v = resp.json();
    let headers = &v["echo"]["headers"];
    assert_eq!(
        headers["x-request-id"], "trace-42",
        "echoed headers {headers}"
    );
    assert_eq!(v["echo"]["method"], "POST");
    assert_eq!(v["echo"]["path"], "/v1/chat/completions");
}

// ---------------------------------------------------------------- 2. streams

fn check_stream(gw: &Gateway, path: &str, body: &str, is_chat: bool) {
    let mut conn = gw.connect();
    conn.send(&post(
        path,
        body.as_bytes(),
        &[("x-mock-chunks", "5"), ("x-request-id", "s-1")],
    ));
    let (head, events) = read_sse(&mut conn);
    assert_eq!(head.status, 200);
    assert!(
        head.header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")),
        "content-type in {:?}",
        head.headers
    );
    assert!(
        head.is_chunked(),
        "a stream must be chunked: {:?}",
        head.headers
    );
    assert_eq!(
        head.header_count("transfer-encoding"),
        1,
        "{:?}",
        head.headers
    );
    assert!(
        head.header("content-length").is_none(),
        "{:?}",
        head.headers
    );
    assert_eq!(head.header("x-sluice-upstream"), Some(UPSTREAM));
    assert_eq!(head.header("x-request-id"), Some("s-1"));
    assert_eq!(events.len(), 6, "5 events and [DONE], got {events:#?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let mut text = String::new();
    for (i, e) in events[..5].iter().enumerate() {
        let v: Value =
            serde_json::from_str(e).unwrap_or_else(|err| panic!("event {i} {e:?}: {err}"));
        let choice = &v["choices"][0];
        if is_chat {
            assert_eq!(v["object"], "chat.completion.chunk");
            text.push_str(choice["delta"]["content"].as_str().unwrap_or_default());
        } else {
            assert_eq!(v["object"], "text_completion");
            text.push_str(choice["text"].as_str().unwrap_or_default());
        }
        let finish = if i == 4 { json!("stop") } else { Value::Null };
        assert_eq!(
            choice["finish_reason"], finish,
            "event {i} out of order: {e}"
        );
    }
    assert_eq!(text, MOCK_CONTENT, "the pieces, in order, make the content");
    // The chunked body ended cleanly, so the connection carries another request.
    conn.send(&chat("m1", false, &[]));
    let again = conn.read_response();
    assert_eq!(
        again.status,
        200,
        "request after a stream: {}",
        again.text()
    );
}

#[test]
fn chat_completion_stream() {
    let (_mock, gw) = setup();
    check_stream(&gw, "/v1/chat/completions", &chat_body("m1", true), true);
}

#[test]
fn completion_stream() {
    let (_mock, gw) = setup();
    check_stream(&gw, "/v1/completions", &completion_body("m1", true), false);
}

// ---------------------------------------------------------------- 3. events are relayed as they arrive

#[test]
fn first_event_reaches_client_while_upstream_still_sends() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    conn.send(&chat(
        "m1",
        true,
        &[("x-mock-chunks", "5"), ("x-mock-delay-ms", "300")],
    ));
    let (head, mut events) = conn.sse();
    assert_eq!(head.status, 200);
    let first = events.next_event().expect("a first event");
    assert_ne!(first, "[DONE]");
    assert_eq!(
        mock.streams_completed(),
        0,
        "the first event only reached the client after the upstream had finished: the stream was buffered"
    );
    assert_eq!(mock.streams_started(), 1);
    let rest = events.rest();
    assert_eq!(rest.len(), 5, "4 more events and [DONE]: {rest:#?}");
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    wait_until("the mock's stream completed", POLL_TIMEOUT, || {
        mock.streams_completed() == 1
    });
}

// ---------------------------------------------------------------- 4. keep-alive on both sides

#[test]
fn keep_alive_reused_on_both_sides() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    for i in 0..5 {
        let resp = conn.request(&chat("m1", false, &[]));
        assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        assert!(resp
            .header("connection")
            .is_none_or(|c| !c.eq_ignore_ascii_case("close")));
    }
    assert_eq!(mock.requests(), 5);
    assert_eq!(
        mock.connections(),
        1,
        "sluice opened more than one upstream connection for 5 sequential requests"
    );
}

#[test]
fn keep_alive_reused_across_streams_and_plain_answers() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    for i in 0..5 {
        if i % 2 == 1 {
            conn.send(&chat("m1", true, &[("x-mock-chunks", "3")]));
            let (head, events) = read_sse(&mut conn);
            assert_eq!(head.status, 200, "request {i}");
            assert_eq!(
                events.last().map(String::as_str),
                Some("[DONE]"),
                "request {i}"
            );
        } else {
            let resp = conn.request(&chat("m1", false, &[]));
            assert_eq!(resp.status, 200, "request {i}: {}", resp.text());
        }
    }
    assert_eq!(mock.requests(), 5);
    assert_eq!(
        mock.connections(),
        1,
        "upstream connection not reused after a stream"
    );
}

// ---------------------------------------------------------------- 5. client disconnects cancel the upstream

#[test]
fn client_disconnect_mid_stream_cancels_upstream() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    conn.send(&chat(
        "m1",
        true,
        &[("x-mock-chunks", "20"), ("x-mock-delay-ms", "200")],
    ));
    {
        let (head, mut events) = conn.sse();
        assert_eq!(head.status, 200);
        assert!(events.next_event().is_some());
    }
    drop(conn);
    wait_until("the mock saw its stream cancelled", POLL_TIMEOUT, || {
        mock.streams_cancelled() == 1
    });
    assert_eq!(mock.streams_completed(), 0);
    gw.wait_metric(
        "sluice_client_disconnects_total",
        &[("stage", "streaming")],
        1.0,
    );
    gw.wait_metric(
        "sluice_upstream_requests_total",
        &[("upstream", UPSTREAM), ("outcome", "client_cancelled")],
        1.0,
    );
}

#[test]
fn client_disconnect_before_upstream_answers_cancels_upstream() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    conn.send(&chat("m1", false, &[("x-mock-mode", "hang")]));
    wait_until("the request reached the mock", POLL_TIMEOUT, || {
        mock.requests() == 1
    });
    drop(conn);
    gw.wait_metric(
        "sluice_upstream_requests_total",
        &[("upstream", UPSTREAM), ("outcome", "client_cancelled")],
        1.0,
    );
    gw.wait_metric(
        "sluice_client_disconnects_total",
        &[("stage", "waiting_for_upstream")],
        1.0,
    );
    // The gateway still serves.
    let resp = gw.request(&chat("m1", false, &[]));
    assert_eq!(resp.status, 200);
}

// ---------------------------------------------------------------- 6. what the upstream receives

/// A body with unusual spacing and a nested "model" key, to catch any
/// re-serialisation.
const ODD_BODY: &str = "{ \"messages\" : [ {\"role\":\"user\", \"content\":\"say \\\"m-rewrite\\\" \\u00e9 \\n\", \"model\": \"inner\"} ],\n  \"model\"  :\t\"MODEL\" , \"temperature\":0.50, \"extra\": {\"model\":\"MODEL\"}, \"n\":1 }";

fn echo(gw: &Gateway, path: &str, body: &str, headers: &[(&str, &str)]) -> Value {
    let mut h = vec![("x-mock-mode", "echo")];
    h.extend_from_slice(headers);
    let resp = gw.request(&post(path, body.as_bytes(), &h));
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()["echo"].clone()
}

#[test]
fn upstream_model_is_rewritten_and_nothing_else_changes() {
    let (_mock, gw) = setup();
    let sent = ODD_BODY.replace("MODEL", "m-rewrite");
    let echoed = echo(&gw, "/v1/chat/completions", &sent, &[]);
    // Only the top-level model value changes.
    let expected = ODD_BODY
        .replacen("MODEL", "org/Real-Model", 1)
        .replace("MODEL", "m-rewrite");
    assert_eq!(echoed["body"].as_str(), Some(expected.as_str()));
    assert_eq!(
        echoed["headers"]["content-length"].as_str(),
        Some(expected.len().to_string().as_str())
    );
}

#[test]
fn body_without_upstream_model_is_forwarded_byte_identical() {
    let (_mock, gw) = setup();
    let sent = ODD_BODY.replace("MODEL", "m1");
    let echoed = echo(&gw, "/v1/chat/completions", &sent, &[]);
    assert_eq!(echoed["body"].as_str(), Some(sent.as_str()));
    let sent = json!({"model": "embed-small", "input": "x"}).to_string();
    let echoed = echo(&gw, "/v1/embeddings", &sent, &[]);
    assert_eq!(echoed["body"].as_str(), Some(sent.as_str()));
    assert_eq!(echoed["path"], "/v1/embeddings");
}

#[test]
fn upstream_model_rewrite_applies_to_escaped_model_key() {
    // `"mod\u0065l"` is the key "model" to any JSON parser: sluice routes
    // on it, so it must also rewrite it.
    let (_mock, gw) = setup();
    let sent = r#"{"mod\u0065l":"m-rewrite","messages":[]}"#;
    let echoed = echo(&gw, "/v1/chat/completions", sent, &[]);
    let body = echoed["body"].as_str().unwrap_or_default();
    let forwarded: Value = serde_json::from_str(body).expect("forwarded body is JSON");
    assert_eq!(
        forwarded["model"], "org/Real-Model",
        "the upstream got the client's alias instead of upstream_model: {body}"
    );
}

#[test]
fn client_credentials_never_reach_the_upstream() {
    let (_mock, gw) = setup();
    let echoed = echo(
        &gw,
        "/v1/chat/completions",
        &chat_body("m1", false),
        &[
            ("authorization", "Bearer sk-client-secret"),
            ("x-api-key", "sk-client-secret-2"),
            ("x-custom-thing", "kept"),
        ],
    );
    let headers = echoed["headers"].as_object().expect("echoed headers");
    assert!(
        !headers.contains_key("authorization"),
        "client Authorization forwarded: {headers:?}"
    );
    assert!(
        !headers.contains_key("x-api-key"),
        "client x-api-key forwarded: {headers:?}"
    );
    let all = serde_json::to_string(headers).unwrap();
    assert!(
        !all.contains("sk-client-secret"),
        "a client secret reached the upstream: {all}"
    );
    assert_eq!(
        headers.get("x-custom-thing").and_then(Value::as_str),
        Some("kept")
    );
}

#[test]
fn api_key_env_is_sent_upstream_instead_of_the_clients_key() {
    let mock = Mock::start();
    let cfg = Config::single(&mock.url())
        .upstream_opt(UPSTREAM, "api_key_env", "\"SLUICE_IT_UPSTREAM_KEY\"")
        .env("SLUICE_IT_UPSTREAM_KEY", "up-secret-123");
    let gw = Gateway::start(&cfg);
    let echoed = echo(
        &gw,
        "/v1/chat/completions",
        &chat_body("m1", false),
        &[("authorization", "Bearer sk-client-secret")],
    );
    assert_eq!(
        echoed["headers"]["authorization"], "Bearer up-secret-123",
        "{echoed}"
    );
    let all = echoed["headers"].to_string();
    assert!(!all.contains("sk-client-secret"), "{all}");
}

#[test]
fn chunked_request_body_is_forwarded_dechunked() {
    let (_mock, gw) = setup();
    let body = chat_body("m1", false);
    let (a, b) = body.split_at(body.len() / 2);
    let mut raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nx-mock-mode: echo\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for part in [a, b] {
        raw.extend_from_slice(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes());
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let resp = gw.request(&raw);
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echoed = &resp.json()["echo"];
    assert_eq!(echoed["body"].as_str(), Some(body.as_str()));
    assert!(
        echoed["headers"].get("transfer-encoding").is_none(),
        "{echoed}"
    );
}

#[test]
fn expect_continue_gets_100_then_the_answer() {
    let (_mock, gw) = setup();
    let body = chat_body("m1", false);
    let mut conn = gw.connect();
    conn.send(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    let interim = conn.read_head();
    assert_eq!(interim.status, 100);
    conn.send(body.as_bytes());
    let resp = conn.read_response();
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn usage_is_counted_for_plain_and_streamed_answers() {
    let (_mock, gw) = setup();
    let resp = gw.request(&chat("m1", false, &[]));
    assert_eq!(resp.status, 200);
    let usage = &resp.json()["usage"];
    let input = usage["prompt_tokens"].as_f64().unwrap();
    let output = usage["completion_tokens"].as_f64().unwrap();
    gw.wait_metric(
        "sluice_gen_ai_tokens_total",
        &[("model", "m1"), ("type", "input")],
        input,
    );
    gw.wait_metric(
        "sluice_gen_ai_tokens_total",
        &[("model", "m1"), ("type", "output")],
        output,
    );

    let body = json!({"model": "m1", "messages": [], "stream": true, "stream_options": {"include_usage": true}}).to_string();
    let mut conn = gw.connect();
    conn.send(&post(
        "/v1/chat/completions",
        body.as_bytes(),
        &[("x-mock-chunks", "2")],
    ));
    let (_, events) = read_sse(&mut conn);
    assert_eq!(events.len(), 4, "2 events, usage, [DONE]: {events:#?}");
    let usage: Value = serde_json::from_str(&events[2]).unwrap();
    let out2 = usage["usage"]["completion_tokens"]
        .as_f64()
        .expect("usage event");
    gw.wait_metric(
        "sluice_gen_ai_tokens_total",
        &[("model", "m1"), ("type", "output")],
        output + out2,
    );
    gw.wait_metric(
        "sluice_requests_total",
        &[("model", "m1"), ("status", "200")],
        2.0,
    );
}

// ---------------------------------------------------------------- 7. upstream failures

#[test]
fn upstream_connect_refused_is_502_upstream_unavailable() {
    let closed = free_port();
    let cfg = Config::single(&format!("http://127.0.0.1:{closed}"));
    let gw = Gateway::start(&cfg);
    let mut conn = gw.connect();
    let resp = conn.request(&chat("m1", false, &[("x-request-id", "r-502")]));
    let err = assert_openai_error(&resp, 502, "api_error", "upstream_unavailable");
    assert_eq!(resp.header("x-request-id"), Some("r-502"));
    assert!(err["message"].as_str().unwrap().contains(UPSTREAM), "{err}");
    // A stream request fails the same way, before any 200.
    let resp = conn.request(&chat("m1", true, &[]));
    assert_openai_error(&resp, 502, "api_error", "upstream_unavailable");
    gw.wait_metric(
        "sluice_upstream_requests_total",
        &[("upstream", UPSTREAM), ("outcome", "connect_error")],
        2.0,
    );
}

#[test]
fn upstream_hang_past_first_byte_timeout_is_504() {
    let mock = Mock::start();
    let cfg = Config::single(&mock.url()).upstream_opt(UPSTREAM, "first_byte_timeout_ms", "300");
    let gw = Gateway::start(&cfg);
    let mut conn = gw.connect();
    let resp = conn.request(&chat("m1", false, &[("x-mock-mode", "hang")]));
    assert_openai_error(&resp, 504, "api_error", "upstream_timeout");
    // The client connection is still usable, on a fresh upstream connection.
    let resp = conn.request(&chat("m1", false, &[]));
    assert_eq!(resp.status, 200, "{}", resp.text());
    gw.wait_metric(
        "sluice_upstream_requests_total",
        &[("outcome", "first_byte_timeout")],
        1.0,
    );
}

#[test]
fn plain_answer_past_total_timeout_is_504() {
    let mock = Mock::start();
    let cfg = Config::single(&mock.url())
        .upstream_opt(UPSTREAM, "total_timeout_ms", "500")
        .upstream_opt(UPSTREAM, "first_byte_timeout_ms", "10000");
    let gw = Gateway::start(&cfg);
    let resp = gw.request(&chat("m1", false, &[("x-mock-first-delay-ms", "2000")]));
    assert_openai_error(&resp, 504, "api_error", "upstream_timeout");
}

#[test]
fn stream_whose_first_event_is_late_is_504_json_not_200() {
    let mock = Mock::start();
    let cfg = Config::single(&mock.url()).upstream_opt(UPSTREAM, "first_byte_timeout_ms", "300");
    let gw = Gateway::start(&cfg);
    let mut conn = gw.connect();
    let resp = conn.request(&chat("m1", true, &[("x-mock-first-delay-ms", "2000")]));
    assert_openai_error(&resp, 504, "api_error", "upstream_timeout");
    assert!(
        resp.header("content-length").is_some(),
        "{:?}",
        resp.headers
    );
    let resp = conn.request(&chat("m1", false, &[]));
    assert_eq!(resp.status, 200, "request after a 504: {}", resp.text());
}

#[test]
fn upstream_error_statuses_are_passed_on() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    for status in ["429", "500", "503"] {
        let resp = conn.request(&chat(
            "m1",
            false,
            &[
                ("x-mock-mode", "error"),
                ("x-mock-status", status),
                ("x-request-id", "e-1"),
            ],
        ));
        assert_eq!(resp.status.to_string(), status, "{}", resp.text());
        assert_eq!(resp.header("x-sluice-upstream"), Some(UPSTREAM));
        assert_eq!(resp.header("x-request-id"), Some("e-1"));
        let v = resp.json();
        assert_eq!(
            v["error"]["message"],
            format!("mock upstream error {status}"),
            "the mock's body was not passed on: {v}"
        );
        assert_eq!(v["error"]["code"], status);
    }
    // Streams get the upstream's error status too.
    let resp = conn.request(&chat(
        "m1",
        true,
        &[("x-mock-mode", "error"), ("x-mock-status", "429")],
    ));
    assert_eq!(resp.status, 429, "{}", resp.text());
    let resp = conn.request(&chat("m1", false, &[]));
    assert_eq!(resp.status, 200);
    assert_eq!(
        mock.connections(),
        1,
        "error answers should not cost the upstream connection"
    );
    gw.wait_metric(
        "sluice_upstream_requests_total",
        &[("outcome", "rate_limited")],
        2.0,
    );
    gw.wait_metric(
        "sluice_upstream_requests_total",
        &[("outcome", "server_error")],
        2.0,
    );
}

#[test]
fn upstream_reset_before_answer_is_502() {
    let (_mock, gw) = setup();
    let resp = gw.request(&chat("m1", false, &[("x-mock-mode", "reset")]));
    assert_openai_error(&resp, 502, "api_error", "bad_upstream_response");
    let resp = gw.request(&chat("m1", false, &[]));
    assert_eq!(resp.status, 200);
}

#[test]
fn upstream_reset_mid_stream_ends_with_an_error_event() {
    let (_mock, gw) = setup();
    let mut conn = gw.connect();
    conn.send(&chat(
        "m1",
        true,
        &[
            ("x-mock-chunks", "5"),
            ("x-mock-delay-ms", "100"),
            ("x-mock-reset-after", "2"),
        ],
    ));
    let (head, mut reader) = conn.sse();
    assert_eq!(head.status, 200);
    let events = reader.rest(); // also checks the chunked body ends cleanly
    assert_eq!(events.len(), 3, "2 events and an error event: {events:#?}");
    for e in &events[..2] {
        let v: Value = serde_json::from_str(e).unwrap();
        assert_eq!(v["object"], "chat.completion.chunk", "{e}");
    }
    let err: Value = serde_json::from_str(&events[2]).expect("the last event is JSON");
    let err = &err["error"];
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{err}"
    );
    assert_eq!(err["type"], "api_error", "{err}");
    assert_eq!(err["code"], "bad_upstream_response", "{err}");
    assert!(
        !events.iter().any(|e| e == "[DONE]"),
        "no [DONE] after a failure"
    );
    // The connection is then closed.
    let extra = conn.read_until_closed(Duration::from_secs(5));
    assert!(
        extra.is_empty(),
        "bytes after the end of the stream: {:?}",
        String::from_utf8_lossy(&extra)
    );
}

// ---------------------------------------------------------------- more framing and forwarding

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    let mut raw = chat("m1", false, &[("x-request-id", "p-1")]);
    raw.extend_from_slice(&post(
        "/v1/completions",
        completion_body("m1", false).as_bytes(),
        &[("x-request-id", "p-2")],
    ));
    raw.extend_from_slice(&get("/v1/models", &[("x-request-id", "p-3")]));
    conn.send(&raw);
    let a = conn.read_response();
    let b = conn.read_response();
    let c = conn.read_response();
    assert_eq!(
        (a.status, a.header("x-request-id")),
        (200, Some("p-1")),
        "{}",
        a.text()
    );
    assert_eq!(a.json()["object"], "chat.completion");
    assert_eq!(
        (b.status, b.header("x-request-id")),
        (200, Some("p-2")),
        "{}",
        b.text()
    );
    assert_eq!(b.json()["object"], "text_completion");
    assert_eq!(
        (c.status, c.header("x-request-id")),
        (200, Some("p-3")),
        "{}",
        c.text()
    );
    assert_eq!(mock.requests(), 2);
}

#[test]
fn upstream_url_path_prefix_query_and_host_are_forwarded() {
    let mock = Mock::start();
    let cfg = Config::default()
        .upstream(UPSTREAM, &format!("{}/base/", mock.url()))
        .model("m1", None, &[UPSTREAM]);
    let gw = Gateway::start(&cfg);
    let resp = gw.request(&post(
        "/v1/chat/completions?api-version=2024",
        chat_body("m1", false).as_bytes(),
        &[("x-mock-mode", "echo")],
    ));
    assert_eq!(resp.status, 200, "{}", resp.text());
    let echoed = &resp.json()["echo"];
    assert_eq!(echoed["path"], "/base/v1/chat/completions?api-version=2024");
    assert_eq!(
        echoed["headers"]["host"].as_str(),
        Some(mock.addr.to_string().as_str())
    );
}

#[test]
fn large_request_body_is_forwarded_intact() {
    let (_mock, gw) = setup();
    let filler: String = (0..60_000)
        .map(|i| format!("{i:x}"))
        .collect::<Vec<_>>()
        .join(" ");
    let body =
        json!({"model": "m1", "messages": [{"role": "user", "content": filler}]}).to_string();
    assert!(body.len() > 200_000);
    let resp = gw.request(&post(
        "/v1/chat/completions",
        body.as_bytes(),
        &[("x-mock-mode", "echo")],
    ));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["echo"]["body"].as_str(), Some(body.as_str()));
}

#[test]
fn large_embeddings_answer_is_relayed_whole() {
    let (_mock, gw) = setup();
    let inputs: Vec<String> = (0..3000).map(|i| format!("text number {i}")).collect();
    let body = json!({"model": "embed-small", "input": inputs}).to_string();
    let resp = gw.request(&post("/v1/embeddings", body.as_bytes(), &[]));
    assert_eq!(resp.status, 200);
    assert!(resp.body.len() > 300_000, "{} bytes", resp.body.len());
    let v = resp.json();
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3000);
    assert_eq!(data[2999]["index"], 2999);
}

#[test]
fn fast_stream_of_many_events_arrives_complete_and_in_order() {
    let (_mock, gw) = setup();
    let words: Vec<String> = (0..300).map(|i| format!("w{i}")).collect();
    let content = words.join(" ");
    let mut conn = gw.connect();
    conn.send(&chat(
        "m1",
        true,
        &[("x-mock-chunks", "150"), ("x-mock-content", &content)],
    ));
    let (head, events) = read_sse(&mut conn);
    assert_eq!(head.status, 200);
    assert_eq!(events.len(), 151, "150 events and [DONE]");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let text: String = events[..150]
        .iter()
        .map(|e| {
            let v: Value = serde_json::from_str(e).unwrap();
            v["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    assert_eq!(text, content);
}

#[test]
fn unsafe_client_request_id_is_replaced() {
    let (_mock, gw) = setup();
    let long = "x".repeat(200);
    for bad in ["has space", long.as_str()] {
        let resp = gw.request(&chat("m1", false, &[("x-request-id", bad)]));
        assert_eq!(resp.status, 200);
        let id = resp.header("x-request-id").expect("x-request-id");
        assert_ne!(id, bad);
        assert_generated_request_id(Some(id));
    }
}

#[test]
fn connection_close_request_is_honoured() {
    let (_mock, gw) = setup();
    let mut conn = gw.connect();
    let resp = conn.request(&chat("m1", false, &[("connection", "close")]));
    assert_eq!(resp.status, 200);
    assert!(
        resp.header("connection")
            .is_some_and(|c| c.eq_ignore_ascii_case("close")),
        "{:?}",
        resp.headers
    );
    let rest = conn.read_until_closed(Duration::from_secs(5));
    assert!(rest.is_empty());
}

#[test]
fn http10_plain_answer_closes() {
    let (_mock, gw) = setup();
    let body = chat_body("m1", false);
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = gw.connect();
    let resp = conn.request(raw.as_bytes());
    assert_eq!(resp.status, 200);
    assert!(resp.header("content-length").is_some());
    assert!(resp
        .header("connection")
        .is_some_and(|c| c.eq_ignore_ascii_case("close")));
    assert!(conn.read_until_closed(Duration::from_secs(5)).is_empty());
}

#[test]
fn http10_stream_is_not_chunked() {
    // RFC 9112 6.1: a server MUST NOT send Transfer-Encoding in answer to
    // an HTTP/1.0 request; the body is delimited by the close instead.
    let (_mock, gw) = setup();
    let body = chat_body("m1", true);
    let raw = format!(
        "POST /v1/chat/completions HTTP/1.0\r\ncontent-type: application/json\r\nx-mock-chunks: 3\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut conn = gw.connect();
    conn.send(raw.as_bytes());
    let head = conn.read_head();
    assert_eq!(head.status, 200);
    assert!(
        head.header("transfer-encoding").is_none(),
        "chunked answer to an HTTP/1.0 client: {:?}",
        head.headers
    );
    let body = conn.read_until_closed(Duration::from_secs(5));
    let text = String::from_utf8_lossy(&body);
    assert!(text.starts_with("data: "), "{text:?}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text:?}");
}

#[test]
fn upstream_reset_on_reused_connection_is_502() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    assert_eq!(conn.request(&chat("m1", false, &[])).status, 200);
    let resp = conn.request(&chat("m1", false, &[("x-mock-mode", "reset")]));
    assert_openai_error(&resp, 502, "api_error", "bad_upstream_response");
    eprintln!(
        "note: the mock received {} copies of the reset request (sluice resends once on a fresh connection when a reused one fails)",
        mock.requests() - 1
    );
    let resp = conn.request(&chat("m1", false, &[]));
    assert_eq!(resp.status, 200);
}

#[test]
fn request_waits_for_a_connection_at_max_connections() {
    // max_connections = 1: a second request waits for the first to release
    // the connection (within connect_timeout), then reuses it.
    let mock = Mock::start();
    let cfg = Config::single(&mock.url())
        .upstream_opt(UPSTREAM, "max_connections", "1")
        .upstream_opt(UPSTREAM, "connect_timeout_ms", "3000");
    let gw = Gateway::start(&cfg);
    let mut first = gw.connect();
    first.send(&chat(
        "m1",
        true,
        &[("x-mock-chunks", "3"), ("x-mock-delay-ms", "150")],
    ));
    let mut second = gw.connect();
    {
        let (head, mut events) = first.sse();
        assert_eq!(head.status, 200);
        assert!(events.next_event().is_some());
        // The first stream holds the only connection: queue the second request.
        second.send(&chat("m1", false, &[]));
        let rest = events.rest();
        assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    }
    let resp = second.read_response();
    assert_eq!(
        resp.status,
        200,
        "the queued request did not get the released connection: {}",
        resp.text()
    );
    assert_eq!(mock.connections(), 1);
}

#[test]
fn round_robin_over_two_targets() {
    let a = Mock::start();
    let b = Mock::start();
    let cfg = Config::default()
        .upstream("up-a", &a.url())
        .upstream("up-b", &b.url())
        .model("m1", None, &["up-a", "up-b"]);
    let gw = Gateway::start(&cfg);
    let mut conn = gw.connect();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let resp = conn.request(&chat("m1", false, &[]));
        assert_eq!(resp.status, 200);
        seen.push(
            resp.header("x-sluice-upstream")
                .unwrap_or_default()
                .to_string(),
        );
    }
    assert_eq!(a.requests(), 2, "{seen:?}");
    assert_eq!(b.requests(), 2, "{seen:?}");
    assert_ne!(seen[0], seen[1], "{seen:?}");
    assert_eq!(seen[0], seen[2], "{seen:?}");
}

#[test]
fn upstream_url_with_host_name_localhost() {
    let mock = Mock::start();
    let cfg = Config::single(&format!("http://localhost:{}", mock.addr.port()));
    let gw = Gateway::start(&cfg);
    let resp = gw.request(&chat("m1", false, &[]));
    assert_eq!(resp.status, 200, "{}", resp.text());
}

#[test]
fn stream_past_total_timeout_ends_with_an_error_event() {
    let mock = Mock::start();
    let cfg = Config::single(&mock.url()).upstream_opt(UPSTREAM, "total_timeout_ms", "700");
    let gw = Gateway::start(&cfg);
    let mut conn = gw.connect();
    conn.send(&chat(
        "m1",
        true,
        &[("x-mock-chunks", "10"), ("x-mock-delay-ms", "300")],
    ));
    let (head, mut reader) = conn.sse();
    assert_eq!(head.status, 200);
    let events = reader.rest();
    assert!(events.len() >= 2, "{events:#?}");
    let last: Value = serde_json::from_str(events.last().unwrap()).expect("last event is JSON");
    assert_eq!(last["error"]["code"], "upstream_timeout", "{last}");
    assert_eq!(last["error"]["type"], "api_error", "{last}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
    wait_until("the mock saw its stream cancelled", POLL_TIMEOUT, || {
        mock.streams_cancelled() == 1
    });
}
