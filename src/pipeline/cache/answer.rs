//! Cached answers: recording a completion as the client received it (a
//! whole JSON answer, or a stream's events assembled into the same shape)
//! and replaying it, as JSON or as an SSE stream a client cannot tell from
//! a live one (same event shapes, a usage event when asked for).

use crate::api::GatewayError;
use crate::http::sse;
use crate::pipeline::filter::AnswerFilter;
use serde_json::{json, Map, Value};
use std::cell::RefCell;
use std::rc::Rc;

/// Largest answer kept (bytes of its JSON); longer ones are not cached.
const MAX_ANSWER: usize = 1 << 20;

/// One cached completion, shared by the exact and the semantic cache.
#[derive(Debug)]
pub struct Answer {
    /// The chat completion object (non-streamed shape) as the client got it.
    pub completion: Box<[u8]>,
    /// Tokens it cost when it was generated (prompt, completion).
    pub tokens: (u64, u64),
    /// Unix seconds when it was stored (TTL).
    pub stored_at: u64,
}

/// Records the answer on its way to the client. It is the last filter,
/// so what it keeps is what the client received; it never changes it.
pub struct Recorder {
    into: Rc<RefCell<Recording>>,
}

/// What a [`Recorder`] saw.
#[derive(Default)]
pub struct Recording {
    /// A whole JSON answer.
    body: Option<Vec<u8>>,
    /// A stream's pieces, assembled.
    stream: Option<Assembled>,
    /// Something made the answer unfit to be cached (an error event, an
    /// unreadable event, too long).
    spoiled: bool,
}

#[derive(Default)]
struct Assembled {
    head: Map<String, Value>,
    choices: Vec<Choice>,
    bytes: usize,
}

#[derive(Default)]
struct Choice {
    role: Option<String>,
    content: Option<String>,
    tool_calls: Vec<ToolCall>,
    finish_reason: Option<Value>,
}

#[derive(Default)]
struct ToolCall {
    id: Value,
    kind: Value,
    name: String,
    arguments: String,
}

impl Recorder {
    /// A filter that records into `into`.
    pub fn into(into: Rc<RefCell<Recording>>) -> Box<dyn AnswerFilter> {
        Box::new(Recorder { into })
    }

    #[cfg(test)]
    fn filter() -> (Box<dyn AnswerFilter>, Rc<RefCell<Recording>>) {
        let into = Rc::new(RefCell::new(Recording::default()));
        (Self::into(into.clone()), into)
    }
}

impl AnswerFilter for Recorder {
    fn body(&mut self, body: &mut Vec<u8>) -> Result<(), GatewayError> {
        let mut rec = self.into.borrow_mut();
        if body.len() > MAX_ANSWER {
            rec.spoiled = true;
        } else {
            rec.body = Some(body.clone());
        }
        Ok(())
    }

    fn events(&mut self, events: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        out.extend_from_slice(events);
        let mut rec = self.into.borrow_mut();
        if rec.spoiled {
            return Ok(());
        }
        for data in sse::data_lines(events) {
            if data == b"[DONE]" {
                continue;
            }
            let spoiled = match serde_json::from_slice::<Value>(data) {
                Ok(Value::Object(event)) => {
                    let assembled = rec.stream.get_or_insert_with(Assembled::default);
                    !assembled.add(event, data.len())
                }
                _ => true,
            };
            if spoiled {
                rec.spoiled = true;
                rec.stream = None;
                break;
            }
        }
        Ok(())
    }
}

