//! Routing: a model's targets in the order to try them. Round robin for
//! now; balancers, health, breakers and fallbacks plug in here. The cursor
//! is per worker, so picking a target touches no shared memory.

use crate::config::snapshot::Snapshot;
use std::cell::Cell;

pub struct Router {
    cursors: Box<[Cell<usize>]>,
}

impl Router {
    pub fn new(snapshot: &Snapshot) -> Self {
        Self {
            cursors: snapshot.models.iter().map(|_| Cell::new(0)).collect(),
        }
    }

    /// The upstream index to send this request for `model` to.
    pub fn pick(&self, snapshot: &Snapshot, model: usize) -> usize {
        let targets = &snapshot.models[model].targets;
        let cursor = &self.cursors[model];
        let at = cursor.get();
        cursor.set(at.wrapping_add(1));
        targets[at % targets.len()]
    }
}
