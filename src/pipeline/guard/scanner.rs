//! One compiled scanner per policy: the policy's entity patterns
//! (SOM_LEFTMOST, so every match has its exact start), the prompt-injection
//! set and the deny patterns, spread over Hyperscan block databases by the
//! kind of search each pattern allows; and a streaming database of the deny
//! patterns for answers that arrive in pieces. Compiled once at load,
//! shared read-only by every worker; the scratch space is per worker
//! (`GuardWorker`) and fits every database.
//!
//! The layout (measured in docs/pii.md, "Database layout"): in one
//! database, patterns without a literal (digit classes) and patterns with
//! one (`@`, `:`, `sk-`) cost far more together than apart, ~0.4 GiB/s on
//! prose against 3-40 GiB/s each. So:
//! - `anchored`: built-in patterns with a literal anchor (email, IPv6,
//!   secrets), scanned over the whole text;
//! - `numeric`: built-in digit patterns (phone, IBAN, card, BSN, SSN,
//!   IPv4), scanned only over the windows `digits.rs` finds;
//! - `user`: custom entities and deny patterns, whose shape is unknown,
//!   apart so that a slow one cannot slow the built-ins;
//! - `injection`: the prompt-injection set: the chat-template delimiters
//!   over the whole text, the word patterns only when their gate (a
//!   database of the patterns' anchor words, `safety.rs`) matches.
//!
//! Every database reports a pattern under its index in `meta`, and each
//! split only skips text where a pattern cannot match, so a scan reports
//! exactly the matches one database of all patterns would
//! (tests/pii_layout.rs compares the two).

use super::digits::DigitRuns;
use super::entities::{self, OpenRule, Placement, Validator};
use super::safety;
use hyperscan::prelude::*;
use hyperscan::{CompileFlags, Scratch};
use std::ops::Range;

/// The widest match a stream waits for when a pattern's width is unbounded.
pub const UNBOUNDED_WIDTH: usize = 1024;

/// Why a scanner could not be compiled.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("built-in {entity} pattern: {source}")]
    Builtin {
        entity: String,
        source: hyperscan::Error,
    },
    #[error("built-in {0} pattern: a numeric pattern needs a byte class")]
    NumericWithoutClass(String),
    #[error("pii.custom {name:?}: {source}")]
    Custom {
        name: String,
        source: hyperscan::Error,
    },
    #[error("unknown PII entity {0:?}")]
    UnknownEntity(String),
    #[error("injection pattern {index}: {source}")]
    Injection {
        index: usize,
        source: hyperscan::Error,
    },
    #[error("safety.deny_patterns[{index}] {expression:?}: {source}")]
    Deny {
        index: usize,
        expression: String,
        source: hyperscan::Error,
    },
    #[error("nothing to scan for")]
    Empty,
    #[error("compiling the {what}: {source}")]
    Database {
        what: &'static str,
        source: hyperscan::Error,
    },
    #[error("allocating Hyperscan scratch: {0}")]
    Scratch(hyperscan::Error),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Index into `Scanner::entities`.
    Entity(u16),
    /// Index into `safety::INJECTION`.
    Injection(u8),
    /// Index into the configured deny patterns.
    Deny(u16),
}

pub struct PatternMeta {
    pub kind: Kind,
    pub validate: Option<Validator>,
    pub open: OpenRule,
    /// Longest match the pattern can produce (bytes).
    pub width: usize,
}

pub struct EntityMeta {
    pub name: Box<str>,
    /// `EMAIL` for `[EMAIL]` and `<EMAIL_1>`.
    pub label: Box<str>,
}

/// A confirmed finding: entity index and byte range in the scanned text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub entity: u16,
    pub range: Range<usize>,
}

/// What one block scan saw.
#[derive(Default)]
pub struct Hits {
    /// (pattern id, start, end) of entity candidates, unvalidated.
    pub candidates: Vec<(u32, usize, usize)>,
    /// Bit per injection category.
    pub injection: u8,
    pub deny: bool,
}

impl Hits {
    pub fn clear(&mut self) {
        self.candidates.clear();
        self.injection = 0;
        self.deny = false;
    }

    fn record(&mut self, meta: &[PatternMeta], id: u32, from: usize, to: usize) {
        match meta[id as usize].kind {
            Kind::Entity(_) => self.candidates.push((id, from, to)),
            Kind::Injection(c) => self.injection |= 1 << c,
            Kind::Deny(_) => self.deny = true,
        }
    }
}

