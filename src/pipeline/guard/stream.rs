//! Masking a text that arrives in pieces (the delta text of a streamed
//! answer), exactly as if the whole text had been scanned at once.
//!
//! The scheme: after each piece, the scanner tells the earliest position
//! where an entity match could still be in progress (`Scanner::open_start`,
//! from each pattern's byte class and maximum width, two bytes of right
//! context kept for the validators). Everything before that point is
//! decided: it is scanned (block mode, over the undecided tail plus the
//! left context a match crossing the last cut could need), findings are
//! selected leftmost-longest exactly as for a whole text, and released.
//! Only the bytes a match could still need are held back.
//!
//! A second stage puts pseudonyms back (`<EMAIL_1>` -> the client's value),
//! holding back only a trailing partial placeholder.

use super::scanner::{Finding, Hits, Scanner, Scope};
use hyperscan::Scratch;

/// What a finding becomes on the way out.
pub trait Replace {
    fn replace(&mut self, scanner: &Scanner, text: &[u8], f: &Finding, out: &mut Vec<u8>);
}

/// `[EMAIL]`-style masks.
pub struct Mask;

impl Replace for Mask {
    fn replace(&mut self, scanner: &Scanner, _text: &[u8], f: &Finding, out: &mut Vec<u8>) {
        out.push(b'[');
        out.extend_from_slice(scanner.entities[f.entity as usize].label.as_bytes());
        out.push(b']');
    }
}

/// Writes `text` to `out` with `findings` (sorted, disjoint, relative to
/// `text`) replaced.
pub fn apply(
    scanner: &Scanner,
    text: &[u8],
    findings: &[Finding],
    rep: &mut dyn Replace,
    out: &mut Vec<u8>,
) {
    let mut at = 0;
    for f in findings {
        out.extend_from_slice(&text[at..f.range.start]);
        rep.replace(scanner, text, f, out);
        at = f.range.end;
    }
    out.extend_from_slice(&text[at..]);
}

/// The masking state of one text stream.
#[derive(Default)]
pub struct TextStream {
    /// Text from absolute offset `base` on.
    buf: Vec<u8>,
    base: usize,
    /// Absolute offset up to which the text was released.
    released: usize,
    /// End of the last finding (absolute).
    last_end: usize,
    hits: Hits,
    findings: Vec<Finding>,
    /// Findings released so far, by entity (for metrics).
    pub found: Vec<u16>,
    /// Bytes scanned (for metrics).
    pub scanned: usize,
}

impl TextStream {
    /// Takes the next piece; appends what is decided to `out`.
    pub fn push(
        &mut self,
        scanner: &Scanner,
        scratch: &Scratch,
        piece: &[u8],
        rep: &mut dyn Replace,
        out: &mut Vec<u8>,
    ) {
        self.buf.extend_from_slice(piece);
        let rel = self.released - self.base;
        let decided_len = self.buf.len().saturating_sub(2);
        if decided_len <= rel {
            return;
        }
        let mut h = scanner.open_start(&self.buf[..decided_len], rel);
        // Never release half a character: the hold classes are ASCII, so
        // the cut can fall inside a multi-byte one.
        while h > rel && self.buf[h] & 0xC0 == 0x80 {
            h -= 1;
        }
        if h <= rel {
            return;
        }
        self.release(scanner, scratch, h, rep, out);
    }

    /// The text ended: releases everything.
    pub fn finish(
        &mut self,
        scanner: &Scanner,
        scratch: &Scratch,
        rep: &mut dyn Replace,
        out: &mut Vec<u8>,
    ) {
        let h = self.buf.len();
        if h > self.released - self.base {
            self.release(scanner, scratch, h, rep, out);
        }
    }

    /// Releases the text up to `h` (relative to `buf`), or through a
    /// finding that starts before `h`.
    fn release(
        &mut self,
        scanner: &Scanner,
        scratch: &Scratch,
        h: usize,
        rep: &mut dyn Replace,
        out: &mut Vec<u8>,
    ) {
        let rel = self.released - self.base;
        let last_end = self.last_end.saturating_sub(self.base);
        scanner.scan_in(Scope::ENTITIES, scratch, &self.buf, &mut self.hits);
        self.scanned += self.buf.len();
        self.findings.clear();
        let end = scanner.select(&self.buf, &self.hits, rel, h, last_end, &mut self.findings);
        let cut = h.max(end);
        for f in &mut self.findings {
            f.range = f.range.start - rel..f.range.end - rel;
            self.found.push(f.entity);
        }
        apply(scanner, &self.buf[rel..cut], &self.findings, rep, out);
        self.last_end = self.base + end;
        self.released = self.base + cut;
        // Keep the left context a match crossing the cut could need, plus
        // two bytes for word boundaries and validators.
        let ctx = scanner.open_start(&self.buf[..cut], 0).saturating_sub(2);
        if ctx > 0 {
            self.buf.drain(..ctx);
            self.base += ctx;
        }
    }
}

/// Puts pseudonyms back into a text that arrives in pieces.
#[derive(Default)]
pub struct Restore {
    pending: Vec<u8>,
}

/// Longest placeholder, `<` and `>` included.
pub const MAX_PLACEHOLDER: usize = 48;

impl Restore {
    pub fn push(&mut self, map: &[(Vec<u8>, String)], piece: &[u8], out: &mut Vec<u8>) {
        self.pending.extend_from_slice(piece);
        // Hold back a trailing `<` followed only by placeholder characters.
        let keep = match memchr::memrchr(b'<', &self.pending) {
            Some(i)
                if self.pending.len() - i < MAX_PLACEHOLDER
                    && self.pending[i + 1..]
                        .iter()
                        .all(|&c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'_') =>
            {
                i
            }
            _ => self.pending.len(),
        };
        restore(map, &self.pending[..keep], out);
        self.pending.drain(..keep);
    }

    pub fn finish(&mut self, map: &[(Vec<u8>, String)], out: &mut Vec<u8>) {
        restore(map, &self.pending, out);
        self.pending.clear();
    }
}

/// Replaces every placeholder of `map` in `text`.
pub fn restore(map: &[(Vec<u8>, String)], text: &[u8], out: &mut Vec<u8>) {
    if map.is_empty() {
        out.extend_from_slice(text);
        return;
    }
    let mut at = 0;
    while let Some(i) = memchr::memchr(b'<', &text[at..]) {
        let i = at + i;
        let hit = map.iter().find(|(p, _)| text[i..].starts_with(p));
        match hit {
            Some((p, v)) => {
                out.extend_from_slice(&text[at..i]);
                out.extend_from_slice(v.as_bytes());
                at = i + p.len();
            }
            None => {
                out.extend_from_slice(&text[at..=i]);
                at = i + 1;
            }
        }
    }
    out.extend_from_slice(&text[at..]);
}
