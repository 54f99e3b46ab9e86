//! Worker threads and their lifecycle: one monoio runtime per worker, each
//! pinned to its own CPU, on io_uring (with cooperative task running, single
//! issuer and deferred task running) or epoll; each worker binds its own
//! `SO_REUSEPORT` listener and owns its pools, buffers and metric handles.
//! Also the signal thread (SIGTERM/SIGINT start a drain) and the metrics
//! listener thread. Nothing here is shared between workers but the
//! immutable snapshot and a few atomics.

pub mod notify;
pub mod reload;
pub mod signals;
pub mod worker;

use crate::config::snapshot::Snapshot;
use crate::config::IoMode;
use crate::pipeline::auth::KeyTable;
use futures_channel::oneshot;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("worker {worker}: io_uring is not available ({reason}); set server.io = \"auto\" or \"epoll\"")]
    IoUringRefused { worker: usize, reason: String },
    #[error("worker {worker}: cannot start an epoll runtime: {reason}")]
    Epoll { worker: usize, reason: String },
    #[error("worker {worker}: cannot listen on {addr}: {reason}")]
    Listen {
        worker: usize,
        addr: std::net::SocketAddr,
        reason: String,
    },
    #[error("audit log in {dir}: {reason}")]
    Audit {
        dir: std::path::PathBuf,
        reason: String,
    },
    #[error("cannot start thread: {0}")]
    Thread(String),
    #[error("response cache: {0}")]
    Cache(String),
    #[error("metrics listener on {addr}: {reason}")]
    Metrics {
        addr: std::net::SocketAddr,
        reason: String,
    },
}

/// One configuration generation: the snapshot and the upstream state
/// sized for its upstreams. Swapped whole by a reload.
pub struct Generation {
    pub number: u64,
    pub snapshot: Arc<Snapshot>,
    pub upstreams: Arc<crate::upstream::health::UpstreamStates>,
}

/// Process-wide state the workers share: read-mostly, atomics only.
pub struct Shared {
    /// The current configuration generation, swapped by a reload
    /// (`arc-swap`: readers never lock). Workers keep their own `Arc` and
    /// only compare [`Shared::generation`] per request.
    current: arc_swap::ArcSwap<Generation>,
    /// Number of the current generation: one atomic load per request tells
    /// a worker whether its cached snapshot is still current.
    generation: std::sync::atomic::AtomicU64,
    /// Serializes reloads and key-table rebuilds (admin and reload threads
    /// only, never the request path).
    reload_lock: std::sync::Mutex<()>,
    /// Every usable API key (static and admin-created), swapped whole by
    /// the admin API; the request path only loads it.
    pub keys: arc_swap::ArcSwap<KeyTable>,
    /// The embedded store, once opened (usage records go there).
    pub store: std::sync::OnceLock<crate::store::Store>,
    /// Keys created through the admin API and not revoked; admin and
    /// reload only, never the request path.
    pub dynamic_keys: std::sync::Mutex<Vec<crate::pipeline::auth::KeySpec>>,
    /// The audit log's writer handle, when `[audit]` is set (opened by
    /// `Gateway::start_shared`).
    pub audit: std::sync::OnceLock<Arc<crate::audit::AuditLog>>,
    /// The response cache, when `[cache]` is set (opened by
    /// `Gateway::start_shared`; kept across reloads, saved at shutdown).
    pub cache: std::sync::OnceLock<Arc<crate::pipeline::cache::Cache>>,
    /// Answers held for a reviewer (`[[approvals]]`), shared with the
    /// admin API.
    pub approvals: crate::pipeline::approve::Approvals,
    /// Agent session counters (`x-sluice-session`); kept across reloads.
    pub sessions: crate::pipeline::agent::Sessions,
    /// Authentication failures per client address (brute-force slowdown
    /// and refusal); kept across reloads.
    pub auth_throttle: crate::pipeline::throttle::AuthThrottle,
    draining: AtomicBool,
}

impl Shared {
    pub fn new(snapshot: Arc<Snapshot>) -> Arc<Self> {
        let keys = KeyTable::build(&snapshot.access, &snapshot.access.static_keys);
        let upstreams = crate::upstream::health::UpstreamStates::new(snapshot.upstreams.len());
        Arc::new(Self {
            current: arc_swap::ArcSwap::from_pointee(Generation {
                number: 0,
                snapshot,
                upstreams,
            }),
            generation: std::sync::atomic::AtomicU64::new(0),
            reload_lock: std::sync::Mutex::new(()),
            keys: arc_swap::ArcSwap::from_pointee(keys),
            store: std::sync::OnceLock::new(),
            cache: std::sync::OnceLock::new(),
            dynamic_keys: std::sync::Mutex::new(Vec::new()),
            audit: std::sync::OnceLock::new(),
            approvals: Default::default(),
            sessions: Default::default(),
            auth_throttle: Default::default(),
            draining: AtomicBool::new(false),
        })
    }

