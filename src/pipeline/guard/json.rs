//! A byte-level walk over a JSON document that simd-json (or serde_json)
//! has already accepted: it reports the byte range of every string and
//! number value with its path, so the guard can decode exactly the strings
//! that reach a model and splice back only the ones it changed.

use crate::api::json as api_json;
use std::borrow::Cow;
use std::ops::Range;

/// One step of a path: an object key (decoded) or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg<'a> {
    Key(Cow<'a, str>),
    Idx(usize),
}

impl Seg<'_> {
    pub fn is(&self, key: &str) -> bool {
        matches!(self, Seg::Key(k) if k == key)
    }
}

/// The visitor: path, value range, value kind.
pub type Visit<'a, 'f> = &'f mut dyn FnMut(&[Seg<'a>], Range<usize>, Scalar);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar {
    String,
    Other,
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End (exclusive) of the string whose opening quote is at `i`.
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    string_end_escaped(b, i).map(|(end, _)| end)
}

/// End (exclusive) of the string whose opening quote is at `i`, and
/// whether it holds an escape.
fn string_end_escaped(b: &[u8], mut i: usize) -> Option<(usize, bool)> {
    i += 1;
    let mut escaped = false;
    loop {
        let j = i + memchr::memchr2(b'"', b'\\', &b[i..])?;
        if b[j] == b'"' {
            return Some((j + 1, escaped));
        }
        escaped = true;
        i = j + 2;
    }
}

/// The text of a string literal (quotes included in `raw`), escapes decoded.
pub fn decode(raw: &[u8]) -> Option<Cow<'_, str>> {
    decode_known(raw, memchr::memchr(b'\\', raw).is_some())
}

/// `decode` when it is known whether `raw` holds an escape.
fn decode_known(raw: &[u8], escaped: bool) -> Option<Cow<'_, str>> {
    if !escaped {
        return std::str::from_utf8(&raw[1..raw.len() - 1])
            .ok()
            .map(Cow::Borrowed);
    }
    serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
}

/// Appends `text` as a JSON string literal: the decoded text of a string
/// the guard changed (masks and placeholders are ASCII; the rest is the
/// client's valid UTF-8, unless a custom pattern cut a character, which
/// becomes U+FFFD). Writes what `crate::api::json::push_string` writes,
/// copying the runs between escapes whole instead of byte by byte.
pub fn push_text(out: &mut Vec<u8>, text: &[u8]) {
    // `from_utf8` first: it checks valid text faster than the lossy walk.
    let lossy;
    let text = match std::str::from_utf8(text) {
        Ok(_) => text,
        Err(_) => {
            lossy = String::from_utf8_lossy(text);
            lossy.as_bytes()
        }
    };
    out.reserve(text.len() + 2);
    out.push(b'"');
    let mut at = 0;
    while let Some(k) = first_escape(&text[at..]) {
        let i = at + k;
        out.extend_from_slice(&text[at..i]);
        api_json::push_escape(out, text[i]);
        at = i + 1;
    }
    out.extend_from_slice(&text[at..]);
    out.push(b'"');
}

/// The first byte of `text` that JSON must escape (`api_json::needs_escape`),
/// tested eight bytes at a time: in each word, the lowest flagged byte of
/// the "byte below 0x20" and "byte equals" tricks is exact (borrows only
/// flag bytes above a true one).
fn first_escape(text: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let mut words = text.chunks_exact(8);
    for (w, chunk) in words.by_ref().enumerate() {
        let x = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        let flagged = below(x, 0x20)
            | below(x ^ (ONES * u64::from(b'"')), 1)
            | below(x ^ (ONES * u64::from(b'\\')), 1);
        if flagged != 0 {
            return Some(w * 8 + (flagged.trailing_zeros() / 8) as usize);
        }
    }
    let tail = words.remainder();
    tail.iter()
        .position(|&c| api_json::needs_escape(c))
        .map(|k| text.len() - tail.len() + k)
}

/// Walks the value at `i`; `top` limits which top-level members are entered
/// (others are skipped without a visit). Calls `f(path, range, kind)` for
/// scalar values. Returns the end of the value.
pub fn walk<'a>(b: &'a [u8], top: &dyn Fn(&str) -> bool, f: Visit<'a, '_>) -> Option<()> {
    let mut path = Vec::with_capacity(8);
    let i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    value(b, i, &mut path, Some(top), f).map(|_| ())
}

