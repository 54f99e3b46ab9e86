//! Splitting a question into tokens, and reading its numbers.

use super::lists::fx_hash;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// Letters, digits and joiners ("reverse", "os.path.join", "zzp'er").
    Word,
    /// Starts with a digit, a sign or a currency symbol ("2,5", "€5", "5km").
    Number,
    /// A command-line flag ("-r", "--soft").
    Flag,
    /// Operator symbols ("==", ">=", "->"); "-" and "/" only between numbers.
    Operator,
    /// Punctuation that ends a phrase or a clause.
    Boundary,
}

// Token shape bits.
/// First letter upper-case, not all capitals ("Paris", "B").
pub(super) const CAPITALISED: u16 = 1;
/// Two or more letters, all capitals ("SQL", "NULL").
pub(super) const ALL_CAPS: u16 = 1 << 1;
/// An upper-case letter after a lower-case one ("iPhone", "GitHub").
pub(super) const INNER_CAPS: u16 = 1 << 2;
/// Joined by `_ . / \ ::`, a sigil (`$ @ #`) or a call `()`.
pub(super) const CODE_LIKE: u16 = 1 << 3;
/// First word of the text or after `. ? ! : ;` or a line break.
pub(super) const SENTENCE_START: u16 = 1 << 4;
/// Inside a `backtick` span.
pub(super) const IN_BACKTICKS: u16 = 1 << 5;
/// Followed by punctuation or the end.
pub(super) const CLAUSE_FINAL: u16 = 1 << 6;
/// First letter lower-case.
pub(super) const LOWER_FIRST: u16 = 1 << 7;
/// Second or later part of a hyphenated word ("Fi" in "Wi-Fi").
pub(super) const HYPHEN_PART: u16 = 1 << 8;
/// At least two letters.
pub(super) const WORDLIKE: u16 = 1 << 9;

#[derive(Clone, Copy, Debug)]
pub(super) struct Token {
    pub(super) kind: Kind,
    /// Byte range in the question.
    pub(super) raw: (u32, u32),
    /// Byte range in `Tokenized::lower`.
    pub(super) low: (u32, u32),
    pub(super) shape: u16,
}

/// A question split into tokens, with their lower-cased text in one buffer
/// separated by single spaces, so a phrase of consecutive tokens is one
/// slice of it.
pub(super) struct Tokenized {
    pub(super) tokens: Vec<Token>,
    pub(super) lower: String,
    /// Quoted spans as token index ranges [first, end).
    pub(super) quotes: Vec<(u32, u32)>,
}

pub(super) fn span(range: (u32, u32)) -> std::ops::Range<usize> {
    range.0 as usize..range.1 as usize
}

pub(super) fn char_at(text: &str, i: usize) -> Option<char> {
    match text.as_bytes().get(i) {
        Some(&b) if b < 128 => Some(b as char),
        Some(_) => text.get(i..).and_then(|rest| rest.chars().next()),
        None => None,
    }
}

pub(super) fn char_before(text: &str, i: usize) -> Option<char> {
    match i.checked_sub(1).map(|j| text.as_bytes()[j]) {
        Some(b) if b < 128 => Some(b as char),
        Some(_) => text[..i].chars().next_back(),
        None => None,
    }
}

pub(super) fn is_open_quote_context(prev: Option<char>) -> bool {
    prev.is_none_or(|p| p.is_whitespace() || matches!(p, '(' | '[' | '{' | ',' | ':' | ';'))
}

