//! Shared harness of sluice's integration tests: an in-process mock model
//! server per test, the gateway as a real child process on a generated
//! configuration, a small blocking HTTP/1.1 client (Content-Length,
//! chunked, SSE event by event) and a Prometheus text reader.
//!
//! Everything here fails loudly: a read that waits longer than
//! [`IO_TIMEOUT`] panics, because a hang is a failure.

#![allow(dead_code)]

pub mod pki;

use serde_json::Value;
use std::collections::HashSet;
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use sluice::mock::MockStats;

/// Longest a single socket read or write may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the gateway may take to answer /health after it was started.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline of polled conditions.
pub const POLL_TIMEOUT: Duration = Duration::from_secs(10);

pub const MOCK_CONTENT: &str = "Hello from the sluice mock model.";

// ---------------------------------------------------------------- utilities

/// A free local TCP port: bound on 127.0.0.1:0 and released. Ports handed
/// out by this process are never handed out twice.
pub fn free_port() -> u16 {
    static GIVEN: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let given = GIVEN.get_or_init(|| Mutex::new(HashSet::new()));
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = listener.local_addr().expect("local_addr").port();
        drop(listener);
        if given.lock().unwrap().insert(port) {
            return port;
        }
    }
}

/// A unique path under the system temp folder.
pub fn temp_path(tag: &str, ext: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!(
        "sluice-it-{}-{}-{}.{}",
        std::process::id(),
        n,
        tag,
        ext
    ))
}

/// Polls `cond` every 20 ms until it holds; panics naming `what` after
/// `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------- mock

/// The mock model server, in this test process, on its own port.
pub struct Mock {
    pub addr: SocketAddr,
    pub stats: Arc<MockStats>,
}

impl Mock {
    pub fn start() -> Mock {
        let (addr, stats) = sluice::mock::spawn(
            "127.0.0.1:0".parse().unwrap(),
            sluice::mock::MockDefaults::default(),
        )
        .expect("start the mock model server");
        Mock { addr, stats }
    }

    /// The mock behind TLS with this certificate chain and key (PEM), as
    /// `sluice mock-upstream --tls-cert --tls-key` runs it.
    pub fn start_tls(cert: &Path, key: &Path) -> Mock {
        let tls = sluice::tls::ServerTls::load(cert, key).expect("the mock's certificate");
        let (addr, stats) = sluice::mock::spawn(
            "127.0.0.1:0".parse().unwrap(),
            sluice::mock::MockDefaults {
                tls: Some(Arc::new(tls)),
                ..Default::default()
            },
        )
        .expect("start the mock model server");
        Mock { addr, stats }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn connections(&self) -> u64 {
        self.stats.connections.load(Ordering::SeqCst)
    }
    pub fn requests(&self) -> u64 {
        self.stats.requests.load(Ordering::SeqCst)
    }
    pub fn streams_started(&self) -> u64 {
        self.stats.streams_started.load(Ordering::SeqCst)
    }
    pub fn streams_completed(&self) -> u64 {
        self.stats.streams_completed.load(Ordering::SeqCst)
    }
    pub fn streams_cancelled(&self) -> u64 {
        self.stats.streams_cancelled.load(Ordering::SeqCst)
    }
}

// ---------------------------------------------------------------- configuration

#[derive(Clone, Debug)]
pub struct UpstreamCfg {
    pub name: String,
    pub url: String,
    /// Extra `key = value` lines (values are TOML literals).
    pub extra: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct ModelCfg {
    pub name: String,
    pub upstream_model: Option<String>,
    pub targets: Vec<String>,
}

/// A gateway configuration; rendered to TOML once ports are chosen.
#[derive(Clone, Debug)]
pub struct Config {
    pub workers: u32,
    pub pin_cores: bool,
    pub io: String,
    /// Extra `[server]` lines (values are TOML literals).
    pub server: Vec<(String, String)>,
    pub upstreams: Vec<UpstreamCfg>,
    pub models: Vec<ModelCfg>,
    /// Environment of the gateway process.
    pub env: Vec<(String, String)>,
    /// Verbatim TOML appended after everything else (sections such as
    /// `[auth]`, `[[teams]]`, `[[keys]]`); see [`Config::section`].
    pub raw: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            workers: 1,
            pin_cores: false,
            io: "auto".into(),
            server: Vec::new(),
            upstreams: Vec::new(),
            models: Vec::new(),
            env: Vec::new(),
            raw: Vec::new(),
        }
    }
}

