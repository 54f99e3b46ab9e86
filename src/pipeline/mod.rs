//! The request pipeline: the steps a proxied request takes, in order, each
//! in its own module (docs/architecture.md lists them): audit gate, auth,
//! parse, authorize, agents, guard, route, limits, then the attempt loop
//! (upstream, relay, retries and fallbacks), accounting and the audit
//! record. The response cache answers after the limits, before routing.

pub mod account;
pub mod agent;
pub mod approve;
pub mod auth;
pub mod authorize;
pub mod cache;
pub mod filter;
pub mod guard;
pub mod jwt;
pub mod limits;
pub mod relay;
pub mod route;
pub mod throttle;

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
    let principal = match auth::check(worker, req).await {
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
    // agents: the tools offered and the session's turns (`[[agents]]`).
    if let Some(p) = principal.as_ref().filter(|p| p.team.agent.is_some()) {
        if let Err(e) = agent::check_tools(p, &facts.tools) {
            return refuse(worker, io, req, &e).await;
        }
        if let Some(session) = req.header("x-sluice-session") {
            let session = crate::http::head::trim(session);
            if let Err(e) = worker.shared.sessions.turn(p, session, req.started) {
                return refuse(worker, io, req, &e).await;
            }
        }
    }
    // The body forwarded: the client's bytes unless a step rewrites them.
    let mut body: Cow<'_, [u8]> = Cow::Borrowed(req.body);
    // Steps that change the answer on its way back register here.
    let mut filters = AnswerFilters::default();
    // agents: answers calling a forbidden tool are replaced by an error.
    if let Some(f) = principal
        .as_ref()
        .and_then(|p| agent::ToolCallFilter::for_team(&p.team))
    {
        filters.push(f);
    }
    // guard: PII and content safety on the text that reaches the model.
    let mut pii_findings = Vec::new();
    // Answers to requests carrying pseudonyms hold this client's own values
    // once they are put back: never cached.
    let mut pseudonymized = false;
    if let Some(guard) = &snapshot.guard {
        let team_policy = principal
            .as_ref()
            .and_then(|p| p.team.pii_policy.as_deref());
        match guard.inspect_request(&worker.guard, team_policy, req.body) {
            Ok(inspection) => {
                pseudonymized = !inspection.findings.is_empty()
                    && guard
                        .policy(team_policy)
                        .is_some_and(|p| p.action == crate::config::PiiAction::Pseudonymize);
                if let Some(rewritten) = inspection.body {
                    body = Cow::Owned(rewritten);
                }
                if let Some(filter) = inspection.filter {
                    filters.push(filter);
                }
                pii_findings = inspection.findings;
            }
            Err(e) => return refuse(worker, io, req, &e).await,
        }
    }

    // account: streams ask the upstream for usage (`include_usage`); the
    // extra usage event is dropped again when the client did not ask.
    let accounted = principal.is_some() || snapshot.billing.has_prices();
    let tally = std::rc::Rc::new(account::Tally::default());
    if accounted {
        let added = if facts.stream {
            account::with_stream_usage(&body)
        } else {
            None
        };
        filters.push(Box::new(account::UsageFilter {
            strip_usage: added.is_some(),
            tally: tally.clone(),
        }));
        if let Some(rewritten) = added {
            body = Cow::Owned(rewritten);
        }
    }
    // audit: the content the record keeps (`detail`, per team). The answer
    // is captured by the last filter, so it is what the client received.
    let content = audit_content(snapshot, principal.as_ref(), audit, &mut filters);

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
    // limits: rate limits of the team and key, and the budget reservation
    // of the worst case at the highest price of the models that may answer;
    // settled after the relay, given back when the request fails first.
    let worst = account::worst(
        &snapshot.billing,
        &body,
        std::iter::once(asked).chain(fallbacks.iter().copied()),
    );
    let admission = match principal.as_ref() {
        Some(p) => match account::admit_or_wait(p, worst).await {
            Ok(a) => Some(a),
            Err(e) => return refuse(worker, io, req, &e).await,
        },
        None => None,
    };
    let limit_headers = admission
        .as_ref()
        .map(account::Admission::remaining_headers)
        .unwrap_or_default();
    if admission.as_ref().is_some_and(|a| a.has_budget()) && facts.stream {
        tally.cap_bytes.set(worst.output.saturating_mul(4));
    }
    // cache: an answer stored for the same team and model; a miss records
    // the answer on its way out (the last filter) to store it.
    let mut cache_header: &[u8] = b"";
    let mut cache_pending = None;
    let mut cached = None;
    if let (Some(settings), Some(cache), Endpoint::ChatCompletions) =
        (&snapshot.cache, worker.shared.cache.get(), endpoint)
    {
        let bypass = pseudonymized
            || principal.as_ref().is_some_and(|p| !p.team.cache)
            || req
                .header("x-sluice-cache")
                .is_some_and(|v| crate::http::head::trim(v).eq_ignore_ascii_case(b"bypass"));
        let consulted = if bypass {
            cache.bypass()
        } else {
            let ns = cache::Namespace {
                team: principal
                    .as_ref()
                    .map_or_else(|| "-".into(), |p| p.team.name.clone()),
                model: (*snapshot.models[asked].name).into(),
            };
            cache.consult(settings, ns, &body).await
        };
        match consulted {
            cache::Consulted::Hit(hit) => cached = Some(hit),
            cache::Consulted::Miss(pending) => {
                cache_header = cache::Outcome::Miss.header();
                filters.push(cache::answer::Recorder::into(pending.recording.clone()));
                cache_pending = Some((cache, settings, pending));
            }
            cache::Consulted::Bypass => cache_header = cache::Outcome::Bypass.header(),
        }
    }
    let resilience = &snapshot.resilience;
    let states = &*worker.upstreams;
    let router = &worker.router;
    router.earn_retry(resilience.retry_budget);
    let mut tried = route::Tried::default();
    let mut chain = std::iter::once(asked).chain(fallbacks.iter().copied());
    let mut model = chain.next().unwrap_or(asked);
    let mut retries = 0u32;
    let mut last_error: Option<GatewayError> = None;
    let mut decisions: Vec<String> = Vec::new();
    let mut answered_by = None;
    let relayed = if let Some(hit) = cached {
        if audit.is_some() {
            decisions.push(match hit.similarity {
                Some(s) => format!("cache:semantic-hit:{s:.4}"),
                None => "cache:hit".into(),
            });
        }
        answer_from_cache(worker, io, req, &hit, facts.stream, &limit_headers).await
    } else {
        loop {
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
            let hold = principal.as_ref().and_then(|p| {
                let rule = approve::rule_for(&snapshot.approvals, &p.team.name, &route.name)?;
                Some(relay::Hold {
                    rule,
                    team: &p.team.name,
                    key: p.key_id(),
                    model: &route.name,
                })
            });
            let attempt = relay::Attempt {
                defer_last_byte: audit
                    .is_some_and(|log| log.settings.fsync == crate::config::Fsync::Always),
                hold,
                upstream,
                may_retry,
                served_model: (model != asked || experiment.is_some()).then_some(&*route.name),
                limit_headers: &limit_headers,
                cache_header,
            };
            let state = states.get(upstream);
            state.inflight.fetch_add(1, Relaxed);
            let forwarded = relay::forward(worker, io, req, attempt, &mut filters).await;
            state.inflight.fetch_sub(1, Relaxed);
            match forwarded {
                Forwarded::Answered(relayed) => {
                    answered_by = Some(upstream);
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
        }
    };

    let metrics = &worker.metrics;
    let route = &snapshot.models[model];
    let model_key = model as u32;
    let elapsed = req.started.elapsed();
    let status = relayed.outcome.status;
    metrics.request(model_key, &route.name, status, elapsed.as_secs_f64());
    metrics.overhead(elapsed.saturating_sub(relayed.upstream_time).as_secs_f64());
    // account: the reported usage, or an estimate (marked) when the
    // upstream sent none; cost at the answering model's price.
    let estimated = relayed.usage.is_none() && (status < 400 || tally.text_bytes.get() > 0);
    let usage = match relayed.usage {
        Some(u) => Some(u),
        None if estimated => Some(relay::Usage {
            input: account::estimated_prompt_tokens(&body),
            output: tally.text_bytes.get().div_ceil(4),
        }),
        None => None,
    };
    let cost = usage.map_or(0, |u| snapshot.billing.cost(model, u.input, u.output));
    if let Some(usage) = usage {
        metrics.tokens(model_key, &route.name, usage.input, usage.output);
        if estimated {
            crate::metrics::tokens_estimated(&route.name);
        }
    }
    if cost > 0 {
        let (team_key, team) = principal.as_ref().map_or((u32::MAX, NO_MODEL), |p| {
            (p.team.index as u32, &*p.team.name)
        });
        metrics.cost(
            (team_key, model_key),
            team,
            &route.name,
            cost as f64 / account::NANOS,
        );
    }
    if let Some(admission) = admission {
        let tokens = usage.map_or(0, |u| u.input + u.output);
        admission.settle(&snapshot.billing, tokens, cost);
    }
    if let Some((cache, settings, pending)) = cache_pending {
        if status == 200 && relayed.upstream_outcome == "ok" {
            let tokens = usage.map_or((0, 0), |u| (u.input, u.output));
            cache.store(settings, pending, tokens);
        }
    }
    if let Some(ttft) = relayed.time_to_first_event {
        metrics.time_to_first_token(model_key, &route.name, ttft.as_secs_f64());
    }
    if let (Some(note), true) = (&relayed.approval, audit.is_some()) {
        decisions.push(format!("approval:{note}"));
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
            upstream: answered_by.map(|u| &*snapshot.upstreams[u].name),
            experiment: experiment.map(|e| &*snapshot.experiments[e].name),
            variant: experiment.map(|_| &*snapshot.models[asked].name),
            stream: facts.stream,
            tokens_in: usage.map(|u| u.input),
            tokens_out: usage.map(|u| u.output),
            tokens_estimated: estimated,
            cost: (cost > 0).then(|| cost as f64 / account::NANOS),
            currency: (cost > 0).then_some(&*snapshot.billing.currency),
            ttft_ms: relayed
                .time_to_first_event
                .map(|d| d.as_secs_f64() * 1000.0),
            decisions,
            pii: pii_findings.into_iter().collect(),
            ..audit_base(worker, req, &io.request_id, endpoint.as_str(), status, None)
        };
        let mut record = record;
        record.completion = content.answer.as_ref().map(|text| text.take());
        let request_content = match content.request {
            RequestContent::Sent => Some(req.body),
            RequestContent::Forwarded => Some(&*body),
            RequestContent::None => None,
        };
        let durable = submit(log, record, request_content, !io.deferred.is_empty());
        if let Some(on_disk) = durable {
            // The answer's last byte waits for its record (fsync = always).
            let _ = on_disk.await;
        }
    }
    if !io.deferred.is_empty() {
        let _ = crate::http::io::write_all_clear(&mut io.stream, &mut io.deferred).await;
    }
    // account: usage per day, team, key and model, queued for the store.
    if let (Some(p), Some(store)) = (&principal, worker.shared.store.get()) {
        let tokens = usage.map_or((0, 0), |u| (u.input, u.output));
        store.record_request(p, &route.name, tokens, (cost, estimated));
    }
    relayed.outcome
}

/// Answers from the cache: the replayed answer with the cache headers
/// and the request's limit headers; no upstream, no tokens.
async fn answer_from_cache(
    worker: &Worker,
    io: &mut ClientIo,
    req: &Request<'_>,
    hit: &cache::Hit,
    stream: bool,
    limit_headers: &[u8],
) -> relay::Relayed {
    let keep_alive = worker.keep_alive(req.keep_alive);
    io.wbuf.clear();
    cache::hit_response(
        &mut io.wbuf,
        hit,
        stream,
        &io.request_id,
        keep_alive,
        limit_headers,
    );
    let written = crate::http::io::write_all_clear(&mut io.stream, &mut io.wbuf)
        .await
        .is_ok();
    relay::Relayed {
        outcome: Outcome {
            status: if written { 200 } else { relay::CLIENT_CLOSED },
            keep_alive: keep_alive && written,
        },
        upstream_time: Duration::ZERO,
        upstream_outcome: "cache",
        usage: Some(relay::Usage::default()),
        time_to_first_event: None,
        approval: None,
        ttfb: None,
    }
}

/// Feeds one attempt's result to the upstream's breaker, latency average
/// and metrics.
fn record_attempt(worker: &Worker, upstream: usize, outcome: &'static str, ttfb: Option<Duration>) {
    let snapshot = &worker.snapshot;
    let state = worker.upstreams.get(upstream);
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
        let full = log.settings.detail == crate::config::AuditDetail::Full;
        submit(log, record, full.then_some(req.body), false);
    }
    let seconds = req.started.elapsed().as_secs_f64();
    worker
        .metrics
        .request(u32::MAX, NO_MODEL, outcome.status, seconds);
    outcome
}