/// Whether a single quote opening at `from` is closed on the same line: a
/// quote after a non-space and before a non-letter ("'error' in").
pub(super) fn single_quote_closes(text: &str, from: usize) -> bool {
    let line = &text[from..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    line.char_indices().any(|(at, c)| {
        matches!(c, '\'' | '’')
            && at > 0
            && char_before(line, at).is_some_and(|p| !p.is_whitespace())
            && char_at(line, at + c.len_utf8()).is_none_or(|n| !n.is_alphanumeric())
    })
}

pub(super) fn is_currency(c: char) -> bool {
    matches!(c, '€' | '$' | '£' | '¥')
}

pub(super) fn is_operator_char(c: char) -> bool {
    matches!(
        c,
        '=' | '<' | '>' | '&' | '|' | '+' | '*' | '/' | '%' | '^' | '~' | '!' | '-'
    )
}

pub(super) fn tokenize(text: &str) -> Tokenized {
    let mut out = Tokenized {
        tokens: Vec::with_capacity(text.len() / 4 + 4),
        lower: String::with_capacity(text.len() + 8),
        quotes: Vec::new(),
    };
    let mut sentence_start = true;
    let mut hyphen_part = false;
    let mut backtick: Option<u32> = None;
    let mut double_quote: Option<u32> = None;
    let mut single_quote: Option<u32> = None;
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        // Spaces are most of a question's characters: test them first.
        let c = match bytes[i] {
            b' ' | b'\t' | b'\r' => {
                hyphen_part = false;
                i += 1;
                continue;
            }
            b'\n' => {
                (sentence_start, hyphen_part) = (true, false);
                i += 1;
                continue;
            }
            ascii @ 0..=127 => ascii as char,
            _ => char_at(text, i).unwrap_or(' '),
        };
        let width = c.len_utf8();
        if c.is_whitespace() {
            hyphen_part = false;
            i += width;
            continue;
        }
        let next = char_at(text, i + width);
        let prev = char_before(text, i);
        let at_boundary = prev.is_none_or(|p| {
            p.is_whitespace() || matches!(p, '(' | '[' | '{' | '`' | '"' | '\'' | '“' | '‘')
        });
        let mut shape = 0;
        if sentence_start {
            shape |= SENTENCE_START;
        }
        if hyphen_part {
            shape |= HYPHEN_PART;
        }
        if backtick.is_some() {
            shape |= IN_BACKTICKS;
        }
        let count = out.tokens.len() as u32;
        match c {
            '`' => {
                match backtick.take() {
                    Some(_) => {}
                    None => backtick = Some(count),
                }
                i += width;
                continue;
            }
            '"' | '“' | '”' | '„' => {
                match double_quote.take() {
                    Some(first) => out.quotes.push((first, count)),
                    None => double_quote = Some(count),
                }
                i += width;
                continue;
            }
            '\'' | '‘' | '’' => {
                if let Some(first) = single_quote {
                    if prev.is_some_and(|p| !p.is_whitespace())
                        && next.is_none_or(|n| !n.is_alphanumeric())
                    {
                        out.quotes.push((first, count));
                        single_quote = None;
                    }
                } else if is_open_quote_context(prev)
                    && next.is_some_and(|n| !n.is_whitespace())
                    && single_quote_closes(text, i + width)
                {
                    single_quote = Some(count);
                }
                i += width;
                continue;
            }
            _ => {}
        }
        let digit_next = next.is_some_and(|n| n.is_ascii_digit());
        if c.is_ascii_digit()
            || (is_currency(c) && digit_next)
            || (c == '-' && at_boundary && digit_next)
        {
            let end = scan_number(text, i);
            out.push(text, Kind::Number, i, end, shape);
            (sentence_start, hyphen_part) = (false, false);
            i = end;
            continue;
        }
        let alnum_next = next.is_some_and(char::is_alphanumeric);
        let starts_word = c.is_alphabetic()
            || (matches!(c, '_' | '$' | '@' | '#' | '°') && alnum_next)
            || (matches!(c, '/' | '.' | '~') && at_boundary && (alnum_next || next == Some('/')));
        if starts_word {
            let (end, word_shape) = scan_word(text, i);
            out.push(text, Kind::Word, i, end, shape | word_shape);
            (sentence_start, hyphen_part) = (false, false);
            i = end;
            continue;
        }
        if c == '-' {
            if at_boundary && next.is_some_and(|n| n.is_alphabetic() || n == '-') {
                let end = scan_flag(text, i);
                out.push(text, Kind::Flag, i, end, shape);
                sentence_start = false;
                i = end;
                continue;
            }
            if prev.is_some_and(char::is_alphanumeric) && next.is_some_and(char::is_alphabetic) {
                // A hyphenated word: its parts are words of their own.
                hyphen_part = true;
                i += width;
                continue;
            }
        }
        if is_operator_char(c) && !(c == '!' && next != Some('=')) {
            let end = text[i..]
                .find(|ch: char| !is_operator_char(ch))
                .map_or(text.len(), |n| i + n);
            let op = &text[i..end];
            match op {
                "%" => out.push(text, Kind::Word, i, end, shape),
                "-" | "/" => {
                    let between_numbers = out.tokens.last().is_some_and(|t| t.kind == Kind::Number)
                        && text[end..]
                            .trim_start()
                            .starts_with(|d: char| d.is_ascii_digit());
                    if between_numbers {
                        out.push(text, Kind::Operator, i, end, shape);
                    } else if op == "-" {
                        out.push(text, Kind::Boundary, i, end, 0);
                    }
                }
                _ => out.push(text, Kind::Operator, i, end, shape),
            }
            sentence_start = false;
            i = end;
            continue;
        }
        match c {
            '.' | '?' | '!' | ';' | ':' => {
                out.push(text, Kind::Boundary, i, i + width, 0);
                sentence_start = true;
            }
            ',' | '(' | ')' | '[' | ']' | '{' | '}' | '–' | '—' | '…' => {
                out.push(text, Kind::Boundary, i, i + width, 0);
            }
            '→' => out.push(text, Kind::Operator, i, i + width, shape),
            '€' | '$' | '£' | '¥' | '°' => out.push(text, Kind::Word, i, i + width, shape),
            _ => {}
        }
        i += width;
    }
    let mut tokens = out.tokens.iter_mut().peekable();
    while let Some(tok) = tokens.next() {
        if tokens.peek().is_none_or(|n| n.kind == Kind::Boundary) {
            tok.shape |= CLAUSE_FINAL;
        }
    }
    out
}

