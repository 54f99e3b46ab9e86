//! Authentication: the credentials of a request -> a [`Principal`]
//! (key, team, user).
//!
//! Two kinds of credentials, both as `Authorization: Bearer <token>` (or the
//! header `[auth].header` names) or `x-api-key: <token>`:
//!
//! - API keys: the SHA-256 of the presented secret is looked up in the
//!   [`KeyTable`] (static keys from `[[keys]]` plus keys created through the
//!   admin API), then compared in constant time. Secrets are never stored,
//!   logged or kept past the hash.
//! - JWTs (when `[auth.jwt]` is set): RS256/ES256 against the JWKS file,
//!   see [`super::jwt`].
//!
//! The tables here are immutable. The team tables ([`Access`]) belong to a
//! configuration snapshot; the key table lives behind `arc-swap` in the
//! runtime's `Shared` so that the admin API can swap in a new one (create,
//! revoke) without touching the request path.

use super::jwt::{JwtError, JwtVerifier};
use crate::config::{AgentConfig, Config, KeyConfig, TeamConfig};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Who is calling: the key (absent for JWTs), its team and its user.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The API key used; None when a JWT authenticated the request.
    pub key: Option<Arc<Key>>,
    pub team: Arc<Team>,
    /// The key's `user`, or the JWT's user claim.
    pub user: Option<Arc<str>>,
}

impl Principal {
    /// The key id, or `"jwt"` for a JWT.
    pub fn key_id(&self) -> &str {
        self.key.as_ref().map_or("jwt", |k| &k.id)
    }

    /// The key id as a shared string (for usage records).
    pub fn key_id_arc(&self) -> Arc<str> {
        static JWT: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        match &self.key {
            Some(k) => k.id.clone(),
            None => JWT.get_or_init(|| Arc::from("jwt")).clone(),
        }
    }

    /// The team's data-residency regions; None = not restricted. Route
    /// selection takes only targets whose upstream region is listed.
    pub fn allowed_regions(&self) -> Option<&[Box<str>]> {
        self.team.allowed_regions()
    }
}

/// A `[[teams]]` entry as the request path needs it.
#[derive(Debug)]
pub struct Team {
    pub name: Arc<str>,
    /// Index in the snapshot's team list (stable within one snapshot).
    pub index: usize,
    /// None = every model.
    pub allowed_models: Option<NameRule>,
    /// Per client-facing model name of the snapshot (models, then
    /// experiments): may this team use it.
    pub allowed_slots: Box<[bool]>,
    /// None = every region.
    pub regions: Option<Box<[Box<str>]>>,
    /// The agent tool policy of the team (`[[agents]]`), if any.
    pub agent: Option<AgentPolicy>,
    /// The `GET /v1/models` body for this team, built once.
    pub models_json: Vec<u8>,
    /// `pii_policy`: the name under `[pii.policies]`; None = the default.
    pub pii_policy: Option<Box<str>>,
    /// `audit_detail`: overrides `[audit].detail` for this team's records.
    pub audit_detail: Option<crate::config::AuditDetail>,
    /// Rate limits and budget of the team (`rpm`, `tpm`,
    /// `max_concurrent`, `budget`, `alert_at`); None = unlimited.
    pub controls: Option<Arc<super::account::Controls>>,
    /// `cache`: may this team's requests be answered from (and stored in)
    /// the response cache.
    pub cache: bool,
}

impl Team {
    pub fn allowed_regions(&self) -> Option<&[Box<str>]> {
        self.regions.as_deref()
    }

    /// Whether the team may use the snapshot's model name at `slot`
    /// (see `authorize::slot`).
    pub fn may_use_slot(&self, slot: usize) -> bool {
        self.allowed_slots.get(slot).copied().unwrap_or(false)
    }

    pub fn may_use_model(&self, name: &str) -> bool {
        self.allowed_models.as_ref().is_none_or(|r| r.matches(name))
    }

    pub fn region_allowed(&self, region: Option<&str>) -> bool {
        match &self.regions {
            None => true,
            Some(list) => region.is_some_and(|r| list.iter().any(|a| &**a == r)),
        }
    }
}

/// Names and globs (`*` any run, `?` one character).
#[derive(Debug, Default)]
pub struct NameRule {
    any: bool,
    exact: HashSet<Box<str>>,
    globs: Vec<Box<str>>,
}

