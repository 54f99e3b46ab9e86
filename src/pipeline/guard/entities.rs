//! The built-in PII entities: for each, the Hyperscan patterns that find
//! candidates, the validator that confirms (and may narrow) a candidate,
//! and the rule that tells a stream how far back a match still in progress
//! could start (see `stream.rs`).
//!
//! A validator sees the whole text and the candidate's range, so it can look
//! at one character of context on either side; it returns the range of the
//! finding or `None` (a match whose check fails is no finding).

use std::ops::Range;

/// What a validator may look at: the text and the candidate's range.
pub type Validator = fn(&[u8], Range<usize>) -> Option<Range<usize>>;

/// How a stream finds the earliest start of a match that could still be
/// in progress at the end of the text received so far.
#[derive(Clone, Copy, Debug)]
pub enum OpenRule {
    /// Every byte of a match is in this class: a match still open lies in
    /// the trailing run of such bytes.
    Class(fn(u8) -> bool),
    /// `Bearer <token>`: the token run, extended over `bearer` + blanks.
    Bearer,
    /// Private key blocks: from the earliest `-----BEGIN` within reach, or
    /// a trailing run of header characters.
    PrivateKey,
    /// No class known (custom patterns): a match may start anywhere within
    /// the pattern's maximum width.
    Window,
}

/// Which Hyperscan database a built-in pattern goes into (`scanner.rs`;
/// why, with measurements: docs/pii.md, "Database layout").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The pattern holds a literal Hyperscan can search for (`@`, `:`,
    /// `-----BEGIN`, `AKIA`, `sk-`, `eyJ`, `bearer`, ...).
    Anchored,
    /// Digits and separators with no literal to search for. Its
    /// `OpenRule` is `Class`, and every match is a run of that class's
    /// bytes holding at least one ASCII digit, so the pattern is only
    /// searched for in such runs (`digits.rs`).
    Numeric,
}

/// One pattern of a built-in entity.
pub struct BuiltinPattern {
    pub expression: &'static str,
    pub caseless: bool,
    pub validate: Validator,
    pub open: OpenRule,
    /// Longest finding (bytes): longer matches are no finding, and a
    /// stream never holds back more. 0 = the pattern's own bound.
    pub max_len: usize,
    pub placement: Placement,
}

/// A built-in entity: its configuration name, its mask label and patterns.
pub struct Builtin {
    pub name: &'static str,
    pub label: &'static str,
    pub patterns: &'static [BuiltinPattern],
}

const fn pat(expression: &'static str, validate: Validator, open: OpenRule) -> BuiltinPattern {
    BuiltinPattern {
        expression,
        caseless: false,
        validate,
        open,
        max_len: 0,
        placement: Placement::Anchored,
    }
}

const fn long(max_len: usize, p: BuiltinPattern) -> BuiltinPattern {
    BuiltinPattern { max_len, ..p }
}

/// A digits-and-separators pattern (`Placement::Numeric`); `class` holds
/// every byte a match can have, digits included.
const fn num(
    expression: &'static str,
    validate: Validator,
    class: fn(u8) -> bool,
) -> BuiltinPattern {
    BuiltinPattern {
        placement: Placement::Numeric,
        ..pat(expression, validate, OpenRule::Class(class))
    }
}

