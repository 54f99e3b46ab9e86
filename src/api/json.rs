//! Byte-level JSON helpers for bodies that simd-json has already validated:
//! find a top-level member's value without building a tree, and splice a
//! replacement in, so a forwarded body keeps every other byte as sent.

use std::ops::Range;

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End (exclusive) of the string starting with the quote at `i`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// End (exclusive) of the value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            Some(j)
        }
    }
}

/// Whether a raw (still escaped) key, quotes included, equals `key`. Keys
/// with escapes are rare, so only they pay for decoding.
fn key_is(raw_with_quotes: &[u8], key: &str) -> bool {
    key_name(raw_with_quotes).as_deref() == Some(key)
}

/// Calls `each` with every top-level member of a JSON object: the raw key
/// (quotes included, escapes not decoded) and the value's byte range.
/// Stops early when `each` returns false.
pub fn for_each_member(body: &[u8], mut each: impl FnMut(&[u8], Range<usize>) -> bool) {
    let mut i = skip_ws(body, 0);
    if body.get(i) != Some(&b'{') {
        return;
    }
    i += 1;
    loop {
        i = skip_ws(body, i);
        if body.get(i) != Some(&b'"') {
            return;
        }
        let Some(key_end) = skip_string(body, i) else {
            return;
        };
        let raw_key = &body[i..key_end];
        i = skip_ws(body, key_end);
        if body.get(i) != Some(&b':') {
            return;
        }
        i = skip_ws(body, i + 1);
        let Some(value_end) = skip_value(body, i) else {
            return;
        };
        if !each(raw_key, i..value_end) {
            return;
        }
        i = skip_ws(body, value_end);
        match body.get(i) {
            Some(b',') => i += 1,
            _ => return,
        }
    }
}

/// Byte range of the value of top-level member `key` in a JSON object,
/// matching keys as parsed (so `"mod\u0065l"` is `model`).
pub fn member_range(body: &[u8], key: &str) -> Option<Range<usize>> {
    let mut found = None;
    for_each_member(body, |raw_key, range| {
        if key_is(raw_key, key) {
            found = Some(range);
            return false;
        }
        true
    });
    found
}

/// The decoded name of a raw key (quotes included).
pub fn key_name(raw_with_quotes: &[u8]) -> Option<std::borrow::Cow<'_, str>> {
    let raw = &raw_with_quotes[1..raw_with_quotes.len() - 1];
    if memchr::memchr(b'\\', raw).is_none() {
        return std::str::from_utf8(raw)
            .ok()
            .map(std::borrow::Cow::Borrowed);
    }
    serde_json::from_slice::<String>(raw_with_quotes)
        .ok()
        .map(std::borrow::Cow::Owned)
}

/// Appends `s` as a JSON string literal.
pub fn push_string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for &c in s.as_bytes() {
        if needs_escape(c) {
            push_escape(out, c);
        } else {
            out.push(c);
        }
    }
    out.push(b'"');
}

/// Whether a byte must be escaped inside a JSON string.
pub fn needs_escape(c: u8) -> bool {
    c < 0x20 || c == b'"' || c == b'\\'
}

/// Appends the escape of a byte for which [`needs_escape`] holds.
pub fn push_escape(out: &mut Vec<u8>, c: u8) {
    match c {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        _ => {
            out.extend_from_slice(b"\\u00");
            out.push(b"0123456789abcdef"[usize::from(c >> 4)]);
            out.push(b"0123456789abcdef"[usize::from(c & 15)]);
        }
    }
}

/// Appends `body` with the value at `range` replaced by `replacement`.
pub fn splice(out: &mut Vec<u8>, body: &[u8], range: Range<usize>, replacement: &[u8]) {
    out.extend_from_slice(&body[..range.start]);
    out.extend_from_slice(replacement);
    out.extend_from_slice(&body[range.end..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_top_level_members_only() {
        let body = br#" { "messages": [{"model": "inner", "content": "a \" } model"}], "model" : "outer", "n": 2 } "#;
        let r = member_range(body, "model").unwrap();
        assert_eq!(&body[r], br#""outer""#);
        let r = member_range(body, "n").unwrap();
        assert_eq!(&body[r], b"2");
        assert!(member_range(body, "stream").is_none());
    }

    #[test]
    fn splices_a_new_model() {
        let body = br#"{"model":"alias","stream":true}"#;
        let mut out = Vec::new();
        let mut lit = Vec::new();
        push_string(&mut lit, "org/Model \"x\"");
        splice(&mut out, body, member_range(body, "model").unwrap(), &lit);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["model"], "org/Model \"x\"");
        assert_eq!(v["stream"], true);
    }
}
