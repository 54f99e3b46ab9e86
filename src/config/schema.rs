//! The configuration schema: one struct per section of `sluice.reference.toml`.
//!
//! Every struct rejects unknown keys. Keys with a documented default carry it
//! here; keys without one are `Option<T>` so that later code can tell "set"
//! from "absent". Paths stay as written (relative to the configuration file's
//! folder); use [`Config::resolve`] to turn them into usable paths.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// Generates the small functions that `#[serde(default = "...")]` names.
macro_rules! defaults {
    ($($name:ident: $ty:ty = $val:expr;)*) => {
        $(fn $name() -> $ty { $val })*
    };
}

defaults! {
    d_true: bool = true;
    d_max_body_bytes: u64 = 8_388_608;
    d_header_timeout_ms: u64 = 10_000;
    d_idle_timeout_ms: u64 = 60_000;
    d_drain_timeout_ms: u64 = 30_000;
    d_max_connections: u32 = 256;
    d_connect_timeout_ms: u64 = 1_000;
    d_first_byte_timeout_ms: u64 = 30_000;
    d_total_timeout_ms: u64 = 600_000;
    d_health_interval_ms: u64 = 2_000;
    d_weight: u32 = 1;
    d_admin_token_env: String = "SLUICE_ADMIN_TOKEN".into();
    d_batch_ms: u64 = 50;
    d_retention_days: u32 = 180;
    d_segment_bytes: u64 = 67_108_864;
    d_lease_fraction: f64 = 0.02;
    d_fallback_share: f64 = 0.5;
    d_team_claim: String = "team".into();
    d_user_claim: String = "sub".into();
}

/// The whole configuration file. Only `[server]` (with `listen`) is required.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    /// Absent: no metrics listener.
    pub metrics: Option<MetricsConfig>,
    /// Absent: no admin API.
    pub admin: Option<AdminConfig>,
    pub store: Option<StoreConfig>,
    pub audit: Option<AuditConfig>,
    pub billing: Option<BillingConfig>,
    pub cluster: Option<ClusterConfig>,
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    #[serde(default)]
    pub experiments: Vec<ExperimentConfig>,
    pub resilience: Option<ResilienceConfig>,
    pub auth: Option<AuthConfig>,
    #[serde(default)]
    pub teams: Vec<TeamConfig>,
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    pub alerts: Option<AlertsConfig>,
    pub pii: Option<PiiConfig>,
    pub safety: Option<SafetyConfig>,
    pub cache: Option<CacheConfig>,
    #[serde(default)]
    pub agents: Vec<AgentConfig>,
    #[serde(default)]
    pub approvals: Vec<ApprovalConfig>,
    /// The folder of the configuration file; relative paths are resolved against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Config {
    /// `p` as usable path: absolute paths unchanged, relative ones joined to [`Config::base_dir`].
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }
}

