//! Every metric sluice exports, named in one place, and the per-worker cache
//! of metric handles: the request path increments handles it already holds
//! (atomics), so it never looks a metric up in the shared registry.

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::cell::RefCell;
use std::collections::HashMap;

pub const REQUESTS_TOTAL: &str = "sluice_requests_total";
pub const REQUEST_DURATION: &str = "sluice_request_duration_seconds";
pub const TIME_TO_FIRST_TOKEN: &str = "sluice_gen_ai_time_to_first_token_seconds";
pub const TOKENS_TOTAL: &str = "sluice_gen_ai_tokens_total";
pub const OVERHEAD: &str = "sluice_overhead_seconds";
pub const UPSTREAM_REQUESTS_TOTAL: &str = "sluice_upstream_requests_total";
pub const CLIENT_ERRORS_TOTAL: &str = "sluice_client_errors_total";
pub const CLIENT_DISCONNECTS_TOTAL: &str = "sluice_client_disconnects_total";
pub const CONNECTIONS_ACCEPTED_TOTAL: &str = "sluice_connections_accepted_total";
pub const CONNECTIONS_ACTIVE: &str = "sluice_connections_active";
pub const TLS_HANDSHAKES_TOTAL: &str = "sluice_tls_handshakes_total";
pub const TLS_CERTIFICATE_RELOADS_TOTAL: &str = "sluice_tls_certificate_reloads_total";
pub const WORKER_INFO: &str = "sluice_worker_info";
pub const DRAINING: &str = "sluice_draining";
pub const AUTH_FAILURES_TOTAL: &str = "sluice_auth_failures_total";
pub const CONFIG_RELOADS_TOTAL: &str = "sluice_config_reloads_total";
pub const TOOL_CALLS_BLOCKED_TOTAL: &str = "sluice_agent_tool_calls_blocked_total";
pub const AUTH_THROTTLED_TOTAL: &str = "sluice_auth_throttled_total";
pub const USAGE_DROPPED_TOTAL: &str = "sluice_usage_records_dropped_total";
pub const COST_TOTAL: &str = "sluice_cost_total";
pub const TOKENS_ESTIMATED_TOTAL: &str = "sluice_tokens_estimated_total";
pub const BUDGET_USED_RATIO: &str = "sluice_budget_used_ratio";
pub const BUDGET_ALERTS_TOTAL: &str = "sluice_budget_alerts_total";
pub const LIMIT_REFUSALS_TOTAL: &str = "sluice_limit_refusals_total";
pub const CLUSTER_REDIS_UP: &str = "sluice_cluster_redis_up";
pub const CLUSTER_FALLBACK: &str = "sluice_cluster_fallback";
pub const CLUSTER_REDIS_ERRORS_TOTAL: &str = "sluice_cluster_redis_errors_total";
pub const CLUSTER_LEASES_TOTAL: &str = "sluice_cluster_leases_total";
pub const CLUSTER_NODES: &str = "sluice_cluster_nodes";
pub const APPROVALS_PENDING: &str = "sluice_approvals_pending";
pub const AUDIT_RECORDS_TOTAL: &str = "sluice_audit_records_total";
pub const AUDIT_LOST_TOTAL: &str = "sluice_audit_records_lost_total";
pub const AUDIT_WRITE_ERRORS_TOTAL: &str = "sluice_audit_write_errors_total";
pub const UPSTREAM_HEALTHY: &str = "sluice_upstream_healthy";
pub const UPSTREAM_INFLIGHT: &str = "sluice_upstream_inflight";
pub const BREAKER_TRANSITIONS_TOTAL: &str = "sluice_upstream_breaker_transitions_total";
pub const RETRIES_TOTAL: &str = "sluice_retries_total";
pub const FALLBACKS_TOTAL: &str = "sluice_fallbacks_total";
pub const EXPERIMENT_REQUESTS_TOTAL: &str = "sluice_experiment_requests_total";
pub const EXPERIMENT_DURATION: &str = "sluice_experiment_duration_seconds";
pub const EXPERIMENT_TOKENS_TOTAL: &str = "sluice_experiment_tokens_total";
pub const PII_FINDINGS_TOTAL: &str = "sluice_pii_findings_total";
pub const SAFETY_FINDINGS_TOTAL: &str = "sluice_safety_findings_total";
pub const GUARD_SCANNED_BYTES_TOTAL: &str = "sluice_guard_scanned_bytes_total";
pub const GUARD_SCAN_SECONDS: &str = "sluice_guard_scan_seconds";
pub const CACHE_REQUESTS_TOTAL: &str = "sluice_cache_requests_total";
pub const CACHE_SAVED_TOKENS_TOTAL: &str = "sluice_cache_saved_tokens_total";
pub const CACHE_VERIFIER_REJECTIONS_TOTAL: &str = "sluice_cache_verifier_rejections_total";
pub const CACHE_ENTRIES: &str = "sluice_cache_entries";
pub const CACHE_STORES_TOTAL: &str = "sluice_cache_stores_total";
pub const CACHE_QUEUE_FULL_TOTAL: &str = "sluice_cache_embed_queue_full_total";
pub const CACHE_EMBED_BATCH: &str = "sluice_cache_embed_batch_size";
pub const CACHE_EMBED_SECONDS: &str = "sluice_cache_embed_seconds";
pub const CACHE_EMBED_FAILURES_TOTAL: &str = "sluice_cache_embed_failures_total";

