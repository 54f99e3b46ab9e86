//! The endpoints: which path and method go where. Completions and
//! embeddings go through the pipeline; health, readiness and the model list
//! are answered here.

use super::request::Endpoint;
use super::GatewayError;
use crate::http::head::Method;
use crate::http::io::write_all_clear;
use crate::http::response;
use crate::http::server::{reply_error, ClientIo, Outcome, Request};
use crate::runtime::worker::Worker;
use std::rc::Rc;

pub async fn handle(worker: &Rc<Worker>, io: &mut ClientIo, req: &Request<'_>) -> Outcome {
    let method = req.head.method;
    let (endpoint, allow) = match req.path() {
        b"/v1/chat/completions" => (Some(Endpoint::ChatCompletions), "POST"),
        b"/v1/completions" => (Some(Endpoint::Completions), "POST"),
        b"/v1/embeddings" => (Some(Endpoint::Embeddings), "POST"),
        b"/v1/models" | b"/health" | b"/ready" => (None, "GET"),
        path => {
            let err = GatewayError::UnknownPath {
                method: method_name(req),
                path: String::from_utf8_lossy(path).into_owned(),
            };
            return reply_error(worker, io, &err, req.keep_alive).await;
        }
    };
    let wanted = if endpoint.is_some() {
        Method::Post
    } else {
        Method::Get
    };
    if method != wanted {
        let err = GatewayError::MethodNotAllowed {
            method: method_name(req),
            path: String::from_utf8_lossy(req.path()).into_owned(),
            allow,
        };
        return reply_error(worker, io, &err, req.keep_alive).await;
    }
    if let Some(endpoint) = endpoint {
        return crate::pipeline::run(worker, io, req, endpoint).await;
    }
    let (status, body): (u16, &[u8]) = match req.path() {
        b"/health" => (200, br#"{"status":"ok"}"#),
        b"/ready" if worker.is_draining() => (503, br#"{"status":"draining"}"#),
        b"/ready" => (200, br#"{"status":"ready"}"#),
        // Only the models the caller may use.
        _ => match crate::pipeline::auth::check(worker, req).await {
            Ok(None) => (200, &worker.snapshot.models_json),
            Ok(Some(principal)) => {
                return local_json(worker, io, req, 200, &principal.team.models_json).await
            }
            Err(e) => return reply_error(worker, io, &e, req.keep_alive).await,
        },
    };
    local_json(worker, io, req, status, body).await
}

/// Writes a JSON answer produced by sluice itself. Draining is looked at
/// again here: a drain that began after the request was read (its `/ready`
/// answer is then 503) must still close the connection.
pub async fn local_json(
    worker: &Worker,
    io: &mut ClientIo,
    req: &Request<'_>,
    status: u16,
    body: &[u8],
) -> Outcome {
    let keep_alive = worker.keep_alive(req.keep_alive);
    io.wbuf.clear();
    response::json(&mut io.wbuf, status, &io.request_id, keep_alive, &[], body);
    let written = write_all_clear(&mut io.stream, &mut io.wbuf).await.is_ok();
    Outcome {
        status,
        keep_alive: keep_alive && written,
    }
}

fn method_name(req: &Request<'_>) -> String {
    let raw = req.raw;
    let end = memchr::memchr(b' ', raw).unwrap_or(0).min(16);
    String::from_utf8_lossy(&raw[..end]).into_owned()
}
