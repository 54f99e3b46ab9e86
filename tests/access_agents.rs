//! Agent policies (`[[agents]]`) through a real `sluice serve`: tools a
//! request offers, tool calls in whole and streamed answers, and session
//! limits (`x-sluice-session`).

mod common;

use common::*;
use serde_json::json;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::time::Duration;

const AGENT_KEY: &str = "sk-agent-0001";
const AGENT_KEY_2: &str = "sk-agent-0002";
const PLAIN_KEY: &str = "sk-plain-0001";
const TIMED_KEY: &str = "sk-timed-0001";

fn sha(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

/// A model server that answers with a call of the tool named after
/// `CALL:` in the request body (plain text otherwise), whole or streamed
/// (chunked SSE) as the request asks. Keep-alive.
fn tool_server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                loop {
                    // head
                    let head_end = loop {
                        if let Some(i) = find(&buf, b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut tmp = [0u8; 4096];
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + len {
                        let mut tmp = [0u8; 4096];
                        match s.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).into_owned();
                    buf.drain(..head_end + len);
                    let tool = body.find("CALL:").map(|i| {
                        body[i + 5..]
                            .chars()
                            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect::<String>()
                    });
                    let stream = body.contains("\"stream\":true");
                    if s.write_all(&answer(tool.as_deref(), stream)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

fn answer(tool: Option<&str>, stream: bool) -> Vec<u8> {
    if !stream {
        let message = match tool {
            Some(t) => json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": t, "arguments": "{\"q\":\"x\"}"}}
            ]}),
            None => json!({"role": "assistant", "content": "plain answer"}),
        };
        let body = json!({"id": "c1", "object": "chat.completion", "model": "m1",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
        .to_string();
        return format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
    }
    let mut events = vec![
        json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "thinking"}}]}),
    ];
    if let Some(t) = tool {
        events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_1", "type": "function", "function": {"name": t, "arguments": ""}}]}}]}));
        events.push(json!({"choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{\"q\":\"x\"}"}}]}}]}));
    }
    events.push(json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}));
    let mut out =
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    let mut chunk = |data: String| {
        let ev = format!("data: {data}\n\n");
        out.extend_from_slice(format!("{:x}\r\n{ev}\r\n", ev.len()).as_bytes());
    };
    for e in events {
        chunk(e.to_string());
    }
    chunk("[DONE]".into());
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn agents_config(url: &str) -> Config {
    let section = format!(
        r#"[auth]

[[teams]]
name = "support"
allowed_models = ["*"]

[[teams]]
name = "plain"

[[teams]]
name = "timed"

[[keys]]
id = "agent-1"
team = "support"
sha256 = "{}"

[[keys]]
id = "agent-2"
team = "support"
sha256 = "{}"

[[keys]]
id = "plain-1"
team = "plain"
sha256 = "{}"

[[keys]]
id = "timed-1"
team = "timed"
sha256 = "{}"

[[agents]]
team = "support"
allowed_tools = ["search_kb", "create_ticket", "delete_ticket"]
denied_tools = ["delete_*"]
max_turns = 3

[[agents]]
team = "timed"
max_session_s = 1
"#,
        sha(AGENT_KEY),
        sha(AGENT_KEY_2),
        sha(PLAIN_KEY),
        sha(TIMED_KEY)
    );
    Config::single(url).section(&section)
}

fn with_tools(tools: &[&str], content: &str, stream: bool) -> Vec<u8> {
    let tools: Vec<_> = tools
        .iter()
        .map(|t| json!({"type": "function", "function": {"name": t, "parameters": {"type": "object"}}}))
        .collect();
    json!({"model": "m1", "stream": stream, "tools": tools,
        "messages": [{"role": "user", "content": content}]})
    .to_string()
    .into_bytes()
}

fn call(gw: &Gateway, key: &str, body: &[u8], extra: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {key}");
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend_from_slice(extra);
    gw.request(&post("/v1/chat/completions", body, &headers))
}

