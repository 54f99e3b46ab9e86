//! Server-Sent Events: finds complete events in a byte stream so that a
//! stream is relayed event by event, and reads the `data:` of an event.

use memchr::memmem;

/// Length of the first complete event in `buf` (through its blank line), if
/// one is complete. Accepts `\n\n` and `\r\n\r\n` separators.
pub fn complete_events_len(buf: &[u8]) -> usize {
    let mut end = 0;
    loop {
        let rest = &buf[end..];
        let lf = memmem::find(rest, b"\n\n").map(|i| i + 2);
        let crlf = memmem::find(rest, b"\r\n\r\n").map(|i| i + 4);
        let next = match (lf, crlf) {
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) => a,
            (None, Some(b)) => b,
            (None, None) => return end,
        };
        end += next;
    }
}

/// Iterates over the `data:` payloads of the events in `buf`.
pub fn data_lines(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    buf.split(|&b| b == b'\n').filter_map(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let data = line.strip_prefix(b"data:")?;
        Some(data.strip_prefix(b" ").unwrap_or(data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_whole_events_only() {
        let buf = b"data: a\n\ndata: b\r\n\r\ndata: par";
        let n = complete_events_len(buf);
        assert_eq!(&buf[..n], b"data: a\n\ndata: b\r\n\r\n");
        let data: Vec<_> = data_lines(&buf[..n]).collect();
        assert_eq!(data, vec![&b"a"[..], &b"b"[..]]);
        assert_eq!(complete_events_len(b"data: x\n"), 0);
    }
}
