//! The request view: the few fields of an OpenAI request body that sluice's
//! policies read, parsed with simd-json from a scratch copy (simd-json
//! parses in place) so the original bytes stay untouched for forwarding.

use super::GatewayError;
use crate::config::snapshot::ModelRef;
use serde::Deserialize;

/// Which OpenAI endpoint a request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat_completions",
            Endpoint::Completions => "completions",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

#[derive(Deserialize)]
struct View<'a> {
    #[serde(borrow, default)]
    model: Option<&'a str>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(borrow, default)]
    user: Option<&'a str>,
    #[serde(borrow, default)]
    tools: Option<Vec<ToolView<'a>>>,
    #[serde(borrow, default)]
    functions: Option<Vec<NameView<'a>>>,
}

/// `tools[]`: `{"type":"function","function":{"name":...}}`.
#[derive(Deserialize)]
struct ToolView<'a> {
    #[serde(borrow, default)]
    function: Option<NameView<'a>>,
}

/// Anything with a `name` (`tools[].function`, legacy `functions[]`).
#[derive(Deserialize)]
struct NameView<'a> {
    #[serde(borrow, default)]
    name: Option<&'a str>,
}

/// What the pipeline needs to know of a request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFacts {
    /// What the requested model name refers to.
    pub model: ModelRef,
    pub stream: bool,
    /// A stable hash of the body's `user`, for sticky experiments.
    pub user: Option<u64>,
    /// Names of the tools the request offers (`tools[].function.name`,
    /// legacy `functions[].name`); empty (no allocation) without tools.
    pub tools: Vec<Box<str>>,
}

/// Reused parse buffers of one worker.
#[derive(Default)]
pub struct ParseScratch {
    copy: Vec<u8>,
    buffers: Option<simd_json::Buffers>,
}

impl ParseScratch {
    /// Parses `body`, resolving the model name with `lookup`.
    pub fn facts(
        &mut self,
        body: &[u8],
        lookup: impl FnOnce(&str) -> Option<ModelRef>,
    ) -> Result<RequestFacts, GatewayError> {
        if body.is_empty() {
            return Err(GatewayError::InvalidJson("the body is empty".into()));
        }
        self.copy.clear();
        self.copy.extend_from_slice(body);
        let buffers = self
            .buffers
            .get_or_insert_with(|| simd_json::Buffers::new(body.len()));
        let view: View<'_> = simd_json::serde::from_slice_with_buffers(&mut self.copy, buffers)
            .map_err(|e| GatewayError::InvalidJson(describe(&e)))?;
        let name = view.model.ok_or(GatewayError::MissingField("model"))?;
        let model = lookup(name).ok_or_else(|| GatewayError::ModelNotFound(name.to_owned()))?;
        Ok(RequestFacts {
            model,
            stream: view.stream.unwrap_or(false),
            user: view.user.map(|u| stable_hash(u.as_bytes())),
            tools: view
                .tools
                .into_iter()
                .flatten()
                .filter_map(|t| t.function?.name)
                .chain(view.functions.into_iter().flatten().filter_map(|f| f.name))
                .map(Box::from)
                .collect(),
        })
    }
}

/// FNV-1a: stable across processes and versions, so a sticky choice
/// survives restarts and is the same on every node.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn describe(e: &simd_json::Error) -> String {
    use simd_json::ErrorType;
    match e.error() {
        ErrorType::InvalidUtf8 => "the body is not valid UTF-8".into(),
        ErrorType::ExpectedMap => "the body must be a JSON object".into(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(body: &[u8]) -> Result<RequestFacts, GatewayError> {
        ParseScratch::default().facts(body, |m| (m == "m1").then_some(ModelRef::Model(7)))
    }

    #[test]
    fn reads_model_and_stream() {
        let f = facts(
            br#"{"messages":[{"role":"user","content":"hi \"m2\""}],"model":"m1","stream":true,"user":"u1"}"#,
        )
        .unwrap();
        assert_eq!(f.model, ModelRef::Model(7));
        assert!(f.stream);
        assert_eq!(f.user, Some(stable_hash(b"u1")));
        assert!(f.tools.is_empty());
    }

    #[test]
    fn reads_tool_names() {
        let f = facts(
            br#"{"model":"m1","tools":[{"type":"function","function":{"name":"search_kb","parameters":{"type":"object","properties":{"q":{"type":"string"}}}}},{"type":"function","function":{"name":"delete_\u0075ser"}}],"functions":[{"name":"old_fn","parameters":{}}]}"#,
        )
        .unwrap();
        let names: Vec<&str> = f.tools.iter().map(|t| &**t).collect();
        assert_eq!(names, ["search_kb", "delete_user", "old_fn"]);
    }

    #[test]
    fn classifies_bad_bodies() {
        assert!(matches!(
            facts(b"{\"model\":"),
            Err(GatewayError::InvalidJson(_))
        ));
        assert!(matches!(facts(b"[1]"), Err(GatewayError::InvalidJson(_))));
        assert!(matches!(
            facts(b"{}"),
            Err(GatewayError::MissingField("model"))
        ));
        assert!(matches!(
            facts(br#"{"model":"nope"}"#),
            Err(GatewayError::ModelNotFound(_))
        ));
        assert!(matches!(
            facts(b"{\"model\":\"m\xff1\"}"),
            Err(GatewayError::InvalidJson(_))
        ));
    }
}
