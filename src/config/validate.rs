//! Semantic checks of a deserialized [`Config`]: everything serde cannot see,
//! such as references between sections, ranges and address syntax.
//!
//! [`validate`] collects every issue rather than stopping at the first. Each
//! [`Issue`] names the offending key by a path such as
//! `models[1].targets[0].upstream` or `pii.policies.strict.entities[2]`
//! (map keys that are not bare TOML keys are written quoted), which the
//! caller can map back to a line of the source.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::path::Path;

use super::schema::*;

/// PII entities sluice recognises without a `[[pii.custom]]` entry.
pub const BUILTIN_PII_ENTITIES: &[&str] = &[
    "email",
    "phone",
    "iban",
    "credit_card",
    "bsn",
    "ssn",
    "ipv4",
    "ipv6",
    "secret",
];

/// One problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Path of the offending key, e.g. `models[1].targets[0].upstream`.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// An `http://` or `https://` base URL, as accepted for `[[upstreams]].url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// `https`.
    pub tls: bool,
    /// Host name or IP address; IPv6 without brackets.
    pub host: String,
    /// Given port, else 80 or 443.
    pub port: u16,
    /// Path prefix without a trailing `/`; empty when there is none.
    pub path_prefix: String,
}

/// Parses `http[s]://host[:port][/path]`. No user info, query or fragment.
pub fn parse_http_url(s: &str) -> Result<HttpUrl, String> {
    let (tls, rest) = if let Some(rest) = strip_prefix_ci(s, "http://") {
        (false, rest)
    } else if let Some(rest) = strip_prefix_ci(s, "https://") {
        (true, rest)
    } else {
        return Err("must start with http:// or https://".into());
    };
    if rest.contains(['?', '#']) {
        return Err("must not have a query or fragment".into());
    }
    if rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain whitespace".into());
    }
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if authority.contains('@') {
        return Err("must not contain user info".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or("unclosed [ in host")?;
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("{addr:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("unexpected text after ]")?),
        };
        (addr, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if !authority.starts_with('[')
        && !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
    {
        return Err(format!("host {host:?} is not a valid host name"));
    }
    let port = match port {
        None => {
            if tls {
                443
            } else {
                80
            }
        }
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => return Err(format!("port {p:?} is not a number in 1..=65535")),
        },
    };
    Ok(HttpUrl {
        tls,
        host: host.to_string(),
        port,
        path_prefix: path.trim_end_matches('/').to_string(),
    })
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Checks `cfg`; returns every issue found, in section order.
pub fn validate(cfg: &Config) -> Result<(), Vec<Issue>> {
    let mut v = Validator::default();
    let names = Names {
        upstreams: v.unique_names("upstreams", "name", cfg.upstreams.iter().map(|u| &u.name)),
        models: v.unique_names("models", "name", cfg.models.iter().map(|m| &m.name)),
        aliases: v.unique_names(
            "experiments",
            "model",
            cfg.experiments.iter().map(|e| &e.model),
        ),
        teams: v.unique_names("teams", "name", cfg.teams.iter().map(|t| &t.name)),
        policies: cfg
            .pii
            .iter()
            .flat_map(|p| p.policies.keys().map(String::as_str))
            .collect(),
    };
    v.unique_names(
        "experiments",
        "name",
        cfg.experiments.iter().map(|e| &e.name),
    );
    v.unique_names("keys", "id", cfg.keys.iter().map(|k| &k.id));

    v.listeners(cfg);
    v.server(&cfg.server);
    if let Some(admin) = &cfg.admin {
        v.non_empty("admin.token_env", &admin.token_env);
    }
    if let Some(store) = &cfg.store {
        v.path_set("store.path", &store.path);
    }
    if let Some(audit) = &cfg.audit {
        v.audit(audit);
    }
    if let Some(billing) = &cfg.billing {
        let c = &billing.currency;
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            v.issue(
                "billing.currency",
                "must be a three-letter ISO 4217 code such as \"EUR\"",
            );
        }
    }
    if let Some(cluster) = &cfg.cluster {
        v.cluster(cluster);
    }
    for (i, u) in cfg.upstreams.iter().enumerate() {
        v.upstream(&format!("upstreams[{i}]"), u);
    }
    v.tls_files(cfg);
    for (i, m) in cfg.models.iter().enumerate() {
        v.model(&format!("models[{i}]"), m, &names);
    }
    for (i, e) in cfg.experiments.iter().enumerate() {
        v.experiment(&format!("experiments[{i}]"), e, &names);
    }
    if let Some(r) = &cfg.resilience {
        v.at_least("resilience.backoff_ms", r.backoff_ms, 1);
        v.at_least("resilience.breaker_failures", r.breaker_failures.into(), 1);
        v.at_least("resilience.breaker_cooldown_ms", r.breaker_cooldown_ms, 1);
        if !(0.0..=1.0).contains(&r.retry_budget) {
            v.issue("resilience.retry_budget", "must be between 0 and 1");
        }
    }
    if let Some(auth) = &cfg.auth {
        v.auth(auth);
    }
    for (i, t) in cfg.teams.iter().enumerate() {
        v.team(&format!("teams[{i}]"), t, &names);
    }
    v.keys(&cfg.keys, &names);
    if let Some(alerts) = &cfg.alerts {
        let base = alerts.webhook.split('?').next().unwrap_or_default();
        if let Err(e) = parse_http_url(base) {
            v.issue("alerts.webhook", format!("{:?} {e}", alerts.webhook));
        }
    }
    if let Some(pii) = &cfg.pii {
        v.pii(pii);
    }
    if let Some(safety) = &cfg.safety {
        v.non_empty_entries("safety.deny_patterns", &safety.deny_patterns);
    }
    if let Some(cache) = &cfg.cache {
        v.cache(cache, &names);
    }
    for (i, a) in cfg.agents.iter().enumerate() {
        let p = format!("agents[{i}]");
        v.refers(&format!("{p}.team"), &a.team, &names.teams, "[[teams]]");
        if let Some(tools) = &a.allowed_tools {
            v.non_empty_entries(&format!("{p}.allowed_tools"), tools);
        }
        v.non_empty_entries(&format!("{p}.denied_tools"), &a.denied_tools);
        v.at_least_opt(&format!("{p}.max_turns"), a.max_turns.map(u64::from));
        v.at_least_opt(&format!("{p}.max_session_s"), a.max_session_s);
    }
    for (i, a) in cfg.approvals.iter().enumerate() {
        let p = format!("approvals[{i}]");
        v.refers(&format!("{p}.team"), &a.team, &names.teams, "[[teams]]");
        if a.models.is_empty() {
            v.issue(format!("{p}.models"), "must list at least one model");
        }
        for (j, m) in a.models.iter().enumerate() {
            v.client_model(&format!("{p}.models[{j}]"), m, &names);
        }
        v.at_least_opt(&format!("{p}.timeout_s"), a.timeout_s);
    }

    if v.issues.is_empty() {
        Ok(())
    } else {
        Err(v.issues)
    }
}

