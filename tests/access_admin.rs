//! The admin API and the store through a real `sluice serve`: key
//! create/use/revoke reaching every worker within a second, expiry of
//! created keys, teams, usage reports (JSON and CSV), and keys and usage
//! surviving a restart.

mod common;

use common::*;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

const TOKEN: &str = "admin-token-for-tests-0001";
const STATIC_KEY: &str = "sk-static-0001";

struct Admin {
    addr: SocketAddr,
}

impl Admin {
    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Response {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut raw = format!(
            "{method} {path} HTTP/1.1\r\nhost: admin\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
            body.len()
        );
        for (n, v) in headers {
            raw.push_str(&format!("{n}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        raw.push_str(&body);
        let mut c = Conn::open(self.addr);
        c.send(raw.as_bytes());
        c.read_response()
    }

    fn authed(&self, method: &str, path: &str, body: Option<&Value>) -> Response {
        self.call(
            method,
            path,
            body,
            &[("authorization", &format!("Bearer {TOKEN}"))],
        )
    }
}

fn start(mock: &Mock, db: &Path, workers: u32) -> (Gateway, Admin) {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let sha = hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        STATIC_KEY.as_bytes(),
    ));
    let cfg = Config::single(&mock.url())
        .workers(workers)
        .env("SLUICE_ADMIN_TOKEN", TOKEN)
        .section(&format!(
            r#"[admin]
listen = "{admin}"

[store]
path = {:?}

[auth]

[[teams]]
name = "support"
allowed_models = ["m1"]

[[teams]]
name = "research"

[[keys]]
id = "static-1"
team = "research"
sha256 = "{sha}"
"#,
            db.display().to_string()
        ));
    (Gateway::start(&cfg), Admin { addr: admin })
}

fn use_key(gw: &Gateway, secret: &str) -> u16 {
    gw.request(&chat(
        "m1",
        false,
        &[("authorization", &format!("Bearer {secret}"))],
    ))
    .status
}

/// Every worker must see the change: several fresh connections in a row
/// (SO_REUSEPORT spreads them) all give `want`.
fn wait_all_workers(gw: &Gateway, secret: &str, want: u16, within: Duration) {
    let start = Instant::now();
    loop {
        if (0..8).all(|_| use_key(gw, secret) == want) {
            return;
        }
        assert!(
            start.elapsed() < within,
            "the key did not turn {want} on every worker within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn create_use_revoke_and_survive_a_restart() {
    let mock = Mock::start();
    let db = temp_path("store", "db");
    let (gw, admin) = start(&mock, &db, 2);

    // The admin token is required.
    assert_eq!(admin.call("GET", "/admin/keys", None, &[]).status, 401);
    assert_eq!(
        admin
            .call(
                "GET",
                "/admin/keys",
                None,
                &[("authorization", "Bearer wrong")]
            )
            .status,
        401
    );

    let created = admin.authed(
        "POST",
        "/admin/keys",
        Some(&json!({"team": "support", "user": "ann"})),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let v = created.json();
    let id = v["id"].as_str().unwrap().to_string();
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("sk-"), "{v}");
    wait_all_workers(&gw, &secret, 200, Duration::from_secs(1));
    // The team's rules apply to the new key.
    let resp = gw.request(&chat("m-rewrite", false, &[("x-api-key", &secret)]));
    assert_eq!(resp.status, 403, "{}", resp.text());

    // A second key to keep across the restart.
    let kept = admin.authed(
        "POST",
        "/admin/keys",
        Some(&json!({"team": "research", "id": "kept-1"})),
    );
    assert_eq!(kept.status, 201, "{}", kept.text());
    let kept_secret = kept.json()["secret"].as_str().unwrap().to_string();
    assert_eq!(use_key(&gw, &kept_secret), 200);
    // Same id twice, unknown team, bad expiry.
    assert_eq!(
        admin
            .authed(
                "POST",
                "/admin/keys",
                Some(&json!({"team": "research", "id": "kept-1"}))
            )
            .status,
        409
    );
    assert_eq!(
        admin
            .authed("POST", "/admin/keys", Some(&json!({"team": "nope"})))
            .status,
        400
    );
    assert_eq!(
        admin
            .authed(
                "POST",
                "/admin/keys",
                Some(&json!({"team": "support", "expires_at": "tomorrow"}))
            )
            .status,
        400
    );

    // Listing shows keys without their secrets.
    let list = admin.authed("GET", "/admin/keys", None);
    assert_eq!(list.status, 200);
    assert!(!list.text().contains(&secret), "a secret was listed");
    let ids: Vec<String> = list.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["static-1", id.as_str(), "kept-1"]);

    // Revoke: refused on every worker within a second.
    let revoked = admin.authed("DELETE", &format!("/admin/keys/{id}"), None);
    assert_eq!(revoked.status, 200, "{}", revoked.text());
    wait_all_workers(&gw, &secret, 401, Duration::from_secs(1));
    assert_eq!(
        admin
            .authed("DELETE", &format!("/admin/keys/{id}"), None)
            .status,
        404
    );
    assert_eq!(
        admin.authed("DELETE", "/admin/keys/static-1", None).status,
        409
    );

    // Teams.
    let teams = admin.authed("GET", "/admin/teams", None).json();
    assert_eq!(teams["data"][0]["name"], "support");
    assert_eq!(teams["data"][0]["models"], json!(["m1"]));
    assert_eq!(teams["data"][1]["keys"], 2, "{teams}");

    // An expired key is refused.
    let old = admin.authed(
        "POST",
        "/admin/keys",
        Some(&json!({"team": "research", "expires_at": "2020-01-01T00:00:00Z"})),
    );
    assert_eq!(old.status, 201);
    assert_eq!(use_key(&gw, old.json()["secret"].as_str().unwrap()), 401);

    // A graceful stop writes the pending usage.
    let mut gw = gw;
    gw.signal(libc::SIGTERM);
    assert!(gw
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let (gw, admin) = start(&mock, &db, 1);
    assert_eq!(
        use_key(&gw, &kept_secret),
        200,
        "a created key survives a restart"
    );
    assert_eq!(use_key(&gw, &secret), 401, "a revoked key stays revoked");
    assert_eq!(use_key(&gw, STATIC_KEY), 200);
    let usage = admin
        .authed("GET", "/admin/usage?group_by=key", None)
        .json();
    let by_key: Vec<(String, u64)> = usage["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["key"].as_str().unwrap().to_string(),
                r["requests"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(
        by_key.contains(&("kept-1".to_string(), 2)),
        "usage survives a restart: {usage}"
    );
}

#[test]
fn usage_reports_json_and_csv() {
    let mock = Mock::start();
    let db = temp_path("store-usage", "db");
    let (gw, admin) = start(&mock, &db, 1);
    for _ in 0..3 {
        assert_eq!(use_key(&gw, STATIC_KEY), 200);
    }
    let resp = gw.request(&post(
        "/v1/embeddings",
        br#"{"model":"embed-small","input":"x"}"#,
        &[("x-api-key", STATIC_KEY)],
    ));
    assert_eq!(resp.status, 200);
    let report = admin.authed(
        "GET",
        "/admin/usage?team=research&group_by=team,model",
        None,
    );
    assert_eq!(report.status, 200, "{}", report.text());
    let v = report.json();
    let rows = v["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{v}");
    assert_eq!(rows[1]["model"], "m1");
    assert_eq!(rows[1]["team"], "research");
    assert_eq!(rows[1]["requests"], 3);
    assert!(rows[1]["input_tokens"].as_u64().unwrap() > 0, "{v}");
    assert!(rows[1]["total_tokens"].as_u64().unwrap() > rows[1]["input_tokens"].as_u64().unwrap());

    let today = {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let r = admin
            .authed("GET", "/admin/usage?group_by=day", None)
            .json();
        assert_eq!(r["data"].as_array().unwrap().len(), 1, "{r} at {secs}");
        r["data"][0]["day"].as_str().unwrap().to_string()
    };
    let csv = admin.call(
        "GET",
        &format!("/admin/usage?from={today}&to={today}&group_by=day,key"),
        None,
        &[
            ("authorization", &format!("Bearer {TOKEN}")),
            ("accept", "text/csv"),
        ],
    );
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "day,key,requests,input_tokens,output_tokens,total_tokens"
    );
    assert!(
        lines[1].starts_with(&format!("{today},static-1,4,")),
        "{text}"
    );
    // Another day, another team: nothing.
    let empty = admin
        .authed(
            "GET",
            "/admin/usage?from=2000-01-01&to=2000-01-02&group_by=day",
            None,
        )
        .json();
    assert_eq!(empty["data"], json!([]));
    assert_eq!(
        admin
            .authed("GET", "/admin/usage?group_by=colour", None)
            .status,
        400
    );
}

#[test]
fn admin_refuses_to_start_without_its_token() {
    let mock = Mock::start();
    let admin = free_port();
    let cfg = Config::single(&mock.url()).section(&format!(
        "[admin]\nlisten = \"127.0.0.1:{admin}\"\ntoken_env = \"SLUICE_TEST_UNSET_TOKEN\""
    ));
    let err = Gateway::try_start(&cfg)
        .err()
        .expect("no admin token must refuse to start");
    assert!(err.contains("SLUICE_TEST_UNSET_TOKEN"), "{err}");
}