/// Name of the upstream in [`Config::single`].
pub const UPSTREAM: &str = "mock-a";

impl Config {
    /// One upstream (`mock-a`, at `url`) and three models on it: `m1`
    /// (no rewrite), `m-rewrite` (upstream_model "org/Real-Model") and
    /// `embed-small`.
    pub fn single(url: &str) -> Config {
        Config::default()
            .upstream(UPSTREAM, url)
            .model("m1", None, &[UPSTREAM])
            .model("m-rewrite", Some("org/Real-Model"), &[UPSTREAM])
            .model("embed-small", None, &[UPSTREAM])
    }

    pub fn upstream(mut self, name: &str, url: &str) -> Self {
        self.upstreams.push(UpstreamCfg {
            name: name.into(),
            url: url.into(),
            extra: Vec::new(),
        });
        self
    }

    /// Sets `key = value` (a TOML literal) on upstream `name`.
    pub fn upstream_opt(mut self, name: &str, key: &str, value: &str) -> Self {
        let up = self
            .upstreams
            .iter_mut()
            .find(|u| u.name == name)
            .unwrap_or_else(|| panic!("no upstream {name} in the test config"));
        up.extra.push((key.into(), value.into()));
        self
    }

    pub fn model(mut self, name: &str, upstream_model: Option<&str>, targets: &[&str]) -> Self {
        self.models.push(ModelCfg {
            name: name.into(),
            upstream_model: upstream_model.map(Into::into),
            targets: targets.iter().map(|t| t.to_string()).collect(),
        });
        self
    }

    /// Sets `key = value` (a TOML literal) under `[server]`.
    pub fn server(mut self, key: &str, value: &str) -> Self {
        self.server.push((key.into(), value.into()));
        self
    }

    pub fn workers(mut self, n: u32) -> Self {
        self.workers = n;
        self
    }

    pub fn pin_cores(mut self, on: bool) -> Self {
        self.pin_cores = on;
        self
    }

    pub fn io(mut self, io: &str) -> Self {
        self.io = io.into();
        self
    }

    /// Appends verbatim TOML (whole sections) to the rendered file.
    pub fn section(mut self, toml: &str) -> Self {
        self.raw.push(toml.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn render(&self, listen: SocketAddr, metrics: SocketAddr) -> String {
        let q = |s: &str| serde_json::to_string(s).unwrap();
        let mut out = String::new();
        writeln!(out, "[server]").unwrap();
        writeln!(out, "listen = {}", q(&listen.to_string())).unwrap();
        writeln!(out, "workers = {}", self.workers).unwrap();
        writeln!(out, "pin_cores = {}", self.pin_cores).unwrap();
        writeln!(out, "io = {}", q(&self.io)).unwrap();
        for (k, v) in &self.server {
            writeln!(out, "{k} = {v}").unwrap();
        }
        writeln!(out, "\n[metrics]\nlisten = {}", q(&metrics.to_string())).unwrap();
        for u in &self.upstreams {
            writeln!(out, "\n[[upstreams]]").unwrap();
            writeln!(out, "name = {}", q(&u.name)).unwrap();
            writeln!(out, "url = {}", q(&u.url)).unwrap();
            for (k, v) in &u.extra {
                writeln!(out, "{k} = {v}").unwrap();
            }
        }
        for m in &self.models {
            writeln!(out, "\n[[models]]").unwrap();
            writeln!(out, "name = {}", q(&m.name)).unwrap();
            if let Some(um) = &m.upstream_model {
                writeln!(out, "upstream_model = {}", q(um)).unwrap();
            }
            let targets: Vec<String> = m
                .targets
                .iter()
                .map(|t| format!("{{ upstream = {} }}", q(t)))
                .collect();
            writeln!(out, "targets = [{}]", targets.join(", ")).unwrap();
        }
        for r in &self.raw {
            writeln!(out, "\n{r}").unwrap();
        }
        out
    }
}

// ---------------------------------------------------------------- gateway process

pub fn sluice_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sluice")
}

/// A `sluice serve` child process. Killed (SIGKILL) on drop unless it
/// already exited.
pub struct Gateway {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub config_path: PathBuf,
    pub stderr_path: PathBuf,
    exit: Option<ExitStatus>,
}

impl Gateway {
    /// Starts the gateway and waits until it answers /health; panics with
    /// its stderr when it does not.
    pub fn start(cfg: &Config) -> Gateway {
        match Gateway::try_start(cfg) {
            Ok(g) => g,
            Err(e) => panic!("the gateway did not start:\n{e}"),
        }
    }

