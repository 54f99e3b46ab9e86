//! Forwarding one request and relaying its answer: a whole JSON body for
//! plain responses, or Server-Sent Events event by event as they arrive.
//! Every wait on the upstream is raced against the client going away, so a
//! client that disconnects closes the upstream connection (and with it the
//! generation) at once.

use crate::api::{json, GatewayError};
use crate::http::body::{encode_chunk, LAST_CHUNK};
use crate::http::head::{is_hop_by_hop, ResponseHead};
use crate::http::io::write_all_clear;
use crate::http::server::{reply_error, ClientIo, Outcome, Request};
use crate::http::{response, sse};
use crate::pipeline::approve::{wait_for_decision, ApprovalRule, HeldAnswer, Verdict};
use crate::pipeline::filter::AnswerFilters;
use crate::runtime::worker::Worker;
use crate::tls::ClientStream;
use crate::upstream::client::{self, BodyReader};
use crate::upstream::pool::UpstreamConn;
use crate::upstream::{UpstreamError, UpstreamSpec};
use monoio::net::TcpStream;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Largest non-streamed upstream body relayed (embeddings of big batches
/// are the largest answers).
const MAX_RESPONSE_BYTES: usize = 64 << 20;
/// An event longer than this is relayed before its end is seen.
const MAX_PENDING_EVENT: usize = 1 << 20;
/// Status recorded when the client left before its answer was complete.
pub const CLIENT_CLOSED: u16 = 499;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input: u64,
    pub output: u64,
}

/// What the relay reports back to the pipeline for accounting.
pub struct Relayed {
    pub outcome: Outcome,
    /// From writing the request upstream to the upstream's last byte.
    pub upstream_time: Duration,
    pub upstream_outcome: &'static str,
    pub usage: Option<Usage>,
    pub time_to_first_event: Option<Duration>,
    /// A reviewer's verdict on a held answer: `approved:<who>`,
    /// `rejected:<who>` or `expired`.
    pub approval: Option<String>,
    /// From writing the request to the upstream's response head.
    pub ttfb: Option<Duration>,
}

/// One attempt at an upstream, as the pipeline asks for it.
pub struct Attempt<'a> {
    pub upstream: usize,
    /// Whether a retryable failure should come back unanswered (another
    /// target or a fallback is left and the retry budget allows it).
    pub may_retry: bool,
    /// Sent as `x-sluice-model` when a fallback or experiment variant
    /// answers instead of the model asked for.
    pub served_model: Option<&'a str>,
    /// Rendered `x-ratelimit-remaining-*` header lines of sluice's own
    /// limits (empty = none); they replace the upstream's.
    pub limit_headers: &'a [u8],
    /// The `x-sluice-cache` header line (empty when the cache is off).
    pub cache_header: &'a [u8],
    /// Hold the complete answer for a reviewer (`[[approvals]]`).
    pub hold: Option<Hold<'a>>,
    /// Keep the answer's last byte in `io.deferred` for the pipeline to
    /// send once the audit record is durable.
    pub defer_last_byte: bool,
}

/// A held answer's rule and what the reviewer is shown about it.
#[derive(Clone, Copy)]
pub struct Hold<'a> {
    pub rule: &'a ApprovalRule,
    pub team: &'a str,
    pub key: &'a str,
    pub model: &'a str,
}

pub enum Forwarded {
    Answered(Relayed),
    /// Nothing reached the client; the pipeline may try elsewhere.
    Retry {
        outcome: &'static str,
        error: GatewayError,
        upstream_time: Duration,
    },
}

/// Upstream statuses worth another target: overload and gateway trouble.
fn retryable_status(status: u16) -> bool {
    matches!(status, 429 | 502 | 503 | 504)
}

fn retryable_error(e: &UpstreamError) -> bool {
    matches!(
        e,
        UpstreamError::Connect(..) | UpstreamError::Tls(..) | UpstreamError::FirstByteTimeout(_)
    )
}

