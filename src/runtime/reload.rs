//! Configuration reload (SIGHUP, `POST /admin/reload`): the file is read,
//! validated and built into a new snapshot off the request path; when that
//! succeeds the snapshot is swapped in whole ([`super::Generation`]) and
//! every worker picks it up at its next request, keeping its connections.
//! When it fails nothing changes: the reason is logged and counted
//! (`sluice_config_reloads_total{result="error"}`).
//!
//! What a reload can change: models, experiments, upstreams, teams, keys,
//! agents, guard policies, resilience, alerts, and the TLS certificate and
//! key (`[server.tls]`'s files are read again on every reload, so
//! replacing the files and sending SIGHUP rotates the certificate; a bad
//! certificate or key refuses the reload and the old one stays, counted in
//! `sluice_tls_certificate_reloads_total{result="error"}`). What needs a
//! restart (a reload that changes it is refused): `[server]` listen/
//! workers/io/pin_cores, adding or removing `[server.tls]`, `[metrics]`,
//! `[audit]`, `[admin]`, `[store]`, `[cluster]`, and of `[cache]`
//! its presence, embedder, `max_entries` and `persist` (its rules reload).
//!
//! When the upstream list changed (any field of any upstream), the shared
//! upstream state is built anew: breakers, health verdicts and latency
//! averages start over for every upstream, and the health thread of the
//! old list stops. Workers build new connection pools then; requests in
//! flight finish on the old ones. Otherwise the state and pools are kept.

use super::Shared;
use crate::config::snapshot::Snapshot;
use crate::config::Config;
use std::path::PathBuf;
use std::sync::Arc;

/// Reloads one configuration file into a running gateway.
pub struct Reloader {
    shared: Arc<Shared>,
    path: PathBuf,
    /// `[admin]`, `[store]` and `[cluster]` as started (a reload may not
    /// change them).
    fixed: String,
}

impl Reloader {
    pub fn new(shared: Arc<Shared>, path: PathBuf, started_with: &Config) -> Self {
        Reloader {
            shared,
            path,
            fixed: fixed_sections(started_with),
        }
    }

    /// Reads, validates and applies the file. Ok(config sha256) or the
    /// reason it was refused; logged and counted either way.
    pub fn reload(&self) -> Result<String, String> {
        let result = self.try_reload();
        match &result {
            Ok(hash) => {
                crate::metrics::config_reload("ok");
                if self.shared.snapshot().server.tls.is_some() {
                    crate::metrics::tls_certificate_reload("ok");
                }
                tracing::info!(file = %self.path.display(), config_sha256 = %hash, "configuration reloaded");
            }
            Err(reason) => {
                crate::metrics::config_reload("error");
                tracing::error!(file = %self.path.display(), %reason, "configuration reload refused; the running configuration stays");
            }
        }
        result
    }

    fn try_reload(&self) -> Result<String, String> {
        let source = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
        let base = self.path.parent().unwrap_or(std::path::Path::new("."));
        let cfg = crate::config::parse_str(&source, base).map_err(|e| {
            if let crate::config::ConfigError::Invalid(issues) = &e {
                if issues.iter().any(|i| i.path.starts_with("server.tls")) {
                    crate::metrics::tls_certificate_reload("error");
                }
            }
            format!("{}: {e}", self.path.display())
        })?;
        if fixed_sections(&cfg) != self.fixed {
            return Err("[admin], [store] or [cluster] changed: restart sluice to apply".into());
        }
        let snapshot = Snapshot::build(&cfg, &source).map_err(|e| {
            if matches!(e, crate::config::snapshot::SnapshotError::Tls(_)) {
                crate::metrics::tls_certificate_reload("error");
            }
            format!("{}: {e}", self.path.display())
        })?;
        self.shared.apply(snapshot)
    }
}

fn fixed_sections(cfg: &Config) -> String {
    format!("{:?} {:?} {:?}", cfg.admin, cfg.store, cfg.cluster)
}

impl Shared {
    /// Swaps in `snapshot` unless it changes a setting that needs a
    /// restart. Returns the new configuration's hash.
    pub fn apply(&self, snapshot: Snapshot) -> Result<String, String> {
        let _reload = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = self.generation();
        let before = &old.snapshot;
        let s = (&before.server, &snapshot.server);
        let mut fixed = Vec::new();
        if s.0.listen != s.1.listen {
            fixed.push("server.listen");
        }
        if s.0.workers != s.1.workers {
            fixed.push("server.workers");
        }
        if s.0.io != s.1.io {
            fixed.push("server.io");
        }
        if s.0.pin_cores != s.1.pin_cores {
            fixed.push("server.pin_cores");
        }
        if s.0.tls.is_some() != s.1.tls.is_some() {
            // A port that changes protocol under its clients' feet is a
            // surprise; turning TLS on or off is a restart.
            fixed.push("[server.tls] (added or removed)");
        }
        if before.metrics_listen != snapshot.metrics_listen {
            fixed.push("[metrics]");
        }
        if format!("{:?}", before.audit) != format!("{:?}", snapshot.audit) {
            fixed.push("[audit]");
        }
        // The cache's rules (similarity, verify, ttl_s, max_temperature,
        // exact, semantic) apply at the next request; what it was opened
        // with (its presence, embedder, bounds, persist) needs a restart.
        let opened = |c: &Option<crate::config::snapshot::CacheSettings>| {
            c.as_ref()
                .map(|c| format!("{:?}", (&c.embedder, c.max_entries, &c.persist)))
        };
        if opened(&before.cache) != opened(&snapshot.cache) {
            fixed.push("[cache] (presence, embedder, max_entries, persist)");
        }
        if !fixed.is_empty() {
            return Err(format!(
                "{} changed: restart sluice to apply",
                fixed.join(", ")
            ));
        }
        let same_upstreams =
            format!("{:?}", before.upstreams) == format!("{:?}", snapshot.upstreams);
        let upstreams = if same_upstreams {
            old.upstreams.clone()
        } else {
            let states = crate::upstream::health::UpstreamStates::new(snapshot.upstreams.len());
            crate::upstream::health::spawn_checker(snapshot.upstreams.clone(), states.clone())
                .map_err(|e| format!("cannot start the health thread: {e}"))?;
            old.upstreams.retire();
            tracing::info!(
                upstreams = snapshot.upstreams.len(),
                "upstream list changed: breaker and health state start over"
            );
            states
        };
        if let (Some(old), Some(new)) = (&s.0.tls, &s.1.tls) {
            if old.fingerprint != new.fingerprint {
                tracing::info!(cert = %new.cert_path.display(), sha256 = %new.fingerprint, previous_sha256 = %old.fingerprint,
                    "TLS certificate replaced: new handshakes use it, open connections keep theirs");
            }
        }
        let hash = snapshot.config_hash.clone();
        let number = self.install(Arc::new(snapshot), upstreams);
        tracing::debug!(generation = number, "configuration generation installed");
        Ok(hash)
    }
}
