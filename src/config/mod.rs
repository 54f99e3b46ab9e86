//! sluice's configuration: the schema of the TOML file (`schema`), its
//! semantic validation (`validate`), and loading with line-precise errors.
//!
//! Loading is two steps. Deserialization rejects syntax errors, wrong types,
//! missing required keys and unknown keys, with toml's own message naming the
//! line and column ([`ConfigError::Parse`]). Validation then checks what
//! serde cannot (references between sections, ranges, addresses); each issue
//! is mapped back to the line of the key it is about ([`ConfigError::Invalid`]).
//!
//! The contract for keys and their meaning is `sluice.reference.toml`
//! (a copy lives in `tests/fixtures/`).

mod schema;
pub mod snapshot;
mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use toml_edit::{ImDocument, Item};

pub use schema::*;
pub use validate::{parse_http_url, validate, HttpUrl, Issue, BUILTIN_PII_ENTITIES};

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Syntax, type, missing or unknown key: toml's message, prefixed with the file name.
    #[error("{0}")]
    Parse(String),
    /// Validation issues, ordered by line; displayed one per line.
    #[error("{}", join_lines(.0))]
    Invalid(Vec<Located>),
}

/// A validation [`Issue`] with the line of the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub path: String,
    /// 1-based line in the source; `None` when the key could not be found.
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        write!(f, "{}: {}", self.path, self.message)
    }
}

