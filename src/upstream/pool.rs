//! Per-worker keep-alive pools, one per upstream: idle connections are
//! reused last-in-first-out, and `max_connections` caps the connections a
//! worker holds to one upstream (a request waits for a free one).

use super::{UpstreamError, UpstreamSpec};
use local_sync::semaphore::{OwnedSemaphorePermit, Semaphore};
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Idle connections older than this are dropped rather than reused: common
/// model servers (uvicorn under vLLM) close idle connections after 5 s, and
/// a request written into a connection the server is closing is lost.
pub const MAX_IDLE: Duration = Duration::from_secs(4);

pub struct UpstreamConn {
    pub stream: TcpStream,
    /// Bytes read from the upstream and not yet consumed.
    pub buf: Vec<u8>,
    /// Whether the connection served an earlier request (so a failure
    /// before the first response byte may just mean the server closed it).
    pub reused: bool,
    idle_since: Instant,
    _permit: OwnedSemaphorePermit,
}

struct Slot {
    idle: RefCell<Vec<UpstreamConn>>,
    permits: Rc<Semaphore>,
}

/// One worker's pools, indexed like the snapshot's upstreams.
pub struct Pools {
    slots: Vec<Slot>,
}

impl Pools {
    pub fn new(specs: &[UpstreamSpec]) -> Self {
        Self {
            slots: specs
                .iter()
                .map(|s| Slot {
                    idle: RefCell::new(Vec::new()),
                    permits: Rc::new(Semaphore::new(s.max_connections)),
                })
                .collect(),
        }
    }

    /// An idle connection if a fresh one is pooled, else a new one.
    pub async fn acquire(
        &self,
        index: usize,
        spec: &UpstreamSpec,
    ) -> Result<UpstreamConn, UpstreamError> {
        let slot = &self.slots[index];
        let now = Instant::now();
        while let Some(conn) = slot.idle.borrow_mut().pop() {
            if now.duration_since(conn.idle_since) < MAX_IDLE {
                return Ok(conn);
            }
        }
        self.connect(index, spec).await
    }

    /// A new connection, never a pooled one.
    pub async fn connect(
        &self,
        index: usize,
        spec: &UpstreamSpec,
    ) -> Result<UpstreamConn, UpstreamError> {
        let slot = &self.slots[index];
        let connect_error =
            |what: &str| UpstreamError::Connect(spec.name.to_string(), what.to_owned());
        let permit = match slot.permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // At the cap: an idle connection may still be parked; drop
                // the oldest to make room, else wait for one to be released.
                let parked = {
                    let mut idle = slot.idle.borrow_mut();
                    (!idle.is_empty()).then(|| idle.remove(0))
                };
                drop(parked);
                monoio::time::timeout(spec.connect_timeout, slot.permits.clone().acquire_owned())
                    .await
                    .map_err(|_| connect_error("all max_connections busy"))?
                    .map_err(|_| connect_error("pool closed"))?
            }
        };
        let stream =
            monoio::time::timeout(spec.connect_timeout, TcpStream::connect_addr(spec.addr))
                .await
                .map_err(|_| connect_error("connect timed out"))?
                .map_err(|e| connect_error(&e.to_string()))?;
        let _ = stream.set_nodelay(true);
        Ok(UpstreamConn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            reused: false,
            idle_since: Instant::now(),
            _permit: permit,
        })
    }

    /// Parks a connection whose last exchange ended cleanly.
    pub fn release(&self, index: usize, mut conn: UpstreamConn) {
        conn.buf.clear();
        conn.reused = true;
        conn.idle_since = Instant::now();
        self.slots[index].idle.borrow_mut().push(conn);
    }

    /// Idle connections across all upstreams (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.slots.iter().map(|s| s.idle.borrow().len()).sum()
    }
}
