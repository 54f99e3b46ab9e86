//! The guard's per-worker metric handles (names in `crate::metrics`).
//! Labels carry entity types and actions only, never a value.

use crate::metrics::{
    GUARD_SCANNED_BYTES_TOTAL, GUARD_SCAN_SECONDS, PII_FINDINGS_TOTAL, SAFETY_FINDINGS_TOTAL,
};
use metrics::{counter, histogram, Counter, Histogram};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Instant;

/// One scan in this many is timed for `sluice_guard_scan_seconds`: two
/// clock reads and a histogram sample cost about a tenth of the guard's
/// own time on a small request, and a sample describes the distribution
/// as well as every scan would.
pub const TIME_ONE_IN: u32 = 8;

/// The start of a timed scan, or nothing for a scan that is not sampled.
pub struct ScanTimer(Option<Instant>);

/// Which way the scanned text was going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Request = 0,
    Response = 1,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

#[derive(Default)]
pub struct GuardMetrics {
    /// (entity, action, counter): a short list, searched without
    /// allocating a key.
    findings: RefCell<Vec<(Box<str>, &'static str, Counter)>>,
    safety: RefCell<HashMap<(&'static str, &'static str), Counter>>,
    /// By `Direction as usize`.
    scanned: RefCell<[Option<(Counter, Histogram)>; 2]>,
    /// Scans since the last timed one, by direction (one counter for both
    /// would time only answers when requests and answers alternate).
    untimed: [Cell<u32>; 2],
}

impl GuardMetrics {
    pub fn finding(&self, entity: &str, action: &'static str, n: u64) {
        let mut list = self.findings.borrow_mut();
        if let Some((_, _, c)) = list.iter().find(|(e, a, _)| &**e == entity && *a == action) {
            c.increment(n);
            return;
        }
        let c = counter!(PII_FINDINGS_TOTAL, "entity" => entity.to_owned(), "action" => action);
        c.increment(n);
        list.push((entity.into(), action, c));
    }

    pub fn safety(&self, kind: &'static str, action: &'static str) {
        self.safety
            .borrow_mut()
            .entry((kind, action))
            .or_insert_with(|| counter!(SAFETY_FINDINGS_TOTAL, "kind" => kind, "action" => action))
            .increment(1);
    }

    /// Starts timing a scan when it is the sampled one.
    pub fn timer(&self, direction: Direction) -> ScanTimer {
        let untimed = &self.untimed[direction as usize];
        let n = untimed.get() + 1;
        if n < TIME_ONE_IN {
            untimed.set(n);
            return ScanTimer(None);
        }
        untimed.set(0);
        ScanTimer(Some(Instant::now()))
    }

    /// Counts the scan's bytes, and its time when it was sampled.
    pub fn scanned(&self, direction: Direction, bytes: usize, timer: &ScanTimer) {
        let mut handles = self.scanned.borrow_mut();
        let (c, h) = handles[direction as usize].get_or_insert_with(|| {
            (
                counter!(GUARD_SCANNED_BYTES_TOTAL, "direction" => direction.as_str()),
                histogram!(GUARD_SCAN_SECONDS, "direction" => direction.as_str()),
            )
        });
        c.increment(bytes as u64);
        if let ScanTimer(Some(started)) = timer {
            h.record(started.elapsed().as_secs_f64());
        }
    }
}
