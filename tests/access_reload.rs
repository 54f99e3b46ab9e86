//! Configuration reload through a real `sluice serve` under a small steady
//! load: SIGHUP and `POST /admin/reload` with valid files (a new model
//! appears, a key is added, the upstream list changes; an open keep-alive
//! connection keeps working) and invalid ones (refused, the old
//! configuration keeps serving); not one request of the load may fail.

mod common;

use common::*;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const TOKEN: &str = "admin-token-for-tests-0001";
const KEY: &str = "sk-reload-0001";
const NEW_KEY: &str = "sk-reload-0002";

fn sha(s: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()))
}

fn access(admin: SocketAddr, new_key: bool) -> String {
    let mut s = format!(
        r#"[admin]
listen = "{admin}"

[auth]

[[teams]]
name = "t"

[[keys]]
id = "k1"
team = "t"
sha256 = "{}"
"#,
        sha(KEY)
    );
    if new_key {
        s.push_str(&format!(
            "\n[[keys]]\nid = \"k2\"\nteam = \"t\"\nsha256 = \"{}\"\n",
            sha(NEW_KEY)
        ));
    }
    s
}

fn admin_reload(admin: SocketAddr) -> Response {
    let mut c = Conn::open(admin);
    c.send(
        format!(
            "POST /admin/reload HTTP/1.1\r\nhost: admin\r\nauthorization: Bearer {TOKEN}\r\ncontent-length: 0\r\n\r\n"
        )
        .as_bytes(),
    );
    c.read_response()
}

/// `threads` clients, each on one keep-alive connection, sending chat
/// requests for `m1` until stopped; every answer that is not a 200 is
/// recorded.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    handles: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, threads: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let handles = (0..threads)
            .map(|i| {
                let (stop, ok, failures) = (stop.clone(), ok.clone(), failures.clone());
                std::thread::spawn(move || {
                    let auth = format!("Bearer {KEY}");
                    let mut conn = Conn::open(addr);
                    while !stop.load(Ordering::Relaxed) {
                        let stream = i % 2 == 1;
                        conn.send(&chat("m1", stream, &[("authorization", &auth)]));
                        let result = if stream {
                            conn.try_read_head().and_then(|h| {
                                let mut r = SseReader::new(&mut conn);
                                let mut last = None;
                                while let Some(e) = r.try_next_event()? {
                                    last = Some(e);
                                }
                                match (h.status, last.as_deref()) {
                                    (200, Some("[DONE]")) => Ok(()),
                                    (s, l) => Err(format!("stream: {s} last event {l:?}")),
                                }
                            })
                        } else {
                            conn.try_read_response().and_then(|r| match r.status {
                                200 => Ok(()),
                                s => Err(format!("{s}: {}", r.text())),
                            })
                        };
                        match result {
                            Ok(()) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => {
                                failures.lock().unwrap().push(e);
                                conn = Conn::open(addr);
                            }
                        }
                        std::thread::sleep(Duration::from_millis(5));
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok,
            failures,
            handles,
        }
    }

    /// Stops the load; returns the number of successful requests after
    /// asserting there was no failure.
    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for h in self.handles {
            h.join().unwrap();
        }
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "failed requests under reload: {failures:?}"
        );
        self.ok.load(Ordering::Relaxed)
    }
}

#[test]
fn reload_valid_and_invalid_files_under_load() {
    let mock = Mock::start();
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let base = Config::single(&mock.url())
        .workers(2)
        .env("SLUICE_ADMIN_TOKEN", TOKEN);
    let gw = Gateway::start(&base.clone().section(&access(admin, false)));
    let render = |cfg: &Config| cfg.render(gw.addr, gw.metrics_addr);
    let auth = format!("Bearer {KEY}");
    let load = Load::start(gw.addr, 4);
    std::thread::sleep(Duration::from_millis(200));

    // A keep-alive connection opened before the reload.
    let mut kept = gw.connect();
    kept.send(&chat("m1", false, &[("authorization", &auth)]));
    assert_eq!(kept.read_response().status, 200);
    kept.send(&chat("m-new", false, &[("authorization", &auth)]));
    assert_eq!(kept.read_response().status, 404);

    // 1. SIGHUP with a valid file: a new model and a new key appear.
    let with_new = base
        .clone()
        .model("m-new", None, &[UPSTREAM])
        .section(&access(admin, true));
    std::fs::write(&gw.config_path, render(&with_new)).unwrap();
    gw.signal(libc::SIGHUP);
    gw.wait_metric("sluice_config_reloads_total", &[("result", "ok")], 1.0);
    std::thread::sleep(Duration::from_millis(200));
    kept.send(&chat("m-new", false, &[("authorization", &auth)]));
    let r = kept.read_response();
    assert_eq!(
        r.status,
        200,
        "the kept connection sees the new model: {}",
        r.text()
    );
    assert_ne!(
        r.header("connection"),
        Some("close"),
        "the connection stays open"
    );
    kept.send(&get("/v1/models", &[("authorization", &auth)]));
    assert!(kept.read_response().text().contains("m-new"));
    let r = gw.request(&chat(
        "m-new",
        false,
        &[("authorization", &format!("Bearer {NEW_KEY}"))],
    ));
    assert_eq!(r.status, 200, "the key added by the reload: {}", r.text());

    // 2. An invalid file: refused, counted, the old configuration serves.
    std::fs::write(&gw.config_path, "[[models]]\nname = 1\n").unwrap();
    let r = admin_reload(admin);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("reload_failed"), "{}", r.text());
    gw.signal(libc::SIGHUP);
    gw.wait_metric("sluice_config_reloads_total", &[("result", "error")], 2.0);
    kept.send(&chat("m-new", false, &[("authorization", &auth)]));
    assert_eq!(
        kept.read_response().status,
        200,
        "the old configuration stays"
    );

    // A change that needs a restart is refused too.
    let more_workers = with_new.clone().workers(3);
    std::fs::write(&gw.config_path, render(&more_workers)).unwrap();
    let r = admin_reload(admin);
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("server.workers"), "{}", r.text());

    // 3. The upstream list changes (pools and upstream state rebuilt); the
    //    removed key is refused.
    let mock2 = Mock::start();
    let changed = base
        .clone()
        .upstream("mock-b", &mock2.url())
        .model("m-new", None, &["mock-b"])
        .section(&access(admin, false));
    std::fs::write(&gw.config_path, render(&changed)).unwrap();
    let r = admin_reload(admin);
    assert_eq!(r.status, 200, "{}", r.text());
    std::thread::sleep(Duration::from_millis(200));
    kept.send(&chat("m-new", false, &[("authorization", &auth)]));
    assert_eq!(kept.read_response().status, 200);
    assert!(mock2.requests() >= 1, "m-new now goes to the new upstream");
    let r = gw.request(&chat(
        "m1",
        false,
        &[("authorization", &format!("Bearer {NEW_KEY}"))],
    ));
    assert_eq!(r.status, 401, "the key removed by the reload");

    std::thread::sleep(Duration::from_millis(300));
    let served = load.finish();
    assert!(served > 20, "the load ran ({served} requests)");
    assert_eq!(
        gw.metric("sluice_config_reloads_total", &[("result", "ok")]),
        Some(2.0)
    );
}
