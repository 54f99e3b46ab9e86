//! The request pipeline: the steps a proxied request takes, in order, each
//! in its own module. Today: parse the body view, route to a target,
//! forward and relay. Authentication, authorization, limits, guards and
//! the cache slot in between these steps as they are built.

pub mod filter;
pub mod relay;
pub mod route;

use crate::api::json;
use crate::api::request::Endpoint;
use crate::config::snapshot::ModelRoute;
use crate::http::head::is_hop_by_hop;
use crate::http::response::push_u64;
use crate::http::server::{reply_error, ClientIo, Outcome, Request};
use crate::metrics::NO_MODEL;
use crate::runtime::worker::Worker;
use crate::upstream::UpstreamSpec;
use filter::AnswerFilters;
use std::borrow::Cow;
use std::rc::Rc;

pub async fn run(
    worker: &Rc<Worker>,
    io: &mut ClientIo,
    req: &Request<'_>,
    _endpoint: Endpoint,
) -> Outcome {
    let snapshot = &worker.snapshot;
    let facts = worker
        .scratch
        .borrow_mut()
        .facts(req.body, |name| snapshot.model(name));
    let facts = match facts {
        Ok(f) => f,
        Err(e) => {
            let outcome = reply_error(worker, io, &e, req.keep_alive).await;
            let seconds = req.started.elapsed().as_secs_f64();
            worker
                .metrics
                .request(u32::MAX, NO_MODEL, outcome.status, seconds);
            return outcome;
        }
    };
    let model = &snapshot.models[facts.model];
    // The body forwarded: the client's bytes unless a step rewrites them.
    let body: Cow<'_, [u8]> = Cow::Borrowed(req.body);
    // Steps that change the answer on its way back register here.
    let mut filters = AnswerFilters::default();
    let upstream = worker.router.pick(snapshot, facts.model);
    build_upstream_request(
        &mut io.upstream_buf,
        req,
        &body,
        &io.request_id,
        &snapshot.upstreams[upstream],
        model,
    );
    let relayed = relay::forward(worker, io, req, upstream, &mut filters).await;

    let metrics = &worker.metrics;
    let model_key = facts.model as u32;
    let elapsed = req.started.elapsed();
    metrics.request(
        model_key,
        &model.name,
        relayed.outcome.status,
        elapsed.as_secs_f64(),
    );
    metrics.overhead(elapsed.saturating_sub(relayed.upstream_time).as_secs_f64());
    metrics.upstream(
        upstream as u32,
        &snapshot.upstreams[upstream].name,
        relayed.upstream_outcome,
    );
    if let Some(usage) = relayed.usage {
        metrics.tokens(model_key, &model.name, usage.input, usage.output);
    }
    if let Some(ttft) = relayed.time_to_first_event {
        metrics.time_to_first_token(model_key, &model.name, ttft.as_secs_f64());
    }
    relayed.outcome
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
