//! The write guard: free space on the filesystems of `--data-dir`, and the
//! collector's answer to a full disk.
//!
//! # Contract
//! - The collector is **full** while the space available on any filesystem
//!   holding the data directory, the WAL or the log store is below
//!   `--min-free-disk`, or from the moment a write fails with `ENOSPC` or
//!   `EDQUOT` ([`Space::note_error`]). It is writable again once every one of
//!   them has the threshold plus a margin (a quarter of the threshold, at
//!   least 1 MiB) available, so it does not flap around the line.
//! - While full, new data is not taken: an agent's batch is held
//!   unacknowledged on its stream until space returns (the agent keeps
//!   buffering on its disk; nothing is dropped), remote write and pushes are
//!   answered 503 (retryable), each counted in
//!   `vigil_collector_disk_full_refusals_total{source}`. Queries, rules and
//!   the collector's own small writes (self-scrape, rule output, checkpoints)
//!   go on. `/-/ready` says so, `vigil_collector_disk_full` is 1, and the
//!   change is logged once each way.
//! - Writes resume by themselves: a monitor re-reads the free space every
//!   second ([`Space::run`]). Nothing acknowledged is lost meanwhile: what was
//!   acknowledged is in the WAL, and what was not is still at its sender.
//!
//! Not here: freeing space. Checkpoints delete WAL segments on their own
//! schedule, retention deletes old data, and the operator may add room.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

/// How often the monitor re-reads the free space.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why new data is refused: the disk is full.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("disk full: {reason}; new data is refused until space returns (queries are served)")]
pub struct DiskFull {
    pub reason: String,
}

/// Who was refused (a bounded label value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// An agent batch held unacknowledged.
    Agent,
    RemoteWrite,
    Otlp,
    LokiPush,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Agent => "agent",
            Source::RemoteWrite => "remote_write",
            Source::Otlp => "otlp",
            Source::LokiPush => "loki_push",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

/// The guard (cheap to share: `Arc`).
pub struct Space {
    dirs: Vec<PathBuf>,
    min_free: u64,
    resume_free: u64,
    /// `None` while writable.
    state: tokio::sync::watch::Sender<Option<DiskFull>>,
    free: AtomicU64,
    full_gauge: Gauge,
    free_gauge: Gauge,
    episodes: Counter,
    refusals: Family<SourceLabels, Counter>,
    since: AtomicI64,
    stop: CancellationToken,
}

impl Space {
    /// A guard over the filesystems holding `dirs` (existing directories),
    /// refusing below `min_free` available bytes (0: only after a write
    /// failed for lack of space). `stop` ends every wait (shutdown).
    pub fn new(dirs: Vec<PathBuf>, min_free: u64, stop: CancellationToken) -> Arc<Space> {
        let (state, _) = tokio::sync::watch::channel(None);
        let s = Arc::new(Space {
            dirs,
            min_free,
            resume_free: min_free + (min_free / 4).max(1 << 20),
            state,
            free: AtomicU64::new(u64::MAX),
            full_gauge: Gauge::default(),
            free_gauge: Gauge::default(),
            episodes: Counter::default(),
            refusals: Family::default(),
            since: AtomicI64::new(0),
            stop,
        });
        s.check();
        s
    }

    pub fn register(&self, r: &mut Registry) {
        r.register(
            "vigil_collector_disk_full",
            "1 while new data is refused because the data directory's disk is full (below min_free_disk)",
            self.full_gauge.clone(),
        );
        r.register(
            "vigil_collector_disk_available_bytes",
            "Bytes available on the fullest filesystem of the data directory",
            self.free_gauge.clone(),
        );
        r.register(
            "vigil_collector_disk_full_episodes",
            "Times the collector stopped taking new data for lack of disk space",
            self.episodes.clone(),
        );
        r.register(
            "vigil_collector_disk_full_refusals",
            "Writes refused (503) or agent batches held unacknowledged because the disk is full, by source",
            self.refusals.clone(),
        );
    }

    /// The threshold (`--min-free-disk`).
    pub fn min_free(&self) -> u64 {
        self.min_free
    }

    /// Why new data is refused now, or `None` when it is taken.
    pub fn full(&self) -> Option<DiskFull> {
        self.state.borrow().clone()
    }

    /// [`Self::full`], counting the refusal against `source`.
    pub fn refuse(&self, source: Source) -> Option<DiskFull> {
        let full = self.full()?;
        self.count(source);
        Some(full)
    }

