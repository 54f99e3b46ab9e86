//! `sluice mock-upstream`: an OpenAI-compatible model server for demos and
//! tests. Per request (headers) or per server (defaults) it answers with a
//! fixed completion, an SSE stream with chosen chunking and delays, an
//! error status, a reset mid-stream, a hang, or an echo of what it
//! received; `x-mock-tool-call: NAME` turns a chat answer into a call of
//! that function with the content as its arguments (streamed in pieces
//! like text). `GET /mock/stats` tells what it saw, e.g. streams whose
//! client went away.

use crate::http::body::{encode_chunk, ChunkedDecoder, LAST_CHUNK};
use crate::http::head::{self, Framing, RequestHead};
use crate::http::io::{read_append, write_all_clear};
use crate::http::response;
use crate::pipeline::relay::client_gone;
use crate::tls::ClientStream;
use monoio::net::{ListenerOpts, TcpListener, TcpStream};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Server-wide defaults; request headers override them.
#[derive(Debug, Clone)]
pub struct MockDefaults {
    /// `fixed` | `error` | `reset` | `hang` | `echo` (streams follow the
    /// request's `"stream": true`).
    pub mode: String,
    pub chunks: usize,
    pub delay_ms: u64,
    pub first_delay_ms: u64,
    pub status: u16,
    pub content: String,
    /// Serve TLS with this certificate (`--tls-cert`, `--tls-key`): a
    /// stand-in for an `https://` model server.
    pub tls: Option<Arc<crate::tls::ServerTls>>,
}

impl Default for MockDefaults {
    fn default() -> Self {
        Self {
            mode: "fixed".into(),
            chunks: 5,
            delay_ms: 0,
            first_delay_ms: 0,
            status: 500,
            content: "Hello from the sluice mock model.".into(),
            tls: None,
        }
    }
}

/// What the mock saw, readable at `GET /mock/stats`.
#[derive(Default)]
pub struct MockStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    pub streams_started: AtomicU64,
    pub streams_completed: AtomicU64,
    pub streams_cancelled: AtomicU64,
}

impl MockStats {
    fn json(&self) -> Vec<u8> {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        serde_json::to_vec(&json!({
            "connections": get(&self.connections),
            "requests": get(&self.requests),
            "streams_started": get(&self.streams_started),
            "streams_completed": get(&self.streams_completed),
            "streams_cancelled": get(&self.streams_cancelled),
        }))
        .unwrap_or_default()
    }
}

/// Binds `listen` and serves on a new thread; returns the bound address.
pub fn spawn(
    listen: SocketAddr,
    defaults: MockDefaults,
) -> std::io::Result<(SocketAddr, Arc<MockStats>)> {
    let std_listener = std::net::TcpListener::bind(listen)?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let stats = Arc::new(MockStats::default());
    let thread_stats = stats.clone();
    std::thread::Builder::new()
        .name("sluice-mock".into())
        .spawn(move || {
            let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                .enable_timer()
                .build()
                .expect("epoll runtime for the mock upstream");
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).expect("mock listener");
                accept_loop(listener, Rc::new(defaults), thread_stats).await;
            });
        })?;
    Ok((addr, stats))
}

/// Serves on the calling thread until the process ends.
pub fn run(listen: SocketAddr, defaults: MockDefaults) -> std::io::Result<()> {
    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
        .enable_timer()
        .build()?;
    rt.block_on(async move {
        let listener =
            TcpListener::bind_with_config(listen, &ListenerOpts::new().reuse_addr(true))?;
        tracing::info!(addr = %listen, "mock upstream listening");
        accept_loop(listener, Rc::new(defaults), Arc::new(MockStats::default())).await;
        Ok(())
    })
}

async fn accept_loop(listener: TcpListener, defaults: Rc<MockDefaults>, stats: Arc<MockStats>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                stats.connections.fetch_add(1, Ordering::Relaxed);
                monoio::spawn(handshake_and_serve(stream, defaults.clone(), stats.clone()));
            }
            Err(_) => monoio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn handshake_and_serve(tcp: TcpStream, defaults: Rc<MockDefaults>, stats: Arc<MockStats>) {
    let stream = match &defaults.tls {
        None => ClientStream::Plain(tcp),
        Some(tls) => match tls.accept(tcp, Duration::from_secs(10)).await {
            Ok(stream) => stream,
            Err(_) => return,
        },
    };
    serve(stream, defaults, stats).await;
}

