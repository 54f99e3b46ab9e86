//! Verification of semantic cache candidates (issue 11).
//!
//! Sentence embeddings score "convert 5 km to miles" and "convert 5 miles
//! to km" as near-identical, so similarity alone serves wrong answers. This
//! module owns the second opinion: a candidate at or above the similarity
//! threshold is served only if the question asked and the cached question
//! agree on their meaning-bearing tokens, class by class, in this order:
//! numbers with their units, dates, negations, direction and comparison
//! words, names, code tokens, antonym pairs and argument order. The first
//! class that differs is the [`Rejection`], a metric label.
//!
//! It runs only on candidates (never on a miss), on questions of a few
//! dozen words: one hand-written pass splits a question into tokens and
//! lower-cases them into one buffer, one hash lookup per word finds its
//! roles in the shipped English and Dutch word lists (`words/*.txt`,
//! documented in docs/cache.md and in the files' own comments), and each
//! class is compared on small vectors.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

/// Why a candidate was refused; label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rejection {
    /// A number or its unit differs ("5 km" vs "5 miles").
    Number,
    /// A date, weekday, month, year or named day differs.
    Date,
    /// One question holds more negations than the other.
    Negation,
    /// Direction or comparison words differ (before/after, ascending/descending).
    Direction,
    /// A name (place, product, capitalised word) is missing from one question.
    Name,
    /// A code token (identifier, flag, operator, quoted string) is missing.
    Code,
    /// The questions pick opposite words of an antonym pair (enable/disable).
    Antonym,
    /// The same words sit on swapped sides of a relation word
    /// ("a string to an int" vs "an int to a string").
    ArgumentOrder,
}

impl Rejection {
    /// Every class, in the order they are checked.
    pub const ALL: [Rejection; 8] = [
        Rejection::Number,
        Rejection::Date,
        Rejection::Negation,
        Rejection::Direction,
        Rejection::Name,
        Rejection::Code,
        Rejection::Antonym,
        Rejection::ArgumentOrder,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Number => "number",
            Rejection::Date => "date",
            Rejection::Negation => "negation",
            Rejection::Direction => "direction",
            Rejection::Name => "name",
            Rejection::Code => "code",
            Rejection::Antonym => "antonym",
            Rejection::ArgumentOrder => "argument_order",
        }
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// The shipped word lists; their format is described at the top of stop.txt
// and, per list, in each file.
const STOP_WORDS: &str = include_str!("words/stop.txt");
const NEGATIONS: &str = include_str!("words/negation.txt");
const IDIOMS: &str = include_str!("words/idioms.txt");
const RELATIONS: &str = include_str!("words/relation.txt");
const UNITS: &str = include_str!("words/units.txt");
const NUMBER_WORDS: &str = include_str!("words/numbers.txt");
const DATES: &str = include_str!("words/dates.txt");
const NAMES: &str = include_str!("words/names.txt");
const SQL_KEYWORDS: &str = include_str!("words/sql.txt");
const DIRECTIONS: &str = include_str!("words/direction.txt");
const ANTONYMS: &str = include_str!("words/antonym.txt");

/// Decides whether a cached answer may answer a new question. Built once
/// (the word lists are parsed at construction), then shared read-only
/// across threads.
pub struct Verifier {
    /// Lower-cased word or phrase (words joined by one space) -> its roles.
    words: FxMap<Box<str>, Entry>,
    /// Roles a word has only at the end of a clause (`on$`, `in$`).
    clause_final: FxMap<Box<str>, Entry>,
    /// The class of each direction/antonym scale, by scale index.
    scale_class: Vec<Rejection>,
}

impl Default for Verifier {
    fn default() -> Self {
        Verifier::new()
    }
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("words", &self.words.len())
            .field("scales", &self.scale_class.len())
            .finish()
    }
}

impl Verifier {
    /// The verifier with the shipped English and Dutch word lists.
    ///
    /// Panics only if a shipped list is malformed (a word in two scales, a
    /// phrase with punctuation); the unit tests construct it, so such a
    /// list never ships.
    pub fn new() -> Verifier {
        let mut lists = Lists::default();
        lists.flag_items(STOP_WORDS, |e| e.stop = true);
        lists.flag_items(NEGATIONS, |e| e.negation = true);
        lists.flag_items(IDIOMS, |e| e.idiom = true);
        lists.names(NAMES);
        lists.flag_items(SQL_KEYWORDS, |e| e.sql = true);
        lists.relations(RELATIONS);
        lists.units(UNITS);
        lists.number_words(NUMBER_WORDS);
        lists.dates(DATES);
        lists.scales(DIRECTIONS, Rejection::Direction, false);
        lists.scales(ANTONYMS, Rejection::Antonym, true);
        lists.phrases_keep_relations();
        Verifier {
            words: lists.words,
            clause_final: lists.clause_final,
            scale_class: lists.scale_class,
        }
    }

    /// Ok if `asked` may be answered with the answer cached for `cached`.
    pub fn check(&self, asked: &str, cached: &str) -> Result<(), Rejection> {
        if asked == cached {
            return Ok(());
        }
        let a = self.profile(asked);
        let b = self.profile(cached);
        if a.quantities != b.quantities {
            return Err(Rejection::Number);
        }
        if a.dates != b.dates {
            return Err(Rejection::Date);
        }
        if a.negations != b.negations {
            return Err(Rejection::Negation);
        }
        if self.scales_differ(&a.senses, &b.senses, Rejection::Direction) {
            return Err(Rejection::Direction);
        }
        if !a.names_within(&b) || !b.names_within(&a) {
            return Err(Rejection::Name);
        }
        if !a.code_within(&b) || !b.code_within(&a) {
            return Err(Rejection::Code);
        }
        if self.scales_differ(&a.senses, &b.senses, Rejection::Antonym) {
            return Err(Rejection::Antonym);
        }
        if arguments_swapped(&a.sites, &b.sites) {
            return Err(Rejection::ArgumentOrder);
        }
        Ok(())
    }

    /// True if a direction or antonym scale of `class` is used differently.
    /// A decisive (non-weak) word in one question refuses when the other
    /// does not use its scale at all. When both use a scale, direction
    /// words must pick the same alternatives; antonyms refuse only when
    /// each question picks one the other does not ("enable" / "disable"),
    /// since a long question may use both sides ("a small shop with a
    /// large table") where its paraphrase names one.
    fn scales_differ(&self, a: &[Sense], b: &[Sense], class: Rejection) -> bool {
        let of_class = |s: &&Sense| self.scale_class[s.scale as usize] == class;
        a.iter().chain(b.iter()).filter(of_class).any(|sense| {
            let (mask_a, decisive_a) = scale_use(a, sense.scale);
            let (mask_b, decisive_b) = scale_use(b, sense.scale);
            let picked_differently = match class {
                Rejection::Antonym => mask_a & !mask_b != 0 && mask_b & !mask_a != 0,
                _ => mask_a != mask_b,
            };
            (mask_a != 0 && mask_b != 0 && picked_differently)
                || (decisive_a != 0 && mask_b == 0)
                || (decisive_b != 0 && mask_a == 0)
        })
    }

