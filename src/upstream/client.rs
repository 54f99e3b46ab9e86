//! One exchange with an upstream over a pooled connection: write the
//! request, read the response head, then the body piece by piece under the
//! request's deadlines.

use super::pool::UpstreamConn;
use super::UpstreamError;
use crate::http::body::ChunkedDecoder;
use crate::http::head::{self, Framing, Method, ResponseHead};
use crate::http::io::read_append;
use monoio::io::AsyncWriteRentExt;
use monoio::time::timeout_at;
use std::time::Instant;

/// Writes `request` and reads the response head, skipping interim 1xx
/// heads. `request` is left intact so the caller can resend it on a fresh
/// connection when a reused one turns out to be closed.
pub async fn send(
    conn: &mut UpstreamConn,
    request: &mut Vec<u8>,
    head_deadline: Instant,
    upstream: &str,
) -> Result<ResponseHead, UpstreamError> {
    let owned = std::mem::take(request);
    let (written, owned) = conn.stream.write_all(owned).await;
    *request = owned;
    written.map_err(|e| UpstreamError::Io(e.to_string()))?;
    conn.buf.clear();
    loop {
        let n = timeout_at(
            head_deadline.into(),
            read_append(&mut conn.stream, &mut conn.buf),
        )
        .await
        .map_err(|_| UpstreamError::FirstByteTimeout(upstream.to_owned()))?
        .map_err(|e| UpstreamError::Io(e.to_string()))?;
        if n == 0 {
            return Err(UpstreamError::Io("upstream closed the connection".into()));
        }
        match head::parse_response(&conn.buf, Method::Post) {
            Ok(Some(h)) if h.status < 200 => {
                conn.buf.drain(..h.len);
            }
            Ok(Some(h)) => return Ok(h),
            Ok(None) => {}
            Err(e) => return Err(UpstreamError::Protocol(e.to_string())),
        }
    }
}

/// Reads a response body as it arrives, undoing its framing.
pub struct BodyReader {
    framing: Framing,
    remaining: u64,
    decoder: ChunkedDecoder,
    /// Start of unconsumed bytes in the connection's buffer.
    pos: usize,
    done: bool,
}

impl BodyReader {
    pub fn new(head: &ResponseHead) -> Self {
        Self {
            framing: head.framing,
            remaining: match head.framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            decoder: ChunkedDecoder::new(),
            pos: head.len,
            done: head.framing == Framing::Empty,
        }
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether the connection can carry another request: the body ended
    /// by its framing and nothing beyond it was received.
    pub fn reusable(&self, head: &ResponseHead, conn: &UpstreamConn) -> bool {
        self.done && head.keep_alive && self.pos == conn.buf.len()
    }

    /// Appends the next decoded piece of the body to `out`. Returns false
    /// once the body is complete.
    pub async fn next(
        &mut self,
        conn: &mut UpstreamConn,
        out: &mut Vec<u8>,
        deadline: Instant,
        upstream: &str,
    ) -> Result<bool, UpstreamError> {
        loop {
            if self.done {
                return Ok(false);
            }
            if self.pos < conn.buf.len() {
                self.consume(&conn.buf, out)?;
                return Ok(true);
            }
            conn.buf.clear();
            self.pos = 0;
            let n = timeout_at(
                deadline.into(),
                read_append(&mut conn.stream, &mut conn.buf),
            )
            .await
            .map_err(|_| UpstreamError::TotalTimeout(upstream.to_owned()))?
            .map_err(|e| UpstreamError::Io(e.to_string()))?;
            if n == 0 {
                if self.framing == Framing::UntilClose {
                    self.done = true;
                    return Ok(false);
                }
                return Err(UpstreamError::Io(
                    "upstream closed the connection mid-body".into(),
                ));
            }
        }
    }

    fn consume(&mut self, buf: &[u8], out: &mut Vec<u8>) -> Result<(), UpstreamError> {
        let available = &buf[self.pos..];
        match self.framing {
            Framing::Length(_) => {
                let take = (self.remaining.min(available.len() as u64)) as usize;
                out.extend_from_slice(&available[..take]);
                self.pos += take;
                self.remaining -= take as u64;
                self.done = self.remaining == 0;
            }
            Framing::Chunked => {
                let used = self
                    .decoder
                    .decode(available, out)
                    .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
                self.pos += used;
                self.done = self.decoder.is_done();
            }
            Framing::UntilClose => {
                out.extend_from_slice(available);
                self.pos = buf.len();
            }
            Framing::Empty => self.done = true,
        }
        Ok(())
    }
}

/// Reads a whole body into `out`, refusing more than `limit` bytes.
pub async fn read_to_end(
    reader: &mut BodyReader,
    conn: &mut UpstreamConn,
    out: &mut Vec<u8>,
    deadline: Instant,
    limit: usize,
    upstream: &str,
) -> Result<(), UpstreamError> {
    while reader.next(conn, out, deadline, upstream).await? {
        if out.len() > limit {
            return Err(UpstreamError::TooLarge(limit));
        }
    }
    Ok(())
}