async fn serve(mut stream: ClientStream, defaults: Rc<MockDefaults>, stats: Arc<MockStats>) {
    let mut rbuf = Vec::with_capacity(8192);
    let mut wbuf = Vec::with_capacity(8192);
    loop {
        let head = loop {
            match head::parse_request(&rbuf) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(_) => return,
            }
            match read_append(&mut stream, &mut rbuf).await {
                Ok(n) if n > 0 => {}
                _ => return,
            }
        };
        let Some((body, used)) = read_body(&mut stream, &head, &mut rbuf).await else {
            return;
        };
        stats.requests.fetch_add(1, Ordering::Relaxed);
        let req = MockRequest::new(&head, &rbuf, body, &defaults);
        rbuf.drain(..used);
        let keep = answer(&mut stream, &mut wbuf, &req, &stats).await;
        if !keep || !head.keep_alive {
            return;
        }
    }
}

async fn read_body(
    stream: &mut ClientStream,
    head: &RequestHead,
    rbuf: &mut Vec<u8>,
) -> Option<(Vec<u8>, usize)> {
    match head.framing {
        Framing::Length(n) => {
            let end = head.len + n as usize;
            while rbuf.len() < end {
                if read_append(stream, rbuf).await.ok()? == 0 {
                    return None;
                }
            }
            Some((rbuf[head.len..end].to_vec(), end))
        }
        Framing::Chunked => {
            let mut decoder = ChunkedDecoder::new();
            let mut body = Vec::new();
            let mut pos = head.len;
            loop {
                pos += decoder.decode(&rbuf[pos..], &mut body).ok()?;
                if decoder.is_done() {
                    return Some((body, pos));
                }
                if read_append(stream, rbuf).await.ok()? == 0 {
                    return None;
                }
            }
        }
        _ => Some((Vec::new(), head.len)),
    }
}

/// One request, with its mode settled from headers and defaults.
struct MockRequest {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    json: Option<Value>,
    mode: String,
    chunks: usize,
    delay: Duration,
    first_delay: Duration,
    status: u16,
    reset_after: Option<usize>,
    content: String,
    /// Answer with a call of this function, `content` as its arguments.
    tool_call: Option<String>,
}

impl MockRequest {
    fn new(head: &RequestHead, raw: &[u8], body: Vec<u8>, d: &MockDefaults) -> Self {
        let headers: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|h| {
                (
                    String::from_utf8_lossy(&raw[h.name.clone()]).to_ascii_lowercase(),
                    String::from_utf8_lossy(&raw[h.value.clone()]).into_owned(),
                )
            })
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let num =
            |name: &str, default: u64| get(name).and_then(|v| v.parse().ok()).unwrap_or(default);
        let line_end = memchr::memchr(b' ', raw).unwrap_or(0);
        Self {
            method: String::from_utf8_lossy(&raw[..line_end]).into_owned(),
            path: String::from_utf8_lossy(head.path(raw)).into_owned(),
            mode: get("x-mock-mode").unwrap_or_else(|| d.mode.clone()),
            chunks: num("x-mock-chunks", d.chunks as u64) as usize,
            delay: Duration::from_millis(num("x-mock-delay-ms", d.delay_ms)),
            first_delay: Duration::from_millis(num("x-mock-first-delay-ms", d.first_delay_ms)),
            status: num("x-mock-status", u64::from(d.status)) as u16,
            reset_after: get("x-mock-reset-after").and_then(|v| v.parse().ok()),
            content: get("x-mock-content").unwrap_or_else(|| d.content.clone()),
            tool_call: get("x-mock-tool-call"),
            json: serde_json::from_slice(&body).ok(),
            headers,
            body,
        }
    }

    fn model(&self) -> String {
        self.json
            .as_ref()
            .and_then(|j| j.get("model"))
            .and_then(Value::as_str)
            .unwrap_or("mock-model")
            .to_owned()
    }

    fn wants_stream(&self) -> bool {
        self.json
            .as_ref()
            .and_then(|j| j.get("stream"))
            .and_then(Value::as_bool)
            == Some(true)
    }

    fn wants_usage_in_stream(&self) -> bool {
        self.json
            .as_ref()
            .and_then(|j| j.pointer("/stream_options/include_usage"))
            .and_then(Value::as_bool)
            == Some(true)
    }

    fn prompt_tokens(&self) -> u64 {
        (self.body.len() as u64 / 4).max(1)
    }
}

