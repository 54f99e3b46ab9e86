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
//! class is compared on small vectors. `tokens` splits and reads numbers,
//! `lists` loads the word lists; this file compares.

mod lists;
mod tokens;

use lists::{fx_hash, Entry, FxMap, Lists, Sense};
use std::fmt;
use tokens::{
    number_key, parse_number, span, tokenize, writing_style, Kind, NumberValue, Tokenized,
    ALL_CAPS, CAPITALISED, CLAUSE_FINAL, CODE_LIKE, HYPHEN_PART, INNER_CAPS, IN_BACKTICKS,
    LOWER_FIRST, NO_VALUE, ORDINAL_SUFFIXES, SENTENCE_START, UNIT_ORDINAL, UNIT_TIME, UNIT_UNKNOWN,
};

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
        // Regressions next to this file, not in a top-level folder.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::SourceParallel("proptest-regressions"),
            )),
            ..ProptestConfig::default()
        })]

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
