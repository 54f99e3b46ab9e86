//! The `sluice-cluster` thread's Redis connection: connect with a timeout,
//! load the Lua scripts, run one pipeline of script calls per round, and
//! after a failure wait (exponential backoff) before connecting again.
//! Uses the `redis` crate's blocking client: one thread, one connection,
//! no runtime of its own; scripts go as EVALSHA after one SCRIPT LOAD.

use redis::{Client, Connection, Pipeline, RedisResult, Script, Value};
use std::time::{Duration, Instant};

/// Longest wait for a connection, and for one answer.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const IO_TIMEOUT: Duration = Duration::from_millis(1000);
/// Reconnection backoff: from the first to the longest wait.
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// The scripts, loaded once per connection.
pub struct Scripts {
    pub lease: Script,
    pub heartbeat: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            lease: Script::new(include_str!("lease.lua")),
            heartbeat: Script::new(include_str!("heartbeat.lua")),
        }
    }
}

pub struct Link {
    client: Client,
    con: Option<Connection>,
    pub scripts: Scripts,
    retry_at: Instant,
    backoff: Duration,
}

impl Link {
    pub fn new(url: &str) -> RedisResult<Link> {
        Ok(Link {
            client: Client::open(url)?,
            con: None,
            scripts: Scripts::new(),
            retry_at: Instant::now(),
            backoff: BACKOFF_FIRST,
        })
    }

    pub fn is_up(&self) -> bool {
        self.con.is_some()
    }

    /// Connects when there is no connection and the backoff has passed.
    /// Ok(true) when a connection was made now.
    pub fn connect(&mut self) -> RedisResult<bool> {
        if self.con.is_some() || Instant::now() < self.retry_at {
            return Ok(false);
        }
        let attempt = (|| {
            let mut con = self.client.get_connection_with_timeout(CONNECT_TIMEOUT)?;
            con.set_read_timeout(Some(IO_TIMEOUT))?;
            con.set_write_timeout(Some(IO_TIMEOUT))?;
            load_scripts(&self.scripts, &mut con)?;
            Ok(con)
        })();
        match attempt {
            Ok(con) => {
                self.con = Some(con);
                self.backoff = BACKOFF_FIRST;
                Ok(true)
            }
            Err(e) => {
                self.failed();
                Err(e)
            }
        }
    }

    /// Drops the connection and schedules the next attempt.
    fn failed(&mut self) {
        self.con = None;
        self.retry_at = Instant::now() + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
    }

    /// Runs one pipeline; a server that forgot the scripts (restarted, or
    /// SCRIPT FLUSH) gets them again and the pipeline once more. Any other
    /// failure drops the connection.
    pub fn run(&mut self, pipe: &Pipeline) -> RedisResult<Vec<Value>> {
        let Some(con) = self.con.as_mut() else {
            return Err(not_connected());
        };
        let mut result = pipe.query::<Vec<Value>>(con);
        if let Err(e) = &result {
            if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) {
                result =
                    load_scripts(&self.scripts, con).and_then(|()| pipe.query::<Vec<Value>>(con));
            }
        }
        if result.is_err() {
            self.failed();
        }
        result
    }

    /// `SET key 1 NX PX ttl_ms`: true when this call set it.
    pub fn set_once(&mut self, key: &str, ttl_ms: u64) -> RedisResult<bool> {
        let Some(con) = self.con.as_mut() else {
            return Err(not_connected());
        };
        let result = redis::cmd("SET")
            .arg(key)
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query::<Option<String>>(con)
            .map(|set| set.is_some());
        if result.is_err() {
            self.failed();
        }
        result
    }
}

fn load_scripts(scripts: &Scripts, con: &mut Connection) -> RedisResult<()> {
    redis::pipe()
        .load_script(&scripts.lease)
        .load_script(&scripts.heartbeat)
        .query::<()>(con)
}

fn not_connected() -> redis::RedisError {
    redis::RedisError::from(std::io::Error::new(
        std::io::ErrorKind::NotConnected,
        "not connected to Redis",
    ))
}

/// The integers of a script's array answer.
pub fn integers(v: &Value) -> Option<Vec<i64>> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|i| match i {
                Value::Int(n) => Some(*n),
                _ => None,
            })
            .collect(),
        _ => None,
    }
}
