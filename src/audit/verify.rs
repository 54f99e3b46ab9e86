//! `sluice audit verify` and `sluice audit export`: walk the chain from its
//! start (or the retention anchor), check every link, and name the first
//! broken record.

use super::writer::{hash_hex, list_segments};
use super::{ANCHOR_FILE, GENESIS, HEAD_FILE};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

#[derive(Debug, Default)]
pub struct Summary {
    pub segments: usize,
    pub records: u64,
    /// A last line cut short by a crash (tolerated, reported).
    pub torn_tail: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Broken {
    #[error("cannot read {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{file} line {line}: {reason}")]
    Record {
        file: PathBuf,
        line: u64,
        reason: String,
    },
    #[error("segment {0} is missing")]
    MissingSegment(u64),
    #[error("the log ends before the last synced record in head.json (records were removed from its end)")]
    Truncated,
    #[error("no audit segments in {0}")]
    Empty(PathBuf),
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Checks the whole chain in `dir`, calling `each` with every record.
pub fn walk(
    dir: &Path,
    mut each: impl FnMut(&serde_json::Value, &[u8]),
) -> Result<Summary, Broken> {
    let segments = list_segments(dir).map_err(|e| Broken::Io(dir.to_path_buf(), e))?;
    if segments.is_empty() {
        return Err(Broken::Empty(dir.to_path_buf()));
    }
    let anchor = read_json(&dir.join(ANCHOR_FILE));
    let (mut expected_segment, mut prev) = match &anchor {
        Some(a) => (
            a["segment"].as_u64().unwrap_or(1),
            a["prev"].as_str().unwrap_or(GENESIS).to_owned(),
        ),
        None => (1, GENESIS.to_owned()),
    };
    let head_hash =
        read_json(&dir.join(HEAD_FILE)).and_then(|h| h["hash"].as_str().map(str::to_owned));
    let mut head_seen = head_hash.is_none();
    let mut summary = Summary::default();
    let last_index = segments.len() - 1;
    for (index, (n, path)) in segments.iter().enumerate() {
        if *n != expected_segment {
            return Err(Broken::MissingSegment(expected_segment));
        }
        expected_segment += 1;
        summary.segments += 1;
        let file = std::fs::File::open(path).map_err(|e| Broken::Io(path.clone(), e))?;
        let mut reader = BufReader::new(file);
        let mut raw = Vec::new();
        let mut line_no = 0u64;
        loop {
            raw.clear();
            let read = reader
                .read_until(b'\n', &mut raw)
                .map_err(|e| Broken::Io(path.clone(), e))?;
            if read == 0 {
                break;
            }
            line_no += 1;
            let fail = |reason: String| Broken::Record {
                file: path.clone(),
                line: line_no,
                reason,
            };
            let complete = raw.ends_with(b"\n");
            let line = raw.strip_suffix(b"\n").unwrap_or(&raw);
            let parsed: Option<serde_json::Value> = serde_json::from_slice(line).ok();
            let Some(record) = parsed.filter(|_| complete) else {
                let is_last =
                    index == last_index && reader.fill_buf().map(|b| b.is_empty()).unwrap_or(true);
                if is_last {
                    summary.torn_tail = Some(format!("{} line {line_no}", path.display()));
                    break;
                }
                return Err(fail("not a complete JSON record".into()));
            };
            let claimed = record.get("prev").and_then(|p| p.as_str()).unwrap_or("");
            if claimed != prev {
                return Err(fail(format!(
                    "chain broken here: this record names {claimed:.16}… as its predecessor, but the record before it hashes to {prev:.16}… (that record or this one was edited, or records between them were deleted or moved)"
                )));
            }
            prev = hash_hex(line);
            if head_hash.as_deref() == Some(prev.as_str()) {
                head_seen = true;
            }
            summary.records += 1;
            each(&record, line);
        }
    }
    if !head_seen {
        return Err(Broken::Truncated);
    }
    Ok(summary)
}

/// Which records `export` writes.
pub struct ExportFilter {
    pub from: Option<String>,
    pub to: Option<String>,
    pub team: Option<String>,
}

impl ExportFilter {
    fn keeps(&self, record: &serde_json::Value) -> bool {
        let Some(ts) = record.get("ts").and_then(|t| t.as_str()) else {
            return false; // segment headers
        };
        self.from.as_deref().is_none_or(|f| ts >= f)
            && self.to.as_deref().is_none_or(|t| ts < t)
            && self
                .team
                .as_deref()
                .is_none_or(|team| record.get("team").and_then(|v| v.as_str()) == Some(team))
    }
}

const CSV_COLUMNS: [&str; 16] = [
    "ts",
    "request_id",
    "key",
    "team",
    "user",
    "session",
    "endpoint",
    "model_asked",
    "model",
    "upstream",
    "status",
    "error",
    "tokens_in",
    "tokens_out",
    "latency_ms",
    "ttft_ms",
];

/// Writes the selected records of a verified chain as JSON Lines or CSV.
pub fn export(
    dir: &Path,
    filter: &ExportFilter,
    csv: bool,
    out: &mut impl std::io::Write,
) -> Result<u64, Broken> {
    let mut written = 0u64;
    let mut failed: Option<std::io::Error> = None;
    if csv {
        let _ = writeln!(out, "{}", CSV_COLUMNS.join(","));
    }
    walk(dir, |record, line| {
        if failed.is_some() || !filter.keeps(record) {
            return;
        }
        let result = if csv {
            let cells: Vec<String> = CSV_COLUMNS
                .iter()
                .map(|c| match record.get(*c) {
                    None | Some(serde_json::Value::Null) => String::new(),
                    Some(serde_json::Value::String(s)) => csv_cell(s),
                    Some(v) => csv_cell(&v.to_string()),
                })
                .collect();
            writeln!(out, "{}", cells.join(","))
        } else {
            out.write_all(line).and_then(|()| out.write_all(b"\n"))
        };
        match result {
            Ok(()) => written += 1,
            Err(e) => failed = Some(e),
        }
    })?;
    match failed {
        Some(e) => Err(Broken::Io(PathBuf::from("-"), e)),
        None => Ok(written),
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}