enum Failure {
    Upstream(UpstreamError),
    ClientGone,
}

impl From<UpstreamError> for Failure {
    fn from(e: UpstreamError) -> Self {
        Failure::Upstream(e)
    }
}

/// Resolves when the client has closed its side of the connection.
/// Readiness plus a peek, so bytes of a pipelined next request are left
/// in the socket. A TLS connection is watched through a duplicate of its
/// descriptor (monoio-rustls keeps the socket to itself); the duplicate is
/// made only when a wait outlasts [`WATCH_AFTER`].
pub async fn client_gone(stream: &ClientStream) {
    if let Some(tcp) = stream.plain() {
        return watch_for_close(tcp).await;
    }
    match duplicate_socket(stream.as_raw_fd()) {
        Ok(tcp) => watch_for_close(&tcp).await,
        // No descriptor to spare: the client is not watched.
        Err(_) => std::future::pending::<()>().await,
    }
}

fn duplicate_socket(fd: std::os::fd::RawFd) -> std::io::Result<TcpStream> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: dup of a descriptor the connection owns and keeps open for
    // as long as this watch runs; the duplicate is owned from here on.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor nobody else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(dup) };
    TcpStream::from_std(std::net::TcpStream::from(owned))
}

async fn watch_for_close(stream: &TcpStream) {
    use std::os::fd::AsRawFd;
    loop {
        if stream.readable(false).await.is_err() {
            return;
        }
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local on the stream's own fd.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match n {
            0 => return,
            n if n > 0 => {
                // Bytes wait unread (a pipelined request, or a TLS
                // close_notify): readiness says nothing more until they
                // are read, so look for the peer's FIN now and then.
                if peer_hung_up(stream.as_raw_fd()) {
                    return;
                }
                monoio::time::sleep(HANGUP_POLL).await;
            }
            _ => {
                let err = std::io::Error::last_os_error().kind();
                if err != std::io::ErrorKind::WouldBlock && err != std::io::ErrorKind::Interrupted {
                    return;
                }
            }
        }
    }
}

/// How often a client with unread bytes is checked for a close.
const HANGUP_POLL: Duration = Duration::from_millis(100);

/// Whether the peer has shut down its sending side (or the socket failed).
fn peer_hung_up(fd: std::os::fd::RawFd) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, without waiting.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    n > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

/// How long an upstream wait runs before the client's socket is watched.
/// Most answers from a fast upstream come sooner, so they never pay for
/// arming and cancelling the watch; a client that leaves during a longer
/// wait (a generation) is noticed this much later at most.
const WATCH_AFTER: Duration = Duration::from_millis(20);

/// `client_gone`, armed only after `WATCH_AFTER`.
async fn client_gone_after_grace(stream: &ClientStream) {
    monoio::time::sleep(WATCH_AFTER).await;
    client_gone(stream).await;
}

