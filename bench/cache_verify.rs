//! The semantic cache's verifier (issue 11): `Verifier::check` on one
//! candidate. Goal: under 20 microseconds for a typical question.
//!
//! Run: `cargo bench --bench cache_verify -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, Criterion};
use sluice::pipeline::cache::verify::{Rejection, Verifier};
use std::hint::black_box;

/// A paraphrase the verifier lets through: every class is compared.
const PARAPHRASE: (&str, &str) = (
    "How do I convert a string to an int in Python?",
    "Python: turn a string into an integer",
);

/// A near-miss refused at the first class (numbers).
const NEAR_MISS_NUMBER: (&str, &str) = ("convert 5 km to miles", "convert 5 miles to km");

/// A near-miss refused at the last class (argument order), so every
/// class runs before the verdict.
const NEAR_MISS_ORDER: (&str, &str) = (
    "Hoe zet ik geld over van mijn spaarrekening naar mijn betaalrekening?",
    "Hoe zet ik geld over van mijn betaalrekening naar mijn spaarrekening?",
);

/// Two 60-word questions that agree: numbers, a date, names, code, relation words.
const LONG_ASKED: &str =
    "I am migrating a small web shop from MySQL to PostgreSQL on Ubuntu 22.04 \
    and want to keep every order placed before 1 March 2024. The export from mysqldump \
    fails with the error 'packet too large' when a table holds more than 2 GB, even with \
    --max_allowed_packet set. Which settings in my.cnf should I change, and is there a \
    faster way to copy the data?";
const LONG_CACHED: &str =
    "Moving my web shop's database from MySQL to PostgreSQL on Ubuntu 22.04: \
    I need to keep all orders placed before 1 March 2024, but mysqldump stops with \
    'packet too large' on a table of more than 2 GB, even though --max_allowed_packet is \
    set. What should I change in my.cnf, and is there a faster way to move the data \
    across?";

fn bench(c: &mut Criterion) {
    let verifier = Verifier::new();
    // The figures only mean something if each case takes the path named.
    assert_eq!(verifier.check(PARAPHRASE.0, PARAPHRASE.1), Ok(()));
    assert_eq!(
        verifier.check(NEAR_MISS_NUMBER.0, NEAR_MISS_NUMBER.1),
        Err(Rejection::Number)
    );
    assert_eq!(
        verifier.check(NEAR_MISS_ORDER.0, NEAR_MISS_ORDER.1),
        Err(Rejection::ArgumentOrder)
    );
    assert_eq!(verifier.check(LONG_ASKED, LONG_CACHED), Ok(()));
    assert!(LONG_ASKED.split_whitespace().count() >= 60);

    let mut group = c.benchmark_group("verify");
    let cases = [
        ("paraphrase_accepted", PARAPHRASE),
        ("near_miss_number", NEAR_MISS_NUMBER),
        ("near_miss_argument_order", NEAR_MISS_ORDER),
        ("long_60_words_accepted", (LONG_ASKED, LONG_CACHED)),
    ];
    for (name, (asked, cached)) in cases {
        group.bench_function(name, |b| {
            b.iter(|| verifier.check(black_box(asked), black_box(cached)))
        });
    }
    group.finish();
    c.bench_function("verify/new", |b| b.iter(Verifier::new));
}

criterion_group!(benches, bench);
criterion_main!(benches);
