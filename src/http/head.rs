//! Request and response heads: parsed with httparse, kept as offsets into the
//! connection's own buffer so that no header is copied.

use super::{HttpError, MAX_HEADERS, MAX_HEAD_BYTES};
use std::ops::Range;

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (or Content-Length: 0).
    Empty,
    Length(u64),
    Chunked,
    /// Responses only: the body ends when the peer closes.
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Get,
    Head,
    Post,
    Other,
}

/// One header as two ranges into the buffer the head was parsed from.
#[derive(Debug, Clone)]
pub struct HeaderRef {
    pub name: Range<usize>,
    pub value: Range<usize>,
}

/// Headers that belong to one connection hop and are never forwarded.
pub fn is_hop_by_hop(name: &[u8]) -> bool {
    const HOP: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"content-length",
        b"host",
    ];
    HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// A parsed request head; ranges index the connection's read buffer.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: Method,
    pub path: Range<usize>,
    pub headers: Vec<HeaderRef>,
    /// Bytes of the head, including the blank line.
    pub len: usize,
    pub framing: Framing,
    pub keep_alive: bool,
    pub expect_continue: bool,
    /// HTTP/1.0 clients know no chunked framing: a body of unknown length
    /// is ended by closing the connection.
    pub http10: bool,
}

impl RequestHead {
    pub fn path<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.path.clone()]
    }

    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        find_header(&self.headers, buf, name)
    }
}

fn find_header<'a>(headers: &[HeaderRef], buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| buf[h.name.clone()].eq_ignore_ascii_case(name.as_bytes()))
        .map(|h| &buf[h.value.clone()])
}

fn offset_of(base: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - base.as_ptr() as usize;
    start..start + part.len()
}

/// Collects header refs and works out framing and connection persistence
/// from them; shared by request and response parsing.
struct HeaderScan {
    refs: Vec<HeaderRef>,
    content_length: Option<u64>,
    chunked: bool,
    other_coding: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    expect_continue: bool,
}

fn scan_headers(buf: &[u8], headers: &[httparse::Header<'_>]) -> Result<HeaderScan, HttpError> {
    let mut scan = HeaderScan {
        refs: Vec::with_capacity(headers.len()),
        content_length: None,
        chunked: false,
        other_coding: false,
        conn_close: false,
        conn_keep_alive: false,
        expect_continue: false,
    };
    for h in headers {
        let name = h.name.as_bytes();
        let value = h.value;
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_content_length(value)?;
            if scan.content_length.is_some_and(|old| old != n) {
                return Err(HttpError::InvalidContentLength);
            }
            scan.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            for coding in value.split(|&b| b == b',') {
                let coding = trim(coding);
                if coding.eq_ignore_ascii_case(b"chunked") {
                    scan.chunked = true;
                } else if !coding.is_empty() {
                    scan.other_coding = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = trim(token);
                scan.conn_close |= token.eq_ignore_ascii_case(b"close");
                scan.conn_keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            scan.expect_continue = trim(value).eq_ignore_ascii_case(b"100-continue");
        }
        scan.refs.push(HeaderRef {
            name: offset_of(buf, name),
            value: offset_of(buf, value),
        });
    }
    Ok(scan)
}

fn parse_content_length(value: &[u8]) -> Result<u64, HttpError> {
    let value = trim(value);
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(HttpError::InvalidContentLength);
    }
    Ok(value
        .iter()
        .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0')))
}

pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The head's length from httparse's verdict, None while incomplete.
fn head_len(
    parsed: httparse::Result<usize>,
    buffered: usize,
    malformed: &'static str,
) -> Result<Option<usize>, HttpError> {
    match parsed {
        Ok(httparse::Status::Complete(n)) if n <= MAX_HEAD_BYTES => Ok(Some(n)),
        Ok(httparse::Status::Complete(_)) => Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) if buffered > MAX_HEAD_BYTES => Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HttpError::TooManyHeaders),
        Err(httparse::Error::Version) => Err(HttpError::Version),
        Err(_) => Err(HttpError::Malformed(malformed)),
    }
}

