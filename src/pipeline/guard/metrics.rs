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

    pub fn scanned(&self, direction: Direction, bytes: usize, seconds: f64) {
        let mut handles = self.scanned.borrow_mut();
        let (c, h) = handles[direction as usize].get_or_insert_with(|| {
            (
                counter!(GUARD_SCANNED_BYTES_TOTAL, "direction" => direction.as_str()),
                histogram!(GUARD_SCAN_SECONDS, "direction" => direction.as_str()),
            )
        });
        c.increment(bytes as u64);
        h.record(seconds);
    }
}
