//! The request side: find the strings that reach a model, decode them, scan
//! them, and act: count (monitor), mask, pseudonymize, or refuse (block,
//! content policy). A rewritten body keeps every byte it did not change.

use super::json::{self, Scalar, Seg};
use super::metrics::Direction;
use super::response::GuardFilter;
use super::safety;
use super::scanner::{Finding, Scanner};
use super::stream::{apply, Mask, Replace};
use super::{Guard, GuardWorker};
use crate::api::GatewayError;
use crate::config::{PiiAction, PromptInjection};
use crate::pipeline::filter::AnswerFilter;
use std::borrow::Cow;
use std::ops::Range;

/// Which request shape the body has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    Chat,
    Completion,
    Embedding,
}

/// The guard's verdict on an allowed request.
#[derive(Default)]
pub struct Inspection {
    /// The body to forward, when it changed.
    pub body: Option<Vec<u8>>,
    /// The filter the answer must pass through.
    pub filter: Option<Box<dyn AnswerFilter>>,
    /// Entity types found in the request and how often (never values),
    /// for the audit record; empty when nothing was found.
    pub findings: Vec<(String, u64)>,
}

/// Whether a path (below the top-level member) holds text sent to a model.
fn is_model_text(path: &[Seg<'_>]) -> bool {
    use Seg::{Idx, Key};
    match path {
        [k] => k.is("prompt") || k.is("input"),
        [k, Idx(_)] => k.is("prompt") || k.is("input"),
        [m, Idx(_), c] => m.is("messages") && c.is("content"),
        [m, Idx(_), c, Idx(_), t] => m.is("messages") && c.is("content") && t.is("text"),
        [m, Idx(_), tc, Idx(_), f, a] => {
            m.is("messages") && tc.is("tool_calls") && f.is("function") && a.is("arguments")
        }
        [m, Idx(_), Key(k), Idx(_), ..] if k == "content" => {
            // Deeper content parts (e.g. tool results as parts): any `text`.
            m.is("messages") && path.last().is_some_and(|s| s.is("text"))
        }
        _ => false,
    }
}

/// Pseudonyms of one request: value -> `<LABEL_n>`.
#[derive(Default)]
pub struct Pseudonyms {
    /// (placeholder bytes, original value)
    pub map: Vec<(Vec<u8>, String)>,
    counters: Vec<(Box<str>, usize)>,
}

impl Pseudonyms {
    fn placeholder(&mut self, label: &str, value: &str) -> &[u8] {
        if let Some(i) = self
            .map
            .iter()
            .position(|(p, v)| v == value && p[1..].starts_with(label.as_bytes()))
        {
            return &self.map[i].0;
        }
        let n = match self.counters.iter_mut().find(|(l, _)| &**l == label) {
            Some((_, n)) => {
                *n += 1;
                *n
            }
            None => {
                self.counters.push((label.into(), 1));
                1
            }
        };
        self.map
            .push((format!("<{label}_{n}>").into_bytes(), value.to_owned()));
        &self.map.last().expect("just pushed").0
    }
}

struct Pseudonymize<'a>(&'a mut Pseudonyms);

impl Replace for Pseudonymize<'_> {
    fn replace(&mut self, scanner: &Scanner, text: &[u8], f: &Finding, out: &mut Vec<u8>) {
        let label = &scanner.entities[f.entity as usize].label;
        let value = String::from_utf8_lossy(&text[f.range.clone()]);
        out.extend_from_slice(self.0.placeholder(label, &value));
    }
}

pub fn action_label(a: PiiAction) -> &'static str {
    match a {
        PiiAction::Monitor => "monitor",
        PiiAction::Mask => "mask",
        PiiAction::Pseudonymize => "pseudonymize",
        PiiAction::Block => "block",
    }
}

