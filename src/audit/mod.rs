//! The audit log: one JSON Lines record per proxied request, hash-chained
//! (each record carries the SHA-256 of the one before, across segments) so
//! that an edited, deleted or reordered record is detectable. Workers
//! serialize their record and hand it to the writer thread through a
//! bounded queue; the writer chains, writes, syncs per `fsync`, rotates
//! segments and applies retention. `verify` checks a directory; `export`
//! selects records.

pub mod capture;
pub mod record;
pub mod verify;
pub mod writer;

pub use record::Record;
pub use writer::AuditLog;

use crate::config::{AuditDetail, Fsync};
use std::path::PathBuf;
use std::time::Duration;

/// `[audit]` as the writer and the pipeline need it.
#[derive(Debug, Clone)]
pub struct AuditSettings {
    pub dir: PathBuf,
    pub detail: AuditDetail,
    pub fsync: Fsync,
    pub batch: Duration,
    pub retention: Duration,
    pub segment_bytes: u64,
}

/// Name of segment `n` in the audit directory; the numbering orders them.
pub fn segment_name(n: u64) -> String {
    format!("audit-{n:010}.jsonl")
}

/// The segment number in a file name, if it is a segment.
pub fn segment_number(name: &str) -> Option<u64> {
    name.strip_prefix("audit-")?
        .strip_suffix(".jsonl")?
        .parse()
        .ok()
}

/// Where retention leaves its anchor: the first kept segment and the hash
/// its first record chains to.
pub const ANCHOR_FILE: &str = "anchor.json";
/// The writer's last synced position: segment, records, last hash. A log
/// cut short at its end (whole segments or records deleted) no longer
/// reaches it.
pub const HEAD_FILE: &str = "head.json";
/// The chain's start: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