fn join_lines(items: &[Located]) -> String {
    items
        .iter()
        .map(Located::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads, parses and validates the configuration file at `path`.
/// Relative paths inside it are resolved against its folder.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let src = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let base_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    parse_named(&src, &base_dir, &path.display().to_string())
}

/// Parses and validates configuration text; `base_dir` is where relative paths start.
pub fn parse_str(src: &str, base_dir: &Path) -> Result<Config, ConfigError> {
    parse_named(src, base_dir, "<config>")
}

fn parse_named(src: &str, base_dir: &Path, name: &str) -> Result<Config, ConfigError> {
    let mut cfg: Config = toml::from_str(src)
        .map_err(|e| ConfigError::Parse(format!("{name}: {}", e.to_string().trim_end())))?;
    cfg.base_dir = base_dir.to_path_buf();
    if let Err(issues) = validate(&cfg) {
        let doc = ImDocument::parse(src).ok();
        let mut located: Vec<Located> = issues
            .into_iter()
            .map(|i| Located {
                line: doc.as_ref().and_then(|d| line_of(d, src, &i.path)),
                path: i.path,
                message: i.message,
            })
            .collect();
        located.sort_by_key(|l| l.line.unwrap_or(usize::MAX));
        return Err(ConfigError::Invalid(located));
    }
    Ok(cfg)
}

/// One step of an issue path.
#[derive(Debug, PartialEq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// Splits `models[1].targets[0].upstream` or `pii.policies."a.b".entities[2]`.
fn segments(path: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(c) = rest.chars().next() {
        if c == '.' {
            rest = &rest[1..];
        } else if c == '[' {
            let end = rest.find(']').unwrap_or(rest.len());
            match rest[1..end].parse() {
                Ok(i) => out.push(Segment::Index(i)),
                Err(_) => break,
            }
            rest = rest.get(end + 1..).unwrap_or_default();
        } else if c == '"' {
            let mut escaped = false;
            let end = rest[1..]
                .char_indices()
                .find(|&(_, ch)| {
                    let close = ch == '"' && !escaped;
                    escaped = ch == '\\' && !escaped;
                    close
                })
                .map_or(rest.len(), |(i, _)| i + 2);
            let quoted = &rest[..end];
            let key = serde_json::from_str(quoted).unwrap_or_else(|_| quoted.to_string());
            out.push(Segment::Key(key));
            rest = &rest[end..];
        } else {
            let end = rest.find(['.', '[']).unwrap_or(rest.len());
            out.push(Segment::Key(rest[..end].to_string()));
            rest = &rest[end..];
        }
    }
    out
}

/// 1-based line of the deepest item of `path` found in `doc`.
fn line_of(doc: &ImDocument<&str>, src: &str, path: &str) -> Option<usize> {
    let mut item: &Item = doc.as_item();
    let mut start = None;
    for seg in segments(path) {
        let (next, key_span) = match &seg {
            Segment::Key(k) => match item.as_table_like().and_then(|t| t.get_key_value(k)) {
                Some((key, next)) => (next, key.span()),
                None => break,
            },
            Segment::Index(i) => match item.get(*i) {
                Some(next) => (next, None),
                None => break,
            },
        };
        if let Some(span) = next.span().or(key_span) {
            start = Some(span.start);
        }
        item = next;
    }
    start.map(|s| src[..s.min(src.len())].matches('\n').count() + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = include_str!("../../tests/fixtures/sluice.reference.toml");

    fn invalid(src: &str) -> Vec<Located> {
        match parse_str(src, Path::new("/etc/sluice")) {
            Err(ConfigError::Invalid(v)) => v,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn parse_error(src: &str) -> String {
        match parse_str(src, Path::new("/etc/sluice")) {
            Err(ConfigError::Parse(m)) => m,
            other => panic!("expected Parse, got {other:?}"),
        }
    }

    fn line_containing(src: &str, needle: &str) -> usize {
        src.lines().position(|l| l.contains(needle)).expect(needle) + 1
    }

    #[test]
    fn reference_file_is_valid() {
        let cfg = parse_str(REFERENCE, Path::new("/etc/sluice")).unwrap();
        assert_eq!(cfg.server.listen, "127.0.0.1:8080");
        assert_eq!(cfg.server.workers, 2);
        assert_eq!(cfg.server.io, IoMode::Auto);
        assert!(cfg.server.tls.is_none());
        assert_eq!(cfg.upstreams.len(), 3);
        assert_eq!(cfg.upstreams[1].max_connections, 256);
        assert_eq!(cfg.upstreams[1].health_path, None);
        assert_eq!(
            cfg.upstreams[2].api_key_env.as_deref(),
            Some("US_CLOUD_KEY")
        );
        assert_eq!(cfg.models[0].balance, Balance::LeastOutstanding);
        assert_eq!(cfg.models[1].balance, Balance::RoundRobin);
        assert_eq!(cfg.models[1].targets[0].weight, 1);
        assert_eq!(cfg.models[1].upstream_model_name(), "llama-3.2-3b");
        assert_eq!(cfg.models[2].tier, Some(Tier::Ultra));
        assert_eq!(cfg.experiments[0].sticky, Sticky::User);
        assert_eq!(cfg.teams[0].budget.unwrap().period, Period::Month);
        assert_eq!(cfg.teams[1].max_concurrent, None);
        assert_eq!(cfg.keys[0].tpm, None);
        assert_eq!(
            cfg.auth.as_ref().unwrap().jwt.as_ref().unwrap().user_claim,
            "sub"
        );
        let pii = cfg.pii.as_ref().unwrap();
        assert_eq!(pii.policies["reversible"].action, PiiAction::Pseudonymize);
        assert_eq!(pii.custom[0].name, "employee_id");
        let cache = cfg.cache.as_ref().unwrap();
        assert_eq!(cache.verify, Verify::Strict);
        assert_eq!(cache.embedder.as_ref().unwrap().kind, EmbedderKind::Local);
        assert_eq!(
            cfg.resolve(cfg.store.as_ref().unwrap().path.as_path()),
            Path::new("/etc/sluice/var/sluice.db")
        );
        assert_eq!(cfg.resolve(Path::new("/abs/x")), Path::new("/abs/x"));
    }

    #[test]
    fn defaults_apply() {
        let cfg = parse_str(
            "[server]\nlisten = \"0.0.0.0:80\"\n[metrics]\n[resilience]\nretries = 0\n[cache]\n[audit]\ndir = \"a\"\n",
            Path::new("."),
        )
        .unwrap();
        let s = &cfg.server;
        assert_eq!(
            (
                s.workers,
                s.pin_cores,
                s.max_body_bytes,
                s.header_timeout_ms,
                s.idle_timeout_ms,
                s.drain_timeout_ms
            ),
            (0, true, 8_388_608, 10_000, 60_000, 30_000)
        );
        assert_eq!(cfg.metrics.unwrap().listen, "127.0.0.1:9090");
        let r = cfg.resilience.unwrap();
        assert_eq!(
            (
                r.retries,
                r.backoff_ms,
                r.breaker_failures,
                r.breaker_cooldown_ms
            ),
            (0, 50, 5, 10_000)
        );
        assert_eq!(cfg.cache.unwrap(), CacheConfig::default());
        let a = cfg.audit.unwrap();
        assert_eq!(
            (
                a.detail,
                a.fsync,
                a.batch_ms,
                a.retention_days,
                a.segment_bytes
            ),
            (AuditDetail::Redacted, Fsync::Batch, 50, 180, 67_108_864)
        );
        assert!(cfg.admin.is_none() && cfg.upstreams.is_empty() && cfg.pii.is_none());
    }

    #[test]
    fn only_server_listen_is_required() {
        assert!(parse_error("").contains("server"));
        let msg = parse_error("[server]\nworkers = 1\n");
        assert!(msg.contains("listen"), "{msg}");
        parse_str("[server]\nlisten = \"127.0.0.1:8080\"\n", Path::new(".")).unwrap();
    }

    #[test]
    fn unknown_key_in_server_names_key_and_line() {
        let src = REFERENCE.replace("pin_cores = true", "pin_cores = true\nturbo = 1");
        let msg = parse_error(&src);
        assert!(msg.starts_with("<config>: "), "{msg}");
        assert!(msg.contains("turbo") && msg.contains("line"), "{msg}");
        assert!(
            msg.contains(&format!("line {}", line_containing(&src, "turbo"))),
            "{msg}"
        );
    }

    #[test]
    fn unknown_key_in_models_names_key_and_line() {
        let src = REFERENCE.replace(
            "name = \"frontier\"",
            "name = \"frontier\"\ncontext_window = 8192",
        );
        let msg = parse_error(&src);
        assert!(
            msg.contains("context_window") && msg.contains("line"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("line {}", line_containing(&src, "context_window"))),
            "{msg}"
        );
    }

    #[test]
    fn missing_upstream_is_located() {
        let src = REFERENCE.replace(
            "targets = [{ upstream = \"gpu-b\" }]",
            "targets = [{ upstream = \"gpu-z\" }]",
        );
        let issues = invalid(&src);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "models[1].targets[0].upstream");
        assert_eq!(issues[0].line, Some(line_containing(&src, "gpu-z")));
        let shown = ConfigError::Invalid(issues.clone()).to_string();
        assert_eq!(
            shown,
            format!(
                "line {}: models[1].targets[0].upstream: no [[upstreams]] named \"gpu-z\"",
                issues[0].line.unwrap()
            )
        );
    }

    #[test]
    fn duplicate_model_name() {
        let src = REFERENCE.replace("name = \"embed-small\"", "name = \"frontier\"");
        let issues = invalid(&src);
        assert!(
            issues.iter().any(|i| i.path == "models[3].name"
                && i.message.contains("duplicate")
                && i.line
                    == Some(
                        src.lines()
                            .enumerate()
                            .filter(|(_, l)| l.starts_with("name = \"frontier\""))
                            .nth(1)
                            .unwrap()
                            .0
                            + 1
                    )),
            "{issues:?}"
        );
    }

    #[test]
    fn bad_sha256() {
        let src = REFERENCE.replace(
            "24651fd68f7ec5dafadd6aade4989d61c65687d5e8c712d91dfedadc7a862a9f",
            "xyz",
        );
        let issues = invalid(&src);
        assert_eq!(issues.len(), 1, "{issues:?}");
        assert_eq!(issues[0].path, "keys[0].sha256");
        assert_eq!(
            issues[0].line,
            Some(line_containing(&src, "sha256 = \"xyz\""))
        );
    }

    #[test]
    fn all_issues_are_collected() {
        let src = r#"
[server]
listen = "nowhere"
workers = 5000
header_timeout_ms = 0

[metrics]
listen = "127.0.0.1:9090"

[admin]
listen = "127.0.0.1:9090"

[audit]
dir = "a"
segment_bytes = 100
batch_ms = 0

[cluster]
redis = "http://x"
lease_fraction = 0.0
fallback_share = 1.5

[[upstreams]]
name = "a"
url = "ftp://a"
max_connections = 0

[[upstreams]]
name = "a"
url = "http://b:99999"

[[upstreams]]
name = ""
url = "http://c/"
health_path = "health"
ca_file = "ca.pem"

[[models]]
name = "m"
targets = []
fallbacks = ["m", "nope"]
price = { input_per_mtok = -1, output_per_mtok = 0 }

[[models]]
name = "n"
targets = [{ upstream = "a", weight = 0 }]

[[experiments]]
name = "e"
model = "m"
variants = []

[[experiments]]
name = "e"
model = "alias"
variants = [{ model = "ghost", weight = 0 }]

[resilience]
backoff_ms = 0
breaker_failures = 0

[auth]
header = "bad header"

[[teams]]
name = "t"
allowed_models = ["", "ghost", "llama-*", "alias"]
regions = [""]
budget = { amount = 0, period = "day" }
alert_at = [0.5, 0.5, 1.5]
rpm = 0
pii_policy = "missing"

[[teams]]
name = "t"
alert_at = [0.5]

[[keys]]
id = "k"
team = "nobody"
sha256 = "24651FD68F7EC5DAFADD6AADE4989D61C65687D5E8C712D91DFEDADC7A862A9F"
expires_at = "tomorrow"

[[keys]]
id = "k"
team = "t"
sha256 = "24651fd68f7ec5dafadd6aade4989d61c65687d5e8c712d91dfedadc7a862a9f"
expires_at = 2026-01-01T00:00:00Z
budget = { amount = -5, period = "week" }

[alerts]
webhook = "hooks.example.com"

[pii]
default_policy = "none"

[pii.policies."odd.name"]
action = "mask"
entities = ["email", "passport", "employee_id"]

[pii.policies.empty]
action = "monitor"
entities = []

[[pii.custom]]
name = "email"
pattern = ""

[[pii.custom]]
name = "employee_id"
pattern = "E[0-9]+"

[safety]
deny_patterns = [""]

[cache]
semantic = true
similarity = 1.5
max_entries = 0

[cache.embedder]
kind = "upstream"
model = "ghost"

[[agents]]
team = "nobody"
max_turns = 0

[[approvals]]
team = "nobody"
models = ["ghost"]
timeout_s = 0
"#;
        let issues = invalid(src);
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        for expected in [
            "server.listen",
            "server.workers",
            "server.header_timeout_ms",
            "admin.listen",
            "audit.segment_bytes",
            "audit.batch_ms",
            "cluster.redis",
            "cluster.lease_fraction",
            "cluster.fallback_share",
            "upstreams[0].url",
            "upstreams[0].max_connections",
            "upstreams[1].name",
            "upstreams[1].url",
            "upstreams[2].name",
            "upstreams[2].health_path",
            "models[0].targets",
            "models[0].fallbacks[0]",
            "models[0].fallbacks[1]",
            "models[0].price.input_per_mtok",
            "models[1].targets[0].weight",
            "experiments[0].model",
            "experiments[0].variants",
            "experiments[1].name",
            "experiments[1].variants[0].model",
            "experiments[1].variants[0].weight",
            "resilience.backoff_ms",
            "resilience.breaker_failures",
            "auth.header",
            "teams[0].allowed_models[0]",
            "teams[0].allowed_models[1]",
            "teams[0].regions[0]",
            "teams[0].budget.amount",
            "teams[0].alert_at[1]",
            "teams[0].alert_at[2]",
            "teams[0].rpm",
            "teams[0].pii_policy",
            "teams[1].name",
            "teams[1].alert_at",
            "keys[0].team",
            "keys[0].expires_at",
            "keys[1].id",
            "keys[1].sha256",
            "keys[1].budget.amount",
            "alerts.webhook",
            "pii.default_policy",
            "pii.policies.\"odd.name\".entities[1]",
            "pii.policies.empty.entities",
            "pii.custom[0].name",
            "pii.custom[0].pattern",
            "safety.deny_patterns[0]",
            "cache.similarity",
            "cache.max_entries",
            "cache.embedder.model",
            "agents[0].team",
            "agents[0].max_turns",
            "approvals[0].team",
            "approvals[0].models[0]",
            "approvals[0].timeout_s",
        ] {
            assert!(
                paths.contains(&expected),
                "missing {expected} in {paths:#?}"
            );
        }
        // Not flagged: a glob, an experiment alias, a custom entity.
        for absent in [
            "teams[0].allowed_models[2]",
            "teams[0].allowed_models[3]",
            "pii.policies.\"odd.name\".entities[2]",
        ] {
            assert!(!paths.contains(&absent), "unexpected {absent}");
        }
        assert!(paths.contains(&"upstreams[2].ca_file"));
        // Every issue found its line, and lines are ascending.
        let lines: Vec<usize> = issues.iter().map(|i| i.line.expect(&i.path)).collect();
        assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
        let quoted = issues
            .iter()
            .find(|i| i.path.starts_with("pii.policies.\"odd"))
            .unwrap();
        assert_eq!(quoted.line, Some(line_containing(src, "\"passport\"")));
        let weight = issues
            .iter()
            .find(|i| i.path == "experiments[1].variants[0].weight")
            .unwrap();
        assert_eq!(
            weight.line,
            Some(line_containing(src, "\"ghost\", weight = 0"))
        );
    }

    #[test]
    fn embedder_requirements() {
        let base = "[server]\nlisten = \"127.0.0.1:1\"\n[cache.embedder]\n";
        let issues = invalid(&format!("{base}kind = \"local\"\n"));
        let paths: Vec<&str> = issues.iter().map(|i| i.path.as_str()).collect();
        assert_eq!(
            paths,
            ["cache.embedder.model_dir", "cache.embedder.onnxruntime"]
        );
        assert_eq!(
            issues[0].line,
            Some(3),
            "falls back to the [cache.embedder] header"
        );
        let issues = invalid(&format!("{base}kind = \"upstream\"\n"));
        assert_eq!(issues[0].path, "cache.embedder.model");
    }

    #[test]
    fn wrong_enum_value_is_a_parse_error() {
        let src = REFERENCE.replace("io = \"auto\"", "io = \"iouring\"");
        let msg = parse_error(&src);
        assert!(msg.contains("iouring") && msg.contains("io_uring"), "{msg}");
    }

    #[test]
    fn path_segments() {
        use Segment::*;
        assert_eq!(
            segments("models[1].targets[0].upstream"),
            [
                Key("models".into()),
                Index(1),
                Key("targets".into()),
                Index(0),
                Key("upstream".into())
            ]
        );
        assert_eq!(
            segments("pii.policies.\"a.\\\"b\".entities[2]"),
            [
                Key("pii".into()),
                Key("policies".into()),
                Key("a.\"b".into()),
                Key("entities".into()),
                Index(2)
            ]
        );
    }

    #[test]
    fn load_file_reports_missing_file_and_names_file_in_parse_errors() {
        let dir = std::env::temp_dir().join(format!("sluice-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.toml");
        assert!(matches!(load_file(&missing), Err(ConfigError::Read { .. })));
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "[server\n").unwrap();
        match load_file(&bad) {
            Err(ConfigError::Parse(m)) => assert!(m.starts_with(&bad.display().to_string()), "{m}"),
            other => panic!("{other:?}"),
        }
        let good = dir.join("good.toml");
        std::fs::write(&good, REFERENCE).unwrap();
        let cfg = load_file(&good).unwrap();
        assert_eq!(cfg.base_dir, dir);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
