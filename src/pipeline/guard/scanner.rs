//! One compiled scanner per policy: a Hyperscan block database holding the
//! policy's entity patterns (SOM_LEFTMOST, so every match has its exact
//! start), the prompt-injection set and the deny patterns; and a streaming
//! database of the deny patterns for answers that arrive in pieces.
//! Compiled once at load, shared read-only by every worker; the scratch
//! space is per worker (`GuardScratch`).

use super::entities::{self, OpenRule, Validator};
use super::safety;
use hyperscan::prelude::*;
use hyperscan::{CompileFlags, Scratch};
use std::ops::Range;

/// The widest match a stream waits for when a pattern's width is unbounded.
pub const UNBOUNDED_WIDTH: usize = 1024;

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
}

pub struct Scanner {
    db: BlockDatabase,
    deny_stream: Option<StreamingDatabase>,
    pub meta: Vec<PatternMeta>,
    pub entities: Vec<EntityMeta>,
    /// Widest entity match: the left context a stream keeps.
    pub max_width: usize,
}

/// The entity and safety inputs of one scanner.
pub struct ScannerSpec<'a> {
    pub entities: &'a [String],
    pub custom: &'a [(String, String)],
    pub injection: bool,
    pub deny: &'a [String],
}

fn width_of(p: &Pattern) -> Result<usize, String> {
    let info = p.info().map_err(|e| e.to_string())?;
    let w = info.max_width();
    Ok(if w == 0 || w >= u32::MAX as usize {
        UNBOUNDED_WIDTH
    } else {
        w.min(1 << 20)
    })
}

impl Scanner {
    pub fn compile(spec: &ScannerSpec<'_>) -> Result<Scanner, String> {
        let mut patterns = Vec::new();
        let mut meta = Vec::new();
        let mut entities = Vec::new();
        for name in spec.entities {
            let entity = entities.len() as u16;
            if let Some(b) = entities::builtin(name) {
                entities.push(EntityMeta {
                    name: b.name.into(),
                    label: b.label.into(),
                });
                for bp in b.patterns {
                    let mut flags = CompileFlags::SOM_LEFTMOST;
                    if bp.caseless {
                        flags |= CompileFlags::CASELESS;
                    }
                    let p = Pattern::with_flags(bp.expression, flags)
                        .map_err(|e| format!("built-in {name} pattern: {e}"))?;
                    let width = match bp.max_len {
                        0 => width_of(&p).map_err(|e| format!("built-in {name} pattern: {e}"))?,
                        n => n,
                    };
                    meta.push(PatternMeta {
                        kind: Kind::Entity(entity),
                        validate: Some(bp.validate),
                        open: bp.open,
                        width,
                    });
                    patterns.push(p);
                }
            } else if let Some((_, expr)) = spec.custom.iter().find(|(n, _)| n == name) {
                entities.push(EntityMeta {
                    name: name.as_str().into(),
                    label: name.to_ascii_uppercase().into(),
                });
                let p = Pattern::with_flags(expr.as_str(), CompileFlags::SOM_LEFTMOST)
                    .map_err(|e| format!("pii.custom {name:?}: {e}"))?;
                meta.push(PatternMeta {
                    kind: Kind::Entity(entity),
                    validate: None,
                    open: OpenRule::Window,
                    width: width_of(&p).map_err(|e| format!("pii.custom {name:?}: {e}"))?,
                });
                patterns.push(p);
            } else {
                return Err(format!("unknown PII entity {name:?}"));
            }
        }
        let max_width = meta.iter().map(|m| m.width).max().unwrap_or(0);
        if spec.injection {
            for (i, (_, expr)) in safety::INJECTION.iter().enumerate() {
                let p =
                    Pattern::with_flags(*expr, CompileFlags::CASELESS | CompileFlags::SINGLEMATCH)
                        .map_err(|e| format!("injection pattern {i}: {e}"))?;
                meta.push(PatternMeta {
                    kind: Kind::Injection(i as u8),
                    validate: None,
                    open: OpenRule::Window,
                    width: 0,
                });
                patterns.push(p);
            }
        }
        let mut deny_patterns = Vec::new();
        for (i, expr) in spec.deny.iter().enumerate() {
            let p = Pattern::with_flags(expr.as_str(), CompileFlags::SINGLEMATCH)
                .map_err(|e| format!("safety.deny_patterns[{i}] {expr:?}: {e}"))?;
            meta.push(PatternMeta {
                kind: Kind::Deny(i as u16),
                validate: None,
                open: OpenRule::Window,
                width: 0,
            });
            deny_patterns.push(p.clone());
            patterns.push(p);
        }
        if patterns.is_empty() {
            return Err("nothing to scan for".into());
        }
        for (i, p) in patterns.iter_mut().enumerate() {
            p.id = Some(i);
        }
        let db: BlockDatabase = Patterns(patterns)
            .build()
            .map_err(|e| format!("compiling the scanner: {e}"))?;
        let deny_stream = if deny_patterns.is_empty() {
            None
        } else {
            for (i, p) in deny_patterns.iter_mut().enumerate() {
                p.id = Some(i);
            }
            Some(
                Patterns(deny_patterns)
                    .build::<hyperscan::Streaming>()
                    .map_err(|e| format!("compiling the deny patterns for streams: {e}"))?,
            )
        };
        Ok(Scanner {
            db,
            deny_stream,
            meta,
            entities,
            max_width,
        })
    }

