//! The `sluice` command: serve, demo, check-config, hash-key, mock-upstream.

use clap::{Parser, Subcommand};
use sluice::config::{self, snapshot::Snapshot};
use sluice::mock::MockDefaults;
use sluice::runtime::reload::Reloader;
use sluice::runtime::{signals, Gateway};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The package version and the git commit it was built from (build.rs).
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("SLUICE_GIT_COMMIT"),
    ")"
);

#[derive(Parser)]
#[command(name = "sluice", version = VERSION, about = "An AI gateway appliance")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway with a configuration file.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Run the gateway on its embedded default, in front of a built-in mock model server.
    Demo {
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        #[arg(long, default_value = "127.0.0.1:9090")]
        metrics_listen: SocketAddr,
    },
    /// Validate a configuration file (the whole schema) and exit.
    CheckConfig { file: PathBuf },
    /// Print the SHA-256 of an API key secret, for `[[keys]].sha256`.
    HashKey { secret: String },
    /// Check or export the tamper-evident audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Tools of the response cache.
    Cache {
        #[command(subcommand)]
        command: CacheCommand,
    },
    /// Run the mock OpenAI-compatible model server used by demos and tests.
    MockUpstream {
        #[arg(long, default_value = "127.0.0.1:18000")]
        listen: SocketAddr,
        /// fixed | error | reset | hang | echo (a request's x-mock-mode header overrides it)
        #[arg(long, default_value = "fixed")]
        mode: String,
        /// SSE events per streamed answer (x-mock-chunks)
        #[arg(long, default_value_t = 5)]
        chunks: usize,
        /// Delay between events in ms (x-mock-delay-ms)
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        /// Delay before the first event or answer in ms (x-mock-first-delay-ms)
        #[arg(long, default_value_t = 0)]
        first_delay_ms: u64,
        /// Status for error mode (x-mock-status)
        #[arg(long, default_value_t = 500)]
        status: u16,
        /// Serve TLS with this certificate chain (PEM); needs --tls-key
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The private key (PEM) of --tls-cert
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Demo {
            listen,
            metrics_listen,
        } => demo(listen, metrics_listen),
        Command::CheckConfig { file } => check_config(&file),
        Command::Audit { command } => audit(command),
        Command::Cache { command } => cache(command),
        Command::HashKey { secret } => {
            use sha2::{Digest, Sha256};
            println!("{}", hex::encode(Sha256::digest(secret.as_bytes())));
            Ok(())
        }
        Command::MockUpstream {
            listen,
            mode,
            chunks,
            delay_ms,
            first_delay_ms,
            status,
            tls_cert,
            tls_key,
        } => match (tls_cert, tls_key) {
            (Some(cert), Some(key)) => sluice::tls::ServerTls::load(&cert, &key)
                .map(|tls| Some(Arc::new(tls)))
                .map_err(|e| e.to_string()),
            _ => Ok(None),
        }
        .and_then(|tls| {
            let defaults = MockDefaults {
                mode,
                chunks,
                delay_ms,
                first_delay_ms,
                status,
                tls,
                ..MockDefaults::default()
            };
            sluice::mock::run(listen, defaults)
                .map_err(|e| format!("mock upstream on {listen}: {e}"))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("sluice: {message}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if std::env::var("SLUICE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain of every segment in DIR; names the first broken record.
    Verify { dir: PathBuf },
    /// Write the records of a verified log as JSON Lines (default) or CSV.
    Export {
        #[arg(long)]
        dir: PathBuf,
        /// Only records at or after this RFC 3339 time.
        #[arg(long)]
        from: Option<String>,
        /// Only records before this RFC 3339 time.
        #[arg(long)]
        to: Option<String>,
        #[arg(long)]
        team: Option<String>,
        /// jsonl | csv
        #[arg(long, default_value = "jsonl")]
        format: String,
    },
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Precision and recall of the embedder, alone and with the verifier, on
    /// labelled pairs (JSON lines {"a","b","same"}) for a range of thresholds.
    Eval {
        pairs: PathBuf,
        /// Take `[cache]` (embedder, similarity) from this configuration;
        /// default: the local all-MiniLM-L6-v2 under var/models (`make models`).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Also list every pair with its similarity and the verifier's verdict.
        #[arg(long)]
        list: bool,
    },
}

fn cache(command: CacheCommand) -> Result<(), String> {
    use sluice::config::snapshot::EmbedderSettings;
    let CacheCommand::Eval {
        pairs,
        config,
        list,
    } = command;
    let (embedder, similarity) = match config {
        Some(file) => {
            let cfg = config::load_file(&file).map_err(|e| e.to_string())?;
            let source = std::fs::read_to_string(&file).map_err(|e| e.to_string())?;
            let snapshot =
                config::snapshot::Snapshot::build(&cfg, &source).map_err(|e| e.to_string())?;
            let settings = snapshot
                .cache
                .ok_or_else(|| format!("{}: no [cache] section", file.display()))?;
            let embedder = settings
                .embedder
                .ok_or_else(|| format!("{}: no [cache.embedder] section", file.display()))?;
            (embedder, settings.similarity)
        }
        None => (
            EmbedderSettings::Local {
                model_dir: "var/models/all-minilm-l6-v2".into(),
                onnxruntime: "var/models/onnxruntime/libonnxruntime.so".into(),
            },
            0.92,
        ),
    };
    let report = sluice::pipeline::cache::eval::run(&embedder, &pairs, similarity, list)
        .map_err(|e| e.to_string())?;
    print!("{report}");
    Ok(())
}

fn audit(command: AuditCommand) -> Result<(), String> {
    use sluice::audit::verify;
    match command {
        AuditCommand::Verify { dir } => {
            let summary =
                verify::walk(&dir, |_, _| {}).map_err(|e| format!("audit log BROKEN: {e}"))?;
            println!(
                "audit log ok: {} records in {} segments",
                summary.records, summary.segments
            );
            if let Some(torn) = summary.torn_tail {
                println!("note: the last record ({torn}) was cut short by a crash and is not part of the chain");
            }
            Ok(())
        }
        AuditCommand::Export {
            dir,
            from,
            to,
            team,
            format,
        } => {
            let csv = match format.as_str() {
                "csv" => true,
                "jsonl" => false,
                other => return Err(format!("--format {other}: use jsonl or csv")),
            };
            let filter = verify::ExportFilter { from, to, team };
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            verify::export(&dir, &filter, csv, &mut out)
                .map_err(|e| format!("audit log BROKEN: {e}"))?;
            std::io::Write::flush(&mut out).map_err(|e| e.to_string())
        }
    }
}

fn check_config(file: &std::path::Path) -> Result<(), String> {
    let cfg = config::load_file(file).map_err(|e| e.to_string())?;
    println!(
        "{}: ok ({} upstreams, {} models, {} teams, {} keys)",
        file.display(),
        cfg.upstreams.len(),
        cfg.models.len(),
        cfg.teams.len(),
        cfg.keys.len()
    );
    Ok(())
}

fn serve(file: &std::path::Path) -> Result<(), String> {
    let source = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let base = file.parent().unwrap_or(std::path::Path::new("."));
    let cfg = config::parse_str(&source, base).map_err(|e| format!("{}: {e}", file.display()))?;
    if cfg.cluster.is_some() {
        // Before the first cost controls are built (with the snapshot).
        sluice::cluster::enable();
    }
    let snapshot =
        Snapshot::build(&cfg, &source).map_err(|e| format!("{}: {e}", file.display()))?;
    run_gateway(snapshot, &cfg, Some(file))
}

/// The embedded default: one model and one embedding model on an
/// in-process mock model server.
const DEMO_CONFIG: &str = r#"
[server]
listen = "LISTEN"
workers = 0
pin_cores = false
io = "auto"

[metrics]
listen = "METRICS"

[[upstreams]]
name = "mock-gpu"
url = "http://MOCK"
region = "eu"

[[models]]
name = "llama-3.1-8b"
upstream_model = "meta-llama/Llama-3.1-8B-Instruct"
targets = [{ upstream = "mock-gpu" }]

[[models]]
name = "embed-small"
targets = [{ upstream = "mock-gpu" }]

[auth]

[[teams]]
name = "demo"
allowed_models = ["*"]
cache = true

[[keys]]
id = "demo"
team = "demo"
user = "demo-user"
sha256 = "1c590839af894cf25f9a5fe06929af05b377f60efbe55508ef93d251887b9213"   # "sk-sluice-demo"
"#;

/// The demo's response cache: exact always; semantic too when the local
/// embedding model is in var/models (`make models`, which `make demo` runs).
fn demo_cache() -> String {
    let models = std::path::Path::new("var/models");
    let model_dir = models.join("all-minilm-l6-v2");
    let runtime = models.join("onnxruntime/libonnxruntime.so");
    if model_dir.join("model.onnx").exists() && runtime.exists() {
        format!(
            "\n[cache]\n\n[cache.embedder]\nkind = \"local\"\nmodel_dir = {:?}\nonnxruntime = {:?}\n",
            model_dir.display().to_string(),
            runtime.display().to_string()
        )
    } else {
        "\n[cache]\nsemantic = false\n".into()
    }
}

/// The secret of the demo's API key (its SHA-256 is in [`DEMO_CONFIG`]).
const DEMO_KEY: &str = "sk-sluice-demo";

fn demo(listen: SocketAddr, metrics_listen: SocketAddr) -> Result<(), String> {
    let (mock, _) = sluice::mock::spawn(
        "127.0.0.1:0".parse().expect("literal address"),
        MockDefaults::default(),
    )
    .map_err(|e| format!("cannot start the mock model server: {e}"))?;
    let source = DEMO_CONFIG
        .replace("LISTEN", &listen.to_string())
        .replace("METRICS", &metrics_listen.to_string())
        .replace("MOCK", &mock.to_string())
        + &demo_cache();
    let cfg = config::parse_str(&source, std::path::Path::new(".")).map_err(|e| e.to_string())?;
    let snapshot = Snapshot::build(&cfg, &source).map_err(|e| e.to_string())?;
    let demo_cfg = cfg;
    println!("sluice demo: gateway on http://{listen}, metrics on http://{metrics_listen}/metrics, mock model server on {mock}");
    println!("API key of the demo team: {DEMO_KEY}");
    println!("Try:");
    println!(
        "  curl -s http://{listen}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \\"
    );
    println!("    -d '{{\"model\":\"llama-3.1-8b\",\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'");
    println!(
        "  curl -sN http://{listen}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \\"
    );
    println!("    -d '{{\"model\":\"llama-3.1-8b\",\"stream\":true,\"messages\":[{{\"role\":\"user\",\"content\":\"Hello\"}}]}}'");
    println!("  curl -s http://{listen}/v1/models -H 'authorization: Bearer {DEMO_KEY}'");
    println!("Cache (temperature 0; run twice, or rephrase, and watch x-sluice-cache):");
    println!(
        "  curl -si http://{listen}/v1/chat/completions -H 'authorization: Bearer {DEMO_KEY}' -H 'content-type: application/json' \\"
    );
    println!("    -d '{{\"model\":\"llama-3.1-8b\",\"temperature\":0,\"messages\":[{{\"role\":\"user\",\"content\":\"How do I reset my password?\"}}]}}'");
    println!("SDKs: OPENAI_BASE_URL=http://{listen}/v1 OPENAI_API_KEY={DEMO_KEY}; the key is never sent upstream.");
    run_gateway(snapshot, &demo_cfg, None)
}

/// Opens the store (admin-created keys come back from it) and starts the
/// admin API, when the configuration has them.
fn start_store_and_admin(
    shared: &Arc<sluice::runtime::Shared>,
    cfg: &config::Config,
    reloader: Option<&Arc<Reloader>>,
) -> Result<(), String> {
    if cfg.admin.is_none() && cfg.store.is_none() {
        return Ok(());
    }
    let path = cfg.store.as_ref().map(|s| cfg.resolve(&s.path));
    let store = sluice::store::Store::open(path.as_deref())?;
    let keys = store.active_keys()?;
    tracing::info!(keys = keys.len(), path = ?path, "store opened");
    *shared
        .dynamic_keys
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = keys;
    shared.rebuild_keys();
    // Budgets resume this period's spend (docs/cost.md).
    sluice::pipeline::account::restore(&shared.snapshot().access, &store);
    let _ = shared.store.set(store.clone());
    if let Some(admin) = &cfg.admin {
        let addr: SocketAddr = admin
            .listen
            .parse()
            .map_err(|e| format!("admin.listen {:?}: {e}", admin.listen))?;
        let token = std::env::var(&admin.token_env).unwrap_or_default();
        if token.len() < 16 {
            return Err(format!(
                "admin.token_env: set the environment variable {} to the admin token (16 characters or more)",
                admin.token_env
            ));
        }
        let reload = reloader.map(|r| {
            let r = r.clone();
            Arc::new(move || r.reload()) as sluice::admin::ReloadFn
        });
        let bound = sluice::admin::Admin::new(shared.clone(), store, token, reload)
            .serve(addr)
            .map_err(|e| format!("admin listener on {addr}: {e}"))?;
        tracing::info!(%bound, "admin API listening");
    }
    Ok(())
}

fn run_gateway(
    snapshot: Snapshot,
    cfg: &config::Config,
    file: Option<&std::path::Path>,
) -> Result<(), String> {
    signals::block_shutdown_signals();
    let fd_limit = sluice::runtime::raise_fd_limit();
    let snapshot = Arc::new(snapshot);
    if let Some(addr) = snapshot.metrics_listen {
        let handle = sluice::metrics::install();
        sluice::metrics::serve(addr, handle)
            .map_err(|e| format!("metrics listener on {addr}: {e}"))?;
    } else {
        sluice::metrics::install();
    }
    let shared = sluice::runtime::Shared::new(snapshot.clone());
    let reloader = file.map(|f| Arc::new(Reloader::new(shared.clone(), f.to_path_buf(), cfg)));
    start_store_and_admin(&shared, cfg, reloader.as_ref())?;
    // Shared limits: first leases (or fallback shares) before serving, and
    // after the store restored this period's spend.
    let cluster = match &snapshot.cluster {
        Some(settings) => Some(
            sluice::cluster::Cluster::start(settings, shared.clone()).map_err(|e| e.to_string())?,
        ),
        None => None,
    };
    let mut gateway = Gateway::start_shared(shared).map_err(|e| e.to_string())?;
    tracing::info!(
        listen = %snapshot.server.listen,
        workers = gateway.drivers.len(),
        drivers = ?gateway.drivers,
        config_sha256 = %snapshot.config_hash,
        tls_cert_sha256 = ?snapshot.server.tls.as_ref().map(|t| &t.fingerprint),
        fd_limit,
        "sluice ready"
    );
    let notifier = Arc::new(systemd_notifier());
    sd_notify(
        &notifier,
        "READY=1",
        notifier.ready(&format!(
            "serving on {} with {} workers",
            snapshot.server.listen,
            gateway.drivers.len()
        )),
    );
    start_watchdog(&notifier, &gateway);
    let signal = signals::wait_for_shutdown_signal_or_reload(|| match &reloader {
        // The outcome is logged and counted by the reloader.
        Some(r) => {
            let _ = r.reload();
        }
        None => tracing::warn!("SIGHUP: no configuration file to reload (demo)"),
    });
    tracing::info!(
        signal,
        drain_timeout_ms = snapshot.server.drain_timeout.as_millis() as u64,
        "shutdown requested"
    );
    sd_notify(&notifier, "STOPPING=1", notifier.stopping());
    let shared = gateway.shared().clone();
    gateway.shutdown();
    if let Some(cluster) = cluster {
        cluster.shutdown();
    }
    if let Some(store) = shared.store.get() {
        if let Err(e) = store.flush() {
            tracing::error!(error = %e, "store: pending usage not written");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// The systemd notifier (`$NOTIFY_SOCKET`); disabled, with a warning, when
/// the variable names no usable socket.
fn systemd_notifier() -> sluice::runtime::notify::Notifier {
    use sluice::runtime::notify::Notifier;
    Notifier::from_env().unwrap_or_else(|e| {
        tracing::warn!(error = %e, "NOTIFY_SOCKET unusable; not notifying systemd");
        Notifier::disabled()
    })
}

fn sd_notify(
    notifier: &sluice::runtime::notify::Notifier,
    what: &str,
    sent: std::io::Result<bool>,
) {
    match sent {
        Ok(true) => tracing::debug!(state = what, "notified systemd"),
        Ok(false) => {}
        Err(e) => tracing::warn!(state = what, error = %e, socket = ?notifier, "sd_notify failed"),
    }
}

/// With `$WATCHDOG_USEC` set (systemd's `WatchdogSec=`), a small thread
/// sends `WATCHDOG=1` every half period while every worker thread is
/// alive. If a worker ends while the gateway is not draining, it stops
/// sending, so systemd's watchdog kills and restarts the service.
fn start_watchdog(notifier: &Arc<sluice::runtime::notify::Notifier>, gateway: &Gateway) {
    use std::sync::atomic::Ordering;
    let Some(interval) = sluice::runtime::notify::watchdog_interval() else {
        return;
    };
    if !notifier.is_enabled() {
        return;
    }
    let notifier = notifier.clone();
    let alive = gateway.alive_workers();
    let expected = gateway.drivers.len();
    let shared = gateway.shared().clone();
    let spawned = std::thread::Builder::new()
        .name("sluice-watchdog".into())
        .spawn(move || loop {
            let live = alive.load(Ordering::SeqCst);
            if live < expected && !shared.is_draining() {
                tracing::error!(
                    live,
                    expected,
                    "a worker thread has exited: no more watchdog pings, systemd will restart sluice"
                );
                return;
            }
            sd_notify(&notifier, "WATCHDOG=1", notifier.watchdog());
            std::thread::sleep(interval);
        });
    match spawned {
        Ok(_) => tracing::info!(
            interval_ms = interval.as_millis() as u64,
            "systemd watchdog pings started"
        ),
        Err(e) => tracing::error!(error = %e, "cannot start the watchdog thread"),
    }
}
