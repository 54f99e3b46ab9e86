//! `sluice cache eval PAIRS.jsonl`: precision and recall of the configured
//! embedder, alone and with the verifier, over a range of similarity
//! thresholds, on pairs labelled `same` (one may answer the other) or not,
//! so an operator calibrates `similarity` on their own traffic.

use super::embed::{cosine, Embedder};
use super::verify::Verifier;
use super::CacheError;
use crate::config::snapshot::EmbedderSettings;
use std::fmt::Write;
use std::path::Path;

#[derive(serde::Deserialize)]
struct Pair {
    a: String,
    b: String,
    same: bool,
}

/// One labelled pair, scored.
struct Scored {
    similarity: f32,
    verified: bool,
    same: bool,
    a: String,
    b: String,
}

/// Runs the evaluation and returns the report (a table and the false hits
/// at `similarity`).
pub fn run(
    embedder: &EmbedderSettings,
    pairs: &Path,
    similarity: f32,
    list: bool,
) -> Result<String, CacheError> {
    let text = std::fs::read_to_string(pairs)
        .map_err(|e| CacheError::Persist(format!("{}: {e}", pairs.display())))?;
    let mut parsed = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let pair: Pair = serde_json::from_str(line)
            .map_err(|e| CacheError::Persist(format!("{}:{}: {e}", pairs.display(), n + 1)))?;
        parsed.push(pair);
    }
    let mut model = Embedder::load(embedder)?;
    let verifier = Verifier::new();
    let mut scored = Vec::with_capacity(parsed.len());
    for chunk in parsed.chunks(16) {
        let texts: Vec<&str> = chunk
            .iter()
            .flat_map(|p| [p.a.as_str(), p.b.as_str()])
            .collect();
        let vectors = model.embed(&texts)?;
        for (pair, v) in chunk.iter().zip(vectors.chunks(2)) {
            scored.push(Scored {
                similarity: cosine(&v[0], &v[1]),
                verified: verifier.check(&pair.a, &pair.b).is_ok(),
                same: pair.same,
                a: pair.a.clone(),
                b: pair.b.clone(),
            });
        }
    }
    let mut out = report(&scored, similarity);
    if list {
        let _ = writeln!(out, "\nevery pair (similarity, same, verifier):");
        for s in &scored {
            let verdict = match verifier.check(&s.a, &s.b) {
                Ok(()) => "pass",
                Err(r) => r.as_str(),
            };
            let _ = writeln!(
                out,
                "  {:.3}  {:5}  {:14}  {:?}  vs  {:?}",
                s.similarity, s.same, verdict, s.a, s.b
            );
        }
    }
    Ok(out)
}

fn report(scored: &[Scored], similarity: f32) -> String {
    let same = scored.iter().filter(|s| s.same).count();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} pairs: {} same, {} different\n",
        scored.len(),
        same,
        scored.len() - same
    );
    let _ = writeln!(
        out,
        "| similarity | hits (off) | precision (off) | recall (off) | false hits (off) | hits (strict) | precision (strict) | recall (strict) | false hits (strict) |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|");
    let mut thresholds: Vec<f32> = (0..=12).map(|i| 0.70 + 0.025 * i as f32).collect();
    if !thresholds.iter().any(|t| (t - similarity).abs() < 1e-4) {
        thresholds.push(similarity);
        thresholds.sort_by(f32::total_cmp);
    }
    for t in thresholds {
        let mut row = format!(
            "| {t:.3}{} ",
            if (t - similarity).abs() < 1e-4 {
                " (configured)"
            } else {
                ""
            }
        );
        for strict in [false, true] {
            let hits: Vec<&Scored> = scored
                .iter()
                .filter(|s| s.similarity >= t && (!strict || s.verified))
                .collect();
            let right = hits.iter().filter(|s| s.same).count();
            let wrong = hits.len() - right;
            let precision = if hits.is_empty() {
                1.0
            } else {
                right as f64 / hits.len() as f64
            };
            let recall = if same == 0 {
                0.0
            } else {
                right as f64 / same as f64
            };
            let _ = write!(
                row,
                "| {} | {precision:.3} | {recall:.3} | {wrong} ",
                hits.len()
            );
        }
        row.push('|');
        let _ = writeln!(out, "{row}");
    }
    let wrong: Vec<&Scored> = scored
        .iter()
        .filter(|s| !s.same && s.verified && s.similarity >= similarity)
        .collect();
    let _ = writeln!(
        out,
        "\nfalse hits at {similarity:.3} with verify = \"strict\": {}",
        wrong.len()
    );
    for s in wrong {
        let _ = writeln!(out, "  {:.3}  {:?}  vs  {:?}", s.similarity, s.a, s.b);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_precision_and_recall_per_threshold() {
        let pair = |similarity, verified, same| Scored {
            similarity,
            verified,
            same,
            a: "a".into(),
            b: "b".into(),
        };
        let scored = [
            pair(0.95, true, true),
            pair(0.95, false, false),
            pair(0.80, true, true),
            pair(0.99, true, false),
        ];
        let text = report(&scored, 0.9);
        // At 0.900: off serves 3 (1 right... 2 wrong), strict serves 2 (1 wrong).
        let row = text.lines().find(|l| l.starts_with("| 0.900")).unwrap();
        assert!(
            row.contains("| 3 | 0.333 | 0.500 | 2 | 2 | 0.500 | 0.500 | 1 |"),
            "{row}"
        );
        assert!(text.contains("false hits at 0.900 with verify = \"strict\": 1"));
    }
}