impl Guard {
    /// Inspects a request body (already accepted as JSON by the parse
    /// step) under the team's policy (`None`: the default policy).
    pub fn inspect_request(
        &self,
        gw: &GuardWorker,
        team_policy: Option<&str>,
        body: &[u8],
    ) -> Result<Inspection, GatewayError> {
        let timer = gw.metrics.timer(Direction::Request);
        let policy = self.policy(team_policy);
        let Some(scanner) = policy.map(|p| &p.scanner).or(self.safety_only.as_ref()) else {
            return Ok(Inspection::default());
        };
        let mut targets: Vec<(Range<usize>, Cow<'_, str>)> = Vec::new();
        let mut bad = false;
        json::walk(
            body,
            &|k| k == "messages" || k == "prompt" || k == "input",
            &mut |path, range, kind| {
                if kind == Scalar::String && is_model_text(path) {
                    match json::decode(&body[range.clone()]) {
                        Some(text) => targets.push((range, text)),
                        None => bad = true,
                    }
                }
            },
        )
        .ok_or_else(|| GatewayError::InvalidJson("the body is not a JSON object".into()))?;
        if bad {
            return Err(GatewayError::InvalidJson(
                "a string is not valid UTF-8".into(),
            ));
        }
        let scratch_ref = gw.scratch.borrow();
        let scratch = scratch_ref
            .as_ref()
            .expect("scratch sized for the snapshot's guard");
        let mut hits = gw.hits.borrow_mut();
        let mut findings: Vec<Vec<Finding>> = Vec::with_capacity(targets.len());
        let mut injection = 0u8;
        let mut deny = false;
        let mut scanned = 0;
        for (_, text) in &targets {
            let mut f = Vec::new();
            scanner.findings(scratch, text.as_bytes(), &mut hits, &mut f);
            injection |= hits.injection;
            deny |= hits.deny;
            scanned += text.len();
            findings.push(f);
        }
        drop(hits);
        let metrics = &gw.metrics;
        let record_scan = || metrics.scanned(Direction::Request, scanned, &timer);
        if deny {
            metrics.safety("deny_pattern", "block");
            record_scan();
            return Err(GatewayError::ContentPolicy(
                "the request matches a denied content pattern".into(),
            ));
        }
        if injection != 0 {
            let block = self.injection == PromptInjection::Block;
            let action = if block { "block" } else { "monitor" };
            let mut names = Vec::new();
            for (i, name) in safety::CATEGORIES.iter().enumerate() {
                if injection & (1 << i) != 0 {
                    metrics.safety(name, action);
                    names.push(*name);
                }
            }
            tracing::info!(categories = ?names, action, "prompt injection detected");
            if block {
                record_scan();
                return Err(GatewayError::ContentPolicy(format!(
                    "the request looks like a prompt injection ({})",
                    names.join(", ")
                )));
            }
        }
        let Some(policy) = policy else {
            record_scan();
            return Ok(Inspection {
                body: None,
                filter: GuardFilter::boxed(self, None, scanner.clone(), Default::default(), gw),
                findings: Vec::new(),
            });
        };
        let action = action_label(policy.action);
        if findings.iter().all(Vec::is_empty) {
            record_scan();
            return Ok(Inspection {
                body: None,
                filter: GuardFilter::boxed(
                    self,
                    Some(policy),
                    scanner.clone(),
                    Default::default(),
                    gw,
                ),
                findings: Vec::new(),
            });
        }
        let mut counts = vec![0u64; scanner.entities.len()];
        for f in findings.iter().flatten() {
            counts[f.entity as usize] += 1;
        }
        for (e, &n) in counts.iter().enumerate() {
            if n > 0 {
                metrics.finding(&scanner.entities[e].name, action, n);
            }
        }
        // Entity types and positions only: never a value. Collected only
        // when the line is logged.
        if tracing::enabled!(tracing::Level::DEBUG) {
            let positions: Vec<(&str, usize, usize, usize)> = findings
                .iter()
                .enumerate()
                .flat_map(|(t, fs)| {
                    fs.iter().map(move |f| {
                        (
                            &*scanner.entities[f.entity as usize].name,
                            t,
                            f.range.start,
                            f.range.end,
                        )
                    })
                })
                .collect();
            tracing::debug!(policy = &*policy.name, action, findings = ?positions, "PII found in request");
        }
        let mut pseudonyms = Pseudonyms::default();
        let new_body = match policy.action {
            PiiAction::Block => {
                record_scan();
                let names: Vec<&str> = counts
                    .iter()
                    .enumerate()
                    .filter(|(_, &n)| n > 0)
                    .map(|(e, _)| &*scanner.entities[e].name)
                    .collect();
                return Err(GatewayError::PiiDetected(names.join(", ")));
            }
            PiiAction::Mask | PiiAction::Pseudonymize => {
                let mut out = Vec::with_capacity(body.len() + 64);
                let mut at = 0;
                let mut text_out = Vec::new();
                for ((range, text), fs) in targets.iter().zip(&findings) {
                    if fs.is_empty() {
                        continue;
                    }
                    text_out.clear();
                    if policy.action == PiiAction::Mask {
                        apply(scanner, text.as_bytes(), fs, &mut Mask, &mut text_out);
                    } else {
                        apply(
                            scanner,
                            text.as_bytes(),
                            fs,
                            &mut Pseudonymize(&mut pseudonyms),
                            &mut text_out,
                        );
                    }
                    out.extend_from_slice(&body[at..range.start]);
                    json::push_text(&mut out, &text_out);
                    at = range.end;
                }
                out.extend_from_slice(&body[at..]);
                Some(out)
            }
            PiiAction::Monitor => None,
        };
        record_scan();
        let findings = counts
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(e, &n)| (scanner.entities[e].name.to_string(), n))
            .collect();
        Ok(Inspection {
            body: new_body,
            filter: GuardFilter::boxed(self, Some(policy), scanner.clone(), pseudonyms, gw),
            findings,
        })
    }
}
