//! The embedded store: SQLite (WAL) at `[store].path` holding API keys
//! created through the admin API (hashed) and usage per day, team, key and
//! model. One thread owns the connection; everyone else talks to it
//! through a bounded channel. Workers only ever `try_send` usage records
//! (a full queue drops the record and counts it): the request path never
//! waits on SQLite.

use crate::pipeline::auth::{civil_from_days, KeySpec};
use rusqlite::{params, Connection};
use std::collections::HashMap;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Queue between workers (usage) and admin (keys, reports) and the store thread.
pub const QUEUE: usize = 65_536;
/// Usage is aggregated in memory and written at most this often.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// Schema migrations, applied in order; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    // 1: keys and usage.
    "CREATE TABLE keys (
        id TEXT PRIMARY KEY,
        prefix TEXT NOT NULL,
        sha256 TEXT NOT NULL UNIQUE,
        team TEXT NOT NULL,
        user TEXT,
        expires_at INTEGER,
        rpm INTEGER,
        tpm INTEGER,
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    );
    CREATE TABLE usage (
        day TEXT NOT NULL,
        team TEXT NOT NULL,
        key TEXT NOT NULL,
        model TEXT NOT NULL,
        requests INTEGER NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        PRIMARY KEY (day, team, key, model)
    );",
    // 2: cost (nano-units of [billing].currency) and estimated requests.
    "ALTER TABLE usage ADD COLUMN cost_nanos INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE usage ADD COLUMN estimated INTEGER NOT NULL DEFAULT 0;",
];

/// One finished request, as the pipeline reports it.
#[derive(Debug)]
pub struct UsageRecord {
    /// Days since 1970-01-01 (UTC).
    pub day: i64,
    pub team: Arc<str>,
    pub key: Arc<str>,
    pub model: Box<str>,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Nano-units (1e-9) of `[billing].currency`.
    pub cost_nanos: u64,
    /// The tokens were estimated (the upstream reported no usage).
    pub estimated: bool,
}

/// Spend per day, team and key: `(day, team, key, cost nano-units)`.
pub type SpendRow = (i64, String, String, u64);

/// A key row as the admin API lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyRow {
    pub id: String,
    pub prefix: String,
    pub team: String,
    pub user: Option<String>,
    pub expires_at: Option<i64>,
    pub rpm: Option<u32>,
    pub tpm: Option<u64>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// Hex SHA-256 of the secret; never shown.
    #[serde(skip)]
    pub sha256: String,
}

/// Filters and grouping of a usage report.
#[derive(Debug, Clone, Default)]
pub struct UsageQuery {
    pub team: Option<String>,
    pub key: Option<String>,
    pub model: Option<String>,
    /// Inclusive `YYYY-MM-DD`.
    pub from: Option<String>,
    pub to: Option<String>,
    /// Columns to group by, each one of day, team, key, model.
    pub group_by: Vec<&'static str>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct UsageRow {
    /// The group's values, in `group_by` order.
    pub group: Vec<String>,
    pub requests: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// In `[billing].currency`.
    pub cost: f64,
    /// Requests whose tokens were estimated.
    pub estimated: u64,
}

type Reply<T> = SyncSender<Result<T, String>>;

enum Op {
    Usage(UsageRecord),
    PutKey(KeySpec, i64, Reply<()>),
    RevokeKey(String, i64, Reply<bool>),
    Keys(Reply<Vec<KeyRow>>),
    Report(UsageQuery, Reply<Vec<UsageRow>>),
    Flush(Reply<()>),
    Spend(i64, Reply<Vec<SpendRow>>),
}

/// The handle: cheap to clone, usable from any thread.
#[derive(Clone)]
pub struct Store {
    tx: SyncSender<Op>,
}