#[test]
fn tools_offered_by_a_request() {
    let url = tool_server();
    let gw = Gateway::start(&agents_config(&url));
    // allowed tools pass
    let r = call(
        &gw,
        AGENT_KEY,
        &with_tools(&["search_kb", "create_ticket"], "hi", false),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // a tool outside allowed_tools
    let r = call(
        &gw,
        AGENT_KEY,
        &with_tools(&["search_kb", "run_shell"], "hi", false),
        &[],
    );
    let err = assert_openai_error(&r, 403, "permission_error", "tool_not_allowed");
    assert!(
        err["message"].as_str().unwrap().contains("run_shell"),
        "{err}"
    );
    // denied_tools wins over allowed_tools
    let r = call(
        &gw,
        AGENT_KEY,
        &with_tools(&["delete_ticket"], "hi", false),
        &[],
    );
    assert_openai_error(&r, 403, "permission_error", "tool_not_allowed");
    // legacy `functions`
    let legacy = json!({"model": "m1", "functions": [{"name": "delete_user", "parameters": {}}],
        "messages": [{"role": "user", "content": "hi"}]})
    .to_string();
    let r = call(&gw, AGENT_KEY, legacy.as_bytes(), &[]);
    assert_openai_error(&r, 403, "permission_error", "tool_not_allowed");
    // a team without an agent policy is not restricted
    let r = call(
        &gw,
        PLAIN_KEY,
        &with_tools(&["delete_everything"], "hi", false),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn forbidden_tool_call_in_a_whole_answer() {
    let url = tool_server();
    let gw = Gateway::start(&agents_config(&url));
    let r = call(
        &gw,
        AGENT_KEY,
        &with_tools(&["search_kb"], "CALL:search_kb", false),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "search_kb"
    );
    // the model calls a tool it was not offered and the team may not use
    let r = call(
        &gw,
        AGENT_KEY,
        &with_tools(&["search_kb"], "CALL:delete_user", false),
        &[],
    );
    assert_openai_error(&r, 403, "permission_error", "tool_not_allowed");
    assert!(!r.text().contains("call_1"), "{}", r.text());
    gw.wait_metric("sluice_agent_tool_calls_blocked_total", &[], 1.0);
    // other teams' answers are untouched
    let r = call(
        &gw,
        PLAIN_KEY,
        &with_tools(&[], "CALL:delete_user", false),
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

#[test]
fn forbidden_tool_call_in_a_stream() {
    let url = tool_server();
    let gw = Gateway::start(&agents_config(&url));
    let auth = format!("Bearer {AGENT_KEY}");
    // allowed call: every event arrives
    let mut c = gw.connect();
    c.send(&post(
        "/v1/chat/completions",
        &with_tools(&["search_kb"], "CALL:search_kb", true),
        &[("authorization", &auth)],
    ));
    let (head, events) = read_sse(&mut c);
    assert_eq!(head.status, 200);
    assert!(events.iter().any(|e| e.contains("search_kb")), "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    // forbidden call: the event naming it is never sent; an error ends it
    let mut c = gw.connect();
    c.send(&post(
        "/v1/chat/completions",
        &with_tools(&["search_kb"], "CALL:create_user", true),
        &[("authorization", &auth)],
    ));
    let (head, events) = read_sse(&mut c);
    assert_eq!(head.status, 200);
    assert!(events[0].contains("thinking"), "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| e.contains("call_1") || e.contains("arguments")),
        "the tool call leaked: {events:?}"
    );
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "tool_not_allowed", "{events:?}");
    assert!(!events.iter().any(|e| e == "[DONE]"));
}

#[test]
fn session_limits() {
    let url = tool_server();
    let gw = Gateway::start(&agents_config(&url));
    let body = with_tools(&[], "hi", false);
    for turn in 1..=3 {
        let r = call(&gw, AGENT_KEY, &body, &[("x-sluice-session", "s-1")]);
        assert_eq!(r.status, 200, "turn {turn}: {}", r.text());
    }
    let r = call(&gw, AGENT_KEY, &body, &[("x-sluice-session", "s-1")]);
    let err = assert_openai_error(&r, 429, "rate_limit_error", "session_limit");
    assert!(
        err["message"].as_str().unwrap().contains("3 turns"),
        "{err}"
    );
    // another session, another key with the same id, no session: served
    let r = call(&gw, AGENT_KEY, &body, &[("x-sluice-session", "s-2")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&gw, AGENT_KEY_2, &body, &[("x-sluice-session", "s-1")]);
    assert_eq!(r.status, 200, "{}", r.text());
    let r = call(&gw, AGENT_KEY, &body, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    // a team without session limits ignores the header
    for _ in 0..5 {
        let r = call(&gw, PLAIN_KEY, &body, &[("x-sluice-session", "s-1")]);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // max_session_s
    let r = call(&gw, TIMED_KEY, &body, &[("x-sluice-session", "t-1")]);
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(1100));
    let r = call(&gw, TIMED_KEY, &body, &[("x-sluice-session", "t-1")]);
    let err = assert_openai_error(&r, 429, "rate_limit_error", "session_limit");
    assert!(
        err["message"].as_str().unwrap().contains("time limit"),
        "{err}"
    );
}
