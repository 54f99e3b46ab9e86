//! The typed snapshot the request path reads: built once from a validated
//! `Config` (addresses resolved, durations typed, names indexed), shared
//! read-only by all workers.

use super::validate::parse_http_url;
use super::{Balance, Config, IoMode, Sticky};
use crate::upstream::UpstreamSpec;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Guard(String),
    #[error("upstreams[{index}] ({name}): {message}")]
    Upstream {
        index: usize,
        name: String,
        message: String,
    },
    #[error("{0}: {1}")]
    Address(&'static str, String),
    #[error("{0}")]
    Access(String),
    #[error("cache.embedder.model: {0}")]
    Cache(String),
    #[error("server.tls: {0}")]
    Tls(crate::tls::TlsError),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
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
    /// `[server.tls]` loaded (certificate, key, rustls config); None = plain HTTP.
    pub tls: Option<std::sync::Arc<crate::tls::ServerTls>>,
}

/// One `[[models]]` entry as the router sees it.
#[derive(Debug, Clone)]
pub struct ModelRoute {
    pub name: Box<str>,
    /// The name written into forwarded bodies, when it differs from `name`.
    pub rewrite_to: Option<Box<str>>,
    /// Indexes into `Snapshot::upstreams`.
    pub targets: Box<[usize]>,
    /// The targets' weights, in the same order.
    pub weights: Box<[u32]>,
    pub balance: Balance,
    /// Models (indexes) tried in order when every target failed or is open.
    pub fallbacks: Box<[usize]>,
}

/// One `[[experiments]]` entry: requests for `name` go to a variant.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub name: Box<str>,
    /// (model index, weight) per variant.
    pub variants: Box<[(usize, u32)]>,
    pub total_weight: u32,
    pub sticky: Sticky,
}

/// What a client's `model` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRef {
    Model(usize),
    Experiment(usize),
}

/// `[resilience]` with its durations typed.
#[derive(Debug, Clone)]
pub struct Resilience {
    pub retries: u32,
    pub backoff: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub retry_budget: f64,
}

#[derive(Debug)]
pub struct Snapshot {
    pub server: ServerSettings,
    pub metrics_listen: Option<SocketAddr>,
    pub upstreams: Vec<UpstreamSpec>,
    pub models: Vec<ModelRoute>,
    pub experiments: Vec<Experiment>,
    model_index: HashMap<Box<str>, ModelRef>,
    pub resilience: Resilience,
    /// `[[approvals]]`: answers held for a person's decision.
    pub approvals: Vec<crate::pipeline::approve::ApprovalRule>,
    /// Prices per model, `[billing].currency`, the alert webhook
    /// (token accounting, budgets; see pipeline/account.rs).
    pub billing: crate::pipeline::account::Billing,
    /// `[audit]`, resolved; None = no audit log.
    pub audit: Option<crate::audit::AuditSettings>,
    /// `[alerts].webhook`: breaker changes are posted here.
    pub alert_webhook: Option<Box<str>>,
    /// The body of `GET /v1/models`, built once.
    pub models_json: Vec<u8>,
    /// Teams, static keys, JWT verifier (`[auth]`, `[[teams]]`, `[[keys]]`, `[[agents]]`).
    pub access: crate::pipeline::auth::Access,
    /// `[pii]` and `[safety]` compiled (Hyperscan databases, read-only).
    pub guard: Option<std::sync::Arc<crate::pipeline::guard::Guard>>,
    /// SHA-256 of the configuration file's text (for audit and logs).
    pub config_hash: String,
    /// `[cluster]`: limits shared with other nodes through Redis.
    pub cluster: Option<crate::cluster::ClusterSettings>,
    /// `[cache]`, resolved; None = no response cache.
    pub cache: Option<CacheSettings>,
}

/// `[cache]` and `[cache.embedder]`, resolved (see pipeline/cache).
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub exact: bool,
    pub semantic: bool,
    pub similarity: f32,
    pub verify: super::Verify,
    pub ttl_s: u64,
    pub max_entries: usize,
    pub max_temperature: f64,
    pub persist: Option<std::path::PathBuf>,
    pub embedder: Option<EmbedderSettings>,
}

/// Where the semantic cache's embeddings come from.
#[derive(Debug, Clone)]
pub enum EmbedderSettings {
    Local {
        model_dir: std::path::PathBuf,
        onnxruntime: std::path::PathBuf,
    },
    /// `/v1/embeddings` of the first target of a `[[models]]` entry.
    Upstream {
        upstream: Box<UpstreamSpec>,
        /// The model name that server knows.
        model: String,
    },
}

