//! The gateway's life: health and readiness, the model list, the SIGTERM
//! drain, the CLI, and the I/O drivers and worker counts.

mod common;

use common::*;
use serde_json::Value;
use std::io::ErrorKind;
use std::net::TcpStream;
use std::time::Duration;

// ---------------------------------------------------------------- 9. local endpoints

#[test]
fn health_ready_and_models() {
    let mock = Mock::start();
    let gw = Gateway::start(&Config::single(&mock.url()));
    let mut conn = gw.connect();

    let resp = conn.request(&get("/health", &[]));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["status"], "ok");
    assert!(resp.header("x-request-id").is_some());

    let resp = conn.request(&get("/ready", &[]));
    assert_eq!(resp.status, 200);
    assert_eq!(resp.json()["status"], "ready");

    let resp = conn.request(&get("/v1/models", &[]));
    assert_eq!(resp.status, 200);
    assert!(resp
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let v = resp.json();
    assert_eq!(v["object"], "list");
    let ids: Vec<&str> = v["data"]
        .as_array()
        .expect("data array")
        .iter()
        .map(|m| m["id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids, ["m1", "m-rewrite", "embed-small"]);
    for m in v["data"].as_array().unwrap() {
        assert_eq!(m["object"], "model");
    }
    // A query string does not change the route.
    let resp = conn.request(&get("/health?probe=1", &[]));
    assert_eq!(resp.status, 200);
    assert_eq!(
        mock.requests(),
        0,
        "local endpoints must not reach the upstream"
    );
}

// ---------------------------------------------------------------- 10. SIGTERM drain

#[test]
fn sigterm_drains_in_flight_stream_then_exits_zero() {
    let mock = Mock::start();
    let cfg = Config::single(&mock.url()).server("drain_timeout_ms", "8000");
    let mut gw = Gateway::start(&cfg);

    // A second, already-open keep-alive connection.
    let mut probe = gw.connect();
    let resp = probe.request(&get("/ready", &[]));
    assert_eq!(resp.status, 200);

    let mut conn = gw.connect();
    conn.send(&chat(
        "m1",
        true,
        &[("x-mock-chunks", "10"), ("x-mock-delay-ms", "200")],
    ));
    let (head, mut events) = conn.sse();
    assert_eq!(head.status, 200);
    let first = events.next_event().expect("first event");
    assert_ne!(first, "[DONE]");

    gw.signal(libc::SIGTERM);

    // /ready turns 503 on the open connection (the signal is handled
    // asynchronously: poll while the answer is still 200).
    let mut ready_status = 0;
    wait_until(
        "GET /ready answers 503 after SIGTERM",
        Duration::from_secs(3),
        || {
            let resp = probe.request(&get("/ready", &[]));
            ready_status = resp.status;
            assert!(
                resp.status == 200 || resp.status == 503,
                "GET /ready during drain: {} {}",
                resp.status,
                resp.text()
            );
            if resp.status == 503 {
                assert_eq!(resp.json()["status"], "draining");
                assert!(
                    resp.header("connection")
                        .is_some_and(|c| c.eq_ignore_ascii_case("close")),
                    "a draining gateway should close keep-alive connections: {:?}",
                    resp.headers
                );
            }
            resp.status == 503
        },
    );
    assert_eq!(ready_status, 503);

    // New connections are refused.
    wait_until(
        "new connections to the listener are refused during the drain",
        Duration::from_secs(3),
        || match TcpStream::connect_timeout(&gw.addr, Duration::from_secs(1)) {
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::ConnectionRefused,
                    "connect during drain: {e}"
                );
                true
            }
            Ok(_) => false,
        },
    );

    // The stream in flight completes.
    let rest = events.rest();
    assert_eq!(rest.len(), 10, "9 more events and [DONE]: {rest:#?}");
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"));
    for e in &rest[..9] {
        let v: Value = serde_json::from_str(e).expect("event JSON");
        assert_eq!(v["object"], "chat.completion.chunk");
    }
    assert_eq!(mock.streams_cancelled(), 0);

    let status = gw
        .wait_exit(Duration::from_secs(8))
        .expect("the gateway did not exit within drain_timeout after its last request");
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}; stderr:\n{}",
        gw.stderr()
    );
}

#[test]
fn sigterm_when_idle_exits_zero() {
    let mock = Mock::start();
    let mut gw = Gateway::start(&Config::single(&mock.url()));
    // An idle keep-alive connection must not hold the drain up.
    let mut idle = gw.connect();
    assert_eq!(idle.request(&chat("m1", false, &[])).status, 200);
    gw.signal(libc::SIGTERM);
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("exit after SIGTERM");
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        gw.stderr()
    );
}

#[test]
fn sigint_when_idle_exits_zero() {
    let mock = Mock::start();
    let mut gw = Gateway::start(&Config::single(&mock.url()));
    gw.signal(libc::SIGINT);
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("exit after SIGINT");
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        gw.stderr()
    );
}