async fn write_json(
    stream: &mut ClientStream,
    wbuf: &mut Vec<u8>,
    status: u16,
    body: &Value,
) -> bool {
    let body = serde_json::to_vec(body).unwrap_or_default();
    wbuf.clear();
    response::json(wbuf, status, b"mock", true, &[], &body);
    write_all_clear(stream, wbuf).await.is_ok()
}

/// Answers one request; false closes the connection.
async fn answer(
    stream: &mut ClientStream,
    wbuf: &mut Vec<u8>,
    req: &MockRequest,
    stats: &MockStats,
) -> bool {
    if req.path == "/mock/stats" {
        wbuf.clear();
        response::json(wbuf, 200, b"mock", true, &[], &stats.json());
        return write_all_clear(stream, wbuf).await.is_ok();
    }
    if req.path == "/health" {
        return write_json(stream, wbuf, 200, &json!({"status": "ok"})).await;
    }
    if req.path == "/v1/models" {
        let list = json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "owned_by": "mock"}]});
        return write_json(stream, wbuf, 200, &list).await;
    }
    if !req.first_delay.is_zero() && !req.wants_stream() {
        monoio::time::sleep(req.first_delay).await;
    }
    match req.mode.as_str() {
        "hang" => {
            client_gone(stream).await;
            false
        }
        "error" => {
            let status = req.status;
            let body = json!({"error": {"message": format!("mock upstream error {status}"), "type": "server_error", "code": status.to_string(), "param": null}});
            write_json(stream, wbuf, status, &body).await
        }
        "reset" if !req.wants_stream() => {
            reset(stream);
            false
        }
        "echo" => {
            let received = json!({
                "method": req.method,
                "path": req.path,
                "headers": req.headers.iter().map(|(n, v)| (n.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
                "body": String::from_utf8_lossy(&req.body),
            });
            let mut completion = completion(req, &String::from_utf8_lossy(&req.body));
            completion["echo"] = received;
            write_json(stream, wbuf, 200, &completion).await
        }
        _ if req.wants_stream() => stream_answer(stream, wbuf, req, stats).await,
        _ if req.path.ends_with("/embeddings") => {
            write_json(stream, wbuf, 200, &embeddings(req)).await
        }
        _ => write_json(stream, wbuf, 200, &completion(req, &req.content)).await,
    }
}

fn is_chat(req: &MockRequest) -> bool {
    req.path.ends_with("/chat/completions")
}

fn completion(req: &MockRequest, content: &str) -> Value {
    let output = content.split_whitespace().count().max(1) as u64;
    let choice = if let (true, Some(name)) = (is_chat(req), &req.tool_call) {
        let call = json!({"id": "call_1", "type": "function", "function": {"name": name, "arguments": content}});
        json!({"index": 0, "message": {"role": "assistant", "content": null, "tool_calls": [call]}, "finish_reason": "tool_calls"})
    } else if is_chat(req) {
        json!({"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"})
    } else {
        json!({"index": 0, "text": content, "finish_reason": "stop"})
    };
    json!({
        "id": "mock-1",
        "object": if is_chat(req) { "chat.completion" } else { "text_completion" },
        "created": 1_700_000_000,
        "model": req.model(),
        "choices": [choice],
        "usage": {"prompt_tokens": req.prompt_tokens(), "completion_tokens": output, "total_tokens": req.prompt_tokens() + output},
    })
}

fn embeddings(req: &MockRequest) -> Value {
    let inputs: Vec<String> = match req.json.as_ref().and_then(|j| j.get("input")) {
        Some(Value::Array(items)) => items.iter().map(|v| v.to_string()).collect(),
        Some(v) => vec![v.to_string()],
        None => vec![String::new()],
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            // A deterministic vector per input, so equal inputs embed equally.
            let seed = text.bytes().fold(1469598103934665603u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(1099511628211)
            });
            let v: Vec<f64> = (0..8)
                .map(|k| (((seed >> (k * 8)) & 0xff) as f64 / 127.5) - 1.0)
                .collect();
            json!({"object": "embedding", "index": i, "embedding": v})
        })
        .collect();
    json!({"object": "list", "data": data, "model": req.model(), "usage": {"prompt_tokens": req.prompt_tokens(), "total_tokens": req.prompt_tokens()}})
}

