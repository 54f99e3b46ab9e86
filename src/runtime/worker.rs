//! One worker: its listener, its accept loop, its per-core state, and its
//! part of the drain. Every request accepted here is served here.

use super::{ReadyTx, RuntimeError, Shared};
use crate::api::request::ParseScratch;
use crate::config::snapshot::Snapshot;
use crate::metrics::WorkerMetrics;
use crate::pipeline::route::Router;
use crate::upstream::pool::Pools;
use futures_channel::oneshot;
use monoio::net::{ListenerOpts, TcpListener};
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Per-worker state, owned by the worker's thread and shared by its
/// connection tasks through `Rc`.
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub snapshot: Arc<Snapshot>,
    pub pools: Pools,
    pub router: Router,
    pub metrics: WorkerMetrics,
    pub scratch: RefCell<ParseScratch>,
    /// Hyperscan scratch and metric handles of the PII/safety guard.
    pub guard: crate::pipeline::guard::GuardWorker,
    inflight: Cell<usize>,
    request_seq: Cell<u64>,
    request_prefix: u64,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Self {
        let snapshot = shared.snapshot.clone();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            id,
            pools: Pools::new(&snapshot.upstreams),
            router: Router::new(
                &snapshot,
                nanos ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            ),
            metrics: WorkerMetrics::default(),
            scratch: RefCell::new(ParseScratch::default()),
            guard: crate::pipeline::guard::GuardWorker::new(snapshot.guard.as_deref()),
            inflight: Cell::new(0),
            request_seq: Cell::new(0),
            request_prefix: nanos
                ^ ((id as u64) << 56)
                ^ u64::from(std::process::id()).rotate_left(24),
            shared,
            snapshot,
        }
    }

    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }

    /// A new request id: unique per process start, worker and request.
    pub fn next_request_id(&self, out: &mut Vec<u8>) {
        let seq = self.request_seq.get().wrapping_add(1);
        self.request_seq.set(seq);
        let mut hex = [0u8; 32];
        let _ = hex::encode_to_slice(self.request_prefix.to_be_bytes(), &mut hex[..16]);
        let _ = hex::encode_to_slice(seq.to_be_bytes(), &mut hex[16..]);
        out.extend_from_slice(&hex);
    }

    /// Marks a request in flight until the guard drops; the drain waits
    /// for these.
    pub fn begin_request(self: &Rc<Self>) -> InflightGuard {
        self.inflight.set(self.inflight.get() + 1);
        InflightGuard(self.clone())
    }
}

pub struct InflightGuard(Rc<Worker>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.set(self.0.inflight.get() - 1);
    }
}

pub(super) async fn worker_main(
    id: usize,
    cpu: Option<usize>,
    driver: &'static str,
    shared: Arc<Shared>,
    mut stop: oneshot::Receiver<()>,
    ready: ReadyTx,
) {
    let addr = shared.snapshot.server.listen;
    let opts = ListenerOpts::new()
        .reuse_port(true)
        .reuse_addr(true)
        .backlog(4096);
    let listener = match TcpListener::bind_with_config(addr, &opts) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(RuntimeError::Listen {
                worker: id,
                addr,
                reason: e.to_string(),
            }));
            return;
        }
    };
    tracing::info!(worker = id, cpu = ?cpu, driver, %addr, "worker listening");
    crate::metrics::worker_started(id, cpu, driver);
    let _ = ready.send(Ok(driver));
    let worker = Rc::new(Worker::new(id, shared));
    loop {
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(crate::http::server::serve_connection(worker.clone(), stream));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(worker = id, error = %e, "accept failed");
                    monoio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            _ = &mut stop => break,
        }
    }
    drop(listener);
    let deadline = Instant::now() + worker.snapshot.server.drain_timeout;
    while worker.inflight.get() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if worker.inflight.get() > 0 {
        tracing::warn!(
            worker = id,
            inflight = worker.inflight.get(),
            "drain timeout: closing unfinished requests"
        );
    }
}