    /// Everything `check` compares about one question.
    fn profile<'t>(&self, text: &'t str) -> Profile<'t> {
        let toks = tokenize(text);
        let mut p = Profile {
            text,
            toks,
            slots: Vec::new(),
            quantities: Vec::new(),
            dates: Vec::new(),
            negations: 0,
            senses: Vec::new(),
            names: Vec::new(),
            code: Vec::new(),
            sites: Vec::new(),
        };
        self.resolve(&mut p);
        let (title_case, shouting) = writing_style(&p.toks.tokens);
        attach_month_days(&mut p);
        for i in 0..p.toks.tokens.len() {
            let slot = p.slots[i];
            if slot.words == 0 || slot.used {
                continue;
            }
            match p.toks.tokens[i].kind {
                Kind::Number => self.number(&mut p, i),
                Kind::Word => self.word(&mut p, i, title_case, shouting),
                Kind::Flag => p.code.push(Needle::Exact(p.toks.tokens[i].raw)),
                Kind::Operator if slot.entry.is_none_or(|e| e.relation == 0) => {
                    p.code.push(Needle::Lower(p.toks.tokens[i].low))
                }
                Kind::Operator | Kind::Boundary => {}
            }
        }
        for q in 0..p.toks.quotes.len() {
            let (first, end) = p.toks.quotes[q];
            if end > first {
                let span = (
                    p.toks.tokens[first as usize].low.0,
                    p.toks.tokens[end as usize - 1].low.1,
                );
                p.code.push(Needle::Lower(span));
            }
        }
        relation_sites(&mut p);
        p.quantities.sort_unstable();
        p.dates.sort_unstable();
        p
    }

    /// Finds each word's roles, joining listed phrases ("prior to", "log ik
    /// in") into their first word's slot.
    fn resolve(&self, p: &mut Profile<'_>) {
        let tokens = &p.toks.tokens;
        let lower = &p.toks.lower;
        let one_token = Slot {
            entry: None,
            words: 1,
            used: false,
            name: false,
        };
        p.slots = vec![one_token; tokens.len()];
        let mut i = 0;
        let mut gapped_key = String::new();
        while i < tokens.len() {
            let tok = tokens[i];
            if !matches!(tok.kind, Kind::Word | Kind::Operator) || p.slots[i].words == 0 {
                i += 1;
                continue;
            }
            let single = self.words.get(&lower[span(tok.low)]);
            let mut entry = single;
            let mut words = 1;
            if let Some(e) = single.filter(|e| e.phrase_words > 1) {
                let longest = (e.phrase_words as usize).min(tokens.len() - i);
                for len in (2..=longest).rev() {
                    let run = &tokens[i..i + len];
                    let joined = run.windows(2).all(|w| {
                        w[0].kind == Kind::Word
                            && w[1].kind == Kind::Word
                            && w[1].low.0 == w[0].low.1 + 1
                    });
                    if !joined {
                        continue;
                    }
                    let key = &lower[tok.low.0 as usize..run[len - 1].low.1 as usize];
                    if let Some(phrase) = self.words.get(key) {
                        entry = Some(phrase);
                        words = len;
                        break;
                    }
                }
            }
            if words == 1 && single.is_some_and(|e| e.gapped) {
                // A Dutch separable verb: "zet de wifi aan", "log ik uit".
                let clause = tokens[i + 1..]
                    .iter()
                    .enumerate()
                    .take_while(|(_, t)| t.kind != Kind::Boundary)
                    .take(GAP_WORDS);
                for (offset, t) in clause {
                    if t.kind != Kind::Word {
                        continue;
                    }
                    gapped_key.clear();
                    gapped_key.push_str(&lower[span(tok.low)]);
                    gapped_key.push_str(" ... ");
                    gapped_key.push_str(&lower[span(t.low)]);
                    if let Some(phrase) = self.words.get(gapped_key.as_str()) {
                        entry = Some(phrase);
                        p.slots[i + 1 + offset].words = 0;
                        break;
                    }
                }
            }
            if words == 1 && tok.shape & CLAUSE_FINAL != 0 && single.is_some_and(|e| e.clause_final)
            {
                if let Some(last) = self.clause_final.get(&lower[span(tok.low)]) {
                    entry = Some(last);
                }
            }
            p.slots[i].entry = entry.copied();
            p.slots[i].words = words as u8;
            for inside in &mut p.slots[i + 1..i + words] {
                inside.words = 0;
            }
            i += words;
        }
    }

    fn number(&self, p: &mut Profile<'_>, i: usize) {
        let tok = p.toks.tokens[i];
        let low = &p.toks.lower[span(tok.low)];
        let parsed = parse_number(low);
        let value = match parsed.value {
            NumberValue::IsoDate(y, m, d) => {
                p.dates.push(DATE_YEAR | y);
                p.dates.push(DATE_MONTH_DAY | m << 8 | d);
                return;
            }
            NumberValue::SlashDate(h) => {
                p.dates.push(DATE_NUMERIC | (h as u32 & 0xFF_FFFF));
                return;
            }
            NumberValue::Time(minutes) => {
                p.quantities.push((minutes as u64, UNIT_TIME));
                return;
            }
            NumberValue::Plain { key, .. } | NumberValue::Exact(key) => key,
        };
        let mut unit = 0;
        if let Some(symbol) = parsed.prefix {
            let mut buf = [0u8; 4];
            unit = self.unit_of(symbol.encode_utf8(&mut buf));
        }
        if !parsed.suffix.is_empty() {
            unit = if ORDINAL_SUFFIXES.contains(&parsed.suffix) {
                UNIT_ORDINAL
            } else {
                match self.unit_of(parsed.suffix) {
                    0 => UNIT_UNKNOWN | (fx_hash(parsed.suffix.as_bytes()) as u32 & 0x7FFF_FFFF),
                    known => known,
                }
            };
        }
        let (number_value, has_prefix) = (parsed.value, parsed.prefix.is_some());
        if unit == 0 {
            unit = take_unit_after(p, i);
        }
        if unit == 0 && i > 0 {
            // "€ 5": a currency symbol written apart before the number.
            let prev = p.toks.tokens[i - 1];
            let symbol = &p.toks.lower[span(prev.low)];
            if prev.kind == Kind::Word && matches!(symbol, "€" | "$" | "£" | "¥") {
                unit = p.slots[i - 1].entry.map_or(0, |e| e.unit as u32);
                p.slots[i - 1].used = true;
            }
        }
        if let NumberValue::Plain {
            integer: Some(year),
            digits: 4,
            ..
        } = number_value
        {
            if unit == 0 && !has_prefix && (1200..=2199).contains(&year) {
                p.dates.push(DATE_YEAR | year as u32);
                return;
            }
        }
        p.quantities.push((value, unit));
    }

    fn unit_of(&self, word: &str) -> u32 {
        self.words.get(word).map_or(0, |e| e.unit as u32)
    }

    fn word(&self, p: &mut Profile<'_>, i: usize, title_case: bool, shouting: bool) {
        let tok = p.toks.tokens[i];
        let slot = p.slots[i];
        let phrase = (tok.low.0, p.toks.tokens[i + slot.words as usize - 1].low.1);
        let low = &p.toks.lower[span(tok.low)];
        let Some(e) = slot.entry else {
            if low.ends_with("n't") {
                p.negations += 1;
            }
            return name_or_code(p, i, phrase, title_case, shouting);
        };
        if e.idiom {
            return;
        }
        if e.negation || low.ends_with("n't") {
            p.negations += 1;
        }
        if e.date != 0
            && e.date & DATE_KIND != DATE_MONTH
            && (!e.date_needs_context || has_date_context(p, i))
        {
            p.dates.push(e.date);
        }
        if let Some(value) = e.number {
            let unit = take_unit_after(p, i);
            p.quantities
                .push((number_key(value as u128, 0, false), unit));
        }
        if e.unit != 0 && e.unit_alone {
            p.quantities.push((NO_VALUE, e.unit as u32));
        }
        if let Some(sense) = e.sense {
            p.senses.push(sense);
        }
        if e.name {
            p.names.push((phrase, e.name_group));
            p.slots[i].name = true;
        } else if e.sql && tok.shape & ALL_CAPS != 0 && !shouting {
            p.code.push(Needle::Lower(phrase));
        } else if e.stop && tok.shape & ALL_CAPS != 0 && !shouting && e.is_only_stop() {
            // An acronym that is also a stop word: "US", "IT", "WHO".
            p.names.push((phrase, e.name_group));
            p.slots[i].name = true;
        } else if !e.has_meaning() {
            name_or_code(p, i, phrase, title_case, shouting);
        }
    }
}