pub static BUILTINS: &[Builtin] = &[
    Builtin {
        name: "email",
        label: "EMAIL",
        patterns: &[long(
            320,
            pat(
                // Anchored on one local-part byte before the `@`: with an
                // unbounded local part under SOM_LEFTMOST, Hyperscan tracks a
                // possible start at every word and scans prose at ~250 MiB/s;
                // the validator extends the start over the rest of the local
                // part instead.
                r"[A-Za-z0-9._%+\-]@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,24}",
                email,
                OpenRule::Class(email_byte),
            ),
        )],
    },
    Builtin {
        name: "phone",
        label: "PHONE",
        patterns: &[
            // E.164 and international notation: +31 20 123 4567, +1 (555) 123-4567
            num(
                r"\+[1-9][0-9 ().\-]{6,20}[0-9]",
                phone_international,
                phone_byte,
            ),
            // 00 prefix: 0031 20 1234567
            num(
                r"\b00[1-9][0-9 ().\-]{6,20}[0-9]",
                phone_international,
                phone_byte,
            ),
            // national with trunk 0: 020-1234567, 06 12345678, (030) 1234567, 01 23 45 67 89
            num(
                r"(?:\(0|\b0)[1-9][0-9 ()./\-]{6,16}[0-9]",
                phone_national,
                phone_byte,
            ),
        ],
    },
    Builtin {
        name: "iban",
        label: "IBAN",
        patterns: &[num(
            r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b",
            iban,
            iban_byte,
        )],
    },
    Builtin {
        name: "credit_card",
        label: "CREDIT_CARD",
        patterns: &[num(
            r"\b[0-9](?:[ \-]?[0-9]){12,18}\b",
            credit_card,
            card_byte,
        )],
    },
    Builtin {
        name: "bsn",
        label: "BSN",
        patterns: &[
            num(r"\b[0-9]{9}\b", bsn, bsn_byte),
            num(r"\b[0-9]{4}\.[0-9]{2}\.[0-9]{3}\b", bsn, bsn_byte),
            num(r"\b[0-9]{3}[ \-][0-9]{3}[ \-][0-9]{3}\b", bsn, bsn_byte),
        ],
    },
    Builtin {
        name: "ssn",
        label: "SSN",
        patterns: &[num(
            r"\b[0-9]{3}[ \-][0-9]{2}[ \-][0-9]{4}\b",
            ssn,
            ssn_byte,
        )],
    },
    Builtin {
        name: "ipv4",
        label: "IPV4",
        patterns: &[num(r"\b(?:[0-9]{1,3}\.){3}[0-9]{1,3}\b", ipv4, ipv4_byte)],
    },
    Builtin {
        name: "ipv6",
        label: "IPV6",
        patterns: &[
            pat(
                r"(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}",
                ipv6,
                OpenRule::Class(ipv6_byte),
            ),
            pat(
                r"(?:[0-9A-Fa-f]{1,4}:){1,6}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4}){0,5})?",
                ipv6,
                OpenRule::Class(ipv6_byte),
            ),
            pat(
                r"::(?:[0-9A-Fa-f]{1,4}:){0,5}[0-9A-Fa-f]{1,4}",
                ipv6,
                OpenRule::Class(ipv6_byte),
            ),
        ],
    },
    Builtin {
        name: "secret",
        label: "SECRET",
        patterns: &[
            long(
                8192,
                pat(
                    r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----[\s\S]+-----END [A-Z0-9 ]{0,40}PRIVATE KEY-----",
                    always,
                    OpenRule::PrivateKey,
                ),
            ),
            pat(
                r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b",
                always,
                OpenRule::Class(upper_alnum),
            ),
            long(
                256,
                pat(
                    r"\bsk-(?:proj-|ant-|svcacct-)?[A-Za-z0-9_\-]{20,}",
                    token_end,
                    OpenRule::Class(key_byte),
                ),
            ),
            long(
                160,
                pat(
                    r"\b[rs]k_(?:live|test)_[A-Za-z0-9]{16,}",
                    token_end,
                    OpenRule::Class(key_byte),
                ),
            ),
            long(
                300,
                pat(
                    r"\bgh[pousr]_[A-Za-z0-9]{36,}",
                    token_end,
                    OpenRule::Class(key_byte),
                ),
            ),
            long(
                256,
                pat(
                    r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
                    token_end,
                    OpenRule::Class(key_byte),
                ),
            ),
            long(
                8192,
                pat(
                    r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{2,}\.[A-Za-z0-9_\-]*",
                    token_end,
                    OpenRule::Class(jwt_byte),
                ),
            ),
            BuiltinPattern {
                expression: r"\bbearer[ \t]+[A-Za-z0-9._~+/\-]{16,}=*",
                caseless: true,
                validate: bearer,
                open: OpenRule::Bearer,
                max_len: 2048,
                placement: Placement::Anchored,
            },
        ],
    },
];

pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

// ---------------------------------------------------------------- classes

fn email_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-' | b'@')
}
fn phone_byte(c: u8) -> bool {
    c.is_ascii_digit() || matches!(c, b'+' | b' ' | b'(' | b')' | b'.' | b'/' | b'-')
}
fn iban_byte(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b' '
}
fn card_byte(c: u8) -> bool {
    c.is_ascii_digit() || c == b' ' || c == b'-'
}
fn bsn_byte(c: u8) -> bool {
    c.is_ascii_digit() || matches!(c, b' ' | b'-' | b'.')
}
fn ssn_byte(c: u8) -> bool {
    c.is_ascii_digit() || c == b' ' || c == b'-'
}
fn ipv4_byte(c: u8) -> bool {
    c.is_ascii_digit() || c == b'.'
}
fn ipv6_byte(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':'
}
fn upper_alnum(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit()
}
fn key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}
fn jwt_byte(c: u8) -> bool {
    key_byte(c) || c == b'.'
}
pub fn bearer_token_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'~' | b'+' | b'/' | b'-' | b'=')
}
pub fn key_header_byte(c: u8) -> bool {
    c.is_ascii_uppercase() || c.is_ascii_digit() || c == b'-' || c == b' '
}

// ---------------------------------------------------------------- validators

fn before(text: &[u8], r: &Range<usize>) -> Option<u8> {
    r.start.checked_sub(1).map(|i| text[i])
}
fn after(text: &[u8], r: &Range<usize>) -> Option<u8> {
    text.get(r.end).copied()
}

