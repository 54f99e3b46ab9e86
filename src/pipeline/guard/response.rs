//! The answer side: an `AnswerFilter` that masks PII in completions (the
//! policy's `scan_responses`), puts pseudonyms back, and cuts an answer that
//! hits a deny pattern. Whole answers are rewritten string by string;
//! streams are parsed event by event, each choice's delta text and each of
//! its tool calls' argument text going through its own `TextStream`
//! (exact hold-back masking), `Restore` (pseudonyms) and Hyperscan stream
//! (deny patterns). Event framing, ids and every other field pass through
//! as received.

use super::json::{self, Scalar, Seg};
use super::metrics::{Direction, GuardMetrics};
use super::request::Pseudonyms;
use super::scanner::{Finding, Hits, Scanner, Scope};
use super::stream::{apply, restore, Mask, Replace, Restore, TextStream};
use super::{Guard, GuardWorker, Policy};
use crate::api::GatewayError;
use crate::config::PiiAction;
use crate::pipeline::filter::AnswerFilter;
use hyperscan::{Matching, Scratch, Stream};
use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

/// Writes the finding's original text (monitor: count, change nothing).
struct Keep;

impl Replace for Keep {
    fn replace(&mut self, _: &Scanner, text: &[u8], f: &Finding, out: &mut Vec<u8>) {
        out.extend_from_slice(&text[f.range.clone()]);
    }
}

/// One text of a streamed answer: a choice's content, or the arguments
/// of one of its tool calls.
struct Channel {
    index: u64,
    /// The tool call's `index`; `None` for the content.
    tool: Option<u64>,
    text: TextStream,
    restore: Restore,
    deny: Option<Stream>,
}

pub struct GuardFilter {
    scanner: Arc<Scanner>,
    /// Scan answers for entities; `mask` replaces them, else only counts.
    scan: bool,
    mask: bool,
    action: &'static str,
    pseudonyms: Restored,
    deny: bool,
    scratch: Rc<RefCell<Option<Scratch>>>,
    metrics: Rc<GuardMetrics>,
    channels: Vec<Channel>,
    hits: Hits,
    /// Buffers reused across the texts of an answer and across events.
    findings: Vec<Finding>,
    masked: Vec<u8>,
    released: Vec<u8>,
    text_out: Vec<u8>,
    parts: EventParts,
    /// The last chunk's JSON: id, object, created and model of events
    /// that carry held-back text.
    template: Vec<u8>,
}

/// What the walk of one event found, per choice (its position in the
/// array): text ranges (with the tool call's position in `tool_calls`
/// for arguments), `index` values of choices and of tool calls, finishes.
#[derive(Default)]
struct EventParts {
    texts: Vec<(usize, Option<usize>, Range<usize>)>,
    indexes: Vec<(usize, u64)>,
    tool_indexes: Vec<(usize, usize, u64)>,
    finished: Vec<usize>,
}

impl EventParts {
    fn clear(&mut self) {
        self.texts.clear();
        self.indexes.clear();
        self.tool_indexes.clear();
        self.finished.clear();
    }

    /// The choice's `index` (its position when the event has none).
    fn index_of(&self, k: usize) -> u64 {
        self.indexes
            .iter()
            .find(|(p, _)| *p == k)
            .map_or(k as u64, |(_, v)| *v)
    }

    /// The `index` of the tool call at position `j` of choice `k`.
    fn tool_index_of(&self, k: usize, j: usize) -> u64 {
        self.tool_indexes
            .iter()
            .find(|(p, q, _)| *p == k && *q == j)
            .map_or(j as u64, |(_, _, v)| *v)
    }
}

fn deny_error() -> GatewayError {
    GatewayError::ContentPolicy("the answer matches a denied content pattern".into())
}

impl GuardFilter {
    /// The filter a request needs, if any.
    pub fn boxed(
        guard: &Guard,
        policy: Option<&Policy>,
        scanner: Arc<Scanner>,
        pseudonyms: Pseudonyms,
        gw: &GuardWorker,
    ) -> Option<Box<dyn AnswerFilter>> {
        let scan = policy.is_some_and(|p| p.scan_responses) && scanner.has_entities();
        let mask = policy.is_some_and(|p| p.action != PiiAction::Monitor);
        if !scan && pseudonyms.map.is_empty() && !guard.has_deny {
            return None;
        }
        Some(Box::new(GuardFilter {
            scanner,
            scan,
            mask,
            action: if mask { "mask" } else { "monitor" },
            pseudonyms: Restored::new(pseudonyms.map),
            deny: guard.has_deny,
            scratch: gw.scratch.clone(),
            metrics: gw.metrics.clone(),
            channels: Vec::new(),
            hits: Hits::default(),
            findings: Vec::new(),
            masked: Vec::new(),
            released: Vec::new(),
            text_out: Vec::new(),
            parts: EventParts::default(),
            template: Vec::new(),
        }))
    }

