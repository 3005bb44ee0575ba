//! The write-ahead log in `<data_dir>/wal/`: what the collector acknowledges
//! is here first, fsync'd. Segment files `NNNNNNNN.wal` hold records framed as
//! `len u32 | crc32 u32 | payload` (little endian; `vigil_common::framed`, whose
//! torn-tail policy replay follows: the tail from the first bad record on is
//! cut and counted); a payload is a prost-encoded [`WalRecord`]. One writer thread does group commit: it takes every record
//! that is waiting, writes them, fsyncs once, and answers them all — so many
//! streams share one fsync.
//!
//! Series are written with their full label set the first time the WAL uses
//! them after a cut, and by a stable 64-bit id (xxh3 of the labels)
//! afterwards. A cut (made by each checkpoint) forgets what was defined, so
//! replay from a cut onwards always finds a definition before its use;
//! rotating to a new segment for size alone does not. The first record of a
//! segment that starts after a cut is a marker (`cut: true`), so a reader can
//! find where the definitions it needs begin ([`reader`]).
//!
//! Segments below the last checkpoint are not needed for recovery; they are
//! kept while a [`Hold`] (a forwarding cursor) still needs them, up to a
//! byte budget, and then deleted oldest first ([`retain`]). The writer
//! publishes the durable end of the log after every fsync, so readers never
//! see a record before it is durable.
//!
//! Not here: what a record means (see `ingest::checkpoint::recover`).
//!
//! About 810 lines with its tests (the last 110): the record format, the segment
//! files and their recovery are one on-disk contract.

pub mod reader;
pub mod retain;

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use prost::Message;
use vigil_common::framed;
pub use vigil_common::framed::Tail;

/// Largest record accepted on replay (a corrupt length is not an allocation).
const MAX_RECORD: u32 = 256 << 20;
/// A new segment starts past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// One series' first use in a segment.
#[derive(Clone, PartialEq, Message)]
pub struct WalSeries {
    #[prost(fixed64, tag = "1")]
    pub id: u64,
    /// name, value, name, value, … (sorted by name)
    #[prost(string, repeated, tag = "2")]
    pub labels: Vec<String>,
}

/// Samples sharing a timestamp.
#[derive(Clone, PartialEq, Message)]
pub struct WalBlock {
    #[prost(int64, tag = "1")]
    pub timestamp_ms: i64,
    #[prost(fixed64, repeated, tag = "2")]
    pub ids: Vec<u64>,
    #[prost(double, repeated, tag = "3")]
    pub values: Vec<f64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct WalLog {
    #[prost(fixed64, tag = "1")]
    pub stream_id: u64,
    #[prost(fixed64, tag = "2")]
    pub source_id: u64,
    #[prost(string, tag = "3")]
    pub source_path: String,
    #[prost(uint64, tag = "4")]
    pub offset: u64,
    #[prost(uint64, tag = "5")]
    pub end_offset: u64,
    #[prost(int64, tag = "6")]
    pub timestamp_ns: i64,
    #[prost(string, tag = "7")]
    pub line: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct WalEvent {
    #[prost(int64, tag = "1")]
    pub timestamp_ms: i64,
    #[prost(string, tag = "2")]
    pub kind: String,
    #[prost(fixed64, tag = "3")]
    pub subject_id: u64,
    /// key, value, key, value, …
    #[prost(string, repeated, tag = "4")]
    pub attributes: Vec<String>,
}

/// Everything one agent batch made durable.
#[derive(Clone, PartialEq, Message)]
pub struct WalRecord {
    #[prost(string, tag = "1")]
    pub agent_id: String,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(message, repeated, tag = "3")]
    pub series: Vec<WalSeries>,
    #[prost(message, repeated, tag = "4")]
    pub blocks: Vec<WalBlock>,
    #[prost(message, repeated, tag = "5")]
    pub logs: Vec<WalLog>,
    #[prost(message, repeated, tag = "6")]
    pub events: Vec<WalEvent>,
    #[prost(message, repeated, tag = "7")]
    pub metadata: Vec<vigil_proto::v1::MetricMetadata>,
    /// For data that came without an agent stream (remote write, pushes):
    /// whose series budget new series count against. Empty in agent
    /// records (the agent id is their tenant).
    #[prost(string, tag = "8")]
    pub tenant: String,
    /// A marker that starts a segment after a cut: no series is defined
    /// before it (for readers; replay ignores it).
    #[prost(bool, tag = "9")]
    pub cut: bool,
}

/// A series a record refers to, for the writer to define where needed.
#[derive(Clone, Debug)]
pub struct SeriesUse {
    pub id: u64,
    pub labels: Arc<vigil_common::Labels>,
}

/// What a stream hands the writer: the record without series definitions,
/// plus every series it uses (the writer adds the definitions the current
/// segment lacks).
pub struct Append {
    pub record: WalRecord,
    pub uses: Vec<SeriesUse>,
}

/// Series ids are already hashes: use them as they are.
#[derive(Clone, Copy, Default)]
pub struct IdHash;

impl std::hash::BuildHasher for IdHash {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// A place in the log: a segment and a byte offset in it (where a record
/// starts, or the durable end).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Why the WAL failed.
#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the WAL writer has stopped")]
    Stopped,
}

enum Request {
    Append(
        Box<Append>,
        tokio::sync::oneshot::Sender<Result<Position, Failure>>,
    ),
    Cut(tokio::sync::oneshot::Sender<Result<u64, Failure>>),
}

/// A write failure as the writer thread reports it: the kind survives, so a
/// full disk is told apart from other errors (see `crate::space`).
#[derive(Clone, Debug)]
struct Failure {
    kind: io::ErrorKind,
    message: String,
}

impl Failure {
    fn new(e: impl std::fmt::Display, kind: io::ErrorKind) -> Failure {
        Failure {
            kind,
            message: e.to_string(),
        }
    }

