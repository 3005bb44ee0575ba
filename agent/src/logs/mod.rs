//! Container logs: discovering, tailing and parsing log files, handing each
//! record to the shipper once, and advancing read positions only when the
//! collector has acknowledged durable storage. Not here: batching on disk and
//! the gRPC stream (`ship`), storing and querying logs (the collector).
//!
//! # Layout
//! - [`discovery`]: which files (Kubernetes, Docker, Podman layouts, globs,
//!   excludes) and their container identity labels;
//! - [`parse`]: one raw line → a piece (CRI, Docker json-file, plain);
//! - [`assemble`]: pieces → records, with offsets safe to resume from;
//! - [`identity`]: device + inode + head fingerprint;
//! - [`source`]: one file being read; [`tail`]: all of them, rotation;
//! - [`checkpoint`]: acknowledged positions in `<state-dir>/logs/`;
//! - [`level`], [`metrics`]: log-derived metrics and self-metrics.
//!
//! # Wiring (for `run.rs`)
//! ```ignore
//! let tailer = logs::Tailer::new(&config.logs, &config.host_root, &config.state_dir)?;
//! let log_metrics = tailer.metrics();          // Arc<LogMetrics>, clone freely
//! let tx = ship_handle.log_sender();           // bounded Sender<Vec<LogRecord>>
//! let acks = ship_handle.take_log_acks();      // UnboundedReceiver<Vec<LogAck>>
//! tokio::spawn(tailer.run(tx, acks, shutdown.clone()));
//! // each scrape (and the agent's /metrics): log_metrics.collect_into(&mut scrape);
//! ```
//! `run` returns when `shutdown` is cancelled or the sender is closed, after
//! applying the acks already received and writing the checkpoints; the
//! shipper should deliver its final acks before dropping the ack sender.
//!
//! # Delivery
//! `LogRecord::offset` is the byte offset in the source file where a record
//! starts (unique per `SourceKey`: the collector deduplicates on
//! `(source, offset)`); `end_offset` is where reading resumes once the entry
//! is stored (the record's end, except while a partial message of the other
//! stream is open, see [`assemble`]); within one source, entries are handed
//! over with strictly increasing `offset` and increasing `end_offset`, so the
//! highest acknowledged `end_offset` is an exact prefix. After a crash the
//! tailer re-reads from the last acknowledged (and saved) position: repeats
//! carry the same `(source, offset)` as before.

pub mod assemble;
pub mod checkpoint;
pub mod discovery;
pub mod identity;
pub mod level;
pub mod metrics;
pub mod parse;
pub mod source;
pub mod tail;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::LogsConfig;
use crate::ship::{LogAck, LogRecord};
pub use metrics::LogMetrics;

/// How often files are re-read when nothing signals a change and some log
/// folder is not watched (inotify is a hint; this is the floor).
pub const POLL: Duration = Duration::from_millis(250);
/// The same while every log folder is watched: inotify reports writes,
/// creations and renames at once, so the poll is only the safety net (and
/// the clock for rotated files' linger and held partial lines). An idle
/// agent wakes once a second instead of four times.
pub const POLL_WATCHED: Duration = Duration::from_millis(1000);
/// With no inotify at all, poll faster.
const POLL_NO_WATCH: Duration = Duration::from_millis(100);
/// Most folders watched (each costs an inotify watch).
const MAX_WATCHES: usize = 8192;

/// Errors starting the tailer.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    #[error(transparent)]
    Discovery(#[from] discovery::DiscoveryError),
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("log tailer task failed: {0}")]
    Task(String),
}

/// The log tailer: build with [`Tailer::new`], start with [`Tailer::run`].
pub struct Tailer {
    core: tail::Core,
    metrics: Arc<LogMetrics>,
}

