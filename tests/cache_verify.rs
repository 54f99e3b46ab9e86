//! The semantic cache's verifier against the labelled pair set
//! (tests/cache_pairs.jsonl, issue 11): every near-miss of a verifier class
//! is refused, in both directions; real paraphrases are mostly accepted.
//!
//! Run with `--nocapture` to see the mismatches and the acceptance rate.

use sluice::pipeline::cache::verify::{Rejection, Verifier};
use std::sync::OnceLock;

#[derive(serde::Deserialize)]
struct Pair {
    a: String,
    b: String,
    same: bool,
    class: String,
    lang: String,
}

fn pairs() -> &'static [Pair] {
    static PAIRS: OnceLock<Vec<Pair>> = OnceLock::new();
    PAIRS.get_or_init(|| {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cache_pairs.jsonl");
        let text = std::fs::read_to_string(path).expect("tests/cache_pairs.jsonl");
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(n, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("line {}: {e}", n + 1)))
            .collect()
    })
}

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(Verifier::new)
}

fn class_named(name: &str) -> Option<Rejection> {
    Rejection::ALL.into_iter().find(|r| r.as_str() == name)
}

/// Acceptance on paraphrases must stay at or above this. Measured: see
/// `paraphrases_are_mostly_accepted` output and docs/cache.md; the floor
/// leaves room for a few list changes, not for a verifier that refuses
/// whatever it does not understand.
const PARAPHRASE_ACCEPTANCE_FLOOR: f64 = 0.85;

/// Share of refused near-misses that must carry their labelled class.
const EXACT_CLASS_FLOOR: f64 = 0.9;

#[test]
fn the_pair_set_is_as_specified() {
    let pairs = pairs();
    let near_misses = pairs.iter().filter(|p| !p.same).count();
    let dutch = pairs.iter().filter(|p| p.lang == "nl").count();
    assert!(pairs.len() >= 140, "{} pairs", pairs.len());
    assert!(near_misses * 2 >= pairs.len(), "{near_misses} near-misses");
    assert!(dutch >= 40, "{dutch} Dutch pairs");
    let unrelated = pairs.iter().filter(|p| p.class == "unrelated").count();
    assert!(unrelated >= 4, "{unrelated} unrelated pairs");
    for p in pairs {
        assert!(p.lang == "en" || p.lang == "nl", "lang {:?}", p.lang);
        assert_eq!(p.same, p.class == "paraphrase", "{:?} / {:?}", p.a, p.b);
        assert!(
            p.class == "paraphrase" || p.class == "unrelated" || class_named(&p.class).is_some(),
            "unknown class {:?}",
            p.class
        );
    }
    for class in Rejection::ALL {
        for lang in ["en", "nl"] {
            let n = pairs
                .iter()
                .filter(|p| p.class == class.as_str() && p.lang == lang)
                .count();
            assert!(n >= 4, "only {n} {lang} near-misses of class {class}");
        }
    }
}

#[test]
fn every_near_miss_is_refused_in_both_directions() {
    let v = verifier();
    let mut accepted = Vec::new();
    let mut other_class = Vec::new();
    let mut total = 0;
    for p in pairs().iter().filter(|p| !p.same) {
        let Some(expected) = class_named(&p.class) else {
            continue;
        };
        for (asked, cached) in [(&p.a, &p.b), (&p.b, &p.a)] {
            total += 1;
            match v.check(asked, cached) {
                Ok(()) => accepted.push(format!("[{}] {asked:?} / {cached:?}", p.class)),
                Err(got) if got != expected => {
                    other_class.push(format!("[{} -> {}] {asked:?} / {cached:?}", p.class, got))
                }
                Err(_) => {}
            }
        }
    }
    for line in &other_class {
        println!("refused with another class: {line}");
    }
    let exact = (total - accepted.len() - other_class.len()) as f64 / total as f64;
    println!(
        "near-misses: {total} checks, {} accepted, {} refused with another class ({:.1}% exact)",
        accepted.len(),
        other_class.len(),
        exact * 100.0
    );
    assert!(
        accepted.is_empty(),
        "near-misses served:\n{}",
        accepted.join("\n")
    );
    assert!(
        exact >= EXACT_CLASS_FLOOR,
        "only {:.1}% refused with their own class",
        exact * 100.0
    );
}

#[test]
fn paraphrases_are_mostly_accepted() {
    let v = verifier();
    let mut refused = Vec::new();
    let mut checks = 0;
    for p in pairs().iter().filter(|p| p.same) {
        for (asked, cached) in [(&p.a, &p.b), (&p.b, &p.a)] {
            checks += 1;
            if let Err(why) = v.check(asked, cached) {
                refused.push(format!("[{} {why}] {asked:?} / {cached:?}", p.lang));
            }
        }
    }
    for line in &refused {
        println!("paraphrase refused: {line}");
    }
    let rate = 1.0 - refused.len() as f64 / checks as f64;
    println!(
        "paraphrases: {checks} checks, {} refused, acceptance {:.1}%",
        refused.len(),
        rate * 100.0
    );
    assert!(
        rate >= PARAPHRASE_ACCEPTANCE_FLOOR,
        "paraphrase acceptance {:.1}% is under {:.0}%",
        rate * 100.0,
        PARAPHRASE_ACCEPTANCE_FLOOR * 100.0
    );
}

/// Each class has near-misses in the set that are refused with exactly
/// that class, in English and in Dutch.
#[test]
fn each_class_refuses_its_own_near_misses() {
    let v = verifier();
    for class in Rejection::ALL {
        for lang in ["en", "nl"] {
            let own: Vec<&Pair> = pairs()
                .iter()
                .filter(|p| p.class == class.as_str() && p.lang == lang)
                .collect();
            let exact = own
                .iter()
                .filter(|p| v.check(&p.a, &p.b) == Err(class))
                .count();
            assert!(
                exact * 4 >= own.len() * 3,
                "{class} ({lang}): only {exact} of {} refused as {class}",
                own.len()
            );
        }
    }
}

/// The issue's own examples, each with the class that must refuse it.
#[test]
fn the_issue_examples_are_refused() {
    let v = verifier();
    let cases = [
        (
            "convert 5 km to miles",
            "convert 5 miles to km",
            Rejection::Number,
        ),
        (
            "WHERE email IS NULL",
            "WHERE email IS NOT NULL",
            Rejection::Negation,
        ),
        (
            "Is the shop open on Saturday?",
            "Is the shop open on Sunday?",
            Rejection::Date,
        ),
        (
            "Can I return it within 30 days?",
            "Can I return it after 30 days?",
            Rejection::Direction,
        ),
        (
            "What does git reset --soft do?",
            "What does git reset --hard do?",
            Rejection::Code,
        ),
        (
            "How do I sort ascending?",
            "How do I sort descending?",
            Rejection::Direction,
        ),
        (
            "convert a string to an int",
            "convert an int to a string",
            Rejection::ArgumentOrder,
        ),
        (
            "sorteer van klein naar groot",
            "sorteer van groot naar klein",
            Rejection::ArgumentOrder,
        ),
    ];
    for (a, b, class) in cases {
        assert_eq!(v.check(a, b), Err(class), "{a:?} / {b:?}");
        assert_eq!(v.check(b, a), Err(class), "{b:?} / {a:?}");
    }
}
