//! Routing and resilience over real sockets: balancers, retries,
//! breakers, active health checks, fallbacks, experiments, and an upstream
//! killed under load.

mod common;

use common::*;
use sluice::mock::MockDefaults;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn mock_with(defaults: MockDefaults) -> Mock {
    let (addr, stats) =
        sluice::mock::spawn("127.0.0.1:0".parse().unwrap(), defaults).expect("mock");
    Mock { addr, stats }
}

/// A model on several targets with a balancer, as raw TOML.
fn model_toml(name: &str, targets: &[(&str, u32)], balance: &str, extra: &str) -> String {
    let targets: Vec<String> = targets
        .iter()
        .map(|(u, w)| format!("{{ upstream = \"{u}\", weight = {w} }}"))
        .collect();
    format!(
        "[[models]]\nname = \"{name}\"\ntargets = [{}]\nbalance = \"{balance}\"\n{extra}\n",
        targets.join(", ")
    )
}

fn closed_port_url() -> String {
    format!("http://127.0.0.1:{}", free_port())
}

fn ok_chat(gw: &Gateway, model: &str, headers: &[(&str, &str)]) -> Response {
    let resp = gw.request(&chat(model, false, headers));
    assert_eq!(resp.status, 200, "body: {}", resp.text());
    resp
}

/// Sends `n` requests to a model on two mocks with `weights` and
/// `balance`; returns how many each mock received.
fn distribution(balance: &str, weights: (u32, u32), n: usize) -> (u64, u64) {
    let (a, b) = (Mock::start(), Mock::start());
    let cfg = Config::default()
        .upstream("a", &a.url())
        .upstream("b", &b.url())
        .section(&model_toml(
            "m",
            &[("a", weights.0), ("b", weights.1)],
            balance,
            "",
        ));
    let gw = Gateway::start(&cfg);
    for _ in 0..n {
        ok_chat(&gw, "m", &[]);
    }
    (a.requests(), b.requests())
}

#[test]
fn round_robin_spreads_evenly() {
    assert_eq!(distribution("round_robin", (1, 1), 20), (10, 10));
}

#[test]
fn weighted_follows_weights() {
    // Smooth weighted round robin is exact per worker.
    assert_eq!(distribution("weighted", (3, 1), 40), (30, 10));
}

#[test]
fn least_outstanding_avoids_the_busy_target() {
    let slow = mock_with(MockDefaults {
        first_delay_ms: 1500,
        ..MockDefaults::default()
    });
    let fast = Mock::start();
    let cfg = Config::default()
        .upstream("slow", &slow.url())
        .upstream("fast", &fast.url())
        .section(&model_toml(
            "lo",
            &[("slow", 1), ("fast", 1)],
            "least_outstanding",
            "",
        ));
    let gw = Arc::new(Gateway::start(&cfg));
    // Two long requests in flight: one lands on each target at first, and
    // the one on `slow` stays in flight for 1.5 s.
    let mut threads = Vec::new();
    for _ in 0..2 {
        let gw = gw.clone();
        threads.push(std::thread::spawn(move || {
            gw.request(&chat("lo", false, &[])).status
        }));
        std::thread::sleep(Duration::from_millis(100));
    }
    wait_until(
        "the slow upstream holds a request",
        Duration::from_secs(5),
        || slow.requests() >= 1,
    );
    // While it is busy, every new request goes to the idle target.
    for _ in 0..10 {
        ok_chat(&gw, "lo", &[]);
    }
    assert_eq!(
        slow.requests(),
        1,
        "least_outstanding sent work to the busy target"
    );
    for t in threads {
        assert_eq!(t.join().unwrap(), 200);
    }
}

#[test]
fn latency_ewma_prefers_the_fast_target() {
    let slow = mock_with(MockDefaults {
        first_delay_ms: 60,
        ..MockDefaults::default()
    });
    let fast = Mock::start();
    let cfg = Config::default()
        .upstream("slow", &slow.url())
        .upstream("fast", &fast.url())
        .section(&model_toml(
            "le",
            &[("slow", 1), ("fast", 1)],
            "latency_ewma",
            "",
        ));
    let gw = Gateway::start(&cfg);
    for _ in 0..40 {
        ok_chat(&gw, "le", &[]);
    }
    // Both are measured first; with two targets both are compared each
    // time, so the slow one gets its exploratory request and little more.
    assert!(
        slow.requests() <= 3,
        "slow target got {} of 40",
        slow.requests()
    );
    assert!(fast.requests() >= 37);
}