    fn into_io(self) -> io::Error {
        io::Error::new(self.kind, self.message)
    }
}

/// Figures the telemetry reads.
#[derive(Default, Debug)]
pub struct WalStats {
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
    pub records: AtomicU64,
    pub fsyncs: AtomicU64,
    /// Total fsync time in microseconds.
    pub fsync_micros: AtomicU64,
    /// Bytes of segments below the last checkpoint, kept for holds.
    pub held_bytes: AtomicU64,
    /// Segments (and their bytes) deleted past the hold budget while a hold
    /// had not read them.
    pub dropped_segments: AtomicU64,
    pub dropped_bytes: AtomicU64,
}

/// A reader's claim on the log (a forwarding cursor): segments from
/// `needed` on are kept (within the budget). What the budget deleted before
/// the reader got to it is counted here.
#[derive(Debug)]
pub struct Hold {
    pub name: String,
    needed: AtomicU64,
    /// The segment the reader has open; the retainer takes this lock while
    /// it decides what a deletion takes from the reader.
    reading: parking_lot::Mutex<u64>,
    pub dropped_samples: AtomicU64,
    pub dropped_log_records: AtomicU64,
    pub dropped_bytes: AtomicU64,
}

impl Hold {
    /// Segments below `segment` are no longer needed by this hold.
    pub fn set_needed(&self, segment: u64) {
        self.needed.store(segment, Ordering::Release);
    }

    pub fn needed(&self) -> u64 {
        self.needed.load(Ordering::Acquire)
    }
}

/// State shared by the writer handle, readers and the retainer.
#[derive(Debug, Default)]
struct Shared {
    holds: parking_lot::Mutex<Vec<Arc<Hold>>>,
    /// Segments below this are covered by a checkpoint.
    checkpointed: AtomicU64,
    /// Most bytes kept below the checkpoint for holds.
    hold_budget: AtomicU64,
    /// One release at a time (the checkpoint and forwarding both call it).
    releasing: parking_lot::Mutex<()>,
}

/// Handle of the WAL writer.
#[derive(Clone)]
pub struct Wal {
    tx: std::sync::mpsc::SyncSender<Request>,
    pub stats: Arc<WalStats>,
    dir: PathBuf,
    durable: tokio::sync::watch::Receiver<Position>,
    shared: Arc<Shared>,
}

pub fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.wal"))
}

/// Segment numbers present in `dir`, ascending.
pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        if let Some(n) = name
            .strip_suffix(".wal")
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push(n);
        }
    }
    out.sort_unstable();
    Ok(out)
}

