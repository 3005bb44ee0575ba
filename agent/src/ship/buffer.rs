//! The disk buffer in `<state_dir>/buffer/`: every sealed batch is written
//! here before it is sent, and removed once the collector acknowledged it,
//! so what the agent read survives a collector outage and an agent crash.
//!
//! Segment files `NNNNNNNN.buf` hold records `len u32 | crc32 u32 | seq u64 |
//! payload` (`vigil_common::framed` with the sequence as an 8-byte prefix),
//! where the crc covers seq and payload and the payload is a
//! zstd-compressed `vigil.v1.Batch` whose label sets are refs of the series
//! table beside it (`series.tbl`, see `table.rs`) — exactly the bytes that go
//! on the wire as `batch_zstd` (batches buffered by an agent before the table
//! define their label sets inside and are moved onto the table when sent).
//! The `acked` ledger holds the highest acknowledged sequence and is replaced
//! crash-safely (`vigil_common::fs`) — at most once per [`LEDGER_EVERY`]
//! (two fsyncs per ack cost the shipper 5% of its CPU at full log speed, and
//! a tenth of an idle agent's), at shutdown, and always before a segment is
//! removed, so the sequences read back at open never fall below one already
//! used. A ledger behind after a crash costs nothing: the collector's welcome
//! carries its durable sequence, which acks those batches again before
//! anything is sent.
//!
//! The buffer is bounded in bytes: past the bound the oldest segment is
//! dropped, counted and logged. A torn tail (a crash
//! mid-write, a bad disk: a record cut short, failing its checksum or not
//! decoding) follows the framing's one policy: it is cut at open, counted
//! and logged, and appends go to a fresh segment.
//!
//! # A full disk
//! The buffer also keeps [`FREE_RESERVE`] available on its filesystem (room
//! for the ack ledger and the log checkpoints beside it): before a batch is
//! written, the oldest segments are dropped — counted and logged like the
//! bound — until the batch and the reserve fit; a write that still fails for
//! lack of space (another writer took it) is cut back and retried after
//! dropping more. Only when nothing is left to drop is the new batch itself
//! lost (and counted by the caller). Segments are sized from the smaller of
//! the bound and the filesystem, so dropping frees space in small steps.
//!
//! About 900 lines with its tests (the last 250): segments, the ack ledger and
//! the bound are one on-disk format with one set of recovery rules, read best
//! in one place.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use prost::Message;
use vigil_common::framed;
use vigil_proto::v1 as pb;

use super::SourceKey;

/// How often, at most, acks alone rewrite the ledger.
pub const LEDGER_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// No record is larger than this (a corrupt length is not an allocation).
const MAX_RECORD: u32 = 256 << 20;
/// The buffer's record framing: the batch sequence as the prefix.
const FORMAT: framed::Format = framed::Format {
    magic: None,
    prefix: 8,
    max_len: MAX_RECORD,
};
/// Bytes the buffer leaves available on its filesystem (see the module doc).
pub const FREE_RESERVE: u64 = 1 << 20;

/// Why the buffer failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("disk buffer {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("disk buffer ack ledger: {0}")]
    Ledger(#[from] vigil_common::fs::WriteError),
    #[error("disk buffer record {seq}: {reason}")]
    Corrupt { seq: u64, reason: String },
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> BufferError + '_ {
    move |source| BufferError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What one buffered batch holds (kept in memory, rebuilt at open).
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    pub seq: u64,
    segment: u64,
    offset: u64,
    /// Payload bytes of the record at `offset`.
    len: u32,
    pub samples: u64,
    pub logs: u64,
    /// Highest end offset per log source in the batch.
    pub log_positions: Vec<(SourceKey, u64)>,
    /// The highest series-table ref the batch uses.
    pub max_ref: u32,
    /// Buffered by an older agent: label sets defined inside the batch
    /// (see `batch::legacy_to_table`).
    pub legacy: bool,
}

struct Segment {
    n: u64,
    file: File,
    size: u64,
    live: usize,
}

/// What was dropped to stay under the bound or to fit on the disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub samples: u64,
    pub logs: u64,
    /// Appends that found the disk full and dropped to make room.
    pub disk_full: u64,
}

