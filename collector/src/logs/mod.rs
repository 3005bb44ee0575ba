//! The log store: log records as ingest resolved them, grouped into streams
//! (one per label set), held in zstd-compressed chunks in segment files under
//! `<data_dir>/logs/`, with an in-memory index from stream labels to chunks.
//! Not here: the query language ([`logql`]) and the HTTP API
//! (`http::loki`).
//!
//! # Durability
//! Records reach the store only after the WAL made them durable, and WAL
//! replay re-delivers them after a crash. [`LogStore::checkpoint`] (called
//! before WAL segments are deleted) seals every open chunk and fsyncs the
//! segment, so nothing leaves the WAL before it is on disk here. A torn tail
//! of a segment (a crash mid-write) is cut at start.
//!
//! # Exactly once
//! Within one source file and one output stream (stdout/stderr), the agent
//! sends records with strictly increasing offsets, and a stream's chunks are
//! written in order; so the highest offset stored per (source, stream) is an
//! exact watermark: a record at or below it is a repeat (agent
//! retransmission or WAL replay) and is dropped and counted.
//!
//! # Retention
//! Whole segments go when their newest record is older than the retention, or
//! (oldest first) while the store holds more than its byte budget.

pub mod logql;
mod segment;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use vigil_common::Labels;

use crate::ingest::{IngestedLog, LogSink};
use crate::store::Matcher;
use segment::{ChunkRecord, SegmentSet};

/// Settings of a [`LogStore`].
#[derive(Clone, Debug)]
pub struct LogStoreOptions {
    /// Records older than this (by their timestamp) are deleted.
    pub retention: std::time::Duration,
    /// Most bytes of segment files kept; the oldest segments go first.
    pub max_bytes: u64,
    /// An open chunk is sealed once its lines hold this many bytes.
    pub chunk_bytes: usize,
    /// A segment file is closed once it holds this many bytes.
    pub segment_bytes: u64,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions {
            retention: std::time::Duration::from_secs(24 * 3600),
            max_bytes: 1 << 30,
            chunk_bytes: 256 << 10,
            segment_bytes: 64 << 20,
        }
    }
}

/// One stored record.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub timestamp_ns: i64,
    pub line: String,
}

/// Where a sealed chunk lives and what it covers.
#[derive(Clone, Debug)]
pub(crate) struct ChunkRef {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
    pub min_ts: i64,
    pub max_ts: i64,
}

/// The open chunk of a stream.
#[derive(Default)]
struct Head {
    entries: Vec<(i64, u64, u64, String)>,
    bytes: usize,
}

struct Stream {
    labels: Arc<Labels>,
    chunks: Vec<ChunkRef>,
    head: Head,
}