    /// As [`Gateway::start`], returning the reason (with stderr) on failure.
    /// Retries on another port when the chosen one was taken meanwhile.
    pub fn try_start(cfg: &Config) -> Result<Gateway, String> {
        Gateway::try_start_probed(cfg, &plain_health_probe)
    }

    /// As [`Gateway::start`], with `probe(addr)` telling when the gateway
    /// is ready (e.g. `GET /health` over TLS).
    pub fn start_with_probe(cfg: &Config, probe: impl Fn(SocketAddr) -> bool) -> Gateway {
        match Gateway::try_start_probed(cfg, &probe) {
            Ok(g) => g,
            Err(e) => panic!("the gateway did not start:\n{e}"),
        }
    }

    fn try_start_probed(
        cfg: &Config,
        probe: &dyn Fn(SocketAddr) -> bool,
    ) -> Result<Gateway, String> {
        let mut last = String::new();
        for _ in 0..4 {
            match Gateway::try_start_once(cfg, probe) {
                Ok(g) => return Ok(g),
                Err(e) if e.contains("Address already in use") || e.contains("address in use") => {
                    last = e;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    fn try_start_once(cfg: &Config, probe: &dyn Fn(SocketAddr) -> bool) -> Result<Gateway, String> {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config_path = temp_path("gateway", "toml");
        std::fs::write(&config_path, cfg.render(addr, metrics_addr)).expect("write config");
        let stderr_path = temp_path("gateway-stderr", "log");
        let stderr = std::fs::File::create(&stderr_path).expect("create stderr file");
        let mut cmd = Command::new(sluice_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .env_remove("SLUICE_LOG_FORMAT");
        for (k, v) in &cfg.env {
            cmd.env(k, v);
        }
        // SAFETY: prctl in the forked child before exec, async-signal-safe.
        // The gateway dies with the test thread that started it, even if
        // the test process is killed before Drop runs.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn sluice serve");
        let mut gw = Gateway {
            child: Some(child),
            addr,
            metrics_addr,
            config_path,
            stderr_path,
            exit: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = gw.try_wait() {
                return Err(format!(
                    "sluice serve exited with {status} before it was ready; config:\n{}\nstderr:\n{}",
                    std::fs::read_to_string(&gw.config_path).unwrap_or_default(),
                    gw.stderr()
                ));
            }
            if probe(gw.addr) {
                return Ok(gw);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "sluice serve did not answer GET /health within {START_TIMEOUT:?}; stderr:\n{}",
                    gw.stderr()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("gateway child").id() as i32
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A new client connection to the gateway's listener.
    pub fn connect(&self) -> Conn {
        Conn::open(self.addr)
    }

    /// One request on a new connection.
    pub fn request(&self, raw: &[u8]) -> Response {
        let mut c = self.connect();
        c.send(raw);
        c.read_response()
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed", self.pid());
    }

    /// The exit status if the process has exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.exit = Some(status);
                }
            }
        }
        self.exit
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn metrics(&self) -> String {
        metrics(self.metrics_addr)
    }

    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        metric_value(&self.metrics(), name, labels)
    }

    /// Polls the metric until it equals `want`.
    pub fn wait_metric(&self, name: &str, labels: &[(&str, &str)], want: f64) {
        let mut last = None;
        let deadline = Instant::now() + POLL_TIMEOUT;
        loop {
            let text = self.metrics();
            last = metric_value(&text, name, labels).or(last);
            if last == Some(want) {
                return;
            }
            if Instant::now() >= deadline {
                let related: Vec<&str> = text.lines().filter(|l| l.starts_with(name)).collect();
                panic!(
                    "metric {name}{labels:?} is {last:?}, expected {want} (waited {POLL_TIMEOUT:?}); series of {name}:\n{}",
                    related.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Ready when `GET /health` in plain HTTP answers 200.
fn plain_health_probe(addr: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let mut conn = Conn::from_stream(stream);
    conn.send(&get("/health", &[]));
    conn.try_read_response().is_ok_and(|r| r.status == 200)
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.exit.is_none() && !matches!(child.try_wait(), Ok(Some(_))) {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        let _ = std::fs::remove_file(&self.config_path);
        if std::thread::panicking() {
            eprintln!(
                "---- gateway stderr ({}) ----\n{}",
                self.stderr_path.display(),
                self.stderr()
            );
        }
        let _ = std::fs::remove_file(&self.stderr_path);
    }
}

/// Runs the sluice binary with `args`; panics if it runs longer than 10 s.
pub fn run_sluice(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let out_path = temp_path("cli-stdout", "log");
    let err_path = temp_path("cli-stderr", "log");
    let mut cmd = Command::new(sluice_bin());
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::fs::File::create(&out_path).unwrap()))
        .stderr(Stdio::from(std::fs::File::create(&err_path).unwrap()));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn sluice");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "sluice {args:?} still running after 10 s; stderr:\n{}",
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = std::fs::read_to_string(&out_path).unwrap_or_default();
    let stderr = std::fs::read_to_string(&err_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    (status, stdout, stderr)
}

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

// ---------------------------------------------------------------- requests

/// A POST with a JSON body, its Content-Length and `headers`.
pub fn post(path: &str, body: &[u8], headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out =
        format!("POST {path} HTTP/1.1\r\nhost: sluice.test\r\ncontent-type: application/json\r\n");
    for (n, v) in headers {
        write!(out, "{n}: {v}\r\n").unwrap();
    }
    write!(out, "content-length: {}\r\n\r\n", body.len()).unwrap();
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

pub fn get(path: &str, headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = format!("GET {path} HTTP/1.1\r\nhost: sluice.test\r\n");
    for (n, v) in headers {
        write!(out, "{n}: {v}\r\n").unwrap();
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// A chat completion request body.
pub fn chat_body(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello"}],
        "stream": stream,
    })
    .to_string()
}

pub fn completion_body(model: &str, stream: bool) -> String {
    serde_json::json!({"model": model, "prompt": "Say hello", "stream": stream}).to_string()
}

pub fn chat(model: &str, stream: bool, headers: &[(&str, &str)]) -> Vec<u8> {
    post(
        "/v1/chat/completions",
        chat_body(model, stream).as_bytes(),
        headers,
    )
}

// ---------------------------------------------------------------- responses

#[derive(Debug, Clone)]
pub struct Head {
    pub status: u16,
    /// Names lowercased, in order.
    pub headers: Vec<(String, String)>,
}

impl Head {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n == name).count()
    }

    pub fn is_chunked(&self) -> bool {
        self.header("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
    }
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}): status {} body {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// Asserts an OpenAI error answer: status, JSON content type, and
/// `{"error":{"message","type","code","param"}}` with the given type and
/// code. Returns the `error` object.
pub fn assert_openai_error(resp: &Response, status: u16, kind: &str, code: &str) -> Value {
    assert_eq!(
        resp.status,
        status,
        "expected status {status} ({code}); got {} with body {:?}",
        resp.status,
        resp.text()
    );
    let ctype = resp.header("content-type").unwrap_or_default();
    assert!(
        ctype.starts_with("application/json"),
        "error answer content-type is {ctype:?}"
    );
    let v = resp.json();
    let err = v
        .get("error")
        .unwrap_or_else(|| panic!("no top-level \"error\" in {v}"))
        .clone();
    assert!(
        err.get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "error.message missing or empty in {v}"
    );
    assert_eq!(
        err.get("type").and_then(Value::as_str),
        Some(kind),
        "error.type in {v}"
    );
    assert_eq!(
        err.get("code").and_then(Value::as_str),
        Some(code),
        "error.code in {v}"
    );
    assert!(
        err.get("param")
            .is_some_and(|p| p.is_null() || p.is_string()),
        "error.param must be present (string or null) in {v}"
    );
    err
}

// ---------------------------------------------------------------- webhook

/// A webhook receiver: answers 200 to every POST and keeps the bodies.
pub fn webhook() -> (String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/alerts", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let sink = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let body = loop {
                let n = match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break None,
                    Ok(n) => n,
                };
                buf.extend_from_slice(&chunk[..n]);
                if let Some(end) = find(&buf, b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    if buf.len() >= end + 4 + len {
                        break Some(buf[end + 4..end + 4 + len].to_vec());
                    }
                }
            };
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
            if let Some(v) = body.and_then(|b| serde_json::from_slice(&b).ok()) {
                sink.lock().unwrap().push(v);
            }
        }
    });
    (url, got)
}

// ---------------------------------------------------------------- client connection

/// A blocking HTTP/1.1 client connection with its own read buffer, over
/// plain TCP or any other byte stream (a rustls `StreamOwned` for TLS).
pub struct Conn<S = TcpStream> {
    pub stream: S,
    buf: Vec<u8>,
}

impl<S: Read + Write> Conn<S> {
    /// A connection over an already set-up stream (e.g. TLS).
    pub fn over(stream: S) -> Conn<S> {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }
}

impl Conn {
    pub fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        Conn::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = stream.set_nodelay(true);
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Waits for the peer to close; returns the bytes that arrived before
    /// the close (a reset also counts as closed). Panics on timeout.
    pub fn read_until_closed(&mut self, timeout: Duration) -> Vec<u8> {
        self.stream.set_read_timeout(Some(timeout)).unwrap();
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    panic!(
                        "the connection was not closed within {timeout:?}; received {:?}",
                        String::from_utf8_lossy(&self.buf)
                    )
                }
                Err(_) => break, // reset
            }
        }
        self.stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        std::mem::take(&mut self.buf)
    }