pub async fn forward(
    worker: &Rc<Worker>,
    io: &mut ClientIo,
    req: &Request<'_>,
    attempt: Attempt<'_>,
    filters: &mut AnswerFilters,
) -> Forwarded {
    let upstream = attempt.upstream;
    let spec = &worker.snapshot.upstreams[upstream];
    let sent_at = Instant::now();
    let total_deadline = sent_at + spec.total_timeout;
    let first_deadline = (sent_at + spec.first_byte_timeout).min(total_deadline);

    let connected = {
        let attempt =
            connect_and_send(worker, upstream, spec, &mut io.upstream_buf, first_deadline);
        monoio::select! {
            r = attempt => r.map_err(Failure::Upstream),
            _ = client_gone_after_grace(&io.stream) => Err(Failure::ClientGone),
        }
    };
    let (conn, head) = match connected {
        Ok(c) => c,
        Err(Failure::Upstream(e)) if attempt.may_retry && retryable_error(&e) => {
            return retry(e.outcome(), GatewayError::Upstream(e), sent_at)
        }
        Err(failure) => {
            return Forwarded::Answered(fail_before_answer(worker, io, req, failure, sent_at).await)
        }
    };
    if attempt.may_retry && retryable_status(head.status) {
        // Dropping the connection is cheaper than reading a body no one
        // will see, and the upstream is in trouble anyway.
        let status = head.status;
        return retry(
            outcome_label(status),
            GatewayError::UpstreamStatus(status),
            sent_at,
        );
    }
    let relay = Relay {
        worker,
        upstream,
        spec,
        sent_at,
        total_deadline,
        first_deadline,
        ttfb: sent_at.elapsed(),
        may_retry: attempt.may_retry,
        served_model: attempt.served_model,
        limit_headers: attempt.limit_headers,
        cache_header: attempt.cache_header,
        hold: attempt.hold,
        defer_last_byte: attempt.defer_last_byte,
        approval: Default::default(),
    };
    if head.event_stream {
        relay.stream_events(io, req, conn, head, filters).await
    } else {
        Forwarded::Answered(relay.whole_body(io, req, conn, head, filters).await)
    }
}

fn retry(outcome: &'static str, error: GatewayError, sent_at: Instant) -> Forwarded {
    Forwarded::Retry {
        outcome,
        error,
        upstream_time: sent_at.elapsed(),
    }
}

/// Takes a pooled connection and sends the request; a reused connection
/// that fails before any response byte (the server closed it while idle)
/// is replaced by a fresh one, once.
async fn connect_and_send(
    worker: &Worker,
    upstream: usize,
    spec: &UpstreamSpec,
    request: &mut Vec<u8>,
    deadline: Instant,
) -> Result<(UpstreamConn, ResponseHead), UpstreamError> {
    let mut conn = worker.pools.acquire(upstream, spec).await?;
    match client::send(&mut conn, request, deadline, &spec.name).await {
        Ok(head) => Ok((conn, head)),
        Err(UpstreamError::Io(_)) if conn.reused => {
            drop(conn);
            let mut conn = worker.pools.connect(upstream, spec).await?;
            let head = client::send(&mut conn, request, deadline, &spec.name).await?;
            Ok((conn, head))
        }
        Err(e) => Err(e),
    }
}

async fn fail_before_answer(
    worker: &Worker,
    io: &mut ClientIo,
    req: &Request<'_>,
    failure: Failure,
    sent_at: Instant,
) -> Relayed {
    let upstream_time = sent_at.elapsed();
    match failure {
        Failure::ClientGone => {
            worker.metrics.client_disconnect("waiting_for_upstream");
            Relayed {
                outcome: Outcome {
                    status: CLIENT_CLOSED,
                    keep_alive: false,
                },
                upstream_time,
                upstream_outcome: "client_cancelled",
                usage: None,
                time_to_first_event: None,
                ttfb: None,
                approval: None,
            }
        }
        Failure::Upstream(e) => {
            let upstream_outcome = e.outcome();
            tracing::warn!(request_id = %String::from_utf8_lossy(&io.request_id), error = %e, "upstream failed");
            let outcome = reply_error(worker, io, &GatewayError::Upstream(e), req.keep_alive).await;
            Relayed {
                outcome,
                upstream_time,
                upstream_outcome,
                usage: None,
                time_to_first_event: None,
                ttfb: None,
                approval: None,
            }
        }
    }
}

