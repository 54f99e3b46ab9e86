//! The word lists' loader: parses `words/*.txt` into one table from a
//! lower-cased word or phrase to its roles. The format is described at the
//! top of `words/stop.txt` and in docs/cache.md.

use super::tokens::{span, tokenize, Kind};
use super::{Rejection, DATE_MONTH, DATE_NAMED, DATE_WEEKDAY};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A word's or phrase's roles, from the word lists.
#[derive(Clone, Copy, Default, Debug)]
pub(super) struct Entry {
    pub(super) stop: bool,
    pub(super) negation: bool,
    /// A listed idiom: its words lose their other roles.
    pub(super) idiom: bool,
    pub(super) name: bool,
    /// Names that are aliases of each other ("mac", "macos") share a group.
    pub(super) name_group: u16,
    pub(super) sql: bool,
    /// Bit set of relation groups (relation.txt line order).
    pub(super) relation: u16,
    /// Unit id (1-based, units.txt line order); 0: not a unit.
    pub(super) unit: u16,
    /// The unit counts without a number before it.
    pub(super) unit_alone: bool,
    /// Value of a number word.
    pub(super) number: Option<u64>,
    /// Date atom (`DATE_*`); 0: not a date.
    pub(super) date: u32,
    /// "may", "march": a date only with a capital or a day number.
    pub(super) date_needs_context: bool,
    pub(super) sense: Option<Sense>,
    /// Longest listed phrase (in words) starting with this word.
    pub(super) phrase_words: u8,
    /// The word has a listed meaning at the end of a clause (`clause_final`).
    pub(super) clause_final: bool,
    /// A listed phrase with a gap starts with this word ("zet ... aan").
    pub(super) gapped: bool,
}

impl Entry {
    /// A stop word and nothing else ("us", not "no" or "in").
    pub(super) fn is_only_stop(&self) -> bool {
        let without_stop = Entry {
            stop: false,
            ..*self
        };
        self.stop && !without_stop.has_meaning()
    }

    /// Has a role that makes it something other than a name or code token.
    pub(super) fn has_meaning(&self) -> bool {
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
pub(super) struct Sense {
    pub(super) scale: u16,
    pub(super) alternative: u8,
    pub(super) weak: bool,
    /// A direction word (a comparison, never an argument of a relation).
    pub(super) direction: bool,
}

/// Builds the lookup tables from the list files.
#[derive(Default)]
pub(super) struct Lists {
    pub(super) words: FxMap<Box<str>, Entry>,
    pub(super) clause_final: FxMap<Box<str>, Entry>,
    pub(super) scale_class: Vec<Rejection>,
    pub(super) relation_groups: usize,
    pub(super) name_groups: u16,
    pub(super) units: usize,
    pub(super) named_dates: Vec<String>,
}

/// The list lines that hold items: not blank, not a `#` comment.
pub(super) fn list_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

/// The comma-separated items of a line.
pub(super) fn list_items(line: &str) -> impl Iterator<Item = &str> {
    line.split(',').map(str::trim).filter(|i| !i.is_empty())
}

/// The lower-cased form of one word of a gapped phrase.
pub(super) fn single_word(item: &str, word: &str) -> String {
    let toks = tokenize(word);
    match toks.tokens.as_slice() {
        [one] if one.kind == Kind::Word => toks.lower[span(one.low)].to_string(),
        _ => panic!("gapped phrase {item:?}: {word:?} is not one word"),
    }
}

/// Splits "key = items" at the first " = ".
pub(super) fn keyed_line(line: &str) -> (&str, &str) {
    match line.split_once(" = ") {
        Some((key, items)) => (key.trim(), items),
        None => panic!("word list line without \" = \": {line}"),
    }
}

impl Lists {
    /// The entry of a list item, created if new. The item is tokenized like
    /// a question, so it matches what a question's words look like.
    pub(super) fn entry(&mut self, item: &str) -> &mut Entry {
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
    pub(super) fn phrases_keep_relations(&mut self) {
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

    pub(super) fn flag_items(&mut self, text: &str, set: impl Fn(&mut Entry)) {
        for line in list_lines(text) {
            for item in list_items(line) {
                set(self.entry(item));
            }
        }
    }

    /// Names, one by one or as "canonical = alias, alias" groups.
    pub(super) fn names(&mut self, text: &str) {
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

    pub(super) fn relations(&mut self, text: &str) {
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

    pub(super) fn units(&mut self, text: &str) {
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

    pub(super) fn number_words(&mut self, text: &str) {
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

    pub(super) fn dates(&mut self, text: &str) {
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

    pub(super) fn scales(&mut self, text: &str, class: Rejection, weak_by_default: bool) {
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

/// Small, fast, non-cryptographic hash for short keys (the word table is
/// built from shipped lists, not from user input).
#[derive(Default, Clone, Copy)]
pub(super) struct FxHasher(u64);

pub(super) const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

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

pub(super) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

pub(super) fn fx_hash(bytes: &[u8]) -> u64 {
    let mut h = FxHasher::default();
    h.write(bytes);
    // Never 0, which marks "no argument" in a site.
    h.finish() | 1
}
