//! `[cluster]` through real parts: a real `redis-server` (Debian's package;
//! `make deps-test` installs it) on an ephemeral port, and two real
//! `sluice serve` nodes sharing one budget or one rate limit. Checks the
//! bounds docs/cost.md states: leases never let the nodes together pass a
//! limit, Redis stopped mid-test leaves each node on its fallback share,
//! Redis back is reconciled with what the nodes used meanwhile; `tpm` is
//! shared and `max_concurrent` split between the live nodes; and a node
//! reaching Redis over TLS (`rediss://`, the server's CA trusted through
//! `SSL_CERT_FILE`).

mod common;

use common::pki::Pki;
use common::*;
use serde_json::json;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const KEY: &str = "sk-cluster-0001";

fn sha(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

// ---------------------------------------------------------------- redis-server

/// A `redis-server` of this test, without persistence, in its own temp
/// folder; killed on drop (also when the test panics).
struct Redis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Serving TLS only: certificate, key, and the CA's PEM (to trust).
    tls: Option<(PathBuf, PathBuf, Vec<u8>)>,
}

impl Redis {
    fn start() -> Redis {
        let mut r = Redis {
            port: free_port(),
            dir: temp_path("redis", "d"),
            child: None,
            tls: None,
        };
        std::fs::create_dir_all(&r.dir).unwrap();
        r.run();
        r
    }

    /// A server that speaks TLS only, with a certificate of `pki`.
    fn start_tls(pki: &Pki) -> Redis {
        let (cert, key, _) = pki.issue("redis");
        let mut r = Redis {
            port: free_port(),
            dir: temp_path("redis-tls", "d"),
            child: None,
            tls: Some((cert, key, std::fs::read(&pki.ca_pem).unwrap())),
        };
        std::fs::create_dir_all(&r.dir).unwrap();
        r.run();
        r
    }