    /// Closes the writing half (the peer reads end of stream).
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

impl<S: Read + Write> Conn<S> {
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write to the gateway: {e}"));
    }

    /// Sends, ignoring errors (the peer may already have closed).
    pub fn send_lossy(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    pub fn request(&mut self, bytes: &[u8]) -> Response {
        self.send(bytes);
        self.read_response()
    }

    /// Reads more bytes into the buffer; Ok(0) at end of stream.
    fn fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            match self.stream.read(&mut tmp) {
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(n);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn fill_or(&mut self, what: &str) -> Result<(), String> {
        match self.fill() {
            Ok(0) => Err(format!(
                "connection closed while reading {what} (had {:?})",
                String::from_utf8_lossy(&self.buf)
            )),
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                Err(format!(
                    "timed out after {IO_TIMEOUT:?} reading {what} (a hang is a failure); had {:?}",
                    String::from_utf8_lossy(&self.buf)
                ))
            }
            Err(e) => Err(format!("read error while reading {what}: {e}")),
        }
    }

    pub fn try_read_head(&mut self) -> Result<Head, String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                let text = String::from_utf8(raw[..end].to_vec())
                    .map_err(|_| "response head is not UTF-8".to_string())?;
                let mut lines = text.split("\r\n");
                let status_line = lines.next().unwrap_or_default();
                let mut parts = status_line.splitn(3, ' ');
                let version = parts.next().unwrap_or_default();
                if version != "HTTP/1.1" {
                    return Err(format!("bad status line {status_line:?}"));
                }
                let status: u16 = parts
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("bad status line {status_line:?}"))?;
                let mut headers = Vec::new();
                for line in lines {
                    let (n, v) = line
                        .split_once(':')
                        .ok_or_else(|| format!("bad header line {line:?}"))?;
                    headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                }
                return Ok(Head { status, headers });
            }
            self.fill_or("a response head")?;
        }
    }

    pub fn read_head(&mut self) -> Head {
        self.try_read_head().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Reads one chunk of a chunked body; None for the last chunk (its
    /// trailer section, which must be empty, is consumed too).
    pub fn try_read_chunk(&mut self) -> Result<Option<Vec<u8>>, String> {
        let line_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                break i;
            }
            self.fill_or("a chunk size line")?;
        };
        let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
        let size_hex = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .map_err(|_| format!("invalid chunk size line {line:?}"))?;
        if size == 0 {
            // Last chunk: "0\r\n" then an empty trailer section "\r\n".
            while self.buf.len() < line_end + 4 {
                self.fill_or("the end of a chunked body")?;
            }
            if &self.buf[line_end + 2..line_end + 4] != b"\r\n" {
                return Err(format!(
                    "trailers or garbage after the last chunk: {:?}",
                    String::from_utf8_lossy(&self.buf[line_end..])
                ));
            }
            self.buf.drain(..line_end + 4);
            return Ok(None);
        }
        let need = line_end + 2 + size + 2;
        while self.buf.len() < need {
            self.fill_or("a chunk")?;
        }
        if &self.buf[need - 2..need] != b"\r\n" {
            return Err(format!(
                "chunk of {size} bytes not followed by CRLF: {:?}",
                String::from_utf8_lossy(&self.buf[..need])
            ));
        }
        let data = self.buf[line_end + 2..need - 2].to_vec();
        self.buf.drain(..need);
        Ok(Some(data))
    }

    pub fn try_read_response(&mut self) -> Result<Response, String> {
        let head = self.try_read_head()?;
        let body = if head.status < 200 || head.status == 204 || head.status == 304 {
            Vec::new()
        } else if head.is_chunked() {
            let mut body = Vec::new();
            while let Some(chunk) = self.try_read_chunk()? {
                body.extend_from_slice(&chunk);
            }
            body
        } else if let Some(len) = head.header("content-length") {
            let n: usize = len
                .parse()
                .map_err(|_| format!("invalid content-length {len:?}"))?;
            while self.buf.len() < n {
                self.fill_or("a response body")?;
            }
            self.buf.drain(..n).collect()
        } else {
            // Delimited by close.
            loop {
                match self.fill() {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(format!("reading a close-delimited body: {e}")),
                }
            }
            std::mem::take(&mut self.buf)
        };
        Ok(Response {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    pub fn read_response(&mut self) -> Response {
        self.try_read_response().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts reading an SSE response: reads the head and returns it with
    /// an event reader (the body must be chunked).
    pub fn sse(&mut self) -> (Head, SseReader<'_, S>) {
        let head = self.read_head();
        (head, SseReader::new(self))
    }
}

/// Reads SSE events one at a time from a chunked response body, as they
/// arrive.
pub struct SseReader<'a, S = TcpStream> {
    conn: &'a mut Conn<S>,
    pending: Vec<u8>,
    ended: bool,
}

impl<'a, S: Read + Write> SseReader<'a, S> {
    pub fn new(conn: &'a mut Conn<S>) -> Self {
        SseReader {
            conn,
            pending: Vec::new(),
            ended: false,
        }
    }

    /// The `data` of the next event (data lines joined with '\n'); None
    /// once the chunked body ended cleanly. Panics on a framing error, a
    /// hang, or a body that ends in the middle of an event.
    pub fn next_event(&mut self) -> Option<String> {
        self.try_next_event().unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_next_event(&mut self) -> Result<Option<String>, String> {
        loop {
            if let Some((end, sep)) = event_end(&self.pending) {
                let raw: Vec<u8> = self.pending.drain(..end + sep).collect();
                let text = String::from_utf8(raw[..end].to_vec())
                    .map_err(|_| "an SSE event is not UTF-8".to_string())?;
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue; // a comment or a field-only event
                }
                return Ok(Some(data.join("\n")));
            }
            if self.ended {
                if self.pending.iter().all(|b| b.is_ascii_whitespace()) {
                    return Ok(None);
                }
                return Err(format!(
                    "the stream ended inside an event: {:?}",
                    String::from_utf8_lossy(&self.pending)
                ));
            }
            match self.conn.try_read_chunk()? {
                Some(chunk) => self.pending.extend_from_slice(&chunk),
                None => self.ended = true,
            }
        }
    }

    /// All remaining events, up to the end of the body.
    pub fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(e) = self.next_event() {
            out.push(e);
        }
        out
    }
}

fn event_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = find(buf, b"\n\n").map(|i| (i, 2));
    let crlf = find(buf, b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads a whole SSE response (head + events) on `conn`.
pub fn read_sse<S: Read + Write>(conn: &mut Conn<S>) -> (Head, Vec<String>) {
    let (head, mut reader) = conn.sse();
    let events = reader.rest();
    (head, events)
}

// ---------------------------------------------------------------- metrics

/// GET /metrics from the metrics listener.
pub fn metrics(addr: SocketAddr) -> String {
    let mut c = Conn::open(addr);
    c.send(&get("/metrics", &[]));
    let resp = c.read_response();
    assert_eq!(resp.status, 200, "GET /metrics: {}", resp.text());
    resp.text()
}

/// The value of `name` summed over the series whose labels include all of
/// `labels`; None when no series matches.
pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut total: Option<f64> = None;
    for line in text.lines() {
        if line.starts_with('#') || !line.starts_with(name) {
            continue;
        }
        let rest = &line[name.len()..];
        let (series_labels, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some((parsed, after)) = parse_labels(r) else {
                continue;
            };
            (parsed, after)
        } else if rest.starts_with(' ') {
            (Vec::new(), rest)
        } else {
            continue; // another metric with this prefix
        };
        let matches = labels
            .iter()
            .all(|(k, v)| series_labels.iter().any(|(sk, sv)| sk == k && sv == v));
        if !matches {
            continue;
        }
        let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        total = Some(total.unwrap_or(0.0) + v);
    }
    total
}

/// Parses `k="v",k2="v2"}` and returns the pairs and the text after `}`.
fn parse_labels(s: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b',' || bytes[i] == b' ') {
            i += 1;
        }
        if i >= bytes.len() {
            return None;
        }
        if bytes[i] == b'}' {
            return Some((out, &s[i + 1..]));
        }
        let eq = s[i..].find('=')? + i;
        let key = s[i..eq].trim().to_string();
        i = eq + 1;
        if bytes.get(i) != Some(&b'"') {
            return None;
        }
        i += 1;
        let mut value = String::new();
        loop {
            let c = *bytes.get(i)?;
            match c {
                b'\\' => {
                    let n = *bytes.get(i + 1)?;
                    value.push(match n {
                        b'n' => '\n',
                        other => other as char,
                    });
                    i += 2;
                }
                b'"' => {
                    i += 1;
                    break;
                }
                _ => {
                    let ch = s[i..].chars().next()?;
                    value.push(ch);
                    i += ch.len_utf8();
                }
            }
        }
        out.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_prometheus_text() {
        let text = "# HELP x y\nsluice_a_total{reason=\"x\",k=\"a\\\"b\"} 3\nsluice_a_total{reason=\"y\"} 2\nsluice_a_total_other 9\nsluice_b 1.5\n";
        assert_eq!(
            metric_value(text, "sluice_a_total", &[("reason", "x")]),
            Some(3.0)
        );
        assert_eq!(
            metric_value(text, "sluice_a_total", &[("k", "a\"b")]),
            Some(3.0)
        );
        assert_eq!(metric_value(text, "sluice_a_total", &[]), Some(5.0));
        assert_eq!(
            metric_value(text, "sluice_a_total", &[("reason", "z")]),
            None
        );
        assert_eq!(metric_value(text, "sluice_b", &[]), Some(1.5));
    }
}
