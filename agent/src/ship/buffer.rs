//! The disk buffer in `<state_dir>/buffer/`: every sealed batch is written
//! here before it is sent, and removed once the collector acknowledged it,
//! so what the agent read survives a collector outage and an agent crash.
//!
//! Segment files `NNNNNNNN.buf` hold records `len u32 | crc32 u32 | seq u64 |
//! payload`, where the crc covers seq and payload and the payload is a
//! zstd-compressed, self-contained `vigil.v1.Batch`. The `acked` ledger holds
//! the highest acknowledged sequence. The buffer is bounded in bytes: past the
//! bound the oldest segment is dropped, counted and logged. Torn or corrupt
//! records (a crash mid-write, a bad disk) are skipped and counted.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use prost::Message;
use vigil_proto::v1 as pb;

use super::SourceKey;

const HEADER: usize = 16;
/// No record is larger than this (a corrupt length is not an allocation).
const MAX_RECORD: u32 = 256 << 20;

/// Why the buffer failed.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("disk buffer {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
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
    len: u32,
    pub samples: u64,
    pub logs: u64,
    /// Highest end offset per log source in the batch.
    pub log_positions: Vec<(SourceKey, u64)>,
}

struct Segment {
    n: u64,
    file: File,
    size: u64,
    live: usize,
}

/// What was dropped to stay under the bound.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub batches: u64,
    pub samples: u64,
    pub logs: u64,
}