impl Tokenized {
    pub(super) fn push(&mut self, text: &str, kind: Kind, start: usize, end: usize, shape: u16) {
        if !self.lower.is_empty() {
            self.lower.push(' ');
        }
        let low_start = self.lower.len();
        let raw = &text[start..end];
        if raw.is_ascii() {
            self.lower.push_str(raw);
            self.lower[low_start..].make_ascii_lowercase();
        } else {
            for c in raw.chars() {
                match c {
                    '’' | '‘' => self.lower.push('\''),
                    'ĳ' | 'Ĳ' => self.lower.push_str("ij"),
                    c => self.lower.extend(c.to_lowercase()),
                }
            }
        }
        // English possessive and Dutch plural "'s": "France's" is "france".
        if kind == Kind::Word && self.lower.len() - low_start > 3 && self.lower.ends_with("'s") {
            self.lower.truncate(self.lower.len() - 2);
        }
        self.tokens.push(Token {
            kind,
            raw: (start as u32, end as u32),
            low: (low_start as u32, self.lower.len() as u32),
            shape,
        });
    }
}

/// Letters, digits and what joins them inside one word or code token.
pub(super) fn scan_word(text: &str, start: usize) -> (usize, u16) {
    let mut shape = 0;
    let mut i = start;
    let first = char_at(text, i).unwrap_or(' ');
    if matches!(first, '_' | '$' | '@' | '#' | '/' | '.' | '~') {
        shape |= CODE_LIKE;
    }
    if !first.is_alphanumeric() {
        i += first.len_utf8();
    }
    let (mut letters, mut capitals, mut first_letter) = (0usize, 0usize, None);
    let mut after_lower = false;
    let bytes = text.as_bytes();
    while let Some(c) = char_at(text, i) {
        if c.is_ascii_alphanumeric() {
            // The common case, without decoding or Unicode tables.
            let b = bytes[i];
            if b.is_ascii_alphabetic() {
                letters += 1;
                first_letter.get_or_insert(c);
                if b.is_ascii_uppercase() {
                    capitals += 1;
                    if after_lower {
                        shape |= INNER_CAPS;
                    }
                }
                after_lower = b.is_ascii_lowercase();
            }
            i += 1;
            continue;
        }
        let width = c.len_utf8();
        let next = char_at(text, i + width);
        if c.is_alphanumeric() {
            if c.is_alphabetic() {
                letters += 1;
                first_letter.get_or_insert(c);
                if c.is_uppercase() {
                    capitals += 1;
                    if after_lower {
                        shape |= INNER_CAPS;
                    }
                }
                after_lower = c.is_lowercase();
            }
            i += width;
            continue;
        }
        let prev_alnum = char_before(text, i).is_some_and(char::is_alphanumeric);
        let next_alnum = next.is_some_and(char::is_alphanumeric);
        match c {
            '_' => {
                shape |= CODE_LIKE;
                i += width;
            }
            '\'' | '’' if prev_alnum && next.is_some_and(char::is_alphabetic) => i += width,
            // A dot joins "os.path" and "config.yaml", not "e.g." or a full stop.
            '.' if (prev_alnum || char_before(text, i) == Some('/'))
                && next_alnum
                && segment_len(text, i + 1) >= 2 =>
            {
                shape |= CODE_LIKE;
                i += width;
            }
            '.' if char_before(text, i).is_some_and(|p| p.is_ascii_digit())
                && next.is_some_and(|n| n.is_ascii_digit()) =>
            {
                shape |= CODE_LIKE;
                i += width;
            }
            '/' | '\\'
                if next
                    .is_some_and(|n| n.is_alphanumeric() || matches!(n, '.' | '_' | '~' | '/')) =>
            {
                shape |= CODE_LIKE;
                i += width;
            }
            ':' if next == Some(':') => {
                shape |= CODE_LIKE;
                i += 2;
            }
            ':' if matches!(next, Some('/' | '\\')) => {
                shape |= CODE_LIKE;
                i += width;
            }
            '(' if next == Some(')') => {
                shape |= CODE_LIKE;
                i += 2;
                break;
            }
            '+' if next == Some('+') => {
                i += 2;
                break;
            }
            '#' if !next_alnum => {
                i += width;
                break;
            }
            _ => break,
        }
    }
    if letters >= 2 {
        shape |= WORDLIKE;
    }
    if letters >= 2 && capitals == letters {
        shape |= ALL_CAPS;
    } else if first_letter.is_some_and(char::is_uppercase) {
        shape |= CAPITALISED;
    }
    if first_letter.is_some_and(char::is_lowercase) {
        shape |= LOWER_FIRST;
    }
    (i, shape)
}