impl Tailer {
    /// Loads the checkpoints from `<state_dir>/logs/` (a corrupt file is set
    /// aside as `checkpoints.json.corrupt` and every file is read from its
    /// start: the collector drops what it already has).
    pub fn new(cfg: &LogsConfig, host_root: &Path, state_dir: &Path) -> Result<Self, LogsError> {
        let discovery =
            discovery::Discovery::new(host_root, &cfg.paths, &cfg.excludes, cfg.default_paths)?;
        let (ckpt, first_start) = match checkpoint::Checkpoints::load(state_dir) {
            Ok(c) => c,
            Err(e @ checkpoint::CheckpointError::Parse { .. }) => {
                let path = state_dir.join("logs/checkpoints.json");
                tracing::error!(error = %e, "log checkpoints unreadable; setting them aside and reading every file from its start");
                let _ = std::fs::rename(&path, path.with_extension("json.corrupt"));
                let (c, _) = checkpoint::Checkpoints::load(state_dir)?;
                (c, false)
            }
            Err(e) => return Err(e.into()),
        };
        let metrics = Arc::new(LogMetrics::default());
        let opts = tail::Opts {
            max_line_bytes: cfg.max_line_bytes.max(1),
            max_open_files: cfg.max_open_files.max(1),
            read_from_start: cfg.read_from_start,
        };
        Ok(Tailer {
            core: tail::Core::new(opts, discovery, ckpt, first_start, metrics.clone()),
            metrics,
        })
    }

    /// The shared counters (log-derived families and `vigil_agent_log_*`).
    pub fn metrics(&self) -> Arc<LogMetrics> {
        self.metrics.clone()
    }

    /// Tails until `shutdown`: reads on a blocking thread, one bounded step at
    /// a time, hands batches to `tx` (waiting for room), and applies `acks`.
    pub async fn run(
        self,
        tx: mpsc::Sender<Vec<LogRecord>>,
        mut acks: mpsc::UnboundedReceiver<Vec<LogAck>>,
        shutdown: CancellationToken,
    ) -> Result<(), LogsError> {
        let Tailer { mut core, metrics } = self;
        let mut watch = Watch::new();
        metrics
            .watch_fallback
            .store(i64::from(watch.is_none()), Relaxed);
        let mut acks_open = true;
        let mut woken = true;
        let result = 'outer: loop {
            if shutdown.is_cancelled() {
                break Ok(());
            }
            while let Ok(a) = acks.try_recv() {
                core.apply_acks(a);
            }
            let w = woken;
            let (c, out) = match tokio::task::spawn_blocking(move || {
                let out = core.step(w);
                (core, out)
            })
            .await
            {
                Ok(r) => r,
                Err(e) => return Err(LogsError::Task(e.to_string())),
            };
            core = c;
            if let Some(w) = watch.as_mut() {
                w.add_dirs(&out.dirs);
            }
            for batch in out.batches {
                loop {
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break 'outer Ok(()),
                        permit = tx.reserve() => match permit {
                            Ok(p) => { p.send(batch); break; }
                            Err(_) => break 'outer Ok(()),
                        },
                        a = acks.recv(), if acks_open => match a {
                            Some(a) => core.apply_acks(a),
                            None => acks_open = false,
                        },
                    }
                }
            }
            woken = false;
            // Under a steady stream the loop never waits on inotify: take the
            // events already queued, so files created, renamed or removed
            // are looked at by the next step and not a whole rescan period
            // later (kubelet and logrotate can rotate, compress and delete
            // a file within a second).
            if !out.idle && watch.as_mut().is_some_and(Watch::ready) {
                core.hint_rescan();
            }
            if out.idle {
                let poll = match &watch {
                    Some(w) if !w.full => POLL_WATCHED,
                    Some(_) => POLL,
                    None => POLL_NO_WATCH,
                };
                let sleep = tokio::time::sleep(poll);
                tokio::pin!(sleep);
                loop {
                    tokio::select! {
                        _ = shutdown.cancelled() => break 'outer Ok(()),
                        a = acks.recv(), if acks_open => match a {
                            Some(a) => { core.apply_acks(a); continue; }
                            None => { acks_open = false; continue; }
                        },
                        rescan = wait_watch(&mut watch) => {
                            if rescan { core.hint_rescan(); }
                        },
                        _ = &mut sleep => {},
                    }
                    break;
                }
                woken = true;
            }
        };
        while let Ok(a) = acks.try_recv() {
            core.apply_acks(a);
        }
        let _ = tokio::task::spawn_blocking(move || core.maybe_save(true)).await;
        result
    }
}