    fn count(&self, found: &[u16]) {
        for &e in found {
            self.metrics
                .finding(&self.scanner.entities[e as usize].name, self.action, 1);
        }
    }

    /// A whole text (non-streamed answer): deny check, masking, restore
    /// (`in_json`: the text is tool-call arguments).
    fn whole_text(
        &mut self,
        scratch: &Scratch,
        text: &[u8],
        in_json: bool,
        out: &mut Vec<u8>,
    ) -> Result<(), GatewayError> {
        // Entities only when they are masked or counted; no injection
        // check on answers.
        let scope = Scope {
            entities: self.scan,
            deny: self.deny,
            injection: false,
        };
        let mut findings = std::mem::take(&mut self.findings);
        if scope.entities || scope.deny {
            self.scanner
                .findings_in(scope, scratch, text, &mut self.hits, &mut findings);
        } else {
            self.hits.clear();
            findings.clear();
        }
        if self.deny && self.hits.deny {
            self.findings = findings;
            self.metrics.safety("deny_pattern", "block");
            return Err(deny_error());
        }
        let mut masked = std::mem::take(&mut self.masked);
        masked.clear();
        let text = if self.scan && !findings.is_empty() {
            for f in &findings {
                self.metrics.finding(
                    &self.scanner.entities[f.entity as usize].name,
                    self.action,
                    1,
                );
            }
            if self.mask {
                apply(&self.scanner, text, &findings, &mut Mask, &mut masked);
                &masked[..]
            } else {
                text
            }
        } else {
            text
        };
        restore(self.pseudonyms.values(in_json), text, out);
        self.findings = findings;
        self.masked = masked;
        Ok(())
    }

    /// The channel of a choice's content (`tool: None`) or of one of its
    /// tool calls, opened on first use.
    fn channel(&mut self, index: u64, tool: Option<u64>) -> Result<usize, GatewayError> {
        if let Some(i) = self
            .channels
            .iter()
            .position(|c| c.index == index && c.tool == tool)
        {
            return Ok(i);
        }
        let deny = match (self.deny, self.scanner.deny_stream()) {
            (true, Some(db)) => Some(db.open_stream().map_err(|e| {
                GatewayError::ContentPolicy(format!("cannot open a scan stream: {e}"))
            })?),
            _ => None,
        };
        self.channels.push(Channel {
            index,
            tool,
            text: TextStream::default(),
            restore: Restore::default(),
            deny,
        });
        Ok(self.channels.len() - 1)
    }

    /// One piece of a channel's text; appends what the client gets.
    fn piece(
        &mut self,
        scratch: &Scratch,
        c: usize,
        piece: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), GatewayError> {
        let channel = &mut self.channels[c];
        if let Some(stream) = &channel.deny {
            let mut hit = false;
            let _ = stream.scan(piece, scratch, |_, _, _, _| {
                hit = true;
                Matching::Terminate
            });
            if hit {
                self.metrics.safety("deny_pattern", "block");
                return Err(deny_error());
            }
        }
        let mut released = std::mem::take(&mut self.released);
        released.clear();
        if self.scan {
            let rep: &mut dyn Replace = if self.mask { &mut Mask } else { &mut Keep };
            channel
                .text
                .push(&self.scanner, scratch, piece, rep, &mut released);
        } else {
            released.extend_from_slice(piece);
        }
        let map = self.pseudonyms.values(channel.tool.is_some());
        channel.restore.push(map, &released, out);
        self.released = released;
        Ok(())
    }