/// A word without listed meaning is code when it looks like code, a
/// name when capitalised inside a sentence (or in capitals, or
/// "GitHub"-style), and otherwise an ordinary word.
fn name_or_code(
    p: &mut Profile<'_>,
    i: usize,
    phrase: (u32, u32),
    title_case: bool,
    shouting: bool,
) {
    let shape = p.toks.tokens[i].shape;
    if shape & (CODE_LIKE | IN_BACKTICKS) != 0
        || shape & (INNER_CAPS | LOWER_FIRST) == INNER_CAPS | LOWER_FIRST
    {
        p.code.push(Needle::Lower(phrase));
        return;
    }
    let capitalised =
        shape & CAPITALISED != 0 && shape & (SENTENCE_START | HYPHEN_PART) == 0 && !title_case;
    let emphasised =
        (shape & ALL_CAPS != 0 && !shouting) || shape & (INNER_CAPS | LOWER_FIRST) == INNER_CAPS;
    if capitalised || emphasised {
        p.names.push((phrase, 0));
        p.slots[i].name = true;
    }
}

// ---------------------------------------------------------------------------
// Word lists

/// A word's or phrase's roles, from the word lists.
#[derive(Clone, Copy, Default, Debug)]
struct Entry {
    stop: bool,
    negation: bool,
    /// A listed idiom: its words lose their other roles.
    idiom: bool,
    name: bool,
    /// Names that are aliases of each other ("mac", "macos") share a group.
    name_group: u16,
    sql: bool,
    /// Bit set of relation groups (relation.txt line order).
    relation: u16,
    /// Unit id (1-based, units.txt line order); 0: not a unit.
    unit: u16,
    /// The unit counts without a number before it.
    unit_alone: bool,
    /// Value of a number word.
    number: Option<u64>,
    /// Date atom (`DATE_*`); 0: not a date.
    date: u32,
    /// "may", "march": a date only with a capital or a day number.
    date_needs_context: bool,
    sense: Option<Sense>,
    /// Longest listed phrase (in words) starting with this word.
    phrase_words: u8,
    /// The word has a listed meaning at the end of a clause (`clause_final`).
    clause_final: bool,
    /// A listed phrase with a gap starts with this word ("zet ... aan").
    gapped: bool,
}

impl Entry {
    /// A stop word and nothing else ("us", not "no" or "in").
    fn is_only_stop(&self) -> bool {
        let without_stop = Entry {
            stop: false,
            ..*self
        };
        self.stop && !without_stop.has_meaning()
    }

    /// Has a role that makes it something other than a name or code token.
    fn has_meaning(&self) -> bool {
        self.stop
            || self.negation
            || self.idiom
            || self.name
            || self.sql
            || self.relation != 0
            || self.unit != 0
            || self.number.is_some()
            || self.date != 0
            || self.sense.is_some()
    }
}

/// One word of a direction or antonym scale: which scale, which
/// alternative, and whether it decides alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sense {
    scale: u16,
    alternative: u8,
    weak: bool,
    /// A direction word (a comparison, never an argument of a relation).
    direction: bool,
}

/// The alternatives of `scale` a question uses, and those it uses with a
/// decisive word, as bit sets.
fn scale_use(senses: &[Sense], scale: u16) -> (u32, u32) {
    senses
        .iter()
        .filter(|s| s.scale == scale)
        .fold((0, 0), |(all, decisive), s| {
            let bit = 1u32 << s.alternative;
            (all | bit, if s.weak { decisive } else { decisive | bit })
        })
}

/// Builds the lookup tables from the list files.
#[derive(Default)]
struct Lists {
    words: FxMap<Box<str>, Entry>,
    clause_final: FxMap<Box<str>, Entry>,
    scale_class: Vec<Rejection>,
    relation_groups: usize,
    name_groups: u16,
    units: usize,
    named_dates: Vec<String>,
}

/// The list lines that hold items: not blank, not a `#` comment.
fn list_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The comma-separated items of a line.
fn list_items(line: &str) -> impl Iterator<Item = &str> {
    line.split(',').map(str::trim).filter(|i| !i.is_empty())
}

/// The lower-cased form of one word of a gapped phrase.
fn single_word(item: &str, word: &str) -> String {
    let toks = tokenize(word);
    match toks.tokens.as_slice() {
        [one] if one.kind == Kind::Word => toks.lower[span(one.low)].to_string(),
        _ => panic!("gapped phrase {item:?}: {word:?} is not one word"),
    }
}

/// Splits "key = items" at the first " = ".
fn keyed_line(line: &str) -> (&str, &str) {
    match line.split_once(" = ") {
        Some((key, items)) => (key.trim(), items),
        None => panic!("word list line without \" = \": {line}"),
    }
}

impl Lists {
    /// The entry of a list item, created if new. The item is tokenized like
    /// a question, so it matches what a question's words look like.
    fn entry(&mut self, item: &str) -> &mut Entry {
        let (item, at_clause_end) = match item.strip_suffix('$') {
            Some(word) => (word, true),
            None => (item, false),
        };
        if let Some((first, last)) = item.split_once(" ... ") {
            let (first, last) = (single_word(item, first), single_word(item, last));
            self.words.entry(first.as_str().into()).or_default().gapped = true;
            return self
                .words
                .entry(format!("{first} ... {last}").into())
                .or_default();
        }
        let toks = tokenize(item);
        let (key, words): (String, usize) = match toks.tokens.as_slice() {
            [] => (item.to_lowercase(), 1),
            [one] => (toks.lower[span(one.low)].to_string(), 1),
            many => {
                assert!(
                    many.iter().all(|t| t.kind == Kind::Word),
                    "word list phrase {item:?} holds punctuation or numbers"
                );
                let end = many[many.len() - 1].low.1 as usize;
                (toks.lower[..end].to_string(), many.len())
            }
        };
        if words > 1 {
            let first = &toks.lower[span(toks.tokens[0].low)];
            let head = self.words.entry(first.into()).or_default();
            head.phrase_words = head.phrase_words.max(words as u8);
        }
        if at_clause_end {
            self.words
                .entry(key.as_str().into())
                .or_default()
                .clause_final = true;
            return self.clause_final.entry(key.into()).or_default();
        }
        self.words.entry(key.into()).or_default()
    }

    /// A phrase ending in a relation word is that relation too: "bigger
    /// than" is a comparison and still has arguments on both sides.
    fn phrases_keep_relations(&mut self) {
        let inherited: Vec<(Box<str>, u16)> = self
            .words
            .iter()
            .filter(|(_, e)| !e.idiom)
            .filter_map(|(key, _)| {
                let (_, last) = key.rsplit_once(' ')?;
                let relation = self.words.get(last)?.relation;
                (relation != 0).then(|| (key.clone(), relation))
            })
            .collect();
        for (key, relation) in inherited {
            if let Some(e) = self.words.get_mut(&key) {
                e.relation |= relation;
            }
        }
    }

    fn flag_items(&mut self, text: &str, set: impl Fn(&mut Entry)) {
        for line in list_lines(text) {
            for item in list_items(line) {
                set(self.entry(item));
            }
        }
    }

    /// Names, one by one or as "canonical = alias, alias" groups.
    fn names(&mut self, text: &str) {
        for line in list_lines(text) {
            let (group, items) = match line.split_once(" = ") {
                Some((_canonical, items)) => {
                    self.name_groups += 1;
                    (self.name_groups, items)
                }
                None => (0, line),
            };
            for item in list_items(items) {
                let e = self.entry(item);
                e.name = true;
                if group != 0 {
                    assert!(e.name_group == 0, "name {item:?} is in two alias groups");
                    e.name_group = group;
                }
            }
        }
    }

