//! An endpoint's place in the WAL, kept so that a restart — or a `kill -9`
//! — neither loses nor mixes anything.
//!
//! An item (sample or log record) is addressed by an [`ItemPos`]: the start
//! of its WAL record and its index among the items of that record that go
//! to its shard. Per shard the cursor keeps a [`Frontier`]: where its
//! undelivered items start (`at`) and where the request it has in flight
//! ends (`inflight_end`). A shard makes that durable *before* it sends a
//! request, so after a crash it first resends exactly the request that was
//! in flight — alone: a receiver that stores nothing of a request with an
//! old sample in it (Prometheus rolls the whole request back) either took
//! all of it before, or takes it now — and then goes on. Reading resumes at
//! the oldest record with anything undelivered ([`Tracker::watermark`]).
//!
//! The file `<data_dir>/forward/<name>.cursor` holds two slots written in
//! turn (checksummed, generation-numbered), so one `fdatasync` makes an
//! update durable and a torn write leaves the other slot. Updates are
//! written by one task per endpoint; shards wait for it (group commit).
//! Not here: reading or sending.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use prost::Message;

use crate::wal::Position;

/// An item: its record's start and its index in the record's part for its
/// shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ItemPos {
    pub record: Position,
    pub index: u64,
}

/// One shard's delivery state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    /// Everything before this was delivered.
    pub at: ItemPos,
    /// The request in flight covers `at..inflight_end` (equal: none).
    pub inflight_end: ItemPos,
}

/// What is persisted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Saved {
    pub watermark: Position,
    /// Identifies the shard layout (count, relabeling) the frontiers are for.
    pub fingerprint: u64,
    pub frontiers: Vec<Frontier>,
}

#[derive(Clone, PartialEq, Message)]
struct PbPos {
    #[prost(uint64, tag = "1")]
    segment: u64,
    #[prost(uint64, tag = "2")]
    offset: u64,
    #[prost(uint64, tag = "3")]
    index: u64,
}

#[derive(Clone, PartialEq, Message)]
struct PbFrontier {
    #[prost(message, optional, tag = "1")]
    at: Option<PbPos>,
    #[prost(message, optional, tag = "2")]
    inflight_end: Option<PbPos>,
}

#[derive(Clone, PartialEq, Message)]
struct PbCursor {
    #[prost(uint64, tag = "1")]
    generation: u64,
    #[prost(message, optional, tag = "2")]
    watermark: Option<PbPos>,
    #[prost(uint64, tag = "3")]
    fingerprint: u64,
    #[prost(message, repeated, tag = "4")]
    frontiers: Vec<PbFrontier>,
}

fn pb(p: ItemPos) -> PbPos {
    PbPos {
        segment: p.record.segment,
        offset: p.record.offset,
        index: p.index,
    }
}

fn unpb(p: Option<PbPos>) -> ItemPos {
    let p = p.unwrap_or_default();
    ItemPos {
        record: Position {
            segment: p.segment,
            offset: p.offset,
        },
        index: p.index,
    }
}

const MAGIC: &[u8; 4] = b"VFC1";

pub fn cursor_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.cursor"))
}

/// The two-slot cursor file.
pub struct CursorFile {
    path: PathBuf,
    file: File,
    generation: u64,
    slot_bytes: u64,
}