    /// The channel's text ended: release what was held. Flushing again
    /// releases nothing.
    fn flush(&mut self, scratch: &Scratch, c: usize, out: &mut Vec<u8>) {
        let channel = &mut self.channels[c];
        let map = self.pseudonyms.values(channel.tool.is_some());
        let mut released = Vec::new();
        if self.scan {
            let rep: &mut dyn Replace = if self.mask { &mut Mask } else { &mut Keep };
            channel
                .text
                .finish(&self.scanner, scratch, rep, &mut released);
            let found = std::mem::take(&mut channel.text.found);
            channel.restore.push(map, &released, out);
            channel.restore.finish(map, out);
            self.count(&found);
        } else {
            channel.restore.finish(map, out);
        }
    }

    fn count_stream(&mut self, c: usize) {
        let found = std::mem::take(&mut self.channels[c].text.found);
        self.count(&found);
    }

    /// One SSE event: appends it (rewritten when its text changed).
    fn event(
        &mut self,
        scratch: &Scratch,
        event: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), GatewayError> {
        let Some((payload, range)) = data_of(event) else {
            out.extend_from_slice(event);
            return Ok(());
        };
        if payload.trim_ascii() == b"[DONE]" {
            self.flush_all(scratch, out);
            out.extend_from_slice(event);
            return Ok(());
        }
        // Buffers kept from the last event.
        let mut parts = std::mem::take(&mut self.parts);
        parts.clear();
        let EventParts {
            texts,
            indexes,
            tool_indexes,
            finished,
        } = &mut parts;
        let walked = json::walk(payload, &|k| k == "choices", &mut |path, r, kind| {
            let [c, Seg::Idx(k), rest @ ..] = path else {
                return;
            };
            if !c.is("choices") {
                return;
            }
            let number = |r: Range<usize>| std::str::from_utf8(&payload[r]).ok()?.parse().ok();
            match (rest, kind) {
                ([d, t], Scalar::String) if d.is("delta") && t.is("content") => {
                    texts.push((*k, None, r))
                }
                ([t], Scalar::String) if t.is("text") => texts.push((*k, None, r)),
                ([d, tc, Seg::Idx(j), f, a], Scalar::String)
                    if d.is("delta")
                        && tc.is("tool_calls")
                        && f.is("function")
                        && a.is("arguments") =>
                {
                    texts.push((*k, Some(*j), r))
                }
                ([d, tc, Seg::Idx(j), i], Scalar::Other)
                    if d.is("delta") && tc.is("tool_calls") && i.is("index") =>
                {
                    if let Some(v) = number(r) {
                        tool_indexes.push((*k, *j, v));
                    }
                }
                ([i], Scalar::Other) if i.is("index") => {
                    if let Some(v) = number(r) {
                        indexes.push((*k, v));
                    }
                }
                // `""` (some servers send it on every chunk) is no finish.
                ([f], Scalar::String) if f.is("finish_reason") && r.len() > 2 => finished.push(*k),
                _ => {}
            }
        });
        let result = if walked.is_none() {
            out.extend_from_slice(event);
            Ok(())
        } else {
            self.event_texts(scratch, event, (payload, range), &parts, out)
        };
        self.parts = parts;
        result
    }

    /// The rest of `event` (its `data:` payload and the payload's range in
    /// it): the choices' texts go through their channels.
    fn event_texts(
        &mut self,
        scratch: &Scratch,
        event: &[u8],
        (payload, range): (&[u8], Range<usize>),
        parts: &EventParts,
        out: &mut Vec<u8>,
    ) -> Result<(), GatewayError> {
        let EventParts {
            texts, finished, ..
        } = parts;
        self.template.clear();
        self.template.extend_from_slice(payload);
        // Allocated only when a text changes.
        let mut new_payload = Vec::new();
        let mut at = 0;
        let mut text_out = std::mem::take(&mut self.text_out);
        let mut synthetic = Vec::new();
        for (n, (k, j, r)) in texts.iter().enumerate() {
            let text = json::decode(&payload[r.clone()]).ok_or_else(deny_error)?;
            let index = parts.index_of(*k);
            let tool = j.map(|j| parts.tool_index_of(*k, j));
            // A later call of the same choice in this event ends this text
            // (the content, or an earlier call): its tail goes out here,
            // ahead of the next call's text.
            let ended_by_next_call = texts[n + 1..].iter().any(|(k2, j2, _)| {
                k2 == k && j2.is_some_and(|j2| Some(parts.tool_index_of(*k, j2)) != tool)
            });
            let opened = self.channels.len();
            let c = self.channel(index, tool)?;
            if tool.is_some() && c == opened {
                // Tool calls stream one after the other, after the
                // content: a new one ends the content and earlier calls.
                self.flush_before(
                    scratch,
                    payload,
                    |ch| ch.index == index && ch.tool != tool,
                    &mut synthetic,
                );
            }
            text_out.clear();
            if let Err(e) = self.piece(scratch, c, text.as_bytes(), &mut text_out) {
                self.text_out = text_out;
                return Err(e);
            }
            if finished.contains(k) || ended_by_next_call {
                self.flush(scratch, c, &mut text_out);
            } else {
                self.count_stream(c);
            }
            if text_out != text.as_bytes() {
                new_payload.extend_from_slice(&payload[at..r.start]);
                json::push_text(&mut new_payload, &text_out);
                at = r.end;
            }
        }
        self.text_out = text_out;
        // The other channels of a finished choice: their held text goes
        // out in events of their own just before this one.
        for k in finished {
            let index = parts.index_of(*k);
            self.flush_before(scratch, payload, |ch| ch.index == index, &mut synthetic);
        }
        out.extend_from_slice(&synthetic);
        if at == 0 {
            out.extend_from_slice(event);
        } else {
            new_payload.extend_from_slice(&payload[at..]);
            out.extend_from_slice(&event[..range.start]);
            out.extend_from_slice(&new_payload);
            out.extend_from_slice(&event[range.end..]);
        }
        Ok(())
    }

