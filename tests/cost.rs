//! Cost control through a real `sluice serve`: token accounting and cost
//! (streams with and without the client asking for usage), budgets that
//! concurrent requests cannot overshoot, rate limits with their headers,
//! alert thresholds posted once each, spend that survives a restart.

mod common;

use common::pki::Pki;
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const KEY_A: &str = "sk-cost-a-0001";
const KEY_B: &str = "sk-cost-b-0001";

fn sha(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

/// `priced` costs 1000 per million tokens each way (0.001 per token), on
/// the mock. Team `t` with `team_extra` lines, key `a` (KEY_A, with
/// `key_extra`) and key `b` (KEY_B) of team `t`.
fn cost_config(mock: &Mock, team_extra: &str, key_extra: &str, extra: &str) -> Config {
    Config::single(&mock.url()).section(&format!(
        r#"[billing]
currency = "EUR"

[[models]]
name = "priced"
targets = [{{ upstream = "{UPSTREAM}" }}]
tier = "high"
price = {{ input_per_mtok = 1000.0, output_per_mtok = 1000.0 }}

[[teams]]
name = "t"
{team_extra}

[[keys]]
id = "a"
team = "t"
sha256 = "{}"
{key_extra}

[[keys]]
id = "b"
team = "t"
sha256 = "{}"

{extra}
"#,
        sha(KEY_A),
        sha(KEY_B)
    ))
}

fn body(stream: bool, max_tokens: u64, extra: Value) -> String {
    let mut v = json!({
        "model": "priced",
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": stream,
        "max_tokens": max_tokens,
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, val) in e {
            o.insert(k.clone(), val.clone());
        }
    }
    v.to_string()
}

fn ask(gw: &Gateway, key: &str, body: &str, headers: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {key}");
    let mut h = vec![("authorization", auth.as_str())];
    h.extend_from_slice(headers);
    gw.request(&post("/v1/chat/completions", body.as_bytes(), &h))
}

fn cost_of(gw: &Gateway) -> f64 {
    gw.metric("sluice_cost_total", &[("team", "t"), ("model", "priced")])
        .unwrap_or(0.0)
}

/// Waits until `read` gives `want` (settlement runs after the answer was
/// written, so a metric may lag the response by a moment).
fn settles_to(what: &str, want: f64, read: impl Fn() -> f64) {
    let start = Instant::now();
    loop {
        let got = read();
        if (got - want).abs() < 1e-6 {
            return;
        }
        assert!(
            start.elapsed() < POLL_TIMEOUT,
            "{what}: {got}, expected {want}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Tokens the mock charges for one `body(false, _, {})` request: a
/// quarter of the forwarded body's bytes in, one per word out.
fn actual_tokens(body: &str) -> f64 {
    ((body.len() / 4).max(1) + MOCK_CONTENT.split_whitespace().count()) as f64
}

/// Waits until the current minute has at least 15 s left, so that a
/// per-minute window does not roll over during a test.
fn away_from_minute_end() {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if s % 60 >= 45 {
        std::thread::sleep(Duration::from_secs(61 - s % 60));
    }
}

#[test]
fn usage_and_cost_of_plain_answers_and_streams() {
    let mock = Mock::start();
    let gw = Gateway::start(&cost_config(&mock, "", "", ""));
    let b = body(false, 50, json!({}));
    let r = ask(&gw, KEY_A, &b, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let cost = actual_tokens(&b) * 0.001;
    gw.wait_metric(
        "sluice_gen_ai_tokens_total",
        &[("model", "priced"), ("type", "output")],
        6.0,
    );
    settles_to("cost", cost, || cost_of(&gw));

    // A stream without stream_options: sluice asks for usage upstream and
    // drops the usage event before the client sees it.
    let mut conn = gw.connect();
    conn.send(&post(
        "/v1/chat/completions",
        body(true, 50, json!({})).as_bytes(),
        &[("authorization", &format!("Bearer {KEY_A}"))],
    ));
    let (head, events) = read_sse(&mut conn);
    assert_eq!(head.status, 200);
    assert!(events.iter().any(|e| e.contains("[DONE]")), "{events:?}");
    assert!(
        !events.iter().any(|e| e.contains("\"usage\"")),
        "the client did not ask for usage: {events:?}"
    );
    gw.wait_metric(
        "sluice_gen_ai_tokens_total",
        &[("model", "priced"), ("type", "output")],
        12.0,
    );

    // A stream that asks for usage gets it.
    let mut conn = gw.connect();
    conn.send(&post(
        "/v1/chat/completions",
        body(true, 50, json!({"stream_options": {"include_usage": true}})).as_bytes(),
        &[("authorization", &format!("Bearer {KEY_A}"))],
    ));
    let (_, events) = read_sse(&mut conn);
    assert!(
        events
            .iter()
            .any(|e| e.contains("\"usage\"") && e.contains("\"choices\":[]")),
        "{events:?}"
    );
    gw.wait_metric(
        "sluice_gen_ai_tokens_total",
        &[("model", "priced"), ("type", "output")],
        18.0,
    );
    wait_until("the cost of three answers", POLL_TIMEOUT, || {
        cost_of(&gw) > 3.0 * cost * 0.9
    });

    // What the upstream is sent: include_usage added to a stream.
    let r = ask(
        &gw,
        KEY_B,
        &body(true, 50, json!({})),
        &[("x-mock-mode", "echo")],
    );
    let sent = r.json()["echo"]["body"].as_str().unwrap_or("").to_string();
    let sent: Value = serde_json::from_str(&sent).expect("echoed body");
    assert_eq!(sent["stream_options"]["include_usage"], true, "{sent}");
    assert_eq!(sent["messages"][0]["content"], "Say hello");
}

#[test]
fn concurrent_requests_never_overshoot_a_budget() {
    let mock = Mock::start();
    let b = body(false, 10, json!({}));
    let per_request = actual_tokens(&b) * 0.001;
    let budget = 20.0 * per_request;
    let cfg = cost_config(
        &mock,
        &format!("budget = {{ amount = {budget}, period = \"day\" }}"),
        "",
        "",
    )
    .workers(2);
    let gw = Gateway::start(&cfg);
    let addr = gw.addr;
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..200)
        .map(|i| {
            let statuses = statuses.clone();
            let b = b.clone();
            std::thread::spawn(move || {
                let key = if i % 2 == 0 { KEY_A } else { KEY_B };
                let auth = format!("Bearer {key}");
                let mut conn = Conn::open(addr);
                let r = conn.request(&post(
                    "/v1/chat/completions",
                    b.as_bytes(),
                    &[("authorization", &auth)],
                ));
                let code = r.json()["error"]["code"].as_str().map(str::to_owned);
                statuses.lock().unwrap().push((r.status, code));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let statuses = statuses.lock().unwrap();
    let ok = statuses.iter().filter(|s| s.0 == 200).count();
    let refused = statuses
        .iter()
        .filter(|s| s.0 == 429 && s.1.as_deref() == Some("insufficient_quota"))
        .count();
    assert_eq!(ok + refused, 200, "{statuses:?}");
    assert!((10..=20).contains(&ok), "{ok} answered of a budget for 20");
    settles_to("spend", ok as f64 * per_request, || cost_of(&gw));
    let spent = cost_of(&gw);
    assert!(spent <= budget + 1e-9, "spent {spent} > budget {budget}");
    let ratio = gw
        .metric("sluice_budget_used_ratio", &[("team", "t")])
        .unwrap();
    assert!(ratio <= 1.0 && ratio > 0.4, "{ratio}");
    // Still refused afterwards: the budget is used up for today.
    let r = ask(&gw, KEY_A, &b, &[]);
    assert_openai_error(&r, 429, "insufficient_quota", "insufficient_quota");
}

#[test]
fn key_budget_applies_on_top_of_the_team() {
    let mock = Mock::start();
    let b = body(false, 10, json!({}));
    let per_request = actual_tokens(&b) * 0.001;
    let cfg = cost_config(
        &mock,
        "",
        &format!(
            "budget = {{ amount = {}, period = \"month\" }}",
            3.5 * per_request + 0.012
        ),
        "",
    );
    let gw = Gateway::start(&cfg);
    let mut ok = 0;
    for _ in 0..6 {
        if ask(&gw, KEY_A, &b, &[]).status == 200 {
            ok += 1;
        }
    }
    assert!((2..=3).contains(&ok), "{ok}");
    let r = ask(&gw, KEY_A, &b, &[]);
    assert_openai_error(&r, 429, "insufficient_quota", "insufficient_quota");
    // The other key of the team is not limited.
    assert_eq!(ask(&gw, KEY_B, &b, &[]).status, 200);
}

#[test]
fn rate_limits_with_headers() {
    let mock = Mock::start();
    let cfg = cost_config(&mock, "tpm = 400", "rpm = 3", "");
    let gw = Gateway::start(&cfg);
    away_from_minute_end();
    let b = body(false, 10, json!({}));
    for i in 0..3 {
        let r = ask(&gw, KEY_A, &b, &[]);
        assert_eq!(r.status, 200, "{}", r.text());
        // Successful answers carry what is left, as OpenAI's do.
        let left = (2 - i).to_string();
        assert_eq!(r.header("x-ratelimit-remaining-requests"), Some(&*left));
        assert!(r.header("x-ratelimit-remaining-tokens").is_some());
    }
    let r = ask(&gw, KEY_A, &b, &[]);
    let v = assert_openai_error(&r, 429, "rate_limit_error", "rate_limit_exceeded");
    assert!(v["message"]
        .as_str()
        .unwrap()
        .contains("requests per minute"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("0"));

    // Team tokens per minute: a request whose max_tokens cannot fit.
    let big = body(false, 1000, json!({}));
    let r = ask(&gw, KEY_B, &big, &[]);
    let v = assert_openai_error(&r, 429, "rate_limit_error", "rate_limit_exceeded");
    assert!(v["message"].as_str().unwrap().contains("tokens per minute"));
    let left: u64 = r
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(left < 400, "{left}");
    assert!(r.header("retry-after").is_some());
    let refusals = gw
        .metric(
            "sluice_limit_refusals_total",
            &[("scope", "key"), ("limit", "requests")],
        )
        .unwrap();
    assert_eq!(refusals, 1.0);
}

#[test]
fn concurrency_limit() {
    let mock = Mock::start();
    let cfg = cost_config(&mock, "max_concurrent = 1", "", "");
    let gw = Gateway::start(&cfg);
    let auth = format!("Bearer {KEY_A}");
    let mut slow = gw.connect();
    slow.send(&post(
        "/v1/chat/completions",
        body(true, 10, json!({})).as_bytes(),
        &[
            ("authorization", &auth),
            ("x-mock-chunks", "3"),
            ("x-mock-delay-ms", "400"),
        ],
    ));
    let (head, mut events) = slow.sse();
    assert_eq!(head.status, 200);
    let r = ask(&gw, KEY_B, &body(false, 10, json!({})), &[]);
    let v = assert_openai_error(&r, 429, "rate_limit_error", "rate_limit_exceeded");
    assert!(v["message"].as_str().unwrap().contains("concurrent"));
    assert_eq!(r.header("retry-after"), Some("1"));
    let rest = events.rest();
    assert!(rest.iter().any(|e| e.contains("[DONE]")), "{rest:?}");
    // The slot is free again once the stream ended.
    wait_until("the slot is released", POLL_TIMEOUT, || {
        ask(&gw, KEY_B, &body(false, 10, json!({})), &[]).status == 200
    });
}

#[test]
fn alert_thresholds_fire_once_each() {
    let mock = Mock::start();
    let (url, got) = webhook();
    let b = body(false, 10, json!({}));
    let per_request = actual_tokens(&b) * 0.001;
    // Thresholds after about 2 and 4 requests of a budget for 40.
    let budget = 40.0 * per_request;
    let cfg = cost_config(
        &mock,
        &format!("budget = {{ amount = {budget}, period = \"week\" }}\nalert_at = [0.05, 0.1]"),
        "",
        &format!("[alerts]\nwebhook = \"{url}\""),
    );
    let gw = Gateway::start(&cfg);
    for _ in 0..8 {
        assert_eq!(ask(&gw, KEY_A, &b, &[]).status, 200);
    }
    wait_until("two alerts", POLL_TIMEOUT, || {
        got.lock().unwrap().len() >= 2
    });
    std::thread::sleep(Duration::from_millis(500));
    let alerts = got.lock().unwrap().clone();
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let mut thresholds: Vec<f64> = alerts
        .iter()
        .map(|a| a["threshold"].as_f64().unwrap())
        .collect();
    thresholds.sort_by(f64::total_cmp);
    assert_eq!(thresholds, vec![0.05, 0.1]);
    let a = &alerts[0];
    assert_eq!(a["type"], "budget_threshold");
    assert_eq!(a["team"], "t");
    assert_eq!(a["currency"], "EUR");
    assert_eq!(a["period"], "week");
    settles_to("ratio", 0.2, || {
        gw.metric("sluice_budget_used_ratio", &[("team", "t")])
            .unwrap_or(0.0)
    });
}

#[test]
fn alerts_reach_an_https_webhook() {
    let mock = Mock::start();
    // The webhook: the mock behind TLS with a certificate of a private CA
    // that the gateway trusts through SSL_CERT_FILE.
    let pki = Pki::new("webhook");
    let (cert, key, _) = pki.issue("hook");
    let hook = Mock::start_tls(&cert, &key);
    let b = body(false, 10, json!({}));
    let budget = 40.0 * actual_tokens(&b) * 0.001;
    let cfg = cost_config(
        &mock,
        &format!("budget = {{ amount = {budget}, period = \"week\" }}\nalert_at = [0.05]"),
        "",
        &format!(
            "[alerts]\nwebhook = \"https://127.0.0.1:{}/alerts\"",
            hook.addr.port()
        ),
    )
    .env("SSL_CERT_FILE", pki.ca_pem.to_str().unwrap());
    let gw = Gateway::start(&cfg);
    for _ in 0..4 {
        assert_eq!(ask(&gw, KEY_A, &b, &[]).status, 200);
    }
    wait_until("the alert posted over TLS", POLL_TIMEOUT, || {
        hook.requests() >= 1
    });
    // Its answer was read as a success: no retry follows (the first one
    // would come 0.5 s later).
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(hook.requests(), 1);
}

#[test]
fn spend_survives_a_restart() {
    let mock = Mock::start();
    let db = temp_path("cost-store", "db");
    let b = body(false, 10, json!({}));
    let per_request = actual_tokens(&b) * 0.001;
    let budget = 5.0 * per_request;
    let cfg = cost_config(
        &mock,
        &format!("budget = {{ amount = {budget}, period = \"month\" }}"),
        "",
        &format!("[store]\npath = \"{}\"", db.display()),
    );
    let mut gw = Gateway::start(&cfg);
    let mut ok = 0;
    for _ in 0..3 {
        if ask(&gw, KEY_A, &b, &[]).status == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, 3);
    settles_to("ratio", 0.6, || {
        gw.metric("sluice_budget_used_ratio", &[("team", "t")])
            .unwrap_or(0.0)
    });
    let before = 0.6;
    gw.signal(libc::SIGTERM);
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
    drop(gw);

    let gw = Gateway::start(&cfg);
    let started = Instant::now();
    let after = loop {
        if let Some(v) = gw.metric("sluice_budget_used_ratio", &[("team", "t")]) {
            break v;
        }
        assert!(started.elapsed() < POLL_TIMEOUT, "no ratio after restart");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!((after - before).abs() < 1e-6, "{before} then {after}");
    // Two more fit at most, then the month's budget is used up.
    let mut more = 0;
    for _ in 0..4 {
        if ask(&gw, KEY_A, &b, &[]).status == 200 {
            more += 1;
        }
    }
    assert!(more <= 2, "{more} more after a restart with 3 of 5 spent");
    let r = ask(&gw, KEY_A, &b, &[]);
    assert_openai_error(&r, 429, "insufficient_quota", "insufficient_quota");
}

#[test]
fn a_stream_past_its_reservation_is_stopped_and_estimated() {
    let mock = Mock::start();
    let cfg = cost_config(
        &mock,
        "budget = { amount = 100.0, period = \"day\" }",
        "",
        "",
    );
    let gw = Gateway::start(&cfg);
    // max_tokens 2 reserves 8 bytes of text; the mock sends 33 in 3 events.
    let mut conn = gw.connect();
    conn.send(&post(
        "/v1/chat/completions",
        body(true, 2, json!({})).as_bytes(),
        &[
            ("authorization", &format!("Bearer {KEY_A}")),
            ("x-mock-chunks", "3"),
            ("x-mock-delay-ms", "100"),
        ],
    ));
    let (head, events) = read_sse(&mut conn);
    assert_eq!(head.status, 200);
    let last = events.last().cloned().unwrap_or_default();
    assert!(last.contains("insufficient_quota"), "{events:?}");
    assert!(!events.iter().any(|e| e.contains("[DONE]")), "{events:?}");
    // No usage arrived: the tokens were estimated, and the spend counted.
    gw.wait_metric("sluice_tokens_estimated_total", &[("model", "priced")], 1.0);
    wait_until("the stopped stream's cost", POLL_TIMEOUT, || {
        cost_of(&gw) > 0.0
    });
}

#[test]
fn a_reload_keeps_the_spend() {
    let mock = Mock::start();
    let b = body(false, 10, json!({}));
    let per_request = actual_tokens(&b) * 0.001;
    let budget = 5.0 * per_request;
    let cfg = cost_config(
        &mock,
        &format!("budget = {{ amount = {budget}, period = \"month\" }}"),
        "",
        "",
    );
    let gw = Gateway::start(&cfg);
    for _ in 0..3 {
        assert_eq!(ask(&gw, KEY_A, &b, &[]).status, 200);
    }
    let ratio = || {
        gw.metric("sluice_budget_used_ratio", &[("team", "t")])
            .unwrap_or(0.0)
    };
    settles_to("ratio", 0.6, ratio);
    // Same limits: the same counters.
    gw.signal(libc::SIGHUP);
    gw.wait_metric("sluice_config_reloads_total", &[("result", "ok")], 1.0);
    assert_eq!(ask(&gw, KEY_A, &b, &[]).status, 200);
    settles_to("ratio after a reload", 0.8, ratio);
    // A doubled budget carries the spend over.
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let text = text.replace(
        &format!("amount = {budget},"),
        &format!("amount = {},", 2.0 * budget),
    );
    std::fs::write(&gw.config_path, text).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_metric("sluice_config_reloads_total", &[("result", "ok")], 2.0);
    assert_eq!(ask(&gw, KEY_A, &b, &[]).status, 200);
    settles_to("ratio with a doubled budget", 0.5, ratio);
}
