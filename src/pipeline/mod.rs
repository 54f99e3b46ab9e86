//! The request pipeline: the steps a proxied request takes, in order, each
//! in its own module. Today: parse the body view, route to a target,
//! forward and relay. Authentication, authorization, limits, guards and
//! the cache slot in between these steps as they are built.

pub mod auth;
pub mod authorize;
pub mod filter;
pub mod guard;
pub mod jwt;
pub mod relay;
pub mod route;

use crate::api::json;
use crate::api::request::stable_hash;
use crate::api::request::Endpoint;
use crate::api::GatewayError;
use crate::audit;
use crate::config::snapshot::{ModelRef, ModelRoute};
use crate::http::head::is_hop_by_hop;
use crate::http::response::push_u64;
use crate::http::server::{reply_error, ClientIo, Outcome, Request};
use crate::metrics::NO_MODEL;
use crate::runtime::worker::Worker;
use crate::upstream::UpstreamSpec;
use filter::AnswerFilters;
use relay::Forwarded;
use std::borrow::Cow;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

pub async fn run(
    worker: &Rc<Worker>,
    io: &mut ClientIo,
    req: &Request<'_>,
    endpoint: Endpoint,
) -> Outcome {
    let snapshot = &worker.snapshot;
    // audit: never serve a request that could not be recorded.
    let audit = worker.shared.audit.get();
    if audit.is_some_and(|log| !log.accepting()) {
        return refuse(worker, io, req, &GatewayError::AuditUnavailable).await;
    }
    // auth: credentials -> principal (None when access control is off).
    let principal = match auth::check(worker, req) {
        Ok(p) => p,
        Err(e) => return refuse(worker, io, req, &e).await,
    };
    let facts = worker
        .scratch
        .borrow_mut()
        .facts(req.body, |name| snapshot.resolve(name));
    let facts = match facts {
        Ok(f) => f,
        Err(e) => return refuse(worker, io, req, &e).await,
    };
    // authorize: model allow-list and data residency.
    if let Some(p) = &principal {
        let name = authorize::client_name(snapshot, facts.model);
        if let Err(e) = authorize::model(p, snapshot, facts.model, name) {
            return refuse(worker, io, req, &e).await;
        }
    }
    // The body forwarded: the client's bytes unless a step rewrites them.
    let mut body: Cow<'_, [u8]> = Cow::Borrowed(req.body);
    // Steps that change the answer on its way back register here.
    let mut filters = AnswerFilters::default();
    // guard: PII and content safety on the text that reaches the model.
    if let Some(guard) = &snapshot.guard {
        match guard.inspect_request(&worker.guard, None, req.body) {
            Ok(inspection) => {
                if let Some(rewritten) = inspection.body {
                    body = Cow::Owned(rewritten);
                }
                if let Some(filter) = inspection.filter {
                    filters.push(filter);
                }
            }
            Err(e) => return refuse(worker, io, req, &e).await,
        }
    }

    // route: experiment variant, then targets, retries and fallbacks.
    let reach = route::Reach {
        regions: principal.as_ref().and_then(|p| p.allowed_regions()),
    };
    let key_hash = match &principal {
        Some(p) => Some(stable_hash(p.key_id().as_bytes())),
        None => req.header("authorization").map(stable_hash),
    };
    let (asked, experiment) = match facts.model {
        ModelRef::Model(m) => (m, None),
        ModelRef::Experiment(e) => {
            let variant = worker
                .router
                .variant(&snapshot.experiments[e], facts.user, key_hash);
            (variant, Some(e))
        }
    };
    let may_use = |m: usize| {
        principal
            .as_ref()
            .is_none_or(|p| p.team.may_use_model(&snapshot.models[m].name))
    };
    let fallbacks: Vec<usize> = snapshot.models[asked]
        .fallbacks
        .iter()
        .copied()
        .filter(|&m| may_use(m))
        .collect();
    let resilience = &snapshot.resilience;
    let states = &*worker.shared.upstreams;
    let router = &worker.router;
    router.earn_retry(resilience.retry_budget);
    let mut tried = route::Tried::default();
    let mut chain = std::iter::once(asked).chain(fallbacks.iter().copied());
    let mut model = chain.next().unwrap_or(asked);
    let mut retries = 0u32;
    let mut last_error: Option<GatewayError> = None;
    let mut decisions: Vec<String> = Vec::new();
    let answered_by;
    let relayed = loop {
        let upstream = loop {
            if let Some(u) = router.pick(snapshot, states, model, &mut tried, reach) {
                break Some(u);
            }
            match chain.next() {
                Some(next) => model = next,
                None => break None,
            }
        };
        let Some(upstream) = upstream else {
            let error = last_error.take().unwrap_or_else(|| {
                GatewayError::NoUpstream(snapshot.models[asked].name.to_string())
            });
            return refuse(worker, io, req, &error).await;
        };
        let mut after = tried.clone();
        after.push(upstream);
        let elsewhere = router.has_target(snapshot, states, model, &after, reach)
            || chain
                .clone()
                .any(|m| router.has_target(snapshot, states, m, &after, reach));
        let may_retry = elsewhere && retries < resilience.retries && router.can_retry();
        let route = &snapshot.models[model];
        build_upstream_request(
            &mut io.upstream_buf,
            req,
            &body,
            &io.request_id,
            &snapshot.upstreams[upstream],
            route,
        );
        let attempt = relay::Attempt {
            upstream,
            may_retry,
            served_model: (model != asked || experiment.is_some()).then_some(&*route.name),
        };
        let state = states.get(upstream);
        state.inflight.fetch_add(1, Relaxed);
        let forwarded = relay::forward(worker, io, req, attempt, &mut filters).await;
        state.inflight.fetch_sub(1, Relaxed);
        match forwarded {
            Forwarded::Answered(relayed) => {
                answered_by = upstream;
                record_attempt(worker, upstream, relayed.upstream_outcome, relayed.ttfb);
                break relayed;
            }
            Forwarded::Retry { outcome, error, .. } => {
                record_attempt(worker, upstream, outcome, None);
                tried.push(upstream);
                retries += 1;
                router.spend_retry();
                worker.metrics.retry(outcome);
                if audit.is_some() {
                    decisions.push(format!(
                        "retry:{}:{outcome}",
                        snapshot.upstreams[upstream].name
                    ));
                }
                tracing::info!(request_id = %String::from_utf8_lossy(&io.request_id), upstream = %snapshot.upstreams[upstream].name, outcome, "retrying on another target");
                last_error = Some(error);
                // Exponential backoff with full jitter.
                let ceiling = resilience
                    .backoff
                    .saturating_mul(1 << (retries - 1).min(10));
                let wait = ceiling.mul_f64((router.random() % 1000) as f64 / 1000.0);
                if !wait.is_zero() {
                    monoio::time::sleep(wait).await;
                }
            }
        }
    };

    let metrics = &worker.metrics;
    let route = &snapshot.models[model];
    let model_key = model as u32;
    let elapsed = req.started.elapsed();
    let status = relayed.outcome.status;
    metrics.request(model_key, &route.name, status, elapsed.as_secs_f64());
    metrics.overhead(elapsed.saturating_sub(relayed.upstream_time).as_secs_f64());
    if let Some(usage) = relayed.usage {
        metrics.tokens(model_key, &route.name, usage.input, usage.output);
    }
    if let Some(ttft) = relayed.time_to_first_event {
        metrics.time_to_first_token(model_key, &route.name, ttft.as_secs_f64());
    }
    if model != asked && audit.is_some() {
        decisions.push(format!("fallback:{}", route.name));
    }
    if model != asked {
        metrics.fallback(
            (asked as u32, model as u32),
            &snapshot.models[asked].name,
            &route.name,
        );
    }
    if let Some(e) = experiment {
        let names = (
            &*snapshot.experiments[e].name,
            &*snapshot.models[asked].name,
        );
        let tokens = relayed.usage.map(|u| (u.input, u.output));
        metrics.experiment(
            (e as u32, asked as u32),
            names,
            status,
            elapsed.as_secs_f64(),
            tokens,
        );
    }
    if let Some(log) = audit {
        let record = audit::Record {
            key: principal.as_ref().map(|p| p.key_id()),
            team: principal.as_ref().map(|p| &*p.team.name),
            user: principal.as_ref().and_then(|p| p.user.as_deref()),
            model_asked: Some(authorize::client_name(snapshot, facts.model)),
            model: Some(&route.name),
            upstream: Some(&snapshot.upstreams[answered_by].name),
            experiment: experiment.map(|e| &*snapshot.experiments[e].name),
            variant: experiment.map(|_| &*snapshot.models[asked].name),
            stream: facts.stream,
            tokens_in: relayed.usage.map(|u| u.input),
            tokens_out: relayed.usage.map(|u| u.output),
            ttft_ms: relayed
                .time_to_first_event
                .map(|d| d.as_secs_f64() * 1000.0),
            decisions,
            ..audit_base(worker, req, &io.request_id, endpoint.as_str(), status, None)
        };
        submit(log, record, req.body);
    }
    // account: usage per day, team, key and model, queued for the store.
    if let (Some(p), Some(store)) = (&principal, worker.shared.store.get()) {
        let usage = relayed.usage.map_or((0, 0), |u| (u.input, u.output));
        store.record_request(p, &route.name, usage);
    }
    relayed.outcome
}