fn decode_slot(b: &[u8]) -> Option<PbCursor> {
    if b.len() < 12 || &b[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(b[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b[8..12].try_into().ok()?);
    let body = b.get(12..12 + len)?;
    if crc32fast::hash(body) != crc {
        return None;
    }
    PbCursor::decode(body).ok()
}

impl CursorFile {
    /// Opens (creating) the file and reads the newest intact slot.
    pub fn open(path: &Path, max_shards: usize) -> io::Result<(CursorFile, Option<Saved>)> {
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d)?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let bytes = std::fs::read(path)?;
        let mut best: Option<PbCursor> = None;
        if !bytes.is_empty() {
            let half = bytes.len() / 2;
            for slot in [&bytes[..half], &bytes[half..]] {
                if let Some(c) = decode_slot(slot)
                    && best.as_ref().is_none_or(|b| c.generation > b.generation)
                {
                    best = Some(c);
                }
            }
            if best.is_none() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: no intact cursor slot", path.display()),
                ));
            }
        }
        let slot_bytes = (64 + 80 * max_shards as u64).max(bytes.len() as u64 / 2);
        let generation = best.as_ref().map(|b| b.generation).unwrap_or(0);
        let saved = best.map(|c| Saved {
            watermark: unpb(c.watermark).record,
            fingerprint: c.fingerprint,
            frontiers: c
                .frontiers
                .into_iter()
                .map(|f| Frontier {
                    at: unpb(f.at),
                    inflight_end: unpb(f.inflight_end),
                })
                .collect(),
        });
        Ok((
            CursorFile {
                path: path.to_path_buf(),
                file,
                generation,
                slot_bytes,
            },
            saved,
        ))
    }

    /// Writes `s` to the older slot and makes it durable.
    pub fn save(&mut self, s: &Saved) -> io::Result<()> {
        self.generation += 1;
        let body = PbCursor {
            generation: self.generation,
            watermark: Some(pb(ItemPos {
                record: s.watermark,
                index: 0,
            })),
            fingerprint: s.fingerprint,
            frontiers: s
                .frontiers
                .iter()
                .map(|f| PbFrontier {
                    at: Some(pb(f.at)),
                    inflight_end: Some(pb(f.inflight_end)),
                })
                .collect(),
        }
        .encode_to_vec();
        let mut slot = Vec::with_capacity(self.slot_bytes as usize);
        slot.extend_from_slice(MAGIC);
        slot.extend_from_slice(&(body.len() as u32).to_le_bytes());
        slot.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        slot.extend_from_slice(&body);
        if slot.len() as u64 > self.slot_bytes {
            return Err(io::Error::other(format!(
                "{}: cursor of {} bytes does not fit its slot of {}",
                self.path.display(),
                slot.len(),
                self.slot_bytes
            )));
        }
        slot.resize(self.slot_bytes as usize, 0);
        let at = (self.generation % 2) * self.slot_bytes;
        self.file.write_all_at(&slot, at)?;
        self.file.sync_data()
    }
}

/// Records read and not yet delivered, oldest first, and the shards'
/// frontiers.
#[derive(Debug)]
pub struct Tracker {
    base: Position,
    /// (record number, record start, items outstanding)
    records: VecDeque<(u64, Position, usize)>,
    first_no: u64,
    next_no: u64,
    read_to: Position,
    pending: usize,
    pub fingerprint: u64,
    pub frontiers: Vec<Frontier>,
    /// Bumped by every change worth persisting.
    pub version: u64,
}

impl Tracker {
    pub fn new(at: Position, fingerprint: u64, frontiers: Vec<Frontier>) -> Self {
        Tracker {
            base: at,
            records: VecDeque::new(),
            first_no: 0,
            next_no: 0,
            read_to: at,
            pending: 0,
            fingerprint,
            frontiers,
            version: 0,
        }
    }

    /// A record starting at `start` and ending at `next` was read with
    /// `items` items to deliver; returns its number.
    pub fn read(&mut self, start: Position, next: Position, items: usize) -> u64 {
        let no = self.next_no;
        self.next_no += 1;
        self.records.push_back((no, start, items));
        self.read_to = next;
        self.pending += items;
        self.pop_done();
        no
    }

    /// Reading jumped (a gap, a skipped corrupt tail): nothing between is
    /// owed.
    pub fn skip_to(&mut self, next: Position) {
        self.read_to = next;
        self.pop_done();
    }

    /// `n` items of record `no` were delivered (or dropped for good).
    pub fn done(&mut self, no: u64, n: usize) {
        if no < self.first_no {
            return;
        }
        if let Some(e) = self.records.get_mut((no - self.first_no) as usize) {
            let n = n.min(e.2);
            e.2 -= n;
            self.pending -= n;
        }
        self.pop_done();
    }