#[test]
fn sigterm_with_two_workers_closes_every_listener() {
    let mock = Mock::start();
    let cfg = Config::single(&mock.url()).workers(2);
    let mut gw = Gateway::start(&cfg);
    let mut conn = gw.connect();
    conn.send(&chat(
        "m1",
        true,
        &[("x-mock-chunks", "8"), ("x-mock-delay-ms", "200")],
    ));
    let (head, mut events) = conn.sse();
    assert_eq!(head.status, 200);
    assert!(events.next_event().is_some());
    gw.signal(libc::SIGTERM);
    wait_until(
        "new connections are refused by both workers",
        Duration::from_secs(3),
        || {
            // Several attempts, so that SO_REUSEPORT spreads them over both.
            (0..8).all(|_| TcpStream::connect_timeout(&gw.addr, Duration::from_secs(1)).is_err())
        },
    );
    let rest = events.rest();
    assert_eq!(rest.last().map(String::as_str), Some("[DONE]"), "{rest:#?}");
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("exit after the drain");
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        gw.stderr()
    );
}

#[test]
fn drain_timeout_cuts_unfinished_requests() {
    let mock = Mock::start();
    let cfg = Config::single(&mock.url()).server("drain_timeout_ms", "500");
    let mut gw = Gateway::start(&cfg);
    let mut conn = gw.connect();
    conn.send(&chat(
        "m1",
        true,
        &[("x-mock-chunks", "50"), ("x-mock-delay-ms", "200")],
    ));
    let (head, mut events) = conn.sse();
    assert_eq!(head.status, 200);
    assert!(events.next_event().is_some());
    gw.signal(libc::SIGTERM);
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("the gateway did not exit after drain_timeout with a request still in flight");
    assert!(
        status.success(),
        "exit status {status}; stderr:\n{}",
        gw.stderr()
    );
    // The unfinished stream is cut (no [DONE]), and the upstream cancelled.
    let mut done = false;
    while let Ok(Some(e)) = events.try_next_event() {
        done |= e == "[DONE]";
    }
    assert!(!done, "a 10 s stream completed within a 500 ms drain");
    wait_until("the mock saw its stream cancelled", POLL_TIMEOUT, || {
        mock.streams_cancelled() == 1
    });
}

#[test]
fn connections_active_returns_to_zero() {
    let mock = Mock::start();
    let cfg = Config::single(&mock.url())
        .server("max_body_bytes", "1024")
        .server("idle_timeout_ms", "300");
    let gw = Gateway::start(&cfg);
    // A plain answer, a stream, a refusal, a client gone mid-body, a
    // client gone mid-stream, an idle keep-alive connection.
    assert_eq!(gw.request(&chat("m1", false, &[])).status, 200);
    let mut c = gw.connect();
    c.send(&chat("m1", true, &[]));
    let _ = read_sse(&mut c);
    drop(c);
    assert_eq!(
        gw.request(&post("/v1/chat/completions", &[b' '; 2000], &[]))
            .status,
        413
    );
    let mut c = gw.connect();
    c.send(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n{");
    drop(c);
    let mut c = gw.connect();
    c.send(&chat(
        "m1",
        true,
        &[("x-mock-chunks", "20"), ("x-mock-delay-ms", "100")],
    ));
    {
        let (_, mut ev) = c.sse();
        assert!(ev.next_event().is_some());
    }
    drop(c);
    let mut idle = gw.connect();
    assert_eq!(idle.request(&get("/health", &[])).status, 200);
    gw.wait_metric("sluice_connections_active", &[], 0.0);
    assert!(idle.read_until_closed(Duration::from_secs(5)).is_empty());
}

// ---------------------------------------------------------------- 11. CLI

const REFERENCE: &str = "tests/fixtures/sluice.reference.toml";

#[test]
fn check_config_accepts_the_reference() {
    let path = repo_path(REFERENCE);
    let (status, stdout, stderr) = run_sluice(&["check-config", path.to_str().unwrap()], &[]);
    assert!(
        status.success(),
        "check-config {REFERENCE}: {status}\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ok"), "{stdout}");
}

#[test]
fn check_config_names_an_unknown_server_key_and_its_line() {
    let source = std::fs::read_to_string(repo_path(REFERENCE)).expect("read the reference");
    let mut lines: Vec<&str> = source.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.trim() == "[server]")
        .expect("a [server] line");
    lines.insert(at + 1, "turbo_boost = true");
    let expected_line = at + 2; // 1-based line of the inserted key
    let path = temp_path("bad-reference", "toml");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let (status, stdout, stderr) = run_sluice(&["check-config", path.to_str().unwrap()], &[]);
    let _ = std::fs::remove_file(&path);
    assert!(
        !status.success(),
        "check-config accepted an unknown key: {stdout}"
    );
    assert!(
        stderr.contains("turbo_boost"),
        "stderr does not name the key: {stderr}"
    );
    assert!(
        stderr.contains(&format!("line {expected_line}")),
        "stderr does not name line {expected_line}: {stderr}"
    );
}

