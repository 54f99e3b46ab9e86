//! Server- and client-side HTTP/1.1 framing, written over monoio's owned
//! buffers: request and response heads (httparse), body framing
//! (Content-Length, chunked), Server-Sent Events splitting and response
//! writing. It owns no connection state; `runtime` and `upstream` own the
//! sockets and pass their buffers through here.

pub mod body;
pub mod head;
pub mod io;
pub mod response;
pub mod sse;

use thiserror::Error;

/// Most headers a request may carry; more is a header flood (431).
pub const MAX_HEADERS: usize = 96;
/// Largest request or response head accepted (431 / 502 beyond it).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// What can be wrong with bytes received from a peer.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum HttpError {
    #[error("malformed HTTP request: {0}")]
    Malformed(&'static str),
    #[error("request head larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("more than {MAX_HEADERS} request headers")]
    TooManyHeaders,
    #[error("invalid Content-Length header")]
    InvalidContentLength,
    #[error("both Content-Length and Transfer-Encoding are set")]
    AmbiguousLength,
    #[error("unsupported Transfer-Encoding (only chunked is accepted)")]
    UnsupportedTransferEncoding,
    #[error("invalid chunked body encoding")]
    InvalidChunk,
    #[error("request body larger than {0} bytes")]
    BodyTooLarge(usize),
    #[error("unsupported HTTP version")]
    Version,
}
pub mod server;