/// Feeds one attempt's result to the upstream's breaker, latency average
/// and metrics.
fn record_attempt(worker: &Worker, upstream: usize, outcome: &'static str, ttfb: Option<Duration>) {
    let snapshot = &worker.snapshot;
    let state = worker.shared.upstreams.get(upstream);
    worker
        .metrics
        .upstream(upstream as u32, &snapshot.upstreams[upstream].name, outcome);
    if let Some(ttfb) = ttfb {
        state.record_ttfb(ttfb);
    }
    let success = match outcome {
        "client_cancelled" => return,
        "ok" | "client_error" | "rate_limited" | "filtered" => true,
        _ => false,
    };
    if let Some(change) = state.record(success, snapshot.resilience.breaker_failures) {
        route::breaker_changed(snapshot, upstream, change);
    }
}

/// Answers a refused request with its error and counts it.
async fn refuse(
    worker: &Rc<Worker>,
    io: &mut ClientIo,
    req: &Request<'_>,
    e: &crate::api::GatewayError,
) -> Outcome {
    let outcome = reply_error(worker, io, e, req.keep_alive).await;
    if let Some(log) = worker.shared.audit.get() {
        let endpoint = match req.path() {
            b"/v1/completions" => "completions",
            b"/v1/embeddings" => "embeddings",
            _ => "chat_completions",
        };
        let code = e.shape().code;
        let record = audit_base(
            worker,
            req,
            &io.request_id,
            endpoint,
            outcome.status,
            Some(code),
        );
        submit(log, record, req.body);
    }
    let seconds = req.started.elapsed().as_secs_f64();
    worker
        .metrics
        .request(u32::MAX, NO_MODEL, outcome.status, seconds);
    outcome
}