/// Waits for inotify events (forever without inotify); true when a folder
/// changed (files created, moved, removed) so the next step rescans.
async fn wait_watch(watch: &mut Option<Watch>) -> bool {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// inotify on the folders that hold log files: a wake-up hint only (events
/// can be missed or overflow; polling finds everything anyway).
struct Watch {
    stream: inotify::EventStream<Vec<u8>>,
    watches: inotify::Watches,
    dirs: std::collections::HashSet<PathBuf>,
    full: bool,
}

impl Watch {
    fn new() -> Option<Self> {
        let ino = match inotify::Inotify::init() {
            Ok(i) => i,
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; polling log files");
                return None;
            }
        };
        let stream = match ino.into_event_stream(vec![0u8; 64 << 10]) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; polling log files");
                return None;
            }
        };
        let watches = stream.watches();
        Some(Watch {
            stream,
            watches,
            dirs: Default::default(),
            full: false,
        })
    }

    fn add_dirs(&mut self, dirs: &[PathBuf]) {
        use inotify::WatchMask as M;
        for d in dirs {
            if self.full || self.dirs.contains(d) {
                continue;
            }
            if self.dirs.len() >= MAX_WATCHES {
                self.full = true;
                tracing::info!(
                    "more than {MAX_WATCHES} log folders; the rest are found by polling"
                );
                continue;
            }
            let mask = M::MODIFY
                | M::CREATE
                | M::MOVED_FROM
                | M::MOVED_TO
                | M::DELETE
                | M::CLOSE_WRITE
                | M::DELETE_SELF
                | M::ONLYDIR;
            match self.watches.add(d, mask) {
                Ok(_) => {
                    self.dirs.insert(d.clone());
                }
                Err(e) => {
                    // ENOSPC (max_user_watches) and the like: polling covers it.
                    tracing::debug!(dir = %d.display(), error = %e, "cannot watch log folder");
                    self.full = e.raw_os_error() == Some(libc::ENOSPC);
                }
            }
        }
    }

    /// Next batch of events; true if any changed a folder's entries.
    async fn next(&mut self) -> bool {
        let first = self.stream.next().await;
        let failed = !matches!(first, Some(Ok(_)));
        let mut rescan = self.take(first);
        rescan |= self.ready();
        if failed {
            // A broken stream would wake us in a loop: fall back to polling.
            tokio::time::sleep(POLL).await;
        }
        rescan
    }

    /// The events already queued (a bounded number), without waiting; true
    /// if any changed a folder's entries.
    fn ready(&mut self) -> bool {
        let mut rescan = false;
        for _ in 0..4096 {
            match self.stream.next().now_or_never() {
                Some(ev) => rescan |= self.take(ev),
                None => break,
            }
        }
        rescan
    }

    /// One event (or the end or an error of the stream): whether it calls
    /// for a rescan.
    fn take(&mut self, ev: Option<std::io::Result<inotify::Event<std::ffi::OsString>>>) -> bool {
        use inotify::EventMask as E;
        let structural = E::CREATE
            | E::MOVED_FROM
            | E::MOVED_TO
            | E::DELETE
            | E::DELETE_SELF
            | E::Q_OVERFLOW
            | E::IGNORED;
        match ev {
            Some(Ok(ev)) => {
                if ev.mask.contains(E::IGNORED) {
                    // The folder is gone; forget it so it can be watched again.
                    self.dirs.clear();
                }
                ev.mask.intersects(structural)
            }
            Some(Err(_)) | None => true,
        }
    }
}