/// Appends the client's response head from the upstream's: its status and
/// end-to-end headers, plus the ones sluice adds. The framing headers are
/// added by the caller.
fn client_head(
    out: &mut Vec<u8>,
    upstream_buf: &[u8],
    head: &ResponseHead,
    upstream_name: &str,
    served_model: Option<&str>,
    [limit_headers, cache_header]: [&[u8]; 2],
) {
    out.clear();
    response::status_line(out, head.status);
    for h in &head.headers {
        let name = &upstream_buf[h.name.clone()];
        if !is_hop_by_hop(name)
            && !name.eq_ignore_ascii_case(b"x-request-id")
            && !name.eq_ignore_ascii_case(b"x-sluice-upstream")
            && (limit_headers.is_empty()
                || !name
                    .get(..12)
                    .is_some_and(|p| p.eq_ignore_ascii_case(b"x-ratelimit-")))
        {
            response::header(out, name, &upstream_buf[h.value.clone()]);
        }
    }
    response::header(out, b"x-sluice-upstream", upstream_name.as_bytes());
    if let Some(model) = served_model {
        response::header(out, b"x-sluice-model", model.as_bytes());
    }
    out.extend_from_slice(limit_headers);
    out.extend_from_slice(cache_header);
}

/// Token counts from a JSON object's top-level `usage`.
pub fn usage_of(body: &[u8]) -> Option<Usage> {
    #[derive(serde::Deserialize)]
    struct Raw {
        #[serde(default)]
        prompt_tokens: u64,
        #[serde(default)]
        completion_tokens: u64,
    }
    let range = json::member_range(body, "usage")?;
    let raw: Raw = serde_json::from_slice(&body[range]).ok()?;
    Some(Usage {
        input: raw.prompt_tokens,
        output: raw.completion_tokens,
    })
}

struct Relay<'a> {
    worker: &'a Rc<Worker>,
    upstream: usize,
    spec: &'a UpstreamSpec,
    sent_at: Instant,
    total_deadline: Instant,
    first_deadline: Instant,
    ttfb: Duration,
    may_retry: bool,
    served_model: Option<&'a str>,
    limit_headers: &'a [u8],
    cache_header: &'a [u8],
    hold: Option<Hold<'a>>,
    defer_last_byte: bool,
    approval: std::cell::Cell<Option<String>>,
}

