//! The server side of a client connection: read request heads under the
//! header and idle timeouts, read bodies under the size limit, hand each
//! request to the API, keep the connection alive while both sides want it.

use super::body::ChunkedDecoder;
use super::head::{self, Framing, RequestHead};
use super::io::{read_append, write_all_clear};
use super::response;
use crate::api::{self, GatewayError};
use crate::runtime::worker::Worker;
use crate::tls::ClientStream;
use monoio::io::AsyncWriteRent;
use monoio::net::TcpStream;
use monoio::time::timeout_at;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// The writing side of a client connection and its reusable buffers.
pub struct ClientIo {
    /// Plain TCP or TLS (`[server.tls]`).
    pub stream: ClientStream,
    /// Response bytes being assembled.
    pub wbuf: Vec<u8>,
    /// Upstream request being assembled.
    pub upstream_buf: Vec<u8>,
    /// Response body or stream events read from the upstream.
    pub relay_buf: Vec<u8>,
    pub request_id: Vec<u8>,
    /// The last byte of an answer, held back until its audit record is on
    /// disk (`[audit] fsync = "always"`): a client never holds a complete
    /// answer whose record a crash could lose.
    pub deferred: Vec<u8>,
}

/// One request as the API sees it.
pub struct Request<'a> {
    pub head: &'a RequestHead,
    /// The buffer `head`'s ranges index.
    pub raw: &'a [u8],
    pub body: &'a [u8],
    /// When the head was complete.
    pub started: Instant,
    /// Whether the connection may stay open after this request.
    pub keep_alive: bool,
    /// The client's address (the TCP peer).
    pub peer: std::net::IpAddr,
}

impl Request<'_> {
    pub fn path(&self) -> &[u8] {
        let p = self.head.path(self.raw);
        match memchr::memchr(b'?', p) {
            Some(q) => &p[..q],
            None => p,
        }
    }

    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.head.header(self.raw, name)
    }
}

/// What became of a request, for the connection loop.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub status: u16,
    pub keep_alive: bool,
}

enum HeadRead {
    Head(RequestHead),
    /// The peer closed, or stayed idle past its timeout: close quietly.
    Closed,
    Failed(GatewayError),
}

/// Serves one accepted connection: the TLS handshake first when
/// `[server.tls]` is set (within `header_timeout_ms`; a failed one is
/// counted and closes the connection), then requests until either side
/// ends the connection.
pub async fn serve_connection(worker: Rc<Worker>, tcp: TcpStream, peer: std::net::IpAddr) {
    worker.metrics.connection_opened();
    let stream = match &worker.snapshot.server.tls {
        None => ClientStream::Plain(tcp),
        Some(tls) => match tls.accept(tcp, worker.snapshot.server.header_timeout).await {
            Ok(stream) => {
                worker.metrics.tls_handshake("ok");
                stream
            }
            Err(failure) => {
                worker.metrics.tls_handshake(failure.as_str());
                worker.metrics.connection_closed();
                return;
            }
        },
    };
    serve_requests(worker, stream, peer).await;
}