#[test]
fn dead_target_is_retried_elsewhere_then_its_breaker_opens() {
    let b = Mock::start();
    let cfg = Config::default()
        .upstream("dead", &closed_port_url())
        .upstream("b", &b.url())
        .section(&model_toml("m", &[("dead", 1), ("b", 1)], "round_robin", ""))
        .section("[resilience]\nretries = 2\nbackoff_ms = 1\nbreaker_failures = 2\nbreaker_cooldown_ms = 600000\n");
    let gw = Gateway::start(&cfg);
    for _ in 0..20 {
        ok_chat(&gw, "m", &[]);
    }
    assert_eq!(b.requests(), 20);
    // Two connect failures opened the breaker; after that no request
    // tried the dead target again.
    assert_eq!(
        gw.metric("sluice_retries_total", &[("reason", "connect_error")]),
        Some(2.0)
    );
    assert_eq!(
        gw.metric(
            "sluice_upstream_breaker_transitions_total",
            &[("upstream", "dead"), ("state", "open")]
        ),
        Some(1.0)
    );
    assert_eq!(
        gw.metric("sluice_upstream_healthy", &[("upstream", "dead")]),
        Some(0.0)
    );
}

#[test]
fn hanging_target_is_skipped_after_its_first_byte_timeout() {
    let hang = mock_with(MockDefaults {
        mode: "hang".into(),
        ..MockDefaults::default()
    });
    let b = Mock::start();
    let cfg = Config::default()
        .upstream("hang", &hang.url())
        .upstream_opt("hang", "first_byte_timeout_ms", "300")
        .upstream("b", &b.url())
        .section(&model_toml(
            "m",
            &[("hang", 1), ("b", 1)],
            "round_robin",
            "",
        ))
        .section("[resilience]\nretries = 1\nbackoff_ms = 1\n");
    let gw = Gateway::start(&cfg);
    for _ in 0..4 {
        let resp = ok_chat(&gw, "m", &[]);
        assert_eq!(resp.header("x-sluice-upstream"), Some("b"));
    }
    assert_eq!(b.requests(), 4);
    assert!(
        gw.metric("sluice_retries_total", &[("reason", "first_byte_timeout")])
            .unwrap_or(0.0)
            >= 1.0
    );
}

#[test]
fn upstream_503_is_retried_but_passed_on_when_nothing_is_left() {
    let failing = mock_with(MockDefaults {
        mode: "error".into(),
        status: 503,
        ..MockDefaults::default()
    });
    let b = Mock::start();
    let cfg = Config::default()
        .upstream("failing", &failing.url())
        .upstream("b", &b.url())
        .section(&model_toml(
            "two",
            &[("failing", 1), ("b", 1)],
            "round_robin",
            "",
        ))
        .section(&model_toml("one", &[("failing", 1)], "round_robin", ""))
        .section("[resilience]\nretries = 1\nbackoff_ms = 1\nbreaker_failures = 1000\n");
    let gw = Gateway::start(&cfg);
    for _ in 0..4 {
        ok_chat(&gw, "two", &[]);
    }
    // A model with no other target gets the upstream's own answer.
    let resp = gw.request(&chat("one", false, &[]));
    assert_eq!(resp.status, 503);
    assert!(
        resp.text().contains("mock upstream error 503"),
        "{}",
        resp.text()
    );
}

/// A `sluice mock-upstream` process, so that a test can kill and restart it.
struct MockProcess {
    child: Child,
    port: u16,
}

