//! Reading the WAL from a position onwards, as it grows: what forwarding
//! tails. A [`Reader`] yields every record up to the durable end the writer
//! published (never a record that is not fsync'd yet), resolves series ids
//! to label sets, and steps over segments the retainer deleted (reporting
//! the gap).
//!
//! # Series definitions
//! A record refers to series by id; the label set is in a definition the
//! writer put earlier in the same cut group (the segments from a cut marker
//! on, see the parent module). Opening a reader in the middle of a group
//! first reads the definitions from the group's start (or from the
//! retainer's definitions file when the group's first segments are gone).
//! The table is cleared at every cut marker, so it holds the series of one
//! group at most.
//!
//! Not here: what records mean to a forwarder, or the framing (the parent
//! module's [`read_frame`]).

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vigil_common::Labels;

use super::{
    Frame, Hold, IdHash, Position, WalError, WalRecord, io_err, read_frame, segment_path, segments,
};

/// The definitions file the retainer writes for the oldest kept segment when
/// the start of its group was deleted.
pub fn defs_path(dir: &Path, segment: u64) -> PathBuf {
    dir.join(format!("{segment:08}.defs"))
}

/// What one step of reading gave.
#[derive(Debug)]
pub enum Step {
    /// A record; `next` is where the record after it starts.
    Record(Box<WalRecord>, Position),
    /// Everything durable has been read.
    Idle,
    /// The segments from `from` up to `to` are gone (deleted past the disk
    /// budget, or lost); reading goes on at `to`.
    Gap { from: Position, to: Position },
    /// A damaged record at `at`; the rest of that segment is skipped.
    Corrupt { at: Position, reason: String },
}

/// Reads the WAL in `dir` from a position, up to the durable end.
pub struct Reader {
    dir: PathBuf,
    durable: tokio::sync::watch::Receiver<Position>,
    hold: Option<Arc<Hold>>,
    pos: Position,
    file: Option<BufReader<File>>,
    /// The open file is positioned exactly at `pos`.
    aligned: bool,
    series: HashMap<u64, Arc<Labels>, IdHash>,
    buf: Vec<u8>,
}

fn labels_of(pairs: &[String]) -> Labels {
    Labels::new(pairs.chunks_exact(2).map(|c| (c[0].clone(), c[1].clone())))
}

/// Whether a segment's first record is a cut marker.
fn starts_group(dir: &Path, segment: u64) -> Result<bool, WalError> {
    let p = segment_path(dir, segment);
    let f = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(&p)(e)),
    };
    let mut r = BufReader::with_capacity(64 << 10, f);
    let mut buf = Vec::new();
    match read_frame(&mut r, u64::MAX, &mut buf).map_err(io_err(&p))? {
        Frame::Record(rec, _) => Ok(rec.cut),
        _ => Ok(false),
    }
}

/// Definitions a segment's group had before the segment (the retainer's
/// file), if any.
pub(crate) fn read_defs(
    dir: &Path,
    segment: u64,
    mut f: impl FnMut(u64, &[String]),
) -> Result<bool, WalError> {
    let p = defs_path(dir, segment);
    match std::fs::metadata(&p) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(io_err(&p)(e)),
    }
    super::read_segment(&p, |rec| {
        for d in &rec.series {
            f(d.id, &d.labels);
        }
    })?;
    Ok(true)
}

