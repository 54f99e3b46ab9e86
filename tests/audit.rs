//! The audit log over real sockets: one chained record per request,
//! `sluice audit verify` on good and tampered logs, retention, export, and
//! a gateway killed with SIGKILL under load.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

fn audit_dir() -> PathBuf {
    let dir = temp_path("audit", "d");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn audited(mock: &Mock, dir: &Path, extra: &str) -> Config {
    Config::single(&mock.url()).section(&format!(
        "[audit]\ndir = {}\nfsync = \"always\"\ndetail = \"metadata\"\n{extra}\n",
        serde_json::to_string(dir.to_str().unwrap()).unwrap()
    ))
}

fn verify(dir: &Path) -> (bool, String) {
    let (status, out, err) = run_sluice(&["audit", "verify", dir.to_str().unwrap()], &[]);
    (status.success(), format!("{out}{err}"))
}

fn records(dir: &Path) -> Vec<serde_json::Value> {
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    segments
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|l| serde_json::from_str(&l).unwrap())
        .filter(|r: &serde_json::Value| r.get("ts").is_some())
        .collect()
}

fn wait_records(dir: &Path, n: usize) -> Vec<serde_json::Value> {
    wait_until("audit records written", Duration::from_secs(10), || {
        records(dir).len() >= n
    });
    records(dir)
}

fn segment(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("audit-{n:010}.jsonl"))
}

#[test]
fn every_request_leaves_a_chained_record() {
    let mock = Mock::start();
    let dir = audit_dir();
    let gw = Gateway::start(&audited(&mock, &dir, ""));
    let body = r#"{"model":"m1","temperature":0.3,"max_tokens":64,"messages":[{"role":"user","content":"secret plan"}]}"#;
    assert_eq!(
        gw.request(&post(
            "/v1/chat/completions",
            body.as_bytes(),
            &[("x-sluice-session", "s-1")]
        ))
        .status,
        200
    );
    assert_eq!(gw.request(&chat("nope", false, &[])).status, 404);
    assert_eq!(gw.request(&chat("m1", true, &[])).status, 200);
    let recs = wait_records(&dir, 3);
    let ok = &recs[0];
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["model"], "m1");
    assert_eq!(ok["upstream"], UPSTREAM);
    assert_eq!(ok["session"], "s-1");
    assert_eq!(ok["params"]["temperature"], 0.3);
    assert_eq!(ok["params"]["max_tokens"], 64);
    assert!(ok["tokens_in"].as_u64().unwrap() > 0);
    assert_eq!(ok["config_sha256"].as_str().unwrap().len(), 64);
    // detail = metadata: no content at all.
    assert!(!recs.iter().any(|r| r.to_string().contains("secret plan")));
    assert_eq!(recs[1]["status"], 404);
    assert_eq!(recs[1]["error"], "model_not_found");
    assert_eq!(recs[2]["stream"], true);
    let (good, out) = verify(&dir);
    assert!(good, "{out}");
    assert!(out.contains("4 records"), "{out}");
}

#[test]
fn full_detail_keeps_the_request_and_decisions_name_the_fallback() {
    let mock = Mock::start();
    let dir = audit_dir();
    let cfg = Config::default()
        .upstream("dead", &format!("http://127.0.0.1:{}", free_port()))
        .upstream("b", &mock.url())
        .section("[[models]]\nname = \"big\"\ntargets = [{ upstream = \"dead\" }]\nfallbacks = [\"small\"]\n\n[[models]]\nname = \"small\"\ntargets = [{ upstream = \"b\" }]\n")
        .section(&format!("[audit]\ndir = {}\ndetail = \"full\"\n", serde_json::to_string(dir.to_str().unwrap()).unwrap()));
    let gw = Gateway::start(&cfg);
    assert_eq!(gw.request(&chat("big", false, &[])).status, 200);
    let recs = wait_records(&dir, 1);
    assert_eq!(recs[0]["model_asked"], "big");
    assert_eq!(recs[0]["model"], "small");
    let decisions = recs[0]["decisions"].to_string();
    assert!(
        decisions.contains("retry:dead:connect_error") && decisions.contains("fallback:small"),
        "{decisions}"
    );
    assert_eq!(recs[0]["request"]["messages"][0]["content"], "Say hello");
    assert!(
        recs[0]["completion"]
            .as_str()
            .unwrap()
            .contains("Hello from the sluice mock model."),
        "{}",
        recs[0]
    );
}

