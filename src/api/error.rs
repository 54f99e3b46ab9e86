//! The one place where errors become answers: each module's error enum
//! converts into `GatewayError`, which knows its HTTP status, OpenAI error
//! type and code, and the metrics reason it is counted under.

use crate::http::HttpError;
use crate::upstream::UpstreamError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GatewayError {
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("the request head was not received within {0} ms")]
    HeaderTimeout(u64),
    #[error("the request body was not received within {0} ms")]
    BodyTimeout(u64),
    #[error("We could not parse the JSON body of your request: {0}")]
    InvalidJson(String),
    #[error("you must provide a '{0}' parameter")]
    MissingField(&'static str),
    #[error("'{0}' must be {1}")]
    InvalidField(&'static str, &'static str),
    #[error("The model '{0}' does not exist or you do not have access to it.")]
    ModelNotFound(String),
    #[error("The request contains personal data ({0}); it was not sent to the model.")]
    PiiDetected(String),
    #[error("Content policy violation: {0}.")]
    ContentPolicy(String),
    #[error("Invalid URL ({method} {path})")]
    UnknownPath { method: String, path: String },
    #[error("{method} is not allowed on {path}; use {allow}")]
    MethodNotAllowed {
        method: String,
        path: String,
        allow: &'static str,
    },
    #[error("sluice is shutting down; retry on another node")]
    Draining,
    /// Missing, unknown, expired or revoked credentials; the text is the
    /// client-facing message, the reason what metrics count.
    #[error("{0}")]
    InvalidApiKey(&'static str),
    #[error("Your team may not use the model '{0}'.")]
    ModelNotAllowed(String),
    #[error("No upstream of the model '{0}' is in a region your team may use.")]
    RegionNotAllowed(String),
    #[error("The tool '{0}' is not allowed for your team's agents.")]
    ToolNotAllowed(String),
    #[error("{0}")]
    SessionLimit(String),
    /// Too many authentication failures from the client's address; the
    /// seconds until it may try again.
    #[error("Too many failed authentication attempts from your address; retry in {0} seconds.")]
    AuthBlocked(u64),
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    #[error("every upstream of this model failed; the last answered {0}")]
    UpstreamStatus(u16),
    #[error("no healthy upstream can serve the model '{0}' right now")]
    NoUpstream(String),
    #[error("the audit log cannot take records right now; the request was not served unaudited")]
    AuditUnavailable,
    /// A budget cannot hold the request's worst-case cost.
    #[error("{0} Ask your administrator to raise it, or wait for the next period.")]
    InsufficientQuota(String),
    /// A rate limit (rpm, tpm, max_concurrent) of the team or key.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: u64,
        remaining_requests: Option<u64>,
        remaining_tokens: Option<u64>,
    },
    #[error("a reviewer rejected this answer")]
    RejectedByReviewer,
    #[error("no reviewer decided on this answer within {0} s")]
    ApprovalTimeout(u64),
}

/// How an error is presented: status, OpenAI type, code, param, and the
/// reason label it is counted under.
pub struct ErrorShape {
    pub status: u16,
    pub kind: &'static str,
    pub code: &'static str,
    pub param: Option<&'static str>,
    pub reason: &'static str,
}