async fn serve_requests(mut worker: Rc<Worker>, stream: ClientStream, peer: std::net::IpAddr) {
    let mut io = ClientIo {
        stream,
        // Grown on first use and then kept: an idle keep-alive connection
        // costs its read buffer and little else.
        wbuf: Vec::new(),
        upstream_buf: Vec::new(),
        relay_buf: Vec::new(),
        request_id: Vec::with_capacity(32),
        deferred: Vec::new(),
    };
    let mut rbuf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunked_body: Vec<u8> = Vec::new();
    let mut first = true;
    loop {
        let head = match read_head(&worker, &mut io.stream, &mut rbuf, first).await {
            HeadRead::Head(h) => h,
            HeadRead::Closed => break,
            HeadRead::Failed(e) => {
                io.request_id.clear();
                worker.next_request_id(&mut io.request_id);
                reply_error(&worker, &mut io, &e, false).await;
                linger_close(&mut io.stream).await;
                break;
            }
        };
        first = false;
        // A reload since the last request: serve this one with the new
        // configuration (the connection stays).
        worker = worker.current();
        let started = Instant::now();
        set_request_id(&worker, &head, &rbuf, &mut io.request_id);
        let body = read_body(&worker, &mut io, &head, &mut rbuf, &mut chunked_body).await;
        let (body_range, consumed) = match body {
            Ok(b) => b,
            Err(BodyError::Closed) => {
                worker.metrics.client_disconnect("request_body");
                break;
            }
            Err(BodyError::Refused(e)) => {
                reply_error(&worker, &mut io, &e, false).await;
                linger_close(&mut io.stream).await;
                break;
            }
        };
        let body: &[u8] = match body_range {
            Some(r) => &rbuf[r],
            None => &chunked_body,
        };
        let request = Request {
            head: &head,
            raw: &rbuf,
            body,
            started,
            keep_alive: worker.keep_alive(head.keep_alive),
            peer,
        };
        let outcome = {
            let _inflight = worker.begin_request();
            api::endpoints::handle(&worker, &mut io, &request).await
        };
        if !outcome.keep_alive {
            break;
        }
        if consumed >= rbuf.len() {
            rbuf.clear();
        } else {
            rbuf.drain(..consumed);
        }
    }
    worker.metrics.connection_closed();
}

/// Takes the client's `x-request-id` when it is a sane token, else makes one.
fn set_request_id(worker: &Worker, head: &RequestHead, raw: &[u8], out: &mut Vec<u8>) {
    out.clear();
    match head.header(raw, "x-request-id") {
        Some(v) if !v.is_empty() && v.len() <= 128 && v.iter().all(|b| b.is_ascii_graphic()) => {
            out.extend_from_slice(v)
        }
        _ => worker.next_request_id(out),
    }
}

async fn read_head(
    worker: &Worker,
    stream: &mut ClientStream,
    rbuf: &mut Vec<u8>,
    first: bool,
) -> HeadRead {
    let server = &worker.snapshot.server;
    let now = Instant::now();
    let mut head_deadline = now + server.header_timeout;
    loop {
        if !rbuf.is_empty() {
            match head::parse_request(rbuf) {
                Ok(Some(h)) => return HeadRead::Head(h),
                Ok(None) => {}
                Err(e) => return HeadRead::Failed(e.into()),
            }
        }
        let waiting_idle = rbuf.is_empty() && !first;
        let deadline = if waiting_idle {
            now + server.idle_timeout
        } else {
            head_deadline
        };
        match timeout_at(deadline.into(), read_append(stream, rbuf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                if !rbuf.is_empty() {
                    worker.metrics.client_disconnect("request_head");
                }
                return HeadRead::Closed;
            }
            Ok(Ok(_)) => {
                if waiting_idle {
                    // The idle wait ends with the first byte; the head
                    // must then be complete within header_timeout.
                    head_deadline = Instant::now() + server.header_timeout;
                }
            }
            Err(_) if waiting_idle => return HeadRead::Closed,
            Err(_) => {
                return HeadRead::Failed(GatewayError::HeaderTimeout(
                    server.header_timeout.as_millis() as u64,
                ))
            }
        }
    }
}

enum BodyError {
    Closed,
    Refused(GatewayError),
}