pub struct Buffer {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    segments: VecDeque<Segment>,
    entries: VecDeque<Entry>,
    acked: u64,
    /// What the ledger file says, and when it was last written.
    ledger: u64,
    ledger_at: Option<std::time::Instant>,
    last_seq: u64,
    /// Torn tails cut at open.
    pub corrupt: u64,
}

/// Counts and positions of a batch, from its content.
pub fn summarize(b: &pb::Batch) -> (u64, u64, Vec<(SourceKey, u64)>) {
    let samples = b.samples.iter().map(|s| s.refs.len() as u64).sum();
    let mut pos: Vec<(SourceKey, u64)> = Vec::new();
    for l in &b.logs {
        if let Some(src) = b.sources.iter().find(|s| s.r#ref == l.source_ref) {
            let key = SourceKey {
                path: src.path.clone(),
                device: src.device,
                inode: src.inode,
                fingerprint: src.fingerprint,
            };
            match pos.iter_mut().find(|(k, _)| *k == key) {
                Some((_, e)) => *e = (*e).max(l.end_offset),
                None => pos.push((key, l.end_offset)),
            }
        }
    }
    (samples, b.logs.len() as u64, pos)
}

/// Encodes a batch as a buffer payload.
pub fn encode_payload(b: &pb::Batch) -> Vec<u8> {
    let raw = b.encode_to_vec();
    zstd::bulk::compress(&raw, 1).unwrap_or(raw)
}

/// Decodes a buffer payload.
pub fn decode_payload(p: &[u8]) -> Result<pb::Batch, String> {
    let raw = zstd::bulk::decompress(p, MAX_RECORD as usize).map_err(|e| format!("zstd: {e}"))?;
    pb::Batch::decode(raw.as_slice()).map_err(|e| format!("protobuf: {e}"))
}

fn seg_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.buf"))
}

/// The acks since the last ledger write reach it on the way out.
impl Drop for Buffer {
    fn drop(&mut self) {
        if let Err(e) = self.persist_acked() {
            tracing::warn!(error = %e, "cannot write the buffer's ack ledger");
        }
    }
}