#[derive(Default)]
struct Inner {
    streams: HashMap<u64, Stream>,
    /// (source id, stream hash) → highest offset stored.
    watermarks: HashMap<(u64, u64), u64>,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct LogStats {
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub duplicates: AtomicU64,
    pub retention_deleted_segments: AtomicU64,
    pub write_errors: AtomicU64,
}

/// The durable log store. Cheap to share (`Arc`).
pub struct LogStore {
    opts: LogStoreOptions,
    inner: RwLock<Inner>,
    segments: Mutex<SegmentSet>,
    pub stats: LogStats,
    dir: PathBuf,
}

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
#[error("log store {path}: {source}")]
pub struct OpenError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn stream_hash(l: &Labels) -> u64 {
    l.stable_hash()
}

impl LogStore {
    /// Opens (or creates) the store in `dir`, reading every segment back
    /// into the index; torn tails are cut.
    pub fn open(dir: &Path, opts: LogStoreOptions) -> Result<Arc<Self>, OpenError> {
        let err = |source| OpenError {
            path: dir.to_path_buf(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(err)?;
        let mut inner = Inner::default();
        let segments = SegmentSet::open(dir, opts.segment_bytes, |seg, off, len, rec| {
            let h = stream_hash(&rec.labels);
            let s = inner.streams.entry(h).or_insert_with(|| Stream {
                labels: Arc::new(rec.labels.clone()),
                chunks: Vec::new(),
                head: Head::default(),
            });
            s.chunks.push(ChunkRef {
                segment: seg,
                offset: off,
                len,
                min_ts: rec.min_ts,
                max_ts: rec.max_ts,
            });
            for (src, mark) in &rec.sources {
                let w = inner.watermarks.entry((*src, h)).or_insert(0);
                *w = (*w).max(*mark);
            }
        })
        .map_err(err)?;
        for s in inner.streams.values_mut() {
            s.chunks.sort_by_key(|c| (c.min_ts, c.segment, c.offset));
        }
        let st = Arc::new(LogStore {
            opts,
            inner: RwLock::new(inner),
            segments: Mutex::new(segments),
            stats: LogStats::default(),
            dir: dir.to_path_buf(),
        });
        Ok(st)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Streams held now.
    pub fn stream_count(&self) -> usize {
        self.inner.read().streams.len()
    }

    /// Bytes of segment files on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.lock().total_bytes()
    }

    /// Appends records, dropping repeats; returns how many were new.
    fn append_inner(&self, logs: &[IngestedLog]) -> usize {
        let mut new = 0;
        let mut seal = Vec::new();
        {
            let mut g = self.inner.write();
            let inner = &mut *g;
            for l in logs {
                let h = stream_hash(&l.stream);
                // the watermark is one past the highest offset stored
                let w = inner.watermarks.entry((l.source_id, h)).or_insert(0);
                if l.offset < *w {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                *w = l.offset + 1;
                let s = inner.streams.entry(h).or_insert_with(|| Stream {
                    labels: Arc::new(l.stream.clone()),
                    chunks: Vec::new(),
                    head: Head::default(),
                });
                s.head.bytes += l.line.len() + 24;
                s.head
                    .entries
                    .push((l.timestamp_ns, l.source_id, l.offset, l.line.clone()));
                new += 1;
                self.stats.records.fetch_add(1, Ordering::Relaxed);
                self.stats
                    .bytes
                    .fetch_add(l.line.len() as u64, Ordering::Relaxed);
                if s.head.bytes >= self.opts.chunk_bytes {
                    seal.push(h);
                }
            }
        }
        for h in seal {
            if let Err(e) = self.seal(h) {
                self.stats.write_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "log store: sealing a chunk failed; the WAL keeps the records");
            }
        }
        new
    }

    /// Writes stream `h`'s open chunk to the current segment.
    fn seal(&self, h: u64) -> io::Result<()> {
        // the segment lock first, then the index: seals of one stream are
        // written in order
        let mut segs = self.segments.lock();
        let (labels, entries) = {
            let mut g = self.inner.write();
            let Some(s) = g.streams.get_mut(&h) else {
                return Ok(());
            };
            if s.head.entries.is_empty() {
                return Ok(());
            }
            let head = std::mem::take(&mut s.head);
            (s.labels.clone(), head.entries)
        };
        let rec = ChunkRecord::from_entries(&labels, &entries);
        let (segment, offset, len) = match segs.write(&rec) {
            Ok(w) => w,
            Err(e) => {
                // the lines go back in front of the open chunk, so a later
                // seal (or the checkpoint's flush) writes them: a full disk
                // must not lose what the WAL acknowledged
                let mut g = self.inner.write();
                if let Some(s) = g.streams.get_mut(&h) {
                    let later = std::mem::take(&mut s.head.entries);
                    s.head.bytes += entries.iter().map(|e| e.3.len() + 24).sum::<usize>();
                    s.head.entries = entries;
                    s.head.entries.extend(later);
                }
                return Err(e);
            }
        };
        let mut g = self.inner.write();
        if let Some(s) = g.streams.get_mut(&h) {
            s.chunks.push(ChunkRef {
                segment,
                offset,
                len,
                min_ts: rec.min_ts,
                max_ts: rec.max_ts,
            });
        }
        Ok(())
    }

    /// Seals every open chunk and fsyncs the segment files.
    pub fn flush(&self) -> io::Result<()> {
        let open: Vec<u64> = self
            .inner
            .read()
            .streams
            .iter()
            .filter(|(_, s)| !s.head.entries.is_empty())
            .map(|(h, _)| *h)
            .collect();
        for h in open {
            self.seal(h)?;
        }
        self.segments.lock().sync()
    }

    /// Applies retention by age (relative to `now_ns`) and by bytes.
    pub fn trim(&self, now_ns: i64) {
        let cutoff = now_ns - self.opts.retention.as_nanos() as i64;
        let removed = {
            let mut segs = self.segments.lock();
            segs.remove_old(cutoff, self.opts.max_bytes)
        };
        if removed.is_empty() {
            return;
        }
        self.stats
            .retention_deleted_segments
            .fetch_add(removed.len() as u64, Ordering::Relaxed);
        let mut g = self.inner.write();
        g.streams.retain(|_, s| {
            s.chunks.retain(|c| !removed.contains(&c.segment));
            !s.chunks.is_empty() || !s.head.entries.is_empty()
        });
        let live: std::collections::HashSet<u64> = g.streams.keys().copied().collect();
        g.watermarks.retain(|(_, h), _| live.contains(h));
    }

    /// Streams whose labels match all `matchers`.
    pub fn matching_streams(&self, matchers: &[Matcher]) -> Vec<(u64, Arc<Labels>)> {
        self.inner
            .read()
            .streams
            .iter()
            .filter(|(_, s)| matchers.iter().all(|m| m.matches_labels(&s.labels)))
            .map(|(h, s)| (*h, s.labels.clone()))
            .collect()
    }

    /// Calls `f` with every entry of stream `h` in `[start_ns, end_ns)`, in
    /// timestamp order per chunk (chunks in order of their first entry),
    /// until `f` breaks.
    pub fn scan(
        &self,
        h: u64,
        start_ns: i64,
        end_ns: i64,
        f: &mut dyn FnMut(i64, &str) -> std::ops::ControlFlow<()>,
    ) -> io::Result<()> {
        let (chunks, head) = {
            let g = self.inner.read();
            let Some(s) = g.streams.get(&h) else {
                return Ok(());
            };
            let chunks: Vec<ChunkRef> = s
                .chunks
                .iter()
                .filter(|c| c.max_ts >= start_ns && c.min_ts < end_ns)
                .cloned()
                .collect();
            let head: Vec<(i64, String)> = s
                .head
                .entries
                .iter()
                .filter(|e| e.0 >= start_ns && e.0 < end_ns)
                .map(|e| (e.0, e.3.clone()))
                .collect();
            (chunks, head)
        };
        for c in chunks {
            let rec = {
                let segs = self.segments.lock();
                segs.read(c.segment, c.offset, c.len)
            };
            let rec = match rec {
                Ok(r) => r,
                // retention removed it meanwhile
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in &rec.entries {
                if e.timestamp_ns >= start_ns
                    && e.timestamp_ns < end_ns
                    && f(e.timestamp_ns, &e.line).is_break()
                {
                    return Ok(());
                }
            }
        }
        for (t, l) in &head {
            if f(*t, l).is_break() {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Label names of streams with data in `[start_ns, end_ns)`.
    pub fn label_names(&self, start_ns: i64, end_ns: i64) -> Vec<String> {
        let mut out = std::collections::BTreeSet::new();
        for s in self.inner.read().streams.values() {
            if stream_overlaps(s, start_ns, end_ns) {
                for (k, _) in s.labels.iter() {
                    out.insert(k.to_string());
                }
            }
        }
        out.into_iter().collect()
    }

    /// Values of `name` in streams matching `matchers` with data in range.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        start_ns: i64,
        end_ns: i64,
    ) -> Vec<String> {
        let mut out = std::collections::BTreeSet::new();
        for s in self.inner.read().streams.values() {
            if stream_overlaps(s, start_ns, end_ns)
                && matchers.iter().all(|m| m.matches_labels(&s.labels))
                && let Some(v) = s.labels.get(name)
            {
                out.insert(v.to_string());
            }
        }
        out.into_iter().collect()
    }

    /// Label sets of streams matching any of `selectors` with data in range.
    pub fn series(&self, selectors: &[Vec<Matcher>], start_ns: i64, end_ns: i64) -> Vec<Labels> {
        let mut out = Vec::new();
        for s in self.inner.read().streams.values() {
            if stream_overlaps(s, start_ns, end_ns)
                && selectors
                    .iter()
                    .any(|ms| ms.iter().all(|m| m.matches_labels(&s.labels)))
            {
                out.push((*s.labels).clone());
            }
        }
        out.sort();
        out
    }
}

fn stream_overlaps(s: &Stream, start_ns: i64, end_ns: i64) -> bool {
    s.chunks
        .iter()
        .any(|c| c.max_ts >= start_ns && c.min_ts < end_ns)
        || s.head
            .entries
            .iter()
            .any(|e| e.0 >= start_ns && e.0 < end_ns)
}

impl LogSink for LogStore {
    fn append(&self, logs: &[IngestedLog]) -> usize {
        self.append_inner(logs)
    }

    fn checkpoint(&self) -> io::Result<()> {
        self.flush()
    }
}

#[cfg(test)]
mod tests;
