//! Bad input from clients: each gets its status and an OpenAI error JSON,
//! is counted under its reason, and leaves the worker serving.

mod common;

use common::*;
use std::time::Duration;

const INVALID: &str = "invalid_request_error";
const CLIENT_ERRORS: &str = "sluice_client_errors_total";

fn setup() -> (Mock, Gateway) {
    let mock = Mock::start();
    let cfg = Config::single(&mock.url())
        .server("max_body_bytes", "1024")
        .server("header_timeout_ms", "300")
        .server("idle_timeout_ms", "300");
    let gw = Gateway::start(&cfg);
    (mock, gw)
}

/// A normal request on a new connection still works.
fn still_serves(gw: &Gateway) {
    let resp = gw.request(&chat("m1", false, &[]));
    assert_eq!(
        resp.status,
        200,
        "the gateway stopped serving: {}",
        resp.text()
    );
}

/// Sends `raw` on a new connection and checks the refusal, its counting
/// and that the gateway still serves. Returns the response.
fn refused(raw: &[u8], status: u16, code: &str, reason: &str) -> Response {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    conn.send(raw);
    let resp = conn.read_response();
    assert_openai_error(&resp, status, INVALID, code);
    assert!(resp.header("x-request-id").is_some(), "{:?}", resp.headers);
    gw.wait_metric(CLIENT_ERRORS, &[("reason", reason)], 1.0);
    still_serves(&gw);
    assert_eq!(
        mock.requests(),
        1,
        "only the follow-up request may reach the upstream"
    );
    resp
}

#[test]
fn malformed_json_is_400_invalid_json() {
    refused(
        &post(
            "/v1/chat/completions",
            b"{\"model\": \"m1\", \"messages\": [",
            &[],
        ),
        400,
        "invalid_json",
        "invalid_json",
    );
}

#[test]
fn empty_body_is_400_invalid_json() {
    refused(
        &post("/v1/chat/completions", b"", &[]),
        400,
        "invalid_json",
        "invalid_json",
    );
}

#[test]
fn missing_model_is_400() {
    let resp = refused(
        &post("/v1/chat/completions", br#"{"messages":[]}"#, &[]),
        400,
        "missing_required_parameter",
        "missing_field",
    );
    assert_eq!(resp.json()["error"]["param"], "model");
}

#[test]
fn unknown_model_is_404_model_not_found() {
    let resp = refused(
        &post(
            "/v1/chat/completions",
            br#"{"model":"no-such-model","messages":[]}"#,
            &[],
        ),
        404,
        "model_not_found",
        "model_not_found",
    );
    let err = &resp.json()["error"];
    assert_eq!(err["param"], "model");
    assert!(
        err["message"].as_str().unwrap().contains("no-such-model"),
        "{err}"
    );
}

#[test]
fn non_utf8_model_name_is_400() {
    let body = b"{\"model\":\"m\xff1\",\"messages\":[]}";
    refused(
        &post("/v1/chat/completions", body, &[]),
        400,
        "invalid_json",
        "invalid_json",
    );
}

#[test]
fn announced_body_over_max_body_bytes_is_413() {
    let body = vec![b' '; 2000];
    let resp = refused(
        &post("/v1/chat/completions", &body, &[]),
        413,
        "request_too_large",
        "body_too_large",
    );
    assert!(
        resp.header("connection").is_some_and(|c| c == "close"),
        "{:?}",
        resp.headers
    );
}

#[test]
fn chunked_body_growing_past_max_body_bytes_is_413() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n");
    let piece = format!("{{\"model\":\"m1\",\"x\":\"{}", "a".repeat(380));
    let chunk = format!("{:x}\r\n{piece}\r\n", piece.len());
    for _ in 0..3 {
        // 3 x 400 bytes > 1024; the gateway may answer before the last one.
        let _ = conn.send_lossy(chunk.as_bytes());
    }
    let resp = conn.read_response();
    assert_openai_error(&resp, 413, INVALID, "request_too_large");
    gw.wait_metric(CLIENT_ERRORS, &[("reason", "body_too_large")], 1.0);
    let rest = conn.read_until_closed(Duration::from_secs(5));
    assert!(
        rest.is_empty(),
        "bytes after the 413: {:?}",
        String::from_utf8_lossy(&rest)
    );
    still_serves(&gw);
    assert_eq!(mock.requests(), 1);
}

#[test]
fn slow_client_half_head_gets_408_then_close() {
    let (_mock, gw) = setup();
    let mut conn = gw.connect();
    conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-");
    let resp = conn.read_response();
    assert_openai_error(&resp, 408, INVALID, "request_timeout");
    let rest = conn.read_until_closed(Duration::from_secs(5));
    assert!(
        rest.is_empty(),
        "bytes after the 408: {:?}",
        String::from_utf8_lossy(&rest)
    );
    gw.wait_metric(CLIENT_ERRORS, &[("reason", "header_timeout")], 1.0);
    still_serves(&gw);
}

#[test]
fn header_flood_is_431() {
    let mut raw = String::from("GET /health HTTP/1.1\r\nhost: x\r\n");
    for i in 0..200 {
        raw.push_str(&format!("x-flood-{i}: v\r\n"));
    }
    raw.push_str("\r\n");
    refused(raw.as_bytes(), 431, "too_many_headers", "too_many_headers");
}

#[test]
fn invalid_content_length_is_400() {
    refused(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: abc\r\n\r\n{}",
        400,
        "invalid_content_length",
        "invalid_content_length",
    );
}

#[test]
fn content_length_and_transfer_encoding_is_400() {
    refused(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
        "ambiguous_length",
        "ambiguous_length",
    );
}