pub(crate) fn io_err(path: &Path) -> impl Fn(io::Error) -> WalError + '_ {
    move |source| WalError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The WAL's record framing (see `vigil_common::framed`, which also states
/// the torn-tail policy): no magic, no prefix.
/// Frames one WAL record (appends header + payload to `out`).
pub(crate) fn frame(payload: &[u8], out: &mut Vec<u8>) {
    framed::encode(&FORMAT, &[], payload, out);
}

pub const FORMAT: framed::Format = framed::Format {
    magic: None,
    prefix: 0,
    max_len: MAX_RECORD,
};

/// What reading one framed record gave.
#[derive(Debug)]
pub enum Frame {
    /// A record and its framed length.
    Record(WalRecord, u64),
    /// The input ended at a record boundary, or the next record reaches
    /// past the limit (not durable yet).
    End,
    /// A torn or corrupt record (a crash mid-write, or damage).
    Torn(String),
}

/// Reads the framed record at the reader's position (the one framing,
/// `vigil_common::framed`). `limit` is how many bytes may be read (a record
/// past it is reported as the end, not torn: it is not durable yet). `buf`
/// is scratch space.
pub fn read_frame(r: &mut impl Read, limit: u64, buf: &mut Vec<u8>) -> io::Result<Frame> {
    let mut head = Vec::with_capacity(FORMAT.header_len());
    match framed::read_next(&FORMAT, r, limit, &mut head, buf)? {
        framed::Next::End => Ok(Frame::End),
        framed::Next::Torn(reason) => Ok(Frame::Torn(reason.to_string())),
        framed::Next::Record { len } => match WalRecord::decode(buf.as_slice()) {
            Ok(rec) => Ok(Frame::Record(rec, len)),
            Err(e) => Ok(Frame::Torn(format!("undecodable record: {e}"))),
        },
    }
}

/// Reads every intact record of a segment, stopping at the torn tail (a
/// record that is cut short, fails its checksum or does not decode).
pub fn read_segment(path: &Path, mut f: impl FnMut(WalRecord)) -> Result<Tail, WalError> {
    let file = File::open(path).map_err(io_err(path))?;
    framed::read(&FORMAT, file, |r| {
        let rec = WalRecord::decode(r.payload).map_err(|e| e.to_string())?;
        f(rec);
        Ok(())
    })
    .map_err(io_err(path))
}

struct Writer {
    dir: PathBuf,
    segment: u64,
    file: File,
    size: u64,
    defined: HashSet<u64, IdHash>,
    stats: Arc<WalStats>,
    buf: Vec<u8>,
    payload: Vec<u8>,
    /// The next record starts a segment after a cut: write the marker first.
    marker_due: bool,
    durable: tokio::sync::watch::Sender<Position>,
}

impl Writer {
    fn open_segment(dir: &Path, n: u64) -> Result<File, WalError> {
        let p = segment_path(dir, n);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(io_err(&p))?;
        vigil_common::fs::sync_dir(dir).map_err(io_err(dir))?;
        Ok(f)
    }

    fn rotate(&mut self, forget_definitions: bool) -> Result<(), WalError> {
        let p = segment_path(&self.dir, self.segment);
        self.file.sync_data().map_err(io_err(&p))?;
        // the number moves on only once the new file exists: a failed
        // rotation keeps writing where the durable end is published
        self.file = Self::open_segment(&self.dir, self.segment + 1)?;
        self.segment += 1;
        self.size = 0;
        if forget_definitions {
            self.defined.clear();
            self.marker_due = true;
        }
        self.stats.segments.fetch_add(1, Ordering::Relaxed);
        self.publish();
        Ok(())
    }

    /// Tells readers how far the log is durable.
    fn publish(&self) {
        self.durable.send_replace(Position {
            segment: self.segment,
            offset: self.size,
        });
    }

