//! Agent policies (`[[agents]]`): which tools a team's agents may offer a
//! model and have it call, and how long a session may go on.
//!
//! - Request: every tool the body offers (`tools[].function.name`, legacy
//!   `functions[].name`) must pass the team's policy, else 403
//!   `tool_not_allowed` before anything is sent ([`check_tools`]).
//! - Answer: [`ToolCallFilter`] is an answer filter: a whole answer whose
//!   `tool_calls` (or legacy `function_call`) names a forbidden tool is
//!   replaced by the 403 error; in a stream the event naming the tool is
//!   not sent and the stream ends with an error event, so the agent never
//!   receives the call.
//! - Sessions: requests carrying `x-sluice-session` are counted per
//!   (key, session id) in [`Sessions`]; past `max_turns` requests or
//!   `max_session_s` seconds after the first one they get 429
//!   `session_limit`.
//!
//! [`Sessions`] is a map split into 64 shards, each behind its own mutex
//! held for one lookup-and-increment. It is only touched by requests that
//! carry the session header and whose team has session limits; every other
//! request never sees it.

use super::auth::{AgentPolicy, Principal, Team};
use super::filter::AnswerFilter;
use crate::api::GatewayError;
use memchr::memmem;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Checks the tools a request offers against the principal's team policy.
pub fn check_tools(principal: &Principal, tools: &[Box<str>]) -> Result<(), GatewayError> {
    let Some(policy) = &principal.team.agent else {
        return Ok(());
    };
    match tools.iter().find(|t| !policy.tool_allowed(t)) {
        Some(t) => Err(GatewayError::ToolNotAllowed(t.to_string())),
        None => Ok(()),
    }
}

/// Whether the policy restricts tools at all (else no answer filter).
pub fn restricts_tools(policy: &AgentPolicy) -> bool {
    policy.allowed_tools.is_some() || !policy.denied_tools.is_empty()
}

/// Replaces answers that call a tool the team's policy forbids.
pub struct ToolCallFilter {
    team: Arc<Team>,
}

impl ToolCallFilter {
    /// A filter for `team`, when its agent policy restricts tools.
    pub fn for_team(team: &Arc<Team>) -> Option<Box<dyn AnswerFilter>> {
        let policy = team.agent.as_ref()?;
        restricts_tools(policy)
            .then(|| Box::new(ToolCallFilter { team: team.clone() }) as Box<dyn AnswerFilter>)
    }

    fn policy(&self) -> Option<&AgentPolicy> {
        self.team.agent.as_ref()
    }

    /// The first forbidden tool named in one JSON chunk or answer; `part`
    /// is `message` for whole answers, `delta` for stream events.
    fn forbidden(&self, json: &[u8], part: &str) -> Option<String> {
        if memmem::find(json, b"tool_calls").is_none()
            && memmem::find(json, b"function_call").is_none()
        {
            return None;
        }
        let policy = self.policy()?;
        let Ok(value) = serde_json::from_slice::<Value>(json) else {
            return None;
        };
        let found = called_tools(&value, part)
            .find(|name| !policy.tool_allowed(name))
            .map(str::to_owned);
        found
    }
}

/// The tool names an answer (`part` = `message`) or a stream chunk
/// (`part` = `delta`) calls.
pub fn called_tools<'a>(value: &'a Value, part: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    value
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(move |choice| choice.get(part))
        .flat_map(|m| {
            let calls = m
                .get("tool_calls")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("function"));
            calls.chain(m.get("function_call"))
        })
        .filter_map(|f| f.get("name").and_then(Value::as_str))
}

impl AnswerFilter for ToolCallFilter {
    fn body(&mut self, body: &mut Vec<u8>) -> Result<(), GatewayError> {
        match self.forbidden(body, "message") {
            Some(name) => {
                crate::metrics::tool_call_blocked();
                Err(GatewayError::ToolNotAllowed(name))
            }
            None => Ok(()),
        }
    }

    fn events(&mut self, events: &[u8], out: &mut Vec<u8>) -> Result<(), GatewayError> {
        for event in crate::http::sse::events(events) {
            for data in crate::http::sse::data_lines(event) {
                if let Some(name) = self.forbidden(data, "delta") {
                    crate::metrics::tool_call_blocked();
                    return Err(GatewayError::ToolNotAllowed(name));
                }
            }
            out.extend_from_slice(event);
        }
        Ok(())
    }
}

const SHARDS: usize = 64;
/// A shard sweeps out old sessions after this many new ones.
const SWEEP_EVERY: u32 = 1024;
/// Longest session id kept (longer ones are refused as malformed).
pub const MAX_SESSION_ID: usize = 128;

struct Session {
    started: Instant,
    last: Instant,
    turns: u32,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Box<str>, Session>,
    inserted: u32,
}