    /// Starts the server on this guard's port (again).
    fn run(&mut self) {
        let mut cmd = Command::new("redis-server");
        match &self.tls {
            None => cmd.args(["--port", &self.port.to_string()]),
            Some((cert, key, _)) => cmd
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .args(["--tls-auth-clients", "no"]),
        };
        let child = cmd
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}); `make deps-test` installs it (apt-get install redis-server)")
            });
        self.child = Some(child);
        wait_until("redis-server answers PING", POLL_TIMEOUT, || {
            self.try_query::<String>(&mut redis::cmd("PING")).is_ok()
        });
    }

    /// Kills the server (its data is gone: no persistence).
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        match self.tls {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(_) => format!("rediss://localhost:{}", self.port),
        }
    }

    fn try_query<T: redis::FromRedisValue>(&self, cmd: &mut redis::Cmd) -> redis::RedisResult<T> {
        let client = match &self.tls {
            None => redis::Client::open(self.url())?,
            Some((_, _, ca)) => redis::Client::build_with_tls(
                self.url(),
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?,
        };
        let mut con = client.get_connection_with_timeout(Duration::from_secs(1))?;
        cmd.query(&mut con)
    }

    /// Field `field` of the one hash whose name matches `pattern`, as a number.
    fn hash_field(&self, pattern: &str, field: &str) -> u64 {
        let keys: Vec<String> = self
            .try_query(redis::cmd("KEYS").arg(pattern))
            .expect("KEYS");
        assert_eq!(keys.len(), 1, "keys matching {pattern}: {keys:?}");
        let v: Option<u64> = self
            .try_query(redis::cmd("HGET").arg(&keys[0]).arg(field))
            .expect("HGET");
        v.unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

// ---------------------------------------------------------------- nodes

/// A node's configuration: the mock, `priced` at 0.001 per token, team `t`
/// with `team` lines and key KEY, `[cluster]` with `cluster` lines.
fn node_config(mock: &Mock, redis: &Redis, node: &str, team: &str, cluster: &str) -> Config {
    Config::single(&mock.url()).section(&format!(
        r#"[billing]
currency = "EUR"

[cluster]
redis = "{}"
node_id = "{node}"
{cluster}

[[models]]
name = "priced"
targets = [{{ upstream = "{UPSTREAM}" }}]
price = {{ input_per_mtok = 1000.0, output_per_mtok = 1000.0 }}

[[teams]]
name = "t"
{team}

[[keys]]
id = "k"
team = "t"
sha256 = "{}"
"#,
        redis.url(),
        sha(KEY)
    ))
}

fn body() -> String {
    json!({
        "model": "priced",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 10,
    })
    .to_string()
}

/// Cost of one `body()` answer: a quarter of the body's bytes in, one
/// token per word of the mock's answer out, at 0.001 per token.
fn cost_of_one() -> f64 {
    ((body().len() / 4).max(1) + MOCK_CONTENT.split_whitespace().count()) as f64 * 0.001
}

/// The worst case the gateway reserves for one `body()`: bytes / 3 + 8
/// prompt tokens and `max_tokens` (docs/cost.md, Reservation).
fn reservation_of_one() -> f64 {
    ((body().len() / 3 + 8) + 10) as f64 * 0.001
}

/// Status and error code of one request on a new connection.
fn ask(addr: std::net::SocketAddr) -> (u16, Option<String>) {
    let mut conn = Conn::open(addr);
    let r = conn.request(&post(
        "/v1/chat/completions",
        body().as_bytes(),
        &[("authorization", &format!("Bearer {KEY}"))],
    ));
    let code = (r.status != 200)
        .then(|| r.json()["error"]["code"].as_str().map(str::to_owned))
        .flatten();
    (r.status, code)
}

fn spend(gw: &Gateway) -> f64 {
    gw.metric("sluice_cost_total", &[("team", "t"), ("model", "priced")])
        .unwrap_or(0.0)
}

/// Waits until the current minute has at least 20 s left, so that a rate
/// window does not turn during a test.
fn away_from_minute_end() {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if s % 60 >= 40 {
        std::thread::sleep(Duration::from_secs(61 - s % 60));
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn two_nodes_share_one_budget_under_concurrent_load() {
    let redis = Redis::start();
    let mock = Mock::start();
    let (hook, alerts) = webhook();
    let budget = 20.0 * cost_of_one();
    let team = format!(
        "budget = {{ amount = {budget}, period = \"day\" }}\nalert_at = [0.5]\n\n[alerts]\nwebhook = \"{hook}\""
    );
    let cluster = "lease_fraction = 0.1";
    let a = Gateway::start(&node_config(&mock, &redis, "a", &team, cluster));
    let b = Gateway::start(&node_config(&mock, &redis, "b", &team, cluster));
    a.wait_metric("sluice_cluster_redis_up", &[], 1.0);

    let results = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..160)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            let results = results.clone();
            std::thread::spawn(move || {
                let r = ask(addr);
                results.lock().unwrap().push((i % 2, r));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let results = results.lock().unwrap();
    let ok = results.iter().filter(|(_, r)| r.0 == 200).count();
    let refused = results
        .iter()
        .filter(|(_, r)| r.0 == 429 && r.1.as_deref() == Some("insufficient_quota"))
        .count();
    assert_eq!(ok + refused, 160, "{results:?}");
    // Which node wins the burst is a race (on a loaded machine one node can
    // lease all of it before the other's first lease arrives); what must
    // hold is the total, checked below against Redis and the budget.
    assert!(ok > 0, "{results:?}");
    wait_until("both nodes settled every answer", POLL_TIMEOUT, || {
        ((spend(&a) + spend(&b)) - ok as f64 * cost_of_one()).abs() < 1e-6
    });
    // Reservations of the burst held back some of the budget; requests
    // one at a time on both nodes use the rest, until both refuse.
    let mut more = 0;
    let mut refusing = [false, false];
    for i in 0..40 {
        let node = i % 2;
        match ask(if node == 0 { a.addr } else { b.addr }) {
            (200, _) => {
                more += 1;
                refusing[node] = false;
            }
            (429, Some(code)) if code == "insufficient_quota" => refusing[node] = true,
            other => panic!("{other:?}"),
        }
        if refusing == [true, true] {
            break;
        }
    }
    assert_eq!(refusing, [true, true], "the budget did not run out");
    let ok = ok + more;
    wait_until("both nodes settled every answer", POLL_TIMEOUT, || {
        ((spend(&a) + spend(&b)) - ok as f64 * cost_of_one()).abs() < 1e-6
    });
    // The bound of docs/cost.md: with Redis reachable the leased total
    // never passes the budget, so neither does the spend of all nodes.
    let total = spend(&a) + spend(&b);
    assert!(
        total <= budget + 1e-9,
        "spent {total} of a budget of {budget}"
    );
    // Both nodes refuse only when neither what they hold nor what the
    // cluster has left covers a reservation: less than two go unused.
    assert!(
        budget - total < 2.0 * reservation_of_one(),
        "{ok} answered: {} of the budget unused",
        budget - total
    );
    // Redis' books: what the nodes leased stays within the budget and
    // their usage is the spend.
    let nanos = |v: u64| v as f64 / 1e9;
    let leased = nanos(redis.hash_field("sluice:budget:day:*:team:t", "leased"));
    let used = nanos(redis.hash_field("sluice:budget:day:*:team:t", "used"));
    assert!(leased <= budget + 1e-9, "leased {leased} > budget {budget}");
    wait_until("Redis has every node's spend", POLL_TIMEOUT, || {
        (nanos(redis.hash_field("sluice:budget:day:*:team:t", "used")) - total).abs() < 1e-6
    });
    assert!(used <= total + 1e-9);
    // Each node's ratio counts the other's spend too.
    for gw in [&a, &b] {
        wait_until("the ratio of the whole cluster", POLL_TIMEOUT, || {
            let r = gw.metric("sluice_budget_used_ratio", &[("team", "t")]);
            r.is_some_and(|r| (r - total / budget).abs() < 1e-6)
        });
    }
    // The 0.5 threshold was crossed on both nodes and sent once.
    wait_until("the budget alert", POLL_TIMEOUT, || {
        !alerts.lock().unwrap().is_empty()
    });
    let fired = |gw: &Gateway| {
        gw.metric("sluice_budget_alerts_total", &[("team", "t")])
            .unwrap_or(0.0)
    };
    assert_eq!(fired(&a) + fired(&b), 1.0, "one alert for the cluster");
    let alerts = alerts.lock().unwrap();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["threshold"], 0.5);
}

#[test]
fn a_rate_limit_is_shared_by_the_nodes() {
    let redis = Redis::start();
    let mock = Mock::start();
    // rpm 20 with leases of 2 requests.
    let cluster = "lease_fraction = 0.1";
    let a = Gateway::start(&node_config(&mock, &redis, "a", "rpm = 20", cluster));
    let b = Gateway::start(&node_config(&mock, &redis, "b", "rpm = 20", cluster));
    away_from_minute_end();
    let mut ok = 0;
    let mut refused = 0;
    for i in 0..40 {
        match ask(if i % 2 == 0 { a.addr } else { b.addr }) {
            (200, _) => ok += 1,
            (429, Some(code)) if code == "rate_limit_exceeded" => refused += 1,
            other => panic!("request {i}: {other:?}"),
        }
    }
    assert_eq!(ok + refused, 40);
    // Never more than the limit; short of it by at most what the nodes
    // hold unused (at most two leases each: docs/cost.md).
    assert!(ok <= 20, "{ok} requests passed a shared rpm of 20");
    assert!(ok >= 20 - 2 * 2 * 2, "only {ok} of 20 passed");
    let leased = redis.hash_field("sluice:requests:*:team:t", "leased");
    assert!(leased <= 20, "leased {leased}");
}

#[test]
fn a_token_limit_is_shared_by_the_nodes() {
    let redis = Redis::start();
    let mock = Mock::start();
    // tpm of ten worst-case reservations; each answer then uses fewer
    // tokens than it reserved (the rest goes back to the window).
    let reserved = ((body().len() / 3 + 8) + 10) as u64;
    let used = ((body().len() / 4).max(1) + MOCK_CONTENT.split_whitespace().count()) as u64;
    let tpm = 10 * reserved;
    let team = format!("tpm = {tpm}");
    let cluster = "lease_fraction = 0.1";
    let a = Gateway::start(&node_config(&mock, &redis, "a", &team, cluster));
    let b = Gateway::start(&node_config(&mock, &redis, "b", &team, cluster));
    away_from_minute_end();
    let mut ok = 0;
    for i in 0..60 {
        match ask(if i % 2 == 0 { a.addr } else { b.addr }) {
            (200, _) => ok += 1,
            (429, Some(code)) if code == "rate_limit_exceeded" => {}
            other => panic!("request {i}: {other:?}"),
        }
    }
    // The tokens the two nodes let through stay within the one limit, and
    // the limit was reached (a node alone would have passed up to tpm).
    assert!(
        ok * used <= tpm,
        "{ok} answers of {used} tokens passed a shared tpm of {tpm}"
    );
    assert!(ok >= 5, "only {ok} passed");
    assert!(ok < 60, "nothing was refused");
    let leased = redis.hash_field("sluice:tokens:*:team:t", "leased");
    assert!(leased <= tpm, "leased {leased} of {tpm}");
}

#[test]
fn max_concurrent_is_split_between_the_live_nodes() {
    let redis = Redis::start();
    let mock = Mock::start();
    let team = "max_concurrent = 4";
    let a = Gateway::start(&node_config(&mock, &redis, "a", team, ""));
    let b = Gateway::start(&node_config(&mock, &redis, "b", team, ""));
    for gw in [&a, &b] {
        wait_until("both nodes live", POLL_TIMEOUT, || {
            gw.metric("sluice_cluster_nodes", &[]) == Some(2.0)
        });
    }
    // Two slow streams fill node a's half; a third request on a is
    // refused although the team has only two in flight, and b still has
    // its own half.
    let mut body: serde_json::Value = serde_json::from_str(&body()).unwrap();
    body["stream"] = json!(true);
    let slow = post(
        "/v1/chat/completions",
        body.to_string().as_bytes(),
        &[
            ("authorization", &format!("Bearer {KEY}")),
            ("x-mock-chunks", "3"),
            ("x-mock-delay-ms", "700"),
        ],
    );
    let (mut first, mut second) = (a.connect(), a.connect());
    first.send(&slow);
    let (head, _events) = first.sse();
    assert_eq!(head.status, 200);
    second.send(&slow);
    let (head, _more) = second.sse();
    assert_eq!(head.status, 200);
    assert_eq!(ask(a.addr), (429, Some("rate_limit_exceeded".into())));
    assert_eq!(ask(b.addr).0, 200);
}

#[test]
fn redis_down_falls_back_to_the_share_and_back_reconciles() {
    let mut redis = Redis::start();
    let mock = Mock::start();
    let cluster = "lease_fraction = 0.1\nfallback_share = 0.5";
    let a = Gateway::start(&node_config(&mock, &redis, "a", "rpm = 40", cluster));
    let b = Gateway::start(&node_config(&mock, &redis, "b", "rpm = 40", cluster));
    away_from_minute_end();
    // With Redis: a few requests on each node take leases.
    for gw in [&a, &b, &a, &b] {
        assert_eq!(ask(gw.addr).0, 200);
    }
    let held = |redis: &Redis, node: &str| {
        redis.hash_field("sluice:requests:*:team:t", &format!("held:{node}"))
    };
    let (held_a, held_b) = (held(&redis, "a"), held(&redis, "b"));
    let leased = redis.hash_field("sluice:requests:*:team:t", "leased");
    assert!(leased <= 40 && held_a + held_b == leased);

    redis.stop();
    for gw in [&a, &b] {
        gw.wait_metric("sluice_cluster_redis_up", &[], 0.0);
        gw.wait_metric("sluice_cluster_fallback", &[], 1.0);
        assert!(
            gw.stderr().contains("Redis unreachable"),
            "no log line: {}",
            gw.stderr()
        );
    }
    // Each node keeps serving alone, up to what it held plus its share
    // (0.5) of what the cluster had not leased out when it last looked:
    // at least the share of what was free at the end, at most the share of
    // all the others did not hold.
    let mut served = Vec::new();
    for (gw, held) in [(&a, held_a), (&b, held_b)] {
        let mut ok = 2; // before the outage
        for _ in 0..40 {
            match ask(gw.addr) {
                (200, _) => ok += 1,
                (429, Some(code)) if code == "rate_limit_exceeded" => {}
                other => panic!("{other:?}"),
            }
        }
        let low = held + (40 - leased) / 2;
        let high = held + (40 - held) / 2;
        assert!(
            (low..=high).contains(&ok),
            "served {ok} this minute; fallback allows {low}..={high}"
        );
        served.push(ok);
    }

    // Redis back (empty: no persistence): both reconnect and fill it with
    // what they used this minute, so the cluster's count is true again.
    redis.run();
    for gw in [&a, &b] {
        gw.wait_metric("sluice_cluster_redis_up", &[], 1.0);
        gw.wait_metric("sluice_cluster_fallback", &[], 0.0);
    }
    wait_until("the nodes' usage is back in Redis", POLL_TIMEOUT, || {
        redis
            .try_query::<Vec<String>>(redis::cmd("KEYS").arg("sluice:requests:*:team:t"))
            .is_ok_and(|k| k.len() == 1)
            && held(&redis, "a") >= served[0]
            && held(&redis, "b") >= served[1]
    });
    let field = |f: &str| redis.hash_field("sluice:requests:*:team:t", f);
    assert_eq!(field("used:a"), served[0]);
    assert_eq!(field("used:b"), served[1]);
    assert_eq!(field("used"), served[0] + served[1]);
    // A node that reconciled before the other may have taken one more
    // top-up meanwhile (at most two leases of 4: docs/cost.md).
    assert!(field("leased") <= field("used") + 2 * 2 * 4);
}

#[test]
fn spend_survives_a_restart_and_a_drain_gives_leases_back() {
    let redis = Redis::start();
    let mock = Mock::start();
    let store = temp_path("cluster-store", "db");
    let team = format!(
        "budget = {{ amount = {}, period = \"month\" }}\n\n[store]\npath = \"{}\"",
        100.0 * cost_of_one(),
        store.display()
    );
    let cfg = node_config(&mock, &redis, "a", &team, "lease_fraction = 0.1");
    let mut a = Gateway::start(&cfg);
    for _ in 0..5 {
        assert_eq!(ask(a.addr).0, 200);
    }
    wait_until("five answers settled", POLL_TIMEOUT, || {
        (spend(&a) - 5.0 * cost_of_one()).abs() < 1e-6
    });
    a.signal(libc::SIGTERM);
    assert!(a.wait_exit(POLL_TIMEOUT).is_some_and(|s| s.success()));
    // The drain gave back everything unused: the node holds its spend.
    let field = |f: &str| redis.hash_field("sluice:budget:month:*:team:t", f);
    let spent = 5.0 * cost_of_one();
    assert!((field("used:a") as f64 / 1e9 - spent).abs() < 1e-6);
    assert_eq!(field("held:a"), field("used:a"));
    assert_eq!(field("leased"), field("used:a"));

    // Restarted with the same store and node id: the spend is neither lost
    // nor counted twice.
    let a = Gateway::start(&cfg);
    wait_until("the ratio after the restart", POLL_TIMEOUT, || {
        a.metric("sluice_budget_used_ratio", &[("team", "t")])
            .is_some_and(|r| (r - 0.05).abs() < 1e-6)
    });
    assert_eq!(ask(a.addr).0, 200);
    wait_until("the sixth answer in Redis", POLL_TIMEOUT, || {
        (field("used") as f64 / 1e9 - 6.0 * cost_of_one()).abs() < 1e-6
    });
    drop(a);
    let _ = std::fs::remove_file(&store);
}

#[test]
fn a_reload_that_changes_the_budget_keeps_the_cluster_books() {
    let redis = Redis::start();
    let mock = Mock::start();
    let team = |amount: f64| format!("budget = {{ amount = {amount}, period = \"day\" }}");
    let cluster = "lease_fraction = 0.1";
    let small = 10.0 * cost_of_one();
    let a = Gateway::start(&node_config(&mock, &redis, "a", &team(small), cluster));
    for _ in 0..3 {
        assert_eq!(ask(a.addr).0, 200);
    }
    // Settled before the reload: a settlement that lands on the replaced
    // counters is not carried over (docs/cost.md, Reloads).
    wait_until("three answers settled", POLL_TIMEOUT, || {
        (spend(&a) - 3.0 * cost_of_one()).abs() < 1e-6
    });
    // The budget doubles (new counters for the team, same books in Redis).
    let cfg = node_config(&mock, &redis, "a", &team(2.0 * small), cluster);
    std::fs::write(&a.config_path, cfg.render(a.addr, a.metrics_addr)).unwrap();
    a.signal(libc::SIGHUP);
    a.wait_metric("sluice_config_reloads_total", &[("result", "ok")], 1.0);
    for _ in 0..12 {
        assert_eq!(ask(a.addr).0, 200, "within the doubled budget");
    }
    let spent = 15.0 * cost_of_one();
    wait_until(
        "the spend of both configurations in Redis",
        POLL_TIMEOUT,
        || {
            (redis.hash_field("sluice:budget:day:*:team:t", "used") as f64 / 1e9 - spent).abs()
                < 1e-6
        },
    );
    wait_until("the ratio against the new budget", POLL_TIMEOUT, || {
        a.metric("sluice_budget_used_ratio", &[("team", "t")])
            .is_some_and(|r| (r - spent / (2.0 * small)).abs() < 1e-6)
    });
    // A change of [cluster] itself needs a restart.
    let text = cfg
        .render(a.addr, a.metrics_addr)
        .replace("node_id = \"a\"", "node_id = \"z\"");
    std::fs::write(&a.config_path, text).unwrap();
    a.signal(libc::SIGHUP);
    a.wait_metric("sluice_config_reloads_total", &[("result", "error")], 1.0);
    assert!(a.stderr().contains("[cluster] changed"), "{}", a.stderr());
}

#[test]
fn bad_cluster_settings_are_refused() {
    let path = temp_path("cluster-bad", "toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[cluster]\nredis = \"http://127.0.0.1:6379\"\nlease_fraction = 0.0\nfallback_share = 1.5\n",
    )
    .unwrap();
    let (status, _, stderr) = run_sluice(&["check-config", path.to_str().unwrap()], &[]);
    assert!(!status.success());
    for key in [
        "cluster.redis",
        "cluster.lease_fraction",
        "cluster.fallback_share",
    ] {
        assert!(stderr.contains(key), "{key} not named: {stderr}");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_node_reaches_redis_over_tls() {
    let pki = Pki::new("redis");
    let redis = Redis::start_tls(&pki);
    let mock = Mock::start();
    // The system's roots do not know the test CA; SSL_CERT_FILE replaces
    // them (rustls-native-certs), as an operator would for a private CA.
    let cfg = node_config(&mock, &redis, "a", "rpm = 20", "lease_fraction = 0.1")
        .env("SSL_CERT_FILE", pki.ca_pem.to_str().unwrap());
    away_from_minute_end();
    let a = Gateway::start(&cfg);
    for i in 0..3 {
        assert_eq!(ask(a.addr).0, 200, "request {i}");
    }
    // The node leased its requests from the TLS-only server: without the
    // TLS link it would run on its fallback share and lease nothing.
    wait_until("a lease in Redis", POLL_TIMEOUT, || {
        redis
            .try_query::<Vec<String>>(redis::cmd("KEYS").arg("sluice:requests:*:team:t"))
            .is_ok_and(|k| k.len() == 1)
    });
    let leased = redis.hash_field("sluice:requests:*:team:t", "leased");
    assert!((3..=20).contains(&leased), "leased {leased}");
}
