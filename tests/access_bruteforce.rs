//! Brute-force protection through a real `sluice serve`: repeated
//! authentication failures from one address are slowed down, then the
//! address is refused (429 with Retry-After) even with a valid key; both
//! are counted.

mod common;

use common::*;
use std::time::{Duration, Instant};

const KEY: &str = "sk-good-0001";

#[test]
fn repeated_failures_are_slowed_then_refused() {
    let mock = Mock::start();
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, KEY.as_bytes()));
    let cfg = Config::single(&mock.url()).workers(2).section(&format!(
        "[auth]\n\n[[teams]]\nname = \"t\"\n\n[[keys]]\nid = \"k\"\nteam = \"t\"\nsha256 = \"{sha}\"\n"
    ));
    let gw = Gateway::start(&cfg);
    let wrong = |i: u32| {
        gw.request(&chat(
            "m1",
            false,
            &[("authorization", &format!("Bearer sk-guess-{i}"))],
        ))
    };
    // Ten free failures (sluice's FREE_FAILURES).
    for i in 0..10 {
        assert_error_code(&wrong(i), 401, "invalid_api_key");
    }
    // The next ones are delayed (50 ms per failure over the free ones).
    let t = Instant::now();
    assert_error_code(&wrong(10), 401, "invalid_api_key");
    assert!(
        t.elapsed() >= Duration::from_millis(45),
        "{:?}",
        t.elapsed()
    );
    let t = Instant::now();
    assert_error_code(&wrong(11), 401, "invalid_api_key");
    assert!(
        t.elapsed() >= Duration::from_millis(95),
        "{:?}",
        t.elapsed()
    );
    // Failures 13..19 in parallel (each waits on its own), then the 20th
    // starts the block.
    std::thread::scope(|s| {
        for i in 12..19 {
            let wrong = &wrong;
            s.spawn(move || assert_error_code(&wrong(i), 401, "invalid_api_key"));
        }
    });
    assert_error_code(&wrong(19), 401, "invalid_api_key");
    // Refused now, even with the right key, before it is looked at.
    let r = gw.request(&chat(
        "m1",
        false,
        &[("authorization", &format!("Bearer {KEY}"))],
    ));
    assert_openai_error(&r, 429, "rate_limit_error", "too_many_auth_failures");
    let retry: u64 = r
        .header("retry-after")
        .expect("retry-after")
        .parse()
        .unwrap();
    assert!((1..=300).contains(&retry), "retry-after {retry}");
    assert!(
        gw.metric("sluice_auth_throttled_total", &[("action", "delayed")])
            .is_some_and(|v| v >= 9.0),
        "{}",
        gw.metrics()
    );
    assert_eq!(
        gw.metric("sluice_auth_throttled_total", &[("action", "refused")]),
        Some(1.0)
    );
    // Health checks never need credentials and are not refused.
    assert_eq!(gw.request(&get("/health", &[])).status, 200);
}

fn assert_error_code(r: &Response, status: u16, code: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], code, "{}", r.text());
}