impl Assembled {
    /// Adds one chunk; false when it makes the answer uncacheable.
    fn add(&mut self, mut event: Map<String, Value>, len: usize) -> bool {
        self.bytes += len;
        if self.bytes > MAX_ANSWER || event.contains_key("error") {
            return false;
        }
        let choices = match event.remove("choices") {
            Some(Value::Array(c)) => c,
            _ => Vec::new(),
        };
        if self.head.is_empty() {
            for key in ["id", "created", "model", "system_fingerprint"] {
                if let Some(v) = event.get(key) {
                    self.head.insert(key.into(), v.clone());
                }
            }
        }
        for choice in choices {
            let Some(slot) = indexed(&mut self.choices, &choice) else {
                return false;
            };
            if let Some(delta) = choice.get("delta") {
                if let Some(role) = delta.get("role").and_then(Value::as_str) {
                    slot.role = Some(role.to_owned());
                }
                if let Some(text) = delta.get("content").and_then(Value::as_str) {
                    slot.content.get_or_insert_with(String::new).push_str(text);
                }
                for call in delta
                    .get("tool_calls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let Some(tc) = indexed(&mut slot.tool_calls, call) else {
                        return false;
                    };
                    if let Some(id) = call.get("id") {
                        tc.id = id.clone();
                    }
                    if let Some(kind) = call.get("type") {
                        tc.kind = kind.clone();
                    }
                    if let Some(f) = call.get("function") {
                        if let Some(n) = f.get("name").and_then(Value::as_str) {
                            tc.name.push_str(n);
                        }
                        if let Some(a) = f.get("arguments").and_then(Value::as_str) {
                            tc.arguments.push_str(a);
                        }
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                slot.finish_reason = Some(reason.clone());
            }
        }
        true
    }

    /// The assembled chat completion; None unless every choice finished.
    fn completion(self) -> Option<Value> {
        if self.choices.is_empty() || self.choices.iter().any(|c| c.finish_reason.is_none()) {
            return None;
        }
        let mut out = self.head;
        out.insert("object".into(), "chat.completion".into());
        let choices = self
            .choices
            .into_iter()
            .enumerate()
            .map(|(i, c)| {
                let mut message = Map::new();
                message.insert(
                    "role".into(),
                    c.role.unwrap_or_else(|| "assistant".into()).into(),
                );
                message.insert("content".into(), c.content.map_or(Value::Null, Value::from));
                if !c.tool_calls.is_empty() {
                    let calls: Vec<Value> = c
                        .tool_calls
                        .into_iter()
                        .map(|t| {
                            json!({"id": t.id, "type": t.kind,
                                   "function": {"name": t.name, "arguments": t.arguments}})
                        })
                        .collect();
                    message.insert("tool_calls".into(), calls.into());
                }
                json!({"index": i, "message": message, "logprobs": null,
                       "finish_reason": c.finish_reason})
            })
            .collect::<Vec<_>>();
        out.insert("choices".into(), choices.into());
        Some(Value::Object(out))
    }
}

/// The element a delta's `index` names, created when first seen; None for
/// an index past 128 (no real answer has that many choices or calls).
fn indexed<'a, T: Default>(items: &'a mut Vec<T>, delta: &Value) -> Option<&'a mut T> {
    let index = delta.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
    if index > 128 {
        return None;
    }
    if items.len() <= index {
        items.resize_with(index + 1, T::default);
    }
    items.get_mut(index)
}

impl Recording {
    /// The completion to cache, if the answer was complete and readable.
    pub fn take_completion(&mut self) -> Option<Vec<u8>> {
        if self.spoiled {
            return None;
        }
        if let Some(body) = self.body.take() {
            // A completion has choices that all finished.
            let value: Value = serde_json::from_slice(&body).ok()?;
            let choices = value.get("choices")?.as_array()?;
            let finished = !choices.is_empty()
                && choices
                    .iter()
                    .all(|c| c.get("finish_reason").is_some_and(|r| !r.is_null()));
            return finished.then_some(body);
        }
        let value = self.stream.take()?.completion()?;
        serde_json::to_vec(&value).ok()
    }
}

/// How a replayed answer is delivered.
pub struct Replay {
    pub stream: bool,
    pub include_usage: bool,
}

/// The body a cache hit answers with: the cached completion with a fresh
/// id and creation time, as JSON or as SSE events ending in `[DONE]`.
pub fn replay(answer: &Answer, how: &Replay, now: u64, id: &str) -> Vec<u8> {
    let Ok(Value::Object(mut completion)) = serde_json::from_slice::<Value>(&answer.completion)
    else {
        return answer.completion.to_vec();
    };
    completion.insert("id".into(), id.into());
    completion.insert("created".into(), now.into());
    if !how.stream {
        return serde_json::to_vec(&completion).unwrap_or_default();
    }
    let mut head = Map::new();
    head.insert("id".into(), id.into());
    head.insert("object".into(), "chat.completion.chunk".into());
    head.insert("created".into(), now.into());
    for key in ["model", "system_fingerprint"] {
        if let Some(v) = completion.get(key) {
            head.insert(key.into(), v.clone());
        }
    }
    let mut out = Vec::with_capacity(answer.completion.len() * 2);
    let mut event = |choices: Value, usage: Option<&Value>| {
        let mut chunk = head.clone();
        chunk.insert("choices".into(), choices);
        if let Some(u) = usage {
            chunk.insert("usage".into(), u.clone());
        }
        out.extend_from_slice(b"data: ");
        let _ = serde_json::to_writer(&mut out, &chunk);
        out.extend_from_slice(b"\n\n");
    };
    let choices = completion
        .get("choices")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (i, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or_else(|| i.into());
        let message = choice.get("message").cloned().unwrap_or_default();
        let role = message.get("role").cloned().unwrap_or("assistant".into());
        event(
            json!([{"index": index, "delta": {"role": role, "content": ""}, "logprobs": null, "finish_reason": null}]),
            None,
        );
        if let Some(text) = message.get("content").and_then(Value::as_str) {
            for piece in pieces(text, 64) {
                event(
                    json!([{"index": index, "delta": {"content": piece}, "logprobs": null, "finish_reason": null}]),
                    None,
                );
            }
        }
        if let Some(calls) = message.get("tool_calls").and_then(Value::as_array) {
            let calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(k, c)| {
                    let mut c = c.clone();
                    if let Some(o) = c.as_object_mut() {
                        o.insert("index".into(), k.into());
                    }
                    c
                })
                .collect();
            event(
                json!([{"index": index, "delta": {"tool_calls": calls}, "logprobs": null, "finish_reason": null}]),
                None,
            );
        }
        let reason = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        event(
            json!([{"index": index, "delta": {}, "logprobs": null, "finish_reason": reason}]),
            None,
        );
    }
    if how.include_usage {
        let usage = completion.get("usage").cloned().unwrap_or_else(|| {
            json!({"prompt_tokens": answer.tokens.0, "completion_tokens": answer.tokens.1,
                   "total_tokens": answer.tokens.0 + answer.tokens.1})
        });
        event(json!([]), Some(&usage));
    }
    out.extend_from_slice(b"data: [DONE]\n\n");
    out
}