/// Alphanumeric characters from `from` on.
pub(super) fn segment_len(text: &str, from: usize) -> usize {
    text[from..]
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .count()
}

/// "-r", "--force-with-lease", "--output=json".
pub(super) fn scan_flag(text: &str, start: usize) -> usize {
    let body = text[start..].trim_start_matches('-');
    let dashes = text.len() - start - body.len();
    let len = body
        .find(|c: char| !(c.is_alphanumeric() || matches!(c, '-' | '_' | '=' | '.' | '/')))
        .unwrap_or(body.len());
    let len = body[..len].trim_end_matches(['.', '-', '/']).len();
    start + dashes + len
}

/// Digits with separators between them, a prefix sign or currency symbol
/// and a unit written on the number ("2,5", "2024-03-01", "€5", "5km", "20°C").
pub(super) fn scan_number(text: &str, start: usize) -> usize {
    let b = text.as_bytes();
    let mut i = start;
    let first = char_at(text, i).unwrap_or('0');
    if !first.is_ascii_digit() {
        i += first.len_utf8();
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    while i + 1 < b.len()
        && matches!(b[i], b'.' | b',' | b':' | b'/' | b'-')
        && b[i + 1].is_ascii_digit()
    {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    match char_at(text, i) {
        Some('%') => i + 1,
        Some('°') => {
            let after = i + '°'.len_utf8();
            after
                + text[after..]
                    .find(|c: char| !c.is_alphabetic())
                    .unwrap_or(text.len() - after)
        }
        Some(c) if c.is_alphabetic() => {
            i + text[i..]
                .find(|c: char| !c.is_alphanumeric())
                .unwrap_or(text.len() - i)
        }
        _ => i,
    }
}

/// Whether a question is written in title case ("How To Reverse A List")
/// or in capitals throughout; then capitals say nothing about names.
pub(super) fn writing_style(tokens: &[Token]) -> (bool, bool) {
    let (mut words, mut inner, mut inner_capitalised, mut capitals) = (0, 0, 0, 0);
    for t in tokens
        .iter()
        .filter(|t| t.kind == Kind::Word && t.shape & WORDLIKE != 0)
    {
        words += 1;
        if t.shape & ALL_CAPS != 0 {
            capitals += 1;
        }
        if t.shape & (SENTENCE_START | HYPHEN_PART) == 0 {
            inner += 1;
            if t.shape & CAPITALISED != 0 {
                inner_capitalised += 1;
            }
        }
    }
    let title_case = inner >= 3 && inner_capitalised * 2 > inner;
    // Three quarters: "Use UNION ALL in SQL" is code, not shouting.
    let shouting = words >= 3 && capitals * 4 >= words * 3;
    (title_case, shouting)
}

/// Unit ids beyond the listed units.
pub(super) const UNIT_ORDINAL: u32 = 0xFFFF_0001;
pub(super) const UNIT_TIME: u32 = 0xFFFF_0002;
/// An unlisted unit written on a number ("4k"): this bit plus its hash.
pub(super) const UNIT_UNKNOWN: u32 = 0x8000_0000;
/// The value of a unit named without a number ("how many miles").
pub(super) const NO_VALUE: u64 = u64::MAX;

pub(super) const ORDINAL_SUFFIXES: [&str; 7] = ["st", "nd", "rd", "th", "e", "de", "ste"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NumberValue {
    /// A decimal number: `key` identifies its value.
    Plain {
        key: u64,
        integer: Option<u64>,
        /// Digits written, without separators (a year has four).
        digits: usize,
    },
    /// "10:30", in minutes.
    Time(u32),
    IsoDate(u32, u32, u32),
    /// "01/03/2024": day and month order unknown, compared as written.
    SlashDate(u64),
    /// Versions, addresses, ranges ("3.12.1", "10-20"): compared as written.
    Exact(u64),
}

#[derive(Debug)]
pub(super) struct ParsedNumber<'a> {
    pub(super) value: NumberValue,
    pub(super) prefix: Option<char>,
    pub(super) suffix: &'a str,
}

/// Parses a lower-cased number token. A lone separator before exactly
/// three digits groups thousands ("1,000", "1.000"); otherwise it is the
/// decimal mark, comma or point alike ("2,5" is "2.5").
pub(super) fn parse_number(low: &str) -> ParsedNumber<'_> {
    let mut rest = low;
    let mut prefix = None;
    let mut negative = false;
    if let Some(c) = rest.chars().next().filter(|c| !c.is_ascii_digit()) {
        rest = &rest[c.len_utf8()..];
        if c == '-' {
            negative = true;
        } else {
            prefix = Some(c);
        }
    }
    let core_len = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | ',' | ':' | '/' | '-')))
        .unwrap_or(rest.len());
    let (core, suffix) = rest.split_at(core_len);
    let exact = || NumberValue::Exact(fx_hash(core.as_bytes()) ^ 0x5bd1_e995);
    let value = if core.contains('-') {
        let parts: Vec<&str> = core.split('-').collect();
        match parts.as_slice() {
            [y, m, d] if y.len() == 4 && m.len() <= 2 && d.len() <= 2 => {
                let (y, m, d) = (
                    y.parse().unwrap_or(0),
                    m.parse().unwrap_or(0),
                    d.parse().unwrap_or(0),
                );
                if (1..=12).contains(&m) && (1..=31).contains(&d) {
                    NumberValue::IsoDate(y, m, d)
                } else {
                    exact()
                }
            }
            _ => exact(),
        }
    } else if core.contains('/') {
        let parts: Vec<u64> = core.split('/').map(|p| p.parse().unwrap_or(0)).collect();
        if parts.len() == 3 {
            NumberValue::SlashDate(fx_hash(
                &parts
                    .iter()
                    .flat_map(|p| p.to_le_bytes())
                    .collect::<Vec<u8>>(),
            ))
        } else {
            exact()
        }
    } else if core.contains(':') {
        match core.split_once(':') {
            Some((h, m)) if m.len() == 2 && !m.contains(':') && h.len() <= 2 => NumberValue::Time(
                h.parse::<u32>().unwrap_or(0) * 60 + m.parse::<u32>().unwrap_or(0),
            ),
            _ => exact(),
        }
    } else {
        decimal(core, negative).unwrap_or_else(exact)
    };
    ParsedNumber {
        value,
        prefix,
        suffix,
    }
}

