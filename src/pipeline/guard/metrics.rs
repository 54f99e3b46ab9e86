//! The guard's per-worker metric handles (names in `crate::metrics`).
//! Labels carry entity types and actions only, never a value.

use crate::metrics::{
    GUARD_SCANNED_BYTES_TOTAL, GUARD_SCAN_SECONDS, PII_FINDINGS_TOTAL, SAFETY_FINDINGS_TOTAL,
};
use metrics::{counter, histogram, Counter, Histogram};
use std::cell::RefCell;
use std::collections::HashMap;

/// Which way the scanned text was going.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Request,
    Response,
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
    findings: RefCell<HashMap<(Box<str>, &'static str), Counter>>,
    safety: RefCell<HashMap<(&'static str, &'static str), Counter>>,
    scanned: RefCell<HashMap<Direction, (Counter, Histogram)>>,
}

impl GuardMetrics {
    pub fn finding(&self, entity: &str, action: &'static str, n: u64) {
        let mut map = self.findings.borrow_mut();
        if let Some(c) = map.get(&(entity.into(), action)) {
            c.increment(n);
            return;
        }
        let c = counter!(PII_FINDINGS_TOTAL, "entity" => entity.to_owned(), "action" => action);
        c.increment(n);
        map.insert((entity.into(), action), c);
    }

    pub fn safety(&self, kind: &'static str, action: &'static str) {
        self.safety
            .borrow_mut()
            .entry((kind, action))
            .or_insert_with(|| counter!(SAFETY_FINDINGS_TOTAL, "kind" => kind, "action" => action))
            .increment(1);
    }

    pub fn scanned(&self, direction: Direction, bytes: usize, seconds: f64) {
        let mut map = self.scanned.borrow_mut();
        let (c, h) = map.entry(direction).or_insert_with(|| {
            (
                counter!(GUARD_SCANNED_BYTES_TOTAL, "direction" => direction.as_str()),
                histogram!(GUARD_SCAN_SECONDS, "direction" => direction.as_str()),
            )
        });
        c.increment(bytes as u64);
        h.record(seconds);
    }
}