impl Store {
    /// Opens (creating and migrating) the database and starts its thread.
    /// `path` None keeps everything in memory (lost at exit).
    pub fn open(path: Option<&Path>) -> Result<Store, String> {
        let conn = match path {
            Some(p) => {
                if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir)
                        .map_err(|e| format!("store: cannot create {}: {e}", dir.display()))?;
                }
                Connection::open(p)
            }
            None => Connection::open_in_memory(),
        }
        .map_err(|e| format!("store: cannot open: {e}"))?;
        prepare(&conn).map_err(|e| format!("store: {e}"))?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("sluice-store".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| format!("store: cannot start its thread: {e}"))?;
        Ok(Store { tx })
    }

    /// Queues a usage record without waiting; false (and counted) when the
    /// queue is full.
    pub fn record(&self, r: UsageRecord) -> bool {
        match self.tx.try_send(Op::Usage(r)) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                crate::metrics::usage_dropped();
                false
            }
        }
    }

    /// Queues the usage of one request of `principal` (never blocks).
    pub fn record_request(
        &self,
        principal: &crate::pipeline::auth::Principal,
        model: &str,
        (input_tokens, output_tokens): (u64, u64),
        (cost_nanos, estimated): (u64, bool),
    ) -> bool {
        self.record(UsageRecord {
            day: crate::pipeline::auth::unix_now().div_euclid(86_400),
            team: principal.team.name.clone(),
            key: principal.key_id_arc(),
            model: model.into(),
            input_tokens,
            output_tokens,
            cost_nanos,
            estimated,
        })
    }

    /// Spend per day, team and key from `from_day` (days since 1970) on,
    /// pending records included.
    pub fn spend_since(&self, from_day: i64) -> Result<Vec<SpendRow>, String> {
        self.call(|r| Op::Spend(from_day, r))
    }

    fn call<T>(&self, op: impl FnOnce(Reply<T>) -> Op) -> Result<T, String> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.tx
            .send(op(tx))
            .map_err(|_| "the store thread has stopped".to_string())?;
        rx.recv_timeout(Duration::from_secs(10))
            .map_err(|_| "the store did not answer in time".to_string())?
    }

    pub fn put_key(&self, key: KeySpec, created_at: i64) -> Result<(), String> {
        self.call(|r| Op::PutKey(key, created_at, r))
    }

    /// Marks a key revoked; false when there is no such active key.
    pub fn revoke_key(&self, id: &str, at: i64) -> Result<bool, String> {
        self.call(|r| Op::RevokeKey(id.to_owned(), at, r))
    }

    /// Every key, revoked ones included.
    pub fn keys(&self) -> Result<Vec<KeyRow>, String> {
        self.call(Op::Keys)
    }

    /// Active (not revoked) keys as the key table takes them.
    pub fn active_keys(&self) -> Result<Vec<KeySpec>, String> {
        let rows = self.keys()?;
        Ok(rows
            .into_iter()
            .filter(|r| r.revoked_at.is_none())
            .filter_map(|r| {
                let mut sha = [0u8; 32];
                hex::decode_to_slice(&r.sha256, &mut sha).ok()?;
                Some(KeySpec {
                    id: r.id,
                    prefix: r.prefix,
                    sha256: sha,
                    team: r.team,
                    user: r.user,
                    expires_at: r.expires_at,
                    rpm: r.rpm,
                    tpm: r.tpm,
                })
            })
            .collect())
    }

    pub fn usage(&self, q: UsageQuery) -> Result<Vec<UsageRow>, String> {
        self.call(|r| Op::Report(q, r))
    }

    /// Writes pending usage now.
    pub fn flush(&self) -> Result<(), String> {
        self.call(Op::Flush)
    }
}

fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    for (i, m) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "store: schema migrated");
    }
    Ok(())
}

type UsageKey = (i64, Arc<str>, Arc<str>, Box<str>);
/// requests, input tokens, output tokens, cost nano-units, estimated requests.
type Sums = (u64, u64, u64, u64, u64);