    fn relations(&mut self, text: &str) {
        for line in list_lines(text) {
            let (_group, items) = keyed_line(line);
            assert!(self.relation_groups < 16, "more than 16 relation groups");
            let bit = 1u16 << self.relation_groups;
            self.relation_groups += 1;
            for item in list_items(items) {
                self.entry(item).relation |= bit;
            }
        }
    }

    fn units(&mut self, text: &str) {
        for line in list_lines(text) {
            let (_canonical, items) = keyed_line(line);
            self.units += 1;
            let id = self.units as u16;
            for item in list_items(items) {
                let (item, alone) = match item.strip_prefix('~') {
                    Some(word) => (word, false),
                    None => (item, true),
                };
                let e = self.entry(item);
                assert!(e.unit == 0, "unit {item:?} listed twice");
                e.unit = id;
                e.unit_alone = alone;
            }
        }
    }

    fn number_words(&mut self, text: &str) {
        for line in list_lines(text) {
            let (value, items) = keyed_line(line);
            let value: u64 = value
                .parse()
                .unwrap_or_else(|_| panic!("number word value {value:?} is not a number"));
            for item in list_items(items) {
                self.entry(item).number = Some(value);
            }
        }
    }

    fn dates(&mut self, text: &str) {
        for line in list_lines(text) {
            let (key, items) = keyed_line(line);
            let atom = match key.split_once(' ') {
                Some(("month", m)) => DATE_MONTH | m.parse::<u32>().expect("month number"),
                Some(("weekday", d)) => DATE_WEEKDAY | d.parse::<u32>().expect("weekday number"),
                Some(("named", name)) => {
                    self.named_dates.push(name.to_string());
                    DATE_NAMED | self.named_dates.len() as u32
                }
                _ => panic!("dates.txt: unknown line kind {key:?}"),
            };
            for item in list_items(items) {
                let (item, needs_context) = match item.strip_prefix('?') {
                    Some(word) => (word, true),
                    None => (item, false),
                };
                let e = self.entry(item);
                assert!(e.date == 0, "date word {item:?} listed twice");
                e.date = atom;
                e.date_needs_context = needs_context;
            }
        }
    }

