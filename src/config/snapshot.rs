//! The typed snapshot the request path reads: built once from a validated
//! `Config` (addresses resolved, durations typed, names indexed), shared
//! read-only by all workers. `serve` refuses configuration sections whose
//! features are not built yet, so nothing in a file is silently ignored.

use super::validate::parse_http_url;
use super::{Balance, Config, IoMode};
use crate::upstream::UpstreamSpec;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("this build of sluice does not implement yet: {}", .0.join("; "))]
    NotBuilt(Vec<String>),
    #[error("upstreams[{index}] ({name}): {message}")]
    Upstream {
        index: usize,
        name: String,
        message: String,
    },
    #[error("{0}: {1}")]
    Address(&'static str, String),
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Resolved worker count (0 in the file = one per allowed CPU).
    pub workers: usize,
    pub pin_cores: bool,
    pub io: IoMode,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub drain_timeout: Duration,
}

/// One `[[models]]` entry as the router sees it.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    pub name: Box<str>,
    /// The name written into forwarded bodies, when it differs from `name`.
    pub rewrite_to: Option<Box<str>>,
    /// Indexes into `Snapshot::upstreams`.
    pub targets: Box<[usize]>,
}

#[derive(Debug)]
pub struct Snapshot {
    pub server: ServerSettings,
    pub metrics_listen: Option<SocketAddr>,
    pub upstreams: Vec<UpstreamSpec>,
    pub models: Vec<ModelRoute>,
    model_index: HashMap<Box<str>, usize>,
    /// The body of `GET /v1/models`, built once.
    pub models_json: Vec<u8>,
    /// SHA-256 of the configuration file's text (for audit and logs).
    pub config_hash: String,
}

impl Snapshot {
    pub fn model(&self, name: &str) -> Option<usize> {
        self.model_index.get(name).copied()
    }

    /// Builds the snapshot from a validated configuration and its text.
    pub fn build(cfg: &Config, source: &str) -> Result<Self, SnapshotError> {
        let missing = not_built(cfg);
        if !missing.is_empty() {
            return Err(SnapshotError::NotBuilt(missing));
        }
        let server = &cfg.server;
        let settings = ServerSettings {
            listen: parse_addr("server.listen", &server.listen)?,
            workers: match server.workers {
                0 => crate::runtime::allowed_cpus().len().max(1),
                n => n as usize,
            },
            pin_cores: server.pin_cores,
            io: server.io,
            max_body_bytes: server.max_body_bytes as usize,
            header_timeout: Duration::from_millis(server.header_timeout_ms),
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            drain_timeout: Duration::from_millis(server.drain_timeout_ms),
        };
        let metrics_listen = cfg
            .metrics
            .as_ref()
            .map(|m| parse_addr("metrics.listen", &m.listen))
            .transpose()?;
        let upstreams = cfg
            .upstreams
            .iter()
            .enumerate()
            .map(|(index, u)| {
                let fail = |message: String| SnapshotError::Upstream {
                    index,
                    name: u.name.clone(),
                    message,
                };
                let url = parse_http_url(&u.url).map_err(fail)?;
                let addr = (url.host.as_str(), url.port)
                    .to_socket_addrs()
                    .map_err(|e| fail(format!("cannot resolve {}: {e}", url.host)))?
                    .next()
                    .ok_or_else(|| fail(format!("{} has no address", url.host)))?;
                let authorization = match &u.api_key_env {
                    Some(var) => Some(
                        std::env::var(var)
                            .map(|key| format!("Bearer {key}").into_boxed_str())
                            .map_err(|_| {
                                fail(format!(
                                    "api_key_env: environment variable {var} is not set"
                                ))
                            })?,
                    ),
                    None => None,
                };
                let host_header = match (url.host.contains(':'), url.port) {
                    (true, port) => format!("[{}]:{port}", url.host),
                    (false, 80) => url.host.clone(),
                    (false, port) => format!("{}:{port}", url.host),
                };
                Ok(UpstreamSpec {
                    name: u.name.as_str().into(),
                    addr,
                    host_header: host_header.into(),
                    path_prefix: url.path_prefix.into(),
                    authorization,
                    max_connections: u.max_connections.max(1) as usize,
                    connect_timeout: Duration::from_millis(u.connect_timeout_ms),
                    first_byte_timeout: Duration::from_millis(u.first_byte_timeout_ms),
                    total_timeout: Duration::from_millis(u.total_timeout_ms),
                    region: u.region.as_deref().map(Into::into),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let upstream_index: HashMap<&str, usize> = cfg
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.as_str(), i))
            .collect();
        let models: Vec<ModelRoute> = cfg
            .models
            .iter()
            .map(|m| ModelRoute {
                name: m.name.as_str().into(),
                rewrite_to: m
                    .upstream_model
                    .as_deref()
                    .filter(|u| *u != m.name)
                    .map(Into::into),
                // validate() guarantees every target names an upstream.
                targets: m
                    .targets
                    .iter()
                    .filter_map(|t| upstream_index.get(t.upstream.as_str()).copied())
                    .collect(),
            })
            .collect();
        let model_index = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), i))
            .collect();
        let models_json = models_list_json(&models);
        Ok(Snapshot {
            server: settings,
            metrics_listen,
            upstreams,
            models,
            model_index,
            models_json,
            config_hash: hex::encode(Sha256::digest(source.as_bytes())),
        })
    }
}

