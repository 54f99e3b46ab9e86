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

/// Per-worker state for one configuration generation, owned by the
/// worker's thread and shared by its connection tasks through `Rc`. A
/// request keeps the `Rc<Worker>` it started with to its end, so its
/// snapshot, pools and router always agree; a reload builds a new
/// `Worker` (see [`Worker::current`]).
pub struct Worker {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub snapshot: Arc<Snapshot>,
    /// Upstream state (breakers, health, load) indexed like
    /// `snapshot.upstreams`.
    pub upstreams: Arc<crate::upstream::health::UpstreamStates>,
    pub pools: Rc<Pools>,
    pub router: Rc<Router>,
    pub metrics: WorkerMetrics,
    pub scratch: RefCell<ParseScratch>,
    /// Hyperscan scratch and metric handles of the PII/safety guard.
    pub guard: crate::pipeline::guard::GuardWorker,
    /// The configuration generation this state was built for.
    generation: u64,
    /// What outlives generations on this thread.
    home: Rc<Home>,
}

/// Per-thread state shared by every generation of one worker.
struct Home {
    inflight: Cell<usize>,
    request_seq: Cell<u64>,
    request_prefix: u64,
    /// The newest generation's state, handed to new requests.
    current: RefCell<Option<Rc<Worker>>>,
}

impl Worker {
    pub fn new(id: usize, shared: Arc<Shared>) -> Rc<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let home = Rc::new(Home {
            inflight: Cell::new(0),
            request_seq: Cell::new(0),
            request_prefix: nanos
                ^ ((id as u64) << 56)
                ^ u64::from(std::process::id()).rotate_left(24),
            current: RefCell::new(None),
        });
        let worker = Rc::new(Self::build(id, shared, home.clone(), None));
        *home.current.borrow_mut() = Some(worker.clone());
        worker
    }

    /// State for the shared current generation; pools (and the router)
    /// of `previous` are kept when its upstream list (model shapes) did
    /// not change.
    fn build(id: usize, shared: Arc<Shared>, home: Rc<Home>, previous: Option<&Worker>) -> Self {
        let generation = shared.generation();
        let snapshot = generation.snapshot.clone();
        let seed = home.request_prefix ^ (id as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let same_upstreams = previous.filter(|p| Arc::ptr_eq(&p.upstreams, &generation.upstreams));
        let same_models = previous.filter(|p| {
            p.snapshot.models.len() == snapshot.models.len()
                && p.snapshot
                    .models
                    .iter()
                    .zip(&snapshot.models)
                    .all(|(a, b)| a.targets.len() == b.targets.len())
        });
        Self {
            id,
            pools: same_upstreams.map_or_else(
                || Rc::new(Pools::new(&snapshot.upstreams)),
                |p| p.pools.clone(),
            ),
            router: same_models.map_or_else(
                || Rc::new(Router::new(&snapshot, seed)),
                |p| p.router.clone(),
            ),
            upstreams: generation.upstreams.clone(),
            metrics: WorkerMetrics::default(),
            scratch: RefCell::new(ParseScratch::default()),
            guard: crate::pipeline::guard::GuardWorker::new(snapshot.guard.as_deref()),
            generation: generation.number,
            home,
            shared,
            snapshot,
        }
    }

    /// The state of the current configuration generation: `self` unless
    /// a reload happened since it was built (one atomic load); then the
    /// worker's newest state, built on first use.
    pub fn current(self: &Rc<Self>) -> Rc<Worker> {
        if self.shared.generation_number() == self.generation {
            return self.clone();
        }
        let newest = self.home.current.borrow().clone();
        if let Some(w) = newest.filter(|w| w.shared.generation_number() == w.generation) {
            return w;
        }
        let previous = self.home.current.borrow().clone();
        let next = Rc::new(Self::build(
            self.id,
            self.shared.clone(),
            self.home.clone(),
            previous.as_deref(),
        ));
        tracing::debug!(
            worker = self.id,
            generation = next.generation,
            "worker switched to a new configuration"
        );
        *self.home.current.borrow_mut() = Some(next.clone());
        next
    }

    pub fn is_draining(&self) -> bool {
        self.shared.is_draining()
    }

    /// Whether a connection whose request `asked` for keep-alive stays
    /// open after this answer: not once the drain began. Asked again when
    /// each answer is written, since a drain can begin after the request
    /// was read.
    pub fn keep_alive(&self, asked: bool) -> bool {
        asked && !self.is_draining()
    }

    /// A new request id: unique per process start, worker and request.
    pub fn next_request_id(&self, out: &mut Vec<u8>) {
        let home = &self.home;
        let seq = home.request_seq.get().wrapping_add(1);
        home.request_seq.set(seq);
        let mut hex = [0u8; 32];
        let _ = hex::encode_to_slice(home.request_prefix.to_be_bytes(), &mut hex[..16]);
        let _ = hex::encode_to_slice(seq.to_be_bytes(), &mut hex[16..]);
        out.extend_from_slice(&hex);
    }

    /// Marks a request in flight until the guard drops; the drain waits
    /// for these (across generations).
    pub fn begin_request(self: &Rc<Self>) -> InflightGuard {
        self.home.inflight.set(self.home.inflight.get() + 1);
        InflightGuard(self.clone())
    }

    fn inflight(&self) -> usize {
        self.home.inflight.get()
    }
}

pub struct InflightGuard(Rc<Worker>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        let home = &self.0.home;
        home.inflight.set(home.inflight.get() - 1);
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
    let addr = shared.snapshot().server.listen;
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
    let worker = Worker::new(id, shared);
    loop {
        monoio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    monoio::spawn(crate::http::server::serve_connection(worker.current(), stream, peer.ip()));
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
    let worker = worker.current();
    let deadline = Instant::now() + worker.snapshot.server.drain_timeout;
    while worker.inflight() > 0 && Instant::now() < deadline {
        monoio::time::sleep(Duration::from_millis(10)).await;
    }
    if worker.inflight() > 0 {
        tracing::warn!(
            worker = id,
            inflight = worker.inflight(),
            "drain timeout: closing unfinished requests"
        );
    }
    // Break the worker <-> home cycle so pools close with the runtime.
    worker.home.current.borrow_mut().take();
}