/// Parses a request head at the start of `buf`. `Ok(None)` means more bytes
/// are needed.
pub fn parse_request(buf: &[u8]) -> Result<Option<RequestHead>, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut storage);
    let Some(len) = head_len(req.parse(buf), buf.len(), "invalid request head")? else {
        return Ok(None);
    };
    let method = match req.method.unwrap_or("") {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "HEAD" => Method::Head,
        _ => Method::Other,
    };
    let path = offset_of(buf, req.path.unwrap_or("/").as_bytes());
    let http11 = req.version == Some(1);
    let scan = scan_headers(buf, req.headers)?;
    if scan.other_coding {
        return Err(HttpError::UnsupportedTransferEncoding);
    }
    let framing = match (scan.chunked, scan.content_length) {
        (true, Some(_)) => return Err(HttpError::AmbiguousLength),
        (true, None) => Framing::Chunked,
        (false, Some(0) | None) => Framing::Empty,
        (false, Some(n)) => Framing::Length(n),
    };
    let keep_alive = if http11 {
        !scan.conn_close
    } else {
        scan.conn_keep_alive
    };
    Ok(Some(RequestHead {
        method,
        path,
        headers: scan.refs,
        len,
        framing,
        keep_alive,
        expect_continue: scan.expect_continue && http11,
        http10: !http11,
    }))
}

/// A parsed upstream response head; ranges index the upstream read buffer.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub headers: Vec<HeaderRef>,
    pub len: usize,
    pub framing: Framing,
    pub keep_alive: bool,
    pub event_stream: bool,
}

impl ResponseHead {
    pub fn header<'a>(&self, buf: &'a [u8], name: &str) -> Option<&'a [u8]> {
        find_header(&self.headers, buf, name)
    }
}

/// Parses a response head to a request of `method`. 1xx heads are skipped
/// by the caller (they carry `status < 200`).
pub fn parse_response(buf: &[u8], method: Method) -> Result<Option<ResponseHead>, HttpError> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut storage);
    let Some(len) = head_len(res.parse(buf), buf.len(), "invalid response head")? else {
        return Ok(None);
    };
    let status = res.code.unwrap_or(0);
    let http11 = res.version == Some(1);
    let scan = scan_headers(buf, res.headers)?;
    let bodiless = method == Method::Head || status < 200 || status == 204 || status == 304;
    let framing = if bodiless {
        Framing::Empty
    } else if scan.chunked {
        Framing::Chunked
    } else {
        match scan.content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    let keep_alive = framing != Framing::UntilClose
        && if http11 {
            !scan.conn_close
        } else {
            scan.conn_keep_alive
        };
    let event_stream = find_header(&scan.refs, buf, "content-type")
        .is_some_and(|v| trim(v).starts_with(b"text/event-stream"));
    Ok(Some(ResponseHead {
        status,
        headers: scan.refs,
        len,
        framing,
        keep_alive,
        event_stream,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_post_with_length() {
        let raw = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{\"model\":1}";
        let head = parse_request(raw).unwrap().unwrap();
        assert_eq!(head.method, Method::Post);
        assert_eq!(head.path(raw), b"/v1/chat/completions");
        assert_eq!(head.framing, Framing::Length(12));
        assert!(head.keep_alive);
        assert_eq!(head.header(raw, "HOST"), Some(&b"x"[..]));
    }

    #[test]
    fn partial_head_needs_more() {
        assert!(parse_request(b"GET / HTTP/1.1\r\nHost:").unwrap().is_none());
    }

    #[test]
    fn rejects_smuggling_shapes() {
        let both = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(parse_request(both).unwrap_err(), HttpError::AmbiguousLength);
        let bad = b"POST / HTTP/1.1\r\nContent-Length: 3x\r\n\r\n";
        assert_eq!(
            parse_request(bad).unwrap_err(),
            HttpError::InvalidContentLength
        );
        let two = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(
            parse_request(two).unwrap_err(),
            HttpError::InvalidContentLength
        );
        let gzip = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(
            parse_request(gzip).unwrap_err(),
            HttpError::UnsupportedTransferEncoding
        );
    }

    #[test]
    fn http10_closes_unless_asked() {
        let raw = b"GET / HTTP/1.0\r\n\r\n";
        assert!(!parse_request(raw).unwrap().unwrap().keep_alive);
        let raw = b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n";
        assert!(parse_request(raw).unwrap().unwrap().keep_alive);
    }

    #[test]
    fn response_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = parse_response(raw, Method::Post).unwrap().unwrap();
        assert!(head.event_stream);
        assert_eq!(head.framing, Framing::Chunked);
        let raw = b"HTTP/1.1 200 OK\r\n\r\n";
        let head = parse_response(raw, Method::Post).unwrap().unwrap();
        assert_eq!(head.framing, Framing::UntilClose);
        assert!(!head.keep_alive);
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
        let head = parse_response(raw, Method::Head).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Empty);
    }
}
