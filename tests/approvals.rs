//! Human approval of answers (`[[approvals]]`) over real sockets: the
//! answer waits until a reviewer approves or rejects it through the admin
//! API, or its timeout passes; streamed answers are released whole; every
//! decision lands in the audit record with who decided.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const TOKEN: &str = "admin-token-for-approvals-01";
const KEY: &str = "sk-support-approvals-01";

struct Setup {
    gw: std::sync::Arc<Gateway>,
    admin: SocketAddr,
    audit: PathBuf,
    _mock: Mock,
}

fn setup(timeout_s: u64) -> Setup {
    let mock = Mock::start();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let audit = temp_path("approvals-audit", "d");
    let db = temp_path("approvals", "db");
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, KEY.as_bytes()));
    let cfg = Config::single(&mock.url())
        .env("SLUICE_ADMIN_TOKEN", TOKEN)
        .section(&format!(
            r#"[admin]
listen = "{admin}"

[store]
path = {db:?}

[audit]
dir = {audit:?}

[auth]

[[teams]]
name = "support"

[[keys]]
id = "support-1"
team = "support"
sha256 = "{sha}"

[[approvals]]
team = "support"
models = ["m1"]
timeout_s = {timeout_s}
"#,
            db = db.display().to_string(),
            audit = audit.display().to_string(),
        ));
    Setup {
        gw: std::sync::Arc::new(Gateway::start(&cfg)),
        admin,
        audit,
        _mock: mock,
    }
}

fn admin(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> Response {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {TOKEN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut c = Conn::open(addr);
    c.send(raw.as_bytes());
    c.read_response()
}

/// A reviewer's decision (`approve` or `reject`) on held answer `id`.
fn decide(s: &Setup, id: &str, verb: &str, body: Value) -> Response {
    admin(
        s.admin,
        "POST",
        &format!("/admin/approvals/{id}/{verb}"),
        Some(body),
    )
}

/// Waits until one answer is pending and returns it.
fn pending(s: &Setup) -> Value {
    let mut found = Value::Null;
    wait_until(
        "an answer is held for approval",
        Duration::from_secs(10),
        || {
            let list = admin(s.admin, "GET", "/admin/approvals", None).json();
            match list.as_array().and_then(|a| a.first()) {
                Some(p) => {
                    found = p.clone();
                    true
                }
                None => false,
            }
        },
    );
    found
}

fn bearer() -> String {
    format!("Bearer {KEY}")
}

fn audit_decisions(dir: &PathBuf) -> String {
    let mut all = String::new();
    wait_until(
        "the audit record is written",
        Duration::from_secs(10),
        || {
            all = std::fs::read_dir(dir)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .filter(|e| e.file_name().to_string_lossy().ends_with(".jsonl"))
                        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default();
            all.contains("approval:")
        },
    );
    all
}

#[test]
fn approved_answer_reaches_the_client_and_the_audit_names_the_reviewer() {
    let s = setup(30);
    let gw = s.gw.clone();
    let client =
        std::thread::spawn(move || gw.request(&chat("m1", false, &[("authorization", &bearer())])));
    let held = pending(&s);
    assert_eq!(held["team"], "support");
    assert_eq!(held["model"], "m1");
    assert!(held["completion"]
        .as_str()
        .unwrap()
        .contains("Hello from the sluice mock model."));
    let id = held["id"].as_str().unwrap().to_owned();
    // A decision needs a reviewer's name.
    assert_eq!(decide(&s, &id, "approve", json!({})).status, 400);
    let ok = decide(&s, &id, "approve", json!({"by": "ana"}));
    assert_eq!(ok.status, 200, "{}", ok.text());
    let resp = client.join().unwrap();
    assert_eq!(resp.status, 200);
    assert!(resp.text().contains("Hello from the sluice mock model."));
    // Decided once only.
    assert_eq!(decide(&s, &id, "reject", json!({"by": "bob"})).status, 404);
    assert!(audit_decisions(&s.audit).contains("approval:approved:ana"));
}

#[test]
fn rejected_answer_is_a_403() {
    let s = setup(30);
    let gw = s.gw.clone();
    let client =
        std::thread::spawn(move || gw.request(&chat("m1", false, &[("authorization", &bearer())])));
    let id = pending(&s)["id"].as_str().unwrap().to_owned();
    assert_eq!(decide(&s, &id, "reject", json!({"by": "bob"})).status, 200);
    let resp = client.join().unwrap();
    assert_openai_error(&resp, 403, "invalid_request_error", "rejected_by_reviewer");
    assert!(
        !resp.text().contains("Hello from"),
        "the rejected answer leaked"
    );
    assert!(audit_decisions(&s.audit).contains("approval:rejected:bob"));
}

#[test]
fn undecided_answer_times_out_with_504() {
    let s = setup(1);
    let resp =
        s.gw.request(&chat("m1", false, &[("authorization", &bearer())]));
    assert_openai_error(&resp, 504, "api_error", "approval_timeout");
    assert!(audit_decisions(&s.audit).contains("approval:expired"));
    let list = admin(s.admin, "GET", "/admin/approvals", None).json();
    assert_eq!(list.as_array().map(Vec::len), Some(0));
}

#[test]
fn streamed_answer_is_released_whole_after_approval() {
    let s = setup(30);
    let gw = s.gw.clone();
    let client = std::thread::spawn(move || {
        let mut conn = gw.connect();
        conn.send(&chat(
            "m1",
            true,
            &[("authorization", &bearer()), ("x-mock-chunks", "3")],
        ));
        read_sse(&mut conn)
    });
    let held = pending(&s);
    assert!(
        held["completion"]
            .as_str()
            .unwrap()
            .contains("data: [DONE]"),
        "{held}"
    );
    let id = held["id"].as_str().unwrap().to_owned();
    decide(&s, &id, "approve", json!({"by": "ana"}));
    let (head, events) = client.join().unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert!(events.len() >= 4, "{events:?}");
}