/// Which request bytes an audit record keeps.
enum RequestContent {
    /// As the client sent them (`full`).
    Sent,
    /// As the model received them (`redacted` under a masking PII policy).
    Forwarded,
    None,
}

struct AuditContent {
    request: RequestContent,
    /// The captured answer text, when the record keeps it.
    answer: Option<std::rc::Rc<std::cell::RefCell<String>>>,
}

/// Decides what content a request's audit record keeps and registers the
/// answer capture. `redacted` keeps content only where the PII policy
/// masks it: the request under `mask`/`pseudonymize`, the answer under
/// `mask` with `scan_responses` (pseudonyms are put back in answers, so
/// those are not redacted).
fn audit_content(
    snapshot: &crate::config::snapshot::Snapshot,
    principal: Option<&auth::Principal>,
    audit: Option<&std::sync::Arc<audit::AuditLog>>,
    filters: &mut AnswerFilters,
) -> AuditContent {
    use crate::config::{AuditDetail, PiiAction};
    let none = AuditContent {
        request: RequestContent::None,
        answer: None,
    };
    let Some(log) = audit else { return none };
    let detail = principal
        .and_then(|p| p.team.audit_detail)
        .unwrap_or(log.settings.detail);
    let policy = snapshot
        .guard
        .as_ref()
        .and_then(|g| g.policy(principal.and_then(|p| p.team.pii_policy.as_deref())));
    let masks_requests =
        policy.is_some_and(|p| matches!(p.action, PiiAction::Mask | PiiAction::Pseudonymize));
    let masks_answers = policy.is_some_and(|p| p.action == PiiAction::Mask && p.scan_responses);
    let (request, keep_answer) = match detail {
        AuditDetail::Full => (RequestContent::Sent, true),
        AuditDetail::Redacted if masks_requests => (RequestContent::Forwarded, masks_answers),
        AuditDetail::Redacted | AuditDetail::Metadata => return none,
    };
    let answer = keep_answer.then(|| {
        let (filter, text) = audit::capture::Capture::filter();
        filters.push(filter);
        text
    });
    AuditContent { request, answer }
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
/// With `durable`, the receiver resolves once the record is on disk.
fn submit(
    log: &audit::AuditLog,
    mut record: audit::Record<'_>,
    content: Option<&[u8]>,
    durable: bool,
) -> Option<futures_channel::oneshot::Receiver<()>> {
    if let Some(body) = content {
        record.request = serde_json::from_slice(body).ok();
    }
    if durable {
        return log.submit_durable(record.to_line());
    }
    log.submit(record.to_line());
    None
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