pub(super) fn decimal(core: &str, negative: bool) -> Option<NumberValue> {
    let is_mark = |b: &u8| matches!(b, b'.' | b',');
    let digits = core.bytes().filter(u8::is_ascii_digit).count();
    let marks = core.bytes().filter(is_mark).count();
    let head = &core[..core.find(['.', ',']).unwrap_or(core.len())];
    let in_threes = |groups: &str| groups.split(['.', ',']).all(|g| g.len() == 3);
    // Where the decimal mark is, if there is one.
    let decimal_mark = match core.rfind(['.', ',']) {
        None => None,
        Some(last) if marks == 1 => {
            let thousands = core.len() - last - 1 == 3 && head.len() <= 3 && head != "0";
            (!thousands).then_some(last)
        }
        Some(last) => {
            let last_mark = core.as_bytes()[last];
            if core.bytes().filter(is_mark).all(|b| b == last_mark) {
                // "1.000.000": all grouping, or a version ("3.12.1").
                if !in_threes(&core[head.len() + 1..]) {
                    return None;
                }
                None
            } else {
                // Mixed marks: the last one is decimal, the others group thousands.
                let grouped = &core[head.len() + 1..last];
                if grouped.bytes().any(|b| b == last_mark) || !in_threes(grouped) {
                    return None;
                }
                Some(last)
            }
        }
    };
    let (whole, fraction) = match decimal_mark {
        Some(at) => (&core[..at], &core[at + 1..]),
        None => (core, ""),
    };
    let fraction = fraction.trim_end_matches('0');
    let mut mantissa: u128 = 0;
    for d in whole
        .bytes()
        .chain(fraction.bytes())
        .filter(u8::is_ascii_digit)
    {
        mantissa = mantissa.wrapping_mul(10).wrapping_add((d - b'0') as u128);
    }
    let scale = fraction.len() as u32;
    let integer = (scale == 0 && !negative)
        .then(|| u64::try_from(mantissa).ok())
        .flatten();
    Some(NumberValue::Plain {
        key: number_key(mantissa, scale, negative),
        integer,
        digits,
    })
}

pub(super) fn number_key(mantissa: u128, scale: u32, negative: bool) -> u64 {
    let mut bytes = [0u8; 21];
    bytes[..16].copy_from_slice(&mantissa.to_le_bytes());
    bytes[16..20].copy_from_slice(&scale.to_le_bytes());
    bytes[20] = negative as u8;
    fx_hash(&bytes)
}