/// A log of several segments, written by a real gateway.
fn sample_log() -> PathBuf {
    let mock = Mock::start();
    let dir = audit_dir();
    let mut gw = Gateway::start(&audited(&mock, &dir, "segment_bytes = 4096"));
    let mut conn = gw.connect();
    for _ in 0..40 {
        conn.send(&chat("m1", false, &[]));
        assert_eq!(conn.read_response().status, 200);
    }
    wait_records(&dir, 40);
    gw.signal(libc::SIGTERM);
    gw.wait_exit(Duration::from_secs(10))
        .expect("gateway exits");
    assert!(segment(&dir, 3).exists(), "expected several segments");
    let (good, out) = verify(&dir);
    assert!(good, "{out}");
    dir
}

fn rewrite_lines(path: &Path, f: impl FnOnce(&mut Vec<String>)) {
    let mut lines: Vec<String> = std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    f(&mut lines);
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[test]
fn verify_detects_an_edited_byte() {
    let dir = sample_log();
    rewrite_lines(&segment(&dir, 2), |l| {
        l[3] = l[3].replacen("\"status\":200", "\"status\":201", 1)
    });
    let (good, out) = verify(&dir);
    assert!(!good);
    assert!(out.contains("audit-0000000002.jsonl line 5"), "{out}");
}

#[test]
fn verify_detects_a_deleted_record() {
    let dir = sample_log();
    rewrite_lines(&segment(&dir, 2), |l| {
        l.remove(2);
    });
    let (good, out) = verify(&dir);
    assert!(!good && out.contains("line 3"), "{out}");
}

#[test]
fn verify_detects_a_swapped_pair() {
    let dir = sample_log();
    rewrite_lines(&segment(&dir, 1), |l| l.swap(2, 3));
    let (good, out) = verify(&dir);
    assert!(!good && out.contains("chain broken"), "{out}");
}

#[test]
fn verify_detects_a_missing_segment() {
    let dir = sample_log();
    std::fs::remove_file(segment(&dir, 2)).unwrap();
    let (good, out) = verify(&dir);
    assert!(!good && out.contains("segment 2 is missing"), "{out}");
}

#[test]
fn verify_detects_records_cut_from_the_end() {
    let dir = sample_log();
    let last = (1..)
        .take_while(|n| segment(&dir, *n).exists())
        .last()
        .unwrap();
    std::fs::remove_file(segment(&dir, last)).unwrap();
    let (good, out) = verify(&dir);
    assert!(!good && out.contains("head.json"), "{out}");
}

#[test]
fn retention_keeps_the_chain_verifiable_and_export_selects() {
    let dir = sample_log();
    let last = (1..)
        .take_while(|n| segment(&dir, *n).exists())
        .last()
        .unwrap();
    let removed = sluice::audit::writer::apply_retention(&dir, Duration::ZERO, last).unwrap();
    assert_eq!(removed as u64, last - 1);
    assert!(!segment(&dir, 1).exists() && dir.join("anchor.json").exists());
    let (good, out) = verify(&dir);
    assert!(good, "after retention: {out}");
    let (status, csv, err) = run_sluice(
        &[
            "audit",
            "export",
            "--dir",
            dir.to_str().unwrap(),
            "--format",
            "csv",
        ],
        &[],
    );
    assert!(status.success(), "{err}");
    let mut rows = csv.lines();
    assert!(rows.next().unwrap().starts_with("ts,request_id,key,team"));
    assert!(rows.count() >= 1);
    let (status, jsonl, _) = run_sluice(
        &[
            "audit",
            "export",
            "--dir",
            dir.to_str().unwrap(),
            "--from",
            "2999-01-01T00:00:00Z",
        ],
        &[],
    );
    assert!(status.success());
    assert!(jsonl.is_empty(), "nothing is from the future");
}

#[test]
fn a_gateway_killed_under_load_loses_no_record_of_an_answer_a_client_received() {
    let mock = Mock::start();
    let dir = audit_dir();
    let mut gw = Gateway::start(&audited(&mock, &dir, ""));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let received = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let addr = gw.addr;
    let load: Vec<_> = (0..3)
        .map(|i| {
            let (stop, received) = (stop.clone(), received.clone());
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    n += 1;
                    let id = format!("crash-{i}-{n}");
                    let Ok(mut conn) = std::net::TcpStream::connect(addr).map(Conn::from_stream)
                    else {
                        continue;
                    };
                    if conn
                        .send_lossy(&chat("m1", i == 0, &[("x-request-id", &id)]))
                        .is_err()
                    {
                        continue;
                    }
                    // Only a complete answer counts as received.
                    if let Ok(resp) = conn.try_read_response() {
                        if resp.status == 200 {
                            received.lock().unwrap().push(id);
                        }
                    }
                }
            })
        })
        .collect();
    // Records lead received answers by the requests in flight (their last
    // byte waits for the record): wait for more than the 50 judged.
    wait_records(&dir, 100);
    gw.signal(libc::SIGKILL);
    gw.wait_exit(Duration::from_secs(10)).expect("killed");
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for t in load {
        t.join().unwrap();
    }
    let (good, out) = verify(&dir);
    assert!(good, "after SIGKILL: {out}");
    let logged: std::collections::HashSet<String> = records(&dir)
        .iter()
        .filter_map(|r| r["request_id"].as_str().map(str::to_owned))
        .collect();
    let received = received.lock().unwrap().clone();
    assert!(
        received.len() >= 50,
        "too few answers to judge: {}",
        received.len()
    );
    let lost: Vec<&String> = received.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "answers received whose records were lost: {lost:?}"
    );
    // And the next start continues the same chain.
    let gw = Gateway::start(&audited(&mock, &dir, ""));
    let n = records(&dir).len();
    assert_eq!(gw.request(&chat("m1", false, &[])).status, 200);
    wait_records(&dir, n + 1);
    drop(gw);
    let (good, out) = verify(&dir);
    assert!(good, "after restart: {out}");
}

