//! What a request is, for the cache: its canonical form split into the
//! parts that must match exactly (parameters that change the answer, tools,
//! the conversation before the last user turn, the system prompt) and the
//! question itself (the last user turn), hashed into the exact key and the
//! semantic scope. Decides also whether a request may use the cache at all.

use ring::digest::{digest, SHA256};
use serde_json::{Map, Value};

/// Members that never change the answer: how it is delivered and who asked.
/// Everything else (sampling parameters, tools, response format, ...) is
/// part of the key, so an unknown new parameter errs on the side of a miss.
const DELIVERY_ONLY: [&str; 6] = [
    "stream",
    "stream_options",
    "user",
    "metadata",
    "store",
    "model",
];

/// OpenAI's default temperature, assumed when a request sends none.
const DEFAULT_TEMPERATURE: f64 = 1.0;

/// A cacheable request's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// SHA-256 of everything that determines the answer (within a namespace).
    pub exact: [u8; 32],
    /// Hash of everything but the last user turn: a semantic candidate must
    /// have the same scope to be considered.
    pub scope: u64,
    /// The last user turn's text; None when the conversation does not end
    /// with one (then only the exact cache applies).
    pub question: Option<String>,
    /// The client asked for a usage event in its stream.
    pub include_usage: bool,
}

/// Why a request does not use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uncacheable {
    /// The body is not a JSON object with `messages`.
    Shape,
    /// Sampled above `max_temperature`: the same question may rightly get
    /// another answer.
    Temperature,
}