// ---------------------------------------------------------------- server, listeners, storage

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Public listener, `ip:port`.
    pub listen: String,
    /// Worker threads; 0 = one per CPU in the process's affinity mask.
    #[serde(default)]
    pub workers: u32,
    #[serde(default = "d_true")]
    pub pin_cores: bool,
    #[serde(default)]
    pub io: IoMode,
    #[serde(default = "d_max_body_bytes")]
    pub max_body_bytes: u64,
    #[serde(default = "d_header_timeout_ms")]
    pub header_timeout_ms: u64,
    #[serde(default = "d_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "d_drain_timeout_ms")]
    pub drain_timeout_ms: u64,
    /// Absent: plain HTTP.
    pub tls: Option<TlsConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IoMode {
    /// io_uring, else epoll with a logged warning.
    #[default]
    Auto,
    IoUring,
    Epoll,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9090".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: String,
    /// Environment variable holding the admin bearer token.
    #[serde(default = "d_admin_token_env")]
    pub token_env: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    pub dir: PathBuf,
    #[serde(default)]
    pub detail: AuditDetail,
    #[serde(default)]
    pub fsync: Fsync,
    #[serde(default = "d_batch_ms")]
    pub batch_ms: u64,
    #[serde(default = "d_retention_days")]
    pub retention_days: u32,
    #[serde(default = "d_segment_bytes")]
    pub segment_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditDetail {
    Metadata,
    /// Content with PII masked.
    #[default]
    Redacted,
    Full,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fsync {
    Always,
    /// Every `batch_ms`.
    #[default]
    Batch,
    Never,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BillingConfig {
    pub currency: String,
}

impl Default for BillingConfig {
    fn default() -> Self {
        Self {
            currency: "EUR".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://` or `rediss://` URL of Redis or Valkey.
    pub redis: String,
    /// Absent: the host name.
    pub node_id: Option<String>,
    #[serde(default = "d_lease_fraction")]
    pub lease_fraction: f64,
    #[serde(default = "d_fallback_share")]
    pub fallback_share: f64,
}

// ---------------------------------------------------------------- upstreams and models

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    /// `http://host[:port][/prefix]` or `https://...`.
    pub url: String,
    pub region: Option<String>,
    /// Per worker.
    #[serde(default = "d_max_connections")]
    pub max_connections: u32,
    #[serde(default = "d_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "d_first_byte_timeout_ms")]
    pub first_byte_timeout_ms: u64,
    #[serde(default = "d_total_timeout_ms")]
    pub total_timeout_ms: u64,
    /// Active health check path; absent = passive only.
    pub health_path: Option<String>,
    #[serde(default = "d_health_interval_ms")]
    pub health_interval_ms: u64,
    /// Environment variable whose value is sent upstream as `Authorization: Bearer ...`.
    pub api_key_env: Option<String>,
    /// PEM bundle of CAs to trust for an https upstream.
    pub ca_file: Option<PathBuf>,
    /// The model server's Prometheus endpoint (vLLM, TGI), read on every
    /// health interval for its queue length; `least_outstanding` adds it
    /// to sluice's own in-flight count.
    pub metrics_path: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The name clients send in `"model"`.
    pub name: String,
    /// Written into the forwarded body; absent = `name`.
    pub upstream_model: Option<String>,
    pub targets: Vec<TargetConfig>,
    #[serde(default)]
    pub balance: Balance,
    /// Models tried in order when every target failed or is circuit-open.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    pub tier: Option<Tier>,
    pub price: Option<Price>,
}

impl ModelConfig {
    /// The model name to write into the forwarded body.
    pub fn upstream_model_name(&self) -> &str {
        self.upstream_model.as_deref().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    pub upstream: String,
    #[serde(default = "d_weight")]
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    #[default]
    RoundRobin,
    Weighted,
    LeastOutstanding,
    LatencyEwma,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    Low,
    Medium,
    High,
    Ultra,
}

/// Per million tokens, in `billing.currency`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentConfig {
    pub name: String,
    /// The model name clients send; must not be a `[[models]]` name.
    pub model: String,
    pub variants: Vec<VariantConfig>,
    #[serde(default)]
    pub sticky: Sticky,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VariantConfig {
    pub model: String,
    pub weight: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sticky {
    User,
    Key,
    #[default]
    None,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResilienceConfig {
    /// Extra attempts on connect errors, 429, 502, 503, 504.
    pub retries: u32,
    /// Base of exponential backoff with jitter.
    pub backoff_ms: u64,
    /// Consecutive failures that open a target's circuit.
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    /// Retries allowed as a fraction of requests (a token bucket per
    /// worker), so an outage does not multiply the load.
    pub retry_budget: f64,
}

impl Default for ResilienceConfig {
    fn default() -> Self {
        Self {
            retries: 2,
            backoff_ms: 50,
            breaker_failures: 5,
            breaker_cooldown_ms: 10_000,
            retry_budget: 0.2,
        }
    }
}

// ---------------------------------------------------------------- who may do what

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Header carrying `Bearer <key or JWT>`.
    pub header: String,
    /// Absent: JWTs are not accepted.
    pub jwt: Option<JwtConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            header: "authorization".into(),
            jwt: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    pub jwks_file: PathBuf,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    #[serde(default = "d_team_claim")]
    pub team_claim: String,
    #[serde(default = "d_user_claim")]
    pub user_claim: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub name: String,
    /// Model names (or globs such as `"*"`); absent = not restricted.
    pub allowed_models: Option<Vec<String>>,
    /// Data residency; absent = not restricted.
    pub regions: Option<Vec<String>>,
    pub budget: Option<Budget>,
    /// Budget fractions that fire the alert webhook, ascending, each in (0, 1].
    #[serde(default)]
    pub alert_at: Vec<f64>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
    /// A name under `[pii.policies]`; absent = `pii.default_policy`.
    pub pii_policy: Option<String>,
    pub cache: Option<bool>,
    /// Absent = `audit.detail`.
    pub audit_detail: Option<AuditDetail>,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub amount: f64,
    pub period: Period,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub id: String,
    pub team: String,
    /// Hex SHA-256 of the secret.
    pub sha256: String,
    pub user: Option<String>,
    /// A key's own limits apply on top of its team's.
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub max_concurrent: Option<u32>,
    pub budget: Option<Budget>,
    /// RFC 3339 timestamp with offset; a TOML offset date-time is accepted too.
    #[serde(default, deserialize_with = "string_or_datetime")]
    pub expires_at: Option<String>,
}

/// Accepts `"2026-01-01T00:00:00Z"` as well as the bare TOML date-time `2026-01-01T00:00:00Z`.
fn string_or_datetime<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::String(s) => Ok(Some(s)),
        toml::Value::Datetime(dt) => Ok(Some(dt.to_string())),
        other => Err(serde::de::Error::custom(format!(
            "invalid type: {}, expected an RFC 3339 date-time",
            other.type_str()
        ))),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// JSON POST on budget thresholds and circuit changes.
    pub webhook: String,
}

// ---------------------------------------------------------------- data protection

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PiiConfig {
    /// A name under `[pii.policies]`; absent = no PII handling unless a team names a policy.
    pub default_policy: Option<String>,
    pub policies: BTreeMap<String, PiiPolicy>,
    pub custom: Vec<CustomEntity>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PiiPolicy {
    pub action: PiiAction,
    /// Built-in entity names or `[[pii.custom]]` names.
    pub entities: Vec<String>,
    pub scan_responses: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    Monitor,
    Mask,
    Pseudonymize,
    Block,
}

/// An extra entity recognised by regex.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomEntity {
    pub name: String,
    pub pattern: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SafetyConfig {
    pub prompt_injection: Option<PromptInjection>,
    /// Regexes checked on requests and responses.
    pub deny_patterns: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PromptInjection {
    Off,
    Monitor,
    Block,
}

// ---------------------------------------------------------------- cost control

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    pub exact: Option<bool>,
    pub semantic: Option<bool>,
    /// Cosine similarity for a semantic candidate, in (0, 1].
    pub similarity: f64,
    pub verify: Verify,
    pub ttl_s: u64,
    /// Per namespace; least recently used go first.
    pub max_entries: u64,
    /// Requests with a higher temperature are never served from cache.
    pub max_temperature: f64,
    /// Index saved at shutdown and loaded at start; absent = not persisted.
    pub persist: Option<PathBuf>,
    pub embedder: Option<EmbedderConfig>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            exact: None,
            semantic: None,
            similarity: 0.92,
            verify: Verify::Strict,
            ttl_s: 3600,
            max_entries: 100_000,
            max_temperature: 0.0,
            persist: None,
            embedder: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verify {
    #[default]
    Strict,
    Off,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderConfig {
    pub kind: EmbedderKind,
    /// `kind = "local"`: folder of the ONNX model.
    pub model_dir: Option<PathBuf>,
    /// `kind = "local"`: the onnxruntime shared library.
    pub onnxruntime: Option<PathBuf>,
    /// `kind = "upstream"`: a `[[models]]` name, used via /v1/embeddings.
    pub model: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EmbedderKind {
    Local,
    Upstream,
}

// ---------------------------------------------------------------- agents and people

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub team: String,
    /// Tools a request may offer and a response may call; absent = not restricted.
    pub allowed_tools: Option<Vec<String>>,
    /// Globs; win over `allowed_tools`.
    #[serde(default)]
    pub denied_tools: Vec<String>,
    /// Per session (header `x-sluice-session`).
    pub max_turns: Option<u32>,
    pub max_session_s: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    pub team: String,
    /// Completions of these models wait for a person's decision.
    pub models: Vec<String>,
    /// No decision by then: 504, audited as expired.
    pub timeout_s: Option<u64>,
}