impl NameRule {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Self {
        let mut rule = NameRule::default();
        for p in patterns {
            let p = p.as_ref();
            if p == "*" {
                rule.any = true;
            } else if p.contains(['*', '?']) {
                rule.globs.push(p.into());
            } else {
                rule.exact.insert(p.into());
            }
        }
        rule
    }

    /// True when the rule matches nothing.
    pub fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.globs.is_empty()
    }

    pub fn matches(&self, name: &str) -> bool {
        self.any || self.exact.contains(name) || self.globs.iter().any(|g| glob(g, name))
    }
}

/// Glob match with `*` (any run, possibly empty) and `?` (one character).
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// An `[[agents]]` policy.
#[derive(Debug)]
pub struct AgentPolicy {
    /// None = every tool not denied.
    pub allowed_tools: Option<NameRule>,
    pub denied_tools: NameRule,
    pub max_turns: Option<u32>,
    pub max_session_s: Option<u64>,
}

impl AgentPolicy {
    fn new(a: &AgentConfig) -> Self {
        AgentPolicy {
            allowed_tools: a.allowed_tools.as_deref().map(NameRule::new),
            denied_tools: NameRule::new(&a.denied_tools),
            max_turns: a.max_turns,
            max_session_s: a.max_session_s,
        }
    }

    pub fn tool_allowed(&self, name: &str) -> bool {
        !self.denied_tools.matches(name)
            && self.allowed_tools.as_ref().is_none_or(|r| r.matches(name))
    }

    pub fn has_sessions(&self) -> bool {
        self.max_turns.is_some() || self.max_session_s.is_some()
    }
}

/// An API key as the request path sees it.
#[derive(Debug)]
pub struct Key {
    pub id: Arc<str>,
    /// A short identifier for logs and reports (never enough to use the key).
    pub prefix: Box<str>,
    pub sha256: [u8; 32],
    pub team: Arc<Team>,
    pub user: Option<Arc<str>>,
    /// Unix seconds; the key is refused from then on.
    pub expires_at: Option<i64>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    /// The key's own rate limits and budget, shared by every key table
    /// built from the same snapshot (counters survive admin changes).
    pub controls: Option<Arc<super::account::Controls>>,
}

/// A key not bound to a snapshot's teams yet: from `[[keys]]` or the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    pub id: String,
    pub prefix: String,
    pub sha256: [u8; 32],
    pub team: String,
    pub user: Option<String>,
    pub expires_at: Option<i64>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
}

impl KeySpec {
    fn from_config(k: &KeyConfig) -> Option<Self> {
        let mut sha256 = [0u8; 32];
        hex::decode_to_slice(k.sha256.to_ascii_lowercase(), &mut sha256).ok()?;
        Some(KeySpec {
            id: k.id.clone(),
            prefix: format!("sha256:{}", &k.sha256.to_ascii_lowercase()[..8]),
            sha256,
            team: k.team.clone(),
            user: k.user.clone(),
            expires_at: k.expires_at.as_deref().and_then(parse_rfc3339),
            rpm: k.rpm,
            tpm: k.tpm,
        })
    }
}

/// The access part of a snapshot: teams, static keys, JWT verifier.
#[derive(Debug)]
pub struct Access {
    /// False when the configuration has no `[auth]`, `[[teams]]` or
    /// `[[keys]]`: every caller is let through (and no principal exists).
    pub enabled: bool,
    /// Lower-case name of the header carrying `Bearer <token>`.
    pub header: Box<str>,
    pub teams: Vec<Arc<Team>>,
    /// The client-facing model names of the snapshot (models, then
    /// experiments), by slot.
    pub names: Box<[Box<str>]>,
    team_index: HashMap<Box<str>, usize>,
    pub static_keys: Vec<KeySpec>,
    pub jwt: Option<JwtVerifier>,
    /// `max_concurrent` and `budget` of `[[keys]]` entries, by key id.
    key_extra: HashMap<Box<str>, (Option<u32>, Option<crate::config::Budget>)>,
}