impl Buffer {
    /// Opens (creating) the buffer in `dir`, reading what a previous run left.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Buffer, BufferError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ledger = dir.join("acked");
        let acked = match std::fs::read_to_string(&ledger) {
            Ok(s) => s.trim().parse::<u64>().unwrap_or(0),
            Err(e) if e.kind() == io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io_err(&ledger)(e)),
        };
        let mut numbers = Vec::new();
        for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
            let name = e.map_err(io_err(dir))?.file_name();
            if let Some(n) = name
                .to_string_lossy()
                .strip_suffix(".buf")
                .and_then(|n| n.parse::<u64>().ok())
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        // a small filesystem gets small segments: dropping the oldest one
        // for room then frees a little, not everything
        let room = vigil_common::disk::space(dir)
            .map(|s| s.total)
            .unwrap_or(u64::MAX);
        let mut b = Buffer {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_max: (max_bytes.min(room) / 16).clamp(64 << 10, 64 << 20),
            segments: VecDeque::new(),
            entries: VecDeque::new(),
            acked,
            ledger: acked,
            ledger_at: None,
            last_seq: acked,
            corrupt: 0,
        };
        for n in numbers {
            b.load_segment(n)?;
        }
        // never append after a possibly torn tail: start a fresh segment
        let next = b.segments.back().map(|s| s.n + 1).unwrap_or(1);
        b.new_segment(next)?;
        b.gc()?;
        Ok(b)
    }

    fn load_segment(&mut self, n: u64) -> Result<(), BufferError> {
        let p = seg_path(&self.dir, n);
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&p)
            .map_err(io_err(&p))?;
        let mut live = 0;
        let mut size = 0u64;
        let acked = self.acked;
        let mut last_seq = self.last_seq;
        let mut entries = Vec::new();
        let tail = framed::read(&FORMAT, &file, |r| {
            let mut b = [0u8; 8];
            b.copy_from_slice(r.prefix);
            let seq = u64::from_le_bytes(b);
            if seq > acked {
                let batch = decode_payload(r.payload)?;
                let (samples, logs, log_positions) = summarize(&batch);
                entries.push(Entry {
                    seq,
                    segment: n,
                    offset: r.offset,
                    len: r.payload.len() as u32,
                    samples,
                    logs,
                    log_positions,
                    max_ref: super::batch::max_ref(&batch),
                    legacy: !batch.series.is_empty(),
                });
                live += 1;
            }
            last_seq = last_seq.max(seq);
            size = r.offset + FORMAT.record_len(r.payload.len()) as u64;
            Ok(())
        })
        .map_err(io_err(&p))?;
        if let framed::Tail::Torn { offset, reason } = tail {
            self.corrupt += 1;
            tracing::warn!(file = %p.display(), offset, reason = %reason, "torn disk-buffer tail (a crash mid-write or a bad disk); cut");
            framed::truncate(&p, offset).map_err(io_err(&p))?;
            size = offset;
        }
        self.entries.extend(entries);
        self.last_seq = last_seq;
        self.segments.push_back(Segment {
            n,
            file,
            size,
            live,
        });
        Ok(())
    }

    fn new_segment(&mut self, n: u64) -> Result<(), BufferError> {
        let p = seg_path(&self.dir, n);
        let file = OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(&p)
            .map_err(io_err(&p))?;
        self.segments.push_back(Segment {
            n,
            file,
            size: 0,
            live: 0,
        });
        Ok(())
    }

    /// Starts the next segment now (tests: segments otherwise turn at 64 KiB).
    #[cfg(test)]
    fn rotate_for_test(&mut self) {
        let n = self.segments.back().map(|s| s.n + 1).unwrap_or(1);
        self.new_segment(n).unwrap();
    }

    /// Deletes segments (other than the one being written) with nothing live.
    fn gc(&mut self) -> Result<(), BufferError> {
        while self.segments.len() > 1 && self.segments.front().map(|s| s.live == 0).unwrap_or(false)
        {
            self.persist_acked()?;
            if let Some(s) = self.segments.pop_front() {
                let p = seg_path(&self.dir, s.n);
                std::fs::remove_file(&p).map_err(io_err(&p))?;
            }
        }
        Ok(())
    }

    /// The next sequence to assign.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// Makes sure future sequences are above `seq` (the collector's durable
    /// sequence, in case this buffer's history was lost).
    pub fn bump_seq(&mut self, seq: u64) {
        self.last_seq = self.last_seq.max(seq);
    }

    /// Appends a sealed batch (its `seq` must be `next_seq()`); returns what
    /// had to be dropped to stay under the bound.
    pub fn append(&mut self, batch: &pb::Batch) -> Result<Dropped, BufferError> {
        let payload = encode_payload(batch);
        if payload.len() > MAX_RECORD as usize {
            return Err(BufferError::Corrupt {
                seq: batch.seq,
                reason: format!(
                    "batch of {} bytes over the 256 MiB record limit",
                    payload.len()
                ),
            });
        }
        let (samples, logs, log_positions) = summarize(batch);
        let mut frame = Vec::new();
        framed::encode(&FORMAT, &batch.seq.to_le_bytes(), &payload, &mut frame);
        let mut dropped = Dropped::default();
        self.make_room(frame.len() as u64, &mut dropped)?;
        if self
            .segments
            .back()
            .map(|s| s.size >= self.segment_max)
            .unwrap_or(true)
        {
            let next = self.segments.back().map(|s| s.n + 1).unwrap_or(1);
            self.new_segment(next)?;
        }
        let offset = loop {
            match self.write_frame(&frame) {
                Ok(offset) => break offset,
                Err(e) if vigil_common::disk::is_full(&e) => {
                    dropped.disk_full += 1;
                    if !self.drop_oldest(&mut dropped)? {
                        self.log_dropped(&dropped);
                        return Err(self.io_error(e));
                    }
                }
                Err(e) => return Err(self.io_error(e)),
            }
        };
        let seg = self.segments.back_mut().ok_or_else(|| BufferError::Io {
            path: self.dir.clone(),
            source: io::Error::other("no segment"),
        })?;
        seg.size += frame.len() as u64;
        seg.live += 1;
        self.entries.push_back(Entry {
            seq: batch.seq,
            segment: seg.n,
            offset,
            len: payload.len() as u32,
            samples,
            logs,
            log_positions,
            max_ref: super::batch::max_ref(batch),
            legacy: !batch.series.is_empty(),
        });
        self.last_seq = self.last_seq.max(batch.seq);
        let bound = self.enforce_bound()?;
        dropped.batches += bound.batches;
        dropped.samples += bound.samples;
        dropped.logs += bound.logs;
        Ok(dropped)
    }

    fn io_error(&self, e: io::Error) -> BufferError {
        let n = self.segments.back().map(|s| s.n).unwrap_or(0);
        io_err(&seg_path(&self.dir, n))(e)
    }

    /// Writes a frame at the end of the current segment; returns its offset.
    /// A write that fails part-way is cut back, so the segment never holds
    /// a partial record in front of the next one.
    fn write_frame(&mut self, frame: &[u8]) -> io::Result<u64> {
        let seg = self
            .segments
            .back_mut()
            .ok_or_else(|| io::Error::other("no segment"))?;
        let offset = seg.size;
        framed::append(&mut seg.file, offset, frame)?;
        Ok(offset)
    }

    /// Drops the oldest batches until `need` bytes plus [`FREE_RESERVE`] are
    /// available on the filesystem, or nothing is left to drop.
    fn make_room(&mut self, need: u64, d: &mut Dropped) -> Result<(), BufferError> {
        let enough = |dir: &Path| {
            vigil_common::disk::space(dir)
                .map(|s| s.available >= need + FREE_RESERVE)
                // an unknown free space is not a reason to drop data
                .unwrap_or(true)
        };
        if enough(&self.dir) {
            return Ok(());
        }
        d.disk_full += 1;
        while !enough(&self.dir) {
            if !self.drop_oldest(d)? {
                break;
            }
        }
        self.log_dropped(d);
        Ok(())
    }

    /// Drops the oldest segment with its batches (when it is the one being
    /// written, a fresh one takes its place); false when the buffer holds
    /// nothing to drop.
    fn drop_oldest(&mut self, d: &mut Dropped) -> Result<bool, BufferError> {
        let Some(oldest) = self.segments.front() else {
            return Ok(false);
        };
        if self.segments.len() == 1 {
            if oldest.size == 0 {
                return Ok(false);
            }
            let next = oldest.n + 1;
            self.new_segment(next)?;
        }
        let Some(old) = self.segments.pop_front() else {
            return Ok(false);
        };
        self.drop_entries_of(old.n, d);
        self.persist_acked()?;
        let p = seg_path(&self.dir, old.n);
        std::fs::remove_file(&p).map_err(io_err(&p))?;
        Ok(true)
    }

    fn drop_entries_of(&mut self, segment: u64, d: &mut Dropped) {
        while self
            .entries
            .front()
            .map(|e| e.segment == segment)
            .unwrap_or(false)
        {
            if let Some(e) = self.entries.pop_front() {
                d.batches += 1;
                d.samples += e.samples;
                d.logs += e.logs;
            }
        }
    }

    fn log_dropped(&self, d: &Dropped) {
        if d.batches > 0 || d.disk_full > 0 {
            tracing::warn!(
                batches = d.batches,
                samples = d.samples,
                log_records = d.logs,
                dir = %self.dir.display(),
                "disk full: dropped the oldest buffered batches to make room"
            );
        }
    }

    fn enforce_bound(&mut self) -> Result<Dropped, BufferError> {
        let mut d = Dropped::default();
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            self.drop_entries_of(old.n, &mut d);
            self.persist_acked()?;
            let p = seg_path(&self.dir, old.n);
            std::fs::remove_file(&p).map_err(io_err(&p))?;
        }
        if d.batches > 0 {
            tracing::warn!(
                batches = d.batches,
                samples = d.samples,
                log_records = d.logs,
                bound = self.max_bytes,
                "disk buffer full: dropped the oldest batches"
            );
        }
        Ok(d)
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// Sequences of the buffered batches after `after`, in order.
    pub fn seqs_after(&self, after: u64, max: usize) -> Vec<u64> {
        let start = self.entries.partition_point(|e| e.seq <= after);
        self.entries
            .iter()
            .skip(start)
            .take(max)
            .map(|e| e.seq)
            .collect()
    }

    /// The entry of a buffered batch.
    pub fn entry(&self, seq: u64) -> Option<&Entry> {
        let i = self.entries.binary_search_by_key(&seq, |e| e.seq).ok()?;
        self.entries.get(i)
    }

    /// Reads a buffered batch's payload as it is on disk (a zstd-compressed
    /// `vigil.v1.Batch`: what goes on the wire as `batch_zstd`).
    pub fn read_payload(&self, seq: u64) -> Result<Option<Vec<u8>>, BufferError> {
        let Some(e) = self.entry(seq) else {
            return Ok(None);
        };
        let Some(seg) = self.segments.iter().find(|s| s.n == e.segment) else {
            return Ok(None);
        };
        let r = framed::read_at(&FORMAT, &seg.file, e.offset, e.len).map_err(|err| {
            BufferError::Corrupt {
                seq,
                reason: err.to_string(),
            }
        })?;
        Ok(Some(r.payload().to_vec()))
    }

    /// Drops (and returns what it held) every batch that uses a series ref
    /// above `known`: the series table lost its definitions (a crash that
    /// kept the buffer's write and not the table's, or a lost table file).
    pub fn drop_beyond(&mut self, known: u32) -> Result<Dropped, BufferError> {
        let mut d = Dropped::default();
        let gone: Vec<u64> = self
            .entries
            .iter()
            .filter(|e| !e.legacy && e.max_ref > known)
            .map(|e| e.seq)
            .collect();
        for seq in gone {
            if let Some(e) = self.discard(seq)? {
                d.batches += 1;
                d.samples += e.samples;
                d.logs += e.logs;
            }
        }
        if d.batches > 0 {
            tracing::error!(
                batches = d.batches,
                samples = d.samples,
                logs = d.logs,
                "disk buffer: batches whose series definitions were lost are dropped"
            );
        }
        Ok(d)
    }

    /// Reads a buffered batch.
    pub fn read(&self, seq: u64) -> Result<Option<pb::Batch>, BufferError> {
        let Ok(i) = self.entries.binary_search_by_key(&seq, |e| e.seq) else {
            return Ok(None);
        };
        let e = &self.entries[i];
        let Some(seg) = self.segments.iter().find(|s| s.n == e.segment) else {
            return Ok(None);
        };
        let r = framed::read_at(&FORMAT, &seg.file, e.offset, e.len).map_err(|err| {
            BufferError::Corrupt {
                seq,
                reason: err.to_string(),
            }
        })?;
        decode_payload(r.payload())
            .map(Some)
            .map_err(|reason| BufferError::Corrupt { seq, reason })
    }

    /// Removes every batch up to `seq` (acknowledged, or a duplicate the
    /// collector already holds) and returns them.
    pub fn ack(&mut self, seq: u64) -> Result<Vec<Entry>, BufferError> {
        let mut out = Vec::new();
        while self.entries.front().map(|e| e.seq <= seq).unwrap_or(false) {
            if let Some(e) = self.entries.pop_front() {
                if let Some(s) = self.segments.iter_mut().find(|s| s.n == e.segment) {
                    s.live = s.live.saturating_sub(1);
                }
                out.push(e);
            }
        }
        if seq > self.acked {
            self.acked = seq;
            self.last_seq = self.last_seq.max(seq);
            if self.ledger_at.is_none_or(|t| t.elapsed() >= LEDGER_EVERY) {
                self.persist_acked()?;
            }
        }
        self.gc()?;
        Ok(out)
    }

    /// Writes the ledger if acks moved past it.
    pub fn persist_acked(&mut self) -> Result<(), BufferError> {
        if self.acked > self.ledger {
            vigil_common::fs::write_atomic(
                &self.dir.join("acked"),
                self.acked.to_string().as_bytes(),
            )?;
            self.ledger = self.acked;
            self.ledger_at = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// Drops one batch the collector keeps refusing.
    pub fn discard(&mut self, seq: u64) -> Result<Option<Entry>, BufferError> {
        let Ok(i) = self.entries.binary_search_by_key(&seq, |e| e.seq) else {
            return Ok(None);
        };
        let e = self.entries.remove(i);
        if let Some(e) = &e
            && let Some(s) = self.segments.iter_mut().find(|s| s.n == e.segment)
        {
            s.live = s.live.saturating_sub(1);
        }
        self.gc()?;
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noise(seed: u64, n: usize) -> String {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (b'a' + ((x >> 33) % 26) as u8) as char
            })
            .collect()
    }

    fn batch(seq: u64, n: usize) -> pb::Batch {
        pb::Batch {
            seq,
            series: vec![pb::SeriesDef {
                r#ref: 1,
                labels: vec![pb::Label {
                    name: "__name__".into(),
                    // incompressible, so the bound is really reached
                    value: format!("m{}", noise(seq, n)),
                }],
            }],
            samples: vec![pb::SampleBlock {
                timestamp_ms: seq as i64,
                refs: vec![1],
                values: vec![seq as f64],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn survives_reopen_and_acks_remove() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut b = Buffer::open(d.path(), 1 << 20).unwrap();
            assert_eq!(b.next_seq(), 1);
            for s in 1..=5 {
                b.append(&batch(s, 10)).unwrap();
            }
            assert_eq!(b.ack(2).unwrap().len(), 2);
        }
        let b = Buffer::open(d.path(), 1 << 20).unwrap();
        assert_eq!(b.seqs_after(0, 100), vec![3, 4, 5]);
        assert_eq!(b.next_seq(), 6);
        assert_eq!(b.read(4).unwrap().unwrap().samples[0].values, vec![4.0]);
    }

    /// Acks in quick succession write the ledger once; removing a segment
    /// writes it first, so the sequences never repeat after a reopen.
    #[test]
    fn the_ledger_is_written_at_most_once_a_second_and_before_a_segment_goes() {
        let d = tempfile::tempdir().unwrap();
        let ledger = || std::fs::read_to_string(d.path().join("acked")).unwrap();
        let mut b = Buffer::open(d.path(), 1 << 20).unwrap();
        for s in 1..=4 {
            b.append(&batch(s, 10)).unwrap();
        }
        b.ack(1).unwrap();
        b.ack(2).unwrap();
        assert_eq!(ledger(), "1", "the second ack within a second waits");
        // the segment's batches all acked: it goes, and the ledger first
        b.rotate_for_test();
        b.append(&batch(5, 10)).unwrap();
        b.ack(4).unwrap();
        assert_eq!(ledger(), "4");
        b.ack(5).unwrap();
        assert_eq!(ledger(), "4");
        drop(b);
        assert_eq!(ledger(), "5", "dropping the buffer writes what is left");
        let b = Buffer::open(d.path(), 1 << 20).unwrap();
        assert_eq!(b.next_seq(), 6);
    }

    #[test]
    fn sequences_continue_after_everything_was_acked() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut b = Buffer::open(d.path(), 1 << 20).unwrap();
            b.append(&batch(1, 1)).unwrap();
            b.ack(1).unwrap();
        }
        let b = Buffer::open(d.path(), 1 << 20).unwrap();
        assert!(b.is_empty());
        assert_eq!(b.next_seq(), 2);
    }

    #[test]
    fn the_bound_drops_the_oldest_and_counts() {
        let d = tempfile::tempdir().unwrap();
        let mut b = Buffer::open(d.path(), 1 << 20).unwrap();
        let mut dropped = Dropped::default();
        for s in 1..=200 {
            let x = b.append(&batch(s, 20_000)).unwrap();
            dropped.batches += x.batches;
            dropped.samples += x.samples;
        }
        assert!(
            b.bytes() <= (1 << 20) + (64 << 10) + 30_000,
            "{}",
            b.bytes()
        );
        assert!(dropped.batches > 0);
        assert_eq!(dropped.samples, dropped.batches);
        let left = b.seqs_after(0, 1000);
        assert_eq!(*left.last().unwrap(), 200, "the newest must be kept");
        assert_eq!(left.len() as u64 + dropped.batches, 200);
    }

    /// The framing's one torn-tail policy: the tail from the first bad
    /// record on is cut (here a checksum failure in the second of three
    /// records, the third cut short), counted once, and the buffer goes on.
    #[test]
    fn a_torn_tail_is_cut_counted_and_the_buffer_goes_on() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut b = Buffer::open(d.path(), 1 << 20).unwrap();
            for s in 1..=3 {
                b.append(&batch(s, 10)).unwrap();
            }
        }
        let p = seg_path(d.path(), 1);
        let mut data = std::fs::read(&p).unwrap();
        let first = FORMAT.record_len(u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize);
        data[first + FORMAT.header_len() + 2] ^= 0xff;
        data.truncate(data.len() - 3);
        std::fs::write(&p, &data).unwrap();
        let mut b = Buffer::open(d.path(), 1 << 20).unwrap();
        assert_eq!(b.seqs_after(0, 10), vec![1]);
        assert_eq!(b.corrupt, 1);
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            first as u64,
            "tail cut"
        );
        assert_eq!(b.read(1).unwrap().unwrap().samples[0].values, vec![1.0]);
        // sequences continue past what the torn records held
        assert_eq!(b.next_seq(), 2);
        b.append(&batch(2, 10)).unwrap();
        drop(b);
        let b = Buffer::open(d.path(), 1 << 20).unwrap();
        assert_eq!(b.seqs_after(0, 10), vec![1, 2]);
        assert_eq!(b.corrupt, 0);
    }

    /// The ack ledger goes through the crash-safe helper: a stale temporary
    /// left by a crash is never read, and the ledger is whole.
    #[test]
    fn the_ack_ledger_is_written_crash_safely() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut b = Buffer::open(d.path(), 1 << 20).unwrap();
            for s in 1..=3 {
                b.append(&batch(s, 10)).unwrap();
            }
            b.ack(2).unwrap();
        }
        assert_eq!(
            std::fs::read_to_string(d.path().join("acked")).unwrap(),
            "2"
        );
        // a crash after the temporary was written, before the rename
        std::fs::write(d.path().join(".acked.tmp"), "3").unwrap();
        let b = Buffer::open(d.path(), 1 << 20).unwrap();
        assert_eq!(b.acked(), 2);
        assert_eq!(b.seqs_after(0, 10), vec![3]);
    }

    /// A tmpfs of `size` mounted on a fresh directory for the test (root
    /// only), unmounted on drop.
    struct Tmpfs(tempfile::TempDir);

    impl Tmpfs {
        fn mount(size: &str) -> Option<Tmpfs> {
            let d = tempfile::tempdir().ok()?;
            let ok = std::process::Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(d.path())
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            ok.then_some(Tmpfs(d))
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg(self.0.path())
                .status();
        }
    }

    #[test]
    fn a_full_disk_drops_the_oldest_keeps_the_reserve_and_every_append_succeeds() {
        let Some(fs) = Tmpfs::mount("3m") else {
            eprintln!("skipped: mounting a tmpfs needs root");
            return;
        };
        let dir = fs.0.path().join("buffer");
        // a bound far above the disk: only the disk limits the buffer
        let mut b = Buffer::open(&dir, 1 << 30).unwrap();
        let mut dropped = Dropped::default();
        for s in 1..=300 {
            let d = b.append(&batch(s, 20_000)).unwrap();
            dropped.batches += d.batches;
            dropped.samples += d.samples;
            dropped.disk_full += d.disk_full;
            // the reserve stays free for the ledger and checkpoints
            let avail = vigil_common::disk::space(fs.0.path()).unwrap().available;
            assert!(avail >= FREE_RESERVE, "{avail} bytes left after batch {s}");
        }
        assert!(dropped.disk_full > 0, "the disk never filled");
        assert!(dropped.batches > 0);
        let left = b.seqs_after(0, 1000);
        assert_eq!(*left.last().unwrap(), 300, "the newest must be kept");
        assert_eq!(
            left.len() as u64 + dropped.batches,
            300,
            "every batch is either kept or counted as dropped"
        );
        // the oldest went first: what is left is one run up to the newest
        assert!(left.windows(2).all(|w| w[1] == w[0] + 1), "{left:?}");
        // acks still write the ledger, and the kept batches read back
        let first = left[0];
        b.ack(first).unwrap();
        assert_eq!(b.acked(), first);
        assert_eq!(b.read(300).unwrap().unwrap().seq, 300);
        drop(b);
        let b = Buffer::open(&dir, 1 << 30).unwrap();
        assert_eq!(b.seqs_after(0, 1000).first(), Some(&(first + 1)));
        assert_eq!(b.corrupt, 0, "a cut-back write left a torn record");
    }

    proptest::proptest! {
        #[test]
        fn random_segment_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096)) {
            let d = tempfile::tempdir().unwrap();
            std::fs::write(seg_path(d.path(), 1), &bytes).unwrap();
            let _ = Buffer::open(d.path(), 1 << 20);
        }
    }
}
