//! Per-worker keep-alive pools, one per upstream: idle connections are
//! reused last-in-first-out, and `max_connections` caps the connections a
//! worker holds to one upstream. At the cap a request queues: a released
//! connection is handed straight to the oldest waiter, and a closed one
//! frees a permit for a new connection, whichever comes first.

use super::{UpstreamError, UpstreamSpec};
use crate::tls::UpstreamStream;
use local_sync::oneshot;
use local_sync::semaphore::{OwnedSemaphorePermit, Semaphore};
use monoio::net::TcpStream;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Idle connections older than this are dropped rather than reused: common
/// model servers (uvicorn under vLLM) close idle connections after 5 s, and
/// a request written into a connection the server is closing is lost.
pub const MAX_IDLE: Duration = Duration::from_secs(4);

pub struct UpstreamConn {
    /// Plain TCP, or TLS for `https://` upstreams.
    pub stream: UpstreamStream,
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
    /// Requests queued at the cap, oldest first.
    waiters: RefCell<VecDeque<oneshot::Sender<UpstreamConn>>>,
}

enum Waited {
    Handed(UpstreamConn),
    Permit(OwnedSemaphorePermit),
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
                    waiters: RefCell::new(VecDeque::new()),
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
                // the oldest to make room, else queue for a released one.
                let parked = {
                    let mut idle = slot.idle.borrow_mut();
                    (!idle.is_empty()).then(|| idle.remove(0))
                };
                drop(parked);
                let (tx, rx) = oneshot::channel();
                slot.waiters.borrow_mut().push_back(tx);
                let waited = monoio::time::timeout(spec.connect_timeout, async {
                    monoio::select! {
                        conn = rx => conn.ok().map(Waited::Handed),
                        permit = slot.permits.clone().acquire_owned() => permit.ok().map(Waited::Permit),
                    }
                })
                .await
                .map_err(|_| connect_error("all max_connections busy"))?
                .ok_or_else(|| connect_error("pool closed"))?;
                match waited {
                    Waited::Handed(conn) => return Ok(conn),
                    Waited::Permit(p) => p,
                }
            }
        };
        // connect_timeout bounds the TCP connect and the TLS handshake together.
        let deadline = Instant::now() + spec.connect_timeout;
        let tcp = monoio::time::timeout_at(deadline.into(), TcpStream::connect_addr(spec.addr))
            .await
            .map_err(|_| connect_error("connect timed out"))?
            .map_err(|e| connect_error(&e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let stream = match &spec.tls {
            None => UpstreamStream::Plain(tcp),
            Some(tls) => monoio::time::timeout_at(deadline.into(), tls.connect(tcp))
                .await
                .map_err(|_| UpstreamError::Tls(spec.name.to_string(), "timed out".into()))?
                .map_err(|e| UpstreamError::Tls(spec.name.to_string(), e))?,
        };
        Ok(UpstreamConn {
            stream,
            buf: Vec::with_capacity(16 * 1024),
            reused: false,
            idle_since: Instant::now(),
            _permit: permit,
        })
    }

    /// Hands a connection whose last exchange ended cleanly to the oldest
    /// queued request, else parks it.
    pub fn release(&self, index: usize, mut conn: UpstreamConn) {
        conn.buf.clear();
        conn.reused = true;
        conn.idle_since = Instant::now();
        let slot = &self.slots[index];
        loop {
            let Some(waiter) = slot.waiters.borrow_mut().pop_front() else {
                break;
            };
            // A waiter that timed out or took a permit instead has dropped
            // its receiver; the connection comes back and goes on.
            match waiter.send(conn) {
                Ok(()) => return,
                Err(back) => conn = back,
            }
        }
        slot.idle.borrow_mut().push(conn);
    }

    /// Idle connections across all upstreams (for tests and metrics).
    pub fn idle_count(&self) -> usize {
        self.slots.iter().map(|s| s.idle.borrow().len()).sum()
    }
}