impl Snapshot {
    /// What a client's model name refers to: a model or an experiment.
    pub fn resolve(&self, name: &str) -> Option<ModelRef> {
        self.model_index.get(name).copied()
    }

    /// Builds the snapshot from a validated configuration and its text.
    pub fn build(cfg: &Config, source: &str) -> Result<Self, SnapshotError> {
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
            tls: server
                .tls
                .as_ref()
                .map(|t| crate::tls::ServerTls::load(&cfg.resolve(&t.cert), &cfg.resolve(&t.key)))
                .transpose()
                .map_err(SnapshotError::Tls)?
                .map(std::sync::Arc::new),
        };
        let metrics_listen = cfg
            .metrics
            .as_ref()
            .map(|m| parse_addr("metrics.listen", &m.listen))
            .transpose()?;
        let mut system_roots = crate::tls::client::SystemRoots::default();
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
                let default_port = if url.tls { 443 } else { 80 };
                let host_header = match (url.host.contains(':'), url.port) {
                    (true, port) => format!("[{}]:{port}", url.host),
                    (false, port) if port == default_port => url.host.clone(),
                    (false, port) => format!("{}:{port}", url.host),
                };
                let tls = url
                    .tls
                    .then(|| {
                        let ca_file = u.ca_file.as_ref().map(|p| cfg.resolve(p));
                        crate::tls::UpstreamTls::new(
                            &url.host,
                            ca_file.as_deref(),
                            &mut system_roots,
                        )
                    })
                    .transpose()
                    .map_err(|e| fail(e.to_string()))?;
                Ok(UpstreamSpec {
                    name: u.name.as_str().into(),
                    addr,
                    tls,
                    host_header: host_header.into(),
                    path_prefix: url.path_prefix.into(),
                    authorization,
                    max_connections: u.max_connections.max(1) as usize,
                    connect_timeout: Duration::from_millis(u.connect_timeout_ms),
                    first_byte_timeout: Duration::from_millis(u.first_byte_timeout_ms),
                    total_timeout: Duration::from_millis(u.total_timeout_ms),
                    region: u.region.as_deref().map(Into::into),
                    health_path: u.health_path.as_deref().map(Into::into),
                    metrics_path: u.metrics_path.as_deref().map(Into::into),
                    health_interval: Duration::from_millis(u.health_interval_ms),
                })
            })
            .collect::<Result<Vec<_>, SnapshotError>>()?;
        let upstream_index: HashMap<&str, usize> = cfg
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.name.as_str(), i))
            .collect();
        let model_positions: HashMap<&str, usize> = cfg
            .models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.as_str(), i))
            .collect();
        // validate() guarantees that every name below refers to something.
        let model_at = |name: &String| model_positions.get(name.as_str()).copied();
        let models: Vec<ModelRoute> = cfg
            .models
            .iter()
            .map(|m| ModelRoute {
                weights: m.targets.iter().map(|t| t.weight.max(1)).collect(),
                balance: m.balance,
                fallbacks: m.fallbacks.iter().filter_map(model_at).collect(),
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
        let experiments: Vec<Experiment> = cfg
            .experiments
            .iter()
            .map(|e| {
                let variants: Box<[(usize, u32)]> = e
                    .variants
                    .iter()
                    .filter_map(|v| Some((model_at(&v.model)?, v.weight.max(1))))
                    .collect();
                Experiment {
                    name: e.name.as_str().into(),
                    total_weight: variants.iter().map(|v| v.1).sum(),
                    variants,
                    sticky: e.sticky,
                }
            })
            .collect();
        let model_index = models
            .iter()
            .enumerate()
            .map(|(i, m)| (m.name.clone(), ModelRef::Model(i)))
            .chain(
                cfg.experiments
                    .iter()
                    .enumerate()
                    .map(|(i, e)| (e.model.as_str().into(), ModelRef::Experiment(i))),
            )
            .collect();
        let r = cfg.resilience.clone().unwrap_or_default();
        let resilience = Resilience {
            retries: r.retries,
            backoff: Duration::from_millis(r.backoff_ms),
            breaker_failures: r.breaker_failures.max(1),
            breaker_cooldown: Duration::from_millis(r.breaker_cooldown_ms),
            retry_budget: r.retry_budget,
        };
        let mut listed: Vec<&str> = models.iter().map(|m| &*m.name).collect();
        listed.extend(cfg.experiments.iter().map(|e| e.model.as_str()));
        let models_json = models_list_json(&listed);
        let access =
            crate::pipeline::auth::Access::build(cfg, &listed).map_err(SnapshotError::Access)?;
        let cache = cfg
            .cache
            .as_ref()
            .map(|c| cache_settings(cfg, c, &models, &upstreams))
            .transpose()?;
        Ok(Snapshot {
            server: settings,
            metrics_listen,
            upstreams,
            models,
            experiments,
            model_index,
            resilience,
            alert_webhook: cfg.alerts.as_ref().map(|a| a.webhook.as_str().into()),
            billing: crate::pipeline::account::Billing::new(
                &cfg.billing.clone().unwrap_or_default().currency,
                cfg.models.iter().map(|m| m.price),
                cfg.alerts.as_ref().map(|a| a.webhook.as_str()),
            ),
            approvals: cfg
                .approvals
                .iter()
                .map(|a| crate::pipeline::approve::ApprovalRule {
                    team: a.team.as_str().into(),
                    models: a.models.iter().map(|m| m.as_str().into()).collect(),
                    timeout: Duration::from_secs(a.timeout_s.unwrap_or(300)),
                })
                .collect(),
            audit: cfg.audit.as_ref().map(|a| crate::audit::AuditSettings {
                dir: cfg.resolve(&a.dir),
                detail: a.detail,
                fsync: a.fsync,
                batch: Duration::from_millis(a.batch_ms),
                retention: Duration::from_secs(u64::from(a.retention_days) * 86_400),
                segment_bytes: a.segment_bytes,
            }),
            models_json,
            access,
            guard: crate::pipeline::guard::Guard::build(cfg)
                .map_err(SnapshotError::Guard)?
                .map(std::sync::Arc::new),
            config_hash: hex::encode(Sha256::digest(source.as_bytes())),
            cache,
            cluster: cfg
                .cluster
                .as_ref()
                .map(crate::cluster::ClusterSettings::from_config)
                .transpose()?,
        })
    }
}