/// Splits text into pieces of about `size` bytes at char boundaries, the
/// way a model's stream delivers a few tokens per event.
fn pieces(text: &str, size: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = size.min(rest.len());
        while !rest.is_char_boundary(end) {
            end += 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(events: &[&str]) -> Option<Vec<u8>> {
        let (mut filter, rec) = Recorder::filter();
        let mut out = Vec::new();
        for e in events {
            filter.events(e.as_bytes(), &mut out).unwrap();
        }
        assert_eq!(out, events.concat().as_bytes(), "events pass unchanged");
        let taken = rec.borrow_mut().take_completion();
        taken
    }

    #[test]
    fn a_stream_is_assembled_into_a_completion_and_replayed_alike() {
        let events = [
            "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\ndata: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo é\"},\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
        ];
        let completion = record(&events).expect("complete");
        let v: Value = serde_json::from_slice(&completion).unwrap();
        assert_eq!(v["choices"][0]["message"]["content"], "Hello é");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["model"], "m");
        let answer = Answer {
            completion: completion.into(),
            tokens: (3, 2),
            stored_at: 0,
        };
        let how = Replay {
            stream: true,
            include_usage: true,
        };
        let sse = replay(&answer, &how, 99, "chatcmpl-x");
        let again = record(&[std::str::from_utf8(&sse).unwrap()]).unwrap();
        let w: Value = serde_json::from_slice(&again).unwrap();
        assert_eq!(w["choices"], v["choices"]);
        assert_eq!(w["id"], "chatcmpl-x");
        let text = String::from_utf8(sse).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(
            text.contains("\"usage\":{\"completion_tokens\":2"),
            "{text}"
        );
        assert!(text.contains("\"object\":\"chat.completion.chunk\""));
    }

    #[test]
    fn unfinished_errored_or_unreadable_streams_are_not_cached() {
        let start = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a\"},\"finish_reason\":null}]}\n\n";
        assert_eq!(record(&[start]), None);
        let error = "data: {\"error\":{\"message\":\"cut\"}}\n\n";
        let done =
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
        assert_eq!(record(&[start, error, done]), None);
        assert_eq!(record(&[start, "data: {oops\n\n", done]), None);
        assert!(record(&[start, done]).is_some());
    }

    #[test]
    fn tool_calls_are_joined_across_deltas() {
        let events = [
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"search\",\"arguments\":\"{\\\"q\\\":\"}}]},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"\\\"x\\\"}\"}}]},\"finish_reason\":\"tool_calls\"}]}\n\n",
        ];
        let v: Value = serde_json::from_slice(&record(&events).unwrap()).unwrap();
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["arguments"], "{\"q\":\"x\"}");
        assert_eq!(call["id"], "call_1");
        assert_eq!(v["choices"][0]["message"]["content"], Value::Null);
    }

    #[test]
    fn a_json_answer_is_kept_when_finished_and_replayed_with_a_new_id() {
        let (mut filter, rec) = Recorder::filter();
        let mut body = br#"{"id":"a","created":1,"choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#.to_vec();
        filter.body(&mut body).unwrap();
        let kept = rec.borrow_mut().take_completion().unwrap();
        let answer = Answer {
            completion: kept.into(),
            tokens: (1, 1),
            stored_at: 0,
        };
        let how = Replay {
            stream: false,
            include_usage: false,
        };
        let v: Value = serde_json::from_slice(&replay(&answer, &how, 5, "n")).unwrap();
        assert_eq!(v["id"], "n");
        assert_eq!(v["created"], 5);
        assert_eq!(v["choices"][0]["message"]["content"], "hi");
        let (mut filter, rec) = Recorder::filter();
        let mut cut =
            br#"{"choices":[{"index":0,"message":{"content":"hi"},"finish_reason":null}]}"#
                .to_vec();
        filter.body(&mut cut).unwrap();
        assert_eq!(rec.borrow_mut().take_completion(), None);
    }

    #[test]
    fn pieces_respect_char_boundaries() {
        let text = "ééééé";
        let joined: String = pieces(text, 3).collect();
        assert_eq!(joined, text);
        assert!(pieces(text, 3).all(|p| p.len() <= 4));
    }
}
