//! The alert webhook: JSON POSTs to `[alerts].webhook` (circuit changes
//! today; budget thresholds with the cost issue), sent by one background
//! thread from a bounded queue, with retries. A full queue drops the alert
//! and logs it: alerts never slow a worker. `https://` webhooks go over
//! rustls with the system's CA certificates.

use crate::tls::client::SystemRoots;
use std::io::{Read, Write};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const QUEUE: usize = 1024;
const ATTEMPTS: u32 = 4;

struct Alert {
    url: Box<str>,
    body: Vec<u8>,
}

fn queue() -> &'static SyncSender<Alert> {
    static SENDER: OnceLock<SyncSender<Alert>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = sync_channel::<Alert>(QUEUE);
        let _ = std::thread::Builder::new()
            .name("sluice-alerts".into())
            .spawn(move || {
                // Loaded on the first https alert, then kept.
                let mut roots = SystemRoots::default();
                for alert in rx {
                    deliver(&alert, &mut roots);
                }
            });
        tx
    })
}

/// Queues one alert; never blocks.
pub fn send(url: &str, payload: serde_json::Value) {
    let alert = Alert {
        url: url.into(),
        body: serde_json::to_vec(&payload).unwrap_or_default(),
    };
    match queue().try_send(alert) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => tracing::warn!("alert queue full: alert dropped"),
        Err(TrySendError::Disconnected(_)) => tracing::warn!("alert thread gone: alert dropped"),
    }
}

fn deliver(alert: &Alert, roots: &mut SystemRoots) {
    let mut backoff = Duration::from_millis(500);
    for attempt in 1..=ATTEMPTS {
        match post(&alert.url, &alert.body, roots) {
            Ok(status) if (200..300).contains(&status) => return,
            Ok(status) => tracing::warn!(attempt, status, "alert webhook refused the alert"),
            Err(e) => tracing::warn!(attempt, error = %e, "alert webhook unreachable"),
        }
        if attempt < ATTEMPTS {
            std::thread::sleep(backoff);
            backoff *= 2;
        }
    }
    tracing::error!(url = %alert.url, "alert not delivered after {ATTEMPTS} attempts");
}

fn post(url: &str, body: &[u8], roots: &mut SystemRoots) -> std::io::Result<u16> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, m);
    let parsed = crate::config::parse_http_url(url).map_err(invalid)?;
    let timeout = Duration::from_secs(5);
    // Every address the name has (`localhost` may be ::1 first), in order.
    let mut last = invalid(format!("{} has no address", parsed.host));
    let mut connected = None;
    for addr in std::net::ToSocketAddrs::to_socket_addrs(&(parsed.host.as_str(), parsed.port))? {
        match std::net::TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                connected = Some(s);
                break;
            }
            Err(e) => last = e,
        }
    }
    let stream = connected.ok_or(last)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let path = url
        .splitn(4, '/')
        .nth(3)
        .map_or_else(|| "/".to_owned(), |p| format!("/{p}"));
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {}:{}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nuser-agent: sluice-alerts\r\nconnection: close\r\n\r\n",
        parsed.host,
        parsed.port,
        body.len()
    );
    if !parsed.tls {
        return exchange(stream, head.as_bytes(), body);
    }
    // The system's CA certificates (or `SSL_CERT_FILE`), as for upstreams
    // without a `ca_file`: chat and incident webhooks are public https.
    let tls = crate::tls::UpstreamTls::new(&parsed.host, None, roots)
        .map_err(|e| invalid(e.to_string()))?;
    let session = tls.blocking().map_err(std::io::Error::other)?;
    exchange(
        rustls::StreamOwned::new(session, stream),
        head.as_bytes(),
        body,
    )
}

/// Sends the request and reads the answer's status.
fn exchange(mut stream: impl Read + Write, head: &[u8], body: &[u8]) -> std::io::Result<u16> {
    stream.write_all(head)?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut answer = [0u8; 64];
    let n = stream.read(&mut answer)?;
    let status = std::str::from_utf8(&answer[..n])
        .ok()
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok(status)
}

/// The current time as RFC 3339 in UTC, to the second.
pub fn now_rfc3339() -> String {
    rfc3339(false)
}

/// The current time as RFC 3339 in UTC, to the millisecond.
pub fn now_rfc3339_millis() -> String {
    rfc3339(true)
}

fn rfc3339(with_millis: bool) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(now.as_secs(), with_millis.then(|| now.subsec_millis()))
}

/// `secs` since the epoch as RFC 3339 in UTC, with `.mmm` when given.
/// Written digit by digit: every audit record carries one, and `format!`
/// cost several times as much.
fn format_rfc3339(secs: u64, millis: Option<u32>) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let mut out = String::with_capacity(24);
    let mut digits = |n: u64, width: u32, after: char| {
        for p in (0..width).rev() {
            out.push(char::from(b'0' + (n / 10u64.pow(p) % 10) as u8));
        }
        out.push(after);
    };
    digits(year.clamp(0, 9999) as u64, 4, '-');
    digits(month as u64, 2, '-');
    digits(day as u64, 2, 'T');
    digits(rem / 3600, 2, ':');
    digits(rem % 3600 / 60, 2, ':');
    match millis {
        Some(ms) => {
            digits(rem % 60, 2, '.');
            digits(u64::from(ms), 3, 'Z');
        }
        None => digits(rem % 60, 2, 'Z'),
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_dates() {
        let now = super::now_rfc3339();
        assert_eq!(now.len(), 20);
        assert!(now.starts_with("20"));
        assert!(now.ends_with('Z'));
    }

    #[test]
    fn formats_known_instants() {
        use super::format_rfc3339;
        assert_eq!(format_rfc3339(0, None), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(951_782_400, Some(7)),
            "2000-02-29T00:00:00.007Z"
        );
        assert_eq!(
            format_rfc3339(1_795_650_599, Some(999)),
            "2026-11-25T23:49:59.999Z"
        );
        assert_eq!(format_rfc3339(4_102_444_800, None), "2100-01-01T00:00:00Z");
    }
}