/// Label value for requests that never named a configured model.
pub const NO_MODEL: &str = "none";

/// Installs the Prometheus recorder (once per process) and returns the
/// handle that renders the exposition text.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0, 60.0, 120.0, 300.0,
            ];
            let overhead = [
                0.000_005, 0.00001, 0.000_025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                0.005, 0.01, 0.05,
            ];
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(REQUEST_DURATION.into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(TIME_TO_FIRST_TOKEN.into()), &latency)
                })
                .and_then(|b| b.set_buckets_for_metric(Matcher::Full(OVERHEAD.into()), &overhead))
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full(GUARD_SCAN_SECONDS.into()), &overhead)
                })
                .expect("static bucket lists are non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Several test servers in one process share the first recorder.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        CACHE_REQUESTS_TOTAL,
        "Cacheable requests by result (hit|semantic_hit|miss|bypass)."
    );
    describe_counter!(
        CACHE_SAVED_TOKENS_TOTAL,
        "Tokens (input and output) not generated because the cache answered."
    );
    describe_counter!(
        CACHE_VERIFIER_REJECTIONS_TOTAL,
        "Semantic candidates above the similarity refused by the verifier, by reason."
    );
    describe_gauge!(CACHE_ENTRIES, "Cached answers by kind (exact|semantic).");
    describe_counter!(CACHE_STORES_TOTAL, "Answers stored in the cache, by kind.");
    describe_counter!(
        CACHE_QUEUE_FULL_TOTAL,
        "Semantic lookups (op=lookup, served as misses) and stores (op=store, dropped) refused by a full embedding queue."
    );
    describe_histogram!(CACHE_EMBED_BATCH, "Texts embedded per model call.");
    describe_histogram!(
        CACHE_EMBED_SECONDS,
        Unit::Seconds,
        "Time per embedding batch."
    );
    describe_counter!(CACHE_EMBED_FAILURES_TOTAL, "Embedding batches that failed.");
    describe_counter!(
        REQUESTS_TOTAL,
        "Requests answered, by model and HTTP status."
    );
    describe_histogram!(
        REQUEST_DURATION,
        Unit::Seconds,
        "Time from request head to last response byte."
    );
    describe_histogram!(
        TIME_TO_FIRST_TOKEN,
        Unit::Seconds,
        "Streams: time from request head to the first event relayed."
    );
    describe_counter!(
        TOKENS_TOTAL,
        "Tokens reported by upstream usage, by model and type (input|output)."
    );
    describe_histogram!(
        OVERHEAD,
        Unit::Seconds,
        "Time spent inside sluice per request, upstream time excluded."
    );
    describe_counter!(
        UPSTREAM_REQUESTS_TOTAL,
        "Upstream attempts by upstream and outcome."
    );
    describe_counter!(
        CLIENT_ERRORS_TOTAL,
        "Requests refused for bad input, by reason."
    );
    describe_counter!(
        CLIENT_DISCONNECTS_TOTAL,
        "Clients that went away before their answer was complete, by stage."
    );
    describe_counter!(CONNECTIONS_ACCEPTED_TOTAL, "Client connections accepted.");
    describe_gauge!(CONNECTIONS_ACTIVE, "Client connections open.");
    describe_counter!(
        TLS_HANDSHAKES_TOTAL,
        "TLS handshakes of client connections, by result (ok, timeout, not_tls, protocol_error, closed)."
    );
    describe_counter!(
        TLS_CERTIFICATE_RELOADS_TOTAL,
        "Reloads with [server.tls], by result: ok (the files were loaded and are in use) or error (the old certificate stays)."
    );
    describe_gauge!(
        WORKER_INFO,
        "One series per worker thread, labelled with its CPU and I/O driver."
    );
    describe_gauge!(DRAINING, "1 while the gateway drains for shutdown.");
    describe_counter!(
        AUTH_FAILURES_TOTAL,
        "Requests refused with 401, by reason (missing_credentials, unknown_key, expired_key, jwt_*, unknown_team)."
    );
    describe_counter!(
        USAGE_DROPPED_TOTAL,
        "Usage records dropped because the store's queue was full."
    );
    describe_counter!(
        CONFIG_RELOADS_TOTAL,
        "Configuration reloads (SIGHUP, POST /admin/reload), by result (ok|error)."
    );
    describe_gauge!(
        COST_TOTAL,
        "Cost of answered requests in [billing].currency, by team and model (only grows; a gauge because it is fractional)."
    );
    describe_counter!(
        TOKENS_ESTIMATED_TOTAL,
        "Requests whose tokens were estimated because the upstream reported no usage, by model."
    );
    describe_gauge!(
        BUDGET_USED_RATIO,
        "Settled spend of the current budget period / budget, by team."
    );
    describe_counter!(
        BUDGET_ALERTS_TOTAL,
        "Budget alert thresholds crossed (once each per period), by team and threshold."
    );
    describe_counter!(
        LIMIT_REFUSALS_TOTAL,
        "Requests refused by a limit, by scope (team|key) and limit (requests|tokens|concurrency|budget)."
    );
    describe_gauge!(
        CLUSTER_REDIS_UP,
        "1 while this node reaches the [cluster] Redis, 0 while it does not."
    );
    describe_gauge!(
        CLUSTER_FALLBACK,
        "1 while this node's shared limits run on its fallback_share (Redis unreachable)."
    );
    describe_counter!(
        CLUSTER_REDIS_ERRORS_TOTAL,
        "Failed exchanges with the [cluster] Redis (each one starts the fallback)."
    );
    describe_counter!(
        CLUSTER_LEASES_TOTAL,
        "Lease requests to Redis, by limit (budget|requests|tokens) and outcome (granted|short|refused)."
    );
    describe_gauge!(
        CLUSTER_NODES,
        "Live sluice nodes sharing the [cluster] Redis, as last seen by this node."
    );
    describe_counter!(
        TOOL_CALLS_BLOCKED_TOTAL,
        "Answers replaced because they called a tool the team's agent policy forbids."
    );
    describe_counter!(
        AUTH_THROTTLED_TOTAL,
        "Requests from an address with repeated authentication failures, by action (delayed|refused)."
    );
    describe_gauge!(
        UPSTREAM_HEALTHY,
        "1 while an upstream is in rotation: its active checks pass and its breaker is not open."
    );
    describe_counter!(
        BREAKER_TRANSITIONS_TOTAL,
        "Circuit breaker state changes, by upstream and new state."
    );
    describe_counter!(AUDIT_RECORDS_TOTAL, "Audit records written to the log.");
    describe_counter!(
        AUDIT_LOST_TOTAL,
        "Audit records lost because the queue was full."
    );
    describe_counter!(
        AUDIT_WRITE_ERRORS_TOTAL,
        "Audit log write or sync failures (requests are refused while it fails)."
    );
    describe_counter!(RETRIES_TOTAL, "Retries sent, by reason; and retries refused by the retry budget (reason=budget_exhausted).");
    describe_counter!(
        FALLBACKS_TOTAL,
        "Requests served by a fallback model, by the model asked for and the one that answered."
    );
    describe_counter!(
        EXPERIMENT_REQUESTS_TOTAL,
        "Experiment requests by experiment, variant and status."
    );
    describe_histogram!(
        EXPERIMENT_DURATION,
        Unit::Seconds,
        "Experiment request duration by experiment and variant."
    );
    describe_counter!(
        EXPERIMENT_TOKENS_TOTAL,
        "Experiment tokens by experiment, variant and type."
    );
    describe_counter!(
        PII_FINDINGS_TOTAL,
        "PII findings by entity type and the action taken (values are never recorded)."
    );
    describe_counter!(
        SAFETY_FINDINGS_TOTAL,
        "Prompt-injection and deny-pattern hits by kind and action."
    );
    describe_counter!(
        GUARD_SCANNED_BYTES_TOTAL,
        "Bytes of text scanned by the PII/safety guard, by direction."
    );
    describe_histogram!(
        GUARD_SCAN_SECONDS,
        Unit::Seconds,
        "Guard scan time per request or per relayed chunk, by direction."
    );
}