    /// The current snapshot (admin and reload; workers cache theirs).
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load().snapshot.clone()
    }

    /// The current generation whole.
    pub fn generation(&self) -> Arc<Generation> {
        self.current.load_full()
    }

    /// The current generation's number (one atomic load).
    pub fn generation_number(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Swaps in a new generation; the caller holds `reload_lock`.
    fn install(
        &self,
        snapshot: Arc<Snapshot>,
        upstreams: Arc<crate::upstream::health::UpstreamStates>,
    ) -> u64 {
        let number = self.generation.load(Ordering::Relaxed) + 1;
        self.current.store(Arc::new(Generation {
            number,
            snapshot,
            upstreams,
        }));
        self.rebuild_keys_locked();
        self.generation.store(number, Ordering::Release);
        number
    }

    /// Rebuilds the key table from the current snapshot's static keys and
    /// the admin-created ones, and swaps it in: every worker sees it on
    /// its next request.
    pub fn rebuild_keys(&self) {
        let _reload = self
            .reload_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.rebuild_keys_locked();
    }

    fn rebuild_keys_locked(&self) {
        let snapshot = self.snapshot();
        let dynamic = self
            .dynamic_keys
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let table = KeyTable::build(
            &snapshot.access,
            snapshot.access.static_keys.iter().chain(dynamic.iter()),
        );
        self.keys.store(Arc::new(table));
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

/// Raises the soft open-files limit to the hard one: every client and
/// upstream connection is a descriptor, and the default soft limit (1024)
/// would cap a gateway at a few hundred clients. Returns the new limit.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
        lim.rlim_cur as u64
    }
}

/// CPUs this process may run on, in ascending order.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity fills it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_current_thread(cpu: usize) -> bool {
    // SAFETY: as above; the set names one CPU from the allowed mask.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// A running gateway: its worker threads and the handle that drains them.
pub struct Gateway {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    stop: Vec<oneshot::Sender<()>>,
    pub drivers: Vec<&'static str>,
    /// Worker threads still running (decremented when one ends, for any
    /// reason); read by the systemd watchdog thread.
    alive: Arc<AtomicUsize>,
}