    /// Ends the channels `which` selects, their held text going out as
    /// events of their own shaped like `template`.
    fn flush_before(
        &mut self,
        scratch: &Scratch,
        template: &[u8],
        which: impl Fn(&Channel) -> bool,
        out: &mut Vec<u8>,
    ) {
        let mut rest = Vec::new();
        for c in 0..self.channels.len() {
            if !which(&self.channels[c]) {
                continue;
            }
            rest.clear();
            self.flush(scratch, c, &mut rest);
            if !rest.is_empty() {
                let ch = &self.channels[c];
                synthetic_event(template, ch.index, ch.tool, &rest, out);
            }
        }
    }

    /// Releases every channel's held text as events of their own.
    fn flush_all(&mut self, scratch: &Scratch, out: &mut Vec<u8>) {
        let template = std::mem::take(&mut self.template);
        let shape = if template.is_empty() {
            &b"{}"[..]
        } else {
            &template
        };
        self.flush_before(scratch, shape, |_| true, out);
        self.template = template;
    }

    fn close_streams(&mut self) {
        let scratch = self.scratch.borrow();
        let Some(scratch) = scratch.as_ref() else {
            return;
        };
        for c in &mut self.channels {
            if let Some(s) = c.deny.take() {
                let _ = s.close(scratch, ());
            }
        }
    }
}

impl Drop for GuardFilter {
    fn drop(&mut self) {
        self.close_streams();
    }
}

/// The request's pseudonyms (placeholder, client's value), as they are put
/// back into text, and with each value escaped for a JSON string: tool-call
/// arguments are a JSON document, and a placeholder in them stands inside
/// a string literal.
struct Restored {
    plain: Vec<(Vec<u8>, String)>,
    in_json: Vec<(Vec<u8>, String)>,
}

impl Restored {
    fn new(plain: Vec<(Vec<u8>, String)>) -> Self {
        let in_json = plain
            .iter()
            .map(|(placeholder, value)| {
                let mut quoted = Vec::with_capacity(value.len() + 2);
                json::push_text(&mut quoted, value.as_bytes());
                let inner = String::from_utf8_lossy(&quoted[1..quoted.len() - 1]).into_owned();
                (placeholder.clone(), inner)
            })
            .collect();
        Self { plain, in_json }
    }

    /// The map for a text that is (`in_json`) or is not tool-call arguments.
    fn values(&self, in_json: bool) -> &[(Vec<u8>, String)] {
        if in_json {
            &self.in_json
        } else {
            &self.plain
        }
    }
}

/// The `data:` payload of an event and its range in the event.
fn data_of(event: &[u8]) -> Option<(&[u8], Range<usize>)> {
    let start = if event.starts_with(b"data:") {
        0
    } else {
        memchr::memmem::find(event, b"\ndata:")? + 1
    };
    let mut p = start + 5;
    if event.get(p) == Some(&b' ') {
        p += 1;
    }
    let end = p + memchr::memchr(b'\n', &event[p..]).unwrap_or(event.len() - p);
    let end = if end > p && event[end - 1] == b'\r' {
        end - 1
    } else {
        end
    };
    Some((&event[p..end], p..end))
}