pub struct Buffer {
    dir: PathBuf,
    max_bytes: u64,
    segment_max: u64,
    segments: VecDeque<Segment>,
    entries: VecDeque<Entry>,
    acked: u64,
    last_seq: u64,
    /// Records skipped at open as torn or corrupt.
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
        let mut b = Buffer {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_max: (max_bytes / 16).clamp(64 << 10, 64 << 20),
            segments: VecDeque::new(),
            entries: VecDeque::new(),
            acked,
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
        let mut data = Vec::new();
        File::open(&p)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io_err(&p))?;
        let mut off = 0usize;
        let mut live = 0;
        while off + HEADER <= data.len() {
            let len = u32::from_le_bytes(data[off..off + 4].try_into().unwrap_or([0; 4]));
            let crc = u32::from_le_bytes(data[off + 4..off + 8].try_into().unwrap_or([0; 4]));
            let seq = u64::from_le_bytes(data[off + 8..off + 16].try_into().unwrap_or([0; 8]));
            let end = off + HEADER + len as usize;
            if len > MAX_RECORD || end > data.len() {
                self.corrupt += 1;
                tracing::warn!(file = %p.display(), offset = off, "torn disk-buffer record; skipping the rest of the segment");
                break;
            }
            let mut h = crc32fast::Hasher::new();
            h.update(&data[off + 8..off + 16]);
            h.update(&data[off + HEADER..end]);
            if h.finalize() != crc {
                self.corrupt += 1;
                tracing::warn!(file = %p.display(), offset = off, seq, "corrupt disk-buffer record (checksum); skipped");
                off = end;
                continue;
            }
            if seq > self.acked {
                match decode_payload(&data[off + HEADER..end]) {
                    Ok(batch) => {
                        let (samples, logs, log_positions) = summarize(&batch);
                        self.entries.push_back(Entry {
                            seq,
                            segment: n,
                            offset: off as u64,
                            len: len + HEADER as u32,
                            samples,
                            logs,
                            log_positions,
                        });
                        live += 1;
                    }
                    Err(e) => {
                        self.corrupt += 1;
                        tracing::warn!(file = %p.display(), seq, error = %e, "undecodable disk-buffer record; skipped");
                    }
                }
            }
            self.last_seq = self.last_seq.max(seq);
            off = end;
        }
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(&p)
            .map_err(io_err(&p))?;
        self.segments.push_back(Segment {
            n,
            file,
            size: data.len() as u64,
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

    /// Deletes segments (other than the one being written) with nothing live.
    fn gc(&mut self) -> Result<(), BufferError> {
        while self.segments.len() > 1 && self.segments.front().map(|s| s.live == 0).unwrap_or(false)
        {
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
        let (samples, logs, log_positions) = summarize(batch);
        let mut frame = Vec::with_capacity(HEADER + payload.len());
        let mut h = crc32fast::Hasher::new();
        h.update(&batch.seq.to_le_bytes());
        h.update(&payload);
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&h.finalize().to_le_bytes());
        frame.extend_from_slice(&batch.seq.to_le_bytes());
        frame.extend_from_slice(&payload);
        if self
            .segments
            .back()
            .map(|s| s.size >= self.segment_max)
            .unwrap_or(true)
        {
            let next = self.segments.back().map(|s| s.n + 1).unwrap_or(1);
            self.new_segment(next)?;
        }
        let dir = self.dir.clone();
        let seg = self.segments.back_mut().ok_or_else(|| BufferError::Io {
            path: dir.clone(),
            source: io::Error::other("no segment"),
        })?;
        let offset = seg.size;
        seg.file
            .write_all(&frame)
            .map_err(io_err(&seg_path(&dir, seg.n)))?;
        seg.size += frame.len() as u64;
        seg.live += 1;
        self.entries.push_back(Entry {
            seq: batch.seq,
            segment: seg.n,
            offset,
            len: frame.len() as u32,
            samples,
            logs,
            log_positions,
        });
        self.last_seq = self.last_seq.max(batch.seq);
        self.enforce_bound()
    }

    fn enforce_bound(&mut self) -> Result<Dropped, BufferError> {
        let mut d = Dropped::default();
        while self.bytes() > self.max_bytes && self.segments.len() > 1 {
            let Some(old) = self.segments.pop_front() else {
                break;
            };
            while self
                .entries
                .front()
                .map(|e| e.segment == old.n)
                .unwrap_or(false)
            {
                if let Some(e) = self.entries.pop_front() {
                    d.batches += 1;
                    d.samples += e.samples;
                    d.logs += e.logs;
                }
            }
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

    /// Reads a buffered batch.
    pub fn read(&self, seq: u64) -> Result<Option<pb::Batch>, BufferError> {
        let Ok(i) = self.entries.binary_search_by_key(&seq, |e| e.seq) else {
            return Ok(None);
        };
        let e = &self.entries[i];
        let Some(seg) = self.segments.iter().find(|s| s.n == e.segment) else {
            return Ok(None);
        };
        let mut buf = vec![0u8; e.len as usize];
        seg.file
            .read_exact_at(&mut buf, e.offset)
            .map_err(io_err(&seg_path(&self.dir, seg.n)))?;
        decode_payload(&buf[HEADER..])
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
            let ledger = self.dir.join("acked");
            let tmp = self.dir.join("acked.tmp");
            std::fs::write(&tmp, seq.to_string())
                .and_then(|_| std::fs::rename(&tmp, &ledger))
                .map_err(io_err(&ledger))?;
        }
        self.gc()?;
        Ok(out)
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

    #[test]
    fn torn_and_corrupt_records_are_skipped_and_counted() {
        let d = tempfile::tempdir().unwrap();
        {
            let mut b = Buffer::open(d.path(), 1 << 20).unwrap();
            for s in 1..=3 {
                b.append(&batch(s, 10)).unwrap();
            }
        }
        let p = seg_path(d.path(), 1);
        let mut data = std::fs::read(&p).unwrap();
        // flip a payload byte of the second record, cut the third short
        let first_len = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize + HEADER;
        data[first_len + HEADER + 2] ^= 0xff;
        data.truncate(data.len() - 3);
        std::fs::write(&p, &data).unwrap();
        let b = Buffer::open(d.path(), 1 << 20).unwrap();
        assert_eq!(b.seqs_after(0, 10), vec![1]);
        assert_eq!(b.corrupt, 2);
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
