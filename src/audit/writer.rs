//! The writer thread: chains records (`"prev"` = SHA-256 of the previous
//! line), appends them to the current segment, syncs per `fsync`, rotates
//! at `segment_bytes` (a new segment opens with a header record chained to
//! the last one), keeps `head.json` at the last synced record, and deletes
//! segments past `retention_days` after writing the anchor that lets
//! `verify` start where the kept chain starts.

use super::{segment_name, segment_number, AuditSettings, ANCHOR_FILE, GENESIS, HEAD_FILE};
use crate::config::Fsync;
use futures_channel::oneshot;
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Records waiting for the writer at most.
pub const QUEUE: usize = 65_536;
/// New requests are refused (503) once the queue is this full, so records
/// of requests already in flight still find room.
const REFUSE_AT: usize = QUEUE - 4096;
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
/// How often the writer takes what the workers queued.
const POLL: Duration = Duration::from_millis(2);

/// The handle workers hold.
pub struct AuditLog {
    tx: SyncSender<Entry>,
    pending: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    pub settings: AuditSettings,
}

impl AuditLog {
    /// Opens (or continues) the log in `settings.dir` and starts the writer.
    pub fn open(settings: AuditSettings) -> io::Result<Arc<AuditLog>> {
        std::fs::create_dir_all(&settings.dir)?;
        let mut state = ChainState::recover(&settings.dir)?;
        state.open_segment(&settings)?;
        let (tx, rx) = sync_channel(QUEUE);
        let pending = Arc::new(AtomicUsize::new(0));
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            settings: settings.clone(),
            state,
            pending: pending.clone(),
            healthy: healthy.clone(),
        };
        std::thread::Builder::new()
            .name("sluice-audit".into())
            .spawn(move || writer.run(rx))?;
        Ok(Arc::new(AuditLog {
            tx,
            pending,
            healthy,
            settings,
        }))
    }

    /// Whether a new request may be served: the disk works and the queue
    /// has room. Otherwise the request is refused rather than served
    /// unaudited.
    pub fn accepting(&self) -> bool {
        self.healthy.load(Ordering::Relaxed) && self.pending.load(Ordering::Relaxed) < REFUSE_AT
    }

    /// Hands one serialized record (a JSON object) to the writer.
    pub fn submit(&self, record: Vec<u8>) {
        self.enqueue((record, None));
    }

    /// As `submit`, and the receiver resolves once the record is on disk
    /// (synced with `fsync = "always"`); None when it could not be queued.
    pub fn submit_durable(&self, record: Vec<u8>) -> Option<oneshot::Receiver<()>> {
        let (tx, rx) = oneshot::channel();
        self.enqueue((record, Some(tx))).then_some(rx)
    }

    fn enqueue(&self, entry: Entry) -> bool {
        self.pending.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(entry) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                crate::metrics::audit_lost();
                tracing::error!("audit queue full or writer gone: a record was lost");
                false
            }
        }
    }
}

/// A record and, when its request waits for it, who to tell once it is
/// on disk.
type Entry = (Vec<u8>, Option<oneshot::Sender<()>>);

/// Where the chain stands.
struct ChainState {
    dir: PathBuf,
    segment: u64,
    prev: String,
    file: Option<io::BufWriter<File>>,
    bytes: u64,
    records: u64,
}

impl ChainState {
    /// Finds the last segment and its last hash. A torn last line (a crash
    /// mid-write) is cut off, and said so.
    fn recover(dir: &Path) -> io::Result<Self> {
        let last = list_segments(dir)?.into_iter().last();
        let mut state = ChainState {
            dir: dir.to_path_buf(),
            segment: 0,
            prev: GENESIS.to_owned(),
            file: None,
            bytes: 0,
            records: 0,
        };
        let Some((n, path)) = last else {
            return Ok(state);
        };
        state.segment = n;
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        let mut good_len = 0u64;
        let mut reader = BufReader::new(&mut file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let read = reader.read_until(b'\n', &mut line)?;
            if read == 0 {
                break;
            }
            let complete =
                line.ends_with(b"\n") && serde_json::from_slice::<serde_json::Value>(&line).is_ok();
            if !complete {
                tracing::warn!(segment = %path.display(), offset = good_len, "audit: torn last record cut off");
                break;
            }
            state.prev = hash_hex(&line[..line.len() - 1]);
            good_len += read as u64;
            state.records += 1;
        }
        drop(reader);
        file.set_len(good_len)?;
        file.seek(io::SeekFrom::End(0))?;
        state.bytes = good_len;
        state.file = Some(io::BufWriter::with_capacity(256 * 1024, file));
        Ok(state)
    }

    /// Opens the next segment when there is none or the current is full;
    /// its header record chains it to the one before.
    fn open_segment(&mut self, settings: &AuditSettings) -> io::Result<()> {
        if self.file.is_some() && self.bytes < settings.segment_bytes {
            return Ok(());
        }
        if let Some(mut f) = self.file.take() {
            f.flush()?;
            f.get_ref().sync_data()?;
        }
        self.segment += 1;
        let path = self.dir.join(segment_name(self.segment));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        self.file = Some(io::BufWriter::with_capacity(256 * 1024, file));
        self.bytes = 0;
        let header = serde_json::json!({
            "segment": self.segment,
            "created": crate::alerts::now_rfc3339(),
            "version": env!("CARGO_PKG_VERSION"),
        });
        self.append(&serde_json::to_vec(&header).unwrap_or_default())?;
        // The directory entry must survive a crash too.
        File::open(&self.dir)?.sync_all()
    }