/// An event carrying held-back text for choice `index` (for its tool call
/// `tool`'s arguments), shaped like the stream's own chunks (id, object,
/// created, model copied from `template`).
fn synthetic_event(template: &[u8], index: u64, tool: Option<u64>, text: &[u8], out: &mut Vec<u8>) {
    let t: serde_json::Value = serde_json::from_slice(template).unwrap_or_default();
    let text = String::from_utf8_lossy(text);
    let completion = t.get("object").and_then(|o| o.as_str()) == Some("text_completion");
    let choice = match tool {
        Some(tool) => serde_json::json!({"index": index, "delta": {"tool_calls": [
            {"index": tool, "function": {"arguments": text}}
        ]}, "finish_reason": null}),
        None if completion => {
            serde_json::json!({"index": index, "text": text, "finish_reason": null})
        }
        None => {
            serde_json::json!({"index": index, "delta": {"content": text}, "finish_reason": null})
        }
    };
    let mut v = serde_json::json!({"choices": [choice]});
    for key in ["id", "object", "created", "model"] {
        if let Some(x) = t.get(key) {
            v[key] = x.clone();
        }
    }
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(&serde_json::to_vec(&v).unwrap_or_default());
    out.extend_from_slice(b"\n\n");
}

/// Splits complete events (each through its blank line); a trailing
/// partial event (a stream cut short) is returned as the last one.
fn split_events(buf: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = buf;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        // The first blank line, `\n\n` or `\r\n\r\n`: one pass over the
        // line feeds instead of a substring search for each.
        let n = memchr::memchr_iter(b'\n', rest)
            .find_map(|i| match &rest[i + 1..] {
                [b'\n', ..] => Some(i + 2),
                [b'\r', b'\n', ..] if i > 0 && rest[i - 1] == b'\r' => Some(i + 3),
                _ => None,
            })
            .unwrap_or(rest.len());
        let (ev, r) = rest.split_at(n);
        rest = r;
        Some(ev)
    })
}

impl AnswerFilter for GuardFilter {
    fn body(&mut self, body: &mut Vec<u8>) -> Result<(), GatewayError> {
        let timer = self.metrics.timer(Direction::Response);
        let scratch_rc = self.scratch.clone();
        let scratch_ref = scratch_rc.borrow();
        let Some(scratch) = scratch_ref.as_ref() else {
            return Ok(());
        };
        // (range, is tool-call arguments)
        let mut targets: Vec<(Range<usize>, bool)> = Vec::new();
        let src = std::mem::take(body);
        json::walk(&src, &|k| k == "choices", &mut |path, r, kind| {
            if kind != Scalar::String {
                return;
            }
            let target = match path {
                [c, Seg::Idx(_), t] => (c.is("choices") && t.is("text")).then_some(false),
                [c, Seg::Idx(_), m, t] => {
                    (c.is("choices") && m.is("message") && t.is("content")).then_some(false)
                }
                [c, Seg::Idx(_), m, tc, Seg::Idx(_), f, a] => (c.is("choices")
                    && m.is("message")
                    && tc.is("tool_calls")
                    && f.is("function")
                    && a.is("arguments"))
                .then_some(true),
                _ => None,
            };
            if let Some(in_json) = target {
                targets.push((r, in_json));
            }
        });
        // The answer is copied only when a text changed.
        let mut out: Option<Vec<u8>> = None;
        let mut at = 0;
        let mut text_out = Vec::new();
        let mut scanned = 0;
        for (r, in_json) in targets {
            let Some(text) = json::decode(&src[r.clone()]) else {
                continue;
            };
            scanned += text.len();
            text_out.clear();
            if let Err(e) = self.whole_text(scratch, text.as_bytes(), in_json, &mut text_out) {
                self.metrics.scanned(Direction::Response, scanned, &timer);
                *body = src;
                return Err(e);
            }
            if text_out != text.as_bytes() {
                let o = out.get_or_insert_with(|| Vec::with_capacity(src.len() + 64));
                o.extend_from_slice(&src[at..r.start]);
                json::push_text(o, &text_out);
                at = r.end;
            }
        }
        *body = match out {
            Some(mut o) => {
                o.extend_from_slice(&src[at..]);
                o
            }
            None => src,
        };
        self.metrics.scanned(Direction::Response, scanned, &timer);
        Ok(())
    }

