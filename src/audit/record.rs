//! One audit record: what an auditor needs of one AI interaction, never a
//! secret and, unless `detail = "full"`, never personal data.

use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Serialize)]
pub struct Record<'a> {
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub team: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<&'a str>,
    pub endpoint: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_asked: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experiment: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<&'a str>,
    /// Sampling parameters as the client sent them.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<&'static str, serde_json::Value>,
    pub stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_in: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_out: Option<u64>,
    /// True when the model server reported no usage and the tokens are
    /// sluice's estimate.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tokens_estimated: bool,
    /// Cost at the answering model's price, in `currency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<&'a str>,
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    /// PII found in the request, by entity type (counts, never values).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub pii: BTreeMap<String, u64>,
    /// Why the request went where it went, or was refused: e.g.
    /// `retry:gpu-a:connect_error`, `fallback:llama-3.2-3b`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<String>,
    pub version: &'static str,
    pub config_sha256: &'a str,
    /// The request body, with `detail = "full"` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request: Option<serde_json::Value>,
    /// The answer's text as the client received it (a JSON answer whole, a
    /// stream's deltas joined), with content details only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion: Option<String>,
}

impl Record<'_> {
    pub fn to_line(&self) -> Vec<u8> {
        // Most records are 300-600 bytes: one allocation, not a doubling
        // series from zero.
        let mut line = Vec::with_capacity(768);
        match serde_json::to_writer(&mut line, self) {
            Ok(()) => line,
            Err(_) => Vec::new(),
        }
    }
}

/// The sampling parameters an auditor asks about, read from a request
/// body that simd-json has already accepted (only on the audit path).
pub fn sampling_params(body: &[u8]) -> BTreeMap<&'static str, serde_json::Value> {
    const KEYS: [&str; 7] = [
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "seed",
        "tool_choice",
    ];
    let mut out = BTreeMap::new();
    // One pass over the top-level members, whatever their number.
    crate::api::json::for_each_member(body, |raw_key, range| {
        let name = crate::api::json::key_name(raw_key);
        if let Some(key) = KEYS.iter().find(|k| name.as_deref() == Some(**k)) {
            if let Ok(v) = serde_json::from_slice(&body[range]) {
                out.insert(*key, v);
            }
        }
        true
    });
    out
}