impl Relay<'_> {
    fn finished(
        &self,
        outcome: Outcome,
        upstream_outcome: &'static str,
        usage: Option<Usage>,
        ttft: Option<Duration>,
        upstream_time: Duration,
    ) -> Relayed {
        Relayed {
            outcome,
            upstream_time,
            upstream_outcome,
            usage,
            time_to_first_event: ttft,
            ttfb: Some(self.ttfb),
            approval: self.approval.take(),
        }
    }

    /// Ends a stream whose head already went out: what is in `io.wbuf`,
    /// then an SSE error event, then the end of the body, never a silent
    /// truncation.
    #[allow(clippy::too_many_arguments)]
    async fn end_with_error(
        &self,
        io: &mut ClientIo,
        chunked: bool,
        err: &GatewayError,
        status: u16,
        label: &'static str,
        usage: Option<Usage>,
        ttft: Option<Duration>,
    ) -> Relayed {
        let event = error_event(err);
        if chunked {
            encode_chunk(&mut io.wbuf, &event);
            io.wbuf.extend_from_slice(LAST_CHUNK);
        } else {
            io.wbuf.extend_from_slice(&event);
        }
        let _ = write_all_clear(&mut io.stream, &mut io.wbuf).await;
        let outcome = Outcome {
            status,
            keep_alive: false,
        };
        self.finished(outcome, label, usage, ttft, self.sent_at.elapsed())
    }

    /// Moves the last byte of `io.wbuf` to `io.deferred` when this is the
    /// answer's final write and the pipeline waits for its audit record.
    fn defer_last(&self, io: &mut ClientIo, last_write: bool) {
        if self.defer_last_byte && last_write {
            if let Some(byte) = io.wbuf.pop() {
                io.deferred.push(byte);
            }
        }
    }

    /// Waits for a reviewer when this answer is held; Ok when it may go.
    async fn review(&self, request_id: &[u8], completion: &[u8]) -> Result<(), GatewayError> {
        let Some(hold) = self.hold else { return Ok(()) };
        let answer = HeldAnswer {
            request_id: std::str::from_utf8(request_id).unwrap_or("-"),
            team: hold.team,
            key: hold.key,
            model: hold.model,
            completion,
        };
        let verdict = wait_for_decision(&self.worker.shared.approvals, hold.rule, &answer).await;
        let (note, result) = match verdict {
            Verdict::Release { by } => (format!("approved:{by}"), Ok(())),
            Verdict::Reject { by } => (
                format!("rejected:{by}"),
                Err(GatewayError::RejectedByReviewer),
            ),
            Verdict::Expired => (
                "expired".to_owned(),
                Err(GatewayError::ApprovalTimeout(hold.rule.timeout.as_secs())),
            ),
        };
        tracing::info!(request_id = answer.request_id, verdict = %note, "approval decided");
        self.approval.set(Some(note));
        result
    }

    /// The client left mid-stream; dropping the upstream connection (by
    /// the caller returning) ends the generation.
    fn client_left(&self, usage: Option<Usage>, ttft: Option<Duration>) -> Relayed {
        self.worker.metrics.client_disconnect("streaming");
        let outcome = Outcome {
            status: CLIENT_CLOSED,
            keep_alive: false,
        };
        self.finished(
            outcome,
            "client_cancelled",
            usage,
            ttft,
            self.sent_at.elapsed(),
        )
    }

    /// A plain answer: read it whole (bounded), then send it with its length.
    async fn whole_body(
        self,
        io: &mut ClientIo,
        req: &Request<'_>,
        mut conn: UpstreamConn,
        head: ResponseHead,
        filters: &mut AnswerFilters,
    ) -> Relayed {
        client_head(
            &mut io.wbuf,
            &conn.buf,
            &head,
            &self.spec.name,
            self.served_model,
            [self.limit_headers, self.cache_header],
        );
        let mut reader = BodyReader::new(&head);
        io.relay_buf.clear();
        let read = {
            let body = client::read_to_end(
                &mut reader,
                &mut conn,
                &mut io.relay_buf,
                self.total_deadline,
                MAX_RESPONSE_BYTES,
                &self.spec.name,
            );
            monoio::select! {
                r = body => r.map_err(Failure::Upstream),
                _ = client_gone_after_grace(&io.stream) => Err(Failure::ClientGone),
            }
        };
        if let Err(failure) = read {
            return fail_before_answer(self.worker, io, req, failure, self.sent_at).await;
        }
        let upstream_time = self.sent_at.elapsed();
        if reader.reusable(&head, &conn) {
            self.worker.pools.release(self.upstream, conn);
        }
        let usage = usage_of(&io.relay_buf);
        if is_success(head.status) {
            // The answer's filters, then a reviewer where a rule holds it;
            // either may replace it by an error.
            let verdict = match filters.body(&mut io.relay_buf) {
                Ok(()) => self.review(&io.request_id, &io.relay_buf).await,
                Err(e) => Err(e),
            };
            if let Err(e) = verdict {
                let outcome = reply_error(self.worker, io, &e, req.keep_alive).await;
                return self.finished(
                    outcome,
                    outcome_label(head.status),
                    usage,
                    None,
                    upstream_time,
                );
            }
        }
        let keep_alive = self.worker.keep_alive(req.keep_alive);
        response::common_headers(
            &mut io.wbuf,
            &io.request_id,
            keep_alive,
            Some(io.relay_buf.len()),
        );
        io.wbuf.extend_from_slice(b"\r\n");
        io.wbuf.extend_from_slice(&io.relay_buf);
        self.defer_last(io, true);
        let written = write_all_clear(&mut io.stream, &mut io.wbuf).await.is_ok();
        if !written {
            self.worker.metrics.client_disconnect("writing_response");
        }
        let status = if written { head.status } else { CLIENT_CLOSED };
        let outcome = Outcome {
            status,
            keep_alive: keep_alive && written,
        };
        self.finished(
            outcome,
            outcome_label(head.status),
            usage,
            None,
            upstream_time,
        )
    }

    /// A stream: relay each complete event as soon as it arrives. The head
    /// is held until the first event, so a stream that never starts still
    /// gets a proper 504 rather than a 200 with nothing in it.
    async fn stream_events(
        self,
        io: &mut ClientIo,
        req: &Request<'_>,
        mut conn: UpstreamConn,
        head: ResponseHead,
        filters: &mut AnswerFilters,
    ) -> Forwarded {
        let filtering = is_success(head.status) && !filters.is_empty();
        let mut filtered = Vec::new();
        let chunked = !req.head.http10;
        let keep_alive = chunked && self.worker.keep_alive(req.keep_alive);
        let frame = |out: &mut Vec<u8>, bytes: &[u8]| {
            if chunked {
                encode_chunk(out, bytes);
            } else {
                out.extend_from_slice(bytes);
            }
        };
        let end = |out: &mut Vec<u8>| {
            if chunked {
                out.extend_from_slice(LAST_CHUNK);
            }
        };
        let mut pending_head = Vec::with_capacity(512);
        client_head(
            &mut pending_head,
            &conn.buf,
            &head,
            &self.spec.name,
            self.served_model,
            [self.limit_headers, self.cache_header],
        );
        if chunked {
            response::common_headers(&mut pending_head, &io.request_id, keep_alive, None);
        } else {
            response::header(&mut pending_head, b"x-request-id", &io.request_id);
            pending_head.extend_from_slice(b"connection: close\r\n");
        }
        pending_head.extend_from_slice(b"\r\n");
        let mut head_sent = false;
        // A held stream is collected whole (head included) until a
        // reviewer decides.
        let mut held: Option<Vec<u8>> =
            (self.hold.is_some() && is_success(head.status)).then(Vec::new);
        let mut reader = BodyReader::new(&head);
        let mut usage = None;
        let mut ttft = None;
        io.relay_buf.clear();
        loop {
            let deadline = if head_sent {
                self.total_deadline
            } else {
                self.first_deadline
            };
            let next = {
                let piece = reader.next(&mut conn, &mut io.relay_buf, deadline, &self.spec.name);
                monoio::select! {
                    r = piece => r.map_err(|e| match e {
                        UpstreamError::TotalTimeout(n) if !head_sent => UpstreamError::FirstByteTimeout(n),
                        e => e,
                    }).map_err(Failure::Upstream),
                    _ = client_gone_after_grace(&io.stream) => Err(Failure::ClientGone),
                }
            };
            let more = match next {
                Ok(more) => more,
                Err(failure @ Failure::Upstream(_)) if held.is_some() => {
                    // Nothing was sent yet: the client gets a plain error.
                    let relayed =
                        fail_before_answer(self.worker, io, req, failure, self.sent_at).await;
                    return Forwarded::Answered(relayed);
                }
                Err(Failure::Upstream(e)) if head_sent => {
                    // Bytes already reached the client: end the stream with
                    // an error event rather than truncating it silently.
                    let label = e.outcome();
                    tracing::warn!(request_id = %String::from_utf8_lossy(&io.request_id), error = %e, "upstream failed mid-stream");
                    io.wbuf.clear();
                    let err = GatewayError::Upstream(e);
                    let relayed = self
                        .end_with_error(io, chunked, &err, head.status, label, usage, ttft)
                        .await;
                    return Forwarded::Answered(relayed);
                }
                Err(Failure::Upstream(e)) if self.may_retry && retryable_error(&e) => {
                    return retry(e.outcome(), GatewayError::Upstream(e), self.sent_at);
                }
                Err(failure @ Failure::Upstream(_)) => {
                    let relayed =
                        fail_before_answer(self.worker, io, req, failure, self.sent_at).await;
                    return Forwarded::Answered(relayed);
                }
                Err(Failure::ClientGone) => {
                    return Forwarded::Answered(self.client_left(usage, ttft))
                }
            };
            let ready = if more && io.relay_buf.len() < MAX_PENDING_EVENT {
                sse::complete_events_len(&io.relay_buf)
            } else {
                io.relay_buf.len()
            };
            if ready == 0 && more {
                continue;
            }
            let events = &io.relay_buf[..ready];
            if memchr::memmem::find(events, b"\"usage\"").is_some() {
                if let Some(u) = sse::data_lines(events).filter_map(usage_of).last() {
                    usage = Some(u);
                }
            }
            io.wbuf.clear();
            if !head_sent {
                io.wbuf.extend_from_slice(&pending_head);
                head_sent = true;
            }
            let verdict = if filtering {
                filtered.clear();
                filters.events(events, &mut filtered).and_then(|()| {
                    if more {
                        Ok(())
                    } else {
                        filters.finish(&mut filtered)
                    }
                })
            } else {
                Ok(())
            };
            match verdict {
                Ok(()) => frame(&mut io.wbuf, if filtering { &filtered } else { events }),
                Err(e) if held.is_some() => {
                    let outcome = reply_error(self.worker, io, &e, req.keep_alive).await;
                    return Forwarded::Answered(self.finished(
                        outcome,
                        "filtered",
                        usage,
                        ttft,
                        self.sent_at.elapsed(),
                    ));
                }
                Err(e) => {
                    // A filter refused the rest of the answer: what it let
                    // through goes out, then an error event ends the stream.
                    frame(&mut io.wbuf, &filtered);
                    let relayed = self
                        .end_with_error(io, chunked, &e, head.status, "filtered", usage, ttft)
                        .await;
                    return Forwarded::Answered(relayed);
                }
            }
            if !more {
                end(&mut io.wbuf);
            }
            if ready > 0 && ttft.is_none() {
                ttft = Some(req.started.elapsed());
            }
            io.relay_buf.drain(..ready);
            if let Some(held) = held.as_mut() {
                held.append(&mut io.wbuf);
            } else {
                self.defer_last(io, !more);
                if write_all_clear(&mut io.stream, &mut io.wbuf).await.is_err() {
                    return Forwarded::Answered(self.client_left(usage, ttft));
                }
            }
            if !more {
                break;
            }
        }
        let upstream_time = self.sent_at.elapsed();
        if reader.reusable(&head, &conn) {
            self.worker.pools.release(self.upstream, conn);
        }
        if let Some(mut held) = held {
            // The whole stream waited for a reviewer; it goes out at once.
            if let Err(e) = self.review(&io.request_id, &held).await {
                let outcome = reply_error(self.worker, io, &e, req.keep_alive).await;
                return Forwarded::Answered(self.finished(
                    outcome,
                    outcome_label(head.status),
                    usage,
                    ttft,
                    upstream_time,
                ));
            }
            std::mem::swap(&mut io.wbuf, &mut held);
            self.defer_last(io, true);
            if write_all_clear(&mut io.stream, &mut io.wbuf).await.is_err() {
                return Forwarded::Answered(self.client_left(usage, ttft));
            }
        }
        let outcome = Outcome {
            status: head.status,
            keep_alive,
        };
        Forwarded::Answered(self.finished(
            outcome,
            outcome_label(head.status),
            usage,
            ttft,
            upstream_time,
        ))
    }
}

/// An SSE event carrying an OpenAI error JSON, as OpenAI's SDKs read it.
pub fn error_event(err: &GatewayError) -> Vec<u8> {
    let mut event = b"data: ".to_vec();
    event.extend_from_slice(&err.body());
    event.extend_from_slice(b"\n\n");
    event
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

fn outcome_label(status: u16) -> &'static str {
    match status {
        200..=299 => "ok",
        429 => "rate_limited",
        400..=499 => "client_error",
        _ => "server_error",
    }
}