fn parse_addr(key: &'static str, value: &str) -> Result<SocketAddr, SnapshotError> {
    value
        .parse()
        .map_err(|e| SnapshotError::Address(key, format!("{value:?}: {e}")))
}

pub fn models_list_json(names: &[&str]) -> Vec<u8> {
    let data: Vec<_> = names
        .iter()
        .map(|name| {
            serde_json::json!({
                "id": name,
                "object": "model",
                "created": 0,
                "owned_by": "sluice",
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({ "object": "list", "data": data })).unwrap_or_default()
}

/// `[cache]` resolved against the models and upstreams it names.
fn cache_settings(
    cfg: &Config,
    c: &super::CacheConfig,
    models: &[ModelRoute],
    upstreams: &[UpstreamSpec],
) -> Result<CacheSettings, SnapshotError> {
    let embedder = match &c.embedder {
        None => None,
        Some(e) => Some(match e.kind {
            super::EmbedderKind::Local => EmbedderSettings::Local {
                model_dir: cfg.resolve(e.model_dir.as_deref().unwrap_or(std::path::Path::new(""))),
                onnxruntime: cfg
                    .resolve(e.onnxruntime.as_deref().unwrap_or(std::path::Path::new(""))),
            },
            super::EmbedderKind::Upstream => {
                let name = e.model.as_deref().unwrap_or_default();
                let route = models
                    .iter()
                    .find(|m| &*m.name == name)
                    .ok_or_else(|| SnapshotError::Cache(format!("no model {name}")))?;
                let spec = route
                    .targets
                    .first()
                    .map(|&t| &upstreams[t])
                    .ok_or_else(|| SnapshotError::Cache(format!("{name} has no target")))?;
                EmbedderSettings::Upstream {
                    upstream: Box::new(spec.clone()),
                    model: route
                        .rewrite_to
                        .as_deref()
                        .unwrap_or(&route.name)
                        .to_owned(),
                }
            }
        }),
    };
    Ok(CacheSettings {
        exact: c.exact.unwrap_or(true),
        semantic: embedder.is_some() && c.semantic.unwrap_or(true),
        similarity: c.similarity as f32,
        verify: c.verify,
        ttl_s: c.ttl_s,
        max_entries: c.max_entries as usize,
        max_temperature: c.max_temperature,
        persist: c.persist.as_deref().map(|p| cfg.resolve(p)),
        embedder,
    })
}