fn parse_addr(key: &'static str, value: &str) -> Result<SocketAddr, SnapshotError> {
    value
        .parse()
        .map_err(|e| SnapshotError::Address(key, format!("{value:?}: {e}")))
}

fn models_list_json(models: &[ModelRoute]) -> Vec<u8> {
    let data: Vec<_> = models
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": &*m.name,
                "object": "model",
                "created": 0,
                "owned_by": "sluice",
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "object": "list", "data": data })).unwrap_or_default()
}

/// Sections and keys of the configuration contract whose features this
/// build does not implement yet, each named as it appears in the file.
pub fn not_built(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut section = |present: bool, name: &str, what: &str| {
        if present {
            out.push(format!("[{name}] ({what})"));
        }
    };
    section(cfg.server.tls.is_some(), "server.tls", "TLS termination");
    section(cfg.admin.is_some(), "admin", "admin API");
    section(cfg.store.is_some(), "store", "embedded store");
    section(cfg.audit.is_some(), "audit", "audit log");
    section(cfg.billing.is_some(), "billing", "cost accounting");
    section(
        cfg.cluster.is_some(),
        "cluster",
        "shared limits through Redis",
    );
    section(
        !cfg.experiments.is_empty(),
        "experiments",
        "A/B experiments",
    );
    section(
        cfg.resilience.is_some(),
        "resilience",
        "retries and circuit breakers",
    );
    section(cfg.auth.is_some(), "auth", "API keys and JWT");
    section(!cfg.teams.is_empty(), "teams", "teams, budgets and limits");
    section(!cfg.keys.is_empty(), "keys", "API keys");
    section(cfg.alerts.is_some(), "alerts", "alert webhooks");
    section(cfg.pii.is_some(), "pii", "PII scanning");
    section(cfg.safety.is_some(), "safety", "content safety");
    section(cfg.cache.is_some(), "cache", "response cache");
    section(!cfg.agents.is_empty(), "agents", "agent tool policies");
    section(!cfg.approvals.is_empty(), "approvals", "human approval");
    for (i, u) in cfg.upstreams.iter().enumerate() {
        if u.url.to_ascii_lowercase().starts_with("https://") {
            out.push(format!("upstreams[{i}].url https:// (TLS to upstreams)"));
        }
        if u.health_path.is_some() {
            out.push(format!("upstreams[{i}].health_path (active health checks)"));
        }
        if u.ca_file.is_some() {
            out.push(format!("upstreams[{i}].ca_file (TLS to upstreams)"));
        }
    }
    for (i, m) in cfg.models.iter().enumerate() {
        if m.balance != Balance::RoundRobin {
            out.push(format!("models[{i}].balance other than round_robin"));
        }
        if m.targets.iter().any(|t| t.weight != 1) {
            out.push(format!(
                "models[{i}].targets weight other than 1 (weighted balancing)"
            ));
        }
        if !m.fallbacks.is_empty() {
            out.push(format!("models[{i}].fallbacks"));
        }
        if m.price.is_some() || m.tier.is_some() {
            out.push(format!("models[{i}].price / tier (cost accounting)"));
        }
    }
    out
}