impl Access {
    /// Builds the access tables. `models` are the names clients may send
    /// (models and experiments), for the per-team `/v1/models` bodies.
    pub fn build(cfg: &Config, models: &[&str]) -> Result<Self, String> {
        let enabled = cfg.auth.is_some() || !cfg.teams.is_empty() || !cfg.keys.is_empty();
        let teams: Vec<Arc<Team>> = cfg
            .teams
            .iter()
            .enumerate()
            .map(|(index, t)| Arc::new(build_team(index, t, &cfg.agents, models)))
            .collect();
        let team_index = teams
            .iter()
            .map(|t| (Box::from(&*t.name), t.index))
            .collect();
        let static_keys = cfg
            .keys
            .iter()
            .map(|k| {
                KeySpec::from_config(k).ok_or_else(|| format!("keys: {} has a bad sha256", k.id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let auth = cfg.auth.clone().unwrap_or_default();
        let jwt = match &auth.jwt {
            Some(j) => Some(JwtVerifier::load(j, &cfg.resolve(&j.jwks_file))?),
            None => None,
        };
        Ok(Access {
            enabled,
            header: auth.header.to_ascii_lowercase().into(),
            teams,
            names: models.iter().map(|&m| m.into()).collect(),
            team_index,
            static_keys,
            jwt,
            key_extra: cfg
                .keys
                .iter()
                .map(|k| (k.id.as_str().into(), (k.max_concurrent, k.budget)))
                .collect(),
        })
    }

    /// The cost controls of a key (None when it has no limit): the same
    /// counters every time the same key id is bound with the same limits.
    pub fn controls_for(&self, s: &KeySpec) -> Option<Arc<super::account::Controls>> {
        let (max_concurrent, budget) = self
            .key_extra
            .get(s.id.as_str())
            .copied()
            .unwrap_or_default();
        super::account::Controls::get(
            "key",
            &s.id,
            &s.team,
            (s.rpm, s.tpm, max_concurrent),
            budget.as_ref(),
            &[],
        )
    }

    pub fn team(&self, name: &str) -> Option<&Arc<Team>> {
        self.team_index.get(name).map(|&i| &self.teams[i])
    }
}

fn build_team(index: usize, t: &TeamConfig, agents: &[AgentConfig], models: &[&str]) -> Team {
    let allowed_models = t.allowed_models.as_deref().map(NameRule::new);
    let visible: Vec<&str> = models
        .iter()
        .copied()
        .filter(|m| allowed_models.as_ref().is_none_or(|r| r.matches(m)))
        .collect();
    Team {
        name: t.name.as_str().into(),
        index,
        cache: t.cache.unwrap_or(false),
        regions: t
            .regions
            .as_ref()
            .map(|r| r.iter().map(|s| s.as_str().into()).collect()),
        agent: agents
            .iter()
            .find(|a| a.team == t.name)
            .map(AgentPolicy::new),
        models_json: crate::config::snapshot::models_list_json(&visible),
        pii_policy: t.pii_policy.as_deref().map(Into::into),
        audit_detail: t.audit_detail,
        controls: super::account::Controls::team(t),
        allowed_slots: models
            .iter()
            .map(|m| allowed_models.as_ref().is_none_or(|r| r.matches(m)))
            .collect(),
        allowed_models,
    }
}

/// Every usable API key, by the SHA-256 of its secret. Immutable: a change
/// builds a new table that is swapped in whole.
#[derive(Debug, Default)]
pub struct KeyTable {
    by_hash: HashMap<[u8; 32], Arc<Key>>,
}

impl KeyTable {
    /// Binds `specs` to the teams of `access`; a key whose team is not
    /// configured (any more) is left out with a warning.
    pub fn build<'a>(access: &Access, specs: impl IntoIterator<Item = &'a KeySpec>) -> Self {
        let mut by_hash = HashMap::new();
        for s in specs {
            let Some(team) = access.team(&s.team) else {
                tracing::warn!(key = %s.id, team = %s.team, "API key of an unknown team is not usable");
                continue;
            };
            by_hash.insert(
                s.sha256,
                Arc::new(Key {
                    id: s.id.as_str().into(),
                    prefix: s.prefix.as_str().into(),
                    sha256: s.sha256,
                    team: team.clone(),
                    user: s.user.as_deref().map(Into::into),
                    expires_at: s.expires_at,
                    rpm: s.rpm,
                    tpm: s.tpm,
                    controls: access.controls_for(s),
                }),
            );
        }
        KeyTable { by_hash }
    }

    pub fn len(&self) -> usize {
        self.by_hash.len()
    }

    /// Usable keys of `team`.
    pub fn count_team(&self, team: &str) -> usize {
        self.by_hash
            .values()
            .filter(|k| &*k.team.name == team)
            .count()
    }

    pub fn is_empty(&self) -> bool {
        self.by_hash.is_empty()
    }

    /// The key whose secret is `secret`, compared in constant time.
    pub fn find(&self, secret: &[u8]) -> Option<&Arc<Key>> {
        let hash: [u8; 32] = Sha256::digest(secret).into();
        let key = self.by_hash.get(&hash)?;
        bool::from(key.sha256.ct_eq(&hash)).then_some(key)
    }
}

/// Why a request was not authenticated; the detail is for logs, the client
/// gets one generic message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    UnknownKey,
    Expired,
    Jwt(JwtError),
    UnknownTeam,
}

impl AuthFailure {
    pub fn reason(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing_credentials",
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::Expired => "expired_key",
            AuthFailure::Jwt(e) => e.reason(),
            AuthFailure::UnknownTeam => "unknown_team",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            AuthFailure::Missing => "You didn't provide an API key. Provide it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            AuthFailure::Expired => "The API key provided has expired.",
            AuthFailure::Jwt(JwtError::Expired) => "The token provided has expired.",
            AuthFailure::UnknownTeam => "The token provided names a team this gateway does not know.",
            _ => "Incorrect API key provided.",
        }
    }
}

/// The token a request presents: the configured header's `Bearer` value
/// (a bare value is taken too when the header is not `authorization`),
/// else `x-api-key`.
pub fn presented_token<'a>(
    header: &str,
    lookup: impl Fn(&str) -> Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    let from_header = lookup(header).and_then(|v| {
        let v = crate::http::head::trim(v);
        match v.get(..7) {
            Some(p) if p.eq_ignore_ascii_case(b"bearer ") => Some(crate::http::head::trim(&v[7..])),
            _ if header != "authorization" => Some(v),
            _ => None,
        }
    });
    from_header
        .or_else(|| lookup("x-api-key").map(crate::http::head::trim))
        .filter(|t| !t.is_empty())
}

