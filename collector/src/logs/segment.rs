//! Segment files of the log store: `<dir>/<seq:016x>.seg`, each a sequence
//! of chunk records `[magic u32][len u32][crc32 u32][payload]` (little
//! endian; `vigil_common::framed` with the magic `VCL1`). The payload is a
//! protobuf [`ChunkHeader`] whose lines are a zstd-compressed [`Entries`]
//! message. The framing's one torn-tail policy applies: a record that is cut
//! short, fails its checksum or does not decode ends the segment, and the
//! file is cut there at start (logged).

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use prost::Message;
use vigil_common::Labels;
use vigil_common::framed;

/// Refuse absurd lengths from a damaged file before allocating.
const MAX_RECORD: u32 = 256 << 20;
/// The segments' record framing: magic `VCL1`, no prefix.
const FORMAT: framed::Format = framed::Format {
    magic: Some(0x5643_4c31),
    prefix: 0,
    max_len: MAX_RECORD,
};

#[derive(Clone, PartialEq, prost::Message)]
pub struct ChunkHeader {
    /// name, value, name, value, …
    #[prost(string, repeated, tag = "1")]
    pub labels: Vec<String>,
    #[prost(int64, tag = "2")]
    pub min_ts: i64,
    #[prost(int64, tag = "3")]
    pub max_ts: i64,
    #[prost(uint32, tag = "4")]
    pub count: u32,
    /// Sources in this chunk and, at the same index, one past the highest
    /// offset of each.
    #[prost(fixed64, repeated, tag = "5")]
    pub sources: Vec<u64>,
    #[prost(uint64, repeated, tag = "6")]
    pub watermarks: Vec<u64>,
    #[prost(bytes = "vec", tag = "7")]
    pub entries_zstd: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Entries {
    #[prost(sint64, repeated, tag = "1")]
    pub ts_delta: Vec<i64>,
    #[prost(string, repeated, tag = "2")]
    pub line: Vec<String>,
}

/// One entry read back.
#[derive(Clone, Debug, PartialEq)]
pub struct RecEntry {
    pub timestamp_ns: i64,
    pub line: String,
}

/// A chunk as written or read.
#[derive(Clone, Debug)]
pub struct ChunkRecord {
    pub labels: Labels,
    pub min_ts: i64,
    pub max_ts: i64,
    /// (source id, one past the highest offset).
    pub sources: Vec<(u64, u64)>,
    pub entries: Vec<RecEntry>,
}

impl ChunkRecord {
    /// From a stream's open chunk: (timestamp, source, offset, line).
    pub fn from_entries(labels: &Labels, entries: &[(i64, u64, u64, String)]) -> Self {
        let mut sources: BTreeMap<u64, u64> = BTreeMap::new();
        let mut sorted: Vec<&(i64, u64, u64, String)> = entries.iter().collect();
        sorted.sort_by_key(|e| e.0);
        for e in entries {
            let w = sources.entry(e.1).or_insert(0);
            *w = (*w).max(e.2 + 1);
        }
        ChunkRecord {
            labels: labels.clone(),
            min_ts: sorted.first().map(|e| e.0).unwrap_or(0),
            max_ts: sorted.last().map(|e| e.0).unwrap_or(0),
            sources: sources.into_iter().collect(),
            entries: sorted
                .into_iter()
                .map(|e| RecEntry {
                    timestamp_ns: e.0,
                    line: e.3.clone(),
                })
                .collect(),
        }
    }

    fn encode(&self) -> io::Result<Vec<u8>> {
        let mut prev = 0i64;
        let mut ents = Entries::default();
        for e in &self.entries {
            ents.ts_delta.push(e.timestamp_ns.wrapping_sub(prev));
            prev = e.timestamp_ns;
            ents.line.push(e.line.clone());
        }
        let raw = ents.encode_to_vec();
        let z = zstd::bulk::compress(&raw, 3)?;
        let h = ChunkHeader {
            labels: self
                .labels
                .iter()
                .flat_map(|(k, v)| [k.to_string(), v.to_string()])
                .collect(),
            min_ts: self.min_ts,
            max_ts: self.max_ts,
            count: self.entries.len() as u32,
            sources: self.sources.iter().map(|s| s.0).collect(),
            watermarks: self.sources.iter().map(|s| s.1).collect(),
            entries_zstd: z,
        };
        Ok(h.encode_to_vec())
    }