/// Names that other sections refer to.
struct Names<'a> {
    upstreams: HashSet<&'a str>,
    models: HashSet<&'a str>,
    /// Model names that experiments answer to.
    aliases: HashSet<&'a str>,
    teams: HashSet<&'a str>,
    policies: HashSet<&'a str>,
}

#[derive(Default)]
struct Validator {
    issues: Vec<Issue>,
}

impl Validator {
    fn issue(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Reports empty and duplicated `section[i].field` values; returns the set of names.
    fn unique_names<'a>(
        &mut self,
        section: &str,
        field: &str,
        names: impl Iterator<Item = &'a String>,
    ) -> HashSet<&'a str> {
        let mut first: HashMap<&'a str, usize> = HashMap::new();
        for (i, name) in names.enumerate() {
            let path = format!("{section}[{i}].{field}");
            if name.trim().is_empty() {
                self.issue(path, "must not be empty");
            } else if let Some(j) = first.get(name.as_str()) {
                self.issue(
                    path,
                    format!("duplicate {field} {name:?} (also {section}[{j}])"),
                );
            } else {
                first.insert(name, i);
            }
        }
        first.into_keys().collect()
    }

    fn refers(&mut self, path: &str, name: &str, known: &HashSet<&str>, what: &str) {
        if !known.contains(name) {
            self.issue(path, format!("no {what} named {name:?}"));
        }
    }

    /// A model name as clients send it: a `[[models]]` name or an experiment's model.
    fn client_model(&mut self, path: &str, name: &str, names: &Names) {
        if !names.models.contains(name) && !names.aliases.contains(name) {
            self.issue(
                path,
                format!("no [[models]] or [[experiments]] model named {name:?}"),
            );
        }
    }

    fn non_empty(&mut self, path: &str, value: &str) {
        if value.trim().is_empty() {
            self.issue(path, "must not be empty");
        }
    }

    fn non_empty_opt(&mut self, path: &str, value: Option<&String>) {
        if let Some(value) = value {
            self.non_empty(path, value);
        }
    }

    fn non_empty_entries(&mut self, path: &str, values: &[String]) {
        for (i, value) in values.iter().enumerate() {
            self.non_empty(&format!("{path}[{i}]"), value);
        }
    }

    fn path_set(&mut self, path: &str, value: &Path) {
        if value.as_os_str().is_empty() {
            self.issue(path, "must not be empty");
        }
    }

    fn at_least(&mut self, path: &str, value: u64, min: u64) {
        if value < min {
            self.issue(path, format!("must be at least {min}, is {value}"));
        }
    }

    fn at_least_opt(&mut self, path: &str, value: Option<u64>) {
        if let Some(value) = value {
            self.at_least(path, value, 1);
        }
    }

    /// `value` in (0, 1], or in [0, 1] when `zero_ok`.
    fn fraction(&mut self, path: &str, value: f64, zero_ok: bool) {
        let low_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
        if !(low_ok && value <= 1.0) {
            let range = if zero_ok { "[0, 1]" } else { "(0, 1]" };
            self.issue(path, format!("must be in {range}, is {value}"));
        }
    }

    fn non_negative(&mut self, path: &str, value: f64) {
        if !(value.is_finite() && value >= 0.0) {
            self.issue(path, format!("must be a non-negative number, is {value}"));
        }
    }

    fn listen(&mut self, path: &str, value: &str) -> Option<SocketAddr> {
        let parsed = value.parse::<SocketAddr>();
        if parsed.is_err() {
            self.issue(
                path,
                format!("{value:?} is not an ip:port address (e.g. \"127.0.0.1:8080\" or \"[::1]:8080\")"),
            );
        }
        parsed.ok()
    }

    /// Listen addresses parse and do not collide.
    fn listeners(&mut self, cfg: &Config) {
        let candidates = [
            ("server.listen", Some(&cfg.server.listen)),
            ("metrics.listen", cfg.metrics.as_ref().map(|m| &m.listen)),
            ("admin.listen", cfg.admin.as_ref().map(|a| &a.listen)),
        ];
        let mut seen: Vec<(&str, SocketAddr)> = Vec::new();
        for (path, value) in candidates {
            let Some(addr) = value.and_then(|v| self.listen(path, v)) else {
                continue;
            };
            if addr.port() != 0 {
                if let Some((other, _)) = seen.iter().find(|(_, a)| *a == addr) {
                    self.issue(path, format!("same address as {other}"));
                }
            }
            seen.push((path, addr));
        }
    }

    fn server(&mut self, s: &ServerConfig) {
        if s.workers > 1024 {
            self.issue(
                "server.workers",
                format!("must be at most 1024, is {}", s.workers),
            );
        }
        for (key, value) in [
            ("max_body_bytes", s.max_body_bytes),
            ("header_timeout_ms", s.header_timeout_ms),
            ("idle_timeout_ms", s.idle_timeout_ms),
            ("drain_timeout_ms", s.drain_timeout_ms),
        ] {
            self.at_least(&format!("server.{key}"), value, 1);
        }
        if let Some(tls) = &s.tls {
            self.path_set("server.tls.cert", &tls.cert);
            self.path_set("server.tls.key", &tls.key);
        }
    }

    /// Reads the TLS files, so that a missing file, unparsable PEM or a
    /// key that does not belong to its certificate is reported with the
    /// key's line (check-config, start and reload alike).
    fn tls_files(&mut self, cfg: &Config) {
        use crate::tls::TlsError;
        if let Some(tls) = &cfg.server.tls {
            if !tls.cert.as_os_str().is_empty() && !tls.key.as_os_str().is_empty() {
                let loaded =
                    crate::tls::ServerTls::load(&cfg.resolve(&tls.cert), &cfg.resolve(&tls.key));
                if let Err(e) = loaded {
                    let key = match e {
                        TlsError::Key { .. } | TlsError::KeyMismatch { .. } => "server.tls.key",
                        _ => "server.tls.cert",
                    };
                    self.issue(key, e.to_string());
                }
            }
        }
        for (i, u) in cfg.upstreams.iter().enumerate() {
            let https = matches!(parse_http_url(&u.url), Ok(HttpUrl { tls: true, .. }));
            match &u.ca_file {
                Some(ca) if https && !ca.as_os_str().is_empty() => {
                    if let Err(e) = crate::tls::client::load_ca_file(&cfg.resolve(ca)) {
                        self.issue(format!("upstreams[{i}].ca_file"), e.to_string());
                    }
                }
                _ => {}
            }
        }
    }

    fn audit(&mut self, a: &AuditConfig) {
        self.path_set("audit.dir", &a.dir);
        self.at_least("audit.batch_ms", a.batch_ms, 1);
        self.at_least("audit.retention_days", a.retention_days.into(), 1);
        self.at_least("audit.segment_bytes", a.segment_bytes, 4096);
    }

    fn cluster(&mut self, c: &ClusterConfig) {
        let scheme_ok = [
            "redis://",
            "rediss://",
            "valkey://",
            "valkeys://",
            "unix://",
        ]
        .iter()
        .any(|s| c.redis.len() > s.len() && strip_prefix_ci(&c.redis, s).is_some());
        if !scheme_ok {
            self.issue(
                "cluster.redis",
                format!("{:?} is not a redis://, rediss:// or unix:// URL", c.redis),
            );
        }
        self.non_empty_opt("cluster.node_id", c.node_id.as_ref());
        self.fraction("cluster.lease_fraction", c.lease_fraction, false);
        self.fraction("cluster.fallback_share", c.fallback_share, true);
    }

    fn upstream(&mut self, p: &str, u: &UpstreamConfig) {
        let url = parse_http_url(&u.url);
        if let Err(e) = &url {
            self.issue(format!("{p}.url"), format!("{:?} {e}", u.url));
        }
        self.non_empty_opt(&format!("{p}.region"), u.region.as_ref());
        self.at_least(&format!("{p}.max_connections"), u.max_connections.into(), 1);
        for (key, value) in [
            ("connect_timeout_ms", u.connect_timeout_ms),
            ("first_byte_timeout_ms", u.first_byte_timeout_ms),
            ("total_timeout_ms", u.total_timeout_ms),
            ("health_interval_ms", u.health_interval_ms),
        ] {
            self.at_least(&format!("{p}.{key}"), value, 1);
        }
        for (key, path) in [
            ("health_path", &u.health_path),
            ("metrics_path", &u.metrics_path),
        ] {
            if let Some(path) = path.as_deref().filter(|p| !p.starts_with('/')) {
                self.issue(format!("{p}.{key}"), format!("{path:?} must start with /"));
            }
        }
        self.non_empty_opt(&format!("{p}.api_key_env"), u.api_key_env.as_ref());
        if let Some(ca) = &u.ca_file {
            self.path_set(&format!("{p}.ca_file"), ca);
            if matches!(url, Ok(HttpUrl { tls: false, .. })) {
                self.issue(format!("{p}.ca_file"), "is only used with an https:// url");
            }
        }
    }

    fn model(&mut self, p: &str, m: &ModelConfig, names: &Names) {
        self.non_empty_opt(&format!("{p}.upstream_model"), m.upstream_model.as_ref());
        if m.targets.is_empty() {
            self.issue(format!("{p}.targets"), "must list at least one target");
        }
        for (j, t) in m.targets.iter().enumerate() {
            let tp = format!("{p}.targets[{j}]");
            self.refers(
                &format!("{tp}.upstream"),
                &t.upstream,
                &names.upstreams,
                "[[upstreams]]",
            );
            self.at_least(&format!("{tp}.weight"), t.weight.into(), 1);
        }
        for (j, f) in m.fallbacks.iter().enumerate() {
            let fp = format!("{p}.fallbacks[{j}]");
            if *f == m.name {
                self.issue(fp, "a model cannot be its own fallback");
            } else {
                self.refers(&fp, f, &names.models, "[[models]]");
            }
        }
        if let Some(price) = &m.price {
            self.non_negative(&format!("{p}.price.input_per_mtok"), price.input_per_mtok);
            self.non_negative(&format!("{p}.price.output_per_mtok"), price.output_per_mtok);
        }
    }

    fn experiment(&mut self, p: &str, e: &ExperimentConfig, names: &Names) {
        if names.models.contains(e.model.as_str()) {
            self.issue(
                format!("{p}.model"),
                format!(
                    "{:?} is already a [[models]] name; an experiment needs a name of its own",
                    e.model
                ),
            );
        }
        if e.variants.is_empty() {
            self.issue(format!("{p}.variants"), "must list at least one variant");
        }
        for (j, var) in e.variants.iter().enumerate() {
            let vp = format!("{p}.variants[{j}]");
            self.refers(
                &format!("{vp}.model"),
                &var.model,
                &names.models,
                "[[models]]",
            );
            self.at_least(&format!("{vp}.weight"), var.weight.into(), 1);
        }
    }

    fn auth(&mut self, a: &AuthConfig) {
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if a.header.is_empty() || !a.header.chars().all(token) {
            self.issue(
                "auth.header",
                format!("{:?} is not an HTTP header name", a.header),
            );
        }
        if let Some(jwt) = &a.jwt {
            self.path_set("auth.jwt.jwks_file", &jwt.jwks_file);
            self.non_empty_opt("auth.jwt.issuer", jwt.issuer.as_ref());
            self.non_empty_opt("auth.jwt.audience", jwt.audience.as_ref());
            self.non_empty("auth.jwt.team_claim", &jwt.team_claim);
            self.non_empty("auth.jwt.user_claim", &jwt.user_claim);
        }
    }

    /// Rate limits and budget, shared by teams and keys.
    fn limits(
        &mut self,
        p: &str,
        rpm: Option<u32>,
        tpm: Option<u64>,
        max_concurrent: Option<u32>,
        budget: Option<&Budget>,
    ) {
        self.at_least_opt(&format!("{p}.rpm"), rpm.map(u64::from));
        self.at_least_opt(&format!("{p}.tpm"), tpm);
        self.at_least_opt(
            &format!("{p}.max_concurrent"),
            max_concurrent.map(u64::from),
        );
        if let Some(b) = budget {
            if !(b.amount.is_finite() && b.amount > 0.0) {
                self.issue(
                    format!("{p}.budget.amount"),
                    format!("must be greater than 0, is {}", b.amount),
                );
            }
        }
    }

    fn team(&mut self, p: &str, t: &TeamConfig, names: &Names) {
        for (j, m) in t.allowed_models.iter().flatten().enumerate() {
            let mp = format!("{p}.allowed_models[{j}]");
            if m.trim().is_empty() {
                self.issue(mp, "must not be empty");
            } else if !m.contains('*') {
                self.client_model(&mp, m, names);
            }
        }
        if let Some(regions) = &t.regions {
            self.non_empty_entries(&format!("{p}.regions"), regions);
        }
        self.limits(p, t.rpm, t.tpm, t.max_concurrent, t.budget.as_ref());
        if !t.alert_at.is_empty() && t.budget.is_none() {
            self.issue(format!("{p}.alert_at"), "needs a budget");
        }
        for (j, &a) in t.alert_at.iter().enumerate() {
            let ap = format!("{p}.alert_at[{j}]");
            self.fraction(&ap, a, false);
            if j > 0 && a <= t.alert_at[j - 1] {
                self.issue(
                    ap,
                    "must be greater than the value before it (ascending order)",
                );
            }
        }
        if let Some(policy) = &t.pii_policy {
            self.refers(
                &format!("{p}.pii_policy"),
                policy,
                &names.policies,
                "[pii.policies] entry",
            );
        }
    }

    fn keys(&mut self, keys: &[KeyConfig], names: &Names) {
        let mut hashes: HashMap<String, usize> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let p = format!("keys[{i}]");
            self.refers(&format!("{p}.team"), &k.team, &names.teams, "[[teams]]");
            if k.sha256.len() != 64 || !k.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                self.issue(
                    format!("{p}.sha256"),
                    "must be 64 hexadecimal digits (SHA-256 of the secret)",
                );
            } else if let Some(j) = hashes.get(&k.sha256.to_ascii_lowercase()) {
                self.issue(format!("{p}.sha256"), format!("same secret as keys[{j}]"));
            } else {
                hashes.insert(k.sha256.to_ascii_lowercase(), i);
            }
            self.non_empty_opt(&format!("{p}.user"), k.user.as_ref());
            self.limits(&p, k.rpm, k.tpm, k.max_concurrent, k.budget.as_ref());
            if let Some(e) = &k.expires_at {
                if !is_rfc3339(e) {
                    self.issue(
                        format!("{p}.expires_at"),
                        format!("{e:?} is not an RFC 3339 date-time with offset (e.g. \"2026-01-31T23:59:59Z\")"),
                    );
                }
            }
        }
    }

    fn pii(&mut self, pii: &PiiConfig) {
        let custom = self.unique_names("pii.custom", "name", pii.custom.iter().map(|c| &c.name));
        for (i, c) in pii.custom.iter().enumerate() {
            if BUILTIN_PII_ENTITIES.contains(&c.name.as_str()) {
                self.issue(
                    format!("pii.custom[{i}].name"),
                    format!("{:?} is a built-in entity", c.name),
                );
            }
            self.non_empty(&format!("pii.custom[{i}].pattern"), &c.pattern);
        }
        if let Some(d) = &pii.default_policy {
            if !pii.policies.contains_key(d) {
                self.issue(
                    "pii.default_policy",
                    format!("no [pii.policies] entry named {d:?}"),
                );
            }
        }
        for (name, policy) in &pii.policies {
            let p = format!("pii.policies.{}", key_segment(name));
            if policy.entities.is_empty() {
                self.issue(format!("{p}.entities"), "must list at least one entity");
            }
            for (j, e) in policy.entities.iter().enumerate() {
                if !BUILTIN_PII_ENTITIES.contains(&e.as_str()) && !custom.contains(e.as_str()) {
                    self.issue(
                        format!("{p}.entities[{j}]"),
                        format!(
                            "unknown entity {e:?}: not built in ({}) nor a [[pii.custom]] name",
                            BUILTIN_PII_ENTITIES.join(", ")
                        ),
                    );
                }
            }
        }
    }

    fn cache(&mut self, c: &CacheConfig, names: &Names) {
        self.fraction("cache.similarity", c.similarity, false);
        self.at_least("cache.ttl_s", c.ttl_s, 1);
        self.at_least("cache.max_entries", c.max_entries, 1);
        self.non_negative("cache.max_temperature", c.max_temperature);
        if let Some(persist) = &c.persist {
            self.path_set("cache.persist", persist);
        }
        let Some(e) = &c.embedder else {
            if c.semantic == Some(true) {
                self.issue("cache.semantic", "a semantic cache needs [cache.embedder]");
            }
            return;
        };
        match e.kind {
            EmbedderKind::Local => {
                for (key, value) in [("model_dir", &e.model_dir), ("onnxruntime", &e.onnxruntime)] {
                    let path = format!("cache.embedder.{key}");
                    match value {
                        Some(v) => self.path_set(&path, v),
                        None => self.issue(path, "is required when kind = \"local\""),
                    }
                }
            }
            EmbedderKind::Upstream => match &e.model {
                Some(m) => self.refers("cache.embedder.model", m, &names.models, "[[models]]"),
                None => self.issue(
                    "cache.embedder.model",
                    "is required when kind = \"upstream\"",
                ),
            },
        }
    }
}