/// Reads the body. Returns where it is (a range of `rbuf`, or None for
/// the de-chunked copy in `chunked`) and how many bytes of `rbuf` the
/// request used.
async fn read_body(
    worker: &Worker,
    io: &mut ClientIo,
    head: &RequestHead,
    rbuf: &mut Vec<u8>,
    chunked: &mut Vec<u8>,
) -> Result<(Option<std::ops::Range<usize>>, usize), BodyError> {
    let server = &worker.snapshot.server;
    let limit = server.max_body_bytes;
    let too_large =
        || BodyError::Refused(GatewayError::Http(super::HttpError::BodyTooLarge(limit)));
    if head.expect_continue && head.framing != Framing::Empty && rbuf.len() == head.len {
        if let Framing::Length(n) = head.framing {
            if n > limit as u64 {
                return Err(too_large());
            }
        }
        io.wbuf.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
        write_all_clear(&mut io.stream, &mut io.wbuf)
            .await
            .map_err(|_| BodyError::Closed)?;
    }
    match head.framing {
        Framing::Empty | Framing::UntilClose => Ok((Some(head.len..head.len), head.len)),
        Framing::Length(n) => {
            if n > limit as u64 {
                return Err(too_large());
            }
            let end = head.len + n as usize;
            if rbuf.capacity() < end {
                rbuf.reserve(end - rbuf.len());
            }
            while rbuf.len() < end {
                read_body_more(&mut io.stream, rbuf, server.header_timeout).await?;
            }
            Ok((Some(head.len..end), end))
        }
        Framing::Chunked => {
            chunked.clear();
            let mut decoder = ChunkedDecoder::new();
            let mut pos = head.len;
            loop {
                if pos < rbuf.len() {
                    let used = decoder
                        .decode(&rbuf[pos..], chunked)
                        .map_err(|e| BodyError::Refused(e.into()))?;
                    pos += used;
                    if chunked.len() > limit {
                        return Err(too_large());
                    }
                    if decoder.is_done() {
                        return Ok((None, pos));
                    }
                }
                read_body_more(&mut io.stream, rbuf, server.header_timeout).await?;
            }
        }
    }
}

/// One more read of a request body; each read must arrive within
/// `header_timeout` of the previous one (slow uploads are refused with 408).
async fn read_body_more(
    stream: &mut ClientStream,
    rbuf: &mut Vec<u8>,
    limit: Duration,
) -> Result<usize, BodyError> {
    match timeout_at((Instant::now() + limit).into(), read_append(stream, rbuf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => Err(BodyError::Closed),
        Ok(Ok(n)) => Ok(n),
        Err(_) => Err(BodyError::Refused(GatewayError::BodyTimeout(
            limit.as_millis() as u64,
        ))),
    }
}

/// Writes an OpenAI error response for `err`, counting it.
pub async fn reply_error(
    worker: &Worker,
    io: &mut ClientIo,
    err: &GatewayError,
    keep_alive: bool,
) -> Outcome {
    let shape = err.shape();
    if shape.status < 500 {
        worker.metrics.client_error(shape.reason);
    }
    let body = err.body();
    let keep_alive = worker.keep_alive(keep_alive);
    let headers = err.headers();
    let extra: Vec<(&[u8], &[u8])> = headers.iter().map(|(n, v)| (*n, v.as_bytes())).collect();
    io.wbuf.clear();
    response::json(
        &mut io.wbuf,
        shape.status,
        &io.request_id,
        keep_alive,
        &extra,
        &body,
    );
    let written = write_all_clear(&mut io.stream, &mut io.wbuf).await.is_ok();
    Outcome {
        status: shape.status,
        keep_alive: keep_alive && written,
    }
}

/// Closes after an error answer without losing it: stop writing, then
/// read and discard what the client still sends (briefly), so the close
/// does not turn into a reset that destroys the answer in flight.
async fn linger_close(stream: &mut ClientStream) {
    let _ = stream.shutdown().await;
    let deadline = Instant::now() + Duration::from_millis(500);
    let mut sink = Vec::with_capacity(16 * 1024);
    let mut total = 0usize;
    while total < 1 << 20 {
        sink.clear();
        match timeout_at(deadline.into(), read_append(stream, &mut sink)).await {
            Ok(Ok(n)) if n > 0 => total += n,
            _ => break,
        }
    }
}
