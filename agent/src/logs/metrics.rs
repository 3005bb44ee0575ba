//! Counters of the tailer, shared with whoever renders metrics: the
//! log-derived families (`vigil_log_lines_total`, `vigil_log_bytes_total` by
//! container, stream and level) and the tailer's own `vigil_agent_log_*`.
//! The tailer counts per source in plain integers and merges them here once
//! per read step, so the hot loop takes no lock per line.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::discovery::Identity;
use super::level::{LEVELS, Level};
use super::parse::Stream;
use crate::model::{MetricFamily, MetricKind, Scrape};

/// Series of containers that wrote nothing for this long are dropped.
const IDLE_SERIES: Duration = Duration::from_secs(3600);

/// Lines and bytes per stream and level, as one source counts them.
#[derive(Clone, Debug, Default)]
pub struct LineCounts {
    /// `[stream][level]` → (lines, message bytes)
    pub by: [[(u64, u64); LEVELS.len()]; 2],
}

impl LineCounts {
    pub fn add(&mut self, stream: Stream, level: Level, bytes: usize) {
        let c = &mut self.by[stream.index()][level.index()];
        c.0 += 1;
        c.1 += bytes as u64;
    }

    pub fn is_zero(&self) -> bool {
        self.by.iter().flatten().all(|c| c.0 == 0)
    }
}

/// How a file stopped being the live file at its path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RotationKind {
    /// Renamed away (and usually replaced): read on through the open handle.
    Rename,
    /// Truncated in place; the part not yet read was found in a copy.
    CopyTruncate,
    /// Truncated in place (or its inode reused); nothing to recover.
    Truncate,
    /// Removed: read on to the end, then released.
    Delete,
    /// A rotated file we never had open (rotated twice between reads, or
    /// while the agent was down): read from its start.
    Missed,
}

const ROTATION_KINDS: [(RotationKind, &str); 5] = [
    (RotationKind::Rename, "rename"),
    (RotationKind::CopyTruncate, "copytruncate"),
    (RotationKind::Truncate, "truncate"),
    (RotationKind::Delete, "delete"),
    (RotationKind::Missed, "missed"),
];

/// The tailer's counters. Cheap to clone a handle ([`Arc`]).
#[derive(Debug, Default)]
pub struct LogMetrics {
    lines: Mutex<HashMap<Arc<Identity>, (LineCounts, Instant)>>,
    pub files_open: AtomicI64,
    pub files_waiting: AtomicI64,
    pub read_bytes: AtomicU64,
    pub truncated_lines: AtomicU64,
    pub invalid_utf8_lines: AtomicU64,
    pub garbage_lines: AtomicU64,
    pub forced_partials: AtomicU64,
    pub read_errors: AtomicU64,
    pub lost_files: AtomicU64,
    rotations: [AtomicU64; ROTATION_KINDS.len()],
    pub checkpoint_writes: AtomicU64,
    pub checkpoint_errors: AtomicU64,
    pub unacked_bytes: AtomicI64,
    /// 1 while inotify is unavailable and only polling finds changes.
    pub watch_fallback: AtomicI64,
}

impl LogMetrics {
    pub fn rotation(&self, kind: RotationKind) {
        if let Some(i) = ROTATION_KINDS.iter().position(|(k, _)| *k == kind) {
            self.rotations[i].fetch_add(1, Relaxed);
        }
    }

    pub fn rotations(&self, kind: RotationKind) -> u64 {
        ROTATION_KINDS
            .iter()
            .position(|(k, _)| *k == kind)
            .map_or(0, |i| self.rotations[i].load(Relaxed))
    }

    /// Merges one source's counts.
    pub fn add_lines(&self, identity: &Arc<Identity>, counts: &LineCounts) {
        if counts.is_zero() {
            return;
        }
        let mut m = self.lines.lock();
        let e = m
            .entry(identity.clone())
            .or_insert_with(|| (LineCounts::default(), Instant::now()));
        for (s, row) in counts.by.iter().enumerate() {
            for (l, c) in row.iter().enumerate() {
                e.0.by[s][l].0 += c.0;
                e.0.by[s][l].1 += c.1;
            }
        }
        e.1 = Instant::now();
    }

    /// Total lines counted so far for a container identity and stream.
    pub fn lines_of(&self, identity: &Identity, stream: Stream) -> u64 {
        self.lines
            .lock()
            .get(identity)
            .map_or(0, |(c, _)| c.by[stream.index()].iter().map(|x| x.0).sum())
    }