fn value<'a>(
    b: &'a [u8],
    i: usize,
    path: &mut Vec<Seg<'a>>,
    top: Option<&dyn Fn(&str) -> bool>,
    f: Visit<'a, '_>,
) -> Option<usize> {
    match *b.get(i)? {
        b'"' => {
            let end = string_end(b, i)?;
            f(path, i..end, Scalar::String);
            Some(end)
        }
        b'{' => {
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&b'}') {
                return Some(j + 1);
            }
            loop {
                if b.get(j) != Some(&b'"') {
                    return None;
                }
                let (key_end, escaped) = string_end_escaped(b, j)?;
                let key = decode_known(&b[j..key_end], escaped)?;
                j = skip_ws(b, key_end);
                if b.get(j) != Some(&b':') {
                    return None;
                }
                j = skip_ws(b, j + 1);
                let enter = top.is_none_or(|t| t(&key));
                j = if enter {
                    path.push(Seg::Key(key));
                    let end = value(b, j, path, None, f)?;
                    path.pop();
                    end
                } else {
                    skip(b, j)?
                };
                j = skip_ws(b, j);
                match b.get(j)? {
                    b',' => j = skip_ws(b, j + 1),
                    b'}' => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        b'[' => {
            let mut j = skip_ws(b, i + 1);
            if b.get(j) == Some(&b']') {
                return Some(j + 1);
            }
            let mut k = 0;
            loop {
                path.push(Seg::Idx(k));
                j = value(b, j, path, None, f)?;
                path.pop();
                k += 1;
                j = skip_ws(b, j);
                match b.get(j)? {
                    b',' => j = skip_ws(b, j + 1),
                    b']' => return Some(j + 1),
                    _ => return None,
                }
            }
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            f(path, i..j, Scalar::Other);
            Some(j)
        }
    }
}

/// End of the value at `i` without visiting it.
fn skip(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                let k = j + b[j..]
                    .iter()
                    .position(|c| matches!(c, b'"' | b'{' | b'}' | b'[' | b']'))?;
                match b[k] {
                    b'"' => j = string_end(b, k)?,
                    b'{' | b'[' => {
                        depth += 1;
                        j = k + 1;
                    }
                    _ => {
                        depth -= 1;
                        j = k + 1;
                        if depth == 0 {
                            return Some(j);
                        }
                    }
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visits_entered_members_with_paths() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"a\"b"},{"content":[{"type":"text","text":"x"}]}],"n":2}"#;
        let mut seen = Vec::new();
        walk(body, &|k| k == "messages", &mut |path, r, kind| {
            let p: Vec<String> = path
                .iter()
                .map(|s| match s {
                    Seg::Key(k) => k.to_string(),
                    Seg::Idx(i) => i.to_string(),
                })
                .collect();
            seen.push((
                p.join("."),
                String::from_utf8_lossy(&body[r]).into_owned(),
                kind,
            ));
        })
        .unwrap();
        assert_eq!(seen[1].0, "messages.0.content");
        assert_eq!(seen[1].1, r#""a\"b""#);
        assert_eq!(decode(seen[1].1.as_bytes()).unwrap(), "a\"b");
        assert_eq!(seen[3].0, "messages.1.content.0.text");
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn push_text_writes_what_push_string_does() {
        let texts: [&[u8]; 5] = [
            b"plain [EMAIL] text",
            b"quote \" backslash \\ nl \n cr \r tab \t bell \x07 nul \x00 \x1f end",
            "caf\u{e9} \u{2028} \u{1f600}".as_bytes(),
            b"cut \xc3 char",
            b"",
        ];
        for t in texts {
            let mut a = Vec::new();
            push_text(&mut a, t);
            let mut b = Vec::new();
            crate::api::json::push_string(&mut b, &String::from_utf8_lossy(t));
            assert_eq!(a, b, "{t:?}");
        }
    }

    #[test]
    fn first_escape_finds_the_first_byte_to_escape() {
        let naive = |t: &[u8]| t.iter().position(|&c| api_json::needs_escape(c));
        // Every byte value at every position of words and tails, alone and
        // after bytes that provoke borrows (0x00, 0x1f, 0x21, 0x80, 0xff).
        for len in 0..20 {
            for at in 0..len {
                for c in 0..=255u8 {
                    for fill in [b'a', 0x21, 0x80, 0xff, 0x23, 0x5d] {
                        let mut t = vec![fill; len];
                        t[at] = c;
                        assert_eq!(first_escape(&t), naive(&t), "{t:?}");
                        if at + 1 < len {
                            t[at + 1] = 0x00;
                            assert_eq!(first_escape(&t), naive(&t), "{t:?}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn skips_nested_values() {
        let body = br#"{"a":{"b":[1,{"c":"]}"}]},"messages":"z"}"#;
        let mut n = 0;
        walk(body, &|k| k == "messages", &mut |_, _, _| n += 1).unwrap();
        assert_eq!(n, 1);
    }
}
