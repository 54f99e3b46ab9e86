//! Writing responses to clients: status lines, the headers sluice always
//! adds, and OpenAI-format error bodies.

use serde::Serialize;

pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Payload Too Large",
        415 => "Unsupported Media Type",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        499 => "Client Closed Request",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends `HTTP/1.1 <status> <reason>\r\n`.
pub fn status_line(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(b"HTTP/1.1 ");
    push_u64(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason(status).as_bytes());
    out.extend_from_slice(b"\r\n");
}

pub fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

pub fn push_u64(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends the headers every sluice response carries, then ends the head
/// unless `more_headers` is set. `body_len` None means chunked.
pub fn common_headers(
    out: &mut Vec<u8>,
    request_id: &[u8],
    keep_alive: bool,
    body_len: Option<usize>,
) {
    header(out, b"x-request-id", request_id);
    match body_len {
        Some(n) => {
            out.extend_from_slice(b"content-length: ");
            push_u64(out, n as u64);
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    }
}

/// A complete JSON response: head and body.
pub fn json(
    out: &mut Vec<u8>,
    status: u16,
    request_id: &[u8],
    keep_alive: bool,
    extra: &[(&[u8], &[u8])],
    body: &[u8],
) {
    status_line(out, status);
    out.extend_from_slice(b"content-type: application/json\r\n");
    for (name, value) in extra {
        header(out, name, value);
    }
    common_headers(out, request_id, keep_alive, Some(body.len()));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// A whole response on a connection that closes after it (the metrics and
/// admin listeners answer one request per connection).
pub fn closing(status: u16, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 128);
    status_line(&mut out, status);
    header(&mut out, b"content-type", content_type.as_bytes());
    out.extend_from_slice(b"content-length: ");
    push_u64(&mut out, body.len() as u64);
    out.extend_from_slice(b"\r\nconnection: close\r\n\r\n");
    out.extend_from_slice(body);
    out
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorFields<'a>,
}

#[derive(Serialize)]
struct ErrorFields<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    code: Option<&'a str>,
    param: Option<&'a str>,
}

/// OpenAI's error JSON: `{"error":{"message","type","code","param"}}`.
pub fn error_json(message: &str, kind: &str, code: Option<&str>, param: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody {
        error: ErrorFields {
            message,
            kind,
            code,
            param,
        },
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_json_response() {
        let mut out = Vec::new();
        json(&mut out, 404, b"rid-1", false, &[], b"{}");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 404 Not Found\r\n"));
        assert!(text.contains("content-length: 2\r\n"));
        assert!(text.contains("connection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n{}"));
    }

    #[test]
    fn error_json_escapes() {
        let body = error_json("bad \"x\"", "invalid_request_error", Some("c"), None);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["message"], "bad \"x\"");
        assert_eq!(v["error"]["param"], serde_json::Value::Null);
    }
}