impl GatewayError {
    pub fn shape(&self) -> ErrorShape {
        use GatewayError as E;
        let (status, kind, code, reason) = match self {
            E::Http(h) => match h {
                HttpError::BodyTooLarge(_) => (413, INVALID, "request_too_large", "body_too_large"),
                HttpError::HeadTooLarge => (431, INVALID, "headers_too_large", "head_too_large"),
                HttpError::TooManyHeaders => (431, INVALID, "too_many_headers", "too_many_headers"),
                HttpError::InvalidContentLength => (
                    400,
                    INVALID,
                    "invalid_content_length",
                    "invalid_content_length",
                ),
                HttpError::AmbiguousLength => {
                    (400, INVALID, "ambiguous_length", "ambiguous_length")
                }
                HttpError::UnsupportedTransferEncoding => (
                    501,
                    INVALID,
                    "unsupported_transfer_encoding",
                    "unsupported_transfer_encoding",
                ),
                HttpError::InvalidChunk => (400, INVALID, "invalid_chunked_body", "invalid_chunk"),
                HttpError::Version => (505, INVALID, "http_version_not_supported", "http_version"),
                HttpError::Malformed(_) => (400, INVALID, "malformed_request", "malformed_head"),
            },
            E::HeaderTimeout(_) => (408, INVALID, "request_timeout", "header_timeout"),
            E::BodyTimeout(_) => (408, INVALID, "request_timeout", "body_timeout"),
            E::InvalidJson(_) => (400, INVALID, "invalid_json", "invalid_json"),
            E::MissingField(_) => (400, INVALID, "missing_required_parameter", "missing_field"),
            E::InvalidField(..) => (400, INVALID, "invalid_type", "invalid_field"),
            E::ModelNotFound(_) => (404, INVALID, "model_not_found", "model_not_found"),
            E::PiiDetected(_) => (400, INVALID, "pii_detected", "pii_detected"),
            E::ContentPolicy(_) => (
                400,
                INVALID,
                "content_policy_violation",
                "content_policy_violation",
            ),
            E::UnknownPath { .. } => (404, INVALID, "unknown_url", "unknown_path"),
            E::MethodNotAllowed { .. } => {
                (405, INVALID, "method_not_allowed", "method_not_allowed")
            }
            E::Draining => (503, SERVER, "server_shutting_down", "draining"),
            E::UpstreamStatus(status) => (*status, SERVER, "upstream_error", "upstream_status"),
            E::NoUpstream(_) => (503, SERVER, "no_healthy_upstream", "no_upstream"),
            E::AuditUnavailable => (503, SERVER, "audit_unavailable", "audit_unavailable"),
            E::InsufficientQuota(_) => (429, QUOTA, "insufficient_quota", "insufficient_quota"),
            E::RateLimited { .. } => (
                429,
                RATE_LIMIT,
                "rate_limit_exceeded",
                "rate_limit_exceeded",
            ),
            E::RejectedByReviewer => (403, INVALID, "rejected_by_reviewer", "rejected_by_reviewer"),
            E::ApprovalTimeout(_) => (504, SERVER, "approval_timeout", "approval_timeout"),
            E::InvalidApiKey(_) => (401, INVALID, "invalid_api_key", "invalid_api_key"),
            E::ModelNotAllowed(_) => (403, PERMISSION, "model_not_allowed", "model_not_allowed"),
            E::RegionNotAllowed(_) => (403, PERMISSION, "region_not_allowed", "region_not_allowed"),
            E::ToolNotAllowed(_) => (403, PERMISSION, "tool_not_allowed", "tool_not_allowed"),
            E::SessionLimit(_) => (429, RATE_LIMIT, "session_limit", "session_limit"),
            E::AuthBlocked(_) => (429, RATE_LIMIT, "too_many_auth_failures", "auth_blocked"),
            E::Upstream(u) => match u {
                UpstreamError::Connect(..) => {
                    (502, SERVER, "upstream_unavailable", "upstream_connect")
                }
                UpstreamError::Tls(..) => (502, SERVER, "upstream_unavailable", "upstream_tls"),
                UpstreamError::FirstByteTimeout(_) | UpstreamError::TotalTimeout(_) => {
                    (504, SERVER, "upstream_timeout", "upstream_timeout")
                }
                UpstreamError::Protocol(_) | UpstreamError::Io(_) | UpstreamError::TooLarge(_) => {
                    (502, SERVER, "bad_upstream_response", "upstream_protocol")
                }
            },
        };
        let param = match self {
            E::MissingField(p) | E::InvalidField(p, _) => Some(*p),
            E::ModelNotFound(_) | E::ModelNotAllowed(_) | E::RegionNotAllowed(_) => Some("model"),
            E::ToolNotAllowed(_) => Some("tools"),
            _ => None,
        };
        ErrorShape {
            status,
            kind,
            code,
            param,
            reason,
        }
    }

    /// Extra response headers of this error: `allow` for 405,
    /// `retry-after` and `x-ratelimit-remaining-*` for rate limits.
    pub fn headers(&self) -> Vec<(&'static [u8], String)> {
        match self {
            GatewayError::MethodNotAllowed { allow, .. } => vec![(b"allow", allow.to_string())],
            GatewayError::AuthBlocked(secs) => vec![(b"retry-after", secs.to_string())],
            GatewayError::RateLimited {
                retry_after,
                remaining_requests,
                remaining_tokens,
                ..
            } => {
                let mut h: Vec<(&'static [u8], String)> =
                    vec![(b"retry-after", retry_after.to_string())];
                if let Some(r) = remaining_requests {
                    h.push((b"x-ratelimit-remaining-requests", r.to_string()));
                }
                if let Some(t) = remaining_tokens {
                    h.push((b"x-ratelimit-remaining-tokens", t.to_string()));
                }
                h
            }
            _ => Vec::new(),
        }
    }

    /// The OpenAI error JSON body for this error.
    pub fn body(&self) -> Vec<u8> {
        let shape = self.shape();
        crate::http::response::error_json(
            &self.to_string(),
            shape.kind,
            Some(shape.code),
            shape.param,
        )
    }
}

const INVALID: &str = "invalid_request_error";
const SERVER: &str = "api_error";
const PERMISSION: &str = "permission_error";
const RATE_LIMIT: &str = "rate_limit_error";
const QUOTA: &str = "insufficient_quota";