/// The fields every audit record has.
fn audit_base<'a>(
    worker: &'a Worker,
    req: &'a Request<'_>,
    request_id: &'a [u8],
    endpoint: &'a str,
    status: u16,
    error: Option<&'a str>,
) -> audit::Record<'a> {
    audit::Record {
        ts: crate::alerts::now_rfc3339_millis(),
        request_id: std::str::from_utf8(request_id).unwrap_or("-"),
        session: req
            .header("x-sluice-session")
            .and_then(|s| std::str::from_utf8(s).ok()),
        endpoint,
        params: audit::record::sampling_params(req.body),
        latency_ms: req.started.elapsed().as_secs_f64() * 1000.0,
        status,
        error,
        version: env!("CARGO_PKG_VERSION"),
        config_sha256: &worker.snapshot.config_hash,
        ..audit::Record::default()
    }
}

/// Adds the content `detail` asks for and hands the record to the writer.
fn submit(log: &audit::AuditLog, mut record: audit::Record<'_>, body: &[u8]) {
    if log.settings.detail == crate::config::AuditDetail::Full {
        record.request = serde_json::from_slice(body).ok();
    }
    log.submit(record.to_line());
}

/// Client request headers that are never forwarded: hop-by-hop ones, the
/// client's credentials, and the ones sluice sets itself.
fn forwardable(name: &[u8]) -> bool {
    !(is_hop_by_hop(name)
        || name.eq_ignore_ascii_case(b"authorization")
        || name.eq_ignore_ascii_case(b"x-api-key")
        || name.eq_ignore_ascii_case(b"x-request-id")
        || name.eq_ignore_ascii_case(b"expect"))
}

/// Writes the upstream request: the client's path under the upstream's
/// prefix, its end-to-end headers, and its body, untouched unless the
/// model name must be rewritten.
pub fn build_upstream_request(
    out: &mut Vec<u8>,
    req: &Request<'_>,
    body: &[u8],
    request_id: &[u8],
    spec: &UpstreamSpec,
    model: &ModelRoute,
) {
    out.clear();
    out.extend_from_slice(b"POST ");
    out.extend_from_slice(spec.path_prefix.as_bytes());
    out.extend_from_slice(req.head.path(req.raw));
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(spec.host_header.as_bytes());
    out.extend_from_slice(b"\r\n");
    for h in &req.head.headers {
        let name = &req.raw[h.name.clone()];
        if forwardable(name) {
            crate::http::response::header(out, name, &req.raw[h.value.clone()]);
        }
    }
    crate::http::response::header(out, b"x-request-id", request_id);
    if let Some(auth) = &spec.authorization {
        crate::http::response::header(out, b"authorization", auth.as_bytes());
    }
    let rewrite = model
        .rewrite_to
        .as_deref()
        .and_then(|to| json::member_range(body, "model").map(|r| (to, r)));
    match rewrite {
        Some((to, range)) => {
            let mut literal = Vec::with_capacity(to.len() + 2);
            json::push_string(&mut literal, to);
            out.extend_from_slice(b"content-length: ");
            push_u64(out, (body.len() - range.len() + literal.len()) as u64);
            out.extend_from_slice(b"\r\n\r\n");
            json::splice(out, body, range, &literal);
        }
        None => {
            out.extend_from_slice(b"content-length: ");
            push_u64(out, body.len() as u64);
            out.extend_from_slice(b"\r\n\r\n");
            out.extend_from_slice(body);
        }
    }
}