/// Duration histogram, input and output token counters of one variant.
type ExperimentHandles = (Histogram, Counter, Counter);

/// Per-worker handle cache, keyed by the indexes of the snapshot's models
/// and upstreams so that label strings are built once.
#[derive(Default)]
pub struct WorkerMetrics {
    requests: RefCell<HashMap<(u32, u16), Counter>>,
    durations: RefCell<HashMap<u32, (Histogram, Histogram)>>,
    tokens: RefCell<HashMap<u32, (Counter, Counter)>>,
    upstream: RefCell<HashMap<(u32, &'static str), Counter>>,
    client_errors: RefCell<HashMap<&'static str, Counter>>,
    disconnects: RefCell<HashMap<&'static str, Counter>>,
    tls_handshakes: RefCell<HashMap<&'static str, Counter>>,
    overhead: RefCell<Option<Histogram>>,
    connections: std::cell::OnceCell<(Counter, Gauge)>,
    retries: RefCell<HashMap<&'static str, Counter>>,
    fallbacks: RefCell<HashMap<(u32, u32), Counter>>,
    experiments: RefCell<HashMap<(u32, u32, u16), Counter>>,
    experiment_extra: RefCell<HashMap<(u32, u32), ExperimentHandles>>,
    cost: RefCell<HashMap<(u32, u32), metrics::Gauge>>,
}

impl WorkerMetrics {
    /// Records one finished request. `model` is the label; `model_key`
    /// its stable index (u32::MAX for no model).
    pub fn request(&self, model_key: u32, model: &str, status: u16, seconds: f64) {
        self.requests
            .borrow_mut()
            .entry((model_key, status))
            .or_insert_with(|| {
                counter!(REQUESTS_TOTAL, "model" => model.to_owned(), "status" => status.to_string())
            })
            .increment(1);
        self.with_durations(model_key, model, |d| d.0.record(seconds));
    }