    /// Adds every family to a scrape (`node` is added by whoever encodes it).
    pub fn collect_into(&self, scrape: &mut Scrape) {
        let mut lines = MetricFamily::new(
            "vigil_log_lines_total",
            "Log lines read from container logs, by container, stream and the level the line states.",
            MetricKind::Counter,
        );
        let mut bytes = MetricFamily::new(
            "vigil_log_bytes_total",
            "Bytes of log messages read from container logs, by container, stream and level.",
            MetricKind::Counter,
        );
        {
            let mut m = self.lines.lock();
            m.retain(|_, (_, at)| at.elapsed() < IDLE_SERIES);
            let mut ids: Vec<_> = m.iter().collect();
            ids.sort_by(|a, b| a.0.cmp(b.0));
            for (id, (counts, _)) in ids {
                for stream in [Stream::Stdout, Stream::Stderr] {
                    for level in LEVELS {
                        let (n, b) = counts.by[stream.index()][level.index()];
                        if n == 0 {
                            continue;
                        }
                        let labels = || {
                            id.pairs()
                                .into_iter()
                                .map(|(k, v)| (k.to_string(), v.to_string()))
                                .chain([
                                    ("stream".to_string(), stream.as_str().to_string()),
                                    ("level".to_string(), level.as_str().to_string()),
                                ])
                                .collect::<Vec<_>>()
                        };
                        lines.push(labels(), n as f64);
                        bytes.push(labels(), b as f64);
                    }
                }
            }
        }
        scrape.families.push(lines);
        scrape.families.push(bytes);

        let mut gauge = |name: &str, help: &str, v: i64| {
            let mut f = MetricFamily::new(name, help, MetricKind::Gauge);
            f.push(Vec::<(String, String)>::new(), v as f64);
            scrape.families.push(f);
        };
        gauge(
            "vigil_agent_log_files_open",
            "Log files the tailer holds open.",
            self.files_open.load(Relaxed),
        );
        gauge(
            "vigil_agent_log_files_waiting",
            "Log files with unread data waiting for an open-file slot (see max_open_files).",
            self.files_waiting.load(Relaxed),
        );
        gauge(
            "vigil_agent_log_unacked_bytes",
            "Bytes read and handed to the shipper that the collector has not acknowledged yet.",
            self.unacked_bytes.load(Relaxed),
        );
        gauge(
            "vigil_agent_log_watch_fallback",
            "1 when inotify is unavailable and changes are found by polling only.",
            self.watch_fallback.load(Relaxed),
        );
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let mut f = MetricFamily::new(name, help, MetricKind::Counter);
            f.push(Vec::<(String, String)>::new(), v.load(Relaxed) as f64);
            scrape.families.push(f);
        };
        counter(
            "vigil_agent_log_read_bytes_total",
            "Bytes read from log files.",
            &self.read_bytes,
        );
        counter(
            "vigil_agent_log_truncated_lines_total",
            "Log lines cut at max_line_bytes (the kept part ends with a marker).",
            &self.truncated_lines,
        );
        counter(
            "vigil_agent_log_invalid_utf8_lines_total",
            "Log lines that were not valid UTF-8 (kept with replacement characters).",
            &self.invalid_utf8_lines,
        );
        counter(
            "vigil_agent_log_garbage_lines_total",
            "Raw lines that did not decode in their file's format (skipped).",
            &self.garbage_lines,
        );
        counter(
            "vigil_agent_log_forced_partials_total",
            "Partial messages handed over unfinished because too much was held behind them.",
            &self.forced_partials,
        );
        counter(
            "vigil_agent_log_read_errors_total",
            "Errors reading log files.",
            &self.read_errors,
        );
        counter(
            "vigil_agent_log_lost_files_total",
            "Checkpointed files that were gone (with unread data) when looked for.",
            &self.lost_files,
        );
        counter(
            "vigil_agent_log_checkpoint_writes_total",
            "Checkpoint file writes.",
            &self.checkpoint_writes,
        );
        counter(
            "vigil_agent_log_checkpoint_errors_total",
            "Checkpoint file writes that failed.",
            &self.checkpoint_errors,
        );
        let mut rot = MetricFamily::new(
            "vigil_agent_log_rotations_total",
            "Log file rotations seen, by kind.",
            MetricKind::Counter,
        );
        for (i, (_, name)) in ROTATION_KINDS.iter().enumerate() {
            rot.push([("kind", *name)], self.rotations[i].load(Relaxed) as f64);
        }
        scrape.families.push(rot);
    }
}