    fn encode(&mut self, a: Append) {
        if std::mem::take(&mut self.marker_due) {
            let marker = WalRecord {
                cut: true,
                ..Default::default()
            };
            self.payload.clear();
            let _ = marker.encode(&mut self.payload);
            frame(&self.payload, &mut self.buf);
        }
        let mut rec = a.record;
        for u in a.uses {
            if self.defined.insert(u.id) {
                let mut labels = Vec::with_capacity(u.labels.len() * 2);
                for (k, v) in u.labels.iter() {
                    labels.push(k.to_string());
                    labels.push(v.to_string());
                }
                rec.series.push(WalSeries { id: u.id, labels });
            }
        }
        self.payload.clear();
        // encoding into a Vec cannot fail
        let _ = rec.encode(&mut self.payload);
        framed::encode(&FORMAT, &[], &self.payload, &mut self.buf);
    }

    fn run(mut self, rx: std::sync::mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut waiting = Vec::new();
            let mut cuts = Vec::new();
            let mut next = Some(first);
            // gather what is already queued: one fsync for all of it
            while let Some(req) = next.take() {
                match req {
                    Request::Append(a, done) => {
                        if self.size > SEGMENT_BYTES
                            && self.buf.is_empty()
                            && let Err(e) = self.rotate(false)
                        {
                            let kind = match &e {
                                WalError::Io { source, .. } => source.kind(),
                                WalError::Stopped => io::ErrorKind::Other,
                            };
                            let _ = done.send(Err(Failure::new(e, kind)));
                            continue;
                        }
                        self.encode(*a);
                        waiting.push(done);
                    }
                    Request::Cut(done) => cuts.push(done),
                }
                if waiting.len() < 4096 && self.buf.len() < (16 << 20) {
                    next = rx.try_recv().ok();
                }
            }
            let result = self.flush();
            if result.is_ok() {
                self.stats
                    .records
                    .fetch_add(waiting.len() as u64, Ordering::Relaxed);
            }
            let pos = Position {
                segment: self.segment,
                offset: self.size,
            };
            for done in waiting {
                let _ = done.send(result.clone().map(|_| pos));
            }
            for done in cuts {
                let r = result.clone().and_then(|_| {
                    self.rotate(true)
                        .map_err(|e| Failure::new(e, io::ErrorKind::Other))
                });
                let _ = done.send(r.map(|_| self.segment));
            }
        }
        let _ = self.file.sync_data();
    }

    fn flush(&mut self) -> Result<(), Failure> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let p = segment_path(&self.dir, self.segment);
        let t = Instant::now();
        let r = self
            .file
            .write_all(&self.buf)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| Failure::new(format!("WAL {}: {e}", p.display()), e.kind()));
        self.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .fsync_micros
            .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        if r.is_ok() {
            self.size += self.buf.len() as u64;
            self.stats
                .bytes
                .fetch_add(self.buf.len() as u64, Ordering::Relaxed);
            self.buf.clear();
            self.publish();
        } else {
            // a failed write may have left part of the buffer on disk: cut
            // it off (best effort; readers stop at the durable size anyway),
            // start a fresh segment so later records never follow a torn
            // one, and whatever it defined is defined again — even when no
            // new segment can be made (a full disk), the definitions the
            // lost records carried must be written again
            self.buf.clear();
            self.defined.clear();
            let _ = self.file.set_len(self.size);
            let _ = self.rotate(true);
        }
        r
    }
}