    pub fn time_to_first_token(&self, model_key: u32, model: &str, seconds: f64) {
        self.with_durations(model_key, model, |d| d.1.record(seconds));
    }

    fn with_durations(&self, model_key: u32, model: &str, f: impl FnOnce(&(Histogram, Histogram))) {
        let mut map = self.durations.borrow_mut();
        let entry = map.entry(model_key).or_insert_with(|| {
            (
                histogram!(REQUEST_DURATION, "model" => model.to_owned()),
                histogram!(TIME_TO_FIRST_TOKEN, "model" => model.to_owned()),
            )
        });
        f(entry);
    }

    pub fn tokens(&self, model_key: u32, model: &str, input: u64, output: u64) {
        let mut map = self.tokens.borrow_mut();
        let (i, o) = map.entry(model_key).or_insert_with(|| {
            (
                counter!(TOKENS_TOTAL, "model" => model.to_owned(), "type" => "input"),
                counter!(TOKENS_TOTAL, "model" => model.to_owned(), "type" => "output"),
            )
        });
        i.increment(input);
        o.increment(output);
    }

    /// Adds `amount` (in the billing currency) to the cost of a team and
    /// model; the keys are their snapshot indexes.
    pub fn cost(&self, keys: (u32, u32), team: &str, model: &str, amount: f64) {
        self.cost
            .borrow_mut()
            .entry(keys)
            .or_insert_with(
                || gauge!(COST_TOTAL, "team" => team.to_owned(), "model" => model.to_owned()),
            )
            .increment(amount);
    }

    pub fn upstream(&self, upstream_key: u32, upstream: &str, outcome: &'static str) {
        self.upstream
            .borrow_mut()
            .entry((upstream_key, outcome))
            .or_insert_with(|| {
                counter!(UPSTREAM_REQUESTS_TOTAL, "upstream" => upstream.to_owned(), "outcome" => outcome)
            })
            .increment(1);
    }

    pub fn client_error(&self, reason: &'static str) {
        Self::bump(&self.client_errors, CLIENT_ERRORS_TOTAL, "reason", reason);
    }

    pub fn client_disconnect(&self, stage: &'static str) {
        Self::bump(&self.disconnects, CLIENT_DISCONNECTS_TOTAL, "stage", stage);
    }