fn always(_: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    Some(r)
}

/// Tokens end where their alphabet ends (a longer candidate covers the rest).
fn token_end(text: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    match after(text, &r) {
        Some(c) if key_byte(c) => None,
        _ => Some(r),
    }
}

/// Longest local part taken when extending a match leftwards (RFC 5321
/// allows 64; leave room for sloppy real-world addresses).
const EMAIL_LOCAL_MAX: usize = 256;

fn email_local_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn email(text: &[u8], mut r: Range<usize>) -> Option<Range<usize>> {
    if after(text, &r).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
        return None;
    }
    let floor = r.start.saturating_sub(EMAIL_LOCAL_MAX);
    while r.start > floor && email_local_byte(text[r.start - 1]) {
        r.start -= 1;
    }
    while text[r.start] == b'.' {
        r.start += 1;
    }
    let at = r.start + memchr::memchr(b'@', &text[r.clone()])?;
    let local = &text[r.start..at];
    if local.is_empty() || local.ends_with(b".") || memchr::memmem::find(local, b"..").is_some() {
        return None;
    }
    Some(r)
}

fn digits(s: &[u8]) -> impl Iterator<Item = u8> + '_ {
    s.iter().filter(|c| c.is_ascii_digit()).map(|c| c - b'0')
}

/// Digit groups separated by anything else.
fn groups(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    s.split(|c| !c.is_ascii_digit()).filter(|g| !g.is_empty())
}

/// Shared shape checks of phone numbers: no doubled separators, balanced
/// parentheses, not glued to letters or digits.
fn phone_shape(text: &[u8], r: &Range<usize>) -> bool {
    if before(text, r).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'.')
        || after(text, r).is_some_and(|c| c.is_ascii_alphanumeric() || c == b'-')
    {
        return false;
    }
    let s = &text[r.clone()];
    let mut depth = 0i32;
    let mut prev_sep = false;
    for &c in s {
        match c {
            b'(' => depth += 1,
            b')' => depth -= 1,
            _ => {}
        }
        if !(0..=1).contains(&depth) {
            return false;
        }
        let sep = matches!(c, b' ' | b'.' | b'-' | b'/');
        if sep && prev_sep {
            return false;
        }
        prev_sep = sep;
    }
    depth == 0
}

fn phone_international(text: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    let n = digits(&text[r.clone()]).count();
    let plus = text[r.start] == b'+';
    let ok = if plus {
        (8..=15).contains(&n)
    } else {
        (10..=17).contains(&n)
    };
    (ok && phone_shape(text, &r)).then_some(r)
}

fn phone_national(text: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    let s = &text[r.clone()];
    let n = digits(s).count();
    if !(10..=12).contains(&n) || !phone_shape(text, &r) {
        return None;
    }
    // Every group has at least two digits: rules out versions (0.12.3456789)
    // and most dates.
    if groups(s).any(|g| g.len() < 2) {
        return None;
    }
    // Dotted digit runs that look like dates (dd.mm.yyyy) are not phones.
    let dots = s.iter().filter(|&&c| c == b'.').count();
    if dots >= 2 && groups(s).any(|g| g.len() == 4) && n <= 10 {
        return None;
    }
    Some(r)
}

/// Lengths of IBANs by country (ISO 13616 registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