impl MockProcess {
    fn start(port: u16) -> MockProcess {
        let child = Command::new(sluice_bin())
            .args(["mock-upstream", "--listen", &format!("127.0.0.1:{port}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mock-upstream");
        let mock = MockProcess { child, port };
        wait_until("mock-upstream listens", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        mock
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for MockProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn breaker_probes_after_cooldown_and_closes_on_success() {
    let port = free_port();
    let mut a = MockProcess::start(port);
    let b = Mock::start();
    let cfg = Config::default()
        .upstream("a", &a.url())
        .upstream("b", &b.url())
        .section(&model_toml("m", &[("a", 1), ("b", 1)], "round_robin", ""))
        .section("[resilience]\nretries = 2\nbackoff_ms = 1\nbreaker_failures = 2\nbreaker_cooldown_ms = 400\n");
    let gw = Gateway::start(&cfg);
    a.kill();
    for _ in 0..6 {
        ok_chat(&gw, "m", &[]);
    }
    let open = [("upstream", "a"), ("state", "open")];
    assert_eq!(
        gw.metric("sluice_upstream_breaker_transitions_total", &open),
        Some(1.0)
    );
    // Back up; after the cooldown one probe goes through and closes it.
    let _a = MockProcess::start(port);
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..6 {
        ok_chat(&gw, "m", &[]);
    }
    let probe = [("upstream", "a"), ("state", "half_open")];
    let closed = [("upstream", "a"), ("state", "closed")];
    assert!(
        gw.metric("sluice_upstream_breaker_transitions_total", &probe)
            .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        gw.metric("sluice_upstream_breaker_transitions_total", &closed),
        Some(1.0)
    );
    assert_eq!(
        gw.metric("sluice_upstream_healthy", &[("upstream", "a")]),
        Some(1.0)
    );
}

#[test]
fn active_health_checks_take_a_target_out_and_back() {
    let port = free_port();
    let mut a = MockProcess::start(port);
    let b = Mock::start();
    let cfg = Config::default()
        .upstream("a", &a.url())
        .upstream_opt("a", "health_path", "\"/health\"")
        .upstream_opt("a", "health_interval_ms", "100")
        .upstream("b", &b.url())
        .section(&model_toml("m", &[("a", 1), ("b", 1)], "round_robin", ""));
    let gw = Gateway::start(&cfg);
    gw.wait_metric("sluice_upstream_healthy", &[("upstream", "a")], 1.0);
    a.kill();
    gw.wait_metric("sluice_upstream_healthy", &[("upstream", "a")], 0.0);
    let before = b.requests();
    for _ in 0..10 {
        ok_chat(&gw, "m", &[]);
    }
    // Out of rotation: no request tried it, so none needed a retry.
    assert_eq!(b.requests() - before, 10);
    assert_eq!(
        gw.metric("sluice_retries_total", &[("reason", "connect_error")]),
        None
    );
    let _a = MockProcess::start(port);
    gw.wait_metric("sluice_upstream_healthy", &[("upstream", "a")], 1.0);
}

#[test]
fn fallback_model_serves_when_every_target_fails() {
    let b = Mock::start();
    let cfg = Config::default()
        .upstream("dead", &closed_port_url())
        .upstream("b", &b.url())
        .section(&model_toml(
            "big",
            &[("dead", 1)],
            "round_robin",
            "fallbacks = [\"small\"]",
        ))
        .section(&model_toml(
            "small",
            &[("b", 1)],
            "round_robin",
            "upstream_model = \"org/Small\"",
        ))
        .section("[resilience]\nretries = 2\nbackoff_ms = 1\n");
    let gw = Gateway::start(&cfg);
    let resp = ok_chat(&gw, "big", &[]);
    assert_eq!(resp.header("x-sluice-model"), Some("small"));
    assert_eq!(resp.header("x-sluice-upstream"), Some("b"));
    assert_eq!(resp.json()["model"], "org/Small");
    // Counted once the answer is out, so wait for it.
    gw.wait_metric(
        "sluice_fallbacks_total",
        &[("model", "big"), ("served_by", "small")],
        1.0,
    );
    // A model whose targets all fail and that has no fallback: 502.
    let cfg = Config::default()
        .upstream("dead", &closed_port_url())
        .section(&model_toml("alone", &[("dead", 1)], "round_robin", ""));
    let gw = Gateway::start(&cfg);
    let resp = gw.request(&chat("alone", false, &[]));
    assert_openai_error(&resp, 502, "api_error", "upstream_unavailable");
}

#[test]
fn experiment_splits_by_weight_and_sticks_per_user() {
    let (a, b) = (Mock::start(), Mock::start());
    let cfg = Config::default()
        .upstream("a", &a.url())
        .upstream("b", &b.url())
        .model("variant-a", None, &["a"])
        .model("variant-b", None, &["b"])
        .section("[[experiments]]\nname = \"upgrade\"\nmodel = \"chat-default\"\nvariants = [{ model = \"variant-a\", weight = 70 }, { model = \"variant-b\", weight = 30 }]\nsticky = \"user\"\n");
    let gw = Gateway::start(&cfg);
    let n = 400;
    let mut conn = gw.connect();
    for i in 0..n {
        let body = serde_json::json!({"model": "chat-default", "user": format!("user-{i}"), "messages": [{"role": "user", "content": "hi"}]});
        conn.send(&post(
            "/v1/chat/completions",
            body.to_string().as_bytes(),
            &[],
        ));
        let resp = conn.read_response();
        assert_eq!(resp.status, 200);
        let variant = resp.header("x-sluice-model").unwrap_or_default().to_owned();
        assert!(
            variant == "variant-a" || variant == "variant-b",
            "{variant}"
        );
    }
    let share_a = a.requests() as f64 / n as f64;
    assert!(
        (share_a - 0.70).abs() < 0.07,
        "variant-a got {share_a:.3} of requests, weight 0.70"
    );
    // One user always lands on the same variant.
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let body = serde_json::json!({"model": "chat-default", "user": "alice", "messages": []});
        let resp = gw.request(&post(
            "/v1/chat/completions",
            body.to_string().as_bytes(),
            &[],
        ));
        seen.insert(resp.header("x-sluice-model").unwrap_or_default().to_owned());
    }
    assert_eq!(seen.len(), 1, "alice saw variants {seen:?}");
    let labels = [
        ("experiment", "upgrade"),
        ("variant", "variant-a"),
        ("status", "200"),
    ];
    assert!(
        gw.metric("sluice_experiment_requests_total", &labels)
            .unwrap_or(0.0)
            > 0.0
    );
}

#[test]
fn killing_an_upstream_under_load_fails_at_most_the_requests_in_flight() {
    let port = free_port();
    let mut a = MockProcess::start(port);
    let b = Mock::start();
    let cfg = Config::default()
        .upstream("a", &a.url())
        .upstream("b", &b.url())
        .section(&model_toml("m", &[("a", 1), ("b", 1)], "round_robin", ""))
        .section("[resilience]\nretries = 2\nbackoff_ms = 1\nbreaker_failures = 3\nbreaker_cooldown_ms = 600000\n");
    let gw = Arc::new(Gateway::start(&cfg));
    let clients = 4;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let after_kill = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut threads = Vec::new();
    for _ in 0..clients {
        let (gw, stop, failures, after_kill, killed) = (
            gw.clone(),
            stop.clone(),
            failures.clone(),
            after_kill.clone(),
            killed.clone(),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let was_killed = killed.load(Ordering::SeqCst);
                let mut conn = gw.connect();
                let ok = conn.send_lossy(&chat("m", false, &[])).is_ok()
                    && conn.try_read_response().is_ok_and(|r| r.status == 200);
                if !ok {
                    failures.fetch_add(1, Ordering::SeqCst);
                }
                if was_killed {
                    after_kill.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(500));
    a.kill();
    killed.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        t.join().unwrap();
    }
    assert!(
        after_kill.load(Ordering::SeqCst) > 20,
        "too few requests after the kill to judge"
    );
    let failed = failures.load(Ordering::SeqCst);
    assert!(
        failed <= clients,
        "{failed} requests failed; at most the {clients} in flight may"
    );
}

#[test]
fn fallbacks_obey_the_callers_regions() {
    use sha2::{Digest, Sha256};
    let (us, eu) = (Mock::start(), Mock::start());
    let key = "sk-eu-team-0001";
    let cfg = Config::default()
        .upstream("dead-eu", &closed_port_url())
        .upstream_opt("dead-eu", "region", "\"eu\"")
        .upstream("gpu-us", &us.url())
        .upstream_opt("gpu-us", "region", "\"us\"")
        .upstream("gpu-eu", &eu.url())
        .upstream_opt("gpu-eu", "region", "\"eu\"")
        .section(&model_toml("big", &[("dead-eu", 1)], "round_robin", "fallbacks = [\"small-us\", \"small-eu\"]"))
        .section(&model_toml("small-us", &[("gpu-us", 1)], "round_robin", ""))
        .section(&model_toml("small-eu", &[("gpu-eu", 1)], "round_robin", ""))
        .section(&format!(
            "[auth]\n\n[[teams]]\nname = \"eu-team\"\nallowed_models = [\"*\"]\nregions = [\"eu\"]\n\n[[keys]]\nid = \"eu-key\"\nteam = \"eu-team\"\nsha256 = \"{}\"\n",
            hex::encode(Sha256::digest(key.as_bytes()))
        ))
        .section("[resilience]\nretries = 2\nbackoff_ms = 1\n");
    let gw = Gateway::start(&cfg);
    let auth = format!("Bearer {key}");
    let resp = ok_chat(&gw, "big", &[("authorization", &auth)]);
    assert_eq!(resp.header("x-sluice-model"), Some("small-eu"));
    assert_eq!(
        us.requests(),
        0,
        "a fallback in a forbidden region was used"
    );
    assert_eq!(eu.requests(), 1);
}