impl Wal {
    /// Starts the writer on a new segment after the highest existing one.
    /// Call after replay.
    pub fn start(dir: &Path) -> Result<Wal, WalError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let existing = segments(dir).map_err(io_err(dir))?;
        let next = existing.last().map(|n| n + 1).unwrap_or(1);
        let mut bytes = 0;
        for n in &existing {
            bytes += std::fs::metadata(segment_path(dir, *n))
                .map(|m| m.len())
                .unwrap_or(0);
        }
        let stats = Arc::new(WalStats::default());
        stats.bytes.store(bytes, Ordering::Relaxed);
        stats
            .segments
            .store(existing.len() as u64 + 1, Ordering::Relaxed);
        let file = Writer::open_segment(dir, next)?;
        let (durable_tx, durable) = tokio::sync::watch::channel(Position {
            segment: next,
            offset: 0,
        });
        let writer = Writer {
            dir: dir.to_path_buf(),
            segment: next,
            file,
            size: 0,
            defined: HashSet::with_hasher(IdHash),
            stats: stats.clone(),
            buf: Vec::with_capacity(1 << 20),
            payload: Vec::with_capacity(1 << 20),
            // a new segment after a (re)start defines everything afresh
            marker_due: true,
            durable: durable_tx,
        };
        let (tx, rx) = std::sync::mpsc::sync_channel(8192);
        std::thread::Builder::new()
            .name("vigil-wal".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err(dir))?;
        Ok(Wal {
            tx,
            stats,
            dir: dir.to_path_buf(),
            durable,
            shared: Arc::new(Shared::default()),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The durable end of the log, updated after every fsync and rotation.
    pub fn durable(&self) -> tokio::sync::watch::Receiver<Position> {
        self.durable.clone()
    }

    /// Registers a hold that needs the log from `needed` (a segment) on.
    pub fn hold(&self, name: &str, needed: u64) -> Arc<Hold> {
        let h = Arc::new(Hold {
            name: name.to_string(),
            needed: AtomicU64::new(needed),
            reading: parking_lot::Mutex::new(needed),
            dropped_samples: AtomicU64::new(0),
            dropped_log_records: AtomicU64::new(0),
            dropped_bytes: AtomicU64::new(0),
        });
        self.shared.holds.lock().push(h.clone());
        h
    }

    /// Forgets a hold (its reader stopped for good).
    pub fn unhold(&self, hold: &Arc<Hold>) {
        self.shared.holds.lock().retain(|h| !Arc::ptr_eq(h, hold));
    }

    /// Segments below `segment` are covered by a written checkpoint.
    pub fn set_checkpointed(&self, segment: u64) {
        self.shared
            .checkpointed
            .fetch_max(segment, Ordering::AcqRel);
    }

    /// Most bytes kept below the checkpoint for holds (0: keep none).
    pub fn set_hold_budget(&self, bytes: u64) {
        self.shared.hold_budget.store(bytes, Ordering::Release);
    }

    /// Appends a record; resolves once it is fsync'd.
    pub async fn append(&self, a: Append) -> Result<Position, WalError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        let tx = self.tx.clone();
        // the channel is bounded: a full queue waits on a blocking thread,
        // never on the runtime's workers
        match tx.try_send(Request::Append(Box::new(a), done)) {
            Ok(()) => {}
            Err(std::sync::mpsc::TrySendError::Full(req)) => {
                tokio::task::spawn_blocking(move || tx.send(req))
                    .await
                    .map_err(|_| WalError::Stopped)?
                    .map_err(|_| WalError::Stopped)?;
            }
            Err(std::sync::mpsc::TrySendError::Disconnected(_)) => return Err(WalError::Stopped),
        }
        match rx.await {
            Ok(Ok(p)) => Ok(p),
            Ok(Err(e)) => Err(WalError::Io {
                path: self.dir.clone(),
                source: e.into_io(),
            }),
            Err(_) => Err(WalError::Stopped),
        }
    }

    /// Flushes and starts a new segment; returns its number. Every record
    /// appended before the call is in an older segment.
    pub async fn cut(&self) -> Result<u64, WalError> {
        let (done, rx) = tokio::sync::oneshot::channel();
        let tx = self.tx.clone();
        tokio::task::spawn_blocking(move || tx.send(Request::Cut(done)))
            .await
            .map_err(|_| WalError::Stopped)?
            .map_err(|_| WalError::Stopped)?;
        match rx.await {
            Ok(Ok(n)) => Ok(n),
            Ok(Err(e)) => Err(WalError::Io {
                path: self.dir.clone(),
                source: e.into_io(),
            }),
            Err(_) => Err(WalError::Stopped),
        }
    }

    /// Marks segments below `n` as covered by a checkpoint and deletes
    /// every segment no hold needs (see [`retain`]); returns the bytes freed.
    pub fn remove_before(&self, n: u64) -> Result<u64, WalError> {
        self.set_checkpointed(n);
        Ok(self.release()?.freed_bytes)
    }

    /// Deletes what neither recovery nor a hold needs, and past the hold
    /// budget the oldest held segments (see [`retain`]).
    pub fn release(&self) -> Result<retain::Released, WalError> {
        let _one = self.shared.releasing.lock();
        let holds = self.shared.holds.lock().clone();
        let r = retain::release(
            &self.dir,
            self.shared.checkpointed.load(Ordering::Acquire),
            self.shared.hold_budget.load(Ordering::Acquire),
            &holds,
        )?;
        self.stats.segments.fetch_sub(
            r.deleted.min(self.stats.segments.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.stats.bytes.fetch_sub(
            r.freed_bytes.min(self.stats.bytes.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        self.stats.held_bytes.store(r.held_bytes, Ordering::Relaxed);
        self.stats
            .dropped_segments
            .fetch_add(r.dropped.len() as u64, Ordering::Relaxed);
        self.stats.dropped_bytes.fetch_add(
            r.dropped.iter().map(|d| d.bytes).sum::<u64>(),
            Ordering::Relaxed,
        );
        Ok(r)
    }
}

/// Cuts a segment's torn tail at `offset`, durably.
pub fn truncate(path: &Path, offset: u64) -> Result<(), WalError> {
    framed::truncate(path, offset).map_err(io_err(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vigil_common::Labels;

    fn rec(seq: u64, ids: Vec<u64>) -> Append {
        let labels = Arc::new(Labels::new([("__name__", "m"), ("i", &seq.to_string())]));
        Append {
            uses: ids
                .iter()
                .map(|id| SeriesUse {
                    id: *id,
                    labels: labels.clone(),
                })
                .collect(),
            record: WalRecord {
                agent_id: "a".into(),
                seq,
                blocks: vec![WalBlock {
                    timestamp_ms: seq as i64,
                    values: ids.iter().map(|_| seq as f64).collect(),
                    ids,
                }],
                ..Default::default()
            },
        }
    }

    #[tokio::test]
    async fn appends_replay_and_defines_series_once_per_segment() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::start(d.path()).unwrap();
        wal.append(rec(1, vec![10, 11])).await.unwrap();
        wal.append(rec(2, vec![10])).await.unwrap();
        let n = wal.cut().await.unwrap();
        assert_eq!(n, 2);
        wal.append(rec(3, vec![10])).await.unwrap();
        let mut got = Vec::new();
        for s in segments(d.path()).unwrap() {
            assert_eq!(
                read_segment(&segment_path(d.path(), s), |r| if !r.cut {
                    got.push(r)
                })
                .unwrap(),
                Tail::Clean
            );
        }
        assert_eq!(got.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(got[0].series.len(), 2);
        assert_eq!(got[1].series.len(), 0);
        assert_eq!(
            got[2].series.len(),
            1,
            "a new segment redefines what it uses"
        );
        wal.remove_before(n).unwrap();
        assert_eq!(segments(d.path()).unwrap(), vec![2]);
    }

    #[tokio::test]
    async fn concurrent_appends_share_fsyncs() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::start(d.path()).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200u64 {
            let w = wal.clone();
            tasks.push(tokio::spawn(async move { w.append(rec(i, vec![i])).await }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let fsyncs = wal.stats.fsyncs.load(Ordering::Relaxed);
        assert!(fsyncs < 200, "no group commit: {fsyncs} fsyncs");
        let mut n = 0;
        read_segment(&segment_path(d.path(), 1), |r| n += u64::from(!r.cut)).unwrap();
        assert_eq!(n, 200);
    }

    #[tokio::test]
    async fn a_torn_tail_is_detected() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::start(d.path()).unwrap();
        wal.append(rec(1, vec![1])).await.unwrap();
        wal.append(rec(2, vec![2])).await.unwrap();
        let p = segment_path(d.path(), 1);
        let len = std::fs::metadata(&p).unwrap().len();
        let f = OpenOptions::new().write(true).open(&p).unwrap();
        f.set_len(len - 3).unwrap();
        let mut n = 0;
        let tail = read_segment(&p, |r| n += u64::from(!r.cut)).unwrap();
        assert_eq!(n, 1);
        let Tail::Torn { offset, .. } = tail else {
            panic!("not torn")
        };
        truncate(&p, offset).unwrap();
        assert_eq!(read_segment(&p, |_| {}).unwrap(), Tail::Clean);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let d = tempfile::tempdir().unwrap();
            let p = d.path().join("00000001.wal");
            std::fs::write(&p, &bytes).unwrap();
            let _ = read_segment(&p, |_| {});
        }
    }
}