#[test]
fn every_section_of_the_reference_is_built() {
    // check-config used to note sections `serve` would refuse; none is left.
    let path = repo_path(REFERENCE);
    let (status, stdout, stderr) = run_sluice(&["check-config", path.to_str().unwrap()], &[]);
    assert!(status.success(), "{stdout}{stderr}");
    assert!(!stdout.contains("refuses"), "{stdout}");
    // The last one was TLS to Redis: a node with a `rediss://` Redis that
    // is not there serves on its fallback share.
    let mock = Mock::start();
    let cfg = Config::single(&mock.url()).section("[cluster]\nredis = \"rediss://127.0.0.1:9\"\n");
    let gw = Gateway::start(&cfg);
    let r = gw.request(&get("/health", &[]));
    assert_eq!(r.status, 200);
}

#[test]
fn serve_refuses_unknown_keys_and_missing_api_key_env() {
    let mock = Mock::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let text = format!(
        "[server]\nlisten = \"{listen}\"\nworkers = 1\npin_cores = false\nturbo = 1\n\n[[upstreams]]\nname = \"a\"\nurl = \"{}\"\n\n[[models]]\nname = \"m\"\ntargets = [{{ upstream = \"a\" }}]\n",
        mock.url()
    );
    let path = temp_path("serve-unknown", "toml");
    std::fs::write(&path, &text).unwrap();
    let (status, _, stderr) = run_sluice(&["serve", "--config", path.to_str().unwrap()], &[]);
    assert!(!status.success());
    assert!(stderr.contains("turbo"), "{stderr}");

    let text = text.replace("turbo = 1\n", "").replace(
        "url = ",
        "api_key_env = \"SLUICE_IT_SURELY_UNSET_VAR\"\nurl = ",
    );
    std::fs::write(&path, &text).unwrap();
    let (status, _, stderr) = run_sluice(&["serve", "--config", path.to_str().unwrap()], &[]);
    let _ = std::fs::remove_file(&path);
    assert!(!status.success());
    assert!(stderr.contains("SLUICE_IT_SURELY_UNSET_VAR"), "{stderr}");
}

#[test]
fn hash_key_prints_the_sha256() {
    let (status, stdout, stderr) = run_sluice(&["hash-key", "sk-support-bot-0001"], &[]);
    assert!(status.success(), "{stderr}");
    assert_eq!(
        stdout.trim(),
        "24651fd68f7ec5dafadd6aade4989d61c65687d5e8c712d91dfedadc7a862a9f"
    );
}

// ---------------------------------------------------------------- 12. drivers and workers

/// A plain answer and a stream, on one connection.
fn exercise(gw: &Gateway) {
    let mut conn = gw.connect();
    let resp = conn.request(&chat("m1", false, &[]));
    assert_eq!(resp.status, 200, "{}", resp.text());
    assert_eq!(
        resp.json()["choices"][0]["message"]["content"],
        MOCK_CONTENT
    );
    conn.send(&chat("m1", true, &[("x-mock-chunks", "4")]));
    let (head, events) = read_sse(&mut conn);
    assert_eq!(head.status, 200);
    assert_eq!(events.len(), 5, "{events:#?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}

#[test]
fn driver_epoll() {
    let mock = Mock::start();
    let gw = Gateway::start(&Config::single(&mock.url()).io("epoll"));
    exercise(&gw);
    assert_eq!(
        gw.metric("sluice_worker_info", &[("driver", "epoll")]),
        Some(1.0)
    );
    assert_eq!(
        gw.metric("sluice_worker_info", &[("driver", "io_uring")]),
        None
    );
}

#[test]
fn driver_io_uring() {
    let mock = Mock::start();
    let gw = match Gateway::try_start(&Config::single(&mock.url()).io("io_uring")) {
        Ok(gw) => gw,
        Err(e) if e.contains("io_uring is not available") => {
            eprintln!("NOTE: driver_io_uring skipped: the gateway reports io_uring refused:\n{e}");
            return;
        }
        Err(e) => panic!("the gateway did not start with io = \"io_uring\":\n{e}"),
    };
    exercise(&gw);
    assert_eq!(
        gw.metric("sluice_worker_info", &[("driver", "io_uring")]),
        Some(1.0)
    );
}

#[test]
fn two_workers_both_listen_and_serve() {
    let mock = Mock::start();
    let gw = Gateway::start(&Config::single(&mock.url()).workers(2).pin_cores(true));
    let text = gw.metrics();
    assert_eq!(
        metric_value(&text, "sluice_worker_info", &[("worker", "0")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "sluice_worker_info", &[("worker", "1")]),
        Some(1.0),
        "{text}"
    );
    for _ in 0..3 {
        exercise(&gw);
    }
    // Many separate connections, all answered whichever worker takes them.
    for i in 0..12 {
        let resp = gw.request(&chat("m1", false, &[]));
        assert_eq!(resp.status, 200, "connection {i}: {}", resp.text());
    }
    gw.wait_metric(
        "sluice_requests_total",
        &[("model", "m1"), ("status", "200")],
        18.0,
    );
}