/// What a scan looks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scope {
    pub entities: bool,
    pub deny: bool,
    pub injection: bool,
}

impl Scope {
    /// Requests: everything.
    pub const ALL: Scope = Scope {
        entities: true,
        deny: true,
        injection: true,
    };
    /// Whole answers: entities and deny patterns.
    pub const ANSWER: Scope = Scope {
        entities: true,
        deny: true,
        injection: false,
    };
    /// Stream hold-back: entities only (deny patterns run on their own
    /// Hyperscan stream).
    pub const ENTITIES: Scope = Scope {
        entities: true,
        deny: false,
        injection: false,
    };
}

/// The numeric patterns and where they can match.
struct Numeric {
    db: BlockDatabase,
    runs: DigitRuns,
}

/// The prompt-injection set: the patterns without anchors, and the
/// others behind their gate of anchor words.
struct Injection {
    direct: Option<BlockDatabase>,
    gated: Option<Gated>,
}

/// Anchor words in databases of at most `GATE_WORDS` each, and the
/// patterns they gate.
struct Gated {
    gates: Vec<BlockDatabase>,
    full: BlockDatabase,
}

/// Up to eight literals Hyperscan searches with its Teddy matcher
/// (~12 GiB/s on prose); more go to FDR, which searched the sixteen
/// anchor words at ~5.6 GiB/s alone and was slowed further, to ~2 GiB/s,
/// by other scans of the same text just before it (docs/pii.md).
const GATE_WORDS: usize = 8;

pub struct Scanner {
    anchored: Option<BlockDatabase>,
    numeric: Option<Numeric>,
    user: Option<BlockDatabase>,
    /// Whether `user` holds custom entities and deny patterns.
    user_entities: bool,
    user_deny: bool,
    injection: Option<Injection>,
    deny_stream: Option<StreamingDatabase>,
    pub meta: Vec<PatternMeta>,
    pub entities: Vec<EntityMeta>,
    /// Widest entity match: the left context a stream keeps.
    pub max_width: usize,
    /// The entity patterns' hold-back rules (`open_start`).
    holds: Vec<HoldRule>,
}

/// The entity and safety inputs of one scanner.
pub struct ScannerSpec<'a> {
    pub entities: &'a [String],
    pub custom: &'a [(String, String)],
    pub injection: bool,
    pub deny: &'a [String],
}

fn width_of(p: &Pattern) -> Result<usize, hyperscan::Error> {
    let w = p.info()?.max_width();
    Ok(if w == 0 || w >= u32::MAX as usize {
        UNBOUNDED_WIDTH
    } else {
        w.min(1 << 20)
    })
}

/// `text` as a Hyperscan expression matching it literally.
fn literal(text: &str) -> String {
    let mut e = String::with_capacity(text.len() * 2);
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() {
            e.push(b as char);
        } else {
            e.push_str(&format!("\\x{b:02x}"));
        }
    }
    e
}

fn build(
    what: &'static str,
    patterns: Vec<Pattern>,
) -> Result<Option<BlockDatabase>, CompileError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    Patterns(patterns)
        .build()
        .map(Some)
        .map_err(|source| CompileError::Database { what, source })
}