    /// Makes `scratch` fit this scanner's databases.
    pub fn fit_scratch(&self, scratch: &mut Option<Scratch>) -> Result<(), String> {
        match scratch {
            Some(s) => {
                self.db.realloc_scratch(s).map_err(|e| e.to_string())?;
            }
            None => *scratch = Some(self.db.alloc_scratch().map_err(|e| e.to_string())?),
        }
        if let (Some(d), Some(s)) = (&self.deny_stream, scratch.as_mut()) {
            d.realloc_scratch(s).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    pub fn has_entities(&self) -> bool {
        !self.entities.is_empty()
    }

    pub fn deny_stream(&self) -> Option<&StreamingDatabase> {
        self.deny_stream.as_ref()
    }

    /// Scans `text` in block mode, collecting raw hits.
    pub fn scan(&self, scratch: &Scratch, text: &[u8], hits: &mut Hits) {
        hits.clear();
        if text.is_empty() {
            return;
        }
        let meta = &self.meta;
        let _ = self
            .db
            .scan(text, scratch, |id: u32, from: u64, to: u64, _| {
                match meta[id as usize].kind {
                    Kind::Entity(_) => hits.candidates.push((id, from as usize, to as usize)),
                    Kind::Injection(c) => hits.injection |= 1 << c,
                    Kind::Deny(_) => hits.deny = true,
                }
                Matching::Continue
            });
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

    /// All findings of a whole text.
    pub fn findings(
        &self,
        scratch: &Scratch,
        text: &[u8],
        hits: &mut Hits,
        out: &mut Vec<Finding>,
    ) {
        out.clear();
        self.scan(scratch, text, hits);
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
        for m in &self.meta {
            if !matches!(m.kind, Kind::Entity(_)) {
                continue;
            }
            let reach = n.saturating_sub(m.width).max(floor);
            let start = match m.open {
                OpenRule::Class(class) => trailing_run(text, reach, class),
                OpenRule::Window => reach,
                OpenRule::Bearer => {
                    let t = trailing_run(text, reach, entities::bearer_token_byte);
                    let w = trailing_run(&text[..t], reach, |c| c == b' ' || c == b'\t');
                    if w >= reach + 6 && text[w - 6..w].eq_ignore_ascii_case(b"bearer") {
                        w - 6
                    } else {
                        t
                    }
                }
                OpenRule::PrivateKey => {
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

/// Start of the run of `class` bytes that ends `text`, not before `floor`.
fn trailing_run(text: &[u8], floor: usize, class: impl Fn(u8) -> bool) -> usize {
    let mut i = text.len();
    while i > floor && class(text[i - 1]) {
        i -= 1;
    }
    i
}