#[test]
fn wrong_method_is_405_with_allow() {
    let resp = refused(
        &get("/v1/chat/completions", &[]),
        405,
        "method_not_allowed",
        "method_not_allowed",
    );
    assert_eq!(resp.header("allow"), Some("POST"), "{:?}", resp.headers);
}

#[test]
fn wrong_method_on_get_endpoint_is_405_with_allow_get() {
    let resp = refused(
        &post("/v1/models", b"{}", &[]),
        405,
        "method_not_allowed",
        "method_not_allowed",
    );
    assert_eq!(resp.header("allow"), Some("GET"), "{:?}", resp.headers);
}

#[test]
fn unknown_path_is_404_unknown_url() {
    refused(
        &get("/v2/nothing-here", &[]),
        404,
        "unknown_url",
        "unknown_path",
    );
}

#[test]
fn client_disconnect_mid_body_is_counted_and_unanswered() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    let mut raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 500\r\n\r\n".to_vec();
    raw.extend_from_slice(&[b' '; 100]);
    conn.send(&raw);
    conn.shutdown_write();
    let answer = conn.read_until_closed(Duration::from_secs(5));
    assert!(
        answer.is_empty(),
        "a client that left mid-body was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    gw.wait_metric(
        "sluice_client_disconnects_total",
        &[("stage", "request_body")],
        1.0,
    );
    still_serves(&gw);
    assert_eq!(mock.requests(), 1);
}

#[test]
fn idle_keep_alive_connection_is_closed_silently() {
    let (_mock, gw) = setup();
    let mut conn = gw.connect();
    let resp = conn.request(&get("/health", &[]));
    assert_eq!(resp.status, 200);
    assert!(resp.header("connection").is_none(), "{:?}", resp.headers);
    // idle_timeout_ms = 300: the server closes and sends nothing.
    let bytes = conn.read_until_closed(Duration::from_secs(5));
    assert!(
        bytes.is_empty(),
        "the server sent bytes on an idle connection: {:?}",
        String::from_utf8_lossy(&bytes)
    );
    still_serves(&gw);
}

#[test]
fn json_errors_keep_the_connection_usable() {
    let (_mock, gw) = setup();
    let mut conn = gw.connect();
    let resp = conn.request(&post("/v1/chat/completions", b"{nope", &[]));
    assert_openai_error(&resp, 400, INVALID, "invalid_json");
    let resp = conn.request(&post("/v1/chat/completions", br#"{"model":"zzz"}"#, &[]));
    assert_openai_error(&resp, 404, INVALID, "model_not_found");
    let resp = conn.request(&get("/nowhere", &[]));
    assert_openai_error(&resp, 404, INVALID, "unknown_url");
    let resp = conn.request(&chat("m1", false, &[]));
    assert_eq!(resp.status, 200, "{}", resp.text());
    gw.wait_metric(
        "sluice_requests_total",
        &[("model", "none"), ("status", "400")],
        1.0,
    );
}

#[test]
fn body_of_exactly_max_body_bytes_is_accepted() {
    let (_mock, gw) = setup();
    let mut body = chat_body("m1", false).into_bytes();
    body.resize(1024, b' ');
    let resp = gw.request(&post("/v1/chat/completions", &body, &[]));
    assert_eq!(resp.status, 200, "{}", resp.text());
    body.push(b' ');
    let resp = gw.request(&post("/v1/chat/completions", &body, &[]));
    assert_openai_error(&resp, 413, INVALID, "request_too_large");
}

#[test]
fn invalid_chunked_encoding_is_400() {
    refused(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        400,
        "invalid_chunked_body",
        "invalid_chunk",
    );
}

#[test]
fn unsupported_transfer_encoding_is_501() {
    let (_mock, gw) = setup();
    let mut conn = gw.connect();
    conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ntransfer-encoding: gzip, chunked\r\n\r\n0\r\n\r\n");
    let resp = conn.read_response();
    assert_openai_error(&resp, 501, INVALID, "unsupported_transfer_encoding");
    still_serves(&gw);
}

#[test]
fn stalled_body_gets_408() {
    let (mock, gw) = setup();
    let mut conn = gw.connect();
    conn.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"model\":");
    let resp = conn.read_response();
    assert_openai_error(&resp, 408, INVALID, "request_timeout");
    assert!(conn.read_until_closed(Duration::from_secs(5)).is_empty());
    gw.wait_metric(CLIENT_ERRORS, &[("reason", "body_timeout")], 1.0);
    still_serves(&gw);
    assert_eq!(mock.requests(), 1);
}

#[test]
fn trickled_head_gets_408_by_header_timeout() {
    // Each byte arrives well within header_timeout of the previous one,
    // but the whole head takes far longer than header_timeout.
    let (_mock, gw) = setup();
    let mut conn = gw.connect();
    let mut writer = conn.stream.try_clone().unwrap();
    let trickler = std::thread::spawn(move || {
        use std::io::Write;
        for b in b"GET /health HTTP/1.1\r\nhost: x\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n" {
            if writer.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let resp = conn.read_response();
    assert_openai_error(&resp, 408, INVALID, "request_timeout");
    let _ = trickler.join();
    gw.wait_metric(CLIENT_ERRORS, &[("reason", "header_timeout")], 1.0);
}

#[test]
fn head_over_64_kib_is_431() {
    let big = "a".repeat(70 * 1024);
    let raw = format!("GET /health HTTP/1.1\r\nhost: x\r\nx-big: {big}\r\n\r\n");
    refused(raw.as_bytes(), 431, "headers_too_large", "head_too_large");
}