impl Scanner {
    pub fn compile(spec: &ScannerSpec<'_>) -> Result<Scanner, CompileError> {
        let mut meta = Vec::new();
        let mut entities = Vec::new();
        let mut anchored = Vec::new();
        let mut numeric = Vec::new();
        let mut numeric_classes: Vec<fn(u8) -> bool> = Vec::new();
        let mut numeric_min = usize::MAX;
        let mut user = Vec::new();
        // Each pattern's id is its index in `meta`.
        let with_id = |mut p: Pattern, id: usize| {
            p.id = Some(id);
            p
        };
        for name in spec.entities {
            let entity = entities.len() as u16;
            if let Some(b) = entities::builtin(name) {
                entities.push(EntityMeta {
                    name: b.name.into(),
                    label: b.label.into(),
                });
                let err = |source| CompileError::Builtin {
                    entity: name.clone(),
                    source,
                };
                for bp in b.patterns {
                    let mut flags = CompileFlags::SOM_LEFTMOST;
                    if bp.caseless {
                        flags |= CompileFlags::CASELESS;
                    }
                    let p = Pattern::with_flags(bp.expression, flags).map_err(err)?;
                    let width = match bp.max_len {
                        0 => width_of(&p).map_err(err)?,
                        n => n,
                    };
                    let id = meta.len();
                    meta.push(PatternMeta {
                        kind: Kind::Entity(entity),
                        validate: Some(bp.validate),
                        open: bp.open,
                        width,
                    });
                    match bp.placement {
                        Placement::Anchored => anchored.push(with_id(p, id)),
                        Placement::Numeric => {
                            let OpenRule::Class(class) = bp.open else {
                                return Err(CompileError::NumericWithoutClass(name.clone()));
                            };
                            numeric_classes.push(class);
                            numeric_min = numeric_min.min(p.info().map_err(err)?.min_width());
                            numeric.push(with_id(p, id));
                        }
                    }
                }
            } else if let Some((_, expr)) = spec.custom.iter().find(|(n, _)| n == name) {
                entities.push(EntityMeta {
                    name: name.as_str().into(),
                    label: name.to_ascii_uppercase().into(),
                });
                let err = |source| CompileError::Custom {
                    name: name.clone(),
                    source,
                };
                let p =
                    Pattern::with_flags(expr.as_str(), CompileFlags::SOM_LEFTMOST).map_err(err)?;
                let id = meta.len();
                meta.push(PatternMeta {
                    kind: Kind::Entity(entity),
                    validate: None,
                    open: OpenRule::Window,
                    width: width_of(&p).map_err(err)?,
                });
                user.push(with_id(p, id));
            } else {
                return Err(CompileError::UnknownEntity(name.clone()));
            }
        }
        let user_entities = !user.is_empty();
        let max_width = meta.iter().map(|m| m.width).max().unwrap_or(0);
        let mut direct = Vec::new();
        let mut gated = Vec::new();
        let mut anchors: Vec<&str> = Vec::new();
        if spec.injection {
            for (i, ip) in safety::INJECTION.iter().enumerate() {
                let p = Pattern::with_flags(
                    ip.expression,
                    CompileFlags::CASELESS | CompileFlags::SINGLEMATCH,
                )
                .map_err(|source| CompileError::Injection { index: i, source })?;
                let id = meta.len();
                meta.push(PatternMeta {
                    kind: Kind::Injection(ip.category),
                    validate: None,
                    open: OpenRule::Window,
                    width: 0,
                });
                if ip.anchors.is_empty() {
                    direct.push(with_id(p, id));
                } else {
                    gated.push(with_id(p, id));
                }
                for a in ip.anchors {
                    if !anchors.contains(a) {
                        anchors.push(a);
                    }
                }
            }
        }
        let mut deny_patterns = Vec::new();
        for (i, expr) in spec.deny.iter().enumerate() {
            let p = Pattern::with_flags(expr.as_str(), CompileFlags::SINGLEMATCH).map_err(
                |source| CompileError::Deny {
                    index: i,
                    expression: expr.clone(),
                    source,
                },
            )?;
            let id = meta.len();
            meta.push(PatternMeta {
                kind: Kind::Deny(i as u16),
                validate: None,
                open: OpenRule::Window,
                width: 0,
            });
            deny_patterns.push(with_id(p.clone(), i));
            user.push(with_id(p, id));
        }
        if meta.is_empty() {
            return Err(CompileError::Empty);
        }
        let numeric = build("numeric entity patterns", numeric)?.map(|db| Numeric {
            db,
            runs: DigitRuns::new(&numeric_classes, numeric_min),
        });
        let mut gates = Vec::new();
        for words in anchors.chunks(GATE_WORDS) {
            let patterns = words
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    Pattern::with_flags(
                        literal(a),
                        CompileFlags::CASELESS | CompileFlags::SINGLEMATCH,
                    )
                    .map(|p| with_id(p, i))
                    .map_err(|source| CompileError::Database {
                        what: "prompt-injection anchors",
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            gates.extend(build("prompt-injection anchors", patterns)?);
        }
        let gated =
            build("anchored prompt-injection patterns", gated)?.map(|full| Gated { gates, full });
        let direct = build("prompt-injection delimiter patterns", direct)?;
        let injection =
            (direct.is_some() || gated.is_some()).then_some(Injection { direct, gated });
        let deny_stream = if deny_patterns.is_empty() {
            None
        } else {
            Some(
                Patterns(deny_patterns)
                    .build::<hyperscan::Streaming>()
                    .map_err(|source| CompileError::Database {
                        what: "deny patterns for streams",
                        source,
                    })?,
            )
        };
        Ok(Scanner {
            anchored: build("anchored entity patterns", anchored)?,
            numeric,
            user_deny: !spec.deny.is_empty(),
            user: build("custom and deny patterns", user)?,
            user_entities,
            injection,
            deny_stream,
            holds: hold_rules(&meta),
            meta,
            entities,
            max_width,
        })
    }

    fn block_databases(&self) -> impl Iterator<Item = &BlockDatabase> {
        self.anchored
            .iter()
            .chain(self.numeric.as_ref().map(|n| &n.db))
            .chain(&self.user)
            .chain(self.injection.iter().flat_map(|i| {
                i.direct
                    .iter()
                    .chain(i.gated.iter().flat_map(|g| g.gates.iter().chain([&g.full])))
            }))
    }

    /// Makes `scratch` fit this scanner's databases.
    pub fn fit_scratch(&self, scratch: &mut Option<Scratch>) -> Result<(), CompileError> {
        let dbs = self.block_databases();
        for db in dbs {
            match scratch {
                Some(s) => {
                    db.realloc_scratch(s).map_err(CompileError::Scratch)?;
                }
                None => *scratch = Some(db.alloc_scratch().map_err(CompileError::Scratch)?),
            }
        }
        if let (Some(d), Some(s)) = (&self.deny_stream, scratch.as_mut()) {
            d.realloc_scratch(s).map_err(CompileError::Scratch)?;
        }
        Ok(())
    }

    pub fn has_entities(&self) -> bool {
        !self.entities.is_empty()
    }

    pub fn deny_stream(&self) -> Option<&StreamingDatabase> {
        self.deny_stream.as_ref()
    }

    /// Scans `text` in block mode for everything, collecting raw hits.
    pub fn scan(&self, scratch: &Scratch, text: &[u8], hits: &mut Hits) {
        self.scan_in(Scope::ALL, scratch, text, hits);
    }

    /// Scans `text` in block mode for what `scope` asks, collecting raw
    /// hits. Scan errors (none expected: the scratch fits and is not in
    /// use) leave the hits found so far.
    pub fn scan_in(&self, scope: Scope, scratch: &Scratch, text: &[u8], hits: &mut Hits) {
        hits.clear();
        if text.is_empty() {
            return;
        }
        let meta = &self.meta[..];
        let whole = |db: &BlockDatabase, hits: &mut Hits| {
            let _ = db.scan(text, scratch, |id: u32, from: u64, to: u64, _| {
                hits.record(meta, id, from as usize, to as usize);
                Matching::Continue
            });
        };
        if scope.entities {
            if let Some(db) = &self.anchored {
                whole(db, hits);
            }
            if let Some(n) = &self.numeric {
                n.runs.windows(text, |w| {
                    let base = w.start;
                    let _ =
                        n.db.scan(&text[w], scratch, |id: u32, from: u64, to: u64, _| {
                            hits.record(meta, id, base + from as usize, base + to as usize);
                            Matching::Continue
                        });
                });
            }
        }
        if let Some(db) = &self.user {
            if scope.entities && self.user_entities || scope.deny && self.user_deny {
                whole(db, hits);
                if !scope.deny {
                    hits.deny = false;
                }
                if !scope.entities {
                    hits.candidates.clear();
                }
            }
        }
        if let (true, Some(inj)) = (scope.injection, &self.injection) {
            if let Some(db) = &inj.direct {
                whole(db, hits);
            }
            if let Some(g) = &inj.gated {
                let anchored = g.gates.iter().any(|gate| {
                    let mut found = false;
                    let _ = gate.scan(text, scratch, |_, _, _, _| {
                        found = true;
                        Matching::Terminate
                    });
                    found
                });
                if anchored {
                    whole(&g.full, hits);
                }
            }
        }
    }

    /// Validates candidates and keeps the leftmost-longest ones that do not
    /// overlap, considering only candidates that start at or after `from`
    /// and before `until`; `last_end` is where the previous finding ended.
    /// Returns the end of the last finding taken (or `last_end`).
    pub fn select(
        &self,
        text: &[u8],
        hits: &Hits,
        from: usize,
        until: usize,
        mut last_end: usize,
        out: &mut Vec<Finding>,
    ) -> usize {
        let mut valid: Vec<(usize, usize, u32)> = hits
            .candidates
            .iter()
            .filter_map(|&(id, s, e)| {
                let m = &self.meta[id as usize];
                if e - s > m.width {
                    return None;
                }
                let r = match m.validate {
                    Some(v) => v(text, s..e)?,
                    None => s..e,
                };
                (r.start >= from && r.start < until && r.start < r.end)
                    .then_some((r.start, r.end, id))
            })
            .collect();
        valid.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        for (s, e, id) in valid {
            if s < last_end {
                continue;
            }
            let Kind::Entity(entity) = self.meta[id as usize].kind else {
                continue;
            };
            out.push(Finding {
                entity,
                range: s..e,
            });
            last_end = e;
        }
        last_end
    }

    /// All findings of a whole text (and its safety hits in `hits`).
    pub fn findings(
        &self,
        scratch: &Scratch,
        text: &[u8],
        hits: &mut Hits,
        out: &mut Vec<Finding>,
    ) {
        self.findings_in(Scope::ALL, scratch, text, hits, out);
    }

    /// The findings of a whole text, scanning for what `scope` asks.
    pub fn findings_in(
        &self,
        scope: Scope,
        scratch: &Scratch,
        text: &[u8],
        hits: &mut Hits,
        out: &mut Vec<Finding>,
    ) {
        out.clear();
        self.scan_in(scope, scratch, text, hits);
        if !hits.candidates.is_empty() {
            self.select(text, hits, 0, usize::MAX, 0, out);
        }
    }

    /// The earliest start of an entity match that could still be in
    /// progress at the end of `text` (a prefix of a longer text), never
    /// before `floor`.
    pub fn open_start(&self, text: &[u8], floor: usize) -> usize {
        let n = text.len();
        let mut open = n;
        for h in &self.holds {
            let reach = n.saturating_sub(h.width).max(floor);
            let start = match &h.rule {
                Hold::Class(class) => trailing_run(text, reach, |c| class[usize::from(c)]),
                Hold::Window => reach,
                Hold::Bearer => {
                    let t = trailing_run(text, reach, entities::bearer_token_byte);
                    let w = trailing_run(&text[..t], reach, |c| c == b' ' || c == b'\t');
                    if w >= reach + 6 && text[w - 6..w].eq_ignore_ascii_case(b"bearer") {
                        w - 6
                    } else {
                        t
                    }
                }
                Hold::PrivateKey => {
                    let tail = &text[reach..];
                    match memchr::memmem::find(tail, b"-----BEGIN") {
                        Some(i) => reach + i,
                        None => trailing_run(text, reach, entities::key_header_byte),
                    }
                }
            };
            open = open.min(start);
        }
        open
    }
}

/// An entity pattern's `OpenRule` with its class as a table.
enum Hold {
    Class(Box<[bool; 256]>),
    Window,
    Bearer,
    PrivateKey,
}

/// One hold-back rule and the widest match it covers.
struct HoldRule {
    rule: Hold,
    width: usize,
}

/// The hold-back rules of the entity patterns, one per distinct rule with
/// the widest width among its patterns. For a class, a window or a fixed
/// rule, the widest pattern's start is the earliest of all of them (a
/// trailing run bounded further back includes the nearer bounds), so
/// `open_start` gives the same answer as with one rule per pattern, with
/// the class tested by table instead of by a call per byte.
fn hold_rules(meta: &[PatternMeta]) -> Vec<HoldRule> {
    let mut rules: Vec<HoldRule> = Vec::new();
    for m in meta {
        if !matches!(m.kind, Kind::Entity(_)) {
            continue;
        }
        let rule = match m.open {
            OpenRule::Class(class) => {
                let mut table = Box::new([false; 256]);
                for (b, slot) in table.iter_mut().enumerate() {
                    *slot = class(b as u8);
                }
                Hold::Class(table)
            }
            OpenRule::Window => Hold::Window,
            OpenRule::Bearer => Hold::Bearer,
            OpenRule::PrivateKey => Hold::PrivateKey,
        };
        let same = rules.iter_mut().find(|r| match (&r.rule, &rule) {
            (Hold::Class(a), Hold::Class(b)) => a == b,
            (Hold::Window, Hold::Window)
            | (Hold::Bearer, Hold::Bearer)
            | (Hold::PrivateKey, Hold::PrivateKey) => true,
            _ => false,
        });
        match same {
            Some(r) => r.width = r.width.max(m.width),
            None => rules.push(HoldRule {
                rule,
                width: m.width,
            }),
        }
    }
    rules
}

/// Start of the run of `class` bytes that ends `text`, not before `floor`.
fn trailing_run(text: &[u8], floor: usize, class: impl Fn(u8) -> bool) -> usize {
    let mut i = text.len();
    while i > floor && class(text[i - 1]) {
        i -= 1;
    }
    i
}