    /// Decodes a payload; `with_entries` also decompresses the lines.
    fn decode(payload: &[u8], with_entries: bool) -> io::Result<Self> {
        let bad = |m: String| io::Error::new(io::ErrorKind::InvalidData, m);
        let h = ChunkHeader::decode(payload).map_err(|e| bad(format!("chunk header: {e}")))?;
        if h.labels.len() % 2 != 0 || h.sources.len() != h.watermarks.len() {
            return Err(bad("chunk header: mismatched lists".into()));
        }
        let labels = Labels::new(
            h.labels
                .chunks_exact(2)
                .map(|c| (c[0].clone(), c[1].clone())),
        );
        let mut entries = Vec::new();
        if with_entries {
            // a chunk's lines are bounded by the chunk size; allow generous slack
            let raw = zstd::bulk::decompress(&h.entries_zstd, MAX_RECORD as usize)
                .map_err(|e| bad(format!("chunk lines: {e}")))?;
            let ents =
                Entries::decode(raw.as_slice()).map_err(|e| bad(format!("chunk lines: {e}")))?;
            if ents.ts_delta.len() != ents.line.len() {
                return Err(bad("chunk lines: mismatched lists".into()));
            }
            let mut t = 0i64;
            entries.reserve(ents.line.len());
            for (d, line) in ents.ts_delta.into_iter().zip(ents.line) {
                t = t.wrapping_add(d);
                entries.push(RecEntry {
                    timestamp_ns: t,
                    line,
                });
            }
        }
        Ok(ChunkRecord {
            labels,
            min_ts: h.min_ts,
            max_ts: h.max_ts,
            sources: h.sources.into_iter().zip(h.watermarks).collect(),
            entries,
        })
    }
}

struct Segment {
    path: PathBuf,
    file: File,
    size: u64,
    max_ts: i64,
}

/// The segment files of one store.
pub struct SegmentSet {
    dir: PathBuf,
    segments: BTreeMap<u64, Segment>,
    /// The segment being appended to.
    current: u64,
    segment_bytes: u64,
    dirty: bool,
}

fn seg_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.seg"))
}