    /// Appends one record, chained: `{"prev":"<hash>",` + the rest.
    fn append(&mut self, record: &[u8]) -> io::Result<()> {
        let body = record.strip_prefix(b"{").unwrap_or(record);
        let mut line = Vec::with_capacity(record.len() + 80);
        line.extend_from_slice(b"{\"prev\":\"");
        line.extend_from_slice(self.prev.as_bytes());
        line.extend_from_slice(b"\"");
        if body != b"}" {
            line.push(b',');
        }
        line.extend_from_slice(body);
        self.prev = hash_hex(&line);
        line.push(b'\n');
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("no open segment"))?;
        file.write_all(&line)?;
        self.bytes += line.len() as u64;
        self.records += 1;
        Ok(())
    }

    fn sync(&mut self, data: bool) -> io::Result<()> {
        if let Some(f) = self.file.as_mut() {
            f.flush()?;
            if data {
                f.get_ref().sync_data()?;
            }
        }
        let head = serde_json::json!({"segment": self.segment, "records": self.records, "hash": self.prev});
        write_atomically(
            &self.dir.join(HEAD_FILE),
            &serde_json::to_vec(&head).unwrap_or_default(),
        )
    }
}

struct Writer {
    settings: AuditSettings,
    state: ChainState,
    pending: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    /// Polls the queue instead of blocking on it: a worker handing over a
    /// record then never has to wake this thread (a futex call and a
    /// context switch per request), and records are taken in groups.
    fn run(mut self, rx: Receiver<Entry>) {
        // Requests waiting for their record to be on disk.
        let mut waiting: Vec<oneshot::Sender<()>> = Vec::new();
        let mut last_sync = Instant::now();
        let mut last_retention: Option<Instant> = None;
        let mut dirty = false;
        loop {
            std::thread::sleep(POLL);
            let mut result = Ok(());
            let mut disconnected = false;
            loop {
                match rx.try_recv() {
                    Ok((record, ack)) => {
                        self.pending.fetch_sub(1, Ordering::Relaxed);
                        waiting.extend(ack);
                        if result.is_ok() {
                            result = self
                                .state
                                .open_segment(&self.settings)
                                .and_then(|()| self.state.append(&record));
                            dirty = true;
                            crate::metrics::audit_written();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        disconnected = true;
                        break;
                    }
                }
            }
            let due = match self.settings.fsync {
                Fsync::Always | Fsync::Never => dirty,
                Fsync::Batch => {
                    dirty && (last_sync.elapsed() >= self.settings.batch || disconnected)
                }
            };
            if result.is_ok() && due {
                result = self.state.sync(self.settings.fsync != Fsync::Never);
                last_sync = Instant::now();
                dirty = false;
            }
            if !dirty || result.is_err() {
                // Synced (or failed: the dropped senders tell the waiters).
                for ack in waiting.drain(..).filter(|_| result.is_ok()) {
                    let _ = ack.send(());
                }
            }
            self.set_health(result);
            if disconnected {
                let _ = self.state.sync(true);
                return;
            }
            if last_retention.is_none_or(|t| t.elapsed() >= RETENTION_EVERY) {
                last_retention = Some(Instant::now());
                if let Err(e) = apply_retention(
                    &self.settings.dir,
                    self.settings.retention,
                    self.state.segment,
                ) {
                    tracing::warn!(error = %e, "audit retention failed");
                }
            }
        }
    }

    fn set_health(&mut self, result: io::Result<()>) {
        match result {
            Ok(()) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("audit log writable again: accepting requests");
                }
            }
            Err(e) => {
                if self.healthy.swap(false, Ordering::Relaxed) {
                    tracing::error!(error = %e, "audit log cannot be written: refusing new requests (503) until it can");
                }
                crate::metrics::audit_write_error();
                // Start a fresh segment next time: the current one may
                // hold a partial line.
                self.state.file = None;
                self.state.bytes = u64::MAX;
            }
        }
    }
}

/// Deletes segments older than `retention` (never the current one), after
/// recording in the anchor where the kept chain starts.
pub fn apply_retention(dir: &Path, retention: Duration, current: u64) -> io::Result<usize> {
    let cutoff = SystemTime::now() - retention;
    let segments = list_segments(dir)?;
    let expired: Vec<_> = segments
        .iter()
        .filter(|(n, path)| {
            *n < current
                && std::fs::metadata(path)
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t < cutoff)
        })
        .collect();
    let Some(&&(last_expired, _)) = expired.last() else {
        return Ok(0);
    };
    let Some((first_kept, kept_path)) = segments.iter().find(|(n, _)| *n > last_expired) else {
        return Ok(0);
    };
    let mut first_line = String::new();
    BufReader::new(File::open(kept_path)?).read_line(&mut first_line)?;
    let prev = serde_json::from_str::<serde_json::Value>(&first_line)
        .ok()
        .and_then(|v| v.get("prev")?.as_str().map(str::to_owned))
        .ok_or_else(|| io::Error::other("kept segment has no chained first record"))?;
    let anchor = serde_json::json!({"segment": first_kept, "prev": prev, "written": crate::alerts::now_rfc3339()});
    write_atomically(
        &dir.join(ANCHOR_FILE),
        &serde_json::to_vec(&anchor).unwrap_or_default(),
    )?;
    // Oldest first, so a crash midway leaves a contiguous tail.
    let mut removed = 0;
    for (n, path) in segments.iter().filter(|(n, _)| *n <= last_expired) {
        std::fs::remove_file(path)?;
        tracing::info!(segment = n, "audit retention: segment deleted");
        removed += 1;
    }
    Ok(removed)
}

/// Segments in `dir`, in chain order.
pub fn list_segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((segment_number(e.file_name().to_str()?)?, e.path())))
        .collect();
    out.sort();
    Ok(out)
}

pub fn hash_hex(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