/// Session counters per (key, session id), shared by every worker.
pub struct Sessions {
    shards: Box<[Mutex<Shard>]>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl Sessions {
    /// Counts one turn of `session` for `principal`; Err when the session
    /// is over its turns or its duration. No-op without session limits.
    pub fn turn(
        &self,
        principal: &Principal,
        session: &[u8],
        now: Instant,
    ) -> Result<(), GatewayError> {
        let Some(policy) = principal.team.agent.as_ref().filter(|p| p.has_sessions()) else {
            return Ok(());
        };
        if session.len() > MAX_SESSION_ID || session.is_empty() {
            return Err(GatewayError::InvalidField(
                "x-sluice-session",
                "a session id of 1 to 128 bytes",
            ));
        }
        // key + session id: a session of one key is not another key's.
        let mut id = String::with_capacity(session.len() + 40);
        match &principal.key {
            Some(k) => id.push_str(&k.id),
            None => {
                id.push_str("jwt:");
                id.push_str(&principal.team.name);
                id.push(':');
                id.push_str(principal.user.as_deref().unwrap_or(""));
            }
        }
        id.push('\0');
        id.push_str(&String::from_utf8_lossy(session));
        let shard = &self.shards
            [(crate::api::request::stable_hash(id.as_bytes()) as usize) % self.shards.len()];
        let mut shard = shard
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !shard.map.contains_key(id.as_str()) {
            shard.inserted += 1;
            if shard.inserted >= SWEEP_EVERY {
                shard.inserted = 0;
                let keep = retention(policy);
                shard
                    .map
                    .retain(|_, s| now.saturating_duration_since(s.last) < keep);
            }
        }
        let s = shard.map.entry(id.into()).or_insert(Session {
            started: now,
            last: now,
            turns: 0,
        });
        s.last = now;
        if let Some(max) = policy.max_session_s {
            if now.saturating_duration_since(s.started) > Duration::from_secs(max) {
                return Err(GatewayError::SessionLimit(format!(
                    "This session is over its time limit of {max} seconds; start a new session."
                )));
            }
        }
        if let Some(max) = policy.max_turns {
            if s.turns >= max {
                return Err(GatewayError::SessionLimit(format!(
                    "This session is over its limit of {max} turns; start a new session."
                )));
            }
        }
        s.turns += 1;
        Ok(())
    }

    /// Sessions currently remembered (for tests and reports).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |s| s.map.len()))
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How long an idle session is remembered: twice its longest duration,
/// at least one day (a forgotten session id would start over).
fn retention(policy: &AgentPolicy) -> Duration {
    Duration::from_secs(policy.max_session_s.unwrap_or(0).saturating_mul(2))
        .max(Duration::from_secs(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(allowed: &[&str], denied: &[&str]) -> ToolCallFilter {
        let cfg = crate::config::AgentConfig {
            team: "t".into(),
            allowed_tools: Some(allowed.iter().map(|s| s.to_string()).collect()),
            denied_tools: denied.iter().map(|s| s.to_string()).collect(),
            max_turns: None,
            max_session_s: None,
        };
        ToolCallFilter {
            team: Arc::new(super::super::auth::test_team(Some(&cfg))),
        }
    }

    #[test]
    fn whole_answers() {
        let mut f = filter(&["search_kb"], &["delete_*"]);
        let ok = br#"{"choices":[{"message":{"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"search_kb","arguments":"{}"}}]}}]}"#;
        let mut body = ok.to_vec();
        assert!(f.body(&mut body).is_ok());
        assert_eq!(body, ok);
        let bad =
            br#"{"choices":[{"message":{"tool_calls":[{"function":{"name":"delete_user"}}]}}]}"#;
        assert!(matches!(
            f.body(&mut bad.to_vec()),
            Err(GatewayError::ToolNotAllowed(n)) if n == "delete_user"
        ));
        let legacy =
            br#"{"choices":[{"message":{"function_call":{"name":"other","arguments":""}}}]}"#;
        assert!(f.body(&mut legacy.to_vec()).is_err());
        let text = br#"{"choices":[{"message":{"content":"tool_calls"}}]}"#;
        assert!(f.body(&mut text.to_vec()).is_ok());
    }

    #[test]
    fn stream_events() {
        let mut f = filter(&["search_kb"], &["delete_*"]);
        let first = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
        let call = b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"delete_all\"}}]}}]}\n\n";
        let mut events = first.to_vec();
        events.extend_from_slice(call);
        let mut out = Vec::new();
        assert!(f.events(&events, &mut out).is_err());
        assert_eq!(out, first);
        let good = b"data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"search_kb\"}}]}}]}\r\n\r\ndata: [DONE]\n\n";
        out.clear();
        assert!(f.events(good, &mut out).is_ok());
        assert_eq!(out, good);
    }
}