fn spend(conn: &Connection, from_day: i64) -> rusqlite::Result<Vec<SpendRow>> {
    let mut st = conn.prepare(
        "SELECT day, team, key, SUM(cost_nanos) FROM usage WHERE day >= ?1 GROUP BY day, team, key",
    )?;
    let rows = st.query_map(params![day_text(from_day)], |r| {
        let day: String = r.get(0)?;
        Ok((
            day,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (day, team, key, cost) = row?;
        let parse = |a: usize, b: usize| day.get(a..b).and_then(|x| x.parse::<i64>().ok());
        if let (Some(y), Some(m), Some(d)) = (parse(0, 4), parse(5, 7), parse(8, 10)) {
            let day = crate::pipeline::auth::days_from_civil(y, m, d);
            out.push((day, team, key, cost.max(0) as u64));
        }
    }
    Ok(out)
}

fn run(conn: Connection, rx: Receiver<Op>) {
    let mut pending: HashMap<UsageKey, Sums> = HashMap::new();
    let mut last_flush = Instant::now();
    loop {
        let op = rx.recv_timeout(FLUSH_EVERY);
        match op {
            Ok(Op::Usage(r)) => {
                let e = pending.entry((r.day, r.team, r.key, r.model)).or_default();
                e.0 += 1;
                e.1 += r.input_tokens;
                e.2 += r.output_tokens;
                e.3 += r.cost_nanos;
                e.4 += u64::from(r.estimated);
            }
            Ok(Op::PutKey(k, created, reply)) => {
                let res = conn
                    .execute(
                        "INSERT INTO keys (id, prefix, sha256, team, user, expires_at, rpm, tpm, created_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                        params![
                            k.id,
                            k.prefix,
                            hex::encode(k.sha256),
                            k.team,
                            k.user,
                            k.expires_at,
                            k.rpm,
                            k.tpm.map(|t| t as i64),
                            created
                        ],
                    )
                    .map(|_| ())
                    .map_err(|e| e.to_string());
                let _ = reply.send(res);
            }
            Ok(Op::RevokeKey(id, at, reply)) => {
                let res = conn
                    .execute(
                        "UPDATE keys SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
                        params![id, at],
                    )
                    .map(|n| n > 0)
                    .map_err(|e| e.to_string());
                let _ = reply.send(res);
            }
            Ok(Op::Keys(reply)) => {
                let _ = reply.send(list_keys(&conn).map_err(|e| e.to_string()));
            }
            Ok(Op::Report(q, reply)) => {
                flush(&conn, &mut pending);
                last_flush = Instant::now();
                let _ = reply.send(report(&conn, &q).map_err(|e| e.to_string()));
            }
            Ok(Op::Spend(from, reply)) => {
                flush(&conn, &mut pending);
                last_flush = Instant::now();
                let _ = reply.send(spend(&conn, from).map_err(|e| e.to_string()));
            }
            Ok(Op::Flush(reply)) => {
                flush(&conn, &mut pending);
                last_flush = Instant::now();
                let _ = reply.send(Ok(()));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                flush(&conn, &mut pending);
                return;
            }
        }
        if !pending.is_empty() && last_flush.elapsed() >= FLUSH_EVERY {
            flush(&conn, &mut pending);
            last_flush = Instant::now();
        }
    }
}

fn day_text(day: i64) -> String {
    let (y, m, d) = civil_from_days(day);
    format!("{y:04}-{m:02}-{d:02}")
}

fn flush(conn: &Connection, pending: &mut HashMap<UsageKey, Sums>) {
    if pending.is_empty() {
        return;
    }
    let res = (|| -> rusqlite::Result<()> {
        let tx = conn.unchecked_transaction()?;
        {
            let mut st = tx.prepare_cached(
                "INSERT INTO usage (day, team, key, model, requests, input_tokens, output_tokens, cost_nanos, estimated)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (day, team, key, model) DO UPDATE SET
                   requests = requests + excluded.requests,
                   input_tokens = input_tokens + excluded.input_tokens,
                   output_tokens = output_tokens + excluded.output_tokens,
                   cost_nanos = cost_nanos + excluded.cost_nanos,
                   estimated = estimated + excluded.estimated",
            )?;
            for ((day, team, key, model), (n, i, o, c, e)) in pending.iter() {
                st.execute(params![
                    day_text(*day),
                    &**team,
                    &**key,
                    &**model,
                    *n as i64,
                    *i as i64,
                    *o as i64,
                    *c as i64,
                    *e as i64
                ])?;
            }
        }
        tx.commit()
    })();
    match res {
        Ok(()) => pending.clear(),
        Err(e) => tracing::error!(error = %e, "store: usage write failed; kept for the next try"),
    }
}

fn list_keys(conn: &Connection) -> rusqlite::Result<Vec<KeyRow>> {
    let mut st = conn.prepare(
        "SELECT id, prefix, team, user, expires_at, rpm, tpm, created_at, revoked_at, sha256
         FROM keys ORDER BY created_at, rowid",
    )?;
    let rows = st
        .query_map([], |r| {
            Ok(KeyRow {
                id: r.get(0)?,
                prefix: r.get(1)?,
                team: r.get(2)?,
                user: r.get(3)?,
                expires_at: r.get(4)?,
                rpm: r.get(5)?,
                tpm: r.get::<_, Option<i64>>(6)?.map(|t| t as u64),
                created_at: r.get(7)?,
                revoked_at: r.get(8)?,
                sha256: r.get(9)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}

fn report(conn: &Connection, q: &UsageQuery) -> rusqlite::Result<Vec<UsageRow>> {
    let mut sql = String::from("SELECT ");
    for g in &q.group_by {
        sql.push_str(g);
        sql.push_str(", ");
    }
    sql.push_str("SUM(requests), SUM(input_tokens), SUM(output_tokens), SUM(cost_nanos), SUM(estimated) FROM usage WHERE 1=1");
    let mut args: Vec<String> = Vec::new();
    for (col, op, v) in [
        ("team", "=", &q.team),
        ("key", "=", &q.key),
        ("model", "=", &q.model),
        ("day", ">=", &q.from),
        ("day", "<=", &q.to),
    ] {
        if let Some(v) = v {
            args.push(v.clone());
            sql.push_str(&format!(" AND {col} {op} ?{}", args.len()));
        }
    }
    if !q.group_by.is_empty() {
        let cols = q.group_by.join(", ");
        sql.push_str(&format!(" GROUP BY {cols} ORDER BY {cols}"));
    }
    let mut st = conn.prepare(&sql)?;
    let n = q.group_by.len();
    let rows = st
        .query_map(rusqlite::params_from_iter(args.iter()), |r| {
            let mut group = Vec::with_capacity(n);
            for i in 0..n {
                group.push(r.get::<_, String>(i)?);
            }
            Ok(UsageRow {
                group,
                requests: r.get::<_, Option<i64>>(n)?.unwrap_or(0) as u64,
                input_tokens: r.get::<_, Option<i64>>(n + 1)?.unwrap_or(0) as u64,
                output_tokens: r.get::<_, Option<i64>>(n + 2)?.unwrap_or(0) as u64,
                cost: r.get::<_, Option<i64>>(n + 3)?.unwrap_or(0) as f64 / 1e9,
                estimated: r.get::<_, Option<i64>>(n + 4)?.unwrap_or(0) as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows)
}