#[test]
fn pii_findings_are_counted_in_the_record_never_their_values() {
    let mock = Mock::start();
    let dir = audit_dir();
    // detail = "redacted": content is kept, masked.
    let cfg = audited(&mock, &dir, "").section(
        "[pii]\ndefault_policy = \"standard\"\n\n[pii.policies.standard]\naction = \"mask\"\nentities = [\"email\", \"iban\"]\nscan_responses = true\n",
    );
    let cfg = Config {
        raw: cfg
            .raw
            .iter()
            .map(|r| r.replace("detail = \"metadata\"", "detail = \"redacted\""))
            .collect(),
        ..cfg
    };
    let gw = Gateway::start(&cfg);
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"Write to jan@example.org and ann@example.org about NL91ABNA0417164300"}]}"#;
    assert_eq!(
        gw.request(&post("/v1/chat/completions", body.as_bytes(), &[]))
            .status,
        200
    );
    let recs = wait_records(&dir, 1);
    assert_eq!(recs[0]["pii"]["email"], 2, "{}", recs[0]);
    assert_eq!(recs[0]["pii"]["iban"], 1);
    let kept = recs[0]["request"].to_string();
    assert!(
        kept.contains("[EMAIL]") && kept.contains("[IBAN]"),
        "redacted request: {kept}"
    );
    assert!(
        recs[0]["completion"].is_string(),
        "redacted answer kept: {}",
        recs[0]
    );
    let raw: String = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    assert!(
        !raw.contains("jan@example.org") && !raw.contains("NL91ABNA"),
        "a value reached the audit log"
    );
}

#[test]
fn a_blocked_request_is_recorded_with_its_reason() {
    let mock = Mock::start();
    let dir = audit_dir();
    let cfg = audited(&mock, &dir, "").section(
        "[pii]\ndefault_policy = \"strict\"\n\n[pii.policies.strict]\naction = \"block\"\nentities = [\"email\"]\n",
    );
    let gw = Gateway::start(&cfg);
    let body = r#"{"model":"m1","messages":[{"role":"user","content":"mail jan@example.org"}]}"#;
    assert_eq!(
        gw.request(&post("/v1/chat/completions", body.as_bytes(), &[]))
            .status,
        400
    );
    let recs = wait_records(&dir, 1);
    assert_eq!(recs[0]["status"], 400);
    assert_eq!(recs[0]["error"], "pii_detected");
    assert_eq!(mock.requests(), 0, "a blocked request reached the model");
}