fn reset(stream: &ClientStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on the stream's own fd with a local struct; the
    // close that follows (on drop) then sends RST.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as u32,
        );
    }
}

/// An SSE stream of `chunks` events (the content split into pieces),
/// `delay` apart, then a usage event when asked for, then `[DONE]`.
async fn stream_answer(
    stream: &mut ClientStream,
    wbuf: &mut Vec<u8>,
    req: &MockRequest,
    stats: &MockStats,
) -> bool {
    stats.streams_started.fetch_add(1, Ordering::Relaxed);
    wbuf.clear();
    response::status_line(wbuf, 200);
    response::header(wbuf, b"content-type", b"text/event-stream");
    response::header(wbuf, b"cache-control", b"no-cache");
    response::common_headers(wbuf, b"mock", true, None);
    wbuf.extend_from_slice(b"\r\n");
    if write_all_clear(stream, wbuf).await.is_err() {
        stats.streams_cancelled.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    let words: Vec<&str> = req.content.split_inclusive(' ').collect();
    let chunks = req.chunks.max(1);
    let per = words.len().div_ceil(chunks).max(1);
    let model = req.model();
    let tool_call = req.tool_call.as_ref().filter(|_| is_chat(req));
    let mut events: Vec<Value> = (0..chunks)
        .map(|i| {
            let piece: String = words.iter().skip(i * per).take(per).copied().collect();
            let last = i + 1 == chunks;
            let finish = match (last, tool_call) {
                (false, _) => Value::Null,
                (true, Some(_)) => json!("tool_calls"),
                (true, None) => json!("stop"),
            };
            let choice = if let Some(name) = tool_call {
                // As OpenAI streams a call: id, type and name first, then
                // the arguments in pieces.
                let call = if i == 0 {
                    json!({"index": 0, "id": "call_1", "type": "function", "function": {"name": name, "arguments": piece}})
                } else {
                    json!({"index": 0, "function": {"arguments": piece}})
                };
                json!({"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": finish})
            } else if is_chat(req) {
                json!({"index": 0, "delta": {"content": piece}, "finish_reason": finish})
            } else {
                json!({"index": 0, "text": piece, "finish_reason": finish})
            };
            json!({"id": "mock-1", "object": if is_chat(req) { "chat.completion.chunk" } else { "text_completion" }, "created": 1_700_000_000, "model": model, "choices": [choice]})
        })
        .collect();
    if req.wants_usage_in_stream() {
        let output = words.len() as u64;
        events.push(json!({"id": "mock-1", "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model, "choices": [],
            "usage": {"prompt_tokens": req.prompt_tokens(), "completion_tokens": output, "total_tokens": req.prompt_tokens() + output}}));
    }
    for (i, event) in events.iter().enumerate() {
        let wait = if i == 0 { req.first_delay } else { req.delay };
        if !wait.is_zero() {
            let gone = monoio::select! {
                _ = monoio::time::sleep(wait) => false,
                _ = client_gone(stream) => true,
            };
            if gone {
                stats.streams_cancelled.fetch_add(1, Ordering::Relaxed);
                return false;
            }
        }
        if req.reset_after == Some(i) {
            reset(stream);
            return false;
        }
        let mut data = b"data: ".to_vec();
        data.extend_from_slice(&serde_json::to_vec(event).unwrap_or_default());
        data.extend_from_slice(b"\n\n");
        encode_chunk(wbuf, &data);
        if write_all_clear(stream, wbuf).await.is_err() {
            stats.streams_cancelled.fetch_add(1, Ordering::Relaxed);
            return false;
        }
    }
    encode_chunk(wbuf, b"data: [DONE]\n\n");
    wbuf.extend_from_slice(LAST_CHUNK);
    let ok = write_all_clear(stream, wbuf).await.is_ok();
    stats
        .streams_completed
        .fetch_add(u64::from(ok), Ordering::Relaxed);
    ok
}
