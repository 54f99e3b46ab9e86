//! The data-protection guard: PII entities and content safety, scanned
//! with Hyperscan on the text that reaches a model and on the answer that
//! comes back.
//!
//! - `entities.rs`: built-in entities, their patterns and validators.
//! - `safety.rs`: the curated prompt-injection pattern set and its anchors.
//! - `scanner.rs`: one compiled scanner per policy (shared, read-only), its
//!   patterns spread over Hyperscan databases by the search they allow.
//! - `digits.rs`: the windows of a text where numeric entities can be.
//! - `json.rs`: the byte-level walk that finds the strings to scan.
//! - `request.rs`: the request side (monitor, mask, pseudonymize, block).
//! - `response.rs`: the answer filter (whole answers and streams).
//! - `stream.rs`: exact masking of text that arrives in pieces.
//! - `metrics.rs`: per-worker metric handles.

pub mod digits;
pub mod entities;
pub mod json;
pub mod metrics;
pub mod request;
pub mod response;
pub mod safety;
pub mod scanner;
pub mod stream;

use crate::config::Config;
use crate::config::{PiiAction, PromptInjection};
use hyperscan::Scratch;
use scanner::{Scanner, ScannerSpec};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

pub use request::{Inspection, RequestKind};

/// One `[pii.policies.<name>]` entry, compiled.
pub struct Policy {
    pub name: Box<str>,
    pub action: PiiAction,
    pub scan_responses: bool,
    pub scanner: Arc<Scanner>,
}

/// The compiled `[pii]` and `[safety]` sections.
pub struct Guard {
    pub policies: Vec<Policy>,
    index: HashMap<Box<str>, usize>,
    default: Option<usize>,
    /// Safety patterns alone, for requests no PII policy applies to.
    safety_only: Option<Arc<Scanner>>,
    pub injection: PromptInjection,
    pub has_deny: bool,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field(
                "policies",
                &self.policies.iter().map(|p| &p.name).collect::<Vec<_>>(),
            )
            .field("default", &self.default)
            .field("injection", &self.injection)
            .field("has_deny", &self.has_deny)
            .finish()
    }
}

impl Guard {
    /// Compiles every policy of the configuration; `None` when neither
    /// `[pii]` nor `[safety]` asks for anything.
    pub fn build(cfg: &Config) -> Result<Option<Guard>, String> {
        let injection = cfg
            .safety
            .as_ref()
            .and_then(|s| s.prompt_injection)
            .unwrap_or(PromptInjection::Off);
        let deny: Vec<String> = cfg
            .safety
            .as_ref()
            .map(|s| s.deny_patterns.clone())
            .unwrap_or_default();
        let custom: Vec<(String, String)> = cfg
            .pii
            .as_ref()
            .map(|p| {
                p.custom
                    .iter()
                    .map(|c| (c.name.clone(), c.pattern.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let with_injection = injection != PromptInjection::Off;
        let mut policies = Vec::new();
        let mut index = HashMap::new();
        if let Some(pii) = &cfg.pii {
            for (name, p) in &pii.policies {
                let scanner = Scanner::compile(&ScannerSpec {
                    entities: &p.entities,
                    custom: &custom,
                    injection: with_injection,
                    deny: &deny,
                })
                .map_err(|e| format!("pii.policies.{name}: {e}"))?;
                index.insert(name.as_str().into(), policies.len());
                policies.push(Policy {
                    name: name.as_str().into(),
                    action: p.action,
                    scan_responses: p.scan_responses.unwrap_or(true),
                    scanner: Arc::new(scanner),
                });
            }
        }
        let default = cfg
            .pii
            .as_ref()
            .and_then(|p| p.default_policy.as_deref())
            .and_then(|d| index.get(d).copied());
        let safety_only = if with_injection || !deny.is_empty() {
            Some(Arc::new(
                Scanner::compile(&ScannerSpec {
                    entities: &[],
                    custom: &[],
                    injection: with_injection,
                    deny: &deny,
                })
                .map_err(|e| format!("safety: {e}"))?,
            ))
        } else {
            None
        };
        if policies.is_empty() && safety_only.is_none() {
            return Ok(None);
        }
        Ok(Some(Guard {
            policies,
            index,
            default,
            safety_only,
            injection,
            has_deny: !deny.is_empty(),
        }))
    }

    /// The policy for a request: the team's when it names one, else the
    /// default.
    pub fn policy(&self, team_policy: Option<&str>) -> Option<&Policy> {
        team_policy
            .and_then(|n| self.index.get(n).copied())
            .or(self.default)
            .map(|i| &self.policies[i])
    }

    fn scanners(&self) -> impl Iterator<Item = &Scanner> {
        self.policies
            .iter()
            .map(|p| &*p.scanner)
            .chain(self.safety_only.as_deref())
    }
}

/// A worker's guard state: one Hyperscan scratch sized for every database
/// of the snapshot, scan buffers and metric handles.
pub struct GuardWorker {
    pub scratch: Rc<RefCell<Option<Scratch>>>,
    pub metrics: Rc<metrics::GuardMetrics>,
    pub hits: RefCell<scanner::Hits>,
}

impl GuardWorker {
    pub fn new(guard: Option<&Guard>) -> Self {
        let mut scratch = None;
        if let Some(g) = guard {
            for s in g.scanners() {
                if let Err(e) = s.fit_scratch(&mut scratch) {
                    // Allocation failure of a few KiB: nothing sensible to do.
                    panic!("hyperscan scratch allocation failed: {e}");
                }
            }
        }
        Self {
            scratch: Rc::new(RefCell::new(scratch)),
            metrics: Rc::new(metrics::GuardMetrics::default()),
            hits: RefCell::new(scanner::Hits::default()),
        }
    }
}