    fn pop_done(&mut self) {
        let before = self.base;
        while let Some(&(_, _, 0)) = self.records.front() {
            self.records.pop_front();
            self.first_no += 1;
        }
        self.base = match self.records.front() {
            Some(&(_, start, _)) => start,
            None => self.read_to,
        };
        if self.base != before {
            self.version += 1;
        }
    }

    /// Shard `shard` is about to send `at..end`; returns the version to
    /// wait for before sending.
    pub fn intent(&mut self, shard: usize, at: ItemPos, end: ItemPos) -> u64 {
        if let Some(f) = self.frontiers.get_mut(shard) {
            *f = Frontier {
                at,
                inflight_end: end,
            };
        }
        self.version += 1;
        self.version
    }

    /// Shard `shard` delivered everything before `at`.
    pub fn delivered(&mut self, shard: usize, at: ItemPos) {
        if let Some(f) = self.frontiers.get_mut(shard)
            && f.at != at
        {
            *f = Frontier {
                at,
                inflight_end: at,
            };
            self.version += 1;
        }
    }

    /// Everything before this is delivered.
    pub fn watermark(&self) -> Position {
        self.base
    }

    /// Items read and not yet delivered.
    pub fn pending(&self) -> usize {
        self.pending
    }

    pub fn snapshot(&self) -> Saved {
        Saved {
            watermark: self.base,
            fingerprint: self.fingerprint,
            frontiers: self.frontiers.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(o: u64) -> Position {
        Position {
            segment: 1,
            offset: o,
        }
    }

    #[test]
    fn the_watermark_waits_for_the_oldest_record() {
        let mut t = Tracker::new(p(0), 0, vec![]);
        let a = t.read(p(0), p(10), 2);
        let b = t.read(p(10), p(20), 1);
        let _empty = t.read(p(20), p(30), 0);
        assert_eq!(t.watermark(), p(0));
        t.done(b, 1);
        assert_eq!(t.watermark(), p(0), "a is still out");
        t.done(a, 1);
        assert_eq!(t.watermark(), p(0));
        t.done(a, 1);
        assert_eq!(t.watermark(), p(30));
        assert_eq!(t.pending(), 0);
        t.skip_to(Position {
            segment: 3,
            offset: 0,
        });
        assert_eq!(t.watermark().segment, 3);
    }

    #[test]
    fn slots_survive_a_torn_write_and_keep_the_newest() {
        let d = tempfile::tempdir().unwrap();
        let f = cursor_path(d.path(), "rw");
        let (mut c, saved) = CursorFile::open(&f, 4).unwrap();
        assert_eq!(saved, None);
        let s = |o| Saved {
            watermark: p(o),
            fingerprint: 7,
            frontiers: vec![Frontier {
                at: ItemPos {
                    record: p(o),
                    index: 2,
                },
                inflight_end: ItemPos {
                    record: p(o + 5),
                    index: 1,
                },
            }],
        };
        c.save(&s(10)).unwrap();
        c.save(&s(20)).unwrap();
        drop(c);
        let (mut c, saved) = CursorFile::open(&f, 4).unwrap();
        assert_eq!(saved, Some(s(20)));
        c.save(&s(30)).unwrap();
        // tear the newest slot: the one before it is read
        let mut bytes = std::fs::read(&f).unwrap();
        let half = bytes.len() / 2;
        bytes[half + 14] ^= 0xff;
        std::fs::write(&f, &bytes).unwrap();
        let (_, saved) = CursorFile::open(&f, 4).unwrap();
        assert_eq!(saved, Some(s(20)));
        // both torn: an error, not a silent restart from zero
        bytes[14] ^= 0xff;
        std::fs::write(&f, &bytes).unwrap();
        assert!(CursorFile::open(&f, 4).is_err());
    }
}
