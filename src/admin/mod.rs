//! The admin API on `[admin].listen`: keys, teams, usage reports and
//! configuration reload. Blocking HTTP/1.1 on its own thread (admin calls
//! are rare and must never compete with the workers' rings), one request
//! per connection, `Authorization: Bearer <token>` from `[admin].token_env`
//! compared in constant time. JSON in and out; usage also as CSV.

use crate::pipeline::auth::{format_rfc3339, parse_rfc3339, unix_now, KeySpec};
use crate::runtime::Shared;
use crate::store::{Store, UsageQuery};
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;

/// An admin error: status, code, message.
type AdminError = (u16, &'static str, String);
/// A usage report: the group columns and the rows.
type Report = (Vec<&'static str>, Vec<crate::store::UsageRow>);

/// Largest admin request body.
const MAX_BODY: usize = 64 * 1024;

/// Reloads the configuration; Ok(description) or Err(reason).
pub type ReloadFn = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

pub struct Admin {
    pub shared: Arc<Shared>,
    pub store: Store,
    token: Vec<u8>,
    pub reload: Option<ReloadFn>,
}

impl Admin {
    pub fn new(shared: Arc<Shared>, store: Store, token: String, reload: Option<ReloadFn>) -> Self {
        Admin {
            shared,
            store,
            token: token.into_bytes(),
            reload,
        }
    }

    /// Binds `addr` and serves on a thread named `sluice-admin`.
    pub fn serve(self, addr: SocketAddr) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind(addr)?;
        let bound = listener.local_addr()?;
        std::thread::Builder::new()
            .name("sluice-admin".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    let Ok(stream) = stream else { continue };
                    self.connection(stream);
                }
            })?;
        Ok(bound)
    }

    fn connection(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
        let mut buf = Vec::with_capacity(4096);
        let mut chunk = [0u8; 4096];
        let head = loop {
            match crate::http::head::parse_request(&buf) {
                Ok(Some(h)) => break h,
                Ok(None) if buf.len() < 64 * 1024 => {}
                _ => {
                    return respond(
                        &mut stream,
                        400,
                        "application/json",
                        &err("malformed request"),
                    )
                }
            }
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let body_len = match head.framing {
            crate::http::head::Framing::Empty => 0,
            crate::http::head::Framing::Length(n) if (n as usize) <= MAX_BODY => n as usize,
            _ => {
                return respond(
                    &mut stream,
                    413,
                    "application/json",
                    &err("body too large or chunked"),
                )
            }
        };
        while buf.len() < head.len + body_len {
            match stream.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let method = buf
            .split(|&b| b == b' ')
            .next()
            .map(|m| String::from_utf8_lossy(m).into_owned())
            .unwrap_or_default();
        let target = String::from_utf8_lossy(head.path(&buf)).into_owned();
        let header = |name: &str| {
            head.header(&buf, name)
                .map(|v| String::from_utf8_lossy(v).trim().to_owned())
        };
        let authorized = header("authorization")
            .and_then(|v| {
                v.get(..7)
                    .filter(|p| p.eq_ignore_ascii_case("bearer "))
                    .map(|_| v[7..].trim().to_owned())
            })
            .is_some_and(|t| !self.token.is_empty() && bool::from(t.as_bytes().ct_eq(&self.token)));
        if !authorized {
            return respond(
                &mut stream,
                401,
                "application/json",
                &serde_json::to_vec(&json!({"error": {"message": "admin calls need 'Authorization: Bearer <admin token>'", "type": "invalid_request_error", "code": "invalid_api_key", "param": null}})).unwrap_or_default(),
            );
        }
        let body = &buf[head.len..head.len + body_len];
        let csv = header("accept").is_some_and(|a| a.contains("text/csv"));
        let (status, ctype, out) = self.route(&method, &target, body, csv);
        respond(&mut stream, status, ctype, &out);
    }

    fn route(
        &self,
        method: &str,
        target: &str,
        body: &[u8],
        csv: bool,
    ) -> (u16, &'static str, Vec<u8>) {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let j = |status: u16, v: Value| {
            (
                status,
                "application/json",
                serde_json::to_vec(&v).unwrap_or_default(),
            )
        };
        let result = match (method, path) {
            ("POST", "/admin/keys") => self.create_key(body).map(|v| (201, v)),
            ("GET", "/admin/keys") => self.list_keys().map(|v| (200, v)),
            ("DELETE", p) if p.starts_with("/admin/keys/") => self
                .revoke_key(&p["/admin/keys/".len()..])
                .map(|v| (200, v)),
            ("GET", "/admin/teams") => Ok((200, self.teams())),
            ("GET", "/admin/approvals") => Ok((200, self.shared.approvals.list())),
            ("POST", p) if p.starts_with("/admin/approvals/") => {
                self.decide(&p["/admin/approvals/".len()..], body)
            }
            ("POST", "/admin/reload") => match &self.reload {
                Some(reload) => match reload() {
                    Ok(what) => Ok((200, json!({"status": "reloaded", "config_sha256": what}))),
                    Err(e) => Err((400, "reload_failed", e)),
                },
                None => Err((
                    501,
                    "reload_unavailable",
                    "this gateway was not started from a file".into(),
                )),
            },
            ("GET", "/admin/usage") => match self.usage(query) {
                Ok((cols, rows)) if csv => {
                    return (
                        200,
                        "text/csv; charset=utf-8",
                        usage_csv(&cols, &rows).into_bytes(),
                    )
                }
                Ok((cols, rows)) => Ok((200, usage_json(&cols, &rows))),
                Err(e) => Err(e),
            },
            (_, "/admin/keys" | "/admin/teams" | "/admin/reload" | "/admin/usage") => Err((
                405,
                "method_not_allowed",
                format!("{method} is not allowed on {path}"),
            )),
            _ => Err((
                404,
                "unknown_url",
                format!("no admin endpoint {method} {path}"),
            )),
        };
        match result {
            Ok((status, v)) => j(status, v),
            Err((status, code, message)) => j(
                status,
                json!({"error": {"message": message, "type": "invalid_request_error", "code": code, "param": null}}),
            ),
        }
    }

    /// `POST /admin/approvals/{id}/approve|reject`, body `{"by": "<reviewer>"}`.
    fn decide(&self, rest: &str, body: &[u8]) -> Result<(u16, Value), AdminError> {
        use crate::pipeline::approve::Decision;
        let (id, verb) = rest.split_once('/').unwrap_or((rest, ""));
        let id: u64 = id.parse().map_err(|_| {
            (
                404,
                "unknown_approval",
                format!("no pending approval {id:?}"),
            )
        })?;
        let by = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("by")?.as_str().map(str::to_owned))
            .filter(|b| !b.trim().is_empty())
            .ok_or((
                400,
                "missing_reviewer",
                "the body must name the reviewer: {\"by\": \"...\"}".to_owned(),
            ))?;
        let decision = match verb {
            "approve" => Decision::Approved { by: by.clone() },
            "reject" => Decision::Rejected { by: by.clone() },
            _ => {
                return Err((
                    404,
                    "unknown_url",
                    format!("use /admin/approvals/{id}/approve or /reject"),
                ))
            }
        };
        if !self.shared.approvals.decide(id, decision) {
            return Err((
                404,
                "unknown_approval",
                format!("approval {id} is not pending (decided, expired or unknown)"),
            ));
        }
        tracing::info!(approval = id, verb, by = %by, "approval decided through the admin API");
        Ok((
            200,
            json!({"id": id.to_string(), "decision": verb, "by": by}),
        ))
    }

    fn create_key(&self, body: &[u8]) -> Result<Value, AdminError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NewKey {
            team: String,
            user: Option<String>,
            expires_at: Option<String>,
            rpm: Option<u32>,
            tpm: Option<u64>,
            id: Option<String>,
        }
        let bad = |m: String| (400, "invalid_request", m);
        let req: NewKey =
            serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let snapshot = self.shared.snapshot();
        if snapshot.access.team(&req.team).is_none() {
            return Err(bad(format!("unknown team {:?}", req.team)));
        }
        let expires_at = match &req.expires_at {
            Some(t) => Some(
                parse_rfc3339(t)
                    .ok_or_else(|| bad(format!("expires_at {t:?} is not an RFC 3339 date-time")))?,
            ),
            None => None,
        };
        let rng = SystemRandom::new();
        let mut raw = [0u8; 24];
        rng.fill(&mut raw)
            .map_err(|_| (500, "internal", "no randomness".into()))?;
        let secret = format!("sk-sluice-{}", hex::encode(raw));
        let id = match req.id {
            Some(id)
                if !id.is_empty()
                    && id.len() <= 64
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
            {
                id
            }
            Some(id) => return Err(bad(format!("id {id:?}: use 1 to 64 of A-Z a-z 0-9 - _ ."))),
            None => format!("key-{}", hex::encode(&raw[..6])),
        };
        let taken = snapshot.access.static_keys.iter().any(|k| k.id == id)
            || self
                .store
                .keys()
                .map_err(|e| (500, "store", e))?
                .iter()
                .any(|k| k.id == id);
        if taken {
            return Err((409, "key_exists", format!("a key {id:?} exists already")));
        }
        let spec = KeySpec {
            id: id.clone(),
            prefix: secret[..14].to_owned(),
            sha256: Sha256::digest(secret.as_bytes()).into(),
            team: req.team.clone(),
            user: req.user.clone(),
            expires_at,
            rpm: req.rpm,
            tpm: req.tpm,
        };
        self.store
            .put_key(spec.clone(), unix_now())
            .map_err(|e| (500, "store", e))?;
        self.shared
            .dynamic_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(spec.clone());
        self.shared.rebuild_keys();
        tracing::info!(key = %id, prefix = %spec.prefix, team = %req.team, "admin: API key created");
        Ok(json!({
            "id": id,
            "secret": secret,
            "prefix": spec.prefix,
            "team": req.team,
            "user": req.user,
            "expires_at": expires_at.map(format_rfc3339),
            "rpm": req.rpm,
            "tpm": req.tpm,
        }))
    }

    fn list_keys(&self) -> Result<Value, AdminError> {
        let snapshot = self.shared.snapshot();
        let mut data: Vec<Value> = snapshot
            .access
            .static_keys
            .iter()
            .map(|k| {
                json!({"id": k.id, "prefix": k.prefix, "team": k.team, "user": k.user,
                       "expires_at": k.expires_at.map(format_rfc3339), "rpm": k.rpm, "tpm": k.tpm,
                       "source": "config", "revoked": false})
            })
            .collect();
        for k in self.store.keys().map_err(|e| (500, "store", e))? {
            data.push(
                json!({"id": k.id, "prefix": k.prefix, "team": k.team, "user": k.user,
                "expires_at": k.expires_at.map(format_rfc3339), "rpm": k.rpm, "tpm": k.tpm,
                "source": "admin", "created_at": format_rfc3339(k.created_at),
                "revoked": k.revoked_at.is_some(), "revoked_at": k.revoked_at.map(format_rfc3339)}),
            );
        }
        Ok(json!({"object": "list", "data": data}))
    }

    fn revoke_key(&self, id: &str) -> Result<Value, AdminError> {
        let snapshot = self.shared.snapshot();
        if snapshot.access.static_keys.iter().any(|k| k.id == id) {
            return Err((
                409,
                "static_key",
                format!(
                    "{id:?} is a [[keys]] entry of the configuration: remove it there and reload"
                ),
            ));
        }
        if !self
            .store
            .revoke_key(id, unix_now())
            .map_err(|e| (500, "store", e))?
        {
            return Err((404, "key_not_found", format!("no active key {id:?}")));
        }
        self.shared
            .dynamic_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|k| k.id != id);
        self.shared.rebuild_keys();
        tracing::info!(key = %id, "admin: API key revoked");
        Ok(json!({"id": id, "revoked": true}))
    }

    fn teams(&self) -> Value {
        let snapshot = self.shared.snapshot();
        let keys = self.shared.keys.load();
        let data: Vec<Value> = snapshot
            .access
            .teams
            .iter()
            .map(|t| {
                let models: Value = serde_json::from_slice::<Value>(&t.models_json)
                    .ok()
                    .and_then(|v| v.get("data").cloned())
                    .map(|d| d.as_array().map(|a| a.iter().map(|m| m["id"].clone()).collect()).unwrap_or_default())
                    .unwrap_or(Value::Null);
                json!({
                    "name": &*t.name,
                    "models": models,
                    "regions": t.regions.as_ref().map(|r| r.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
                    "keys": keys.count_team(&t.name),
                    "agent": t.agent.as_ref().map(|a| json!({"max_turns": a.max_turns, "max_session_s": a.max_session_s})),
                })
            })
            .collect();
        json!({"object": "list", "data": data})
    }

    fn usage(&self, query: &str) -> Result<Report, AdminError> {
        let mut q = UsageQuery::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v);
            let v = (!v.is_empty()).then_some(v);
            match k {
                "team" => q.team = v,
                "key" => q.key = v,
                "model" => q.model = v,
                "from" | "to" => {
                    let day = v.map(|d| d.get(..10).unwrap_or(&d).to_owned());
                    if let Some(d) = &day {
                        if parse_rfc3339(&format!("{d}T00:00:00Z")).is_none() {
                            return Err((
                                400,
                                "invalid_request",
                                format!("{k}={d:?}: use YYYY-MM-DD"),
                            ));
                        }
                    }
                    if k == "from" {
                        q.from = day
                    } else {
                        q.to = day
                    }
                }
                "group_by" => {
                    for g in v.unwrap_or_default().split(',') {
                        let col = match g.trim() {
                            "day" => "day",
                            "team" => "team",
                            "key" => "key",
                            "model" => "model",
                            other => {
                                return Err((
                                    400,
                                    "invalid_request",
                                    format!("group_by {other:?}: use day, team, key or model"),
                                ))
                            }
                        };
                        if !q.group_by.contains(&col) {
                            q.group_by.push(col);
                        }
                    }
                }
                other => {
                    return Err((
                        400,
                        "invalid_request",
                        format!("unknown parameter {other:?}"),
                    ))
                }
            }
        }
        let cols = q.group_by.clone();
        let rows = self.store.usage(q).map_err(|e| (500, "store", e))?;
        Ok((cols, rows))
    }
}