    fn events(&mut self, events: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let timer = self.metrics.timer(Direction::Response);
        let scratch_rc = self.scratch.clone();
        let scratch_ref = scratch_rc.borrow();
        let Some(scratch) = scratch_ref.as_ref() else {
            out.extend_from_slice(events);
            return Ok(());
        };
        let result = split_events(events).try_for_each(|ev| self.event(scratch, ev, out));
        self.metrics
            .scanned(Direction::Response, events.len(), &timer);
        result
    }

    fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), GatewayError> {
        let scratch_rc = self.scratch.clone();
        let scratch_ref = scratch_rc.borrow();
        if let Some(scratch) = scratch_ref.as_ref() {
            self.flush_all(scratch, out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events as the two substring searches split them.
    fn reference(buf: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = buf;
        while !rest.is_empty() {
            let lf = memchr::memmem::find(rest, b"\n\n").map(|i| i + 2);
            let crlf = memchr::memmem::find(rest, b"\r\n\r\n").map(|i| i + 4);
            let n = match (lf, crlf) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(rest.len()),
            };
            let (ev, r) = rest.split_at(n);
            out.push(ev);
            rest = r;
        }
        out
    }

    const CONFIG: &str = r#"
server = { listen = "127.0.0.1:0" }
upstreams = [{ name = "a", url = "http://127.0.0.1:1" }]
models = [{ name = "m", targets = [{ upstream = "a" }] }]
pii = { default_policy = "p", policies = { p = { action = "mask", entities = ["email", "iban"], scan_responses = true } } }
"#;

    fn chunk(choice: serde_json::Value) -> Vec<u8> {
        let v = serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [choice]});
        format!("data: {v}\n\n").into_bytes()
    }

    fn call(tool: u64, args: &str) -> serde_json::Value {
        serde_json::json!({"index": 0, "delta": {"tool_calls": [{"index": tool, "function": {"arguments": args}}]}, "finish_reason": null})
    }

    /// Content and each tool call's arguments, accumulated the way an
    /// OpenAI client does (by choice and tool call `index`).
    fn accumulate(out: &[u8]) -> (String, Vec<String>, Vec<String>) {
        let (mut content, mut args, mut finishes) = (String::new(), Vec::new(), Vec::new());
        for ev in split_events(out) {
            let (payload, _) = data_of(ev).expect("a data line");
            if payload == b"[DONE]" {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(payload).expect("valid JSON");
            let c = &v["choices"][0];
            content.push_str(c["delta"]["content"].as_str().unwrap_or(""));
            for t in c["delta"]["tool_calls"].as_array().into_iter().flatten() {
                let i = t["index"].as_u64().expect("index") as usize;
                if args.len() <= i {
                    args.resize(i + 1, String::new());
                }
                args[i].push_str(t["function"]["arguments"].as_str().unwrap_or(""));
            }
            if let Some(f) = c["finish_reason"].as_str() {
                finishes.push(f.to_owned());
            }
        }
        (content, args, finishes)
    }

    /// `events` through the answer filter of CONFIG's policy, then
    /// [`finish`](AnswerFilter::finish): what the client receives.
    fn through_filter(events: &[Vec<u8>]) -> Vec<u8> {
        let cfg = crate::config::parse_str(CONFIG, std::path::Path::new(".")).expect("config");
        let snapshot = crate::config::snapshot::Snapshot::build(&cfg, CONFIG).expect("snapshot");
        let guard = snapshot.guard.as_deref().expect("guard");
        let gw = GuardWorker::new(Some(guard));
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let mut filter = guard
            .inspect_request(&gw, None, body)
            .expect("allowed")
            .filter
            .expect("answers are scanned");
        let mut out = Vec::new();
        for e in events {
            filter.events(e, &mut out).expect("passes");
        }
        filter.finish(&mut out).expect("passes");
        out
    }

    #[test]
    fn tool_call_arguments_are_masked_across_events_and_calls() {
        // Content first, then call 0 with an email split over three
        // events, then call 1 (an IBAN split), the finish in an event of
        // its own: as servers stream parallel tool calls.
        let events = [
            chunk(
                serde_json::json!({"index": 0, "delta": {"role": "assistant", "content": "Mailing jan@exa"}, "finish_reason": null}),
            ),
            chunk(
                serde_json::json!({"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "send", "arguments": "{\"to\": \"piet.de"}}]}, "finish_reason": null}),
            ),
            chunk(call(0, "vries@exam")),
            chunk(call(0, "ple.org\"}")),
            chunk(call(1, "{\"iban\": \"NL91 ABNA 04")),
            chunk(call(1, "17 1643 00\"}")),
            chunk(serde_json::json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"})),
            b"data: [DONE]\n\n".to_vec(),
        ];
        let out = through_filter(&events);
        let (content, args, finishes) = accumulate(&out);
        assert_eq!(content, "Mailing jan@exa");
        assert_eq!(args, [r#"{"to": "[EMAIL]"}"#, r#"{"iban": "[IBAN]"}"#]);
        assert_eq!(finishes, ["tool_calls"]);
        let text = String::from_utf8_lossy(&out);
        assert!(text.contains(r#""id":"call_a""#), "{text}");
        // The content's held tail is out before the first call begins.
        let call_a = text.find("call_a").expect("call a");
        assert!(text[..call_a].contains("exa"), "{text}");
        // Call 0's held text is out before call 1 begins.
        let first_iban = text.find("iban").expect("call 1");
        assert!(text[..first_iban].contains("[EMAIL]"), "{text}");
        assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    }

    #[test]
    fn calls_sharing_an_event_keep_their_order() {
        // Two calls in one chunk (as some servers send them), the first
        // complete: its tail must not overtake its head and its id.
        let both = serde_json::json!({"index": 0, "delta": {"tool_calls": [
            {"index": 0, "id": "call_a", "type": "function", "function": {"name": "f", "arguments": "{\"a\": 1}"}},
            {"index": 1, "id": "call_b", "type": "function", "function": {"name": "g", "arguments": "{\"to\": \"jan@exa"}}
        ]}, "finish_reason": null});
        let events = [
            chunk(both),
            chunk(call(1, "mple.nl\"}")),
            chunk(serde_json::json!({"index": 0, "delta": {}, "finish_reason": "tool_calls"})),
            b"data: [DONE]\n\n".to_vec(),
        ];
        let out = through_filter(&events);
        let (_, args, _) = accumulate(&out);
        assert_eq!(args, [r#"{"a": 1}"#, r#"{"to": "[EMAIL]"}"#]);
        // The first event the client gets is the chunk with call a's id.
        let first = split_events(&out).next().expect("an event");
        assert!(
            String::from_utf8_lossy(first).contains("call_a"),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn a_character_split_by_the_hold_back_arrives_whole() {
        let content = |t: &str| {
            chunk(serde_json::json!({"index": 0, "delta": {"content": t}, "finish_reason": null}))
        };
        // Each piece ends two bytes into the next character's bytes.
        let events = [
            content("caf\u{e9}s "),
            content("na\u{ef}ve \u{1f600}"),
            content("x \u{e9}t\u{e9}"),
            b"data: [DONE]\n\n".to_vec(),
        ];
        let out = through_filter(&events);
        let (text, _, _) = accumulate(&out);
        assert_eq!(text, "caf\u{e9}s na\u{ef}ve \u{1f600}x \u{e9}t\u{e9}");
    }

    #[test]
    fn an_empty_finish_reason_is_no_finish() {
        let piece = |t: &str| {
            chunk(serde_json::json!({"index": 0, "delta": {"content": t}, "finish_reason": ""}))
        };
        let events = [
            piece("write to jan@exa"),
            piece("mple.nl today"),
            b"data: [DONE]\n\n".to_vec(),
        ];
        let (text, _, _) = accumulate(&through_filter(&events));
        assert_eq!(text, "write to [EMAIL] today");
    }

    #[test]
    fn splits_events_at_the_first_blank_line() {
        let inputs: [&[u8]; 9] = [
            b"data: a\n\ndata: b\n\n",
            b"data: a\r\n\r\ndata: b\r\n\r\n",
            b"data: a\n\r\n\ndata: b",
            b"\n\n\n",
            b"\r\n\r\n\r\n",
            b"x\n\r\ny\r\n\n",
            b"data: cut short",
            b"\r\r\n\r\n",
            b"",
        ];
        for input in inputs {
            assert_eq!(
                split_events(input).collect::<Vec<_>>(),
                reference(input),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }
}