/// Reads a chat completion request body into its cache identity.
pub fn request_key(body: &[u8], max_temperature: f64) -> Result<RequestKey, Uncacheable> {
    // Most traffic is sampled above `max_temperature`: decide that from
    // the raw member before building a tree of the whole body. (Bypassing
    // is always safe; the tree's own check below stays the rule.)
    if let Some(raw) = crate::api::json::member_range(body, "temperature").map(|r| &body[r]) {
        if serde_json::from_slice::<f64>(raw).is_ok_and(|t| t > max_temperature) {
            return Err(Uncacheable::Temperature);
        }
    } else if DEFAULT_TEMPERATURE > max_temperature {
        return Err(Uncacheable::Temperature);
    }
    let Ok(Value::Object(mut request)) = serde_json::from_slice::<Value>(body) else {
        return Err(Uncacheable::Shape);
    };
    let temperature = match request.get("temperature") {
        None | Some(Value::Null) => DEFAULT_TEMPERATURE,
        Some(t) => t.as_f64().ok_or(Uncacheable::Shape)?,
    };
    if temperature > max_temperature {
        return Err(Uncacheable::Temperature);
    }
    let include_usage = request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    for member in DELIVERY_ONLY {
        request.remove(member);
    }
    let Some(Value::Array(messages)) = request.remove("messages") else {
        return Err(Uncacheable::Shape);
    };
    // serde_json's map is ordered by key, so serializing is canonical once
    // numbers are too (`0`, `0.0` and `0e0` are the same temperature).
    request.values_mut().for_each(canonical_numbers);
    let last_user = messages
        .last()
        .filter(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .and_then(|m| message_text(m.get("content")?));
    // One buffer: parameters, 0, the context (all but a final user turn),
    // then 0 and that turn. JSON never holds a raw 0 byte, so the parts
    // cannot run into each other; the scope hashes the prefix, the exact
    // key the whole, and no message is serialized twice.
    let (context, question_turn) = match last_user {
        Some(_) => messages.split_at(messages.len() - 1),
        None => (&messages[..], &[][..]),
    };
    let mut canonical = Vec::with_capacity(body.len());
    serde_json::to_writer(&mut canonical, &request).map_err(|_| Uncacheable::Shape)?;
    canonical.push(0);
    serde_json::to_writer(&mut canonical, context).map_err(|_| Uncacheable::Shape)?;
    let scope = digest(&SHA256, &canonical);
    canonical.push(0);
    if let Some(turn) = question_turn.first() {
        serde_json::to_writer(&mut canonical, turn).map_err(|_| Uncacheable::Shape)?;
    }
    let exact = digest(&SHA256, &canonical);
    let mut exact_key = [0u8; 32];
    exact_key.copy_from_slice(exact.as_ref());
    let mut scope_word = [0u8; 8];
    scope_word.copy_from_slice(&scope.as_ref()[..8]);
    Ok(RequestKey {
        exact: exact_key,
        scope: u64::from_le_bytes(scope_word),
        question: last_user,
        include_usage,
    })
}

/// Writes every number as a float, so equal values serialize equally.
fn canonical_numbers(value: &mut Value) {
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64().and_then(serde_json::Number::from_f64) {
                *n = f;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(canonical_numbers),
        Value::Object(members) => members.values_mut().for_each(canonical_numbers),
        _ => {}
    }
}

/// A message's text: a string, or its text parts joined by newlines.
/// Messages with other parts (images, audio) have no text key: None.
fn message_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let mut text = String::new();
            for part in parts {
                let part: &Map<String, Value> = part.as_object()?;
                if part.get("type").and_then(Value::as_str) != Some("text") {
                    return None;
                }
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(part.get("text")?.as_str()?);
            }
            Some(text)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(body: &str) -> RequestKey {
        request_key(body.as_bytes(), 0.5).unwrap()
    }

    #[test]
    fn delivery_members_and_member_order_do_not_change_the_key() {
        let a = key(r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#);
        let b = key(
            r#"{"messages":[{"content":"hi","role":"user"}],"stream":true,"user":"u","temperature":0.0,"model":"alias"}"#,
        );
        assert_eq!(a, b);
        assert_eq!(a.question.as_deref(), Some("hi"));
    }

    #[test]
    fn parameters_tools_and_context_change_the_key_and_scope() {
        let base = key(r#"{"temperature":0,"messages":[{"role":"user","content":"hi"}]}"#);
        for other in [
            r#"{"temperature":0,"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"temperature":0,"tools":[{"type":"function","function":{"name":"f"}}],"messages":[{"role":"user","content":"hi"}]}"#,
            r#"{"temperature":0,"messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]}"#,
        ] {
            let k = key(other);
            assert_ne!(k.exact, base.exact, "{other}");
            assert_ne!(k.scope, base.scope, "{other}");
        }
        // Only the question differs: same scope, other key.
        let q = key(r#"{"temperature":0,"messages":[{"role":"user","content":"hello"}]}"#);
        assert_eq!(q.scope, base.scope);
        assert_ne!(q.exact, base.exact);
    }

    #[test]
    fn temperature_above_the_limit_or_missing_is_not_cached() {
        let hot = br#"{"temperature":0.7,"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(request_key(hot, 0.5), Err(Uncacheable::Temperature));
        let unset = br#"{"messages":[{"role":"user","content":"hi"}]}"#;
        assert_eq!(request_key(unset, 0.0), Err(Uncacheable::Temperature));
        assert!(request_key(unset, 1.0).is_ok());
        assert_eq!(request_key(b"[1]", 1.0), Err(Uncacheable::Shape));
        assert_eq!(
            request_key(br#"{"temperature":"x","messages":[]}"#, 1.0),
            Err(Uncacheable::Shape)
        );
    }

    #[test]
    fn text_parts_are_joined_and_other_parts_have_no_question() {
        let k = key(
            r#"{"temperature":0,"messages":[{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}]}"#,
        );
        assert_eq!(k.question.as_deref(), Some("a\nb"));
        let image = key(
            r#"{"temperature":0,"messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        );
        assert_eq!(image.question, None);
        let tool = key(
            r#"{"temperature":0,"messages":[{"role":"user","content":"a"},{"role":"tool","content":"r","tool_call_id":"1"}]}"#,
        );
        assert_eq!(tool.question, None);
    }
}