/// Authenticates a token. `now` is Unix seconds.
pub fn authenticate(
    access: &Access,
    keys: &KeyTable,
    token: Option<&[u8]>,
    now: i64,
) -> Result<Principal, AuthFailure> {
    let token = token.ok_or(AuthFailure::Missing)?;
    if let Some(jwt) = &access.jwt {
        if super::jwt::looks_like_jwt(token) {
            let claims = jwt.verify(token, now).map_err(AuthFailure::Jwt)?;
            let team = access.team(&claims.team).ok_or(AuthFailure::UnknownTeam)?;
            return Ok(Principal {
                key: None,
                team: team.clone(),
                user: claims.user.map(Into::into),
            });
        }
    }
    let key = keys.find(token).ok_or(AuthFailure::UnknownKey)?;
    if key.expires_at.is_some_and(|t| now >= t) {
        return Err(AuthFailure::Expired);
    }
    Ok(Principal {
        key: Some(key.clone()),
        team: key.team.clone(),
        user: key.user.clone(),
    })
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Parses an RFC 3339 date-time with offset (as `validate` accepts it) to
/// Unix seconds; fractional seconds are dropped.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = b.get(r)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
    };
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (y, mo, d, h, mi, sec) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    let mut i = 19;
    if b.get(i) == Some(&b'.') {
        i += 1;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
    }
    let offset = match b.get(i)? {
        b'Z' | b'z' => 0,
        sign @ (b'+' | b'-') => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'-' {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    Some(days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The RFC 3339 UTC text of Unix seconds.
pub fn format_rfc3339(t: i64) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The date of a day number (days since 1970-01-01).
pub fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The pipeline's authentication step: None when access control is off
/// (no `[auth]`, `[[teams]]` or `[[keys]]`), else the principal or a 401.
///
/// An address with repeated failures is slowed down, then refused for a
/// while (see `throttle`): the refusal comes before the credentials are
/// looked at, the delay before the 401 is sent.
pub async fn check(
    worker: &crate::runtime::worker::Worker,
    req: &crate::http::server::Request<'_>,
) -> Result<Option<Principal>, crate::api::GatewayError> {
    use super::throttle::Penalty;
    let access = &worker.snapshot.access;
    if !access.enabled {
        return Ok(None);
    }
    let throttle = &worker.shared.auth_throttle;
    if let Some(wait) = throttle.blocked(req.peer, req.started) {
        crate::metrics::auth_throttled("refused");
        return Err(crate::api::GatewayError::AuthBlocked(
            wait.as_secs_f64().ceil() as u64,
        ));
    }
    let keys = worker.shared.keys.load();
    let token = presented_token(&access.header, |name| req.header(name));
    let failure = match authenticate(access, &keys, token, unix_now()) {
        Ok(p) => return rebind(access, p).map(Some),
        Err(failure) => failure,
    };
    crate::metrics::auth_failure(failure.reason());
    tracing::debug!(reason = failure.reason(), "authentication failed");
    match throttle.failed(req.peer, req.started) {
        Penalty::None => {}
        Penalty::Delay(d) => {
            crate::metrics::auth_throttled("delayed");
            monoio::time::sleep(d).await;
        }
        Penalty::Blocked => {
            tracing::warn!(peer = %req.peer, window_s = super::throttle::WINDOW.as_secs(), block_s = super::throttle::BLOCK_FOR.as_secs(), "too many authentication failures: address refused for a while");
        }
    }
    Err(crate::api::GatewayError::InvalidApiKey(failure.message()))
}

/// Binds a key's principal to the teams of the snapshot the request runs
/// on: right after a reload the key table and a worker's snapshot may be
/// one generation apart (one pointer compare when they are not).
fn rebind(access: &Access, mut p: Principal) -> Result<Principal, crate::api::GatewayError> {
    let current = access.teams.get(p.team.index);
    if current.is_some_and(|t| Arc::ptr_eq(t, &p.team)) {
        return Ok(p);
    }
    match access.team(&p.team.name) {
        Some(t) => {
            p.team = t.clone();
            Ok(p)
        }
        None => Err(crate::api::GatewayError::InvalidApiKey(
            AuthFailure::UnknownTeam.message(),
        )),
    }
}

/// A team with every model allowed and the given agent policy (unit tests).
#[cfg(test)]
pub fn test_team(agent: Option<&AgentConfig>) -> Team {
    Team {
        name: "t".into(),
        index: 0,
        allowed_models: None,
        allowed_slots: Box::new([]),
        regions: None,
        agent: agent.map(AgentPolicy::new),
        models_json: Vec::new(),
        pii_policy: None,
        audit_detail: None,
        controls: None,
        cache: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("delete_*", "delete_user"));
        assert!(glob("delete_*", "delete_"));
        assert!(!glob("delete_*", "undelete_x"));
        assert!(glob("*-8b", "llama-3.1-8b"));
        assert!(glob("l?ama*", "llama-3"));
        assert!(glob("*a*b*", "xxaxxbxx"));
        assert!(!glob("*a*b", "xxaxxbxx"));
        let r = NameRule::new(&["m1", "gpt-*"]);
        assert!(r.matches("m1") && r.matches("gpt-4o") && !r.matches("m2"));
    }

    #[test]
    fn rfc3339_round_trip() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2001-09-09T01:46:40Z"), Some(1_000_000_000));
        assert_eq!(
            parse_rfc3339("2001-09-09T03:46:40.5+02:00"),
            Some(1_000_000_000)
        );
        assert_eq!(format_rfc3339(1_000_000_000), "2001-09-09T01:46:40Z");
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z")
                .map(format_rfc3339)
                .as_deref(),
            Some("2024-02-29T00:00:00Z")
        );
        assert_eq!(parse_rfc3339("2026-01-31"), None);
    }

    #[test]
    fn tokens_from_headers() {
        let h = |name: &str| -> Option<&'static [u8]> {
            match name {
                "authorization" => Some(b"Bearer  sk-1 "),
                "x-api-key" => Some(b"sk-2"),
                _ => None,
            }
        };
        assert_eq!(presented_token("authorization", h), Some(&b"sk-1"[..]));
        let only_x =
            |name: &str| -> Option<&'static [u8]> { (name == "x-api-key").then_some(b"sk-2") };
        assert_eq!(presented_token("authorization", only_x), Some(&b"sk-2"[..]));
        let basic = |name: &str| -> Option<&'static [u8]> {
            (name == "authorization").then_some(b"Basic abc")
        };
        assert_eq!(presented_token("authorization", basic), None);
    }
}