    fn bump(
        map: &RefCell<HashMap<&'static str, Counter>>,
        name: &'static str,
        label: &'static str,
        value: &'static str,
    ) {
        map.borrow_mut()
            .entry(value)
            .or_insert_with(|| counter!(name, label => value))
            .increment(1);
    }

    /// One client TLS handshake: `ok` or why it failed.
    pub fn tls_handshake(&self, result: &'static str) {
        Self::bump(&self.tls_handshakes, TLS_HANDSHAKES_TOTAL, "result", result);
    }

    pub fn connection_opened(&self) {
        let (accepted, active) = self.connection_handles();
        accepted.increment(1);
        active.increment(1.0);
    }

    pub fn connection_closed(&self) {
        self.connection_handles().1.decrement(1.0);
    }

    fn connection_handles(&self) -> &(Counter, Gauge) {
        self.connections.get_or_init(|| {
            (
                counter!(CONNECTIONS_ACCEPTED_TOTAL),
                gauge!(CONNECTIONS_ACTIVE),
            )
        })
    }

    pub fn retry(&self, reason: &'static str) {
        Self::bump(&self.retries, RETRIES_TOTAL, "reason", reason);
    }

    pub fn fallback(&self, keys: (u32, u32), asked: &str, answered: &str) {
        self.fallbacks
            .borrow_mut()
            .entry(keys)
            .or_insert_with(|| counter!(FALLBACKS_TOTAL, "model" => asked.to_owned(), "served_by" => answered.to_owned()))
            .increment(1);
    }

    /// One finished experiment request: status, duration, tokens.
    pub fn experiment(
        &self,
        keys: (u32, u32),
        names: (&str, &str),
        status: u16,
        seconds: f64,
        tokens: Option<(u64, u64)>,
    ) {
        let (experiment, variant) = names;
        self.experiments
            .borrow_mut()
            .entry((keys.0, keys.1, status))
            .or_insert_with(|| {
                counter!(EXPERIMENT_REQUESTS_TOTAL, "experiment" => experiment.to_owned(), "variant" => variant.to_owned(), "status" => status.to_string())
            })
            .increment(1);
        let mut extra = self.experiment_extra.borrow_mut();
        let (duration, input, output) = extra.entry(keys).or_insert_with(|| {
            let labels = [("experiment", experiment.to_owned()), ("variant", variant.to_owned())];
            (
                histogram!(EXPERIMENT_DURATION, &labels),
                counter!(EXPERIMENT_TOKENS_TOTAL, "experiment" => experiment.to_owned(), "variant" => variant.to_owned(), "type" => "input"),
                counter!(EXPERIMENT_TOKENS_TOTAL, "experiment" => experiment.to_owned(), "variant" => variant.to_owned(), "type" => "output"),
            )
        });
        duration.record(seconds);
        if let Some((i, o)) = tokens {
            input.increment(i);
            output.increment(o);
        }
    }