fn usage_json(cols: &[&str], rows: &[crate::store::UsageRow]) -> Value {
    let data: Vec<Value> = rows
        .iter()
        .map(|r| {
            let mut o = serde_json::Map::new();
            for (c, v) in cols.iter().zip(&r.group) {
                o.insert((*c).to_owned(), Value::String(v.clone()));
            }
            o.insert("requests".into(), r.requests.into());
            o.insert("input_tokens".into(), r.input_tokens.into());
            o.insert("output_tokens".into(), r.output_tokens.into());
            o.insert(
                "total_tokens".into(),
                (r.input_tokens + r.output_tokens).into(),
            );
            Value::Object(o)
        })
        .collect();
    json!({"object": "list", "group_by": cols, "data": data})
}

fn usage_csv(cols: &[&str], rows: &[crate::store::UsageRow]) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_owned()
        }
    };
    let mut out = String::new();
    for c in cols {
        out.push_str(c);
        out.push(',');
    }
    out.push_str("requests,input_tokens,output_tokens,total_tokens\r\n");
    for r in rows {
        for v in &r.group {
            out.push_str(&field(v));
            out.push(',');
        }
        out.push_str(&format!(
            "{},{},{},{}\r\n",
            r.requests,
            r.input_tokens,
            r.output_tokens,
            r.input_tokens + r.output_tokens
        ));
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn err(message: &str) -> Vec<u8> {
    crate::http::response::error_json(message, "invalid_request_error", None, None)
}

fn respond(stream: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) {
    let out = crate::http::response::closing(status, ctype, body);
    let _ = stream.write_all(&out);
}
