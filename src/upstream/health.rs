//! What every worker knows of every upstream, shared as atomics: requests
//! in flight (for `least_outstanding`), time to first byte (decayed, for
//! `latency_ewma`), the active health verdict, the model server's own queue
//! length, and the circuit breaker. Also the one background thread that
//! runs the active health checks and reads model servers' load.

use super::UpstreamSpec;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// Consecutive failed or passed checks that flip the health verdict.
const UNHEALTHY_AFTER: u32 = 2;
const HEALTHY_AFTER: u32 = 2;
/// Weight of a new sample in the time-to-first-byte average.
const EWMA_ALPHA: f64 = 0.2;

/// A breaker's state change, for logs, metrics and the alert webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerChange {
    Opened,
    Probing,
    Closed,
}

impl BreakerChange {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerChange::Opened => "open",
            BreakerChange::Probing => "half_open",
            BreakerChange::Closed => "closed",
        }
    }
}

/// Whether a request may go to an upstream now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Yes,
    /// Yes, as the one probe of a breaker whose cooldown has passed.
    Probe,
    No,
}

pub struct UpstreamState {
    pub inflight: AtomicU32,
    /// Decayed time to first byte in microseconds; 0 = never measured.
    ttfb_us: AtomicU64,
    healthy: AtomicBool,
    check_streak: AtomicU32,
    /// Requests waiting inside the model server, from its /metrics.
    pub server_queue: AtomicU32,
    breaker: AtomicU8,
    failures: AtomicU32,
    opened_at_ms: AtomicU64,
    origin: Instant,
}

