//! Human in the loop (`[[approvals]]`): a completion of a listed model for
//! a listed team is held until a person approves or rejects it through the
//! admin API, or its `timeout_s` passes. The pending answers live in one
//! registry shared with the admin thread; a worker touches it only for the
//! requests a rule holds, and waits on its own oneshot, so no worker ever
//! blocks.

use futures_channel::oneshot;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One `[[approvals]]` rule, resolved.
#[derive(Debug, Clone)]
pub struct ApprovalRule {
    pub team: Box<str>,
    /// Model names (the model that answers).
    pub models: Box<[Box<str>]>,
    pub timeout: Duration,
}

/// Finds the rule that holds a completion of `model` for `team`.
pub fn rule_for<'a>(
    rules: &'a [ApprovalRule],
    team: &str,
    model: &str,
) -> Option<&'a ApprovalRule> {
    rules
        .iter()
        .find(|r| &*r.team == team && r.models.iter().any(|m| &**m == model))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Approved { by: String },
    Rejected { by: String },
}

struct Pending {
    summary: Value,
    since: Instant,
    reply: oneshot::Sender<Decision>,
}

/// Answers waiting for a person.
#[derive(Default)]
pub struct Approvals {
    next_id: AtomicU64,
    pending: Mutex<BTreeMap<u64, Pending>>,
}

/// What a held request is, for the reviewer.
pub struct HeldAnswer<'a> {
    pub request_id: &'a str,
    pub team: &'a str,
    pub key: &'a str,
    pub model: &'a str,
    /// The answer as the model sent it (JSON, or the SSE events).
    pub completion: &'a [u8],
}

impl Approvals {
    /// Holds an answer; the returned receiver resolves when a person
    /// decides. `withdraw` removes it again on timeout.
    pub fn hold(&self, answer: &HeldAnswer<'_>) -> (u64, oneshot::Receiver<Decision>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = oneshot::channel();
        let summary = json!({
            "id": id.to_string(),
            "request_id": answer.request_id,
            "team": answer.team,
            "key": answer.key,
            "model": answer.model,
            "created": crate::alerts::now_rfc3339(),
            "completion": String::from_utf8_lossy(answer.completion),
        });
        self.lock().insert(
            id,
            Pending {
                summary,
                since: Instant::now(),
                reply: tx,
            },
        );
        crate::metrics::approvals_pending(self.lock().len());
        (id, rx)
    }

    pub fn withdraw(&self, id: u64) {
        let mut pending = self.lock();
        pending.remove(&id);
        crate::metrics::approvals_pending(pending.len());
    }

    /// The admin API's decision. False when `id` is not pending (decided,
    /// timed out or unknown).
    pub fn decide(&self, id: u64, decision: Decision) -> bool {
        let entry = self.lock().remove(&id);
        crate::metrics::approvals_pending(self.lock().len());
        match entry {
            Some(p) => p.reply.send(decision).is_ok(),
            None => false,
        }
    }

    /// Pending answers, oldest first, for `GET /admin/approvals`.
    pub fn list(&self) -> Value {
        let pending = self.lock();
        Value::Array(
            pending
                .values()
                .map(|p| {
                    let mut v = p.summary.clone();
                    v["waiting_s"] = json!(p.since.elapsed().as_secs());
                    v
                })
                .collect(),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How a held answer ended.
pub enum Verdict {
    Release { by: String },
    Reject { by: String },
    Expired,
}

/// Holds `answer` and waits (asynchronously, on the worker) for a person.
pub async fn wait_for_decision(
    approvals: &Approvals,
    rule: &ApprovalRule,
    answer: &HeldAnswer<'_>,
) -> Verdict {
    let (id, rx) = approvals.hold(answer);
    tracing::info!(
        approval = id,
        request_id = answer.request_id,
        model = answer.model,
        "answer held for approval"
    );
    match monoio::time::timeout(rule.timeout, rx).await {
        Ok(Ok(Decision::Approved { by })) => Verdict::Release { by },
        Ok(Ok(Decision::Rejected { by })) => Verdict::Reject { by },
        Ok(Err(_)) | Err(_) => {
            approvals.withdraw(id);
            Verdict::Expired
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_reach_the_holder_once() {
        let approvals = Approvals::default();
        let answer = HeldAnswer {
            request_id: "r",
            team: "t",
            key: "k",
            model: "m",
            completion: b"{}",
        };
        let (id, mut rx) = approvals.hold(&answer);
        assert_eq!(approvals.list().as_array().unwrap().len(), 1);
        assert!(approvals.decide(id, Decision::Approved { by: "ana".into() }));
        assert!(!approvals.decide(id, Decision::Rejected { by: "bob".into() }));
        assert_eq!(
            rx.try_recv().unwrap(),
            Some(Decision::Approved { by: "ana".into() })
        );
        assert!(approvals.list().as_array().unwrap().is_empty());
    }

    #[test]
    fn rules_match_team_and_model() {
        let rules = [ApprovalRule {
            team: "support".into(),
            models: vec!["frontier".into()].into(),
            timeout: Duration::from_secs(1),
        }];
        assert!(rule_for(&rules, "support", "frontier").is_some());
        assert!(rule_for(&rules, "support", "small").is_none());
        assert!(rule_for(&rules, "research", "frontier").is_none());
    }
}