    /// Counts one refusal of `source`.
    pub fn count(&self, source: Source) {
        self.refusals
            .get_or_create(&SourceLabels {
                source: source.as_str().into(),
            })
            .inc();
    }

    /// Bytes available on the fullest filesystem at the last check.
    pub fn available(&self) -> u64 {
        self.free.load(Ordering::Relaxed)
    }

    /// Looks at an I/O error of a write: when it says the disk is full, the
    /// guard becomes full at once (whatever the free space looks like: a
    /// large write may not fit in what is left). Returns whether it did.
    pub fn note_error(&self, e: &std::io::Error) -> bool {
        if !vigil_common::disk::is_full(e) {
            return false;
        }
        self.set_full(DiskFull {
            reason: format!("a write failed: {e}"),
        });
        true
    }

    /// Re-reads the free space and updates the state.
    pub fn check(&self) {
        let mut fullest: Option<(u64, &Path)> = None;
        for d in &self.dirs {
            match vigil_common::disk::space(d) {
                Ok(s) => {
                    if fullest.is_none_or(|(f, _)| s.available < f) {
                        fullest = Some((s.available, d));
                    }
                }
                Err(e) => tracing::debug!(dir = %d.display(), error = %e, "statvfs failed"),
            }
        }
        let Some((free, dir)) = fullest else { return };
        self.free.store(free, Ordering::Relaxed);
        self.free_gauge.set(free.min(i64::MAX as u64) as i64);
        let full = self.state.borrow().is_some();
        if !full && free < self.min_free {
            self.set_full(DiskFull {
                reason: format!(
                    "{free} bytes available on {}, below min_free_disk ({})",
                    dir.display(),
                    self.min_free
                ),
            });
        } else if full && free >= self.resume_free {
            let secs = (now_s() - self.since.load(Ordering::Relaxed)).max(0);
            self.state.send_replace(None);
            self.full_gauge.set(0);
            tracing::warn!(
                available_bytes = free,
                full_for_seconds = secs,
                "disk space is back: taking new data again"
            );
        }
    }

    fn set_full(&self, why: DiskFull) {
        let was = self.state.send_replace(Some(why.clone()));
        if was.is_none() {
            self.episodes.inc();
            self.full_gauge.set(1);
            self.since.store(now_s(), Ordering::Relaxed);
            tracing::error!(
                reason = %why.reason,
                min_free_disk = self.min_free,
                "disk full: not taking new data (agents keep buffering, remote write and pushes get 503); queries are served"
            );
        }
    }

    /// Waits until new data is taken again; `Err` when the collector stops
    /// first.
    pub async fn wait_writable(&self) -> Result<(), DiskFull> {
        let mut rx = self.state.subscribe();
        loop {
            let now = rx.borrow_and_update().clone();
            let Some(full) = now else { return Ok(()) };
            tokio::select! {
                _ = self.stop.cancelled() => return Err(full),
                r = rx.changed() => if r.is_err() { return Err(full) },
            }
        }
    }

    /// The monitor: re-reads the free space every [`CHECK_EVERY`] until
    /// `stop`.
    pub async fn run(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CHECK_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let me = self.clone();
            let _ = tokio::task::spawn_blocking(move || me.check()).await;
        }
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_threshold_above_the_free_space_refuses_and_an_error_refuses_at_once() {
        let d = tempfile::tempdir().unwrap();
        let free = vigil_common::disk::space(d.path()).unwrap().available;
        let stop = CancellationToken::new();
        // far above what any disk here has: full from the first check
        let s = Space::new(vec![d.path().into()], free.saturating_mul(4), stop.clone());
        let why = s.refuse(Source::RemoteWrite).expect("full");
        assert!(why.to_string().contains("below min_free_disk"), "{why}");
        assert_eq!(s.full_gauge.get(), 1);
        assert_eq!(s.episodes.get(), 1);
        // the wait ends with the collector
        stop.cancel();
        assert!(s.wait_writable().await.is_err());

        // no threshold: writable until a write fails for lack of space
        let s = Space::new(vec![d.path().into()], 0, CancellationToken::new());
        assert!(s.full().is_none());
        assert!(!s.note_error(&std::io::Error::from_raw_os_error(5)));
        assert!(s.full().is_none());
        assert!(s.note_error(&std::io::Error::from_raw_os_error(28)));
        assert!(s.full().is_some());
        // the free space is back (this disk has more than 1 MiB): resumes
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.wait_writable().await })
        };
        s.check();
        assert!(s.full().is_none());
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(s.full_gauge.get(), 0);
    }
}