impl UpstreamState {
    fn new(origin: Instant) -> Self {
        Self {
            inflight: AtomicU32::new(0),
            ttfb_us: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            check_streak: AtomicU32::new(0),
            server_queue: AtomicU32::new(0),
            breaker: AtomicU8::new(CLOSED),
            failures: AtomicU32::new(0),
            opened_at_ms: AtomicU64::new(0),
            origin,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    pub fn ttfb_us(&self) -> u64 {
        self.ttfb_us.load(Relaxed)
    }

    /// Load as `least_outstanding` sees it.
    pub fn load(&self) -> u32 {
        self.inflight.load(Relaxed) + self.server_queue.load(Relaxed)
    }

    pub fn record_ttfb(&self, sample: Duration) {
        let sample = sample.as_micros().max(1) as f64;
        let _ = self.ttfb_us.fetch_update(Relaxed, Relaxed, |old| {
            let next = if old == 0 {
                sample
            } else {
                old as f64 * (1.0 - EWMA_ALPHA) + sample * EWMA_ALPHA
            };
            Some(next.max(1.0) as u64)
        });
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    /// Asks the breaker; an open breaker whose cooldown has passed lets
    /// exactly one caller through as its probe.
    pub fn admit(&self, cooldown: Duration) -> (Admission, Option<BreakerChange>) {
        match self.breaker.load(Relaxed) {
            CLOSED => (Admission::Yes, None),
            OPEN if self.now_ms()
                >= self.opened_at_ms.load(Relaxed) + cooldown.as_millis() as u64 =>
            {
                match self
                    .breaker
                    .compare_exchange(OPEN, HALF_OPEN, Relaxed, Relaxed)
                {
                    Ok(_) => (Admission::Probe, Some(BreakerChange::Probing)),
                    Err(_) => (Admission::No, None),
                }
            }
            _ => (Admission::No, None),
        }
    }

    /// Whether the breaker would admit a request (without taking a probe).
    pub fn may_admit(&self, cooldown: Duration) -> bool {
        match self.breaker.load(Relaxed) {
            CLOSED => true,
            OPEN => self.now_ms() >= self.opened_at_ms.load(Relaxed) + cooldown.as_millis() as u64,
            _ => false,
        }
    }

    /// Records an attempt's result; returns the breaker's change, if any.
    pub fn record(&self, success: bool, failures_to_open: u32) -> Option<BreakerChange> {
        if success {
            if self.failures.load(Relaxed) != 0 {
                self.failures.store(0, Relaxed);
            }
            return (self.breaker.swap(CLOSED, Relaxed) != CLOSED).then_some(BreakerChange::Closed);
        }
        let failures = self.failures.fetch_add(1, Relaxed) + 1;
        let state = self.breaker.load(Relaxed);
        let trip = state == HALF_OPEN || (state == CLOSED && failures >= failures_to_open);
        if trip {
            self.opened_at_ms.store(self.now_ms(), Relaxed);
            if self.breaker.swap(OPEN, Relaxed) != OPEN {
                return Some(BreakerChange::Opened);
            }
        }
        None
    }

    /// Takes one active check's result; returns the new verdict when it
    /// flips.
    fn record_check(&self, passed: bool) -> Option<bool> {
        let was = self.is_healthy();
        if passed == was {
            self.check_streak.store(0, Relaxed);
            return None;
        }
        let streak = self.check_streak.fetch_add(1, Relaxed) + 1;
        let needed = if passed {
            HEALTHY_AFTER
        } else {
            UNHEALTHY_AFTER
        };
        if streak >= needed {
            self.check_streak.store(0, Relaxed);
            self.healthy.store(passed, Relaxed);
            return Some(passed);
        }
        None
    }
}

/// The shared state of all upstreams, indexed like the snapshot's.
pub struct UpstreamStates {
    states: Box<[UpstreamState]>,
    /// Set when a reload replaced this upstream list: its health thread
    /// stops.
    retired: AtomicBool,
}

impl UpstreamStates {
    pub fn new(count: usize) -> Arc<Self> {
        let origin = Instant::now();
        Arc::new(Self {
            states: (0..count).map(|_| UpstreamState::new(origin)).collect(),
            retired: AtomicBool::new(false),
        })
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    /// A reload replaced this list: stop checking it.
    pub fn retire(&self) {
        self.retired
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn get(&self, index: usize) -> &UpstreamState {
        &self.states[index]
    }
}

/// Starts the health thread when any upstream has a `health_path` or a
/// `metrics_path`: it checks each on its own interval, with blocking I/O,
/// off the workers.
pub fn spawn_checker(specs: Vec<UpstreamSpec>, states: Arc<UpstreamStates>) -> std::io::Result<()> {
    if !specs
        .iter()
        .any(|s| s.health_path.is_some() || s.metrics_path.is_some())
    {
        return Ok(());
    }
    for (i, spec) in specs.iter().enumerate() {
        crate::metrics::upstream_healthy(&spec.name, states.get(i).is_healthy());
    }
    std::thread::Builder::new()
        .name("sluice-health".into())
        .spawn(move || {
            let mut due: Vec<Instant> = specs.iter().map(|_| Instant::now()).collect();
            loop {
                if states.retired.load(std::sync::atomic::Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                for (i, spec) in specs.iter().enumerate() {
                    if due[i] > now {
                        continue;
                    }
                    due[i] = now + spec.health_interval;
                    check_one(spec, states.get(i));
                }
                let next = due
                    .iter()
                    .min()
                    .copied()
                    .unwrap_or(now + Duration::from_secs(1));
                std::thread::sleep(
                    next.saturating_duration_since(Instant::now())
                        .max(Duration::from_millis(10)),
                );
            }
        })?;
    Ok(())
}

fn check_one(spec: &UpstreamSpec, state: &UpstreamState) {
    if let Some(path) = &spec.health_path {
        let passed = matches!(http_get(spec, path), Some((200..=299, _)));
        if let Some(healthy) = state.record_check(passed) {
            crate::metrics::upstream_healthy(&spec.name, healthy);
            if healthy {
                tracing::info!(upstream = %spec.name, "upstream healthy again: back in rotation");
            } else {
                tracing::warn!(upstream = %spec.name, path = %path, "upstream failed its health checks: out of rotation");
            }
        }
    }
    if let Some(path) = &spec.metrics_path {
        if let Some((200..=299, body)) = http_get(spec, path) {
            let queue = server_queue(&String::from_utf8_lossy(&body));
            state.server_queue.store(queue, Relaxed);
        }
    }
}

/// Requests waiting inside a model server, from its Prometheus text:
/// vLLM's `vllm:num_requests_waiting`, TGI's `tgi_queue_size` (summed over
/// label sets).
pub fn server_queue(metrics: &str) -> u32 {
    metrics
        .lines()
        .filter(|l| l.starts_with("vllm:num_requests_waiting") || l.starts_with("tgi_queue_size"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        .max(0.0) as u32
}

/// A blocking `GET` with the upstream's connect timeout for every step,
/// over TLS for `https://` upstreams.
fn http_get(spec: &UpstreamSpec, path: &str) -> Option<(u16, Vec<u8>)> {
    blocking_request(spec, path, None, spec.connect_timeout)
}

/// A blocking request to an upstream from a helper thread (health checks,
/// the cache's embedding thread): `GET path`, or `POST path` with a JSON
/// body; `timeout` for every step; over TLS for `https://` upstreams.
/// Returns the status and the (de-chunked) body.
pub fn blocking_request(
    spec: &UpstreamSpec,
    path: &str,
    json_body: Option<&[u8]>,
    timeout: Duration,
) -> Option<(u16, Vec<u8>)> {
    let stream = std::net::TcpStream::connect_timeout(&spec.addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    let auth = spec
        .authorization
        .as_deref()
        .map(|a| format!("authorization: {a}\r\n"))
        .unwrap_or_default();
    let (method, framing) = match json_body {
        None => ("GET", String::new()),
        Some(b) => (
            "POST",
            format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                b.len()
            ),
        ),
    };
    let mut request = format!(
        "{method} {}{} HTTP/1.1\r\nhost: {}\r\n{auth}{framing}user-agent: sluice\r\nconnection: close\r\n\r\n",
        spec.path_prefix, path, spec.host_header
    )
    .into_bytes();
    request.extend_from_slice(json_body.unwrap_or_default());
    let request = &request[..];
    let raw = match &spec.tls {
        None => exchange(stream, request)?,
        Some(tls) => {
            let session = tls.blocking().ok()?;
            exchange(rustls::StreamOwned::new(session, stream), request)?
        }
    };
    let head = crate::http::head::parse_response(&raw, crate::http::head::Method::Get).ok()??;
    let mut body = Vec::new();
    let rest = &raw[head.len..];
    if head.framing == crate::http::head::Framing::Chunked {
        crate::http::body::ChunkedDecoder::new()
            .decode(rest, &mut body)
            .ok()?;
    } else {
        body.extend_from_slice(rest);
    }
    Some((head.status, body))
}

/// Writes `request` and reads the answer until the server closes (at most
/// 4 MiB). A TLS server that closes without close_notify still ends the
/// answer: the request asked for `connection: close`.
fn exchange(mut stream: impl Read + Write, request: &[u8]) -> Option<Vec<u8>> {
    stream.write_all(request).ok()?;
    stream.flush().ok()?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while raw.len() < 4 << 20 {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => break,
            Err(_) => return None,
        }
    }
    Some(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_probes_and_closes() {
        let s = UpstreamState::new(Instant::now());
        let cooldown = Duration::from_millis(0);
        assert_eq!(s.record(false, 3), None);
        assert_eq!(s.record(false, 3), None);
        assert_eq!(s.record(false, 3), Some(BreakerChange::Opened));
        // Cooldown 0: the next caller is the probe, the one after is refused.
        assert_eq!(
            s.admit(cooldown),
            (Admission::Probe, Some(BreakerChange::Probing))
        );
        assert_eq!(s.admit(cooldown).0, Admission::No);
        // A failed probe opens it again; a successful one closes it.
        assert_eq!(s.record(false, 3), Some(BreakerChange::Opened));
        assert_eq!(s.admit(cooldown).0, Admission::Probe);
        assert_eq!(s.record(true, 3), Some(BreakerChange::Closed));
        assert_eq!(s.admit(cooldown).0, Admission::Yes);
    }

    #[test]
    fn open_breaker_waits_for_its_cooldown() {
        let s = UpstreamState::new(Instant::now());
        s.record(false, 1);
        assert_eq!(s.admit(Duration::from_secs(3600)).0, Admission::No);
        assert!(!s.may_admit(Duration::from_secs(3600)));
    }

    #[test]
    fn health_flips_after_streaks() {
        let s = UpstreamState::new(Instant::now());
        assert_eq!(s.record_check(false), None);
        assert_eq!(s.record_check(false), Some(false));
        assert!(!s.is_healthy());
        assert_eq!(s.record_check(true), None);
        assert_eq!(s.record_check(false), None);
        assert_eq!(s.record_check(true), None);
        assert_eq!(s.record_check(true), Some(true));
    }

    #[test]
    fn reads_model_server_queues() {
        let vllm = "# HELP x\nvllm:num_requests_waiting{model_name=\"m\"} 3.0\nvllm:num_requests_running{model_name=\"m\"} 9.0\n";
        assert_eq!(server_queue(vllm), 3);
        assert_eq!(server_queue("tgi_queue_size 7\n"), 7);
        assert_eq!(server_queue("nothing 1\n"), 0);
    }

    #[test]
    fn ttfb_average_decays() {
        let s = UpstreamState::new(Instant::now());
        s.record_ttfb(Duration::from_micros(1000));
        assert_eq!(s.ttfb_us(), 1000);
        s.record_ttfb(Duration::from_micros(2000));
        assert_eq!(s.ttfb_us(), 1200);
    }
}