/// Decrements the live-worker count when a worker thread ends, also by
/// unwinding.
struct AliveGuard(Arc<AtomicUsize>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Gateway {
    /// Starts every worker and waits until each listens (or one fails).
    pub fn start(snapshot: Arc<Snapshot>) -> Result<Self, RuntimeError> {
        Self::start_shared(Shared::new(snapshot))
    }

    /// As [`Gateway::start`], with state prepared by the caller (store,
    /// admin-created keys).
    pub fn start_shared(shared: Arc<Shared>) -> Result<Self, RuntimeError> {
        let generation = shared.generation();
        let snapshot = generation.snapshot.clone();
        if let Some(settings) = &snapshot.audit {
            let log = crate::audit::AuditLog::open(settings.clone()).map_err(|e| {
                RuntimeError::Audit {
                    dir: settings.dir.clone(),
                    reason: e.to_string(),
                }
            })?;
            let _ = shared.audit.set(log);
        }
        if let Some(settings) = &snapshot.cache {
            let cache = crate::pipeline::cache::Cache::open(settings)
                .map_err(|e| RuntimeError::Cache(e.to_string()))?;
            let _ = shared.cache.set(cache);
        }
        crate::upstream::health::spawn_checker(
            snapshot.upstreams.clone(),
            generation.upstreams.clone(),
        )
        .map_err(|e| RuntimeError::Thread(e.to_string()))?;
        let cpus = allowed_cpus();
        let (ready_tx, ready_rx) = mpsc::channel();
        let mut workers = Vec::new();
        let mut stop = Vec::new();
        let alive = Arc::new(AtomicUsize::new(0));
        for id in 0..snapshot.server.workers {
            let cpu =
                (snapshot.server.pin_cores && !cpus.is_empty()).then(|| cpus[id % cpus.len()]);
            let (stop_tx, stop_rx) = oneshot::channel();
            stop.push(stop_tx);
            let shared = shared.clone();
            let ready_tx = ready_tx.clone();
            alive.fetch_add(1, Ordering::SeqCst);
            let alive_guard = AliveGuard(alive.clone());
            let handle = std::thread::Builder::new()
                .name(format!("sluice-worker-{id}"))
                .spawn(move || {
                    let _alive = alive_guard;
                    if let Some(cpu) = cpu {
                        if !pin_current_thread(cpu) {
                            tracing::warn!(worker = id, cpu, "could not pin worker to its CPU");
                        }
                    }
                    run_worker(id, cpu, shared, stop_rx, ready_tx);
                })
                .map_err(|e| RuntimeError::Thread(e.to_string()))?;
            workers.push(handle);
        }
        drop(ready_tx);
        let mut drivers = Vec::new();
        let mut gateway = Gateway {
            shared,
            workers,
            stop,
            drivers: Vec::new(),
            alive,
        };
        for _ in 0..gateway.workers.len() {
            match ready_rx.recv() {
                Ok(Ok(driver)) => drivers.push(driver),
                Ok(Err(e)) => {
                    gateway.shutdown();
                    return Err(e);
                }
                Err(_) => {
                    gateway.shutdown();
                    return Err(RuntimeError::Thread(
                        "a worker exited while starting".into(),
                    ));
                }
            }
        }
        gateway.drivers = drivers;
        Ok(gateway)
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The number of worker threads still running, shared with whoever
    /// watches it (the systemd watchdog thread in `main.rs`).
    pub fn alive_workers(&self) -> Arc<AtomicUsize> {
        self.alive.clone()
    }

    /// Starts the drain: `/ready` turns 503, listeners close, in-flight
    /// requests finish within `drain_timeout`.
    pub fn begin_drain(&mut self) {
        if !self.shared.draining.swap(true, Ordering::SeqCst) {
            crate::metrics::set_draining(true);
            tracing::info!("draining: listeners closed, finishing in-flight requests");
        }
        for tx in self.stop.drain(..) {
            let _ = tx.send(());
        }
    }

    /// Drains and waits for every worker to finish.
    pub fn shutdown(&mut self) {
        self.begin_drain();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        // With the workers gone, nothing is stored any more: save the cache.
        if let Some(cache) = self.shared.cache.get() {
            match cache.save() {
                Ok(0) => {}
                Ok(n) => tracing::info!(entries = n, "cache saved"),
                Err(e) => tracing::error!(error = %e, "cache not saved"),
            }
        }
    }
}

type ReadyTx = mpsc::Sender<Result<&'static str, RuntimeError>>;

fn run_worker(
    id: usize,
    cpu: Option<usize>,
    shared: Arc<Shared>,
    stop: oneshot::Receiver<()>,
    ready: ReadyTx,
) {
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    let io = shared.snapshot().server.io;
    let uring = || -> std::io::Result<_> {
        let mut flags = io_uring::IoUring::builder();
        flags
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun();
        RuntimeBuilder::<IoUringDriver>::new()
            .uring_builder(flags)
            .enable_timer()
            .build()
            .or_else(|e| {
                tracing::warn!(worker = id, error = %e, "io_uring refused the cooperative/single-issuer flags; using a plain ring");
                RuntimeBuilder::<IoUringDriver>::new().enable_timer().build()
            })
    };
    let epoll = || RuntimeBuilder::<LegacyDriver>::new().enable_timer().build();
    let main = |driver: &'static str| {
        worker::worker_main(id, cpu, driver, shared.clone(), stop, ready.clone())
    };
    let uring_refused = |e: std::io::Error| RuntimeError::IoUringRefused {
        worker: id,
        reason: e.to_string(),
    };
    let epoll_failed = |e: std::io::Error| RuntimeError::Epoll {
        worker: id,
        reason: e.to_string(),
    };
    let started = match io {
        IoMode::Epoll => epoll()
            .map(|mut rt| rt.block_on(main("epoll")))
            .map_err(epoll_failed),
        IoMode::IoUring => uring()
            .map(|mut rt| rt.block_on(main("io_uring")))
            .map_err(uring_refused),
        IoMode::Auto => match uring() {
            Ok(mut rt) => {
                rt.block_on(main("io_uring"));
                Ok(())
            }
            Err(e) => {
                tracing::warn!(worker = id, error = %e, "io_uring is not available; falling back to epoll");
                epoll()
                    .map(|mut rt| rt.block_on(main("epoll")))
                    .map_err(epoll_failed)
            }
        },
    };
    if let Err(e) = started {
        let _ = ready.send(Err(e));
    }
}
