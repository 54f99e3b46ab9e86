//! Scanner tests without sockets: the per-entity corpus in tests/pii_corpus
//! (true positives and near misses) and the property that a text split into
//! pieces at arbitrary points is masked exactly as the whole text is.

use proptest::prelude::*;
use sluice::pipeline::guard::scanner::{Finding, Hits, Scanner, ScannerSpec};
use sluice::pipeline::guard::stream::{apply, Mask, TextStream};
use std::path::Path;

/// Every built-in entity.
const ALL: &[&str] = sluice::config::BUILTIN_PII_ENTITIES;

fn scanner(entities: &[&str], custom: &[(String, String)]) -> (Scanner, hyperscan::Scratch) {
    let entities: Vec<String> = entities.iter().map(|s| s.to_string()).collect();
    let s = Scanner::compile(&ScannerSpec {
        entities: &entities,
        custom,
        injection: false,
        deny: &[],
    })
    .expect("compile");
    let mut scratch = None;
    s.fit_scratch(&mut scratch).unwrap();
    (s, scratch.unwrap())
}

fn findings(s: &Scanner, scratch: &hyperscan::Scratch, text: &[u8]) -> Vec<Finding> {
    let mut out = Vec::new();
    s.findings(scratch, text, &mut Hits::default(), &mut out);
    out
}

/// `[[x]]` marks the expected findings; returns the text and their ranges.
fn unmark(line: &str) -> (String, Vec<std::ops::Range<usize>>) {
    let line = line.replace("\\n", "\n");
    let mut text = String::new();
    let mut ranges = Vec::new();
    let mut rest = line.as_str();
    while let Some(i) = rest.find("[[") {
        text.push_str(&rest[..i]);
        let j = rest[i..].find("]]").expect("closing ]]") + i;
        let start = text.len();
        text.push_str(&rest[i + 2..j]);
        ranges.push(start..text.len());
        rest = &rest[j + 2..];
    }
    text.push_str(rest);
    (text, ranges)
}

#[test]
fn corpus_per_entity() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pii_corpus");
    let mut failures = Vec::new();
    let mut checked = 0;
    for entity in ALL {
        let body = std::fs::read_to_string(dir.join(format!("{entity}.txt"))).expect("corpus file");
        let (s, scratch) = scanner(&[entity], &[]);
        for line in body.lines() {
            let (expect_hit, rest) = match line.split_at_checked(2) {
                Some(("+ ", r)) => (true, r),
                Some(("- ", r)) => (false, r),
                _ => continue,
            };
            let (text, want) = unmark(rest);
            let got: Vec<_> = findings(&s, &scratch, text.as_bytes())
                .into_iter()
                .map(|f| f.range)
                .collect();
            checked += 1;
            if expect_hit && got != want || !expect_hit && !got.is_empty() {
                failures.push(format!("{entity}: {text:?}: want {want:?}, got {got:?}"));
            }
        }
    }
    assert!(checked > 50, "corpus too small: {checked}");
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn custom_entities_and_masks() {
    let custom = vec![("employee_id".to_string(), "EMP-[0-9]{6}".to_string())];
    let (s, scratch) = scanner(&["email", "employee_id"], &custom);
    let text = b"EMP-123456 wrote to a@b.example.org";
    let f = findings(&s, &scratch, text);
    let mut out = Vec::new();
    apply(&s, text, &f, &mut Mask, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "[EMPLOYEE_ID] wrote to [EMAIL]"
    );
}

fn mask_whole(s: &Scanner, scratch: &hyperscan::Scratch, text: &[u8]) -> Vec<u8> {
    let f = findings(s, scratch, text);
    let mut out = Vec::new();
    apply(s, text, &f, &mut Mask, &mut out);
    out
}

fn mask_split(s: &Scanner, scratch: &hyperscan::Scratch, text: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut stream = TextStream::default();
    let mut out = Vec::new();
    let mut at = 0;
    for &c in cuts {
        let c = c.min(text.len()).max(at);
        stream.push(s, scratch, &text[at..c], &mut Mask, &mut out);
        at = c;
    }
    stream.push(s, scratch, &text[at..], &mut Mask, &mut out);
    stream.finish(s, scratch, &mut Mask, &mut out);
    out
}

#[path = "common/pii_pieces.rs"]
mod pii_pieces;
use pii_pieces::PIECES;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn split_anywhere_masks_like_whole(parts in prop::collection::vec(0..PIECES.len(), 1..24),
                                       cuts in prop::collection::vec(0usize..600, 0..12)) {
        let custom = vec![("employee_id".to_string(), "EMP-[0-9]{6}".to_string())];
        let mut all: Vec<&str> = ALL.to_vec();
        all.push("employee_id");
        let (s, scratch) = scanner(&all, &custom);
        let text: String = parts.iter().map(|&i| PIECES[i]).collect();
        let mut cuts = cuts;
        cuts.sort_unstable();
        let whole = mask_whole(&s, &scratch, text.as_bytes());
        let split = mask_split(&s, &scratch, text.as_bytes(), &cuts);
        prop_assert_eq!(String::from_utf8_lossy(&split), String::from_utf8_lossy(&whole));
        // Every byte split: the worst case for hold-back.
        let every: Vec<usize> = (1..text.len()).collect();
        let split = mask_split(&s, &scratch, text.as_bytes(), &every);
        prop_assert_eq!(String::from_utf8_lossy(&split), String::from_utf8_lossy(&whole));
    }
}