impl SegmentSet {
    /// Opens every segment in `dir`, calling `found(segment, offset, len,
    /// record)` for each chunk (lines not decompressed), and truncates torn
    /// tails.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        mut found: impl FnMut(u64, u64, u32, &ChunkRecord),
    ) -> io::Result<Self> {
        let mut seqs = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().to_string();
            if let Some(hex) = name.strip_suffix(".seg")
                && let Ok(n) = u64::from_str_radix(hex, 16)
            {
                seqs.push(n);
            }
        }
        seqs.sort_unstable();
        let mut segments = BTreeMap::new();
        for seq in &seqs {
            let path = seg_path(dir, *seq);
            let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
            let mut max_ts = i64::MIN;
            let mut end = 0u64;
            let tail = framed::read(&FORMAT, &file, |r| {
                let rec = ChunkRecord::decode(r.payload, false).map_err(|e| e.to_string())?;
                max_ts = max_ts.max(rec.max_ts);
                found(*seq, r.offset, r.payload.len() as u32, &rec);
                end = r.offset + FORMAT.record_len(r.payload.len()) as u64;
                Ok(())
            })?;
            if let framed::Tail::Torn { offset, reason } = tail {
                tracing::warn!(
                    path = %path.display(),
                    kept = offset,
                    reason = %reason,
                    "log segment: torn or damaged tail cut"
                );
                framed::truncate(&path, offset)?;
                end = offset;
            }
            file.seek(SeekFrom::End(0))?;
            segments.insert(
                *seq,
                Segment {
                    path,
                    file,
                    size: end,
                    max_ts,
                },
            );
        }
        let mut s = SegmentSet {
            dir: dir.to_path_buf(),
            segments,
            current: 0,
            segment_bytes,
            dirty: false,
        };
        // always append to a fresh segment after a start
        let next = seqs.last().map(|n| n + 1).unwrap_or(1);
        s.roll(next)?;
        Ok(s)
    }

    fn roll(&mut self, seq: u64) -> io::Result<()> {
        let path = seg_path(&self.dir, seq);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        self.segments.insert(
            seq,
            Segment {
                path,
                file,
                size: 0,
                max_ts: i64::MIN,
            },
        );
        self.current = seq;
        Ok(())
    }

    /// Appends a chunk; returns (segment, offset, payload length).
    pub fn write(&mut self, rec: &ChunkRecord) -> io::Result<(u64, u64, u32)> {
        let payload = rec.encode()?;
        if payload.len() as u64 > MAX_RECORD as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "log chunk over 256 MiB",
            ));
        }
        if self
            .segments
            .get(&self.current)
            .is_some_and(|s| s.size > 0 && s.size + payload.len() as u64 > self.segment_bytes)
        {
            // seal the full segment durably before moving on
            if let Some(s) = self.segments.get(&self.current) {
                s.file.sync_data()?;
            }
            self.roll(self.current + 1)?;
        }
        let seq = self.current;
        let seg = self
            .segments
            .get_mut(&seq)
            .ok_or_else(|| io::Error::other("no current log segment"))?;
        let mut buf = Vec::new();
        framed::encode(&FORMAT, &[], &payload, &mut buf);
        let off = seg.size;
        framed::append(&mut seg.file, off, &buf)?;
        seg.size += buf.len() as u64;
        seg.max_ts = seg.max_ts.max(rec.max_ts);
        self.dirty = true;
        Ok((seq, off, payload.len() as u32))
    }

    /// Reads one chunk with its lines.
    pub fn read(&self, seq: u64, offset: u64, len: u32) -> io::Result<ChunkRecord> {
        let seg = self.segments.get(&seq).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("log segment {seq} removed"),
            )
        })?;
        let r = framed::read_at(&FORMAT, &seg.file, offset, len)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", seg.path.display())))?;
        ChunkRecord::decode(r.payload(), true)
    }

    /// fsyncs the current segment if anything was written since.
    pub fn sync(&mut self) -> io::Result<()> {
        if self.dirty {
            if let Some(s) = self.segments.get(&self.current) {
                s.file.sync_data()?;
            }
            self.dirty = false;
        }
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        self.segments.values().map(|s| s.size).sum()
    }

    /// Deletes closed segments whose newest record is before `cutoff_ns`,
    /// then the oldest closed ones while over `max_bytes`. Returns the
    /// deleted sequence numbers.
    pub fn remove_old(&mut self, cutoff_ns: i64, max_bytes: u64) -> HashSet<u64> {
        let mut gone = HashSet::new();
        let mut total = self.total_bytes();
        let closed: Vec<u64> = self
            .segments
            .keys()
            .copied()
            .filter(|s| *s != self.current)
            .collect();
        for seq in closed {
            let Some(seg) = self.segments.get(&seq) else {
                continue;
            };
            let expired = seg.max_ts < cutoff_ns;
            let over = max_bytes > 0 && total > max_bytes;
            if !(expired || over) {
                continue;
            }
            if let Err(e) = std::fs::remove_file(&seg.path) {
                tracing::warn!(error = %e, path = %seg.path.display(), "cannot delete log segment");
                continue;
            }
            total -= seg.size;
            gone.insert(seq);
            self.segments.remove(&seq);
        }
        // a current segment that is itself over the budget is closed so the
        // next trim can drop it
        if max_bytes > 0
            && total > max_bytes
            && self.segments.get(&self.current).is_some_and(|s| s.size > 0)
        {
            let next = self.current + 1;
            if let Some(s) = self.segments.get(&self.current) {
                let _ = s.file.sync_data();
            }
            if let Err(e) = self.roll(next) {
                tracing::warn!(error = %e, "cannot start a new log segment");
            }
        }
        gone
    }
}