    pub fn overhead(&self, seconds: f64) {
        self.overhead
            .borrow_mut()
            .get_or_insert_with(|| histogram!(OVERHEAD))
            .record(seconds);
    }
}

/// Answers held for a person's decision right now.
pub fn approvals_pending(n: usize) {
    gauge!(APPROVALS_PENDING).set(n as f64);
}

/// Audit writer thread: one record written.
pub fn audit_written() {
    counter!(AUDIT_RECORDS_TOTAL).increment(1);
}

/// A record that found the audit queue full (requests are refused well
/// before that; this should stay 0).
pub fn audit_lost() {
    counter!(AUDIT_LOST_TOTAL).increment(1);
}

pub fn audit_write_error() {
    counter!(AUDIT_WRITE_ERRORS_TOTAL).increment(1);
}

/// A request whose tokens were estimated (the upstream sent no usage).
pub fn tokens_estimated(model: &str) {
    counter!(TOKENS_ESTIMATED_TOTAL, "model" => model.to_owned()).increment(1);
}

/// A team's budget use after a settlement.
pub fn budget_used_ratio(team: &str, ratio: f64) {
    budget_used_ratio_gauge(team).set(ratio);
}

/// The handle of `sluice_budget_used_ratio{team}` (kept by the budget).
pub fn budget_used_ratio_gauge(team: &str) -> metrics::Gauge {
    gauge!(BUDGET_USED_RATIO, "team" => team.to_owned())
}

/// A budget alert threshold was crossed (once per threshold and period).
pub fn budget_alert(team: &str, threshold: f64) {
    counter!(BUDGET_ALERTS_TOTAL, "team" => team.to_owned(), "threshold" => threshold.to_string())
        .increment(1);
}

/// A request refused by a rate limit or budget.
pub fn limit_refused(scope: &'static str, limit: &'static str) {
    counter!(LIMIT_REFUSALS_TOTAL, "scope" => scope, "limit" => limit).increment(1);
}

/// Whether the `[cluster]` Redis is reachable (and so whether the node's
/// limits run on leases or on its fallback share).
pub fn cluster_redis_up(up: bool) {
    gauge!(CLUSTER_REDIS_UP).set(if up { 1.0 } else { 0.0 });
    gauge!(CLUSTER_FALLBACK).set(if up { 0.0 } else { 1.0 });
}

pub fn cluster_redis_error() {
    counter!(CLUSTER_REDIS_ERRORS_TOTAL).increment(1);
}

/// One lease request: `limit` = budget|requests|tokens, `outcome` =
/// granted|short|refused.
pub fn cluster_lease(limit: &'static str, outcome: &'static str) {
    counter!(CLUSTER_LEASES_TOTAL, "limit" => limit, "outcome" => outcome).increment(1);
}

pub fn cluster_nodes(live: u32) {
    gauge!(CLUSTER_NODES).set(f64::from(live));
}

/// Health of an upstream changed (active checks or breaker).
pub fn upstream_healthy(upstream: &str, healthy: bool) {
    gauge!(UPSTREAM_HEALTHY, "upstream" => upstream.to_owned()).set(if healthy {
        1.0
    } else {
        0.0
    });
}

pub fn breaker_transition(upstream: &str, state: &'static str) {
    counter!(BREAKER_TRANSITIONS_TOTAL, "upstream" => upstream.to_owned(), "state" => state)
        .increment(1);
}

/// A request refused for its credentials (rare: looked up in the registry).
pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES_TOTAL, "reason" => reason).increment(1);
}

/// A usage record found the store's queue full and was dropped.
pub fn usage_dropped() {
    counter!(USAGE_DROPPED_TOTAL).increment(1);
}

pub fn tls_certificate_reload(result: &'static str) {
    counter!(TLS_CERTIFICATE_RELOADS_TOTAL, "result" => result).increment(1);
}

pub fn config_reload(result: &'static str) {
    counter!(CONFIG_RELOADS_TOTAL, "result" => result).increment(1);
}

/// An answer calling a forbidden tool was replaced by an error (rare).
pub fn tool_call_blocked() {
    counter!(TOOL_CALLS_BLOCKED_TOTAL).increment(1);
}

/// A request from an address under brute-force throttling (rare).
pub fn auth_throttled(action: &'static str) {
    counter!(AUTH_THROTTLED_TOTAL, "action" => action).increment(1);
}

pub fn worker_started(worker: usize, cpu: Option<usize>, driver: &'static str) {
    let cpu = cpu.map_or_else(|| "any".to_owned(), |c| c.to_string());
    gauge!(WORKER_INFO, "worker" => worker.to_string(), "cpu" => cpu, "driver" => driver).set(1.0);
}

pub fn set_draining(on: bool) {
    gauge!(DRAINING).set(if on { 1.0 } else { 0.0 });
}

/// Serves `GET /metrics` on its own thread with blocking I/O: scrapes are
/// rare and must never compete with the workers' rings.
pub fn serve(
    addr: std::net::SocketAddr,
    handle: PrometheusHandle,
) -> std::io::Result<std::net::SocketAddr> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("sluice-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            upkeep.run_upkeep();
        })?;
    std::thread::Builder::new()
        .name("sluice-metrics".into())
        .spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(std::time::Duration::from_secs(5)));
                let mut head = Vec::with_capacity(1024);
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let (status, ctype, body) =
                    if head.starts_with(b"GET /metrics ") || head.starts_with(b"GET /metrics?") {
                        (
                            200,
                            "text/plain; version=0.0.4",
                            handle.render().into_bytes(),
                        )
                    } else {
                        (
                            404,
                            "application/json",
                            crate::http::response::error_json(
                                "only GET /metrics is served here",
                                "invalid_request_error",
                                Some("unknown_url"),
                                None,
                            ),
                        )
                    };
                let out = crate::http::response::closing(status, ctype, &body);
                let _ = stream.write_all(&out);
            }
        })?;
    Ok(bound)
}
