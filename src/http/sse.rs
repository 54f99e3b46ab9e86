//! Server-Sent Events: finds complete events in a byte stream so that a
//! stream is relayed event by event, and reads the `data:` of an event.

use memchr::memmem;

/// Length of the complete events at the start of `buf` (through the last
/// blank line), 0 when none is complete. Accepts `\n\n` and `\r\n\r\n`
/// separators. One backward search per separator: the relay calls this on
/// every read of a stream.
pub fn complete_events_len(buf: &[u8]) -> usize {
    let lf = memmem::rfind(buf, b"\n\n").map_or(0, |i| i + 2);
    let crlf = memmem::rfind(buf, b"\r\n\r\n").map_or(0, |i| i + 4);
    lf.max(crlf)
}

/// Length of the first event in `buf` (through its blank line), or all of
/// `buf` when no event in it is complete.
pub fn first_event_len(buf: &[u8]) -> usize {
    let lf = memmem::find(buf, b"\n\n").map(|i| i + 2);
    let crlf = memmem::find(buf, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => a.min(b),
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => buf.len(),
    }
}

/// Splits `buf` into its events (the last one possibly incomplete).
pub fn events(mut buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if buf.is_empty() {
            return None;
        }
        let (event, rest) = buf.split_at(first_event_len(buf));
        buf = rest;
        Some(event)
    })
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
        let split: Vec<_> = events(b"data: a\n\ndata: b\r\n\r\ndata: par").collect();
        assert_eq!(
            split,
            vec![
                &b"data: a\n\n"[..],
                &b"data: b\r\n\r\n"[..],
                &b"data: par"[..]
            ]
        );
    }
}