    fn scales(&mut self, text: &str, class: Rejection, weak_by_default: bool) {
        for line in list_lines(text) {
            let scale = self.scale_class.len() as u16;
            self.scale_class.push(class);
            for (alternative, part) in line.split('|').enumerate() {
                assert!(alternative < 32, "a scale has at most 32 alternatives");
                for item in list_items(part) {
                    let (item, weak) = if let Some(word) = item.strip_prefix('~') {
                        (word, true)
                    } else if let Some(word) = item.strip_prefix('!') {
                        (word, false)
                    } else {
                        (item, weak_by_default)
                    };
                    let sense = Sense {
                        scale,
                        alternative: alternative as u8,
                        weak,
                        direction: class == Rejection::Direction,
                    };
                    let e = self.entry(item);
                    assert!(
                        e.sense.is_none_or(|s| s == sense),
                        "{item:?} is in two direction/antonym scales"
                    );
                    e.sense = Some(sense);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tokens

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
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
const CAPITALISED: u16 = 1;
/// Two or more letters, all capitals ("SQL", "NULL").
const ALL_CAPS: u16 = 1 << 1;
/// An upper-case letter after a lower-case one ("iPhone", "GitHub").
const INNER_CAPS: u16 = 1 << 2;
/// Joined by `_ . / \ ::`, a sigil (`$ @ #`) or a call `()`.
const CODE_LIKE: u16 = 1 << 3;
/// First word of the text or after `. ? ! : ;` or a line break.
const SENTENCE_START: u16 = 1 << 4;
/// Inside a `backtick` span.
const IN_BACKTICKS: u16 = 1 << 5;
/// Followed by punctuation or the end.
const CLAUSE_FINAL: u16 = 1 << 6;
/// First letter lower-case.
const LOWER_FIRST: u16 = 1 << 7;
/// Second or later part of a hyphenated word ("Fi" in "Wi-Fi").
const HYPHEN_PART: u16 = 1 << 8;
/// At least two letters.
const WORDLIKE: u16 = 1 << 9;

#[derive(Clone, Copy, Debug)]
struct Token {
    kind: Kind,
    /// Byte range in the question.
    raw: (u32, u32),
    /// Byte range in `Tokenized::lower`.
    low: (u32, u32),
    shape: u16,
}

/// A question split into tokens, with their lower-cased text in one buffer
/// separated by single spaces, so a phrase of consecutive tokens is one
/// slice of it.
struct Tokenized {
    tokens: Vec<Token>,
    lower: String,
    /// Quoted spans as token index ranges [first, end).
    quotes: Vec<(u32, u32)>,
}

fn span(range: (u32, u32)) -> std::ops::Range<usize> {
    range.0 as usize..range.1 as usize
}

fn char_at(text: &str, i: usize) -> Option<char> {
    match text.as_bytes().get(i) {
        Some(&b) if b < 128 => Some(b as char),
        Some(_) => text.get(i..).and_then(|rest| rest.chars().next()),
        None => None,
    }
}

fn char_before(text: &str, i: usize) -> Option<char> {
    match i.checked_sub(1).map(|j| text.as_bytes()[j]) {
        Some(b) if b < 128 => Some(b as char),
        Some(_) => text[..i].chars().next_back(),
        None => None,
    }
}

fn is_open_quote_context(prev: Option<char>) -> bool {
    prev.is_none_or(|p| p.is_whitespace() || matches!(p, '(' | '[' | '{' | ',' | ':' | ';'))
}

/// Whether a single quote opening at `from` is closed on the same line: a
/// quote after a non-space and before a non-letter ("'error' in").
fn single_quote_closes(text: &str, from: usize) -> bool {
    let line = &text[from..];
    let line = &line[..line.find('\n').unwrap_or(line.len())];
    line.char_indices().any(|(at, c)| {
        matches!(c, '\'' | '’')
            && at > 0
            && char_before(line, at).is_some_and(|p| !p.is_whitespace())
            && char_at(line, at + c.len_utf8()).is_none_or(|n| !n.is_alphanumeric())
    })
}

fn is_currency(c: char) -> bool {
    matches!(c, '€' | '$' | '£' | '¥')
}

fn is_operator_char(c: char) -> bool {
    matches!(
        c,
        '=' | '<' | '>' | '&' | '|' | '+' | '*' | '/' | '%' | '^' | '~' | '!' | '-'
    )
}

fn tokenize(text: &str) -> Tokenized {
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
    fn push(&mut self, text: &str, kind: Kind, start: usize, end: usize, shape: u16) {
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
fn scan_word(text: &str, start: usize) -> (usize, u16) {
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
fn segment_len(text: &str, from: usize) -> usize {
    text[from..]
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .count()
}

/// "-r", "--force-with-lease", "--output=json".
fn scan_flag(text: &str, start: usize) -> usize {
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
fn scan_number(text: &str, start: usize) -> usize {
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
fn writing_style(tokens: &[Token]) -> (bool, bool) {
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

// ---------------------------------------------------------------------------
// Numbers

/// Unit ids beyond the listed units.
const UNIT_ORDINAL: u32 = 0xFFFF_0001;
const UNIT_TIME: u32 = 0xFFFF_0002;
/// An unlisted unit written on a number ("4k"): this bit plus its hash.
const UNIT_UNKNOWN: u32 = 0x8000_0000;
/// The value of a unit named without a number ("how many miles").
const NO_VALUE: u64 = u64::MAX;

const ORDINAL_SUFFIXES: [&str; 7] = ["st", "nd", "rd", "th", "e", "de", "ste"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NumberValue {
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
struct ParsedNumber<'a> {
    value: NumberValue,
    prefix: Option<char>,
    suffix: &'a str,
}

/// Parses a lower-cased number token. A lone separator before exactly
/// three digits groups thousands ("1,000", "1.000"); otherwise it is the
/// decimal mark, comma or point alike ("2,5" is "2.5").
fn parse_number(low: &str) -> ParsedNumber<'_> {
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

fn decimal(core: &str, negative: bool) -> Option<NumberValue> {
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

fn number_key(mantissa: u128, scale: u32, negative: bool) -> u64 {
    let mut bytes = [0u8; 21];
    bytes[..16].copy_from_slice(&mantissa.to_le_bytes());
    bytes[16..20].copy_from_slice(&scale.to_le_bytes());
    bytes[20] = negative as u8;
    fx_hash(&bytes)
}

/// The unit word right after token `i` ("5 km"), consumed.
fn take_unit_after(p: &mut Profile<'_>, i: usize) -> u32 {
    let next = i + p.slots[i].words.max(1) as usize;
    match (p.toks.tokens.get(next), p.slots.get(next)) {
        (Some(t), Some(slot)) if t.kind == Kind::Word && slot.words > 0 && !slot.used => {
            match slot.entry.filter(|e| e.unit != 0) {
                Some(e) => {
                    p.slots[next].used = true;
                    e.unit as u32
                }
                None => 0,
            }
        }
        _ => 0,
    }
}

// ---------------------------------------------------------------------------
// Dates

const DATE_KIND: u32 = 0xFF << 24;
const DATE_MONTH: u32 = 1 << 24;
const DATE_MONTH_DAY: u32 = 2 << 24;
const DATE_YEAR: u32 = 3 << 24;
const DATE_WEEKDAY: u32 = 4 << 24;
const DATE_NAMED: u32 = 5 << 24;
const DATE_NUMERIC: u32 = 6 << 24;

/// Months with their day numbers: "1 March", "March 1st", "1st of March"
/// all become (3, 1); the day number is then not a number of its own.
fn attach_month_days(p: &mut Profile<'_>) {
    for i in 0..p.toks.tokens.len() {
        let slot = p.slots[i];
        let Some(e) = slot.entry.filter(|e| e.date & DATE_KIND == DATE_MONTH) else {
            continue;
        };
        if slot.words == 0 || slot.used {
            continue;
        }
        let month = e.date & 0xFF;
        let after = i + slot.words as usize;
        let day = day_number(p, after)
            .or_else(|| i.checked_sub(1).and_then(|b| day_number(p, b)))
            .or_else(|| {
                let of = i.checked_sub(1)?;
                let of_word = &p.toks.lower[span(p.toks.tokens[of].low)];
                if matches!(of_word, "of" | "van") {
                    day_number(p, of.checked_sub(1)?)
                } else {
                    None
                }
            });
        p.slots[i].used = true;
        match day {
            Some(d) => p.dates.push(DATE_MONTH_DAY | month << 8 | d),
            None if !e.date_needs_context || has_date_context(p, i) => {
                p.dates.push(DATE_MONTH | month)
            }
            None => p.slots[i].used = false,
        }
    }
}

/// The day of the month at token `i`, if it is one (consumed).
fn day_number(p: &mut Profile<'_>, i: usize) -> Option<u32> {
    let tok = p.toks.tokens.get(i)?;
    if tok.kind != Kind::Number || p.slots[i].used {
        return None;
    }
    let parsed = parse_number(&p.toks.lower[span(tok.low)]);
    let ordinal_or_bare = parsed.suffix.is_empty() || ORDINAL_SUFFIXES.contains(&parsed.suffix);
    match parsed.value {
        NumberValue::Plain {
            integer: Some(d @ 1..=31),
            digits: 1 | 2,
            ..
        } if parsed.prefix.is_none() && ordinal_or_bare => {
            p.slots[i].used = true;
            Some(d as u32)
        }
        _ => None,
    }
}

/// "May" is a month when capitalised inside a sentence or next to a number.
fn has_date_context(p: &Profile<'_>, i: usize) -> bool {
    let tokens = &p.toks.tokens;
    let shape = tokens[i].shape;
    let capitalised = shape & CAPITALISED != 0 && shape & SENTENCE_START == 0;
    let number_near = |j: Option<usize>| {
        j.and_then(|j| tokens.get(j))
            .is_some_and(|t| t.kind == Kind::Number)
    };
    capitalised
        || number_near(i.checked_sub(1))
        || number_near(Some(i + p.slots[i].words.max(1) as usize))
}

// ---------------------------------------------------------------------------
// Profiles and their comparison

/// A token's resolved roles.
#[derive(Clone, Copy, Default, Debug)]
struct Slot {
    entry: Option<Entry>,
    /// Words of the listed phrase starting here; 0: inside a phrase.
    words: u8,
    /// Consumed by a neighbour (a unit after its number, a day by its month).
    used: bool,
    /// A name ("Windows"): a version number right after it belongs to it.
    name: bool,
}

/// A token that the other question must contain.
#[derive(Clone, Copy, Debug)]
enum Needle {
    /// Case-insensitive: a span of the lower-cased buffer.
    Lower((u32, u32)),
    /// Case-sensitive flag ("-r" is not "-R"): a span of the question.
    Exact((u32, u32)),
}

/// A relation word with what stands before and after it.
#[derive(Clone, Copy, Debug)]
struct Site {
    groups: u16,
    left: [u64; LEFT_WINDOW],
    right: u64,
}

/// How far a separable verb's particle may stand from the verb.
const GAP_WORDS: usize = 8;

/// Content words looked at before a relation word: "Is Amsterdam bigger
/// than Rotterdam" needs two (the comparative sits between).
const LEFT_WINDOW: usize = 4;

struct Profile<'t> {
    text: &'t str,
    toks: Tokenized,
    slots: Vec<Slot>,
    /// (value key, unit), sorted; NO_VALUE for a unit named alone.
    quantities: Vec<(u64, u32)>,
    /// Date atoms, sorted.
    dates: Vec<u32>,
    negations: u32,
    senses: Vec<Sense>,
    /// Name spans with their alias group (0: none).
    names: Vec<((u32, u32), u16)>,
    code: Vec<Needle>,
    sites: Vec<Site>,
}

impl Profile<'_> {
    fn names_within(&self, other: &Profile<'_>) -> bool {
        self.names.iter().all(|&(name, group)| {
            (group != 0 && other.names.iter().any(|&(_, g)| g == group))
                || contains_phrase(&other.toks.lower, &self.toks.lower[span(name)])
        })
    }

    fn code_within(&self, other: &Profile<'_>) -> bool {
        self.code.iter().all(|needle| match *needle {
            Needle::Lower(n) => contains_phrase(&other.toks.lower, &self.toks.lower[span(n)]),
            Needle::Exact(n) => {
                let flag = &self.text[span(n)];
                other
                    .toks
                    .tokens
                    .iter()
                    .any(|t| t.kind == Kind::Flag && &other.text[span(t.raw)] == flag)
            }
        })
    }

    /// The key of token `i` as an argument of a relation word, or why not.
    fn argument(&self, i: usize) -> Argument {
        let tok = self.toks.tokens[i];
        let slot = self.slots[i];
        if tok.kind == Kind::Boundary {
            return Argument::End;
        }
        if slot.words == 0 {
            return Argument::Skip;
        }
        let low = &self.toks.lower[span(tok.low)];
        match tok.kind {
            Kind::Number | Kind::Flag => Argument::Key(fx_hash(low.as_bytes())),
            Kind::Operator if slot.entry.is_none() => Argument::Key(fx_hash(low.as_bytes())),
            Kind::Word if !slot.used => match slot.entry {
                Some(e) if e.unit != 0 => Argument::Key(e.unit as u64 | 1 << 40),
                Some(e)
                    if e.stop
                        || e.idiom
                        || e.negation
                        || e.relation != 0
                        || e.sense.is_some_and(|s| s.direction) =>
                {
                    Argument::Skip
                }
                _ => {
                    let end = self.toks.tokens[i + slot.words as usize - 1].low.1;
                    let phrase = &self.toks.lower[tok.low.0 as usize..end as usize];
                    Argument::Key(fx_hash(stem(phrase).as_bytes()))
                }
            },
            _ => Argument::Skip,
        }
    }
}

#[derive(Clone, Copy)]
enum Argument {
    Key(u64),
    Skip,
    End,
}

/// Plural "s" dropped, so "miles" and "mile" are one argument.
fn stem(word: &str) -> &str {
    if word.len() > 3 && word.ends_with('s') && !word.ends_with("ss") {
        &word[..word.len() - 1]
    } else {
        word
    }
}

fn relation_sites(p: &mut Profile<'_>) {
    let has_relation = p
        .slots
        .iter()
        .any(|s| s.words > 0 && s.entry.is_some_and(|e| e.relation != 0));
    if !has_relation {
        return;
    }
    let n = p.toks.tokens.len();
    let mut args: Vec<Argument> = (0..n).map(|i| p.argument(i)).collect();
    // "Windows 10", "iPhone 15": a name and its version are one argument.
    for i in 0..n {
        let next = i + p.slots[i].words.max(1) as usize;
        if !p.slots[i].name || next >= n || p.toks.tokens[next].kind != Kind::Number {
            continue;
        }
        if let (Argument::Key(name), Argument::Key(version)) = (args[i], args[next]) {
            args[i] = Argument::Key(name.rotate_left(17) ^ version);
            args[next] = Argument::Skip;
        }
    }
    let mut sites = Vec::new();
    for i in 0..n {
        let slot = p.slots[i];
        let Some(groups) = slot.entry.map(|e| e.relation).filter(|g| *g != 0) else {
            continue;
        };
        if slot.words == 0 {
            continue;
        }
        let mut left = [0u64; LEFT_WINDOW];
        let mut found = 0;
        for arg in args[..i].iter().rev() {
            match *arg {
                Argument::End => break,
                Argument::Skip => {}
                Argument::Key(k) => {
                    left[found] = k;
                    found += 1;
                    if found == LEFT_WINDOW {
                        break;
                    }
                }
            }
        }
        let mut right = 0;
        for arg in &args[i + slot.words as usize..] {
            match *arg {
                Argument::End => break,
                Argument::Skip => {}
                Argument::Key(k) => {
                    right = k;
                    break;
                }
            }
        }
        if found > 0 && right != 0 {
            sites.push(Site {
                groups,
                left,
                right,
            });
        }
    }
    p.sites = sites;
}

/// "a string to an int" vs "an int to a string": what stands before a
/// relation word in one question follows it in the other, and the other
/// question does not also hold the first order (a question that holds both
/// orders, "from A to B and from B to A", swaps nothing).
fn arguments_swapped(a: &[Site], b: &[Site]) -> bool {
    one_way_swap(a, b) || one_way_swap(b, a)
}

fn one_way_swap(a: &[Site], b: &[Site]) -> bool {
    a.iter().any(|site| {
        site.left.iter().filter(|&&k| k != 0).any(|&before| {
            let after = site.right;
            before != after
                && holds_order(b, after, before, site.groups)
                && !holds_order(b, before, after, site.groups)
        })
    })
}

/// Whether some relation word of `groups` has `before` among its left
/// arguments and `after` as its right one.
fn holds_order(sites: &[Site], before: u64, after: u64, groups: u16) -> bool {
    sites
        .iter()
        .any(|s| s.groups & groups != 0 && s.right == after && s.left.contains(&before))
}

/// Whether `needle` occurs in `hay` as whole tokens (both are lower-cased
/// buffers with tokens separated by single spaces).
fn contains_phrase(hay: &str, needle: &str) -> bool {
    if needle.is_empty() {
        return true;
    }
    let (hay_b, len) = (hay.as_bytes(), needle.len());
    memchr::memmem::find_iter(hay_b, needle.as_bytes()).any(|at| {
        (at == 0 || hay_b[at - 1] == b' ') && (at + len == hay_b.len() || hay_b[at + len] == b' ')
    })
}

// ---------------------------------------------------------------------------
// Hashing

/// Small, fast, non-cryptographic hash for short keys (the word table is
/// built from shipped lists, not from user input).
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
        }
        for &byte in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ byte as u64).wrapping_mul(FX_SEED);
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.0 = (self.0.rotate_left(5) ^ byte as u64).wrapping_mul(FX_SEED);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

fn fx_hash(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(bytes);
    // Never 0, which marks "no argument" in a site.
    h.finish() | 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn verifier() -> &'static Verifier {
        static V: OnceLock<Verifier> = OnceLock::new();
        V.get_or_init(Verifier::new)
    }

    /// Checks both directions and returns the result of the first.
    fn check(a: &str, b: &str) -> Result<(), Rejection> {
        let there = verifier().check(a, b);
        let back = verifier().check(b, a);
        assert_eq!(there.is_ok(), back.is_ok(), "asymmetric: {a:?} / {b:?}");
        there
    }

    fn refused(class: Rejection, pairs: &[(&str, &str)]) {
        for (a, b) in pairs {
            assert_eq!(check(a, b), Err(class), "{a:?} / {b:?}");
        }
    }

    fn accepted(pairs: &[(&str, &str)]) {
        for (a, b) in pairs {
            assert_eq!(check(a, b), Ok(()), "{a:?} / {b:?}");
        }
    }

    fn lowered(text: &str) -> Vec<String> {
        let t = tokenize(text);
        t.tokens
            .iter()
            .map(|tok| t.lower[span(tok.low)].to_string())
            .collect()
    }

    fn number_value(text: &str) -> NumberValue {
        parse_number(text).value
    }

    /// What a number is compared by: its value, not how it was written.
    fn number_key_of(text: &str) -> u64 {
        match parse_number(text).value {
            NumberValue::Plain { key, .. } | NumberValue::Exact(key) => key,
            other => panic!("{text:?} is {other:?}"),
        }
    }

    #[test]
    fn labels_are_the_metric_names_in_check_order() {
        let labels: Vec<&str> = Rejection::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            labels,
            [
                "number",
                "date",
                "negation",
                "direction",
                "name",
                "code",
                "antonym",
                "argument_order"
            ]
        );
        assert_eq!(Rejection::ArgumentOrder.to_string(), "argument_order");
    }

    #[test]
    fn verifier_is_shareable_across_threads() {
        fn shareable<T: Send + Sync>(_: &T) {}
        shareable(verifier());
        let handles: Vec<_> = (0..2)
            .map(|_| {
                std::thread::spawn(|| {
                    verifier().check("convert 5 km to miles", "convert 5 miles to km")
                })
            })
            .collect();
        for h in handles {
            assert_eq!(h.join().ok(), Some(Err(Rejection::Number)));
        }
    }

    #[test]
    fn shipped_lists_give_words_their_roles() {
        let v = verifier();
        let role = |w: &str| v.words.get(w).copied().unwrap_or_default();
        assert!(role("niet").negation && role("without").negation);
        assert!(role("the").stop && role("welke").stop);
        assert_ne!(role("kilometres").unit, 0);
        assert_eq!(role("kilometres").unit, role("km").unit);
        assert_eq!(role("maart").date, role("march").date);
        assert!(role("naar").relation & role("to").relation != 0);
        assert_eq!(role("twintig").number, Some(20));
        assert!(role("amsterdam").name);
        assert_eq!(role("mac").name_group, role("macos").name_group);
        let (enable, disable) = (role("inschakelen").sense, role("disable").sense);
        assert!(enable
            .zip(disable)
            .is_some_and(|(e, d)| e.scale == d.scale && e.alternative != d.alternative));
        assert!(
            role("prior to").sense.is_some(),
            "phrases are keyed by their words"
        );
        assert_eq!(role("prior").phrase_words, 2);
        assert!(
            role("bigger than").relation != 0,
            "a phrase keeps its relation word"
        );
        assert!(v.clause_final.get("on").is_some_and(|e| e.sense.is_some()));
    }

    #[test]
    fn tokens_keep_words_code_and_numbers_whole() {
        assert_eq!(
            lowered("Don't use os.path.join() here!"),
            ["don't", "use", "os.path.join()", "here", "!"]
        );
        assert_eq!(lowered("France's capital"), ["france", "capital"]);
        assert_eq!(
            lowered("git reset --soft HEAD"),
            ["git", "reset", "--soft", "head"]
        );
        assert_eq!(
            lowered("if x >= 10 && y != 2"),
            ["if", "x", ">=", "10", "&&", "y", "!=", "2"]
        );
        assert_eq!(
            lowered("walk 5km at 20°C for 2,5 uur"),
            ["walk", "5km", "at", "20°c", "for", "2,5", "uur"]
        );
        assert_eq!(lowered("e.g. this"), ["e", ".", "g", ".", "this"]);
        assert_eq!(
            lowered("Wi-Fi in BELGIË, de IJssel en de ĳs"),
            ["wi", "fi", "in", "belgië", ",", "de", "ijssel", "en", "de", "ijs"]
        );
        assert_eq!(
            lowered("read /etc/hosts and ~/.bashrc"),
            ["read", "/etc/hosts", "and", "~/.bashrc"]
        );
        assert_eq!(
            lowered("zzp'er of 's avonds"),
            ["zzp'er", "of", "s", "avonds"]
        );
    }

    #[test]
    fn tokens_carry_their_shape() {
        let t = tokenize("What does `getItem` do in JavaScript? Ask NASA.");
        let shape = |word: &str| {
            t.tokens
                .iter()
                .find(|tok| &t.lower[span(tok.low)] == word)
                .map(|tok| tok.shape)
                .unwrap_or_default()
        };
        assert_ne!(shape("what") & SENTENCE_START, 0);
        assert_ne!(shape("getitem") & IN_BACKTICKS, 0);
        assert_eq!(
            shape("getitem") & (INNER_CAPS | LOWER_FIRST),
            INNER_CAPS | LOWER_FIRST
        );
        assert_ne!(shape("javascript") & CAPITALISED, 0);
        assert_ne!(shape("javascript") & CLAUSE_FINAL, 0);
        assert_ne!(shape("ask") & SENTENCE_START, 0);
        assert_ne!(shape("nasa") & ALL_CAPS, 0);
        let quoted = tokenize("search for 'foo bar' and \u{201c}baz\u{201d}, not auto's");
        assert_eq!(quoted.quotes, [(2, 4), (5, 6)]);
    }

    #[test]
    fn decimal_comma_and_point_are_the_same_number() {
        let same = |a: &str, b: &str| number_key_of(a) == number_key_of(b);
        assert!(same("2,5", "2.5"));
        assert!(same("2,50", "2.5"));
        assert!(same("1,000", "1000"));
        assert!(same("1.000", "1000"));
        assert!(same("1.000,5", "1,000.50"));
        assert!(same("1.000.000", "1,000,000"));
        assert!(!same("3.12", "3.11"));
        assert!(!same("0.500", "500"));
        assert!(!same("-5", "5"));
        assert!(matches!(number_value("3.12.1"), NumberValue::Exact(_)));
        assert_ne!(number_value("3.12.1"), number_value("3.12.2"));
        assert_eq!(number_value("2024-03-01"), NumberValue::IsoDate(2024, 3, 1));
        assert_eq!(number_value("10:30"), NumberValue::Time(630));
        let parsed = parse_number("€12,50");
        assert_eq!((parsed.prefix, parsed.suffix), (Some('€'), ""));
        assert_eq!(parse_number("5km").suffix, "km");
    }

    #[test]
    fn numbers_must_agree_with_their_units() {
        refused(
            Rejection::Number,
            &[
                ("convert 5 km to miles", "convert 5 miles to km"),
                ("How long is a 10 km run?", "How long is a 12 km run?"),
                (
                    "How many miles is a marathon?",
                    "How many km is a marathon?",
                ),
                ("Is 1 liter enough?", "Is 1 gallon enough?"),
                (
                    "Hoeveel is 2,5 kilo in gram?",
                    "Hoeveel is 3,5 kilo in gram?",
                ),
                (
                    "Wat kost parkeren voor 2 uur?",
                    "Wat kost parkeren voor 2 dagen?",
                ),
                ("Install Python 3.12", "Install Python 3.11"),
            ],
        );
        accepted(&[
            ("convert 5 km to miles", "how many miles is 5 kilometres"),
            ("How long is a 5km run?", "How long does a 5 km run take?"),
            ("Is 2,5 liter genoeg?", "Is 2.5 litre genoeg?"),
            ("Recipe for two cups of rice", "Recipe for 2 cups of rice"),
            ("Is 1,000 euros a lot?", "Is €1000 a lot?"),
            (
                "What does 20°C feel like?",
                "What does 20 degrees celsius feel like?",
            ),
        ]);
    }

    #[test]
    fn dates_must_agree() {
        refused(
            Rejection::Date,
            &[
                (
                    "Is the shop open on Saturday?",
                    "Is the shop open on Sunday?",
                ),
                (
                    "Is the shop open in the weekend?",
                    "Is the shop open on Saturday?",
                ),
                (
                    "Events in Amsterdam in March",
                    "Events in Amsterdam on March 3",
                ),
                ("Tax rules for 2023", "Tax rules for 2024"),
                ("Is de winkel open op 1 mei?", "Is de winkel open op 5 mei?"),
                ("Wat is het weer morgen?", "Wat is het weer vandaag?"),
            ],
        );
        accepted(&[
            (
                "Is the shop open on 2024-03-01?",
                "Is the shop open on 1 March 2024?",
            ),
            (
                "Is the shop open on March 1st, 2024?",
                "Is the shop open on 1 March 2024?",
            ),
            (
                "Is de winkel open op 1 maart?",
                "Is de winkel op maart 1 open?",
            ),
            (
                "Is the shop open on Saturdays?",
                "Is the shop open on Saturday?",
            ),
            ("May I bring my dog?", "Can I bring my dog?"),
        ]);
        refused(
            Rejection::Date,
            &[("Is it open in May?", "Is it open in June?")],
        );
    }

    #[test]
    fn negations_must_agree() {
        refused(
            Rejection::Negation,
            &[
                (
                    "SELECT rows WHERE x IS NULL",
                    "SELECT rows WHERE x IS NOT NULL",
                ),
                ("Why does my code work?", "Why doesn't my code work?"),
                (
                    "Can I travel with an ID card?",
                    "Can I travel without an ID card?",
                ),
                (
                    "How do I find non-empty files?",
                    "How do I find empty files?",
                ),
                ("Heb ik een visum nodig?", "Heb ik geen visum nodig?"),
                ("Mag ik hier parkeren?", "Mag ik hier niet parkeren?"),
            ],
        );
        accepted(&[
            (
                "Why doesn't my code compile?",
                "Why does my code not compile?",
            ),
            (
                "Coffee without sugar: healthy?",
                "Is coffee with no sugar healthy?",
            ),
        ]);
    }

    #[test]
    fn direction_words_must_agree() {
        refused(
            Rejection::Direction,
            &[
                (
                    "Can I return it within 30 days?",
                    "Can I return it after 30 days?",
                ),
                ("How do I sort ascending?", "How do I sort descending?"),
                (
                    "How do I sort a list?",
                    "How do I sort a list in descending order?",
                ),
                (
                    "How do I round up in Excel?",
                    "How do I round down in Excel?",
                ),
                (
                    "Which plans allow more than 10 users?",
                    "Which plans allow at most 10 users?",
                ),
                (
                    "Kan ik binnen 14 dagen retourneren?",
                    "Kan ik na 14 dagen retourneren?",
                ),
                ("Hoe sorteer ik oplopend?", "Hoe sorteer ik aflopend?"),
            ],
        );
        // Weak words count only against their own scale.
        accepted(&[
            ("Tell me more about Python", "Explain Python"),
            ("How do I set up SSH?", "How do I configure SSH?"),
            (
                "Which plans allow more than 10 users?",
                "Which plans allow over 10 users?",
            ),
        ]);
    }

    #[test]
    fn names_must_appear_in_both() {
        refused(
            Rejection::Name,
            &[
                (
                    "What is the capital of Australia?",
                    "What is the capital of Austria?",
                ),
                ("reverse a list in python", "reverse a list in java"),
                ("Paris: best museums", "Best museums in London"),
                (
                    "Hoe laat vertrekt de trein naar Zwolle?",
                    "Hoe laat vertrekt de trein naar Amersfoort?",
                ),
                (
                    "How do I file taxes in the US?",
                    "How do I file taxes in the UK?",
                ),
            ],
        );
        accepted(&[
            (
                "What is the capital of France?",
                "Tell me the capital city of France",
            ),
            (
                "How do I reverse a list in Python?",
                "Python: how to reverse a list?",
            ),
            ("What time is it in Tokyo?", "Current time in Tokyo"),
            (
                "How To Reverse A List In Python",
                "How do I reverse a list in Python?",
            ),
            ("HOW DO I RESET MY ROUTER", "How can I reset my router?"),
            (
                "How do I take a screenshot on a Mac?",
                "Screenshot shortcut on macOS",
            ),
        ]);
    }

    #[test]
    fn code_tokens_must_appear_in_both() {
        refused(
            Rejection::Code,
            &[
                (
                    "What does git reset --soft do?",
                    "What does git reset --hard do?",
                ),
                ("What does ls -r do?", "What does ls -R do?"),
                (
                    "Difference between == and ===",
                    "Difference between == and !=",
                ),
                ("How do I use os.path.join?", "How do I use os.path.split?"),
                (
                    "Search for 'foo bar' with grep",
                    "Search for 'foo baz' with grep",
                ),
                ("Waarom faalt `x >= 10`?", "Waarom faalt `x <= 10`?"),
                ("Use UNION ALL in SQL", "Use UNION in SQL"),
            ],
        );
        accepted(&[
            (
                "What does `git reset --soft` do?",
                "what does git reset --soft do",
            ),
            (
                "Why does getItem return null?",
                "getItem returns null, why?",
            ),
        ]);
    }

    #[test]
    fn antonyms_refuse_only_when_both_questions_use_the_pair() {
        refused(
            Rejection::Antonym,
            &[
                ("How do I enable 2FA?", "How do I disable 2FA?"),
                (
                    "Should I keep old receipts?",
                    "Should I discard old receipts?",
                ),
                (
                    "How do I turn the lights on?",
                    "How do I turn the lights off?",
                ),
                ("Hoe schakel ik de wifi in?", "Hoe schakel ik de wifi uit?"),
                ("Hoe zet ik de updates aan?", "Hoe zet ik de updates uit?"),
                ("Hoe log ik in bij de bank?", "Hoe log ik uit bij de bank?"),
            ],
        );
        accepted(&[
            ("How do I enable dark mode?", "How do I get dark mode?"),
            ("How do I delete a branch?", "How do I remove a branch?"),
            ("How do I free up disk space?", "How do I clear disk space?"),
            // One side may use both words of a pair where the other names one.
            (
                "Should I keep or discard old receipts?",
                "Should I keep old receipts?",
            ),
        ]);
    }

    #[test]
    fn dutch_separable_verbs_are_read_across_their_object() {
        refused(
            Rejection::Antonym,
            &[
                (
                    "Hoe schakel ik de wifi in op mijn laptop?",
                    "Hoe schakel ik de wifi uit op mijn laptop?",
                ),
                (
                    "Hoe zet ik de meldingen van WhatsApp aan?",
                    "Hoe zet ik de meldingen van WhatsApp uit?",
                ),
                (
                    "Hoe maak ik een account aan?",
                    "Hoe verwijder ik een account?",
                ),
            ],
        );
        // "voer ... uit" (run) and "vraag ... aan" (apply for) are no on/off.
        accepted(&[
            (
                "Hoe voer ik een macro uit in Excel?",
                "Hoe start ik een macro in Excel?",
            ),
            (
                "Hoe vraag ik een paspoort aan?",
                "Een paspoort aanvragen, hoe werkt dat?",
            ),
        ]);
    }

    #[test]
    fn swapped_arguments_of_a_relation_word_are_refused() {
        refused(
            Rejection::ArgumentOrder,
            &[
                ("convert a string to an int", "convert an int to a string"),
                ("Is 7 greater than 3?", "Is 3 greater than 7?"),
                (
                    "Is Amsterdam bigger than Rotterdam?",
                    "Is Rotterdam bigger than Amsterdam?",
                ),
                ("divide 10 by 2", "divide 2 by 10"),
                (
                    "sorteer van klein naar groot",
                    "sorteer van groot naar klein",
                ),
                (
                    "Kan ik van Windows 10 naar Windows 11?",
                    "Kan ik van Windows 11 naar Windows 10?",
                ),
            ],
        );
        accepted(&[
            (
                "Send files from my phone to my laptop",
                "Send files to my laptop from my phone",
            ),
            (
                "Can I take my dog to Paris by train?",
                "Can I take the train to Paris with my dog?",
            ),
            (
                "Convert a string to an int in Python",
                "In Python, convert a string to an int",
            ),
            (
                "Python vs Java for beginners",
                "Java vs Python for beginners",
            ),
        ]);
    }

    #[test]
    fn the_same_question_passes_whatever_its_spacing() {
        accepted(&[("  How do I  sort a list?", "How do I sort a list ?")]);
    }

    proptest! {
        /// Arbitrary text, including odd Unicode and stray quotes, never
        /// panics, and the verdict does not depend on which side asked.
        #[test]
        fn any_text_is_checked_symmetrically(a in "\\PC{0,80}", b in "\\PC{0,80}") {
            let v = verifier();
            prop_assert_eq!(v.check(&a, &b).is_ok(), v.check(&b, &a).is_ok());
        }

        /// Questions built from meaningful words: a question always agrees
        /// with itself respaced, and the verdict is symmetric.
        #[test]
        fn a_question_agrees_with_itself(words in proptest::collection::vec(proptest::sample::select(VOCABULARY), 1..14),
                                         others in proptest::collection::vec(proptest::sample::select(VOCABULARY), 1..14)) {
            let v = verifier();
            let a = words.join(" ");
            let spaced = format!(" {} ", words.join("  "));
            prop_assert_eq!(v.check(&a, &spaced), Ok(()));
            let b = others.join(" ");
            prop_assert_eq!(v.check(&a, &b).is_ok(), v.check(&b, &a).is_ok());
        }
    }

    const VOCABULARY: &[&str] = &[
        "How",
        "do",
        "I",
        "convert",
        "5",
        "km",
        "to",
        "miles",
        "2,5",
        "kilo",
        "naar",
        "van",
        "Python",
        "Java",
        "not",
        "geen",
        "before",
        "after",
        "ascending",
        "enable",
        "disable",
        "on",
        "off",
        "`x`",
        "--soft",
        "==",
        "Monday",
        "1",
        "March",
        "2024",
        "May",
        "than",
        "bigger",
        "string",
        "int",
        "'quoted",
        "text'",
        "?",
        ",",
        "zet",
        "aan",
        "uit",
        "in",
        "Wi-Fi",
        "iPhone",
        "15",
    ];
}