pub fn iban_checksum_ok(compact: &[u8]) -> bool {
    if compact.len() < 5 {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in compact[4..].iter().chain(&compact[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

fn iban(text: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    let compact: Vec<u8> = text[r.clone()]
        .iter()
        .copied()
        .filter(|&c| c != b' ')
        .collect();
    let want = IBAN_LENGTHS
        .iter()
        .find(|(cc, _)| &compact[..2] == *cc)
        .map(|(_, n)| *n)?;
    (compact.len() == want && iban_checksum_ok(&compact)).then_some(r)
}

pub fn luhn_ok(ds: &[u8]) -> bool {
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn card_number_ok(s: &[u8]) -> bool {
    let ds: Vec<u8> = digits(s).collect();
    if !(13..=19).contains(&ds.len()) || ds.iter().all(|&d| d == ds[0]) {
        return false;
    }
    // One kind of separator at most.
    let spaces = s.contains(&b' ');
    let dashes = s.contains(&b'-');
    if spaces && dashes {
        return false;
    }
    // Issuer prefixes: Visa 4, Mastercard 2/5, Amex 34/37, Discover/UnionPay 6,
    // Diners 30/36/38, JCB 35.
    matches!(ds[0], 2..=6) && luhn_ok(&ds)
}

fn credit_card(text: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    if before(text, &r).is_some_and(|c| c == b'-' || c == b'.' || c == b',')
        || after(text, &r).is_some_and(|c| {
            c == b'-'
                || (c == b'.' || c == b',') && text.get(r.end + 1).is_some_and(u8::is_ascii_digit)
        })
    {
        return None;
    }
    // Hyperscan reports the leftmost start for each end; a card number may
    // follow other digits (a reference, a date), so later group starts are
    // tried too.
    let mut start = r.start;
    loop {
        if card_number_ok(&text[start..r.end]) {
            return Some(start..r.end);
        }
        let rest = &text[start..r.end];
        let sep = rest.iter().position(|c| !c.is_ascii_digit())?;
        start += sep + 1;
    }
}

pub fn bsn_ok(ds: &[u8]) -> bool {
    if ds.len() != 9 || ds.iter().all(|&d| d == 0) {
        return false;
    }
    let sum: i32 = ds[..8]
        .iter()
        .enumerate()
        .map(|(i, &d)| (9 - i as i32) * i32::from(d))
        .sum::<i32>()
        - i32::from(ds[8]);
    sum % 11 == 0
}

fn bsn(text: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    if before(text, &r).is_some_and(|c| matches!(c, b'-' | b'.' | b'+' | b'/' | b':'))
        || after(text, &r).is_some_and(|c| {
            matches!(c, b'-' | b'/')
                || c == b'.' && text.get(r.end + 1).is_some_and(u8::is_ascii_digit)
        })
    {
        return None;
    }
    let ds: Vec<u8> = digits(&text[r.clone()]).collect();
    bsn_ok(&ds).then_some(r)
}

fn ssn(text: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    let s = &text[r.clone()];
    // One separator kind: 123-45-6789 or 123 45 6789.
    if s[3] != s[6] {
        return None;
    }
    if before(text, &r).is_some_and(|c| matches!(c, b'-' | b'.' | b'+' | b'/'))
        || after(text, &r).is_some_and(|c| matches!(c, b'-' | b'/'))
    {
        return None;
    }
    let ds: Vec<u8> = digits(s).collect();
    let area = u32::from(ds[0]) * 100 + u32::from(ds[1]) * 10 + u32::from(ds[2]);
    let group = ds[3] * 10 + ds[4];
    let serial = ds[5..].iter().fold(0u32, |a, &d| a * 10 + u32::from(d));
    // Never issued: area 000, 666, 900-999; group 00; serial 0000.
    let ok = area != 0 && area != 666 && area < 900 && group != 0 && serial != 0;
    ok.then_some(r)
}

fn ipv4(text: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    // Part of a longer dotted run (a version string, an OID): not an address.
    if before(text, &r).is_some_and(|c| c == b'.')
        || after(text, &r).is_some_and(|c| c == b'.')
            && text.get(r.end + 1).is_some_and(u8::is_ascii_digit)
    {
        return None;
    }
    for part in text[r.clone()].split(|&c| c == b'.') {
        if part.len() > 1 && part[0] == b'0' {
            return None;
        }
        let v = part.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0'));
        if v > 255 {
            return None;
        }
    }
    Some(r)
}

fn ipv6(text: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    if before(text, &r).is_some_and(|c| c.is_ascii_alphanumeric() || c == b':' || c == b'_')
        || after(text, &r).is_some_and(|c| c.is_ascii_alphanumeric() || c == b':' || c == b'_')
    {
        return None;
    }
    let s = std::str::from_utf8(&text[r.clone()]).ok()?;
    s.parse::<std::net::Ipv6Addr>().ok()?;
    // At least two groups written out: rules out `a::b`-style scopes in code
    // only partly, but `::` alone and `x::` are no addresses worth a finding.
    let written = s.split(':').filter(|g| !g.is_empty()).count();
    (written >= 2).then_some(r)
}

fn bearer(text: &[u8], r: Range<usize>) -> Option<Range<usize>> {
    if after(text, &r).is_some_and(bearer_token_byte) {
        return None;
    }
    let s = &text[r.clone()];
    let token_at = s.iter().position(|&c| c == b' ' || c == b'\t')?;
    let token_start = r.start
        + token_at
        + s[token_at..]
            .iter()
            .position(|&c| c != b' ' && c != b'\t')?;
    let token = &text[token_start..r.end];
    let has_digit = token.iter().any(u8::is_ascii_digit);
    let has_alpha = token.iter().any(u8::is_ascii_alphabetic);
    (has_digit && has_alpha).then_some(token_start..r.end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums() {
        assert!(iban_checksum_ok(b"NL91ABNA0417164300"));
        assert!(!iban_checksum_ok(b"NL92ABNA0417164300"));
        assert!(luhn_ok(&[4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]));
        assert!(bsn_ok(&[1, 1, 1, 2, 2, 2, 3, 3, 3]));
        assert!(!bsn_ok(&[1, 1, 1, 2, 2, 2, 3, 3, 4]));
    }
}
