//! Talking to model servers: the resolved upstream specs, each worker's
//! keep-alive connection pools, and the client side of one exchange (write
//! the request, read the head, read the body piece by piece).

pub mod client;
pub mod pool;

use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

/// One `[[upstreams]]` entry, resolved at load.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    pub name: Box<str>,
    pub addr: SocketAddr,
    /// `https://`: how to talk TLS to it; None = plain HTTP.
    pub tls: Option<crate::tls::UpstreamTls>,
    /// Value of the `Host` header sent upstream.
    pub host_header: Box<str>,
    /// Path the upstream's URL carries, prepended to the request path.
    pub path_prefix: Box<str>,
    /// `Bearer <key>` from `api_key_env`; clients' keys never go upstream.
    pub authorization: Option<Box<str>>,
    pub max_connections: usize,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub total_timeout: Duration,
    pub region: Option<Box<str>>,
    /// Active health check path (GET, 2xx = pass).
    pub health_path: Option<Box<str>>,
    /// The model server's Prometheus endpoint, read for its queue length.
    pub metrics_path: Option<Box<str>>,
    pub health_interval: Duration,
}

#[derive(Debug, Error)]
pub enum UpstreamError {
    #[error("could not connect to upstream {0}: {1}")]
    Connect(String, String),
    #[error("upstream {0} sent no response in time")]
    FirstByteTimeout(String),
    #[error("upstream {0} did not finish in time")]
    TotalTimeout(String),
    #[error("TLS handshake with upstream {0} failed: {1}")]
    Tls(String, String),
    #[error("upstream sent an invalid response: {0}")]
    Protocol(String),
    #[error("upstream connection failed: {0}")]
    Io(String),
    #[error("upstream response larger than {0} bytes")]
    TooLarge(usize),
}

impl UpstreamError {
    /// The label this failure is counted under in
    /// `sluice_upstream_requests_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        match self {
            UpstreamError::Connect(..) => "connect_error",
            UpstreamError::Tls(..) => "tls_error",
            UpstreamError::FirstByteTimeout(_) => "first_byte_timeout",
            UpstreamError::TotalTimeout(_) => "total_timeout",
            UpstreamError::Protocol(_) | UpstreamError::TooLarge(_) => "protocol_error",
            UpstreamError::Io(_) => "io_error",
        }
    }
}
pub mod health;