/// WAL bytes from `from` up to the durable end `to` (how far a reader is
/// behind).
pub fn bytes_between(dir: &Path, from: Position, to: Position) -> u64 {
    if to <= from {
        return 0;
    }
    if from.segment == to.segment {
        return to.offset - from.offset;
    }
    let len = |s: u64| {
        std::fs::metadata(segment_path(dir, s))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    let mut n = len(from.segment).saturating_sub(from.offset);
    for s in segments(dir).unwrap_or_default() {
        if s > from.segment && s < to.segment {
            n += len(s);
        }
    }
    n + to.offset
}

impl Reader {
    /// A reader positioned at `at`, with the definitions it needs there.
    /// `hold`, if given, is told which segment the reader has open (so the
    /// retainer knows what a deletion takes from it).
    pub fn open(
        dir: &Path,
        durable: tokio::sync::watch::Receiver<Position>,
        hold: Option<Arc<Hold>>,
        at: Position,
    ) -> Result<Reader, WalError> {
        let mut r = Reader {
            dir: dir.to_path_buf(),
            durable,
            hold,
            pos: at,
            file: None,
            aligned: false,
            series: HashMap::with_hasher(IdHash),
            buf: Vec::new(),
        };
        r.load_definitions(at)?;
        Ok(r)
    }

    /// Where the next record starts.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The label set of a series id used by the last record read.
    pub fn labels(&self, id: u64) -> Option<&Arc<Labels>> {
        self.series.get(&id)
    }

    /// Series currently defined (for memory accounting).
    pub fn series_count(&self) -> usize {
        self.series.len()
    }

    fn define(&mut self, id: u64, pairs: &[String]) {
        self.series
            .entry(id)
            .or_insert_with(|| Arc::new(labels_of(pairs)));
    }

    /// Reads the definitions from the start of `at`'s group up to `at`.
    fn load_definitions(&mut self, at: Position) -> Result<(), WalError> {
        self.series.clear();
        let segs = segments(&self.dir).map_err(io_err(&self.dir))?;
        let Some(idx) = segs.iter().rposition(|s| *s <= at.segment) else {
            return Ok(());
        };
        // walk back to the group's first segment
        let mut start = idx;
        loop {
            let s = segs[start];
            if starts_group(&self.dir, s)? {
                break;
            }
            let mut defs = Vec::new();
            if read_defs(&self.dir, s, |id, l| defs.push((id, l.to_vec())))? {
                for (id, l) in defs {
                    self.define(id, &l);
                }
                break;
            }
            if start == 0 || segs[start - 1] + 1 != s {
                break;
            }
            start -= 1;
        }
        for &s in &segs[start..=idx] {
            let p = segment_path(&self.dir, s);
            let f = match File::open(&p) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&p)(e)),
            };
            let mut r = BufReader::with_capacity(1 << 20, f);
            let limit = if s == at.segment { at.offset } else { u64::MAX };
            let mut offset = 0u64;
            while let Frame::Record(rec, len) =
                read_frame(&mut r, limit - offset, &mut self.buf).map_err(io_err(&p))?
            {
                offset += len;
                if rec.cut {
                    self.series.clear();
                }
                for d in &rec.series {
                    self.define(d.id, &d.labels);
                }
            }
        }
        Ok(())
    }

    /// Opens `pos.segment` at `pos.offset`, or finds the next segment that
    /// exists. Returns a gap when segments were skipped.
    fn open_current(&mut self) -> Result<Option<Step>, WalError> {
        let durable = *self.durable.borrow();
        let hold = self.hold.clone();
        let guard = hold.as_ref().map(|h| h.reading.lock());
        let p = segment_path(&self.dir, self.pos.segment);
        match File::open(&p) {
            Ok(f) => {
                let mut r = BufReader::with_capacity(1 << 20, f);
                let len = r.get_ref().metadata().map_err(io_err(&p))?.len();
                if self.pos.offset > len {
                    // shorter than where we were (a torn tail was cut at
                    // start-up): nothing more in it
                    self.pos.offset = len;
                }
                r.seek(SeekFrom::Start(self.pos.offset))
                    .map_err(io_err(&p))?;
                self.file = Some(r);
                self.aligned = true;
                if let Some(mut g) = guard {
                    *g = self.pos.segment;
                }
                Ok(None)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let segs = segments(&self.dir).map_err(io_err(&self.dir))?;
                let from = self.pos;
                let to = match segs.iter().find(|s| **s > self.pos.segment) {
                    Some(s) => *s,
                    // nothing newer on disk: the writer's segment, if the
                    // cursor is from another life of the WAL
                    None if durable.segment != self.pos.segment => durable.segment,
                    None => return Ok(Some(Step::Idle)),
                };
                self.pos = Position {
                    segment: to,
                    offset: 0,
                };
                if let Some(mut g) = guard {
                    *g = to;
                }
                // a retainer may delete more meanwhile: the next open tells
                self.load_definitions(self.pos)?;
                Ok(Some(Step::Gap { from, to: self.pos }))
            }
            Err(e) => Err(io_err(&p)(e)),
        }
    }

    /// The next record, or why there is none.
    pub fn step(&mut self) -> Result<Step, WalError> {
        loop {
            if self.file.is_none()
                && let Some(step) = self.open_current()?
            {
                return Ok(step);
            }
            let durable = *self.durable.borrow();
            let complete = durable.segment > self.pos.segment;
            let limit = if complete {
                u64::MAX
            } else if durable.segment == self.pos.segment {
                durable.offset.saturating_sub(self.pos.offset)
            } else {
                // the cursor is ahead of the writer (another life of the
                // WAL): start over at the writer's segment
                let from = self.pos;
                self.pos = Position {
                    segment: durable.segment,
                    offset: 0,
                };
                self.file = None;
                self.load_definitions(self.pos)?;
                return Ok(Step::Gap { from, to: self.pos });
            };
            let p = segment_path(&self.dir, self.pos.segment);
            let Some(file) = self.file.as_mut() else {
                continue;
            };
            if !self.aligned {
                file.seek(SeekFrom::Start(self.pos.offset))
                    .map_err(io_err(&p))?;
                self.aligned = true;
            }
            match read_frame(file, limit, &mut self.buf).map_err(io_err(&p))? {
                Frame::Record(rec, len) => {
                    self.pos.offset += len;
                    if rec.cut {
                        self.series.clear();
                    }
                    for d in &rec.series {
                        let (id, l) = (d.id, &d.labels);
                        self.series
                            .entry(id)
                            .or_insert_with(|| Arc::new(labels_of(l)));
                    }
                    if rec.cut && rec.series.is_empty() && rec.blocks.is_empty() {
                        continue;
                    }
                    return Ok(Step::Record(Box::new(rec), self.pos));
                }
                Frame::End if complete => self.next_segment(),
                Frame::End => {
                    // a partial read may have consumed bytes: seek back
                    // before trying again
                    self.aligned = false;
                    return Ok(Step::Idle);
                }
                Frame::Torn(reason) if complete => {
                    let at = self.pos;
                    self.next_segment();
                    return Ok(Step::Corrupt { at, reason });
                }
                Frame::Torn(_) => {
                    // within the durable part of the writer's segment a torn
                    // record cannot be: the bytes are still arriving
                    self.aligned = false;
                    return Ok(Step::Idle);
                }
            }
        }
    }

    fn next_segment(&mut self) {
        self.file = None;
        self.pos = Position {
            segment: self.pos.segment + 1,
            offset: 0,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{Append, SeriesUse, Wal, WalBlock};

    fn rec(seq: u64, names: &[&str]) -> Append {
        let uses: Vec<SeriesUse> = names
            .iter()
            .map(|n| {
                let l = Labels::new([("__name__", *n)]);
                SeriesUse {
                    id: l.stable_hash(),
                    labels: Arc::new(l),
                }
            })
            .collect();
        Append {
            record: WalRecord {
                agent_id: "a".into(),
                seq,
                blocks: vec![WalBlock {
                    timestamp_ms: seq as i64,
                    ids: uses.iter().map(|u| u.id).collect(),
                    values: uses.iter().map(|_| seq as f64).collect(),
                }],
                ..Default::default()
            },
            uses,
        }
    }

    fn drain(r: &mut Reader) -> Vec<(u64, Vec<String>)> {
        let mut out = Vec::new();
        loop {
            match r.step().unwrap() {
                Step::Record(rec, _) => {
                    let names = rec.blocks[0]
                        .ids
                        .iter()
                        .map(|id| {
                            r.labels(*id)
                                .and_then(|l| l.metric_name().map(str::to_string))
                                .unwrap_or_else(|| "?".into())
                        })
                        .collect();
                    out.push((rec.seq, names));
                }
                Step::Idle => return out,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn reads_across_segments_and_resumes_mid_group_with_definitions() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::start(d.path()).unwrap();
        wal.append(rec(1, &["a", "b"])).await.unwrap();
        let mid = wal.append(rec(2, &["a"])).await.unwrap();
        wal.cut().await.unwrap();
        wal.append(rec(3, &["b"])).await.unwrap();
        let mut r = Reader::open(
            d.path(),
            wal.durable(),
            None,
            Position {
                segment: 1,
                offset: 0,
            },
        )
        .unwrap();
        let got = drain(&mut r);
        assert_eq!(
            got,
            vec![
                (1, vec!["a".into(), "b".into()]),
                (2, vec!["a".into()]),
                (3, vec!["b".into()])
            ]
        );
        // nothing is read before it is durable; then the tail follows
        wal.append(rec(4, &["a", "c"])).await.unwrap();
        assert_eq!(drain(&mut r), vec![(4, vec!["a".into(), "c".into()])]);
        // a reader opened after record 1 knows "a" although record 2 does
        // not define it
        let after_one = Position {
            segment: mid.segment,
            offset: {
                let mut first = 0;
                let mut r = Reader::open(
                    d.path(),
                    wal.durable(),
                    None,
                    Position {
                        segment: 1,
                        offset: 0,
                    },
                )
                .unwrap();
                if let Step::Record(_, next) = r.step().unwrap() {
                    first = next.offset;
                }
                first
            },
        };
        let mut r = Reader::open(d.path(), wal.durable(), None, after_one).unwrap();
        assert_eq!(drain(&mut r)[0], (2, vec!["a".into()]));
    }

    #[tokio::test]
    async fn a_missing_segment_is_a_gap_and_reading_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::start(d.path()).unwrap();
        wal.append(rec(1, &["a"])).await.unwrap();
        wal.cut().await.unwrap();
        wal.append(rec(2, &["a"])).await.unwrap();
        std::fs::remove_file(segment_path(d.path(), 1)).unwrap();
        let mut r = Reader::open(
            d.path(),
            wal.durable(),
            None,
            Position {
                segment: 1,
                offset: 0,
            },
        )
        .unwrap();
        match r.step().unwrap() {
            Step::Gap { to, .. } => assert_eq!(to.segment, 2),
            other => panic!("{other:?}"),
        }
        assert_eq!(drain(&mut r), vec![(2, vec!["a".into()])]);
    }

    #[tokio::test]
    async fn a_corrupt_record_in_a_finished_segment_is_skipped() {
        let d = tempfile::tempdir().unwrap();
        let wal = Wal::start(d.path()).unwrap();
        wal.append(rec(1, &["a"])).await.unwrap();
        wal.append(rec(2, &["a"])).await.unwrap();
        wal.cut().await.unwrap();
        wal.append(rec(3, &["a"])).await.unwrap();
        let p = segment_path(d.path(), 1);
        let mut bytes = std::fs::read(&p).unwrap();
        let n = bytes.len();
        bytes[n - 2] ^= 0xff;
        std::fs::write(&p, bytes).unwrap();
        let mut r = Reader::open(
            d.path(),
            wal.durable(),
            None,
            Position {
                segment: 1,
                offset: 0,
            },
        )
        .unwrap();
        assert!(matches!(r.step().unwrap(), Step::Record(..)));
        assert!(matches!(r.step().unwrap(), Step::Corrupt { .. }));
        assert_eq!(drain(&mut r), vec![(3, vec!["a".into()])]);
    }
}