/// A map key as a path segment: bare when TOML allows it bare, else quoted.
fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    }
}

/// `YYYY-MM-DD(T|t| )HH:MM:SS[.frac](Z|z|±HH:MM)`, with calendar-valid fields.
fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let shape = b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !shape {
        return false;
    }
    let (Some(year), Some(month), Some(day), Some(hour), Some(min), Some(sec)) = (
        num(0..4),
        num(5..7),
        num(8..10),
        num(11..13),
        num(14..16),
        num(17..19),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    if day == 0 || day > days || hour > 23 || min > 59 || sec > 60 {
        return false;
    }
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &frac[digits..];
    }
    match rest.as_bytes() {
        [b'Z' | b'z'] => true,
        [b'+' | b'-', h1, h2, b':', m1, m2] => {
            let two = |a: u8, b: u8| {
                (a.is_ascii_digit() && b.is_ascii_digit()).then(|| (a - b'0') * 10 + (b - b'0'))
            };
            matches!((two(*h1, *h2), two(*m1, *m2)), (Some(h), Some(m)) if h < 24 && m < 60)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls() {
        let u = parse_http_url("https://api.example.com/openai/").unwrap();
        assert_eq!(
            u,
            HttpUrl {
                tls: true,
                host: "api.example.com".into(),
                port: 443,
                path_prefix: "/openai".into()
            }
        );
        let u = parse_http_url("http://127.0.0.1:18000").unwrap();
        assert_eq!(
            (u.tls, u.host.as_str(), u.port, u.path_prefix.as_str()),
            (false, "127.0.0.1", 18000, "")
        );
        let u = parse_http_url("http://[::1]:8000/v1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_prefix.as_str()),
            ("::1", 8000, "/v1")
        );
        for bad in [
            "ftp://x",
            "http://",
            "http://:80",
            "http://host:0",
            "http://host:70000",
            "http://host:+80",
            "http://u@host",
            "http://host/?q=1",
            "http://[::1",
            "http://[zz]:1",
            "http://ho st",
            "127.0.0.1:8000",
        ] {
            assert!(parse_http_url(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn rfc3339() {
        for good in [
            "2026-01-31T23:59:59Z",
            "2024-02-29T00:00:00+01:00",
            "2026-01-31t23:59:59.123456z",
            "2026-01-31 23:59:59-05:30",
        ] {
            assert!(is_rfc3339(good), "{good}");
        }
        for bad in [
            "2026-01-31",
            "2026-01-31T23:59:59",
            "2025-02-29T00:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-01-31T24:00:00Z",
            "2026-01-31T23:59:59.Z",
            "2026-01-31T23:59:59+0100",
            "2026-01-31T23:59:59+25:00",
        ] {
            assert!(!is_rfc3339(bad), "{bad}");
        }
    }

    #[test]
    fn map_keys_are_quoted_when_needed() {
        assert_eq!(key_segment("strict"), "strict");
        assert_eq!(key_segment("a.b"), "\"a.b\"");
    }
}
